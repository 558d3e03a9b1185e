"""End to end: the cluster DNS server answers for Services created with kubectl, on its real address."""

from __future__ import annotations

import collections.abc
import json
import socket
import threading

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest

from tests.e2e import cluster as cluster_mod

UPSTREAM_ANSWER = "192.0.2.53"


@pytest.fixture(scope="module")
def upstream() -> collections.abc.Iterator[int]:
    """A tiny upstream resolver (the machine's network is closed) answering every A question with one address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, addr = sock.recvfrom(4096)
            except TimeoutError:
                continue
            q = dns.message.from_wire(data)
            r = dns.message.make_response(q)
            r.flags |= dns.flags.RA
            if q.question[0].name.to_text() == "unresolvable.example.":
                r.set_rcode(dns.rcode.NXDOMAIN)
            else:
                r.answer.append(dns.rrset.from_text(q.question[0].name, 30, "IN", "A", UPSTREAM_ANSWER))
            sock.sendto(r.to_wire(), addr)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        t.join(2)
        sock.close()


@pytest.fixture(scope="module")
def dns_cluster(tmp_path_factory: pytest.TempPathFactory, upstream: int
                ) -> collections.abc.Iterator[tuple[cluster_mod.Cluster, int]]:
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pkdns")))
    c.start(args=["--dns-upstream", f"127.0.0.1:{upstream}"])
    try:
        port = cluster_mod.eventually(lambda: c.kubectl(
            "get", "endpointslice", "-n", "kube-system", "kube-dns", "-o", "jsonpath={.ports[0].port}",
            check=False).stdout.strip(), what="the kube-dns EndpointSlice")
        yield c, int(port)
    finally:
        c.stop()


def _ask(port: int, name: str, rtype: str, *, tcp: bool = False) -> dns.message.Message:
    q = dns.message.make_query(name, rtype)
    if tcp:
        return dns.query.tcp(q, "127.0.0.1", port=port, timeout=5)
    return dns.query.udp(q, "127.0.0.1", port=port, timeout=5)


def _texts(m: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in m.answer for rd in rrset)


MANIFESTS = [
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
     "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
     "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
    # What the EndpointSlice controller writes for a StatefulSet's two ready pods behind the headless db.
    {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
     "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
     "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
     "endpoints": [{"addresses": ["10.244.0.11"], "hostname": "db-0", "conditions": {"ready": True}},
                   {"addresses": ["10.244.0.12"], "hostname": "db-1", "conditions": {"ready": True}},
                   {"addresses": ["10.244.0.13"], "hostname": "db-2", "conditions": {"ready": False}}]},
    {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "search"},
     "spec": {"type": "ExternalName", "externalName": "search.example.com"}},
]


@pytest.fixture(scope="module")
def services(dns_cluster: tuple[cluster_mod.Cluster, int]) -> tuple[str, int]:
    c, port = dns_cluster
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": MANIFESTS}))
    ip = c.kubectl("get", "svc", "web", "-o", "jsonpath={.spec.clusterIP}").stdout.strip()
    cluster_mod.eventually(lambda: _texts(_ask(port, "web.default.svc.cluster.local", "A")) == [ip],
                           what="web's A record")
    cluster_mod.eventually(lambda: _ask(port, "db.default.svc.cluster.local", "A").answer,
                           what="db's A records")
    return ip, port


def test_kube_dns_service(dns_cluster: tuple[cluster_mod.Cluster, int]) -> None:
    """kube-system/kube-dns is 10.96.0.10 with CoreDNS's ports and labels, and resolves to itself."""
    c, port = dns_cluster
    svc = c.json("get", "svc", "-n", "kube-system", "kube-dns")
    assert svc["spec"]["clusterIP"] == "10.96.0.10"
    assert [(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]] == [
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")]
    assert svc["metadata"]["labels"]["k8s-app"] == "kube-dns"
    def answered() -> dns.message.Message | None:
        m = _ask(port, "kube-dns.kube-system.svc.cluster.local", "A")
        return m if m.answer else None

    m = cluster_mod.eventually(answered, what="kube-dns A")
    assert m is not None
    assert _texts(m) == ["10.96.0.10"]
    assert m.flags & dns.flags.AA


def test_cluster_ip_a_srv_ptr(services: tuple[str, int]) -> None:
    """A ClusterIP service has an A record, a named-port SRV record and a PTR for its IP."""
    ip, port = services
    srv = _ask(port, "_http._tcp.web.default.svc.cluster.local", "SRV")
    assert _texts(srv) == ["0 100 80 web.default.svc.cluster.local."]
    assert [rd.to_text() for rrset in srv.additional for rd in rrset] == [ip]
    reverse = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
    assert _texts(_ask(port, reverse, "PTR")) == ["web.default.svc.cluster.local."]


def test_headless_statefulset_names(services: tuple[str, int]) -> None:
    """A headless service answers its ready endpoints, per-pod hostnames and one SRV target per pod."""
    _, port = services
    assert _texts(_ask(port, "db.default.svc.cluster.local", "A")) == ["10.244.0.11", "10.244.0.12"]
    assert _texts(_ask(port, "db-1.db.default.svc.cluster.local", "A")) == ["10.244.0.12"]
    assert _ask(port, "db-2.db.default.svc.cluster.local", "A").rcode() == dns.rcode.NXDOMAIN
    assert _texts(_ask(port, "_pg._tcp.db.default.svc.cluster.local", "SRV", tcp=True)) == [
        "0 50 5432 db-0.db.default.svc.cluster.local.", "0 50 5432 db-1.db.default.svc.cluster.local."]
    assert _texts(_ask(port, "11.0.244.10.in-addr.arpa", "PTR")) == ["db-0.db.default.svc.cluster.local."]


def test_nxdomain_and_nodata(services: tuple[str, int]) -> None:
    """A missing service is NXDOMAIN; an existing one asked for AAAA is NOERROR with the zone's SOA."""
    _, port = services
    missing = _ask(port, "nope.default.svc.cluster.local", "A")
    assert missing.rcode() == dns.rcode.NXDOMAIN
    assert missing.authority[0].to_text().startswith("cluster.local. 5 IN SOA ns.dns.cluster.local. "
                                                     "hostmaster.cluster.local. ")
    nodata = _ask(port, "web.default.svc.cluster.local", "AAAA")
    assert nodata.rcode() == dns.rcode.NOERROR and not nodata.answer and nodata.authority


def test_external_name_cname(services: tuple[str, int]) -> None:
    """An ExternalName service is a CNAME, followed by the target's address from upstream."""
    _, port = services
    m = _ask(port, "search.default.svc.cluster.local", "A")
    assert [r.to_text() for r in m.answer] == [
        "search.default.svc.cluster.local. 5 IN CNAME search.example.com.",
        f"search.example.com. 30 IN A {UPSTREAM_ANSWER}"]


def test_forwarding(dns_cluster: tuple[cluster_mod.Cluster, int]) -> None:
    """Names outside cluster.local are forwarded to the configured upstream, answers and errors alike."""
    _, port = dns_cluster
    assert _texts(_ask(port, "www.example.org", "A")) == [UPSTREAM_ANSWER]
    assert _ask(port, "unresolvable.example", "A").rcode() == dns.rcode.NXDOMAIN


def test_deleted_service_disappears(services: tuple[str, int], dns_cluster: tuple[cluster_mod.Cluster, int]) -> None:
    """Deleting a Service with kubectl removes its name from DNS."""
    c, port = dns_cluster
    c.kubectl("delete", "svc", "search")
    cluster_mod.eventually(lambda: _ask(port, "search.default.svc.cluster.local", "A").rcode() == dns.rcode.NXDOMAIN,
                           what="search to be gone")
