"""JSON merge patch (RFC 7386) with the gopkg.in/evanphx/json-patch.v4 behaviour kube-apiserver has."""

import copy

import pytest

from pocketkube.api import errors, mergepatch

DOC = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web", "tier": "fe"}},
    "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"creationTimestamp": None},
                          "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
}


@pytest.mark.parametrize("patch,path,expected", [
    ({"spec": {"replicas": 5}}, ("spec", "replicas"), 5),
    (b'{"spec":{"replicas":5}}', ("spec", "replicas"), 5),
    ({"metadata": {"labels": {"tier": None, "x": "1"}}}, ("metadata", "labels"), {"app": "web", "x": "1"}),
    ({"metadata": {"labels": None}}, ("metadata",), {"name": "web"}),
    ({"spec": {"template": {"spec": {"containers": [{"name": "d"}]}}}}, ("spec", "template", "spec", "containers"),
     [{"name": "d"}]),
    # Copied-in values lose their null members, at any depth, but keep null array items.
    ({"spec": {"foo": {"a": None, "b": {"c": None, "d": 1}}}}, ("spec", "foo"), {"b": {"d": 1}}),
    ({"spec": {"foo": [1, None, {"a": None}]}}, ("spec", "foo"), [1, None, {}]),
    ({"spec": {"replicas": {"a": None, "b": 2}}}, ("spec", "replicas"), {"b": 2}),
    ({"spec": {"template": {"metadata": {"creationTimestamp": {"x": None, "y": 1}}}}},
     ("spec", "template", "metadata", "creationTimestamp"), {"y": 1}),
    # An object replaced by a non-object keeps the patch value as sent.
    ({"spec": {"selector": [{"a": None}, None]}}, ("spec", "selector"), [{"a": None}, None]),
    ({}, ("spec", "replicas"), 3),
])
def test_merge(patch, path, expected):
    """Merge patch semantics as kube applies them (kubectl's scale sends {"spec":{"replicas":5}})."""
    before = copy.deepcopy(DOC)
    result = mergepatch.apply(DOC, patch)
    for p in path:
        result = result[p]
    assert result == expected
    assert DOC == before


@pytest.mark.parametrize("patch", ["null", '"abc"', "5", "true", '{"a":', "", None, 5, "x"])
def test_non_object_patch_is_400(patch):
    """A patch that is null, a scalar or not JSON is 400 "Invalid JSON Patch"."""
    with pytest.raises(errors.BadRequest) as e:
        mergepatch.apply(DOC, patch)
    assert e.value.message == "Invalid JSON Patch"


def test_array_patch_is_422():
    """An array patch replaces the whole document, which then fails to decode as an object."""
    with pytest.raises(errors.Invalid) as e:
        mergepatch.apply(DOC, "[1,2]")
    assert e.value.code == 422


def test_patch_input_not_mutated():
    """Neither the document nor the patch is modified."""
    patch = {"spec": {"new": {"a": None, "b": [1]}}}
    snapshot = copy.deepcopy(patch)
    result = mergepatch.apply(DOC, patch)
    result["spec"]["new"]["b"].append(2)
    assert patch == snapshot


def test_bad_document():
    """A non-object document is a BadRequest."""
    with pytest.raises(errors.BadRequest):
        mergepatch.apply([1], {})
