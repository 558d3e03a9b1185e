"""kube-proxy's health checks for externalTrafficPolicy Local LoadBalancers: the HTTP answers a load balancer sees."""

from __future__ import annotations

import asyncio
import datetime
import json
import socket

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.network import proxyrules
from pocketkube.node import proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _ask(port: int, request: bytes = b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    return data


def _split(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    return lines[0], dict(line.split(": ", 1) for line in lines[1:]), body


@pytest.mark.parametrize(("count", "healthy", "status"), [
    (2, True, "HTTP/1.1 200 OK"),
    (0, True, "HTTP/1.1 503 Service Unavailable"),
    (1, False, "HTTP/1.1 503 Service Unavailable"),
])
def test_health_check_answers_as_kube_proxy(count: int, healthy: bool, status: str) -> None:
    """200 with local endpoints and a healthy proxy, else 503; kube-proxy's JSON body, headers and endpoint weight."""
    port = _free_port()
    clock = clock_mod.FakeClock(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC))

    async def run() -> bytes:
        server = proxy.HealthServer(host="127.0.0.1", clock=clock)
        await server.sync([proxyrules.HealthCheck(namespace="default", name="web", port=port, local_endpoints=count)])
        server.healthy = healthy
        try:
            return await _ask(port)
        finally:
            await server.close()

    line, headers, body = _split(asyncio.run(run()))
    assert line == status
    assert headers == {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff",
                       "X-Load-Balancing-Endpoint-Weight": str(count), "Date": "Fri, 02 Jan 2026 03:04:05 GMT",
                       "Content-Length": str(len(body)), "Connection": "close"}
    assert body.decode() == ('{\n\t"service": {\n\t\t"namespace": "default",\n\t\t"name": "web"\n\t},\n'
                             f'\t"localEndpoints": {count},\n\t"serviceProxyHealthy": {str(healthy).lower()}\n}}')
    assert json.loads(body) == {"service": {"namespace": "default", "name": "web"}, "localEndpoints": count,
                                "serviceProxyHealthy": healthy}


def test_health_check_follows_syncs_and_keeps_connections_alive() -> None:
    """A keep-alive client sees the count change after a sync; a moved or removed check stops listening."""
    port, moved = _free_port(), _free_port()

    async def run() -> None:
        server = proxy.HealthServer(host="127.0.0.1")
        server.healthy = True
        check = proxyrules.HealthCheck(namespace="ns", name="web", port=port, local_endpoints=0)
        await server.sync([check])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(_split(first)[1]["Content-Length"]))
        await server.sync([proxyrules.HealthCheck(namespace="ns", name="web", port=port, local_endpoints=1)])
        writer.write(b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
        second = await reader.readuntil(b"\r\n\r\n")
        writer.close()
        assert first.startswith(b"HTTP/1.1 503 ") and second.startswith(b"HTTP/1.1 200 OK")
        assert b"Content-Length: 0" not in second  # HEAD: the GET's length, no body
        await server.sync([proxyrules.HealthCheck(namespace="ns", name="web", port=moved, local_endpoints=1)])
        assert server.ports() == {("ns", "web"): moved}
        with pytest.raises(OSError):
            await _ask(port)
        assert (await _ask(moved)).startswith(b"HTTP/1.1 200 OK")
        assert (await _ask(moved, b"nonsense\r\n\r\n")).startswith(b"HTTP/1.1 400 Bad Request")
        await server.sync([])
        assert server.ports() == {}
        await server.close()

    asyncio.run(run())


def test_a_taken_port_is_retried_on_the_next_sync() -> None:
    """A health check port something else holds is skipped (logged), and opened by a later sync once free."""
    port = _free_port()

    async def run() -> None:
        blocker = await asyncio.start_server(lambda r, w: None, "127.0.0.1", port)
        server = proxy.HealthServer(host="127.0.0.1")
        check = proxyrules.HealthCheck(namespace="ns", name="web", port=port, local_endpoints=1)
        await server.sync([check])
        assert server.ports() == {}
        blocker.close()
        await blocker.wait_closed()
        await server.sync([check])
        assert server.ports() == {("ns", "web"): port}
        await server.close()

    asyncio.run(run())
