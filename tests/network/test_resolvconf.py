"""A pod's resolv.conf per dnsPolicy and dnsConfig, formed as the kubelet does."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.network import resolvconf

HOST = resolvconf.parse("# host\nnameserver 192.168.1.1\nnameserver 192.168.1.2 ; second\n"
                       "search corp.example. lab.example .\noptions edns0 ndots:2\n")


def _pod(policy: str = "", *, host_network: bool = False, config: Any = None, ns: str = "shop") -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if policy:
        spec["dnsPolicy"] = policy
    if host_network:
        spec["hostNetwork"] = True
    if config is not None:
        spec["dnsConfig"] = config
    return {"metadata": {"name": "p", "namespace": ns, "uid": "u1"}, "spec": spec}


def test_parse_host() -> None:
    """Comments are dropped, search domains lose trailing dots and ".", options keep their order."""
    assert HOST == resolvconf.HostConfig(("192.168.1.1", "192.168.1.2"), ("corp.example", "lab.example"),
                                         ("edns0", "ndots:2"))


CASES = [
    ("ClusterFirst", False, None,
     "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
     "nameserver 10.96.0.10\noptions ndots:5\n"),
    ("", False, None,
     "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
     "nameserver 10.96.0.10\noptions ndots:5\n"),
    ("ClusterFirst", True, None,
     "search corp.example lab.example\nnameserver 192.168.1.1\nnameserver 192.168.1.2\noptions edns0 ndots:2\n"),
    ("ClusterFirstWithHostNet", True, None,
     "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example\n"
     "nameserver 10.96.0.10\noptions ndots:5\n"),
    ("Default", False, None,
     "search corp.example lab.example\nnameserver 192.168.1.1\nnameserver 192.168.1.2\noptions edns0 ndots:2\n"),
    ("None", False, {"nameservers": ["1.1.1.1"], "searches": ["a.example"],
                     "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]},
     "search a.example\nnameserver 1.1.1.1\noptions ndots:2 edns0\n"),
    ("ClusterFirst", False, {"nameservers": ["10.96.0.10", "8.8.8.8"], "searches": ["cluster.local", "x.example"],
                             "options": [{"name": "ndots", "value": "1"}, {"name": "timeout", "value": "3"}]},
     "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example lab.example x.example\n"
     "nameserver 10.96.0.10\nnameserver 8.8.8.8\noptions ndots:1 timeout:3\n"),
]


@pytest.mark.parametrize(("policy", "host_network", "config", "text"), CASES)
def test_form(policy: str, host_network: bool, config: Any, text: str) -> None:
    """Each dnsPolicy starts from the cluster or host resolver (or nothing), then dnsConfig is merged in."""
    got = resolvconf.form(_pod(policy, host_network=host_network, config=config), host=HOST,
                          cluster_dns=["10.96.0.10"])
    assert got.render() == text
    assert got.events == []


def test_nameserver_limit_event() -> None:
    """More than three nameservers are cut to three with a DNSConfigForming warning."""
    got = resolvconf.form(_pod("None", config={"nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]}),
                          host=HOST, cluster_dns=["10.96.0.10"])
    assert got.nameservers == ["1.1.1.1", "2.2.2.2", "3.3.3.3"]
    assert got.events == [("DNSConfigForming", "Nameserver limits were exceeded, some nameservers have been "
                           "omitted, the applied nameserver line is: 1.1.1.1 2.2.2.2 3.3.3.3")]


def test_search_limit_event() -> None:
    """More than 32 search domains are cut to 32 with a DNSConfigForming warning."""
    searches = [f"d{i}.example" for i in range(40)]
    got = resolvconf.form(_pod("None", config={"nameservers": ["1.1.1.1"], "searches": searches}),
                          host=HOST, cluster_dns=[])
    assert got.searches == searches[:32]
    assert got.events[0][0] == "DNSConfigForming"
    assert got.events[0][1].startswith("Search Line limits were exceeded, some search paths have been omitted, "
                                       "the applied search line is: d0.example d1.example")


def test_missing_cluster_dns_falls_back_to_host() -> None:
    """ClusterFirst without a cluster DNS IP uses the host's resolver and says so."""
    got = resolvconf.form(_pod(), host=HOST, cluster_dns=[])
    assert got.nameservers == ["192.168.1.1", "192.168.1.2"]
    assert got.events[0][0] == "MissingClusterDNS"


def test_write(tmp_path: Any) -> None:
    """The formed file is written into the pod directory."""
    path = resolvconf.write(str(tmp_path), resolvconf.form(_pod(), host=HOST, cluster_dns=["10.96.0.10"]))
    assert open(path).read().startswith("search shop.svc.cluster.local ")


@pytest.mark.parametrize(("spec", "want"), [
    ({}, False),
    ({"hostNetwork": True}, True),
    ({"hostNetwork": True, "dnsPolicy": "Default"}, True),
    ({"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}, False),
    ({"hostNetwork": True, "dnsConfig": {"searches": ["x.test"]}}, False),
    ({"dnsPolicy": "Default"}, False),
])
def test_uses_host_file(spec: dict[str, Any], want: bool) -> None:
    """Only a host-network pod on the node's resolver, with no dnsConfig, keeps the host's file as it is."""
    assert resolvconf.uses_host_file({"metadata": {"namespace": "ns"}, "spec": spec}) is want


def test_pod_file_reads_the_nodes_file(tmp_path: Any) -> None:
    """pod_file forms the file from the node's resolv.conf and the settings, and writes it into the pod dir."""
    host = tmp_path / "resolv.conf"
    host.write_text("nameserver 192.0.2.1\nsearch lan\n")
    settings = resolvconf.Settings(cluster_dns=("10.0.0.10",), cluster_domain="corp.local", resolv_conf=str(host))
    formed, path = resolvconf.pod_file(_pod(), settings, str(tmp_path / "pod"))
    assert open(path).read() == ("search shop.svc.corp.local svc.corp.local corp.local lan\n"
                                 "nameserver 10.0.0.10\noptions ndots:5\n") and not formed.events
