"""The write pipeline shared by create, update and patch: prepare, default, validate, admit, persist."""

from __future__ import annotations

import random
from typing import Any

from pocketkube.api import errors, fieldset, gotypes, managedfields
from pocketkube.apiserver import context, strategy, typeinfo
from pocketkube.base import clock as clock_mod

_GENERATE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# As kube's math/rand suffixes: a private generator (seeded from the OS) costs one call, not five
# system calls, and nobody else's random.seed() can make generated names repeat.
_RNG = random.Random()


def check_type(server: context.Server, call: context.Call, obj: dict[str, Any]) -> None:
    """The body's apiVersion/kind must name this resource's kind (kube decodes it into that type)."""
    res = call.res
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    sub = res.subresource(call.info.subresource) if call.info.subresource else None
    want_kind = sub.kind if sub and call.info.subresource not in ("status",) else res.kind
    want_version = res.api_version
    if sub and sub.group is not None and sub.version and call.info.subresource != "status":
        want_version = f"{sub.group}/{sub.version}" if sub.group else sub.version
    meta = obj.get("metadata")
    if "metadata" in obj and meta is None:
        obj["metadata"] = {}   # JSON null decodes to an empty ObjectMeta
    elif meta is not None and not isinstance(meta, dict):
        go_type = {list: "array", str: "string", bool: "bool"}.get(type(meta), "number")
        raise errors.BadRequest(f'{want_kind} in version "{want_version.rpartition("/")[2]}" cannot be handled '
                                f"as a {want_kind}: json: cannot unmarshal {go_type} into Go struct field "
                                f"{want_kind}.metadata of type v1.ObjectMeta")
    if not kind and not api_version:
        obj["kind"], obj["apiVersion"] = want_kind, want_version
        _check_go_types(call, obj, want_version, want_kind)
        return
    if not isinstance(kind, str) or not isinstance(api_version, str):
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {want_kind}): "
                                "couldn't get version/kind; json parse error: json: cannot unmarshal "
                                "non-string into Go struct field .kind of type string")
    if not kind:
        raise errors.BadRequest(f"Object 'Kind' is missing in '{_short(obj)}'")
    if kind != want_kind:
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type {want_kind}): "
                                f"{kind} in version \"{api_version}\" cannot be handled as a {want_kind}")
    if api_version != want_version:
        # Versions of one kind are convertible in kube, but only between versions it serves.
        group, _, version = api_version.rpartition("/")
        if group != res.group or server.registry.by_kind(group, version, kind) is None:
            raise errors.BadRequest(f"the API version in the data ({api_version}) does not match the expected "
                                    f"API version ({want_version})")
    _check_go_types(call, obj, api_version, want_kind)


def _check_go_types(call: context.Call, obj: dict[str, Any], api_version: str, kind: str) -> None:
    """kube decodes the body into the kind's Go struct first: a value of the wrong JSON type is a 400."""
    if call.res.crd:
        return
    group, _, version = api_version.rpartition("/")
    problem = gotypes.type_error(obj, group, version, kind)
    if problem:
        raise errors.BadRequest(f'{kind} in version "{version}" cannot be handled as a {kind}: {problem}')


def _short(obj: dict[str, Any]) -> str:
    import orjson
    return orjson.dumps(obj).decode()[:200]


def check_namespace(call: context.Call, obj: dict[str, Any]) -> None:
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise errors.BadRequest("metadata: expected an object")
    if call.res.namespaced:
        ns = meta.get("namespace") or ""
        if ns and ns != call.info.namespace:
            raise errors.BadRequest("the namespace of the provided object does not match the namespace sent on the request")
        meta["namespace"] = call.info.namespace
    else:
        meta.pop("namespace", None)


def ensure_name(call: context.Call, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    name = meta.get("name")
    if name:
        return
    gen = meta.get("generateName")
    if gen and isinstance(gen, str):
        meta["name"] = gen + "".join(_RNG.choices(_GENERATE_ALPHABET, k=5))
        return
    raise errors.Invalid(kind=call.res.kind, group=call.res.group, name="",
                         causes=[errors.required("metadata.name", "name or generateName is required")])


def reset_fields(call: context.Call, subresource: str) -> fieldset.FieldSet | None:
    """Paths the strategy resets for this write, which no manager can own through it."""
    if not strategy.has_status(call.res):
        return None
    if subresource == "status":
        return fieldset.prefixes(("spec",))
    if not subresource:
        return fieldset.prefixes(("status",))
    return None


def update_managed_fields(server: context.Server, call: context.Call, old: dict[str, Any] | None,
                          new: dict[str, Any], *, subresource: str = "") -> None:
    schema, resolve = typeinfo.schema_for(server, call.res)
    now = clock_mod.rfc3339(server.clock.now())
    mf = managedfields.update(old, new, manager=call.field_manager(), api_version=call.res.api_version,
                              now=now, subresource=subresource, schema=schema, resolve=resolve,
                              reset_fields=reset_fields(call, subresource))
    if mf:
        new["metadata"]["managedFields"] = mf
    else:
        new["metadata"].pop("managedFields", None)


async def admit(server: context.Server, call: context.Call, obj: dict[str, Any], old: dict[str, Any] | None,
                operation: str) -> None:
    """Run the admission chain (mutating then validating plugins)."""
    for plugin in server.admission:
        await plugin(server, call, obj, old, operation)


async def persist_update(server: context.Server, call: context.Call, new: dict[str, Any], old: dict[str, Any],
                         *, expected_revision: int) -> tuple[dict[str, Any], bool]:
    """Store an update; an object whose last finalizer went away while deleting is removed.

    Returns (object, deleted)."""
    meta = new["metadata"]
    if (meta.get("deletionTimestamp") and not meta.get("finalizers") and not _graceful_pending(call, new)
            and not strategy.namespace_finalizing(call.res, new)):
        if call.dry_run:
            return new, True
        deleted = await server.objects.delete(call.res, call.namespace, meta["name"],
                                              expected_revision=expected_revision)
        if server.allocators is not None:
            server.allocators.release(call.res, deleted)
        return deleted, True
    if call.dry_run:
        return new, False
    return await server.objects.update(call.res, new, expected_revision=expected_revision), False


def _graceful_pending(call: context.Call, obj: dict[str, Any]) -> bool:
    # A pod being deleted gracefully stays until its kubelet confirms (grace period 0).
    if (call.res.group, call.res.kind) != ("", "Pod"):
        return False
    return int(obj["metadata"].get("deletionGracePeriodSeconds") or 0) > 0


def revision_of(obj: dict[str, Any]) -> int:
    rv = (obj.get("metadata") or {}).get("resourceVersion") or "0"
    try:
        return int(rv)
    except ValueError:
        return -1
