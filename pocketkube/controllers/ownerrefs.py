"""Controller references: reading and building them, indexing objects by owner, mapping events to owner keys."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.client import informer, rest
from pocketkube.controllers import podutil


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    """metav1.GetControllerOf: the ownerReference with controller=true, if any."""
    for ref in podutil.meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None


def controller_ref(owner: dict[str, Any]) -> dict[str, Any]:
    """metav1.NewControllerRef: controller and blockOwnerDeletion both true."""
    m = podutil.meta(owner)
    return {"apiVersion": owner.get("apiVersion") or "", "kind": owner.get("kind") or "",
            "name": m.get("name") or "", "uid": m.get("uid") or "", "controller": True,
            "blockOwnerDeletion": True}


def adopt_patch(owner: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """The strategic merge patch kube sends to add the owner's controller reference."""
    return {"metadata": {"ownerReferences": [controller_ref(owner)], "uid": podutil.meta(obj).get("uid")}}


def release_patch(owner: dict[str, Any], obj: dict[str, Any]) -> dict[str, Any]:
    """The strategic merge patch kube sends to drop the owner's reference."""
    return {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": podutil.meta(owner).get("uid")}],
                         "uid": podutil.meta(obj).get("uid")}}


def object_path(gvr: rest.GVR, obj: dict[str, Any]) -> str:
    m = podutil.meta(obj)
    return gvr.path(m.get("namespace") or "", m.get("name") or "")


# An object that vanished, changed its uid or was claimed meanwhile is simply skipped, as kube does.
_CLAIM_RACES = (errors.NotFound, errors.Conflict, errors.Invalid)


async def can_adopt(client: rest.Client, gvr: rest.GVR, owner: dict[str, Any]) -> bool:
    """Re-read the owner: adopting for a deleted (or recreated) namesake would steal objects."""
    try:
        fresh = await client.get(object_path(gvr, owner))
    except errors.NotFound:
        return False
    fm = podutil.meta(fresh)
    return fm.get("uid") == podutil.meta(owner).get("uid") and not fm.get("deletionTimestamp")


async def adopt(client: rest.Client, gvr: rest.GVR, owner: dict[str, Any],
                objs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Patch owner's controller reference onto objs; returns the adopted objects as the server now has them."""
    adopted = []
    for obj in objs:
        try:
            adopted.append(await client.patch(object_path(gvr, obj), adopt_patch(owner, obj), patch_type="strategic"))
        except _CLAIM_RACES:
            continue
    return adopted


async def release(client: rest.Client, gvr: rest.GVR, owner: dict[str, Any], objs: Iterable[dict[str, Any]]) -> None:
    """Drop owner's reference from objs it no longer selects."""
    for obj in objs:
        try:
            await client.patch(object_path(gvr, obj), release_patch(owner, obj), patch_type="strategic")
        except _CLAIM_RACES:
            continue


def uids(objs: Iterable[dict[str, Any]]) -> set[str]:
    return {podutil.meta(o).get("uid") or "" for o in objs}


def owner_key(owners: informer.Informer, kind: str, ns: str, ref: dict[str, Any] | None) -> str | None:
    """The "namespace/name" of the cached owner a controller reference points to, if it is of kind and uid matches."""
    if ref is None or ref.get("kind") != kind:
        return None
    key = f"{ns}/{ref.get('name') or ''}"
    owner = owners.get(key)
    if owner is None or podutil.meta(owner).get("uid") != ref.get("uid"):
        return None
    return key


def label_selector_of(owner: dict[str, Any]) -> selectors.Selector:
    """The owner's spec.selector as a LabelSelector."""
    return selectors.from_label_selector((owner.get("spec") or {}).get("selector"))


def selecting(owners: Iterable[dict[str, Any]], obj: dict[str, Any], *,
              selector_of: Callable[[dict[str, Any]], selectors.Selector] = label_selector_of) -> list[str]:
    """Keys of the owners in obj's namespace whose selector matches its labels (an orphan's would-be adopters)."""
    ns = podutil.meta(obj).get("namespace") or ""
    labels = podutil.meta(obj).get("labels") or {}
    out = []
    for owner in owners:
        if (podutil.meta(owner).get("namespace") or "") != ns:
            continue
        try:
            if selector_of(owner).matches(labels):
                out.append(informer.key_of(owner))
        except errors.APIError:
            # An owner with an invalid selector selects nothing.
            continue
    return out


class OwnerIndex:
    """Objects of one informer grouped by namespace, and their keys grouped by controller uid."""

    def __init__(self) -> None:
        self.by_ns: dict[str, dict[str, dict[str, Any]]] = {}
        self.by_owner: dict[str, set[str]] = {}

    def update(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """An informer handler: keep the index in step with the cache."""
        if old is not None:
            key = informer.key_of(old)
            self.by_ns.get(podutil.meta(old).get("namespace") or "", {}).pop(key, None)
            ref = controller_of(old)
            if ref is not None:
                self.by_owner.get(ref.get("uid") or "", set()).discard(key)
        if new is not None:
            key = informer.key_of(new)
            self.by_ns.setdefault(podutil.meta(new).get("namespace") or "", {})[key] = new
            ref = controller_of(new)
            if ref is not None:
                self.by_owner.setdefault(ref.get("uid") or "", set()).add(key)

    def in_namespace(self, ns: str) -> list[dict[str, Any]]:
        return list(self.by_ns.get(ns, {}).values())

    def owned_by(self, uid: str, ns: str) -> list[dict[str, Any]]:
        objs = self.by_ns.get(ns, {})
        return [objs[k] for k in self.by_owner.get(uid, ()) if k in objs]
