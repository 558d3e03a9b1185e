"""Shared pieces of the API server's tests: an admin client of the real app, either store backend, pod bytes."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
from aiohttp import test_utils, web

from pocketkube.api import conversion, resources
from pocketkube.apiserver import authn, context, objects, server
from pocketkube.base import clock as clock_mod

ADMIN = context.User(name="admin", groups=("system:masters", "system:authenticated"))


def as_user(user: context.User) -> Any:
    """A middleware making every request of an app come from user (authn.USER_KEY), as if authenticated."""

    @web.middleware
    async def middleware(request: web.Request, handler: Any) -> web.StreamResponse:
        request[authn.USER_KEY] = user
        return await handler(request)

    return middleware


@contextlib.asynccontextmanager
async def admin_client(store: Any) -> AsyncIterator[test_utils.TestClient]:
    """A test client of the real app over a started store, every request made as a cluster admin."""
    api = context.Server(registry=resources.Registry.builtin(), objects=objects.Objects(store, conversion.convert),
                         store=store, clock=clock_mod.Clock())
    app = server.make_app(api)
    app.middlewares.insert(0, as_user(ADMIN))
    async with test_utils.TestClient(test_utils.TestServer(app)) as c:
        yield c


def pod_bytes(name: str, node: str = "", phase: str = "Pending", **spec: Any) -> bytes:
    """A stored pod in namespace default, bound to node when one is given."""
    body: dict[str, Any] = {"containers": [{"name": "c", "image": "i"}], **spec}
    if node:
        body["nodeName"] = node
    return orjson.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                         "spec": body, "status": {"phase": phase}})


class Response:
    """Stands in for an aiohttp StreamResponse: keeps what a watch writes."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []

    async def write(self, data: bytes) -> None:
        self.chunks.append(data)
