"""The ingress data plane: listens on the HTTP and HTTPS host ports and serves the current route table there.

Requests are relayed by gateway/relay.py, a raw asyncio HTTP/1.1 proxy with keep-alive upstream pools
(gateway/pool.py); this module owns the listening sockets, certificate choice by SNI and the timeout sweeper.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Sequence

from pocketkube.base import clock as clock_mod
from pocketkube.gateway import http1, relay, routes, tls

log = logging.getLogger("pocketkube.gateway.proxy")

# ingress-nginx's proxy-connect-timeout, proxy-read-timeout, keep-alive and client-header-timeout defaults.
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 60.0
KEEPALIVE_TIMEOUT = 75.0
HEADER_TIMEOUT = 60.0
# How often timeouts are checked: the granularity of every timeout above.
SWEEP_EVERY = 0.5
BACKLOG = 1024
SERVER = "pocketkube-ingress"

State = relay.State
EMPTY_STATE = relay.EMPTY_STATE
nginx_page = http1.nginx_page


class Proxy:
    """Serves HTTP and HTTPS for the ingress; update() swaps the route table atomically."""

    def __init__(self, *, contexts: tls.Contexts | None = None, clock: clock_mod.Clock | None = None,
                 connect_timeout: float = CONNECT_TIMEOUT, read_timeout: float = READ_TIMEOUT,
                 keepalive_timeout: float = KEEPALIVE_TIMEOUT, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.clock = clock or clock_mod.Clock()
        self.plane = relay.Plane(clock=self.clock, connect_timeout=connect_timeout, read_timeout=read_timeout,
                                 keepalive_timeout=keepalive_timeout, header_timeout=header_timeout)
        self.tls = contexts or tls.Contexts()
        self.tls.default.sni_callback = self._sni
        self._servers: list[asyncio.Server] = []
        self._sweeper: asyncio.Task[None] | None = None

    @property
    def state(self) -> relay.State:
        return self.plane.state

    @property
    def http_port(self) -> int:
        return self.plane.http_port

    @property
    def https_port(self) -> int:
        return self.plane.https_port

    def update(self, state: relay.State) -> None:
        """Serve state from the next request on; requests in flight finish on the table they started with."""
        self.plane.state = state

    # -- listening ---------------------------------------------------------------------------------------------

    async def start(self, *, host: str, http_ports: Sequence[int], https_ports: Sequence[int]) -> tuple[int, int]:
        """Listen on the first port of each list that binds (0 picks a free one); returns (http, https) ports."""
        self.plane.http_port = await self._bind(host, http_ports, None)
        self.plane.https_port = await self._bind(host, https_ports, self.tls.default)
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep(), name="ingress-timeouts")
        return self.plane.http_port, self.plane.https_port

    async def _bind(self, host: str, ports: Sequence[int], ctx: ssl.SSLContext | None) -> int:
        loop = asyncio.get_running_loop()
        plane, secure = self.plane, ctx is not None
        last: OSError | None = None
        for port in ports:
            try:
                server = await loop.create_server(lambda: relay.ClientConn(plane, secure=secure), host, port,
                                                  ssl=ctx, reuse_address=True, backlog=BACKLOG)
            except OSError as e:
                last = e
                continue
            self._servers.append(server)
            sockets = list(server.sockets or ())
            return int(sockets[0].getsockname()[1]) if sockets else port
        raise OSError(f"ingress: cannot listen on {host} ports {', '.join(map(str, ports))}: {last}")

    async def _sweep(self) -> None:
        while True:
            await self.clock.sleep(SWEEP_EVERY)
            try:
                self.plane.sweep()
            except Exception:  # a bug in one connection's bookkeeping must not stop every timeout
                log.exception("ingress: timeout sweep failed")

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for server in self._servers:
            server.close()
        for conn in list(self.plane.conns):
            if conn.transport is not None:
                conn.transport.abort()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        self.plane.pool.close()

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, ctx: ssl.SSLContext) -> None:
        # Runs inside the handshake: pick the certificate for the requested name, else keep the fake one.
        if not name:
            return
        entry = routes.tls_host(self.plane.state.table, name)
        if entry is None:
            return
        chosen = self.plane.state.contexts.get(entry.host)
        if chosen is not None:
            sslobj.context = chosen
