"""End to end: examples/demo (frontend, API, Redis, PostgreSQL on a PVC) behind the Ingress, and a lossless rollout."""

from __future__ import annotations

import base64
import collections.abc
import glob
import http.client
import json
import os
import shutil
import socket
import ssl
import threading
import time
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

DEMO = os.path.join(cluster_mod.ROOT, "examples", "demo")
HOST = "demo.localhost"
NS = "demo"


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def _missing_programs() -> list[str]:
    """The host programs the demo's images stand for that are not installed, with their Debian package."""
    pg_bins = [os.environ.get("PATH", ""), *glob.glob("/usr/lib/postgresql/*/bin")]
    path = os.pathsep.join(pg_bins)
    missing = []
    for program, package in (("redis-server", "redis-server"), ("postgres", "postgresql"),
                             ("initdb", "postgresql"), ("python3", "python3")):
        if shutil.which(program, path=path) is None:
            missing.append(f"{program} (apt-get install {package})")
    return missing


class Demo:
    """The running demo: the cluster and the Ingress's host ports."""

    def __init__(self, cluster: cluster_mod.Cluster, http_port: int, https_port: int) -> None:
        self.cluster = cluster
        self.http_port = http_port
        self.https_port = https_port
        self.tls = ssl.create_default_context()
        # The demo's certificate is self-signed: trust exactly it, and check the host name against it.
        self.tls.load_verify_locations(cadata=self._certificate())

    def _certificate(self) -> str:
        secret = self.cluster.json("-n", NS, "get", "secret", "demo-tls")
        return base64.b64decode(secret["data"]["tls.crt"]).decode()

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 10) -> tuple[int, Any]:
        """One HTTPS request through the Ingress as a browser on demo.localhost would send it."""
        conn = _SNIConnection("127.0.0.1", self.https_port, sni=HOST, context=self.tls, timeout=timeout)
        try:
            data = None if body is None else json.dumps(body).encode()
            headers = {"Host": HOST, **({"Content-Type": "application/json"} if data else {})}
            conn.request(method, path, body=data, headers=headers)
            r = conn.getresponse()
            raw = r.read()
            kind = r.headers.get("Content-Type", "")
            return r.status, json.loads(raw) if kind.startswith("application/json") else raw.decode()
        finally:
            conn.close()


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to an IP address with the SNI name of a host."""

    def __init__(self, host: str, port: int, *, sni: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._sni, self._ctx = sni, context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._sni)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[Demo]:
    """A cluster with a process node, examples/demo applied with kubectl apply -k, every workload Ready."""
    netutil.require_root_network(nft=True)
    missing = _missing_programs()
    if missing:
        pytest.fail("the demo runs its images as host programs; install: " + ", ".join(missing))
    http_port, https_port = _free_port(), _free_port()
    pod_cidr, svc_cidr = netutil.random_cidrs()
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk"))).start(args=[
        "--nodes", "1", "--cluster-cidr", pod_cidr, "--service-cidr", svc_cidr,
        "--ingress-http-port", str(http_port), "--ingress-https-port", str(https_port)])
    try:
        c.kubectl("apply", "-k", DEMO)
        for workload in ("statefulset/db", "deployment/cache", "deployment/api", "deployment/frontend"):
            cp = c.kubectl("-n", NS, "rollout", "status", workload, "--timeout=120s", check=False, timeout=150)
            if cp.returncode != 0:
                pods = c.kubectl("-n", NS, "get", "pods", "-o", "wide", check=False).stdout
                events = c.kubectl("-n", NS, "get", "events", check=False).stdout[-3000:]
                logs = c.kubectl("-n", NS, "logs", workload, "--all-containers", "--tail=20", check=False)
                raise AssertionError(f"{workload} did not become ready: {cp.stderr}\n{pods}\n{events}\n"
                                     f"logs:\n{logs.stdout}{logs.stderr}")
        d = Demo(c, http_port, https_port)
        # The Ingress's table follows the EndpointSlices within a moment of readiness.
        cluster_mod.eventually(lambda: d.request("GET", "/healthz")[0] == 200, timeout=30,
                               what="the frontend to answer through the Ingress")
        yield d
    finally:
        c.stop()


def test_objects_the_issue_asks_for(demo: Demo) -> None:
    """The demo has its PVC bound on the standard class, its Ingress with TLS and six NetworkPolicies."""
    pvc = demo.cluster.json("-n", NS, "get", "pvc", "data-db-0")
    assert pvc["spec"]["storageClassName"] == "standard"
    assert pvc["status"]["phase"] == "Bound"
    ing = demo.cluster.json("-n", NS, "get", "ingress", "demo")
    assert ing["spec"]["tls"] == [{"hosts": [HOST], "secretName": "demo-tls"}]
    policies = demo.cluster.json("-n", NS, "get", "networkpolicies")["items"]
    assert sorted(p["metadata"]["name"] for p in policies) == [
        "allow-dns", "api", "cache", "db", "default-deny", "frontend"]


def test_page_and_redirect(demo: Demo) -> None:
    """The page comes over HTTPS with the configured greeting; plain HTTP is redirected to HTTPS (308)."""
    status, page = demo.request("GET", "/")
    assert status == 200
    assert "<h1>Hello from pocketkube</h1>" in page
    conn = http.client.HTTPConnection("127.0.0.1", demo.http_port, timeout=10)
    try:
        conn.request("GET", "/api/info", headers={"Host": HOST})
        r = conn.getresponse()
        r.read()
        assert r.status == 308
        assert r.headers["Location"] == f"https://{HOST}:{demo.https_port}/api/info"
    finally:
        conn.close()


def test_messages_go_through_postgres_and_redis(demo: Demo) -> None:
    """A posted message is stored in PostgreSQL, read back from it once, then served from the Redis cache."""
    text = f"it's {time.time()}"
    status, created = demo.request("POST", "/api/messages", {"text": text})
    assert status == 201, created
    status, first = demo.request("GET", "/api/messages")
    assert status == 200
    assert first["source"] == "database"
    assert first["messages"][0] == created
    status, second = demo.request("GET", "/api/messages")
    assert (status, second["source"], second["messages"]) == (200, "cache", first["messages"])
    status, refused = demo.request("POST", "/api/messages", {"text": ""})
    assert status == 400, refused


def test_visits_count_in_redis(demo: Demo) -> None:
    """Each visit increments one counter shared by every API replica."""
    _, before = demo.request("GET", "/api/visits")
    for _ in range(4):
        demo.request("GET", "/api/visits")
    _, after = demo.request("GET", "/api/visits")
    assert after["visits"] == before["visits"] + 5


def test_rollout_loses_no_request(demo: Demo) -> None:
    """Changing the API's image tag rolls both replicas while a stream of requests sees no failure."""
    old = {p["metadata"]["name"] for p in demo.cluster.json("-n", NS, "get", "pods", "-l", "app=api")["items"]}
    failures: list[str] = []
    served: collections.Counter[str] = collections.Counter()
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                status, body = demo.request("GET", "/api/info")
                if status == 200:
                    served[body["pod"]] += 1
                else:
                    failures.append(f"{status} {body}")
            except (OSError, http.client.HTTPException, ValueError) as e:
                failures.append(repr(e))
            time.sleep(0.02)

    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    try:
        time.sleep(1)
        demo.cluster.kubectl("-n", NS, "set", "image", "deployment/api", "api=python:3.13")
        demo.cluster.kubectl("-n", NS, "rollout", "status", "deployment/api", "--timeout=120s", timeout=150)
        # Requests already routed to the old pods finish during their preStop sleep and grace period.
        cluster_mod.eventually(lambda: demo.cluster.kubectl(
            "-n", NS, "get", "pods", "-l", "app=api", "-o", "name").stdout.count("\n") <= 2,
            timeout=60, what="the old API pods to be gone")
        time.sleep(1)
    finally:
        stop.set()
        worker.join(timeout=30)
    new = set(served) - old
    assert not failures, f"{len(failures)} failed requests during the rollout: {failures[:5]}"
    assert old & set(served) and new, f"requests should reach old and new pods: {dict(served)}"
    images = {p["spec"]["containers"][0]["image"]
              for p in demo.cluster.json("-n", NS, "get", "pods", "-l", "app=api")["items"]}
    assert images == {"python:3.13"}


def test_database_survives_pod_restart(demo: Demo) -> None:
    """The messages live on the PVC: deleting the database pod brings it back with the same data."""
    text = f"kept {time.time()}"
    assert demo.request("POST", "/api/messages", {"text": text})[0] == 201
    demo.cluster.kubectl("-n", NS, "delete", "pod", "db-0", "--wait=true", timeout=90)
    demo.cluster.kubectl("-n", NS, "wait", "--for=condition=Ready", "pod/db-0", "--timeout=120s", timeout=150)

    def stored() -> bool:
        status, doc = demo.request("GET", "/api/messages")
        return status == 200 and text in [m["text"] for m in doc["messages"]]

    cluster_mod.eventually(stored, timeout=60, what="the message to be read back after the restart")
