"""Job controller: pod creation, counting through the tracking finalizer, failure handling, indexes, suspend, TTL."""

from __future__ import annotations

import copy
import datetime
import itertools
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.controllers import job as job_mod
from pocketkube.controllers import job_util as ju
from pocketkube.controllers import ttlafterfinished

UTC = datetime.UTC
START = datetime.datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
KEY = "ns/work"


def stamp(seconds: float = 0) -> str:
    return clock_mod.rfc3339(START + datetime.timedelta(seconds=seconds))


# --- pure rules ------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "limit", "intervals", "formatted"), [
    ("", 5, [], ""),
    ("0-2,4", 5, [(0, 2), (4, 4)], "0-2,4"),
    ("1,2", 5, [(1, 2)], "1,2"),
    ("0,1,2,3", 10, [(0, 3)], "0-3"),
    ("3-7", 5, [(3, 4)], "3,4"),
    ("x,2,9", 5, [(2, 2)], "2"),
])
def test_completed_indexes_round_trip(text: str, limit: int, intervals: ju.Intervals, formatted: str) -> None:
    """completedIndexes parse into ordered intervals below completions and print back compactly."""
    got = ju.parse_indexes(text, limit)
    assert got == intervals
    assert ju.format_indexes(got) == formatted


def test_with_indexes_and_pending() -> None:
    """Adding indexes merges intervals; pending indexes skip the non-pending ones, lowest first."""
    iv = ju.with_indexes([(0, 1)], [2, 4])
    assert iv == [(0, 2), (4, 4)]
    assert ju.total(iv) == 4
    assert ju.first_pending_indexes(3, 8, iv) == [3, 5, 6]
    assert ju.first_pending_indexes(5, 5, iv) == [3]


@pytest.mark.parametrize(("failures", "elapsed", "remaining"), [
    (0, 0, 0.0), (1, 0, 10.0), (1, 4, 6.0), (2, 0, 20.0), (3, 0, 40.0), (3, 50, 0.0),
    (7, 0, 600.0), (20, 0, 600.0), (20, 599, 1.0),
])
def test_backoff_doubles_from_ten_seconds(failures: int, elapsed: float, remaining: float) -> None:
    """Pod re-creation waits 10 s doubling per failure since the last success, capped, from the last failure."""
    record = ju.Backoff(failures, START if failures else None)
    assert ju.backoff_remaining(record, START + datetime.timedelta(seconds=elapsed)) == remaining


def finished_pod(name: str, phase: str, at: float) -> dict[str, Any]:
    return {"metadata": {"name": name, "uid": name}, "status": {"phase": phase, "containerStatuses": [
        {"name": "c", "state": {"terminated": {"exitCode": 0 if phase == "Succeeded" else 1,
                                               "finishedAt": stamp(at)}}}]}}


def test_backoff_record_resets_on_success() -> None:
    """A success resets the failure count; only failures after the latest success count again."""
    b = ju.next_backoff(ju.Backoff(), [], [finished_pod("a", "Failed", 1), finished_pod("b", "Failed", 5)])
    assert b == ju.Backoff(2, START + datetime.timedelta(seconds=5))
    b = ju.next_backoff(b, [finished_pod("c", "Succeeded", 10)], [finished_pod("d", "Failed", 12)])
    assert b == ju.Backoff(1, START + datetime.timedelta(seconds=12))
    assert ju.next_backoff(b, [finished_pod("e", "Succeeded", 20)], []) == ju.Backoff()


POLICY = {"rules": [
    {"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In", "values": [42]}},
    {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
    {"action": "Count", "onExitCodes": {"operator": "NotIn", "values": [1, 2]}},
]}


def failed_with(code: int, *, container: str = "main", conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns", "uid": "p"},
            "status": {"phase": "Failed", "conditions": conditions or [],
                       "containerStatuses": [{"name": container, "state": {"terminated": {"exitCode": code}}}]}}


@pytest.mark.parametrize(("pod", "expected"), [
    (failed_with(42), ("Container main for pod ns/p failed with exit code 42 matching FailJob rule at index 0",
                       True, "FailJob")),
    (failed_with(42, container="side"), (None, True, "Count")),
    (failed_with(1, conditions=[{"type": "DisruptionTarget", "status": "True"}]), (None, False, "Ignore")),
    (failed_with(1), (None, True, None)),
    (failed_with(7), (None, True, "Count")),
    (failed_with(0), (None, True, None)),
])
def test_pod_failure_policy_rules(pod: dict[str, Any], expected: tuple[Any, ...]) -> None:
    """Rules match in order on exit codes (non-zero, container name, In/NotIn) and pod conditions."""
    job = {"spec": {"podFailurePolicy": POLICY}}
    assert ju.match_failure_policy(job, pod) == expected


def test_pod_condition_rule_message() -> None:
    """A FailJob rule on a pod condition names the pod and the condition."""
    job = {"spec": {"podFailurePolicy": {"rules": [
        {"action": "FailJob", "onPodConditions": [{"type": "ConfigIssue"}]}]}}}
    pod = failed_with(1, conditions=[{"type": "ConfigIssue", "status": "True"}])
    assert ju.fail_job_message(job, [pod]) == "Pod ns/p has condition ConfigIssue matching FailJob rule at index 0"


def test_removal_order_prefers_early_pods() -> None:
    """Pods to delete first: unscheduled, then pending, then not ready, then newest."""
    def pod(name: str, node: str = "", phase: str = "Running", ready: bool = False, created: float = 0) -> dict[str, Any]:
        return {"metadata": {"name": name, "creationTimestamp": stamp(created)}, "spec": {"nodeName": node},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    pods = [pod("ready", "n", ready=True), pod("running", "n"), pod("pending", "n", "Pending"),
            pod("unscheduled", phase="Pending"), pod("newer", "n", created=10)]
    assert [p["metadata"]["name"] for p in ju.removal_order(pods)] == [
        "unscheduled", "pending", "newer", "running", "ready"]


def test_indexed_pod_from_template() -> None:
    """Indexed pods get the index annotation and label, JOB_COMPLETION_INDEX, hostname and name prefix."""
    job = make_job(completionMode="Indexed", completions=3)
    pod = ju.pod_for(job, 2)
    m = pod["metadata"]
    assert m["generateName"] == "work-2-"
    assert m["annotations"][ju.COMPLETION_INDEX] == "2"
    assert m["labels"][ju.COMPLETION_INDEX] == "2"
    assert m["finalizers"] == [ju.TRACKING_FINALIZER]
    assert m["ownerReferences"][0] == {"apiVersion": "batch/v1", "kind": "Job", "name": "work", "uid": "job-uid",
                                       "controller": True, "blockOwnerDeletion": True}
    assert pod["spec"]["hostname"] == "work-2"
    assert pod["spec"]["containers"][0]["env"] == [{"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {
        "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}}]
    assert ju.generate_name("x" * 60, 12) == "x" * 54 + "-12-"


# --- sync against a fake API ------------------------------------------------------------


def make_job(**spec: Any) -> dict[str, Any]:
    base = {"parallelism": 1, "completions": 1, "backoffLimit": 6, "completionMode": "NonIndexed",
            "suspend": False, "podReplacementPolicy": "TerminatingOrFailed",
            "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "job-uid"}},
            "template": {"metadata": {"labels": {"batch.kubernetes.io/controller-uid": "job-uid",
                                                 "batch.kubernetes.io/job-name": "work"}},
                         "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}}
    base.update(spec)
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "work", "namespace": "ns", "uid": "job-uid", "resourceVersion": "1",
                         "creationTimestamp": stamp()},
            "spec": base}


class FakeAPI:
    """Pods and one Job with kube's finalizer-aware deletion, for driving JobController.sync."""

    def __init__(self, job: dict[str, Any], clock: clock_mod.FakeClock) -> None:
        self.job = job
        self.clock = clock
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str]] = []
        self.log: list[str] = []
        self.status_writes: list[dict[str, Any]] = []
        self._n = itertools.count()
        self._rv = itertools.count(2)

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        if gvr.resource == "events":
            self.events.append((body["reason"], body["message"]))
            return body
        pod = copy.deepcopy(body)
        n = next(self._n)
        pod["metadata"].update(name=f"{body['metadata']['generateName']}{n:05d}", uid=f"pod-{n}",
                               creationTimestamp=clock_mod.rfc3339(self.clock.now()))
        pod["status"] = {"phase": "Pending"}
        self.pods[pod["metadata"]["name"]] = pod
        self.log.append(f"create {pod['metadata']['name']}")
        return copy.deepcopy(pod)

    async def delete(self, path: str, **kw: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        self.log.append(f"delete {name}")
        pod = self.pods[name]
        if pod["metadata"].get("finalizers"):
            pod["metadata"]["deletionTimestamp"] = clock_mod.rfc3339(self.clock.now())
        else:
            del self.pods[name]
        return pod

    async def patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        if name not in self.pods:
            raise errors.NotFound(f'pods "{name}" not found')
        pod = self.pods[name]
        drop = body["metadata"].get("$deleteFromPrimitiveList/finalizers") or []
        pod["metadata"]["finalizers"] = [f for f in pod["metadata"].get("finalizers") or [] if f not in drop]
        self.log.append(f"release {name}")
        if pod["metadata"].get("deletionTimestamp") and not pod["metadata"]["finalizers"]:
            del self.pods[name]
        return pod

    async def update_status(self, gvr: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.job = copy.deepcopy(body)
        self.job["metadata"]["resourceVersion"] = str(next(self._rv))
        self.status_writes.append(copy.deepcopy(body["status"]))
        self.log.append("status")
        return copy.deepcopy(self.job)

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        return copy.deepcopy(self.job)

    def finish(self, name: str, phase: str, *, code: int | None = None) -> None:
        pod = self.pods[name]
        code = (0 if phase == "Succeeded" else 1) if code is None else code
        pod["status"] = {"phase": phase, "containerStatuses": [{"name": "main", "state": {"terminated": {
            "exitCode": code, "finishedAt": clock_mod.rfc3339(self.clock.now())}}}]}

    def names(self) -> list[str]:
        return sorted(self.pods)


class Harness:
    def __init__(self, job: dict[str, Any]) -> None:
        self.clock = clock_mod.FakeClock(START)
        self.api = FakeAPI(job, self.clock)
        self.ctl = job_mod.JobController(self.api, clock=self.clock)  # type: ignore[arg-type]

    async def sync(self) -> float | None:
        # The informer would have observed our writes by the next sync.
        self.ctl.expectations.forget(KEY)
        self.api.log.clear()
        return await self.ctl.sync(KEY, copy.deepcopy(self.api.job), [copy.deepcopy(p) for p in self.api.pods.values()])

    @property
    def status(self) -> dict[str, Any]:
        return self.api.job.get("status") or {}

    def condition_types(self) -> list[tuple[str, str]]:
        return [(c["type"], c.get("reason", "")) for c in self.status.get("conditions") or []]


async def test_new_job_creates_pods_with_tracking_finalizer() -> None:
    """A new Job creates min(parallelism, completions) pods, each with the tracking finalizer."""
    h = Harness(make_job(parallelism=2, completions=3))
    await h.sync()
    assert len(h.api.pods) == 2
    for pod in h.api.pods.values():
        assert pod["metadata"]["finalizers"] == [ju.TRACKING_FINALIZER]
        assert pod["metadata"]["generateName"] == "work-"
    assert h.status == {"active": 2, "ready": 0, "terminating": 0, "startTime": stamp(),
                        "uncountedTerminatedPods": {}}
    assert [e[0] for e in h.api.events] == ["SuccessfulCreate", "SuccessfulCreate"]
    assert h.api.events[0][1].startswith("Created pod: work-")


async def test_success_counts_through_uncounted_then_completes() -> None:
    """A succeeded pod is recorded as uncounted, its finalizer removed, then counted; the Job completes."""
    h = Harness(make_job())
    await h.sync()
    (name,) = h.api.names()
    h.clock.advance(5)
    h.api.finish(name, "Succeeded")
    await h.sync()
    assert h.api.log == ["status", f"release {name}", "status"]
    assert h.api.status_writes[-2]["uncountedTerminatedPods"] == {"succeeded": [h.api.pods[name]["metadata"]["uid"]]}
    assert h.status["succeeded"] == 1
    assert h.status["uncountedTerminatedPods"] == {}
    assert h.condition_types() == [("SuccessCriteriaMet", "CompletionsReached"), ("Complete", "CompletionsReached")]
    assert h.status["completionTime"] == stamp(5)
    assert "active" not in h.status
    assert h.api.events[-1] == ("Completed", "Job completed")
    assert h.api.pods[name]["metadata"]["finalizers"] == []


async def test_backoff_limit_exceeded() -> None:
    """With backoffLimit 0 the first failed pod fails the Job: FailureTarget, then Failed."""
    h = Harness(make_job(backoffLimit=0))
    await h.sync()
    (name,) = h.api.names()
    h.api.finish(name, "Failed")
    await h.sync()
    assert h.condition_types() == [("FailureTarget", "BackoffLimitExceeded"), ("Failed", "BackoffLimitExceeded")]
    assert h.status["failed"] == 1
    assert h.api.events[-1] == ("BackoffLimitExceeded", "Job has reached the specified backoff limit")
    assert "completionTime" not in h.status


async def test_failed_pod_is_recreated_after_backoff() -> None:
    """A failed pod is replaced only after 10 s, then 20 s after a second failure."""
    h = Harness(make_job())
    await h.sync()
    (first,) = h.api.names()
    h.api.finish(first, "Failed")
    delay = await h.sync()
    assert delay == pytest.approx(10)
    assert h.status["failed"] == 1 and "active" not in h.status
    h.clock.advance(10)
    await h.sync()
    (second,) = [n for n in h.api.names() if n != first]
    h.api.finish(second, "Failed")
    assert await h.sync() == pytest.approx(20)
    h.clock.advance(19)
    assert await h.sync() == pytest.approx(1)
    assert len(h.api.pods) == 2
    h.clock.advance(1)
    await h.sync()
    assert len(h.api.pods) == 3
    assert h.status["failed"] == 2


async def test_active_deadline_exceeded() -> None:
    """Past activeDeadlineSeconds the active pods are deleted and the Job fails with DeadlineExceeded."""
    h = Harness(make_job(activeDeadlineSeconds=30))
    assert await h.sync() == pytest.approx(30)
    h.clock.advance(30)
    await h.sync()
    assert [line.split()[0] for line in h.api.log] == ["delete", "status", "release", "status"]
    assert h.condition_types() == [("FailureTarget", "DeadlineExceeded")]
    assert ("SuccessfulDelete", f"Deleted pod: {h.api.log[0].split()[1]}") in h.api.events
    await h.sync()
    assert h.condition_types() == [("FailureTarget", "DeadlineExceeded"), ("Failed", "DeadlineExceeded")]
    assert h.status["failed"] == 1
    assert h.api.events[-1] == ("DeadlineExceeded", "Job was active longer than specified deadline")


async def test_indexed_job_tracks_completed_indexes() -> None:
    """Indexed Jobs create one pod per pending index and report completedIndexes as intervals."""
    h = Harness(make_job(completionMode="Indexed", completions=5, parallelism=5))
    await h.sync()
    by_index = {ju.completion_index(p): n for n, p in h.api.pods.items()}
    assert sorted(by_index) == [0, 1, 2, 3, 4]
    for ix in (0, 1, 2, 4):
        h.api.finish(by_index[ix], "Succeeded")
    await h.sync()
    assert h.status["completedIndexes"] == "0-2,4"
    assert h.status["succeeded"] == 4
    assert h.status["active"] == 1
    h.api.finish(by_index[3], "Failed")
    h.clock.advance(10)
    await h.sync()
    await h.sync()
    new = [p for p in h.api.pods.values() if ju.phase(p) == "Pending"]
    assert [ju.completion_index(p) for p in new] == [3]
    h.api.finish(new[0]["metadata"]["name"], "Succeeded")
    await h.sync()
    assert h.status["completedIndexes"] == "0-4"
    assert h.condition_types()[-1][0] == "Complete"


async def test_pod_failure_policy_fail_job() -> None:
    """A FailJob rule fails the Job at once with reason PodFailurePolicy and the rule's message."""
    h = Harness(make_job(podFailurePolicy=POLICY, parallelism=2, completions=2, podReplacementPolicy="Failed"))
    await h.sync()
    first, second = h.api.names()
    h.api.finish(first, "Failed", code=42)
    await h.sync()
    msg = f"Container main for pod ns/{first} failed with exit code 42 matching FailJob rule at index 0"
    assert h.condition_types() == [("FailureTarget", "PodFailurePolicy")]
    assert f"delete {second}" in h.api.log
    await h.sync()
    assert h.condition_types() == [("FailureTarget", "PodFailurePolicy"), ("Failed", "PodFailurePolicy")]
    assert h.status["conditions"][-1]["message"] == msg
    assert h.status["failed"] == 2
    assert h.api.events[-1] == ("PodFailurePolicy", msg)


async def test_pod_failure_policy_ignore_does_not_count() -> None:
    """An Ignore rule replaces the pod at once without counting it toward backoffLimit."""
    h = Harness(make_job(podFailurePolicy=POLICY, backoffLimit=0, podReplacementPolicy="Failed"))
    await h.sync()
    (first,) = h.api.names()
    h.api.pods[first]["status"] = {"phase": "Failed", "conditions": [{"type": "DisruptionTarget", "status": "True"}]}
    delay = await h.sync()
    assert "failed" not in h.status
    assert h.condition_types() == []
    # Ignored failures still delay the replacement like any failure.
    assert delay == pytest.approx(10)
    h.clock.advance(10)
    await h.sync()
    assert len(h.api.pods) == 2


async def test_suspend_and_resume() -> None:
    """Suspending deletes active pods and adds Suspended; resuming restarts the clock and the pods."""
    h = Harness(make_job())
    await h.sync()
    h.api.job["spec"]["suspend"] = True
    await h.sync()
    assert h.condition_types() == [("Suspended", "JobSuspended")]
    assert h.api.events[-2:] == [("SuccessfulDelete", h.api.events[-2][1]), ("Suspended", "Job suspended")]
    assert h.status["terminating"] == 1 and "active" not in h.status
    await h.sync()
    # Deleted before finishing: released and counted as failed, as kube's isPodFailed does.
    assert h.status["failed"] == 1 and h.api.pods == {}
    await h.sync()
    assert h.status["terminating"] == 0
    h.clock.advance(60)
    h.api.job["spec"]["suspend"] = False
    await h.sync()
    assert h.condition_types() == [("Suspended", "JobResumed")]
    assert h.status["conditions"][0]["status"] == "False"
    assert h.status["startTime"] == stamp(60)
    assert h.api.events[-1] == ("Resumed", "Job resumed")
    assert len(h.api.pods) == 1


async def test_parallel_job_without_completions() -> None:
    """Without completions, the Job completes once any pod succeeded and none is active."""
    h = Harness(make_job(parallelism=2, completions=None))
    await h.sync()
    a, b = h.api.names()
    h.api.finish(a, "Succeeded")
    await h.sync()
    assert h.status["active"] == 1 and h.condition_types() == []
    h.api.finish(b, "Succeeded")
    await h.sync()
    assert h.condition_types()[-1][0] == "Complete"
    assert h.status["succeeded"] == 2


async def test_restart_on_failure_counts_container_restarts() -> None:
    """restartPolicy OnFailure: container restarts reaching backoffLimit fail the Job."""
    job = make_job(backoffLimit=2)
    job["spec"]["template"]["spec"]["restartPolicy"] = "OnFailure"
    h = Harness(job)
    await h.sync()
    (name,) = h.api.names()
    h.api.pods[name]["status"] = {"phase": "Running", "containerStatuses": [{"name": "main", "restartCount": 2}]}
    await h.sync()
    assert h.condition_types()[0] == ("FailureTarget", "BackoffLimitExceeded")


async def test_finished_job_is_left_alone() -> None:
    """A Job with Complete or Failed is not synced again."""
    h = Harness(make_job())
    h.api.job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    assert await h.sync() is None
    assert h.api.log == [] and h.api.pods == {}


# --- ttl after finished ----------------------------------------------------------------


@pytest.mark.parametrize(("ttl", "conditions", "now", "left"), [
    (None, [{"type": "Complete", "status": "True", "lastTransitionTime": stamp()}], 0, None),
    (60, [], 0, None),
    (60, [{"type": "Complete", "status": "True", "lastTransitionTime": stamp()}], 10, 50.0),
    (60, [{"type": "Failed", "status": "True", "lastTransitionTime": stamp()}], 70, -10.0),
    (0, [{"type": "Complete", "status": "True", "lastTransitionTime": stamp()}], 0, 0.0),
])
def test_ttl_time_left(ttl: int | None, conditions: list[dict[str, Any]], now: float, left: float | None) -> None:
    """A finished Job with a TTL expires ttlSecondsAfterFinished after its Complete/Failed transition."""
    job = make_job(ttlSecondsAfterFinished=ttl)
    job["status"] = {"conditions": conditions}
    assert ttlafterfinished.time_left(job, START + datetime.timedelta(seconds=now)) == left


async def test_ttl_controller_deletes_in_foreground_with_uid_precondition() -> None:
    """An expired Job is deleted with foreground propagation, guarded by its uid; an unexpired one is requeued."""
    job = make_job(ttlSecondsAfterFinished=30)
    job["status"] = {"conditions": [{"type": "Complete", "status": "True", "lastTransitionTime": stamp()}]}
    clock = clock_mod.FakeClock(START)
    deletes: list[tuple[str, dict[str, Any]]] = []

    class Client:
        async def get(self, path: str, **kw: Any) -> dict[str, Any]:
            return copy.deepcopy(job)

        async def delete(self, path: str, **kw: Any) -> dict[str, Any]:
            deletes.append((path, kw))
            return {}

    ctl = ttlafterfinished.TTLAfterFinishedController(Client(), clock=clock)  # type: ignore[arg-type]
    ctl.jobs._cache[KEY] = job
    outcome = await ctl.reconcile(KEY)
    assert outcome.kind == "requeue_after" and outcome.after == 30
    clock.advance(30)
    await ctl.reconcile(KEY)
    assert deletes == [("/apis/batch/v1/namespaces/ns/jobs/work",
                        {"propagation_policy": "Foreground", "preconditions": {"uid": "job-uid"}})]
