"""Specification of the OpenAPI documents: /openapi/v2 (JSON and protobuf), the /openapi/v3 index and documents."""

from __future__ import annotations

import functools
import hashlib
import json
import pathlib
import re
from typing import Any

import pytest

from pocketkube.api import openapi, openapi_v2pb, openapi_v3
from pocketkube.api import resources as R

REFERENCE = pathlib.Path("/work/shared/reference/responses")
if not REFERENCE.exists():
    REFERENCE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "reference" / "responses"
needs_reference = pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference not present")


def _from_discovery(body: dict[str, Any], group: str) -> list[R.Resource]:
    out = []
    for version in body["versions"]:
        for r in version["resources"]:
            subs = tuple(R.Subresource(s["subresource"], s["responseKind"]["kind"], tuple(s.get("verbs", ())),
                                       s["responseKind"].get("group", ""), s["responseKind"].get("version", ""))
                         for s in r.get("subresources", ()))
            out.append(R.Resource(group, version["version"], r["resource"], r["responseKind"]["kind"],
                                  r["scope"] == "Namespaced", verbs=tuple(r["verbs"]), subresources=subs))
    return out


@functools.cache
def reference_resources() -> tuple[R.Resource, ...]:
    """Every resource the reference kube-apiserver 1.32 served, as Resource records."""
    rs: list[R.Resource] = []
    core = json.loads((REFERENCE / "api-aggregated.body").read_text())
    rs += _from_discovery(core["items"][0], "")
    apis = json.loads((REFERENCE / "apis-aggregated.body").read_text())
    for item in apis["items"]:
        rs += _from_discovery(item, item["metadata"]["name"])
    return tuple(rs)


SMALL = [
    R.Resource("apps", "v1", "deployments", "Deployment", True, subresources=(
        R.Subresource("scale", "Scale", ("get", "patch", "update"), "autoscaling", "v1"),
        R.Subresource("status", "Deployment", ("get", "patch", "update")))),
    R.Resource("", "v1", "namespaces", "Namespace", False,
               verbs=("create", "delete", "get", "list", "patch", "update", "watch")),
    R.Resource("", "v1", "pods", "Pod", True, subresources=(
        R.Subresource("log", "Pod", ("get",)), R.Subresource("exec", "PodExecOptions", ("create", "get")),
        R.Subresource("eviction", "Eviction", ("create",), "policy", "v1"))),
]


def _all_refs(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            found.add(node["$ref"])
        for v in node.values():
            found |= _all_refs(v)
    elif isinstance(node, list):
        for v in node:
            found |= _all_refs(v)
    return found


def test_document_hash_is_uppercase_sha512_of_serialized_bytes():
    """The advertised hash is the uppercase hex SHA-512 of exactly the bytes served."""
    doc = {"openapi": "3.0.0", "paths": {}}
    data = openapi.serialize(doc)
    assert openapi.document_hash(doc) == hashlib.sha512(data).hexdigest().upper()
    assert openapi.document_hash(data) == openapi.document_hash(doc)
    assert re.fullmatch(r"[0-9A-F]{128}", openapi.document_hash(doc))


@needs_reference
def test_v3_index_lists_the_same_paths_as_the_reference_server():
    """Served every built-in resource, the /openapi/v3 index has exactly the reference server's keys."""
    index = openapi.v3_index(list(reference_resources()))
    reference = json.loads((REFERENCE / "openapi-v3-index.body").read_text())
    assert list(index) == ["paths"]
    assert list(index["paths"]) == list(reference["paths"])


def test_v3_index_urls_carry_the_hash_of_each_document():
    """Each serverRelativeURL is /openapi/v3/KEY?hash=HASH where HASH matches the served document's bytes."""
    blobs = openapi.v3_serialized(SMALL)
    index = openapi.v3_index_of(blobs)
    assert list(index["paths"]) == sorted(blobs)
    for key, entry in index["paths"].items():
        assert entry == {"serverRelativeURL": f"/openapi/v3/{key}?hash={openapi.document_hash(blobs[key])}"}
    assert set(blobs) >= {"api", "api/v1", "apis", "apis/apps", "apis/apps/v1", "version",
                          ".well-known/openid-configuration", "openid/v1/jwks"}


def test_v3_index_is_stable_across_builds():
    """Building twice gives the same hashes, so kubectl's cached documents stay valid."""
    assert openapi.v3_index(SMALL) == openapi.v3_index(SMALL)


def test_v3_document_shape_for_apps_v1():
    """The apps/v1 document is OpenAPI 3.0.0 titled Kubernetes 1.32 with paths and component schemas."""
    doc = openapi.v3_document(SMALL, "apps", "v1")
    assert doc["openapi"] == "3.0.0"
    assert doc["info"] == {"title": "Kubernetes", "version": "1.32"}
    assert list(doc["paths"]) == sorted(doc["paths"])
    assert "/apis/apps/v1/" in doc["paths"]
    assert "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale" in doc["paths"]
    assert not any(p.startswith("/api/v1") for p in doc["paths"])
    deployment = doc["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]
    assert deployment["x-kubernetes-group-version-kind"] == [{"group": "apps", "kind": "Deployment", "version": "v1"}]


def test_v3_wraps_refs_with_siblings_in_allof():
    """A $ref with a description becomes allOf:[{$ref}] beside it, which kubectl explain reads for both texts."""
    doc = openapi.v3_document(SMALL, "apps", "v1")
    strategy = doc["components"]["schemas"]["io.k8s.api.apps.v1.DeploymentSpec"]["properties"]["strategy"]
    assert strategy == {
        "description": "The deployment strategy to use to replace existing pods with new ones.",
        "x-kubernetes-patch-strategy": "retainKeys",
        "allOf": [{"$ref": "#/components/schemas/io.k8s.api.apps.v1.DeploymentStrategy"}],
    }
    containers = doc["components"]["schemas"]["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"]
    assert containers["items"] == {"$ref": "#/components/schemas/io.k8s.api.core.v1.Container"}
    assert containers["x-kubernetes-patch-merge-key"] == "name"


@needs_reference
def test_every_v3_document_is_closed_under_refs():
    """Every $ref in every document names a schema in that same document's components."""
    for key, doc in openapi.v3_documents(list(reference_resources())).items():
        names = set(doc["components"]["schemas"])
        for ref in _all_refs(doc):
            assert ref.startswith("#/components/schemas/"), (key, ref)
            assert ref[len("#/components/schemas/"):] in names, (key, ref)


@pytest.mark.parametrize(("path", "method", "op_id", "action"), [
    ("/apis/apps/v1/namespaces/{namespace}/deployments", "get", "listAppsV1NamespacedDeployment", "list"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments", "post", "createAppsV1NamespacedDeployment", "post"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments", "delete",
     "deleteAppsV1CollectionNamespacedDeployment", "deletecollection"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "get", "readAppsV1NamespacedDeployment", "get"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "put", "replaceAppsV1NamespacedDeployment", "put"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "patch", "patchAppsV1NamespacedDeployment", "patch"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}", "delete", "deleteAppsV1NamespacedDeployment",
     "delete"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", "get",
     "readAppsV1NamespacedDeploymentScale", "get"),
    ("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status", "patch",
     "patchAppsV1NamespacedDeploymentStatus", "patch"),
    ("/apis/apps/v1/deployments", "get", "listAppsV1DeploymentForAllNamespaces", "list"),
    ("/apis/apps/v1/watch/namespaces/{namespace}/deployments", "get", "watchAppsV1NamespacedDeploymentList",
     "watchlist"),
    ("/apis/apps/v1/watch/namespaces/{namespace}/deployments/{name}", "get", "watchAppsV1NamespacedDeployment",
     "watch"),
    ("/apis/apps/v1/watch/deployments", "get", "watchAppsV1DeploymentListForAllNamespaces", "watchlist"),
])
def test_apps_v1_operations(path, method, op_id, action):
    """Operations carry kube-apiserver's operationId and x-kubernetes-action."""
    op = openapi.v3_document(SMALL, "apps", "v1")["paths"][path][method]
    assert op["operationId"] == op_id
    assert op["x-kubernetes-action"] == action
    assert op["tags"] == ["apps_v1"]


@pytest.mark.parametrize(("path", "method", "op_id", "gvk"), [
    ("/api/v1/namespaces", "get", "listCoreV1Namespace", ("", "v1", "Namespace")),
    ("/api/v1/namespaces/{name}", "get", "readCoreV1Namespace", ("", "v1", "Namespace")),
    ("/api/v1/namespaces/{namespace}/pods/{name}/log", "get", "readCoreV1NamespacedPodLog", ("", "v1", "Pod")),
    ("/api/v1/namespaces/{namespace}/pods/{name}/exec", "post", "connectCoreV1PostNamespacedPodExec",
     ("", "v1", "PodExecOptions")),
    ("/api/v1/namespaces/{namespace}/pods/{name}/eviction", "post", "createCoreV1NamespacedPodEviction",
     ("policy", "v1", "Eviction")),
])
def test_core_v1_operations(path, method, op_id, gvk):
    """Core operations use CoreV1 ids, cluster-scoped ones drop Namespaced, subresources name their kind."""
    op = openapi.v3_document(SMALL, "", "v1")["paths"][path][method]
    assert op["operationId"] == op_id
    assert op["x-kubernetes-group-version-kind"] == dict(zip(("group", "version", "kind"), gvk, strict=True))


@pytest.mark.parametrize("method", ["post", "put", "patch"])
def test_write_operations_advertise_field_validation(method):
    """kubectl detects server-side field validation from a fieldValidation parameter on writes of the GVK."""
    doc = openapi.v3_document(SMALL, "apps", "v1")
    path = "/apis/apps/v1/namespaces/{namespace}/deployments" + ("" if method == "post" else "/{name}")
    op = doc["paths"][path][method]
    assert "fieldValidation" in [p["name"] for p in op["parameters"]]
    assert op["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}


def test_patch_accepts_every_patch_type_for_builtins_but_not_strategic_for_crds():
    """Built-in kinds accept four patch content types; custom resources have no strategic merge patch."""
    doc = openapi.v3_document(SMALL, "apps", "v1")
    patch = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]
    assert list(patch["requestBody"]["content"]) == [
        "application/apply-patch+yaml", "application/json-patch+json",
        "application/merge-patch+json", "application/strategic-merge-patch+json"]
    crd = R.Resource("example.com", "v1", "widgets", "Widget", True, crd=True)
    defs = openapi.crd_definitions("example.com", "v1", "Widget", "WidgetList", {"type": "object"})
    cdoc = openapi.v3_document([crd], "example.com", "v1", extra_schemas=defs)
    cpatch = cdoc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets/{name}"]["patch"]
    assert "application/strategic-merge-patch+json" not in cpatch["requestBody"]["content"]


@pytest.mark.parametrize(("group", "friendly", "tag"), [
    ("", "Core", "core_v1"),
    ("apps", "Apps", "apps_v1"),
    ("rbac.authorization.k8s.io", "RbacAuthorization", "rbacAuthorization_v1"),
    ("flowcontrol.apiserver.k8s.io", "FlowcontrolApiserver", "flowcontrolApiserver_v1"),
    ("admissionregistration.k8s.io", "Admissionregistration", "admissionregistration_v1"),
    ("example.com", "ExampleCom", "exampleCom_v1"),
])
def test_friendly_group_names(group, friendly, tag):
    """Groups are spelled in operation ids and tags the way kube-apiserver spells them."""
    assert openapi_v3.friendly_group(group) == friendly
    assert openapi_v3.tag(group, "v1") == tag


@pytest.mark.parametrize(("kind", "text"), [
    ("Deployment", "create a Deployment"), ("Ingress", "create an Ingress"), ("Endpoints", "create Endpoints"),
])
def test_create_descriptions_use_kube_articles(kind, text):
    """Descriptions say 'a', 'an' or nothing before the kind like kube-apiserver does."""
    r = R.Resource("x.io", "v1", kind.lower() + "s", kind, True)
    item = openapi_v3.resource_paths(r, "x")["/apis/x.io/v1/namespaces/{namespace}/" + kind.lower() + "s"]
    assert item["post"]["description"] == text


def test_v2_document_shape():
    """/openapi/v2 is Swagger 2.0 with every definition and body parameters instead of requestBody."""
    doc = openapi.v2_document(SMALL)
    assert doc["swagger"] == "2.0"
    assert doc["info"] == {"title": "Kubernetes", "version": "1.32"}
    assert "io.k8s.api.apps.v1.Deployment" in doc["definitions"]
    post = doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments"]["post"]
    assert post["parameters"][0] == {"name": "body", "in": "body", "required": True,
                                     "schema": {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}}
    assert post["responses"]["201"]["schema"] == {"$ref": "#/definitions/io.k8s.api.apps.v1.Deployment"}
    assert post["x-kubernetes-group-version-kind"] == {"group": "apps", "version": "v1", "kind": "Deployment"}
    query = [p for p in post["parameters"] if p["name"] == "fieldValidation"][0]
    assert query["in"] == "query" and query["type"] == "string"
    for ref in _all_refs(doc):
        assert ref[len("#/definitions/"):] in doc["definitions"], ref


@pytest.mark.parametrize(("node", "wire"), [
    ({"type": "string"}, b"\xb2\x01\x08\x0a\x06string"),
    ({"$ref": "#/definitions/X"}, b"\x0a\x0f#/definitions/X"),
    ({"description": "d", "required": ["a"]}, b"\x22\x01d\x9a\x01\x01a"),
    ({"additionalProperties": {"type": "string"}}, b"\xaa\x01\x0d\x0a\x0b\xb2\x01\x08\x0a\x06string"),
    ({"x-k": 1}, b"\xfa\x01\x0b\x0a\x03x-k\x12\x04\x12\x021\n"),
])
def test_v2_protobuf_schema_wire_format(node, wire):
    """Schemas encode as gnostic openapi.v2.Schema messages (field numbers of OpenAPIv2.proto)."""
    assert openapi_v2pb.schema(node) == wire


def _read_fields(data: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i < len(data):
        key, i = _uvarint(data, i)
        assert key & 7 == 2
        n, i = _uvarint(data, i)
        out.append((key >> 3, data[i:i + n]))
        i += n
    return out


def _uvarint(data: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = data[i]
        i += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, i


def test_v2_protobuf_document_carries_info_paths_and_every_definition():
    """The protobuf document has swagger 2.0, the info, and one NamedSchema per definition."""
    doc = openapi.v2_document(SMALL)
    fields = dict(_read_fields(openapi_v2pb.encode(doc)))
    assert fields[1] == b"2.0"
    assert fields[2] == b"\x0a\x0aKubernetes\x12\x041.32"
    names = [dict(_read_fields(named))[1].decode() for _, named in _read_fields(fields[9])]
    assert names == list(doc["definitions"])
    paths = [dict(_read_fields(named))[1].decode() for _, named in _read_fields(fields[8])]
    assert paths == list(doc["paths"])


WIDGET_SCHEMA = {
    "description": "Widget is a test resource.",
    "type": "object",
    "properties": {
        "spec": {"type": "object", "properties": {
            "size": {"type": "integer"},
            "note": {"type": "string", "nullable": True},
            "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                         "x-kubernetes-preserve-unknown-fields": True},
        }},
    },
}


def test_crd_definitions_are_named_and_shaped_like_kube_apiserver():
    """A CRD version yields com.example.v1.Widget and its List, with GVKs, TypeMeta and an ObjectMeta ref."""
    defs = openapi.crd_definitions("example.com", "v1", "Widget", "WidgetList", WIDGET_SCHEMA, plural="widgets")
    assert list(defs) == ["com.example.v1.Widget", "com.example.v1.WidgetList"]
    widget = defs["com.example.v1.Widget"]
    assert widget["x-kubernetes-group-version-kind"] == [{"group": "example.com", "kind": "Widget", "version": "v1"}]
    assert widget["properties"]["metadata"]["$ref"] == "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
    assert list(widget["properties"]) == ["apiVersion", "kind", "metadata", "spec"]
    template = widget["properties"]["spec"]["properties"]["template"]
    assert set(template["properties"]) == {"apiVersion", "kind", "metadata"}
    wlist = defs["com.example.v1.WidgetList"]
    assert wlist["required"] == ["items"]
    assert wlist["properties"]["items"]["items"] == {"$ref": "#/definitions/com.example.v1.Widget"}
    assert wlist["x-kubernetes-group-version-kind"][0]["kind"] == "WidgetList"
    assert "properties" not in WIDGET_SCHEMA["properties"]["spec"]["properties"]["template"]


def test_crd_schemas_appear_in_v3_and_v2():
    """CRD models are served in their group-version's v3 document and stripped for v2 clients."""
    defs = openapi.crd_definitions("example.com", "v1", "Widget", "WidgetList", WIDGET_SCHEMA)
    crd = R.Resource("example.com", "v1", "widgets", "Widget", True, crd=True)
    doc = openapi.v3_document([crd], "example.com", "v1", extra_schemas=defs)
    widget = doc["components"]["schemas"]["com.example.v1.Widget"]
    assert widget["properties"]["metadata"]["allOf"] == [
        {"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}]
    assert "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta" in doc["components"]["schemas"]
    list_op = doc["paths"]["/apis/example.com/v1/namespaces/{namespace}/widgets"]["get"]
    assert list_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/com.example.v1.WidgetList"}
    v2 = openapi.v2_document([crd], extra_definitions=defs)
    note = v2["definitions"]["com.example.v1.Widget"]["properties"]["spec"]["properties"]["note"]
    assert "nullable" not in note and "type" not in note
    index = openapi.v3_index([crd], extra_schemas=defs)
    assert "apis/example.com/v1" in index["paths"] and "apis/example.com" in index["paths"]


def test_crd_without_schema_is_an_open_object():
    """A version without a schema (or preserving unknown fields) is an untyped object with its GVK."""
    defs = openapi.crd_definitions("example.com", "v1", "Widget", "WidgetList", None)
    assert defs["com.example.v1.Widget"] == {
        "type": "object",
        "x-kubernetes-group-version-kind": [{"group": "example.com", "kind": "Widget", "version": "v1"}]}


def test_v3_int_or_string_and_quantity_are_untyped_unions():
    """In v3 IntOrString and Quantity are oneOf unions without a type, so explain names them by type."""
    schemas_ = openapi.v3_document(SMALL, "apps", "v1")["components"]["schemas"]
    assert schemas_["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["oneOf"] == [
        {"type": "integer"}, {"type": "string"}]
    assert "type" not in schemas_["io.k8s.apimachinery.pkg.api.resource.Quantity"]
    v2 = openapi.v2_document(SMALL)["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]
    assert v2["type"] == "string" and v2["format"] == "int-or-string"
    assert v2["description"].startswith("IntOrString is a type that can hold an int32 or a string.")
