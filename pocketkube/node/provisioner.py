"""The local-path provisioner beside the node agents: a directory and a hostPath PV per claim, removed on Delete."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import uuid
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.api import storagehelpers as sh
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.node.provisioner")

NAME = "rancher.io/local-path"
# Bound to system:persistent-volume-provisioner by the API server's bootstrap (kind runs it as its own account).
USER = "system:local-path-provisioner"
USER_AGENT = "local-path-provisioner/v0.0.30 pocketkube"
PVCS = rest.GVR("", "v1", "persistentvolumeclaims")
PVS = rest.GVR("", "v1", "persistentvolumes")
CLASSES = rest.GVR("storage.k8s.io", "v1", "storageclasses")
SELECTED_NODE = "local.path.provisioner/selected-node"
HOSTNAME_LABEL = "kubernetes.io/hostname"
DIR_NAME = "local-path"
CLAIM, VOLUME = "claim", "volume"
Obj = dict[str, Any]


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return (obj or {}).get("metadata") or {}


def volume_name(claim: Mapping[str, Any]) -> str:
    """The PV a claim gets: pvc-<claim uid>, as every external provisioner names it."""
    return f"pvc-{_meta(claim).get('uid', '')}"


def volume_path(base: str, claim: Mapping[str, Any]) -> str:
    """<base>/pvc-<uid>_<namespace>_<name>, the local-path provisioner's directory layout."""
    meta = _meta(claim)
    return os.path.join(base, f"{volume_name(claim)}_{meta.get('namespace', '')}_{meta.get('name', '')}")


def wants_us(claim: Mapping[str, Any], sc: Mapping[str, Any] | None) -> bool:
    """Whether a claim waits for this provisioner: unbound, alive, of one of its classes, handed to it."""
    ann = sh.annotations_of(claim)
    if (claim.get("spec") or {}).get("volumeName") or _meta(claim).get("deletionTimestamp"):
        return False
    if NAME not in (ann.get(sh.STORAGE_PROVISIONER), ann.get(sh.BETA_STORAGE_PROVISIONER)):
        return False
    return sc is not None and sc.get("provisioner") == NAME


def persistent_volume(claim: Mapping[str, Any], sc: Mapping[str, Any], *, node: str, path: str) -> Obj:
    """The PV for a claim: a hostPath directory pinned to its node, pre-bound to the claim."""
    spec = claim.get("spec") or {}
    storage = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "0")
    return {"apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": volume_name(claim),
                         "annotations": {sh.PROVISIONED_BY: NAME, SELECTED_NODE: node}},
            "spec": {"accessModes": list(spec.get("accessModes") or []), "capacity": {"storage": storage},
                     "claimRef": sh.claim_ref(claim),
                     "persistentVolumeReclaimPolicy": sc.get("reclaimPolicy") or "Delete",
                     "storageClassName": _meta(sc).get("name", ""),
                     "volumeMode": spec.get("volumeMode") or "Filesystem",
                     "hostPath": {"path": path, "type": "DirectoryOrCreate"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}]}]}}}}


def to_delete(pv: Mapping[str, Any]) -> bool:
    """A volume of ours whose claim went: Released with the Delete reclaim policy."""
    return (sh.annotations_of(pv).get(sh.PROVISIONED_BY) == NAME
            and (pv.get("spec") or {}).get("persistentVolumeReclaimPolicy") == "Delete"
            and ((pv.get("status") or {}).get("phase") or "") == "Released")


class LocalPathProvisioner(controller.Reconciler):
    """Serves the claims whose selected node is one of `nodes` (node name -> that node's data directory)."""

    def __init__(self, client: rest.Client, nodes: Mapping[str, str], *, clock: clock_mod.Clock | None = None) -> None:
        self.nodes = dict(nodes)
        identity = f"{NAME}_{next(iter(self.nodes), 'node')}_{uuid.uuid4()}"
        super().__init__(client, "local-path-provisioner", clock=clock, event_source=identity)
        self.claims = self.watch(PVCS, lambda e, o, n: [(CLAIM, informer.key_of(n))] if n is not None else [])
        self.volumes = self.watch(PVS, lambda e, o, n: [(VOLUME, informer.key_of(n))] if n is not None else [])
        self.classes = self.watch(CLASSES, controller.no_keys)

    def base_dir(self, node: str) -> str:
        return os.path.join(self.nodes[node], DIR_NAME)

    async def run(self) -> None:
        try:
            await super().run()
        finally:
            await self.client.close()

    async def reconcile(self, key: tuple[str, str]) -> controller.Outcome:
        kind, name = key
        if kind == CLAIM:
            claim = self.claims.get(name)
            if claim is not None:
                await self.provision({**claim, "apiVersion": "v1", "kind": "PersistentVolumeClaim"})
            return controller.DONE
        pv = self.volumes.get(name)
        if pv is not None and to_delete(pv):
            await self.delete(pv)
        return controller.DONE

    async def provision(self, claim: Obj) -> None:
        sc = self.classes.get(sh.claim_class(claim))
        if not wants_us(claim, sc) or sc is None:
            return
        node = sh.annotations_of(claim).get(sh.SELECTED_NODE)
        if node is None:
            if sc.get("volumeBindingMode") == sh.WAIT_FOR_FIRST_CONSUMER or len(self.nodes) != 1:
                if sc.get("volumeBindingMode") != sh.WAIT_FOR_FIRST_CONSUMER:
                    await self.recorder.event(claim, events.WARNING, "ProvisioningFailed",
                                              "failed to provision volume with StorageClass "
                                              f'"{_meta(sc).get("name", "")}": configuration error, no node was '
                                              "specified")
                return
            node = next(iter(self.nodes))  # an Immediate claim on a one-node agent: that node
        if node not in self.nodes or self.volumes.get(volume_name(claim)) is not None:
            return
        meta = _meta(claim)
        await self.recorder.event(claim, events.NORMAL, "Provisioning", "External provisioner is provisioning "
                                  f'volume for claim "{meta.get("namespace", "")}/{meta.get("name", "")}"')
        path = volume_path(self.base_dir(node), claim)
        try:
            await asyncio.to_thread(_make_dir, path)
        except OSError as e:
            await self.recorder.event(claim, events.WARNING, "ProvisioningFailed",
                                      f'failed to provision volume with StorageClass "{_meta(sc).get("name", "")}": '
                                      f"{e}")
            raise
        try:
            await self.client.create(PVS, persistent_volume(claim, sc, node=node, path=path))
        except errors.AlreadyExists:
            return
        await self.recorder.event(claim, events.NORMAL, "ProvisioningSucceeded",
                                  f"Successfully provisioned volume {volume_name(claim)}")

    async def delete(self, pv: Obj) -> None:
        node = sh.annotations_of(pv).get(SELECTED_NODE) or ""
        if node not in self.nodes:
            return
        path = str(((pv.get("spec") or {}).get("hostPath") or {}).get("path") or "")
        # Only ever remove what we made: a directory in this node's local-path directory.
        if path and os.path.dirname(os.path.normpath(path)) == os.path.normpath(self.base_dir(node)):
            await asyncio.to_thread(shutil.rmtree, path, True)
        try:
            await self.client.delete(PVS.path("", str(_meta(pv).get("name") or "")))
        except errors.NotFound:
            pass


def _make_dir(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    # The provisioner's helper does mkdir -m 0777: any container user may write its volume.
    os.chmod(path, 0o777)
