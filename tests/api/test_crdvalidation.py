"""Tests for CustomResourceDefinition defaulting and validation (pocketkube.api.crdvalidation)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketkube.api import crdvalidation


def _crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com", "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
            "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                "type": "object", "properties": {"spec": {"type": "object", "properties": {
                    "replicas": {"type": "integer"}}}}}}}],
        },
    }


def _texts(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    return [e.text() for e in crdvalidation.validate_crd(obj, old)]


def _set(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    cur: Any = obj
    parts = path.split(".")
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur[p]
    last = parts[-1]
    if value is _DELETE:
        del cur[last]
    elif isinstance(cur, list):
        cur[int(last)] = value
    else:
        cur[last] = value
    return obj


_DELETE = object()
_SCHEMA = "spec.versions.0.schema.openAPIV3Schema"
_EP = "spec.versions[0].schema.openAPIV3Schema"


def test_valid_crd_has_no_errors() -> None:
    """A complete, structural CRD validates cleanly."""
    assert _texts(_crd()) == []


@pytest.mark.parametrize("path,value,expected", [
    ("metadata.name", "foo.example.com", 'metadata.name: Invalid value: "foo.example.com": must be spec.names.plural+"."+spec.group'),
    ("spec.group", "example", 'spec.group: Invalid value: "example": should be a domain with at least one dot'),
    ("spec.scope", "Global", 'spec.scope: Unsupported value: "Global": supported values: "Cluster", "Namespaced"'),
    ("spec.scope", _DELETE, "spec.scope: Required value"),
    ("spec.names.kind", _DELETE, "spec.names.kind: Required value"),
    ("spec.names.listKind", "Widget", 'spec.names.listKind: Invalid value: "Widget": kind and listKind may not be the same'),
    ("spec.versions.0.storage", False, "spec.versions: Invalid value: []apiextensions.CustomResourceDefinitionVersion"
     '{apiextensions.CustomResourceDefinitionVersion{Name:"v1", Served:true, Storage:false}}: '
     "must have exactly one version marked as storage version"),
    ("spec.versions.0.schema", _DELETE, f"{_EP}: Required value: schemas are required"),
    (f"{_SCHEMA}.properties.spec.type", _DELETE,
     f"{_EP}.properties[spec].type: Required value: must not be empty for specified object fields"),
    (f"{_SCHEMA}.type", "array", f'{_EP}.type: Invalid value: "array": must be object at the root'),
    (f"{_SCHEMA}.properties.spec.properties.replicas.default", "x",
     f'{_EP}.properties[spec].properties[replicas].default: Invalid value: "string":  in body must be of type '
     'integer: "string"'),
    (f"{_SCHEMA}.properties.spec.uniqueItems", True,
     f"{_EP}.properties[spec].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic"),
    (f"{_SCHEMA}.properties.spec.x-kubernetes-preserve-unknown-fields", False,
     f"{_EP}.properties[spec].x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined"),
    ("spec.preserveUnknownFields", True, "spec.preserveUnknownFields: Invalid value: true: cannot set to true, set "
     "x-kubernetes-preserve-unknown-fields to true in spec.versions[*].schema instead"),
    ("spec.conversion", {"strategy": "Magic"},
     'spec.conversion.strategy: Unsupported value: "Magic": supported values: "None", "Webhook"'),
])
def test_single_field_errors(path: str, value: Any, expected: str) -> None:
    """Each broken field yields kube-apiserver's error for it."""
    from pocketkube.apiserver import crds  # default checking needs the custom-resource validator

    obj = _set(_crd(), path, value)
    texts = [e.text() for e in crds.validate_crd(obj)]
    assert expected in texts, texts


@pytest.mark.parametrize("names,expected", [
    ({"plural": "Widgets"}, 'spec.names.plural: Invalid value: "Widgets": a DNS-1035 label'),
    ({"shortNames": ["W D"]}, 'spec.names.shortNames[0]: Invalid value: "W D": a DNS-1035 label'),
    ({"kind": "Wid.get"}, 'spec.names.kind: Invalid value: "Wid.get": may have mixed case, but should otherwise match: a DNS-1035'),
])
def test_name_rules(names: dict[str, Any], expected: str) -> None:
    """Names must be DNS-1035 labels; kinds may have mixed case."""
    obj = _crd()
    obj["spec"]["names"].update(names)
    assert any(t.startswith(expected) for t in _texts(obj)), _texts(obj)


def test_protected_group_needs_approval() -> None:
    """Groups under k8s.io need the api-approved annotation."""
    obj = _crd()
    obj["spec"]["group"] = "things.k8s.io"
    obj["metadata"]["name"] = "widgets.things.k8s.io"
    assert any(t.startswith("metadata.annotations[api-approved.kubernetes.io]: Required value") for t in _texts(obj))


@pytest.mark.parametrize("sub,expected", [
    ({"scale": {"statusReplicasPath": ".status.replicas"}},
     "spec.versions[0].subresources.scale.specReplicasPath: Required value"),
    ({"scale": {"specReplicasPath": ".replicas", "statusReplicasPath": ".status.replicas"}},
     'spec.versions[0].subresources.scale.specReplicasPath: Invalid value: ".replicas": should be a json path under .spec'),
])
def test_scale_subresource_paths(sub: dict[str, Any], expected: str) -> None:
    """Scale paths are required and must point under .spec and .status."""
    obj = _crd()
    obj["spec"]["versions"][0]["subresources"] = sub
    assert expected in _texts(obj)


@pytest.mark.parametrize("column,expected", [
    ({"name": "X", "type": "list", "jsonPath": ".spec.x"},
     'spec.versions[0].additionalPrinterColumns[0].type: Unsupported value: "list": supported values: '
     '"boolean", "date", "integer", "number", "string"'),
    ({"name": "X", "type": "string"}, "spec.versions[0].additionalPrinterColumns[0].jsonPath: Required value"),
])
def test_printer_columns(column: dict[str, Any], expected: str) -> None:
    """Printer columns need a supported type and a JSON path."""
    obj = _crd()
    obj["spec"]["versions"][0]["additionalPrinterColumns"] = [column]
    assert expected in _texts(obj)


def test_structural_nested_rules() -> None:
    """Value validations under anyOf may not carry types; root metadata may only restrict name."""
    obj = _crd()
    schema = obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    schema["properties"]["spec"]["anyOf"] = [{"type": "object"}]
    schema["properties"]["metadata"] = {"type": "object", "properties": {"labels": {"type": "object"}}}
    texts = _texts(obj)
    assert f"{_EP}.properties[spec].anyOf[0].type: Forbidden: must be empty to be structural" in texts
    assert (f"{_EP}.properties[metadata]: Forbidden: must not specify anything other than name and "
            "generateName, but metadata is implicitly specified") in texts


def test_int_or_string_needs_no_type() -> None:
    """x-kubernetes-int-or-string fields are structural without a type."""
    obj = _crd()
    obj["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["port"] = {
        "x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert _texts(obj) == []


def test_update_rules() -> None:
    """Group and plural are immutable; stored versions must stay in spec.versions."""
    old = _crd()
    crdvalidation.default_crd(old)
    old["metadata"]["resourceVersion"] = "5"
    old["status"]["conditions"] = [{"type": "Established", "status": "True"}]
    new = copy.deepcopy(old)
    new["spec"]["scope"] = "Cluster"
    new["status"]["storedVersions"] = ["v1", "v1beta1"]
    texts = _texts(new, old)
    assert 'spec.scope: Invalid value: "Cluster": field is immutable' in texts
    assert 'status.storedVersions[1]: Invalid value: "v1beta1": must appear in spec.versions' in texts


def test_default_crd_fills_names_conversion_status_and_finalizer() -> None:
    """Defaulting adds singular/listKind, conversion None, empty accepted names, stored versions and the finalizer."""
    obj = _crd()
    del obj["spec"]["names"]["singular"], obj["spec"]["names"]["listKind"]
    crdvalidation.default_crd(obj)
    assert obj["spec"]["names"] == {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"}
    assert list(obj["spec"]) == ["group", "names", "scope", "versions", "conversion"]
    assert obj["spec"]["conversion"] == {"strategy": "None"}
    assert obj["status"] == {"acceptedNames": {"plural": "", "kind": ""}, "storedVersions": ["v1"]}
    assert obj["metadata"]["finalizers"] == [crdvalidation.CLEANUP_FINALIZER]


def test_default_crd_on_update_keeps_finalizers_and_adds_new_storage_version() -> None:
    """On update the finalizer is not re-added and a new storage version joins storedVersions."""
    obj = _crd()
    obj["status"] = {"acceptedNames": {"plural": "widgets", "kind": "Widget"}, "storedVersions": ["v1beta1"]}
    crdvalidation.default_crd(obj, old={})
    assert "finalizers" not in obj["metadata"]
    assert obj["status"]["storedVersions"] == ["v1beta1", "v1"]
