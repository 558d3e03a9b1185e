"""End to end: kubectl port-forward reaches process-runtime pods over websocket-tunnelled SPDY and plain SPDY."""

from __future__ import annotations

import concurrent.futures
import json
import os
import queue
import re
import signal
import socket
import subprocess
import tempfile
import threading
import urllib.request
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
INDEX = "hello from the pod\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _web_spec(port: int, served: str) -> dict[str, Any]:
    """A pod spec serving a directory with python's http.server, Ready once the port listens."""
    return {"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [{
        "name": "main", "image": "python:3.11", "command": ["python3", "-m", "http.server", str(port),
                                                             "--directory", served],
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}]}


def _ready(cluster: cluster_mod.Cluster, selector: str) -> None:
    def check() -> bool:
        got = cluster.kubectl("get", "pods", "-l", selector, "-o",
                              "jsonpath={.items[*].status.conditions[?(@.type=='Ready')].status}").stdout
        return got.split() == ["True"]
    cluster_mod.eventually(check, timeout=30, what=f"pods {selector} to be Ready")


@pytest.fixture(scope="module")
def web(cluster: cluster_mod.Cluster, agent: str) -> tuple[int, str]:
    """Pod web serving an index page and a 5 MB file; yields its port and the served directory."""
    served = os.path.join(cluster.data_dir, "served")
    os.makedirs(served, exist_ok=True)
    with open(os.path.join(served, "index.html"), "w") as f:
        f.write(INDEX)
    with open(os.path.join(served, "big.bin"), "wb") as f:
        f.write(os.urandom(5 << 20))
    port = _free_port()
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web", "labels": {"app": "web"}},
           "spec": _web_spec(port, served)}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    _ready(cluster, "app=web")
    return port, served


class PortForward:
    """A running `kubectl port-forward`, its announced local port, and what it printed."""

    def __init__(self, cluster: cluster_mod.Cluster, *args: str, minor: int | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.stderr = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed in stop()
        self.lines: queue.Queue[str] = queue.Queue()
        self.stdout: list[str] = []
        self.proc = subprocess.Popen(
            [cluster_mod.kubectl_binary(minor), "port-forward", *args], stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, env=dict(os.environ, KUBECONFIG=cluster.kubeconfig,
                                KUBECACHEDIR=os.path.join(cluster.data_dir, "kcache"), **(env or {})))
        threading.Thread(target=self._read, daemon=True).start()
        self.port = self._local_port()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.stdout.append(line)
            self.lines.put(line)

    def _local_port(self) -> int:
        while True:
            try:
                line = self.lines.get(timeout=20)
            except queue.Empty:
                raise AssertionError(f"kubectl port-forward announced no port: {self.finish()}") from None
            m = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> \d+", line)
            if m:
                return int(m.group(1))

    def get(self, path: str = "/index.html") -> bytes:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=15) as r:
            return bytes(r.read())

    def finish(self, *, interrupt: bool = True, timeout: float = 15) -> tuple[int, str]:
        """Stop kubectl (Ctrl-C) unless it already ended; its exit code and stderr."""
        if interrupt and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.stderr.seek(0)
        text = self.stderr.read()
        self.stderr.close()
        return code, text


@pytest.mark.parametrize("minor", [None, 31, 33])
def test_pod_over_websocket_tunnel(cluster: cluster_mod.Cluster, web: tuple[int, str], minor: int | None) -> None:
    """kubectl 1.31+ tunnels SPDY through a websocket without falling back; pages, concurrent and big reads work."""
    port, served = web
    pf = PortForward(cluster, "pod/web", f":{port}", "-v=4", minor=minor)
    try:
        assert pf.get() == INDEX.encode()
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(lambda _: pf.get(), range(16))) == [INDEX.encode()] * 16
        with open(os.path.join(served, "big.bin"), "rb") as f:
            assert pf.get("/big.bin") == f.read()
        assert any(line.startswith("Handling connection for") for line in pf.stdout)
    finally:
        code, err = pf.finish()
    assert code == 0, err
    assert "Before WebSocket Upgrade Connection" in err
    assert "fallback" not in err.lower()


@pytest.mark.parametrize(("minor", "env"), [(27, {}), (30, {}), (32, {"KUBECTL_PORT_FORWARD_WEBSOCKETS": "false"})])
def test_pod_over_plain_spdy(cluster: cluster_mod.Cluster, web: tuple[int, str], minor: int,
                             env: dict[str, str]) -> None:
    """Older kubectl (and 1.32 with websockets off) upgrade straight to SPDY/3.1 and forward the same."""
    port, _ = web
    pf = PortForward(cluster, "pod/web", f"0:{port}", minor=minor, env=env)
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            assert list(pool.map(lambda _: pf.get(), range(8))) == [INDEX.encode()] * 8
    finally:
        code, err = pf.finish()
    assert code == 0, err


def test_closed_port_error_from_the_kubelet(cluster: cluster_mod.Cluster, web: tuple[int, str]) -> None:
    """Nothing listening: the connection closes empty, kubectl prints the kubelet's error and, as real kubectl
    does since 1.23, gives up with "lost connection to pod"."""
    closed = _free_port()
    uid = cluster.kubectl("get", "pod", "web", "-o", "jsonpath={.metadata.uid}").stdout
    pf = PortForward(cluster, "pod/web", f":{closed}")
    with pytest.raises(OSError):
        pf.get()
    code, err = pf.finish(interrupt=False)
    assert code == 1
    assert (f"error forwarding port {closed} to pod {uid}, uid : failed to connect to localhost:{closed} inside "
            f'namespace \\"{uid}\\", IPv4: dial tcp4 127.0.0.1:{closed}: connect: connection refused') in err
    assert err.rstrip().endswith("error: lost connection to pod")


def test_deployment_and_service_forms(cluster: cluster_mod.Cluster, agent: str, web: tuple[int, str]) -> None:
    """deploy/NAME forwards to one of its pods; svc/NAME maps the service port to the pod's target port."""
    _, served = web
    port = _free_port()
    labels = {"app": "dep"}
    deploy = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "dep"},
              "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                       "template": {"metadata": {"labels": labels}, "spec": _web_spec(port, served)}}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dep"},
           "spec": {"selector": labels, "ports": [{"port": 80, "targetPort": port}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [deploy, svc]}))
    _ready(cluster, "app=dep")
    for args in (["deploy/dep", f":{port}"], ["svc/dep", ":80"]):
        pf = PortForward(cluster, *args)
        try:
            assert pf.get() == INDEX.encode()
        finally:
            code, err = pf.finish()
        assert code == 0, err
        assert f"-> {port}" in pf.stdout[0]


def test_refusals(cluster: cluster_mod.Cluster, agent: str) -> None:
    """An unknown pod is a NotFound; a pod that is not running is refused by kubectl before any upgrade."""
    missing = cluster.kubectl("port-forward", "pod/nosuch", ":80", check=False)
    assert missing.returncode == 1 and 'pods "nosuch" not found' in missing.stderr
    pending = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nowhere"},
               "spec": {"nodeSelector": {"no-such": "node"},
                        "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pending))
    got = cluster.kubectl("port-forward", "pod/nowhere", ":80", check=False)
    assert got.returncode == 1
    assert "unable to forward port because pod is not running. Current status=Pending" in got.stderr
