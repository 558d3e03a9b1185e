"""pods/exec, attach and portforward: kube's checks, then the upgraded connection relayed byte for byte to the kubelet."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ssl
from collections.abc import Mapping
from typing import Any
from urllib import parse

from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import context, podlogs

# The kubelet path each subresource maps to.
KUBELET_PATHS = {"exec": "exec", "attach": "attach", "portforward": "portForward"}
_ACTIONS = {"exec": "exec into", "attach": "attach to", "portforward": "forward to"}
CONNECT_SECONDS = 10.0
HEAD_LIMIT = 64 << 10
ERROR_BODY_LIMIT = 1 << 20
READ_SIZE = 65536
# Past this much unsent data toward one side, stop reading from the other until it drains.
HIGH_WATER = 1 << 20
# Headers not passed on to the kubelet: hop-by-hop ones we rewrite, and the caller's credentials.
_DROPPED = {"host", "authorization", "proxy-authorization", "content-length", "transfer-encoding", "keep-alive",
            "te", "trailer", "proxy-connection"}
# Headers of the kubelet's 101 not passed back (aiohttp writes its own).
_DROPPED_BACK = {"content-length", "transfer-encoding", "date", "server", "keep-alive"}


class BackendError(errors.APIError):
    """A failure reaching the kubelet, answered as kube answers a plain Go error: 500 with no reason."""

    code, reason = 500, ""


def dial_error(loc: Location, e: BaseException) -> str:
    """A failed connection to the kubelet worded as Go's net.Dial words it."""
    host = f"[{loc.host}]" if ":" in loc.host else loc.host
    prefix = f"dial tcp {host}:{loc.port}: "
    if isinstance(e, TimeoutError):
        return prefix + "i/o timeout"
    if isinstance(e, ConnectionRefusedError):
        return prefix + "connect: connection refused"
    if isinstance(e, OSError) and e.strerror and not isinstance(e, ssl.SSLError):
        return prefix + "connect: " + e.strerror.lower()
    return f"tls: {e}" if isinstance(e, ssl.SSLError) else prefix + str(e)


def is_upgrade(headers: Mapping[str, str]) -> bool:
    """httpstream.IsUpgradeRequest: a Connection header listing the upgrade token."""
    tokens = ",".join(v for k, v in headers.items() if k.lower() == "connection")
    return any(t.strip().lower() == "upgrade" for t in tokens.split(","))


def container_for(pod: Mapping[str, Any], wanted: str) -> str:
    """streamLocation's container choice: the one named, else the only one; 400s worded as kube's."""
    name = str((pod.get("metadata") or {}).get("name") or "")
    spec = pod.get("spec") or {}
    mains = podlogs.container_names(spec, "containers")
    inits = podlogs.container_names(spec, "initContainers")
    if not wanted:
        if len(mains) == 1:
            return mains[0]
        if not mains:
            raise errors.BadRequest(f"a container name must be specified for pod {name}")
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(mains)}]"
        if inits:
            message += f" or one of the init containers: [{' '.join(inits)}]"
        raise errors.BadRequest(message)
    if wanted not in (*mains, *inits, *podlogs.container_names(spec, "ephemeralContainers")):
        raise errors.BadRequest(f"container {wanted} is not valid for pod {name}")
    return wanted


def kubelet_query(sub: str, call: context.Call) -> str:
    """streamParams: the options as the kubelet reads them (input/output/error/tty = 1, command..., port)."""
    params: list[tuple[str, str]] = []
    if sub in ("exec", "attach"):
        for flag, key in (("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty")):
            if call.bool_param(flag):
                params.append((key, "1"))
        if sub == "exec":
            params += [("command", c) for c in call.request.query.getall("command", [])]
    else:
        ports = []
        for raw in call.request.query.getall("ports", []):
            for p in raw.split(","):
                try:
                    ports.append(str(int(p)))
                except ValueError:
                    raise errors.BadRequest(f'strconv.ParseInt: parsing "{p}": invalid syntax') from None
        if ports:
            params.append(("port", ",".join(ports)))
    return parse.urlencode(params)


@dataclasses.dataclass(frozen=True)
class Location:
    """Where the kubelet serves the request."""

    host: str
    port: int
    path_qs: str


async def locate(server: context.Server, call: context.Call) -> Location:
    """The kubelet URL for the request, or the Status kube-apiserver answers instead."""
    sub = call.info.subresource
    name = call.info.name
    pod = await server.objects.get(call.res, call.namespace, name)
    container = "" if sub == "portforward" else container_for(pod, call.param("container"))
    node_name = str((pod.get("spec") or {}).get("nodeName") or "")
    if not node_name:
        raise errors.BadRequest(f"pod {name} does not have a host assigned")
    nodes_res = server.registry.get("", "v1", "nodes")
    node = None if nodes_res is None else await server.objects.get_or_none(nodes_res, "", node_name)
    if node is None:
        raise errors.NotFound.for_object("nodes", "", node_name)
    if ((node.get("metadata") or {}).get("labels") or {}).get("type") == "virtual":
        raise errors.BadRequest(f"pod {name} runs on virtual node {node_name}, which runs no processes: "
                                f"there is nothing to {_ACTIONS[sub]}")
    if server.kubelet_ssl is None:
        raise errors.ServiceUnavailable("no kubelet client credentials are configured on this server")
    query = kubelet_query(sub, call)
    path = "/".join(parse.quote(p, safe="") for p in (call.namespace, name, container) if p)
    ip, port = podlogs.kubelet_endpoint(node)
    return Location(ip, port, f"/{KUBELET_PATHS[sub]}/{path}" + (f"?{query}" if query else ""))


async def handle(server: context.Server, call: context.Call) -> web.StreamResponse:
    """Serve one exec/attach/portforward request: check it, then relay the upgraded connection to the kubelet."""
    if call.info.verb == "get" and server.authorizer is not None:
        # A websocket upgrade arrives as GET: it needs create too (AuthorizePodWebsocketUpgradeCreatePermission).
        await server.authorizer(server, call.user, dataclasses.replace(call.info, verb="create"), call.request)
    loc = await locate(server, call)
    if not is_upgrade(call.request.headers):
        raise errors.BadRequest("Upgrade request required")
    return await relay(call.request, loc, ssl_context=server.kubelet_ssl)


def _head(method: str, loc: Location, headers: Any, body: bytes) -> bytes:
    host = f"[{loc.host}]" if ":" in loc.host else loc.host
    lines = [f"{method} {loc.path_qs} HTTP/1.1", f"Host: {host}:{loc.port}"]
    for k, v in headers.items():
        lk = k.lower()
        if lk in _DROPPED or lk.startswith("impersonate-") or "\r" in v or "\n" in v:
            continue
        lines.append(f"{k}: {v}")
    if body or method not in ("GET", "HEAD"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", errors="replace") + body


def parse_head(raw: bytes) -> tuple[int, str, list[tuple[str, str]]]:
    """The status code, reason and headers of an HTTP/1.1 response head."""
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ValueError(f"malformed HTTP response {lines[0]!r}")
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if sep:
            headers.append((name.strip(), value.strip()))
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    length = next((v for k, v in headers if k.lower() == "content-length"), None)
    if length is not None and length.isdigit():
        return await reader.readexactly(min(int(length), ERROR_BODY_LIMIT))
    if any(k.lower() == "transfer-encoding" and "chunked" in v.lower() for k, v in headers):
        body = b""
        while len(body) < ERROR_BODY_LIMIT:
            size = int((await reader.readline()).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                break
            body += await reader.readexactly(size)
            await reader.readline()
        return body
    return await reader.read(ERROR_BODY_LIMIT)


async def relay(request: web.Request, loc: Location, *, ssl_context: ssl.SSLContext | None) -> web.StreamResponse:
    """Send the request to the kubelet; relay a refusal as is, or a 101 and then the bytes both ways."""
    body = await request.read() if request.content_length else b""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(loc.host, loc.port, ssl=ssl_context, limit=HEAD_LIMIT), CONNECT_SECONDS)
    except (TimeoutError, OSError, ssl.SSLError) as e:
        raise BackendError(f"error dialing backend: {dial_error(loc, e)}") from None
    try:
        writer.write(_head(request.method, loc, request.headers, body))
        raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), CONNECT_SECONDS)
        code, reason, headers = parse_head(raw)
        if code != 101:
            data = await asyncio.wait_for(_read_body(reader, headers), CONNECT_SECONDS)
            writer.close()
            kind = next((v for k, v in headers if k.lower() == "content-type"), "text/plain; charset=utf-8")
            return web.Response(status=code, body=data, headers={"Content-Type": kind})
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
        writer.close()
        raise BackendError(f"error proxying to the kubelet: {e or 'timeout'}") from None
    except BaseException:
        writer.close()
        raise
    return await _pipe(request, reader, writer, reason, headers)


class _ToKubelet:
    """Takes the place of aiohttp's payload parser on the client connection: every byte goes to the kubelet."""

    def __init__(self, writer: asyncio.StreamWriter, client: asyncio.BaseTransport | None) -> None:
        self.writer = writer
        self.client = client
        self.eof = asyncio.Event()
        self._paused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if not self.writer.is_closing():
            self.writer.write(data)
            if self.writer.transport.get_write_buffer_size() > HIGH_WATER and not self._paused:
                self._pause()
        return False, b""

    def feed_eof(self) -> None:
        self.eof.set()

    def _pause(self) -> None:
        if not isinstance(self.client, asyncio.ReadTransport):
            return
        self._paused = True
        self.client.pause_reading()

        async def resume() -> None:
            with contextlib.suppress(ConnectionError):
                await self.writer.drain()
            self._paused = False
            if isinstance(self.client, asyncio.ReadTransport) and not self.client.is_closing():
                self.client.resume_reading()

        asyncio.get_running_loop().create_task(resume())


async def _pipe(request: web.Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reason: str,
                headers: list[tuple[str, str]]) -> web.StreamResponse:
    """Answer 101 with the kubelet's headers, then copy bytes both ways until either side closes."""
    response = web.StreamResponse(status=101, reason=reason or "Switching Protocols")
    for k, v in headers:
        if k.lower() not in _DROPPED_BACK:
            response.headers.add(k, v)
    response.force_close()  # the connection ends with the stream; it is never reused for another request
    upstream = _ToKubelet(writer, request.transport)
    # From here on the client's bytes are the upgraded protocol, not HTTP: hand them all to the kubelet.
    request.protocol.set_parser(upstream)  # type: ignore[arg-type]
    try:
        await response.prepare(request)
        down = asyncio.get_running_loop().create_task(_copy_down(reader, response))
        up = asyncio.get_running_loop().create_task(upstream.eof.wait())
        try:
            await asyncio.wait({down, up}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in (down, up):
                t.cancel()
            await asyncio.gather(down, up, return_exceptions=True)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    return response


async def _copy_down(reader: asyncio.StreamReader, response: web.StreamResponse) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        while chunk := await reader.read(READ_SIZE):
            await response.write(chunk)
