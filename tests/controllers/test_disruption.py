"""Specification of the disruption controller: PodDisruptionBudget status as kube-controller-manager computes it."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.controllers import disruption
from pocketkube.runtime import controller

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
NOW = "2026-01-01T00:00:00Z"


def pod(name: str, *, ready: bool = True, owner: str = "", deleting: bool = False, ns: str = "default",
        labels: dict[str, str] | None = None, disruption_target: str = "", phase: str = "Running") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels if labels is not None else {"app": "web"}}
    if owner:
        kind, _, uid = owner.partition(":")
        meta["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": kind, "name": uid, "uid": uid,
                                    "controller": True}]
    if deleting:
        meta["deletionTimestamp"] = NOW
    conds = [{"type": "Ready", "status": "True" if ready else "False"}]
    if disruption_target:
        conds.append({"type": "DisruptionTarget", "status": "True", "reason": disruption_target,
                      "lastTransitionTime": NOW})
    return {"metadata": meta, "spec": {"nodeName": "n1"}, "status": {"phase": phase, "conditions": conds}}


def pdb(*, min_available: Any = None, max_unavailable: Any = None, status: dict[str, Any] | None = None,
        generation: int = 1, selector: Any = "default") -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}} if selector == "default" else selector}
    if min_available is not None:
        spec["minAvailable"] = min_available
    if max_unavailable is not None:
        spec["maxUnavailable"] = max_unavailable
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "web", "namespace": "default", "generation": generation, "resourceVersion": "7",
                         "uid": "pdb-uid"},
            "spec": spec, "status": status or {}}


@pytest.mark.parametrize("value,total,up,want", [
    (2, 10, True, 2),
    ("50%", 3, True, 2),
    ("50%", 3, False, 1),
    ("0%", 5, True, 0),
    ("100%", 4, True, 4),
    ("34%", 3, True, 2),
])
def test_scaled_value(value, total, up, want):
    """Ints stand as they are; percentages scale against the total, rounded up for budgets."""
    assert disruption.scaled_value(value, total, round_up=up) == want


@pytest.mark.parametrize("value,message", [
    ("5", "invalid value for IntOrString: invalid type: string is not a percentage"),
    ("x%", 'invalid value "x%": strconv.Atoi: parsing "x": invalid syntax'),
])
def test_scaled_value_errors(value, message):
    """A string that is not a percentage is a sync error worded as intstr's."""
    with pytest.raises(disruption.SyncError, match="^" + message.replace("(", r"\(") + "$"):
        disruption.scaled_value(value, 3, round_up=True)


RS = {"rs1": disruption.Scale("rs1", 3), "rs2": disruption.Scale("rs2", 2)}
DEP = {"rs1": disruption.Scale("dep", 4), "rs2": disruption.Scale("dep", 4)}


@pytest.mark.parametrize("budget,pods,scales,want", [
    # An integer minAvailable counts the pods themselves, controllers or not.
    (pdb(min_available=2), [pod("a"), pod("b")], {}, (2, 2, [])),
    (pdb(min_available=5), [], {}, (0, 5, [])),
    # Percentages and maxUnavailable are against the controllers' scale, each controller once.
    (pdb(min_available="50%"), [pod("a", owner="ReplicaSet:rs1"), pod("b", owner="ReplicaSet:rs1")], RS, (3, 2, [])),
    (pdb(max_unavailable=1), [pod("a", owner="ReplicaSet:rs1"), pod("b", owner="ReplicaSet:rs2")], RS, (5, 4, [])),
    (pdb(max_unavailable="25%"), [pod("a", owner="ReplicaSet:rs1")], RS, (3, 2, [])),
    (pdb(max_unavailable=10), [pod("a", owner="ReplicaSet:rs1")], RS, (3, 0, [])),
    # Two ReplicaSets of one Deployment count the Deployment's replicas once.
    (pdb(max_unavailable=1), [pod("a", owner="ReplicaSet:rs1"), pod("b", owner="ReplicaSet:rs2")], DEP, (4, 3, [])),
    # Pods without a controller are reported, not counted.
    (pdb(max_unavailable=1), [pod("a"), pod("b", owner="ReplicaSet:rs1")], RS, (3, 2, ["a"])),
    (pdb(), [pod("a")], {}, (0, 0, [])),
])
def test_expected_counts(budget, pods, scales, want):
    """expectedPods and desiredHealthy follow getExpectedPodCount."""
    assert disruption.expected_counts(budget, pods, scales) == want


def test_expected_counts_missing_controller():
    """A pod whose controller cannot be found makes the budget fail to sync, naming the pod."""
    with pytest.raises(disruption.SyncError, match='found no controllers for pod "a"'):
        disruption.expected_counts(pdb(max_unavailable=1), [pod("a", owner="ReplicaSet:gone")], {"gone": None})


@pytest.mark.parametrize("budget,want", [
    (pdb(min_available=1), False),
    (pdb(min_available="10%"), True),
    (pdb(max_unavailable=0), True),
])
def test_needs_scale(budget, want):
    """Only budgets relative to a workload's size look its controllers up."""
    assert disruption.needs_scale(budget) is want


def test_pods_for_selects_by_namespace_and_labels():
    """A budget covers the pods of its own namespace its selector matches; a nil selector covers none."""
    pods = [pod("a"), pod("b", ns="other"), pod("c", labels={"app": "db"})]
    assert [p["metadata"]["name"] for p in disruption.pods_for(pdb(), pods)] == ["a"]
    assert disruption.pods_for(pdb(selector=None), pods) == []
    assert [p["metadata"]["name"] for p in disruption.pods_for(pdb(selector={}), pods)] == ["a", "c"]


@pytest.mark.parametrize("pods,disrupted,want", [
    ([pod("a"), pod("b"), pod("c", ready=False)], {}, 2),
    ([pod("a"), pod("b", deleting=True)], {}, 1),
    # An approved eviction in flight no longer counts as healthy, until the deletion timeout passes.
    ([pod("a"), pod("b")], {"b": "2025-12-31T23:59:00Z"}, 1),
    ([pod("a"), pod("b")], {"b": "2025-12-31T23:57:00Z"}, 2),
])
def test_count_healthy(pods, disrupted, want):
    """currentHealthy counts ready pods that are neither being deleted nor about to be."""
    assert disruption.count_healthy(pods, disrupted, T0) == want


def test_disrupted_pods_expire_and_recheck():
    """Entries stay until DeletionTimeout, asking for a recheck then; late ones are dropped as overdue."""
    budget = pdb(status={"disruptedPods": {"a": "2025-12-31T23:59:00Z", "b": "2025-12-31T23:50:00Z",
                                           "c": "2025-12-31T23:59:30Z", "gone": "2025-12-31T23:59:30Z"}})
    pods = [pod("a"), pod("b"), pod("c", deleting=True)]
    kept, recheck, overdue = disruption.disrupted_pods(pods, budget, T0)
    assert kept == {"a": "2025-12-31T23:59:00Z"}
    assert recheck == T0 + datetime.timedelta(seconds=60)
    assert overdue == ["b"]


def _cond(status: str, reason: str, when: str = NOW, gen: int = 1) -> dict[str, Any]:
    return {"type": "DisruptionAllowed", "status": status, "observedGeneration": gen, "lastTransitionTime": when,
            "reason": reason, "message": ""}


@pytest.mark.parametrize("current,desired,expected,old,want", [
    (3, 2, 3, {}, {"observedGeneration": 1, "disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2,
                   "expectedPods": 3, "conditions": [_cond("True", "SufficientPods")]}),
    (2, 2, 3, {}, {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 2, "desiredHealthy": 2,
                   "expectedPods": 3, "conditions": [_cond("False", "InsufficientPods")]}),
    # No expected pods yet: nothing may be disrupted, whatever the arithmetic says.
    (0, 0, 0, {}, {"observedGeneration": 1, "disruptionsAllowed": 0, "currentHealthy": 0, "desiredHealthy": 0,
                   "expectedPods": 0, "conditions": [_cond("False", "InsufficientPods")]}),
    # The transition time moves only when the condition's status does.
    (3, 1, 3, {"disruptionsAllowed": 1, "currentHealthy": 2, "desiredHealthy": 1, "expectedPods": 3,
               "observedGeneration": 1, "conditions": [_cond("True", "SufficientPods", "2025-01-01T00:00:00Z")]},
     {"observedGeneration": 1, "disruptionsAllowed": 2, "currentHealthy": 3, "desiredHealthy": 1, "expectedPods": 3,
      "conditions": [_cond("True", "SufficientPods", "2025-01-01T00:00:00Z")]}),
    # Already right: no write.
    (3, 2, 3, {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3,
               "observedGeneration": 1, "conditions": [_cond("True", "SufficientPods")]}, None),
])
def test_plan_status(current, desired, expected, old, want):
    """The status is written only when a count, the generation or the DisruptionAllowed condition is stale."""
    assert disruption.plan_status(pdb(status=old), current=current, desired=desired, expected=expected,
                                  disrupted={}, now=NOW) == want


def test_plan_status_new_generation_rewrites():
    """A spec change (new generation) is always acknowledged through observedGeneration."""
    old = {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3,
           "observedGeneration": 1, "conditions": [_cond("True", "SufficientPods")]}
    out = disruption.plan_status(pdb(status=old, generation=2), current=3, desired=2, expected=3, disrupted={},
                                 now=NOW)
    assert out is not None and out["observedGeneration"] == 2 and out["conditions"][0]["observedGeneration"] == 2


def test_fail_safe_status():
    """A budget that cannot be computed allows no disruption and says why (SyncFailed)."""
    old = {"disruptionsAllowed": 2, "observedGeneration": 1, "conditions": [_cond("True", "SufficientPods")]}
    out = disruption.fail_safe_status(pdb(status=old), 'found no controllers for pod "a"', NOW)
    assert out["disruptionsAllowed"] == 0
    assert out["conditions"] == [{"type": "DisruptionAllowed", "status": "False", "observedGeneration": 1,
                                  "lastTransitionTime": NOW, "reason": "SyncFailed",
                                  "message": 'found no controllers for pod "a"'}]


@pytest.mark.parametrize("p,want", [
    (pod("a"), None),
    (pod("a", disruption_target="EvictionByEvictionAPI"), 120.0),
    (pod("a", disruption_target="EvictionByEvictionAPI", deleting=True), None),
    (pod("a", disruption_target="EvictionByEvictionAPI", phase="Failed"), None),
    (pod("a", disruption_target="TerminationByKubelet"), None),
])
def test_stale_disruption_wait(p, want):
    """A DisruptionTarget nobody acted on goes stale after two minutes; kubelet's and finished pods' never do."""
    assert disruption.stale_disruption_wait(p, T0) == want


class FakeClient:
    """Just what the controller calls: get by path, status updates, events and patches recorded."""

    def __init__(self, objects: dict[str, dict[str, Any]] | None = None) -> None:
        self.objects = objects or {}
        self.status_updates: list[dict[str, Any]] = []
        self.patches: list[tuple[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.conflict = False

    async def get(self, path: str, *, metadata_only: bool = False) -> dict[str, Any]:
        if path not in self.objects:
            raise errors.NotFound(f"{path} not found")
        return self.objects[path]

    async def update_status(self, gvr: Any, body: dict[str, Any]) -> dict[str, Any]:
        if self.conflict:
            raise errors.Conflict.modified("poddisruptionbudgets", "policy", body["metadata"]["name"])
        self.status_updates.append(body)
        return body

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        self.events.append(body)
        return body

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge", metadata_only: bool = False) -> Any:
        self.patches.append((path, body))
        return {}

    async def discover(self) -> Any:
        raise AssertionError("not expected")


def _controller(client: FakeClient, budgets: list[dict[str, Any]], pods: list[dict[str, Any]]):
    ctl = disruption.DisruptionController(client, clock=clock.FakeClock(T0))  # type: ignore[arg-type]
    ctl.pdbs._replace(budgets)
    ctl.pods._replace(pods)
    return ctl


async def test_reconcile_writes_status_from_scale_subresource():
    """A maxUnavailable budget reads its Deployment's scale (through the ReplicaSet) and writes the status."""
    rs = {"metadata": {"name": "rs1", "uid": "rs1", "ownerReferences": [
        {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "dep", "controller": True}]}}
    client = FakeClient({
        "/apis/apps/v1/namespaces/default/replicasets/rs1": rs,
        "/apis/apps/v1/namespaces/default/deployments/web/scale": {"metadata": {"uid": "dep"},
                                                                   "spec": {"replicas": 4}},
    })
    ctl = _controller(client, [pdb(max_unavailable="50%")],
                      [pod("a", owner="ReplicaSet:rs1"), pod("b", owner="ReplicaSet:rs1"),
                       pod("c", owner="ReplicaSet:rs1", ready=False)])
    assert await ctl.reconcile("default/web") == controller.DONE
    status = client.status_updates[-1]["status"]
    assert (status["expectedPods"], status["desiredHealthy"], status["currentHealthy"],
            status["disruptionsAllowed"]) == (4, 2, 2, 0)


async def test_reconcile_fail_safe_when_controller_missing():
    """Pods whose controller is gone leave the budget at zero allowed with a SyncFailed condition, retried."""
    client = FakeClient()
    ctl = _controller(client, [pdb(max_unavailable=1, status={"disruptionsAllowed": 1})],
                      [pod("a", owner="StatefulSet:ss")])
    assert await ctl.reconcile("default/web") == controller.REQUEUE
    status = client.status_updates[-1]["status"]
    assert status["disruptionsAllowed"] == 0
    assert status["conditions"][0]["reason"] == "SyncFailed"
    assert status["conditions"][0]["message"] == 'found no controllers for pod "a"'
    assert any(e["reason"] == "CalculateExpectedPodCountFailed" for e in client.events)


async def test_reconcile_requeues_for_inflight_evictions():
    """An eviction recorded in disruptedPods is looked at again when its deletion timeout ends."""
    client = FakeClient()
    ctl = _controller(client, [pdb(min_available=1, status={"disruptedPods": {"a": "2025-12-31T23:59:30Z"}})],
                      [pod("a"), pod("b")])
    out = await ctl.reconcile("default/web")
    assert out.kind == "requeue_after" and out.after == pytest.approx(90.0)
    status = client.status_updates[-1]["status"]
    assert status["disruptedPods"] == {"a": "2025-12-31T23:59:30Z"}
    assert status["currentHealthy"] == 1 and status["disruptionsAllowed"] == 0


async def test_reconcile_conflict_requeues():
    """A stale cache (409 on the status write) sends the budget round again."""
    client = FakeClient()
    client.conflict = True
    ctl = _controller(client, [pdb(min_available=1)], [pod("a"), pod("b")])
    assert await ctl.reconcile("default/web") == controller.REQUEUE


async def test_pod_events_enqueue_covering_budgets_and_stale_pods():
    """A pod change wakes the budgets selecting it, and a stale DisruptionTarget pod gets its own key."""
    ctl = _controller(FakeClient(), [pdb(min_available=1)], [])
    keys = ctl._pod_keys("ADDED", None, pod("a", disruption_target="EvictionByEvictionAPI"))
    assert keys == ["default/web", (disruption.STALE, "default/a")]
    assert ctl._pod_keys("ADDED", None, pod("b", labels={"app": "db"})) == []


async def test_stale_condition_is_withdrawn():
    """After the timeout the DisruptionTarget condition is set False through the pod's status."""
    client = FakeClient()
    p = pod("a", disruption_target="EvictionByEvictionAPI")
    ctl = _controller(client, [], [p])
    out = await ctl.reconcile((disruption.STALE, "default/a"))
    assert out.kind == "requeue_after" and out.after == 120.0
    ctl.clock.advance(121)  # type: ignore[attr-defined]
    assert await ctl.reconcile((disruption.STALE, "default/a")) == controller.DONE
    path, body = client.patches[-1]
    assert path == "/api/v1/namespaces/default/pods/a/status"
    assert body["status"]["conditions"][0]["status"] == "False"
