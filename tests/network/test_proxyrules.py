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
