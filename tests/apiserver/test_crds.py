"""Tests for custom resources: structural schemas (crd_schema) and the CRD controller (crds.CRDs)."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from pocketkube.api import conversion, crdvalidation, resources
from pocketkube.apiserver import context, crd_schema, crds, objects, strategy
from pocketkube.base import clock as clock_mod
from pocketkube.store import memory

SPEC_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {"type": "object", "properties": {
            "replicas": {"type": "integer", "minimum": 0, "maximum": 10, "default": 1},
            "name": {"type": "string", "minLength": 2, "maxLength": 5, "pattern": "^[a-z]+$"},
            "color": {"type": "string", "enum": ["red", "blue"]},
            "ratio": {"type": "number", "multipleOf": 0.5, "exclusiveMaximum": True, "maximum": 1e6},
            "port": {"x-kubernetes-int-or-string": True},
            "email": {"type": "string", "format": "email"},
            "note": {"type": "string", "nullable": True},
            "tags": {"type": "array", "maxItems": 2, "minItems": 1, "items": {"type": "string"},
                     "x-kubernetes-list-type": "set"},
            "ports": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"],
                      "items": {"type": "object", "required": ["name"], "properties": {
                          "name": {"type": "string"}, "port": {"type": "integer", "default": 80}}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                     "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}},
            "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                         "x-kubernetes-preserve-unknown-fields": True},
            "nested": {"type": "object", "default": {}, "properties": {"depth": {"type": "integer", "default": 3}}},
        }},
        "status": {"type": "object", "properties": {"replicas": {"type": "integer"}}},
    },
}


def _obj(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "default"},
            "spec": spec}


def _errors(obj: Any, old: Any = None) -> list[str]:
    return [e.text() for e in crd_schema.Schema(SPEC_SCHEMA).validate(obj, old)]


# --- validation ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ({"replicas": "3"}, 'spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string"'),
    ({"replicas": 11}, "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10"),
    ({"replicas": -1}, "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0"),
    ({"name": "a"}, 'spec.name: Invalid value: "a": spec.name in body should be at least 2 chars long'),
    ({"name": "abcdef"}, "spec.name: Too long: may not be more than 5 bytes"),
    ({"name": "AB"}, "spec.name: Invalid value: \"AB\": spec.name in body should match '^[a-z]+$'"),
    ({"color": "green"}, 'spec.color: Unsupported value: "green": supported values: "red", "blue"'),
    ({"ratio": 0.3}, "spec.ratio: Invalid value: 0.3: spec.ratio in body should be a multiple of 0.5"),
    ({"ratio": 1e6}, "spec.ratio: Invalid value: 1e+06: spec.ratio in body should be less than 1e+06"),
    ({"port": True}, 'spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean"'),
    ({"email": "nope"}, 'spec.email: Invalid value: "nope": spec.email in body must be of type email: "nope"'),
    ({"tags": []}, "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items"),
    ({"tags": ["a", "b", "c"]}, "spec.tags: Too many: 3: must have at most 2 items"),
    ({"tags": ["a", "a"]}, 'spec.tags[1]: Duplicate value: "a"'),
    ({"tags": [None]}, 'spec.tags[0]: Invalid value: "null": spec.tags[0] in body must be of type string: "null"'),
    ({"ports": [{"name": "x"}, {"name": "x"}]}, 'spec.ports[1]: Duplicate value: map[string]interface {}{"name":"x"}'),
    ({"ports": [{"port": 1}]}, "spec.ports[0].name: Required value"),
    ({"labels": {"a": 1}}, 'spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer"'),
    ({"template": {"metadata": {}}}, "spec.template.apiVersion: Required value: must not be empty"),
])
def test_validation_errors(spec: dict[str, Any], expected: str) -> None:
    """Each violation is reported with kube-apiserver's field path and wording."""
    assert expected in _errors(_obj(**spec))


@pytest.mark.parametrize("spec", [
    {"replicas": 3, "name": "ab", "color": "red", "ratio": 0.5, "port": 8080},
    {"port": "http", "email": "a@b.c", "note": None, "tags": ["a", "b"]},
    {"replicas": 2.0},  # a float that is an integer is an integer for kube-openapi
    {"labels": {"a": "b"}, "free": {"anything": [1, 2]}, "template": {"apiVersion": "v1", "kind": "Pod"}},
])
def test_valid_objects(spec: dict[str, Any]) -> None:
    """Objects within the schema validate cleanly (fast path and walker agree)."""
    assert _errors(_obj(**spec)) == []


def test_required_at_root() -> None:
    """A required top-level field is reported by its bare name."""
    obj = _obj()
    del obj["spec"]
    assert _errors(obj) == ["spec: Required value"]


def test_ratcheting_keeps_unchanged_invalid_fields() -> None:
    """On update, a field that was already invalid and did not change is not reported again."""
    old = _obj(replicas=50, color="red")
    new = _obj(replicas=50, color="green")
    assert _errors(new, old) == ['spec.color: Unsupported value: "green": supported values: "red", "blue"']


@pytest.mark.parametrize("spec", [{"replicas": "3"}, {"tags": ["a", "a"]}, {"replicas": 4, "port": "x"},
                                  {"note": None, "ratio": 0.5}, {"ports": [{"name": "a"}, {"name": "a"}]}])
def test_fast_path_agrees_with_walker(spec: dict[str, Any]) -> None:
    """With jsonschema_rs in front (schemas without formats), errors are exactly the walker's."""
    schema = copy.deepcopy(SPEC_SCHEMA)
    del schema["properties"]["spec"]["properties"]["email"]
    fast = crd_schema.Schema(schema)
    assert fast._fast_validator() is not None
    walker = [e.text() for e in crd_schema.Schema(SPEC_SCHEMA).validate(_obj(**spec))]
    assert [e.text() for e in fast.validate(_obj(**spec))] == walker


def test_fast_schema_translation() -> None:
    """nullable and int-or-string become JSON Schema type lists for jsonschema_rs."""
    js = crd_schema.to_json_schema(SPEC_SCHEMA)
    assert js["properties"]["spec"]["properties"]["note"]["type"] == ["string", "null"]
    assert js["properties"]["spec"]["properties"]["port"]["type"] == ["integer", "string"]


# --- pruning and defaulting --------------------------------------------------------------------------

@pytest.mark.parametrize("obj,pruned,paths", [
    (_obj(replicas=1, bogus=2), _obj(replicas=1), ["spec.bogus"]),
    ({**_obj(), "extra": 1}, _obj(), ["extra"]),
    ({**_obj(), "metadata": {"name": "w", "namespace": "default", "weird": 1}}, _obj(), ["metadata.weird"]),
    (_obj(free={"x": 1, "known": {"a": "b", "z": 1}}), _obj(free={"x": 1, "known": {"a": "b"}}), ["spec.free.known.z"]),
    (_obj(ports=[{"name": "a", "junk": 1}]), _obj(ports=[{"name": "a"}]), ["spec.ports[0].junk"]),
    (_obj(template={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bad": 1}, "spec": {"x": 1}}),
     _obj(template={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"x": 1}}),
     ["spec.template.metadata.bad"]),
])
def test_pruning(obj: dict[str, Any], pruned: dict[str, Any], paths: list[str]) -> None:
    """Unknown fields are dropped (except under x-kubernetes-preserve-unknown-fields) and their paths reported."""
    got = copy.deepcopy(obj)
    assert crd_schema.Schema(SPEC_SCHEMA).prune(got) == paths
    assert got == pruned


@pytest.mark.parametrize("spec,defaulted", [
    ({}, {"replicas": 1, "nested": {"depth": 3}}),
    ({"replicas": None, "note": None}, {"replicas": 1, "note": None, "nested": {"depth": 3}}),
    ({"color": None}, {"replicas": 1, "nested": {"depth": 3}}),
    ({"ports": [{"name": "a"}], "nested": {"depth": 7}}, {"ports": [{"name": "a", "port": 80}], "replicas": 1,
                                                          "nested": {"depth": 7}}),
])
def test_defaulting(spec: dict[str, Any], defaulted: dict[str, Any]) -> None:
    """Defaults fill missing and null non-nullable fields (nested too); nulls without defaults are dropped."""
    obj = _obj(**spec)
    crd_schema.Schema(SPEC_SCHEMA).default(obj)
    assert obj["spec"] == defaulted


@pytest.mark.parametrize("x,text", [(10.0, "10"), (1.5, "1.5"), (1e6, "1e+06"), (123456.0, "123456"),
                                    (1.5e-5, "1.5e-05"), (-0.25, "-0.25")])
def test_go_float(x: float, text: str) -> None:
    """Floats print like Go's %v."""
    assert crd_schema.go_float(x) == text


# --- the controller, in process -----------------------------------------------------------------------

CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"plural": "widgets", "kind": "Widget", "shortNames": ["wd"], "categories": ["all"]},
             "versions": [
                 {"name": "v1beta1", "served": True, "storage": False,
                  "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}},
                 {"name": "v1", "served": True, "storage": True,
                  "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas",
                                                           "statusReplicasPath": ".status.replicas",
                                                           "labelSelectorPath": ".status.selector"}},
                  "additionalPrinterColumns": [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}],
                  "schema": {"openAPIV3Schema": SPEC_SCHEMA}}]},
}


@pytest.fixture
async def server() -> Any:
    store = memory.MemoryStore()
    await store.start()
    srv = context.Server(registry=resources.Registry.builtin(), objects=objects.Objects(store, conversion.convert),
                         store=store, clock=clock_mod.Clock())
    srv.crds = crds.CRDs(srv)
    await srv.crds.load()
    yield srv
    await srv.crds.close()
    await store.close()


def _crd_res(srv: context.Server) -> resources.Resource:
    res = srv.registry.get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    assert res is not None
    return res


async def _create_crd(srv: context.Server, crd: dict[str, Any]) -> dict[str, Any]:
    obj = copy.deepcopy(crd)
    strategy.prepare_create(_crd_res(srv), obj, clock=srv.clock)
    crds.default_crd(obj)
    assert crds.validate_crd(obj) == []
    return await srv.objects.create(_crd_res(srv), obj)


async def _eventually(check: Any, timeout: float = 2.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await check() if asyncio.iscoroutinefunction(check) else check()
        if value:
            return value
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def _established(srv: context.Server, name: str) -> dict[str, Any]:
    async def check() -> Any:
        obj = await srv.objects.get(_crd_res(srv), "", name)
        return obj if crds.is_true(obj, "Established") else None
    return await _eventually(check)


async def test_create_serves_every_version_and_sets_status(server: context.Server) -> None:
    """A new CRD is served at each served version and gets NamesAccepted/Established and acceptedNames."""
    await _create_crd(server, CRD)
    crd = await _established(server, "widgets.example.com")
    v1 = server.registry.get("example.com", "v1", "widgets")
    beta = server.registry.get("example.com", "v1beta1", "widgets")
    assert v1 is not None and beta is not None
    assert v1.crd and v1.namespaced and v1.short_names == ("wd",) and v1.categories == ("all",)
    assert v1.singular == "widget" and beta.storage_version == "v1" and v1.storage_key == ("example.com", "widgets")
    assert [s.name for s in v1.subresources] == ["status", "scale"] and beta.subresources == ()
    assert v1.subresource("scale") == resources.Subresource("scale", "Scale", resources.GET_PATCH_UPDATE,
                                                            "autoscaling", "v1")
    status = crd["status"]
    assert [(c["type"], c["status"], c["reason"], c["message"]) for c in status["conditions"]] == [
        ("NamesAccepted", "True", "NoConflicts", "no conflicts found"),
        ("Established", "True", "InitialNamesAccepted", "the initial names have been accepted")]
    assert status["acceptedNames"] == {"plural": "widgets", "singular": "widget", "shortNames": ["wd"],
                                       "kind": "Widget", "listKind": "WidgetList", "categories": ["all"]}
    assert status["storedVersions"] == ["v1"]
    assert server.registry.find("wd")[0].version == "v1"


async def test_handlers_see_schema_columns_scale_and_openapi(server: context.Server) -> None:
    """The per-version schema, printer columns, scale paths and OpenAPI models are exposed."""
    await _create_crd(server, CRD)
    await _established(server, "widgets.example.com")
    v1 = server.registry.get("example.com", "v1", "widgets")
    beta = server.registry.get("example.com", "v1beta1", "widgets")
    assert v1 is not None and beta is not None
    crds_ = server.crds
    assert crds_.schema(v1) == SPEC_SCHEMA
    assert crds_.printer_columns(v1) == [{"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"}]
    assert crds_.printer_columns(beta) == []
    assert crds_.scale_paths(v1) == (".spec.replicas", ".status.replicas", ".status.selector")
    defs = crds_.openapi_definitions()
    assert {"com.example.v1.Widget", "com.example.v1.WidgetList", "com.example.v1beta1.Widget"} <= set(defs)
    cr = _obj(replicas=2, bogus=1)
    assert crds_.unknown_fields(v1, cr) == ['unknown field "spec.bogus"']
    assert crds_.unknown_fields(beta, cr) == []
    crds_.apply_defaults(v1, cr)
    assert cr["spec"] == {"replicas": 2, "nested": {"depth": 3}}
    bad = _obj(replicas=-3)
    assert [e.text() for e in crds_.validate(v1, bad, None)] == [
        "spec.replicas: Invalid value: -3: spec.replicas in body should be greater than or equal to 0",
        ".spec.replicas: Invalid value: -3: should be a non-negative integer"]


async def test_name_conflict_is_not_served(server: context.Server) -> None:
    """A second CRD claiming a taken plural in the same group is NamesAccepted=False and not served."""
    await _create_crd(server, CRD)
    await _established(server, "widgets.example.com")
    other = copy.deepcopy(CRD)
    other["metadata"]["name"] = "gadgets.example.com"
    other["spec"]["names"] = {"plural": "gadgets", "kind": "Gadget", "shortNames": ["wd"]}
    await _create_crd(server, other)

    async def rejected() -> Any:
        obj = await server.objects.get(_crd_res(server), "", "gadgets.example.com")
        return obj if crds.condition(obj, "NamesAccepted") is not None else None
    obj = await _eventually(rejected)
    assert crds.condition(obj, "NamesAccepted")["reason"] == "ShortNamesConflict"
    assert crds.condition(obj, "NamesAccepted")["message"] == '"wd" is already in use'
    assert crds.condition(obj, "Established")["reason"] == "NotAccepted"
    assert server.registry.get("example.com", "v1", "gadgets") is None


async def test_delete_removes_instances_then_the_crd(server: context.Server) -> None:
    """Deleting a CRD deletes its custom resources, drops the finalizer, removes the CRD and unserves it."""
    await _create_crd(server, CRD)
    await _established(server, "widgets.example.com")
    v1 = server.registry.get("example.com", "v1", "widgets")
    assert v1 is not None
    for name in ("a", "b"):
        cr = _obj(replicas=1)
        cr["metadata"]["name"] = name
        strategy.prepare_create(v1, cr, clock=server.clock)
        await server.objects.create(v1, cr)
    crd = await server.objects.get(_crd_res(server), "", "widgets.example.com")
    strategy.set_deletion(crd, clock=server.clock)
    await server.objects.update(_crd_res(server), crd, expected_revision=int(crd["metadata"]["resourceVersion"]))

    async def gone() -> bool:
        return await server.objects.get_or_none(_crd_res(server), "", "widgets.example.com") is None
    await _eventually(gone)
    await _eventually(lambda: server.registry.get("example.com", "v1", "widgets") is None)
    assert await server.store.count(objects.storage_prefix(v1)) == 0


async def test_load_serves_crds_already_stored(server: context.Server) -> None:
    """A restarted server serves the CRDs found in the store before it answers requests."""
    await _create_crd(server, CRD)
    await _established(server, "widgets.example.com")
    fresh = context.Server(registry=resources.Registry.builtin(), objects=server.objects, store=server.store,
                           clock=server.clock)
    fresh.crds = crds.CRDs(fresh)
    await fresh.crds.load()
    try:
        assert fresh.registry.get("example.com", "v1", "widgets") is not None
    finally:
        await fresh.crds.close()


def test_accepted_names_fill_singular_and_list_kind() -> None:
    """acceptedNames derive singular and listKind from the kind when the spec leaves them out."""
    assert crds.accepted_names({"plural": "foos", "kind": "Foo"}) == {
        "plural": "foos", "singular": "foo", "kind": "Foo", "listKind": "FooList"}


def test_crd_finalizer_constant() -> None:
    """The cleanup finalizer is kube's."""
    assert crds.CLEANUP_FINALIZER == crdvalidation.CLEANUP_FINALIZER == "customresourcecleanup.apiextensions.k8s.io"
