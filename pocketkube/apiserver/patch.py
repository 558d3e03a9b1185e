"""The patch verb: JSON, merge, strategic-merge and server-side apply patches, retried on conflicts."""

from __future__ import annotations

from typing import Any

from pocketkube.api import apply as ssa
from pocketkube.api import errors, jsonpatch, mergepatch, strategic
from pocketkube.apiserver import context, create, negotiate, typeinfo, update, writes
from pocketkube.base import clock as clock_mod

_ACCEPTED = ("application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, "
             "application/strategic-merge-patch+json")
_RETRIES = 5


def patch_type(call: context.Call) -> str:
    mt = negotiate.media_type(call.request.headers.get("Content-Type"))
    ptype = negotiate.PATCH_TYPES.get(mt)
    if ptype is None or ptype == "apply-cbor" or (ptype == "strategic" and call.res.crd):
        accepted = _ACCEPTED.replace(", application/strategic-merge-patch+json", "") if call.res.crd else _ACCEPTED
        raise errors.UnsupportedMediaType(
            f"the body of the request was in an unknown format - accepted media types include: {accepted}")
    return ptype


def _parse(ptype: str, raw: bytes) -> Any:
    if ptype == "apply":
        body = negotiate.parse_yaml(raw)
        if not isinstance(body, dict):
            raise errors.BadRequest("error decoding YAML: the apply patch must be an object")
        return body
    try:
        return negotiate.parse_json(raw)
    except errors.BadRequest as exc:
        raise errors.BadRequest(exc.message.replace("couldn't get version/kind; ", "")) from None


def apply_patch(server: context.Server, call: context.Call, ptype: str, body: Any, base: dict[str, Any]) -> dict[str, Any]:
    """Apply a non-SSA patch to a copy of base."""
    if ptype == "json":
        return jsonpatch.apply(base, body)
    if not isinstance(body, dict):
        raise errors.BadRequest("json: cannot unmarshal array into Go value of type map[string]interface {}")
    if ptype == "merge":
        return mergepatch.apply(base, body)
    schema, resolve = typeinfo.schema_for(server, call.res)
    if schema is None:
        return mergepatch.apply(base, body)
    return strategic.apply(base, body, schema, resolve=resolve)


def _check_params(call: context.Call, ptype: str) -> tuple[str, bool]:
    force_raw = call.param("force")
    if ptype != "apply":
        if force_raw:
            raise errors.Invalid(kind="PatchOptions", group="meta.k8s.io", name="", causes=[
                errors.forbidden("force", "may not be specified for non-apply patch")])
        return "", False
    manager = call.param("fieldManager")
    if not manager:
        raise errors.Invalid(kind="PatchOptions", group="meta.k8s.io", name="", causes=[
            errors.required("fieldManager", "is required for apply patch")])
    return manager, call.bool_param("force")


async def handle(server: context.Server, call: context.Call) -> tuple[Any, int]:
    ptype = patch_type(call)
    manager, force = _check_params(call, ptype)
    raw = await negotiate.read_body(call.request)
    body = _parse(ptype, raw)
    if call.info.subresource == "scale":
        from pocketkube.apiserver import scale
        return await scale.patch(server, call, ptype, body), 200
    user_rv = _user_resource_version(ptype, body)
    last_error: errors.APIError | None = None
    for _ in range(_RETRIES):
        old = await server.objects.get_or_none(call.res, call.namespace, call.info.name)
        try:
            if ptype == "apply":
                return await _apply(server, call, body, old, manager=manager, force=force)
            if old is None:
                raise errors.NotFound.for_object(call.res.resource, call.res.group, call.info.name)
            new = apply_patch(server, call, ptype, body, old)  # patch functions never mutate their input
            if not isinstance(new, dict):
                raise errors.BadRequest("the patch produced something that is not an object")
            typeinfo.check_fields(server, call, new, patched=True)
            new.setdefault("metadata", {})
            if not user_rv:
                new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            stored, _ = await update.update_object(server, call, new, old)
            return stored, 200
        except errors.Conflict as exc:
            if user_rv or ptype == "apply" and "Apply failed" in exc.message:
                raise
            last_error = exc
    assert last_error is not None
    raise last_error


def _user_resource_version(ptype: str, body: Any) -> str:
    if ptype == "json" or not isinstance(body, dict):
        return ""
    meta = body.get("metadata")
    return str(meta.get("resourceVersion") or "") if isinstance(meta, dict) else ""


async def _apply(server: context.Server, call: context.Call, body: dict[str, Any], old: dict[str, Any] | None,
                 *, manager: str, force: bool) -> tuple[Any, int]:
    res = call.res
    writes.check_type(server, call, body)
    meta = body.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise errors.BadRequest("metadata: expected an object")
    if meta.get("name") not in (None, "", call.info.name):
        raise errors.BadRequest(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({call.info.name})")
    meta["name"] = call.info.name
    writes.check_namespace(call, body)
    typeinfo.check_fields(server, call, body)
    schema, resolve = typeinfo.schema_for(server, res)
    now = clock_mod.rfc3339(server.clock.now())
    merged = ssa.apply(old, body, manager=manager,
                       api_version=res.api_version, force=force, now=now, schema=schema, resolve=resolve,
                       subresource=call.info.subresource, kind=res.kind,
                       reset_fields=writes.reset_fields(call, call.info.subresource))
    if old is None:
        if call.info.subresource:
            raise errors.NotFound.for_object(res.resource, res.group, call.info.name)
        created = await create.create_object(server, call, merged, managed=False)
        return created, 201
    merged.setdefault("metadata", {})["resourceVersion"] = (body.get("metadata") or {}).get("resourceVersion") or old["metadata"]["resourceVersion"]
    stored, _ = await update.update_object(server, call, merged, old, managed=False)
    return stored, 200
