"""Service proxy rules: endpoint selection as kube-proxy does it, and the nftables script (golden file)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from pocketkube.network import proxyrules

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "proxyrules.nft")


def _slice(service: str, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]] | None = None,
           ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": f"{service}-abc", "labels": {proxyrules.SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "ports": ports or [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": endpoints}


def _ep(ip: str, node: str = "n1", **conditions: bool) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node, "conditions": conditions}


def _svc(name: str, ip: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "clusterIPs": [ip], "ports": ports, **spec}}


HTTP = {"name": "http", "port": 80, "protocol": "TCP"}


@pytest.mark.parametrize(("endpoints", "want"), [
    ([_ep("10.0.0.2", ready=True), _ep("10.0.0.3", ready=False)], ["10.0.0.2"]),
    ([_ep("10.0.0.2"), _ep("10.0.0.1")], ["10.0.0.1", "10.0.0.2"]),  # no conditions: ready
    ([_ep("10.0.0.2", ready=False, serving=True, terminating=True), _ep("10.0.0.3", ready=False)], ["10.0.0.2"]),
    ([_ep("10.0.0.2", ready=True), _ep("10.0.0.3", ready=False, serving=True, terminating=True)], ["10.0.0.2"]),
    ([_ep("10.0.0.2", ready=False, serving=False, terminating=True)], []),
    ([{"addresses": ["fd00::1"], "conditions": {}}], []),
])
def test_endpoints_for_prefers_ready_then_serving_terminating(endpoints: list[dict[str, Any]], want: list[str]) -> None:
    """Ready endpoints get traffic; only when none is ready do serving-terminating ones (kube-proxy's fallback)."""
    got = proxyrules.endpoints_for(HTTP, [_slice("web", endpoints)])
    assert [b.ip for b in got] == want


@pytest.mark.parametrize(("port", "want"), [
    ({"name": "http", "port": 80, "protocol": "TCP"}, 8080),
    ({"name": "metrics", "port": 9090, "protocol": "TCP"}, 9100),
    ({"name": "http", "port": 80, "protocol": "UDP"}, None),
    ({"name": "other", "port": 1, "protocol": "TCP"}, None),
])
def test_endpoints_for_matches_ports_by_name_and_protocol(port: dict[str, Any], want: int | None) -> None:
    """A service port takes the slice port of the same name and protocol (named target ports are resolved there)."""
    sl = _slice("web", [_ep("10.0.0.2")], ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
                                                  {"name": "metrics", "port": 9100, "protocol": "TCP"}])
    got = proxyrules.endpoints_for(port, [sl])
    assert [b.port for b in got] == ([want] if want is not None else [])


def test_traffic_policy_local_keeps_local_endpoints() -> None:
    """internalTrafficPolicy/externalTrafficPolicy Local use only endpoints on this machine's nodes."""
    svc = _svc("web", "10.96.0.10", [{**HTTP, "nodePort": 30080}], type="NodePort",
               externalTrafficPolicy="Local", internalTrafficPolicy="Local")
    ports = proxyrules.service_ports([svc], [_slice("web", [_ep("10.0.0.2", "n1"), _ep("10.0.0.3", "far")])],
                                     local_nodes=frozenset({"n1"}))
    assert [b.ip for b in ports[0].backends] == ["10.0.0.2"]
    assert [b.ip for b in ports[0].external_backends] == ["10.0.0.2"]


def test_headless_and_external_name_services_are_not_proxied() -> None:
    """Services without a ClusterIP (headless, ExternalName) get no rules."""
    svcs = [_svc("headless", "None", [HTTP]),
            {"metadata": {"namespace": "default", "name": "ext"}, "spec": {"type": "ExternalName",
                                                                           "externalName": "example.com"}}]
    assert proxyrules.service_ports(svcs, []) == []


def _golden_services() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    svcs = [
        _svc("web", "10.96.0.10", [{**HTTP, "nodePort": 30080}, {"name": "dns", "port": 53, "protocol": "UDP"}],
             type="NodePort"),
        _svc("sticky", "10.96.0.11", [HTTP], sessionAffinity="ClientIP",
             sessionAffinityConfig={"clientIP": {"timeoutSeconds": 60}}),
        _svc("empty", "10.96.0.12", [HTTP]),
        {**_svc("lb", "10.96.0.13", [{**HTTP, "nodePort": 30081}], type="LoadBalancer"),
         "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}},
    ]
    slices = [
        _slice("web", [_ep("10.244.0.2"), _ep("10.244.1.2")],
               ports=[{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "dns", "port": 5353,
                                                                            "protocol": "UDP"}]),
        _slice("sticky", [_ep("10.244.0.3"), _ep("10.244.0.4", ready=False)]),
        _slice("lb", [_ep("10.244.0.5")]),
    ]
    return svcs, slices


def test_render_matches_golden_file() -> None:
    """ClusterIP, NodePort, LoadBalancer, UDP, session affinity and no-endpoint rejects render as the golden script."""
    svcs, slices = _golden_services()
    got = proxyrules.render(proxyrules.service_ports(svcs, slices), table="pk_test", cluster_cidr="10.244.0.0/16",
                            bridges=["pkb00000001", "pkb00000002"])
    if os.environ.get("UPDATE_GOLDEN"):
        with open(GOLDEN, "w") as f:
            f.write(got)
    with open(GOLDEN) as f:
        assert got == f.read()


def test_render_is_deterministic_regardless_of_input_order() -> None:
    """The same objects in any order give the same script, so an unchanged cluster never re-applies rules."""
    svcs, slices = _golden_services()
    a = proxyrules.render(proxyrules.service_ports(svcs, slices), table="t", cluster_cidr="10.244.0.0/16")
    b = proxyrules.render(proxyrules.service_ports(svcs[::-1], slices[::-1]), table="t", cluster_cidr="10.244.0.0/16")
    assert a == b


def test_internal_traffic_policy_local_keeps_pod_traffic_on_its_node() -> None:
    """With internalTrafficPolicy Local a pod's bridge reaches only its node's endpoints; a node without one drops."""
    svc = _svc("loc", "10.96.0.20", [HTTP], internalTrafficPolicy="Local")
    ports = proxyrules.service_ports([svc], [_slice("loc", [_ep("10.244.0.2", "n1"), _ep("10.244.1.2", "n2")])],
                                     local_nodes=frozenset({"n1", "n2", "n3"}))
    got = proxyrules.render(ports, table="t", cluster_cidr="10.244.0.0/16",
                            node_bridges={"n1": "pkb1", "n2": "pkb2", "n3": "pkb3"})
    lines = [line.strip() for line in got.splitlines()]
    n1 = next(line for line in lines if line.startswith('iifname "pkb1" ip daddr 10.96.0.20'))
    chain = n1.split()[-1]
    body = lines[lines.index(f"chain {chain} {{") + 1]
    assert body.startswith("goto ep_") and "10.244.1.2" not in body
    # Left un-DNATed in the nat chain, then dropped by the filter chain.
    assert 'iifname "pkb3" ip daddr 10.96.0.20 tcp dport 80 return' in lines
    assert 'iifname "pkb3" ip daddr 10.96.0.20 tcp dport 80 drop comment "default/loc:http has no local endpoints"' \
        in lines
    # The host counts as every node: it still reaches both endpoints.
    assert "ip daddr 10.96.0.20 tcp dport 80 goto svc_" in " ".join(lines)


def _chain(script: str, name: str) -> list[str]:
    lines = [line.strip() for line in script.splitlines()]
    start = lines.index(f"chain {name} {{") + 1
    return lines[start:lines.index("}", start)]


def _local_lb(endpoints: list[dict[str, Any]]) -> str:
    svc = {**_svc("loc", "10.96.0.30", [{**HTTP, "nodePort": 30090}], type="LoadBalancer",
                  externalTrafficPolicy="Local", healthCheckNodePort=30091),
           "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.20"}]}}}
    ports = proxyrules.service_ports([svc], [_slice("loc", endpoints)], local_nodes=frozenset({"n1"}))
    return proxyrules.render(ports, table="t", cluster_cidr="10.244.0.0/16")


def test_external_traffic_policy_local_keeps_the_client_address() -> None:
    """Local: pods and the host go to the ClusterIP's chain (the host masqueraded); outside clients reach a local
    endpoint unmasqueraded, so the pod sees their address."""
    got = _local_lb([_ep("10.244.0.2", "n1"), _ep("10.244.1.2", "far")])
    sp = proxyrules.service_ports([_svc("loc", "10.96.0.30", [HTTP])], [])[0]
    ext = _chain(got, sp.ext_chain)
    assert ext[:3] == [f"ip saddr 10.244.0.0/16 goto {sp.chain}",
                       "fib saddr type local meta mark set meta mark | 0x4000",
                       f"fib saddr type local goto {sp.chain}"]
    assert len(ext) == 4 and ext[3].startswith("goto ep_") and "mark" not in ext[3]
    assert "10.244.1.2" not in " ".join(_chain(got, ext[3].split()[-1]))
    # The ClusterIP still balances over every endpoint.
    assert "numgen random mod 2" in " ".join(_chain(got, sp.chain))
    assert f"tcp dport 30090 goto {sp.ext_chain}" in _chain(got, "nodeports")
    assert f"ip daddr 192.168.1.20 tcp dport 80 goto {sp.ext_chain}" in _chain(got, "services")


def test_external_traffic_policy_local_without_a_local_endpoint_drops_outside_traffic() -> None:
    """Local with endpoints only elsewhere: pods and the host are still served, outside traffic is dropped."""
    got = _local_lb([_ep("10.244.1.2", "far")])
    sp = proxyrules.service_ports([_svc("loc", "10.96.0.30", [HTTP])], [])[0]
    assert len(_chain(got, sp.ext_chain)) == 3  # only the short-circuits: the rest falls through un-DNATed
    rejects = _chain(got, "no_endpoints")
    assert rejects == ['ip daddr 192.168.1.20 tcp dport 80 drop comment "default/loc:http has no local endpoints"',
                       'fib daddr type local tcp dport 30090 drop comment "default/loc:http has no local endpoints"']


def test_external_traffic_policy_local_without_endpoints_rejects() -> None:
    """Local with no endpoints anywhere rejects at once, as Cluster does."""
    got = _local_lb([])
    assert _chain(got, "no_endpoints")[-1] == \
        'fib daddr type local tcp dport 30090 reject comment "default/loc:http has no endpoints"'


@pytest.mark.parametrize(("spec", "endpoints", "want"), [
    ({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30091},
     [_ep("10.244.0.2", "n1"), _ep("10.244.0.3", "n1", ready=False), _ep("10.244.1.2", "far")], [30091, 1]),
    ({"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30091},
     [_ep("10.244.1.2", "far")], [30091, 0]),
    ({"type": "LoadBalancer", "externalTrafficPolicy": "Cluster"}, [_ep("10.244.0.2", "n1")], None),
    ({"type": "NodePort", "externalTrafficPolicy": "Local"}, [_ep("10.244.0.2", "n1")], None),
])
def test_health_checks_count_local_ready_endpoints(spec: dict[str, Any], endpoints: list[dict[str, Any]],
                                                   want: list[int] | None) -> None:
    """Only Local LoadBalancers get a health check; it counts the distinct ready ip:ports on this machine."""
    svc = _svc("loc", "10.96.0.30", [{**HTTP, "nodePort": 30090}], **spec)
    slices = [_slice("loc", endpoints, ports=[{"name": "http", "port": 8080, "protocol": "TCP"},
                                              {"name": "alt", "port": 8080, "protocol": "UDP"}])]
    got = proxyrules.health_checks([svc], slices, local_nodes=frozenset({"n1"}))
    assert [[h.port, h.local_endpoints] for h in got] == ([want] if want else [])
