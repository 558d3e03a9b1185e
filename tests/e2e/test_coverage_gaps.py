"""End to end: the last issue-3 gaps of the coverage audit (probe thresholds and grace, cron time zones, pod GC)."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import time
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
NS = "gaps"
# No scheduler or kubelet picks these pods up: they stay Pending, so their Jobs run as long as the test wants.
SCHEDULER = "e2e-manual"
GHOST_NODE = "ghost-node"


def _get(cluster: cluster_mod.Cluster, *args: str) -> dict[str, Any]:
    return dict(cluster.json("get", *args))


def _ready(pod: dict[str, Any]) -> str:
    return next((c["status"] for c in (pod.get("status") or {}).get("conditions") or [] if c["type"] == "Ready"), "")


def _events(cluster: cluster_mod.Cluster, name: str, *ns: str) -> list[dict[str, Any]]:
    items = cluster.json(*ns, "get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return list(items)


def _stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _cronjob(name: str, schedule: str, **spec: Any) -> str:
    pod_spec = {"schedulerName": SCHEDULER, "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["sleep", "3600"]}]}
    return json.dumps({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": name, "namespace": NS},
                       "spec": {"schedule": schedule, **spec,
                                "jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}})


class _Started:
    """The slow scenarios, started together when the module's cluster comes up so their waits overlap."""

    def __init__(self, cluster: cluster_mod.Cluster) -> None:
        cluster.kubectl("create", "namespace", NS)
        cluster_mod.eventually(lambda: cluster.kubectl("-n", NS, "get", "sa", "default", check=False).returncode == 0,
                               what="the namespace's default ServiceAccount")
        self.minutely_created = time.time()
        cluster.kubectl("apply", "-f", "-", input=_cronjob("minutely", "* * * * *", timeZone="Europe/Paris"))
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": GHOST_NODE}}
        cluster.kubectl("create", "-f", "-", input=json.dumps(node))
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "namespace": NS},
               "spec": {"nodeName": GHOST_NODE, "containers": [{"name": "main", "image": "busybox"}]}}
        cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
        env = dict(os.environ, KUBECONFIG=cluster.kubeconfig)
        # A watch catches the orphan's last state (Failed, DisruptionTarget) that exists only just before deletion.
        self.watch_path = os.path.join(cluster.data_dir, "orphan-watch.json")
        self.watch_out = open(self.watch_path, "w")  # noqa: SIM115 - closed when the module ends
        self.watch = subprocess.Popen([cluster_mod.kubectl_binary(), "-n", NS, "get", "pod", "orphan", "--watch",
                                       "-o", "json", "--output-watch-events"], env=env, stdout=self.watch_out,
                                      stderr=subprocess.DEVNULL)
        cluster.kubectl("delete", "node", GHOST_NODE)
        self.node_deleted = time.monotonic()
        # Same-minute runs share a Job name, which kube skips while it is active: the replacing run is the first
        # one of the next minute, so this starts early too.
        self.replacer_created = time.monotonic()
        cluster.kubectl("apply", "-f", "-", input=_cronjob("replacer", "@every 5s", concurrencyPolicy="Replace"))

    def close(self) -> None:
        self.watch.kill()
        self.watch.wait()
        self.watch_out.close()


@pytest.fixture(scope="module")
def started(cluster: cluster_mod.Cluster) -> Any:
    s = _Started(cluster)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(autouse=True)
def _start_early(started: _Started) -> None:
    """Every test starts the slow scenarios first (only the first one really does)."""


def _probe_pod(name: str, command: list[str], *, grace: int = 1, **container: Any) -> str:
    c = {"name": "main", "image": "python:3.11", "command": command, **container}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": NODE, "containers": [c], "terminationGracePeriodSeconds": grace}})


def test_readiness_waits_for_success_threshold(cluster: cluster_mod.Cluster, agent: str) -> None:
    """With successThreshold 3 the pod stays unready after its first successes and turns Ready after the third."""
    count = os.path.join(cluster.data_dir, "readiness-runs")
    probe = {"exec": {"command": ["sh", "-c", f"echo run >> {count}"]}, "periodSeconds": 2, "successThreshold": 3}
    cluster.kubectl("apply", "-f", "-", input=_probe_pod("thrice", ["sleep", "3600"], readinessProbe=probe))

    def runs() -> int:
        try:
            with open(count) as f:
                return len(f.read().splitlines())
        except FileNotFoundError:
            return 0

    seen_unready_after_success = False
    deadline = time.monotonic() + 30
    while True:
        before = runs()
        pod = _get(cluster, "pod", "thrice")
        after = runs()
        if _ready(pod) == "True":
            # The result is committed only after the third success in a row.
            assert after >= 3, f"Ready after {after} probe runs"
            break
        if before >= 1 and (pod.get("status") or {}).get("phase") == "Running":
            seen_unready_after_success = True
        assert time.monotonic() < deadline, f"not Ready after {after} successful probe runs"
        time.sleep(0.2)
    assert seen_unready_after_success
    assert pod["status"]["containerStatuses"][0]["ready"] is True
    described = cluster.kubectl("describe", "pod", "thrice").stdout
    assert "delay=0s timeout=1s period=2s #success=3 #failure=3" in described
    cluster.kubectl("delete", "pod", "thrice", "--wait=true")


IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(3600)"


def _liveness_kill(cluster: cluster_mod.Cluster, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run a SIGTERM-ignoring container (pod grace 60) until liveness restarts it: its status and the Killing event."""
    # The delay gives python time to ignore SIGTERM before the first kill.
    probe = {"exec": {"command": ["false"]}, "initialDelaySeconds": 2, "periodSeconds": 1, "failureThreshold": 1,
             "terminationGracePeriodSeconds": 2}
    cluster.kubectl("apply", "-f", "-", input=_probe_pod(name, [sys.executable, "-c", IGNORES_TERM], grace=60,
                                                         livenessProbe=probe))

    def restarted() -> dict[str, Any]:
        statuses = (_get(cluster, "pod", name).get("status") or {}).get("containerStatuses") or [{}]
        return dict(statuses[0]) if statuses[0].get("restartCount", 0) >= 1 else {}

    cs = cluster_mod.eventually(restarted, timeout=30, what="a liveness restart")
    killing = [e for e in _events(cluster, name) if e["reason"] == "Killing"]
    cluster.kubectl("delete", "pod", name, "--grace-period=1", "--wait=true")
    assert killing
    return cs, killing[0]


def test_liveness_kill_uses_the_probe_grace_period(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A liveness kill waits the probe's terminationGracePeriodSeconds (2 s), not the pod's 60, before SIGKILL."""
    cs, killing = _liveness_kill(cluster, "stubborn")
    assert cs["restartCount"] == 1
    assert killing["message"] == "Container main failed liveness probe, will be restarted"
    terminated = cs["lastState"]["terminated"]
    # SIGTERM is ignored, so the container only ends with the SIGKILL after the probe's grace period.
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")
    # Started, first (failing) probe 2 s later, then 2 s of grace: about 4 s, nowhere near the pod's 60.
    lived = (_stamp(terminated["finishedAt"]) - _stamp(terminated["startedAt"])).total_seconds()
    assert 3 <= lived <= 10, f"the container lived {lived}s"


def test_killing_event_comes_before_the_grace_period(cluster: cluster_mod.Cluster, agent: str) -> None:
    """The Killing event is recorded when the kill starts, so the container ends a grace period after it."""
    cs, killing = _liveness_kill(cluster, "stubborn2")
    assert killing["count"] == 1  # the first kill's event, and the first container's end
    took = (_stamp(cs["lastState"]["terminated"]["finishedAt"]) - _stamp(killing["firstTimestamp"])).total_seconds()
    assert 1 <= took <= 5, f"the container ended {took}s after the Killing event"


def test_cron_schedule_with_time_zone_fires_at_the_minute(cluster: cluster_mod.Cluster, started: _Started) -> None:
    """A "* * * * *" CronJob in Europe/Paris fires at the next whole minute with a <name>-<unix minutes> Job."""
    def fired() -> dict[str, Any]:
        jobs = [j for j in cluster.json("-n", NS, "get", "jobs")["items"]
                if j["metadata"]["name"].startswith("minutely-")]
        return dict(jobs[0]) if jobs else {}

    job = cluster_mod.eventually(fired, timeout=max(1.0, started.minutely_created + 65 - time.time()), every=1,
                                 what="the CronJob's first Job")
    stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"]
    scheduled = datetime.datetime.fromisoformat(stamp)
    assert scheduled.second == 0 and scheduled.utcoffset() == datetime.timedelta(hours=1)  # CET in November
    assert job["metadata"]["name"] == f"minutely-{int(scheduled.timestamp()) // 60}"
    assert started.minutely_created - 1 <= scheduled.timestamp() <= started.minutely_created + 61
    status = cluster_mod.eventually(lambda: _get(cluster, "-n", NS, "cronjob", "minutely")["status"].get(
        "lastScheduleTime") and _get(cluster, "-n", NS, "cronjob", "minutely")["status"])
    assert _stamp(status["lastScheduleTime"]) == scheduled
    assert status["lastScheduleTime"].endswith(":00Z")
    assert [r["name"] for r in status["active"]] == [job["metadata"]["name"]]


def test_invalid_time_zone_is_refused(cluster: cluster_mod.Cluster) -> None:
    """A timeZone no tz database knows is refused with the message of Go's time.LoadLocation, as kube does."""
    for tz in ("Mars/Olympus_Mons", "Europe/Pariss"):
        out = cluster.kubectl("-n", NS, "create", "-f", "-", input=_cronjob("badtz", "* * * * *", timeZone=tz),
                              check=False)
        assert out.returncode == 1
        assert out.stderr.strip() == (f'The CronJob "badtz" is invalid: spec.timeZone: Invalid value: "{tz}": '
                                      f"unknown time zone {tz}")


def test_replace_policy_replaces_the_running_job(cluster: cluster_mod.Cluster, started: _Started) -> None:
    """With concurrencyPolicy Replace the next run deletes the still running Job and starts a new one."""
    def replaced() -> tuple[str, str] | None:
        events = [(e["reason"], e["message"]) for e in _events(cluster, "replacer", "-n", NS)]
        created = [m.removeprefix("Created job ") for r, m in events if r == "SuccessfulCreate"]
        deleted = {m.removeprefix("Deleted job ") for r, m in events if r == "SuccessfulDelete"}
        # Each minute's run is named for that minute and replaces the one before it, which never finishes.
        return next(((old, new) for old in deleted for new in created
                     if int(new.rsplit("-", 1)[1]) == int(old.rsplit("-", 1)[1]) + 1), None)

    got = cluster_mod.eventually(replaced, timeout=max(1.0, started.replacer_created + 75 - time.monotonic()),
                                 every=1, what="a replacing run")
    assert got is not None
    old, new = got
    assert cluster.kubectl("-n", NS, "get", "job", old, check=False).returncode != 0
    active = _get(cluster, "-n", NS, "cronjob", "replacer")["status"]["active"]
    assert len(active) == 1 and active[0]["name"] >= new
    cluster.kubectl("-n", NS, "delete", "cronjob", "replacer")


def test_pod_gc_deletes_pods_of_a_deleted_node_after_quarantine(cluster: cluster_mod.Cluster,
                                                                started: _Started) -> None:
    """A pod bound to a Node that was deleted is failed and force-deleted by pod GC, not before 40 s have passed."""
    gone = cluster_mod.eventually(
        lambda: cluster.kubectl("-n", NS, "get", "pod", "orphan", check=False).returncode != 0 and time.monotonic(),
        timeout=max(1.0, started.node_deleted + 70 - time.monotonic()), every=1, what="the orphan pod deleted")
    assert gone - started.node_deleted >= 39, "pod GC did not wait for the quarantine time"
    started.watch_out.flush()
    with open(started.watch_path) as f:
        text = f.read()
    events = _json_objects(text)
    last = [e["object"] for e in events if e["type"] == "MODIFIED"]
    assert last and last[-1]["status"]["phase"] == "Failed"
    cond = next(c for c in last[-1]["status"]["conditions"] if c["type"] == "DisruptionTarget")
    assert (cond["status"], cond["reason"], cond["message"]) == ("True", "DeletionByPodGC",
                                                                 "PodGC: node no longer exists")
    assert events[-1]["type"] == "DELETED"


def _json_objects(text: str) -> list[Any]:
    """The JSON documents of a stream of pretty-printed ones, as `kubectl get -w -o json` prints them."""
    decoder, out, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) >= 0:
        doc, at = decoder.raw_decode(text, at)
        out.append(doc)
    return out
