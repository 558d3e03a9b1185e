"""End to end over raw HTTPS: status codes, reasons and messages for bad input, and watch semantics."""

from __future__ import annotations

import collections.abc
import json

import orjson
import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import http

CM = "/api/v1/namespaces/default/configmaps"


@pytest.fixture(scope="module")
def raw(cluster: cluster_mod.Cluster) -> collections.abc.Iterator[http.Raw]:
    yield http.Raw(cluster.kubeconfig)


def _cm(name: str, **data: str) -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


@pytest.mark.parametrize("method,path,body,headers,code,reason,message", [
    ("POST", CM, b'{"apiVersion":', {"Content-Type": "application/json"}, 400, "BadRequest", "json parse error"),
    ("POST", CM, b"kind: [", {"Content-Type": "application/yaml"}, 400, "BadRequest", "YAML"),
    ("PATCH", CM + "/x", b"{}", {"Content-Type": "text/plain"}, 415, "UnsupportedMediaType", "unknown format"),
    ("GET", "/apis/nosuch.example.com/v1/things", None, {}, 404, "NotFound", "the server could not find the requested resource"),
    ("GET", "/api/v1/nosuchthings", None, {}, 404, "NotFound", "the server could not find the requested resource"),
    ("GET", CM + "/nope", None, {}, 404, "NotFound", 'configmaps "nope" not found'),
    ("GET", CM + "?labelSelector=a%3D%3D%3Db", None, {}, 400, "BadRequest", "unable to parse requirement"),
    ("GET", CM + "?fieldSelector=spec.nope%3Dx", None, {}, 400, "BadRequest", "is not a known field selector"),
    ("POST", CM, json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}), {"Content-Type": "application/json"}, 400, "BadRequest", "Deployment"),
    ("POST", CM, json.dumps(_cm("Bad_Name")), {"Content-Type": "application/json"}, 422, "Invalid", 'ConfigMap "Bad_Name" is invalid'),
    ("POST", CM + "?fieldValidation=Strict", json.dumps({**_cm("strict"), "bogus": 1}), {"Content-Type": "application/json"}, 400, "BadRequest", 'strict decoding error: unknown field "bogus"'),
    ("POST", "/api/v1/namespaces/missing-ns/configmaps", json.dumps(_cm("x")), {"Content-Type": "application/json"}, 404, "NotFound", 'namespaces "missing-ns" not found'),
    ("POST", CM, b"[" * 200 + b"]" * 200, {"Content-Type": "application/json"}, 400, "BadRequest", ""),
    ("PUT", CM + "/absent", json.dumps(_cm("absent")), {"Content-Type": "application/json"}, 404, "NotFound", 'configmaps "absent" not found'),
])
def test_bad_requests_get_kubernetes_statuses(raw: http.Raw, method: str, path: str, body, headers, code: int,  # type: ignore[no-untyped-def]
                                               reason: str, message: str) -> None:
    """Each bad request is answered with the metav1.Status code, reason and message kube-apiserver uses."""
    status, _, out = raw.request(method, path, body, headers=headers)
    assert status == code, out
    assert out["kind"] == "Status" and out["reason"] == reason and out["code"] == code
    assert message in out["message"]


def test_body_over_3mib_is_413(raw: http.Raw) -> None:
    """A request body larger than 3 MiB is refused with 413 and stores nothing."""
    big = json.dumps(_cm("big", a="x" * (3 * 1024 * 1024 + 10)))
    status, _, out = raw.request("POST", CM, big, headers={"Content-Type": "application/json"})
    assert status == 413 and out["reason"] == "RequestEntityTooLarge"
    assert raw.request("GET", CM + "/big")[0] == 404


def test_conflict_and_already_exists(raw: http.Raw) -> None:
    """Creating an existing name is 409 AlreadyExists; updating with a stale resourceVersion is 409 Conflict."""
    status, _, created = raw.request("POST", CM, _cm("dup", a="1"))
    assert status == 201
    status, _, out = raw.request("POST", CM, _cm("dup", a="1"))
    assert status == 409 and out["reason"] == "AlreadyExists" and out["message"] == 'configmaps "dup" already exists'
    upd = dict(created, data={"a": "2"})
    assert raw.request("PUT", CM + "/dup", upd)[0] == 200
    status, _, out = raw.request("PUT", CM + "/dup", dict(created, data={"a": "3"}))
    assert status == 409 and out["reason"] == "Conflict"


def test_generate_name_and_dry_run(raw: http.Raw) -> None:
    """generateName appends five random characters; dryRun=All validates without storing."""
    status, _, out = raw.request("POST", CM, {"apiVersion": "v1", "kind": "ConfigMap",
                                              "metadata": {"generateName": "gen-"}})
    assert status == 201 and out["metadata"]["name"].startswith("gen-") and len(out["metadata"]["name"]) == 9
    status, _, out = raw.request("POST", CM + "?dryRun=All", _cm("dry"))
    assert status == 201
    assert raw.request("GET", CM + "/dry")[0] == 404


def test_warn_field_validation_sends_warning_header(raw: http.Raw) -> None:
    """fieldValidation=Warn stores the object and reports unknown fields in a Warning header."""
    status, headers, _ = raw.request("POST", CM + "?fieldValidation=Warn", {**_cm("warned"), "bogus": 1})
    assert status == 201
    assert headers.get("warning") == '299 - "unknown field \\"bogus\\""'


def test_list_pagination_with_continue(raw: http.Raw) -> None:
    """limit/continue pages through a consistent snapshot and reports remainingItemCount."""
    for i in range(5):
        raw.request("POST", "/api/v1/namespaces/default/secrets",
                    {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": f"s{i}"}, "stringData": {"k": "v"}})
    _, _, page = raw.request("GET", "/api/v1/namespaces/default/secrets?limit=2")
    assert len(page["items"]) == 2 and page["metadata"]["remainingItemCount"] == 3
    names = [i["metadata"]["name"] for i in page["items"]]
    while page["metadata"].get("continue"):
        _, _, page = raw.request("GET", "/api/v1/namespaces/default/secrets?limit=2&continue=" + page["metadata"]["continue"])
        names += [i["metadata"]["name"] for i in page["items"]]
    assert names == [f"s{i}" for i in range(5)]


def test_watch_from_resource_version_and_bookmarks(raw: http.Raw) -> None:
    """A watch from a resourceVersion replays later changes in order and ends at timeoutSeconds."""
    _, _, created = raw.request("POST", CM, _cm("wv", a="1"))
    rv = created["metadata"]["resourceVersion"]
    raw.request("PUT", CM + "/wv", dict(created, data={"a": "2"}))
    raw.request("DELETE", CM + "/wv")
    status, _, body = raw.request("GET", CM + f"?watch=1&resourceVersion={rv}&timeoutSeconds=1"
                                  "&allowWatchBookmarks=true&fieldSelector=metadata.name%3Dwv")
    events = [orjson.loads(line) for line in body.splitlines() if line]
    assert status == 200
    assert [e["type"] for e in events if e["type"] != "BOOKMARK"] == ["MODIFIED", "DELETED"]


def test_watch_send_initial_events_ends_with_bookmark(raw: http.Raw) -> None:
    """sendInitialEvents=true replays current objects then a bookmark annotated initial-events-end."""
    raw.request("POST", CM, _cm("init1"))
    status, _, body = raw.request("GET", CM + "?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan"
                                  "&allowWatchBookmarks=true&timeoutSeconds=1")
    events = [orjson.loads(line) for line in body.splitlines() if line]
    names = [e["object"]["metadata"].get("name") for e in events if e["type"] == "ADDED"]
    assert "init1" in names
    marks = [e for e in events if e["type"] == "BOOKMARK"]
    assert marks and marks[0]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"] == "true"


def test_anonymous_requests_only_reach_public_paths(raw: http.Raw) -> None:
    """Without a client certificate /version and /healthz answer, resources are forbidden."""
    assert raw.request("GET", "/version", anonymous=True)[0] == 200
    assert raw.request("GET", "/healthz", anonymous=True)[0] == 200
    status, _, out = raw.request("GET", CM, anonymous=True)
    assert status == 403 and out["reason"] == "Forbidden"
    assert 'User "system:anonymous" cannot list resource "configmaps"' in out["message"]


def test_status_subresource_keeps_spec_and_status_apart(raw: http.Raw) -> None:
    """Writes to the main resource ignore status; writes to /status ignore spec; generation follows spec only."""
    # A custom resource, as no controller writes its status: a Deployment's would race the deployment controller.
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "splits.split.example.com"},
           "spec": {"group": "split.example.com", "scope": "Namespaced",
                    "names": {"plural": "splits", "singular": "split", "kind": "Split", "listKind": "SplitList"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "subresources": {"status": {}},
                                  "schema": {"openAPIV3Schema": {"type": "object", "properties": {
                                      "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                      "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]}}
    assert raw.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)[0] == 201
    base = "/apis/split.example.com/v1/namespaces/default/splits"
    cluster_mod.eventually(lambda: raw.request("GET", base)[0] == 200, what="the Split resource served")
    obj = {"apiVersion": "split.example.com/v1", "kind": "Split", "metadata": {"name": "split"},
           "spec": {"replicas": 1}, "status": {"replicas": 9}}
    status, _, out = raw.request("POST", base, obj)
    assert status == 201 and out.get("status", {}).get("replicas") is None and out["metadata"]["generation"] == 1
    out["status"] = {"replicas": 7}
    out["spec"]["replicas"] = 5
    status, _, out2 = raw.request("PUT", base + "/split/status", out)
    assert status == 200 and out2["status"]["replicas"] == 7 and out2["spec"]["replicas"] == 1
    assert out2["metadata"]["generation"] == 1
    status, _, out3 = raw.request("PATCH", base + "/split", {"spec": {"replicas": 2}, "status": {"replicas": 3}},
                                  headers={"Content-Type": "application/merge-patch+json"})
    assert out3["metadata"]["generation"] == 2 and out3["status"]["replicas"] == 7 and out3["spec"]["replicas"] == 2


def test_update_without_resource_version_is_unconditional(raw: http.Raw) -> None:
    """PUT without metadata.resourceVersion updates whatever version is current (regression: was 422)."""
    raw.request("POST", CM, _cm("uncond", a="1"))
    status, _, out = raw.request("PUT", CM + "/uncond", _cm("uncond", a="2"))
    assert status == 200 and out["data"] == {"a": "2"}
