"""The create verb: POST a new object (generateName, defaults, validation, admission, dry run)."""

from __future__ import annotations

from typing import Any

from pocketkube.api import defaults
from pocketkube.apiserver import context, negotiate, strategy, typeinfo, writes


async def create_object(server: context.Server, call: context.Call, obj: dict[str, Any], *,
                        managed: bool = True, shared: bool = False) -> dict[str, Any]:
    """Create a decoded object through the whole pipeline; shared with server-side apply.

    managed=False when the caller (server-side apply) has already computed managedFields; shared=True when
    it never modifies the result (see Objects.create)."""
    writes.check_type(server, call, obj)
    writes.check_namespace(call, obj)
    typeinfo.check_fields(server, call, obj)
    writes.ensure_name(call, obj)
    strategy.prepare_create(call.res, obj, clock=server.clock)
    typeinfo.apply_defaults(server, call.res, obj)
    if (call.res.group, call.res.kind) == ("batch", "Job"):
        defaults.job_prepare_create(obj, obj["metadata"]["uid"])
    typeinfo.validate(server, call.res, obj, None)
    await writes.admit(server, call, obj, None, "CREATE")
    if managed:
        writes.update_managed_fields(server, call, None, obj)
    if call.dry_run:
        return obj
    try:
        return await server.objects.create(call.res, obj, shared=shared)
    except Exception:
        if server.allocators is not None:
            server.allocators.release(call.res, obj)
        raise


async def handle(server: context.Server, call: context.Call) -> tuple[dict[str, Any], int]:
    raw = await negotiate.read_body(call.request)
    obj = negotiate.decode_object(raw, call.request.headers.get("Content-Type"), what=call.res.kind)
    # The response is only encoded: its object can be the one the watchers of this write are handed.
    created = await create_object(server, call, obj, shared=True)
    return created, 201
