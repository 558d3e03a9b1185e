"""NetworkPolicy rules: isolation, peers, ports and the nftables script they render to (golden file)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from pocketkube.network import policyrules

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "policyrules.nft")
TABLE = "pknp_test"


def pod(name: str, ip: str, *, ns: str = "default", labels: dict[str, str] | None = None,
        ports: list[dict[str, Any]] | None = None, **extra: Any) -> dict[str, Any]:
    spec = {"containers": [{"name": "c", "ports": ports or []}], **extra.pop("spec", {})}
    status = {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.168.1.10",
              **extra.pop("status", {})}
    return {"metadata": {"name": name, "namespace": ns, "labels": labels or {}}, "spec": spec, "status": status}


def namespace(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def policy(name: str, spec: dict[str, Any], *, ns: str = "default") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


NAMESPACES = [namespace("default", team="a"), namespace("other", team="b"), namespace("kube-system")]
PODS = [pod("srv", "10.1.0.2", labels={"app": "srv"}, ports=[{"name": "http", "containerPort": 8080}]),
        pod("front", "10.1.0.3", labels={"role": "frontend"}),
        pod("alt", "10.1.0.5", labels={"app": "srv"}, ports=[{"name": "http", "containerPort": 9090},
                                                            {"name": "dns", "containerPort": 5353,
                                                             "protocol": "UDP"}]),
        pod("other-front", "10.1.1.4", ns="other", labels={"role": "frontend"})]
DNS = policyrules.dns_info("10.96.0.10", labels={"k8s-app": "kube-dns"},
                           ports=[("dns", "UDP", 53), ("dns-tcp", "TCP", 53)])


def render(policies: list[dict[str, Any]], pods: list[dict[str, Any]] | None = None) -> str:
    return policyrules.render(policies, PODS if pods is None else pods, NAMESPACES, table=TABLE,
                              bridges=["pkb1", "pkb0"], dns=DNS)


def chain(script: str, prefix: str, key: str) -> list[str]:
    """The rules of the chain of one pod (by its comment or position), without indentation."""
    lines = [x.strip() for x in script.splitlines()]
    out: list[list[str]] = []
    for i, line in enumerate(lines):
        if line.startswith(f"chain {prefix}"):
            body = lines[i + 1:lines.index("}", i)]
            out.append(body)
    found = [b for b in out if any(f'"{key}"' in r for r in b)] if prefix != "dns_" else out
    assert found, f"no {prefix} chain for {key}"
    return found[0]


@pytest.mark.parametrize(("spec", "want"), [
    ({}, {"Ingress"}),
    ({"egress": [{}]}, {"Ingress", "Egress"}),
    ({"ingress": [{}]}, {"Ingress"}),
    ({"policyTypes": ["Egress"]}, {"Egress"}),
    ({"policyTypes": ["Ingress", "Egress"], "egress": []}, {"Ingress", "Egress"}),
])
def test_policy_types_default_as_the_api_server_does(spec: dict[str, Any], want: set[str]) -> None:
    """Without policyTypes a policy is an Ingress one, and an Egress one too when it has egress rules."""
    assert policyrules.policy_types(spec) == want


@pytest.mark.parametrize(("body", "want"), [
    (pod("p", "10.1.0.9"), "10.1.0.9"),
    (pod("p", "10.1.0.9", spec={"hostNetwork": True}), None),
    (pod("p", "192.168.1.10"), None),
    (pod("p", "10.1.0.9", status={"phase": "Succeeded"}), None),
    (pod("p", "", status={"podIPs": []}), None),
    (pod("p", "fd00::1", status={"podIPs": [{"ip": "fd00::1"}, {"ip": "10.1.0.8"}]}), "10.1.0.8"),
])
def test_pod_info_keeps_pods_with_their_own_ipv4(body: dict[str, Any], want: str | None) -> None:
    """Host-network, finished and address-less pods are not policy endpoints; the IPv4 one of dual-stack is."""
    info = policyrules.pod_info(body)
    assert (info.ip if info else None) == want


@pytest.mark.parametrize(("ports", "target", "want"), [
    (None, None, None),
    ([{"port": 80}], None, {"TCP": {"80"}}),
    ([{"port": "80"}], None, {"TCP": {"80"}}),
    ([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}], None, {"UDP": {"53"}, "TCP": {"53"}}),
    ([{"protocol": "SCTP", "port": 9}], None, {"SCTP": {"9"}}),
    ([{"port": 8000, "endPort": 8080}], None, {"TCP": {"8000-8080"}}),
    ([{"protocol": "UDP"}], None, {"UDP": {""}}),
    ([{"port": "http"}], None, {}),
    ([{"port": "http"}], 0, {"TCP": {"8080"}}),
    ([{"port": "http"}], 2, {"TCP": {"9090"}}),
    ([{"port": "dns"}], 2, {}),
    ([{"port": "dns", "protocol": "UDP"}], 2, {"UDP": {"5353"}}),
    ([{"protocol": "ICMP", "port": 1}], None, {}),
])
def test_ports_resolve_numbers_ranges_and_names(ports: list[dict[str, Any]] | None, target: int | None,
                                                want: dict[str, set[str]] | None) -> None:
    """Numbers and ranges hold for any pod; a named port resolves per pod and protocol, or to nothing."""
    parsed = policyrules.ports_of(ports)
    if want is None:
        assert parsed is None
        return
    assert parsed is not None
    info = policyrules.pod_info(PODS[target]) if target is not None else None
    assert policyrules.resolve(parsed, info) == want


@pytest.mark.parametrize(("entry", "want"), [
    ({"podSelector": {"matchLabels": {"role": "frontend"}}}, ["10.1.0.3"]),
    ({"namespaceSelector": {}}, ["10.1.0.2", "10.1.0.3", "10.1.0.5", "10.1.1.4", "10.96.0.10"]),
    ({"namespaceSelector": {"matchLabels": {"team": "b"}}}, ["10.1.1.4"]),
    ({"namespaceSelector": {}, "podSelector": {"matchLabels": {"role": "frontend"}}}, ["10.1.0.3", "10.1.1.4"]),
    ({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
      "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}, ["10.96.0.10"]),
    ({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]}}, ["10.1.0.2", "10.1.0.5"]),
    ({"podSelector": {"matchExpressions": [{"key": "app", "operator": "Bogus"}]}}, []),
    ({}, None),
])
def test_peers_select_pods_by_pod_and_namespace_labels(entry: dict[str, Any], want: list[str] | None) -> None:
    """podSelector alone is the policy's namespace; with namespaceSelector it is every matching namespace."""
    infos = [i for i in (policyrules.pod_info(p) for p in PODS) if i] + [DNS]
    labels = {str(n["metadata"]["name"]): {policyrules.NS_NAME_LABEL: str(n["metadata"]["name"]),
                                           **n["metadata"]["labels"]} for n in NAMESPACES}
    peers = policyrules.peers_of([entry], namespace="default", pods=infos, namespaces=labels)
    if want is None:
        assert peers == []
        return
    assert sorted(p.ip for p in peers[0].pods) == want


def test_render_matches_golden_file() -> None:
    """Ingress and egress isolation, ipBlock with except, named ports, ranges, SCTP and DNS render as the golden."""
    policies = [
        policy("deny-all", {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}, ns="other"),
        policy("allow-frontend", {"podSelector": {"matchLabels": {"app": "srv"}}, "ingress": [
            {"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}},
                      {"namespaceSelector": {"matchLabels": {"team": "b"}}}],
             "ports": [{"port": "http"}, {"protocol": "SCTP", "port": 7000, "endPort": 7010}]},
            {"from": [{"ipBlock": {"cidr": "172.16.0.0/12", "except": ["172.17.0.0/16", "172.18.0.0/16"]}}]}]}),
        policy("front-egress", {"podSelector": {"matchLabels": {"role": "frontend"}}, "policyTypes": ["Egress"],
                                "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "srv"}}}],
                                            "ports": [{"port": "http"}]},
                                           {"ports": [{"protocol": "UDP", "port": 53}]},
                                           {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.0/8"]}}],
                                            "ports": [{"port": 443}]}]}),
    ]
    got = render(policies)
    if os.environ.get("UPDATE_GOLDEN"):
        with open(GOLDEN, "w") as f:
            f.write(got)
    with open(GOLDEN) as f:
        assert got == f.read()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft -c needs root and nftables")
def test_golden_script_is_valid_nftables() -> None:
    """The kernel's parser accepts the golden script (checked with nft -c, nothing applied)."""
    cp = subprocess.run(["nft", "-c", "-f", GOLDEN], capture_output=True, text=True, check=False)
    assert cp.returncode == 0, cp.stderr


def test_unselected_pods_are_not_isolated() -> None:
    """A pod no policy selects gets no chain at all, and no policies render only the pass-through hooks."""
    script = render([policy("p", {"podSelector": {"matchLabels": {"app": "srv"}}})])
    assert "10.1.0.3 : jump" not in script
    assert "10.1.0.2 : jump in_" in script and "10.1.0.5 : jump in_" in script
    assert "vmap" not in render([])


def test_empty_ingress_denies_all_but_the_pod_itself() -> None:
    """An ingress policy without rules leaves only the pod's own traffic (hairpin via a Service) and replies."""
    rules = chain(render([policy("deny", {"podSelector": {}})]), "in_", "default/srv")
    assert rules == ['ip saddr 10.1.0.2 accept comment "default/srv"', "drop"]


def test_rules_of_several_policies_are_a_union() -> None:
    """Two policies selecting a pod allow what either allows; an empty rule allows everything."""
    script = render([policy("a", {"podSelector": {"matchLabels": {"app": "srv"}},
                                  "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}]}]}),
                     policy("b", {"podSelector": {}, "ingress": [{"ports": [{"port": 22}]}]})])
    assert chain(script, "in_", "default/srv")[1:] == [
        "ip saddr 10.1.0.3 accept", "meta l4proto tcp th dport 22 accept", "drop"]


def test_egress_named_port_resolves_per_destination() -> None:
    """An egress rule to a named port opens each destination pod's own number for that name."""
    script = render([policy("e", {"podSelector": {"matchLabels": {"role": "frontend"}}, "policyTypes": ["Egress"],
                                  "egress": [{"ports": [{"port": "http"}]}]})])
    rules = chain(script, "eg_", "default/front")
    assert "ip daddr 10.1.0.2 meta l4proto tcp th dport 8080 return" in rules
    assert "ip daddr 10.1.0.5 meta l4proto tcp th dport 9090 return" in rules
    assert rules[-1] == "drop"


def test_egress_to_kube_dns_is_judged_at_its_cluster_ip() -> None:
    """The DNS stand-in is reached when a rule's peers include it, on its Service port, in the input hook."""
    allow = policy("dns", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
         "ports": [{"protocol": "UDP", "port": 53}]}]})
    script = render([allow])
    assert 'iifname { "pkb0", "pkb1" } ct original ip daddr 10.96.0.10 ip saddr vmap' in script
    assert chain(script, "dns_", "") == ["meta l4proto udp ct original proto-dst 53 accept", "drop"]
    denied = render([policy("deny", {"podSelector": {}, "policyTypes": ["Egress"]})])
    assert chain(denied, "dns_", "") == ["drop"]


def test_bad_stored_values_narrow_rather_than_crash() -> None:
    """Malformed peers and ports (which validation rejects) select nothing instead of raising."""
    script = render([policy("odd", {"podSelector": {}, "ingress": [
        {"from": [{"ipBlock": {"cidr": "nonsense"}}, "x", {"podSelector": "bad"}], "ports": [{"port": True}]}]})])
    assert chain(script, "in_", "default/srv") == ['ip saddr 10.1.0.2 accept comment "default/srv"', "drop"]


def test_cleanup_script_deletes_only_the_table() -> None:
    """Cleaning up declares then deletes the table, so it works whether or not the table exists."""
    assert policyrules.cleanup_script(TABLE) == f"table ip {TABLE}\ndelete table ip {TABLE}\n"


def test_a_reused_ip_belongs_to_the_live_pod() -> None:
    """When a terminating pod still reports an IP a new pod got, the new pod's policy holds for it, once."""
    old = pod("old", "10.1.0.2", labels={"app": "gone"})
    old["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    script = render([policy("p", {"podSelector": {}})], pods=[old, PODS[0]])
    assert script.count("10.1.0.2 : jump") == 1
    assert 'comment "default/srv"' in script and "default/old" not in script
