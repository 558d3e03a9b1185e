"""The PV controller's pure decisions: matching, claim and volume sync plans, reclaim; protection plans."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import storagehelpers as sh
from pocketkube.controllers import persistentvolume as pvc_mod
from pocketkube.controllers import pvcprotection


def claim(name: str = "c", *, size: str = "1Gi", cls: str | None = "manual", modes: tuple[str, ...] = ("ReadWriteOnce",),
          volume: str = "", ann: dict[str, str] | None = None, selector: dict[str, Any] | None = None,
          phase: str = "Pending", uid: str = "uid-c", deleting: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(modes), "resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    if volume:
        spec["volumeName"] = volume
    if selector is not None:
        spec["selector"] = selector
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": uid, "annotations": dict(ann or {})}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"kind": "PersistentVolumeClaim", "metadata": meta, "spec": spec, "status": {"phase": phase}}


def volume(name: str, *, size: str = "1Gi", cls: str = "manual", modes: tuple[str, ...] = ("ReadWriteOnce",),
           phase: str = "Available", ref: dict[str, Any] | None = None, labels: dict[str, str] | None = None,
           ann: dict[str, str] | None = None, policy: str = "Retain", host_path: str = "/srv/x") -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": list(modes), "capacity": {"storage": size}, "storageClassName": cls,
                            "persistentVolumeReclaimPolicy": policy, "hostPath": {"path": host_path}}
    if ref is not None:
        spec["claimRef"] = ref
    return {"kind": "PersistentVolume",
            "metadata": {"name": name, "labels": dict(labels or {}), "annotations": dict(ann or {})},
            "spec": spec, "status": {"phase": phase}}


REF = {"namespace": "ns", "name": "c", "uid": "uid-c"}
WFFC = {"metadata": {"name": "standard"}, "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer"}
CLASSES = {"manual": {"metadata": {"name": "manual"}, "provisioner": "kubernetes.io/no-provisioner",
                      "volumeBindingMode": "Immediate"},
           "standard": WFFC,
           "ext": {"metadata": {"name": "ext"}, "provisioner": "example.com/disk", "volumeBindingMode": "Immediate"}}


@pytest.mark.parametrize("case,c,vols,want", [
    ("smallest that fits", claim(), [volume("big", size="5Gi"), volume("small", size="2Gi"), volume("tiny", size="1Mi")],
     "small"),
    ("class must match", claim(cls="other"), [volume("a")], None),
    ("not available is skipped", claim(), [volume("a", phase="Released")], None),
    ("selector filters labels", claim(selector={"matchLabels": {"tier": "a"}}),
     [volume("b", labels={"tier": "b"}), volume("a", labels={"tier": "a"}, size="9Gi")], "a"),
    ("pre-bound volume wins", claim(), [volume("small"), volume("mine", size="9Gi", ref=REF, phase="Bound")], "mine"),
    ("bound to another claim is skipped", claim(), [volume("x", ref={"namespace": "ns", "name": "other"})], None),
    ("fewest extra access modes first", claim(),
     [volume("many", modes=("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany")), volume("one", size="5Gi")], "one"),
    ("access modes must cover the claim", claim(modes=("ReadWriteMany",)), [volume("a")], None),
])
def test_best_match(case: str, c: dict[str, Any], vols: list[dict[str, Any]], want: str | None) -> None:
    """The PV controller picks the pre-bound volume, else the smallest fitting one of the tightest mode set."""
    found = sh.best_match(c, vols)
    assert (found["metadata"]["name"] if found else None) == want, case


def _plan(c: dict[str, Any], vols: list[dict[str, Any]] = (), **kw: Any) -> pvc_mod.Plan:  # type: ignore[assignment]
    return pvc_mod.plan_claim(c, list(vols), lookup_class=CLASSES.get, **kw)


@pytest.mark.parametrize("case,c,vols,kw,action,reason", [
    ("binds a matching volume", claim(), [volume("a")], {}, "bind", None),
    ("no class, no volume", claim(cls=""), [], {}, "pending", "FailedBinding"),
    ("nil class takes the default", claim(cls=None), [], {"default_class": WFFC}, "assign_class", None),
    ("waits for its first consumer", claim(cls="standard"), [volume("a", cls="standard")], {}, "pending",
     "WaitForFirstConsumer"),
    ("names the pods waiting", claim(cls="standard"), [], {"unscheduled_pods": ["p1", "p2"]}, "pending",
     "WaitForPodScheduled"),
    ("selected node: hand to the provisioner", claim(cls="standard", ann={sh.SELECTED_NODE: "n1"}), [], {},
     "provision", "ExternalProvisioning"),
    ("external class provisions at once", claim(cls="ext"), [], {}, "provision", "ExternalProvisioning"),
    ("no-provisioner class fails", claim(), [], {}, "none", "ProvisioningFailed"),
    ("missing class fails", claim(cls="gone"), [], {}, "none", "ProvisioningFailed"),
    ("named volume missing", claim(volume="v"), [], {}, "pending", None),
    ("named volume too small", claim(volume="v", size="5Gi"), [volume("v")], {}, "pending", "VolumeMismatch"),
    ("named free volume binds", claim(volume="v"), [volume("v")], {}, "bind", None),
    ("named volume claimed by another", claim(volume="v"), [volume("v", ref={"namespace": "ns", "name": "x"})], {},
     "pending", None),
    ("bound claim keeps its volume", claim(volume="v", ann={sh.BIND_COMPLETED: "yes"}),
     [volume("v", ref=REF, phase="Bound")], {}, "bind", None),
    ("bound claim lost its volume", claim(volume="v", ann={sh.BIND_COMPLETED: "yes"}), [], {}, "lost", "ClaimLost"),
    ("bound claim lost its reference", claim(ann={sh.BIND_COMPLETED: "yes"}), [], {}, "lost", "ClaimLost"),
    ("misbound", claim(volume="v", ann={sh.BIND_COMPLETED: "yes"}),
     [volume("v", ref={"namespace": "ns", "name": "c", "uid": "other"})], {}, "lost", "ClaimMisbound"),
])
def test_plan_claim(case: str, c: dict[str, Any], vols: list[dict[str, Any]], kw: dict[str, Any], action: str,
                    reason: str | None) -> None:
    """syncClaim's decision and the event it records, case by case."""
    plan = _plan(c, vols, **kw)
    assert (plan.action, plan.event[1] if plan.event else None) == (action, reason), case


def test_claim_event_messages() -> None:
    """The waiting and provisioning events read as kube's persistentvolume-controller writes them."""
    assert _plan(claim(cls="standard")).event == ("Normal", "WaitForFirstConsumer",
                                                  "waiting for first consumer to be created before binding")
    assert _plan(claim(cls="standard"), unscheduled_pods=["web-0"]).event[2] == "waiting for pod web-0 to be scheduled"
    assert _plan(claim(cls="ext")).event[2].startswith(
        "Waiting for a volume to be created either by the external provisioner 'example.com/disk' or manually")
    assert _plan(claim(cls="gone")).event[2] == 'storageclass.storage.k8s.io "gone" not found'


@pytest.mark.parametrize("case,v,c,action,phase", [
    ("unclaimed is Available", volume("v", phase="Pending"), None, "phase", "Available"),
    ("reserved for a claim without uid", volume("v", ref={"namespace": "ns", "name": "c"}), None, "phase", "Available"),
    ("claim gone: reclaim", volume("v", ref=REF, phase="Bound"), None, "reclaim", ""),
    ("claim recreated with another uid: reclaim", volume("v", ref=REF, phase="Bound"), claim(uid="new"), "reclaim", ""),
    ("claim not bound yet: sync it", volume("v", ref=REF), claim(), "enqueue_claim", ""),
    ("bound both ways", volume("v", ref=REF), claim(volume="v"), "phase", "Bound"),
    ("controller's binding lost the race", volume("v", ref=REF, ann={sh.BOUND_BY_CONTROLLER: "yes"}),
     claim(volume="other"), "unbind", ""),
    ("provisioned for a claim bound elsewhere", volume("v", ref=REF, policy="Delete", ann={sh.PROVISIONED_BY: "x"}),
     claim(volume="other"), "reclaim", ""),
    ("user's claimRef is kept", volume("v", ref=REF), claim(volume="other"), "phase", "Available"),
])
def test_plan_volume(case: str, v: dict[str, Any], c: dict[str, Any] | None, action: str, phase: str) -> None:
    """syncVolume's decision for each state of a volume and its claim."""
    plan = pvc_mod.plan_volume(v, c)
    assert (plan.action, plan.phase) == (action, phase), case


@pytest.mark.parametrize("case,v,action,message", [
    ("retain keeps it", volume("v", policy="Retain"), "none", ""),
    ("external provisioner deletes its own", volume("v", policy="Delete", ann={sh.PROVISIONED_BY: "rancher.io/local-path"}),
     "none", ""),
    ("tmp hostPath is deleted", volume("v", policy="Delete", host_path="/tmp/data"), "delete", ""),
    ("other hostPath fails", volume("v", policy="Delete", host_path="/srv/data"), "fail",
     "host_path deleter only supports /tmp/.+ but received provided /srv/data"),
    ("recycle is not supported", volume("v", policy="Recycle"), "fail", "No recycler plugin found for the volume!"),
])
def test_plan_reclaim(case: str, v: dict[str, Any], action: str, message: str) -> None:
    """Released volumes are kept, left to their provisioner, deleted, or marked Failed with kube's message."""
    plan = pvc_mod.plan_reclaim(v)
    assert (plan.action, plan.message) == (action, message), case


def _pod(*, node: str = "n1", phase: str = "Running", claim_name: str = "c") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"nodeName": node, "volumes": [
        {"name": "d", "persistentVolumeClaim": {"claimName": claim_name}}]}, "status": {"phase": phase}}


@pytest.mark.parametrize("case,pod,used", [
    ("running pod uses it", _pod(), True),
    ("unscheduled pod does not", _pod(node=""), False),
    ("finished pod does not", _pod(phase="Succeeded"), False),
    ("other claim", _pod(claim_name="d"), False),
])
def test_pod_uses_claim(case: str, pod: dict[str, Any], used: bool) -> None:
    """Only scheduled, non-terminated pods hold a claim against deletion."""
    assert pvcprotection.pod_uses_claim(pod, "c") is used, case


@pytest.mark.parametrize("case,obj,in_use,want", [
    ("live without finalizer: add", claim(), False, "add"),
    ("live with finalizer: nothing", {"metadata": {"finalizers": [sh.PVC_PROTECTION]}}, True, ""),
    ("deleted and unused: remove", {"metadata": {"finalizers": [sh.PVC_PROTECTION], "deletionTimestamp": "t"}}, False,
     "remove"),
    ("deleted but in use: keep", {"metadata": {"finalizers": [sh.PVC_PROTECTION], "deletionTimestamp": "t"}}, True, ""),
])
def test_protection_plan(case: str, obj: dict[str, Any], in_use: bool, want: str) -> None:
    """The protection finalizer is added to live objects and released from deleted ones nothing uses."""
    assert pvcprotection.plan(obj, sh.PVC_PROTECTION, in_use=in_use) == want, case


def test_default_class_is_the_newest() -> None:
    """Of several default classes the newest wins, ties going to the first name."""
    def sc(name: str, ts: str, default: bool = True) -> dict[str, Any]:
        ann = {sh.DEFAULT_CLASS: "true"} if default else {}
        return {"metadata": {"name": name, "creationTimestamp": ts, "annotations": ann}}
    classes = [sc("a", "2024-01-01T00:00:00Z"), sc("c", "2024-02-01T00:00:00Z"), sc("b", "2024-02-01T00:00:00Z"),
               sc("z", "2025-01-01T00:00:00Z", default=False)]
    assert sh.default_class(classes)["metadata"]["name"] == "b"
    assert sh.default_class([classes[3]]) is None
