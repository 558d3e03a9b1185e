"""Drop the fields Go's encoding/json omits (omitempty zero values), as a kube-apiserver round trip does.

kube-apiserver decodes every write into its Go struct and encodes the struct again, so an
emptied `labels: {}`, `finalizers: []`, `data: {}` or `hostNetwork: false` never reaches
the stored object. This walks a built-in object with the Go field table of protodata/types.json
(the one the protobuf decoder uses) and removes, for omitempty fields only: empty maps and
slices, nulls, and zero scalars that are not pointers. Structs are never omitted (Go keeps
`resources: {}`), unknown fields and free-form JSON (RawExtension, JSON) are left untouched,
and CRDs' custom resources (no Go type) are not walked at all.
"""

from __future__ import annotations

import functools
from typing import Any

from pocketkube.api import protobuf

_SCALARS = frozenset({"string", "bool", "int32", "int64", "double", "bytes", "float", "uint32", "uint64"})


@functools.cache
def _fields(message: str) -> dict[str, tuple[str, Any, bool, bool, bool]]:
    """name -> (kind, type, omitempty, pointer, repeated) for one Go struct of the table."""
    spec = protobuf._table()["messages"].get(message) or {}
    out: dict[str, tuple[str, Any, bool, bool, bool]] = {}
    for name, kind, type_, flags in spec.values():
        if "i" in flags or not name:
            continue
        out[name] = (kind, type_, "o" in flags, "p" in flags, "r" in flags)
    return out


def prune(obj: dict[str, Any]) -> None:
    """Remove, in place, the omitempty zero values of a built-in object (unknown kinds are left alone)."""
    if not isinstance(obj, dict):
        return
    message = protobuf.message_for(str(obj.get("apiVersion") or ""), str(obj.get("kind") or ""))
    if message is not None:
        _struct(obj, message, 0)


def _struct(value: dict[str, Any], message: str, depth: int) -> None:
    if depth > protobuf.MAX_DEPTH:
        return
    fields = _fields(message)
    for name in list(value):
        field = fields.get(name)
        if field is None:
            continue
        kind, type_, omitempty, pointer, repeated = field
        v = value[name]
        if omitempty and _empty(kind, v, pointer=pointer, repeated=repeated):
            del value[name]
            continue
        if kind == "msg":
            items = v if repeated and isinstance(v, list) else [v]
            for item in items:
                if isinstance(item, dict):
                    _struct(item, type_, depth + 1)
        elif kind == "map" and isinstance(v, dict) and type_[1] == "msg":
            for item in v.values():
                if isinstance(item, dict):
                    _struct(item, type_[2], depth + 1)


def _empty(kind: str, value: Any, *, pointer: bool, repeated: bool) -> bool:
    if value is None:
        # null decodes to a nil pointer, slice or map; a struct or scalar keeps its zero value.
        return pointer or repeated or kind == "map" or kind in _SCALARS
    if repeated or kind in ("map", "list"):
        return isinstance(value, (list, dict)) and not value
    if pointer:
        return False
    if kind in _SCALARS:
        return value is False or value == "" or (type(value) in (int, float) and value == 0)
    return False
