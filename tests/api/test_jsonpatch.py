"""JSON patch (RFC 6902) with gopkg.in/evanphx/json-patch.v4 semantics and kube-apiserver's status codes.

Expected error texts were recorded from kubectl 1.32 `patch --local --type json`, which uses the same library.
"""

import copy
import json

import pytest

from pocketkube.api import errors, jsonpatch

DOC = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "labels": {"app": "web"}, "annotations": {"a": "1"}},
    "spec": {"replicas": 3, "template": {"spec": {"containers": [
        {"name": "c", "image": "nginx:1.27", "args": ["x", "y", "z"]}]}}},
}
ARGS = "/spec/template/spec/containers/0/args"


def args_of(doc):
    return doc["spec"]["template"]["spec"]["containers"][0]["args"]


@pytest.mark.parametrize("ops,check", [
    ([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "nginx:1.26"}],
     lambda d: d["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.26"),
    ([{"op": "add", "path": "/metadata/annotations/a~1b", "value": "v"}],
     lambda d: d["metadata"]["annotations"]["a/b"] == "v"),
    ([{"op": "add", "path": "/metadata/labels/a~0b", "value": "v"}], lambda d: d["metadata"]["labels"]["a~b"] == "v"),
    ([{"op": "add", "path": ARGS + "/-", "value": "w"}], lambda d: args_of(d) == ["x", "y", "z", "w"]),
    ([{"op": "add", "path": ARGS + "/1", "value": "w"}], lambda d: args_of(d) == ["x", "w", "y", "z"]),
    ([{"op": "add", "path": ARGS + "/3", "value": "w"}], lambda d: args_of(d) == ["x", "y", "z", "w"]),
    ([{"op": "add", "path": ARGS + "/-1", "value": "w"}], lambda d: args_of(d) == ["x", "y", "z", "w"]),
    ([{"op": "remove", "path": ARGS + "/0"}], lambda d: args_of(d) == ["y", "z"]),
    ([{"op": "remove", "path": ARGS + "/-1"}], lambda d: args_of(d) == ["x", "y"]),
    ([{"op": "remove", "path": ARGS + "/01"}], lambda d: args_of(d) == ["x", "z"]),
    ([{"op": "remove", "path": "/metadata/labels"}], lambda d: "labels" not in d["metadata"]),
    # evanphx v4: replace of a missing object member adds it.
    ([{"op": "replace", "path": "/spec/paused", "value": True}], lambda d: d["spec"]["paused"] is True),
    ([{"op": "test", "path": "/spec/replicas", "value": 3}, {"op": "replace", "path": "/spec/replicas", "value": 4}],
     lambda d: d["spec"]["replicas"] == 4),
    ([{"op": "test", "path": "/spec/missing", "value": None}], lambda d: d == DOC),
    ([{"op": "test", "path": "/metadata/labels", "value": {"app": "web"}}], lambda d: d == DOC),
    ([{"op": "move", "from": "/metadata/labels", "path": "/metadata/annotations/x"}],
     lambda d: d["metadata"]["annotations"]["x"] == {"app": "web"} and "labels" not in d["metadata"]),
    ([{"op": "copy", "from": "/metadata/labels", "path": "/spec/template/metadata"}],
     lambda d: d["spec"]["template"]["metadata"] == {"app": "web"} and d["metadata"]["labels"] == {"app": "web"}),
    # evanphx v4: copying a missing member copies null.
    ([{"op": "copy", "from": "/metadata/nope", "path": "/metadata/x"}], lambda d: d["metadata"]["x"] is None),
    ([{"op": "replace", "path": "", "value": {"kind": "X"}}], lambda d: d == {"kind": "X"}),
])
def test_operations(ops, check):
    """Each operation does what the library does, on a copy of the document."""
    before = copy.deepcopy(DOC)
    result = jsonpatch.apply(DOC, json.dumps(ops).encode())
    assert check(result)
    assert DOC == before


def test_rollout_undo_patch_from_kubectl():
    """The replace ops kubectl rollout undo sends (trace 11) swap the template and annotations."""
    ops = [
        {"op": "replace", "path": "/spec/template", "value": {
            "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25",
                                     "ports": [{"containerPort": 80, "protocol": "TCP"}]}]}}},
        {"op": "replace", "path": "/metadata/annotations",
         "value": {"deployment.kubernetes.io/revision": "2"}},
    ]
    result = jsonpatch.apply(DOC, ops)
    assert result["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.25"
    assert result["metadata"]["annotations"] == {"deployment.kubernetes.io/revision": "2"}


@pytest.mark.parametrize("ops,detail", [
    ([{"op": "add", "path": "/spec/foo/bar", "value": 1}],
     'add operation does not apply: doc is missing path: "/spec/foo/bar": missing value'),
    ([{"op": "add", "path": ARGS + "/5", "value": "w"}],
     f"error in add for path: '{ARGS}/5': Unable to access invalid index: 5: invalid index referenced"),
    ([{"op": "add", "path": ARGS + "/x", "value": "w"}],
     f"error in add for path: '{ARGS}/x': value was not a proper array index: 'x': "
     'strconv.Atoi: parsing "x": invalid syntax'),
    ([{"op": "remove", "path": "/spec/nope"}],
     "error in remove for path: '/spec/nope': Unable to remove nonexistent key: nope: missing value"),
    ([{"op": "remove", "path": "/spec/nope/x"}],
     'remove operation does not apply: doc is missing path: "/spec/nope/x": missing value'),
    ([{"op": "remove", "path": ARGS + "/9"}],
     f"error in remove for path: '{ARGS}/9': Unable to access invalid index: 9: invalid index referenced"),
    ([{"op": "replace", "path": ARGS + "/7", "value": 1}],
     f"replace operation does not apply: doc is missing key: {ARGS}/7: missing value"),
    ([{"op": "test", "path": "/spec/replicas", "value": 4}], "testing value /spec/replicas failed: test failed"),
    ([{"op": "test", "path": "/spec/replicas", "value": 3.0}], "testing value /spec/replicas failed: test failed"),
    ([{"op": "test", "path": "/spec/replicas"}], "testing value /spec/replicas failed: test failed"),
    ([{"op": "move", "from": "/metadata/nope", "path": "/metadata/x"}],
     "error in move for path: 'nope': Unable to remove nonexistent key: nope: missing value"),
    ([{"op": "frob", "path": "/a"}], "Unexpected kind: frob"),
    ([{"path": "/a"}], "Unexpected kind: unknown"),
    ([None], "Unexpected kind: unknown"),
    ([{"op": "add", "value": 1}], "add operation failed to decode path: missing value"),
    ([{"op": "replace", "value": 1}],
     "replace operation failed to decode path: operation missing path field: missing value"),
    ([{"op": "replace", "path": 5, "value": 1}],
     "replace operation failed to decode path: json: cannot unmarshal number into Go value of type string"),
    ([{"op": "move", "path": "/a"}],
     "move operation failed to decode from: operation, missing from field: missing value"),
    ([{"op": "add", "path": "", "value": {}}], 'add operation does not apply: doc is missing path: "": missing value'),
    ([{"op": "add", "path": "/metadata/name/x", "value": 1}],
     'add operation does not apply: doc is missing path: "/metadata/name/x": missing value'),
])
def test_failing_operations_are_422_with_kube_generic_message(ops, detail):
    """A failing operation is 422 Invalid with kube's generic message; the library text is kept as detail."""
    with pytest.raises(errors.PatchRejected) as e:
        jsonpatch.apply(DOC, ops)
    status = e.value.status()
    assert (status["code"], status["reason"]) == (422, "Invalid")
    assert status["message"] == "the server rejected our request due to an error in our request"
    assert status["details"] == {}
    assert e.value.detail == detail


@pytest.mark.parametrize("body,message", [
    ('{"op":"add"}', "json: cannot unmarshal object into Go value of type jsonpatch.Patch"),
    ('["x"]', "json: cannot unmarshal string into Go value of type jsonpatch.Operation"),
    ('[{"op":', "unexpected end of JSON input"),
    ("", "unexpected end of JSON input"),
    ("[1,}", "invalid character '}' looking for beginning of value"),
    ('{"a" 1}', "invalid character '1' after object key"),
    ("[1 2]", "invalid character '2' after array element"),
    ("[] x", "invalid character 'x' after top-level value"),
])
def test_malformed_patch_is_400(body, message):
    """A body that is not a JSON array of operations is 400 BadRequest with the decoder's message."""
    with pytest.raises(errors.BadRequest) as e:
        jsonpatch.apply(DOC, body)
    assert e.value.message == message


def test_too_many_operations_is_413():
    """More than 10000 operations is refused with 413 like kube-apiserver."""
    ops = [{"op": "test", "path": "/kind", "value": "Deployment"}] * 10001
    with pytest.raises(errors.RequestEntityTooLarge) as e:
        jsonpatch.apply(DOC, ops)
    assert e.value.message == ("Request entity too large: The allowed maximum operations in a JSON patch "
                               "is 10000, got 10001")


def test_result_must_be_an_object():
    """Replacing the root with an array yields a 422 on field `patch`, as kube fails to decode it."""
    with pytest.raises(errors.Invalid) as e:
        jsonpatch.apply(DOC, [{"op": "replace", "path": "", "value": [1]}])
    assert e.value.status()["details"]["causes"][0]["field"] == "patch"


def test_bad_document_and_input_untouched():
    """A non-object document is a BadRequest; the operations list is never modified."""
    with pytest.raises(errors.BadRequest):
        jsonpatch.apply([], [])
    ops = [{"op": "add", "path": "/metadata/x", "value": {"deep": [1]}}]
    snapshot = copy.deepcopy(ops)
    result = jsonpatch.apply(DOC, ops)
    result["metadata"]["x"]["deep"].append(2)
    assert ops == snapshot
