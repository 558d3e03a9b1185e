"""End to end: no container outlives `pocketkube up` (SIGKILL, SIGTERM, SIGINT); a restart runs its pods again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
MARK = "pk-h3-restart-marker"


def up(data_dir: str) -> tuple[subprocess.Popen[str], cluster_mod.Cluster]:
    """`pocketkube up --nodes 1` on data_dir, and a Cluster to run kubectl against it."""
    c = cluster_mod.Cluster(data_dir)
    log = open(c.log_path, "a")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen([sys.executable, "-m", "pocketkube", "up", "--data-dir", data_dir, "--port", "0",
                             "--nodes", "1"], cwd=cluster_mod.ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1"))
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if "is up at" in line:
            cluster_mod.eventually(lambda: c.kubectl("get", "node", NODE, check=False).returncode == 0,
                                   what="the node to register")
            return proc, c
        assert line or proc.poll() is None, f"pocketkube up exited: {c.log()}"
    raise AssertionError(f"pocketkube up did not start: {c.log()}")


def alive(marker: str) -> list[int]:
    """Live (not zombie) processes whose environment holds marker (every process of the test's container)."""
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                cmd = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmd and state != "Z":
            out.append(int(pid))
    return out


def _pod(marker: str) -> str:
    # A main process and a child of it, each carrying the marker: both must die with the agent.
    c = {"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 3601 & exec sleep 3602"],
         "env": [{"name": "PK_TEST_MARKER", "value": marker}]}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "survivor"},
                       "spec": {"nodeName": NODE, "containers": [c], "terminationGracePeriodSeconds": 1}})


def _container(c: cluster_mod.Cluster) -> dict[str, object]:
    return dict((c.json("get", "pod", "survivor")["status"].get("containerStatuses") or [{}])[0])


def _running(c: cluster_mod.Cluster, restarts: int) -> bool:
    s = _container(c)
    return "running" in (s.get("state") or {}) and s.get("restartCount") == restarts


def _stop(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_sigkilled_agent_leaves_no_process_and_restart_runs_the_pod_again(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """SIGKILL of `pocketkube up` kills every container process; a restart runs the pod with restartCount 1."""
    marker = f"{MARK}-{os.getpid()}-kill"
    proc, c = up(str(tmp_path))
    try:
        c.kubectl("apply", "-f", "-", input=_pod(marker))
        cluster_mod.eventually(lambda: _running(c, 0) and len(alive(marker)) == 2, timeout=30, what="the pod to run")
        proc.kill()
        proc.wait()
        cluster_mod.eventually(lambda: not alive(marker), timeout=10, what="container processes to die")
        proc, c = up(str(tmp_path))
        cluster_mod.eventually(lambda: _running(c, 1) and len(alive(marker)) == 2, timeout=30,
                               what="the pod to run again")
        last = _container(c)["lastState"]["terminated"]  # type: ignore[index]
        assert (last["exitCode"], last["reason"]) == (137, "Error")
        events = c.json("get", "events")["items"]
        assert any(e["reason"] == "SandboxChanged" and e["involvedObject"]["name"] == "survivor" for e in events)
        logs = c.kubectl("logs", "survivor", "--previous", check=False)
        assert logs.returncode == 0, logs.stderr
    finally:
        _stop(proc, signal.SIGTERM)
    cluster_mod.eventually(lambda: not alive(marker), timeout=10, what="container processes to stop with SIGTERM")


def test_sigint_and_sigterm_stop_every_container(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Stopping `pocketkube up` with SIGINT (Ctrl+C) or SIGTERM stops its containers; a restart runs them again."""
    marker = f"{MARK}-{os.getpid()}-int"
    proc, c = up(str(tmp_path))
    try:
        c.kubectl("apply", "-f", "-", input=_pod(marker))
        cluster_mod.eventually(lambda: _running(c, 0) and len(alive(marker)) == 2, timeout=30, what="the pod to run")
        _stop(proc, signal.SIGINT)
        assert proc.returncode == 0
        cluster_mod.eventually(lambda: not alive(marker), timeout=10, what="container processes to stop with SIGINT")
        proc, c = up(str(tmp_path))
        cluster_mod.eventually(lambda: _running(c, 1) and len(alive(marker)) == 2, timeout=30,
                               what="the pod to run again")
    finally:
        _stop(proc, signal.SIGTERM)
    assert proc.returncode == 0
    cluster_mod.eventually(lambda: not alive(marker), timeout=10, what="container processes to stop with SIGTERM")
