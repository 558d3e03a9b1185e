"""HTTP/1.1 message framing for the proxy: request/response heads, body lengths, chunked scanning, error pages."""

from __future__ import annotations

import dataclasses
import email.utils
import re
import threading

import httptools

# Hop-by-hop headers (RFC 9110 7.6.1) are never forwarded. Transfer-Encoding is kept: chunks pass through as sent.
# nginx's large_client_header_buffers (4 x 8k) bound a request head; upstream heads get proxy_buffer_size room.
MAX_HEAD = 32 * 1024
MAX_LINE = 4096
CRLF = b"\r\n"

NO_BODY = 0
LENGTH = 1
CHUNKED = 2
UNTIL_CLOSE = 3

REASONS = {308: "Permanent Redirect", 400: "Bad Request", 404: "Not Found", 408: "Request Time-out",
           413: "Request Entity Too Large", 501: "Not Implemented", 502: "Bad Gateway",
           503: "Service Temporarily Unavailable", 504: "Gateway Time-out", 505: "HTTP Version Not Supported"}

_TOKEN_CHARS = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]"
_TOKEN = re.compile(_TOKEN_CHARS + rb"+")
_LINE = re.compile(rb"\r\n(" + _TOKEN_CHARS + rb"+):[ \t]*([^\r\n]*)")
# The lines that decide framing, plus those the proxy drops (hop-by-hop; X-Forwarded-*/X-Real-IP of a client, as
# ingress-nginx replaces them with its own): one C-speed pass finds them, llhttp has validated every line already.
# Alternatives share prefixes, so a line that is none of them is passed after a character or two.
_REQUEST_SCAN = re.compile(rb"\r\n(host|con(?:tent-length|nection)|t(?:ransfer-encoding|e|railer)|upgrade|keep-alive"
                           rb"|proxy-(?:connection|authenticate|authorization)|x-(?:real-ip|forwarded-"
                           + _TOKEN_CHARS + rb"*)):[ \t]*([^\r\n]*)", re.I)
_RESPONSE_SCAN = re.compile(rb"\r\n(con(?:tent-length|nection)|t(?:ransfer-encoding|e|railer)|upgrade|keep-alive"
                            rb"|proxy-(?:connection|authenticate)):[ \t]*([^\r\n]*)", re.I)
_STRIP_RESPONSE = re.compile(rb"\r\n(?:connection|keep-alive|proxy-connection|proxy-authenticate"
                             rb"|te|trailer|upgrade):[^\r\n]*", re.I)
_CONTROL = re.compile(rb"[\x00-\x1f\x7f]")
_VERSIONS = frozenset((b"HTTP/1.1", b"HTTP/1.0"))
_STATUS_STARTS = frozenset((b"HTTP/1.1 ", b"HTTP/1.0 "))
_NO_TOKENS: frozenset[bytes] = frozenset()
_STANDARD_TOKENS = frozenset((b"close", b"keep-alive", b"upgrade", b""))

Headers = list[tuple[bytes, bytes]]


class BadMessage(ValueError):
    """A message the proxy refuses; status is what the client gets (nginx's choice for the same input)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def headers_of(block: bytes) -> Headers:
    """(name, value) pairs of a header block, names as sent."""
    return [(m.group(1), m.group(2).rstrip(b" \t")) for m in _LINE.finditer(block)]


def header(block: bytes, name: bytes) -> bytes | None:
    """The first value of header name (lower case) in block, or None."""
    for k, v in headers_of(block):
        if k.lower() == name:
            return v
    return None


@dataclasses.dataclass(slots=True)
class Request:
    """A parsed request head: its request line and the whole head as received (without the blank line)."""

    method: bytes
    target: bytes
    version: bytes
    line: bytes
    head: bytes
    framing: int = NO_BODY
    length: int = 0
    keep_alive: bool = True
    host: bytes | None = None
    upgrade: bytes = b""
    # Headers the Connection header names besides the standard tokens: hop-by-hop for this message only.
    extra_hop: tuple[bytes, ...] = ()
    # No line of block is dropped when forwarding (Host aside), so it can be forwarded as received.
    clean: bool = True
    # Names (as sent) of the hop-by-hop and X-Forwarded-*/X-Real-IP lines dropped when forwarding.
    hops: tuple[bytes, ...] = ()

    @property
    def block(self) -> bytes:
        """The header lines as received ("\r\nName: value" each)."""
        return self.head[len(self.line):]

    def get(self, name: bytes) -> bytes | None:
        return header(self.block, name)

    @property
    def headers(self) -> Headers:
        return headers_of(self.block)


@dataclasses.dataclass(slots=True)
class Response:
    """A parsed response head: its status line and the whole head as received (without the blank line)."""

    status: int
    line: bytes
    head: bytes
    framing: int = NO_BODY
    length: int = 0
    keep_alive: bool = True
    upgrade: bytes = b""
    extra_hop: tuple[bytes, ...] = ()
    clean: bool = True

    @property
    def block(self) -> bytes:
        """The header lines as received ("\r\nName: value" each)."""
        return self.head[len(self.line):]

    @property
    def headers(self) -> Headers:
        return headers_of(self.block)


class _Local(threading.local):
    """One llhttp request parser per thread (each proxy loop has its own), reused while it sits between messages."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(_NO_CALLBACKS)

    def renew(self) -> None:
        """A fresh parser: the current one is mid-message, closed or failed, and would refuse the next head."""
        self.parser = httptools.HttpRequestParser(_NO_CALLBACKS)


class _NoCallbacks:
    """The protocol of a parser: nothing to call back (a Python call per event costs more than the parsing).

    Whether a request's message ended with its head follows from the framing read here, as it does in llhttp.
    """

    __slots__ = ()


_NO_CALLBACKS = _NoCallbacks()
_local = _Local()


Fields = tuple[int, int, frozenset[bytes], bytes | None, bytes, tuple[bytes, ...]]


def _fields(found: list[tuple[bytes, bytes]]) -> Fields:
    """(framing, content length, Connection tokens, Host, Upgrade, names of the lines to drop) from the scan."""
    te = cl = conn = host = None
    upgrade = b""
    hops: tuple[bytes, ...] = ()
    for raw, v in found:
        name = raw.lower()
        v = v.rstrip(b" \t")
        if name == b"host":
            if host is not None:
                raise BadMessage("more than one Host header")
            host = v
            continue
        if name == b"content-length":
            if cl is not None and cl != v:
                raise BadMessage("conflicting Content-Length headers")
            cl = v
            continue
        if name == b"transfer-encoding":
            te = v if te is None else te + b"," + v
            continue
        hops += (raw,)
        if name == b"connection":
            conn = v if conn is None else conn + b"," + v
        elif name == b"upgrade":
            upgrade = v
    tokens = frozenset(t.strip().lower() for t in conn.split(b",")) if conn else _NO_TOKENS
    if te is not None:
        if cl is not None:
            raise BadMessage("both Transfer-Encoding and Content-Length")
        codings = [c.strip().lower() for c in te.split(b",")]
        if codings[-1] != b"chunked" or codings.count(b"chunked") != 1:
            raise BadMessage(f"unsupported Transfer-Encoding {te.decode(errors='replace')}", 501)
        return CHUNKED, 0, tokens, host, upgrade, hops
    if cl is not None:
        if not cl.isdigit() or len(cl) > 18:
            raise BadMessage(f"invalid Content-Length {cl[:32]!r}")
        # A present "Content-Length: 0" is LENGTH 0, so a response with it is not read until close.
        return LENGTH, int(cl), tokens, host, upgrade, hops
    return NO_BODY, 0, tokens, host, upgrade, hops


def parse_request(head: bytes) -> Request:
    """The request in head (everything before the blank line); BadMessage says why it is refused.

    llhttp (the parser of Node.js, through httptools) validates every line in C; the few lines that decide
    framing and forwarding are then picked out by one regular expression.
    """
    # The header lines are scanned in the whole head: a request line never starts with CRLF.
    line = head.partition(b"\r\n")[0]
    parts = line.split(b" ")
    if len(parts) != 3 or parts[2] not in _VERSIONS:
        if len(parts) == 3 and _TOKEN.fullmatch(parts[0]) and parts[2].startswith(b"HTTP/"):
            raise BadMessage(f"unsupported version {parts[2][:16]!r}", 505)
        raise BadMessage(f"invalid request line {line[:64]!r}")
    method, target, version = parts
    if not target.isascii():
        # nginx takes raw UTF-8 in a path, llhttp does not: it checks the rest while the target is checked here.
        if _CONTROL.search(target):
            raise BadMessage(f"invalid request line {line[:64]!r}")
        checked = b"%s / %s%s" % (method, version, head[len(line):])
    else:
        checked = head
    local = _local
    try:
        local.parser.feed_data(checked + b"\r\n\r\n")
    except httptools.HttpParserUpgrade:
        local.renew()
    except httptools.HttpParserError as e:
        local.renew()
        # The framing checks name the status nginx answers (501 for an unknown Transfer-Encoding, say).
        _fields(_REQUEST_SCAN.findall(head))
        raise BadMessage(f"{e} in {line[:64]!r}") from None
    found = _REQUEST_SCAN.findall(head)
    if len(found) == 1 and version == b"HTTP/1.1":
        # The common head: a Host line and nothing that frames, hops or gets replaced (llhttp checked the rest).
        name, host = found[0]
        if name == b"Host" or name.lower() == b"host":
            return Request(method, target, version, line, head, NO_BODY, 0, True, host.rstrip(b" \t"))
    try:
        framing, length, tokens, host, upgrade, hops = _fields(found)
        if version == b"HTTP/1.1" and host is None:
            raise BadMessage("HTTP/1.1 request without Host")
    except BadMessage:
        local.renew()
        raise
    if length == 0 and framing == LENGTH:
        framing = NO_BODY
    if b"close" in tokens:
        keep = False
    else:
        keep = version == b"HTTP/1.1" or b"keep-alive" in tokens
    if framing != NO_BODY or not keep:
        # Mid-body, or closed after this message: llhttp would refuse the next head on this parser.
        local.renew()
    if not tokens:
        return Request(method, target, version, line, head, framing, length, keep, host, b"", (), not hops, hops)
    return Request(method, target, version, line, head, framing, length, keep, host,
                   upgrade if b"upgrade" in tokens else b"", tuple(tokens - _STANDARD_TOKENS), not hops, hops)


def parse_response(head: bytes, *, method: bytes) -> Response:
    """The response in head to a request with method; framing follows RFC 9112 section 6.3."""
    line = head.partition(b"\r\n")[0]
    # A fresh parser each time: after a head with a body to come, llhttp is mid-message.
    parser = httptools.HttpResponseParser(_NO_CALLBACKS)
    try:
        if line[:9] not in _STATUS_STARTS:
            raise BadMessage(f"invalid status line {line[:64]!r}")
        try:
            parser.feed_data(head + b"\r\n\r\n")
        except httptools.HttpParserUpgrade:
            pass
        except httptools.HttpParserError as e:
            raise BadMessage(f"{e} in {line[:64]!r}") from None
        status = parser.get_status_code()
        found = _RESPONSE_SCAN.findall(head)
        if len(found) == 1 and line[7] == 49 and 200 <= status != 204 and status != 304 and method != b"HEAD":
            # The common head: HTTP/1.1, a Content-Length and nothing that hops (llhttp checked the rest).
            name, v = found[0]
            if name == b"Content-Length" or name.lower() == b"content-length":
                v = v.rstrip(b" \t")
                if v.isdigit() and len(v) <= 18 and int(v):
                    return Response(status, line, head, LENGTH, int(v))
        framing, length, tokens, _, upgrade, hops = _fields(found)
    except BadMessage as e:
        # A broken upstream is the gateway's problem, never the client's.
        raise BadMessage(str(e), 502) from e
    keep = b"close" not in tokens if line[7] == 49 else b"keep-alive" in tokens
    if status < 200 or status == 204 or status == 304 or method == b"HEAD":
        framing, length = NO_BODY, 0
    elif framing == LENGTH:
        if length == 0:
            framing = NO_BODY
    elif framing == NO_BODY:
        framing = UNTIL_CLOSE
    extra = tuple(tokens - _STANDARD_TOKENS) if tokens else ()
    return Response(status, line, head, framing, length, keep, upgrade, extra, not hops)


def _strip_extra(block: bytes, names: tuple[bytes, ...]) -> bytes:
    drop = set(names)
    return b"".join(m.group(0) for m in _LINE.finditer(block) if m.group(1).lower() not in drop)


def _drop_lines(block: bytes, names: tuple[bytes, ...]) -> bytes:
    """block without the lines of each header name (spelled as sent): a few finds, not a pass of a regex."""
    for name in names:
        key = b"\r\n" + name + b":"
        start = block.find(key)
        while start >= 0:
            end = block.find(b"\r\n", start + 2)
            block = block[:start] + block[end:] if end >= 0 else block[:start]
            start = block.find(key, start)
    return block


def forward_block(req: Request, *, keep_host: bool) -> bytes:
    """The request's header lines minus hop-by-hop ones, X-Forwarded-*/X-Real-IP and (unless keep_host) Host."""
    if req.clean and keep_host:
        return req.block
    block = _drop_lines(req.block, req.hops) if req.hops else req.block
    drop = req.extra_hop if keep_host else req.extra_hop + (b"host",)
    return _strip_extra(block, drop) if drop else block


class Chunked:
    """Finds where a chunked body ends in a stream of bytes without copying it: chunks pass through as sent."""

    __slots__ = ("_state", "_left", "_line")
    _SIZE, _DATA, _DATA_END, _TRAILER = range(4)

    def __init__(self) -> None:
        self._state = self._SIZE
        self._left = 0
        self._line = b""

    def feed(self, data: bytes, pos: int = 0) -> int:
        """Consume data from pos: the offset just past the body's end, or -1 when it continues. BadMessage if malformed."""
        n = len(data)
        while pos < n:
            if self._state == self._DATA:
                take = min(self._left, n - pos)
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = self._DATA_END
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self._line += data[pos:]
                if len(self._line) > MAX_LINE:
                    raise BadMessage("chunk line too long")
                return -1
            line = (self._line + data[pos:eol]) if self._line else data[pos:eol]
            self._line = b""
            pos = eol + 1
            line = line.rstrip(b"\r")
            if self._state == self._SIZE:
                size = line.split(b";", 1)[0].strip()
                try:
                    self._left = int(size, 16)
                except ValueError:
                    raise BadMessage(f"invalid chunk size {size[:32]!r}") from None
                if self._left < 0 or len(size) > 15:
                    raise BadMessage(f"invalid chunk size {size[:32]!r}")
                self._state = self._DATA if self._left else self._TRAILER
            elif self._state == self._DATA_END:
                if line:
                    raise BadMessage("chunk data longer than its size")
                self._state = self._SIZE
            elif not line:
                return pos
        return -1


def nginx_page(status: int, reason: str) -> bytes:
    """The error page nginx (and so ingress-nginx) serves for status."""
    return (f"<html>\r\n<head><title>{status} {reason}</title></head>\r\n<body>\r\n"
            f"<center><h1>{status} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
            ).encode()


def page_response(status: int, *, keep_alive: bool, head_only: bool = False,
                  extra: tuple[tuple[bytes, bytes], ...] = ()) -> bytes:
    """A whole response carrying nginx's page for status (the body left out for HEAD requests)."""
    reason = REASONS.get(status, "Error")
    body = nginx_page(status, reason)
    lines = [f"HTTP/1.1 {status} {reason}".encode(), b"Date: " + email.utils.formatdate(usegmt=True).encode(),
             b"Content-Type: text/html", b"Content-Length: %d" % len(body),
             b"Connection: keep-alive" if keep_alive else b"Connection: close"]
    lines += [k + b": " + v for k, v in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (b"" if head_only else body)


def response_head(resp: Response, *, connection: bytes) -> bytes:
    """The head sent to the client: the upstream's status and end-to-end headers, framing kept as received.

    connection is the Connection header to add (b"" for none: HTTP/1.1 keep-alive is the default).
    """
    block = _STRIP_RESPONSE.sub(b"", resp.block)
    if resp.extra_hop:
        block = _strip_extra(block, resp.extra_hop)
    if resp.status == 101:
        block += b"\r\nConnection: upgrade\r\nUpgrade: " + resp.upgrade
    elif connection:
        block += b"\r\nConnection: " + connection
    return b"HTTP/1.1" + resp.line[8:] + block + b"\r\n\r\n"
