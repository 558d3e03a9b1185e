"""End to end: kubectl exec, attach and cp into process-runtime pods, through the API server and the kubelet API."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
OLD = 27  # kubectl 1.27 speaks SPDY/3.1 only; 1.30+ try websockets (v5.channel.k8s.io) first


def _apply(cluster: cluster_mod.Cluster, *objs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def _pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": NODE, "containers": list(containers), **spec}}


def _sleeper(name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", "exec sleep 3600"], **extra}


def _running(cluster: cluster_mod.Cluster, name: str) -> None:
    cluster_mod.eventually(lambda: cluster.kubectl("exec", name, "--", "true", check=False).returncode == 0,
                           what=f"exec into {name}")


def test_exec_sees_the_container_and_returns_its_exit_code(cluster: cluster_mod.Cluster, agent: str) -> None:
    """exec runs in the container's mount namespace with its env and working dir; exit codes come back."""
    _apply(cluster,
           {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "exec-cfg"}, "data": {"key": "from-config"}},
           _pod("shell", _sleeper(env=[{"name": "GREETING", "value": "hi"}], workingDir="/etc/config",
                                  volumeMounts=[{"name": "cfg", "mountPath": "/etc/config"}]),
                volumes=[{"name": "cfg", "configMap": {"name": "exec-cfg"}}]))
    _running(cluster, "shell")
    assert cluster.kubectl("exec", "shell", "--", "cat", "/etc/config/key").stdout == "from-config"
    got = cluster.kubectl("exec", "shell", "--", "sh", "-c", "echo $GREETING; pwd; echo oops >&2; exit 3", check=False)
    assert (got.returncode, got.stdout) == (3, "hi\n/etc/config\n")
    assert "oops\ncommand terminated with exit code 3" in got.stderr
    piped = cluster.kubectl("exec", "-i", "shell", "--", "sh", "-c", "cat; echo end", input="line one\nline two\n")
    assert piped.stdout == "line one\nline two\nend\n"
    missing = cluster.kubectl("exec", "shell", "--", "no-such-command", check=False)
    assert missing.returncode == 1
    assert "error: Internal error occurred: error executing command in container: failed to exec in container: " \
           "failed to start exec" in missing.stderr
    assert 'exec: "no-such-command": executable file not found in $PATH: unknown' in missing.stderr


def test_container_choice_and_refusals(cluster: cluster_mod.Cluster, agent: str) -> None:
    """-c picks a container; a wrong one, an unscheduled pod or a stopped container get kube's errors."""
    _apply(cluster,
           _pod("pair", _sleeper("a"), _sleeper("b", env=[{"name": "WHO", "value": "b"}])),
           _pod("crasher", {"name": "main", "image": "busybox", "command": ["sh", "-c", "exit 1"]},
                restartPolicy="Never"),
           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unscheduled"},
            "spec": {"nodeSelector": {"no-such": "node"}, "containers": [_sleeper()]}})
    cluster_mod.eventually(lambda: cluster.kubectl("exec", "pair", "-c", "b", "--", "true", check=False).returncode == 0,
                           what="exec into pair")
    assert cluster.kubectl("exec", "pair", "-c", "b", "--", "sh", "-c", "echo $WHO").stdout == "b\n"
    raw = cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/pair/exec?command=true&stdout=true",
                          check=False)
    assert "a container name must be specified for pod pair, choose one of: [a b]" in raw.stderr
    wrong = cluster.kubectl("exec", "pair", "-c", "nope", "--", "true", check=False)
    assert wrong.returncode == 1 and "Error from server (BadRequest): container nope is not valid for pod pair" \
        in wrong.stderr
    pending = cluster.kubectl("exec", "unscheduled", "--", "true", check=False)
    assert "Error from server (BadRequest): pod unscheduled does not have a host assigned" in pending.stderr
    no_upgrade = cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/pair/exec?container=a&command=true"
                                 "&stdout=true", check=False)
    assert "Upgrade request required" in no_upgrade.stderr
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "crasher", "-o", "jsonpath={.status.phase}").stdout
                           == "Failed", what="the crasher to fail")
    # kubectl itself refuses pods that have completed.
    done = cluster.kubectl("exec", "crasher", "--", "true", check=False)
    assert "cannot exec into a container in a completed pod; current phase is Failed" in done.stderr


def test_stopped_container_is_not_found(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A container in back-off has no process: the kubelet's "container not found" reaches kubectl."""
    _apply(cluster, _pod("looper", {"name": "main", "image": "busybox", "command": ["sh", "-c", "exit 1"]}))
    cluster_mod.eventually(lambda: "CrashLoopBackOff" in cluster.kubectl("get", "pod", "looper").stdout,
                           what="back-off")
    for minor in (None, OLD):
        got = cluster.kubectl("exec", "looper", "--", "true", check=False, minor=minor)
        assert got.returncode == 1
        assert 'error: unable to upgrade connection: container not found ("main")' in got.stderr


def test_attach_follows_the_output(cluster: cluster_mod.Cluster, agent: str) -> None:
    """attach relays what the container writes from then on and returns when it exits."""
    script = "sleep 2; for i in 1 2 3; do echo tick $i; sleep 0.2; done"
    _apply(cluster, _pod("ticker", {"name": "main", "image": "busybox", "command": ["sh", "-c", script]},
                         restartPolicy="Never"))
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "ticker", "-o", "jsonpath={.status.phase}").stdout
                           == "Running", what="ticker running")
    got = cluster.kubectl("attach", "ticker", timeout=30)
    assert "tick 1\ntick 2\ntick 3\n" in got.stdout


def test_cp_both_ways(cluster: cluster_mod.Cluster, agent: str, tmp_path: Any) -> None:
    """kubectl cp copies files and directories into a container and back out (tar through exec)."""
    _apply(cluster, _pod("files", _sleeper(volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}]),
                         volumes=[{"name": "scratch", "emptyDir": {}}]))
    _running(cluster, "files")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "a.txt").write_text("alpha\n")
    (tmp_path / "in" / "sub" / "b.txt").write_text("beta\n")
    cluster.kubectl("cp", str(tmp_path / "in" / "a.txt"), "files:/scratch/a.txt")
    cluster.kubectl("cp", str(tmp_path / "in"), "files:/scratch/dir")
    listing = cluster.kubectl("exec", "files", "--", "sh", "-c", "cd /scratch && find . -type f | sort").stdout
    assert listing == "./a.txt\n./dir/a.txt\n./dir/sub/b.txt\n"
    cluster.kubectl("cp", "files:/scratch/dir", str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "beta\n"
    cluster.kubectl("cp", "files:/scratch/a.txt", str(tmp_path / "a-back.txt"), minor=OLD)
    assert (tmp_path / "a-back.txt").read_text() == "alpha\n"
    assert not os.path.exists("/scratch/a.txt")  # the files went into the pod's volume, not the host


def test_old_kubectl_over_spdy(cluster: cluster_mod.Cluster, agent: str) -> None:
    """kubectl 1.27 (SPDY/3.1 only) gets the same exec: output, exit codes, piped stdin, errors."""
    _apply(cluster, _pod("old", _sleeper()))
    _running(cluster, "old")
    got = cluster.kubectl("exec", "old", "--", "sh", "-c", "echo out; echo err >&2; exit 4", check=False, minor=OLD)
    assert (got.returncode, got.stdout) == (4, "out\n") and "err\ncommand terminated with exit code 4" in got.stderr
    assert cluster.kubectl("exec", "-i", "old", "--", "wc", "-l", input="a\nb\n", minor=OLD).stdout.strip() == "2"
    missing = cluster.kubectl("exec", "old", "-c", "nope", "--", "true", check=False, minor=OLD)
    assert "container nope is not valid for pod old" in missing.stderr
