"""The delete and deletecollection verbs: preconditions, propagation finalizers, graceful deletion."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors, gotypes
from pocketkube.apiserver import admission, context, listing, negotiate, objects, render, strategy, writes

ORPHAN = "orphan"
FOREGROUND = "foregroundDeletion"
_RETURNS_OBJECT = {("", "Pod"), ("", "Service"), ("", "Namespace")}
_DELETE_OPTIONS = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions"


async def _options(call: context.Call) -> dict[str, Any]:
    raw = await negotiate.read_body(call.request)
    opts: dict[str, Any] = {}
    if raw.strip():
        body = negotiate.parse_json(raw) if negotiate.media_type(call.request.headers.get("Content-Type")) != "application/yaml" else negotiate.parse_yaml(raw)
        if not isinstance(body, dict):
            raise errors.BadRequest("the body of a delete must be a DeleteOptions object")
        # kube passes this decoding error on as a bare 500; a 400 with the same words says who is at fault
        problem = gotypes.definition_type_error(body, _DELETE_OPTIONS)
        if problem:
            raise errors.BadRequest(problem)
        opts.update(body)
    if call.param("propagationPolicy"):
        opts["propagationPolicy"] = call.param("propagationPolicy")
    if call.param("gracePeriodSeconds"):
        opts["gracePeriodSeconds"] = call.int_param("gracePeriodSeconds")
    if call.param("orphanDependents"):
        opts["orphanDependents"] = call.bool_param("orphanDependents")
    policy = opts.get("propagationPolicy")
    if policy is not None and policy not in ("Orphan", "Background", "Foreground"):
        raise errors.Invalid(kind="DeleteOptions", group="meta.k8s.io", name="", causes=[
            errors.unsupported("propagationPolicy", policy, ["Foreground", "Background", "Orphan", "nil"])])
    if policy is not None and opts.get("orphanDependents") is not None:
        raise errors.Invalid(kind="DeleteOptions", group="meta.k8s.io", name="", causes=[
            errors.invalid("propagationPolicy", policy, "orphanDependents and deletionPropagation cannot be both set")])
    grace = opts.get("gracePeriodSeconds")
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool)):
        raise errors.BadRequest("gracePeriodSeconds must be an integer")
    return opts


def _policy(res_kind: tuple[str, str], opts: dict[str, Any]) -> str:
    if opts.get("propagationPolicy"):
        return str(opts["propagationPolicy"])
    if opts.get("orphanDependents") is True:
        return "Orphan"
    if opts.get("orphanDependents") is False:
        return "Background"
    return "Background"


def _check_preconditions(call: context.Call, obj: dict[str, Any], opts: dict[str, Any]) -> None:
    pre = opts.get("preconditions") or {}
    meta = obj["metadata"]
    if pre.get("uid") and pre["uid"] != meta.get("uid"):
        raise errors.Conflict.because(call.res.resource, call.res.group, meta["name"],
                                      f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}")
    if pre.get("resourceVersion") and pre["resourceVersion"] != meta.get("resourceVersion"):
        raise errors.Conflict.because(call.res.resource, call.res.group, meta["name"],
                                      f"Precondition failed: ResourceVersion in precondition: {pre['resourceVersion']}, "
                                      f"ResourceVersion in object meta: {meta.get('resourceVersion')}")


def _grace_period(call: context.Call, obj: dict[str, Any], opts: dict[str, Any]) -> int:
    if (call.res.group, call.res.kind) != ("", "Pod"):
        return 0
    spec = obj.get("spec") or {}
    phase = (obj.get("status") or {}).get("phase")
    if not spec.get("nodeName") or phase in ("Succeeded", "Failed"):
        return 0  # never ran, or already finished: nothing to stop
    grace = opts.get("gracePeriodSeconds")
    if grace is None:
        grace = spec.get("terminationGracePeriodSeconds", 30)
    return max(0, int(grace))


def _success(call: context.Call, obj: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if call.res.group:
        details["group"] = call.res.group
    details["kind"] = call.res.resource
    details["uid"] = obj["metadata"].get("uid")
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


async def delete_one(server: context.Server, call: context.Call, name: str, opts: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Delete (or start deleting) one object; returns (object, gone-now)."""
    res = call.res
    for attempt in range(5):
        obj = await server.objects.get(res, call.namespace, name)
        _check_preconditions(call, obj, opts)
        if attempt == 0:
            await admission.admit_delete(server, call, obj)
        policy = _policy((res.group, res.kind), opts)
        new = objects.clone(obj)
        meta = new["metadata"]
        finalizers = list(meta.get("finalizers") or [])
        if policy == "Orphan" and ORPHAN not in finalizers:
            finalizers.append(ORPHAN)
        elif policy == "Foreground" and FOREGROUND not in finalizers:
            finalizers.append(FOREGROUND)
        if policy != "Orphan" and ORPHAN in finalizers and not meta.get("deletionTimestamp"):
            finalizers.remove(ORPHAN)
        grace = _grace_period(call, obj, opts)
        is_namespace = (res.group, res.kind) == ("", "Namespace")
        ns_finalizers = is_namespace and bool((obj.get("spec") or {}).get("finalizers"))
        if not finalizers and grace == 0 and not ns_finalizers:
            if call.dry_run:
                return obj, True
            try:
                deleted = await server.objects.delete(res, call.namespace, name,
                                                      expected_revision=writes.revision_of(obj))
            except errors.Conflict:
                continue
            if server.allocators is not None:
                server.allocators.release(res, deleted)
            return deleted, True
        if finalizers:
            meta["finalizers"] = finalizers
        if meta.get("deletionTimestamp") and grace:
            # a second graceful delete may only shorten the grace period
            grace = min(grace, int(meta.get("deletionGracePeriodSeconds") or grace))
            meta.pop("deletionTimestamp")
        strategy.set_deletion(new, clock=server.clock, grace=grace)
        if is_namespace:
            new.setdefault("status", {})["phase"] = "Terminating"
        if new == obj:
            return obj, False
        if call.dry_run:
            return new, False
        try:
            stored = await server.objects.update(res, new, expected_revision=writes.revision_of(obj))
        except errors.Conflict:
            continue
        return stored, False
    raise errors.Conflict.modified(res.resource, res.group, name)


async def handle(server: context.Server, call: context.Call) -> tuple[Any, int]:
    admission.refuse_immortal_delete((call.res.group, call.res.kind), call.info.name)
    opts = await _options(call)
    obj, gone = await delete_one(server, call, call.info.name, opts)
    if gone and (call.res.group, call.res.kind) not in _RETURNS_OBJECT and not call.res.crd:
        return _success(call, obj), 200
    return obj, 200


async def handle_collection(server: context.Server, call: context.Call) -> tuple[Any, int]:
    opts = await _options(call)
    items, revision, _, _ = await listing.list_objects(server, call, limit_override=0)
    deleted = []
    for obj in items:
        try:
            out, _ = await delete_one(server, call, obj["metadata"]["name"], opts) if not call.res.namespaced else \
                await _delete_in(server, call, obj, opts)
        except errors.NotFound:
            continue
        deleted.append(out)
    return render.list_body(server, call, deleted, resource_version=str(revision)), 200


async def _delete_in(server: context.Server, call: context.Call, obj: dict[str, Any], opts: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    # a cluster-wide deletecollection of a namespaced resource deletes in each object's namespace
    ns = obj["metadata"].get("namespace", "")
    if ns == call.namespace:
        return await delete_one(server, call, obj["metadata"]["name"], opts)
    import dataclasses
    info = dataclasses.replace(call.info, namespace=ns)
    sub = dataclasses.replace(call, info=info)
    return await delete_one(server, sub, obj["metadata"]["name"], opts)
