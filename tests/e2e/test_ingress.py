"""End to end: the built-in ingress controller routes real HTTP/HTTPS to pods, with TLS from a Secret."""

from __future__ import annotations

import collections.abc
import http.client
import json
import os
import socket
import ssl
import subprocess
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[tuple[cluster_mod.Cluster, int, int]]:
    """A cluster with a process node (pods on the host network) and the ingress on two free ports."""
    http_port, https_port = _free_port(), _free_port()
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk"))).start(args=[
        "--nodes", "1", "--pod-network", "off",
        "--ingress-http-port", str(http_port), "--ingress-https-port", str(https_port)])
    try:
        yield c, http_port, https_port
    finally:
        c.stop()


def _web(c: cluster_mod.Cluster, name: str, text: str) -> None:
    """A pod serving `text` with http.server on a free port, and a Service web-name:80 in front of it."""
    port = _free_port()
    root = os.path.join(c.data_dir, name)
    os.makedirs(os.path.join(root, "api"), exist_ok=True)
    for rel in ("index.html", "api/index.html", "apiary"):
        with open(os.path.join(root, rel), "w") as f:
            f.write(f"{text}:{rel}")
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
           "spec": {"terminationGracePeriodSeconds": 1, "containers": [{
               "name": "web", "image": "python:3.11",
               "command": ["python3", "-m", "http.server", str(port), "--directory", root],
               "ports": [{"name": "http", "containerPort": port}],
               "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}]}}
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
           "spec": {"selector": {"app": name}, "ports": [{"port": 80, "targetPort": "http"}]}}
    c.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [pod, svc]}))
    c.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=60s")


def _request(port: int, host: str, path: str = "/", *, tls_ctx: ssl.SSLContext | None = None) -> tuple[int, str, Any]:
    if tls_ctx is not None:
        conn: http.client.HTTPConnection = _SNIConnection("127.0.0.1", port, sni=host, context=tls_ctx, timeout=10)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace"), r.headers
    finally:
        conn.close()


def _until(port: int, host: str, path: str, *, ok: collections.abc.Callable[[int], bool],
           tls_ctx: ssl.SSLContext | None = None) -> tuple[int, str, Any]:
    """Repeat a request until its status satisfies ok (the table follows the API within a moment)."""
    got: list[tuple[int, str, Any]] = []

    def attempt() -> bool:
        got[:] = [_request(port, host, path, tls_ctx=tls_ctx)]
        return ok(got[0][0])

    cluster_mod.eventually(attempt, what=f"{host}{path} answering as expected")
    return got[0]


class _SNIConnection(http.client.HTTPSConnection):
    """HTTPS to an IP address with the SNI name of a host, as a browser resolving demo.localhost would send."""

    def __init__(self, host: str, port: int, *, sni: str, context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, port, context=context, timeout=timeout)
        self._sni, self._ctx = sni, context

    def connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), self.timeout)
        self.sock = self._ctx.wrap_socket(sock, server_hostname=self._sni)


def _tls_secret(c: cluster_mod.Cluster, host: str) -> str:
    crt, key = os.path.join(c.data_dir, "tls.crt"), os.path.join(c.data_dir, "tls.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "1", "-subj", f"/CN={host}", "-addext", f"subjectAltName=DNS:{host}"],
                   check=True, capture_output=True)
    c.kubectl("create", "secret", "tls", "demo-tls", "--cert", crt, "--key", key)
    return crt


def test_ingress_class_is_the_default(ingress: tuple[cluster_mod.Cluster, int, int]) -> None:
    """The pocketkube IngressClass exists at start and is marked as the cluster's default."""
    c, _, _ = ingress
    ic = cluster_mod.eventually(lambda: c.kubectl("get", "ingressclass", "pocketkube", "-o", "json",
                                                  check=False).stdout, what="the IngressClass")
    obj = json.loads(ic)
    assert obj["spec"]["controller"] == "pocketkube.io/ingress"
    assert obj["metadata"]["annotations"]["ingressclass.kubernetes.io/is-default-class"] == "true"


def test_tls_ingress_routes_to_the_pod(ingress: tuple[cluster_mod.Cluster, int, int]) -> None:
    """kubectl create ingress with a TLS secret: HTTPS with SNI reaches the pod, HTTP redirects with 308."""
    c, http_port, https_port = ingress
    _web(c, "web", "web")
    crt = _tls_secret(c, "demo.localhost")
    c.kubectl("create", "ingress", "demo", "--rule=demo.localhost/*=web:80,tls=demo-tls")
    assert c.json("get", "ingress", "demo")["spec"]["ingressClassName"] == "pocketkube"
    cluster_mod.eventually(lambda: "127.0.0.1" in c.kubectl("get", "ingress", "demo").stdout, what="the ADDRESS")
    out = c.kubectl("get", "ingress", "demo").stdout
    assert out.splitlines()[0].split() == ["NAME", "CLASS", "HOSTS", "ADDRESS", "PORTS", "AGE"]
    assert out.splitlines()[1].split()[:5] == ["demo", "pocketkube", "demo.localhost", "127.0.0.1", "80,"]
    assert "80, 443" in out
    ctx = ssl.create_default_context(cafile=crt)
    status, body, _ = _until(https_port, "demo.localhost", "/", ok=lambda s: s == 200, tls_ctx=ctx)
    assert body == "web:index.html"
    status, _, headers = _request(http_port, "demo.localhost", "/x?y=1")
    assert status == 308 and headers["Location"] == f"https://demo.localhost:{https_port}/x?y=1"


def test_path_routing_and_missing_service(ingress: tuple[cluster_mod.Cluster, int, int]) -> None:
    """Paths pick services; a path to a missing service answers 503 with a Warning event; unknown hosts 404."""
    c, http_port, _ = ingress
    _web(c, "api", "api")
    if c.kubectl("get", "pod", "web", check=False).returncode != 0:
        _web(c, "web", "web")
    c.kubectl("create", "ingress", "paths", "--rule=paths.localhost/*=web:80", "--rule=paths.localhost/api*=api:80",
              "--rule=paths.localhost/gone=nosuch:80")
    status, body, _ = _until(http_port, "paths.localhost", "/api/", ok=lambda s: s == 200)
    assert body == "api:api/index.html"
    assert _request(http_port, "paths.localhost", "/")[1] == "web:index.html"
    assert _request(http_port, "paths.localhost", "/apiary")[1] == "web:apiary"
    status, body, _ = _request(http_port, "paths.localhost", "/gone")
    assert status == 503 and "503 Service Temporarily Unavailable" in body
    assert _request(http_port, "nobody.localhost", "/")[0] == 404

    def warned() -> bool:
        items = c.json("get", "events", "--field-selector", "involvedObject.name=paths")["items"]
        return any(e["type"] == "Warning" and 'Service "default/nosuch"' in e["message"] for e in items)

    cluster_mod.eventually(warned, what="a Warning event about the missing service")
    # Creating the service's pod and Service later makes the route work without touching the Ingress.
    _web(c, "nosuch", "late")
    status, body, _ = _until(http_port, "paths.localhost", "/gone", ok=lambda s: s != 503)
    assert status == 404  # http.server has no /gone: the request reached the pod
