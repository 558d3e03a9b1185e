"""End to end: scheduler features of issue 3 test_scheduler.py leaves out, on Nodes made from manifests."""

from __future__ import annotations

import collections
import collections.abc
import json
import os
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod

ZONES = {"g1": "a", "g2": "b", "g3": "c"}

NODE = """
apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels: {{kubernetes.io/hostname: {name}, topology.kubernetes.io/zone: {zone}}}
spec:
  taints: {taints}
status:
  capacity: {{cpu: "2", memory: 4Gi, pods: "{pods}"}}
  allocatable: {{cpu: "2", memory: 4Gi, pods: "{pods}"}}
"""

# g4 takes one pod and only pods that tolerate it: the other tests see it as "untolerated taint {small: yes}".
SMALL_TAINT = '[{key: small, value: "yes", effect: NoSchedule}]'
PREEMPTION_TAIL = ("preemption: 0/4 nodes are available: 1 Preemption is not helpful for scheduling, "
                   "3 No preemption victims found for incoming pod.")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """A cluster whose node controller leaves these kubelet-less Nodes alone for the length of the module."""
    old = os.environ.get("POCKETKUBE_NODE_MONITOR_GRACE_SECONDS")
    os.environ["POCKETKUBE_NODE_MONITOR_GRACE_SECONDS"] = "3600"
    try:
        c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk-sched"))).start()
    finally:
        if old is None:
            del os.environ["POCKETKUBE_NODE_MONITOR_GRACE_SECONDS"]
        else:
            os.environ["POCKETKUBE_NODE_MONITOR_GRACE_SECONDS"] = old
    try:
        nodes = [NODE.format(name=n, zone=z, taints="[]", pods=110) for n, z in ZONES.items()]
        nodes.append(NODE.format(name="g4", zone="d", taints=SMALL_TAINT, pods=1))
        c.kubectl("apply", "-f", "-", input="\n---\n".join(nodes))
        yield c
    finally:
        c.stop()


def _pod(name: str, ns: str, *, labels: dict[str, str] | None = None, cpu: str = "", **spec: Any) -> dict[str, Any]:
    """A pod of busybox in ns whose spec carries the given fields."""
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    if cpu:
        container["resources"] = {"requests": {"cpu": cpu}}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels or {"app": name}},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [container], **spec}}


def _apply(c: cluster_mod.Cluster, *objs: dict[str, Any]) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def _placement(c: cluster_mod.Cluster, ns: str) -> dict[str, str]:
    return {p["metadata"]["name"]: p["spec"].get("nodeName", "") for p in c.json("-n", ns, "get", "pods")["items"]}


def _bound(c: cluster_mod.Cluster, ns: str, count: int, *, prefix: str = "") -> dict[str, str]:
    """The placement of ns's pods named prefix... once exactly count of them are bound."""
    def check() -> Any:
        placed = {k: v for k, v in _placement(c, ns).items() if k.startswith(prefix)}
        return sum(1 for n in placed.values() if n) == count and placed
    return cluster_mod.eventually(check, what=f"{count} pods bound")


def _unschedulable(c: cluster_mod.Cluster, ns: str, pod: str) -> str:
    def message() -> str:
        conds = c.json("-n", ns, "get", "pod", pod)["status"].get("conditions") or []
        return next((x.get("message", "") for x in conds if x["type"] == "PodScheduled" and x["status"] == "False"), "")
    return cluster_mod.eventually(message, what=f"{pod} to be found unschedulable")


def test_hard_anti_affinity_spreads_then_refuses(cluster: cluster_mod.Cluster) -> None:
    """Required anti-affinity on the hostname puts one replica per node; the fourth is unschedulable with kube's words."""
    c, ns = cluster, "anti"
    c.kubectl("create", "namespace", ns)
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    _apply(c, *[_pod(f"anti-{i}", ns, labels={"app": "anti"}, affinity=anti) for i in range(4)])
    placed = _bound(c, ns, 3)
    assert sorted(n for n in placed.values() if n) == ["g1", "g2", "g3"]
    (pending,) = [name for name, n in placed.items() if not n]
    assert _unschedulable(c, ns, pending) == (
        "0/4 nodes are available: 1 node(s) had untolerated taint {small: yes}, 3 node(s) didn't match pod "
        "anti-affinity rules. " + PREEMPTION_TAIL)
    c.kubectl("delete", "namespace", ns, "--wait=false")


def test_topology_spread_balances_zones(cluster: cluster_mod.Cluster) -> None:
    """maxSkew 1 over zones: two per zone when tainted g4 is left out (Honor), one per zone while its zone counts."""
    c, ns = cluster, "spread"
    c.kubectl("create", "namespace", ns)

    def spread(app: str, policy: str) -> list[dict[str, Any]]:
        return [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                 "nodeTaintsPolicy": policy, "labelSelector": {"matchLabels": {"app": app}}}]
    _apply(c, *[_pod(f"honor-{i}", ns, labels={"app": "honor"}, topologySpreadConstraints=spread("honor", "Honor"))
                for i in range(6)])
    placed = _bound(c, ns, 6)
    assert collections.Counter(placed.values()) == {"g1": 2, "g2": 2, "g3": 2}
    # By default (Ignore) zone d counts with its zero pods, so a second pod in any zone would skew by 2.
    _apply(c, *[_pod(f"ignore-{i}", ns, labels={"app": "ignore"}, topologySpreadConstraints=spread("ignore", "Ignore"))
                for i in range(4)])
    ignore = _bound(c, ns, 3, prefix="ignore")
    (pending,) = [name for name, n in ignore.items() if not n]
    assert _unschedulable(c, ns, pending).startswith(
        "0/4 nodes are available: 1 node(s) had untolerated taint {small: yes}, 3 node(s) didn't match pod topology "
        "spread constraints. ")
    c.kubectl("delete", "namespace", ns, "--wait=false")


def test_pod_affinity_and_preferences(cluster: cluster_mod.Cluster) -> None:
    """Required pod affinity follows its peer; preferred node affinity and soft anti-affinity steer the choice."""
    c, ns = cluster, "affinity"
    c.kubectl("create", "namespace", ns)
    _apply(c, _pod("leader", ns, nodeSelector={"kubernetes.io/hostname": "g2"}))
    cluster_mod.eventually(lambda: _placement(c, ns).get("leader") == "g2")
    follow = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "leader"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}
    prefer = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["c"]}]}}]}}
    avoid = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "leader"}},
                                            "topologyKey": "kubernetes.io/hostname"}}]},
             "nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                 {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In",
                                        "values": ["a", "b"]}]}]}}}
    _apply(c, _pod("follower", ns, affinity=follow), _pod("prefers-c", ns, affinity=prefer),
           _pod("avoids-leader", ns, affinity=avoid))
    placed = _bound(c, ns, 4)
    assert (placed["follower"], placed["prefers-c"], placed["avoids-leader"]) == ("g2", "g3", "g1")
    lonely = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "nobody"}}, "topologyKey": "kubernetes.io/hostname"}]}}
    _apply(c, _pod("lonely", ns, affinity=lonely))
    assert _unschedulable(c, ns, "lonely") == (
        "0/4 nodes are available: 1 node(s) had untolerated taint {small: yes}, 3 node(s) didn't match pod "
        "affinity rules. preemption: 0/4 nodes are available: 4 Preemption is not helpful for scheduling.")
    c.kubectl("delete", "namespace", ns, "--wait=false")


def test_prefer_no_schedule_and_no_execute_taints(cluster: cluster_mod.Cluster) -> None:
    """PreferNoSchedule steers pods away when there is a choice; an untolerated NoExecute taint keeps them off."""
    c, ns = cluster, "taints"
    c.kubectl("create", "namespace", ns)
    c.kubectl("taint", "node", "g1", "soft=yes:PreferNoSchedule")
    c.kubectl("taint", "node", "g3", "hard=yes:NoExecute")
    try:
        ab = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]}]}]}}}
        _apply(c, *[_pod(f"ab-{i}", ns, affinity=ab) for i in range(3)])
        placed = _bound(c, ns, 3)
        assert set(placed.values()) == {"g2"}
        _apply(c, _pod("on-g3", ns, nodeSelector={"kubernetes.io/hostname": "g3"}),
               _pod("tolerant", ns, nodeSelector={"kubernetes.io/hostname": "g3"},
                    tolerations=[{"key": "hard", "operator": "Exists", "effect": "NoExecute"}]))
        assert _unschedulable(c, ns, "on-g3") == (
            "0/4 nodes are available: 1 node(s) had untolerated taint {hard: yes}, 1 node(s) had untolerated taint "
            "{small: yes}, 2 node(s) didn't match Pod's node affinity/selector. preemption: 0/4 nodes are available: "
            "4 Preemption is not helpful for scheduling.")
        cluster_mod.eventually(lambda: _placement(c, ns).get("tolerant") == "g3")
    finally:
        c.kubectl("taint", "node", "g1", "soft-")
        c.kubectl("taint", "node", "g3", "hard-")
        c.kubectl("delete", "namespace", ns, "--wait=false")


def test_pods_count_and_preemption_by_priority(cluster: cluster_mod.Cluster) -> None:
    """A full node says "Too many pods"; a high-priority pod preempts a lower one and is bound in its place."""
    c, ns = cluster, "prio"
    c.kubectl("create", "namespace", ns)
    small: dict[str, Any] = {"nodeSelector": {"kubernetes.io/hostname": "g4"},
             "tolerations": [{"key": "small", "operator": "Exists", "effect": "NoSchedule"}]}
    _apply(c, _pod("first", ns, **small))
    cluster_mod.eventually(lambda: _placement(c, ns).get("first") == "g4")
    _apply(c, _pod("second", ns, **small))
    assert _unschedulable(c, ns, "second") == (
        "0/4 nodes are available: 1 Too many pods, 3 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/4 nodes are available: 1 No preemption victims found for incoming pod, "
        "3 Preemption is not helpful for scheduling.")
    c.kubectl("delete", "pod", "-n", ns, "second")
    c.kubectl("create", "priorityclass", "gaps-high", "--value=1000")
    _apply(c, _pod("vip", ns, priorityClassName="gaps-high", **small))
    cluster_mod.eventually(lambda: _placement(c, ns) == {"vip": "g4"}, timeout=20, what="vip bound in first's place")
    events = c.kubectl("-n", ns, "get", "events", "-o", "custom-columns=R:.reason,O:.involvedObject.name,M:.message",
                       "--no-headers").stdout
    uid = c.json("-n", ns, "get", "pod", "vip")["metadata"]["uid"]
    assert any(line.split()[:2] == ["Preempted", "first"] and line.endswith(f"Preempted by pod {uid} on node g4")
               for line in events.splitlines()), events
    c.kubectl("delete", "namespace", ns, "--wait=false")
