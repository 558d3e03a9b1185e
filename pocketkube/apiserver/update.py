"""The update verb: PUT a whole object with optimistic concurrency (and the status/finalize subresources)."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import context, negotiate, objects, strategy, typeinfo, writes


async def update_object(server: context.Server, call: context.Call, new: dict[str, Any],
                        old: dict[str, Any], *, managed: bool = True) -> tuple[dict[str, Any], bool]:
    """Run an update of `old` to `new` through the pipeline; returns (stored object, deleted)."""
    res = call.res
    sub = call.info.subresource
    name = call.info.name
    meta = new.setdefault("metadata", {})
    if meta.get("name") not in (None, "", name):
        raise errors.BadRequest(f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})")
    meta["name"] = name
    writes.check_namespace(call, new)
    rv = meta.get("resourceVersion") or ""
    current_rev = writes.revision_of(old)
    if rv and rv != str(current_rev):
        raise errors.Conflict.modified(res.resource, res.group, name)
    # An update without resourceVersion is unconditional: it applies to the current version.
    meta["resourceVersion"] = str(current_rev)
    if sub == "finalize" and (res.group, res.kind) == ("", "Namespace"):
        finalizers = (new.get("spec") or {}).get("finalizers")
        new = _with(old, new, spec={"finalizers": finalizers} if finalizers else {})
        typeinfo.apply_defaults(server, res, new, old)
    else:
        # Defaults first (kube defaults while decoding), so a spec that differs only by defaulted fields (an
        # atomic list such as volumeClaimTemplates replaced by a patch) does not bump the generation.
        typeinfo.apply_defaults(server, res, new, old)
        strategy.prepare_update(res, new, old, subresource=sub)
    typeinfo.validate(server, res, new, old, subresource=sub)
    await writes.admit(server, call, new, old, "UPDATE")
    if managed:
        writes.update_managed_fields(server, call, old, new, subresource=sub)
    if _unchanged(new, old) and not server.objects.stale(res, old):
        # a no-op write stores nothing and keeps the resourceVersion, as kube-apiserver does
        return old, False
    return await writes.persist_update(server, call, new, old, expected_revision=current_rev)


def _with(old: dict[str, Any], new: dict[str, Any], **fields: Any) -> dict[str, Any]:
    out = objects.clone(old)
    out["metadata"]["resourceVersion"] = new["metadata"].get("resourceVersion") or old["metadata"]["resourceVersion"]
    out.update(fields)
    return out


def _unchanged(new: dict[str, Any], old: dict[str, Any]) -> bool:
    def strip(o: dict[str, Any]) -> dict[str, Any]:
        m = dict(o.get("metadata") or {})
        m.pop("resourceVersion", None)
        mf = m.pop("managedFields", None)
        if mf:
            # timestamps of managedFields alone do not make a change
            m["managedFields"] = [{k: v for k, v in e.items() if k != "time"} for e in mf]
        return {**o, "metadata": m}
    return strip(new) == strip(old)


async def handle(server: context.Server, call: context.Call) -> tuple[Any, int]:
    raw = await negotiate.read_body(call.request)
    new = negotiate.decode_object(raw, call.request.headers.get("Content-Type"), what=call.res.kind)
    if call.info.subresource == "scale":
        from pocketkube.apiserver import scale
        return await scale.update(server, call, new), 200
    writes.check_type(server, call, new)
    typeinfo.check_fields(server, call, new)
    old = await server.objects.get_or_none(call.res, call.namespace, call.info.name)
    if old is None:
        raise errors.NotFound.for_object(call.res.resource, call.res.group, call.info.name)
    stored, _ = await update_object(server, call, new, old)
    return stored, 200
