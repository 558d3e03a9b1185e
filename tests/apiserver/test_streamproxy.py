"""pods/exec, attach and portforward in the API server: kube's checks, and the upgraded connection relayed to the
kubelet byte for byte."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import streamproxy


@pytest.mark.parametrize(("headers", "want"), [
    ({"Connection": "Upgrade", "Upgrade": "websocket"}, True),
    ({"Connection": "keep-alive, upgrade"}, True),
    ({"Connection": "keep-alive"}, False),
    ({}, False),
])
def test_is_upgrade(headers: dict[str, str], want: bool) -> None:
    """An upgrade request lists "upgrade" among its Connection tokens."""
    assert streamproxy.is_upgrade(headers) is want


def _pod(*mains: str, inits: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"metadata": {"name": "p"}, "spec": {"containers": [{"name": n} for n in mains],
                                                "initContainers": [{"name": n} for n in inits]}}


@pytest.mark.parametrize(("pod", "wanted", "want"), [
    (_pod("a"), "", "a"),
    (_pod("a", "b"), "b", "b"),
    (_pod("a", inits=("i",)), "i", "i"),
    (_pod("a", "b"), "", "a container name must be specified for pod p, choose one of: [a b]"),
    (_pod("a", "b", inits=("i",)), "",
     "a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]"),
    (_pod("a"), "zzz", "container zzz is not valid for pod p"),
])
def test_container_for(pod: dict[str, Any], wanted: str, want: str) -> None:
    """The only container is the default; otherwise one must be named, and it must exist (kube's 400s)."""
    if want.startswith(("a container", "container ")):
        with pytest.raises(errors.BadRequest) as e:
            streamproxy.container_for(pod, wanted)
        assert e.value.status()["message"] == want
    else:
        assert streamproxy.container_for(pod, wanted) == want


def test_parse_head() -> None:
    """The kubelet's response head gives its code, reason and headers in order."""
    code, reason, headers = streamproxy.parse_head(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nX-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\n")
    assert (code, reason) == (101, "Switching Protocols")
    assert headers == [("Upgrade", "SPDY/3.1"), ("X-Stream-Protocol-Version", "v4.channel.k8s.io")]
    with pytest.raises(ValueError):
        streamproxy.parse_head(b"garbage\r\n\r\n")


class FakeKubelet:
    """Answers one request: 101 then echoes upper-cased until "bye", or a plain 500."""

    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.request = b""
        self.closed = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.request = await reader.readuntil(b"\r\n\r\n")
        if self.refuse:
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
                         b"Content-Length: 28\r\n\r\ncontainer not found (\"main\")")
        else:
            writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: SPDY/3.1\r\nConnection: Upgrade\r\n"
                         b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\n\r\nready")
            while (data := await reader.read(100)) and data != b"bye":
                writer.write(data.upper())
        writer.close()
        self.closed.set()


async def _proxy(kubelet: FakeKubelet) -> tuple[list[Any], int]:
    upstream = await asyncio.start_server(kubelet.handle, "127.0.0.1", 0)
    port = upstream.sockets[0].getsockname()[1]

    async def handler(request: web.Request) -> web.StreamResponse:
        loc = streamproxy.Location("127.0.0.1", port, "/exec/default/p/main?output=1")
        return await streamproxy.relay(request, loc, ssl_context=None)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return [upstream, runner], runner.addresses[0][1]


REQUEST = (b"POST /api/v1/namespaces/default/pods/p/exec?command=ls HTTP/1.1\r\nHost: api\r\n"
           b"Authorization: Bearer secret\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
           b"X-Stream-Protocol-Version: v4.channel.k8s.io\r\nContent-Length: 0\r\n\r\n")


async def test_relay_pipes_both_ways_and_closes_with_the_kubelet() -> None:
    """After the kubelet's 101 every byte goes through unchanged; the caller's credentials do not."""
    kubelet = FakeKubelet()
    closers, port = await _proxy(kubelet)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"X-Stream-Protocol-Version: v4.channel.k8s.io" in head and b"Content-Type" not in head
        assert await reader.readexactly(5) == b"ready"
        writer.write(b"hello")
        assert await reader.readexactly(5) == b"HELLO"
        writer.write(b"bye")
        assert await asyncio.wait_for(reader.read(), 5) == b""
        assert kubelet.request.startswith(b"POST /exec/default/p/main?output=1 HTTP/1.1\r\n")
        assert b"Authorization" not in kubelet.request and b"X-Stream-Protocol-Version" in kubelet.request
        writer.close()
    finally:
        closers[0].close()
        await closers[1].cleanup()


async def test_relay_passes_refusals_on_and_hangs_up_when_the_client_does() -> None:
    """A kubelet refusal reaches the client as is; a client hanging up closes the kubelet side too."""
    refusing = FakeKubelet(refuse=True)
    closers, port = await _proxy(refusing)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 500 ")
        assert await reader.readexactly(28) == b'container not found ("main")'
        writer.close()
    finally:
        closers[0].close()
        await closers[1].cleanup()
    kubelet = FakeKubelet()
    closers, port = await _proxy(kubelet)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(REQUEST)
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await asyncio.wait_for(kubelet.closed.wait(), 5)
    finally:
        closers[0].close()
        await closers[1].cleanup()


@pytest.mark.parametrize(("error", "want"), [
    (ConnectionRefusedError(111, "Connection refused"), "dial tcp 10.0.0.1:10250: connect: connection refused"),
    (TimeoutError(), "dial tcp 10.0.0.1:10250: i/o timeout"),
    (OSError(113, "No route to host"), "dial tcp 10.0.0.1:10250: connect: no route to host"),
])
def test_dial_error(error: BaseException, want: str) -> None:
    """A kubelet that cannot be reached is reported in Go's net.Dial wording."""
    assert streamproxy.dial_error(streamproxy.Location("10.0.0.1", 10250, "/"), error) == want
