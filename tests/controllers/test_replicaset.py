"""Specification of the ReplicaSet/ReplicationController controller and its pure rules."""

from __future__ import annotations

import datetime

import pytest

from pocketkube.api import errors, selectors
from pocketkube.base import clock
from pocketkube.controllers import replicaset
from pocketkube.controllers import replicaset_util as util
from pocketkube.runtime import controller
from tests.controllers import workloadfake

NOW = datetime.datetime(2026, 1, 1, 1, 0, 0, tzinfo=datetime.UTC)
T0 = "2026-01-01T00:00:00Z"


def pod(name, *, labels=None, phase="Pending", ready=None, node="", owner=None, deleting=False, created=T0,
        restarts=0, cost=None, uid=None):
    m = {"name": name, "namespace": "default", "uid": uid or f"uid-{name}", "labels": labels or {"app": "web"},
         "creationTimestamp": created, "resourceVersion": "1"}
    if owner:
        m["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": owner,
                                 "uid": f"uid-{owner}", "controller": True, "blockOwnerDeletion": True}]
    if deleting:
        m["deletionTimestamp"] = T0
    if cost is not None:
        m["annotations"] = {util.DELETION_COST: str(cost)}
    status = {"phase": phase}
    if ready is not None:
        status["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": ready}]
    if restarts:
        status["containerStatuses"] = [{"name": "c", "restartCount": restarts}]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": m, "spec": {"nodeName": node} if node else {},
            "status": status}


def rs(name="web", *, replicas=3, labels=None, min_ready=0, status=None, generation=1):
    labels = labels or {"app": "web"}
    spec = {"replicas": replicas, "selector": {"matchLabels": dict(labels)},
            "template": {"metadata": {"labels": dict(labels), "annotations": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}
    if min_ready:
        spec["minReadySeconds"] = min_ready
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}", "generation": generation,
                         "creationTimestamp": T0, "resourceVersion": "1"},
            "spec": spec, "status": status or {"replicas": 0}}


@pytest.mark.parametrize("p,active", [
    (pod("a"), True),
    (pod("a", phase="Running"), True),
    (pod("a", phase="Succeeded"), False),
    (pod("a", phase="Failed"), False),
    (pod("a", deleting=True), False),
])
def test_is_active(p, active):
    """Pods count while neither terminal nor being deleted."""
    assert util.is_active(p) is active


@pytest.mark.parametrize("ready_since,min_ready,available", [
    (None, 0, False),
    ("2026-01-01T00:59:59Z", 0, True),
    ("2026-01-01T00:59:55Z", 10, False),
    ("2026-01-01T00:59:49Z", 10, True),
])
def test_is_available(ready_since, min_ready, available):
    """A pod is available once it has been Ready for longer than minReadySeconds."""
    assert util.is_available(pod("a", ready=ready_since), min_ready, NOW) is available


def test_claim_keeps_adopts_and_releases():
    """Owned matching pods stay, matching orphans are adopted, owned non-matching ones are released."""
    owner = rs()
    pods = [pod("mine", owner="web"), pod("orphan"), pod("stray", owner="web", labels={"app": "other"}),
            pod("theirs", owner="other"), pod("unrelated", labels={"app": "x"}),
            pod("dying-orphan", deleting=True)]
    c = util.claim(owner, selectors.from_label_selector(owner["spec"]["selector"]), pods)
    assert [p["metadata"]["name"] for p in c.owned] == ["mine", "orphan"]
    assert [p["metadata"]["name"] for p in c.adopt] == ["orphan"]
    assert [p["metadata"]["name"] for p in c.release] == ["stray"]


def test_claim_owner_being_deleted_neither_adopts_nor_releases():
    """A ReplicaSet being deleted keeps what it has but adopts and releases nothing."""
    owner = rs()
    owner["metadata"]["deletionTimestamp"] = T0
    pods = [pod("orphan"), pod("stray", owner="web", labels={"app": "other"})]
    c = util.claim(owner, selectors.from_label_selector(owner["spec"]["selector"]), pods)
    assert (c.owned, c.adopt, c.release) == ([], [], [])


def test_adopt_and_release_patches():
    """Adoption and release are strategic merge patches guarded by the pod's uid, as kube sends them."""
    owner, p = rs(), pod("p")
    assert util.adopt_patch(owner, p) == {"metadata": {"ownerReferences": [{
        "apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web", "uid": "uid-web", "controller": True,
        "blockOwnerDeletion": True}], "uid": "uid-p"}}
    assert util.release_patch(owner, p) == {"metadata": {"ownerReferences": [{"$patch": "delete",
                                                                               "uid": "uid-web"}], "uid": "uid-p"}}


def test_pod_from_template():
    """New pods get generateName "<owner>-", the template's labels and annotations, and a controller ref."""
    body = util.pod_from_template(rs(), rs()["spec"]["template"])
    assert body["metadata"] == {"generateName": "web-", "namespace": "default", "labels": {"app": "web"},
                                "annotations": {"a": "b"},
                                "ownerReferences": [util.controller_ref(rs())]}
    assert body["spec"] == {"containers": [{"name": "c", "image": "nginx"}]}


@pytest.mark.parametrize("pods,first", [
    ([pod("scheduled", node="n1"), pod("unscheduled")], "unscheduled"),
    ([pod("running", node="n", phase="Running"), pod("pending", node="n")], "pending"),
    ([pod("ready", node="n", phase="Running", ready=T0), pod("notready", node="n", phase="Running")], "notready"),
    ([pod("dear", node="n", cost=10), pod("cheap", node="n", cost=-5)], "cheap"),
    ([pod("old", node="n", phase="Running", ready="2026-01-01T00:00:00Z"),
      pod("young", node="n", phase="Running", ready="2026-01-01T00:59:00Z")], "young"),
    ([pod("stable", node="n"), pod("crashy", node="n", restarts=3)], "crashy"),
    ([pod("old", node="n", created="2025-12-01T00:00:00Z"), pod("new", node="n", created="2026-01-01T00:50:00Z")],
     "new"),
])
def test_deletion_order(pods, first):
    """Deletion prefers unscheduled < pending < not ready < low cost < recently ready < restarting < young."""
    assert util.deletion_order(pods, [], NOW)[0]["metadata"]["name"] == first


def test_deletion_order_prefers_doubled_up_nodes():
    """Among equals, a pod sharing its node with more related pods goes first."""
    a, b = pod("alone", node="n1"), pod("crowded", node="n2")
    related = [a, b, pod("sib1", node="n2"), pod("sib2", node="n2")]
    assert util.deletion_order([a, b], related, NOW)[0]["metadata"]["name"] == "crowded"


def test_pods_to_delete_takes_all_without_sorting():
    """When every pod goes, no ranking is needed."""
    pods = [pod("a"), pod("b")]
    assert util.pods_to_delete(pods, [], 2, NOW) == pods


@pytest.mark.parametrize("replicas,have,want", [(3, 0, 3), (3, 5, -2), (3, 3, 0), (1000, 0, 500), (0, 900, -500)])
def test_plan_replicas(replicas, have, want):
    """The diff to spec.replicas, capped at the burst size of 500."""
    assert util.plan_replicas(rs(replicas=replicas), [pod(str(i)) for i in range(have)]) == want


@pytest.mark.parametrize("count,batches", [(0, []), (1, [1]), (3, [1, 2]), (10, [1, 2, 4, 3])])
def test_slow_start_batches(count, batches):
    """Creates go out in doubling batches so a failing template fails fast."""
    assert util.slow_start_batches(count) == batches


def test_calculate_status_counts():
    """Status counts replicas, fully labeled, ready and available (after minReadySeconds) pods."""
    owner = rs(min_ready=30)
    owner["spec"]["template"]["metadata"]["labels"]["tier"] = "fe"
    pods = [pod("a", labels={"app": "web", "tier": "fe"}, ready="2026-01-01T00:00:00Z"),
            pod("b", labels={"app": "web", "tier": "fe"}, ready="2026-01-01T00:59:50Z"),
            pod("c")]
    st = util.calculate_status(owner, pods, None, NOW)
    assert st == {"replicas": 3, "fullyLabeledReplicas": 2, "readyReplicas": 2, "availableReplicas": 1}


def test_calculate_status_replica_failure_set_and_cleared():
    """A manage error adds ReplicaFailure (FailedCreate when short of pods); success removes it."""
    st = util.calculate_status(rs(replicas=2), [], "quota exceeded", NOW)
    assert st["conditions"] == [{"type": "ReplicaFailure", "status": "True", "lastTransitionTime": "2026-01-01T01:00:00Z",
                                 "reason": "FailedCreate", "message": "quota exceeded"}]
    again = util.calculate_status(rs(replicas=2, status=st), [], None, NOW)
    assert "conditions" not in again


@pytest.mark.parametrize("status,generation,unchanged", [
    ({"replicas": 3, "fullyLabeledReplicas": 3, "observedGeneration": 1}, 1, True),
    ({"replicas": 3, "fullyLabeledReplicas": 3, "observedGeneration": 1}, 2, False),
    ({"replicas": 2, "fullyLabeledReplicas": 3, "observedGeneration": 1}, 1, False),
])
def test_status_unchanged(status, generation, unchanged):
    """No status write in the steady state; a new generation or count forces one."""
    new = {"replicas": 3, "fullyLabeledReplicas": 3, "readyReplicas": 0, "availableReplicas": 0}
    assert util.status_unchanged(rs(status=status, generation=generation), new) is unchanged


def test_expectations():
    """Syncs wait until created and deleted pods are observed, or the expectations expire."""
    e = util.Expectations(ttl=10)
    assert e.satisfied("k", 0)
    e.expect("k", adds=2, now=0)
    assert not e.satisfied("k", 1)
    e.creation_observed("k")
    e.creation_observed("k")
    assert e.satisfied("k", 1)
    e.expect("k", deletes=["default/a"], now=5)
    assert not e.satisfied("k", 6)
    assert e.satisfied("k", 16)
    e.deletion_observed("k", "default/a")
    assert e.satisfied("k", 6)


def test_rc_selector_is_a_label_map():
    """A ReplicationController's selector is a plain label map."""
    rc = {"kind": "ReplicationController", "spec": {"selector": {"app": "web"}}}
    assert replicaset.selector_of(rc).matches({"app": "web", "x": "y"})
    assert not replicaset.selector_of(rc).matches({"app": "db"})


# --- reconcile against a fake API


def make(kind="ReplicaSet"):
    client = workloadfake.FakeClient()
    ctl = replicaset.ReplicaSetController(client, kind=kind, clock=clock.FakeClock(NOW))
    return client, ctl


def load(ctl, owners, pods):
    ctl.owners._replace(owners)
    ctl.pods._replace(pods)


async def test_reconcile_creates_missing_pods_with_events_and_status():
    """A new ReplicaSet gets its pods created from the template, events and a status with observedGeneration."""
    client, ctl = make()
    owner = client.put(replicaset.REPLICASETS, rs(replicas=3))
    load(ctl, [owner], [])
    assert await ctl.reconcile("default/web") == controller.DONE
    creates = client.verbs("create", "pods")
    assert len(creates) == 3
    assert creates[0][2]["metadata"]["generateName"] == "web-"
    assert creates[0][2]["metadata"]["ownerReferences"][0]["uid"] == "uid-web"
    events = [c[2] for c in client.verbs("create", "events")]
    assert {e["reason"] for e in events} == {"SuccessfulCreate"}
    assert events[0]["message"].startswith("Created pod: web-")
    assert events[0]["source"] == {"component": "replicaset-controller"}
    status = client.verbs("update/status")[-1][2]["status"]
    assert status == {"replicas": 0, "observedGeneration": 1}
    # The creates are not observed yet: the next sync must not create again.
    assert not ctl.expectations.satisfied("default/web", ctl.clock.monotonic())
    client.calls.clear()
    await ctl.reconcile("default/web")
    assert client.verbs("create", "pods") == []


async def test_reconcile_observed_creations_satisfy_expectations():
    """Pods appearing in the informer lower the expectations so the next sync proceeds."""
    client, ctl = make()
    owner = client.put(replicaset.REPLICASETS, rs(replicas=2))
    load(ctl, [owner], [])
    await ctl.reconcile("default/web")
    ctl.pods._replace(client.of(replicaset.PODS))
    assert ctl.expectations.satisfied("default/web", ctl.clock.monotonic())


async def test_reconcile_deletes_surplus_unready_first():
    """Scaling down deletes the least valuable pods and records SuccessfulDelete."""
    client, ctl = make()
    owner = client.put(replicaset.REPLICASETS, rs(replicas=1, status={"replicas": 3}))
    pods = [client.put(replicaset.PODS, p) for p in (
        pod("ready", owner="web", node="n", phase="Running", ready=T0),
        pod("pending", owner="web", node="n"), pod("unscheduled", owner="web"))]
    load(ctl, [owner], pods)
    await ctl.reconcile("default/web")
    deleted = sorted(c[1].rsplit("/", 1)[1] for c in client.verbs("delete"))
    assert deleted == ["pending", "unscheduled"]
    assert {c[2]["message"] for c in client.verbs("create", "events")} == {
        "Deleted pod: pending", "Deleted pod: unscheduled"}


async def test_reconcile_adopts_orphans_and_releases_strays():
    """Orphans matching the selector are adopted (no new pods needed); non-matching owned pods are released."""
    client, ctl = make()
    owner = client.put(replicaset.REPLICASETS, rs(replicas=1))
    orphan = client.put(replicaset.PODS, pod("orphan"))
    stray = client.put(replicaset.PODS, pod("stray", owner="web", labels={"app": "db"}))
    load(ctl, [owner], [orphan, stray])
    await ctl.reconcile("default/web")
    patched = {c[1].rsplit("/", 1)[1]: c[2] for c in client.verbs("patch")}
    assert patched["orphan"]["metadata"]["ownerReferences"][0]["uid"] == "uid-web"
    assert patched["stray"]["metadata"]["ownerReferences"][0]["$patch"] == "delete"
    assert client.verbs("create", "pods") == []
    assert client.objects["/api/v1/namespaces/default/pods/orphan"]["metadata"]["ownerReferences"][0]["name"] == "web"


async def test_reconcile_create_failure_sets_replica_failure():
    """A rejected create records FailedCreate and a ReplicaFailure condition, and the sync fails to retry."""
    client, ctl = make()
    client.fail_creates["pods"] = errors.Forbidden('pods "web-" is forbidden: exceeded quota: q')
    owner = client.put(replicaset.REPLICASETS, rs(replicas=2))
    load(ctl, [owner], [])
    with pytest.raises(errors.Forbidden):
        await ctl.reconcile("default/web")
    assert len(client.verbs("create", "pods")) == 1  # slow start: the first batch failed, no more tries
    ev = client.verbs("create", "events")[0][2]
    assert (ev["type"], ev["reason"], ev["message"]) == (
        "Warning", "FailedCreate", 'Error creating: pods "web-" is forbidden: exceeded quota: q')
    cond = client.verbs("update/status")[-1][2]["status"]["conditions"][0]
    assert (cond["type"], cond["reason"]) == ("ReplicaFailure", "FailedCreate")
    assert ctl.expectations.satisfied("default/web", ctl.clock.monotonic())


async def test_replication_controller_flavour():
    """ReplicationControllers use the same logic with a label-map selector and their own component."""
    client, ctl = make("ReplicationController")
    rc = {"apiVersion": "v1", "kind": "ReplicationController",
          "metadata": {"name": "rc", "namespace": "default", "generation": 1},
          "spec": {"replicas": 1, "selector": {"app": "web"},
                   "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": []}}}}
    owner = client.put(replicaset.REPLICATIONCONTROLLERS, rc)
    load(ctl, [owner], [])
    await ctl.reconcile("default/rc")
    body = client.verbs("create", "pods")[0][2]
    assert body["metadata"]["ownerReferences"][0]["kind"] == "ReplicationController"
    assert client.verbs("create", "events")[0][2]["source"]["component"] == "replication-controller"


async def test_min_ready_seconds_requeues_until_available():
    """All pods ready but not yet available for minReadySeconds: look again after that long."""
    client, ctl = make()
    owner = client.put(replicaset.REPLICASETS, rs(replicas=1, min_ready=30))
    p = client.put(replicaset.PODS, pod("a", owner="web", ready="2026-01-01T00:59:50Z"))
    load(ctl, [owner], [p])
    assert await ctl.reconcile("default/web") == controller.requeue_after(30)


def test_pod_events_route_to_owner_and_count_expectations():
    """Pod add/delete events enqueue the owning ReplicaSet; orphans enqueue every matching ReplicaSet."""
    client, ctl = make()
    owner = rs()
    ctl.owners._replace([owner])
    ctl.expectations.expect("default/web", adds=1, deletes=["default/old"], now=0)
    assert ctl._pod_keys("ADDED", None, pod("new", owner="web")) == ["default/web"]
    assert ctl._pod_keys("DELETED", pod("old", owner="web"), None) == ["default/web"]
    assert ctl.expectations.satisfied("default/web", 0)
    assert ctl._pod_keys("ADDED", None, pod("orphan")) == ["default/web"]
    assert ctl._pod_keys("ADDED", None, pod("other", labels={"app": "x"})) == []
