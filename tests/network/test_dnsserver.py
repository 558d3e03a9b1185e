"""The DNS server on real sockets: UDP/TCP, truncation, EDNS0, malformed input and forwarding."""

from __future__ import annotations

import asyncio
from typing import Any

import dns.asyncquery
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from pocketkube.network import dnsrecords, dnsserver


def _records(n: int = 60) -> dnsrecords.Records:
    r = dnsrecords.Records()
    r.synced = True
    r.set_namespace({"metadata": {"name": "default"}})
    r.set_service({"metadata": {"name": "big", "namespace": "default"}, "spec": {"clusterIP": "None", "ports": []}})
    r.set_slice({"metadata": {"name": "big-1", "namespace": "default", "labels": {"kubernetes.io/service-name": "big"}},
                 "addressType": "IPv4", "endpoints": [{"addresses": [f"10.244.0.{i}"]} for i in range(1, n + 1)]})
    return r


class _Upstream(asyncio.DatagramProtocol):
    """A fake upstream resolver answering every A question with 192.0.2.7."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.7"))
        self.transport.sendto(r.to_wire(), addr)


async def _server(**kw: Any) -> dnsserver.Server:
    s = dnsserver.Server(_records(), **kw)
    await s.listen("127.0.0.1", 0)
    return s


async def test_udp_truncates_without_edns_and_tcp_has_everything() -> None:
    """A 60-address answer sets TC over plain UDP (<= 512 bytes) and comes whole over TCP."""
    s = await _server()
    try:
        q = dns.message.make_query("big.default.svc.cluster.local", "A")
        udp = await dns.asyncquery.udp(q, "127.0.0.1", port=s.port, timeout=2, raise_on_truncation=False)
        assert udp.flags & dns.flags.TC
        assert len(udp.to_wire()) <= 512
        assert 0 < sum(len(r) for r in udp.answer) < 60
        tcp = await dns.asyncquery.tcp(q, "127.0.0.1", port=s.port, timeout=2)
        assert not tcp.flags & dns.flags.TC
        assert sum(len(r) for r in tcp.answer) == 60
        assert tcp.flags & dns.flags.AA
    finally:
        await s.close()


async def test_edns_payload_allows_bigger_udp() -> None:
    """With EDNS0 and a 4096-byte payload the whole answer fits in one datagram, with an OPT record back."""
    s = await _server()
    try:
        q = dns.message.make_query("big.default.svc.cluster.local", "A", use_edns=0, payload=4096)
        r = await dns.asyncquery.udp(q, "127.0.0.1", port=s.port, timeout=2)
        assert not r.flags & dns.flags.TC
        assert sum(len(x) for x in r.answer) == 60
        assert r.edns == 0
    finally:
        await s.close()


@pytest.mark.parametrize(("wire", "expect"), [
    (b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff", dns.rcode.FORMERR),  # question cut short
    (b"\x00", None),  # not even a header: dropped
])
async def test_malformed(wire: bytes, expect: int | None) -> None:
    """Garbage gets FORMERR with the query id when it has a header, and is dropped otherwise."""
    s = dnsserver.Server(_records())
    reply = await s.handle(wire)
    if expect is None:
        assert reply is None
    else:
        assert reply is not None and reply[:2] == b"\x12\x34" and reply[3] & 0x0F == expect


async def test_non_query_opcode_is_notimp() -> None:
    """An UPDATE (or any non-QUERY opcode) is answered NOTIMP."""
    q = dns.message.make_query("big.default.svc.cluster.local", "A")
    q.set_opcode(dns.opcode.UPDATE)
    reply = await dnsserver.Server(_records()).handle(q.to_wire())
    assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.NOTIMP


async def test_forwards_outside_names_to_upstream() -> None:
    """example.com. goes to the configured upstream and its answer comes back with the client's id."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(_Upstream, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    try:
        q = dns.message.make_query("example.com", "A")
        reply = await dnsserver.Server(_records(), upstreams=[("127.0.0.1", port)]).handle(q.to_wire())
        assert reply is not None
        r = dns.message.from_wire(reply)
        assert r.id == q.id and r.rcode() == dns.rcode.NOERROR
        assert [rd.address for rd in r.answer[0]] == ["192.0.2.7"]
    finally:
        transport.close()


async def test_unreachable_upstream_is_servfail() -> None:
    """An upstream that never answers yields SERVFAIL after the forward timeout."""
    loop = asyncio.get_running_loop()
    silent, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    port = silent.get_extra_info("sockname")[1]
    try:
        s = dnsserver.Server(_records(), upstreams=[("127.0.0.1", port)], forward_timeout=0.2)
        reply = await s.handle(dns.message.make_query("example.com", "A").to_wire())
        assert reply is not None and dns.message.from_wire(reply).rcode() == dns.rcode.SERVFAIL
    finally:
        silent.close()


@pytest.mark.parametrize(("text", "want"), [
    ("10.0.0.2", ("10.0.0.2", 53)), ("10.0.0.2:5353", ("10.0.0.2", 5353)), ("[::1]:53", ("::1", 53)),
    ("::1", ("::1", 53)), ("10.0.0.2:0", None), ("10.0.0.2:x", None), ("", None),
])
def test_parse_upstream(text: str, want: tuple[str, int] | None) -> None:
    """Upstreams are IP or IP:PORT (IPv6 in brackets with a port); anything else is refused."""
    if want is None:
        with pytest.raises(ValueError):
            dnsserver.parse_upstream(text)
    else:
        assert dnsserver.parse_upstream(text) == want
