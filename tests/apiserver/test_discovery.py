"""Specification of the discovery documents against a real kube-apiserver 1.32's responses."""

from __future__ import annotations

import json
import pathlib

import pytest

from pocketkube.api import errors, resources
from pocketkube.apiserver import discovery

RESPONSES = pathlib.Path(__file__).resolve().parents[3] / "shared" / "reference" / "responses"


@pytest.fixture
def reg() -> resources.Registry:
    return resources.Registry.builtin()


def _reference(name: str) -> str:
    path = RESPONSES / f"{name}.body"
    if not path.exists():
        pytest.skip("shared/reference not beside the repo")
    return path.read_text()


def _with_crd(reg: resources.Registry) -> resources.Registry:
    for v in ("v1beta1", "v1"):
        reg.add(resources.Resource(
            "stable.example.com", v, "crontabs", "CronTab", True, singular="crontab", short_names=("ct",),
            categories=("all",), crd=True, storage_version="v1",
            subresources=(resources.Subresource("scale", "Scale", resources.GET_PATCH_UPDATE, "autoscaling", "v1"),
                          resources.Subresource("status", "CronTab", resources.GET_PATCH_UPDATE))))
    return reg


@pytest.mark.parametrize("name,build", [
    ("api", lambda reg: discovery.api_versions("127.0.0.1:6443")),
    ("apis-legacy", discovery.api_group_list),
    ("api-v1", lambda reg: discovery.resource_list(reg, "", "v1")),
    ("apis-apps-v1", lambda reg: discovery.resource_list(reg, "apps", "v1")),
    ("api-aggregated", lambda reg: discovery.aggregated(reg, legacy=True)),
    ("apis-aggregated", lambda reg: discovery.aggregated(reg, legacy=False)),
])
def test_matches_reference_byte_for_byte(reg, name, build):
    """Each document equals the real server's, field order and storageVersionHash values included."""
    want = _reference(name)
    doc = build(reg)
    assert doc == json.loads(want)
    assert json.dumps(doc, indent=2) == want


def test_aggregated_v2beta1(reg):
    """v2beta1, which kubectl 1.27/1.28 ask for, is the v2 document under its own apiVersion."""
    v2 = discovery.aggregated(reg, legacy=False)
    beta = discovery.aggregated(reg, legacy=False, version="v2beta1")
    assert beta["apiVersion"] == "apidiscovery.k8s.io/v2beta1"
    assert beta["items"] == v2["items"]
    with pytest.raises(errors.NotAcceptable):
        discovery.aggregated(reg, legacy=True, version="v1")


@pytest.mark.parametrize("group,versions", [
    ("autoscaling", ["v2", "v1"]),
    ("apps", ["v1"]),
])
def test_api_group(reg, group, versions):
    """/apis/GROUP lists its versions preferred first and names the preferred one."""
    doc = discovery.api_group(reg, group)
    assert doc["kind"] == "APIGroup" and doc["apiVersion"] == "v1" and doc["name"] == group
    assert [v["version"] for v in doc["versions"]] == versions
    assert doc["preferredVersion"] == {"groupVersion": f"{group}/{versions[0]}", "version": versions[0]}


@pytest.mark.parametrize("call", [
    lambda reg: discovery.api_group(reg, "nope.example.com"),
    lambda reg: discovery.api_group(reg, ""),
    lambda reg: discovery.resource_list(reg, "apps", "v1beta1"),
    lambda reg: discovery.resource_list(reg, "", "v2"),
])
def test_unknown_paths_are_not_found(reg, call):
    """An unknown group or version is the generic 404 the real server sends."""
    with pytest.raises(errors.NotFound) as e:
        call(reg)
    assert e.value.status()["message"] == "the server could not find the requested resource"


def test_resource_list_shared_storage_hashes(reg):
    """Resources sharing storage report the storage representation's hash in every version."""
    def hashes(group, version):
        return {r["name"]: r.get("storageVersionHash") for r in discovery.resource_list(reg, group, version)["resources"]}
    assert hashes("events.k8s.io", "v1")["events"] == hashes("", "v1")["events"]
    assert hashes("autoscaling", "v1")["horizontalpodautoscalers"] == \
        hashes("autoscaling", "v2")["horizontalpodautoscalers"]
    assert hashes("authentication.k8s.io", "v1")["tokenreviews"] is None


def test_crd_resource_list(reg):
    """A CRD group/version lists the resource and its status/scale entries like the CRD handler."""
    doc = discovery.resource_list(_with_crd(reg), "stable.example.com", "v1beta1")
    assert doc["groupVersion"] == "stable.example.com/v1beta1"
    assert doc["resources"] == [
        {"name": "crontabs", "singularName": "crontab", "namespaced": True, "kind": "CronTab",
         "verbs": list(resources.CRUD), "shortNames": ["ct"], "categories": ["all"],
         "storageVersionHash": "EdX2FP+L0js="},  # of the storage version v1, in every version
        {"name": "crontabs/scale", "singularName": "", "namespaced": True, "group": "autoscaling",
         "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"]},
        {"name": "crontabs/status", "singularName": "", "namespaced": True, "kind": "CronTab",
         "verbs": ["get", "patch", "update"]},
    ]


def test_crd_aggregated(reg):
    """A CRD group comes last in aggregated /apis, versions by priority, responseKind fully spelled out."""
    doc = discovery.aggregated(_with_crd(reg), legacy=False)
    last = doc["items"][-1]
    assert last["metadata"] == {"name": "stable.example.com", "creationTimestamp": None}
    assert [v["version"] for v in last["versions"]] == ["v1", "v1beta1"]
    res = last["versions"][0]["resources"][0]
    assert res["responseKind"] == {"group": "stable.example.com", "version": "v1", "kind": "CronTab"}
    assert res["scope"] == "Namespaced"
    assert [s["responseKind"] for s in res["subresources"]] == [
        {"group": "autoscaling", "version": "v1", "kind": "Scale"},
        {"group": "stable.example.com", "version": "v1", "kind": "CronTab"}]
    groups = discovery.api_group_list(reg)["groups"]
    assert groups[-1]["preferredVersion"]["version"] == "v1"


ACCEPT_132 = ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
              "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json")


@pytest.mark.parametrize("accept,want", [
    (ACCEPT_132, "v2"),
    ("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json", "v2beta1"),
    ("application/json, */*", None),
    ("application/json", None),
    ("", None),
    (None, None),
    ("application/vnd.kubernetes.protobuf;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,"
     "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", "v2"),
    ("application/json;g=apidiscovery.k8s.io;v=v3;as=APIGroupDiscoveryList,application/json", None),
    ("application/json;q=0.5,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", "v2"),
    ("application/json,application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList", None),
])
def test_negotiate(accept, want):
    """The first acceptable Accept clause decides between aggregated v2/v2beta1 and legacy discovery."""
    assert discovery.negotiate(accept) == want


def test_etag():
    """The ETag is the quoted upper-case SHA-512 of the body: stable, and different for different bodies."""
    tag = discovery.etag(b"{}")
    assert tag == discovery.etag(b"{}") != discovery.etag(b"[]")
    assert tag.startswith('"') and tag.endswith('"') and len(tag) == 130
    assert tag[1:-1] == tag[1:-1].upper()


def test_content_types():
    """Aggregated responses name the variant served in Content-Type, as the real server does."""
    assert discovery.aggregated_content_type("v2") == discovery.AGGREGATED_CONTENT_TYPE
    assert discovery.aggregated_content_type("v2beta1").endswith(";v=v2beta1;as=APIGroupDiscoveryList")
    assert discovery.AGGREGATED_HEADERS == {"Cache-Control": "public", "Vary": "Accept"}
