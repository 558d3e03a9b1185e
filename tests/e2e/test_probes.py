"""End to end: a process node runs readiness and liveness probes, driving Ready and restarting failing containers."""

from __future__ import annotations

import collections.abc
import json
import os
import socket
import sys
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

NODE = cluster_mod.PROCESS_NODE




def _pod(name: str, command: list[str], **container: Any) -> str:
    c = {"name": "main", "image": "python:3.11", "command": command}
    c.update(container)
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
    cluster_mod.eventually(lambda: ((_get(cluster, "doomed").get("status") or {}).get("containerStatuses")
                                    or [{}])[0].get("restartCount", 0) >= 1)
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


# A gRPC health server for the pod: SERVING until the flag file appears, then NOT_SERVING (once per run).
HEALTH_SERVER = """
import os, sys, time
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
port, flag = int(sys.argv[1]), sys.argv[2]
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port(f"0.0.0.0:{port}")
server.start()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
print("serving", flush=True)
while True:
    if os.path.exists(flag):
        os.unlink(flag)
        servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        print("not serving", flush=True)
    time.sleep(0.1)
"""


def _event_counts(cluster: cluster_mod.Cluster, name: str) -> dict[tuple[str, str], list[int]]:
    """Each (reason, message) about a pod with the count of every Event object recorded for it."""
    items = json.loads(cluster.kubectl("get", "events", "-o", "json").stdout)["items"]
    out: dict[tuple[str, str], list[int]] = {}
    for e in items:
        if e["involvedObject"]["name"] == name:
            out.setdefault((e["reason"], e["message"]), []).append(int(e.get("count") or 0))
    return out


def test_grpc_probes_gate_ready_and_restart_a_not_serving_container(cluster: cluster_mod.Cluster,
                                                                    agent: None) -> None:
    """A pod serving grpc.health.v1 turns Ready; once it answers NOT_SERVING, liveness restarts it."""
    import grpc_health.v1.health  # noqa: F401  (a project dependency: fail loudly if missing)
    port = _free_port()
    flag = os.path.join(cluster.data_dir, "grpc-not-serving")
    # The image stands for the host's python; the command is the python that has grpcio (this test's own).
    probe = {"grpc": {"port": port}, "periodSeconds": 1, "failureThreshold": 1}
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "grpc", [sys.executable, "-c", HEALTH_SERVER, str(port), flag], image="python:3.12",
        ports=[{"containerPort": port}], readinessProbe=probe, livenessProbe=probe,
        # Importing grpc takes the server a moment: the startup probe holds liveness back until it serves.
        startupProbe={**probe, "failureThreshold": 30}))
    cluster_mod.eventually(lambda: _ready(_get(cluster, "grpc")) == "True", timeout=30, what="the gRPC pod Ready")
    assert _get(cluster, "grpc")["status"]["containerStatuses"][0]["restartCount"] == 0
    with open(flag, "w") as f:
        f.write("1")
    cluster_mod.eventually(lambda: _get(cluster, "grpc")["status"]["containerStatuses"][0]["restartCount"] >= 1,
                           timeout=30, what="a liveness restart")
    events = _events(cluster, "grpc")
    assert ("Unhealthy", 'Liveness probe failed: service unhealthy (responded with "NOT_SERVING")') in events
    assert ("Killing", "Container main failed liveness probe, will be restarted") in events
    # The restarted server serves again, so the pod comes back Ready.
    cluster_mod.eventually(lambda: _ready(_get(cluster, "grpc")) == "True", timeout=30, what="Ready again")
    described = cluster.kubectl("describe", "pod", "grpc").stdout
    assert f"Liveness:       grpc <pod>:{port}  delay=0s timeout=1s period=1s #success=1 #failure=1" in described
    cluster.kubectl("delete", "pod", "grpc", "--wait=true")


def test_exec_probe_that_cannot_start_errors_without_restarts(cluster: cluster_mod.Cluster, agent: None) -> None:
    """A liveness probe whose program is missing is reported as errored, counted on one Event, and never kills."""
    cluster.kubectl("apply", "-f", "-", input=_pod(
        "noprobe", ["sleep", "3600"],
        livenessProbe={"exec": {"command": ["no-such-probe-program"]}, "periodSeconds": 1, "failureThreshold": 1}))

    def unhealthy() -> dict[str, list[int]]:
        return {m: c for (r, m), c in _event_counts(cluster, "noprobe").items() if r == "Unhealthy"}

    # Each run has its own exec id, so the messages differ: from the tenth they count on one combined event.
    combined = "(combined from similar events): Liveness probe errored and resulted in unknown state: "
    cluster_mod.eventually(lambda: any(m.startswith(combined) and max(c) >= 2 for m, c in unhealthy().items()),
                           timeout=40, what="errored probes counted on a combined event")
    plain = [m for m in unhealthy() if m.startswith("Liveness probe errored")]
    assert len(plain) == 9
    assert plain[0].startswith("Liveness probe errored and resulted in unknown state: rpc error: code = Unknown "
                               'desc = failed to exec in container: failed to start exec "')
    assert plain[0].endswith('": OCI runtime exec failed: exec failed: unable to start container process: '
                             'exec: "no-such-probe-program": executable file not found in $PATH: unknown')
    pod = _get(cluster, "noprobe")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    assert not any(r == "Killing" for r, _ in _events(cluster, "noprobe"))
    cluster.kubectl("delete", "pod", "noprobe", "--wait=true")


def test_failed_mount_is_one_event_with_a_count(cluster: cluster_mod.Cluster, agent: None) -> None:
    """A missing ConfigMap's FailedMount repeats as one Event whose count grows, shown as "(xN over ...)"."""
    body = json.loads(_pod("nocm", ["sleep", "3600"], volumeMounts=[{"name": "cfg", "mountPath": "/etc/cfg"}]))
    body["spec"]["volumes"] = [{"name": "cfg", "configMap": {"name": "missing-cm"}}]
    cluster.kubectl("apply", "-f", "-", input=json.dumps(body))
    key = ("FailedMount", 'MountVolume.SetUp failed for volume "cfg" : configmap "missing-cm" not found')
    cluster_mod.eventually(lambda: _event_counts(cluster, "nocm").get(key, [0])[0] >= 3, timeout=30,
                           what="a FailedMount counted three times")
    assert len(_event_counts(cluster, "nocm")[key]) == 1
    described = cluster.kubectl("describe", "pod", "nocm").stdout
    assert any("FailedMount" in line and "(x" in line for line in described.splitlines())
    cluster.kubectl("delete", "pod", "nocm", "--wait=true")


# Serves HTTP on the pod's own 127.0.0.1 (reachable only inside its network namespace) and gRPC health on all
# of the pod's addresses.
POD_NET_SERVER = """
import http.server, threading
from concurrent import futures
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
web = http.server.HTTPServer(("127.0.0.1", 8080), http.server.SimpleHTTPRequestHandler)
threading.Thread(target=web.serve_forever, daemon=True).start()
server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
servicer = health.HealthServicer()
health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
server.add_insecure_port("0.0.0.0:9090")
server.start()
servicer.set("", health_pb2.HealthCheckResponse.SERVING)
server.wait_for_termination()
"""


@pytest.fixture(scope="module")
def pod_net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """A cluster whose node gives each pod its own network namespace and IP."""
    netutil.require_root_network()
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk")), nodes=1)
    try:
        cluster_mod.eventually(lambda: c.kubectl("get", "node", "pocketkube-node-1", check=False).returncode == 0,
                               what="the node to register")
        yield c
    finally:
        c.stop()


def test_probes_run_in_the_pod_network(pod_net: cluster_mod.Cluster) -> None:
    """An exec probe reaches the pod's own localhost (it runs in the pod's namespaces); gRPC goes to the pod IP."""
    import grpc_health.v1.health  # noqa: F401  (a project dependency: fail loudly if missing)
    fetch = "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/', timeout=1)"
    grpc_probe = {"grpc": {"port": 9090}, "periodSeconds": 1}
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "netprobe"},
            "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
                "name": "main", "image": "python:3.12", "command": [sys.executable, "-c", POD_NET_SERVER],
                "readinessProbe": {"exec": {"command": [sys.executable, "-c", fetch]}, "periodSeconds": 1},
                "livenessProbe": grpc_probe, "startupProbe": {**grpc_probe, "failureThreshold": 30}}]}}
    pod_net.kubectl("apply", "-f", "-", input=json.dumps(body))
    pod_net.kubectl("wait", "--for=condition=Ready", "pod/netprobe", "--timeout=60s")
    pod = _get(pod_net, "netprobe")
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    # The HTTP server listens on the pod's own localhost only: from the node, even the pod IP does not reach it.
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex((pod["status"]["podIP"], 8080)) != 0
    pod_net.kubectl("delete", "pod", "netprobe", "--wait=true")
