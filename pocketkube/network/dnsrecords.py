"""Cluster DNS answers from Services, EndpointSlices and Namespaces, as CoreDNS's kubernetes plugin gives them."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from collections.abc import Iterable
from typing import Any, NamedTuple

ZONE = "cluster.local."
REVERSE_ZONES = ("in-addr.arpa.", "ip6.arpa.")
# The kubernetes plugin's `ttl` default; kubeadm's Corefile raises it to 30.
TTL = 5
# https://github.com/kubernetes/dns/blob/master/docs/specification.md
SCHEMA_VERSION = "1.1.0"
VERSION_TTL = 28800
SOA_REFRESH, SOA_RETRY, SOA_EXPIRE = 7200, 1800, 86400
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
NOERROR, NXDOMAIN, SERVFAIL, REFUSED = "NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED"
# A headless service without ports still answers A records; CoreDNS marks such entries with port -1.
NO_PORT = -1


class RR(NamedTuple):
    """One resource record in presentation form: owner name, TTL, type and rdata text."""

    name: str
    ttl: int
    rtype: str
    data: str

    def __str__(self) -> str:
        return f"{self.name} {self.ttl} IN {self.rtype} {self.data}"


@dataclasses.dataclass
class Answer:
    """What to reply: rcode and sections, or forward the query upstream (names outside our zones)."""

    rcode: str = NOERROR
    answer: list[RR] = dataclasses.field(default_factory=list)
    authority: list[RR] = dataclasses.field(default_factory=list)
    additional: list[RR] = dataclasses.field(default_factory=list)
    authoritative: bool = True
    forward: bool = False
    # Out-of-zone ExternalName targets whose addresses the server resolves upstream and appends.
    chase: list[str] = dataclasses.field(default_factory=list)


class _Entry(NamedTuple):
    """A CoreDNS msg.Service: an address (or CNAME target), a port and the name it is known by."""

    host: str
    port: int
    domain: str


class _Request(NamedTuple):
    port: str
    protocol: str
    endpoint: str
    service: str
    namespace: str
    kind: str  # "svc", "pod" or "" for the zone apex, "svc.zone" and "pod.zone"


class _NameError(Exception):
    """The queried name does not exist: NXDOMAIN (CoreDNS's errNoItems / errInvalidRequest)."""


def _lower(name: str) -> str:
    return name.lower() if name.endswith(".") else name.lower() + "."


def _host_type(host: str) -> str:
    try:
        return "A" if ipaddress.ip_address(host).version == 4 else "AAAA"
    except ValueError:
        return "CNAME"


def endpoint_hostname(ip: str, hostname: str = "") -> str:
    """An endpoint's DNS label: its hostname, else its IP with dots (or colons) as dashes."""
    if hostname:
        return hostname
    return ip.replace(".", "-") if "." in ip else ip.replace(":", "-")


def reverse_address(name: str) -> str:
    """The IP a reverse name (1.0.96.10.in-addr.arpa.) stands for, or "" if it is not a full address."""
    labels = _lower(name).rstrip(".").split(".")
    try:
        if labels[-2:] == ["in-addr", "arpa"] and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(reversed(labels[:4]))))
        if labels[-2:] == ["ip6", "arpa"] and len(labels) == 34:
            nibbles = "".join(reversed(labels[:32]))
            return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except ValueError:
        return ""
    return ""


def _parse(base: list[str]) -> _Request:
    """Split the labels left of the zone as CoreDNS's parseRequest does (raises _NameError if malformed)."""
    empty = _Request("", "", "", "", "", "")
    if not base or base in (["svc"], ["pod"]):
        return empty
    segs = list(base)
    kind = segs.pop()
    if kind not in ("svc", "pod"):
        raise _NameError
    namespace = segs.pop() if segs else ""
    service = segs.pop() if segs else ""
    if not segs:
        return _Request("", "", "", service, namespace, kind)
    if len(segs) == 1:
        return _Request("", "", segs[0], service, namespace, kind)
    if len(segs) == 2:
        return _Request(segs[0].removeprefix("_"), segs[1].removeprefix("_"), "", service, namespace, kind)
    raise _NameError


def _port_matches(want_port: str, port_name: str, want_proto: str, proto: str) -> bool:
    return ((not want_port or want_port.lower() == port_name.lower())
            and (not want_proto or want_proto.lower() == proto.lower()))


class Records:
    """The DNS view of the cluster: fed objects as informers see them, asked questions by the server."""

    def __init__(self, *, zone: str = ZONE, ttl: int = TTL, ns_addresses: Iterable[str] = ()) -> None:
        self.zone = _lower(zone)
        self.ttl = ttl
        # Addresses of ns.dns.<zone>: the kube-dns Service's cluster IPs.
        self.ns_addresses = list(ns_addresses)
        self.serial = 0
        self.synced = False
        self._services: dict[tuple[str, str], dict[str, Any]] = {}
        self._slices: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        self._slice_owner: dict[tuple[str, str], str] = {}
        self._namespaces: set[str] = set()
        self._reverse: dict[str, list[str]] | None = None

    # -- feeding -------------------------------------------------------------------------------------

    def set_service(self, svc: dict[str, Any], *, deleted: bool = False) -> None:
        meta = svc.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        if deleted:
            self._services.pop(key, None)
        else:
            self._services[key] = svc
        self._reverse = None

    def set_slice(self, eps: dict[str, Any], *, deleted: bool = False) -> None:
        meta = eps.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        old_owner = self._slice_owner.pop((ns, name), None)
        if old_owner is not None:
            self._slices.get((ns, old_owner), {}).pop(name, None)
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL, "")
        if not deleted and owner:
            self._slice_owner[(ns, name)] = owner
            self._slices.setdefault((ns, owner), {})[name] = eps
        self._reverse = None

    def set_namespace(self, ns: dict[str, Any], *, deleted: bool = False) -> None:
        name = (ns.get("metadata") or {}).get("name", "")
        if deleted:
            self._namespaces.discard(name)
        else:
            self._namespaces.add(name)

    # -- lookups -------------------------------------------------------------------------------------

    def _endpoints(self, ns: str, name: str) -> list[tuple[str, str, list[tuple[str, int, str]]]]:
        """(ip, hostname, [(port name, port, protocol)]) of a service's ready endpoints, slice by slice."""
        svc = self._services.get((ns, name)) or {}
        publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
        out = []
        for eps in (self._slices.get((ns, name)) or {}).values():
            if eps.get("addressType") not in ("IPv4", "IPv6"):
                continue
            ports = [(p.get("name") or "", int(p["port"]) if p.get("port") is not None else NO_PORT,
                      p.get("protocol") or "TCP") for p in eps.get("ports") or []] or [("", NO_PORT, "")]
            for ep in eps.get("endpoints") or []:
                # A missing ready condition means ready (EndpointSlice API semantics).
                if (ep.get("conditions") or {}).get("ready") is False and not publish:
                    continue
                for ip in ep.get("addresses") or []:
                    out.append((ip, ep.get("hostname") or "", ports))
        return out

    def _find_services(self, r: _Request) -> list[_Entry]:
        if r.namespace not in self._namespaces:
            raise _NameError
        if not r.service:
            return []  # NODATA: the namespace exists
        svc = self._services.get((r.namespace, r.service))
        if svc is None:
            raise _NameError
        spec = svc.get("spec") or {}
        base = f"{r.service}.{r.namespace}.svc.{self.zone}"
        found: list[_Entry] = []
        if spec.get("type") == "ExternalName":
            target = spec.get("externalName") or ""
            if r.endpoint or _host_type(target) != "CNAME":
                raise _NameError
            return [_Entry(_lower(target), 0, base)]
        if spec.get("clusterIP") == "None" or r.endpoint:
            matched = False
            for ip, hostname, ports in self._endpoints(r.namespace, r.service):
                label = endpoint_hostname(ip, hostname)
                if r.endpoint and r.endpoint.lower() != label.lower():
                    continue
                for pname, port, proto in ports:
                    if _port_matches(r.port, pname, r.protocol, proto):
                        matched = True
                        found.append(_Entry(ip, port, f"{label}.{base}"))
            if not matched:
                raise _NameError
            return found
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        matched = False
        for p in spec.get("ports") or []:
            if _port_matches(r.port, p.get("name") or "", r.protocol, p.get("protocol") or "TCP"):
                matched = True
                found += [_Entry(ip, int(p.get("port") or 0), base) for ip in ips]
        if not matched:
            raise _NameError
        return found

    def _find_pods(self, r: _Request) -> list[_Entry]:
        # `pods insecure`: any well-formed IP in an existing namespace answers, pod or not.
        if r.namespace not in self._namespaces:
            raise _NameError
        if not r.service:
            return []
        name = r.service
        ip = name.replace("-", ".") if name.count("-") == 3 and "--" not in name else name.replace("-", ":")
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            raise _NameError from None
        return [_Entry(ip, 0, "")]

    def _records(self, base: list[str]) -> list[_Entry]:
        r = _parse(base)
        if not r.kind:
            return []
        if r.kind == "pod":
            return self._find_pods(r)
        return self._find_services(r)

    def _reverse_index(self) -> dict[str, list[str]]:
        """IP -> PTR targets: cluster IPs first (a cluster IP wins over endpoints), then endpoint addresses."""
        if self._reverse is None:
            index: dict[str, list[str]] = {}
            for (ns, name), svc in self._services.items():
                spec = svc.get("spec") or {}
                for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
                    if ip != "None":
                        index[_canonical_ip(ip)] = [f"{name}.{ns}.svc.{self.zone}"]
            clusterips = set(index)
            for (ns, name) in self._slices:
                for ip, hostname, _ in self._endpoints(ns, name):
                    key = _canonical_ip(ip)
                    if key not in clusterips:
                        index.setdefault(key, []).append(f"{endpoint_hostname(ip, hostname)}.{name}.{ns}.svc.{self.zone}")
            self._reverse = index
        return self._reverse

    # -- answering -----------------------------------------------------------------------------------

    def soa(self, zone_name: str) -> RR:
        """The zone's SOA record, named as the query spelled the zone."""
        return RR(zone_name, min(self.ttl, 300), "SOA",
                  f"ns.dns.{self.zone} hostmaster.{self.zone} {self.serial} {SOA_REFRESH} {SOA_RETRY} "
                  f"{SOA_EXPIRE} {self.ttl}")

    def answer(self, qname: str, qtype: str) -> Answer:
        """Answer one question (qname absolute, qtype a mnemonic such as "A" or "SRV")."""
        lname = _lower(qname)
        qname = qname if qname.endswith(".") else qname + "."
        if lname.endswith(REVERSE_ZONES) or lname in REVERSE_ZONES:
            return self._answer_reverse(qname, qtype)
        if not (lname == self.zone or lname.endswith("." + self.zone)):
            return Answer(forward=True, authoritative=False)
        if qtype in ("AXFR", "IXFR"):
            return Answer(rcode=REFUSED, authoritative=False)
        zone_name = qname[len(qname) - len(self.zone):]
        base = lname[: len(lname) - len(self.zone)].rstrip(".")
        labels = base.split(".") if base else []
        try:
            rrs, extra, chase = self._answer_zone(qname, qtype, labels)
        except _NameError:
            rcode = NXDOMAIN if self.synced else SERVFAIL
            return Answer(rcode=rcode, authority=[self.soa(zone_name)])
        if not rrs:
            return Answer(authority=[self.soa(zone_name)])
        return Answer(answer=rrs, additional=extra, chase=chase)

    def _answer_zone(self, qname: str, qtype: str, labels: list[str]) -> tuple[list[RR], list[RR], list[str]]:
        if qtype == "SOA":
            return ([self.soa(qname)] if not labels else []), [], []
        if qtype == "NS" and not labels:
            ns = f"ns.dns.{self.zone}"
            return [RR(qname, self.ttl, "NS", ns)], self._ns_glue(ns), []
        if labels == ["ns", "dns"] and qtype in ("A", "AAAA"):
            return [rr for rr in self._ns_glue(qname) if rr.rtype == qtype], [], []
        if qtype == "TXT":
            if labels == ["dns-version"]:
                return [RR(qname, VERSION_TTL, "TXT", f'"{SCHEMA_VERSION}"')], [], []
            try:
                exists = bool(self._records(labels))
            except _NameError:
                exists = False
            if not exists:
                raise _NameError
            return [], [], []
        if qtype in ("A", "AAAA", "CNAME"):
            return self._addresses(qname, qtype, labels)
        if qtype == "SRV":
            return self._srv(qname, labels)
        # Other types: an A lookup tells NODATA (the name exists) from NXDOMAIN.
        self._addresses(qname, "A", labels)
        return [], [], []

    def _ns_glue(self, name: str) -> list[RR]:
        return [RR(name, self.ttl, _host_type(ip), ip) for ip in self.ns_addresses]

    def _addresses(self, qname: str, qtype: str, labels: list[str], depth: int = 0
                   ) -> tuple[list[RR], list[RR], list[str]]:
        entries = self._records(labels)
        out: list[RR] = []
        chase: list[str] = []
        seen: set[str] = set()
        for e in entries:
            kind = _host_type(e.host)
            if kind == "CNAME":
                cname = RR(qname, self.ttl, "CNAME", e.host)
                if cname in out:
                    continue
                if qtype == "CNAME":
                    out.append(cname)
                    continue
                if e.host.endswith("." + self.zone) and depth < 8:
                    inner = e.host[: len(e.host) - len(self.zone)].rstrip(".").split(".")
                    try:
                        more, _, more_chase = self._addresses(e.host, qtype, inner, depth + 1)
                    except _NameError:
                        continue
                    if more:
                        out += [cname, *more]
                        chase += more_chase
                    continue
                out.append(cname)
                chase.append(e.host)
            elif kind == qtype and e.host not in seen:
                seen.add(e.host)
                out.append(RR(qname, self.ttl, kind, e.host))
        return out, [], chase

    def _srv(self, qname: str, labels: list[str]) -> tuple[list[RR], list[RR], list[str]]:
        # SRV for ExternalName services is not implemented by CoreDNS: they are dropped (NODATA).
        entries = [e for e in self._records(labels) if _host_type(e.host) != "CNAME"]
        # All entries share priority 0, each of weight 100: every record gets floor(100 / n).
        weight = max(1, math.floor(100.0 / (100 * len(entries)) * 100)) if entries else 0
        records: list[RR] = []
        extra: list[RR] = []
        seen: set[tuple[str, str, int]] = set()
        for e in entries:
            if e.port == NO_PORT:
                continue
            if (e.domain, "", e.port) not in seen:
                seen.add((e.domain, "", e.port))
                records.append(RR(qname, self.ttl, "SRV", f"0 {weight} {e.port} {e.domain}"))
            if (e.domain, e.host, 0) not in seen:
                seen.add((e.domain, e.host, 0))
                extra.append(RR(e.domain, self.ttl, _host_type(e.host), e.host))
        return records, extra, []

    def _answer_reverse(self, qname: str, qtype: str) -> Answer:
        # The plugin serves the reverse zones but falls through to the forwarder for what it does not know.
        if qtype != "PTR":
            return Answer(forward=True, authoritative=False)
        ip = reverse_address(qname)
        targets = self._reverse_index().get(_canonical_ip(ip), []) if ip else []
        if not targets:
            return Answer(forward=True, authoritative=False)
        return Answer(answer=[RR(qname, self.ttl, "PTR", t) for t in targets])


def _canonical_ip(ip: str) -> str:
    try:
        return str(ipaddress.ip_address(ip))
    except ValueError:
        return ip
