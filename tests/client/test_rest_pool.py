"""The REST client's connection pool: requests reuse kept-alive connections instead of new handshakes."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.test_utils import TestServer

from pocketkube.client import rest


async def test_requests_reuse_pooled_connections() -> None:
    """Sequential requests share one connection; a burst's extra connections serve the next burst too."""
    peers: list[object] = []

    async def handle(request: web.Request) -> web.Response:
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        await asyncio.sleep(0.05)
        return web.json_response({"kind": "ConfigMap"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with TestServer(app) as srv:
        client = rest.Client(str(srv.make_url("")))
        try:
            for _ in range(3):
                await client.get("/api/v1/namespaces/default/configmaps/a")
            assert len(set(peers)) == 1
            for _ in range(2):
                await asyncio.gather(*(client.get("/api/v1/namespaces/default/configmaps/b") for _ in range(4)))
            assert len(set(peers)) == 4
        finally:
            await client.close()


async def test_idle_connections_outlive_a_lease_period() -> None:
    """Idle connections are kept longer than the kubelet's 10 s lease period, and shorter than the server's 32 s."""
    client = rest.Client("https://127.0.0.1:1")
    try:
        connector = client._sess().connector
        assert connector is not None
        kept = connector._keepalive_timeout  # type: ignore[attr-defined]
        assert kept == rest.KEEPALIVE_SECONDS and 10.0 < kept < 32.0
    finally:
        await client.close()


async def test_bounded_client_queues_requests_but_not_watches() -> None:
    """With max_connections, a burst waits for pooled connections, and a running watch never blocks a request."""
    peers: list[object] = []
    in_flight = 0
    most = 0

    async def handle(request: web.Request) -> web.StreamResponse:
        nonlocal in_flight, most
        if request.query.get("watch"):
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await asyncio.sleep(0.5)  # a watch that stays open past the burst
            return resp
        peers.append(request.transport.get_extra_info("peername") if request.transport else None)
        in_flight += 1
        most = max(most, in_flight)
        await asyncio.sleep(0.02)
        in_flight -= 1
        return web.json_response({"kind": "ConfigMap"})

    app = web.Application()
    app.router.add_get("/{tail:.*}", handle)
    async with TestServer(app) as srv:
        client = rest.Client(str(srv.make_url("")), max_connections=2)

        async def watch() -> None:
            async for _ in client.watch(rest.GVR("", "v1", "pods"), field_selector="spec.nodeName=n1"):
                pass

        try:
            watcher = asyncio.ensure_future(watch())
            await asyncio.sleep(0.05)
            await asyncio.gather(*(client.get("/api/v1/namespaces/default/configmaps/c") for _ in range(10)))
            assert not watcher.done()
            assert most == 2 and len(set(peers)) == 2
            await watcher
        finally:
            await client.close()
