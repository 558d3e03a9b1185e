"""Specification of the StatefulSet plan: ordered creation, scale-down, updates, claims and status."""

from __future__ import annotations

import datetime

import pytest

from pocketkube.controllers import history
from pocketkube.controllers import statefulset_util as util

NOW = datetime.datetime(2026, 1, 1, 12, 0, 0, tzinfo=datetime.UTC)


def sset(replicas: int = 3, *, policy: str = "OrderedReady", strategy: dict | None = None,
         claims: bool = False, retention: tuple[str, str] = ("Retain", "Retain"), image: str = "v1",
         status: dict | None = None, start: int = 0, min_ready: int = 0) -> dict:
    spec: dict = {"replicas": replicas, "serviceName": "svc", "podManagementPolicy": policy,
                  "selector": {"matchLabels": {"app": "web"}},
                  "updateStrategy": strategy or {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}},
                  "persistentVolumeClaimRetentionPolicy": {"whenScaled": retention[0], "whenDeleted": retention[1]},
                  "template": {"metadata": {"labels": {"app": "web"}},
                               "spec": {"containers": [{"name": "c", "image": image}]}}}
    if claims:
        spec["volumeClaimTemplates"] = [{"metadata": {"name": "data"},
                                         "spec": {"resources": {"requests": {"storage": "1Gi"}}}}]
    if start:
        spec["ordinals"] = {"start": start}
    if min_ready:
        spec["minReadySeconds"] = min_ready
    return {"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "web", "namespace": "ns", "uid": "set-uid", "generation": 2},
            "spec": spec, "status": status or {}}


def revision(s: dict, number: int = 1) -> dict:
    data = history.template_patch(s)
    return history.new_revision(s, data, number, collision_count=0)


def pod(ordinal: int, rev: dict, *, phase: str = "Running", ready: bool = True, deleting: bool = False,
        name: str | None = None) -> dict:
    p = util.new_pod(util.apply_revision(sset(), rev), ordinal, rev["metadata"]["name"])
    if name:
        p["metadata"]["name"] = name
    p["metadata"]["uid"] = f"pod-uid-{ordinal}"
    if deleting:
        p["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p["status"] = {"phase": phase,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
    return p


def summary(plan: util.Plan) -> list[str]:
    return [f"{a.kind} {a.pod['metadata']['name']}" for step in plan.steps for a in step]


def run(s: dict, pods: list[dict], *, current: dict | None = None, update: dict | None = None,
        claims: dict | None = None) -> util.Plan:
    rev = revision(s)
    return util.plan(s, pods, current or rev, update or rev, 0, claims or {}, NOW)


V1 = revision(sset())
V2 = revision(sset(image="v2"), 2)


@pytest.mark.parametrize(("name", "expected"), [
    ("web-0", ("web", 0)), ("my-web-12", ("my-web", 12)), ("web", ("", -1)), ("web-x", ("", -1)),
    ("web-99999999999", ("", -1)),
])
def test_parent_and_ordinal(name: str, expected: tuple) -> None:
    """Pod names split into parent and ordinal at the last dash; anything else has no ordinal."""
    assert util.parent_and_ordinal({"metadata": {"name": name}}) == expected


def test_new_pod_identity_storage_and_revision() -> None:
    """A pod gets its stable name, hostname, subdomain, index labels, claim volumes and revision label."""
    p = util.new_pod(sset(claims=True), 2, "web-abc")
    assert p["metadata"]["name"] == "web-2" and "generateName" not in p["metadata"]
    assert p["metadata"]["labels"] == {"app": "web", util.POD_NAME_LABEL: "web-2", util.POD_INDEX_LABEL: "2",
                                       "controller-revision-hash": "web-abc"}
    assert p["spec"]["hostname"] == "web-2" and p["spec"]["subdomain"] == "svc"
    assert p["spec"]["volumes"] == [{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}}]
    assert p["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"


def test_claims_carry_selector_labels_and_names() -> None:
    """Claims are named <template>-<set>-<ordinal> and labelled with the selector's matchLabels."""
    [(tpl, claim)] = util.claims_for(sset(claims=True), 1)
    assert tpl == "data" and claim["metadata"] == {"name": "data-web-1", "namespace": "ns",
                                                     "labels": {"app": "web"}}
    assert claim["kind"] == "PersistentVolumeClaim"


@pytest.mark.parametrize(("policy", "ready", "expected"), [
    ("OrderedReady", [], ["create web-0"]),
    ("OrderedReady", [True], ["create web-1"]),
    ("OrderedReady", [False], []),
    ("OrderedReady", [True, True, True], []),
    ("Parallel", [], ["create web-0", "create web-1", "create web-2"]),
    ("Parallel", [False], ["create web-1", "create web-2"]),
])
def test_scale_up_order(policy: str, ready: list[bool], expected: list[str]) -> None:
    """OrderedReady creates the next ordinal only once every earlier one is Running and Ready; Parallel at once."""
    s = sset(policy=policy)
    pods = [pod(i, V1, ready=r) for i, r in enumerate(ready)]
    assert summary(run(s, pods)) == expected


@pytest.mark.parametrize(("policy", "pods_state", "expected"), [
    ("OrderedReady", [True] * 5, ["delete web-4"]),
    ("OrderedReady", [True, True, True, True, "deleting"], []),
    ("OrderedReady", [True, False, True, True, True], []),
    ("OrderedReady", [True, True, True, True, False], ["delete web-4"]),
    ("Parallel", [True] * 5, ["delete web-4", "delete web-3"]),
])
def test_scale_down_from_the_highest_ordinal(policy: str, pods_state: list, expected: list[str]) -> None:
    """Scale-down removes the highest ordinal first, one at a time, after its predecessors are healthy."""
    s = sset(3, policy=policy)
    pods = [pod(i, V1, ready=st is True, deleting=st == "deleting") for i, st in enumerate(pods_state)]
    assert summary(run(s, pods)) == expected


def test_failed_pod_is_recreated_with_an_event() -> None:
    """A Failed replica is deleted and created again, with RecreatingFailedPod on the set."""
    p = run(sset(), [pod(0, V1), pod(1, V1, phase="Failed", ready=False)])
    assert summary(p) == ["delete web-1", "create web-1"]
    assert p.steps[0][0].event == ("Warning", "RecreatingFailedPod", "StatefulSet ns/web is recreating failed Pod web-1")


@pytest.mark.parametrize(("partition", "ready", "expected"), [
    (0, [True, True, True], ["delete web-2"]),
    (2, [True, True, True], ["delete web-2"]),
    (3, [True, True, True], []),
])
def test_rolling_update_from_the_highest_ordinal_down_to_the_partition(partition: int, ready: list[bool],
                                                                       expected: list[str]) -> None:
    """RollingUpdate deletes the highest pod not at the update revision, never below the partition."""
    s = sset(strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": partition}}, image="v2")
    pods = [pod(i, V1) for i in range(3)]
    p = util.plan(s, pods, V1, V2, 0, {}, NOW)
    assert summary(p) == expected
    assert p.status["currentReplicas"] == 3 - len(expected)


def test_rolling_update_waits_for_the_updated_pod() -> None:
    """The next pod is updated only once the previous updated one is healthy again."""
    s = sset(image="v2")
    pods = [pod(0, V1), pod(1, V1), pod(2, V2, ready=False)]
    assert summary(util.plan(s, pods, V1, V2, 0, {}, NOW)) == []
    pods[2] = pod(2, V2)
    assert summary(util.plan(s, pods, V1, V2, 0, {}, NOW)) == ["delete web-1"]


def test_partitioned_pods_are_recreated_at_the_current_revision() -> None:
    """A missing pod below the partition comes back at the current revision, above it at the update one."""
    s = sset(strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}, image="v2")
    p = util.plan(s, [], V1, V2, 0, {}, NOW)
    assert p.steps[0][0].pod["metadata"]["labels"]["controller-revision-hash"] == V1["metadata"]["name"]
    assert p.steps[0][0].pod["spec"]["containers"][0]["image"] == "v1"
    s["spec"]["podManagementPolicy"] = "Parallel"
    images = [a.pod["spec"]["containers"][0]["image"] for step in util.plan(s, [], V1, V2, 0, {}, NOW).steps
              for a in step]
    assert images == ["v1", "v1", "v2"]


def test_on_delete_never_deletes_for_updates() -> None:
    """OnDelete leaves old pods alone; only pods deleted by the user come back updated."""
    s = sset(strategy={"type": "OnDelete"}, image="v2")
    pods = [pod(0, V1), pod(1, V1)]
    p = util.plan(s, pods, V1, V2, 0, {}, NOW)
    assert summary(p) == ["create web-2"]
    assert p.steps[0][0].pod["spec"]["containers"][0]["image"] == "v2"


def test_max_unavailable_updates_several_at_once() -> None:
    """With maxUnavailable set, up to that many healthy old pods are deleted together."""
    s = sset(4, strategy={"type": "RollingUpdate", "rollingUpdate": {"partition": 0, "maxUnavailable": 2}},
             image="v2")
    pods = [pod(i, V1) for i in range(4)]
    assert summary(util.plan(s, pods, V1, V2, 0, {}, NOW)) == ["delete web-3", "delete web-2"]


def test_start_ordinal_shifts_the_range() -> None:
    """spec.ordinals.start numbers pods from the start ordinal; lower ones are condemned."""
    s = sset(2, start=5)
    p = run(s, [pod(0, V1)])
    assert summary(p) == ["create web-5"]
    p = run(s, [pod(5, V1), pod(6, V1), pod(0, V1)])
    assert summary(p) == ["delete web-0"]


def test_status_counts() -> None:
    """Status counts created, ready, available, current and updated pods, with revisions and generation."""
    s = sset(image="v2", min_ready=30)
    pods = [pod(0, V1), pod(1, V2, ready=False), pod(2, V2)]
    pods[2]["status"]["conditions"][0]["lastTransitionTime"] = "2026-01-01T11:59:50Z"
    st = util.plan(s, pods, V1, V2, 1, {}, NOW).status
    assert st == {"observedGeneration": 2, "currentRevision": V1["metadata"]["name"],
                  "updateRevision": V2["metadata"]["name"], "collisionCount": 1, "replicas": 3,
                  "readyReplicas": 2, "availableReplicas": 1, "currentReplicas": 1, "updatedReplicas": 2}


def test_complete_rolling_update_promotes_the_update_revision() -> None:
    """When every replica is updated and ready the update revision becomes the current one."""
    status = {"replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "currentReplicas": 0,
              "currentRevision": "a", "updateRevision": "b"}
    util.complete_rolling_update(sset(), status)
    assert status["currentRevision"] == "b" and status["currentReplicas"] == 2
    assert util.status_changed(sset(status=status), status) is False
    assert util.status_changed(sset(status=status), {**status, "readyReplicas": 1}) is True


def test_deleting_set_only_reports_status() -> None:
    """A set being deleted gets its status computed but no writes."""
    s = sset()
    s["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    p = run(s, [pod(0, V1)])
    assert p.steps == [] and p.status["replicas"] == 1


def _claim(ordinal: int, *refs: dict) -> dict:
    c = {"metadata": {"name": f"data-web-{ordinal}", "namespace": "ns", "resourceVersion": "1"}}
    if refs:
        c["metadata"]["ownerReferences"] = list(refs)
    return c


SET_REF = {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "uid": "set-uid", "controller": True,
           "blockOwnerDeletion": True}


def _pod_ref(ordinal: int) -> dict:
    return {"apiVersion": "v1", "kind": "Pod", "name": f"web-{ordinal}", "uid": f"pod-uid-{ordinal}",
            "controller": True, "blockOwnerDeletion": True}


@pytest.mark.parametrize(("retention", "ordinal", "expected"), [
    (("Retain", "Retain"), 0, []),
    (("Retain", "Delete"), 0, [SET_REF]),
    (("Delete", "Retain"), 0, []),
    (("Delete", "Retain"), 5, [_pod_ref(5)]),
    (("Delete", "Delete"), 0, [SET_REF]),
    (("Delete", "Delete"), 5, [_pod_ref(5)]),
])
def test_claim_owners_follow_the_retention_policy(retention: tuple, ordinal: int, expected: list) -> None:
    """whenDeleted=Delete makes the set the claim's controller; whenScaled=Delete hands scaled-down claims to the pod."""
    s = sset(3, claims=True, retention=retention)
    p = pod(ordinal, V1)
    fixed = util.claim_with_owners(_claim(ordinal), s, p)
    assert (fixed["metadata"].get("ownerReferences") or []) == expected
    assert util.claim_owner_up_to_date(fixed, s, p)
    assert util.claim_owner_up_to_date(_claim(ordinal), s, p) == (expected == [])


def test_claim_with_foreign_controller_is_left_alone() -> None:
    """A claim controlled by someone else keeps that controller and gets no set/pod reference."""
    s = sset(claims=True, retention=("Retain", "Delete"))
    other = {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "x", "controller": True}
    claim = _claim(0, other)
    assert util.claim_owner_up_to_date(claim, s, pod(0, V1))
    assert util.claim_with_owners(claim, s, pod(0, V1))["metadata"]["ownerReferences"] == [other]


def test_retention_fixes_in_the_plan_and_stale_claims_block_creation() -> None:
    """Existing pods get their claims re-owned; a claim still owned by an older pod blocks recreating it."""
    s = sset(1, claims=True, retention=("Delete", "Delete"))
    p0 = pod(0, V1)
    plan = run(s, [p0], claims={"data-web-0": _claim(0)})
    assert summary(plan) == ["update web-0"]
    assert plan.steps[0][0].claims[0]["metadata"]["ownerReferences"] == [SET_REF]
    stale = _claim(0, {**_pod_ref(0), "uid": "old"})
    assert summary(run(s, [], claims={"data-web-0": stale})) == []
    condemned = run(sset(0, claims=True, retention=("Delete", "Retain")), [p0], claims={"data-web-0": _claim(0)})
    assert summary(condemned) == ["fix-claims web-0"]


def test_pending_pod_gets_missing_claims() -> None:
    """A Pending pod whose claim is missing gets it created again."""
    s = sset(1, claims=True)
    p = pod(0, V1, phase="Pending", ready=False)
    assert summary(run(s, [p])) == ["claims web-0"]
    assert summary(run(s, [p], claims={"data-web-0": _claim(0)})) == []
