"""PersistentVolume/claim matching rules shared by the PV controller, the scheduler and the kubelet (pure)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from pocketkube.api import errors, quantity, selectors

# Annotations the binder, the scheduler and provisioners talk through (kube's storage helpers).
BIND_COMPLETED = "pv.kubernetes.io/bind-completed"
BOUND_BY_CONTROLLER = "pv.kubernetes.io/bound-by-controller"
PROVISIONED_BY = "pv.kubernetes.io/provisioned-by"
STORAGE_PROVISIONER = "volume.kubernetes.io/storage-provisioner"
BETA_STORAGE_PROVISIONER = "volume.beta.kubernetes.io/storage-provisioner"
SELECTED_NODE = "volume.kubernetes.io/selected-node"
BETA_STORAGE_CLASS = "volume.beta.kubernetes.io/storage-class"
DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_CLASS = "storageclass.beta.kubernetes.io/is-default-class"
PVC_PROTECTION = "kubernetes.io/pvc-protection"
PV_PROTECTION = "kubernetes.io/pv-protection"
WAIT_FOR_FIRST_CONSUMER = "WaitForFirstConsumer"
NO_PROVISIONER = "kubernetes.io/no-provisioner"

Obj = Mapping[str, Any]
T = TypeVar("T", bound=Mapping[str, Any])


def _meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def _spec(obj: Obj) -> Mapping[str, Any]:
    return obj.get("spec") or {}


def annotations_of(obj: Obj) -> Mapping[str, str]:
    return _meta(obj).get("annotations") or {}


def claim_class(claim: Obj) -> str:
    """GetPersistentVolumeClaimClass: the beta annotation wins over spec.storageClassName."""
    ann = annotations_of(claim)
    if BETA_STORAGE_CLASS in ann:
        return str(ann[BETA_STORAGE_CLASS])
    return str(_spec(claim).get("storageClassName") or "")


def claim_has_class(claim: Obj) -> bool:
    """Whether the claim names a class at all ("" counts: it asks for no class)."""
    return BETA_STORAGE_CLASS in annotations_of(claim) or _spec(claim).get("storageClassName") is not None


def volume_class(volume: Obj) -> str:
    ann = annotations_of(volume)
    if BETA_STORAGE_CLASS in ann:
        return str(ann[BETA_STORAGE_CLASS])
    return str(_spec(volume).get("storageClassName") or "")


def is_default_class(sc: Obj) -> bool:
    ann = annotations_of(sc)
    return ann.get(DEFAULT_CLASS) == "true" or ann.get(BETA_DEFAULT_CLASS) == "true"


def default_class(classes: Iterable[T]) -> T | None:
    """GetDefaultClass: of several defaults the newest, then the first by name."""
    defaults = [c for c in classes if is_default_class(c)]
    if not defaults:
        return None
    defaults.sort(key=lambda c: str(_meta(c).get("name") or ""))
    defaults.sort(key=lambda c: str(_meta(c).get("creationTimestamp") or ""), reverse=True)
    return defaults[0]


def delay_binding(claim: Obj, lookup_class: Callable[[str], Obj | None]) -> bool:
    """IsDelayBindingMode: the claim's class exists and binds WaitForFirstConsumer."""
    name = claim_class(claim)
    if not name:
        return False
    sc = lookup_class(name)
    return sc is not None and sc.get("volumeBindingMode") == WAIT_FOR_FIRST_CONSUMER


def storage(rl: Any) -> int:
    """The storage amount of a ResourceList in bytes (0 when absent or unreadable)."""
    if not isinstance(rl, Mapping) or "storage" not in rl:
        return 0
    try:
        return int(quantity.parse(rl["storage"]).value)
    except quantity.QuantityError:
        return 0


def requested(claim: Obj) -> int:
    return storage((_spec(claim).get("resources") or {}).get("requests"))


def capacity(volume: Obj) -> int:
    return storage(_spec(volume).get("capacity"))


def is_bound_to_claim(volume: Obj, claim: Obj) -> bool:
    """IsVolumeBoundToClaim: the PV's claimRef names the claim (and its uid, when the ref has one)."""
    ref = _spec(volume).get("claimRef")
    if not ref:
        return False
    meta = _meta(claim)
    if ref.get("name") != meta.get("name") or ref.get("namespace") != meta.get("namespace"):
        return False
    return not ref.get("uid") or ref.get("uid") == meta.get("uid")


def volume_mode_mismatch(claim: Obj, volume: Obj) -> bool:
    return (_spec(claim).get("volumeMode") or "Filesystem") != (_spec(volume).get("volumeMode") or "Filesystem")


def access_modes_fit(claim: Obj, volume: Obj) -> bool:
    """CheckAccessModes: every mode the claim asks for is one the volume offers."""
    offered = set(_spec(volume).get("accessModes") or [])
    return all(m in offered for m in _spec(claim).get("accessModes") or [])


def claim_selector(claim: Obj) -> selectors.Selector | None:
    sel = _spec(claim).get("selector")
    if sel is None:
        return None
    try:
        return selectors.from_label_selector(sel, nil_matches_everything=True)
    except errors.APIError:
        return selectors.NOTHING


def find_matching_volume(claim: Obj, volumes: Iterable[T], *, delay: bool = False,
                         node_fits: Callable[[T], bool] | None = None,
                         excluded: frozenset[str] = frozenset()) -> T | None:
    """FindMatchingVolume: the volume pre-bound to the claim, else the smallest available one that fits.

    node_fits is the scheduler's check of a volume's nodeAffinity against its candidate node; without
    it (the PV controller) claims that wait for their first consumer are left to the scheduler."""
    want = requested(claim)
    cls = claim_class(claim)
    sel = claim_selector(claim)
    best: T | None = None
    best_size = 0
    for vol in volumes:
        name = str(_meta(vol).get("name") or "")
        if name in excluded:
            continue
        spec = _spec(vol)
        if spec.get("claimRef") and not is_bound_to_claim(vol, claim):
            continue
        size = capacity(vol)
        if size < want or volume_mode_mismatch(claim, vol) or _meta(vol).get("deletionTimestamp"):
            continue
        fits = node_fits(vol) if node_fits is not None else True
        if is_bound_to_claim(vol, claim):
            return vol if fits else None
        if node_fits is None and delay:
            continue
        if (vol.get("status") or {}).get("phase") != "Available":
            continue
        if sel is not None and not sel.matches(_meta(vol).get("labels") or {}):
            continue
        if volume_class(vol) != cls or not fits:
            continue
        if node_fits is not None and not access_modes_fit(claim, vol):
            continue
        if best is None or size < best_size:
            best, best_size = vol, size
    return best


def best_match(claim: Obj, volumes: Iterable[T], *, delay: bool = False,
               node_fits: Callable[[T], bool] | None = None,
               excluded: frozenset[str] = frozenset()) -> T | None:
    """findBestMatchForClaim: try the volumes by access-mode set, the smallest superset of the claim's first."""
    wanted = set(_spec(claim).get("accessModes") or [])
    groups: dict[frozenset[str], list[T]] = {}
    for vol in volumes:
        groups.setdefault(frozenset(_spec(vol).get("accessModes") or []), []).append(vol)
    for modes in sorted((m for m in groups if wanted <= m), key=lambda m: (len(m), sorted(m))):
        found = find_matching_volume(claim, groups[modes], delay=delay, node_fits=node_fits, excluded=excluded)
        if found is not None:
            return found
    return None


def satisfy_error(volume: Obj, claim: Obj) -> str:
    """checkVolumeSatisfyClaim: why a volume the claim names cannot serve it ("" when it can)."""
    if _meta(volume).get("deletionTimestamp"):
        return f'the volume is marked for deletion "{_meta(volume).get("name", "")}"'
    if capacity(volume) < requested(claim):
        return "requested PV is too small"
    if volume_class(volume) != claim_class(claim):
        return "storageClassName does not match"
    if volume_mode_mismatch(claim, volume):
        return "incompatible volumeMode"
    if not access_modes_fit(claim, volume):
        return "incompatible accessMode"
    return ""


def claim_ref(claim: Obj) -> dict[str, Any]:
    """The ObjectReference a bound PV keeps of its claim (reference.GetReference)."""
    meta = _meta(claim)
    return {"kind": "PersistentVolumeClaim", "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
            "uid": meta.get("uid", ""), "apiVersion": "v1", "resourceVersion": meta.get("resourceVersion", "")}


def pod_claim_names(pod: Obj) -> list[str]:
    """The claims a pod's volumes use (persistentVolumeClaim and generic ephemeral volumes)."""
    out = []
    pod_name = str(_meta(pod).get("name") or "")
    for vol in _spec(pod).get("volumes") or []:
        if not isinstance(vol, Mapping):
            continue
        if isinstance(vol.get("persistentVolumeClaim"), Mapping):
            out.append(str(vol["persistentVolumeClaim"].get("claimName") or ""))
        elif isinstance(vol.get("ephemeral"), Mapping):
            out.append(f"{pod_name}-{vol.get('name', '')}")
    return out


def pod_terminated(pod: Obj) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
