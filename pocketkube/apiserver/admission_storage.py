"""Storage admission plugins: DefaultStorageClass and StorageObjectInUseProtection."""

from __future__ import annotations

from typing import Any

from pocketkube.api import storagehelpers
from pocketkube.apiserver import context, objects


def _is(call: context.Call, kind: str, operation: str) -> bool:
    return operation == "CREATE" and (call.res.group, call.res.kind) == ("", kind) and not call.info.subresource


async def default_storage_class(server: context.Server, call: context.Call, obj: dict[str, Any],
                                old: dict[str, Any] | None, operation: str) -> None:
    """Give a new claim that names no class (not even "") the default StorageClass, the newest of several."""
    if not _is(call, "PersistentVolumeClaim", operation) or not isinstance(obj.get("spec"), dict):
        return
    if storagehelpers.claim_has_class(obj):
        return
    sc_res = server.registry.get("storage.k8s.io", "v1", "storageclasses")
    if sc_res is None:
        return
    listed = await server.store.list(objects.storage_prefix(sc_res))
    default = storagehelpers.default_class(objects.decode(e.value, e.mod_revision) for e in listed.entries)
    if default is not None:
        obj["spec"]["storageClassName"] = default["metadata"]["name"]


async def storage_object_in_use_protection(server: context.Server, call: context.Call, obj: dict[str, Any],
                                           old: dict[str, Any] | None, operation: str) -> None:
    """New claims and volumes carry the protection finalizer, so they outlive a delete while in use."""
    for kind, finalizer in (("PersistentVolumeClaim", storagehelpers.PVC_PROTECTION),
                            ("PersistentVolume", storagehelpers.PV_PROTECTION)):
        if not _is(call, kind, operation):
            continue
        meta = obj.setdefault("metadata", {})
        finalizers = meta.get("finalizers")
        if not isinstance(finalizers, list):
            finalizers = []
        if finalizer not in finalizers:
            meta["finalizers"] = [*finalizers, finalizer]
