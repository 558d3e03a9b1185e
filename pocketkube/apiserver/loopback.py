"""The API server's in-memory transport: requests from clients of this process run the aiohttp application directly.

A request becomes an aiohttp Request without a socket (a stand-in protocol and transport that report the client
certificate the way a TLS connection does), goes through the application's handler chain (middleware, authentication,
flow control, authorization, admission, audit: everything a network request meets), and the response's status,
headers and body are captured by a payload writer instead of being framed onto a socket. Watches stream through a
bounded buffer: the handler waits when the client lags behind, and a client that stops reading cancels the handler.
Upgrades (exec, attach, port-forward) are refused here: they need a real connection.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
import math
import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

import aiohttp
import yarl
from aiohttp import abc, http, streams, web
from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.x509 import oid
from multidict import CIMultiDict, CIMultiDictProxy

from pocketkube.base import clock as clock_mod

log = logging.getLogger("pocketkube.apiserver.loopback")

# A watch's unread output past which the handler waits for the client (a socket's buffers hold about as much).
STREAM_BUFFER = 1 << 20
# How often the deadlines of requests and stream reads are checked: one timer for all of them instead of one
# each (a timer per request or per watch chunk costs more than the rest of the transport); they fire this late at most.
SWEEP = 0.25
# Distinct client certificates remembered; in one process there is one per component, so this is never reached
# unless certificates keep being replaced.
MAX_IDENTITIES = 10000
_INTERNAL_ERROR = "500 Internal Server Error\n\nServer got itself in trouble"


class _PeerCertificate:
    """Stands in for a TLS connection's ssl.SSLObject: getpeercert() gives what the ssl module gives."""

    __slots__ = ("_cert", "__weakref__")  # authn caches the user per connection object, weakly

    def __init__(self, cert: dict[str, Any] | None) -> None:
        self._cert = cert

    def getpeercert(self, binary_form: bool = False) -> dict[str, Any] | None:
        if binary_form:
            raise ValueError("the in-memory transport keeps only the decoded certificate")
        return self._cert


class _Transport:
    """Stands in for the TLS transport: the extra information the handlers ask for, and never closing."""

    __slots__ = ("_info",)

    def __init__(self, info: dict[str, Any]) -> None:
        self._info = info

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._info.get(name, default)

    def is_closing(self) -> bool:
        return False


class _Connection:
    """Stands in for aiohttp's RequestHandler (the protocol) of one client: what a Request reads from it."""

    __slots__ = ("transport", "ssl_context", "peername", "sockname", "connected", "_reading_paused")
    max_field_size = 8190
    max_headers = 128

    def __init__(self, *, ssl_context: ssl.SSLContext | None, peername: tuple[str, int],
                 sockname: tuple[str, int], cert: dict[str, Any] | None) -> None:
        ssl_object = _PeerCertificate(cert)
        self.transport = _Transport({"ssl_object": ssl_object, "peercert": cert, "peername": peername,
                                     "sockname": sockname, "sslcontext": ssl_context})
        self.ssl_context = ssl_context
        self.peername = peername
        self.sockname = sockname
        self.connected = True
        self._reading_paused = False

    # The request body is fed whole, so there is no reading to pause.
    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


@dataclasses.dataclass(frozen=True)
class _Identity:
    """A client certificate as the TLS handshake would judge it: its connection, or why it is refused."""

    connection: _Connection | None
    not_before: datetime.datetime
    not_after: datetime.datetime
    refused: str = ""


def _decode_certificate(pem: bytes) -> dict[str, Any]:
    """The dict SSLSocket.getpeercert() gives for this certificate (the ssl module decodes only files)."""
    with tempfile.TemporaryDirectory(prefix="pocketkube-loopback-") as d:
        path = os.path.join(d, "peer.crt")
        with open(path, "wb") as f:
            f.write(pem)
        decoded: dict[str, Any] = ssl._ssl._test_decode_cert(path)  # type: ignore[attr-defined]
        return decoded


def _refusal(cert: x509.Certificate, ca: x509.Certificate) -> str:
    """Why a TLS server trusting only ca would refuse this client certificate, or "" when it accepts it."""
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, crypto_exceptions.InvalidSignature):
        return "certificate verify failed: unable to get local issuer certificate"
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return ""
    if oid.ExtendedKeyUsageOID.CLIENT_AUTH not in usages and oid.ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in usages:
        return "certificate verify failed: unsupported certificate purpose"
    return ""


class _Exchange(abc.AbstractStreamWriter):
    """The payload writer of one request: keeps the status and headers, and hands the body to the client.

    A plain request's body is read once the handler is done; a stream's is read while it is written, and
    write() waits while more than `limit` bytes are unread.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, limit: int | None) -> None:
        self.status = 0
        self.ended = False
        self.timed_out = False  # the client gave up waiting for the answer, or for a stream's next part
        # When the answer (deadline) or a waiting read (read_timeout after it began waiting) gives up; inf: never.
        self.deadline = math.inf
        self.read_timeout = math.inf
        self.waiting_since = math.inf
        self.headers: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())
        self.chunks: list[bytes] = []
        self.eof = False
        self.error: BaseException | None = None
        self.closed = False  # the client stopped reading
        self.done: asyncio.Future[None] = loop.create_future()
        self.head: asyncio.Future[None] | None = loop.create_future() if limit is not None else None
        self._loop = loop
        self._limit = limit
        self._size = 0
        self._readable: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None
        self.task: asyncio.Task[None] | None = None  # the handler's

    # --- the server's side (aiohttp's AbstractStreamWriter) ---

    async def write_headers(self, status_line: str, headers: CIMultiDict[str]) -> None:
        self.status = int(status_line.split(" ", 2)[1])
        self.headers = CIMultiDictProxy(headers)
        if self.head is not None and not self.head.done():
            self.head.set_result(None)

    async def write(self, chunk: bytes | bytearray | memoryview) -> None:
        if self.closed:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        if chunk:
            data = bytes(chunk)
            self.chunks.append(data)
            self._size += len(data)
            self.output_size += len(data)
            _wake(self._readable)
        if self._limit is not None and self._size > self._limit:
            await self.drain()

    async def write_eof(self, chunk: bytes = b"") -> None:
        if chunk:
            self.chunks.append(bytes(chunk))
            self._size += len(chunk)
            self.output_size += len(chunk)
        self.eof = True
        _wake(self._readable)

    async def drain(self) -> None:
        while self._limit is not None and self._size > self._limit and not self.closed:
            self._writable = self._loop.create_future()
            await self._writable
        if self.closed:
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")

    def enable_chunking(self) -> None:
        # Chunked framing belongs to the wire; the client gets the body as aiohttp's client would decode it.
        pass

    def enable_compression(self, encoding: str = "deflate", strategy: int | None = None) -> None:
        raise RuntimeError("the in-memory transport does not compress responses")

    # --- both sides ---

    def end(self) -> None:
        """The handler finished (or died): whatever was not written completely is a broken connection."""
        self.ended = True
        if not self.eof and self.error is None:
            self.error = aiohttp.ClientConnectionResetError(
                "the API server closed the connection before its answer was complete")
        for fut in (self.head, self.done):
            if fut is not None and not fut.done():
                fut.set_result(None)
        _wake(self._readable)

    def expired(self, now: float) -> bool:
        return now >= self.deadline or now - self.waiting_since >= self.read_timeout

    def time_out(self) -> None:
        """The client gives up waiting (for the answer, or for the stream's next part), as asyncio.timeout would."""
        waiter = self.done if self.head is None else self._readable
        if waiter is not None and not waiter.done():  # else the answer came first
            self.timed_out = True
            waiter.set_result(None)

    def close(self) -> None:
        """The client stops reading: further writes fail as on a closed connection."""
        self.closed = True
        self.chunks.clear()
        self._size = 0
        _wake(self._writable)

    # --- the client's side ---

    async def read(self) -> bytes:
        while not self.chunks:
            if self.eof:
                return b""
            if self.error is not None:
                raise self.error
            if self.timed_out:
                self.timed_out = False
                raise TimeoutError
            self._readable = self._loop.create_future()
            self.waiting_since = self._loop.time()
            try:
                await self._readable
            finally:
                self.waiting_since = math.inf
        self.timed_out = False  # the part came in just as the wait ran out
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self._size = 0
        _wake(self._writable)
        return data


def _wake(fut: asyncio.Future[None] | None) -> None:
    if fut is not None and not fut.done():
        fut.set_result(None)


class _Stream:
    """The client's end of a streaming answer (a loopback.Stream)."""

    def __init__(self, exchange: _Exchange, task: asyncio.Task[None], timed: set[_Exchange]) -> None:
        self._exchange = exchange
        self._task = task
        self._timed = timed

    @property
    def status(self) -> int:
        return self._exchange.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._exchange.headers

    async def read(self) -> bytes:
        return await self._exchange.read()

    async def aclose(self) -> None:
        # A client that leaves ends the handler at once (a socket's handler would notice only at its next write).
        self._timed.discard(self._exchange)
        self._exchange.close()
        if not self._task.done():
            self._task.cancel()


class Server:
    """An aiohttp application served in memory to clients of this process (client/loopback.ServerTransport).

    ca_pem is the CA the TLS server trusts for client certificates (None: certificates are not asked for);
    peername is the address the handlers see the client at, sockname the server's own.
    """

    def __init__(self, app: web.Application, *, ca_pem: bytes | None, peername: tuple[str, int],
                 sockname: tuple[str, int], ssl_context: ssl.SSLContext | None = None,
                 clock: clock_mod.Clock | None = None) -> None:
        self._app = app
        self._ca = x509.load_pem_x509_certificate(ca_pem) if ca_pem else None
        self._peername = peername
        self._sockname = sockname
        self._ssl_context = ssl_context
        self._clock = clock or clock_mod.Clock()
        self._anonymous = _Connection(ssl_context=ssl_context, peername=peername, sockname=sockname, cert=None)
        self._identities: dict[bytes, _Identity] = {}
        # Tasks are only weakly held by the loop: keep the running handlers, and cancel them on close().
        self._tasks: set[asyncio.Task[None]] = set()
        self._timed: set[_Exchange] = set()  # exchanges with a deadline or a read timeout
        self._sweeper: asyncio.TimerHandle | None = None

    async def round_trip(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, *,
                         peer_cert_pem: bytes | None, timeout: float | None = None,
                         ) -> tuple[int, Mapping[str, str], bytes]:
        """Run one request to the end: status, headers, body; TimeoutError when the answer takes longer than
        timeout seconds. A client that gives up does not cancel it (nor does aiohttp's server when a connection
        drops)."""
        exchange, _ = await self._start(method, path_qs, headers, body, peer_cert_pem, limit=None)
        if timeout is not None and not exchange.done.done():
            exchange.deadline = asyncio.get_running_loop().time() + timeout
            self._time(exchange)
            try:
                await exchange.done
            finally:
                self._timed.discard(exchange)
            if exchange.timed_out:
                raise TimeoutError
        else:
            await exchange.done
        if exchange.error is not None:
            raise exchange.error
        body_out = exchange.chunks[0] if len(exchange.chunks) == 1 else b"".join(exchange.chunks)
        return exchange.status, exchange.headers, body_out

    async def open_stream(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, *,
                          peer_cert_pem: bytes | None, read_timeout: float | None = None) -> _Stream:
        """Start a request whose body is read while it is written (a watch); returns once the headers are out.

        With read_timeout, a read that waits that long for the next part raises TimeoutError (aiohttp's sock_read).
        """
        exchange, task = await self._start(method, path_qs, headers, body, peer_cert_pem, limit=STREAM_BUFFER)
        assert exchange.head is not None
        try:
            await exchange.head
        except BaseException:
            exchange.close()
            task.cancel()
            raise
        if not exchange.status and exchange.error is not None:
            raise exchange.error
        if read_timeout is not None:
            exchange.read_timeout = read_timeout
            self._time(exchange)
        return _Stream(exchange, task, self._timed)

    def close(self) -> None:
        """Cancel every request still running (the server is stopping)."""
        for task in list(self._tasks):
            task.cancel()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    def _time(self, exchange: _Exchange) -> None:
        self._timed.add(exchange)
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        now = asyncio.get_running_loop().time()
        for exchange in [e for e in self._timed if e.expired(now) or e.ended]:
            if exchange.expired(now):
                exchange.time_out()
            if exchange.ended or exchange.head is None:
                # Over, or a round trip that gave up (a stream's next read may wait again).
                self._timed.discard(exchange)
        if self._timed:
            self._sweeper = asyncio.get_running_loop().call_later(SWEEP, self._sweep)

    async def _start(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None,
                     peer_cert_pem: bytes | None, *, limit: int | None) -> tuple[_Exchange, asyncio.Task[None]]:
        conn = await self._connection(peer_cert_pem)
        message = _message(method, path_qs, headers)
        loop = asyncio.get_running_loop()
        payload: streams.StreamReader = streams.EMPTY_PAYLOAD
        if body:
            payload = streams.StreamReader(conn, 2**16, loop=loop)  # type: ignore[arg-type]
            payload.feed_data(body)
            payload.feed_eof()
        exchange = _Exchange(loop, limit=limit)
        task = loop.create_task(self._serve(message, payload, conn, exchange))
        exchange.task = task  # before its first step: _serve reads it there
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return exchange, task

    async def _serve(self, message: http.RawRequestMessage, payload: streams.StreamReader, conn: _Connection,
                     exchange: _Exchange) -> None:
        """What aiohttp's RequestHandler does for one request, minus the socket."""
        app = self._app
        request = app._make_request(message, payload, conn, exchange,  # type: ignore[arg-type]
                                    exchange.task)  # type: ignore[arg-type]
        try:
            try:
                response = await app._handle(request)
            except web.HTTPException as exc:
                response = exc
            except Exception:  # the middleware answers errors with a Status; this is aiohttp's last resort
                log.exception("error handling in-memory request %s %s", message.method, message.path)
                response = web.Response(status=500, text=_INTERNAL_ERROR, content_type="text/plain")
            request._finish()
            await response.prepare(request)
            await response.write_eof()
        except ConnectionResetError:
            pass  # the client stopped reading its stream
        except Exception:
            log.exception("error writing the in-memory answer to %s %s", message.method, message.path)
        finally:
            exchange.end()

    async def _connection(self, cert_pem: bytes | None) -> _Connection:
        """The connection stand-in for a client presenting cert_pem; refused as the TLS handshake would be."""
        if not cert_pem or self._ca is None:
            return self._anonymous
        identity = self._identities.get(cert_pem)
        if identity is None:
            identity = await asyncio.to_thread(self._identify, cert_pem)
            if len(self._identities) >= MAX_IDENTITIES:
                self._identities.clear()
            self._identities[cert_pem] = identity
        if identity.refused:
            raise aiohttp.ClientConnectionResetError(f"the API server refused the client certificate: "
                                                     f"{identity.refused}")
        now = self._clock.now()
        if not identity.not_before <= now <= identity.not_after:
            raise aiohttp.ClientConnectionResetError("the API server refused the client certificate: "
                                                     "certificate verify failed: certificate has expired "
                                                     "or is not yet valid")
        assert identity.connection is not None
        return identity.connection

    def _identify(self, cert_pem: bytes) -> _Identity:
        assert self._ca is not None
        try:
            cert = x509.load_pem_x509_certificate(cert_pem)
        except ValueError as exc:
            epoch = datetime.datetime.fromtimestamp(0, datetime.UTC)
            return _Identity(None, epoch, epoch, refused=f"unreadable certificate: {exc}")
        refused = _refusal(cert, self._ca)
        connection = None if refused else _Connection(
            ssl_context=self._ssl_context, peername=self._peername, sockname=self._sockname,
            cert=_decode_certificate(cert_pem))
        return _Identity(connection, cert.not_valid_before_utc, cert.not_valid_after_utc, refused=refused)


def _message(method: str, path_qs: str, headers: Mapping[str, str]) -> http.RawRequestMessage:
    """The parsed request line and headers, as aiohttp's HTTP parser would produce them."""
    multi = CIMultiDict(headers)
    if "Upgrade" in multi or "upgrade" in multi.get("Connection", "").lower():
        raise ValueError("the in-memory transport does not carry protocol upgrades (exec, attach, port-forward): "
                         "use the network")
    path, _, query = path_qs.partition("?")
    url = yarl.URL.build(path=path, query_string=query, encoded=True)
    raw = tuple([(k.encode("utf-8", "surrogateescape"), v.encode("utf-8", "surrogateescape"))
                 for k, v in headers.items()])
    return http.RawRequestMessage(method, path_qs, http.HttpVersion11, CIMultiDictProxy(multi), raw,
                                  False, None, False, False, url)
