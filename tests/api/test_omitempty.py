"""Specification of omitempty.prune: what Go's encoding/json would drop from a built-in object."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketkube.api import omitempty

_CM = {"apiVersion": "v1", "kind": "ConfigMap"}
_POD = {"apiVersion": "v1", "kind": "Pod"}


@pytest.mark.parametrize(("obj", "want"), [
    ({**_CM, "metadata": {"name": "a", "labels": {}, "annotations": {}, "finalizers": []}, "data": {}},
     {**_CM, "metadata": {"name": "a"}}),
    ({**_CM, "metadata": {"name": "a", "labels": {"x": ""}, "namespace": ""}, "data": {"k": ""}},
     {**_CM, "metadata": {"name": "a", "labels": {"x": ""}}, "data": {"k": ""}}),
    ({**_CM, "metadata": {"name": "a", "ownerReferences": None, "generation": 0}, "immutable": False},
     {**_CM, "metadata": {"name": "a"}, "immutable": False}),
    ({**_POD, "metadata": {"name": "p"}, "spec": {"hostNetwork": False, "nodeSelector": {}, "priority": 0,
                                                    "securityContext": {}, "containers": [
                                                        {"name": "c", "args": [], "resources": {}, "stdin": False}]}},
     {**_POD, "metadata": {"name": "p"}, "spec": {"priority": 0, "securityContext": {}, "containers": [
         {"name": "c", "resources": {}}]}}),
    ({**_POD, "metadata": {"name": "p", "x-unknown": {}}, "spec": {"containers": [], "bogus": []}},
     {**_POD, "metadata": {"name": "p", "x-unknown": {}}, "spec": {"containers": [], "bogus": []}}),
    ({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"labels": {}}, "spec": {"a": []}},
     {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"labels": {}}, "spec": {"a": []}}),
], ids=["empty-meta-and-data", "empty-values-kept", "null-and-zero", "pod-spec", "unknown-fields-kept",
        "custom-resource-untouched"])
def test_prune_drops_omitempty_zero_values(obj: dict[str, Any], want: dict[str, Any]) -> None:
    """Empty maps/slices, nulls and zero non-pointer scalars under omitempty go; structs, pointers and unknowns stay."""
    got = copy.deepcopy(obj)
    omitempty.prune(got)
    assert got == want


def test_prune_leaves_free_form_json_alone() -> None:
    """A CRD schema's default (free-form JSON) keeps its empty values; only typed fields are pruned."""
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "x"},
           "spec": {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": {
               "type": "object", "default": {"a": [], "b": ""}, "properties": {"s": {"type": "string", "enum": []}}}}}]}}
    omitempty.prune(crd)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert schema["default"] == {"a": [], "b": ""}
    assert schema["properties"]["s"] == {"type": "string"}


@pytest.mark.parametrize("obj", [None, [], "x", {"kind": "ConfigMap"}, {"apiVersion": "v1", "kind": "ConfigMap",
                                                                          "metadata": "oops", "data": 3}])
def test_prune_never_crashes_on_malformed_input(obj: Any) -> None:
    """Bad shapes are left for validation to report, never raise."""
    omitempty.prune(obj)
