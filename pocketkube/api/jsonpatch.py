"""RFC 6902 JSON patch (application/json-patch+json) as kube-apiserver applies it, quirks and errors included.

kube-apiserver uses gopkg.in/evanphx/json-patch.v4; this follows that library's behaviour,
not a stricter reading of the RFC: `replace` of a missing object member adds it, `copy`
from a missing member copies null, negative array indexes count from the end, and the
error texts are the library's. Errors map to the responses kube-apiserver sends:

- the body is not a JSON array of objects: 400 BadRequest with the decoder's message;
- more than 10000 operations: 413 RequestEntityTooLarge;
- an operation fails (missing path, failed `test`, bad index, unknown op): 422 Invalid
  with kube's generic message "the server rejected our request due to an error in our
  request" and empty details (kube drops the library's text; we keep it in `.detail`);
- the result is not a JSON object: 422 Invalid on field `patch`, as kube reports a
  patched document it cannot decode.
"""

from __future__ import annotations

import json
from typing import Any

from pocketkube.api import errors, jsonvalue

MAX_OPERATIONS = 10000

class _OpError(Exception):
    pass


def _atoi(s: str) -> int:
    # strconv.Atoi, with its error text.
    body = s[1:] if s[:1] in "+-" else s
    if not body or not body.isascii() or not body.isdigit():
        raise _OpError(f'strconv.Atoi: parsing {json.dumps(s)}: invalid syntax')
    v = int(s)
    if not -(1 << 63) <= v < (1 << 63):
        raise _OpError(f'strconv.Atoi: parsing {json.dumps(s)}: value out of range')
    return v


def _decode_key(k: str) -> str:
    return k.replace("~1", "/").replace("~0", "~")


def _bad_index(idx: int) -> _OpError:
    return _OpError(f"Unable to access invalid index: {idx}: invalid index referenced")


_MISSING = object()


def _in_range(idx: int, size: int) -> int:
    # Negative indexes count from the end; anything outside [-size, size) names no slot.
    if idx >= size or idx < -size:
        raise _bad_index(idx)
    return idx + size if idx < 0 else idx


def _get(con: Any, key: str) -> Any:
    """container.get: a missing object member reads as None; a bad array index is an error."""
    if isinstance(con, dict):
        return con.get(key)
    return con[_in_range(_atoi(key), len(con))]


def _find(doc: Any, path: str) -> tuple[Any, str] | None:
    """findObject: the container holding the last token of path, or None if any step is missing."""
    split = path.split("/")
    if len(split) < 2:
        return None
    cur = doc
    for part in split[1:-1]:
        try:
            nxt = _get(cur, _decode_key(part))
        except _OpError:
            return None
        if not isinstance(nxt, (dict, list)):
            return None
        cur = nxt
    return cur, _decode_key(split[-1])


def _add(con: Any, key: str, val: Any) -> None:
    if isinstance(con, dict):
        con[key] = val
        return
    if key == "-":
        con.append(val)
        return
    try:
        idx = _atoi(key)
    except _OpError as e:
        raise _OpError(f"value was not a proper array index: '{key}': {e}") from None
    con.insert(_in_range(idx, len(con) + 1), val)


def _remove(con: Any, key: str) -> None:
    if isinstance(con, dict):
        if key not in con:
            raise _OpError(f"Unable to remove nonexistent key: {key}: missing value")
        del con[key]
        return
    del con[_in_range(_atoi(key), len(con))]


def _set(con: Any, key: str, val: Any) -> None:
    if isinstance(con, dict):
        con[key] = val
        return
    con[_in_range(_atoi(key), len(con))] = val


def _str_field(op: dict[str, Any], name: str) -> str:
    """Operation.Path/From: the member as a string, or the error the library gives."""
    if name not in op or op[name] is None:
        what = "operation missing path field" if name == "path" else "operation, missing from field"
        raise _OpError(f"{what}: missing value")
    v = op[name]
    if not isinstance(v, str):
        raise _OpError(f"json: cannot unmarshal {jsonvalue.json_type(v)} into Go value of type string")
    return v


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind = op.get("op")
    if not isinstance(kind, str):
        kind = "unknown"
    value = op.get("value")
    if kind == "add":
        try:
            path = _str_field(op, "path")
        except _OpError:
            raise _OpError("add operation failed to decode path: missing value") from None
        found = _find(doc, path)
        if found is None:
            raise _OpError(f'add operation does not apply: doc is missing path: "{path}": missing value')
        try:
            _add(found[0], found[1], jsonvalue.deep_copy(value))
        except _OpError as e:
            raise _OpError(f"error in add for path: '{path}': {e}") from None
    elif kind == "remove":
        try:
            path = _str_field(op, "path")
        except _OpError:
            raise _OpError("remove operation failed to decode path: missing value") from None
        found = _find(doc, path)
        if found is None:
            raise _OpError(f'remove operation does not apply: doc is missing path: "{path}": missing value')
        try:
            _remove(found[0], found[1])
        except _OpError as e:
            raise _OpError(f"error in remove for path: '{path}': {e}") from None
    elif kind == "replace":
        try:
            path = _str_field(op, "path")
        except _OpError as e:
            raise _OpError(f"replace operation failed to decode path: {e}") from None
        if path == "":
            if not isinstance(value, (dict, list)):
                raise _OpError("replace operation value must be object or array: %!w(<nil>)")
            return jsonvalue.deep_copy(value)
        found = _find(doc, path)
        if found is None:
            raise _OpError(f"replace operation does not apply: doc is missing path: {path}: missing value")
        con, key = found
        try:
            _get(con, key)
        except _OpError:
            raise _OpError(f"replace operation does not apply: doc is missing key: {path}: missing value") from None
        _set(con, key, jsonvalue.deep_copy(value))
    elif kind == "move":
        try:
            frm = _str_field(op, "from")
        except _OpError as e:
            raise _OpError(f"move operation failed to decode from: {e}") from None
        found = _find(doc, frm)
        if found is None:
            raise _OpError(f"move operation does not apply: doc is missing from path: {frm}: missing value")
        con, key = found
        try:
            val = _get(con, key)
            _remove(con, key)
        except _OpError as e:
            raise _OpError(f"error in move for path: '{key}': {e}") from None
        try:
            path = _str_field(op, "path")
        except _OpError as e:
            raise _OpError(f"move operation failed to decode path: {e}") from None
        found = _find(doc, path)
        if found is None:
            raise _OpError(f"move operation does not apply: doc is missing destination path: {path}: missing value")
        try:
            _add(found[0], found[1], val)
        except _OpError as e:
            raise _OpError(f"error in move for path: '{path}': {e}") from None
    elif kind == "test":
        try:
            path = _str_field(op, "path")
        except _OpError as e:
            raise _OpError(f"test operation failed to decode path: {e}") from None
        if path == "":
            if jsonvalue.go_equal(doc, value):
                return doc
            raise _OpError(f"testing value {path} failed: test failed")
        found = _find(doc, path)
        if found is None:
            raise _OpError(f"test operation does not apply: is missing path: {path}: missing value")
        try:
            actual = _get(*found)
        except _OpError as e:
            raise _OpError(f"error in test for path: '{path}': {e}") from None
        # A null or missing target passes a test for null (or for no value at all).
        if actual is None and value is None:
            return doc
        if actual is None or "value" not in op or not jsonvalue.go_equal(actual, value):
            raise _OpError(f"testing value {path} failed: test failed")
    elif kind == "copy":
        try:
            frm = _str_field(op, "from")
        except _OpError as e:
            raise _OpError(f"copy operation failed to decode from: {e}") from None
        found = _find(doc, frm)
        if found is None:
            raise _OpError(f"copy operation does not apply: doc is missing from path: {frm}: missing value")
        try:
            val = _get(*found)
        except _OpError as e:
            raise _OpError(f"error in copy for from: '{frm}': {e}") from None
        try:
            path = _str_field(op, "path")
        except _OpError:
            raise _OpError("copy operation failed to decode path: missing value") from None
        found = _find(doc, path)
        if found is None:
            raise _OpError(f"copy operation does not apply: doc is missing destination path: {path}: missing value")
        try:
            _add(found[0], found[1], jsonvalue.deep_copy(val))
        except _OpError as e:
            raise _OpError(f"error while adding value during copy: {e}") from None
    else:
        raise _OpError(f"Unexpected kind: {kind}")
    return doc


def decode_patch(patch: bytes | str | list[Any]) -> list[dict[str, Any]]:
    """jsonpatch.DecodePatch: the operations, or errors.BadRequest; more than 10000 gives 413."""
    ops = jsonvalue.decode_json(patch) if isinstance(patch, (bytes, str)) else patch
    if not isinstance(ops, list):
        raise errors.BadRequest(f"json: cannot unmarshal {jsonvalue.json_type(ops)} "
                                "into Go value of type jsonpatch.Patch")
    for op in ops:
        if not isinstance(op, dict) and op is not None:
            raise errors.BadRequest(f"json: cannot unmarshal {jsonvalue.json_type(op)} "
                                    "into Go value of type jsonpatch.Operation")
    if len(ops) > MAX_OPERATIONS:
        raise errors.RequestEntityTooLarge(
            f"Request entity too large: The allowed maximum operations in a JSON patch is {MAX_OPERATIONS}, "
            f"got {len(ops)}")
    return [op if op is not None else {} for op in ops]


def apply(doc: dict[str, Any], patch: bytes | str | list[Any]) -> dict[str, Any]:
    """Apply a JSON patch to a copy of doc; doc and patch are never modified."""
    if not isinstance(doc, dict):
        raise errors.BadRequest("the object to patch must be a JSON object")
    ops = decode_patch(patch)
    result: Any = jsonvalue.deep_copy(doc)
    for op in ops:
        try:
            result = _apply_op(result, op)
        except _OpError as e:
            raise errors.PatchRejected(str(e)) from None
    if not isinstance(result, dict):
        raise not_an_object(result)
    return result


def not_an_object(result: Any) -> errors.Invalid:
    """The 422 kube-apiserver returns when a patched document does not decode as an object."""
    text = json.dumps(result, separators=(",", ":"), ensure_ascii=False)
    detail = ("couldn't get version/kind; json parse error: json: cannot unmarshal "
              f"{jsonvalue.json_type(result)} into Go value of type struct "
              '{ APIVersion string "json:\\"apiVersion,omitempty\\""; Kind string "json:\\"kind,omitempty\\"" }')
    return errors.Invalid(kind="", group="", name="", causes=[errors.invalid("patch", text, detail)])
