"""End to end: a process node agent runs pods as real local processes, with volumes, exit codes and deletion."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE




def _pod(name: str, command: list[str], **spec: Any) -> str:
    container = {"name": "main", "image": "python:3.11", "command": command, **spec.pop("container", {})}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": NODE, "containers": [container], **spec}})


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_running_pod_with_configmap_and_emptydir(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A pod copies its configMap volume into an emptyDir, runs 1/1, and deleting it stops the process."""
    cluster.kubectl("create", "configmap", "demo", "--from-literal=key=hello-from-configmap")
    script = ("import os, shutil, time; shutil.copy('/etc/demo/key', '/scratch/copied');"
              "open('/scratch/pid', 'w').write(str(os.getpid())); print('hi', flush=True); time.sleep(3600)")
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "runner", ["python3", "-c", script], container={
            "volumeMounts": [{"name": "demo", "mountPath": "/etc/demo"}, {"name": "scratch", "mountPath": "/scratch"}]},
        volumes=[{"name": "demo", "configMap": {"name": "demo"}}, {"name": "scratch", "emptyDir": {}}]))
    cluster_mod.eventually(lambda: "1/1" in cluster.kubectl("get", "pod", "runner").stdout
                and "Running" in cluster.kubectl("get", "pod", "runner").stdout)
    uid = cluster.kubectl("get", "pod", "runner", "-o", "jsonpath={.metadata.uid}").stdout
    scratch = os.path.join(agent, uid, "volumes", "scratch")
    cluster_mod.eventually(lambda: os.path.exists(os.path.join(scratch, "pid")) and os.path.exists(os.path.join(scratch, "copied")))
    with open(os.path.join(scratch, "copied")) as f:
        assert f.read() == "hello-from-configmap"
    with open(os.path.join(scratch, "pid")) as f:
        pid = int(f.read())
    assert _alive(pid)
    cluster_mod.eventually(lambda: os.path.exists(os.path.join(agent, uid, "main", "0.log"))
                and open(os.path.join(agent, uid, "main", "0.log")).read() == "hi\n")
    assert not os.path.exists("/scratch/copied"), "the volume is mounted only in the container's namespace"
    cluster.kubectl("delete", "pod", "runner", "--wait=true", timeout=30)
    cluster_mod.eventually(lambda: not _alive(pid), timeout=5)
    assert not os.path.exists("/etc/demo") and not os.path.exists("/scratch"), "mount points made are removed"
    # The pod's directory goes with the pod, just after the API object (the kubelet also cleans up after it).
    cluster_mod.eventually(lambda: not os.path.exists(os.path.join(agent, uid)), timeout=5, what="the pod's directory to go")


def test_exit_code_with_restart_policy_never(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A command exiting 3 under restartPolicy Never leaves the pod Failed with exit code 3."""
    cluster.kubectl("apply", "-f", "-", input=_pod("fails", ["sh", "-c", "echo bye; exit 3"], restartPolicy="Never"))
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "fails", "-o", "jsonpath={.status.phase}").stdout == "Failed")
    got = cluster.kubectl("get", "pod", "fails", "-o",
                          "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"
                          " {.status.containerStatuses[0].state.terminated.reason}").stdout
    assert got == "3 Error"


def test_unknown_image_without_command_fails_to_pull(cluster: cluster_mod.Cluster, agent: str) -> None:
    """An image with no local program and no command waits with ErrImagePull saying how to make it available."""
    pod = json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nopull"},
                      "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "example.com/app:1"}]}})
    cluster.kubectl("apply", "-f", "-", input=pod)
    path = "jsonpath={.status.containerStatuses[0].state.waiting.reason}"
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "nopull", "-o", path).stdout in ("ErrImagePull", "ImagePullBackOff"))
    message = cluster.kubectl("get", "pod", "nopull", "-o",
                              "jsonpath={.status.containerStatuses[0].state.waiting.message}").stdout
    assert "set the container's command" in message
    cluster.kubectl("delete", "pod", "nopull", "--wait=true")
