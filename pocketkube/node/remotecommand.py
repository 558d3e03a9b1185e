"""The remote-command stream protocol of exec and attach: options, channel frames, Status messages, sessions."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from aiohttp import WSMsgType, web

STDIN, STDOUT, STDERR, ERROR, RESIZE = 0, 1, 2, 3, 4
# v5: a client frame [255, channel] half-closes that channel (how stdin reaches EOF).
CLOSE = 255

V5 = "v5.channel.k8s.io"
V4 = "v4.channel.k8s.io"
V4_BASE64 = "v4.base64.channel.k8s.io"
V1 = "channel.k8s.io"
V1_BASE64 = "base64.channel.k8s.io"
# The kubelet's websocket subprotocols, newest first.
WEBSOCKET_PROTOCOLS = (V5, V4, V4_BASE64, V1, V1_BASE64)
BASE64_PROTOCOLS = (V4_BASE64, V1_BASE64)
# Where the error channel carries a JSON metav1.Status (older ones carry only a failure's text).
STATUS_PROTOCOLS = (V5, V4, V4_BASE64)

# The largest client message accepted (kubectl sends stdin in 32 KiB pieces).
MAX_MESSAGE = 16 << 20

NON_ZERO_EXIT = "NonZeroExitCode"
EXIT_CODE_CAUSE = "ExitCode"


class RequestError(Exception):
    """A request the kubelet refuses before upgrading: plain-text body and an HTTP status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Options:
    """Which streams a session has (the kubelet's remotecommand Options) and, for exec, the command."""

    stdin: bool = False
    stdout: bool = False
    stderr: bool = False
    tty: bool = False
    command: tuple[str, ...] = ()


def parse_options(query: Mapping[str, str], command: Sequence[str] = ()) -> Options:
    """Options from the kubelet query (input/output/error/tty = "1"); stderr is dropped under a tty as kube does."""
    tty = query.get("tty") == "1"
    stdin, stdout, stderr = (query.get(k) == "1" for k in ("input", "output", "error"))
    if tty:
        stderr = False
    if not (stdin or stdout or stderr):
        raise RequestError(400, "you must specify at least 1 of stdin, stdout, stderr")
    return Options(stdin=stdin, stdout=stdout, stderr=stderr, tty=tty, command=tuple(command))


def encode_frame(channel: int, data: bytes, *, text: bool = False) -> bytes | str:
    """One websocket message: the channel byte then the data (base64 protocols: an ASCII digit then base64)."""
    if text:
        return chr(ord("0") + channel) + base64.b64encode(data).decode("ascii")
    return bytes([channel]) + data


def decode_frame(message: bytes | str) -> tuple[int, bytes] | None:
    """The channel and data of a client message (None for an empty or undecodable one)."""
    if isinstance(message, str):
        if not message:
            return None
        try:
            return ord(message[0]) - ord("0"), base64.b64decode(message[1:], validate=True)
        except (binascii.Error, ValueError):
            return None
    if not message:
        return None
    return message[0], bytes(message[1:])


def parse_resize(data: bytes) -> tuple[int, int] | None:
    """A TerminalSize message {"Width": w, "Height": h} as (width, height); None if malformed."""
    try:
        size = json.loads(data)
        width, height = int(size.get("Width", 0)), int(size.get("Height", 0))
    except (ValueError, TypeError, AttributeError):
        return None
    if not (0 <= width < 65536 and 0 <= height < 65536):
        return None
    return width, height


def success() -> dict[str, Any]:
    return {"metadata": {}, "status": "Success"}


def exit_status(command: Sequence[str], code: int) -> dict[str, Any]:
    """The Status for a command that ended with a non-zero code, worded as the kubelet and containerd word it."""
    detail = f"error executing command [{' '.join(command)}], exit code {code}"
    return {"metadata": {}, "status": "Failure", "message": f"command terminated with non-zero exit code: {detail}",
            "reason": NON_ZERO_EXIT, "details": {"causes": [{"reason": EXIT_CODE_CAUSE, "message": str(code)}]}}


def internal_error(message: str) -> dict[str, Any]:
    """apierrors.NewInternalError as the kubelet writes it to the error channel."""
    return {"metadata": {}, "status": "Failure", "message": f"Internal error occurred: {message}",
            "reason": "InternalError", "details": {"causes": [{"message": message}]}, "code": 500}


def encode_status(status: Mapping[str, Any], protocol: str) -> bytes | None:
    """The error channel's last message: the Status as JSON (v4+), else a failure's message and nothing on success."""
    if protocol in STATUS_PROTOCOLS:
        return json.dumps(status, separators=(",", ":")).encode()
    if status.get("status") == "Success":
        return None
    return str(status.get("message") or "").encode()


Send = Callable[[int, bytes], Awaitable[None]]


class Session:
    """One exec or attach stream set, independent of the transport (websocket or SPDY) carrying it.

    The transport feeds stdin and resize messages in; the runner writes output with `send` and ends
    the session with `finish`. `closed` is set once the client has gone."""

    def __init__(self, opts: Options, send: Send, *, protocol: str) -> None:
        self.opts = opts
        self.protocol = protocol
        self._send = send
        self.stdin: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.resizes: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
        self.closed = asyncio.Event()
        self._stdin_done = False

    def feed(self, channel: int, data: bytes) -> None:
        """A message from the client on one of its channels."""
        if channel == STDIN and self.opts.stdin and not self._stdin_done:
            if data:
                self.stdin.put_nowait(data)
        elif channel == RESIZE:
            size = parse_resize(data)
            if size is not None:
                self.resizes.put_nowait(size)

    def close_channel(self, channel: int) -> None:
        """The client half-closed a channel: for stdin, the end of input."""
        if channel == STDIN:
            self.end_stdin()

    def end_stdin(self) -> None:
        if not self._stdin_done:
            self._stdin_done = True
            self.stdin.put_nowait(None)

    def client_gone(self) -> None:
        self.end_stdin()
        self.closed.set()

    async def send(self, channel: int, data: bytes) -> None:
        if self.closed.is_set():
            return
        try:
            await self._send(channel, data)
        except (ConnectionError, RuntimeError):
            self.client_gone()

    async def ready(self) -> None:
        """Tell the client the streams are up: an empty message on the lowest writable channel, as the kubelet does."""
        await self.send(STDOUT if self.opts.stdout else STDERR if self.opts.stderr else ERROR, b"")

    async def finish(self, status: Mapping[str, Any]) -> None:
        """Report how the session ended on the error channel."""
        body = encode_status(status, self.protocol)
        if body is not None:
            await self.send(ERROR, body)


Runner = Callable[[Session], Awaitable[None]]


async def serve_websocket(request: web.Request, opts: Options, run: Runner) -> web.WebSocketResponse:
    """Upgrade to a channel websocket, run the session, then close the socket (the end of the streams)."""
    ws = web.WebSocketResponse(protocols=WEBSOCKET_PROTOCOLS, autoping=True, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    protocol = ws.ws_protocol or V1
    text = protocol in BASE64_PROTOCOLS

    async def send(channel: int, data: bytes) -> None:
        frame = encode_frame(channel, data, text=text)
        if isinstance(frame, str):
            await ws.send_str(frame)
        else:
            await ws.send_bytes(frame)

    session = Session(opts, send, protocol=protocol)
    reader = asyncio.get_running_loop().create_task(_read_websocket(ws, session, v5=protocol == V5))
    try:
        await session.ready()
        await run(session)
    finally:
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
        await ws.close()
    return ws


async def _read_websocket(ws: web.WebSocketResponse, session: Session, *, v5: bool) -> None:
    try:
        async for msg in ws:
            if msg.type not in (WSMsgType.BINARY, WSMsgType.TEXT):
                continue
            data = msg.data
            if v5 and isinstance(data, bytes) and data[:1] == bytes([CLOSE]):
                if len(data) == 2:
                    session.close_channel(data[1])
                continue
            frame = decode_frame(data)
            if frame is not None:
                session.feed(*frame)
    finally:
        session.client_gone()
