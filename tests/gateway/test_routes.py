"""Route compiler: golden route tables for Ingress sets, and request matching on them."""

from __future__ import annotations

import json
import os
import pathlib

import pytest

from pocketkube.gateway import endpoints, routes

HERE = pathlib.Path(__file__).parent
CASES = sorted(p.stem for p in (HERE / "cases").glob("*.json"))


def _compile(case: str) -> routes.Table:
    spec = json.loads((HERE / "cases" / f"{case}.json").read_text())
    return routes.compile_ingresses(spec["ingresses"], class_name=spec["class"], is_default=spec["isDefault"])


@pytest.mark.parametrize("case", CASES)
def test_golden_route_table(case: str) -> None:
    """The compiled table of each case equals its golden file (UPDATE_GOLDEN=1 rewrites them)."""
    got = routes.to_json(_compile(case))
    golden = HERE / "golden" / f"{case}.json"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(json.dumps(got, indent=2, sort_keys=True) + "\n")
    assert got == json.loads(golden.read_text())


@pytest.mark.parametrize(("prefix", "path", "want"), [
    ("/", "/", True), ("/", "/anything/else", True),
    ("/foo", "/foo", True), ("/foo", "/foo/", True), ("/foo", "/foo/bar", True), ("/foo", "/foobar", False),
    ("/foo/", "/foo", True), ("/aaa/bb", "/aaa/bbb", False), ("/aaa/bbb/", "/aaa/bbb/ccc", True),
    ("/foo", "/foo?x=1", True), ("/foo/bar", "/foo", False),
])
def test_prefix_matches_element_wise(prefix: str, path: str, want: bool) -> None:
    """Prefix paths match by whole path elements, as the Ingress spec's examples say."""
    assert routes.prefix_matches(prefix, path) is want


@pytest.mark.parametrize(("case", "host", "path", "want"), [
    ("basic_tls", "demo.localhost", "/", "web"),
    ("basic_tls", "demo.localhost:8443", "/api", "api-exact"),
    ("basic_tls", "DEMO.localhost", "/api/", "api"),
    ("basic_tls", "demo.localhost", "/api/v2/x", "api2"),
    ("basic_tls", "demo.localhost", "/apix", "web"),
    ("basic_tls", "unknown.localhost", "/", None),
    ("classes_and_conflicts", "app.example.com", "/", "web-a"),
    ("classes_and_conflicts", "x.example.com", "/", "wild"),
    ("classes_and_conflicts", "y.x.example.com", "/legacy", "legacy"),
    ("classes_and_conflicts", "example.com", "/legacy/", None),
    ("classes_and_conflicts", "nginx.example.com", "/legacy", "wild"),
    ("classes_and_conflicts", "other.org", "/legacy", "legacy"),
    ("bad_backends", "r.example.com", "/icons", "web"),
])
def test_match(case: str, host: str, path: str, want: str | None) -> None:
    """Requests land on exact hosts, then one-label wildcards, then the catch-all, with Exact and longer paths first."""
    route = _compile(case).match(host, path)
    assert (route.backends[0].service if route else None) == want


def test_tls_host_and_secrets() -> None:
    """TLS hosts are found by exact name or wildcard; only entries with a secretName need a Secret."""
    table = _compile("basic_tls")
    assert routes.tls_host(table, "demo.localhost:443") == routes.TLSHost("demo.localhost", "default", "demo-tls",
                                                                        "default/demo")
    assert routes.tls_host(table, "bare.localhost") is not None
    assert routes.tls_host(table, "other.localhost") is None
    assert routes.secrets_needed(table) == [("default", "demo-tls")]


@pytest.mark.parametrize(("host", "want"), [
    ("Demo.Localhost:8080", "demo.localhost"), ("demo.localhost.", "demo.localhost"), ("[::1]:80", "[::1]"),
    ("10.0.0.1", "10.0.0.1"), ("", ""),
])
def test_normalize_host(host: str, want: str) -> None:
    """Host headers lose port, trailing dot and case."""
    assert routes.normalize_host(host) == want


def _slice(svc: str, port_name: str, port: int, eps: list[tuple[str, bool | None]]) -> dict[str, object]:
    return {"metadata": {"namespace": "default", "name": f"{svc}-x", "labels": {endpoints.SERVICE_NAME_LABEL: svc}},
            "ports": [{"name": port_name, "port": port}],
            "endpoints": [{"addresses": [a], "conditions": {} if r is None else {"ready": r}} for a, r in eps]}


@pytest.mark.parametrize(("port", "services", "slices", "addresses", "error"), [
    (80, {}, [], (), 'Error obtaining Endpoints for Service "default/web": no object matching key "default/web" in local store'),
    (81, {"web": [{"port": 80}]}, [], (), 'Service "default/web" does not have any port 81'),
    (80, {"web": [{"port": 80}]}, [], (), 'Service "default/web" does not have any active Endpoint.'),
    (80, {"web": [{"port": 80}]}, [_slice("web", "", 9000, [("10.0.0.1", True), ("10.0.0.2", False)])],
     (("127.0.0.1", 9000),), ""),
    ("http", {"web": [{"port": 80, "name": "http"}, {"port": 81, "name": "m"}]},
     [_slice("web", "m", 9001, [("10.0.0.1", None)]), _slice("web", "http", 9000, [("10.0.0.1", None)])],
     (("127.0.0.1", 9000),), ""),
])
def test_resolve(port: int | str, services: dict[str, list[dict[str, object]]], slices: list[dict[str, object]],
                 addresses: tuple[tuple[str, int], ...], error: str) -> None:
    """Backends resolve through the Service port to the ready endpoints of its EndpointSlices."""
    svcs = {f"default/{n}": {"spec": {"ports": ps}} for n, ps in services.items()}
    got = endpoints.resolve(routes.Backend("default", "web", port), svcs, endpoints.slices_index(slices))
    assert (got.addresses, got.error) == (addresses, error)
