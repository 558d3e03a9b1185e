"""End to end: cgroup limits on a process node (OOMKilled, CPU quota) and container log rotation."""

from __future__ import annotations

import collections.abc
import json
import os
import subprocess
import time
from typing import Any

import pytest

from pocketkube.node import cgroups, logrotate, process
from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
LOG_ENV = {logrotate.MAX_SIZE_ENV: "4Ki", logrotate.MAX_FILES_ENV: "3"}


@pytest.fixture(scope="module")
def agent(cluster: cluster_mod.Cluster) -> collections.abc.Iterator[str]:
    """A process node whose container logs rotate at 4Ki, keeping 3 files."""
    saved = {k: os.environ.get(k) for k in LOG_ENV}
    os.environ.update(LOG_ENV)
    try:
        with cluster_mod.process_node(cluster) as pods_dir:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            yield pods_dir
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def layout(cluster: cluster_mod.Cluster) -> cgroups.Layout:
    found = cgroups.detect(process.cgroup_name(os.path.join(cluster.data_dir, "nodes", NODE)))
    if found.problem or os.geteuid() != 0:
        pytest.skip(f"cgroups are not usable here: {found.problem or 'not root'}")
    return found


def _pod(name: str, command: list[str], *, policy: str = "Always", **container: Any) -> str:
    c = {"name": "main", "image": "python:3.11", "command": command, **container}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": NODE, "containers": [c], "restartPolicy": policy,
                                "terminationGracePeriodSeconds": 1}})


def _status(cluster: cluster_mod.Cluster, name: str) -> dict[str, Any]:
    return dict((cluster.json("get", "pod", name)["status"].get("containerStatuses") or [{}])[0])


ALLOCATE = "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(3600)"


def test_memory_limit_oom_kills_and_restarts(cluster: cluster_mod.Cluster, agent: str,
                                             layout: cgroups.Layout) -> None:
    """Allocating 200MB under limits.memory 50Mi ends OOMKilled (exit 137) and restarts with back-off."""
    cluster.kubectl("apply", "-f", "-", input=_pod("hog", ["python3", "-c", ALLOCATE],
                                                   resources={"limits": {"memory": "50Mi"}}))

    def oom_seen() -> bool:
        s = _status(cluster, "hog")
        term = (s.get("lastState") or {}).get("terminated") or (s.get("state") or {}).get("terminated") or {}
        return term.get("reason") == "OOMKilled" and term.get("exitCode") == 137

    cluster_mod.eventually(oom_seen, timeout=30, what="an OOMKilled termination")
    cluster_mod.eventually(lambda: _status(cluster, "hog").get("restartCount", 0) >= 2 and
                           (_status(cluster, "hog").get("state") or {}).get("waiting", {}).get("reason")
                           == "CrashLoopBackOff", timeout=30, what="CrashLoopBackOff after OOM kills")
    row = cluster.kubectl("get", "pod", "hog").stdout.splitlines()[1].split()
    assert row[2] in ("OOMKilled", "CrashLoopBackOff")
    assert cluster.json("get", "pod", "hog")["status"]["qosClass"] == "Burstable"
    cluster.kubectl("delete", "pod", "hog", "--wait=true")


def test_cpu_limit_sets_the_cfs_quota(cluster: cluster_mod.Cluster, agent: str, layout: cgroups.Layout) -> None:
    """A container with limits.cpu 250m runs in a cgroup whose CFS quota is 25ms per 100ms period."""
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "capped", ["sleep", "3600"], resources={"limits": {"cpu": "250m", "memory": "64Mi"}}))
    cluster_mod.eventually(lambda: "running" in (_status(cluster, "capped").get("state") or {}), timeout=20)
    pod = cluster.json("get", "pod", "capped")
    uid, qos = pod["metadata"]["uid"], pod["status"]["qosClass"]
    assert qos == "Guaranteed"
    rel = os.path.join(cgroups.pod_relpath(qos, uid), "main")
    if layout.version == cgroups.V1:
        with open(os.path.join(layout.roots["cpu"], rel, "cpu.cfs_quota_us")) as f:
            assert f.read().strip() == "25000"
        with open(os.path.join(layout.roots["memory"], rel, "memory.limit_in_bytes")) as f:
            assert f.read().strip() == str(64 * 2**20)
    else:
        with open(os.path.join(layout.roots[""], rel, "cpu.max")) as f:
            assert f.read().strip() == "25000 100000"
    cluster.kubectl("delete", "pod", "capped", "--wait=true")
    assert not any(os.path.exists(os.path.join(r, cgroups.pod_relpath(qos, uid))) for r in layout.roots.values())


def test_logs_rotate_and_follow_continues(cluster: cluster_mod.Cluster, agent: str) -> None:
    """Past containerLogMaxSize the log rotates, keeping maxFiles; kubectl logs shows the current file."""
    script = "import time\nfor i in range(400):\n    print(f'line {i:04d} ' + 'x' * 40, flush=True)\n" \
             "    time.sleep(0.005)\ntime.sleep(3600)"
    cluster.kubectl("apply", "-f", "-", input=_pod("chatty", ["python3", "-u", "-c", script]))
    uid = cluster.json("get", "pod", "chatty")["metadata"]["uid"]
    log0 = os.path.join(agent, uid, "main", "0.log")
    cluster_mod.eventually(lambda: os.path.exists(log0), timeout=20)
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig)
    follow = subprocess.Popen([cluster_mod.kubectl_binary(), "logs", "-f", "chatty"], stdout=subprocess.PIPE,
                              text=True, env=env)
    try:
        assert follow.stdout is not None
        followed = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = follow.stdout.readline()
            followed.append(line.split()[1])
            if line.startswith("line 0399"):
                break
    finally:
        follow.kill()
        follow.wait()
    # Followed across every rotation: from where it joined, no line lost or repeated.
    first = int(followed[0])
    assert followed == [f"{i:04d}" for i in range(first, 400)] and first < 100
    assert len(logrotate.rotated(log0)) == 2  # maxFiles 3: the current file and two rotated ones
    assert os.path.getsize(log0) <= 4096
    current = cluster.kubectl("logs", "chatty").stdout.splitlines()
    assert current[-1].startswith("line 0399") and 0 < len(current) < 100
    assert cluster.kubectl("logs", "chatty", "--tail=3").stdout.splitlines() == current[-3:]
    cluster.kubectl("delete", "pod", "chatty", "--wait=true")
