"""End to end: Jobs and CronJobs driven by the real kubectl, with pod outcomes patched through pods/status."""

from __future__ import annotations

import datetime
import json
import re
import time
from typing import Any

from tests.e2e import cluster as cluster_mod

NS = "batch-e2e"
# No scheduler or kubelet picks these pods up: the tests decide how they end.
SCHEDULER = "e2e-manual"


def _job(name: str, **spec: Any) -> str:
    pod_spec = {"schedulerName": SCHEDULER, "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}
    return json.dumps({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name, "namespace": NS},
                       "spec": {**spec, "template": {"spec": pod_spec}}})


def _setup(cluster: cluster_mod.Cluster) -> None:
    if cluster.kubectl("get", "ns", NS, check=False).returncode != 0:
        cluster.kubectl("create", "namespace", NS)


def _pods(cluster: cluster_mod.Cluster, job: str, count: int) -> list[dict[str, Any]]:
    def ready() -> list[dict[str, Any]] | None:
        items = cluster.json("-n", NS, "get", "pods", "-l", f"batch.kubernetes.io/job-name={job}")["items"]
        active = [p for p in items if p["status"].get("phase") == "Pending" and "deletionTimestamp" not in p["metadata"]]
        return active if len(active) >= count else None
    return cluster_mod.eventually(ready)


def _finish(cluster: cluster_mod.Cluster, pod: str, phase: str, exit_code: int) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"status": {"phase": phase, "containerStatuses": [{
        "name": "main", "image": "busybox", "imageID": "", "ready": False, "restartCount": 0,
        "state": {"terminated": {"exitCode": exit_code, "reason": "Completed" if exit_code == 0 else "Error",
                                 "startedAt": now, "finishedAt": now}}}]}}
    cluster.kubectl("-n", NS, "patch", "pod", pod, "--subresource=status", "--type=merge", "-p", json.dumps(status))


def _reason(cluster: cluster_mod.Cluster, job: str, ctype: str) -> str:
    conds = cluster.json("-n", NS, "get", "job", job)["status"].get("conditions") or []
    return next((c["reason"] for c in conds if c["type"] == ctype), "")


def test_job_runs_to_completion(cluster: cluster_mod.Cluster) -> None:
    """Two completions in parallel: pods carry the tracking finalizer until counted, then the Job completes."""
    _setup(cluster)
    cluster.kubectl("apply", "-f", "-", input=_job("pi", completions=2, parallelism=2))
    pods = _pods(cluster, "pi", 2)
    assert all(p["metadata"]["finalizers"] == ["batch.kubernetes.io/job-tracking"] for p in pods)
    assert all(p["metadata"]["ownerReferences"][0]["kind"] == "Job" for p in pods)
    running = cluster.kubectl("-n", NS, "get", "job", "pi").stdout
    assert re.search(r"^pi\s+Running\s+0/2\s+\d+s\s+\d+s$", running, re.M), running
    for p in pods:
        _finish(cluster, p["metadata"]["name"], "Succeeded", 0)
    cluster.kubectl("-n", NS, "wait", "--for=condition=complete", "job/pi", "--timeout=20s")
    table = cluster.kubectl("-n", NS, "get", "jobs").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert re.match(r"pi\s+Complete\s+2/2\s+\d+s\s+\d+s", next(line for line in table if line.startswith("pi "))), table
    status = cluster.json("-n", NS, "get", "job", "pi")["status"]
    assert status["succeeded"] == 2 and status["uncountedTerminatedPods"] == {} and status["completionTime"]
    assert [c["type"] for c in status["conditions"]] == ["SuccessCriteriaMet", "Complete"]
    for p in cluster.json("-n", NS, "get", "pods", "-l", "batch.kubernetes.io/job-name=pi")["items"]:
        assert "batch.kubernetes.io/job-tracking" not in (p["metadata"].get("finalizers") or [])
    described = cluster.kubectl("-n", NS, "describe", "job", "pi").stdout
    assert "Pods Statuses:    0 Active (0 Ready) / 2 Succeeded / 0 Failed" in described
    assert re.search(r"Normal\s+SuccessfulCreate\s+.*job-controller\s+Created pod: pi-", described), described
    assert re.search(r"Normal\s+Completed\s+.*job-controller\s+Job completed", described), described


def test_backoff_limit_exceeded(cluster: cluster_mod.Cluster) -> None:
    """With backoffLimit 0 one failed pod fails the Job with BackoffLimitExceeded."""
    _setup(cluster)
    cluster.kubectl("apply", "-f", "-", input=_job("fails", backoffLimit=0))
    (pod,) = _pods(cluster, "fails", 1)
    _finish(cluster, pod["metadata"]["name"], "Failed", 1)
    cluster.kubectl("-n", NS, "wait", "--for=condition=failed", "job/fails", "--timeout=20s")
    assert _reason(cluster, "fails", "Failed") == "BackoffLimitExceeded"
    assert _reason(cluster, "fails", "FailureTarget") == "BackoffLimitExceeded"
    described = cluster.kubectl("-n", NS, "describe", "job", "fails").stdout
    assert re.search(r"Warning\s+BackoffLimitExceeded\s+.*Job has reached the specified backoff limit", described)
    assert "0 Active (0 Ready) / 0 Succeeded / 1 Failed" in described
    assert re.search(r"^fails\s+Failed\s+0/1", cluster.kubectl("-n", NS, "get", "job", "fails").stdout, re.M)


def test_pod_failure_policy_fails_job_on_exit_code(cluster: cluster_mod.Cluster) -> None:
    """A FailJob rule on exit code 42 fails the Job at once with reason PodFailurePolicy."""
    _setup(cluster)
    policy = {"rules": [{"action": "FailJob", "onExitCodes": {"containerName": "main", "operator": "In",
                                                              "values": [42]}}]}
    cluster.kubectl("apply", "-f", "-", input=_job("policy", backoffLimit=6, podFailurePolicy=policy))
    (pod,) = _pods(cluster, "policy", 1)
    _finish(cluster, pod["metadata"]["name"], "Failed", 42)
    cluster.kubectl("-n", NS, "wait", "--for=condition=failed", "job/policy", "--timeout=20s")
    conds = cluster.json("-n", NS, "get", "job", "policy")["status"]["conditions"]
    failed = next(c for c in conds if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy"
    assert failed["message"] == (f"Container main for pod {NS}/{pod['metadata']['name']} failed with exit code 42 "
                                 "matching FailJob rule at index 0")


def test_indexed_job_reports_completed_indexes(cluster: cluster_mod.Cluster) -> None:
    """Indexed pods get index annotations, hostnames and env; completedIndexes lists finished indexes."""
    _setup(cluster)
    cluster.kubectl("apply", "-f", "-", input=_job("idx", completions=3, parallelism=3, completionMode="Indexed"))
    pods = {int(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]): p
            for p in _pods(cluster, "idx", 3)}
    assert sorted(pods) == [0, 1, 2]
    for ix, p in pods.items():
        assert p["spec"]["hostname"] == f"idx-{ix}"
        assert p["metadata"]["name"].startswith(f"idx-{ix}-")
        assert p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] == str(ix)
        assert p["spec"]["containers"][0]["env"][0]["name"] == "JOB_COMPLETION_INDEX"
    _finish(cluster, pods[0]["metadata"]["name"], "Succeeded", 0)
    _finish(cluster, pods[2]["metadata"]["name"], "Succeeded", 0)
    cluster_mod.eventually(lambda: cluster.json("-n", NS, "get", "job", "idx")["status"].get("completedIndexes") == "0,2")
    _finish(cluster, pods[1]["metadata"]["name"], "Succeeded", 0)
    cluster.kubectl("-n", NS, "wait", "--for=condition=complete", "job/idx", "--timeout=20s")
    assert cluster.json("-n", NS, "get", "job", "idx")["status"]["completedIndexes"] == "0-2"
    assert "Completed Indexes:  0-2" in cluster.kubectl("-n", NS, "describe", "job", "idx").stdout


def test_active_deadline_and_ttl(cluster: cluster_mod.Cluster) -> None:
    """activeDeadlineSeconds fails the Job (DeadlineExceeded, pod deleted); ttlSecondsAfterFinished deletes it."""
    _setup(cluster)
    cluster.kubectl("apply", "-f", "-", input=_job("slow", activeDeadlineSeconds=1, ttlSecondsAfterFinished=2))
    cluster.kubectl("-n", NS, "wait", "--for=condition=failed", "job/slow", "--timeout=20s")
    assert _reason(cluster, "slow", "Failed") == "DeadlineExceeded"
    described = cluster.kubectl("-n", NS, "describe", "job", "slow").stdout
    assert re.search(r"Normal\s+SuccessfulDelete\s+.*Deleted pod: slow-", described), described
    assert re.search(r"Warning\s+DeadlineExceeded\s+.*Job was active longer than specified deadline", described)
    cluster.kubectl("-n", NS, "wait", "--for=delete", "job/slow", "--timeout=20s")


def test_cronjob_fires_and_tracks_its_jobs(cluster: cluster_mod.Cluster) -> None:
    """A CronJob creates "<name>-<unix minutes>" Jobs, lists them as active, notes successes; create --from works."""
    _setup(cluster)
    pod_spec = {"schedulerName": SCHEDULER, "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["date"]}]}
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "tick", "namespace": NS},
          "spec": {"schedule": "@every 2s", "timeZone": "Asia/Kolkata", "concurrencyPolicy": "Forbid",
                   "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(cj))

    def scheduled() -> list[dict[str, Any]]:
        return [j for j in cluster.json("-n", NS, "get", "jobs")["items"] if j["metadata"]["name"].startswith("tick-")]
    (job,) = cluster_mod.eventually(scheduled, timeout=10)
    name = job["metadata"]["name"]
    stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    assert stamp.endswith("+05:30")
    assert name == f"tick-{int(datetime.datetime.fromisoformat(stamp).timestamp()) // 60}"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "CronJob"
    status = cluster_mod.eventually(lambda: cluster.json("-n", NS, "get", "cronjob", "tick")["status"].get("active") and
                                    cluster.json("-n", NS, "get", "cronjob", "tick")["status"])
    assert [r["name"] for r in status["active"]] == [name] and status["lastScheduleTime"]
    table = cluster.kubectl("-n", NS, "get", "cronjob", "tick").stdout
    assert re.search(r"^tick\s+@every 2s\s+Asia/Kolkata\s+False\s+1\s+\d+s\s+\d+s$", table, re.M), table
    (pod,) = _pods(cluster, name, 1)
    _finish(cluster, pod["metadata"]["name"], "Succeeded", 0)
    cluster_mod.eventually(lambda: cluster.json("-n", NS, "get", "cronjob", "tick")["status"].get("lastSuccessfulTime"))
    described = cluster.kubectl("-n", NS, "describe", "cronjob", "tick").stdout
    assert re.search(rf"Normal\s+SuccessfulCreate\s+.*cronjob-controller\s+Created job {name}", described), described
    assert re.search(rf"Normal\s+SawCompletedJob\s+.*Saw completed job: {name}, condition: Complete", described)
    cluster.kubectl("-n", NS, "patch", "cronjob", "tick", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    out = cluster.kubectl("-n", NS, "create", "job", "--from=cronjob/tick", "manual").stdout
    assert out.strip() == "job.batch/manual created"
    manual = cluster.json("-n", NS, "get", "job", "manual")
    assert manual["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert _pods(cluster, "manual", 1)


def _by_index(pods: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {int(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]): p for p in pods}


def test_backoff_limit_per_index_fails_only_that_index(cluster: cluster_mod.Cluster) -> None:
    """Index 1 failing twice with backoffLimitPerIndex 1 ends the Job FailedIndexes with failedIndexes "1"."""
    _setup(cluster)
    cluster.kubectl("apply", "-f", "-", input=_job("perindex", completions=3, parallelism=3,
                                                   completionMode="Indexed", backoffLimitPerIndex=1))
    pods = _by_index(_pods(cluster, "perindex", 3))
    assert all(p["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "0"
               for p in pods.values())
    job = cluster.json("-n", NS, "get", "job", "perindex")
    assert job["spec"]["backoffLimit"] == 2147483647 and job["status"]["failedIndexes"] == ""
    first = pods[1]["metadata"]["name"]
    _finish(cluster, first, "Failed", 1)

    def replacement() -> dict[str, Any] | None:
        items = cluster.json("-n", NS, "get", "pods", "-l", "batch.kubernetes.io/job-name=perindex")["items"]
        fresh = [p for p in items if p["metadata"]["name"] != first and p["status"].get("phase") == "Pending"]
        return _by_index(fresh).get(1)
    # The index backs off 10 s after its first failure.
    second = cluster_mod.eventually(replacement, timeout=30, what="replacement pod for index 1")
    assert second["metadata"]["annotations"]["batch.kubernetes.io/job-index-failure-count"] == "1"
    _finish(cluster, second["metadata"]["name"], "Failed", 1)
    cluster_mod.eventually(lambda: cluster.json("-n", NS, "get", "job", "perindex")["status"].get("failedIndexes") == "1")
    for ix in (0, 2):
        _finish(cluster, pods[ix]["metadata"]["name"], "Succeeded", 0)
    cluster.kubectl("-n", NS, "wait", "--for=condition=failed", "job/perindex", "--timeout=20s")
    status = cluster.json("-n", NS, "get", "job", "perindex")["status"]
    assert status["failedIndexes"] == "1" and status["completedIndexes"] == "0,2"
    assert status["failed"] == 2 and status["succeeded"] == 2
    assert [(c["type"], c["reason"]) for c in status["conditions"]] == [("FailureTarget", "FailedIndexes"),
                                                                        ("Failed", "FailedIndexes")]
    assert re.search(r"^perindex\s+Failed\s+2/3", cluster.kubectl("-n", NS, "get", "job", "perindex").stdout, re.M)
    described = cluster.kubectl("-n", NS, "describe", "job", "perindex").stdout
    assert "Completed Indexes:  0,2" in described
    assert re.search(r"Warning\s+FailedIndexes\s+.*Job has failed indexes", described), described


def test_success_policy_completes_after_index_zero(cluster: cluster_mod.Cluster) -> None:
    """A successPolicy on index 0 completes the Job as soon as index 0 succeeds and removes the other pods."""
    _setup(cluster)
    policy = {"rules": [{"succeededIndexes": "0"}]}
    cluster.kubectl("apply", "-f", "-", input=_job("leader", completions=3, parallelism=3, completionMode="Indexed",
                                                   successPolicy=policy))
    pods = _by_index(_pods(cluster, "leader", 3))
    _finish(cluster, pods[0]["metadata"]["name"], "Succeeded", 0)
    cluster.kubectl("-n", NS, "wait", "--for=condition=SuccessCriteriaMet", "job/leader", "--timeout=20s")
    cluster.kubectl("-n", NS, "wait", "--for=condition=complete", "job/leader", "--timeout=20s")
    status = cluster.json("-n", NS, "get", "job", "leader")["status"]
    assert [(c["type"], c["reason"], c["message"]) for c in status["conditions"]] == [
        ("SuccessCriteriaMet", "SuccessPolicy", "Matched rules at index 0"),
        ("Complete", "SuccessPolicy", "Matched rules at index 0")]
    assert status["succeeded"] == 1 and status["completedIndexes"] == "0" and "active" not in status
    cluster_mod.eventually(lambda: not [p for p in cluster.json("-n", NS, "get", "pods", "-l",
                                                                 "batch.kubernetes.io/job-name=leader")["items"]
                                        if p["status"].get("phase") == "Pending"])
    assert re.search(r"^leader\s+Complete\s+1/3", cluster.kubectl("-n", NS, "get", "job", "leader").stdout, re.M)


def test_per_index_and_success_policy_validation(cluster: cluster_mod.Cluster) -> None:
    """The API server refuses per-index limits and success policies on NonIndexed Jobs with kube's messages."""
    _setup(cluster)
    out = cluster.kubectl("apply", "-f", "-", input=_job("bad", backoffLimitPerIndex=1, maxFailedIndexes=1),
                          check=False)
    assert out.returncode == 1
    assert out.stderr.strip() == (
        'The Job "bad" is invalid: \n'
        "* spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode\n"
        "* spec.maxFailedIndexes: Invalid value: 1: requires indexed completion mode")
    policy = {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [3]}}]}
    out = cluster.kubectl("create", "-f", "-", input=_job("bad2", completions=2, completionMode="Indexed",
                                                          podFailurePolicy=policy), check=False)
    assert out.stderr.strip() == ('The Job "bad2" is invalid: spec.podFailurePolicy.rules[0].action: Invalid value: '
                                  '"FailIndex": requires the backoffLimitPerIndex to be set')


def test_fail_index_rule_exceeds_max_failed_indexes(cluster: cluster_mod.Cluster) -> None:
    """A FailIndex rule fails index 0 at once; with maxFailedIndexes 0 the Job fails MaxFailedIndexesExceeded."""
    _setup(cluster)
    policy = {"rules": [{"action": "FailIndex", "onExitCodes": {"containerName": "main", "operator": "In",
                                                                "values": [42]}}]}
    cluster.kubectl("apply", "-f", "-", input=_job("failindex", completions=2, parallelism=2, completionMode="Indexed",
                                                   backoffLimitPerIndex=3, maxFailedIndexes=0,
                                                   podFailurePolicy=policy))
    pods = _by_index(_pods(cluster, "failindex", 2))
    _finish(cluster, pods[0]["metadata"]["name"], "Failed", 42)
    cluster.kubectl("-n", NS, "wait", "--for=condition=failed", "job/failindex", "--timeout=20s")
    job = cluster.json("-n", NS, "get", "job", "failindex")
    assert job["spec"]["podReplacementPolicy"] == "Failed"
    status = job["status"]
    assert status["failedIndexes"] == "0" and status["failed"] == 2 and status.get("terminating", 0) == 0
    failed = next(c for c in status["conditions"] if c["type"] == "Failed")
    assert (failed["reason"], failed["message"]) == (
        "MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")
