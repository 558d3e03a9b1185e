"""Per-kind lifecycle rules applied on create and update: identity, generation, spec/status split."""

from __future__ import annotations

import os
from typing import Any

from pocketkube.api import defaults_core, resources
from pocketkube.apiserver import csr, objects
from pocketkube.base import clock as clock_mod

# Kinds whose metadata.generation tracks spec changes (the rest never get one, as in 1.32).
_GENERATION_KINDS = {
    ("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"), ("apps", "DaemonSet"),
    ("", "ReplicationController"), ("batch", "Job"), ("batch", "CronJob"),
    ("autoscaling", "HorizontalPodAutoscaler"), ("policy", "PodDisruptionBudget"),
    ("networking.k8s.io", "Ingress"), ("networking.k8s.io", "NetworkPolicy"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"),
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"),
}

DAEMONSET_TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"

# Kinds whose status a client may set on create (nodes report themselves; events have none).
_STATUS_ON_CREATE = {("", "Node"), ("apiregistration.k8s.io", "APIService")}

# Status strategies that reset labels to the stored ones (apps workloads in kube).
_STATUS_KEEPS_LABELS = {("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
                        ("apps", "DaemonSet")}

_NON_SPEC_KEYS = ("metadata", "status", "kind", "apiVersion")

# The bits of a UUID's number that say "version 4, RFC 4122 variant" (what uuid.UUID(version=4) sets).
_UUID_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)


def new_uid() -> str:
    """str(uuid.uuid4()): the same 16 random bytes from the OS (kube's UIDs come from crypto/rand), formatted
    directly instead of through a UUID object, which costs twice as much as the random bytes themselves."""
    x = "%032x" % ((int.from_bytes(os.urandom(16), "big") & _UUID_KEEP) | _UUID_SET)
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def tracks_generation(res: resources.Resource) -> bool:
    return res.crd or (res.group, res.kind) in _GENERATION_KINDS


def has_status(res: resources.Resource) -> bool:
    return res.subresource("status") is not None


def _qos_class(pod: dict[str, Any]) -> str:
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        req = res.get("requests") or {}
        lim = res.get("limits") or {}
        if req or lim:
            any_set = True
        for r in ("cpu", "memory"):
            if r not in lim:
                guaranteed = False
            elif r in req and str(req[r]) != str(lim[r]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed and containers else "Burstable"


def initial_status(res: resources.Resource, obj: dict[str, Any]) -> Any:
    """The status an object starts with, whatever the client sent (kube's PrepareForCreate)."""
    kind = (res.group, res.kind)
    if kind == ("", "Pod"):
        return {"phase": "Pending", "qosClass": _qos_class(obj)}
    if kind == ("", "Namespace"):
        return {"phase": "Active"}
    if kind in (("", "PersistentVolumeClaim"), ("", "PersistentVolume")):
        return {"phase": "Pending"}
    if kind == ("", "Service"):
        return {"loadBalancer": {}}
    if kind == ("", "ReplicationController"):
        return {"replicas": 0}
    if kind == ("autoscaling", "HorizontalPodAutoscaler"):
        # the zero HPA status as Go encodes it: these fields have no omitempty
        if res.version == "v1":
            return {"currentReplicas": 0, "desiredReplicas": 0}
        return {"currentMetrics": None, "desiredReplicas": 0}
    if kind == ("policy", "PodDisruptionBudget"):
        return {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}
    return {}


def prepare_create(res: resources.Resource, obj: dict[str, Any], *, clock: clock_mod.Clock) -> None:
    """Stamp identity and reset what clients may not set on create."""
    meta = obj["metadata"]
    meta["uid"] = new_uid()
    meta["creationTimestamp"] = clock_mod.rfc3339(clock.now())
    for k in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "resourceVersion"):
        meta.pop(k, None)
    if tracks_generation(res):
        meta["generation"] = 1
    else:
        meta.pop("generation", None)
    if has_status(res) and (res.group, res.kind) not in _STATUS_ON_CREATE:
        status = initial_status(res, obj)
        if status or "status" in obj or not res.crd:
            if status or (res.group, res.kind) != ("", "Namespace"):
                obj["status"] = status
        if res.crd and not status:
            obj.pop("status", None)
    if (res.group, res.kind) == ("apps", "DaemonSet"):
        meta.setdefault("annotations", {})[DAEMONSET_TEMPLATE_GENERATION] = "1"
    if (res.group, res.kind) == ("", "Namespace"):
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        spec = obj.setdefault("spec", {})
        if isinstance(spec, dict):
            spec["finalizers"] = ["kubernetes"]


def namespace_finalizing(res: resources.Resource, obj: dict[str, Any]) -> bool:
    """A Namespace stays while spec.finalizers (emptied through /finalize) is not empty."""
    return (res.group, res.kind) == ("", "Namespace") and bool((obj.get("spec") or {}).get("finalizers"))


def _spec_view(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in _NON_SPEC_KEYS}


def prepare_update(res: resources.Resource, new: dict[str, Any], old: dict[str, Any], *,
                   subresource: str = "") -> None:
    """Carry over immutable metadata, split spec from status, and bump generation on spec changes."""
    meta = new.setdefault("metadata", {})
    old_meta = old["metadata"]
    for k in ("uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
        if k in old_meta:
            meta[k] = old_meta[k]
        else:
            meta.pop(k, None)
    meta.pop("selfLink", None)
    if csr.is_csr(res.group, res.kind):
        csr.prepare_update(new, old, subresource=subresource)
        return
    if subresource == "status":
        # /status writes change status (and, as kube allows, nothing of the spec).
        status = new.get("status")
        kept = objects.clone({k: v for k, v in old.items() if k != "status"})
        kept_meta = kept["metadata"]
        for k in ("resourceVersion", "managedFields"):
            if k in meta:
                kept_meta[k] = meta[k]
        # Status writers (controllers, kubelets) may update annotations, as kube's status strategies
        # allow; labels only where the kind's strategy does not reset them.
        for k in ("annotations",) if (res.group, res.kind) in _STATUS_KEEPS_LABELS else ("annotations", "labels"):
            if meta.get(k):
                kept_meta[k] = meta[k]
            else:
                kept_meta.pop(k, None)
        new.clear()
        new.update(kept)
        if status is not None:
            new["status"] = status
        return
    if has_status(res) and (res.group, res.kind) != ("", "Node") or res.crd and has_status(res):
        if "status" in old:
            new["status"] = objects.clone(old["status"])
        else:
            new.pop("status", None)
    if tracks_generation(res):
        gen = int(old_meta.get("generation") or 1)
        if _spec_view(new) != _spec_view(old) or (res.crd and not has_status(res) and new.get("status") != old.get("status")):
            gen += 1
        meta["generation"] = gen
        if (res.group, res.kind) == ("apps", "DaemonSet") and \
                (new.get("spec") or {}).get("template") != (old.get("spec") or {}).get("template"):
            # kube's DaemonSet strategy records which generation last changed the pod template
            meta.setdefault("annotations", {})[DAEMONSET_TEMPLATE_GENERATION] = str(gen)
    else:
        meta.pop("generation", None)
        if "generation" in old_meta:
            meta["generation"] = old_meta["generation"]
    if (res.group, res.kind) == ("", "Service"):
        defaults_core.service_prepare_update(new, old)
    if (res.group, res.kind) == ("", "Namespace"):
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta.get("name", old_meta.get("name"))
        # namespace spec.finalizers may only change through /finalize
        if "spec" in old:
            new["spec"] = objects.clone(old["spec"])


def set_deletion(obj: dict[str, Any], *, clock: clock_mod.Clock, grace: int = 0) -> None:
    import datetime
    meta = obj["metadata"]
    if "deletionTimestamp" not in meta:
        meta["deletionTimestamp"] = clock_mod.rfc3339(clock.now() + datetime.timedelta(seconds=grace))
        meta["deletionGracePeriodSeconds"] = grace
