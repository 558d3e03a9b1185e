"""The in-memory transport seam: what an API server in this process offers its own clients, and where it is registered.

Why: in one process, TLS, sockets and HTTP framing between the components and the API server cost a fifth of the
cluster's CPU, while the server's handler chain (authentication, flow control, authorization, admission, audit) is
what matters; so clients of a registered server hand it their requests in memory and everyone else uses HTTPS.
The server side lives in apiserver/loopback.py (this room never imports it); cluster.py registers it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Protocol

# Turns the in-memory transport off when "0" (read by the composition root): for debugging and before/after figures.
ENV = "POCKETKUBE_LOOPBACK"


class Stream(Protocol):
    """A streaming answer (a watch): status and headers first, then the body chunk by chunk."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    async def read(self) -> bytes:
        """The next part of the body (whatever has arrived, at least one byte); b"" once it has ended."""
        ...

    async def aclose(self) -> None:
        """Stop reading: the server sees the client go away, as on a closed connection."""
        ...


class ServerTransport(Protocol):
    """What an in-process API server implements so its clients skip the network.

    headers are the request headers as the client would send them (Host, User-Agent, Accept, Content-Type,
    Content-Length, Authorization); peer_cert_pem is the client certificate a TLS handshake would present.
    The server keeps the time limits (aiohttp's total and sock_read timeouts) and raises TimeoutError past them:
    it can check every exchange's with one timer, where asyncio.timeout would arm one per request or read.
    """

    async def round_trip(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, *,
                         peer_cert_pem: bytes | None, timeout: float | None = None,
                         ) -> tuple[int, Mapping[str, str], bytes]:
        """One whole exchange: the status, headers and body as the client would have read them; TimeoutError
        when they take longer than timeout seconds."""
        ...

    async def open_stream(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, *,
                          peer_cert_pem: bytes | None, read_timeout: float | None = None) -> Stream:
        """Start a streaming exchange; returns once the status and headers are known. A read waiting longer
        than read_timeout seconds for the next part raises TimeoutError."""
        ...


# base URL -> (server, the event loop it serves on). Clients on another loop (another thread) use the network.
_servers: dict[str, tuple[ServerTransport, asyncio.AbstractEventLoop]] = {}


def _key(base_url: str) -> str:
    return base_url.rstrip("/")


def register(base_url: str, server: ServerTransport) -> None:
    """Serve clients of base_url through server from now on; call it on the server's event loop."""
    _servers[_key(base_url)] = (server, asyncio.get_running_loop())


def unregister(base_url: str) -> None:
    """Send clients of base_url back to the network (the server is stopping)."""
    _servers.pop(_key(base_url), None)


def lookup(base_url: str) -> ServerTransport | None:
    """The server registered for base_url when the caller runs on that server's loop, else None."""
    found = _servers.get(_key(base_url))
    if found is None:
        return None
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return None
    return found[0] if found[1] is loop else None
