"""The raw HTTP/1.1 relay over real sockets: upstream keep-alive, pipelining, chunked bodies, retries, upgrades, timeouts."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.gateway import endpoints, http1, proxy, routes

BIG = 16 << 20


async def _read_body(reader: asyncio.StreamReader, req: http1.Request) -> bytes:
    if req.framing == http1.LENGTH:
        return await reader.readexactly(req.length)
    if req.framing != http1.CHUNKED:
        return b""
    out = b""
    while True:
        size = int((await reader.readline()).strip().split(b";")[0], 16)
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b""):
                pass
            return out
        out += await reader.readexactly(size)
        await reader.readexactly(2)


class Backend:
    """A scripted HTTP/1.1 server: the request path picks the behaviour; it counts its connections."""

    def __init__(self) -> None:
        self.connections = 0
        self.heads: list[bytes] = []
        self._ids = itertools.count(1)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> Backend:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = next(self._ids)
        drop_next = False
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
                self.heads.append(head)
                if drop_next:
                    # The request raced with the close of an idle connection: it is never answered.
                    return
                drop_next = head.startswith(b"POST /drop-next ")
                req = http1.parse_request(head)
                path = req.target.decode()
                if path == "/continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                body = await _read_body(reader, req)
                if path == "/hang":
                    await asyncio.sleep(3600)
                if path == "/garbage":
                    writer.write(b"this is not http\r\n\r\n")
                    return
                if path == "/until-close":
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
                    return
                if path == "/upgrade":
                    writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: raw\r\nConnection: Upgrade\r\n\r\n")
                    while data := await reader.read(1024):
                        writer.write(b"echo:" + data)
                    return
                if path == "/split":
                    # The head and the body arrive in pieces, each read ending mid-way.
                    for part in (b"HTTP/1.1 200 OK\r\nContent-Le", b"ngth: 5\r\n\r\nhel", b"lo"):
                        writer.write(part)
                        await writer.drain()
                        await asyncio.sleep(0.02)
                    continue
                if path == "/big":
                    blob = bytes(range(256)) * (BIG // 256)
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(blob))
                    writer.write(blob)
                    await writer.drain()
                    continue
                if path == "/chunked":
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                    for part in (body[:3], body[3:]):
                        writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                    writer.write(b"0\r\n\r\n")
                    continue
                text = b"conn=%d path=%s body=%s" % (conn, req.target, body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: %d\r\n\r\n%s" % (len(text), conn, text))
                if path == "/close-after":
                    # Closes without saying so, as a server whose keep-alive timeout expired does.
                    await writer.drain()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def _table(port: int) -> proxy.State:
    ing = {"metadata": {"name": "x", "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
           "spec": {"ingressClassName": "pocketkube", "rules": [{"host": "app.test", "http": {"paths": [
               {"path": "/", "pathType": "Prefix", "backend": {"service": {"name": "svc", "port": {"number": 80}}}}]}}]}}
    table = routes.compile_ingresses([ing], class_name="pocketkube")
    ups = {b: endpoints.Upstream(addresses=(("127.0.0.1", port),)) for b in table.backends()}
    return proxy.State(table=table, upstreams=ups, contexts={})


@pytest.fixture
async def world() -> AsyncIterator[dict[str, Any]]:
    """A scripted backend, a proxy on a fake clock routing app.test to it."""
    backend = await Backend().start()
    clock = clock_mod.FakeClock()
    px = proxy.Proxy(clock=clock)
    http_port, _ = await px.start(host="127.0.0.1", http_ports=[0], https_ports=[0])
    px.update(_table(backend.port))
    try:
        yield {"backend": backend, "proxy": px, "port": http_port, "clock": clock}
    finally:
        await px.close()
        await backend.close()


async def _response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """(head, body) of one response, reading exactly its framing."""
    head = (await reader.readuntil(b"\r\n\r\n"))[:-4]
    resp = http1.parse_response(head, method=b"GET")
    if resp.framing == http1.LENGTH:
        return head, await reader.readexactly(resp.length)
    if resp.framing == http1.CHUNKED:
        raw = b""
        scanner = http1.Chunked()
        while True:
            raw += await reader.read(65536)
            if scanner.feed(raw) >= 0 or not raw:
                break
            scanner = http1.Chunked()
        return head, raw
    if resp.framing == http1.UNTIL_CLOSE:
        return head, await reader.read()
    return head, b""


async def _open(w: dict[str, Any]) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", w["port"])


async def test_upstream_connections_are_kept_alive(world: dict[str, Any]) -> None:
    """Sequential requests reuse one upstream connection and carry the X-Forwarded-* headers."""
    reader, writer = await _open(world)
    for i in range(5):
        writer.write(f"GET /r{i} HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n".encode())
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 200 OK") and body.endswith(b"path=/r%d body=" % i)
    writer.close()
    assert world["backend"].connections == 1
    sent = world["backend"].heads[0]
    assert b"\r\nX-Forwarded-For: 127.0.0.1\r\n" in sent and b"6.6.6.6" not in sent
    assert b"\r\nX-Forwarded-Host: app.test\r\n" in sent and b"\r\nX-Forwarded-Proto: http\r\n" in sent


async def test_clean_response_is_relayed_byte_for_byte(world: dict[str, Any]) -> None:
    """A response with nothing to rewrite reaches the client exactly as the backend sent it; raw UTF-8 paths pass."""
    reader, writer = await _open(world)
    writer.write("GET /café HTTP/1.1\r\nHost: app.test\r\n\r\n".encode())
    head, body = await _response(reader)
    writer.close()
    text = b"conn=1 path=/caf\xc3\xa9 body="
    assert head == b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nX-Conn: 1" % len(text) and body == text


async def test_pipelined_requests_are_answered_in_order(world: dict[str, Any]) -> None:
    """Requests sent in one write are relayed one by one and answered in order."""
    reader, writer = await _open(world)
    writer.write(b"".join(f"GET /p{i} HTTP/1.1\r\nHost: app.test\r\n\r\n".encode() for i in range(3)))
    bodies = [(await _response(reader))[1] for _ in range(3)]
    writer.close()
    assert [b.rsplit(b"path=", 1)[1] for b in bodies] == [b"/p0 body=", b"/p1 body=", b"/p2 body="]


async def test_chunked_bodies_pass_through(world: dict[str, Any]) -> None:
    """A chunked upload reaches the backend whole and a chunked answer streams back chunk for chunk."""
    reader, writer = await _open(world)
    writer.write(b"POST /chunked HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd")
    await asyncio.sleep(0.05)
    writer.write(b"\r\n2\r\nef\r\n0\r\n\r\n")
    head, raw = await _response(reader)
    assert b"Transfer-Encoding: chunked" in head and raw == b"3\r\nabc\r\n3\r\ndef\r\n0\r\n\r\n"
    writer.write(b"POST /x HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nxyz")
    assert (await _response(reader))[1].endswith(b"body=xyz")
    writer.close()


async def test_stale_pooled_connection_is_retried(world: dict[str, Any]) -> None:
    """A pooled connection the backend closed while idle is replaced without the client noticing."""
    reader, writer = await _open(world)
    for _ in range(3):
        writer.write(b"POST /close-after HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nok")
        head, body = await _response(reader)
        assert head.startswith(b"HTTP/1.1 200") and body.endswith(b"body=ok")
        await asyncio.sleep(0.05)
    writer.write(b"POST /drop-next HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nok")
    assert (await _response(reader))[0].startswith(b"HTTP/1.1 200")
    writer.write(b"POST /again HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\n\r\nabc")
    head, body = await _response(reader)
    assert head.startswith(b"HTTP/1.1 200") and body.endswith(b"path=/again body=abc")
    writer.close()
    assert world["backend"].connections == 5


async def test_requests_after_bodies_retries_and_split_answers_start_clean(world: dict[str, Any]) -> None:
    """Whatever the previous exchange on a connection used (a body, a new upstream connection, an answer in
    pieces), the next request is relayed and answered on its own."""
    reader, writer = await _open(world)
    writer.write(b"POST /close-after HTTP/1.1\r\nHost: app.test\r\nContent-Length: 2\r\n\r\nok")
    assert (await _response(reader))[1].endswith(b"path=/close-after body=ok")
    await asyncio.sleep(0.05)
    for path in (b"/g1", b"/split", b"/g2", b"/split", b"/g3"):
        writer.write(b"GET %s HTTP/1.1\r\nHost: app.test\r\n\r\n" % path)
        head, body = await _response(reader)
        want = b"hello" if path == b"/split" else b"path=%s body=" % path
        assert head.startswith(b"HTTP/1.1 200 OK") and body.endswith(want), (path, head, body)
    writer.write(b"POST /x HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n\r\n"
                 b"GET /y HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert (await _response(reader))[1].endswith(b"path=/x body=a")
    assert (await _response(reader))[1].endswith(b"path=/y body=")
    writer.close()
    assert [h.split(b"\r\n", 1)[0] for h in world["backend"].heads[1:]] == [
        b"GET /g1 HTTP/1.1", b"GET /split HTTP/1.1", b"GET /g2 HTTP/1.1", b"GET /split HTTP/1.1",
        b"GET /g3 HTTP/1.1", b"POST /x HTTP/1.1", b"GET /y HTTP/1.1"]


async def test_expect_continue_is_relayed(world: dict[str, Any]) -> None:
    """The backend's 100 Continue reaches the client, which then sends the body."""
    reader, writer = await _open(world)
    writer.write(b"PUT /continue HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert await reader.readuntil(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
    writer.write(b"data")
    assert (await _response(reader))[1].endswith(b"body=data")
    writer.close()


async def test_upgrade_becomes_a_tunnel(world: dict[str, Any]) -> None:
    """Any Upgrade (not only websocket) answered 101 turns the connection into a byte tunnel."""
    reader, writer = await _open(world)
    writer.write(b"GET /upgrade HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\nUpgrade: raw\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"Upgrade: raw" in head
    assert b"Upgrade: raw" in world["backend"].heads[0] and b"Connection: upgrade" in world["backend"].heads[0]
    writer.write(b"ping")
    assert await reader.readexactly(9) == b"echo:ping"
    writer.close()


async def test_silent_upstream_times_out_with_504(world: dict[str, Any]) -> None:
    """An upstream that never answers gets nginx's 504 once the read timeout passes on the clock."""
    reader, writer = await _open(world)
    writer.write(b"GET /hang HTTP/1.1\r\nHost: app.test\r\n\r\n")
    await asyncio.sleep(0.1)
    world["clock"].advance(proxy.READ_TIMEOUT + 1)
    head, body = await asyncio.wait_for(_response(reader), 5)
    assert head.startswith(b"HTTP/1.1 504 Gateway Time-out") and b"504 Gateway Time-out" in body
    writer.close()


async def test_idle_client_is_closed_after_keepalive_timeout(world: dict[str, Any]) -> None:
    """A client silent past the keep-alive timeout is disconnected."""
    reader, writer = await _open(world)
    await asyncio.sleep(0.05)
    world["clock"].advance(proxy.KEEPALIVE_TIMEOUT + 1)
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()


async def test_bad_requests_and_bad_upstreams(world: dict[str, Any]) -> None:
    """A malformed request gets 400 and a close; a garbage answer 502; an unknown host 404."""
    reader, writer = await _open(world)
    writer.write(b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Header: x\r\n\r\n")
    head, _ = await _response(reader)
    assert head.startswith(b"HTTP/1.1 400 Bad Request") and b"Connection: close" in head
    assert await reader.read() == b""
    reader, writer = await _open(world)
    writer.write(b"GET /garbage HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert (await _response(reader))[0].startswith(b"HTTP/1.1 502 Bad Gateway")
    writer.write(b"HEAD / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404 Not Found") and b"Content-Length: " in head
    writer.write(b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert (await _response(reader))[1].endswith(b"path=/after body=")
    writer.close()


async def test_close_delimited_answer_closes_the_client(world: dict[str, Any]) -> None:
    """An answer without length is relayed whole and the client is told the connection closes."""
    reader, writer = await _open(world)
    writer.write(b"GET /until-close HTTP/1.1\r\nHost: app.test\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"\r\nConnection: close\r\n" in data
    assert data.endswith(b"\r\n\r\nall of it")
    writer.close()


async def test_absolute_form_and_http10(world: dict[str, Any]) -> None:
    """An absolute-form target routes by its authority; an HTTP/1.0 client gets its answer and a close."""
    reader, writer = await _open(world)
    writer.write(b"GET http://app.test/abs?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
    assert (await _response(reader))[1].endswith(b"path=/abs?q=1 body=")
    assert b"\r\nHost: app.test\r\n" in world["backend"].heads[-1]
    assert b"other.test" not in world["backend"].heads[-1]
    writer.close()
    reader, writer = await _open(world)
    writer.write(b"GET /old HTTP/1.0\r\nHost: app.test\r\n\r\n")
    data = await asyncio.wait_for(reader.read(), 5)
    assert data.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in data and data.endswith(b"path=/old body=")
    writer.close()


async def test_slow_client_gets_a_big_answer_whole(world: dict[str, Any]) -> None:
    """A 16 MiB answer to a slow reader arrives intact (the upstream is paused, not buffered without bound)."""
    reader, writer = await _open(world)
    writer.write(b"GET /big HTTP/1.1\r\nHost: app.test\r\n\r\n")
    head = await reader.readuntil(b"\r\n\r\n")
    assert b"Content-Length: %d" % BIG in head
    got = bytearray()
    while len(got) < BIG:
        chunk = await reader.read(1 << 20)
        assert chunk
        got += chunk
        if len(got) < 4 << 20:
            await asyncio.sleep(0.01)
    assert got == bytes(range(256)) * (BIG // 256)
    writer.write(b"GET /after HTTP/1.1\r\nHost: app.test\r\n\r\n")
    assert (await _response(reader))[1].endswith(b"path=/after body=")
    writer.close()
