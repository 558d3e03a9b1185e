"""metadata.managedFields bookkeeping: decode, encode, validate, and record non-apply writes.

Hand-written (no Python library does this): it follows kube-apiserver 1.32's field manager
(k8s.io/apimachinery managedfields + structured-merge-diff). Managers are told apart by
manager name + operation + subresource, and for Update also by apiVersion; an Update takes the
fields its write added or changed, those fields leave every other manager, entries left empty
are dropped, at most 10 Update entries are kept (older ones fold into "ancient-changes"), and
entries are sorted as kube sorts them. Timestamps are passed in, never read from a clock.
"""

from __future__ import annotations

import functools
import unicodedata
from datetime import datetime
from typing import Any

from pocketkube.api import errors, fieldset

APPLY, UPDATE = "Apply", "Update"
FIELDS_TYPE = "FieldsV1"
MAX_UPDATE_MANAGERS = 10
ANCIENT_CHANGES = "ancient-changes"
BEFORE_FIRST_APPLY = "before-first-apply"
FIELD_MANAGER_MAX_LENGTH = 128
SUBRESOURCE_MAX_LENGTH = 256

_F = fieldset.FIELD
# Identity and server-set fields nobody owns (kube's stripMeta).
STRIP = fieldset.FieldSet.of(
    ((_F, "apiVersion"),), ((_F, "kind"),), ((_F, "metadata"),),
    *(((_F, "metadata"), (_F, f)) for f in (
        "name", "namespace", "creationTimestamp", "selfLink", "uid", "clusterName",
        "generation", "managedFields", "resourceVersion")),
)


class Entry:
    """One managedFields entry, decoded: who, how, at which version and time, and which fields."""

    __slots__ = ("manager", "operation", "api_version", "time", "subresource", "fields")

    def __init__(self, manager: str, operation: str, api_version: str, fields: fieldset.FieldSet, *,
                 time: str | None = None, subresource: str = "") -> None:
        self.manager = manager
        self.operation = operation
        self.api_version = api_version
        self.time = time
        self.subresource = subresource
        self.fields = fields

    def key(self) -> str:
        return identifier(self.manager, self.operation, self.api_version, self.subresource)

    def encode(self, fields_v1: dict[str, Any] | None = None) -> dict[str, Any]:
        """The entry as JSON; fields_v1, when given, is its fields already as FieldsV1."""
        out: dict[str, Any] = {}
        if self.manager:
            out["manager"] = self.manager
        out["operation"] = self.operation
        out["apiVersion"] = self.api_version
        if self.time:
            out["time"] = self.time
        out["fieldsType"] = FIELDS_TYPE
        out["fieldsV1"] = self.fields.to_json() if fields_v1 is None else fields_v1
        if self.subresource:
            out["subresource"] = self.subresource
        return out


Managed = dict[str, Entry]


@functools.lru_cache(maxsize=1024)  # every write names its manager, and managers are few
def identifier(manager: str, operation: str, api_version: str, subresource: str = "") -> str:
    """kube's manager identifier: the entry as JSON without fields and time (and apiVersion for Apply)."""
    doc: dict[str, str] = {}
    if manager:
        doc["manager"] = manager
    if operation:
        doc["operation"] = operation
    if api_version and operation != APPLY:
        doc["apiVersion"] = api_version
    if subresource:
        doc["subresource"] = subresource
    return fieldset.go_json(doc)


def decode(entries: Any) -> Managed:
    """Decode metadata.managedFields; raises ValueError with kube's wording when one is malformed."""
    managed: Managed = {}
    if entries is None:
        return managed
    if not isinstance(entries, list):
        raise ValueError("managedFields must be a list")
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            raise ValueError(f"managed fields entry {i} must be an object")
        op = e.get("operation")
        if op not in (APPLY, UPDATE):
            raise ValueError("operation must be `Apply` or `Update`")
        api_version = e.get("apiVersion")
        if not isinstance(api_version, str) or not api_version:
            raise ValueError("apiVersion must not be empty")
        ftype = e.get("fieldsType") or ""
        if ftype == "":
            raise ValueError(f"missing fieldsType in managed fields entry {i}")
        if ftype != FIELDS_TYPE:
            raise ValueError(f"invalid fieldsType {fieldset.go_json(ftype)} in managed fields entry {i}")
        manager, sub, time = e.get("manager") or "", e.get("subresource") or "", e.get("time")
        if not isinstance(manager, str) or not isinstance(sub, str) or not isinstance(time, (str, type(None))):
            raise ValueError(f"managed fields entry {i} has a field of the wrong type")
        try:
            fields = fieldset.FieldSet.from_json(e.get("fieldsV1") or {})
        except fieldset.FieldSetError as err:
            raise ValueError(f"error decoding versioned set from entry {i}: {err}") from None
        entry = Entry(manager, op, api_version, fields, time=time, subresource=sub)
        managed[entry.key()] = entry
    return managed


@functools.lru_cache(maxsize=4096)
def _seconds(t: str | None) -> int:
    if not t:
        return 0
    try:
        return int(datetime.fromisoformat(t).timestamp())
    except ValueError:
        return 0


def encode(managed: Managed) -> list[dict[str, Any]]:
    """Encode entries in kube's order: Apply before Update, then oldest first, then by name."""
    entries = sorted(managed.values(), key=lambda e: (
        e.operation, _seconds(e.time), e.manager, e.api_version, e.subresource))
    return [e.encode() for e in entries]


def validate(entries: Any, field: str = "metadata.managedFields") -> list[errors.FieldError]:
    """kube's ValidateManagedFields: operation, fieldsType, manager and subresource of each entry."""
    errs: list[errors.FieldError] = []
    if not isinstance(entries, list):
        return errs
    for i, e in enumerate(entries):
        if not isinstance(e, dict):
            continue
        p = f"{field}[{i}]"
        op = e.get("operation") or ""
        if op not in (APPLY, UPDATE):
            errs.append(errors.invalid(f"{p}.operation", op, "must be `Apply` or `Update`"))
        ftype = e.get("fieldsType") or ""
        if ftype and ftype != FIELDS_TYPE:
            errs.append(errors.invalid(f"{p}.fieldsType", ftype, "must be `FieldsV1`"))
        errs.extend(validate_field_manager(e.get("manager") or "", f"{p}.manager"))
        sub = e.get("subresource") or ""
        if len(sub.encode()) > SUBRESOURCE_MAX_LENGTH:
            errs.append(errors.too_long(f"{p}.subresource", SUBRESOURCE_MAX_LENGTH))
    return errs


def validate_field_manager(manager: str, field: str) -> list[errors.FieldError]:
    """A field manager name: at most 128 bytes, printable characters only."""
    errs: list[errors.FieldError] = []
    if len(manager.encode()) > FIELD_MANAGER_MAX_LENGTH:
        errs.append(errors.too_long(field, FIELD_MANAGER_MAX_LENGTH))
    for i, ch in enumerate(manager):
        if not _printable(ch):
            errs.append(errors.invalid(field, manager, f"invalid character U+{ord(ch):04X} (at position {i})"))
    return errs


def _printable(ch: str) -> bool:
    # Go's unicode.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space.
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


# --- recording writes -------------------------------------------------------------------------

def take(managed: Managed, taken: fieldset.FieldSet, *, skip: str | None = None) -> None:
    """Remove fields from every manager but skip, dropping managers left with nothing."""
    if taken.empty():
        return
    for k in list(managed):
        if k == skip:
            continue
        e = managed[k]
        rest = e.fields.difference(taken)
        if rest.empty():
            del managed[k]
        else:
            e.fields = rest


def record_update(managed: Managed, old: Any, new: Any, t: fieldset.Type, *, manager: str,
                  api_version: str, subresource: str, now: str,
                  reset: fieldset.FieldSet = fieldset.EMPTY) -> None:
    """Give manager (operation Update) the fields this write changed, taking them from others."""
    cmp = fieldset.compare(without_managed_fields(old), without_managed_fields(new), t)
    changed = cmp.changed().recursive_difference(reset)
    take(managed, changed.union(cmp.removed.recursive_difference(reset)))
    mine = changed.difference(STRIP)
    if mine.empty():
        return
    key = identifier(manager, UPDATE, api_version, subresource)
    prev = managed.get(key)
    if prev is not None:
        mine = mine.union(prev.fields)
    managed[key] = Entry(manager, UPDATE, api_version, mine, time=now, subresource=subresource)


def cap_update_managers(managed: Managed, limit: int = MAX_UPDATE_MANAGERS) -> None:
    """Fold the oldest Update entries into one "ancient-changes" entry per apiVersion."""
    updaters = [k for k, e in managed.items() if e.operation == UPDATE]
    if len(updaters) <= limit:
        return
    updaters.sort(key=lambda k: (_seconds(managed[k].time), k))
    first_of_version: dict[str, str] = {}
    count = len(updaters)
    for k in updaters:
        if count <= limit:
            break
        e = managed[k]
        bucket = identifier(ANCIENT_CHANGES, UPDATE, e.api_version)
        first = first_of_version.get(e.api_version)
        if first is None:
            first_of_version[e.api_version] = k
            continue
        if bucket not in managed:
            seed = managed.pop(first)
            managed[bucket] = Entry(ANCIENT_CHANGES, UPDATE, e.api_version, seed.fields, time=seed.time)
        b = managed[bucket]
        b.fields = e.fields.union(b.fields)
        b.time = e.time
        del managed[k]
        count -= 1


def without_managed_fields(obj: Any) -> Any:
    """obj without metadata.managedFields (a shallow copy when it has them)."""
    if not isinstance(obj, dict):
        return obj
    md = obj.get("metadata")
    if not isinstance(md, dict) or "managedFields" not in md:
        return obj
    md = dict(md)
    del md["managedFields"]
    out = dict(obj)
    out["metadata"] = md
    return out


def managed_fields_of(obj: Any) -> Any:
    """obj's metadata.managedFields as stored (None when absent)."""
    md = obj.get("metadata") if isinstance(obj, dict) else None
    return md.get("managedFields") if isinstance(md, dict) else None


def _decode_or_empty(entries: Any) -> Managed:
    try:
        return decode(entries)
    except ValueError:
        return {}


def _live_or_new(old: Any, new: Any, subresource: str) -> Managed:
    # A subresource write cannot set managedFields; an empty list (or one empty entry) resets
    # them; otherwise the request's own entries win when they decode, else the live ones stay.
    if subresource:
        return _decode_or_empty(managed_fields_of(old))
    supplied = managed_fields_of(new)
    if isinstance(supplied, list) and (not supplied or supplied == [{}]):
        return {}
    managed = _decode_or_empty(supplied)
    return managed if managed else _decode_or_empty(managed_fields_of(old))


def update(old: dict[str, Any] | None, new: dict[str, Any], *, manager: str, api_version: str, now: str,
           subresource: str = "", schema: dict[str, Any] | None, resolve: fieldset.Resolve | None,
           reset_fields: fieldset.FieldSet | None = None) -> list[dict[str, Any]]:
    """The metadata.managedFields for new after a create/update/patch (not apply) by manager.

    old is the stored object (None on create). Entries in new are taken as given when they
    decode (so clients may rewrite them), and `[]` clears them; an existing object without
    managedFields stays untracked. reset_fields are the paths the strategy resets for this
    (sub)resource, e.g. prefixes(("status",)); nobody takes ownership under them. Returns []
    when there is nothing to track: the caller then drops metadata.managedFields. As kube does,
    an object that cannot be walked with its schema loses its managedFields rather than failing.
    """
    managed = _live_or_new(old, new, subresource)
    if not managed and old is not None:
        return []
    t = fieldset.root_type(schema, resolve)
    if old is None and not managed:
        created = _created(new, t, manager=manager, api_version=api_version, subresource=subresource, now=now,
                           reset=reset_fields or fieldset.EMPTY)
        if created is not None:
            return created
    try:
        record_update(managed, old, new, t, manager=manager, api_version=api_version,
                      subresource=subresource, now=now, reset=reset_fields or fieldset.EMPTY)
    except fieldset.FieldSetError:
        return []
    cap_update_managers(managed)
    return encode(managed)


def _created(new: dict[str, Any], t: fieldset.Type, *, manager: str, api_version: str, subresource: str, now: str,
             reset: fieldset.FieldSet) -> list[dict[str, Any]] | None:
    """update() for a create that brings no entries of its own: one Update entry owning every field
    set, built as FieldsV1 directly. None when the general path must decide."""
    try:
        doc = fieldset.created_json(without_managed_fields(new), t)
    except fieldset.FieldSetError:
        return []
    if doc is None:
        return None
    fieldset.json_difference(doc, reset, recursive=True)
    fieldset.json_difference(doc, STRIP)
    if not doc:
        return []
    return [Entry(manager, UPDATE, api_version, fieldset.EMPTY, time=now, subresource=subresource).encode(doc)]
