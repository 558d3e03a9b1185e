"""End to end: Ingress cases test_ingress.py leaves out: default backend, ImplementationSpecific, bad references."""

from __future__ import annotations

import collections.abc
import json
import socket
import ssl
from typing import Any

import pytest
from cryptography import x509

from tests.e2e import cluster as cluster_mod
from tests.e2e import test_ingress as ing

Ingress = tuple[cluster_mod.Cluster, int, int]


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[Ingress]:
    """A cluster with a process node on the host network, the ingress on free ports, and two web pods."""
    http_port, https_port = ing._free_port(), ing._free_port()
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk"))).start(args=[
        "--nodes", "1", "--pod-network", "off",
        "--ingress-http-port", str(http_port), "--ingress-https-port", str(https_port)])
    try:
        cluster_mod.eventually(lambda: c.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
                               what="the default ServiceAccount")
        ing._web(c, "api", "api")
        ing._web(c, "fallback", "fallback")
        yield c, http_port, https_port
    finally:
        c.stop()


def _ingress(name: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name},
                       "spec": spec})


def _path(path: str, kind: str, service: str) -> dict[str, Any]:
    return {"path": path, "pathType": kind, "backend": {"service": {"name": service, "port": {"number": 80}}}}


def _events(c: cluster_mod.Cluster, name: str) -> list[tuple[str, str, str]]:
    items = c.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items]


def test_default_backend_takes_unmatched_requests(ingress: Ingress) -> None:
    """spec.defaultBackend answers unknown hosts and paths no rule matches; rules still win where they match."""
    c, http_port, _ = ingress
    c.kubectl("apply", "-f", "-", input=_ingress("with-default", {
        "defaultBackend": {"service": {"name": "fallback", "port": {"number": 80}}},
        "rules": [{"host": "d.localhost", "http": {"paths": [_path("/api", "Prefix", "api")]}}]}))
    status, body, _ = ing._until(http_port, "nobody.localhost", "/", ok=lambda s: s == 200)
    assert body == "fallback:index.html"
    assert ing._request(http_port, "d.localhost", "/apiary")[1] == "fallback:apiary"
    assert ing._request(http_port, "d.localhost", "/api/")[1] == "api:api/index.html"
    c.kubectl("delete", "ingress", "with-default")


def test_implementation_specific_is_a_prefix(ingress: Ingress) -> None:
    """An ImplementationSpecific path matches the path and everything under it, as ingress-nginx does."""
    c, http_port, _ = ingress
    c.kubectl("apply", "-f", "-", input=_ingress("impl", {"rules": [{"host": "i.localhost", "http": {"paths": [
        _path("/api", "ImplementationSpecific", "api"), _path("/", "Exact", "fallback")]}}]}))
    status, body, _ = ing._until(http_port, "i.localhost", "/api/", ok=lambda s: s == 200)
    assert body == "api:api/index.html"
    assert ing._request(http_port, "i.localhost", "/")[1] == "fallback:index.html"
    assert ing._request(http_port, "i.localhost", "/elsewhere")[0] == 404
    c.kubectl("delete", "ingress", "impl")


def test_missing_tls_secret_serves_the_default_certificate(ingress: Ingress) -> None:
    """A tls entry naming a missing Secret serves HTTPS with the fake certificate and warns with SecretNotFound."""
    c, _, https_port = ingress
    c.kubectl("apply", "-f", "-", input=_ingress("nosecret", {
        "tls": [{"hosts": ["s.localhost"], "secretName": "absent"}],
        "rules": [{"host": "s.localhost", "http": {"paths": [_path("/", "Prefix", "api")]}}]}))
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    status, body, _ = ing._until(https_port, "s.localhost", "/", ok=lambda s: s == 200, tls_ctx=ctx)
    assert body == "api:index.html"
    with ctx.wrap_socket(socket.create_connection(("127.0.0.1", https_port)), server_hostname="s.localhost") as tls:
        cert = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
    assert cert.subject.rfc4514_string() == "CN=Kubernetes Ingress Controller Fake Certificate,O=Acme Co"
    want = ("Warning", "SecretNotFound", 'Error getting SSL certificate "default/absent": local SSL certificate '
            "default/absent was not found. Using default certificate")
    cluster_mod.eventually(lambda: want in _events(c, "nosecret"), what="the SecretNotFound event")
    c.kubectl("delete", "ingress", "nosecret")


def test_service_without_endpoints_answers_503(ingress: Ingress) -> None:
    """A path to a Service that selects no pods answers ingress-nginx's 503 page, and the others keep working."""
    c, http_port, _ = ingress
    c.kubectl("create", "service", "clusterip", "empty", "--tcp=80:80")
    c.kubectl("apply", "-f", "-", input=_ingress("empty", {"rules": [{"host": "e.localhost", "http": {"paths": [
        _path("/", "Prefix", "empty"), _path("/api", "Prefix", "api")]}}]}))
    status, body, _ = ing._until(http_port, "e.localhost", "/api/", ok=lambda s: s == 200)
    assert body == "api:api/index.html"
    status, body, _ = ing._request(http_port, "e.localhost", "/")
    assert status == 503 and "<title>503 Service Temporarily Unavailable</title>" in body
    c.kubectl("delete", "ingress", "empty")
