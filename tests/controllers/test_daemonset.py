"""Specification of DaemonSet rules: eligible nodes, manage and rolling-update plans, status."""

from __future__ import annotations

import datetime

import pytest

from pocketkube.controllers import daemonset_util as util

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def node(name: str, labels: dict | None = None, taints: list | None = None) -> dict:
    n: dict = {"metadata": {"name": name, "labels": labels or {}}, "spec": {}}
    if taints:
        n["spec"]["taints"] = taints
    return n


def ds(*, pod_spec: dict | None = None, strategy: dict | None = None, min_ready: int = 0) -> dict:
    spec: dict = {"selector": {"matchLabels": {"app": "d"}},
                  "updateStrategy": strategy or {"type": "RollingUpdate",
                                                 "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}},
                  "template": {"metadata": {"labels": {"app": "d"}},
                               "spec": {"containers": [{"name": "c", "image": "i"}], **(pod_spec or {})}}}
    if min_ready:
        spec["minReadySeconds"] = min_ready
    return {"apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": "d", "namespace": "ns", "uid": "ds-uid", "generation": 3}, "spec": spec}


def pod(name: str, node_name: str, hash_: str = "new", *, ready: bool = True, phase: str = "Running",
        created: str = "2026-01-01T00:00:00Z", bound: bool = True, deleting: bool = False) -> dict:
    p = util.new_pod(ds(), hash_, node_name)
    p["metadata"].update(name=name, creationTimestamp=created)
    if bound:
        p["spec"]["nodeName"] = node_name
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p["status"] = {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    return p


NO_SCHED = {"key": "k", "value": "v", "effect": "NoSchedule"}
NO_EXEC = {"key": "k", "value": "v", "effect": "NoExecute"}


@pytest.mark.parametrize(("node_", "pod_spec", "expected"), [
    (node("n"), {}, (True, True)),
    (node("n", {"disk": "ssd"}), {"nodeSelector": {"disk": "ssd"}}, (True, True)),
    (node("n", {"disk": "hdd"}), {"nodeSelector": {"disk": "ssd"}}, (False, False)),
    (node("n"), {"nodeName": "other"}, (False, False)),
    (node("n", taints=[NO_SCHED]), {}, (False, True)),
    (node("n", taints=[NO_EXEC]), {}, (False, False)),
    (node("n", taints=[NO_EXEC]), {"tolerations": [{"key": "k", "operator": "Exists"}]}, (True, True)),
    (node("n", taints=[NO_SCHED]), {"tolerations": [{"key": "k", "value": "v"}]}, (True, True)),
    (node("n", taints=[NO_SCHED]), {"tolerations": [{"key": "k", "value": "x"}]}, (False, True)),
    (node("n", taints=[{"key": "k", "effect": "PreferNoSchedule"}]), {}, (True, True)),
    (node("n", taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]), {}, (True, True)),
    (node("n", taints=[{"key": "node.kubernetes.io/not-ready", "effect": "NoExecute"}]), {}, (True, True)),
    (node("n", taints=[{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]), {},
     (False, True)),
    (node("n", taints=[{"key": "node.kubernetes.io/network-unavailable", "effect": "NoSchedule"}]),
     {"hostNetwork": True}, (True, True)),
])
def test_should_run(node_: dict, pod_spec: dict, expected: tuple) -> None:
    """Nodes are eligible by name, selector and taints; NoSchedule taints only stop new pods."""
    assert util.should_run(node_, ds(pod_spec=pod_spec)) == expected


def _affinity(*terms: dict) -> dict:
    return {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
                                          {"nodeSelectorTerms": list(terms)}}}}


@pytest.mark.parametrize(("labels", "pod_spec", "expected"), [
    ({"zone": "a"}, _affinity({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a", "b"]}]}), True),
    ({"zone": "c"}, _affinity({"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}), False),
    ({"zone": "c"}, _affinity({"matchExpressions": [{"key": "zone", "operator": "NotIn", "values": ["a"]}]}), True),
    ({}, _affinity({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}), False),
    ({}, _affinity({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}), True),
    ({"cpu": "8"}, _affinity({"matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["4"]}]}), True),
    ({"cpu": "2"}, _affinity({"matchExpressions": [{"key": "cpu", "operator": "Gt", "values": ["4"]}]}), False),
    ({"cpu": "2"}, _affinity({"matchExpressions": [{"key": "cpu", "operator": "Lt", "values": ["4"]}]}), True),
    ({}, _affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n"]}]}), True),
    ({}, _affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["m"]}]}), False),
    ({}, _affinity({}), False),
    ({}, _affinity(), False),
    ({"a": "1"}, _affinity({"matchExpressions": [{"key": "b", "operator": "Exists"}]},
                           {"matchExpressions": [{"key": "a", "operator": "Exists"}]}), True),
])
def test_required_node_affinity(labels: dict, pod_spec: dict, expected: bool) -> None:
    """Required node affinity: terms are ORed, requirements ANDed, empty terms match nothing."""
    assert util.should_run(node("n", labels), ds(pod_spec=pod_spec))[0] is expected


def test_new_pod_targets_its_node_with_tolerations_and_labels() -> None:
    """Daemon pods carry the hash label, the automatic tolerations and a metadata.name affinity for their node."""
    d = ds(pod_spec={"tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                                      "effect": "NoExecute", "tolerationSeconds": 5}]})
    d["metadata"]["annotations"] = {util.GENERATION_ANNOTATION: "4"}
    p = util.new_pod(d, "abc", "n1")
    assert p["metadata"]["generateName"] == "d-"
    assert p["metadata"]["labels"] == {"app": "d", "controller-revision-hash": "abc", "pod-template-generation": "4"}
    assert p["spec"]["affinity"] == _affinity({"matchFields": [{"key": "metadata.name", "operator": "In",
                                                                "values": ["n1"]}]})["affinity"]
    keys = [t["key"] for t in p["spec"]["tolerations"]]
    assert keys == ["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable",
                    "node.kubernetes.io/disk-pressure", "node.kubernetes.io/memory-pressure",
                    "node.kubernetes.io/pid-pressure", "node.kubernetes.io/unschedulable"]
    assert "tolerationSeconds" not in p["spec"]["tolerations"][0]
    assert util.target_node(p) == "n1"
    p["spec"]["nodeName"] = "n2"
    assert util.target_node(p) == "n2"


def test_node_affinity_replacement_keeps_other_affinity() -> None:
    """The node-name term replaces required terms and keeps preferred ones and pod affinity."""
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{}]},
                            "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1}]},
           "podAffinity": {"x": 1}}
    out = util.node_affinity_for(aff, "n")
    assert out["podAffinity"] == {"x": 1}
    assert out["nodeAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"] == [{"weight": 1}]
    assert out["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"][0][
        "matchFields"][0]["values"] == ["n"]


def _manage(d: dict, nodes: list[dict], pods: list[dict], backoff: util.FailedBackoff | None = None,
            mono: float = 0.0) -> util.Sync:
    return util.plan_manage(d, nodes, util.group_by_node(pods), "new", NOW,
                            backoff=backoff or util.FailedBackoff(), mono=mono)


def test_manage_creates_on_missing_nodes_and_deletes_misplaced_pods() -> None:
    """Eligible nodes without a pod get one; pods on nodes that no longer fit are deleted."""
    d = ds(pod_spec={"nodeSelector": {"role": "x"}})
    nodes = [node("a", {"role": "x"}), node("b", {"role": "x"}), node("c")]
    sync = _manage(d, nodes, [pod("p-a", "a"), pod("p-c", "c")])
    assert sync.create_on == ["b"]
    assert [p["metadata"]["name"] for p in sync.delete] == ["p-c"]


def test_manage_keeps_the_oldest_of_duplicates() -> None:
    """Without surge only the oldest running pod on a node stays."""
    pods = [pod("young", "a", created="2026-01-01T00:00:05Z"), pod("old", "a")]
    assert [p["metadata"]["name"] for p in _manage(ds(), [node("a")], pods).delete] == ["young"]


def test_manage_deletes_failed_pods_with_backoff() -> None:
    """A Failed pod is deleted with a FailedDaemonPod warning, then further deletes on that node back off."""
    backoff = util.FailedBackoff()
    failed = pod("f", "a", phase="Failed", ready=False)
    sync = _manage(ds(), [node("a")], [failed], backoff)
    assert [p["metadata"]["name"] for p in sync.delete] == ["f"]
    assert sync.events == [("Warning", "FailedDaemonPod", "Found failed daemon pod ns/f on node a, will try to kill it")]
    again = _manage(ds(), [node("a")], [failed], backoff, mono=0.5)
    assert again.delete == [] and again.requeue_after == 1.0
    assert [p["metadata"]["name"] for p in _manage(ds(), [node("a")], [failed], backoff, mono=1.5).delete] == ["f"]


def test_manage_removes_unscheduled_pods_for_vanished_nodes() -> None:
    """Unbound pods aimed at a node that no longer exists are deleted."""
    sync = _manage(ds(), [node("a")], [pod("p-a", "a"), pod("ghost", "gone", bound=False)])
    assert [p["metadata"]["name"] for p in sync.delete] == ["ghost"]


SURGE = {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}}


def test_manage_with_surge_keeps_old_until_new_is_available() -> None:
    """With surge, an old ready pod stays beside an unready new one, and goes once the new one is available."""
    d = ds(strategy=SURGE)
    old, new = pod("old", "a", "old"), pod("new", "a", ready=False, created="2026-01-01T00:00:05Z")
    assert _manage(d, [node("a")], [old, new]).delete == []
    new = pod("new", "a", created="2026-01-01T00:00:05Z")
    assert [p["metadata"]["name"] for p in _manage(d, [node("a")], [old, new]).delete] == ["old"]


@pytest.mark.parametrize(("max_unavailable", "states", "expected"), [
    (1, ["old", "old", "old"], ["p-a"]),
    (2, ["old", "old", "old"], ["p-a", "p-b"]),
    ("50%", ["old", "old", "old"], ["p-a", "p-b"]),
    (1, ["new-unready", "old", "old"], []),
    (1, ["old-unready", "old", "old"], ["p-a"]),
    (1, ["new", "new", "old"], ["p-c"]),
    (1, ["new", "new", "new"], []),
])
def test_rolling_update_respects_max_unavailable(max_unavailable: object, states: list[str],
                                                 expected: list[str]) -> None:
    """Old pods are deleted for replacement while unavailable pods stay within maxUnavailable."""
    d = ds(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable, "maxSurge": 0}})
    nodes = [node(n) for n in "abc"]
    pods = [pod(f"p-{n}", n, "new" if st.startswith("new") else "old", ready=not st.endswith("unready"))
            for n, st in zip("abc", states, strict=True)]
    sync = util.plan_rolling_update(d, nodes, util.group_by_node(pods), "new", NOW)
    assert [p["metadata"]["name"] for p in sync.delete] == expected and sync.create_on == []


def test_rolling_update_with_surge_creates_new_pods_first() -> None:
    """With maxSurge, new pods are created beside old ones (unavailable old ones first), up to the surge."""
    d = ds(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}})
    nodes = [node(n) for n in "abc"]
    pods = [pod("p-a", "a", "old"), pod("p-b", "b", "old", ready=False), pod("p-c", "c", "old")]
    sync = util.plan_rolling_update(d, nodes, util.group_by_node(pods), "new", NOW)
    assert sync.create_on == ["b", "a"] and sync.delete == []
    pods.append(pod("n-a", "a", created="2026-01-01T00:00:05Z"))
    sync = util.plan_rolling_update(d, nodes, util.group_by_node(pods), "new", NOW)
    assert [p["metadata"]["name"] for p in sync.delete] == ["p-a"]


def test_desired_counts_fall_back_to_one_unavailable() -> None:
    """maxUnavailable and maxSurge both zero (after rounding) still allow one unavailable pod."""
    d = ds(strategy={"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "0%", "maxSurge": 0}})
    assert util.desired_counts(d, [node("a"), node("b")]) == (0, 1, 2)


def test_status_counts() -> None:
    """Status counts desired, scheduled, misscheduled, ready, updated and available pods, oldest pod first."""
    d = ds(pod_spec={"nodeSelector": {"run": "yes"}}, min_ready=30)
    nodes = [node("a", {"run": "yes"}), node("b", {"run": "yes"}), node("c", {"run": "yes"}), node("x")]
    pods = [pod("p-a", "a"), pod("p-b", "b", "old", ready=False), pod("p-x", "x")]
    pods[0]["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T11:59:50Z"
    status = util.compute_status(d, nodes, util.group_by_node(pods), "new", NOW)
    assert status == {"desiredNumberScheduled": 3, "currentNumberScheduled": 2, "numberMisscheduled": 1,
                      "numberReady": 1, "updatedNumberScheduled": 1, "numberAvailable": 0,
                      "numberUnavailable": 3}
    d["status"] = {**status, "observedGeneration": 3}
    assert util.status_unchanged(d, status)
    d["metadata"]["generation"] = 4
    assert not util.status_unchanged(d, status)
