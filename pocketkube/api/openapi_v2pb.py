"""The /openapi/v2 document as the gnostic `openapi.v2.Document` protobuf that kubectl before 1.29 requires.

client-go asks for `application/com.github.proto-openapi.spec.v2@v1.0+protobuf` and parses nothing
else, so kubectl 1.27/1.28 (`apply`, `explain`) cannot work without these bytes.
"""

from __future__ import annotations

import struct
from typing import Any

import orjson

# What client-go sends in Accept; the response's Content-Type spells the version with a dot because
# `@` is not allowed in a media type and Go's mime parser would reject it.
ACCEPT_TYPE = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf"
CONTENT_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _varint(n: int) -> bytes:
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _len(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _str(field: int, s: str) -> bytes:
    return _len(field, s.encode()) if s else b""


def _bool(field: int, v: bool) -> bytes:
    return _varint(field << 3) + b"\x01" if v else b""


def _int(field: int, v: int) -> bytes:
    return _varint(field << 3) + _varint(int(v)) if v else b""


def _double(field: int, v: float) -> bytes:
    return _varint(field << 3 | 1) + struct.pack("<d", float(v))


def _any(field: int, value: Any) -> bytes:
    # gnostic carries free-form values (vendor extensions, enums, defaults) as YAML text; JSON is YAML.
    return _len(field, _str(2, orjson.dumps(value).decode() + "\n"))


def _extensions(field: int, node: dict[str, Any]) -> bytes:
    return b"".join(_len(field, _str(1, k) + _any(2, v)) for k, v in node.items() if k.startswith("x-"))


_SCHEMA_NUMBERS = (("format", 2, _str), ("title", 3, _str), ("description", 4, _str),
                   ("multipleOf", 6, _double), ("maximum", 7, _double), ("exclusiveMaximum", 8, _bool),
                   ("minimum", 9, _double), ("exclusiveMinimum", 10, _bool), ("maxLength", 11, _int),
                   ("minLength", 12, _int), ("pattern", 13, _str), ("maxItems", 14, _int),
                   ("minItems", 15, _int), ("uniqueItems", 16, _bool), ("maxProperties", 17, _int),
                   ("minProperties", 18, _int))


def schema(node: dict[str, Any]) -> bytes:
    """One JSON schema as an `openapi.v2.Schema` message."""
    parts = [_str(1, node.get("$ref", ""))]
    for key, number, enc in _SCHEMA_NUMBERS:
        if key in node and node[key] is not None:
            parts.append(enc(number, node[key]))
    if "default" in node:
        parts.append(_any(5, node["default"]))
    parts.extend(_str(19, r) for r in node.get("required", ()))
    parts.extend(_any(20, v) for v in node.get("enum", ()))
    extra = node.get("additionalProperties")
    if isinstance(extra, dict):
        parts.append(_len(21, _len(1, schema(extra))))
    elif isinstance(extra, bool):
        parts.append(_len(21, _varint(2 << 3) + (b"\x01" if extra else b"\x00")))
    typ = node.get("type")
    if typ:
        types = typ if isinstance(typ, list) else [typ]
        parts.append(_len(22, b"".join(_str(1, t) for t in types)))
    items = node.get("items")
    if isinstance(items, dict):
        parts.append(_len(23, _len(1, schema(items))))
    elif isinstance(items, list):
        parts.append(_len(23, b"".join(_len(1, schema(i)) for i in items)))
    parts.extend(_len(24, schema(s)) for s in node.get("allOf", ()))
    props = node.get("properties")
    if props:
        parts.append(_len(25, b"".join(_len(1, _str(1, k) + _len(2, schema(v))) for k, v in props.items())))
    if node.get("readOnly"):
        parts.append(_bool(27, True))
    if "example" in node:
        parts.append(_any(30, node["example"]))
    parts.append(_extensions(31, node))
    return b"".join(parts)


def _parameter(p: dict[str, Any]) -> bytes:
    if p.get("in") == "body":
        body = (_str(1, p.get("description", "")) + _str(2, p["name"]) + _str(3, "body")
                + _bool(4, p.get("required", False)) + _len(5, schema(p.get("schema", {}))))
        return _len(1, _len(1, body))
    # Query and path sub-schemas share the leading fields but differ in the numbers after `name`.
    is_path = p.get("in") == "path"
    sub = (_bool(1, p.get("required", False)) + _str(2, p["in"]) + _str(3, p.get("description", ""))
           + _str(4, p["name"]))
    if is_path:
        sub += _str(5, p.get("type", "")) + _bool(19, p.get("uniqueItems", False))
    else:
        sub += _str(6, p.get("type", "")) + _bool(20, p.get("uniqueItems", False))
    return _len(1, _len(2, _len(4 if is_path else 3, sub)))


def _operation(op: dict[str, Any]) -> bytes:
    parts = [b"".join(_str(1, t) for t in op.get("tags", ())), _str(3, op.get("description", "")),
             _str(5, op.get("operationId", ""))]
    parts.extend(_str(6, t) for t in op.get("produces", ()))
    parts.extend(_str(7, t) for t in op.get("consumes", ()))
    parts.extend(_len(8, _parameter(p)) for p in op.get("parameters", ()))
    codes = []
    for code, resp in op.get("responses", {}).items():
        r = _str(1, resp.get("description", ""))
        if "schema" in resp:
            r += _len(2, _len(1, schema(resp["schema"])))
        codes.append(_len(1, _str(1, code) + _len(2, _len(1, r))))
    parts.append(_len(9, b"".join(codes)))
    parts.extend(_str(10, s) for s in op.get("schemes", ()))
    parts.append(_extensions(13, op))
    return b"".join(parts)


_METHODS = {"get": 2, "put": 3, "post": 4, "delete": 5, "options": 6, "head": 7, "patch": 8}


def _path_item(item: dict[str, Any]) -> bytes:
    parts = [_len(_METHODS[m], _operation(op)) for m, op in item.items() if m in _METHODS]
    parts.extend(_len(9, _parameter(p)) for p in item.get("parameters", ()))
    return b"".join(parts)


def encode(doc: dict[str, Any]) -> bytes:
    """A Swagger 2.0 document (as built by `openapi.v2_document`) in gnostic protobuf wire format."""
    info = doc.get("info", {})
    parts = [_str(1, doc.get("swagger", "2.0")),
             _len(2, _str(1, info.get("title", "")) + _str(2, info.get("version", "")))]
    paths = b"".join(_len(2, _str(1, p) + _len(2, _path_item(item))) for p, item in doc.get("paths", {}).items())
    parts.append(_len(8, paths))
    defs = b"".join(_len(1, _str(1, n) + _len(2, schema(s))) for n, s in doc.get("definitions", {}).items())
    parts.append(_len(9, defs))
    for req in doc.get("security", ()):
        named = b"".join(_len(1, _str(1, k) + _len(2, b"".join(_str(1, s) for s in v))) for k, v in req.items())
        parts.append(_len(12, named))
    sec_defs = b""
    for name, sec in doc.get("securityDefinitions", {}).items():
        api_key = (_str(1, sec.get("type", "")) + _str(2, sec.get("name", "")) + _str(3, sec.get("in", ""))
                   + _str(4, sec.get("description", "")))
        sec_defs += _len(1, _str(1, name) + _len(2, _len(2, api_key)))
    if sec_defs:
        parts.append(_len(13, sec_defs))
    return b"".join(parts)
