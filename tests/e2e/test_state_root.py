"""End to end: a node keeps pods' runtime state and secret volumes in its state root on tmpfs, for its lifetime."""

from __future__ import annotations

import json
import os
import signal

from pocketkube.node import statedir
from tests.e2e import cluster as cluster_mod
from tests.e2e import test_agent_restart as restart

NODE = cluster_mod.PROCESS_NODE


def _pod() -> str:
    c = {"name": "main", "image": "busybox", "command": ["sh", "-c", "cat /etc/sec/pw; echo; exec sleep 3600"],
         "volumeMounts": [{"name": "sec", "mountPath": "/etc/sec"}]}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stateful"},
                       "spec": {"nodeName": NODE, "containers": [c], "terminationGracePeriodSeconds": 0,
                                "volumes": [{"name": "sec", "secret": {"secretName": "sec"}}]}})


def _running(c: cluster_mod.Cluster, restarts: int) -> bool:
    s = (c.json("get", "pod", "stateful")["status"].get("containerStatuses") or [{}])[0]
    return "running" in (s.get("state") or {}) and s.get("restartCount") == restarts


def test_state_root_lives_as_long_as_the_node(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The secret volume, resolv.conf and run markers are in the state root (logs on disk); a restart after a
    crash starts it afresh and runs the pod again from it; deleting the pod and stopping remove it."""
    node_dir = os.path.join(str(tmp_path), "nodes", NODE)
    root = statedir.choose(node_dir)
    proc, c = restart.up(str(tmp_path))
    try:
        c.kubectl("create", "secret", "generic", "sec", "--from-literal=pw=s3cret")
        c.kubectl("apply", "-f", "-", input=_pod())
        cluster_mod.eventually(lambda: _running(c, 0), timeout=30, what="the pod to run")
        uid = c.kubectl("get", "pod", "stateful", "-o", "jsonpath={.metadata.uid}").stdout
        run, disk = os.path.join(root, "pods", uid), os.path.join(node_dir, "pods", uid)
        assert os.stat(root).st_mode & 0o777 == 0o700
        with open(os.path.join(run, "volumes", "sec", "pw")) as f:
            assert f.read() == "s3cret"
        assert os.path.exists(os.path.join(run, "resolv.conf")) and os.path.exists(os.path.join(run, "main", "0.started"))
        assert not os.path.exists(os.path.join(disk, "volumes", "sec")), "the secret never reaches the data dir"
        cluster_mod.eventually(lambda: c.kubectl("logs", "stateful").stdout == "s3cret\n", what="the container's log")
        assert os.path.exists(os.path.join(disk, "main", "0.log"))

        proc.kill()
        proc.wait()
        os.makedirs(os.path.join(root, "pods", "left-by-the-crash"))
        proc, c = restart.up(str(tmp_path))
        cluster_mod.eventually(lambda: _running(c, 1), timeout=30, what="the pod to run again")
        assert not os.path.exists(os.path.join(root, "pods", "left-by-the-crash"))
        cluster_mod.eventually(lambda: c.kubectl("logs", "stateful").stdout == "s3cret\n", what="the new run's log")
        assert c.kubectl("logs", "stateful", "--previous").stdout == "s3cret\n"
        assert os.path.exists(os.path.join(run, "main", "1.started"))

        c.kubectl("delete", "pod", "stateful", "--wait=true", timeout=30)
        cluster_mod.eventually(lambda: not os.path.exists(run) and not os.path.exists(disk), timeout=10,
                               what="the pod's directories to go")
        assert os.path.isdir(root)
    finally:
        restart._stop(proc, signal.SIGTERM)
    assert proc.returncode == 0
    assert not os.path.exists(root), "the state root goes with the node"
