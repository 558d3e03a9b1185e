"""Server-side apply: merge an applied configuration into the live object and track ownership.

Hand-written (no Python library does server-side apply): it follows kube-apiserver 1.32 and
structured-merge-diff. The applier owns exactly the fields its configuration sets; maps merge
per key unless atomic, set/map lists merge per item, atomic values are replaced whole; fields
the applier owned before and now omits are removed unless someone else owns them; changing a
field another manager owns is a conflict (409) unless forced, which moves the field to the
applier. Apply to an object without managedFields first gives its existing fields to a
"before-first-apply" Update manager. Manager "kubectl" gets kube's client-side-apply upgrade
path: conflicts on fields still matching the last-applied-configuration annotation are forced,
and that annotation is rewritten from the applied configuration.
Defaulting of the result is the caller's job (kube defaults after the merge too).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson

from pocketkube.api import errors, fieldset, managedfields

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
_TOTAL_ANNOTATION_SIZE_LIMIT = 256 * 1024
_GONE = object()   # a container that removal left empty: it disappears, like a Go nil


def apply(live: dict[str, Any] | None, applied: dict[str, Any], *, manager: str, api_version: str,
          force: bool, now: str, schema: dict[str, Any] | None, resolve: fieldset.Resolve | None,
          subresource: str = "", kind: str | None = None,
          reset_fields: fieldset.FieldSet | None = None) -> dict[str, Any]:
    """The object after manager applies `applied` to live (None: the apply creates it).

    Returns a new object with metadata.managedFields updated (operation Apply); inputs are
    not modified. reset_fields are
    paths the strategy resets for this (sub)resource (nobody owns them). Raises
    errors.Conflict with kube's message and causes on conflicts, errors.BadRequest for a
    configuration of the wrong type or carrying managedFields.
    """
    _check_applied(applied, api_version, kind or (live or {}).get("kind"))
    reset = reset_fields or fieldset.EMPTY
    t = fieldset.root_type(schema, resolve)
    try:
        managed = managedfields.decode(managedfields.managed_fields_of(live))
    except ValueError as e:
        raise errors.InternalError(f"failed to decode managed fields: {e}") from None
    base = managedfields.without_managed_fields(live) if live is not None else {}
    try:
        config_set = fieldset.from_object(applied, t, strict=True)
    except fieldset.FieldSetError as e:
        raise errors.InternalError(f"failed to create typed patch object ({_gvknn(applied)}): {e}") from None
    try:
        if not managed and live is not None:
            managedfields.record_update(managed, {}, base, t, manager=managedfields.BEFORE_FIRST_APPLY,
                                        api_version=api_version, subresource=subresource, now=now, reset=reset)
        result, managed = _apply(base, applied, t, managed, config_set, manager=manager,
                                 api_version=api_version, subresource=subresource, force=force,
                                 now=now, reset=reset)
    except fieldset.FieldSetError as e:
        raise errors.InternalError(f"failed to create typed live object ({_gvknn(live)}): {e}") from None
    if manager == "kubectl" and _has_last_applied(result):
        result = _set_last_applied(result, _build_last_applied(applied))
    managedfields.cap_update_managers(managed)
    result = _clone(result)
    result.setdefault("metadata", {})["managedFields"] = managedfields.encode(managed)
    return result


def _clone(v: Any) -> Any:
    # The merge shares subtrees with live and applied; the caller gets an object of its own.
    try:
        return orjson.loads(orjson.dumps(v))
    except TypeError:
        return copy.deepcopy(v)


def _apply(base: dict[str, Any], applied: dict[str, Any], t: fieldset.Type, managed: managedfields.Managed,
           config_set: fieldset.FieldSet, *, manager: str, api_version: str, subresource: str, force: bool,
           now: str, reset: fieldset.FieldSet) -> tuple[dict[str, Any], managedfields.Managed]:
    key = managedfields.identifier(manager, managedfields.APPLY, api_version, subresource)
    work = {k: _copy_entry(e) for k, e in managed.items()}
    merged = merge(base, applied, t)
    last = work.get(key)
    mine = managedfields.Entry(manager, managedfields.APPLY, api_version,
                               config_set.recursive_difference(reset),
                               time=last.time if last else None, subresource=subresource)
    work[key] = mine
    if last is not None and not last.fields.empty():
        merged = prune(merged, t, last.fields, work)
    cmp = fieldset.compare(base, merged, t)
    changed = cmp.changed().recursive_difference(reset)
    conflicts = {k: e.fields.intersection(changed) for k, e in work.items() if k != key}
    conflicts = {k: s for k, s in conflicts.items() if not s.empty()}
    if conflicts and not force:
        if manager == "kubectl":
            allowed = _allowed_by_last_applied(base, api_version, t)
            conflicts = {k: s.difference(allowed) for k, s in conflicts.items()}
            conflicts = {k: s for k, s in conflicts.items() if not s.empty()}
        if conflicts:
            raise conflict_error(conflicts)
    managedfields.take(work, changed.union(cmp.removed.recursive_difference(reset)), skip=key)
    mine.fields = mine.fields.difference(managedfields.STRIP)
    if mine.fields.empty():
        del work[key]
    if fieldset.equal(merged, base):
        return base, work   # a no-op apply keeps the object and the applier's old timestamp
    if key in work:
        mine.time = now
    return merged, work


def _copy_entry(e: managedfields.Entry) -> managedfields.Entry:
    return managedfields.Entry(e.manager, e.operation, e.api_version, e.fields, time=e.time,
                               subresource=e.subresource)


def _check_applied(applied: Any, api_version: str, kind: str | None) -> None:
    if not isinstance(applied, dict):
        raise errors.BadRequest("error decoding YAML: the applied configuration must be an object")
    av, k = applied.get("apiVersion"), applied.get("kind")
    if av != api_version or (kind is not None and k != kind):
        group, _, version = (av if isinstance(av, str) else "").rpartition("/")
        raise errors.BadRequest(f"invalid object type: {group}/{version}, Kind={k if isinstance(k, str) else ''}")
    md = applied.get("metadata")
    if isinstance(md, dict) and md.get("managedFields") is not None:
        raise errors.BadRequest("metadata.managedFields must be nil")


def _gvknn(obj: Any) -> str:
    obj = obj if isinstance(obj, dict) else {}
    md = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    av = obj.get("apiVersion") if isinstance(obj.get("apiVersion"), str) else ""
    group, _, version = av.rpartition("/")
    return f"{md.get('namespace') or ''}/{md.get('name') or ''}; {group}/{version}, Kind={obj.get('kind') or ''}"


# --- conflicts --------------------------------------------------------------------------------

def _print_manager(key: str) -> str:
    # Printed from the manager identifier, which never holds a time.
    try:
        e = json.loads(key)
    except ValueError:
        return fieldset.go_json(key)
    s = fieldset.go_json(e.get("manager", ""))
    if e.get("subresource"):
        s += f" with subresource {fieldset.go_json(e['subresource'])}"
    if e.get("operation") == managedfields.UPDATE:
        s += f" using {e.get('apiVersion', '')}"
    return s


def conflict_error(conflicts: dict[str, fieldset.FieldSet]) -> errors.Conflict:
    """kube's 409 for apply conflicts: one cause per (manager, field), managers in sorted order."""
    pairs = [(k, fieldset.path_string(p)) for k in sorted(conflicts) for p in conflicts[k].paths()]
    causes = [{"reason": "FieldManagerConflict", "message": f"conflict with {_print_manager(k)}",
               "field": p} for k, p in pairs]
    if len(pairs) == 1:
        k, p = pairs[0]
        msg = f"Apply failed with 1 conflict: conflict with {_print_manager(k)}: {p}"
    else:
        lines = []
        for k in sorted(conflicts):
            lines.append(f"conflicts with {_print_manager(k)}:")
            lines.extend(f"- {p}" for kk, p in pairs if kk == k)
        msg = f"Apply failed with {len(pairs)} conflicts: " + "\n".join(lines)
    return errors.Conflict(msg, details={"causes": causes})


# --- merging ----------------------------------------------------------------------------------

def merge(live: Any, config: Any, t: fieldset.Type) -> Any:
    """The configuration merged into the live value (the configuration wins on leaves)."""
    s = fieldset.shape(t, config) if config is not None else fieldset.shape(t, live)
    if s == fieldset.MAP and isinstance(config, dict):
        out = dict(live) if isinstance(live, dict) else {}
        for k, cv in config.items():
            ct = t.child(k) or fieldset.DEDUCED_TYPE
            if cv is None and fieldset.shape(ct, out.get(k)) == fieldset.LEAF:
                out.pop(k, None)   # null sets a leaf to nothing
                continue
            if cv is None:
                continue
            out[k] = merge(out.get(k), cv, ct)
        return out
    if s == fieldset.LIST and isinstance(config, list):
        return _merge_list(live if isinstance(live, list) else [], config, t)
    return config


def _merge_list(live: list[Any], config: list[Any], t: fieldset.Type) -> list[Any]:
    # Items present on both sides take the configuration's order; items only live keeps stay
    # where they were relative to their neighbours; new items go where the configuration puts them.
    it = t.item()
    l_pes = [fieldset.item_pe(t, x, i, ()) for i, x in enumerate(live)]
    c_pes = [fieldset.item_pe(t, x, i, ()) for i, x in enumerate(config)]
    l_by: dict[Any, Any] = {}
    for pe, x in zip(l_pes, live, strict=True):
        l_by.setdefault(pe, x)
    c_by = dict(zip(c_pes, config, strict=True))
    shared = [pe for pe in c_pes if pe in l_by]
    want = 0                         # index in shared of the next shared item to place
    out: list[Any] = []
    placed: set[Any] = set()
    li = ci = 0
    while li < len(live) or ci < len(config):
        if li < len(live) and ci < len(config):
            lpe = l_pes[li]
            if lpe == c_pes[ci]:
                out.append(merge(l_by[lpe], c_by[lpe], it))
                placed.add(lpe)
                li, ci = li + 1, ci + 1
                want += 1
                continue
            if lpe in c_by and want < len(shared) and shared[want] != lpe:
                li += 1              # a shared item whose turn has not come
                continue
        if li < len(live):
            lpe = l_pes[li]
            if lpe not in c_by:
                out.append(live[li])
                li += 1
                continue
            if lpe in placed:
                li += 1
                continue
        if ci < len(config):
            cpe = c_pes[ci]
            out.append(merge(l_by.get(cpe), c_by[cpe], it))
            placed.add(cpe)
            ci += 1
            if want < len(shared) and shared[want] == cpe:
                want += 1
    return out


# --- pruning fields the applier dropped -----------------------------------------------------

def prune(merged: dict[str, Any], t: fieldset.Type, last: fieldset.FieldSet,
          managed: managedfields.Managed) -> dict[str, Any]:
    """Remove what the applier owned before (last) and nobody, the applier included, owns now."""
    owned = fieldset.EMPTY
    for e in managed.values():
        owned = owned.union(e.fields)
    last = fieldset.ensure_named_fields_are_members(last, t)
    owned = fieldset.ensure_named_fields_are_members(owned, t)
    out = _prune(merged, t, last, owned)
    return {} if out is _GONE else out


def _prune(v: Any, t: fieldset.Type, last: fieldset.FieldSet, owned: fieldset.FieldSet) -> Any:
    s = fieldset.shape(t, v)
    if s == fieldset.MAP:
        out: dict[str, Any] = {}
        removed = False
        for k, cv in v.items():
            pe = (fieldset.FIELD, k)
            if pe in last.members and pe not in owned.members:
                removed = True
                continue
            sub = last.children.get(pe)
            if sub is not None:
                cv2 = _prune(cv, t.child(k) or fieldset.DEDUCED_TYPE, sub, owned.with_prefix(pe))
                if cv2 is _GONE:
                    removed = True
                    continue
                removed = removed or cv2 is not cv
                cv = cv2
            out[k] = cv
        if not removed:
            return v
        return out if out else _GONE
    if s == fieldset.LIST:
        it = t.item()
        items: list[Any] = []
        removed = False
        for i, item in enumerate(v):
            pe = fieldset.item_pe(t, item, i, ())
            if pe in last.members and pe not in owned.members:
                removed = True
                continue
            sub = last.children.get(pe)
            if sub is not None:
                item2 = _prune(item, it, sub, owned.with_prefix(pe))
                if item2 is _GONE:
                    removed = True
                    continue
                removed = removed or item2 is not item
                item = item2
            items.append(item)
        if not removed:
            return v
        return items if items else _GONE
    return v


# --- the client-side-apply upgrade path -------------------------------------------------------

def _allowed_by_last_applied(live: dict[str, Any], api_version: str, t: fieldset.Type) -> fieldset.FieldSet:
    # Fields of the last-applied-configuration that still hold their value in the live object
    # were kubectl's own: apply may take them over without a conflict.
    anns = (live.get("metadata") or {}).get("annotations") or {}
    raw = anns.get(LAST_APPLIED) if isinstance(anns, dict) else None
    if not isinstance(raw, str) or not raw:
        return fieldset.EMPTY
    try:
        last = json.loads(raw)
        if not isinstance(last, dict) or last.get("apiVersion") != api_version:
            return fieldset.EMPTY
        s = fieldset.from_object(last, t, strict=True)
        cmp = fieldset.compare(last, live, t)
    except (ValueError, fieldset.FieldSetError):
        return fieldset.EMPTY
    return s.difference(cmp.modified).difference(cmp.added).difference(cmp.removed)


def _has_last_applied(obj: dict[str, Any]) -> bool:
    anns = (obj.get("metadata") or {}).get("annotations")
    return isinstance(anns, dict) and bool(anns.get(LAST_APPLIED))


def _build_last_applied(applied: dict[str, Any]) -> str:
    obj = copy.deepcopy(applied)
    md = obj.get("metadata")
    if isinstance(md, dict) and isinstance(md.get("annotations"), dict):
        md["annotations"].pop(LAST_APPLIED, None)
    return fieldset.go_json(obj, sort_keys=True) + "\n"   # Go marshals maps with sorted keys


def _set_last_applied(obj: dict[str, Any], value: str) -> dict[str, Any]:
    md = dict(obj.get("metadata") or {})
    anns = dict(md.get("annotations") or {})
    anns[LAST_APPLIED] = value
    if sum(len(k) + len(v) for k, v in anns.items() if isinstance(v, str)) > _TOTAL_ANNOTATION_SIZE_LIMIT:
        del anns[LAST_APPLIED]
    md["annotations"] = anns
    out = dict(obj)
    out["metadata"] = md
    return out
