"""Helpers of the pod network and service proxy e2e tests: a cluster on random CIDRs and an HTTP echo pod."""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import urllib.request
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod

# Answers GET with the pod's name, or 500 on /fail; listens on 8080.
SERVER = ("import http.server,os\n"
          "class H(http.server.BaseHTTPRequestHandler):\n"
          "  def log_message(s,*a): pass\n"
          "  def do_GET(s):\n"
          "    b=os.environ.get('HOSTNAME','').encode(); s.send_response(200); s.end_headers(); s.wfile.write(b)\n"
          "http.server.ThreadingHTTPServer(('0.0.0.0',8080),H).serve_forever()\n")


def require_root_network(*, nft: bool = False) -> None:
    """Skip unless this machine lets pods have their own network namespaces (and nftables when asked)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("pod networking needs root and iproute2")
    if nft and shutil.which("nft") is None:
        pytest.skip("the service proxy's kernel path needs nftables")


def random_cidrs() -> tuple[str, str]:
    """A pod /16 and a service /16 no other test cluster on this machine is likely to use."""
    return f"10.{random.randint(100, 199)}.0.0/16", f"10.{random.randint(200, 250)}.0.0/16"


def start(data_dir: str, *, nodes: int = 2) -> tuple[cluster_mod.Cluster, str, str]:
    pods, services = random_cidrs()
    c = cluster_mod.Cluster(data_dir).start(args=["--nodes", str(nodes), "--cluster-cidr", pods,
                                                  "--service-cidr", services])
    return c, pods, services


def pod(name: str, *, node: str = "", labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    c = {"name": "web", "image": "python:3.11", "command": ["python3", "-c", SERVER],
         "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1}}
    body: dict[str, Any] = {"containers": [c], "terminationGracePeriodSeconds": 1, **spec}
    if node:
        body["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels or {}}, "spec": body}


def apply(c: cluster_mod.Cluster, *objs: dict[str, Any]) -> None:
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def wait_ready(c: cluster_mod.Cluster, *names: str) -> None:
    # Generous: CI runs several clusters at once on two cores.
    c.kubectl("wait", "--for=condition=Ready", *[f"pod/{n}" for n in names], "--timeout=150s", timeout=180)


def get(url: str, *, timeout: float = 3.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def in_pod(c: cluster_mod.Cluster, name: str, url: str, *, container: str = "") -> subprocess.CompletedProcess[str]:
    """Fetch url from inside a pod (python urllib), printing the body."""
    code = (f"import urllib.request as u, ssl\n"
            f"print(u.urlopen({url!r}, timeout=3, context=ssl._create_unverified_context()).read().decode())")
    extra = ["-c", container] if container else []
    return c.kubectl("exec", name, *extra, "--", "python3", "-c", code, check=False)


def leftovers(data_dir: str, node_names: list[str]) -> list[str]:
    """Network namespaces and bridges of these nodes still in the kernel."""
    from pocketkube.network import podnet

    ids = [podnet.node_id(os.path.join(data_dir, "nodes", n)) for n in node_names]
    found = [n for n in (os.listdir(podnet.NETNS_DIR) if os.path.isdir(podnet.NETNS_DIR) else [])
             if any(n.startswith(podnet.netns_name(i, "")) for i in ids)]
    found += [podnet.bridge_name(i) for i in ids if os.path.exists(f"/sys/class/net/{podnet.bridge_name(i)}")]
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
