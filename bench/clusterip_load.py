"""ClusterIP load benchmark: requests/s and p99 through a Service's ClusterIP (nftables DNAT) vs the pod IP.

Usage: sudo python bench/clusterip_load.py [--connections 32] [--seconds 5] [--runs 3]
Needs root, iproute2 and nft (pod network namespaces and the kernel service proxy). Starts `pocketkube up` with
one process node on random CIDRs, one pod running the small keep-alive backend of ingress_load.py behind a
ClusterIP Service, and drives the ClusterIP and the pod IP with the same client: keep-alive connections, then a
new connection per request (where DNAT and conntrack work happens). Prints figures and ratios, best of --runs.
Not a pass/fail test. Also the cluster helper of endpoint_latency.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import ingress_load

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
POD_PORT = 8080


class Cluster:
    """A `pocketkube up` process on its own data dir and random pod/service CIDRs, driven with kubectl."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.kubeconfig = os.path.join(data_dir, "kubeconfig")
        self.proc: subprocess.Popen[str] | None = None

    def start(self, *args: str, timeout: float = 60.0) -> Cluster:
        pods = f"10.{random.randint(100, 199)}.0.0/16"
        services = f"10.{random.randint(200, 250)}.0.0/16"
        log = open(os.path.join(self.data_dir, "server.log"), "a")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pocketkube", "up", "--data-dir", self.data_dir, "--port", "0", "--nodes", "1",
             "--cluster-cidr", pods, "--service-cidr", services, *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if "is up at" in line:
                return self
            if not line and self.proc.poll() is not None:
                break
        raise RuntimeError(f"pocketkube up did not start; see {self.data_dir}/server.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kubectl(self, *args: str, input: str | None = None) -> str:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, KUBECACHEDIR=os.path.join(self.data_dir, "kcache"))
        cp = subprocess.run([KUBECTL, *args], input=input, capture_output=True, text=True, env=env, timeout=120)
        if cp.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {cp.stderr.strip()}")
        return cp.stdout

    def apply(self, *objs: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json"))


def backend_objects(name: str, *, replicas: int = 1, host: str = "") -> list[dict[str, Any]]:
    """A Deployment of the fast backend (answering its pod name), its ClusterIP Service and, with host, an Ingress."""
    server = (ingress_load.BACKEND.replace('BODY = b"hello from the backend\\n"',
                                           'import os; BODY = os.environ["HOSTNAME"].encode()')
              .replace('"127.0.0.1"', '"0.0.0.0"'))
    assert "HOSTNAME" in server and "0.0.0.0" in server
    labels = {"app": name}
    pod = {"metadata": {"labels": labels}, "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
        "name": "web", "image": "python:3.11", "command": ["python3", "-c", server, str(POD_PORT)],
        "ports": [{"name": "http", "containerPort": POD_PORT}],
        "readinessProbe": {"tcpSocket": {"port": POD_PORT}, "periodSeconds": 1}}]}}
    out: list[dict[str, Any]] = [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
         "spec": {"replicas": replicas, "selector": {"matchLabels": labels}, "template": pod}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
         "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}}]
    if host:
        out.append({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
                    "spec": {"rules": [{"host": host, "http": {"paths": [{
                        "path": "/", "pathType": "Prefix",
                        "backend": {"service": {"name": name, "port": {"number": 80}}}}]}}]}})
    return out


def eventually(check: Callable[[], Any], *, what: str, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            got = check()
            if got:
                return got
        time.sleep(0.2)
    raise RuntimeError(f"timed out waiting for {what}")


def require_root_network() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        sys.exit("this benchmark needs root, iproute2 and nft (pod network and the kernel service proxy)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    require_root_network()
    tmp = tempfile.mkdtemp(prefix="pk-clusterip-bench-")
    c = Cluster(tmp)
    try:
        c.start()
        c.apply(*backend_objects("fast"))
        c.kubectl("rollout", "status", "deployment/fast", "--timeout=90s")
        cluster_ip = c.json("get", "service", "fast")["spec"]["clusterIP"]
        pod_ip = c.json("get", "pods", "-l", "app=fast")["items"][0]["status"]["podIP"]
        targets = {"pod IP": (pod_ip, POD_PORT), "ClusterIP": (cluster_ip, 80)}
        eventually(lambda: asyncio.run(ingress_load.load(80, 1, 0.1, host=cluster_ip))[0] > 0,
                   what="the ClusterIP to answer")
        run: Any = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop
            run = uvloop.run
        best: dict[tuple[str, bool], tuple[float, float, int]] = {}
        for i in range(args.runs):
            for reconnect in (False, True):
                for name, (host, port) in targets.items():
                    got = run(ingress_load.load(port, args.connections, args.seconds, host=host,
                                                reconnect=reconnect))
                    mode = "new conn/request" if reconnect else "keep-alive"
                    print(f"run {i + 1}  {name:10s} {mode:17s} {got[0]:9.0f} req/s   p99 {got[1]:7.2f} ms"
                          f"   errors {got[2]}")
                    key = (name, reconnect)
                    if key not in best or got[0] > best[key][0]:
                        best[key] = got
        print(f"best of {args.runs}:")
        for reconnect in (False, True):
            mode = "new conn/request" if reconnect else "keep-alive"
            cip, pod = best[("ClusterIP", reconnect)], best[("pod IP", reconnect)]
            print(f"{mode:17s} ClusterIP {cip[0]:9.0f} req/s p99 {cip[1]:6.2f} ms | pod IP {pod[0]:9.0f} req/s "
                  f"p99 {pod[1]:6.2f} ms | ratio {cip[0] / pod[0]:.2f}x req/s, p99 {cip[1] / max(pod[1], 1e-3):.2f}x")
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
