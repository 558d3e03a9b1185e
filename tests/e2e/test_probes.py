"""End to end: a process node runs readiness and liveness probes, driving Ready and restarting failing containers."""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE




def _pod(name: str, command: list[str], **container: Any) -> str:
    c = {"name": "main", "image": "python:3.11", "command": command, **container}
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
                       "spec": {"nodeName": NODE, "containers": [c], "terminationGracePeriodSeconds": 1}})


def _get(cluster: cluster_mod.Cluster, name: str) -> dict[str, Any]:
    return dict(json.loads(cluster.kubectl("get", "pod", name, "-o", "json").stdout))


def _ready(pod: dict[str, Any]) -> str:
    return next((c["status"] for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"), "")


def _events(cluster: cluster_mod.Cluster, name: str) -> list[tuple[str, str]]:
    items = json.loads(cluster.kubectl("get", "events", "-o", "json").stdout)["items"]
    return [(e["reason"], e["message"]) for e in items if e["involvedObject"]["name"] == name]


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


def test_http_readiness_probe_gates_ready(cluster: cluster_mod.Cluster, agent: None) -> None:
    """An http.server pod stays 0/1 with a 404 Unhealthy event until the probed path exists, then turns Ready."""
    port = _free_port()
    served = os.path.join(cluster.data_dir, "served")
    os.makedirs(served)
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "web", ["python3", "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", served],
        ports=[{"name": "http", "containerPort": port}],
        readinessProbe={"httpGet": {"path": "/ready", "port": "http"}, "periodSeconds": 1, "failureThreshold": 1}))
    cluster_mod.eventually(lambda: ("Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 404")
                in _events(cluster, "web"))
    pod = _get(cluster, "web")
    assert pod["status"]["phase"] == "Running" and _ready(pod) == "False"
    assert pod["status"]["containerStatuses"][0]["ready"] is False
    assert "0/1" in cluster.kubectl("get", "pod", "web").stdout
    with open(os.path.join(served, "ready"), "w") as f:
        f.write("ok")
    cluster_mod.eventually(lambda: _ready(_get(cluster, "web")) == "True")
    assert "1/1" in cluster.kubectl("get", "pod", "web").stdout
    cluster.kubectl("delete", "pod", "web", "--wait=true")


def test_failing_liveness_probe_restarts_container(cluster: cluster_mod.Cluster, agent: None) -> None:
    """A liveness exec probe that fails gets the container killed and restarted, with kube's events."""
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "doomed", ["python3", "-c", "import time; time.sleep(3600)"],
        livenessProbe={"exec": {"command": ["sh", "-c", "echo not alive; exit 1"]}, "periodSeconds": 1,
                       "failureThreshold": 2, "terminationGracePeriodSeconds": 1}))
    cluster_mod.eventually(lambda: _get(cluster, "doomed")["status"]["containerStatuses"][0]["restartCount"] >= 1)
    events = _events(cluster, "doomed")
    assert ("Unhealthy", "Liveness probe failed: not alive\n") in events
    assert ("Killing", "Container main failed liveness probe, will be restarted") in events
    line = cluster.kubectl("get", "pod", "doomed").stdout.splitlines()[1].split()
    assert int(line[3]) >= 1  # RESTARTS
    cluster.kubectl("delete", "pod", "doomed", "--wait=true")


def test_exec_probe_sees_the_container_mounts(cluster: cluster_mod.Cluster, agent: None) -> None:
    """An exec probe runs in the container's mount namespace, so it sees a file the container wrote to its emptyDir."""
    mount = f"/tmp/pocketkube-probe-{os.getpid()}"
    body = json.loads(_pod(
        "mounted", ["sh", "-c", f"echo hi > {mount}/marker; exec sleep 3600"],
        volumeMounts=[{"name": "scratch", "mountPath": mount}],
        readinessProbe={"exec": {"command": ["test", "-f", f"{mount}/marker"]}, "periodSeconds": 1}))
    body["spec"]["volumes"] = [{"name": "scratch", "emptyDir": {}}]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    cluster_mod.eventually(lambda: _ready(_get(cluster, "mounted")) == "True")
    assert not os.path.exists(os.path.join(mount, "marker"))  # the host itself does not see the bind mount
    cluster.kubectl("delete", "pod", "mounted", "--wait=true")
