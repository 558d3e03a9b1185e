"""HTTP/1.1 framing of the ingress proxy: request and response heads, body lengths, chunked scanning, header rewriting."""

from __future__ import annotations

import contextlib

import pytest

from pocketkube.gateway import http1

REQUESTS = [
    # (head, framing, length, keep_alive, host)
    (b"GET / HTTP/1.1\r\nHost: a", http1.NO_BODY, 0, True, b"a"),
    (b"GET /x?y HTTP/1.1\r\nhost:a.test  \r\nConnection: close", http1.NO_BODY, 0, False, b"a.test"),
    (b"GET / HTTP/1.0", http1.NO_BODY, 0, False, None),
    (b"GET / HTTP/1.0\r\nConnection: Keep-Alive", http1.NO_BODY, 0, True, None),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive, close", http1.NO_BODY, 0, False, None),  # close wins, as in nginx
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 12", http1.LENGTH, 12, True, b"a"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0", http1.NO_BODY, 0, True, b"a"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked", http1.CHUNKED, 0, True, b"a"),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked", http1.CHUNKED, 0, True, b"a"),
    (b"GET /caf\xc3\xa9?q=\xc3\xa9 HTTP/1.1\r\nHost: a", http1.NO_BODY, 0, True, b"a"),  # raw UTF-8, as nginx takes
]


@pytest.mark.parametrize(("head", "framing", "length", "keep", "host"), REQUESTS)
def test_parse_request(head: bytes, framing: int, length: int, keep: bool, host: bytes | None) -> None:
    """Body framing, keep-alive and Host follow RFC 9112 for valid request heads."""
    req = http1.parse_request(head)
    assert (req.framing, req.length, req.keep_alive, req.host) == (framing, length, keep, host)


BAD_REQUESTS = [
    (b"GET / HTTP/1.1", 400),  # no Host
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", 400),
    (b"GET / HTTP/2.0\r\nHost: a", 505),
    (b"GET /\r\nHost: a", 400),
    (b"G T / HTTP/1.1\r\nHost: a", 400),
    (b"GET / HTTP/1.1\r\nHost : a", 400),  # whitespace before the colon
    (b"GET / HTTP/1.1\r\nHost: a\r\n folded", 400),
    (b"GET / HTTP/1.1\r\nHost: a\nX: y", 400),  # bare LF
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5", 400),  # nginx: duplicate header line
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b", 400),
    (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b", 400),  # control characters in a value
    (b"GET /a\x7f HTTP/1.1\r\nHost: a", 400),
    (b"GET  / HTTP/1.1\r\nHost: a", 400),
    (b"GET /\r\nHost: a\r\nX: y", 400),
    (b"GET / HTTP/1.2\r\nHost: a", 505),
    (b"GET /caf\xc3\xa9\x01 HTTP/1.1\r\nHost: a", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked", 400),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip", 501),
    (b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked", 501),
]


@pytest.mark.parametrize(("head", "status"), BAD_REQUESTS)
def test_parse_request_refuses(head: bytes, status: int) -> None:
    """Malformed or ambiguous requests (smuggling vectors included) are refused with nginx's status."""
    with pytest.raises(http1.BadMessage) as e:
        http1.parse_request(head)
    assert e.value.status == status


RESPONSES = [
    # (head, request method, framing, length, keep_alive)
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3", b"GET", http1.LENGTH, 3, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 0", b"GET", http1.NO_BODY, 0, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 3", b"HEAD", http1.NO_BODY, 0, True),
    (b"HTTP/1.1 204 No Content", b"GET", http1.NO_BODY, 0, True),
    (b"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked", b"GET", http1.NO_BODY, 0, True),
    (b"HTTP/1.1 200 OK", b"GET", http1.UNTIL_CLOSE, 0, True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1", b"GET", http1.LENGTH, 1, False),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close", b"GET", http1.CHUNKED, 0, False),
    (b"HTTP/1.1 100 Continue", b"POST", http1.NO_BODY, 0, True),
    (b"HTTP/1.1 200", b"GET", http1.UNTIL_CLOSE, 0, True),
    (b"HTTP/1.1 200 OK\r\ncontent-length:  007  ", b"GET", http1.LENGTH, 7, True),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 000", b"GET", http1.NO_BODY, 0, True),
    (b"HTTP/1.1 204 No Content\r\nContent-Length: 5", b"GET", http1.NO_BODY, 0, True),
    (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5", b"GET", http1.NO_BODY, 0, True),
    (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\nConnection: keep-alive", b"GET", http1.LENGTH, 1, True),
]


@pytest.mark.parametrize(("head", "method", "framing", "length", "keep"), RESPONSES)
def test_parse_response(head: bytes, method: bytes, framing: int, length: int, keep: bool) -> None:
    """Response framing follows RFC 9112 6.3 (HEAD, 1xx, 204, 304 have no body; no length means until close)."""
    resp = http1.parse_response(head, method=method)
    assert (resp.framing, resp.length, resp.keep_alive) == (framing, length, keep)


@pytest.mark.parametrize("head", [b"HTTP/1.1 2000 OK", b"SSH-2.0-OpenSSH", b"HTTP/1.1 200 OK\r\nBad Header: x",
                                  b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2",
                                  b"HTTP/1.1 200 OK\r\nX: \x01", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip"])
def test_parse_response_refuses_with_502(head: bytes) -> None:
    """A broken upstream answer is the gateway's fault: 502, never the client's 400."""
    with pytest.raises(http1.BadMessage) as e:
        http1.parse_response(head, method=b"GET")
    assert e.value.status == 502


CHUNKED_BODIES = [
    b"5\r\nhello\r\n0\r\n\r\n",
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    b"A\r\n0123456789\r\n0\r\nTrailer: x\r\nOther: y\r\n\r\n",
    b"0\r\n\r\n",
]


@pytest.mark.parametrize("body", CHUNKED_BODIES)
def test_chunked_finds_the_end_at_every_split(body: bytes) -> None:
    """The scanner finds the exact end of a chunked body however the bytes are split, with pipelined bytes after."""
    data = body + b"GET / HTTP/1.1"
    for cut in range(len(data) + 1):
        scanner = http1.Chunked()
        first = scanner.feed(data[:cut])
        if first >= 0:
            assert first == len(body)
            continue
        end = scanner.feed(data[cut:])
        assert end == len(body) - cut


@pytest.mark.parametrize("body", [b"zz\r\n", b"5\r\nhelloXX\r\n", b"-1\r\n", b"1" * 5000])
def test_chunked_refuses_bad_framing(body: bytes) -> None:
    """Bad chunk sizes, data longer than announced and endless size lines are refused."""
    with pytest.raises(http1.BadMessage):
        http1.Chunked().feed(body)


HEADS = [
    (b"GET /a?b HTTP/1.1\r\nHost: a", b"GET /a?b HTTP/1.1", b"\r\nHost: a"),
    (b"GET / HTTP/1.0", b"GET / HTTP/1.0", b""),
    (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nX: y", b"POST / HTTP/1.1",
     b"\r\nHost: a\r\nContent-Length: 2\r\nX: y"),
]


@pytest.mark.parametrize(("head", "line", "block"), HEADS)
def test_request_keeps_its_head_as_received(head: bytes, line: bytes, block: bytes) -> None:
    """A parsed request keeps the head it came from; its line and header block are the two parts of it."""
    req = http1.parse_request(head)
    assert (req.head, req.line, req.block) == (head, line, block)


def test_response_keeps_its_head_as_received() -> None:
    """A parsed response keeps the head it came from; its status line and header block are the two parts of it."""
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX: y"
    resp = http1.parse_response(head, method=b"GET")
    assert (resp.head, resp.line, resp.block) == (head, b"HTTP/1.1 200 OK", b"\r\nContent-Length: 3\r\nX: y")


def test_parser_is_reused_safely_across_heads() -> None:
    """Heads after a body, a close, an upgrade or a refused head parse as if each came first (the C parser is shared)."""
    sequence = [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close",
                b"GET / HTTP/1.0", b"GET / HTTP/1.0\r\nConnection: keep-alive, close",
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: websocket",
                b"GET / HTTP/1.1\r\nHost: a\r\nX: \x01", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked",
                b"POST / HTTP/1.1\r\nContent-Length: 3", b"POST / HTTP/1.1\r\nHost: a\r\nHost: b\r\nContent-Length: 3",
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0", b"CONNECT a:443 HTTP/1.1\r\nHost: a:443",
                b"GET / HTTP/1.1\r\nhost: a", b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive"]
    for head in sequence:
        with contextlib.suppress(http1.BadMessage):
            http1.parse_request(head)
        req = http1.parse_request(b"GET /next HTTP/1.1\r\nHost: b")
        assert (req.target, req.host, req.keep_alive, req.framing) == (b"/next", b"b", True, http1.NO_BODY)


def test_forward_block_keeps_a_clean_block_as_received() -> None:
    """A head without hop-by-hop or forwarded lines is forwarded byte for byte (Host dropped only when replaced)."""
    req = http1.parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nAccept: */*\r\nX-Custom: 1")
    assert req.clean and http1.forward_block(req, keep_host=True) == req.block
    assert http1.forward_block(req, keep_host=False) == b"\r\nAccept: */*\r\nX-Custom: 1"


FORWARDED = [
    # (header lines of a request, what is forwarded with keep_host)
    (b"\r\nHost: a\r\nConnection: keep-alive\r\nAccept: */*", b"\r\nHost: a\r\nAccept: */*"),
    (b"\r\nConnection: keep-alive\r\nHost: a", b"\r\nHost: a"),
    (b"\r\nHost: a\r\nconnection: close\r\nCONNECTION: x\r\nx: 1\r\nConnection: y\r\nz: 2", b"\r\nHost: a\r\nz: 2"),
    (b"\r\nHost: a\r\nX-Forwarded-For: 1\r\nx-forwarded-proto: h\r\nX-Real-IP: 2\r\nX-Forwarded: 3",
     b"\r\nHost: a\r\nX-Forwarded: 3"),
    (b"\r\nHost: a\r\nTE: trailers\r\nTest: 1\r\nTrailer: x\r\nKeep-Alive: 5\r\nProxy-Connection: k",
     b"\r\nHost: a\r\nTest: 1"),
    (b"\r\nHost: a\r\nX-Connection: 1\r\nConnection-X: 2\r\nConnection:\r\nUser-Agent: connection: z",
     b"\r\nHost: a\r\nX-Connection: 1\r\nConnection-X: 2\r\nUser-Agent: connection: z"),
]


@pytest.mark.parametrize(("block", "want"), FORWARDED)
def test_forward_block_drops_every_hop_by_hop_line(block: bytes, want: bytes) -> None:
    """Every hop-by-hop and X-Forwarded-*/X-Real-IP line goes, whatever its case or place; look-alikes stay."""
    assert http1.forward_block(http1.parse_request(b"GET / HTTP/1.1" + block), keep_host=True) == want


def test_forward_block_strips_hop_by_hop_and_forwarded_headers() -> None:
    """Hop-by-hop headers, those named by Connection, and client X-Forwarded-*/X-Real-IP are dropped."""
    req = http1.parse_request(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\n"
                              b"Keep-Alive: 5\r\nX-Forwarded-For: 6.6.6.6\r\nx-real-ip: 6.6.6.6\r\nAccept: */*\r\n"
                              b"TE: trailers\r\nUpgrade: h2c")
    assert http1.forward_block(req, keep_host=True) == b"\r\nHost: a\r\nAccept: */*"
    assert http1.forward_block(req, keep_host=False) == b"\r\nAccept: */*"


RESPONSE_HEADS = [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5", b"",
     b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"),
    (b"HTTP/1.0 404 Not Found\r\nContent-Length: 2", b"close",
     b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked", b"",
     b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: k", b"",
     b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: k\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"),
]


@pytest.mark.parametrize(("head", "connection", "want"), RESPONSE_HEADS)
def test_response_head(head: bytes, connection: bytes, want: bytes) -> None:
    """The client gets HTTP/1.1, the end-to-end headers as sent, and the proxy's own Connection header."""
    assert http1.response_head(http1.parse_response(head, method=b"GET"), connection=connection) == want


def test_page_response_is_nginx_page() -> None:
    """Error pages carry nginx's HTML, its length, and no body for HEAD."""
    full = http1.page_response(503, keep_alive=True)
    head, body = full.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 503 Service Temporarily Unavailable\r\n")
    assert b"Content-Length: %d" % len(body) in head and b"Connection: keep-alive" in head
    assert body == http1.nginx_page(503, "Service Temporarily Unavailable")
    assert http1.page_response(404, keep_alive=False, head_only=True).endswith(b"Connection: close\r\n\r\n")
