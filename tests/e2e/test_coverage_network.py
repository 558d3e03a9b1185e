"""End to end: issue 4 items the coverage audit found untested (expose, endpoint timing, SNI, DNS in pods)."""

from __future__ import annotations

import collections.abc
import os
import re
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import http, netutil

HEADLESS = """
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{name: pg, port: 5432}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      terminationGracePeriodSeconds: 1
      containers: [{name: c, image: busybox, command: [sleep, "3600"]}]
"""

T = TypeVar("T")
Net = tuple[cluster_mod.Cluster, int, int]


def _until_some(check: Callable[[], T | None], *, timeout: float = 15.0, what: str = "condition") -> T:
    """cluster_mod.eventually for checks that return a value or None: the value, typed without the None."""
    got = cluster_mod.eventually(check, timeout=timeout, what=what)
    assert got is not None
    return got


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[tuple[cluster_mod.Cluster, int, int]]:
    """`pocketkube up --nodes 1` with pod networking, the kernel service proxy and the ingress on free ports."""
    netutil.require_root_network(nft=True)
    pods, services = netutil.random_cidrs()
    http_port, https_port = netutil.free_port(), netutil.free_port()
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk-netcov"))).start(args=[
        "--nodes", "1", "--cluster-cidr", pods, "--service-cidr", services,
        "--ingress-http-port", str(http_port), "--ingress-https-port", str(https_port)])
    try:
        yield c, http_port, https_port
    finally:
        c.stop()


def _get(url: str, *, host: str = "") -> tuple[int, str]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=3) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError:
        return 0, ""


def _lookup(c: cluster_mod.Cluster, pod: str, *, name: str) -> list[str]:
    """The addresses nslookup in pod gives for name (the server's own address left out)."""
    out = c.kubectl("exec", pod, "--", "nslookup", name, check=False).stdout
    return sorted(re.findall(r"^Address: ([0-9.]+)$", out, flags=re.M))


def _create_hello(c: cluster_mod.Cluster) -> tuple[str, str]:
    """Two python http.server replicas on 8080 behind Service hello:80, rolled out; kubectl's two replies."""
    created = c.kubectl("create", "deployment", "hello", "--image=python:3.12", "--replicas=2", "--",
                        "python", "-m", "http.server", "8080").stdout
    exposed = c.kubectl("expose", "deployment", "hello", "--port=80", "--target-port=8080").stdout
    c.kubectl("rollout", "status", "deployment/hello", "--timeout=60s", timeout=90)
    return created, exposed


def _ensure_hello(c: cluster_mod.Cluster) -> None:
    """Service hello with its Deployment, made here when this test runs on its own (-k)."""
    if c.kubectl("get", "service", "hello", check=False).returncode != 0:
        _create_hello(c)


def test_expose_deployment_then_curl_cluster_ip(net: Net) -> None:
    """create deployment + expose: Endpoints list both pods, the ClusterIP answers the host and, by name, a pod."""
    c, _, _ = net
    assert _create_hello(c) == ("deployment.apps/hello created\n", "service/hello exposed\n")
    pods = c.json("get", "pods", "-l", "app=hello")["items"]
    want = sorted(f"{p['status']['podIP']}:8080" for p in pods)
    cluster_mod.eventually(lambda: sorted(c.kubectl("get", "endpoints", "hello", "--no-headers").stdout.split()[1]
                                          .split(",")) == want, timeout=10, what="both pods in the Endpoints")
    row = c.kubectl("get", "service", "hello", "--no-headers").stdout.split()
    ip = row[2]
    assert row[:2] == ["hello", "ClusterIP"] and row[3:5] == ["<none>", "80/TCP"]
    status, body = _until_some(lambda: r if (r := _get(f"http://{ip}/"))[0] == 200 else None, timeout=10)
    assert "Directory listing for /" in body
    client = pods[0]["metadata"]["name"]
    code = "import urllib.request as u; print(u.urlopen('http://hello/', timeout=3).status)"
    assert c.kubectl("exec", client, "--", "python3", "-c", code).stdout == "200\n"


def test_ingress_address_and_exact_path(net: Net) -> None:
    """`kubectl create ingress` gets the default class and an ADDRESS; an Exact path matches only itself."""
    c, http_port, _ = net
    _ensure_hello(c)
    c.kubectl("create", "ingress", "hello", "--rule=hello.localhost/=hello:80")
    ing = c.json("get", "ingress", "hello")
    assert ing["spec"]["ingressClassName"] == "pocketkube"
    assert ing["spec"]["rules"][0]["http"]["paths"][0]["pathType"] == "Exact"
    row = _until_some(lambda: r if len(r := c.kubectl("get", "ingress", "hello", "--no-headers").stdout.split())
                                 == 6 else None, timeout=10, what="the Ingress to get an address")
    address = c.json("get", "ingress", "hello")["status"]["loadBalancer"]["ingress"][0]["ip"]
    assert row[:5] == ["hello", "pocketkube", "hello.localhost", address, "80"]
    status, body = _until_some(
        lambda: r if (r := _get(f"http://{address}:{http_port}/", host="hello.localhost"))[0] == 200 else None,
        timeout=10)
    assert "Directory listing for /" in body
    status, body = _get(f"http://{address}:{http_port}/sub/", host="hello.localhost")
    assert status == 404 and "<center>nginx</center>" in body  # the ingress's own 404, not the pod's
    c.kubectl("delete", "ingress", "hello")


def test_headless_statefulset_names_resolve_in_a_pod(net: Net) -> None:
    """In a pod, db resolves to every ready StatefulSet pod and db-0.db (short and FQDN) to pod 0 alone."""
    c, _, _ = net
    c.kubectl("apply", "-f", "-", input=HEADLESS)
    c.kubectl("rollout", "status", "statefulset/db", "--timeout=60s", timeout=90)
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in c.json("get", "pods", "-l", "app=db")["items"]}
    assert c.json("get", "service", "db")["spec"]["clusterIP"] == "None"
    cluster_mod.eventually(lambda: _lookup(c, "db-1", name="db") == sorted(ips.values()), timeout=10,
                           what="db to answer both pods")
    assert _lookup(c, "db-1", name="db-0.db") == [ips["db-0"]]
    assert _lookup(c, "db-1", name="db-1.db.default.svc.cluster.local") == [ips["db-1"]]


def test_pod_hostname_and_hosts_file(net: Net) -> None:
    """A StatefulSet pod's hostname is its name, and /etc/hosts maps its IP to its FQDN as the kubelet writes it."""
    c, _, _ = net
    if c.kubectl("get", "statefulset", "db", check=False).returncode != 0:
        c.kubectl("apply", "-f", "-", input=HEADLESS)
    c.kubectl("rollout", "status", "statefulset/db", "--timeout=60s", timeout=90)
    ip = c.json("get", "pod", "db-0")["status"]["podIP"]
    assert c.kubectl("exec", "db-0", "--", "hostname").stdout == "db-0\n"
    hosts = c.kubectl("exec", "db-0", "--", "cat", "/etc/hosts").stdout
    assert hosts.startswith("# Kubernetes-managed hosts file.\n")
    assert f"{ip}\tdb-0.db.default.svc.cluster.local\tdb-0\n" in hosts


def test_service_selecting_nothing_has_empty_endpoints(net: Net) -> None:
    """A Service whose selector matches no pod gets an empty Endpoints and a placeholder EndpointSlice."""
    c, _, _ = net
    assert c.kubectl("create", "service", "clusterip", "nothing", "--tcp=80:8080").stdout == \
        "service/nothing created\n"
    row = cluster_mod.eventually(lambda: c.kubectl("get", "endpoints", "nothing", "--no-headers",
                                                   check=False).stdout.split(), timeout=10)
    assert row[:2] == ["nothing", "<none>"]
    assert "subsets" not in c.json("get", "endpoints", "nothing")
    selector = "kubernetes.io/service-name=nothing"
    slices = cluster_mod.eventually(lambda: c.kubectl("get", "endpointslices", "-l", selector,
                                                      "--no-headers").stdout.split(), timeout=10)
    assert slices[1:4] == ["IPv4", "<unset>", "<unset>"]


def _ready_pod_ips(raw: http.Raw, app: str) -> set[str]:
    _, _, pods = raw.request("GET", f"/api/v1/namespaces/default/pods?labelSelector=app%3D{app}")
    return {p["status"]["podIP"] for p in pods["items"] if any(
        x["type"] == "Ready" and x["status"] == "True" for x in p["status"].get("conditions") or [])}


def _slice_ips(raw: http.Raw, service: str) -> set[str]:
    _, _, slices = raw.request("GET", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                                      f"?labelSelector=kubernetes.io%2Fservice-name%3D{service}")
    return {a for s in slices["items"] for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")
            for a in e["addresses"]}


def test_scaling_adds_the_endpoint_within_a_second_of_ready(net: Net) -> None:
    """kubectl scale: the new replica is in the Service's EndpointSlice less than a second after it turns Ready."""
    c, _, _ = net
    raw = http.Raw(c.kubeconfig)
    _ensure_hello(c)
    before = _ready_pod_ips(raw, "hello")
    assert _slice_ips(raw, "hello") == before
    c.kubectl("scale", "deployment", "hello", f"--replicas={len(before) + 1}")
    ready_at = listed_at = 0.0
    deadline = time.monotonic() + 30
    while not listed_at and time.monotonic() < deadline:
        now = time.monotonic()
        if not ready_at and len(_ready_pod_ips(raw, "hello")) > len(before):
            ready_at = now
        if len(_slice_ips(raw, "hello")) > len(before):
            listed_at = now
            ready_at = ready_at or now
        time.sleep(0.02)
    assert listed_at, "the new replica never reached the EndpointSlice"
    assert listed_at - ready_at < 1.0


def _self_signed(c: cluster_mod.Cluster, host: str) -> str:
    crt, key = os.path.join(c.data_dir, f"{host}.crt"), os.path.join(c.data_dir, f"{host}.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}"],
                   check=True, capture_output=True)
    c.kubectl("create", "secret", "tls", host.split(".")[0] + "-tls", "--cert", crt, "--key", key)
    return crt


def _https_status(port: int, host: str, *, cafile: str) -> str:
    """The status line of GET / over TLS to 127.0.0.1:port with SNI host, verified against cafile ("" on failure)."""
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
                ctx.wrap_socket(sock, server_hostname=host) as tls:
            tls.sendall(f"GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
            return tls.recv(4096).decode(errors="replace").split("\r\n", 1)[0]
    except (OSError, ssl.SSLError):
        return ""


def test_tls_certificate_is_chosen_by_sni(net: Net) -> None:
    """Two TLS hosts on one Ingress: each handshake gets the certificate of the Secret named for its SNI host."""
    c, _, https_port = net
    _ensure_hello(c)
    crt_a, crt_b = _self_signed(c, "alpha.localhost"), _self_signed(c, "beta.localhost")
    c.kubectl("create", "ingress", "sni", "--rule=alpha.localhost/*=hello:80,tls=alpha-tls",
              "--rule=beta.localhost/*=hello:80,tls=beta-tls")
    cluster_mod.eventually(lambda: _https_status(https_port, "alpha.localhost", cafile=crt_a) == "HTTP/1.1 200 OK",
                           timeout=10, what="alpha.localhost over TLS")
    assert _https_status(https_port, "beta.localhost", cafile=crt_b) == "HTTP/1.1 200 OK"
    # Each certificate names only its own host: the wrong one fails verification.
    assert _https_status(https_port, "beta.localhost", cafile=crt_a) == ""
    c.kubectl("delete", "ingress", "sni")
