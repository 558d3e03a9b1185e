"""Specification of the REST client: paths, requests, watch streams, discovery and errors from Status."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pocketkube.api import errors
from pocketkube.base import pki
from pocketkube.client import config, rest

CM = rest.GVR("", "v1", "configmaps")
DEPLOY = rest.GVR("apps", "v1", "deployments")


def _status(code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reason, "code": code}
    if details is not None:
        body["details"] = details
    return body


AGGREGATED = {
    "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
    "items": [{"metadata": {"name": "apps"}, "versions": [
        {"version": "v1", "resources": [
            {"resource": "deployments", "responseKind": {"group": "", "version": "", "kind": "Deployment"},
             "scope": "Namespaced", "verbs": ["create", "delete", "deletecollection", "get", "list", "watch"],
             "subresources": [{"subresource": "status", "verbs": ["get"]}]}],
         "freshness": "Current"},
        {"version": "v1beta1", "resources": [
            {"resource": "deployments", "responseKind": {"group": "", "version": "", "kind": "Deployment"},
             "scope": "Namespaced", "verbs": ["get"]}], "freshness": "Stale"}]}],
}
CORE = {
    "kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {},
    "items": [{"metadata": {}, "versions": [{"version": "v1", "resources": [
        {"resource": "namespaces", "responseKind": {"group": "", "version": "", "kind": "Namespace"},
         "scope": "Cluster", "verbs": ["get", "list"]}]}]}],
}


class FakeServer:
    """A tiny API server: records requests and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.watch_lines: list[bytes] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append({"method": request.method, "path": request.path, "query": dict(request.query),
                              "accept": request.headers.get("Accept", ""),
                              "content_type": request.headers.get("Content-Type", ""),
                              "user_agent": request.headers.get("User-Agent", ""),
                              "body": json.loads(body) if body else None})
        path = request.path
        if path in ("/api", "/apis"):
            assert "as=APIGroupDiscoveryList" in request.headers["Accept"]
            return web.json_response(CORE if path == "/api" else AGGREGATED)
        if request.query.get("watch") == "1":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            for line in self.watch_lines:
                await resp.write(line)
            return resp
        if path.endswith("/missing"):
            return web.json_response(_status(404, "NotFound", 'configmaps "missing" not found',
                                             {"name": "missing", "kind": "configmaps"}), status=404)
        if path.endswith("/conflict"):
            return web.json_response(_status(409, "Conflict", "the object has been modified"), status=409)
        if path.endswith("/invalid"):
            return web.json_response(_status(422, "Invalid", 'ConfigMap "invalid" is invalid: data: Invalid value',
                                             {"name": "invalid", "kind": "ConfigMap", "causes": []}), status=422)
        if path.endswith("/plain"):
            return web.Response(status=503, text="upstream down")
        if request.method == "DELETE":
            return web.json_response({"kind": "Status", "status": "Success"})
        payload = json.loads(body) if body else {"kind": "ConfigMap", "metadata": {"name": "x"}}
        return web.json_response(payload)


@pytest.fixture
async def server():
    fake = FakeServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    srv = TestServer(app)
    await srv.start_server()
    client = rest.Client(str(srv.make_url("")), user_agent="test-agent", field_manager="tester")
    yield fake, client
    await client.close()
    await srv.close()


@pytest.mark.parametrize("gvr,ns,name,sub,want", [
    (CM, "", "", "", "/api/v1/configmaps"),
    (CM, "default", "", "", "/api/v1/namespaces/default/configmaps"),
    (CM, "default", "a", "", "/api/v1/namespaces/default/configmaps/a"),
    (DEPLOY, "ns", "web", "status", "/apis/apps/v1/namespaces/ns/deployments/web/status"),
    (rest.GVR("", "v1", "namespaces"), "", "x", "finalize", "/api/v1/namespaces/x/finalize"),
    (CM, "a b", "c/d", "", "/api/v1/namespaces/a%20b/configmaps/c%2Fd"),
])
def test_gvr_path(gvr, ns, name, sub, want):
    """GVR.path builds core and group paths, namespaced or not, with subresources and escaping."""
    assert gvr.path(ns, name, subresource=sub) == want


@pytest.mark.parametrize("gvr,want", [(CM, "/v1, Resource=configmaps"), (DEPLOY, "apps/v1, Resource=deployments")])
def test_gvr_str_matches_client_go(gvr, want):
    """A GVR prints like client-go's GroupVersionResource (used in namespace controller messages)."""
    assert str(gvr) == want


@pytest.mark.parametrize("code,body,cls,message", [
    (404, _status(404, "NotFound", 'x "a" not found'), errors.NotFound, 'x "a" not found'),
    (409, _status(409, "AlreadyExists", "exists"), errors.AlreadyExists, "exists"),
    (409, _status(409, "Conflict", "modified"), errors.Conflict, "modified"),
    (410, _status(410, "Expired", "too old resource version: 1 (5)"), errors.Gone, "too old resource version: 1 (5)"),
    (410, _status(410, "Gone", "gone"), errors.Gone, "gone"),
    (422, _status(422, "Invalid", "bad"), errors.Invalid, "bad"),
    (403, _status(403, "Forbidden", "no"), errors.Forbidden, "no"),
    (500, _status(500, "InternalError", "boom"), errors.InternalError, "boom"),
    (504, _status(504, "Timeout", "slow"), errors.Timeout, "slow"),
    (429, None, errors.TooManyRequests, "the server responded with HTTP 429"),
    (418, _status(418, "Teapot", "short and stout"), errors.APIError, "short and stout"),
])
def test_error_from_status(code, body, cls, message):
    """Each metav1.Status maps to the APIError of its reason (else its code), keeping the message."""
    err = rest.error_from_status(code, body)
    assert type(err) is cls
    assert err.message == message
    assert err.code == code


def test_error_from_status_keeps_details_and_unknown_reason():
    """Details survive, and an unknown reason round-trips through status()."""
    err = rest.error_from_status(418, _status(418, "Teapot", "m", {"name": "a"}))
    assert err.details == {"name": "a"}
    assert err.status()["reason"] == "Teapot"


def test_parse_aggregated_marks_preferred_and_stale():
    """Aggregated discovery yields one APIResource per version; the first version is preferred; stale fails."""
    d = rest.parse_aggregated(AGGREGATED)
    assert [(r.version, r.preferred) for r in d.resources] == [("v1", True), ("v1beta1", False)]
    assert d.resources[0].kind == "Deployment" and d.resources[0].namespaced
    assert "apps/v1beta1" in d.failed
    assert [r.version for r in d.preferred(verbs=("list", "delete"))] == ["v1"]
    assert d.for_kind("apps", "Deployment").version == "v1"
    assert d.for_kind("apps", "Nope") is None


async def test_get_and_errors(server):
    """get returns the decoded object; server Status errors are raised as their APIError."""
    fake, client = server
    obj = await client.get(CM.path("default", "x"))
    assert obj["metadata"]["name"] == "x"
    assert fake.requests[-1]["user_agent"] == "test-agent"
    with pytest.raises(errors.NotFound) as e:
        await client.get(CM.path("default", "missing"))
    assert e.value.details == {"name": "missing", "kind": "configmaps"}
    with pytest.raises(errors.Invalid):
        await client.get(CM.path("default", "invalid"))
    with pytest.raises(errors.ServiceUnavailable) as e2:
        await client.get(CM.path("default", "plain"))
    assert e2.value.message == "upstream down"


async def test_list_params_and_metadata_accept(server):
    """list sends only the given query parameters and asks for PartialObjectMetadataList when told."""
    fake, client = server
    await client.list(CM, "ns", label_selector="a=b", limit=10, continue_="tok", metadata_only=True)
    req = fake.requests[-1]
    assert req["path"] == "/api/v1/namespaces/ns/configmaps"
    assert req["query"] == {"labelSelector": "a=b", "limit": "10", "continue": "tok"}
    assert req["accept"].startswith("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")


async def test_writes(server):
    """create/update/update_status/patch/delete use the right verbs, paths, bodies and field manager."""
    fake, client = server
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "ns"}}
    await client.create(CM, body)
    assert (fake.requests[-1]["method"], fake.requests[-1]["path"]) == ("POST", "/api/v1/namespaces/ns/configmaps")
    assert fake.requests[-1]["query"] == {"fieldManager": "tester"}
    await client.update(CM, body)
    assert (fake.requests[-1]["method"], fake.requests[-1]["path"]) == ("PUT", "/api/v1/namespaces/ns/configmaps/a")
    await client.update_status(DEPLOY, {"metadata": {"name": "w", "namespace": "ns"}})
    assert fake.requests[-1]["path"] == "/apis/apps/v1/namespaces/ns/deployments/w/status"
    await client.patch(CM.path("ns", "a"), {"data": {"k": "v"}}, patch_type="merge")
    assert fake.requests[-1]["content_type"] == "application/merge-patch+json"
    await client.delete(CM.path("ns", "a"), propagation_policy="Foreground", preconditions={"uid": "u1"})
    req = fake.requests[-1]
    assert req["method"] == "DELETE"
    assert req["body"] == {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Foreground",
                           "preconditions": {"uid": "u1"}}
    await client.delete_collection(CM, "ns", propagation_policy="Background")
    assert fake.requests[-1]["path"] == "/api/v1/namespaces/ns/configmaps"
    assert fake.requests[-1]["accept"] == "application/json"
    await client.delete_collection(CM, "ns", metadata_only=True)
    assert fake.requests[-1]["accept"].startswith("application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,")
    with pytest.raises(ValueError):
        await client.patch(CM.path("ns", "a"), {}, patch_type="bogus")


async def test_watch_streams_events_split_across_chunks(server):
    """watch yields (type, object) for each JSON line, even when lines arrive split across writes."""
    fake, client = server
    ev1 = json.dumps({"type": "ADDED", "object": {"metadata": {"name": "a", "resourceVersion": "5"}}}).encode()
    ev2 = json.dumps({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}).encode()
    fake.watch_lines = [ev1[:10], ev1[10:] + b"\n" + ev2[:5], ev2[5:] + b"\n"]
    got = [e async for e in client.watch(CM, "ns", resource_version="4", timeout_seconds=5)]
    assert got == [("ADDED", {"metadata": {"name": "a", "resourceVersion": "5"}}),
                   ("BOOKMARK", {"metadata": {"resourceVersion": "9"}})]
    q = fake.requests[-1]["query"]
    assert q == {"watch": "1", "resourceVersion": "4", "allowWatchBookmarks": "true", "timeoutSeconds": "5"}


async def test_watch_error_event_raises_gone(server):
    """An ERROR event carrying a 410 Status is raised as errors.Gone."""
    fake, client = server
    fake.watch_lines = [json.dumps({"type": "ERROR", "object": _status(
        410, "Expired", "too old resource version: 1 (42)")}).encode() + b"\n"]
    with pytest.raises(errors.Gone, match="too old resource version"):
        async for _ in client.watch(CM):
            pass


async def test_discover_merges_core_and_groups(server):
    """discover asks /api and /apis for aggregated discovery and merges both."""
    _, client = server
    d = await client.discover()
    assert {(r.group, r.resource) for r in d.preferred()} == {("", "namespaces"), ("apps", "deployments")}
    ns = d.for_kind("", "Namespace")
    assert ns is not None and not ns.namespaced


async def test_tls_client_cert_from_pem(tmp_path):
    """from_pem builds a client that verifies the server with the CA and presents its client cert."""
    p = pki.ensure_pki(str(tmp_path))
    seen: list[str] = []

    async def who(request: web.Request) -> web.Response:
        cert = request.transport.get_extra_info("ssl_object").getpeercert()
        seen.append(dict(x[0] for x in cert["subject"])["commonName"])
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "a"}})

    app = web.Application()
    app.router.add_get("/{tail:.*}", who)
    srv = TestServer(app, host="127.0.0.1")
    await srv.start_server(ssl=pki.ssl_server_context(p))
    cert, key = pki.issue_client_cert(p, "system:kube-controller-manager")
    client = config.from_pem(f"https://127.0.0.1:{srv.port}", ca_pem=p.ca_cert_pem, cert_pem=cert, key_pem=key)
    try:
        assert (await client.get("/api/v1/namespaces/a/configmaps/a"))["metadata"]["name"] == "a"
    finally:
        await client.close()
        await srv.close()
    assert seen == ["system:kube-controller-manager"]
