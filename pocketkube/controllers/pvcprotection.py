"""Storage object in-use protection: releases the pvc-/pv-protection finalizers once nothing uses the object."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pocketkube.api import storagehelpers as sh
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.pvcprotection")

PVCS = rest.GVR("", "v1", "persistentvolumeclaims")
PVS = rest.GVR("", "v1", "persistentvolumes")
PODS = rest.GVR("", "v1", "pods")
COMPONENT = "pvc-protection-controller"
PVC, PV = "pvc", "pv"
Obj = dict[str, Any]


def pod_uses_claim(pod: Mapping[str, Any], claim_name: str) -> bool:
    """A scheduled, not yet terminated pod with a volume from the claim (the kubelet may be using it)."""
    spec = pod.get("spec") or {}
    return bool(spec.get("nodeName")) and not sh.pod_terminated(pod) and claim_name in sh.pod_claim_names(pod)


def plan(obj: Mapping[str, Any], finalizer: str, *, in_use: bool) -> str:
    """"add" the finalizer to a live object lacking it, "remove" it from a deleted one nothing uses, or ""."""
    meta = obj.get("metadata") or {}
    has = finalizer in (meta.get("finalizers") or [])
    if not meta.get("deletionTimestamp"):
        return "" if has else "add"
    return "remove" if has and not in_use else ""


def volume_in_use(pv: Mapping[str, Any]) -> bool:
    """kube's pv-protection rule: a volume is in use while it is Bound."""
    return ((pv.get("status") or {}).get("phase") or "") == "Bound"


class PVCProtectionController(controller.Reconciler):
    """Reconciles ("pvc", "ns/name") and ("pv", name) keys; runs kube's pvc- and pv-protection controllers."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers)
        self.claims = self.watch(PVCS, lambda e, o, n: [(PVC, informer.key_of(n))] if n is not None else [])
        self.volumes = self.watch(PVS, lambda e, o, n: [(PV, informer.key_of(n))] if n is not None else [])
        self.pods = self.watch(PODS, self._pod_keys)

    def _pod_keys(self, etype: str, old: Obj | None, new: Obj | None) -> list[tuple[str, str]]:
        # A pod that stops, ends or goes may free claims waiting to be deleted.
        keys = []
        for pod in (old, new):
            if pod is None:
                continue
            ns = (pod.get("metadata") or {}).get("namespace") or ""
            for name in sh.pod_claim_names(pod):
                claim = self.claims.get(f"{ns}/{name}")
                if claim is not None and (claim.get("metadata") or {}).get("deletionTimestamp"):
                    keys.append((PVC, f"{ns}/{name}"))
        return keys

    async def reconcile(self, key: tuple[str, str]) -> controller.Outcome:
        kind, name = key
        if kind == PVC:
            claim = self.claims.get(name)
            if claim is None:
                return controller.DONE
            ns, _, claim_name = name.partition("/")
            action = plan(claim, sh.PVC_PROTECTION,
                          in_use=any(pod_uses_claim(p, claim_name) for p in self._pods_in(ns)))
            if action == "remove" and await self._used_live(ns, claim_name):
                action = ""
            await self._apply(PVCS, claim, sh.PVC_PROTECTION, action)
            return controller.DONE
        pv = self.volumes.get(name)
        if pv is not None:
            await self._apply(PVS, pv, sh.PV_PROTECTION, plan(pv, sh.PV_PROTECTION, in_use=volume_in_use(pv)))
        return controller.DONE

    def _pods_in(self, namespace: str) -> Iterable[Obj]:
        return (p for p in self.pods.list() if (p.get("metadata") or {}).get("namespace") == namespace)

    async def _used_live(self, namespace: str, claim_name: str) -> bool:
        # The pod cache may not have seen a pod just scheduled: ask the server before letting the claim go.
        listed = await self.client.list(PODS, namespace)
        return any(pod_uses_claim(p, claim_name) for p in listed.get("items") or [])

    async def _apply(self, gvr: rest.GVR, obj: Obj, finalizer: str, action: str) -> None:
        if not action:
            return
        body = copy.deepcopy(obj)
        body["apiVersion"] = body.get("apiVersion") or "v1"
        body["kind"] = body.get("kind") or ("PersistentVolume" if gvr == PVS else "PersistentVolumeClaim")
        meta = body.setdefault("metadata", {})
        finalizers = [f for f in meta.get("finalizers") or [] if f != finalizer]
        if action == "add":
            finalizers.append(finalizer)
        meta["finalizers"] = finalizers
        await self.client.update(gvr, body)
