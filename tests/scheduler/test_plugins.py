"""Specification of the filter and score plugins against kube-scheduler 1.32's wording and arithmetic."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.scheduler import fit, nodeaffinity, nodeinfo, spread, taints
from tests.scheduler import helpers as h


@pytest.mark.parametrize("spec,want", [
    ({"containers": [{"resources": {"requests": {"cpu": "100m"}}}, {"resources": {"requests": {"cpu": "1"}}}]},
     {"cpu": 1100}),
    # Init containers run one at a time: the pod needs the largest of them if it exceeds the containers.
    ({"containers": [{"resources": {"requests": {"cpu": "1"}}}],
      "initContainers": [{"resources": {"requests": {"cpu": "2"}}}, {"resources": {"requests": {"cpu": "500m"}}}]},
     {"cpu": 2000}),
    # A sidecar runs beside the containers and beside later init containers.
    ({"containers": [{"resources": {"requests": {"cpu": "1"}}}],
      "initContainers": [{"restartPolicy": "Always", "resources": {"requests": {"cpu": "1"}}},
                         {"resources": {"requests": {"cpu": "1500m"}}}]},
     {"cpu": 2500}),
    ({"containers": [{"resources": {"requests": {"memory": "1Gi"}}}], "overhead": {"memory": "128Mi"}},
     {"memory": 1207959552}),
])
def test_pod_requests(spec: dict[str, Any], want: dict[str, int]) -> None:
    """Requests sum containers and sidecars, take the peak init container, and add overhead."""
    assert nodeinfo.pod_requests(spec) == want


def test_nonzero_requests_default_for_scoring() -> None:
    """Containers without requests count as 100m cpu and 200Mi memory when scoring."""
    assert nodeinfo.nonzero_requests({"containers": [{}, {"resources": {"requests": {"cpu": "1"}}}]}) == \
        (1100, 2 * 200 * 1024 * 1024)


@pytest.mark.parametrize("pod,want", [
    (h.pod("p", cpu="3"), ["Insufficient cpu"]),
    (h.pod("p", cpu="1", memory="7Gi"), ["Insufficient memory"]),
    (h.pod("p"), ["Too many pods"]),
    (h.pod("p", cpu="500m"), ["Too many pods"]),
])
def test_insufficient(pod: dict[str, Any], want: list[str]) -> None:
    """Requests are checked against allocatable minus the bound pods' requests, pod count first."""
    c = h.cluster([h.node("n", cpu="4", memory="8Gi", pods="2")],
                  [h.pod("a", cpu="2", memory="2Gi", node_name="n")])
    if want == ["Too many pods"]:
        c.add_pod(h.pod("b", node_name="n"))
    assert fit.insufficient(nodeinfo.PodInfo(pod), c.nodes["n"]) == want


def test_extended_resources() -> None:
    """An extended resource the node lacks is reported by its name."""
    p = h.pod("p")
    p["spec"]["containers"][0]["resources"] = {"requests": {"nvidia.com/gpu": "1"}}
    c = h.cluster([h.node("n")])
    assert fit.insufficient(nodeinfo.PodInfo(p), c.nodes["n"]) == ["Insufficient nvidia.com/gpu"]


def test_least_allocated_and_balanced_scores() -> None:
    """LeastAllocated averages free shares; BalancedAllocation is 100*(1-|cpu%-mem%|/2)."""
    c = h.cluster([h.node("n", cpu="4", memory="8Gi")])
    p = nodeinfo.PodInfo(h.pod("p", cpu="1", memory="4Gi"))
    assert fit.NodeResourcesFit().score({}, p, c.nodes["n"]) == (75 + 50) // 2
    assert fit.BalancedAllocation().score({}, p, c.nodes["n"]) == int((1 - 0.125) * 100)


def test_host_ports_conflict() -> None:
    """A hostPort taken on 0.0.0.0 conflicts with any address for the same protocol."""
    used = [("0.0.0.0", "TCP", 80)]
    assert nodeinfo.ports_conflict(used, [("10.0.0.1", "TCP", 80)])
    assert not nodeinfo.ports_conflict(used, [("0.0.0.0", "UDP", 80)])
    assert not nodeinfo.ports_conflict(used, [("0.0.0.0", "TCP", 81)])


def test_node_ports_filter() -> None:
    """A pod wanting a taken host port does not fit, with kube's reason."""
    ported = {"containers": [{"name": "c", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}
    c = h.cluster([h.node("n")], [h.pod("a", node_name="n", **ported)])
    assert h.place(c, h.pod("p", **ported)) == \
        "0/1 nodes are available: 1 node(s) didn't have free ports for the requested pod ports."


@pytest.mark.parametrize("tol,taint,want", [
    ({"key": "k", "operator": "Exists"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "w"}, {"key": "k", "value": "v", "effect": "NoSchedule"}, False),
    ({"operator": "Exists"}, {"key": "any", "effect": "NoExecute"}, True),
    ({"key": "k", "operator": "Exists", "effect": "NoExecute"}, {"key": "k", "effect": "NoSchedule"}, False),
])
def test_tolerates(tol: dict[str, Any], taint: dict[str, Any], want: bool) -> None:
    """Toleration.ToleratesTaint: effect and key when set, then Exists or Equal on the value."""
    assert taints.tolerates(tol, taint) is want


def test_taint_filter_and_prefer_no_schedule_score() -> None:
    """NoSchedule taints filter with kube's message; PreferNoSchedule steers the pod elsewhere."""
    c = h.cluster([h.node("n1", taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])])
    assert h.place(c, h.pod("p")) == "0/1 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}."
    tol = [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]
    assert h.place(c, h.pod("p", tolerations=tol)) == "n1"
    c = h.cluster([h.node("n1", taints=[{"key": "a", "effect": "PreferNoSchedule"}]), h.node("n2")])
    assert {h.place(c, h.pod(f"p{i}")) for i in range(5)} == {"n2"}


def test_cordoned_node_takes_pods_tolerating_unschedulable() -> None:
    """spec.unschedulable is lifted by a toleration of node.kubernetes.io/unschedulable."""
    c = h.cluster([h.node("n", unschedulable=True)])
    tol = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert h.place(c, h.pod("p", tolerations=tol)) == "n"


@pytest.mark.parametrize("op,values,label,want", [
    ("In", ["a", "b"], "b", True), ("In", ["a"], None, False),
    ("NotIn", ["a"], "b", True), ("NotIn", ["a"], None, True), ("NotIn", ["a"], "a", False),
    ("Exists", [], "x", True), ("Exists", [], None, False), ("DoesNotExist", [], None, True),
    ("Gt", ["5"], "6", True), ("Gt", ["5"], "5", False), ("Lt", ["5"], "4", True), ("Lt", ["x"], "4", False),
    ("Bogus", ["a"], "a", False),
])
def test_node_selector_requirements(op: str, values: list[str], label: str | None, want: bool) -> None:
    """Every node selector operator, with malformed requirements matching nothing."""
    assert nodeaffinity.requirement_matches({"key": "k", "operator": op, "values": values}, label) is want


def test_node_selector_and_preferred_affinity_steer_placement() -> None:
    """nodeSelector filters; preferred terms pick the heavier-weighted match."""
    c = h.cluster([h.node("n1", labels={"disk": "ssd"}), h.node("n2", labels={"disk": "hdd"}), h.node("n3")])
    assert h.place(c, h.pod("p", nodeSelector={"disk": "ssd"})) == "n1"
    assert h.place(c, h.pod("p", nodeSelector={"disk": "nvme"})) == \
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector."
    pref = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["hdd"]}]}},
        {"weight": 1, "preference": {"matchExpressions": [{"key": "disk", "operator": "Exists"}]}}]}}
    assert {h.place(c, h.pod(f"p{i}", affinity=pref)) for i in range(5)} == {"n2"}


def _anti(key: str, app: str) -> dict[str, Any]:
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}


def test_required_anti_affinity_by_zone() -> None:
    """Anti-affinity on the zone key keeps a second replica out of the first one's zone."""
    c = h.cluster([h.node("n1", zone="a"), h.node("n2", zone="a"), h.node("n3", zone="b")],
                  [h.pod("w1", node_name="n1", labels={"app": "web"})])
    assert h.place(c, h.pod("w2", labels={"app": "web"}, affinity=_anti(nodeinfo.ZONE, "web"))) == "n3"
    c.add_pod(h.pod("w3", node_name="n3", labels={"app": "web"}))
    assert h.place(c, h.pod("w4", labels={"app": "web"}, affinity=_anti(nodeinfo.ZONE, "web"))) == \
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules."


def test_existing_pods_anti_affinity_is_honoured() -> None:
    """A bound pod's anti-affinity keeps matching newcomers off its node."""
    c = h.cluster([h.node("n1"), h.node("n2")],
                  [h.pod("db", node_name="n1", labels={"app": "db"},
                         affinity=_anti(nodeinfo.HOSTNAME, "web"))])
    assert h.place(c, h.pod("w", labels={"app": "web"})) == "n2"


def test_required_affinity_and_first_pod_rule() -> None:
    """Affinity follows matching pods; with none anywhere, a self-matching pod may go anywhere."""
    aff = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": nodeinfo.HOSTNAME}]}}
    c = h.cluster([h.node("n1"), h.node("n2")])
    assert h.place(c, h.pod("x", labels={"app": "other"}, affinity=aff)) == \
        "0/2 nodes are available: 2 node(s) didn't match pod affinity rules."
    assert h.place(c, h.pod("c1", labels={"app": "cache"}, affinity=aff)) in ("n1", "n2")
    c.add_pod(h.pod("c0", node_name="n2", labels={"app": "cache"}))
    assert h.place(c, h.pod("x", labels={"app": "other"}, affinity=aff)) == "n2"


def test_namespace_selector_in_affinity_terms() -> None:
    """namespaceSelector picks pods by their namespace's labels."""
    term = {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": nodeinfo.HOSTNAME,
            "namespaceSelector": {"matchLabels": {"team": "x"}}}
    aff = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    c = h.cluster([h.node("n1"), h.node("n2")],
                  [h.pod("db", ns="other", node_name="n1", labels={"app": "db"}),
                   h.pod("db2", node_name="n2", labels={"app": "db"})])
    assert h.place(c, h.pod("p", affinity=aff)) == "n1"


def test_preferred_pod_affinity_scores() -> None:
    """Preferred affinity pulls a pod next to matching pods."""
    aff = {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": {
        "labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": nodeinfo.HOSTNAME}}]}}
    c = h.cluster([h.node(f"n{i}") for i in range(4)], [h.pod("db", node_name="n2", labels={"app": "db"})])
    assert {h.place(c, h.pod(f"p{i}", affinity=aff)) for i in range(5)} == {"n2"}


def _tsc(key: str, *, when: str = "DoNotSchedule", skew: int = 1, **kw: Any) -> list[dict[str, Any]]:
    return [{"maxSkew": skew, "topologyKey": key, "whenUnsatisfiable": when,
             "labelSelector": {"matchLabels": {"app": "web"}}, **kw}]


def test_hard_topology_spread() -> None:
    """DoNotSchedule keeps zones within maxSkew; nodes without the key fail as missing the label."""
    c = h.cluster([h.node("n1", zone="a"), h.node("n2", zone="b"), h.node("n3")],
                  [h.pod("w1", node_name="n1", labels={"app": "web"})])
    assert h.place(c, h.pod("w2", labels={"app": "web"}, topologySpreadConstraints=_tsc(nodeinfo.ZONE))) == "n2"
    c.add_pod(h.pod("w2", node_name="n2", labels={"app": "web"}))
    c.add_pod(h.pod("w3", node_name="n2", labels={"app": "web"}))
    assert h.place(c, h.pod("w4", labels={"app": "web"}, topologySpreadConstraints=_tsc(nodeinfo.ZONE))) == "n1"
    c.nodes["n1"].set_node(h.node("n1", zone="a", cpu="0"))
    assert h.place(c, h.pod("w4", cpu="1", labels={"app": "web"},
                         topologySpreadConstraints=_tsc(nodeinfo.ZONE))) == (
        "0/3 nodes are available: 1 Insufficient cpu, 1 node(s) didn't match pod topology spread constraints, "
        "1 node(s) didn't match pod topology spread constraints (missing required label).")


def test_min_domains_counts_missing_domains_as_zero() -> None:
    """With fewer domains than minDomains the global minimum is 0."""
    c = h.cluster([h.node("n1", zone="a")], [h.pod("w1", node_name="n1", labels={"app": "web"})])
    p = h.pod("w2", labels={"app": "web"}, topologySpreadConstraints=_tsc(nodeinfo.ZONE, minDomains=2))
    assert h.place(c, p).endswith("1 node(s) didn't match pod topology spread constraints.")
    p = h.pod("w2", labels={"app": "web"}, topologySpreadConstraints=_tsc(nodeinfo.ZONE))
    assert h.place(c, p) == "n1"


def test_soft_spread_and_system_defaults_prefer_empty_nodes() -> None:
    """ScheduleAnyway and the system defaults (from the owning controller's selector) favour less-used domains."""
    c = h.cluster([h.node("n1"), h.node("n2")], [h.pod(f"w{i}", node_name="n1", labels={"app": "web"})
                                                 for i in range(3)])
    p = h.pod("w9", labels={"app": "web"}, topologySpreadConstraints=_tsc(nodeinfo.HOSTNAME, when="ScheduleAnyway"))
    assert h.place(c, p) == "n2"
    sel = spread.default_selector_from([], {"kind": "ReplicaSet", "spec": {"selector": {"matchLabels": {"app": "web"}}}})
    assert sel is not None and sel.matches({"app": "web"})
    assert spread.default_selector_from([], None) is None
