"""Cluster DNS answers: golden records as CoreDNS's kubernetes plugin (pods insecure) gives them."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.network import dnsrecords

SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 42 7200 1800 86400 5"


def _svc(name: str, ns: str = "default", *, ip: str = "10.96.0.20", ports: Any = None, **spec: Any) -> dict[str, Any]:
    ports = [{"name": "http", "port": 80, "protocol": "TCP"}] if ports is None else ports
    body = {"clusterIP": ip, "clusterIPs": [ip] if ip != "None" else ["None"], "ports": ports, **spec}
    return {"metadata": {"name": name, "namespace": ns}, "spec": body}


def _slice(svc: str, endpoints: list[dict[str, Any]], ns: str = "default", *, ports: Any = None,
           name: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name or f"{svc}-abc", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}] if ports is None else ports}


def _ep(ip: str, *, ready: bool | None = True, hostname: str = "") -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [ip]}
    if ready is not None:
        ep["conditions"] = {"ready": ready}
    if hostname:
        ep["hostname"] = hostname
    return ep


def _records() -> dnsrecords.Records:
    r = dnsrecords.Records(ns_addresses=["10.96.0.10"])
    r.serial = 42
    r.synced = True
    for ns in ("default", "kube-system", "db"):
        r.set_namespace({"metadata": {"name": ns}})
    r.set_service(_svc("web", ports=[{"name": "http", "port": 80, "protocol": "TCP"},
                                     {"name": "dns", "port": 53, "protocol": "UDP"},
                                     {"port": 9000, "protocol": "TCP"}]))
    r.set_slice(_slice("web", [_ep("10.244.0.5")]))
    r.set_service(_svc("pg", "db", ip="None", ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    r.set_slice(_slice("pg", [_ep("10.244.1.2", hostname="pg-0"), _ep("10.244.1.3", hostname="pg-1"),
                              _ep("10.244.1.4", ready=False, hostname="pg-2")], "db",
                       ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]))
    r.set_service(_svc("raw", ip="None", ports=[]))
    r.set_slice(_slice("raw", [_ep("10.244.2.7", ready=None)], ports=[]))
    r.set_service(_svc("empty", ip="None"))
    r.set_service(_svc("pub", ip="None", publishNotReadyAddresses=True))
    r.set_slice(_slice("pub", [_ep("10.244.3.1", ready=False)]))
    r.set_service(_svc("ext", ip="", type="ExternalName", externalName="db.example.com"))
    r.set_service(_svc("alias", ip="", type="ExternalName", externalName="web.default.svc.cluster.local"))
    r.set_service(_svc("v6", ip="fd00::10"))
    return r


CASES = [
    # (qname, qtype, rcode, answer, additional)
    ("web.default.svc.cluster.local.", "A", "NOERROR", ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"], []),
    ("WEB.Default.svc.cluster.local.", "A", "NOERROR", ["WEB.Default.svc.cluster.local. 5 IN A 10.96.0.20"], []),
    ("web.default.svc.cluster.local.", "AAAA", "NOERROR", [], []),
    ("v6.default.svc.cluster.local.", "AAAA", "NOERROR", ["v6.default.svc.cluster.local. 5 IN AAAA fd00::10"], []),
    ("nope.default.svc.cluster.local.", "A", "NXDOMAIN", [], []),
    ("web.nons.svc.cluster.local.", "A", "NXDOMAIN", [], []),
    ("default.svc.cluster.local.", "A", "NOERROR", [], []),
    ("svc.cluster.local.", "A", "NOERROR", [], []),
    ("cluster.local.", "A", "NOERROR", [], []),
    ("foo.cluster.local.", "A", "NXDOMAIN", [], []),
    ("a.b.c.web.default.svc.cluster.local.", "A", "NXDOMAIN", [], []),
    ("_http._tcp.web.default.svc.cluster.local.", "SRV", "NOERROR",
     ["_http._tcp.web.default.svc.cluster.local. 5 IN SRV 0 100 80 web.default.svc.cluster.local."],
     ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"]),
    ("_dns._udp.web.default.svc.cluster.local.", "SRV", "NOERROR",
     ["_dns._udp.web.default.svc.cluster.local. 5 IN SRV 0 100 53 web.default.svc.cluster.local."],
     ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"]),
    ("_http._udp.web.default.svc.cluster.local.", "SRV", "NXDOMAIN", [], []),
    ("web.default.svc.cluster.local.", "SRV", "NOERROR",
     ["web.default.svc.cluster.local. 5 IN SRV 0 33 80 web.default.svc.cluster.local.",
      "web.default.svc.cluster.local. 5 IN SRV 0 33 53 web.default.svc.cluster.local.",
      "web.default.svc.cluster.local. 5 IN SRV 0 33 9000 web.default.svc.cluster.local."],
     ["web.default.svc.cluster.local. 5 IN A 10.96.0.20"]),
    ("10-244-0-5.web.default.svc.cluster.local.", "A", "NOERROR",
     ["10-244-0-5.web.default.svc.cluster.local. 5 IN A 10.244.0.5"], []),
    ("pg.db.svc.cluster.local.", "A", "NOERROR",
     ["pg.db.svc.cluster.local. 5 IN A 10.244.1.2", "pg.db.svc.cluster.local. 5 IN A 10.244.1.3"], []),
    ("pg-0.pg.db.svc.cluster.local.", "A", "NOERROR", ["pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.1.2"], []),
    ("pg-2.pg.db.svc.cluster.local.", "A", "NXDOMAIN", [], []),
    ("_pg._tcp.pg.db.svc.cluster.local.", "SRV", "NOERROR",
     ["_pg._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 50 5432 pg-0.pg.db.svc.cluster.local.",
      "_pg._tcp.pg.db.svc.cluster.local. 5 IN SRV 0 50 5432 pg-1.pg.db.svc.cluster.local."],
     ["pg-0.pg.db.svc.cluster.local. 5 IN A 10.244.1.2", "pg-1.pg.db.svc.cluster.local. 5 IN A 10.244.1.3"]),
    ("raw.default.svc.cluster.local.", "A", "NOERROR", ["raw.default.svc.cluster.local. 5 IN A 10.244.2.7"], []),
    ("raw.default.svc.cluster.local.", "SRV", "NOERROR", [], []),
    ("empty.default.svc.cluster.local.", "A", "NXDOMAIN", [], []),
    ("pub.default.svc.cluster.local.", "A", "NOERROR", ["pub.default.svc.cluster.local. 5 IN A 10.244.3.1"], []),
    ("ext.default.svc.cluster.local.", "A", "NOERROR", ["ext.default.svc.cluster.local. 5 IN CNAME db.example.com."], []),
    ("ext.default.svc.cluster.local.", "CNAME", "NOERROR",
     ["ext.default.svc.cluster.local. 5 IN CNAME db.example.com."], []),
    ("ext.default.svc.cluster.local.", "SRV", "NOERROR", [], []),
    ("alias.default.svc.cluster.local.", "A", "NOERROR",
     ["alias.default.svc.cluster.local. 5 IN CNAME web.default.svc.cluster.local.",
      "web.default.svc.cluster.local. 5 IN A 10.96.0.20"], []),
    ("web.default.svc.cluster.local.", "MX", "NOERROR", [], []),
    ("nope.default.svc.cluster.local.", "MX", "NXDOMAIN", [], []),
    ("web.default.svc.cluster.local.", "TXT", "NOERROR", [], []),
    ("dns-version.cluster.local.", "TXT", "NOERROR", ['dns-version.cluster.local. 28800 IN TXT "1.1.0"'], []),
    ("cluster.local.", "SOA", "NOERROR", [SOA], []),
    ("cluster.local.", "NS", "NOERROR", ["cluster.local. 5 IN NS ns.dns.cluster.local."],
     ["ns.dns.cluster.local. 5 IN A 10.96.0.10"]),
    ("ns.dns.cluster.local.", "A", "NOERROR", ["ns.dns.cluster.local. 5 IN A 10.96.0.10"], []),
    ("1-2-3-4.default.pod.cluster.local.", "A", "NOERROR", ["1-2-3-4.default.pod.cluster.local. 5 IN A 1.2.3.4"], []),
    ("fd00--1.default.pod.cluster.local.", "AAAA", "NOERROR",
     ["fd00--1.default.pod.cluster.local. 5 IN AAAA fd00::1"], []),
    ("1-2-3-4.nons.pod.cluster.local.", "A", "NXDOMAIN", [], []),
    ("not-an-ip.default.pod.cluster.local.", "A", "NXDOMAIN", [], []),
    ("20.0.96.10.in-addr.arpa.", "PTR", "NOERROR",
     ["20.0.96.10.in-addr.arpa. 5 IN PTR web.default.svc.cluster.local."], []),
    ("2.1.244.10.in-addr.arpa.", "PTR", "NOERROR",
     ["2.1.244.10.in-addr.arpa. 5 IN PTR pg-0.pg.db.svc.cluster.local."], []),
    ("5.0.244.10.in-addr.arpa.", "PTR", "NOERROR",
     ["5.0.244.10.in-addr.arpa. 5 IN PTR 10-244-0-5.web.default.svc.cluster.local."], []),
]


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer", "additional"), CASES)
def test_answers(qname: str, qtype: str, rcode: str, answer: list[str], additional: list[str]) -> None:
    """Each question gets CoreDNS's rcode, answer and additional records, with the SOA on empty answers."""
    got = _records().answer(qname, qtype)
    assert not got.forward
    assert got.rcode == rcode
    assert [str(rr) for rr in got.answer] == answer
    assert [str(rr) for rr in got.additional] == additional
    if not answer:
        assert [str(rr) for rr in got.authority] == [SOA]


@pytest.mark.parametrize(("qname", "qtype"), [
    ("example.com.", "A"), ("9.9.9.9.in-addr.arpa.", "PTR"), ("20.0.96.10.in-addr.arpa.", "A"),
    ("local.", "A"),
])
def test_forwards(qname: str, qtype: str) -> None:
    """Names outside cluster.local, and reverse names the cluster does not know, go upstream."""
    assert _records().answer(qname, qtype).forward


def test_external_name_target_is_chased_upstream() -> None:
    """An ExternalName pointing outside the zone asks the server to resolve its target."""
    assert _records().answer("ext.default.svc.cluster.local.", "A").chase == ["db.example.com."]


def test_unsynced_name_error_is_servfail() -> None:
    """Before the informers have listed, an unknown name is SERVFAIL, not NXDOMAIN (CoreDNS HasSynced)."""
    r = dnsrecords.Records()
    assert r.answer("web.default.svc.cluster.local.", "A").rcode == "SERVFAIL"


def test_zone_transfer_refused() -> None:
    """AXFR of the cluster zone is refused."""
    assert _records().answer("cluster.local.", "AXFR").rcode == "REFUSED"


def test_deletes_and_slice_moves() -> None:
    """Deleting a service or slice removes its records; a slice relabelled to another service moves."""
    r = _records()
    r.set_slice(_slice("pg", [_ep("10.244.1.2", hostname="pg-0")], "db", name="pg-abc",
                       ports=[{"name": "pg", "port": 5432, "protocol": "TCP"}]) | {
        "metadata": {"name": "pg-abc", "namespace": "db", "labels": {"kubernetes.io/service-name": "other"}}})
    assert r.answer("pg.db.svc.cluster.local.", "A").rcode == "NXDOMAIN"
    r.set_service(_svc("web"), deleted=True)
    assert r.answer("web.default.svc.cluster.local.", "A").rcode == "NXDOMAIN"
    assert r.answer("20.0.96.10.in-addr.arpa.", "PTR").forward


@pytest.mark.parametrize(("name", "ip"), [
    ("4.3.2.1.in-addr.arpa.", "1.2.3.4"),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.f.ip6.arpa.", "fd00::1"),
    ("3.2.1.in-addr.arpa.", ""),
    ("x.3.2.1.in-addr.arpa.", ""),
])
def test_reverse_address(name: str, ip: str) -> None:
    """Reverse names map back to their address; partial or malformed ones to nothing."""
    assert dnsrecords.reverse_address(name) == ip
