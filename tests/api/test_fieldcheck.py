"""Specification of unknown-field detection for fieldValidation=Strict|Warn (built-in kinds and CRD schemas)."""

from __future__ import annotations

import copy
import json
import pathlib
import time

import pytest

from pocketkube.api import fieldcheck

REFERENCE = pathlib.Path("/work/shared/reference/responses")
if not REFERENCE.exists():
    REFERENCE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "reference" / "responses"

DEPLOYMENT = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"},
                 "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                 "managedFields": [{"manager": "kubectl", "operation": "Apply", "fieldsType": "FieldsV1",
                                    "fieldsV1": {"f:spec": {"f:replicas": {}}}}]},
    "spec": {
        "replicas": 3,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 1}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {"name": "c", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                     "resources": {"limits": {"cpu": "500m", "memory": "128Mi"}},
                     "env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
                ],
                "volumes": [{"name": "v", "emptyDir": {}}],
            },
        },
    },
    "status": {"replicas": 3, "conditions": [{"type": "Available", "status": "True"}]},
}


def _with(path: str, value: object) -> dict:
    """DEPLOYMENT with `value` set at a dotted path (`[i]` picks list items)."""
    obj = copy.deepcopy(DEPLOYMENT)
    node = obj
    parts = path.replace("[", ".[").split(".")
    for part in parts[:-1]:
        node = node[int(part[1:-1])] if part.startswith("[") else node.setdefault(part, {})
    node[parts[-1]] = value
    return obj


def test_a_valid_deployment_has_no_unknown_fields():
    """Every field of a complete Deployment (maps, quantities, IntOrString, FieldsV1) is known."""
    assert fieldcheck.unknown_fields(DEPLOYMENT, "apps", "v1", "Deployment") == []


@pytest.mark.parametrize(("path", "message"), [
    ("bogus", 'unknown field "bogus"'),
    ("spec.foo", 'unknown field "spec.foo"'),
    ("metadata.foo", 'unknown field "metadata.foo"'),
    ("spec.template.spec.containers[0].bogus", 'unknown field "spec.template.spec.containers[0].bogus"'),
    ("spec.template.spec.containers[0].ports[0].bogus",
     'unknown field "spec.template.spec.containers[0].ports[0].bogus"'),
    ("spec.template.spec.containers[0].env[0].valueFrom.fieldRef.x",
     'unknown field "spec.template.spec.containers[0].env[0].valueFrom.fieldRef.x"'),
    ("spec.template.metadata.bogus", 'unknown field "spec.template.metadata.bogus"'),
    ("spec.strategy.rollingUpdate.bogus", 'unknown field "spec.strategy.rollingUpdate.bogus"'),
    ("status.bogus", 'unknown field "status.bogus"'),
    ("spec.template.spec.volumes[0].emptyDir.bogus", 'unknown field "spec.template.spec.volumes[0].emptyDir.bogus"'),
    ("spec.Replicas", 'unknown field "spec.Replicas"'),
])
def test_unknown_fields_are_reported_with_their_path(path, message):
    """An unknown field anywhere is reported with its dotted path and list indexes, case-sensitively."""
    assert fieldcheck.unknown_fields(_with(path, 1), "apps", "v1", "Deployment") == [message]


@pytest.mark.parametrize(("path", "value"), [
    ("metadata.labels.anything", "x"),
    ("metadata.annotations.anything", "x"),
    ("spec.selector.matchLabels.other", "x"),
    ("spec.template.spec.containers[0].resources.limits.nvidia.com/gpu", "1"),
    ("metadata.managedFields[0].fieldsV1.f:metadata", {"f:labels": {"f:x": {}}}),
    ("spec.strategy.rollingUpdate.maxSurge", 2),
    ("spec.template.spec.nodeSelector.disk", "ssd"),
    ("spec.template", None),
    ("spec.replicas", "3"),
])
def test_maps_and_opaque_values_accept_any_key(path, value):
    """Map keys, FieldsV1, IntOrString, nulls and mistyped values never count as unknown fields."""
    assert fieldcheck.unknown_fields(_with(path, value), "apps", "v1", "Deployment") == []


@pytest.mark.parametrize(("group", "version", "kind", "obj", "expected"), [
    ("", "v1", "ConfigMap", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x3"}, "bogus": "y"},
     ['unknown field "bogus"']),
    ("", "v1", "Secret", {"kind": "Secret", "stringData": {"a": "b"}, "data": {"c": "ZA=="}}, []),
    ("apps", "v1", "ControllerRevision", {"kind": "ControllerRevision", "revision": 1,
                                          "data": {"spec": {"anything": {"goes": True}}}}, []),
    ("apiextensions.k8s.io", "v1", "CustomResourceDefinition",
     {"spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
         "type": "object", "properties": {"a": {"type": "object", "additionalProperties": {"type": "string"},
                                                "x-anything": 1}}}}, "subresources": {"status": {"x": 1}}}]}},
     ['unknown field "spec.versions[0].schema.openAPIV3Schema.properties.a.x-anything"',
      'unknown field "spec.versions[0].subresources.status.x"']),
    ("", "v1", "List", {"items": [{"bogus": 1}]}, []),
    ("example.com", "v1", "Widget", {"bogus": 1}, []),
])
def test_builtin_kinds_table(group, version, kind, obj, expected):
    """RawExtension holds anything, empty structs hold nothing, and unknown kinds are not checked."""
    assert fieldcheck.unknown_fields(obj, group, version, kind) == expected


def test_duplicate_paths_are_reported_once_and_capped():
    """Messages are deduplicated and, like sigs.k8s.io/json, at most 100 are reported."""
    obj = {"kind": "ConfigMap", **{f"f{i}": i for i in range(150)}}
    found = fieldcheck.unknown_fields(obj, "", "v1", "ConfigMap")
    assert len(found) == fieldcheck.MAX_ERRORS
    assert found[0] == 'unknown field "f0"'


def test_messages_follow_document_order():
    """Problems are listed in the order the decoder meets them."""
    obj = {"zeta": 1, "spec": {"b": 1, "a": 1}, "alpha": 1}
    assert fieldcheck.unknown_fields(obj, "apps", "v1", "Deployment") == [
        'unknown field "zeta"', 'unknown field "spec.b"', 'unknown field "spec.a"', 'unknown field "alpha"']


@pytest.mark.skipif(not REFERENCE.exists(), reason="shared/reference not present")
def test_strict_error_and_warning_match_the_reference_server():
    """The Strict message and the Warn header are worded exactly like kube-apiserver 1.32's."""
    problems = fieldcheck.unknown_fields({"kind": "ConfigMap", "bogus": "y"}, "", "v1", "ConfigMap")
    status = json.loads((REFERENCE / "status-strict-unknown-field.body").read_text())
    assert fieldcheck.strict_error_message("ConfigMap", "v1", problems) == status["message"]
    headers = (REFERENCE / "warn-unknown-field.headers").read_text().splitlines()
    warning = [h.split(": ", 1)[1] for h in headers if h.lower().startswith("warning:")][0]
    assert fieldcheck.warning_header(problems[0]) == warning


def test_several_problems_join_with_commas():
    """Several unknown fields are joined into one strict decoding error."""
    msg = fieldcheck.strict_error_message("Deployment", "v1", ['unknown field "a"', 'unknown field "b"'])
    assert msg.endswith('strict decoding error: unknown field "a", unknown field "b"')


def test_checking_a_deployment_is_fast():
    """Checking a typical Deployment takes well under 0.2 ms once its schema is compiled."""
    fieldcheck.unknown_fields(DEPLOYMENT, "apps", "v1", "Deployment")
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        fieldcheck.unknown_fields(DEPLOYMENT, "apps", "v1", "Deployment")
    assert (time.perf_counter() - start) / n < 0.002  # 10x headroom: not a benchmark


WIDGET = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "size": {"type": "integer"},
                "port": {"x-kubernetes-int-or-string": True},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "byName": {"type": "object", "additionalProperties": {
                    "type": "object", "properties": {"weight": {"type": "integer"}}}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "partly": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                           "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}},
                "template": {"type": "object", "x-kubernetes-embedded-resource": True,
                             "x-kubernetes-preserve-unknown-fields": True},
                "items": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}}}},
                "empty": {"type": "object"},
            },
        },
        "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
    },
}


@pytest.mark.parametrize(("obj", "expected"), [
    ({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "labels": {"a": "b"}},
      "spec": {"size": 1, "port": "http", "labels": {"x": "y"}, "free": {"a": {"b": [1, {"c": 2}]}}}}, []),
    ({"spec": {"size": 1, "extra": True}}, ['unknown field "spec.extra"']),
    ({"top": 1}, ['unknown field "top"']),
    ({"metadata": {"name": "w", "nope": 1}}, ['unknown field "metadata.nope"']),
    ({"spec": {"items": [{"name": "a"}, {"name": "b", "x": 1}]}}, ['unknown field "spec.items[1].x"']),
    ({"spec": {"byName": {"k": {"weight": 1, "w": 2}}}}, ['unknown field "spec.byName.k.w"']),
    ({"spec": {"partly": {"anything": 1, "known": {"a": "x", "b": 1}}}}, ['unknown field "spec.partly.known.b"']),
    ({"spec": {"template": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bad": 1},
                            "spec": {"whatever": 1}}}}, ['unknown field "spec.template.metadata.bad"']),
    ({"spec": {"empty": {"x": 1}}}, ['unknown field "spec.empty.x"']),
    ({"status": {"ready": True, "phase": "x"}}, ['unknown field "status.phase"']),
])
def test_crd_structural_schema_table(obj, expected):
    """CRD schemas honour properties, items, maps, preserve-unknown-fields, embedded resources and int-or-string."""
    assert fieldcheck.unknown_fields_schema(obj, WIDGET) == expected


def test_crd_schema_preserving_everything_accepts_anything_but_checks_metadata():
    """A root that preserves unknown fields accepts any field except unknown metadata fields."""
    schema = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    assert fieldcheck.unknown_fields_schema({"spec": {"a": 1}, "x": 2}, schema) == []
    assert fieldcheck.unknown_fields_schema({"metadata": {"x": 1}}, schema) == ['unknown field "metadata.x"']


def test_compiled_crd_schema_can_be_reused():
    """compile_schema gives a node to check many objects against without recompiling."""
    node = fieldcheck.compile_schema(WIDGET)
    assert fieldcheck.check({"spec": {"size": 1}}, node) == []
    assert fieldcheck.check({"spec": {"sise": 1}}, node) == ['unknown field "spec.sise"']


def test_custom_resolver_resolves_refs():
    """A resolver maps $ref names for schemas that refer to definitions of their own."""
    defs = {"Thing": {"type": "object", "properties": {"a": {"type": "string"}}}}
    schema = {"type": "object", "properties": {"thing": {"$ref": "#/definitions/Thing"},
                                               "meta": {"$ref": "#/definitions/Missing"}}}
    found = fieldcheck.unknown_fields_schema({"thing": {"a": "x", "b": 1}, "meta": {"z": 1}}, schema, defs.get)
    assert found == ['unknown field "thing.b"']
