"""Specification of FieldsV1 sets and the schema walker (structured-merge-diff semantics)."""

from __future__ import annotations

import json

import pytest

from pocketkube.api import fieldset, schemas
from pocketkube.api.fieldset import FieldSet, field, index, key, value


def _t(group: str, version: str, kind: str) -> fieldset.Type:
    return fieldset.root_type(schemas.definitions()[schemas.definition_name(group, version, kind)], schemas.resolve)


def _fs(doc: dict) -> FieldSet:
    return FieldSet.from_json(doc)


DEPLOY = _t("apps", "v1", "Deployment")
POD = _t("", "v1", "Pod")


# --- FieldsV1 documents -----------------------------------------------------------------------

@pytest.mark.parametrize("doc", [
    {"f:metadata": {"f:labels": {".": {}, "f:app": {}}}},
    {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {".": {}, "f:image": {}, "f:ports": {
        ".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}},
    {"f:metadata": {"f:finalizers": {".": {}, "v:\"a\"": {}, "v:\"b\"": {}}}},
    {"f:spec": {"f:list": {"i:0": {}, "i:2": {"f:x": {}}}}},
    {"f:metadata": {"f:ownerReferences": {".": {}, "k:{\"uid\":\"u1\"}": {}}}},
])
def test_fields_v1_round_trips(doc):
    """A FieldsV1 document parses and serializes back to the same JSON, key order included."""
    assert json.dumps(_fs(doc).to_json()) == json.dumps(doc)


def test_serialization_sorts_like_kube():
    """Keys come out with "." first, then field names < keys < values < indexes, each sorted."""
    doc = {"i:1": {}, "v:3": {}, "k:{\"b\":1,\"a\":\"x\"}": {}, "f:z": {}, "f:a": {"f:y": {}, ".": {}}}
    assert list(_fs(doc).to_json()) == ["f:a", "f:z", "k:{\"a\":\"x\",\"b\":1}", "v:3", "i:1"]
    assert list(_fs(doc).to_json()["f:a"]) == [".", "f:y"]


@pytest.mark.parametrize("doc", [
    {"x:foo": {}},
    {"k:[1]": {}},
    {"k:{bad": {}},
    {"f:a": 1},
    {"i:x": {}},
    [],
])
def test_malformed_fields_v1_is_rejected(doc):
    """Unknown prefixes, bad JSON keys and non-object values are FieldSetErrors."""
    with pytest.raises(fieldset.FieldSetError):
        FieldSet.from_json(doc)


def test_value_ordering_numbers_strings_bools():
    """Set values sort numbers first, then strings, then booleans, as structured-merge-diff does."""
    s = FieldSet.of((value(True),), (value("a"),), (value(2),), (value(1),))
    assert list(s.to_json()) == ["v:1", "v:2", "v:\"a\"", "v:true"]
    assert value(True) != value(1)


def test_go_json_escapes_html():
    """Keys render with Go's JSON escaping of <, > and &."""
    assert fieldset.pe_to_string(key(name="a<b&c>")) == 'k:{"name":"a\\u003cb\\u0026c\\u003e"}'


# --- set algebra ------------------------------------------------------------------------------

A = (field("a"),)
AB = (field("a"), field("b"))
AC = (field("a"), field("c"))
D = (field("d"),)


@pytest.mark.parametrize("op,left,right,want", [
    ("union", [A], [AB], [A, AB]),
    ("union", [AB], [AC, D], [AB, AC, D]),
    ("difference", [A, AB], [A], [AB]),
    ("difference", [AB, AC], [AB], [AC]),
    ("difference", [AB], [AB], []),
    ("intersection", [A, AB, D], [AB, D], [AB, D]),
    ("intersection", [A], [AB], []),
    ("recursive_difference", [A, AB, D], [A], [D]),
    ("recursive_difference", [AB, AC], [AB], [AC]),
])
def test_set_operations(op, left, right, want):
    """Union, difference, intersection and the prefix-excluding recursive difference."""
    got = getattr(FieldSet.of(*left), op)(FieldSet.of(*right))
    assert got == FieldSet.of(*want)
    assert sorted(got.paths()) == sorted(want)


def test_paths_iterate_members_before_children():
    """Iteration yields a level's members, then each child's paths, in sorted order."""
    s = FieldSet.of(AB, D, A)
    assert list(s.paths()) == [A, D, AB]


def test_has_and_insert():
    """has() answers membership of exact paths only."""
    s = FieldSet.of(AB)
    assert s.has(AB) and not s.has(A) and not s.has(AC) and not s.has(())


@pytest.mark.parametrize("path,want", [
    ((field("spec"), field("replicas")), ".spec.replicas"),
    ((field("spec"), field("containers"), key(name="c"), field("image")), '.spec.containers[name="c"].image'),
    ((field("ports"), key(containerPort=80, protocol="TCP")), '.ports[containerPort=80,protocol="TCP"]'),
    ((field("finalizers"), value("x")), '.finalizers[="x"]'),
    ((field("l"), index(3)), ".l[3]"),
])
def test_path_strings(path, want):
    """Paths print as kube prints them in conflict messages."""
    assert fieldset.path_string(path) == want


# --- list and map semantics from schemas -------------------------------------------------------

def _schema_t(props: dict) -> fieldset.Type:
    return fieldset.compile_type({"type": "object", "properties": props}, None)


@pytest.mark.parametrize("prop,want", [
    ({"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "set"}, "set"),
    ({"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map",
      "x-kubernetes-list-map-keys": ["name"]}, "map"),
    ({"type": "array", "items": {"type": "object"}, "x-kubernetes-patch-merge-key": "name",
      "x-kubernetes-patch-strategy": "merge"}, "map"),
    ({"type": "array", "items": {"type": "object"}, "x-kubernetes-patch-merge-key": "name"}, "map"),
    ({"type": "array", "items": {"type": "string"}, "x-kubernetes-patch-strategy": "merge"}, "set"),
    ({"type": "array", "items": {"type": "string"}}, "atomic"),
    ({"type": "array", "items": {"type": "object"}, "x-kubernetes-list-type": "map"}, "atomic"),
])
def test_list_semantics(prop, want):
    """list-type wins; else a merge key makes a map list, merge without key a set; else atomic."""
    assert _schema_t({"l": prop}).child("l").list_type == want


@pytest.mark.parametrize("obj,want", [
    # granular map: each key is owned, not the map
    ({"metadata": {"labels": {"a": "1", "b": "2"}}}, {"f:metadata": {"f:labels": {"f:a": {}, "f:b": {}}}}),
    # empty maps are owned themselves
    ({"metadata": {"labels": {}}}, {"f:metadata": {"f:labels": {}}}),
    # atomic struct (LabelSelector) is one leaf
    ({"spec": {"selector": {"matchLabels": {"a": "b"}}}}, {"f:spec": {"f:selector": {}}}),
    # list map by name, nested list map by containerPort+protocol with protocol defaulted
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}}}},
     {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
         ".": {}, "f:image": {}, "f:name": {},
         "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}}}}}}),
    # atomic list is one leaf
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "args": ["a", "b"]}]}}}},
     {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {
         ".": {}, "f:args": {}, "f:name": {}}}}}}}),
    # set list: one value element per item
    ({"metadata": {"finalizers": ["x", "y"]}}, {"f:metadata": {"f:finalizers": {"v:\"x\"": {}, "v:\"y\"": {}}}}),
    # nulls are owned (they say "I set this to nothing")
    ({"spec": {"replicas": None}}, {"f:spec": {"f:replicas": {}}}),
])
def test_from_object_deployment(obj, want):
    """The fields a Deployment configuration sets, the way ToFieldSet computes them."""
    assert fieldset.from_object(obj, DEPLOY, strict=True).to_json() == want


def test_from_object_without_schema_is_granular_maps_atomic_lists():
    """With no schema (preserve-unknown), maps are granular and lists atomic; metadata is still ObjectMeta."""
    t = fieldset.root_type(None, None)
    obj = {"spec": {"a": {"b": 1}, "l": [1, 2]}, "metadata": {"finalizers": ["f"]}}
    assert fieldset.from_object(obj, t, strict=True).to_json() == {
        "f:metadata": {"f:finalizers": {"v:\"f\"": {}}},
        "f:spec": {".": {}, "f:a": {".": {}, "f:b": {}}, "f:l": {}}}


def test_crd_schema_with_list_map():
    """A CRD's openAPIV3Schema gives list and map semantics the same way built-in schemas do."""
    schema = {"type": "object", "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "items": {"type": "array", "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"],
                      "items": {"type": "object", "properties": {"id": {"type": "integer"}, "v": {"type": "string"}}}},
            "sel": {"type": "object", "x-kubernetes-map-type": "atomic",
                    "additionalProperties": {"type": "string"}}}}}}
    t = fieldset.root_type(schema, lambda n: n)
    obj = {"spec": {"items": [{"id": 1, "v": "a"}], "sel": {"a": "b"}}, "metadata": {"labels": {"x": "y"}}}
    assert fieldset.from_object(obj, t, strict=True).to_json() == {
        "f:metadata": {"f:labels": {"f:x": {}}},
        "f:spec": {"f:items": {"k:{\"id\":1}": {".": {}, "f:id": {}, "f:v": {}}}, "f:sel": {}}}


@pytest.mark.parametrize("obj,message", [
    ({"spec": {"bogus": 1}}, ".spec.bogus: field not declared in schema"),
    ({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}},
     '.spec.template.spec.containers: element 0: associative list with keys has an element that omits key '
     'field "name" (and doesn\'t have default value)'),
    ({"spec": {"template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}},
     '.spec.template.spec.containers: duplicate entries for key [name="a"]'),
    ({"spec": {"template": {"spec": {"containers": ["x"]}}}},
     ".spec.template.spec.containers: element 0: associative list with keys may not have non-map elements"),
])
def test_from_object_strict_errors(obj, message):
    """Applied configurations with undeclared fields, missing keys or duplicates are refused."""
    with pytest.raises(fieldset.FieldSetError) as e:
        fieldset.from_object(obj, DEPLOY, strict=True)
    assert str(e.value) == message


def test_from_object_lenient_allows_duplicates_and_unknown_fields():
    """Stored objects may hold duplicates and unknown fields; they are walked, not refused."""
    obj = {"spec": {"bogus": {"x": 1}, "template": {"spec": {"containers": [{"name": "a"}, {"name": "a"}]}}}}
    got = fieldset.from_object(obj, DEPLOY).to_json()
    assert got["f:spec"]["f:bogus"] == {".": {}, "f:x": {}}
    assert "k:{\"name\":\"a\"}" in got["f:spec"]["f:template"]["f:spec"]["f:containers"]


# --- compare ----------------------------------------------------------------------------------

def _cmp(old, new, t=DEPLOY):
    c = fieldset.compare(old, new, t)
    return c.added.to_json(), c.modified.to_json(), c.removed.to_json()


@pytest.mark.parametrize("old,new,added,modified,removed", [
    ({"spec": {"replicas": 1}}, {"spec": {"replicas": 2}}, {}, {"f:spec": {"f:replicas": {}}}, {}),
    ({"spec": {"replicas": 1}}, {"spec": {}}, {}, {}, {"f:spec": {"f:replicas": {}}}),
    # a new granular map is itself added ("."), a value-typed struct is not
    ({"metadata": {}}, {"metadata": {"labels": {"a": "b"}}},
     {"f:metadata": {"f:labels": {".": {}, "f:a": {}}}}, {}, {}),
    ({}, {"spec": {"strategy": {"type": "Recreate"}}}, {"f:spec": {"f:strategy": {"f:type": {}}}}, {}, {}),
    # a pointer struct (rollingUpdate) is added as a node
    ({"spec": {"strategy": {}}}, {"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1}}}},
     {"f:spec": {"f:strategy": {"f:rollingUpdate": {".": {}, "f:maxSurge": {}}}}}, {}, {}),
    # null counts as absent
    ({"spec": {"template": {"metadata": {}}}}, {"spec": {"template": {"metadata": {"creationTimestamp": None}}}},
     {}, {}, {}),
    # atomic values compare whole
    ({"spec": {"selector": {"matchLabels": {"a": "1"}}}}, {"spec": {"selector": {"matchLabels": {"a": "2"}}}},
     {}, {"f:spec": {"f:selector": {}}}, {}),
    # true is not 1
    ({"spec": {"paused": 1}}, {"spec": {"paused": True}}, {}, {"f:spec": {"f:paused": {}}}, {}),
    # removing a map removes it and its keys
    ({"metadata": {"labels": {"a": "b"}}}, {"metadata": {}}, {}, {},
     {"f:metadata": {"f:labels": {".": {}, "f:a": {}}}}),
])
def test_compare(old, new, added, modified, removed):
    """Compare sorts changed fields into added, modified and removed like structured-merge-diff."""
    assert _cmp(old, new) == (added, modified, removed)


def test_compare_list_items():
    """List-map items are matched by key, so reordering is no change and a new item is added whole."""
    c1 = {"name": "a", "image": "x"}
    c2 = {"name": "b", "image": "y"}
    old = {"spec": {"containers": [c1]}}
    assert _cmp(old, {"spec": {"containers": [c1]}}, POD) == ({}, {}, {})
    added, modified, removed = _cmp(old, {"spec": {"containers": [c2, c1]}}, POD)
    assert added == {"f:spec": {"f:containers": {"k:{\"name\":\"b\"}": {".": {}, "f:image": {}, "f:name": {}}}}}
    assert modified == {} and removed == {}


def test_compare_create_of_crd_adds_spec_node():
    """For objects without a Go type (CRDs), spec is a new node on create, so it is marked with "."."""
    added, _, _ = _cmp(None, {"spec": {"a": 1}}, fieldset.root_type(None, None))
    assert added == {"f:spec": {".": {}, "f:a": {}}}


def test_ensure_named_fields_are_members():
    """Declared struct fields on the way to a path become members; map keys and list items do not."""
    s = FieldSet.from_json({"f:metadata": {"f:labels": {"f:a": {}}},
                            "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"c\"}": {"f:image": {}}}}}}})
    got = fieldset.ensure_named_fields_are_members(s, DEPLOY).to_json()
    assert got == {"f:metadata": {".": {}, "f:labels": {".": {}, "f:a": {}}},
                   "f:spec": {".": {}, "f:template": {".": {}, "f:spec": {".": {}, "f:containers": {
                       ".": {}, "k:{\"name\":\"c\"}": {"f:image": {}}}}}}}
