"""Exec and attach over SPDY/3.1 (kubectl < 1.30, and later ones' fallback): handshake, typed streams, session."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Mapping, Sequence

from aiohttp import web

from pocketkube.base import clock as clock_mod
from pocketkube.node import portforward, remotecommand, spdy

V3 = "v3.channel.k8s.io"
V2 = "v2.channel.k8s.io"
# What the kubelet accepts over SPDY, in its order (channel.k8s.io, v1, is left out: no kubectl since 1.4 asks).
PROTOCOLS = (remotecommand.V5, remotecommand.V4, V3, V2)
# Versions with a resize stream.
RESIZING = (remotecommand.V5, remotecommand.V4, V3)
STREAM_TYPE = "streamtype"
# The kubelet's default streamCreationTimeout.
STREAM_CREATION_SECONDS = 30.0
_CHANNELS = {"stdin": remotecommand.STDIN, "stdout": remotecommand.STDOUT, "stderr": remotecommand.STDERR,
             "error": remotecommand.ERROR, "resize": remotecommand.RESIZE}


def negotiate(offered: Sequence[str]) -> str | None:
    """httpstream.Handshake: the first protocol the client offers that the kubelet accepts."""
    return next((p for p in offered if p in PROTOCOLS), None)


def expected_streams(opts: remotecommand.Options, protocol: str) -> set[str]:
    """The streams the client opens: error always, one per requested stdio stream, resize under a tty."""
    kinds = {"error"}
    kinds |= {name for name, on in (("stdin", opts.stdin), ("stdout", opts.stdout), ("stderr", opts.stderr)) if on}
    if opts.tty and protocol in RESIZING:
        kinds.add("resize")
    return kinds


def _plain(code: int, message: str, headers: Mapping[str, str] | None = None) -> web.Response:
    """What Go's http.Error sends."""
    return web.Response(status=code, text=message + "\n", content_type="text/plain", charset="utf-8",
                        headers={"X-Content-Type-Options": "nosniff", **(headers or {})})


def split_json(buffer: bytes) -> tuple[list[object], bytes]:
    """The complete JSON values at the start of buffer (a json.Encoder stream) and the incomplete rest."""
    decoder = json.JSONDecoder()
    text = buffer.decode(errors="replace")
    values: list[object] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return values, b""
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return values, text[pos:].encode()
        values.append(value)


async def serve(request: web.Request, opts: remotecommand.Options, run: remotecommand.Runner, *,
                clock: clock_mod.Clock | None = None) -> web.StreamResponse:
    """Upgrade to SPDY, take the client's streams, run the session, then hang up."""
    if ("upgrade" not in request.headers.get("Connection", "").lower()
            or "spdy/3.1" not in request.headers.get("Upgrade", "").lower()):
        return _plain(400, "unable to upgrade: missing upgrade headers in request: "
                      + portforward.go_header_repr(request.headers))
    offered = [v.strip() for h in request.headers.getall("X-Stream-Protocol-Version", []) for v in h.split(",")]
    if not offered:
        return _plain(400, "unable to upgrade: X-Stream-Protocol-Version is required")
    protocol = negotiate(offered)
    if protocol is None:
        return _plain(403, f"unable to upgrade: unable to negotiate protocol: client supports [{' '.join(offered)}], "
                           f"server accepts [{' '.join(PROTOCOLS)}]",
                      {"X-Accepted-Stream-Protocol-Versions": ", ".join(PROTOCOLS)})
    response = web.StreamResponse(status=101, reason="Switching Protocols", headers={
        "Connection": "Upgrade", "Upgrade": "SPDY/3.1", "X-Stream-Protocol-Version": protocol})
    pipe = spdy.UpgradedPipe(request, response)
    await pipe.start()
    conn = spdy.Session(pipe, server=True)
    reading = asyncio.get_running_loop().create_task(conn.run())
    tasks: list[asyncio.Task[None]] = []
    try:
        streams = await _accept(conn, expected_streams(opts, protocol), clock or clock_mod.Clock())
        if streams is not None:
            session = _bind(conn, streams, opts, protocol)
            tasks = _readers(session, streams)
            await run(session)
            for s in streams.values():
                with contextlib.suppress(ConnectionError):
                    await s.close(discard=True)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await conn.close()
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
    return response


async def _accept(conn: spdy.Session, wanted: set[str], clock: clock_mod.Clock) -> dict[str, spdy.Stream] | None:
    """The client's streams by type, each acknowledged; None if the client goes or is too slow to open them."""
    streams: dict[str, spdy.Stream] = {}

    async def take() -> None:
        while not wanted <= streams.keys():
            stream = await conn.accept()
            if stream is None:
                raise ConnectionResetError("the client hung up before opening its streams")
            await stream.reply()
            kind = stream.header(STREAM_TYPE)
            if kind in _CHANNELS:
                streams[kind] = stream

    taking = asyncio.get_running_loop().create_task(take())
    timer = asyncio.get_running_loop().create_task(clock.sleep(STREAM_CREATION_SECONDS))
    try:
        await asyncio.wait({taking, timer}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        timer.cancel()
        taking.cancel()
        await asyncio.gather(taking, timer, return_exceptions=True)
    if taking.cancelled() or taking.exception() is not None or not wanted <= streams.keys():
        return None
    return streams


def _bind(conn: spdy.Session, streams: Mapping[str, spdy.Stream], opts: remotecommand.Options,
          protocol: str) -> remotecommand.Session:
    by_channel = {_CHANNELS[k]: s for k, s in streams.items()}

    async def send(channel: int, data: bytes) -> None:
        stream = by_channel.get(channel)
        if stream is not None and data:
            await stream.write(data)

    session = remotecommand.Session(opts, send, protocol=protocol)
    # The connection ending (the client hung up) ends the session; the task ends with the connection.
    watcher = asyncio.get_running_loop().create_task(conn.closed.wait())
    watcher.add_done_callback(lambda _: session.client_gone())
    return session


def _readers(session: remotecommand.Session, streams: Mapping[str, spdy.Stream]) -> list[asyncio.Task[None]]:
    loop = asyncio.get_running_loop()
    tasks = []
    if "stdin" in streams:
        tasks.append(loop.create_task(_read_stdin(session, streams["stdin"])))
    if "resize" in streams:
        tasks.append(loop.create_task(_read_resizes(session, streams["resize"])))
    return tasks


async def _read_stdin(session: remotecommand.Session, stream: spdy.Stream) -> None:
    while data := await stream.read():
        session.feed(remotecommand.STDIN, data)
    session.end_stdin()


async def _read_resizes(session: remotecommand.Session, stream: spdy.Stream) -> None:
    buffer = b""
    while data := await stream.read():
        values, buffer = split_json(buffer + data)
        for value in values:
            session.feed(remotecommand.RESIZE, json.dumps(value).encode())
