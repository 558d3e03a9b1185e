"""Specification of the Deployment controller: hashing, fenceposts, rollout plans, status and reconcile."""

from __future__ import annotations

import copy
import datetime

import pytest

from pocketkube.base import clock
from pocketkube.controllers import deployment
from pocketkube.controllers import deployment_status as ds
from pocketkube.controllers import deployment_util as du
from pocketkube.runtime import controller
from tests.controllers import workloadfake

NOW = datetime.datetime(2026, 1, 1, 1, 0, 0, tzinfo=datetime.UTC)
STAMP = "2026-01-01T01:00:00Z"
TEMPLATE = {"metadata": {"labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}


def deploy(replicas=3, *, surge="25%", unavailable="25%", strategy="RollingUpdate", template=None, status=None,
           generation=1, annotations=None, deadline=600, history=10, prev_replicas=None):
    strat = {"type": strategy}
    if strategy == "RollingUpdate":
        strat["rollingUpdate"] = {"maxSurge": surge, "maxUnavailable": unavailable}
    d = {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "web", "namespace": "default", "uid": "uid-web", "generation": generation,
                      "resourceVersion": "1", "annotations": dict(annotations or {})},
         "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                  "template": copy.deepcopy(template or TEMPLATE), "strategy": strat,
                  "revisionHistoryLimit": history},
         "status": dict(status or {})}
    if deadline is not None:
        d["spec"]["progressDeadlineSeconds"] = deadline
    if prev_replicas is not None:
        d["status"]["replicas"] = prev_replicas
    return d


def rset(name, replicas, *, available=0, actual=None, created="2026-01-01T00:00:00Z", revision=None, desired=None,
         max_replicas=None, template=None, owner=True):
    ann = {}
    if revision is not None:
        ann[du.REVISION] = str(revision)
    if desired is not None:
        ann[du.DESIRED_REPLICAS] = str(desired)
    if max_replicas is not None:
        ann[du.MAX_REPLICAS] = str(max_replicas)
    m = {"name": name, "namespace": "default", "uid": f"uid-{name}", "creationTimestamp": created,
         "annotations": ann, "labels": {"app": "web"}, "resourceVersion": "1", "generation": 1}
    if owner:
        m["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web", "uid": "uid-web",
                                 "controller": True, "blockOwnerDeletion": True}]
    return {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": m,
            "spec": {"replicas": replicas, "template": copy.deepcopy(template or TEMPLATE)},
            "status": {"replicas": replicas if actual is None else actual, "availableReplicas": available,
                       "readyReplicas": available, "observedGeneration": 1}}


# --- hashing


def test_safe_encode_uses_kubes_alphabet():
    """Decimal digits map into "bcdfghjklmnpqrstvwxz2456789" exactly as rand.SafeEncodeString does."""
    assert du.safe_encode("0123456789") == "456789bcdf"


def test_fnv32a():
    """The hash is FNV-1a 32-bit."""
    assert du.fnv32a(b"") == 0x811C9DC5
    assert du.fnv32a(b"a") == 0xE40C292C


def test_compute_hash_is_stable_and_salted_by_collisions():
    """Same template, same hash; a collision count changes it; only safe characters are used."""
    h = du.compute_hash(TEMPLATE, None)
    assert h == du.compute_hash(copy.deepcopy(TEMPLATE), None)
    assert h != du.compute_hash(TEMPLATE, 1)
    assert du.compute_hash(TEMPLATE, 1) != du.compute_hash(TEMPLATE, 2)
    assert set(h) <= set(du.SAFE_ALPHABET) and 1 <= len(h) <= 10
    other = copy.deepcopy(TEMPLATE)
    other["spec"]["containers"][0]["image"] = "nginx:1.27"
    assert du.compute_hash(other, None) != h


def test_equal_ignore_hash():
    """Templates compare equal without the pod-template-hash label and with empty fields ignored."""
    a = du.new_rs_template(deploy(), "abc")
    b = copy.deepcopy(TEMPLATE)
    b["metadata"]["annotations"] = {}
    assert du.equal_ignore_hash(a, b)
    b["metadata"]["labels"]["x"] = "y"
    assert not du.equal_ignore_hash(a, b)


# --- fenceposts


@pytest.mark.parametrize("value,total,up,want", [
    (3, 10, True, 3), ("25%", 10, True, 3), ("25%", 10, False, 2), ("25%", 3, True, 1), ("25%", 3, False, 0),
    ("0%", 10, True, 0), ("100%", 7, False, 7), ("33%", 10, True, 4),
])
def test_scaled_value(value, total, up, want):
    """Percentages scale with the replica count: surge rounds up, unavailable rounds down."""
    assert du.scaled_value(value, total, round_up=up) == want


@pytest.mark.parametrize("value", ["25", "x%", None])
def test_scaled_value_rejects_garbage(value):
    """A string without % (or an unparsable one) is an error, as intstr reports."""
    with pytest.raises(ValueError):
        du.scaled_value(value, 10, round_up=True)


@pytest.mark.parametrize("surge,unavailable,desired,want", [
    ("25%", "25%", 10, (3, 2)), ("25%", "25%", 3, (1, 0)), (0, 0, 10, (0, 1)), ("0%", "0%", 10, (0, 1)),
    (1, 0, 1, (1, 0)), ("25%", "25%", 1, (1, 0)), (2, "50%", 5, (2, 2)),
])
def test_resolve_fenceposts(surge, unavailable, desired, want):
    """Both zero resolves to maxUnavailable 1 so a rollout can always move."""
    assert du.resolve_fenceposts(surge, unavailable, desired) == want


@pytest.mark.parametrize("d,surge,unavailable", [
    (deploy(10), 3, 2), (deploy(0), 0, 0), (deploy(2, unavailable=5), 1, 2), (deploy(3, strategy="Recreate"), 0, 0),
])
def test_max_surge_and_unavailable(d, surge, unavailable):
    """maxUnavailable is capped at replicas; Recreate has neither."""
    assert (du.max_surge(d), du.max_unavailable(d)) == (surge, unavailable)


@pytest.mark.parametrize("d,olds,new,want", [
    (deploy(10), [10], 0, 3), (deploy(10), [10], 3, 3), (deploy(10), [7], 3, 6), (deploy(10), [], 0, 10),
    (deploy(10, strategy="Recreate"), [10], 0, 10), (deploy(3), [3], 0, 1),
])
def test_new_rs_new_replicas(d, olds, new, want):
    """The new ReplicaSet grows up to replicas + maxSurge pods in total, never past replicas."""
    old_rss = [rset(f"old{i}", n) for i, n in enumerate(olds)]
    new_rs = rset("new", new)
    assert du.new_rs_new_replicas(d, [*old_rss, new_rs], new_rs) == want


# --- rolling plans


@pytest.mark.parametrize("d,olds,new,want", [
    # Surge only: the unready new pod blocks any scale down.
    (deploy(10, surge=1, unavailable=0), [(10, 10)], (1, 0), []),
    # Room for two unavailable: scale the healthy old ReplicaSet down by two.
    (deploy(10, surge=0, unavailable=2), [(10, 10)], (0, 0), [("old0", 8)]),
    # Unhealthy old replicas go first and use up the budget.
    (deploy(10, surge=0, unavailable=2), [(10, 5)], (0, 0), [("old0", 8)]),
    # Oldest ReplicaSet first.
    (deploy(10, surge=0, unavailable=3), [(5, 5), (5, 5)], (0, 0), [("old0", 2)]),
    # Nothing old left.
    (deploy(10), [(0, 0)], (10, 10), []),
])
def test_plan_old_rss(d, olds, new, want):
    """reconcileOldReplicaSets: never below replicas - maxUnavailable available pods."""
    old_rss = [rset(f"old{i}", n, available=a, created=f"2026-01-01T00:00:0{i}Z") for i, (n, a) in enumerate(olds)]
    new_rs = rset("new", new[0], available=new[1], created="2026-01-01T00:01:00Z")
    plan = du.plan_old_rss(d, [*old_rss, new_rs], du.active(old_rss), new_rs)
    assert [(rs["metadata"]["name"], n) for rs, n in plan] == want


@pytest.mark.parametrize("d,new_rs,want", [
    (deploy(3), rset("new", 1), 3),
    (deploy(3), rset("new", 5), 3),
    (deploy(3), rset("new", 3), None),
])
def test_plan_new_rs(d, new_rs, want):
    """The new ReplicaSet scales toward replicas, straight down when it is too big."""
    assert du.plan_new_rs(d, [new_rs], new_rs) == want


def _ann(rss, desired, most):
    for rs in rss:
        rs["metadata"]["annotations"].update({du.DESIRED_REPLICAS: str(desired), du.MAX_REPLICAS: str(most)})
    return rss


@pytest.mark.parametrize("replicas,prev,new,olds,want_new,want_olds", [
    (12, 10, 10, [], 12, []),
    (5, 10, 10, [], 5, []),
    (10, 5, 2, [3], 4, [6]),
    (3, 5, 2, [3], 1, [2]),
    (4, 9, 8, [1], 4, [0]),
    (10, 7, 2, [3, 2], 3, [4, 3]),
    (8, 13, 2, [8, 3], 1, [5, 2]),
])
def test_plan_scale_proportional(replicas, prev, new, olds, want_new, want_olds):
    """Scaling mid-rollout spreads the change over ReplicaSets in proportion to their size (kube's TestScale)."""
    d = deploy(replicas, surge=0, unavailable=0, prev_replicas=prev)
    old_rss = _ann([rset(f"old{i}", n, created=f"2026-01-01T00:00:0{i}Z") for i, n in enumerate(olds)], prev, prev)
    new_rs = _ann([rset("new", new, created="2026-01-01T00:01:00Z")], prev, prev)[0]
    sizes = {rs["metadata"]["name"]: n for rs, n, _ in du.plan_scale(d, new_rs, old_rss)}
    assert sizes.get("new", new) == want_new
    assert [sizes.get(f"old{i}", n) for i, n in enumerate(olds)] == want_olds


def test_plan_scale_saturated_new_scales_olds_to_zero():
    """A saturated new ReplicaSet (all desired pods available) scales active old ones to zero."""
    d = deploy(3)
    new_rs = rset("new", 3, available=3, desired=3)
    olds = [rset("old", 1)]
    assert [(rs["metadata"]["name"], n, op) for rs, n, op in du.plan_scale(d, new_rs, olds)] == [("old", 0, "down")]


def test_is_scaling_event():
    """An active ReplicaSet annotated with another desired count means the Deployment was scaled."""
    assert du.is_scaling_event(deploy(5), rset("new", 3, desired=3), [])
    assert not du.is_scaling_event(deploy(3), rset("new", 3, desired=3), [rset("old", 0, desired=1)])


# --- annotations and history


def test_new_rs_annotations_for_a_new_replicaset():
    """A new ReplicaSet gets the revision, sizes and the Deployment's annotations but not last-applied."""
    d = deploy(3, annotations={du.CHANGE_CAUSE: "kubectl set image", du.LAST_APPLIED: "{}", du.REVISION: "4"})
    rs = {"metadata": {}}
    assert du.set_new_rs_annotations(d, rs, 5, exists=False)
    assert rs["metadata"]["annotations"] == {du.CHANGE_CAUSE: "kubectl set image", du.REVISION: "5",
                                             du.DESIRED_REPLICAS: "3", du.MAX_REPLICAS: "4"}


@pytest.mark.parametrize("revision,history,new,want_history", [
    ("1", None, 3, "1"),
    ("3", "1", 5, "1,3"),
    ("5", None, 5, None),
])
def test_revision_history_on_rollback(revision, history, new, want_history):
    """Reusing an old ReplicaSet moves its old revision into revision-history."""
    rs = rset("old", 0, revision=revision)
    if history:
        rs["metadata"]["annotations"][du.REVISION_HISTORY] = history
    du.set_new_rs_annotations(deploy(), rs, new, exists=True)
    assert rs["metadata"]["annotations"][du.REVISION] == str(max(new, int(revision)))
    assert rs["metadata"]["annotations"].get(du.REVISION_HISTORY) == want_history


def test_cleanup_victims_oldest_idle_beyond_limit():
    """revisionHistoryLimit keeps the newest idle ReplicaSets and never deletes one with pods."""
    olds = [rset("r1", 0, revision=1), rset("r2", 0, revision=2), rset("r3", 0, actual=1, revision=3),
            rset("r4", 0, revision=4)]
    assert [rs["metadata"]["name"] for rs in du.cleanup_victims(olds, deploy(history=1))] == ["r1", "r2"]
    assert du.cleanup_victims(olds, deploy(history=10)) == []


# --- status and conditions


def test_calculate_status_counts_and_availability():
    """Counts come from the ReplicaSets; Available needs replicas - maxUnavailable available pods."""
    d = deploy(4)
    st = ds.calculate_status([rset("old", 1, available=1), rset("new", 3, available=2)], rset("new", 3, available=2),
                             d, STAMP)
    assert {k: v for k, v in st.items() if k != "conditions"} == {
        "observedGeneration": 1, "replicas": 4, "updatedReplicas": 3, "readyReplicas": 3, "availableReplicas": 3,
        "unavailableReplicas": 1}
    assert st["conditions"] == [{"type": "Available", "status": "True", "lastUpdateTime": STAMP,
                                 "lastTransitionTime": STAMP, "reason": "MinimumReplicasAvailable",
                                 "message": "Deployment has minimum availability."}]


def test_rollout_status_complete():
    """A finished rollout reports NewReplicaSetAvailable naming the new ReplicaSet."""
    new = rset("web-abc", 3, available=3)
    st = ds.rollout_status([new], new, deploy(3), NOW, STAMP)
    cond = ds.get_condition(st, "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "True", "NewReplicaSetAvailable", 'ReplicaSet "web-abc" has successfully progressed.')


def test_rollout_status_progress_keeps_transition_time():
    """Progress refreshes lastUpdateTime of Progressing but keeps its lastTransitionTime."""
    old_cond = ds.new_condition("Progressing", "True", "NewReplicaSetCreated", 'Created new replica set "web-abc"',
                                "2026-01-01T00:00:00Z")
    d = deploy(3, status={"replicas": 1, "updatedReplicas": 1, "conditions": [old_cond]})
    new = rset("web-abc", 2)
    cond = ds.get_condition(ds.rollout_status([new], new, d, NOW, STAMP), "Progressing")
    assert cond == {"type": "Progressing", "status": "True", "lastUpdateTime": STAMP,
                    "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "ReplicaSetUpdated",
                    "message": 'ReplicaSet "web-abc" is progressing.'}


def test_rollout_status_deadline_exceeded():
    """No progress for progressDeadlineSeconds turns Progressing False with ProgressDeadlineExceeded."""
    old_cond = ds.new_condition("Progressing", "True", "ReplicaSetUpdated", "x", "2026-01-01T00:49:00Z")
    d = deploy(3, status={"replicas": 3, "updatedReplicas": 3, "conditions": [old_cond]})
    new = rset("web-abc", 3)
    cond = ds.get_condition(ds.rollout_status([new], new, d, NOW, STAMP), "Progressing")
    assert (cond["status"], cond["reason"], cond["message"]) == (
        "False", "ProgressDeadlineExceeded", 'ReplicaSet "web-abc" has timed out progressing.')
    assert ds.stuck_requeue(d, ds.calculate_status([new], new, d, STAMP), NOW) == 0.0


def test_stuck_requeue_until_deadline():
    """Without progress, look again one second after the deadline would pass."""
    cond = ds.new_condition("Progressing", "True", "ReplicaSetUpdated", "x", "2026-01-01T00:58:20Z")
    d = deploy(3, status={"conditions": [cond]})
    new = rset("web-abc", 3)
    assert ds.stuck_requeue(d, ds.calculate_status([new], new, d, STAMP), NOW) == 501.0


def test_no_progress_deadline_drops_progressing():
    """Without progressDeadlineSeconds there is no Progressing condition."""
    cond = ds.new_condition("Progressing", "True", "ReplicaSetUpdated", "x", STAMP)
    d = deploy(3, deadline=None, status={"conditions": [cond]})
    new = rset("web-abc", 3)
    assert ds.get_condition(ds.rollout_status([new], new, d, NOW, STAMP), "Progressing") is None


def test_replica_failure_copied_from_replicaset():
    """A ReplicaSet's ReplicaFailure condition surfaces on the Deployment."""
    new = rset("web-abc", 3)
    new["status"]["conditions"] = [{"type": "ReplicaFailure", "status": "True", "lastTransitionTime": STAMP,
                                    "reason": "FailedCreate", "message": "quota"}]
    cond = ds.get_condition(ds.rollout_status([new], new, deploy(3), NOW, STAMP), "ReplicaFailure")
    assert (cond["reason"], cond["message"], cond["lastUpdateTime"]) == ("FailedCreate", "quota", STAMP)


@pytest.mark.parametrize("paused,reason,want", [
    (True, "ReplicaSetUpdated", ("Unknown", "DeploymentPaused", "Deployment is paused")),
    (False, "DeploymentPaused", ("Unknown", "DeploymentResumed", "Deployment is resumed")),
    (True, "DeploymentPaused", None),
    (True, "ProgressDeadlineExceeded", None),
])
def test_paused_condition(paused, reason, want):
    """Pausing and resuming reset Progressing to Unknown, unless the deadline already passed."""
    d = deploy(3, status={"conditions": [ds.new_condition("Progressing", "True", reason, "m", STAMP)]})
    d["spec"]["paused"] = paused
    cond = ds.paused_condition(d, STAMP)
    assert (None if cond is None else (cond["status"], cond["reason"], cond["message"])) == want


# --- reconcile against a fake API


def make():
    client = workloadfake.FakeClient()
    ctl = deployment.DeploymentController(client, clock=clock.FakeClock(NOW))
    return client, ctl


def load(ctl, client, d, rss=()):
    ctl.deployments._replace([client.put(deployment.DEPLOYMENTS, d)])
    ctl.replicasets._replace([client.put(deployment.REPLICASETS, rs) for rs in rss])


async def test_new_deployment_creates_its_replicaset():
    """A new Deployment creates "<name>-<hash>" with the hash label, owner, revision and size annotations."""
    client, ctl = make()
    load(ctl, client, deploy(3))
    assert await ctl.reconcile("default/web") == controller.DONE
    body = client.verbs("create", "replicasets")[0][2]
    h = du.compute_hash(TEMPLATE, None)
    assert body["metadata"]["name"] == f"web-{h}"
    assert body["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
    assert body["spec"]["selector"] == {"matchLabels": {"app": "web", "pod-template-hash": h}}
    assert body["spec"]["template"]["metadata"]["labels"]["pod-template-hash"] == h
    assert body["spec"]["replicas"] == 3
    assert body["metadata"]["annotations"] == {du.REVISION: "1", du.DESIRED_REPLICAS: "3", du.MAX_REPLICAS: "4"}
    assert body["metadata"]["ownerReferences"][0] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                                      "uid": "uid-web", "controller": True,
                                                      "blockOwnerDeletion": True}
    ev = client.verbs("create", "events")[0][2]
    assert (ev["reason"], ev["message"]) == ("ScalingReplicaSet", f"Scaled up replica set web-{h} from 0 to 3")
    assert ev["involvedObject"]["kind"] == "Deployment"
    stored = client.objects["/apis/apps/v1/namespaces/default/deployments/web"]
    assert stored["metadata"]["annotations"][du.REVISION] == "1"
    reasons = {c["type"]: c["reason"] for c in stored["status"]["conditions"]}
    assert reasons == {"Progressing": "NewReplicaSetCreated", "Available": "MinimumReplicasUnavailable"}
    assert stored["status"]["observedGeneration"] == 1


async def test_template_change_starts_a_rolling_update():
    """A changed template creates a second ReplicaSet sized by maxSurge and bumps the revision."""
    client, ctl = make()
    old = rset("web-old", 3, available=3, revision=1, desired=3, max_replicas=4)
    new_template = copy.deepcopy(TEMPLATE)
    new_template["spec"]["containers"][0]["image"] = "nginx:1.27"
    load(ctl, client, deploy(3, template=new_template, annotations={du.REVISION: "1"}), [old])
    await ctl.reconcile("default/web")
    body = client.verbs("create", "replicasets")[0][2]
    assert body["spec"]["replicas"] == 1
    assert body["metadata"]["annotations"][du.REVISION] == "2"
    assert client.objects["/apis/apps/v1/namespaces/default/deployments/web"]["metadata"]["annotations"][
        du.REVISION] == "2"


async def test_scaling_event_resizes_the_only_active_replicaset():
    """Changing replicas scales the active ReplicaSet directly and records it."""
    client, ctl = make()
    rs = rset("web-abc", 3, available=3, revision=1, desired=3, max_replicas=4)
    load(ctl, client, deploy(5, annotations={du.REVISION: "1"}), [rs])
    await ctl.reconcile("default/web")
    update = client.verbs("update", "replicasets")[0][2]
    assert update["spec"]["replicas"] == 5
    assert update["metadata"]["annotations"][du.DESIRED_REPLICAS] == "5"
    assert client.verbs("create", "events")[0][2]["message"] == "Scaled up replica set web-abc from 3 to 5"


async def test_recreate_scales_old_down_before_creating_new():
    """Recreate first scales old ReplicaSets to zero and only then creates the new one."""
    client, ctl = make()
    old = rset("web-old", 2, available=2, revision=1, desired=2, max_replicas=2)
    new_template = copy.deepcopy(TEMPLATE)
    new_template["spec"]["containers"][0]["image"] = "nginx:1.27"
    load(ctl, client, deploy(2, strategy="Recreate", template=new_template), [old])
    await ctl.reconcile("default/web")
    assert client.verbs("create", "replicasets") == []
    assert client.verbs("update", "replicasets")[0][2]["spec"]["replicas"] == 0


async def test_paused_deployment_does_not_roll_out():
    """A paused Deployment with a new template creates nothing and reports DeploymentPaused."""
    client, ctl = make()
    old = rset("web-old", 3, available=3, revision=1, desired=3, max_replicas=4)
    new_template = copy.deepcopy(TEMPLATE)
    new_template["spec"]["containers"][0]["image"] = "nginx:1.27"
    d = deploy(3, template=new_template)
    d["spec"]["paused"] = True
    load(ctl, client, d, [old])
    await ctl.reconcile("default/web")
    assert client.verbs("create", "replicasets") == []
    stored = client.objects["/apis/apps/v1/namespaces/default/deployments/web"]
    assert ds.get_condition(stored["status"], "Progressing")["reason"] == "DeploymentPaused"


async def test_orphan_replicaset_is_adopted():
    """A matching ReplicaSet without a controller is adopted with a controller reference."""
    client, ctl = make()
    orphan = rset(f"web-{du.compute_hash(TEMPLATE, None)}", 3, owner=False, revision=1, desired=3, max_replicas=4)
    load(ctl, client, deploy(3), [orphan])
    await ctl.reconcile("default/web")
    patch = client.verbs("patch", "replicasets")[0][2]
    assert patch["metadata"]["ownerReferences"][0]["uid"] == "uid-web"
    assert client.verbs("create", "replicasets") == []


def test_replicaset_events_route_to_the_owning_deployment():
    """ReplicaSet changes enqueue their controlling Deployment, orphans every matching Deployment."""
    client, ctl = make()
    ctl.deployments._replace([deploy(3)])
    assert ctl._rs_keys("ADDED", None, rset("a", 1)) == ["default/web"]
    assert ctl._rs_keys("ADDED", None, rset("b", 1, owner=False)) == ["default/web"]
    stranger = rset("c", 1, owner=False)
    stranger["metadata"]["labels"] = {"app": "db"}
    assert ctl._rs_keys("ADDED", None, stranger) == []
