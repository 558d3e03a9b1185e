"""Specification of managedFields tracking for non-apply writes, checked against a real kube-apiserver."""

from __future__ import annotations

import copy
import json
import pathlib

import pytest

from pocketkube.api import errors, fieldset, managedfields, schemas

RESPONSES = pathlib.Path("/work/shared/reference/responses")
T0, T1, T2 = "2026-11-22T06:19:47Z", "2026-11-22T06:19:48Z", "2026-11-22T06:19:49Z"
MAIN = fieldset.prefixes(("status",))
STATUS = fieldset.prefixes(("spec",), ("metadata", "labels"))


def _schema(group: str, version: str, kind: str) -> dict:
    return schemas.definitions()[schemas.definition_name(group, version, kind)]


DEPLOY = _schema("apps", "v1", "Deployment")


def _update(old, new, manager, now, *, sub="", schema=DEPLOY, api_version="apps/v1", reset=None):
    if reset is None:
        reset = STATUS if sub == "status" else MAIN
    return managedfields.update(old, new, manager=manager, api_version=api_version, now=now, subresource=sub,
                                schema=schema, resolve=schemas.resolve, reset_fields=reset)


def _with(obj, mf):
    out = copy.deepcopy(obj)
    out["metadata"]["managedFields"] = mf
    return out


def _deploy(replicas=2, image="nginx:1.25", labels=None):
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "labels": labels if labels is not None else {"app": "web"}},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": image}]}}}}


def _fields(mf, manager, sub=""):
    return next(e["fieldsV1"] for e in mf if e["manager"] == manager and e.get("subresource", "") == sub)


# --- reproducing a real cluster ---------------------------------------------------------------

def _reference(name):
    return json.loads((RESPONSES / name).read_text())


@pytest.mark.skipif(not RESPONSES.exists(), reason="reference responses not available")
def test_create_then_controller_status_matches_real_deployment():
    """kubectl create then the controller's /status write give exactly the managedFields kube stored."""
    d = _reference("get-deployment.body")
    want = d["metadata"]["managedFields"]
    created = {"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "namespace": "ref", "labels": {"app": "web"}, "creationTimestamp": None},
               "spec": d["spec"], "status": {}}
    mf = _update(None, created, "kubectl-create", want[0]["time"])
    assert mf == [want[0]]
    status = copy.deepcopy(d)
    del status["metadata"]["managedFields"]
    mf = _update(_with(created, mf), status, "kube-controller-manager", want[1]["time"], sub="status")
    assert json.dumps(mf) == json.dumps(want)


@pytest.mark.skipif(not RESPONSES.exists(), reason="reference responses not available")
def test_service_expose_matches_real_service():
    """kubectl expose's Service gets the list-map port key with protocol, as kube recorded."""
    s = _reference("get-service.body")
    want = s["metadata"]["managedFields"]
    spec = {k: v for k, v in s["spec"].items() if k not in ("clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy")}
    created = {"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "web", "namespace": "ref", "labels": {"app": "web"}}, "spec": spec,
               "status": s["status"]}
    assert _update(None, created, "kubectl-expose", want[0]["time"], schema=_schema("", "v1", "Service"),
                   api_version="v1") == want


@pytest.mark.skipif(not RESPONSES.exists(), reason="reference responses not available")
def test_controller_pod_create_matches_real_pod():
    """A ReplicaSet controller's Pod: atomic ownerReferences items, containers without a "." node."""
    p = _reference("get-pods-list.body")["items"][0]
    want = p["metadata"]["managedFields"][0]
    spec = {k: v for k, v in p["spec"].items()
            if k not in ("volumes", "serviceAccountName", "serviceAccount", "tolerations", "priority", "preemptionPolicy")}
    spec["containers"] = [{k: v for k, v in c.items() if k != "volumeMounts"} for c in spec["containers"]]
    md = {k: v for k, v in p["metadata"].items() if k in ("generateName", "labels", "ownerReferences", "namespace")}
    created = {"apiVersion": "v1", "kind": "Pod", "metadata": md, "spec": spec}
    assert _update(None, created, "kube-controller-manager", want["time"], schema=_schema("", "v1", "Pod"),
                   api_version="v1", reset=fieldset.EMPTY) == [want]


# --- ownership --------------------------------------------------------------------------------

def test_update_takes_fields_from_other_managers():
    """Changing a field another manager owns moves it to the writer, who is stamped with now."""
    created = _deploy()
    mf = _update(None, created, "creator", T0)
    scaled = _deploy(replicas=5)
    mf2 = _update(_with(created, mf), _with(scaled, mf), "scaler", T1)
    assert [(e["manager"], e["time"]) for e in mf2] == [("creator", T0), ("scaler", T1)]
    assert _fields(mf2, "scaler") == {"f:spec": {"f:replicas": {}}}
    assert "f:replicas" not in _fields(mf2, "creator")["f:spec"]


def test_update_without_change_adds_no_entry():
    """A write that changes nothing neither adds the writer nor touches timestamps."""
    created = _deploy()
    mf = _update(None, created, "creator", T0)
    assert _update(_with(created, mf), _with(created, mf), "other", T1) == mf
    assert _update(_with(created, mf), _with(created, mf), "creator", T1) == mf


def test_same_manager_accumulates_and_restamps():
    """A manager's second write adds to its set and moves its time forward."""
    created = _deploy()
    mf = _update(None, created, "m", T0)
    changed = _deploy(labels={"app": "web", "tier": "x"})
    mf2 = _update(_with(created, mf), _with(changed, mf), "m", T1)
    assert len(mf2) == 1 and mf2[0]["time"] == T1
    assert _fields(mf2, "m")["f:metadata"]["f:labels"] == {".": {}, "f:app": {}, "f:tier": {}}


def test_removed_fields_leave_their_owner_and_empty_entries_drop():
    """Removing a field removes it from its owner's set; an owner left with nothing disappears."""
    created = _deploy()
    mf = _update(None, created, "creator", T0)
    labelled = _deploy(labels={"app": "web", "tier": "x"})
    mf = _update(_with(created, mf), _with(labelled, mf), "labeller", T1)
    assert _fields(mf, "labeller") == {"f:metadata": {"f:labels": {"f:tier": {}}}}
    mf = _update(_with(labelled, mf), _with(created, mf), "creator", T2)
    assert [e["manager"] for e in mf] == ["creator"]


@pytest.mark.parametrize("first,second,entries", [
    (dict(api_version="apps/v1"), dict(api_version="apps/v1beta2"), 2),
    (dict(sub=""), dict(sub="status"), 2),
    (dict(api_version="apps/v1"), dict(api_version="apps/v1"), 1),
])
def test_managers_are_keyed_by_name_version_and_subresource(first, second, entries):
    """The same manager name at another apiVersion or subresource is another entry."""
    a = _deploy()
    b = copy.deepcopy(a)
    b["metadata"]["labels"]["x"] = "1"
    b["status"] = {"replicas": 1}
    c = copy.deepcopy(b)
    c["metadata"]["labels"]["y"] = "1"
    c["status"] = {"replicas": 2}
    mf = _update(None, a, "m", T0)
    mf = _update(_with(a, mf), _with(b, mf), "m", T1, reset=fieldset.EMPTY, **first)
    mf = _update(_with(b, mf), _with(c, mf), "m", T2, reset=fieldset.EMPTY, **second)
    assert len(mf) == entries


def test_status_subresource_writer_owns_only_status():
    """A /status write with the strategy's reset fields owns status, never spec."""
    created = _deploy()
    mf = _update(None, created, "kubectl", T0)
    status = _deploy(replicas=9)   # spec changes are reset by the status strategy
    status["status"] = {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]}
    mf = _update(_with(created, mf), _with(status, mf), "kube-controller-manager", T1, sub="status")
    e = mf[-1]
    assert (e["manager"], e["subresource"]) == ("kube-controller-manager", "status")
    assert e["fieldsV1"] == {"f:status": {"f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {
        ".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}}
    assert "f:replicas" in _fields(mf, "kubectl")["f:spec"]


def test_main_resource_writer_does_not_own_status():
    """A write to the main resource never takes status fields (the strategy resets them)."""
    new = _deploy()
    new["status"] = {"replicas": 3}
    mf = _update(None, new, "creator", T0)
    assert "f:status" not in mf[0]["fieldsV1"]


# --- user-supplied managedFields --------------------------------------------------------------

SUPPLIED = [{"manager": "someone", "operation": "Apply", "apiVersion": "apps/v1", "time": T0,
             "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}}]


def test_supplied_managed_fields_are_taken_as_given():
    """A write that replaces managedFields with valid entries keeps them (kubectl's CSA upgrade)."""
    created = _deploy()
    mf = _update(None, created, "creator", T0)
    assert _update(_with(created, mf), _with(created, SUPPLIED), "kubectl", T1) == SUPPLIED


@pytest.mark.parametrize("supplied", [[], [{}]])
def test_empty_managed_fields_reset_tracking(supplied):
    """Sending an empty list (or one empty entry) clears managedFields; the object stays untracked."""
    created = _deploy()
    mf = _update(None, created, "creator", T0)
    assert _update(_with(created, mf), _with(_deploy(replicas=3), supplied), "x", T1) == []
    assert _update(created, _deploy(replicas=4), "x", T2) == []


def test_invalid_supplied_managed_fields_fall_back_to_live():
    """Entries that do not decode are ignored and the live ones are kept."""
    created = _deploy()
    mf = _update(None, created, "creator", T0)
    bad = [{"manager": "x", "operation": "Bogus", "apiVersion": "apps/v1", "fieldsType": "FieldsV1"}]
    assert _update(_with(created, mf), _with(created, bad), "y", T1) == mf


def test_subresource_write_ignores_supplied_managed_fields():
    """A subresource write cannot rewrite managedFields."""
    created = _deploy()
    mf = _update(None, created, "creator", T0)
    assert _update(_with(created, mf), _with(created, SUPPLIED), "y", T1, sub="status") == mf


def test_create_with_supplied_managed_fields():
    """Entries supplied on create are the starting point: the creator takes what it sets from them."""
    supplied = copy.deepcopy(SUPPLIED)
    supplied[0]["fieldsV1"] = {"f:spec": {"f:paused": {}, "f:replicas": {}}}
    mf = _update(None, _with(_deploy(), supplied), "creator", T1)
    assert [e["manager"] for e in mf] == ["someone", "creator"]
    assert _fields(mf, "someone") == {"f:spec": {"f:paused": {}}}
    assert "f:replicas" in _fields(mf, "creator")["f:spec"]


# --- encoding ---------------------------------------------------------------------------------

def _entry(manager, op="Update", time=None, api="v1", sub=""):
    return managedfields.Entry(manager, op, api, fieldset.FieldSet.of(((fieldset.FIELD, "a"),)), time=time,
                               subresource=sub)


def test_encode_orders_apply_first_then_time_then_name():
    """Entries sort by operation (Apply < Update), time (none first), manager, apiVersion, subresource."""
    entries = [_entry("z", time=T0), _entry("b", time=T1), _entry("a", time=T1), _entry("q", op="Apply", time=T2),
               _entry("s", sub="scale"), _entry("a", time=T1, api="v2")]
    got = managedfields.encode({e.key(): e for e in entries})
    assert [(e["manager"], e["operation"], e["apiVersion"]) for e in got] == [
        ("q", "Apply", "v1"), ("s", "Update", "v1"), ("z", "Update", "v1"), ("a", "Update", "v1"),
        ("a", "Update", "v2"), ("b", "Update", "v1")]
    assert "time" not in got[1] and got[1]["subresource"] == "scale"


def test_identifier_leaves_out_apiversion_for_apply():
    """Appliers are one manager across versions; updaters are one per version."""
    assert managedfields.identifier("k", "Apply", "v1") == managedfields.identifier("k", "Apply", "v2")
    assert managedfields.identifier("k", "Update", "apps/v1", "scale") == \
        '{"manager":"k","operation":"Update","apiVersion":"apps/v1","subresource":"scale"}'


def test_update_managers_are_capped_at_ten():
    """Past 10 Update entries the oldest fold into one ancient-changes entry per apiVersion."""
    obj = _deploy()
    mf = _update(None, obj, "m0", "2026-01-01T00:00:00Z")
    for i in range(1, 12):
        new = copy.deepcopy(obj)
        new["metadata"]["labels"][f"l{i}"] = "x"
        mf = _update(_with(obj, mf), _with(new, mf), f"m{i}", f"2026-01-01T00:00:{i:02d}Z")
        obj = new
    names = [e["manager"] for e in mf]
    assert len(mf) == 10 and names[0] == "ancient-changes" and "m0" not in names and "m1" not in names
    anc = mf[0]
    assert anc["time"] == "2026-01-01T00:00:02Z"
    assert anc["fieldsV1"]["f:metadata"]["f:labels"].keys() >= {"f:l1", "f:l2"}


# --- decoding and validation --------------------------------------------------------------------

GOOD = {"manager": "m", "operation": "Update", "apiVersion": "v1", "fieldsType": "FieldsV1", "fieldsV1": {}}


@pytest.mark.parametrize("patch,message", [
    ({"operation": "Patch"}, "operation must be `Apply` or `Update`"),
    ({"apiVersion": ""}, "apiVersion must not be empty"),
    ({"fieldsType": ""}, "missing fieldsType in managed fields entry 0"),
    ({"fieldsType": "FieldsV2"}, 'invalid fieldsType "FieldsV2" in managed fields entry 0'),
    ({"fieldsV1": {"x:y": {}}}, "error decoding versioned set"),
])
def test_decode_errors(patch, message):
    """Malformed entries fail to decode with kube's wording."""
    with pytest.raises(ValueError) as e:
        managedfields.decode([{**GOOD, **patch}])
    assert str(e.value).startswith(message)


def test_decode_keeps_entries_without_time():
    """Entries without time (scale subresource writers) decode and encode unchanged."""
    e = [{"manager": "kubectl", "operation": "Update", "apiVersion": "apps/v1", "fieldsType": "FieldsV1",
          "fieldsV1": {"f:spec": {"f:replicas": {}}}, "subresource": "scale"}]
    assert managedfields.encode(managedfields.decode(e)) == e


@pytest.mark.parametrize("patch,text", [
    ({}, None),
    ({"operation": "Patch"}, 'metadata.managedFields[0].operation: Invalid value: "Patch": must be `Apply` or `Update`'),
    ({"fieldsType": "X"}, 'metadata.managedFields[0].fieldsType: Invalid value: "X": must be `FieldsV1`'),
    ({"manager": "m" * 129}, "metadata.managedFields[0].manager: Too long: must have at most 128 bytes"),
    ({"manager": "a\tb"}, 'metadata.managedFields[0].manager: Invalid value: "a\\tb": invalid character U+0009 (at position 1)'),
    ({"subresource": "s" * 257}, "metadata.managedFields[0].subresource: Too long: must have at most 256 bytes"),
])
def test_validate(patch, text):
    """ValidateManagedFields errors, rendered as kube's field errors (422 causes)."""
    errs = managedfields.validate([{**GOOD, **patch}])
    assert [e.text() for e in errs] == ([] if text is None else [text])
    assert all(isinstance(e, errors.FieldError) for e in errs)


def test_unwalkable_object_loses_managed_fields():
    """As kube does, an object whose list keys cannot be computed gets no managedFields rather than failing."""
    bad = _deploy()
    bad["spec"]["template"]["spec"]["containers"] = [{"image": "no-name"}]
    assert _update(None, bad, "m", T0) == []


def test_crd_object_without_schema():
    """With no schema, a create owns spec as a new node and every key below it."""
    obj = {"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"a": {"b": 1}}}
    mf = managedfields.update(None, obj, manager="m", api_version="x.io/v1", now=T0, schema=None, resolve=None)
    assert mf[0]["fieldsV1"] == {"f:spec": {".": {}, "f:a": {".": {}, "f:b": {}}}}
