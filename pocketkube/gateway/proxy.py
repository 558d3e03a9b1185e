"""The ingress data plane: an HTTP/1.1 reverse proxy serving the current route table on host ports."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import ssl
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from pocketkube.gateway import endpoints, routes, tls

log = logging.getLogger("pocketkube.gateway.proxy")

# Hop-by-hop headers (RFC 9110 7.6.1) are never forwarded.
HOP_BY_HOP = frozenset(h.lower() for h in ("Connection", "Keep-Alive", "Proxy-Authenticate", "Proxy-Authorization",
                                           "Proxy-Connection", "TE", "Trailer", "Transfer-Encoding", "Upgrade"))
# ingress-nginx's proxy-connect-timeout and proxy-read-timeout defaults.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
# Bodies up to this size are read whole, so a failed connection can be retried on the next endpoint.
BUFFER_LIMIT = 1 << 20
# proxy_next_upstream_tries of ingress-nginx.
MAX_TRIES = 3
SERVER = "pocketkube-ingress"


def nginx_page(status: int, reason: str) -> bytes:
    """The error page nginx (and so ingress-nginx) serves for status."""
    return (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            ).encode()


@dataclasses.dataclass(frozen=True)
class State:
    """Everything a request needs, swapped as one reference so each request sees one consistent table."""

    table: routes.Table
    upstreams: Mapping[routes.Backend, endpoints.Upstream]
    # SNI host (exact or "*.suffix", as in table.tls) to its certificate's context.
    contexts: Mapping[str, ssl.SSLContext]


EMPTY_STATE = State(table=routes.EMPTY, upstreams={}, contexts={})


class Proxy:
    """Serves HTTP and HTTPS for the ingress; update() swaps the route table atomically."""

    def __init__(self, *, contexts: tls.Contexts | None = None) -> None:
        self.state = EMPTY_STATE
        self.tls = contexts or tls.Contexts()
        self.http_port = 0
        self.https_port = 0
        self._rr: dict[routes.Backend, int] = {}
        self._session: aiohttp.ClientSession | None = None
        self._runner: web.ServerRunner | None = None
        self.tls.default.sni_callback = self._sni

    def update(self, state: State) -> None:
        self.state = state

    # -- listening ---------------------------------------------------------------------------------------------

    async def start(self, *, host: str, http_ports: Sequence[int], https_ports: Sequence[int]) -> tuple[int, int]:
        """Listen on the first port of each list that binds (0 picks a free one); returns (http, https) ports."""
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=60, ttl_dns_cache=None),
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT, sock_read=READ_TIMEOUT),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"))
        server = web.Server(self.handle, access_log=None)  # type: ignore[arg-type]
        self._runner = web.ServerRunner(server, handle_signals=False)
        await self._runner.setup()
        self.http_port = await self._bind(host, http_ports, None)
        self.https_port = await self._bind(host, https_ports, self.tls.default)
        return self.http_port, self.https_port

    async def _bind(self, host: str, ports: Sequence[int], ctx: ssl.SSLContext | None) -> int:
        assert self._runner is not None
        last: OSError | None = None
        for port in ports:
            site = web.TCPSite(self._runner, host, port, ssl_context=ctx, reuse_address=True)
            try:
                await site.start()
            except OSError as e:
                last = e
                continue
            server = site._server
            sockets = getattr(server, "sockets", None) or []
            return int(sockets[0].getsockname()[1]) if sockets else port
        raise OSError(f"ingress: cannot listen on {host} ports {', '.join(map(str, ports))}: {last}")

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        # Runs inside the handshake: pick the certificate for the requested name, else keep the fake one.
        if not name:
            return
        entry = routes.tls_host(self.state.table, name)
        if entry is None:
            return
        chosen = self.state.contexts.get(entry.host)
        if chosen is not None:
            sslobj.context = chosen

    # -- requests ----------------------------------------------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        state = self.state
        host = request.headers.get("Host") or request.host or ""
        secure = request.transport is not None and request.transport.get_extra_info("sslcontext") is not None
        if not secure and routes.tls_host(state.table, host) is not None:
            return self._redirect(request, host)
        route = state.table.match(host, request.path, request.headers)
        if route is not None:
            backend = _pick(route.backends)
        elif state.table.default_backend is not None:
            backend = state.table.default_backend
        else:
            return _page(404, "Not Found")
        upstream = state.upstreams.get(backend)
        if upstream is None or not upstream.addresses:
            return _page(503, "Service Temporarily Unavailable")
        headers = self._forward_headers(request, host, secure)
        if _is_websocket(request):
            return await self._websocket(request, upstream, headers)
        return await self._forward(request, backend, upstream, headers, route)

    def _redirect(self, request: web.BaseRequest, host: str) -> web.StreamResponse:
        name = routes.normalize_host(host)
        netloc = name if self.https_port in (443, 0) else f"{name}:{self.https_port}"
        location = f"https://{netloc}{request.raw_path}"
        resp = web.Response(status=308, body=nginx_page(308, "Permanent Redirect"), content_type="text/html")
        resp.headers["Location"] = location
        return resp

    def _forward_headers(self, request: web.BaseRequest, host: str, secure: bool) -> CIMultiDict[str]:
        out: CIMultiDict[str] = CIMultiDict()
        conn_tokens = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
        for k, v in request.headers.items():
            lk = k.lower()
            if lk in HOP_BY_HOP or lk in conn_tokens or lk.startswith("x-forwarded-") or lk == "x-real-ip":
                continue
            out.add(k, v)
        peer = request.remote or ""
        # ingress-nginx (use-forwarded-headers false) replaces the client's X-Forwarded-* with what it saw.
        out["X-Real-IP"] = peer
        out["X-Forwarded-For"] = peer
        out["X-Forwarded-Host"] = routes.normalize_host(host)
        out["X-Forwarded-Port"] = str(self.https_port if secure else self.http_port)
        out["X-Forwarded-Proto"] = "https" if secure else "http"
        out["X-Forwarded-Scheme"] = "https" if secure else "http"
        out["Host"] = host
        return out

    def _order(self, backend: routes.Backend, upstream: endpoints.Upstream) -> list[tuple[str, int]]:
        # Round robin: each request starts one endpoint further; retries walk on from there.
        n = len(upstream.addresses)
        start = self._rr.get(backend, 0) % n
        self._rr[backend] = start + 1
        return [upstream.addresses[(start + i) % n] for i in range(n)]

    async def _forward(self, request: web.BaseRequest, backend: routes.Backend, upstream: endpoints.Upstream,
                       headers: CIMultiDict[str], route: routes.Route | None) -> web.StreamResponse:
        assert self._session is not None
        body: Any = None
        buffered = True
        if request.body_exists:
            size = request.content_length
            if size is not None and size <= BUFFER_LIMIT:
                body = await request.read()
            else:
                body, buffered = request.content.iter_any(), False
        extra: dict[str, Any] = {}
        if route is not None and route.timeout:
            extra["timeout"] = aiohttp.ClientTimeout(total=route.timeout, sock_connect=CONNECT_TIMEOUT)
        tries = MAX_TRIES + (route.retries if route is not None else 0)
        targets = self._order(backend, upstream)[:tries] if buffered else self._order(backend, upstream)[:1]
        resp: aiohttp.ClientResponse | None = None
        for addr_host, addr_port in targets:
            url = URL.build(scheme="http", host=addr_host, port=addr_port, encoded=True).join(
                URL(request.raw_path, encoded=True))
            try:
                resp = await self._session.request(request.method, url, headers=headers, data=body,
                                                   allow_redirects=False, **extra)
                break
            except (aiohttp.ClientConnectorError, aiohttp.ServerDisconnectedError) as e:
                log.debug("ingress: upstream %s:%s failed: %s", addr_host, addr_port, e)
                continue
            except (aiohttp.ClientError, TimeoutError) as e:
                log.debug("ingress: upstream %s:%s failed: %s", addr_host, addr_port, e)
                return _page(504 if isinstance(e, TimeoutError) else 502,
                             "Gateway Time-out" if isinstance(e, TimeoutError) else "Bad Gateway")
        if resp is None:
            return _page(502, "Bad Gateway")
        try:
            out = web.StreamResponse(status=resp.status, reason=resp.reason)
            conn_tokens = {t.strip().lower() for t in resp.headers.get("Connection", "").split(",")}
            for k, v in resp.headers.items():
                lk = k.lower()
                if lk in HOP_BY_HOP or lk in conn_tokens or lk == "content-length":
                    continue
                out.headers.add(k, v)
            if resp.content_length is not None:
                out.content_length = resp.content_length
            await out.prepare(request)
            async for chunk in resp.content.iter_any():
                await out.write(chunk)
            await out.write_eof()
            return out
        except (aiohttp.ClientError, TimeoutError, ConnectionResetError) as e:
            # Headers are already sent: the best we can do is cut the client's connection.
            log.debug("ingress: streaming from upstream failed: %s", e)
            if request.transport is not None:
                request.transport.close()
            return web.Response(status=502)
        finally:
            resp.release()

    async def _websocket(self, request: web.BaseRequest, upstream: endpoints.Upstream,
                         headers: CIMultiDict[str]) -> web.StreamResponse:
        assert self._session is not None
        addr_host, addr_port = upstream.addresses[0]
        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        for h in ("Sec-WebSocket-Key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions",
                  "Sec-WebSocket-Protocol"):
            headers.popall(h, None)
        url = URL.build(scheme="ws", host=addr_host, port=addr_port, encoded=True).join(
            URL(request.raw_path, encoded=True))
        try:
            back = await self._session.ws_connect(url, headers=headers, protocols=protocols, autoping=False)
        except aiohttp.WSServerHandshakeError as e:
            return web.Response(status=e.status or 502, text=e.message)
        except (aiohttp.ClientError, TimeoutError):
            return _page(502, "Bad Gateway")
        front = web.WebSocketResponse(protocols=[back.protocol] if back.protocol else (), autoping=False)
        await front.prepare(request)  # type: ignore[arg-type]

        async def pump(src: Any, dst: Any) -> None:
            async for msg in src:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    await dst.send_str(msg.data)
                elif msg.type == aiohttp.WSMsgType.BINARY:
                    await dst.send_bytes(msg.data)
                elif msg.type == aiohttp.WSMsgType.PING:
                    await dst.ping(msg.data)
                elif msg.type == aiohttp.WSMsgType.PONG:
                    await dst.pong(msg.data)
                else:
                    break
            await dst.close()

        tasks = [asyncio.ensure_future(pump(front, back)), asyncio.ensure_future(pump(back, front))]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await back.close()
            await front.close()
        return front


def _pick(backends: Sequence[routes.Backend]) -> routes.Backend:
    if len(backends) == 1:
        return backends[0]
    return random.choices(list(backends), weights=[max(b.weight, 0) for b in backends])[0]


def _is_websocket(request: web.BaseRequest) -> bool:
    conn = {t.strip().lower() for t in request.headers.get("Connection", "").split(",")}
    return "upgrade" in conn and request.headers.get("Upgrade", "").lower() == "websocket"


def _page(status: int, reason: str) -> web.Response:
    return web.Response(status=status, body=nginx_page(status, reason), content_type="text/html")
