"""Keep-alive connections from the proxy to endpoints: one pool of idle connections per address."""

from __future__ import annotations

import asyncio
import typing

# ingress-nginx's upstream-keepalive-connections and upstream-keepalive-timeout.
MAX_IDLE = 320
IDLE_TIMEOUT = 60.0

Address = tuple[str, int]


class Exchange(typing.Protocol):
    """What an upstream connection reports to the request using it."""

    def upstream_data(self, data: bytes) -> None: ...

    def upstream_lost(self, conn: Conn) -> None: ...

    def upstream_paused(self, paused: bool) -> None: ...


class Conn(asyncio.Protocol):
    """One connection to an endpoint; forwards its events to the exchange currently using it."""

    __slots__ = ("pool", "address", "transport", "exchange", "closed", "reused", "idle_since")

    def __init__(self, pool: Pool, address: Address) -> None:
        self.pool = pool
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.closed = False
        self.reused = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = typing.cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is not None:
            ex.upstream_data(data)
        else:
            # Bytes on an idle connection belong to no request: the connection cannot be trusted again.
            self.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.discard(self)
        ex, self.exchange = self.exchange, None
        if ex is not None:
            ex.upstream_lost(self)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_paused(False)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.closed = True
            self.transport.abort()


class Pool:
    """Idle keep-alive connections by endpoint address, newest first out (the warmest socket)."""

    def __init__(self, *, connect_timeout: float, max_idle: int = MAX_IDLE, idle_timeout: float = IDLE_TIMEOUT) -> None:
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle_timeout = idle_timeout
        self._idle: dict[Address, list[Conn]] = {}

    def take(self, address: Address) -> Conn | None:
        """An idle connection to address, or None."""
        idle = self._idle.get(address)
        while idle:
            conn = idle.pop()
            if not conn.closed:
                conn.reused = True
                return conn
        return None

    async def connect(self, address: Address) -> Conn:
        """A new connection; OSError or TimeoutError when the endpoint cannot be reached in time."""
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(
            loop.create_connection(lambda: Conn(self, address), address[0], address[1]), self.connect_timeout)
        return conn

    def give_back(self, conn: Conn, now: float) -> None:
        """Keep conn for the next request to its address, or close it when the pool is full."""
        conn.exchange = None
        idle = self._idle.get(conn.address)
        if idle is None:
            idle = self._idle[conn.address] = []
        if conn.closed or len(idle) >= self.max_idle:
            conn.close()
            return
        conn.idle_since = now
        idle.append(conn)

    def discard(self, conn: Conn) -> None:
        idle = self._idle.get(conn.address)
        if idle and conn in idle:
            idle.remove(conn)

    def expire(self, now: float) -> None:
        """Close connections idle for longer than idle_timeout."""
        for address, idle in list(self._idle.items()):
            keep = [c for c in idle if not c.closed and now - c.idle_since < self.idle_timeout]
            for c in idle:
                if c not in keep:
                    c.close()
            if keep:
                self._idle[address] = keep
            else:
                del self._idle[address]

    def close(self) -> None:
        for idle in self._idle.values():
            for c in idle:
                c.close()
        self._idle.clear()
