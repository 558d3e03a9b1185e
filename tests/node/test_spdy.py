"""SPDY/3.1 by hand: frame codec against bytes derived from the spec, header compression, and sessions."""

from __future__ import annotations

import asyncio
import socket
import struct
import zlib
from collections.abc import AsyncIterator

import pytest

from pocketkube.node import spdy


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


@pytest.mark.parametrize(("frame", "wire"), [
    (spdy.Data(3, b"hi", flags=spdy.FLAG_FIN), "00000003 01000002 6869"),
    (spdy.Data(1), "00000001 00000000"),
    (spdy.RstStream(1, spdy.CANCEL), "80030003 00000008 00000001 00000005"),
    (spdy.Settings(((0, spdy.SETTINGS_INITIAL_WINDOW_SIZE, 65536),)),
     "80030004 0000000c 00000001 00000007 00010000"),
    (spdy.Settings(((1, 4, 100),), flags=1), "80030004 0100000c 00000001 01000004 00000064"),
    (spdy.Ping(1), "80030006 00000004 00000001"),
    (spdy.GoAway(5, spdy.GOAWAY_PROTOCOL_ERROR), "80030007 00000008 00000005 00000001"),
    (spdy.WindowUpdate(7, 1024), "80030009 00000008 00000007 00000400"),
])
def test_fixed_frames_match_the_spec_layout(frame: spdy.Frame, wire: str) -> None:
    """Frames without header blocks encode to the SPDY/3 byte layout and decode back unchanged."""
    got = spdy.encode(frame, spdy.Compressor())
    assert got == _hex(wire)
    assert spdy.frame_length(got[:8]) == len(got) - 8
    assert spdy.decode(got[:8], got[8:], decompressor=spdy.Decompressor()) == frame


def test_dictionary_is_the_spdy3_one() -> None:
    """The dictionary has the spec's 1423 bytes and its zlib id (adler32) e3c6a7c2."""
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == 0xE3C6A7C2
    assert spdy.DICTIONARY.startswith(b"\x00\x00\x00\x07options\x00\x00\x00\x04head")


def test_header_block_layout() -> None:
    """A name/value block is a 32-bit count then 32-bit length-prefixed lower-case names and values."""
    block = spdy.encode_headers({"Port": "80", "streamType": "data"})
    assert block == _hex("00000002 00000004") + b"port" + _hex("00000002") + b"80" + \
        _hex("0000000a") + b"streamtype" + _hex("00000004") + b"data"
    assert spdy.decode_headers(block) == {"port": "80", "streamtype": "data"}


def test_compressed_blocks_announce_the_dictionary() -> None:
    """The first compressed block opens a zlib stream with FDICT set and the dictionary's id (RFC 1950)."""
    first = spdy.Compressor().compress({"a": "b"})
    assert first[:6] == _hex("78f9 e3c6a7c2")


def test_header_frames_round_trip_through_one_compression_context() -> None:
    """SYN_STREAM, SYN_REPLY and HEADERS share one zlib stream per direction and decode in order."""
    frames: list[spdy.Frame] = [
        spdy.SynStream(1, {"streamtype": "error", "port": "8080", "requestid": "0"}, priority=3),
        spdy.SynStream(3, {"streamtype": "data", "port": "8080", "requestid": "0"}, flags=spdy.FLAG_FIN),
        spdy.SynReply(1, {}),
        spdy.HeadersFrame(3, {"x": "a\0b"}, flags=spdy.FLAG_FIN),
        spdy.SynStream(5, {"streamtype": "error", "port": "8080", "requestid": "1"}, associated_id=1, slot=2),
    ]
    comp, decomp = spdy.Compressor(), spdy.Decompressor()
    wire = [spdy.encode(f, comp) for f in frames]
    assert [spdy.decode(w[:8], w[8:], decompressor=decomp) for w in wire] == frames
    assert len(wire[1]) < len(wire[0])  # the second block reuses the first's strings


def test_stream_header_takes_the_first_value() -> None:
    """Stream.header reads like Go's Header.Get: first of NUL-joined values, "" when absent."""
    async def check() -> None:
        session = spdy.Session(_NullPipe(), server=True)
        stream = spdy.Stream(session, 1, headers={"port": "80\x0081"}, remote_open=True)
        assert stream.header("Port") == "80" and stream.header("missing") == ""
    asyncio.run(check())


@pytest.mark.parametrize(("wire", "error"), [
    ("00000000 00000000", "stream id zero"),
    ("80020006 00000004 00000001", "unsupported SPDY version 2"),
    ("80030006 00000002 0000", "PING frame of 2 bytes"),
    ("80030004 00000008 00000002 00000000", "malformed SETTINGS"),
    ("80030003 00000004 00000001", "RST_STREAM frame of 4 bytes"),
    ("80030001 00000004 00000001", "short SYN_STREAM"),
    ("80030002 00000008 00000001 01020304", "does not decompress"),
])
def test_malformed_frames_are_protocol_errors(wire: str, error: str) -> None:
    """Broken frames raise ProtocolError naming the problem."""
    raw = _hex(wire)
    with pytest.raises(spdy.ProtocolError, match=error):
        spdy.decode(raw[:8], raw[8:], decompressor=spdy.Decompressor())


def test_unknown_control_frames_are_ignored() -> None:
    """Control frame types SPDY/3 does not define (NOOP, CREDENTIAL) decode to None."""
    raw = _hex("8003000a 00000000")
    assert spdy.decode(raw[:8], raw[8:], decompressor=spdy.Decompressor()) is None


@pytest.mark.parametrize("block", [_hex("00000001 00000004") + b"po", _hex("00000002 00000001") + b"a" +
                                   _hex("00000000") + _hex("00000001") + b"a" + _hex("00000000")])
def test_bad_header_blocks(block: bytes) -> None:
    """Truncated blocks and repeated names are protocol errors."""
    with pytest.raises(spdy.ProtocolError):
        spdy.decode_headers(block)


class _NullPipe:
    async def readexactly(self, n: int) -> bytes:
        raise asyncio.IncompleteReadError(b"", n)

    async def send(self, data: bytes) -> None:
        pass

    async def close(self) -> None:
        pass


async def _pair() -> tuple[spdy.Session, spdy.Session, list[asyncio.Task[None]]]:
    a, b = socket.socketpair()
    server = spdy.Session(spdy.StreamPipe(*await asyncio.open_connection(sock=a)), server=True)
    client = spdy.Session(spdy.StreamPipe(*await asyncio.open_connection(sock=b)), server=False)
    return server, client, [asyncio.create_task(server.run()), asyncio.create_task(client.run())]


@pytest.fixture
async def sessions() -> AsyncIterator[tuple[spdy.Session, spdy.Session]]:
    server, client, tasks = await _pair()
    yield server, client
    await client.close()
    await server.close()
    await asyncio.gather(*tasks)


async def test_streams_carry_data_both_ways_and_half_close(sessions: tuple[spdy.Session, spdy.Session]) -> None:
    """A client stream is accepted and replied; data flows both ways; FIN ends each side's reads."""
    server, client = sessions
    opening = asyncio.create_task(client.open({"streamtype": "data", "port": "80"}))
    accepted = await server.accept()
    assert accepted is not None and accepted.id == 1 and accepted.header("streamType") == "data"
    await accepted.reply()
    stream = await opening
    await stream.write(b"x" * 100_000)
    await stream.close()
    assert await accepted.read_all() == b"x" * 100_000
    await accepted.write(b"pong")
    await accepted.close()
    assert await stream.read_all() == b"pong"
    assert stream.done and accepted.done
    assert not client.streams and not server.streams


async def test_reset_refuses_and_aborts_streams(sessions: tuple[spdy.Session, spdy.Session]) -> None:
    """A reset before the reply makes open() fail; a reset later ends the peer's reads and writes."""
    server, client = sessions
    opening = asyncio.create_task(client.open({"port": "1"}))
    refused = await server.accept()
    assert refused is not None
    await refused.reset()
    with pytest.raises(spdy.StreamReset):
        await opening
    opening = asyncio.create_task(client.open({"port": "2"}))
    accepted = await server.accept()
    assert accepted is not None
    await accepted.reply()
    stream = await opening
    await stream.reset()
    assert await accepted.read() == b""
    assert accepted.reset_status == spdy.CANCEL
    with pytest.raises(spdy.StreamReset):
        await accepted.write(b"late")


async def test_pings_are_answered_and_stream_ids_checked(sessions: tuple[spdy.Session, spdy.Session]) -> None:
    """Each side echoes the other's pings; a SYN_STREAM with the wrong parity gets RST_STREAM(PROTOCOL_ERROR)."""
    server, client = sessions
    await asyncio.wait_for(client.ping(), 2)
    await asyncio.wait_for(server.ping(), 2)
    # The server must not accept an even (server-numbered) stream from the client.
    client._next_id = 2
    with pytest.raises(spdy.StreamReset):
        await asyncio.wait_for(client.open({"port": "1"}), 2)


async def test_session_end_releases_everyone() -> None:
    """When the connection drops, accept() returns None and open streams read EOF."""
    server, client, tasks = await _pair()
    opening = asyncio.create_task(client.open({"port": "1"}))
    accepted = await server.accept()
    assert accepted is not None
    await accepted.reply()
    await opening
    await client.close()
    await asyncio.gather(*tasks)
    assert await server.accept() is None
    assert await accepted.read() == b""
    with pytest.raises(ConnectionError):
        await server.send(spdy.Ping(2))
    await server.close()


async def test_garbage_ends_the_session_with_goaway() -> None:
    """A frame that is not SPDY/3 makes the session answer GOAWAY(PROTOCOL_ERROR) and stop."""
    a, b = socket.socketpair()
    server = spdy.Session(spdy.StreamPipe(*await asyncio.open_connection(sock=a)), server=True)
    reader, writer = await asyncio.open_connection(sock=b)
    writer.write(b"\xff" * 8)
    await asyncio.wait_for(server.run(), 2)
    reply = await reader.read(16)
    assert reply == _hex("80030007 00000008") + struct.pack(">II", 0, spdy.GOAWAY_PROTOCOL_ERROR)
    writer.close()
    await server.close()
