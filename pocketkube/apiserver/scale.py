"""The scale subresource: autoscaling/v1 Scale views of workloads and CRDs that declare it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.apiserver import context, objects
from pocketkube.apiserver import update as update_verb

# Attempts of a write that names no resourceVersion when a concurrent write wins (as patch.py's).
_RETRIES = 5


def _paths(server: context.Server, call: context.Call) -> tuple[str, str, str]:
    if call.res.crd and server.crds is not None:
        return server.crds.scale_paths(call.res)
    return ".spec.replicas", ".status.replicas", ""


def _get_path(obj: dict[str, Any], path: str) -> Any:
    cur: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def _set_path(obj: dict[str, Any], path: str, value: Any) -> None:
    parts = path.strip(".").split(".")
    cur = obj
    for part in parts[:-1]:
        cur = cur.setdefault(part, {})
    cur[parts[-1]] = value


def to_scale(server: context.Server, call: context.Call, obj: dict[str, Any]) -> dict[str, Any]:
    spec_path, status_path, selector_path = _paths(server, call)
    meta = obj["metadata"]
    status: dict[str, Any] = {"replicas": _get_path(obj, status_path) or 0}
    if selector_path:
        sel = _get_path(obj, selector_path)
        if sel:
            status["selector"] = sel
    elif isinstance((obj.get("spec") or {}).get("selector"), dict):
        sel_obj = obj["spec"]["selector"]
        if "matchLabels" in sel_obj or "matchExpressions" in sel_obj:
            status["selector"] = selectors.format(sel_obj)
        else:  # ReplicationController selectors are plain maps
            status["selector"] = ",".join(f"{k}={v}" for k, v in sorted(sel_obj.items()))
    out_meta = {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta}
    return {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": out_meta,
            "spec": {"replicas": _get_path(obj, spec_path) or 0}, "status": status}


async def get(server: context.Server, call: context.Call) -> dict[str, Any]:
    obj = await server.objects.get(call.res, call.namespace, call.info.name)
    return to_scale(server, call, obj)


async def _write(server: context.Server, call: context.Call, scale: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    replicas = (scale.get("spec") or {}).get("replicas")
    if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
        raise errors.Invalid(kind="Scale", group="autoscaling", name=call.info.name, causes=[
            errors.invalid("spec.replicas", replicas, "must be greater than or equal to 0")])
    rv = (scale.get("metadata") or {}).get("resourceVersion")
    if rv and rv != old["metadata"]["resourceVersion"]:
        raise errors.Conflict.modified(call.res.resource, call.res.group, call.info.name)
    spec_path, _, _ = _paths(server, call)
    new = objects.clone(old)
    _set_path(new, spec_path, replicas)
    stored, _ = await update_verb.update_object(server, call, new, old)
    return to_scale(server, call, stored)


async def update(server: context.Server, call: context.Call, scale: dict[str, Any]) -> dict[str, Any]:
    if scale.get("kind") not in (None, "Scale"):
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type Scale): {scale.get('kind')}")
    return await _retrying(server, call, scale, lambda current: scale)


async def patch(server: context.Server, call: context.Call, ptype: str, body: Any) -> dict[str, Any]:
    from pocketkube.api import jsonpatch, mergepatch

    def patched(current: dict[str, Any]) -> dict[str, Any]:
        if ptype == "json":
            new: Any = jsonpatch.apply(current, body)
        elif isinstance(body, dict):
            new = mergepatch.apply(current, body)
        else:
            raise errors.BadRequest("the patch must be an object")
        if not isinstance(new, dict):
            raise errors.BadRequest("the patch produced something that is not an object")
        return new

    return await _retrying(server, call, body, patched)


async def _retrying(server: context.Server, call: context.Call, request: Any,
                    make: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """Write make(current Scale), retried on a conflict unless the request named a resourceVersion.

    A write without one is unconditional in kube (GuaranteedUpdate tries again against the new object), so
    `kubectl scale` never sees a 409 because a controller updated the workload in between."""
    named = isinstance(request, dict) and bool((request.get("metadata") or {}).get("resourceVersion"))
    for attempt in range(_RETRIES):
        old = await server.objects.get(call.res, call.namespace, call.info.name)
        try:
            return await _write(server, call, make(to_scale(server, call, old)), old)
        except errors.Conflict:
            if named or attempt == _RETRIES - 1:
                raise
    raise AssertionError("unreachable")
