"""Objects every cluster starts with: system namespaces, the kubernetes Service, APIServices, PriorityClasses, RBAC policy."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any

from pocketkube.api import bootstrappolicy, defaults, errors, managedfields, resources
from pocketkube.apiserver import (
    context,
    flowcontrol_defaults,
    objects,
    rbac_escalation,
    strategy,
    typeinfo,
    writes,
)
from pocketkube.base import clock as clock_mod

log = logging.getLogger("pocketkube.apiserver.bootstrap")

MANAGER = "kube-apiserver"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {}}


def _kubernetes_service(cluster_ip: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
                 "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    }


def _priority_class(name: str, value: int, description: str) -> dict[str, Any]:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, "description": description, "preemptionPolicy": "PreemptLowerPriority"}


def _standard_storage_class() -> dict[str, Any]:
    # What kind ships: the local-path provisioner as the default class, binding once a pod needs the claim.
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}


async def ensure(server: context.Server, res: resources.Resource | None, obj: dict[str, Any]) -> None:
    if res is None:
        return
    meta = obj["metadata"]
    if await server.objects.get_or_none(res, meta.get("namespace", ""), meta["name"]) is not None:
        return
    obj = objects.clone(obj)
    strategy.prepare_create(res, obj, clock=server.clock)
    if not res.crd:
        defaults.apply_defaults(obj, res.group, res.version, res.kind)
    schema, resolve = typeinfo.schema_for(server, res)
    obj["metadata"]["managedFields"] = managedfields.update(
        None, obj, manager=MANAGER, api_version=res.api_version, now=clock_mod.rfc3339(server.clock.now()),
        schema=schema, resolve=resolve)
    if server.allocators is not None and res.kind == "Service":
        server.allocators.allocate(obj, None)
    try:
        await server.objects.create(res, obj)
    except Exception:  # another writer got there first (restart race): that object is as good
        if await server.objects.get_or_none(res, meta.get("namespace", ""), meta["name"]) is None:
            raise


# --- RBAC policy reconciliation (kube's rbac/bootstrap-roles post-start hook) -----------------------

_SUBJECT_GROUP_DEFAULT = {"User": bootstrappolicy.GROUP, "Group": bootstrappolicy.GROUP, "ServiceAccount": ""}


def _subject_key(subject: Mapping[str, Any]) -> tuple[str, str, str, str]:
    kind = str(subject.get("kind") or "")
    group = str(subject.get("apiGroup") or _SUBJECT_GROUP_DEFAULT.get(kind, ""))
    return kind, group, str(subject.get("name") or ""), str(subject.get("namespace") or "")


def _merged_metadata(out: dict[str, Any], existing: Mapping[str, Any], expected: Mapping[str, Any]) -> bool:
    """Expected labels and annotations under the existing ones (the existing win); True if anything changed."""
    changed = False
    meta, want = out["metadata"], expected.get("metadata") or {}
    for field in ("annotations", "labels"):
        have = (existing.get("metadata") or {}).get(field) or {}
        merged = {**(want.get(field) or {}), **have}
        if merged != have:
            meta[field] = merged
            changed = True
    return changed


def _protected(existing: Mapping[str, Any]) -> bool:
    return ((existing.get("metadata") or {}).get("annotations") or {}).get(bootstrappolicy.AUTOUPDATE) == "false"


def reconcile_role(existing: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any] | None:
    """The (Cluster)Role with the expected rules, selectors, labels and annotations added; None if nothing to do.

    As kube's computeReconciledRole in union mode: rules are only ever added (broken down one verb and
    resource at a time), and a role annotated rbac.authorization.kubernetes.io/autoupdate=false is left alone."""
    if _protected(existing):
        return None
    out = objects.clone(dict(existing))
    changed = _merged_metadata(out, existing, expected)
    have_rules = [r for r in (existing.get("rules") or []) if isinstance(r, dict)]
    missing = rbac_escalation.missing(have_rules, [r for r in (expected.get("rules") or []) if isinstance(r, dict)])
    if missing:
        out["rules"] = [*have_rules, *missing]
        changed = True
    want_agg, have_agg = expected.get("aggregationRule"), existing.get("aggregationRule")
    if want_agg is None and have_agg is not None:
        out.pop("aggregationRule", None)
        changed = True
    elif isinstance(want_agg, dict):
        have_sel = list((have_agg or {}).get("clusterRoleSelectors") or []) if isinstance(have_agg, dict) else []
        new_sel = [sel for sel in want_agg.get("clusterRoleSelectors") or [] if sel not in have_sel]
        if new_sel:
            out["aggregationRule"] = {**(have_agg if isinstance(have_agg, dict) else {}),
                                      "clusterRoleSelectors": [*have_sel, *new_sel]}
            changed = True
    return out if changed else None


def reconcile_binding(existing: Mapping[str, Any], expected: Mapping[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """("update", binding) with the expected subjects added, ("recreate", expected) when the roleRef differs,
    or ("none", None): kube's computeReconciledRoleBinding in union mode, autoupdate=false left alone."""
    if _protected(existing):
        return "none", None
    ref, want_ref = existing.get("roleRef") or {}, expected.get("roleRef") or {}
    if any(ref.get(k) != want_ref.get(k) for k in ("apiGroup", "kind", "name")):
        return "recreate", objects.clone(dict(expected))
    out = objects.clone(dict(existing))
    changed = _merged_metadata(out, existing, expected)
    have = [s for s in (existing.get("subjects") or []) if isinstance(s, dict)]
    keys = {_subject_key(s) for s in have}
    missing = [s for s in (expected.get("subjects") or []) if isinstance(s, dict) and _subject_key(s) not in keys]
    if missing:
        out["subjects"] = [*have, *missing]
        changed = True
    return ("update", out) if changed else ("none", None)


async def _write(server: context.Server, res: resources.Resource, new: dict[str, Any], old: dict[str, Any]) -> None:
    schema, resolve = typeinfo.schema_for(server, res)
    new["metadata"]["managedFields"] = managedfields.update(
        old, new, manager=MANAGER, api_version=res.api_version, now=clock_mod.rfc3339(server.clock.now()),
        schema=schema, resolve=resolve)
    await server.objects.update(res, new, expected_revision=writes.revision_of(old))


async def reconcile(server: context.Server, expected: dict[str, Any]) -> None:
    """Create a missing default RBAC object, or bring an existing one up to date unless autoupdate=false."""
    res = server.registry.get(bootstrappolicy.GROUP, "v1", bootstrappolicy.RESOURCES[expected["kind"]])
    if res is None:
        return
    meta = expected["metadata"]
    for _ in range(5):
        existing = await server.objects.get_or_none(res, meta.get("namespace", ""), meta["name"])
        if existing is None:
            await ensure(server, res, expected)
            return
        try:
            if expected["kind"] in ("ClusterRole", "Role"):
                new = reconcile_role(existing, expected)
                if new is not None:
                    await _write(server, res, new, existing)
                return
            op, binding = reconcile_binding(existing, expected)
            if op == "update" and binding is not None:
                await _write(server, res, binding, existing)
            elif op == "recreate":
                # A binding's roleRef is immutable: kube deletes and creates it again.
                await server.objects.delete(res, meta.get("namespace", ""), meta["name"],
                                            expected_revision=writes.revision_of(existing))
                await ensure(server, res, expected)
            return
        except (errors.Conflict, errors.NotFound):
            continue  # someone else wrote it meanwhile: look again
    log.warning("could not reconcile %s %s: it kept changing", expected["kind"], meta["name"])


async def run(server: context.Server, *, secure_port: int, rbac: bool = True) -> None:
    """Create what is missing; independent writes go together so the store commits them in one batch.

    rbac=False leaves the default RBAC policy alone: kube-apiserver reconciles it at each start-up only (a
    deleted default role stays deleted until the next start), and a full pass costs ~0.1 s of CPU."""
    reg = server.registry
    ns = reg.get("", "v1", "namespaces")
    first_ip = server.allocators.first_ip() if server.allocators is not None else "10.96.0.1"
    pcs = reg.get("scheduling.k8s.io", "v1", "priorityclasses")
    api_res = reg.get("apiregistration.k8s.io", "v1", "apiservices")
    now = clock_mod.rfc3339(server.clock.now())
    # Add-ons such as the default StorageClass are installed once, on a fresh cluster: deleting them sticks.
    fresh = ns is not None and await server.objects.get_or_none(ns, "", "kube-system") is None
    # Namespaces first: the kubernetes Service lives in one.
    await asyncio.gather(*(ensure(server, ns, _namespace(name)) for name in SYSTEM_NAMESPACES))
    await asyncio.gather(
        ensure(server, reg.get("", "v1", "services"), _kubernetes_service(first_ip, secure_port)),
        ensure(server, pcs, _priority_class("system-node-critical", 2000001000,
                                             "Used for system critical pods that must not be moved from their current node.")),
        ensure(server, pcs, _priority_class("system-cluster-critical", 2000000000,
                                             "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.")),
        *(ensure(server, api_res, svc) for svc in resources.builtin_apiservices(reg, now=now)),
        # The default RBAC policy, reconciled as kube-apiserver's autoupdate does: missing objects come back,
        # missing rules and subjects are added (an older data dir lacks newer ones).
        *(reconcile(server, o) for o in (bootstrappolicy.all_objects() if rbac else ())),
        # API Priority and Fairness: the mandatory and suggested FlowSchemas and priority levels.
        flowcontrol_defaults.ensure(server, ensure))
    if fresh:
        await ensure(server, reg.get("storage.k8s.io", "v1", "storageclasses"), _standard_storage_class())
