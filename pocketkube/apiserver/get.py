"""The get verb: read one object (optionally as a Table or PartialObjectMetadata)."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import context, render


async def handle(server: context.Server, call: context.Call) -> tuple[Any, int]:
    rv = call.param("resourceVersion")
    revision = 0
    if rv not in ("", "0"):
        try:
            revision = int(rv)
        except ValueError:
            raise errors.BadRequest(f"invalid resource version: {rv}") from None
        if revision > server.store.current_revision():
            raise errors.Timeout(f"Too large resource version: {revision}, current: {server.store.current_revision()}")
        # "not older than": the latest state always satisfies it.
        revision = 0
    obj = await server.objects.get(call.res, call.namespace, call.info.name, revision=revision)
    return render.one(server, call, obj), 200
