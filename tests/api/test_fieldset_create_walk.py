"""The one-pass walk a create takes through fieldset.compare, and the cached path element strings, pinned to the general walk's output."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pocketkube.api import fieldset, schemas

# Expected documents were produced by the general insert-per-path walk this fast path replaces.
CASES: list[tuple[str, dict[str, Any], str]] = [
    ("pod with null, duplicate and empty values",
     {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", "labels": {"a": None, "b": ""}},
      "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}, {"containerPort": 80}],
                               "args": []}], "nodeSelector": {}, "tolerations": [{"key": "k"}, {"key": "k"}]}},
     '{"f:apiVersion": {}, "f:kind": {}, "f:metadata": {"f:labels": {".": {}, "f:b": {}}, "f:name": {}}, '
     '"f:spec": {"f:containers": {"k:{\\"name\\":\\"c\\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {}, '
     '"f:ports": {".": {}, "k:{\\"containerPort\\":80,\\"protocol\\":\\"TCP\\"}": {}}}}, "f:nodeSelector": {}, '
     '"f:tolerations": {}}}'),
    ("service whose port keys differ only as 80 and 80.0",
     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
      "spec": {"ports": [{"port": 80}, {"port": 80.0, "protocol": "UDP"}], "externalIPs": ["1.2.3.4", None]}},
     '{"f:apiVersion": {}, "f:kind": {}, "f:metadata": {"f:name": {}}, "f:spec": {"f:externalIPs": {}, '
     '"f:ports": {".": {}, "k:{\\"port\\":80,\\"protocol\\":\\"TCP\\"}": {".": {}, "f:port": {}}, '
     '"k:{\\"port\\":80.0,\\"protocol\\":\\"UDP\\"}": {".": {}, "f:port": {}, "f:protocol": {}}}}}'),
    ("configmap with a duplicated set item and a null value",
     {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "finalizers": ["a", "a", "b"]},
      "data": {"x": "y", "z": None}},
     '{"f:apiVersion": {}, "f:data": {".": {}, "f:x": {}}, "f:kind": {}, "f:metadata": {"f:finalizers": '
     '{".": {}, "v:\\"a\\"": {}, "v:\\"b\\"": {}}, "f:name": {}}}'),
]


@pytest.mark.parametrize(("name", "obj", "expected"), CASES, ids=[c[0] for c in CASES])
def test_create_walk_matches_the_general_walk(name: str, obj: dict[str, Any], expected: str) -> None:
    """Comparing against nothing adds exactly the fields the general walk adds, twice in a row (caches warm)."""
    definition_name = schemas.definition_name("", "v1", obj["kind"])
    assert definition_name is not None
    definition = schemas.definitions()[definition_name]
    t = fieldset.root_type(definition, schemas.resolve)
    for _ in range(2):
        c = fieldset.compare(None, obj, t)
        assert json.dumps(c.added.to_json()) == expected
        assert c.modified.empty() and c.removed.empty()


@pytest.mark.parametrize(("pe", "text"), [
    (fieldset.value(1), "v:1"),
    (fieldset.value(1.0), "v:1.0"),
    (fieldset.value(True), "v:true"),
    (fieldset.key(port=80, protocol="TCP"), 'k:{"port":80,"protocol":"TCP"}'),
    (fieldset.key(port=80.0, protocol="TCP"), 'k:{"port":80.0,"protocol":"TCP"}'),
    (fieldset.value("a<b"), 'v:"a\\u003cb"'),
])
def test_path_element_strings_survive_the_cache(pe: fieldset.PathElement, text: str) -> None:
    """Equal-hashing elements (1 and 1.0, True and 1) keep their own FieldsV1 strings across repeated lookups."""
    for _ in range(2):
        assert fieldset.pe_to_string(pe) == text
