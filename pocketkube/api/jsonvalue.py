"""Decoded JSON values: Go encoding/json style decoding errors and type names, deep copy, typed equality."""

from __future__ import annotations

import json
from typing import Any

from pocketkube.api import errors

_JSON_TYPES = {dict: "object", list: "array", str: "string", bool: "bool", int: "number", float: "number"}


def json_type(v: Any) -> str:
    """The JSON type name Go's decoder uses in "cannot unmarshal X into ..." messages."""
    return _JSON_TYPES.get(type(v), "null" if v is None else "object")


def decode_json(data: bytes | str) -> Any:
    """Parse a request body, raising errors.BadRequest with Go encoding/json style messages."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise errors.BadRequest("invalid character in JSON input: not UTF-8") from None
    try:
        return json.loads(data)
    except json.JSONDecodeError as e:
        raise errors.BadRequest(go_syntax_error(e)) from None
    except RecursionError:
        raise errors.BadRequest("exceeded max depth") from None


def go_syntax_error(e: json.JSONDecodeError) -> str:
    """Word a Python JSON syntax error the way Go's encoding/json words the same mistake."""
    doc, pos = e.doc, e.pos
    if pos >= len(doc.rstrip()):
        return "unexpected end of JSON input"
    ch = doc[pos]
    shown = "'\\''" if ch == "'" else f"'{ch}'"
    if e.msg.startswith("Extra data"):
        return f"invalid character {shown} after top-level value"
    if e.msg.startswith("Expecting property name"):
        return f"invalid character {shown} looking for beginning of object key string"
    if e.msg.startswith("Expecting ':'"):
        return f"invalid character {shown} after object key"
    if e.msg.startswith("Expecting ','"):
        opener = _innermost_open(doc, pos)
        where = "object key:value pair" if opener == "{" else "array element"
        return f"invalid character {shown} after {where}"
    if e.msg.startswith("Invalid control character"):
        return f"invalid character {shown} in string literal"
    if e.msg.startswith("Invalid \\escape") or e.msg.startswith("Invalid \\uXXXX"):
        return f"invalid character {shown} in string escape code"
    return f"invalid character {shown} looking for beginning of value"


def _innermost_open(doc: str, pos: int) -> str:
    stack: list[str] = []
    in_str = esc = False
    for ch in doc[:pos]:
        if in_str:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                in_str = False
        elif ch == '"':
            in_str = True
        elif ch in "[{":
            stack.append(ch)
        elif ch in "]}" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def deep_copy(v: Any) -> Any:
    """A copy of a decoded JSON value sharing no dict or list with it."""
    if isinstance(v, dict):
        return {k: deep_copy(x) for k, x in v.items()}
    if isinstance(v, list):
        return [deep_copy(x) for x in v]
    return v


def go_equal(a: Any, b: Any) -> bool:
    """Go's == on decoded interface{} values: same dynamic type and equal value, so 1 != 1.0 and true != 1."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(go_equal(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(go_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)
