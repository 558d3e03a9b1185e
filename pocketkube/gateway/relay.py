"""One client connection of the ingress proxy: reads its requests, relays each to an endpoint and the answer back."""

from __future__ import annotations

import asyncio
import collections.abc
import dataclasses
import logging
import random
import ssl
import typing
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence

from pocketkube.base import clock as clock_mod
from pocketkube.gateway import endpoints, http1, pool, routes

log = logging.getLogger("pocketkube.gateway.proxy")

# proxy_next_upstream_tries of ingress-nginx.
MAX_TRIES = 3
# Request bodies up to this size are kept, so a request whose connection died unanswered can go to another endpoint.
REPLAY_LIMIT = 1 << 20
# Methods nginx sends to the next endpoint after the request already went out (never POST, LOCK, PATCH).
IDEMPOTENT = frozenset((b"GET", b"HEAD", b"OPTIONS", b"TRACE", b"PUT", b"DELETE"))

# Distinct host+path pairs whose routing is remembered per table (a scan of random paths just refills it).
LOOKUP_CACHE = 4096

HEAD, BODY, WAIT, TUNNEL, CLOSED = range(5)

# (redirect to HTTPS, route or None, X-Forwarded-Host, backend fixed?, that backend, its upstream,
#  the X-Forwarded-Host line as forwarded)
Lookup = tuple[bool, routes.Route | None, bytes, bool, routes.Backend | None, endpoints.Upstream | None, bytes]

# The shared empty list of an exchange without body bytes (never appended to: replaced on first use).
_NOTHING: list[bytes] = []


@dataclasses.dataclass(frozen=True)
class State:
    """Everything a request needs, swapped as one reference so each request sees one consistent table."""

    table: routes.Table
    upstreams: Mapping[routes.Backend, endpoints.Upstream]
    # SNI host (exact or "*.suffix", as in table.tls) to its certificate's context.
    contexts: Mapping[str, ssl.SSLContext]


EMPTY_STATE = State(table=routes.EMPTY, upstreams={}, contexts={})


class Plane:
    """What every connection of one proxy shares: the current table, the upstream pool, ports and timeouts."""

    def __init__(self, *, clock: clock_mod.Clock, connect_timeout: float, read_timeout: float,
                 keepalive_timeout: float, header_timeout: float) -> None:
        self.state = EMPTY_STATE
        self.clock = clock
        self.pool = pool.Pool(connect_timeout=connect_timeout)
        self.read_timeout = read_timeout
        self.keepalive_timeout = keepalive_timeout
        self.header_timeout = header_timeout
        self.http_port = 0
        self.https_port = 0
        # The sweeper's last reading of the clock: timeouts are checked that often, so the hot path never asks.
        self.now = clock.monotonic()
        self.conns: set[ClientConn] = set()
        self._rr: dict[routes.Backend, int] = {}
        # The table the lookups below were made for; ClientConn reads a hit straight from them.
        self.cached_state: State | None = None
        self._headers_matter = False
        self.lookups: dict[tuple[bytes, bytes], Lookup] = {}

    def lookup(self, st: State, host: bytes, path: bytes, req: http1.Request) -> Lookup:
        """Where a request goes, cached per table and host+path (a table is never changed, only replaced)."""
        if st is not self.cached_state:
            self.cached_state = st
            self.lookups = {}
            self._headers_matter = any(r.headers for rs in st.table.hosts.values() for r in rs)
        key = (host, path)
        hit = self.lookups.get(key)
        if hit is not None:
            return hit
        host_s = host.decode("latin-1")
        path_s = path.decode("latin-1")
        if "%" in path_s:
            path_s = urllib.parse.unquote(path_s)
        table = st.table
        redirect = bool(table.tls) and routes.tls_host(table, host_s) is not None
        route = table.match(host_s, path_s, _HeaderView(req) if self._headers_matter else None)
        # With one possible backend its endpoints are known now, and the same for every request of this key.
        backend: routes.Backend | None = None
        fixed = route is None or len(route.backends) == 1
        if fixed:
            backend = table.default_backend if route is None else route.backends[0]
        upstream = st.upstreams.get(backend) if backend is not None else None
        xfh = routes.normalize_host(host_s).encode("latin-1")
        hit = (redirect, route, xfh, fixed, backend, upstream, b"\r\nX-Forwarded-Host: " + xfh)
        if not self._headers_matter:
            if len(self.lookups) >= LOOKUP_CACHE:
                self.lookups = {}
            self.lookups[key] = hit
        return hit

    def order(self, backend: routes.Backend, addresses: Sequence[pool.Address], tries: int) -> list[pool.Address]:
        """Round robin: each request starts one endpoint further; retries walk on from there."""
        n = len(addresses)
        if n == 1:
            return [addresses[0]]
        start = self._rr.get(backend, 0) % n
        self._rr[backend] = start + 1
        return [addresses[(start + i) % n] for i in range(min(n, tries))]

    def sweep(self) -> None:
        """Enforce timeouts: idle clients, slow heads, silent upstreams, stale pooled connections."""
        now = self.now = self.clock.monotonic()
        for c in list(self.conns):
            c.check(now)
        self.pool.expire(now)


class _HeaderView(collections.abc.Mapping[str, str]):
    """Request headers by case-insensitive name, for routes that match on headers."""

    def __init__(self, req: http1.Request) -> None:
        self._req = req

    def __getitem__(self, name: str) -> str:
        v = self._req.get(name.lower().encode("latin-1"))
        if v is None:
            raise KeyError(name)
        return v.decode("latin-1")

    def __iter__(self) -> Iterator[str]:
        return (k.decode("latin-1") for k, _ in self._req.headers)

    def __len__(self) -> int:
        return len(self._req.headers)


def _pick(backends: Sequence[routes.Backend]) -> routes.Backend:
    if len(backends) == 1:
        return backends[0]
    return random.choices(list(backends), weights=[max(b.weight, 0) for b in backends])[0]


class ClientConn(asyncio.Protocol):
    """A client connection: requests are handled one at a time, pipelined ones wait in the buffer."""

    __slots__ = ("plane", "secure", "transport", "phase", "buf", "since", "paused", "up_paused", "fwd", "eof",
                 "_in_next", "req", "up", "connecting", "targets", "head_out", "pending", "pending_size", "replay",
                 "replay_size", "attempts", "body_left", "chunks", "body_done", "resp", "rbuf", "resp_left",
                 "rchunks", "head_sent", "held", "got_bytes", "up_reusable", "client_keep", "last", "deadline",
                 "rare")

    def __init__(self, plane: Plane, *, secure: bool) -> None:
        self.plane = plane
        self.secure = secure
        self.transport: asyncio.Transport | None = None
        self.phase = HEAD
        self.buf = b""
        self.since = plane.clock.monotonic()
        self.paused = False  # reading from the client is paused
        self.up_paused = False  # reading from the upstream is paused for the client's sake
        self.fwd = b""
        self.eof = False
        self.rare = False
        self._in_next = False
        self.targets: Sequence[pool.Address] = ()
        self.head_out = b""
        self.body_done = False
        self.resp_left = 0
        self.rchunks: http1.Chunked | None = None
        self.last = 0.0
        self.deadline = 0.0
        self._reset()
        self._reset_rare()

    def _reset(self) -> None:
        """Forget the exchange that ended (what _start sets anew for every request is left alone)."""
        self.req: http1.Request | None = None
        self.up: pool.Conn | None = None
        self.resp: http1.Response | None = None
        self.rbuf = b""
        self.head_sent = False
        self.held = b""
        self.got_bytes = False
        self.up_reusable = True
        self.client_keep = False
        if self.rare:
            self._reset_rare()

    def _reset_rare(self) -> None:
        # Request bodies, connecting and retries: an exchange using any of them sets rare, so the rest skip this.
        self.rare = False
        self.connecting: asyncio.Task[None] | None = None
        self.pending: list[bytes] = _NOTHING
        self.pending_size = 0
        # Body bytes kept for a retry; None once they outgrew REPLAY_LIMIT.
        self.replay: list[bytes] | None = _NOTHING
        self.replay_size = 0
        self.attempts = 0
        self.body_left = 0
        self.chunks: http1.Chunked | None = None

    # -- client side -------------------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = typing.cast(asyncio.Transport, transport)
        self.plane.conns.add(self)
        peer = transport.get_extra_info("peername")
        ip = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        port = self.plane.https_port if self.secure else self.plane.http_port
        scheme = b"https" if self.secure else b"http"
        # ingress-nginx (use-forwarded-headers false) replaces the client's X-Forwarded-* with what it saw.
        self.fwd = (b"\r\nX-Real-IP: %s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Port: %d\r\nX-Forwarded-Proto: %s"
                    b"\r\nX-Forwarded-Scheme: %s\r\n\r\n" % (ip.encode(), ip.encode(), port, scheme, scheme))

    def connection_lost(self, exc: Exception | None) -> None:
        self.phase = CLOSED
        self.plane.conns.discard(self)
        self._drop_upstream()
        if self.connecting is not None:
            self.connecting.cancel()

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == HEAD:
            self.buf = self.buf + data if self.buf else data
            self._next()
        elif phase == BODY:
            self._body(data)
        elif phase == TUNNEL:
            if self.up is not None:
                self.up.write(data)
        elif phase == WAIT:
            # The next pipelined request: it waits until this response is done.
            self.buf += data
            if len(self.buf) > http1.MAX_HEAD:
                self._pause_client()

    def eof_received(self) -> bool:
        # A half-closed client may still want its answer (HTTP/1.0 style); tunnels pass the EOF on.
        self.eof = True
        if self.phase == TUNNEL and self.up is not None and self.up.transport is not None:
            if self.up.transport.can_write_eof():
                self.up.transport.write_eof()
            return True
        return self.phase == WAIT

    def pause_writing(self) -> None:
        if self.up is not None and self.up.transport is not None and not self.up_paused:
            self.up_paused = True
            self.up.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.up_paused:
            self.up_paused = False
            if self.up is not None and self.up.transport is not None:
                self.up.transport.resume_reading()

    def _pause_client(self) -> None:
        if not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def _resume_client(self) -> None:
        if self.paused and self.transport is not None and self.phase != CLOSED:
            self.paused = False
            self.transport.resume_reading()

    def _write(self, data: bytes) -> None:
        if self.held:
            # The response head goes out with the first body bytes: one send instead of two.
            data, self.held = self.held + data, b""
        if self.transport is not None and self.phase != CLOSED and data:
            self.transport.write(data)

    def _close(self, *, abort: bool = False) -> None:
        if self.phase != CLOSED and self.transport is not None:
            self.phase = CLOSED
            if abort:
                self.transport.abort()
            else:
                self.transport.close()

    def _next(self) -> None:
        """Start every complete request in the buffer, as long as each is answered at once."""
        if self._in_next:
            return
        self._in_next = True
        try:
            while self.phase == HEAD and self.buf:
                buf = self.buf
                if buf[0] == 13 and buf[:2] == b"\r\n":
                    # An empty line before a request is tolerated (RFC 9112 2.2).
                    self.buf = buf.lstrip(b"\r\n")
                    continue
                head, blank, self.buf = buf.partition(b"\r\n\r\n")
                if not blank:
                    self.buf = buf
                    if len(buf) > http1.MAX_HEAD:
                        self._page(400, keep=False)
                    return
                try:
                    req = http1.parse_request(head)
                except http1.BadMessage as e:
                    log.debug("ingress: bad request: %s", e)
                    self._page(e.status, keep=False)
                    return
                self._start(req)
        finally:
            self._in_next = False

    def _start(self, req: http1.Request) -> None:
        plane = self.plane
        st = plane.state
        host = req.host
        target = req.target
        if target[:1] == b"/":
            keep_host = host is not None
            if host is None:
                host = b""
        else:
            parsed = urllib.parse.urlsplit(target)
            if parsed.scheme not in (b"http", b"https") or not parsed.netloc:
                self._page(400, keep=False)
                return
            host = parsed.netloc
            target = (parsed.path or b"/") + (b"?" + parsed.query if parsed.query else b"")
            keep_host = False
        self.req = req
        path = target.partition(b"?")[0]
        hit = plane.lookups.get((host, path)) if st is plane.cached_state else None
        if hit is None:
            hit = plane.lookup(st, host, path, req)
        redirect, route, xfh, fixed, backend, upstream, xfh_line = hit
        if redirect and not self.secure:
            netloc = xfh if plane.https_port in (443, 0) else b"%s:%d" % (xfh, plane.https_port)
            self._page(308, keep=req.keep_alive and req.framing == http1.NO_BODY,
                       extra=((b"Location", b"https://" + netloc + target),))
            return
        if not fixed:
            assert route is not None
            backend = _pick(route.backends)
            upstream = st.upstreams.get(backend)
        if backend is None:
            self._page(404, keep=req.keep_alive and req.framing == http1.NO_BODY)
            return
        if upstream is None or not upstream.addresses:
            self._page(503, keep=req.keep_alive and req.framing == http1.NO_BODY)
            return
        addresses = upstream.addresses
        if len(addresses) == 1:
            self.targets = addresses
        else:
            self.targets = plane.order(backend, addresses, MAX_TRIES + (route.retries if route is not None else 0))
        now = plane.now
        self.last = now
        self.deadline = now + route.timeout if route is not None and route.timeout else 0.0
        if req.clean and keep_host and not req.upgrade:
            # Nothing to drop or add: the head goes on as received.
            head_out = self.head_out = b"".join((req.head, xfh_line, self.fwd))
        else:
            block = http1.forward_block(req, keep_host=keep_host)
            if not keep_host:
                block = b"\r\nHost: " + host + block
            if req.upgrade:
                block += b"\r\nConnection: upgrade\r\nUpgrade: " + req.upgrade
            head_out = self.head_out = b"".join(
                (req.line if target is req.target else b"%s %s %s" % (req.method, target, req.version),
                 block, xfh_line, self.fwd))
        if req.framing == http1.NO_BODY:
            self.phase, self.body_done = WAIT, True
            conn = plane.pool.take(self.targets[0])
            if conn is not None:
                # The common case, _attach without a body to send.
                self.up = conn
                conn.exchange = self
                conn.write(head_out)
                return
            self._dispatch()
            return
        self.rare = True
        self.phase, self.body_done = BODY, False
        self.body_left = req.length
        self.chunks = http1.Chunked() if req.framing == http1.CHUNKED else None
        self._dispatch()
        if self.phase == BODY and self.buf:
            data, self.buf = self.buf, b""
            self._body(data)

    def _body(self, data: bytes) -> None:
        self.last = self.plane.now
        rest = b""
        if self.chunks is not None:
            try:
                end = self.chunks.feed(data)
            except http1.BadMessage as e:
                log.debug("ingress: bad request body: %s", e)
                self._drop_upstream()
                if self.head_sent:
                    self._close(abort=True)
                else:
                    self._page(400, keep=False)
                return
            done = end >= 0
            if done and end < len(data):
                data, rest = data[:end], data[end:]
        else:
            if len(data) > self.body_left:
                data, rest = data[:self.body_left], data[self.body_left:]
            self.body_left -= len(data)
            done = self.body_left == 0
        if self.replay is not None:
            self.replay_size += len(data)
            if self.replay_size > REPLAY_LIMIT:
                self.replay = None
            elif self.replay is _NOTHING:
                self.replay = [data]
            else:
                self.replay.append(data)
        if self.up is not None:
            self.up.write(data)
        else:
            if self.pending is _NOTHING:
                self.pending = []
            self.pending.append(data)
            self.pending_size += len(data)
            if self.pending_size > REPLAY_LIMIT:
                self._pause_client()
        if done:
            self.phase, self.body_done = WAIT, True
            self.buf = rest
            if self.resp is not None and self.up is None:
                # The answer came before the whole body (an early 413, say) and is complete already.
                self._complete()

    # -- upstream side -----------------------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Send the request on an idle connection to the first target, or open a new one."""
        conn = self.plane.pool.take(self.targets[0])
        if conn is not None:
            self._attach(conn)
        else:
            self.rare = True
            self.connecting = asyncio.get_running_loop().create_task(self._connect(self.targets[0]))

    async def _connect(self, address: pool.Address) -> None:
        try:
            conn = await self.plane.pool.connect(address)
        except (OSError, TimeoutError) as e:
            self.connecting = None
            if self.phase != CLOSED:
                log.debug("ingress: upstream %s:%s failed: %s", address[0], address[1], e)
                self._retry_or_fail(504 if isinstance(e, TimeoutError) else 502, sent=False)
            return
        self.connecting = None
        if self.phase == CLOSED or self.req is None:
            self.plane.pool.give_back(conn, self.plane.now)
            return
        self._attach(conn)

    def _attach(self, conn: pool.Conn) -> None:
        if self.attempts and self.replay is None:
            # The body outgrew what is kept while the retry connected: it cannot be sent whole any more.
            self.plane.pool.give_back(conn, self.plane.now)
            self._fail(502)
            return
        self.up = conn
        conn.exchange = self
        self.last = self.plane.now
        parts = self.replay if self.attempts and self.replay is not None else self.pending
        conn.write(self.head_out + b"".join(parts) if parts else self.head_out)
        self.pending, self.pending_size = _NOTHING, 0
        if self.phase == BODY:
            self._resume_client()

    def _retry_or_fail(self, status: int, *, sent: bool) -> None:
        self.targets = self.targets[1:]
        assert self.req is not None
        if self.targets and self.replay is not None and (not sent or self.req.method in IDEMPOTENT):
            self.rare = True
            self.attempts += 1
            self._dispatch()
        else:
            self._fail(status)

    def _fail(self, status: int) -> None:
        """The upstream cannot answer: nginx's error page if nothing was sent yet, else cut the client off."""
        self._drop_upstream()
        if self.head_sent:
            self._close(abort=True)
            return
        assert self.req is not None
        self._page(status, keep=self.req.keep_alive and self.body_done)

    def upstream_paused(self, paused: bool) -> None:
        if paused:
            self._pause_client()
        elif self.phase in (BODY, TUNNEL):
            self._resume_client()

    def upstream_lost(self, conn: pool.Conn) -> None:
        if conn is not self.up:
            return
        self.up = None
        if self.phase == TUNNEL:
            self._close()
            return
        resp = self.resp
        if resp is not None and resp.framing == http1.UNTIL_CLOSE:
            self.up_reusable = False
            self._complete()
            return
        if not self.got_bytes:
            if conn.reused and self.replay is not None:
                # A pooled connection the endpoint closed while idle: the request never reached it.
                self.rare = True
                self.attempts += 1
                self.connecting = asyncio.get_running_loop().create_task(self._connect(conn.address))
                return
            self._retry_or_fail(502, sent=True)
            return
        self._fail(502)

    def upstream_data(self, data: bytes) -> None:
        resp = self.resp
        if resp is None:
            self.got_bytes = True
            self.last = self.plane.now
            data = self._response_head(data)
            resp = self.resp
            if resp is None or self.phase in (TUNNEL, CLOSED):
                return
        elif self.phase == TUNNEL:
            self._write(data)
            return
        else:
            self.last = self.plane.now
        if resp.framing == http1.LENGTH:
            left = self.resp_left
            if len(data) >= left:
                if len(data) > left:
                    self.up_reusable = False
                    data = data[:left]
                if self.held:
                    self._write(data)
                elif self.phase != CLOSED and self.transport is not None:
                    self.transport.write(data)
                self._complete()
            else:
                self.resp_left = left - len(data)
                self._write(data)
        elif resp.framing == http1.CHUNKED:
            assert self.rchunks is not None
            try:
                end = self.rchunks.feed(data)
            except http1.BadMessage as e:
                log.debug("ingress: bad chunked response: %s", e)
                self._fail(502)
                return
            if end < 0:
                self._write(data)
            else:
                if end < len(data):
                    self.up_reusable = False
                self._write(data[:end])
                self._complete()
        elif resp.framing == http1.UNTIL_CLOSE:
            self._write(data)
        else:
            if data:
                self.up_reusable = False
            self._write(b"")
            self._complete()

    def _response_head(self, data: bytes) -> bytes:
        """Parse (and relay) the response head once it is whole; returns the body bytes that followed it."""
        req = self.req
        assert req is not None
        buf = self.rbuf + data if self.rbuf else data
        while True:
            head, blank, rest = buf.partition(b"\r\n\r\n")
            if not blank:
                self.rbuf = buf
                if len(buf) > http1.MAX_HEAD:
                    self._fail(502)
                return b""
            try:
                resp = http1.parse_response(head, method=req.method)
            except http1.BadMessage as e:
                log.debug("ingress: bad response: %s", e)
                self._fail(502)
                return b""
            if resp.status == 101 and req.upgrade:
                self.rbuf = b""
                self.resp = resp
                self._write(http1.response_head(resp, connection=b""))
                self.head_sent = True
                self.phase = TUNNEL
                self._write(rest)
                if self.buf and self.up is not None:
                    self.up.write(self.buf)
                self.buf = b""
                self._resume_client()
                return b""
            if resp.status < 200:
                if resp.status != 101:
                    # 100 Continue and other interim answers pass through; the final one follows.
                    self._write(http1.response_head(resp, connection=b""))
                    buf = rest
                    continue
                self._fail(502)
                return b""
            break
        if self.rbuf:
            self.rbuf = b""
        self.resp = resp
        self.head_sent = True
        framing = resp.framing
        if framing == http1.CHUNKED:
            self.rchunks = http1.Chunked()
        keep = self.client_keep = req.keep_alive and framing != http1.UNTIL_CLOSE and self.phase == WAIT
        # The status line was checked to be HTTP/1.1 or HTTP/1.0: its 8th byte tells which.
        if keep and resp.clean and req.version == b"HTTP/1.1" and resp.line[7] == 49:
            if framing == http1.LENGTH:
                # Nothing to rewrite: the head goes out as received, counted as part of the body that follows
                # it, so a response that arrived in one read leaves in one write of the very same bytes.
                self.resp_left = resp.length + len(head) + 4
                return buf
            self.held = head + blank
        else:
            connection = b"close" if not keep else b"keep-alive" if req.version == b"HTTP/1.0" else b""
            self.held = http1.response_head(resp, connection=connection)
            self.resp_left = resp.length
        return rest

    def _drop_upstream(self) -> None:
        up, self.up = self.up, None
        if up is not None:
            up.exchange = None
            up.close()

    def _complete(self) -> None:
        """The response is whole: give the upstream connection back and read the client's next request."""
        req, resp, up = self.req, self.resp, self.up
        assert req is not None and resp is not None
        self.up = None
        if up is not None:
            if self.up_paused and up.transport is not None:
                up.transport.resume_reading()
            self.up_paused = False
            if (self.up_reusable and resp.keep_alive and self.body_done and req.version == b"HTTP/1.1"
                    and not up.closed):
                self.plane.pool.give_back(up, self.plane.now)
            else:
                up.exchange = None
                up.close()
        if not self.body_done:
            self.client_keep = False
        self._end_exchange(self.client_keep)

    def _page(self, status: int, *, keep: bool, extra: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        head_only = self.req is not None and self.req.method == b"HEAD"
        self._write(http1.page_response(status, keep_alive=keep, head_only=head_only, extra=extra))
        self._end_exchange(keep)

    def _end_exchange(self, keep: bool) -> None:
        self._reset()
        if not keep or self.eof:
            self._close()
            return
        self.phase = HEAD
        self.since = self.plane.now
        if self.paused:
            self._resume_client()
        if self.buf:
            self._next()

    # -- timeouts ----------------------------------------------------------------------------------------------

    def check(self, now: float) -> None:
        """Called by the sweeper: close idle or stuck connections, answer 504 for a silent upstream."""
        phase = self.phase
        if phase == HEAD:
            limit = self.plane.header_timeout if self.buf else self.plane.keepalive_timeout
            if now - self.since > limit:
                self._close()
        elif phase in (BODY, WAIT) and self.req is not None:
            if (self.deadline and now > self.deadline) or now - self.last > self.plane.read_timeout:
                log.debug("ingress: upstream timed out")
                if self.connecting is not None:
                    self.connecting.cancel()
                    self.connecting = None
                self._fail(504)
