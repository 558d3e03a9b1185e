"""The kubelet's port-forward endpoint: stream checks, error wording, and forwarding over SPDY and websockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import kubeletserver as ks
from pocketkube.node import portforward as pf
from pocketkube.node import spdy

POD = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": {"containers": [{"name": "c"}]}}


@pytest.mark.parametrize(("headers", "want"), [
    ({"port": "8080", "streamtype": "data"}, None),
    ({"port": "1", "streamtype": "error"}, None),
    ({"streamtype": "data"}, '"port" header is required'),
    ({"port": "http", "streamtype": "data"},
     'unable to parse "http" as a port: strconv.ParseUint: parsing "http": invalid syntax'),
    ({"port": "70000", "streamtype": "data"},
     'unable to parse "70000" as a port: strconv.ParseUint: parsing "70000": value out of range'),
    ({"port": "0", "streamtype": "data"}, 'port "0" must be > 0'),
    ({"port": "80"}, '"streamType" header is required'),
    ({"port": "80", "streamtype": "stdin"}, 'invalid stream type "stdin"'),
])
def test_stream_error(headers: dict[str, str], want: str | None) -> None:
    """New streams need a valid port and a data or error type, with the kubelet's wording otherwise."""
    assert pf.stream_error(headers) == want


@pytest.mark.parametrize(("exc", "network", "host", "want"), [
    (ConnectionRefusedError(111, "x"), "tcp4", "127.0.0.1", "dial tcp4 127.0.0.1:80: connect: connection refused"),
    (ConnectionRefusedError(111, "x"), "tcp6", "::1", "dial tcp6 [::1]:80: connect: connection refused"),
    (TimeoutError(), "tcp4", "10.0.0.1", "dial tcp4 10.0.0.1:80: i/o timeout"),
    (OSError(113, "x"), "tcp4", "10.0.0.1", "dial tcp4 10.0.0.1:80: connect: no route to host"),
])
def test_go_dial_error(exc: BaseException, network: str, host: str, want: str) -> None:
    """Connect failures read like Go's net.Dial errors."""
    assert pf.go_dial_error(network, host, port=80, exc=exc) == want


def test_go_header_repr() -> None:
    """Headers print as Go's %#v of an http.Header: canonical keys, sorted, []string values."""
    assert pf.go_header_repr({"upgrade": "h2c", "X-Foo": "a"}) == \
        'http.Header{"Upgrade":[]string{"h2c"}, "X-Foo":[]string{"a"}}'


def test_target_host_is_the_shared_loopback() -> None:
    """Pods share the host network today, so their ports are on 127.0.0.1."""
    assert pf.target_host(POD) == "127.0.0.1"


class _Runtime:
    def pod_dir(self, uid: str) -> str:
        return "/nonexistent"


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A pod's server: echoes upper-cased until the client finishes, then says bye."""
    while data := await reader.read(65536):
        writer.write(data.upper())
        await writer.drain()
    writer.write(b"BYE")
    writer.close()


@pytest.fixture
async def kubelet() -> AsyncIterator[tuple[ks.KubeletServer, int, int]]:
    """A kubelet API server, a pod port with an echo server, and a port nothing listens on."""
    target = await asyncio.start_server(_echo, "127.0.0.1", 0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    server = ks.KubeletServer(_Runtime(), lambda ns, name: POD if (ns, name) == ("default", "p") else None,  # type: ignore[arg-type]
                              ssl_context=None, clock=clock_mod.Clock())
    await server.start()
    yield server, target.sockets[0].getsockname()[1], closed
    await server.close()
    target.close()


async def _raw(port: int, request: str) -> tuple[bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request.encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head, reader, writer


UPGRADE = ("POST /portForward/default/p HTTP/1.1\r\nHost: k\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
           "X-Stream-Protocol-Version: portforward.k8s.io\r\nContent-Length: 0\r\n\r\n")


@contextlib.asynccontextmanager
async def _spdy_client(port: int) -> AsyncIterator[spdy.Session]:
    head, reader, writer = await _raw(port, UPGRADE)
    assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
    assert b"X-Stream-Protocol-Version: portforward.k8s.io" in head and b"Upgrade: SPDY/3.1" in head
    session = spdy.Session(spdy.StreamPipe(reader, writer), server=False)
    task = asyncio.create_task(session.run())
    try:
        yield session
    finally:
        await session.close()
        await task


@contextlib.asynccontextmanager
async def _websocket_client(port: int) -> AsyncIterator[spdy.Session]:
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(f"http://127.0.0.1:{port}/portForward/default/p", protocols=[pf.TUNNEL_PROTOCOL])
        assert ws.protocol == pf.TUNNEL_PROTOCOL
        session = spdy.Session(spdy.WebSocketPipe(ws), server=False)
        task = asyncio.create_task(session.run())
        try:
            yield session
        finally:
            await session.close()
            await task


async def _forward(session: spdy.Session, port: int, *, rid: int, payload: bytes) -> tuple[bytes, bytes]:
    """What kubectl does per local connection: error stream (closed at once), data stream, copy, read the error."""
    headers = {"streamtype": "error", "port": str(port), "requestid": str(rid)}
    error = await session.open(headers)
    await error.close()
    data = await session.open({**headers, "streamtype": "data"})
    await data.write(payload)
    await data.close()
    got = await asyncio.wait_for(data.read_all(), 5)
    return got, await asyncio.wait_for(error.read_all(), 5)


@pytest.mark.parametrize("client", [_spdy_client, _websocket_client])
async def test_forwards_concurrent_connections(kubelet: tuple[ks.KubeletServer, int, int], client: Any) -> None:
    """Over plain or websocket-tunnelled SPDY, each request's pair reaches the pod's port; errors stay empty."""
    server, target, _ = kubelet
    async with client(server.port) as session:
        results = await asyncio.gather(*(_forward(session, target, rid=i, payload=b"hello %d" % i) for i in range(5)))
        assert results == [(b"HELLO %dBYE" % i, b"") for i in range(5)]
        big = b"abc" * 200_000
        assert await _forward(session, target, rid=9, payload=big) == (big.upper() + b"BYE", b"")


async def test_closed_port_reports_on_the_error_stream(kubelet: tuple[ks.KubeletServer, int, int]) -> None:
    """Nothing listening: the error stream carries kube's message and the session keeps serving."""
    server, target, closed = kubelet
    async with _spdy_client(server.port) as session:
        data, error = await _forward(session, closed, rid=0, payload=b"x")
        assert data == b""
        assert error.decode() == (
            f"error forwarding port {closed} to pod u1, uid : failed to connect to localhost:{closed} inside "
            f'namespace "u1", IPv4: dial tcp4 127.0.0.1:{closed}: connect: connection refused '
            f"IPv6 dial tcp6 [::1]:{closed}: connect: connection refused ")
        assert await _forward(session, target, rid=1, payload=b"ok") == (b"OKBYE", b"")


async def test_bad_streams_are_reset_and_duplicates_reported(kubelet: tuple[ks.KubeletServer, int, int]) -> None:
    """A stream without a port is reset; a second error stream for one request is told so."""
    server, target, _ = kubelet
    async with _spdy_client(server.port) as session:
        with pytest.raises(spdy.StreamReset):
            await session.open({"streamtype": "data"})
        first = await session.open({"streamtype": "error", "port": str(target), "requestid": "7"})
        await session.open({"streamtype": "error", "port": str(target), "requestid": "7"})
        assert await first.read(100) == b"error processing stream for request 7: error stream already assigned"


async def test_pairs_without_request_ids_and_timeouts(kubelet: tuple[ks.KubeletServer, int, int]) -> None:
    """Old clients pair error N with data N+2; a half pair times out on the kubelet's clock with a message."""
    server, target, _ = kubelet
    fake = clock_mod.FakeClock()
    server.clock = fake
    async with _spdy_client(server.port) as session:
        error = await session.open({"streamtype": "error", "port": str(target)})
        await error.close()
        data = await session.open({"streamtype": "data", "port": str(target)})
        await data.write(b"old")
        await data.close()
        assert await asyncio.wait_for(data.read_all(), 5) == b"OLDBYE"
        lonely = await session.open({"streamtype": "error", "port": str(target), "requestid": "x"})
        await asyncio.sleep(0.05)
        fake.advance(pf.STREAM_CREATION_SECONDS)
        message = await asyncio.wait_for(lonely.read_all(), 5)
        assert message.endswith(b", request=x) timed out waiting for streams") and message.startswith(b"(conn=")


@pytest.mark.parametrize(("request_text", "status", "body"), [
    (UPGRADE.replace("/default/p ", "/default/nope "), 404, "pod does not exist"),
    (UPGRADE.replace("X-Stream-Protocol-Version: portforward.k8s.io\r\n", ""), 400,
     "unable to upgrade: X-Stream-Protocol-Version is required\n"),
    (UPGRADE.replace("portforward.k8s.io", "v4.channel.k8s.io"), 403,
     "unable to upgrade: unable to negotiate protocol: client supports [v4.channel.k8s.io], "
     "server accepts [portforward.k8s.io]\n"),
    (UPGRADE.replace("Upgrade: SPDY/3.1", "Upgrade: h2c"), 400,
     'unable to upgrade: missing upgrade headers in request: http.Header{"Connection":[]string{"Upgrade"}, '),
    (UPGRADE.replace("Upgrade: SPDY/3.1", "Upgrade: websocket"), 400,
     "unable to upgrade: websocket port forwarding needs the SPDY/3.1+portforward.k8s.io subprotocol"),
])
async def test_refused_upgrades(kubelet: tuple[ks.KubeletServer, int, int], request_text: str, status: int,
                                body: str) -> None:
    """Requests that cannot be upgraded get the kubelet's status and plain-text reason."""
    server, _, _ = kubelet
    head, reader, writer = await _raw(server.port, request_text)
    assert head.startswith(f"HTTP/1.1 {status} ".encode())
    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
    text = (await reader.readexactly(length)).decode()
    assert text.startswith(body)
    if status == 403:
        assert b"X-Accepted-Stream-Protocol-Versions: portforward.k8s.io" in head
    writer.close()
