"""Specification of server-side apply: merging, ownership, conflicts, pruning, kubectl's upgrade path."""

from __future__ import annotations

import copy
import json
import pathlib
import re
import time

import pytest

from pocketkube.api import apply, errors, fieldset, managedfields, schemas

TRACES = pathlib.Path("/work/shared/reference/kubectl-traces")
LA = apply.LAST_APPLIED
T0, T1, T2, T3 = ("2026-11-22T05:56:00Z", "2026-11-22T05:56:04Z", "2026-11-22T05:56:13Z",
                  "2026-11-22T05:56:22Z")
MAIN = fieldset.prefixes(("status",))
STATUS = fieldset.prefixes(("spec",), ("metadata", "labels"))
DEPLOY = schemas.definitions()[schemas.definition_name("apps", "v1", "Deployment")]
POD = schemas.definitions()[schemas.definition_name("", "v1", "Pod")]


def _apply(live, cfg, manager="mgr", *, force=False, now=T3, sub="", schema=DEPLOY, api_version="apps/v1",
           reset=None):
    if reset is None:
        reset = STATUS if sub == "status" else MAIN
    return apply.apply(live, cfg, manager=manager, api_version=api_version, force=force, now=now, schema=schema,
                       resolve=schemas.resolve, subresource=sub, reset_fields=reset)


def _update(old, new, manager, now, sub=""):
    mf = managedfields.update(old, new, manager=manager, api_version="apps/v1", now=now, subresource=sub,
                              schema=DEPLOY, resolve=schemas.resolve,
                              reset_fields=STATUS if sub == "status" else MAIN)
    out = copy.deepcopy(new)
    out["metadata"]["managedFields"] = mf
    return out


def _mf(obj, manager, op="Apply"):
    return next(e for e in obj["metadata"]["managedFields"] if e["manager"] == manager and e["operation"] == op)


def _cfg(replicas=3, image="nginx:1.27", labels=None, containers=None, **spec_extra):
    c = containers if containers is not None else [{"image": image, "name": "c", "ports": [{"containerPort": 80}]}]
    spec = {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": c}}}
    spec.update(spec_extra)
    if replicas is None:
        del spec["replicas"]
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"labels": labels if labels is not None else {"app": "web"}, "name": "web",
                         "namespace": "default"}, "spec": spec}


# --- the reference traces: kubectl apply, then apply --server-side ----------------------------

def _last_applied(image):
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "annotations": {}, "labels": {"app": "web"}, "name": "web", "namespace": "default"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": {
            "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                {"image": image, "name": "c", "ports": [{"containerPort": 80}]}]}}}}, separators=(",", ":")) + "\n"


def _stored(image, replicas, la_image):
    """The Deployment as kube stores it after client-side apply and defaulting (06-get-deploy-yaml)."""
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {
        "name": "web", "namespace": "default", "annotations": {LA: _last_applied(la_image)}, "labels": {"app": "web"}},
        "spec": {"progressDeadlineSeconds": 600, "replicas": replicas, "revisionHistoryLimit": 10,
                 "selector": {"matchLabels": {"app": "web"}},
                 "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
                 "template": {"metadata": {"creationTimestamp": None, "labels": {"app": "web"}}, "spec": {
                     "containers": [{"image": image, "imagePullPolicy": "IfNotPresent", "name": "c",
                                     "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {},
                                     "terminationMessagePath": "/dev/termination-log",
                                     "terminationMessagePolicy": "File"}],
                     "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                     "securityContext": {}, "terminationGracePeriodSeconds": 30}}}}


def _history():
    """Replay traces 03-12: client-side applies, controller status, scale, rollout undo, set image."""
    o = _update(None, _stored("nginx:1.25", 3, "nginx:1.25"), "kubectl-client-side-apply", T0)
    n = copy.deepcopy(o)
    n["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "1"
    n["status"] = {"replicas": 3, "observedGeneration": 1}
    o = _update(o, n, "kube-controller-manager", "2026-11-22T05:56:01Z", sub="status")
    o = _update(o, _with_meta(_stored("nginx:1.27", 3, "nginx:1.27"), o), "kubectl-client-side-apply", T1)
    # kubectl scale goes through the scale subresource: replicas leaves everyone and is owned by
    # an entry without time (the apiserver's scale handler does this, not the field manager).
    m = managedfields.decode(o["metadata"]["managedFields"])
    replicas = fieldset.FieldSet.of(((fieldset.FIELD, "spec"), (fieldset.FIELD, "replicas")))
    managedfields.take(m, replicas)
    scale = managedfields.Entry("kubectl", "Update", "apps/v1", replicas, subresource="scale")
    m[scale.key()] = scale
    o["metadata"]["managedFields"] = managedfields.encode(m)
    o["spec"]["replicas"] = 5
    o = _update(o, _image(o, "nginx:1.25"), "kubectl", "2026-11-22T05:56:09Z")        # rollout undo
    o = _update(o, _image(o, "nginx:1.26"), "kubectl-set", T2)                          # set image
    o["spec"]["replicas"] = 4                                                           # scale again
    return o


def _with_meta(new, old):
    new["metadata"]["annotations"].update({k: v for k, v in old["metadata"]["annotations"].items() if k != LA})
    new["status"] = old["status"]
    new["metadata"]["managedFields"] = old["metadata"]["managedFields"]
    return new


def _image(o, image):
    n = copy.deepcopy(o)
    n["spec"]["template"]["spec"]["containers"][0]["image"] = image
    return n


def _trace_bodies(name):
    """Response bodies in a kubectl -v=8 trace, unquoted (long ones are cut by kubectl)."""
    text = (TRACES / name).read_text()
    out = []
    for m in re.finditer(r'"Response Body" body=(?:<\n\t(.*?)\n >|"((?:[^"\\]|\\.)*)")', text, re.S):
        if m.group(1) is not None:
            out.append(m.group(1))
        else:
            body = m.group(2).encode().decode("unicode_escape")
            out.append(re.sub(r" \[truncated \d+ chars\]$", "", body))
    return out


needs_traces = pytest.mark.skipif(not TRACES.exists(), reason="reference traces not available")


@needs_traces
def test_trace_15_conflict_body_is_exact():
    """apply --server-side over kubectl scale and set image fails with kube's exact 409 Status."""
    with pytest.raises(errors.Conflict) as e:
        _apply(_history(), _cfg(), "kubectl")
    want = json.loads(_trace_bodies("15-apply-server-side.txt")[-1])
    assert e.value.status() == want
    assert e.value.code == 409


@needs_traces
def test_trace_16_force_apply_and_kubectl_follow_ups():
    """--force-conflicts takes the fields; kubectl's last-applied and CSA-upgrade requests then behave as in 16."""
    bodies = [b for b in _trace_bodies("16-apply-server-side-force-conflicts.txt") if b.startswith('{"kind":"Deployment"')]
    live = _history()
    # 1. the forced apply
    r1 = _apply(live, _cfg(), "kubectl", force=True)
    mine = _mf(r1, "kubectl")
    assert mine["time"] == T3
    assert mine["fieldsV1"] == {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {
        "f:replicas": {}, "f:selector": {}, "f:template": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {
            "f:containers": {'k:{"name":"c"}': {".": {}, "f:image": {}, "f:name": {}, "f:ports": {
                'k:{"containerPort":80,"protocol":"TCP"}': {".": {}, "f:containerPort": {}}}}}}}}}
    shown = bodies[0].split('"managedFields":', 1)[1]
    assert json.dumps(r1["metadata"]["managedFields"], separators=(",", ":")).startswith(shown)
    managers = [(e["manager"], e.get("subresource", "")) for e in r1["metadata"]["managedFields"]]
    assert ("kubectl", "scale") not in managers and ("kubectl-set", "") not in managers
    assert r1["spec"]["replicas"] == 3
    assert r1["spec"]["template"]["spec"]["containers"][0]["image"] == "nginx:1.27"
    # the server rewrote the last-applied annotation from the applied configuration
    la = json.dumps(_cfg(), separators=(",", ":"), sort_keys=True) + "\n"
    assert r1["metadata"]["annotations"][LA] == la
    assert json.dumps(la)[1:-1] in bodies[0]
    # 2. kubectl applies the annotation as "kubectl-last-applied": a no-op, so no time
    cfg2 = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"annotations": {LA: la}, "name": "web", "namespace": "default"}}
    r2 = _apply(r1, cfg2, "kubectl-last-applied", now="2026-11-22T05:56:23Z")
    shown = bodies[1].split('"managedFields":', 1)[1]
    assert json.dumps(r2["metadata"]["managedFields"], separators=(",", ":")).startswith(shown)
    # 3. kubectl folds kubectl-client-side-apply into its Apply entry with a JSON patch (fieldManager=kubectl)
    m = managedfields.decode(r2["metadata"]["managedFields"])
    csa = m.pop(managedfields.identifier("kubectl-client-side-apply", "Update", "apps/v1"))
    k = m[managedfields.identifier("kubectl", "Apply", "apps/v1")]
    k.fields = k.fields.union(csa.fields)
    upgraded = managedfields.encode(m)
    sent = copy.deepcopy(r2)
    sent["metadata"]["managedFields"] = upgraded
    assert managedfields.update(r2, sent, manager="kubectl", api_version="apps/v1", now=T3, schema=DEPLOY,
                                resolve=schemas.resolve, reset_fields=MAIN) == upgraded
    request = (TRACES / "16-apply-server-side-force-conflicts.txt").read_text()
    sent_prefix = json.dumps(upgraded, separators=(",", ":"))[:900]
    assert sent_prefix in request.encode().decode("unicode_escape")
    # 4. the final forced apply drops what only kubectl owned and no longer applies (defaults return later)
    r4 = _apply(sent, _cfg(), "kubectl", force=True)
    assert _mf(r4, "kubectl")["fieldsV1"] == mine["fieldsV1"]
    assert "progressDeadlineSeconds" not in r4["spec"] and "strategy" not in r4["spec"]
    assert r4["metadata"]["annotations"][LA] == la          # owned by kubectl-last-applied
    shown = bodies[-1].split('"managedFields":', 1)[1]
    assert json.dumps(r4["metadata"]["managedFields"], separators=(",", ":")).startswith(shown)


# --- create, ownership, conflicts ---------------------------------------------------------------

def test_apply_creates():
    """Apply to nothing creates the object, owned by the applier alone."""
    r = _apply(None, _cfg())
    assert {k: v for k, v in r.items() if k != "metadata"} == {k: v for k, v in _cfg().items() if k != "metadata"}
    (e,) = r["metadata"]["managedFields"]
    assert (e["manager"], e["operation"], e["apiVersion"], e["time"]) == ("mgr", "Apply", "apps/v1", T3)
    assert "subresource" not in e


def test_inputs_are_not_modified():
    """Apply returns a new object; the live object and the configuration are left as they were."""
    live = _apply(None, _cfg())
    cfg = _cfg(replicas=4)
    live_copy, cfg_copy = copy.deepcopy(live), copy.deepcopy(cfg)
    r = _apply(live, cfg, force=True)
    r["spec"]["template"]["spec"]["containers"][0]["image"] = "changed"
    assert live == live_copy and cfg == cfg_copy


@pytest.mark.parametrize("other_op", ["Update", "Apply"])
def test_conflict_with_one_manager(other_op):
    """Changing another manager's field fails with one cause; Apply managers print without a version."""
    if other_op == "Update":
        live = _update(None, _stored("nginx:1.27", 3, "nginx:1.27"), "kubectl-client-side-apply", T0)
        who = '"kubectl-client-side-apply" using apps/v1'
    else:
        live = _apply(None, _cfg(), "other", now=T0)
        who = '"other"'
    with pytest.raises(errors.Conflict) as e:
        _apply(live, _cfg(replicas=5), "mine")
    assert e.value.message == f"Apply failed with 1 conflict: conflict with {who}: .spec.replicas"
    assert e.value.details == {"causes": [
        {"reason": "FieldManagerConflict", "message": f"conflict with {who}", "field": ".spec.replicas"}]}


def test_same_value_is_shared_ownership():
    """Applying a field with its current value is no conflict: both managers own it."""
    live = _apply(None, _cfg(), "a", now=T0)
    r = _apply(live, _cfg(), "b")
    assert _mf(r, "a")["fieldsV1"] == _mf(r, "b")["fieldsV1"]


def test_force_moves_fields():
    """With force, conflicting fields move to the applier and leave their old owner."""
    live = _apply(None, _cfg(), "a", now=T0)
    r = _apply(live, _cfg(replicas=7), "b", force=True)
    assert r["spec"]["replicas"] == 7
    assert "f:replicas" not in _mf(r, "a")["fieldsV1"]["f:spec"]
    assert "f:replicas" in _mf(r, "b")["fieldsV1"]["f:spec"]


def test_conflicting_apply_changes_nothing():
    """A conflict leaves no trace: the caller keeps the live object."""
    live = _apply(None, _cfg(), "a", now=T0)
    before = copy.deepcopy(live)
    with pytest.raises(errors.Conflict):
        _apply(live, _cfg(replicas=9), "b")
    assert live == before


def test_noop_apply_keeps_object_and_time():
    """Re-applying the same configuration changes nothing, not even the applier's time."""
    live = _apply(None, _cfg(), "a", now=T0)
    r = _apply(live, _cfg(), "a", now=T2)
    assert r == live


def test_new_manager_on_noop_apply_has_no_time():
    """A manager that joins without changing the object gets an entry without time, as kube records it."""
    live = _apply(None, _cfg(), "a", now=T0)
    r = _apply(live, _cfg(), "b", now=T2)
    assert "time" not in _mf(r, "b")


# --- removing what the applier dropped ----------------------------------------------------------

def test_dropped_fields_are_removed():
    """Fields the applier set before and omits now disappear when nobody else owns them."""
    live = _apply(None, _cfg(labels={"app": "web", "tier": "fe"}, paused=True), "a", now=T0)
    r = _apply(live, _cfg(), "a")
    assert r["metadata"]["labels"] == {"app": "web"}
    assert "paused" not in r["spec"]


def test_dropped_fields_owned_by_others_stay():
    """A dropped field another manager also owns stays, and now belongs to that manager only."""
    live = _apply(None, _cfg(labels={"app": "web", "tier": "fe"}), "a", now=T0)
    live = _apply(live, _cfg(labels={"app": "web", "tier": "fe"}), "b", now=T1)
    r = _apply(live, _cfg(), "a")
    assert r["metadata"]["labels"] == {"app": "web", "tier": "fe"}
    assert _mf(r, "b")["fieldsV1"]["f:metadata"]["f:labels"] == {"f:app": {}, "f:tier": {}}


@pytest.mark.parametrize("labels", [{}, None])
def test_dropped_list_item_is_removed_and_emptied_map_disappears(labels):
    """Dropping a container removes the item; a labels map emptied by removal goes away (a Go nil)."""
    two = [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]
    live = _apply(None, _cfg(containers=two, labels={"app": "web"}), "a", now=T0)
    cfg = _cfg(containers=two[:1], labels=labels or {})
    if labels is None:
        del cfg["metadata"]["labels"]
    r = _apply(live, cfg, "a")
    assert r["spec"]["template"]["spec"]["containers"] == two[:1]
    assert "labels" not in r["metadata"]


def test_fields_set_by_updaters_are_never_pruned():
    """Fields written by an Update manager stay even when an applier drops its own claim."""
    live = _apply(None, _cfg(), "a", now=T0)
    n = copy.deepcopy(live)
    n["spec"]["paused"] = True
    live = _update(live, n, "ctl", T1)
    r = _apply(live, _cfg(), "a")
    assert r["spec"]["paused"] is True


# --- merge semantics ---------------------------------------------------------------------------

@pytest.mark.parametrize("live_c,cfg_c,want", [
    # list map by name: items merge, live-only items keep their place
    ([{"name": "a", "image": "1"}, {"name": "b", "image": "2"}], [{"name": "b", "image": "3"}],
     [{"name": "a", "image": "1"}, {"name": "b", "image": "3"}]),
    ([{"name": "a", "image": "1"}], [{"name": "z", "image": "9"}, {"name": "a", "image": "1"}],
     [{"name": "z", "image": "9"}, {"name": "a", "image": "1"}]),
    ([{"name": "a", "image": "1"}, {"name": "x", "image": "0"}, {"name": "b", "image": "2"}],
     [{"name": "b", "image": "2"}, {"name": "a", "image": "1"}],
     [{"name": "x", "image": "0"}, {"name": "b", "image": "2"}, {"name": "a", "image": "1"}]),
    # ports merge by containerPort+protocol, protocol defaulted to TCP for the key
    ([{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http"},
                              {"containerPort": 80, "protocol": "UDP"}]}],
     [{"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}]}],
     [{"name": "a", "ports": [{"containerPort": 80, "protocol": "TCP", "name": "http", "hostPort": 8080},
                              {"containerPort": 80, "protocol": "UDP"}]}]),
    # atomic list (args) is replaced whole
    ([{"name": "a", "args": ["x", "y"]}], [{"name": "a", "args": ["z"]}], [{"name": "a", "args": ["z"]}]),
])
def test_list_merges(live_c, cfg_c, want):
    """Map lists merge per key in kube's order; atomic lists are replaced."""
    live = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": live_c}}
    cfg = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": cfg_c}}
    assert apply.merge(live, cfg, fieldset.root_type(POD, schemas.resolve))["spec"]["containers"] == want


def test_set_list_merges_and_prunes():
    """A set list (finalizers) keeps others' values and drops only the applier's own."""
    live = _apply(None, _cfg() | {"metadata": {"name": "web", "namespace": "default", "finalizers": ["a/x"]}}, "a")
    live = _apply(live, _cfg() | {"metadata": {"name": "web", "namespace": "default", "finalizers": ["b/y"]}}, "b")
    assert live["metadata"]["finalizers"] == ["a/x", "b/y"]
    r = _apply(live, _cfg() | {"metadata": {"name": "web", "namespace": "default"}}, "a")
    assert r["metadata"]["finalizers"] == ["b/y"]


def test_granular_map_and_atomic_map():
    """labels merge per key; an atomic map (selector) is replaced whole and owned as one field."""
    live = _apply(None, _cfg(labels={"app": "web", "a": "1"}), "a", now=T0)
    r = _apply(live, _cfg(labels={"b": "2"}) | {"spec": {"selector": {"matchLabels": {"app": "web", "x": "y"}}}},
               "b", force=True)
    assert r["metadata"]["labels"] == {"app": "web", "a": "1", "b": "2"}
    assert r["spec"]["selector"] == {"matchLabels": {"app": "web", "x": "y"}}
    assert _mf(r, "b")["fieldsV1"]["f:spec"] == {"f:selector": {}}


def test_null_in_configuration_removes_the_field():
    """A null leaf in the configuration clears the field and the applier owns it."""
    live = _apply(None, _cfg(paused=True), "a", now=T0)
    r = _apply(live, _cfg(paused=None), "a")
    assert "paused" not in r["spec"] and "f:paused" in _mf(r, "a")["fieldsV1"]["f:spec"]


# --- subresources, first apply, kubectl upgrade ---------------------------------------------------

def test_status_apply_owns_status_only():
    """Apply on /status with the strategy's reset fields owns status, under its own manager entry."""
    live = _apply(None, _cfg(), "kubectl", now=T0)
    cfg = _cfg(replicas=9) | {"status": {"replicas": 3, "conditions": [{"type": "Available", "status": "True"}]}}
    r = _apply(live, cfg, "kubectl", sub="status")
    e = next(e for e in r["metadata"]["managedFields"] if e.get("subresource") == "status")
    assert list(e["fieldsV1"]) == ["f:status"]
    assert e["fieldsV1"]["f:status"]["f:conditions"] == {'k:{"type":"Available"}': {
        ".": {}, "f:status": {}, "f:type": {}}}
    assert len(r["metadata"]["managedFields"]) == 2


def test_before_first_apply():
    """Apply to an object with no managedFields first gives its fields to before-first-apply."""
    live = _stored("nginx:1.25", 3, "nginx:1.25")
    with pytest.raises(errors.Conflict) as e:
        _apply(live, _cfg(replicas=3, image="nginx:1.26"), "ssa")
    assert e.value.message == ('Apply failed with 1 conflict: conflict with "before-first-apply" using apps/v1: '
                               '.spec.template.spec.containers[name="c"].image')
    r = _apply(live, _cfg(replicas=3, image="nginx:1.25"), "ssa")
    bfa = _mf(r, "before-first-apply", "Update")
    assert bfa["time"] == T3 and "f:replicas" in bfa["fieldsV1"]["f:spec"]


def test_kubectl_takes_fields_still_matching_last_applied():
    """For manager kubectl, conflicts on fields unchanged since the last client-side apply are forced."""
    live = _update(None, _stored("nginx:1.27", 3, "nginx:1.27"), "kubectl-client-side-apply", T0)
    r = _apply(live, _cfg(replicas=4), "kubectl")
    assert r["spec"]["replicas"] == 4
    assert "f:replicas" not in _mf(r, "kubectl-client-side-apply", "Update")["fieldsV1"]["f:spec"]
    with pytest.raises(errors.Conflict):
        _apply(live, _cfg(replicas=4), "someone-else")


def test_kubectl_updates_existing_last_applied_only():
    """kubectl's apply rewrites last-applied only when the object already has it."""
    r = _apply(None, _cfg(), "kubectl")
    assert LA not in r["metadata"].get("annotations", {})


def test_custom_resource_without_schema():
    """With no schema (preserve-unknown), maps merge per key and lists are atomic."""
    def thing(spec):
        return {"apiVersion": "x.io/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": spec}

    def ap(live, spec, manager):
        return apply.apply(live, thing(spec), manager=manager, api_version="x.io/v1", force=False, now=T3,
                           schema=None, resolve=None)

    live = ap(None, {"a": {"x": 1}, "l": [1, 2]}, "m1")
    r = ap(live, {"a": {"y": 2}}, "m2")
    assert r["spec"] == {"a": {"x": 1, "y": 2}, "l": [1, 2]}
    with pytest.raises(errors.Conflict) as e:
        ap(r, {"l": [3]}, "m2")
    assert e.value.details["causes"][0]["field"] == ".spec.l"
    r = ap(r, {"a": {"x": 1}}, "m1")
    assert _mf(r, "m1")["fieldsV1"] == {"f:spec": {".": {}, "f:a": {".": {}, "f:x": {}}}}
    assert r["spec"] == {"a": {"x": 1, "y": 2}}     # m1 dropped l and nobody else owned it


# --- bad requests -----------------------------------------------------------------------------

@pytest.mark.parametrize("cfg,error,message", [
    (_cfg() | {"apiVersion": "apps/v1beta1"}, errors.BadRequest, "invalid object type: apps/v1beta1, Kind=Deployment"),
    (_cfg() | {"kind": "ReplicaSet"}, errors.BadRequest, "invalid object type: apps/v1, Kind=ReplicaSet"),
    (_cfg() | {"metadata": {"name": "web", "managedFields": []}}, errors.BadRequest, "metadata.managedFields must be nil"),
    (_cfg(bogus=1), errors.InternalError,
     "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): .spec.bogus: field not declared in schema"),
    (_cfg(containers=[{"name": "c"}, {"name": "c"}]), errors.InternalError,
     "failed to create typed patch object (default/web; apps/v1, Kind=Deployment): "
     '.spec.template.spec.containers: duplicate entries for key [name="c"]'),
])
def test_bad_configurations(cfg, error, message):
    """Wrong type, managedFields in the configuration, unknown fields and duplicates are refused as kube does."""
    live = _apply(None, _cfg(), "a")
    with pytest.raises(error) as e:
        apply.apply(live, cfg, manager="a", api_version="apps/v1", force=False, now=T3, schema=DEPLOY,
                    resolve=schemas.resolve, kind="Deployment")
    assert e.value.message == message


def test_apply_is_fast():
    """Applying a Deployment with four managers stays around a millisecond."""
    live = _history()
    _apply(live, _cfg(), "kubectl", force=True)
    n = 50
    start = time.perf_counter()
    for _ in range(n):
        _apply(live, _cfg(), "kubectl", force=True)
    assert (time.perf_counter() - start) / n < 0.05  # 10x headroom: guards against pathological slowness, not a benchmark
