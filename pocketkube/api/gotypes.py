"""Go's JSON type errors for built-in kinds: the first field whose JSON type the kind's Go struct cannot hold."""

from __future__ import annotations

from typing import Any

from pocketkube.api import schemas

_INT_RANGES = {"int32": (-(2 ** 31), 2 ** 31 - 1), "int64": (-(2 ** 63), 2 ** 63 - 1)}
_REF_PREFIX = "#/definitions/"


class _Node:
    """One Go type: a scalar ("string", "int32", ...), a struct, a slice or a map; None children accept anything."""

    __slots__ = ("kind", "go", "struct", "fields", "elem")

    def __init__(self, kind: str, go: str) -> None:
        self.kind = kind          # "scalar", "struct", "slice" or "map"
        self.go = go              # the type as Go prints it: int32, []v1.Container, map[string]string, v1.ObjectMeta
        self.struct = ""          # a struct's bare name, as Go names it in "Go struct field ObjectMeta.metadata..."
        self.fields: dict[str, _Node | None] = {}
        self.elem: _Node | None = None


_cache: dict[str, _Node | None] = {}


def _scalar(schema: dict[str, Any]) -> _Node | None:
    t, fmt = schema.get("type"), schema.get("format")
    if t == "string":
        return _Node("scalar", "[]uint8" if fmt == "byte" else "string")
    if t == "integer":
        return _Node("scalar", "int32" if fmt == "int32" else "int64")
    if t == "number":
        return _Node("scalar", "float64")
    if t == "boolean":
        return _Node("scalar", "bool")
    return None


def _ref(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if ref is None:
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            ref = all_of[0].get("$ref")
    return ref[len(_REF_PREFIX):] if isinstance(ref, str) and ref.startswith(_REF_PREFIX) else None


def _named(name: str) -> _Node | None:
    if name in _cache:
        return _cache[name]
    definition = schemas.definitions().get(name)
    props = definition.get("properties") if isinstance(definition, dict) else None
    if not isinstance(definition, dict) or not isinstance(props, dict) \
            or definition.get("x-kubernetes-preserve-unknown-fields"):
        # Time, Quantity, IntOrString, RawExtension, ...: types with their own decoding, left to validation
        _cache[name] = None
        return None
    pkg, _, bare = name.rpartition(".")
    node = _Node("struct", f"{pkg.rpartition('.')[2]}.{bare}")
    node.struct = bare
    _cache[name] = node   # before the fields: definitions may refer to themselves
    node.fields = {k: _compile(v) for k, v in props.items() if isinstance(v, dict)}
    return node


def _compile(schema: dict[str, Any]) -> _Node | None:
    ref = _ref(schema)
    if ref is not None:
        return _named(ref)
    t = schema.get("type")
    if t == "array":
        items = schema.get("items")
        elem = _compile(items) if isinstance(items, dict) else None
        node = _Node("slice", "[]" + (elem.go if elem else "interface {}"))
        node.elem = elem
        return node
    if t == "object":
        values = schema.get("additionalProperties")
        if not isinstance(values, dict):
            return None
        elem = _compile(values)
        node = _Node("map", "map[string]" + (elem.go if elem else "interface {}"))
        node.elem = elem
        return node
    return _scalar(schema)


def _json_kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, (int, float)):
        return "number"
    return "array" if isinstance(value, list) else "object"


def _scalar_error(node: _Node, value: Any) -> str | None:
    """What Go's decoder says it found, or None when value fits the scalar type."""
    go = node.go
    if go in ("string", "[]uint8"):
        return None if isinstance(value, str) else _json_kind(value)
    if go == "bool":
        return None if isinstance(value, bool) else _json_kind(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return _json_kind(value)
    if go == "float64":
        return None
    low, high = _INT_RANGES[go]
    if isinstance(value, float) or not low <= value <= high:
        return f"number {value}"   # Go names the literal it could not fit
    return None


class _Found(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _walk(node: _Node, value: Any, path: list[str], struct: str) -> None:
    if value is None:
        return   # null leaves Go's zero value
    found: str | None
    if node.kind == "scalar":
        found = _scalar_error(node, value)
    elif node.kind == "struct":
        found = None if isinstance(value, dict) else _json_kind(value)
    elif node.kind == "slice":
        found = None if isinstance(value, list) else _json_kind(value)
    else:
        found = None if isinstance(value, dict) else _json_kind(value)
    if found is not None:
        where = f"Go struct field {struct}.{'.'.join(path)}" if struct else "Go value"
        raise _Found(f"json: cannot unmarshal {found} into {where} of type {node.go}")
    if node.kind == "struct":
        for key, child in value.items():
            sub = node.fields.get(key)
            if sub is not None:
                path.append(key)
                _walk(sub, child, path, node.struct)
                path.pop()
    elif node.elem is not None:
        # Go's error context names struct fields only: no list indexes or map keys in the path
        for child in (value if node.kind == "slice" else value.values()):
            _walk(node.elem, child, path, struct)


def type_error(obj: dict[str, Any], group: str, version: str, kind: str) -> str | None:
    """Go's UnmarshalTypeError text for the first ill-typed field of a built-in object, or None if all fit."""
    name = schemas.definition_name(group, version, kind)
    return definition_type_error(obj, name) if name else None


def definition_type_error(obj: dict[str, Any], definition: str) -> str | None:
    """type_error for an OpenAPI definition named outright (DeleteOptions, which no resource serves)."""
    node = _named(definition)
    if node is None:
        return None
    try:
        _walk(node, obj, [], "")
    except _Found as e:
        return e.message
    return None
