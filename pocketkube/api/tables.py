"""Server-side printing: objects as a meta.k8s.io Table, with kube-apiserver 1.32's columns and cells."""

from __future__ import annotations

import datetime
import json
from typing import Any

from pocketkube.api import errors, jsonpath, tables_apps, tables_core, tables_other
from pocketkube.api import tables_docs as docs
from pocketkube.api import tables_fmt as fmt

Obj = dict[str, Any]

PRINTERS: dict[tuple[str, str], fmt.Printer] = {
    **tables_core.PRINTERS, **tables_apps.PRINTERS, **tables_other.PRINTERS,
}

# rest.defaultTableConvertor: kinds without a printer (Role, ClusterRole, LimitRange,
# CustomResourceDefinition, ...) get the name and the creation time as a timestamp.
DEFAULT_COLUMNS = [
    fmt.col("Name", "string", docs.META_NAME, format_="name"),
    fmt.col("Created At", "date", docs.META_CREATED),
]

# The column apiextensions adds to a custom resource version without additionalPrinterColumns.
CRD_DEFAULT_COLUMNS = [{"name": "Age", "type": "date", "description": docs.META_CREATED,
                        "jsonPath": ".metadata.creationTimestamp"}]

_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
               "ownerReferences", "finalizers", "managedFields")
_INCLUDE = ("None", "Metadata", "Object", "")


def human_duration(delta: datetime.timedelta) -> str:
    """duration.HumanDuration, the age format of every table ("5s", "3m4s", "2d3h", "400d")."""
    return fmt.human_duration((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds)


_RANK = {k: i for i, k in enumerate(_META_ORDER)}
_CANONICAL: dict[tuple[str, ...], bool] = {}


def _is_canonical(keys: tuple[str, ...]) -> bool:
    # Objects from the store usually carry ObjectMeta's fields in struct order already.
    ok = _CANONICAL.get(keys)
    if ok is None:
        ranks = [_RANK.get(k, -1) for k in keys]
        ok = -1 not in ranks and ranks == sorted(ranks) and "creationTimestamp" in keys
        if len(_CANONICAL) < 4096:
            _CANONICAL[keys] = ok
    return ok


def _meta(md: Obj) -> Obj:
    if _is_canonical(tuple(md)) and all(md.values()):
        return dict(md)
    # Empty fields are omitted (omitempty) and keys follow the ObjectMeta struct's order.
    out = {k: v for k in _META_ORDER if (v := md.get(k)) or v is False}
    if "creationTimestamp" not in out:
        # Go's metav1.Time ignores omitempty: an unset time is written as null.
        out = {k: md.get(k) for k in _META_ORDER if k in out or k == "creationTimestamp"}
        out["creationTimestamp"] = None
    return out


def partial_metadata(obj: Obj, *, api_version: str = "meta.k8s.io/v1") -> Obj:
    """The PartialObjectMetadata a row carries for includeObject=Metadata, fields in ObjectMeta order."""
    return {"kind": "PartialObjectMetadata", "apiVersion": api_version, "metadata": _meta(obj.get("metadata") or {})}


# --- custom resources --------------------------------------------------------------------------


def _crd_columns(printer_columns: list[Obj]) -> list[Obj]:
    cols = [fmt.NAME]
    for c in printer_columns or CRD_DEFAULT_COLUMNS:
        path = c.get("jsonPath", "")
        cols.append(fmt.col(c.get("name", ""), c.get("type", ""),
                            c.get("description") or f"Custom resource definition column (in JSONPath format): {path}",
                            format_=c.get("format") or "", priority=fmt.as_int(c.get("priority"))))
    return cols


def _crd_cell(type_: str, value: Any, now: datetime.datetime) -> Any:
    if value is None:
        return None
    if type_ == "integer":
        if isinstance(value, bool):
            return None
        if isinstance(value, (int, float)):
            return int(value)
    elif type_ == "number":
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float):
            # Go writes float64(2) as 2; keep integral numbers integral for the encoder.
            return int(value) if value.is_integer() else value
    elif type_ == "boolean":
        if isinstance(value, bool):
            return value
    elif type_ == "date":
        if isinstance(value, str):
            t = fmt.parse_time(value)
            if t is None:
                return "<invalid>"
            if t.year == 1:
                return fmt.UNKNOWN
            return fmt.human_duration(fmt.span_us(now, t))
    return None


def _crd_printer(printer_columns: list[Obj]) -> fmt.Printer:
    specs = printer_columns or CRD_DEFAULT_COLUMNS
    compiled = []
    for c in specs:
        try:
            compiled.append((c.get("type", ""), jsonpath.parse(c.get("jsonPath", ""))))
        except jsonpath.JSONPathError:
            raise errors.InternalError(f'unrecognized column definition "{c.get("jsonPath", "")}"') from None

    def cells(obj: Obj, now: datetime.datetime) -> list[Any]:
        row: list[Any] = [fmt.name(obj)]
        for type_, path in compiled:
            try:
                results = path.find(obj)
            except jsonpath.JSONPathError:
                results = []
            if not results or not results[0]:
                row.append(None)
                continue
            value = results[0][0]
            if type_ == "string":
                # client-go prints a missing value as "<no value>", objects as JSON.
                row.append("<no value>" if value is None else jsonpath.to_text(value))
            else:
                row.append(_crd_cell(type_, value, now))
        return row

    return fmt.Printer(_crd_columns(printer_columns), cells)


# --- default table -------------------------------------------------------------------------------


def _rfc3339_utc(value: Any) -> str:
    t = fmt.parse_time(value)
    if t is None:
        return "0001-01-01T00:00:00Z"
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if t.year > 1 else "0001-01-01T00:00:00Z"


DEFAULT = fmt.Printer(DEFAULT_COLUMNS, lambda o, now: [
    fmt.name(o), _rfc3339_utc((o.get("metadata") or {}).get("creationTimestamp"))])


def printer_for(kind: str, group: str, printer_columns: list[Obj] | None = None) -> fmt.Printer:
    """The printer serving a kind: the CRD's columns, a built-in printer, or the default table."""
    if printer_columns is not None:
        return _crd_printer(printer_columns)
    return PRINTERS.get((group, kind), DEFAULT)


def column_definitions(kind: str, group: str, printer_columns: list[Obj] | None = None) -> list[Obj]:
    """The columnDefinitions of a kind's table (wide columns included, as the server always sends them)."""
    return [dict(c) for c in printer_for(kind, group, printer_columns).columns]


def table(kind: str, group: str, objects: list[Obj], *, now: datetime.datetime,
          include_object: str = "Metadata", resource_version: str = "", continue_token: str = "",
          remaining: int | None = None, printer_columns: list[Obj] | None = None,
          no_headers: bool = False, api_version: str = "meta.k8s.io/v1") -> Obj:
    """A meta.k8s.io Table of objects, the body kube-apiserver answers `as=Table` requests with."""
    if include_object not in _INCLUDE:
        raise errors.BadRequest(f"unrecognized includeObject value: {json.dumps(include_object)}")
    if now.tzinfo is None:
        now = now.replace(tzinfo=datetime.UTC)
    printer = printer_for(kind, group, printer_columns)
    cells_of = printer.cells
    conditions_of = printer.conditions
    sort_key = tables_other.SORT_KEYS.get((group, kind)) if printer_columns is None else None
    if sort_key is not None:
        objects = sorted(objects, key=sort_key)

    rows: list[Obj] = []
    append = rows.append
    for obj in objects:
        try:
            row: Obj = {"cells": cells_of(obj, now)}
            conditions = conditions_of(obj) if conditions_of is not None else None
        except (AttributeError, TypeError, ValueError, KeyError) as e:
            # Stored objects are validated, so a malformed one is a server bug: answer 500, not a crash.
            what = fmt.dig(obj, "metadata", "name") or ""
            raise errors.InternalError(f'unable to print {kind} "{what}" as a table: {e}') from e
        if conditions:
            row["conditions"] = [dict(c) for c in conditions]
        if include_object == "Object":
            row["object"] = obj
        elif include_object == "None":
            row["object"] = None
        else:
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": api_version,
                             "metadata": _meta(obj.get("metadata") or {})}
        append(row)
    # The default convertor never allocates its row slice, so an empty list encodes as null.
    body_rows = None if not rows and printer is DEFAULT else rows

    meta: Obj = {}
    if resource_version:
        meta["resourceVersion"] = resource_version
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    return {
        "kind": "Table",
        "apiVersion": api_version,
        "metadata": meta,
        "columnDefinitions": None if no_headers else [dict(c) for c in printer.columns],
        "rows": body_rows,
    }
