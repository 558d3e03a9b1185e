"""End to end: postStart and preStop hooks on a process node, driven by the real kubectl."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE


def _pod(name: str, command: list[str], *, grace: int = 5, policy: str = "Always", **container: Any) -> str:
    c = {"name": "main", "image": "python:3.11", "command": command, **container}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": NODE, "containers": [c], "restartPolicy": policy,
                                "terminationGracePeriodSeconds": grace}})


def _get(cluster: cluster_mod.Cluster, name: str) -> dict[str, Any]:
    return dict(cluster.json("get", "pod", name))


def _events(cluster: cluster_mod.Cluster, name: str) -> list[tuple[str, str, str]]:
    items = cluster.json("get", "events")["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


def test_post_start_runs_before_the_container_counts_as_running(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A postStart exec hook's file is there when the pod turns Running; the app sees it in its log."""
    marker = os.path.join(cluster.data_dir, "poststart-ran")
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "hooked", ["sh", "-c", f"while [ ! -s {marker} ]; do sleep 0.1; done; cat {marker}; sleep 3600"],
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", f"sleep 1; echo from-post-start > {marker}"]}}}))
    cluster_mod.eventually(lambda: _get(cluster, "hooked")["status"].get("phase") == "Running", timeout=20)
    assert os.path.exists(marker)
    status = _get(cluster, "hooked")["status"]["containerStatuses"][0]
    assert status["started"] is True and "running" in status["state"]
    cluster_mod.eventually(lambda: "from-post-start" in cluster.kubectl("logs", "hooked").stdout)
    cluster.kubectl("delete", "pod", "hooked", "--wait=true")


def test_failing_post_start_kills_and_restarts(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A failing postStart hook gives FailedPostStartHook and Killing events and the container restarts."""
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "badhook", ["sleep", "3600"], grace=1,
        lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "exit 3"]}}}))
    cluster_mod.eventually(
        lambda: _get(cluster, "badhook")["status"].get("containerStatuses", [{}])[0].get("restartCount", 0) >= 1,
        timeout=30)
    events = _events(cluster, "badhook")
    assert ("Warning", "FailedPostStartHook", "PostStartHook failed") in events
    assert ("Normal", "Killing", "FailedPostStartHook") in events
    cluster.kubectl("delete", "pod", "badhook", "--wait=true")


def test_pre_stop_runs_before_sigterm(cluster: cluster_mod.Cluster, agent: str) -> None:
    """On delete, the preStop hook runs to completion before the container gets SIGTERM."""
    hook = os.path.join(cluster.data_dir, "prestop-ran")
    seen = os.path.join(cluster.data_dir, "term-saw-prestop")
    script = f"trap 'if [ -e {hook} ]; then touch {seen}; fi; exit 0' TERM; while true; do sleep 0.1; done"
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "stopper", ["sh", "-c", script], grace=10,
        lifecycle={"preStop": {"exec": {"command": ["sh", "-c", f"sleep 1; touch {hook}"]}}}))
    cluster_mod.eventually(lambda: _get(cluster, "stopper")["status"].get("phase") == "Running", timeout=20)
    cluster.kubectl("delete", "pod", "stopper", "--wait=true")
    assert os.path.exists(hook) and os.path.exists(seen)


def test_sleep_pre_stop_and_tcp_socket_hook(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A sleep preStop delays termination; a tcpSocket hook is accepted by the API and fails when run."""
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "tcphook", ["sleep", "3600"], grace=1, policy="Never",
        lifecycle={"postStart": {"tcpSocket": {"port": 1}}}))
    cluster_mod.eventually(lambda: ("Warning", "FailedPostStartHook", "PostStartHook failed")
                           in _events(cluster, "tcphook"), timeout=20)
    cluster_mod.eventually(lambda: _get(cluster, "tcphook")["status"].get("phase") == "Failed", timeout=20)
    cluster.kubectl("delete", "pod", "tcphook", "--wait=true")


def test_pods_waiting_out_their_grace_period_hold_up_no_new_pod(cluster: cluster_mod.Cluster, agent: str) -> None:
    """More deleted pods ignoring SIGTERM than the node has pod workers: a new pod still starts at once, and a
    forced deletion then ends them without waiting their grace period out."""
    stubborn = 18  # more than node/podworkers.WORKERS
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "stubborn"},
                "spec": {"replicas": stubborn, "selector": {"matchLabels": {"app": "stubborn"}},
                         "template": {"metadata": {"labels": {"app": "stubborn"}},
                                      "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 120,
                                               "containers": [{"name": "main", "image": "busybox", "command": [
                                                   "sh", "-c", "trap '' TERM; while true; do sleep 1; done"]}]}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(manifest))
    cluster.kubectl("rollout", "status", "deployment/stubborn", "--timeout=60s")
    cluster.kubectl("delete", "deployment", "stubborn", "--wait=false")
    cluster_mod.eventually(lambda: sum(1 for p in cluster.json("get", "pods", "-l", "app=stubborn")["items"]
                                       if p["metadata"].get("deletionTimestamp")) == stubborn, timeout=20)
    cluster.kubectl("apply", "-f", "-", input=_pod("quick", ["sleep", "3600"], grace=0))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/quick", "--timeout=15s")
    assert len(cluster.json("get", "pods", "-l", "app=stubborn")["items"]) == stubborn  # still in their grace
    cluster.kubectl("delete", "pod", "-l", "app=stubborn", "--force", "--grace-period=0")
    cluster_mod.eventually(lambda: not cluster.json("get", "pods", "-l", "app=stubborn")["items"], timeout=20)
    cluster.kubectl("delete", "pod", "quick", "--wait=true")
