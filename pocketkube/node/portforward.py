"""The kubelet's port-forward endpoint: per request a (data, error) SPDY stream pair piped to a pod's TCP port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pocketkube.base import clock as clock_mod
from pocketkube.network import podnet
from pocketkube.node import spdy

log = logging.getLogger("pocketkube.node.portforward")

PROTOCOL = "portforward.k8s.io"
# kubectl 1.31+ first asks for SPDY tunnelled in websocket binary messages under this subprotocol.
TUNNEL_PROTOCOL = "SPDY/3.1+" + PROTOCOL
STREAM_TYPE, PORT, REQUEST_ID = "streamType", "port", "requestID"
DATA, ERROR = "data", "error"
# The kubelet's default wait for the second stream of a pair.
STREAM_CREATION_SECONDS = 30.0
# Once one direction ends, the other gets this long to finish (containerd's port-forward does the same).
CLOSE_GRACE_SECONDS = 1.0
CONNECT_SECONDS = 10.0

PodFinder = Callable[[str, str], "Mapping[str, Any] | None"]


def target_host(pod: Mapping[str, Any]) -> str:
    """The address to reach a pod's ports at: pods share the host's network, so its loopback."""
    return "127.0.0.1"


def stream_error(headers: Mapping[str, str]) -> str | None:
    """Why the kubelet refuses a new stream (it resets it), or None: wording of kube's httpStreamReceived."""
    port = headers.get(PORT.lower(), "")
    if not port:
        return f'"{PORT}" header is required'
    if not (port.isascii() and port.isdigit()):
        return f'unable to parse "{port}" as a port: strconv.ParseUint: parsing "{port}": invalid syntax'
    number = int(port)
    if number > 65535:
        return f'unable to parse "{port}" as a port: strconv.ParseUint: parsing "{port}": value out of range'
    if number < 1:
        return f'port "{port}" must be > 0'
    kind = headers.get(STREAM_TYPE.lower(), "")
    if not kind:
        return f'"{STREAM_TYPE}" header is required'
    if kind not in (DATA, ERROR):
        return f'invalid stream type "{kind}"'
    return None


def request_id(stream: spdy.Stream) -> str:
    """The pair a stream belongs to; clients without requestID pair error stream N with data stream N+2."""
    rid = stream.header(REQUEST_ID)
    if rid:
        return rid
    return str(stream.id if stream.header(STREAM_TYPE) == ERROR else stream.id - 2)


def go_dial_error(network: str, host: str, *, port: int, exc: BaseException) -> str:
    """A failed connect worded like Go's net.Dial error."""
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, TimeoutError):
        return f"dial {network} {address}: i/o timeout"
    if isinstance(exc, OSError) and exc.errno:
        reason = os.strerror(exc.errno)
        reason = reason[:1].lower() + reason[1:]
        return f"dial {network} {address}: connect: {reason}"
    return f"dial {network} {address}: {exc}"


class ForwardError(Exception):
    """Forwarding one connection failed; the message goes to the client's error stream."""


async def _dial(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(host, port), CONNECT_SECONDS)


async def connect(pod: Mapping[str, Any], port: int, *, uid: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A TCP connection to the pod's port; on loopback IPv6 is tried too, as containerd does."""
    netns = podnet.find_netns(uid) if not (pod.get("spec") or {}).get("hostNetwork") else None
    if netns:
        # As the kubelet does: localhost inside the pod's own network namespace.
        try:
            sock = await asyncio.wait_for(asyncio.to_thread(
                podnet.connect_in, netns, "127.0.0.1", port, timeout=CONNECT_SECONDS), CONNECT_SECONDS + 1)
            return await asyncio.open_connection(sock=sock)
        except (OSError, TimeoutError) as e:
            raise ForwardError(f'failed to connect to localhost:{port} inside namespace "{uid}", IPv4: '
                               f'{go_dial_error("tcp4", "127.0.0.1", port=port, exc=e)} ') from e
    host = target_host(pod)
    try:
        return await _dial(host, port)
    except (OSError, TimeoutError) as e:
        err4 = go_dial_error("tcp4", host, port=port, exc=e)
    if host != "127.0.0.1":
        raise ForwardError(err4)
    try:
        return await _dial("::1", port)
    except (OSError, TimeoutError) as e:
        err6 = go_dial_error("tcp6", "::1", port=port, exc=e)
    raise ForwardError(f'failed to connect to localhost:{port} inside namespace "{uid}", IPv4: {err4} IPv6 {err6} ')


async def _stream_to_socket(stream: spdy.Stream, writer: asyncio.StreamWriter) -> None:
    while chunk := await stream.read():
        writer.write(chunk)
        await writer.drain()
    if writer.can_write_eof():
        writer.write_eof()


async def _socket_to_stream(reader: asyncio.StreamReader, stream: spdy.Stream) -> None:
    while chunk := await reader.read(spdy.DATA_CHUNK):
        await stream.write(chunk)


async def pipe(stream: spdy.Stream, reader: asyncio.StreamReader, *, writer: asyncio.StreamWriter,
               clock: clock_mod.Clock) -> None:
    """Copy both ways until one way ends, give the other a moment to finish, then hang up the socket."""
    tasks = [asyncio.ensure_future(_stream_to_socket(stream, writer)),
             asyncio.ensure_future(_socket_to_stream(reader, stream))]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        if pending:
            grace = asyncio.ensure_future(clock.sleep(CLOSE_GRACE_SECONDS))
            await asyncio.wait([*pending, grace], return_when=asyncio.FIRST_COMPLETED)
            grace.cancel()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                await task
        writer.close()


class Pair:
    """The data and error streams of one forwarded connection, matched by requestID."""

    def __init__(self, rid: str) -> None:
        self.request_id = rid
        self.data: spdy.Stream | None = None
        self.error: spdy.Stream | None = None
        self.complete = asyncio.Event()

    def add(self, stream: spdy.Stream) -> None:
        """Slot a stream in; ValueError (kube's words) when that kind is already there."""
        if stream.header(STREAM_TYPE) == ERROR:
            if self.error is not None:
                raise ValueError("error stream already assigned")
            self.error = stream
        else:
            if self.data is not None:
                raise ValueError("data stream already assigned")
            self.data = stream
        if self.error is not None and self.data is not None:
            self.complete.set()

    async def print_error(self, message: str) -> None:
        if self.error is not None:
            with contextlib.suppress(ConnectionError):
                await self.error.write(message.encode())


class Forwarder:
    """Serves the port-forward requests of one SPDY session for one pod."""

    def __init__(self, session: spdy.Session, pod: Mapping[str, Any], *, clock: clock_mod.Clock) -> None:
        self.session = session
        self.pod = pod
        self.uid = str((pod.get("metadata") or {}).get("uid") or "")
        self.clock = clock
        self.pairs: dict[str, Pair] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def serve(self) -> None:
        """Take streams until the session ends, then stop every forwarded connection."""
        reading = asyncio.ensure_future(self.session.run())
        try:
            while (stream := await self.session.accept()) is not None:
                try:
                    await self._received(stream)
                except ConnectionError:
                    break
        finally:
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            await self.session.close()
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading

    async def _received(self, stream: spdy.Stream) -> None:
        problem = stream_error(stream.headers)
        if problem is not None:
            log.info("port-forward stream %d rejected: %s", stream.id, problem)
            await stream.reset()
            return
        await stream.reply()
        rid = request_id(stream)
        pair = self.pairs.get(rid)
        if pair is None:
            pair = self.pairs[rid] = Pair(rid)
            self._spawn(self._monitor(pair))
        try:
            pair.add(stream)
        except ValueError as e:
            await pair.print_error(f"error processing stream for request {rid}: {e}")
            return
        if pair.complete.is_set():
            self._spawn(self._forward(pair))

    async def _monitor(self, pair: Pair) -> None:
        timer = asyncio.ensure_future(self.clock.sleep(STREAM_CREATION_SECONDS))
        complete = asyncio.ensure_future(pair.complete.wait())
        try:
            await asyncio.wait([timer, complete], return_when=asyncio.FIRST_COMPLETED)
            if not pair.complete.is_set():
                await pair.print_error(f"(conn={id(self.session):#x}, request={pair.request_id}) "
                                       "timed out waiting for streams")
                for stream in (pair.error, pair.data):
                    if stream is not None:
                        await stream.close(discard=True)
        finally:
            timer.cancel()
            complete.cancel()
            self.pairs.pop(pair.request_id, None)

    async def _forward(self, pair: Pair) -> None:
        data, error = pair.data, pair.error
        assert data is not None and error is not None
        port = int(data.header(PORT))
        try:
            try:
                reader, writer = await connect(self.pod, port, uid=self.uid)
            except ForwardError as e:
                message = f"error forwarding port {port} to pod {self.uid}, uid : {e}"
                log.info("%s", message)
                await pair.print_error(message)
                return
            await pipe(data, reader, writer=writer, clock=self.clock)
        except ConnectionError:
            pass
        finally:
            for stream in (error, data):
                with contextlib.suppress(ConnectionError):
                    await stream.close(discard=True)


def _plain_error(code: int, message: str, *, headers: Mapping[str, str] | None = None) -> web.Response:
    """What Go's http.Error sends."""
    return web.Response(status=code, text=message + "\n", headers={"X-Content-Type-Options": "nosniff", **(headers or {})},
                        content_type="text/plain", charset="utf-8")


def go_header_repr(headers: Mapping[str, str]) -> str:
    """A request's headers as Go's %#v prints an http.Header."""
    merged: dict[str, list[str]] = {}
    for name, value in headers.items():
        key = "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))
        merged.setdefault(key, []).append(value)
    items = ", ".join(f'"{k}":[]string{{{", ".join(chr(34) + v + chr(34) for v in vs)}}}'
                      for k, vs in sorted(merged.items()))
    return f"http.Header{{{items}}}"


def is_websocket(headers: Mapping[str, str]) -> bool:
    """kube's wsstream.IsWebSocketRequest."""
    return "upgrade" in headers.get("Connection", "").lower() and headers.get("Upgrade", "").lower() == "websocket"


async def serve(request: web.Request, find_pod: PodFinder, *, clock: clock_mod.Clock) -> web.StreamResponse:
    """GET/POST /portForward/{namespace}/{pod}: upgrade to SPDY (plain or websocket-tunnelled) and forward."""
    pod = find_pod(request.match_info["namespace"], request.match_info["pod"])
    if pod is None:
        return _plain_error(404, "pod does not exist")
    if is_websocket(request.headers):
        return await _serve_websocket(request, pod, clock=clock)
    # Proxies may merge repeated headers, so kube splits each value on commas too.
    offered = [v.strip() for h in request.headers.getall("X-Stream-Protocol-Version", []) for v in h.split(",")]
    offered = [v for v in offered if v]
    if not offered:
        return _plain_error(400, "unable to upgrade: X-Stream-Protocol-Version is required")
    if PROTOCOL not in offered:
        return _plain_error(403, f"unable to upgrade: unable to negotiate protocol: client supports "
                                 f"[{' '.join(offered)}], server accepts [{PROTOCOL}]",
                            headers={"X-Accepted-Stream-Protocol-Versions": PROTOCOL})
    if ("upgrade" not in request.headers.get("Connection", "").lower()
            or "spdy/3.1" not in request.headers.get("Upgrade", "").lower()):
        return _plain_error(400, "unable to upgrade: missing upgrade headers in request: "
                            + go_header_repr(request.headers))
    response = web.StreamResponse(status=101, reason="Switching Protocols", headers={
        "Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": PROTOCOL})
    upgraded = spdy.UpgradedPipe(request, response)
    await upgraded.start()
    try:
        await Forwarder(spdy.Session(upgraded, server=True), pod, clock=clock).serve()
    finally:
        await upgraded.close()
    return response


async def _serve_websocket(request: web.Request, pod: Mapping[str, Any], *, clock: clock_mod.Clock) -> web.StreamResponse:
    ws = web.WebSocketResponse(protocols=(TUNNEL_PROTOCOL,), max_msg_size=spdy.HEADER_SIZE + spdy.MAX_FRAME)
    if ws.can_prepare(request).protocol != TUNNEL_PROTOCOL:
        return _plain_error(400, f"unable to upgrade: websocket port forwarding needs the {TUNNEL_PROTOCOL} "
                                 "subprotocol")
    await ws.prepare(request)
    await Forwarder(spdy.Session(spdy.WebSocketPipe(ws), server=True), pod, clock=clock).serve()
    return ws

