"""LimitRanger admission: default container resources from a namespace's LimitRanges, then enforce their bounds."""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction
from typing import Any

from pocketkube.api import quantity, quota
from pocketkube.apiserver import admission_quota, context, objects, strategy, typeinfo

ANNOTATION = "kubernetes.io/limit-ranger"
# resource.MaxMilliValue: past it kube compares whole units instead of milli-units.
_MAX_MILLI = (2**63 - 1) // 1000

Quantity = quantity.Quantity


# --- defaulting (PodMutateLimitFunc) -----------------------------------------------------------------------------


def _container_defaults(limit_range: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(requests, limits) a container without its own values gets: defaultRequest and default of Container items."""
    requests: dict[str, Any] = {}
    limits: dict[str, Any] = {}
    for item in quota.dicts((limit_range.get("spec") or {}).get("limits")):
        if item.get("type") == "Container":
            requests.update(item.get("defaultRequest") or {})
            limits.update(item.get("default") or {})
    return requests, limits


def _merge_container(container: dict[str, Any], *, requests: dict[str, Any], limits: dict[str, Any],
                     what: str) -> list[str]:
    res = container.get("resources")
    if not isinstance(res, dict):
        res = {}
    notes: list[str] = []
    added: dict[str, list[str]] = {"requests": [], "limits": []}
    for field, defaults in (("limits", limits), ("requests", requests)):
        current = res.get(field)
        current = dict(current) if isinstance(current, dict) else {}
        for k, v in defaults.items():
            if k not in current:
                current[k] = v
                added[field].append(k)
        if current:
            res[field] = current
    if added["requests"] or added["limits"]:
        container["resources"] = res
    name = container.get("name") or ""
    if added["requests"]:
        notes.append(f"{', '.join(sorted(added['requests']))} request for {what} {name}")
    if added["limits"]:
        notes.append(f"{', '.join(sorted(added['limits']))} limit for {what} {name}")
    return notes


def default_pod(limit_range: Mapping[str, Any], pod: dict[str, Any]) -> bool:
    """Fill in the range's default requests and limits on every container; True when anything was set."""
    requests, limits = _container_defaults(limit_range)
    spec = pod.get("spec")
    if not isinstance(spec, dict) or not (requests or limits):
        return False
    notes: list[str] = []
    for c in quota.dicts(spec.get("containers")):
        notes += _merge_container(c, requests=requests, limits=limits, what="container")
    for c in quota.dicts(spec.get("initContainers")):
        notes += _merge_container(c, requests=requests, limits=limits, what="init container")
    if not notes:
        return False
    meta = pod.setdefault("metadata", {})
    annotations = meta.get("annotations")
    meta["annotations"] = {**(annotations if isinstance(annotations, dict) else {}),
                           ANNOTATION: "LimitRanger plugin set: " + "; ".join(notes)}
    return True


# --- bounds (PodValidateLimitFunc, PersistentVolumeClaimValidateLimitFunc) ---------------------------------------


def _ceil(v: Fraction) -> int:
    # Quantity.Value() and MilliValue() round away from zero.
    return math.ceil(v) if v >= 0 else math.floor(v)


def _compared(req: Quantity | None, lim: Quantity | None, enforced: Quantity) -> tuple[int, int, int]:
    """Request, limit and bound at a common precision: milli-units unless that could overflow."""
    values = [q.value if q is not None else Fraction(0) for q in (req, lim, enforced)]
    whole = [_ceil(v) for v in values]
    if all(w <= _MAX_MILLI for w in whole):
        milli = [_ceil(v * 1000) for v in values]
        return milli[0], milli[1], milli[2]
    return whole[0], whole[1], whole[2]


def _min(kind: str, name: str, bound: Quantity, req: quota.ResourceList, lim: quota.ResourceList) -> str:
    r, li = req.get(name), lim.get(name)
    rv, lv, bv = _compared(r, li, bound)
    if r is None:
        return f"minimum {name} usage per {kind} is {bound}.  No request is specified"
    if rv < bv:
        return f"minimum {name} usage per {kind} is {bound}, but request is {r}"
    if li is not None and lv < bv:
        return f"minimum {name} usage per {kind} is {bound}, but limit is {li}"
    return ""


def _max(kind: str, name: str, bound: Quantity, req: quota.ResourceList, lim: quota.ResourceList) -> str:
    r, li = req.get(name), lim.get(name)
    rv, lv, bv = _compared(r, li, bound)
    if li is None:
        return f"maximum {name} usage per {kind} is {bound}.  No limit is specified"
    if lv > bv:
        return f"maximum {name} usage per {kind} is {bound}, but limit is {li}"
    if r is not None and rv > bv:
        return f"maximum {name} usage per {kind} is {bound}, but request is {r}"
    return ""


def _max_request(kind: str, name: str, bound: Quantity, req: quota.ResourceList) -> str:
    # Claims have no limits: the bound applies to what they request.
    r = req.get(name)
    rv, _, bv = _compared(r, None, bound)
    if r is None:
        return f"maximum {name} usage per {kind} is {bound}.  No request is specified"
    if rv > bv:
        return f"maximum {name} usage per {kind} is {bound}, but request is {r}"
    return ""


def _ratio(kind: str, name: str, bound: Quantity, req: quota.ResourceList, lim: quota.ResourceList) -> str:
    r, li = req.get(name), lim.get(name)
    rv, lv, _ = _compared(r, li, bound)
    if r is None or rv == 0:
        return f"{name} max limit to request ratio per {kind} is {bound}, but no request is specified or request is 0"
    if li is None or lv == 0:
        return f"{name} max limit to request ratio per {kind} is {bound}, but no limit is specified or limit is 0"
    observed = lv / rv
    shown = observed
    allowed = float(_ceil(bound.value))
    if _ceil(bound.value) <= _MAX_MILLI:
        observed *= 1000
        allowed = float(_ceil(bound.value * 1000))
    if observed > allowed:
        return f"{name} max limit to request ratio per {kind} is {bound}, but provided ratio is {shown:f}"
    return ""


def _check(kind: str, item: Mapping[str, Any], req: quota.ResourceList, lim: quota.ResourceList) -> list[str]:
    out: list[str] = []
    for field, check in (("min", _min), ("max", _max), ("maxLimitRequestRatio", _ratio)):
        for name, bound in quota.parse_list(item.get(field)).items():
            out.append(check(kind, name, bound, req, lim))
    return [m for m in out if m]


def _aggregate(messages: list[str]) -> str:
    # utilerrors.NewAggregate: one error alone, several in brackets, duplicates dropped.
    unique = list(dict.fromkeys(messages))
    if len(unique) == 1:
        return unique[0]
    return "[" + ", ".join(unique) + "]" if unique else ""


def validate_pod(limit_range: Mapping[str, Any], pod: Mapping[str, Any]) -> str:
    """Why the pod breaks the range's Container or Pod bounds ("" when it does not)."""
    spec = pod.get("spec") or {}
    errs: list[str] = []
    for item in quota.dicts((limit_range.get("spec") or {}).get("limits")):
        kind = item.get("type")
        if kind == "Container":
            for c in quota.dicts(spec.get("containers")) + quota.dicts(spec.get("initContainers")):
                errs += _check("Container", item, quota.container_resources(c, "requests"), quota.container_resources(c, "limits"))
        elif kind == "Pod":
            errs += _check("Pod", item, quota.containers_total(spec, "requests"), quota.containers_total(spec, "limits"))
    return _aggregate(errs)


def validate_claim(limit_range: Mapping[str, Any], pvc: Mapping[str, Any]) -> str:
    """Why the claim's storage request breaks the range's PersistentVolumeClaim bounds ("" when it does not)."""
    req = quota.parse_list(((pvc.get("spec") or {}).get("resources") or {}).get("requests"))
    errs: list[str] = []
    for item in quota.dicts((limit_range.get("spec") or {}).get("limits")):
        if item.get("type") != "PersistentVolumeClaim":
            continue
        for name, bound in quota.parse_list(item.get("min")).items():
            errs.append(_min("PersistentVolumeClaim", name, bound, req, {}))
        for name, bound in quota.parse_list(item.get("max")).items():
            errs.append(_max_request("PersistentVolumeClaim", name, bound, req))
    return _aggregate([m for m in errs if m])


# --- the plugin ---------------------------------------------------------------------------------------------------


async def limit_ranger(server: context.Server, call: context.Call, obj: dict[str, Any],
                       old: dict[str, Any] | None, operation: str) -> None:
    """Default and bound new pods, and bound claims, by every LimitRange in their namespace."""
    kind = (call.res.group, call.res.kind)
    if call.info.subresource or kind not in (("", "Pod"), ("", "PersistentVolumeClaim")):
        return
    # Pod containers are immutable, so only creates are looked at; claims are checked on resize too.
    if operation != "CREATE" and (kind[1] == "Pod" or operation != "UPDATE"):
        return
    if old is not None and (old.get("metadata") or {}).get("deletionTimestamp"):
        return
    lr_res = server.registry.get("", "v1", "limitranges")
    if lr_res is None:
        return
    listed = await server.store.list(objects.list_prefix(lr_res, call.info.namespace))
    ranges = [objects.decode(e.value, e.mod_revision) for e in listed.entries]
    if not ranges:
        return
    if kind[1] == "PersistentVolumeClaim":
        for lr in ranges:
            why = validate_claim(lr, obj)
            if why:
                raise admission_quota.forbidden(call, obj, why)
        return
    changed = False
    for lr in ranges:
        changed = default_pod(lr, obj) or changed
    if changed:
        # kube mutates before the registry validates and computes the QoS class: do both again here.
        typeinfo.validate(server, call.res, obj, None)
        status = obj.get("status")
        if isinstance(status, dict) and "qosClass" in status:
            status["qosClass"] = strategy.initial_status(call.res, obj)["qosClass"]
    for lr in ranges:
        why = validate_pod(lr, obj)
        if why:
            raise admission_quota.forbidden(call, obj, why)
