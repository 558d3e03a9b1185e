"""PersistentVolume controller: binds claims to volumes, waits for provisioners, reclaims released volumes."""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import os
import re
import shutil
from collections.abc import Callable
from typing import Any

from pocketkube.api import errors
from pocketkube.api import storagehelpers as sh
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.controllers.persistentvolume")

PVCS = rest.GVR("", "v1", "persistentvolumeclaims")
PVS = rest.GVR("", "v1", "persistentvolumes")
CLASSES = rest.GVR("storage.k8s.io", "v1", "storageclasses")
PODS = rest.GVR("", "v1", "pods")
COMPONENT = "persistentvolume-controller"
# kube-controller-manager's --pvclaimbinder-sync-period: unbound claims and volumes are looked at again this often.
SYNC_PERIOD = 15.0
CLAIM, VOLUME = "claim", "volume"
Obj = dict[str, Any]

WAIT_MESSAGE = "waiting for first consumer to be created before binding"
NO_CLASS_MESSAGE = "no persistent volumes available for this claim and no storage class is set"
LOST_REF = "Bound claim has lost reference to PersistentVolume. Data on the volume is lost!"
LOST_VOLUME = "Bound claim has lost its PersistentVolume. Data on the volume is lost!"
MISBOUND = "Two claims are bound to the same volume, this one is bound incorrectly"
NO_RECYCLER = "No recycler plugin found for the volume!"
_TMP = re.compile("/tmp/.+")


def external_message(provisioner: str) -> str:
    return (f"Waiting for a volume to be created either by the external provisioner '{provisioner}' or manually by "
            "the system administrator. If volume creation is delayed, please verify that the provisioner is running "
            "and correctly registered.")


@dataclasses.dataclass
class Plan:
    """What one sync of a claim or volume does: an action, the volume it concerns, an event to record."""

    action: str
    volume: Obj | None = None
    event: tuple[str, str, str] | None = None
    phase: str = ""
    message: str = ""


def _meta(obj: Obj | None) -> dict[str, Any]:
    return (obj or {}).get("metadata") or {}


def _spec(obj: Obj | None) -> dict[str, Any]:
    return (obj or {}).get("spec") or {}


def _phase(obj: Obj | None) -> str:
    return str(((obj or {}).get("status") or {}).get("phase") or "")


def plan_claim(claim: Obj, volumes: list[Obj], *, lookup_class: Callable[[str], Obj | None],
               default_class: Obj | None = None, unscheduled_pods: list[str] | None = None) -> Plan:
    """syncClaim: the next step for a claim given the volumes and classes the controller sees."""
    ann = sh.annotations_of(claim)
    name = str(_meta(claim).get("name") or "")
    volume_name = str(_spec(claim).get("volumeName") or "")
    by_name = {str(_meta(v).get("name")): v for v in volumes}
    if sh.BIND_COMPLETED in ann:
        if not volume_name:
            return Plan("lost", event=(events.WARNING, "ClaimLost", LOST_REF))
        vol = by_name.get(volume_name)
        if vol is None:
            return Plan("lost", event=(events.WARNING, "ClaimLost", LOST_VOLUME))
        ref = _spec(vol).get("claimRef")
        if ref is None or ref.get("uid") == _meta(claim).get("uid"):
            return Plan("bind", volume=vol)
        return Plan("lost", event=(events.WARNING, "ClaimMisbound", MISBOUND))
    if _spec(claim).get("storageClassName") is None and sh.BETA_STORAGE_CLASS not in ann and default_class:
        return Plan("assign_class", volume=default_class)
    if not volume_name:
        delay = sh.delay_binding(claim, lookup_class)
        vol = sh.best_match(claim, volumes, delay=delay)
        if vol is not None:
            return Plan("bind", volume=vol)
        cls = sh.claim_class(claim)
        if delay and sh.SELECTED_NODE not in ann:
            pods = unscheduled_pods or []
            if not pods:
                return Plan("pending", event=(events.NORMAL, "WaitForFirstConsumer", WAIT_MESSAGE))
            which = f"pods {','.join(pods)}" if len(pods) > 1 else f"pod {pods[0]}"
            return Plan("pending", event=(events.NORMAL, "WaitForPodScheduled", f"waiting for {which} to be scheduled"))
        if cls:
            sc = lookup_class(cls)
            if sc is None:
                return Plan("none", event=(events.WARNING, "ProvisioningFailed",
                                           f'storageclass.storage.k8s.io "{cls}" not found'))
            provisioner = str(sc.get("provisioner") or "")
            if provisioner.startswith("kubernetes.io/"):
                # No in-tree provisioner runs here (kubernetes.io/no-provisioner means "static volumes only").
                return Plan("none", event=(events.WARNING, "ProvisioningFailed",
                                           f"no volume plugin matched name: {provisioner}"))
            return Plan("provision", volume=sc,
                        event=(events.NORMAL, "ExternalProvisioning", external_message(provisioner)))
        return Plan("pending", event=(events.NORMAL, "FailedBinding", NO_CLASS_MESSAGE))
    vol = by_name.get(volume_name)
    if vol is None:
        return Plan("pending")
    if not _spec(vol).get("claimRef"):
        why = sh.satisfy_error(vol, claim)
        if why:
            return Plan("pending", event=(events.WARNING, "VolumeMismatch",
                                          f'Cannot bind to requested volume "{volume_name}": {why}'))
        return Plan("bind", volume=vol)
    if sh.is_bound_to_claim(vol, claim):
        return Plan("bind", volume=vol)
    if sh.BOUND_BY_CONTROLLER not in ann:
        return Plan("pending")
    return Plan("none", event=(events.WARNING, "FailedBinding",
                               f'Volume "{volume_name}" is bound to a different claim "{name}"'))


def plan_volume(volume: Obj, claim: Obj | None) -> Plan:
    """syncVolume: the next step for a volume given the claim its claimRef names (None when gone)."""
    ref = _spec(volume).get("claimRef")
    if not ref or not ref.get("uid"):
        return Plan("phase", phase="Available")
    if claim is not None and _meta(claim).get("uid") != ref.get("uid"):
        claim = None
    if claim is None:
        return Plan("reclaim")
    claim_volume = _spec(claim).get("volumeName") or ""
    name = _meta(volume).get("name")
    if not claim_volume:
        return Plan("enqueue_claim")
    if claim_volume == name:
        return Plan("phase", phase="Bound")
    if sh.PROVISIONED_BY in sh.annotations_of(volume) and _spec(volume).get("persistentVolumeReclaimPolicy") == "Delete":
        return Plan("reclaim")
    if sh.BOUND_BY_CONTROLLER in sh.annotations_of(volume):
        return Plan("unbind")
    return Plan("phase", phase="Available")


def plan_reclaim(volume: Obj) -> Plan:
    """reclaimVolume: keep (Retain), leave to the external provisioner, delete a /tmp hostPath, or fail."""
    policy = _spec(volume).get("persistentVolumeReclaimPolicy") or "Retain"
    name = str(_meta(volume).get("name") or "")
    if policy == "Retain":
        return Plan("none")
    if policy == "Recycle":
        return Plan("fail", phase="Failed", message=NO_RECYCLER, event=(events.WARNING, "VolumeFailedRecycle", NO_RECYCLER))
    provisioner = str(sh.annotations_of(volume).get(sh.PROVISIONED_BY) or "")
    if provisioner and not provisioner.startswith("kubernetes.io/"):
        return Plan("none")  # the external provisioner that made it deletes it
    host_path = _spec(volume).get("hostPath")
    if isinstance(host_path, dict):
        path = str(host_path.get("path") or "")
        if _TMP.match(path):
            return Plan("delete")
        msg = f"host_path deleter only supports /tmp/.+ but received provided {path}"
    else:
        msg = f'error getting deleter volume plugin for volume "{name}": no deletable volume plugin matched'
    return Plan("fail", phase="Failed", message=msg, event=(events.WARNING, "VolumeFailedDelete", msg))


def _typed(obj: Obj, kind: str) -> Obj:
    return {**obj, "apiVersion": obj.get("apiVersion") or "v1", "kind": obj.get("kind") or kind}


class PersistentVolumeController(controller.Reconciler):
    """Reconciles ("claim", "ns/name") and ("volume", name) keys, as kube's two PV controller queues."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 4,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.claims = self.watch(PVCS, _claim_keys)
        self.volumes = self.watch(PVS, self._volume_keys)
        self.classes = self.watch(CLASSES, self._class_keys)
        # Pods only fill a cache: like kube, a claim notices its consumer on its own next sync.
        self.pods = self.watch(PODS, controller.no_keys)

    def _class_keys(self, etype: str, old: Obj | None, new: Obj | None) -> list[tuple[str, str]]:
        # A new (default) class can unblock pending claims.
        if old is not None and new is not None:
            return []
        return [(CLAIM, informer.key_of(c)) for c in self.claims.list() if _phase(c) != "Bound"]

    def _volume_keys(self, etype: str, old: Obj | None, new: Obj | None) -> list[tuple[str, str]]:
        if new is None:
            # A volume gone leaves its claim Lost.
            ref = _spec(old).get("claimRef") or {}
            return [(CLAIM, f"{ref.get('namespace', '')}/{ref.get('name', '')}")] if ref.get("name") else []
        keys = [(VOLUME, informer.key_of(new))]
        if _phase(new) == "Available" and _phase(old) != "Available":
            # Rather than wait for the periodic sync, let pending claims try the volume now.
            keys += [(CLAIM, informer.key_of(c)) for c in self.claims.list()
                     if _phase(c) == "Pending" and not _spec(c).get("volumeName")]
        return keys

    def _lookup_class(self, name: str) -> Obj | None:
        return self.classes.get(name)

    def _unscheduled_pods(self, claim: Obj) -> list[str]:
        ns, name = _meta(claim).get("namespace"), _meta(claim).get("name")
        return sorted(str(_meta(p).get("name")) for p in self.pods.list()
                      if _meta(p).get("namespace") == ns and not _spec(p).get("nodeName")
                      and not sh.pod_terminated(p) and name in sh.pod_claim_names(p))

    async def reconcile(self, key: tuple[str, str]) -> controller.Outcome:
        kind, name = key
        if kind == CLAIM:
            claim = self.claims.get(name)
            if claim is None or _meta(claim).get("deletionTimestamp") and _phase(claim) != "Bound":
                return controller.DONE
            return await self.sync_claim(_typed(claim, "PersistentVolumeClaim"))
        volume = self.volumes.get(name)
        if volume is None:
            return controller.DONE
        return await self.sync_volume(_typed(volume, "PersistentVolume"))

    # --- claims

    async def sync_claim(self, claim: Obj) -> controller.Outcome:
        plan = plan_claim(claim, [_typed(v, "PersistentVolume") for v in self.volumes.list()],
                          lookup_class=self._lookup_class,
                          default_class=sh.default_class(self.classes.list()),
                          unscheduled_pods=self._unscheduled_pods(claim))
        if plan.event is not None and not (plan.action == "lost" and _phase(claim) == "Lost"):
            await self.recorder.event(claim, *plan.event)
        if plan.action == "bind" and plan.volume is not None:
            await self.bind(plan.volume, claim)
            return controller.DONE
        if plan.action == "assign_class" and plan.volume is not None:
            body = copy.deepcopy(claim)
            body["spec"]["storageClassName"] = _meta(plan.volume).get("name")
            await self.client.update(PVCS, body)
            return controller.DONE
        if plan.action == "lost":
            await self._claim_status(claim, "Lost", None)
            return controller.DONE
        if plan.action == "provision" and plan.volume is not None:
            await self._set_provisioner(claim, str(plan.volume.get("provisioner") or ""))
        elif plan.action == "pending":
            await self._claim_status(claim, "Pending", None)
        return controller.requeue_after(SYNC_PERIOD)

    async def _set_provisioner(self, claim: Obj, provisioner: str) -> None:
        ann = sh.annotations_of(claim)
        if ann.get(sh.STORAGE_PROVISIONER) == provisioner and ann.get(sh.BETA_STORAGE_PROVISIONER) == provisioner:
            return
        body = copy.deepcopy(claim)
        body["metadata"].setdefault("annotations", {}).update(
            {sh.STORAGE_PROVISIONER: provisioner, sh.BETA_STORAGE_PROVISIONER: provisioner})
        await self.client.update(PVCS, body)

    async def _claim_status(self, claim: Obj, phase: str, volume: Obj | None) -> Obj:
        status = dict(claim.get("status") or {})
        new = dict(status, phase=phase)
        if volume is None:
            new.pop("accessModes", None)
            new.pop("capacity", None)
        else:
            new["accessModes"] = _spec(volume).get("accessModes")
            if status.get("phase") != phase:
                new["capacity"] = _spec(volume).get("capacity")
        if new == status:
            return claim
        return await self.client.update_status(PVCS, {**claim, "status": new})

    async def bind(self, volume: Obj, claim: Obj) -> None:
        """Bind both ways, in kube's order: volume claimRef, volume phase, claim volumeName, claim phase."""
        vol = volume
        ref = _spec(vol).get("claimRef") or {}
        cmeta = _meta(claim)
        if (ref.get("name"), ref.get("namespace"), ref.get("uid")) != (cmeta.get("name"), cmeta.get("namespace"),
                                                                        cmeta.get("uid")):
            body = copy.deepcopy(vol)
            if not sh.is_bound_to_claim(vol, claim):
                body["metadata"].setdefault("annotations", {})[sh.BOUND_BY_CONTROLLER] = "yes"
            body["spec"]["claimRef"] = sh.claim_ref(claim)
            vol = await self.client.update(PVS, body)
        vol = await self._volume_phase(vol, "Bound")
        rebind = _spec(claim).get("volumeName") != _meta(vol).get("name")
        if rebind or sh.annotations_of(claim).get(sh.BIND_COMPLETED) != "yes":
            body = copy.deepcopy(claim)
            anns = body["metadata"].setdefault("annotations", {})
            if rebind:
                anns.setdefault(sh.BOUND_BY_CONTROLLER, "yes")
                body["spec"]["volumeName"] = _meta(vol).get("name")
            anns[sh.BIND_COMPLETED] = "yes"
            claim = await self.client.update(PVCS, body)
        await self._claim_status(claim, "Bound", vol)

    # --- volumes

    async def _volume_phase(self, volume: Obj, phase: str, message: str = "") -> Obj:
        status = volume.get("status") or {}
        if status.get("phase") == phase and (status.get("message") or "") == message:
            return volume
        new: dict[str, Any] = {"phase": phase}
        if message:
            new["message"] = message
        new["lastPhaseTransitionTime"] = clock_mod.rfc3339(self.clock.now()) if status.get("phase") != phase \
            else status.get("lastPhaseTransitionTime")
        return await self.client.update_status(PVS, {**volume, "status": new})

    async def sync_volume(self, volume: Obj) -> controller.Outcome:
        ref = _spec(volume).get("claimRef") or {}
        claim = None
        if ref:
            claim = self.claims.get(f"{ref.get('namespace', '')}/{ref.get('name', '')}")
            stale = claim is not None and _meta(claim).get("uid") != ref.get("uid")
            missing = claim is None and bool(ref.get("uid")) and _phase(volume) not in ("Released", "Failed")
            if stale or missing:
                # Our cache may lag behind a claim just created: ask the server before reclaiming.
                try:
                    claim = await self.client.get(PVCS.path(ref.get("namespace", ""), ref.get("name", "")))
                except errors.NotFound:
                    claim = None
        plan = plan_volume(volume, claim)
        if plan.action == "phase":
            await self._volume_phase(volume, plan.phase)
        elif plan.action == "enqueue_claim" and claim is not None:
            self.controller.enqueue((CLAIM, informer.key_of(claim)))
        elif plan.action == "unbind":
            body = copy.deepcopy(volume)
            body["spec"].pop("claimRef", None)
            body["metadata"].get("annotations", {}).pop(sh.BOUND_BY_CONTROLLER, None)
            await self._volume_phase(await self.client.update(PVS, body), "Available")
        elif plan.action == "reclaim":
            if _phase(volume) not in ("Released", "Failed"):
                volume = await self._volume_phase(volume, "Released")
            await self.reclaim(volume)
        return controller.DONE

    async def reclaim(self, volume: Obj) -> None:
        plan = plan_reclaim(volume)
        name = str(_meta(volume).get("name") or "")
        if plan.action == "fail":
            if plan.event is not None and _phase(volume) != "Failed":
                await self.recorder.event(volume, *plan.event)
            await self._volume_phase(volume, "Failed", plan.message)
        elif plan.action == "delete":
            path = str((_spec(volume).get("hostPath") or {}).get("path") or "")
            if os.path.isdir(path) and not os.path.islink(path):
                await asyncio.to_thread(shutil.rmtree, path, True)
            try:
                await self.client.delete(PVS.path("", name))
            except errors.NotFound:
                pass


def _claim_keys(etype: str, old: Obj | None, new: Obj | None) -> list[tuple[str, str]]:
    if new is not None:
        return [(CLAIM, informer.key_of(new))]
    # A claim gone for good releases its volume.
    volume = _spec(old).get("volumeName")
    return [(VOLUME, str(volume))] if volume else []


