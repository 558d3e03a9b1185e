"""The cluster DNS server: UDP and TCP on one port, answering from dnsrecords and forwarding the rest (wire format by dnspython)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct
import typing
from collections.abc import Sequence
from typing import Any

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.network import dnsrecords

log = logging.getLogger("pocketkube.dns")

# RFC 1035: a UDP reply without EDNS0 is at most 512 bytes; beyond that it is truncated (TC) for a TCP retry.
PLAIN_UDP_SIZE = 512
# What we advertise in our OPT record (the DNS flag day 2020 recommendation).
OUR_PAYLOAD = 1232
TCP_IDLE_TIMEOUT = 10.0
FORWARD_TIMEOUT = 2.0
SERVICES = rest.GVR("", "v1", "services")
ENDPOINT_SLICES = rest.GVR("discovery.k8s.io", "v1", "endpointslices")
NAMESPACES = rest.GVR("", "v1", "namespaces")
DNS_SERVICE = ("kube-system", "kube-dns")

_RCODES = {dnsrecords.NOERROR: dns.rcode.NOERROR, dnsrecords.NXDOMAIN: dns.rcode.NXDOMAIN,
           dnsrecords.SERVFAIL: dns.rcode.SERVFAIL, dnsrecords.REFUSED: dns.rcode.REFUSED}


def parse_upstream(text: str) -> tuple[str, int]:
    """"10.0.0.2", "10.0.0.2:5353", "[::1]:53" or "::1" as (host, port); raises ValueError when malformed."""
    text = text.strip()
    host, port = text, 53
    if text.startswith("["):
        host, _, rest_ = text[1:].partition("]")
        if rest_:
            if not rest_.startswith(":"):
                raise ValueError(f"invalid upstream {text!r}")
            port = int(rest_[1:])
    elif text.count(":") == 1:
        host, _, p = text.partition(":")
        port = int(p)
    if not host or not 0 < port < 65536:
        raise ValueError(f"invalid upstream {text!r}")
    return host, port


def _rrset(rr: dnsrecords.RR) -> dns.rrset.RRset:
    return dns.rrset.from_text(rr.name, rr.ttl, dns.rdataclass.IN, rr.rtype, rr.data)


def _bare(wire: bytes, rcode: int) -> bytes | None:
    """A header-only reply (FORMERR, NOTIMP) to a message we will not parse, if it has a header to answer."""
    if len(wire) < 12:
        return None
    qid, flags = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None  # never answer a response: that way lie reflection loops
    return struct.pack("!HHHHHH", qid, dns.flags.QR | (flags & 0x7800) | rcode, 0, 0, 0, 0)


def to_wire(response: dns.message.Message, limit: int) -> bytes:
    """Encode; past limit, set TC and keep as many answers as fit (additional and authority go first)."""
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        pass
    response.flags |= dns.flags.TC
    response.additional = []
    response.authority = []
    answers = [rrset for rrset in response.answer]
    flat = [(rrset.name, rrset.ttl, rd) for rrset in answers for rd in rrset]
    lo, hi = 0, len(flat)
    best = b""
    while lo <= hi:
        mid = (lo + hi) // 2
        response.answer = [dns.rrset.from_rdata(name, ttl, rd) for name, ttl, rd in flat[:mid]]
        try:
            best = response.to_wire(max_size=limit)
            lo = mid + 1
        except dns.exception.TooBig:
            hi = mid - 1
    return best


class Server:
    """Answers DNS queries from a Records view; names outside the cluster go to the upstream resolvers."""

    def __init__(self, records: dnsrecords.Records, *, upstreams: Sequence[tuple[str, int]] = (),
                 forward_timeout: float = FORWARD_TIMEOUT) -> None:
        self.records = records
        self.upstreams = list(upstreams)
        self.forward_timeout = forward_timeout
        self.host = ""
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._pending: set[asyncio.Task[Any]] = set()

    # -- sockets -------------------------------------------------------------------------------------

    async def listen(self, host: str, port: int = 0, *, attempts: int = 20) -> int:
        """Bind UDP and TCP on the same port (0: a free one) and return it."""
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        last: OSError | None = None
        for _ in range(attempts if port == 0 else 1):
            udp, _proto = await loop.create_datagram_endpoint(lambda: _Udp(self), local_addr=(host, port),
                                                              family=family)
            chosen = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await asyncio.start_server(self._serve_tcp, host, chosen, family=family,
                                                       reuse_address=True)
            except OSError as e:
                udp.close()
                last = e
                continue
            self._udp = udp
            self.host, self.port = host, chosen
            # Never forward to ourselves: a host resolv.conf naming this server would loop.
            self.upstreams = [u for u in self.upstreams if u != (host, chosen)]
            return chosen
        raise last or OSError(f"cannot bind UDP and TCP on {host}:{port}")

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            with contextlib.suppress(Exception):
                await self._tcp.wait_closed()
        for t in list(self._pending):
            t.cancel()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE_TIMEOUT)
                (length,) = struct.unpack("!H", header)
                wire = await asyncio.wait_for(reader.readexactly(length), TCP_IDLE_TIMEOUT)
                reply = await self.handle(wire, tcp=True)
                if reply is None:
                    break
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    # -- queries -------------------------------------------------------------------------------------

    async def handle(self, wire: bytes, *, tcp: bool = False) -> bytes | None:
        """The reply to one query in wire format, or None when there is nothing to answer."""
        if len(wire) >= 12 and dns.opcode.from_flags(struct.unpack("!H", wire[2:4])[0]) != dns.opcode.QUERY:
            return _bare(wire, dns.rcode.NOTIMP)
        try:
            query = dns.message.from_wire(wire)
        except Exception:  # noqa: BLE001 - any malformed message gets FORMERR, never a crash
            return _bare(wire, dns.rcode.FORMERR)
        if query.flags & dns.flags.QR:
            return None
        limit = 65535 if tcp else max(PLAIN_UDP_SIZE, query.payload if query.edns >= 0 else PLAIN_UDP_SIZE)
        response = dns.message.make_response(query, our_payload=OUR_PAYLOAD)
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return to_wire(response, limit)
        q = query.question[0]
        if q.rdclass != dns.rdataclass.IN:
            response.set_rcode(dns.rcode.REFUSED)
            return to_wire(response, limit)
        try:
            answer = self.records.answer(q.name.to_text(), dns.rdatatype.to_text(q.rdtype))
        except Exception:  # noqa: BLE001 - a bug answering one name must not take the server down
            log.exception("answering %s %s failed", q.name, dns.rdatatype.to_text(q.rdtype))
            response.set_rcode(dns.rcode.SERVFAIL)
            return to_wire(response, limit)
        if answer.forward:
            return await self._forward(query, response, limit, tcp=tcp)
        response.set_rcode(_RCODES[answer.rcode])
        if answer.authoritative:
            response.flags |= dns.flags.AA
        response.answer = [_rrset(rr) for rr in answer.answer]
        response.authority = [_rrset(rr) for rr in answer.authority]
        response.additional = [_rrset(rr) for rr in answer.additional]
        for target in answer.chase:
            # The ExternalName target's addresses, as CoreDNS's upstream lookup appends them.
            found = await self._ask_upstream(dns.message.make_query(target, q.rdtype), tcp=tcp)
            if found is not None:
                response.answer += found.answer
        return to_wire(response, limit)

    async def _forward(self, query: dns.message.Message, response: dns.message.Message, limit: int, *,
                       tcp: bool) -> bytes:
        upstream = await self._ask_upstream(query, tcp=tcp)
        if upstream is None:
            response.set_rcode(dns.rcode.SERVFAIL)
            return to_wire(response, limit)
        upstream.id = query.id
        return to_wire(upstream, limit)

    async def _ask_upstream(self, query: dns.message.Message, *, tcp: bool) -> dns.message.Message | None:
        """The first upstream's reply (over TCP when the client used TCP or UDP came back truncated), or None."""
        for host, port in self.upstreams:
            try:
                if not tcp:
                    reply = await dns.asyncquery.udp(query, host, timeout=self.forward_timeout, port=port,
                                                     ignore_unexpected=True)
                    if not reply.flags & dns.flags.TC:
                        return reply
                return await dns.asyncquery.tcp(query, host, timeout=self.forward_timeout, port=port)
            except (dns.exception.DNSException, OSError, EOFError, ValueError) as e:
                log.warning("forwarding %s to %s:%d failed: %s", query.question[0].name if query.question else "",
                            host, port, type(e).__name__)
        return None


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, server: Server) -> None:
        self.server = server
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport quacks like asyncio.DatagramTransport without subclassing it.
        self.transport = typing.cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.server._spawn(self._reply(data, addr))

    async def _reply(self, data: bytes, addr: Any) -> None:
        reply = await self.server.handle(data)
        if reply is not None and self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)


def follow(records: dnsrecords.Records, client: rest.Client, *, clock: clock_mod.Clock | None = None
           ) -> list[informer.Informer]:
    """Informers on Services, EndpointSlices and Namespaces that keep records current (run them to start)."""
    clk = clock or clock_mod.Clock()

    def touched() -> None:
        records.serial = int(clk.now().timestamp())

    def on_service(_etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        records.set_service(obj, deleted=new is None)
        meta = obj.get("metadata") or {}
        if (meta.get("namespace"), meta.get("name")) == DNS_SERVICE:
            spec = (new or {}).get("spec") or {}
            records.ns_addresses = [ip for ip in spec.get("clusterIPs") or [] if ip != "None"]
        touched()

    def on_slice(_etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        records.set_slice(obj, deleted=new is None)
        touched()

    def on_namespace(_etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        records.set_namespace(obj, deleted=new is None)
        touched()

    informers = []
    for gvr, handler in ((SERVICES, on_service), (ENDPOINT_SLICES, on_slice), (NAMESPACES, on_namespace)):
        inf = informer.Informer(client, gvr, clock=clk)
        inf.add_handler(handler)
        informers.append(inf)
    return informers


async def run_informers(records: dnsrecords.Records, informers: list[informer.Informer]) -> None:
    """Run the informers; records answer NXDOMAIN (not SERVFAIL) once all three have listed."""
    tasks = [asyncio.get_running_loop().create_task(i.run(), name=f"dns-informer-{i.gvr.resource}")
             for i in informers]
    try:
        await asyncio.gather(*(i.wait_synced() for i in informers))
        records.synced = True
        await asyncio.gather(*tasks)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
