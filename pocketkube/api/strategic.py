"""Strategic merge patch (application/strategic-merge-patch+json) as kube-apiserver applies it to built-in kinds.

Hand-written: no maintained Python library implements strategic merge patch, so this
follows the apply half of k8s.io/apimachinery/pkg/util/strategicpatch (mergeMap,
mergeSlice, $setElementOrder, $retainKeys, $deleteFromPrimitiveList, $patch), including
its orderings and error texts. Patch metadata (x-kubernetes-patch-strategy and
x-kubernetes-patch-merge-key) comes from the kind's OpenAPI v2 definition; a field the
schema does not describe is merged (maps) or replaced (lists) without a strategy.

Errors are mapped as kube-apiserver maps them (interpretStrategicMergePatchError): the
malformed-directive errors are 400 BadRequest; "lists of lists" and "patch content
doesn't match retainKeys list" are 422 Invalid with kube's generic message. Every other
failure (missing merge key, unknown $patch value, mixed list element types, ...) is a
500 "Internal error occurred: ..." in kube; we never answer 500, so those are 400
BadRequest carrying the same message without the "Internal error occurred: " prefix.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

from pocketkube.api import errors, jsonvalue, schemas

DIRECTIVE = "$patch"
RETAIN_KEYS = "$retainKeys"
DELETE_FROM_PRIMITIVE_LIST = "$deleteFromPrimitiveList"
SET_ELEMENT_ORDER = "$setElementOrder"

ERR_BAD_JSON_DOC = "invalid JSON document"
ERR_NO_LIST_OF_LISTS = "lists of lists are not supported"
ERR_PRIMITIVE_LIST = "invalid patch format of primitive list"
ERR_RETAIN_KEYS = "invalid patch format of retainKeys"
ERR_SET_ELEMENT_ORDER = "invalid patch format of setElementOrder list"
ERR_NOT_MATCH_RETAIN_KEYS = "patch content doesn't match retainKeys list"
ERR_UNSUPPORTED = "strategic merge patch format is not supported"

_BAD_REQUEST = {ERR_BAD_JSON_DOC, ERR_PRIMITIVE_LIST, ERR_RETAIN_KEYS, ERR_SET_ELEMENT_ORDER, ERR_UNSUPPORTED}
_REJECTED = {ERR_NO_LIST_OF_LISTS, ERR_NOT_MATCH_RETAIN_KEYS}

Resolver = Callable[[dict[str, Any] | None], dict[str, Any] | None]


class _Error(Exception):
    pass


# --- Go-flavoured rendering for error texts ----------------------------------------------


def _go_float(f: float) -> str:
    if f != f:
        return "NaN"
    if f in (float("inf"), float("-inf")):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if str(f).startswith("-") else "0"
    sign = "-" if f < 0 else ""
    _, digit_tuple, exponent = Decimal(repr(abs(f))).normalize().as_tuple()
    digits = "".join(map(str, digit_tuple))
    nd = len(digits)
    dp = nd + int(exponent)
    exp = dp - 1
    if exp < -4 or exp >= 6:
        mant = digits[0] + ("." + digits[1:] if nd > 1 else "")
        return f"{sign}{mant}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{digits}"
    if dp >= nd:
        return sign + digits + "0" * (dp - nd)
    return f"{sign}{digits[:dp]}.{digits[dp:]}"


def _go_v(v: Any) -> str:
    """fmt's %v of a decoded JSON value."""
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go_v(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_go_v(x) for x in v) + "]"
    return str(v)


def _go_s(v: Any) -> str:
    """fmt's %s of a decoded JSON value (non-strings print as %!s(type=value))."""
    if isinstance(v, str):
        return v
    if v is None:
        return "%!s(<nil>)"
    if isinstance(v, dict):
        return "map[" + " ".join(f"{k}:{_go_s(v[k])}" for k in sorted(v)) + "]"
    if isinstance(v, list):
        return "[" + " ".join(_go_s(x) for x in v) + "]"
    return f"%!s({_go_type(v)}={_go_v(v)})"


def _go_type(v: Any) -> str:
    if v is None:
        return "%!s(<nil>)"
    return {dict: "map[string]interface {}", list: "[]interface {}", str: "string", bool: "bool",
            int: "int64", float: "float64"}.get(type(v), type(v).__name__)


def _bad_arg_type(expected: str, actual: Any) -> _Error:
    return _Error(f"expected a {expected}, but received a {_go_type(actual)}")


def _no_merge_key(m: dict[str, Any], key: str) -> _Error:
    return _Error(f"map: {_go_v(m)} does not contain declared merge key: {key}")


def _bad_patch_type(t: Any, m: dict[str, Any]) -> _Error:
    return _Error(f"unknown patch type: {_go_s(t)} in map: {_go_v(m)}")


_MAP, _SLICE = "map[string]interface {}", "[]interface {}"


def _kind(v: Any) -> str:
    return "nil" if v is None else _go_type(v)


def _contains(items: list[Any], v: Any) -> bool:
    return any(jsonvalue.go_equal(v, x) for x in items)


# --- patch metadata from OpenAPI ---------------------------------------------------------


class _Meta:
    """LookupPatchMeta over an OpenAPI v2 schema node."""

    __slots__ = ("node", "resolve")

    def __init__(self, node: dict[str, Any] | None, resolve: Resolver) -> None:
        self.node = node
        self.resolve = resolve

    def _sub(self, node: Any) -> _Meta:
        return _Meta(self.resolve(node) if isinstance(node, dict) else None, self.resolve)

    def for_struct(self, key: str) -> tuple[_Meta, list[str], str]:
        node = self.node or {}
        props = node.get("properties")
        if isinstance(props, dict) and isinstance(props.get(key), dict):
            prop = props[key]
            strategy = prop.get("x-kubernetes-patch-strategy", "")
            merge_key = prop.get("x-kubernetes-patch-merge-key", "")
            strategies = strategy.split(",") if isinstance(strategy, str) and strategy else []
            return self._sub(prop), strategies, merge_key if isinstance(merge_key, str) else ""
        extra = node.get("additionalProperties")
        return self._sub(extra), [], ""

    def for_slice(self, key: str) -> tuple[_Meta, list[str], str]:
        sub, strategies, merge_key = self.for_struct(key)
        items = (sub.node or {}).get("items")
        return self._sub(items), strategies, merge_key


def _retain_keys_strategy(strategies: list[str]) -> str:
    if len(strategies) <= 1:
        s = strategies[0] if strategies else ""
        return "" if s == "retainKeys" else s
    if len(strategies) == 2 and "retainKeys" in strategies:
        return strategies[1] if strategies[0] == "retainKeys" else strategies[0]
    raise _Error(f"unexpected patch strategy: [{' '.join(strategies)}]")


# --- helpers ------------------------------------------------------------------------------


def _discard_nulls(v: Any) -> None:
    if isinstance(v, dict):
        for k in [k for k, x in v.items() if x is None]:
            del v[k]
        for x in v.values():
            _discard_nulls(x)
    elif isinstance(v, list):
        for x in v:
            _discard_nulls(x)


def _remove_directives(obj: Any) -> tuple[Any, bool]:
    """Drop every map carrying $patch from a value copied in whole; (value, keep)."""
    if isinstance(obj, dict):
        if DIRECTIVE in obj:
            return None, False
        for k in list(obj):
            v, keep = _remove_directives(obj[k])
            if keep:
                obj[k] = v
            else:
                del obj[k]
        return obj, True
    if isinstance(obj, list):
        out = []
        for x in obj:
            v, keep = _remove_directives(x)
            if keep:
                out.append(v)
        return out, True
    return obj, True


def _extract_key(s: str, prefix: str) -> str:
    parts = s.split("/", 1)
    if len(parts) <= 1 or parts[0] != prefix:
        raise _Error(ERR_PRIMITIVE_LIST if prefix == DELETE_FROM_PRIMITIVE_LIST else ERR_SET_ELEMENT_ORDER)
    return parts[1]


def _find_map(items: list[Any], key: str, value: Any) -> tuple[dict[str, Any] | None, int]:
    for i, v in enumerate(items):
        if not isinstance(v, dict):
            raise _Error(f"value for key {i} is not a map")
        if key in v and jsonvalue.go_equal(v[key], value):
            return v, i
    return None, -1


def _element_kind(*slices: list[Any]) -> str:
    prev = None
    for s in slices:
        for v in s:
            k = _kind(v)
            if prev is None:
                prev = k
                if k == _SLICE:
                    raise _Error(ERR_NO_LIST_OF_LISTS)
            elif prev != k:
                raise _Error(f"list element types are not identical: {_go_v(list(slices))}")
    if prev is None:
        raise _Error("no elements in any of the given slices")
    return prev


def _to_delete_split(items: list[Any]) -> tuple[list[Any], list[Any]]:
    keep: list[Any] = []
    delete: list[Any] = []
    for v in items:
        if not isinstance(v, dict):
            raise _bad_arg_type(_MAP, v)
        (delete if DIRECTIVE in v and jsonvalue.go_equal(v[DIRECTIVE], "delete") else keep).append(v)
    return keep, delete


def _merge_key_equal(left: Any, right: Any, merge_key: str) -> bool:
    if not merge_key:
        return jsonvalue.go_equal(left, right)
    for side in (left, right):
        if not isinstance(side, dict):
            raise _bad_arg_type(_MAP, side)
    for side in (left, right):
        if merge_key not in side:
            raise _no_merge_key(side, merge_key)
    return jsonvalue.go_equal(left[merge_key], right[merge_key])


# --- ordering (normalizeElementOrder and Go's sort.SliceStable) -------------------------


def _index(items: list[Any], val: Any, merge_key: str, kind: str) -> int:
    def get(item: Any) -> Any:
        if kind == _MAP:
            return item.get(merge_key) if isinstance(item, dict) else None
        return item

    want = get(val)
    for i, v in enumerate(items):
        if jsonvalue.go_equal(want, get(v)):
            return i
    return -1


def _stable_sort(data: list[Any], less: Callable[[int, int], bool]) -> None:
    """Go's sort.SliceStable, step for step, so inconsistent comparators order items as kube does."""
    def swap(i: int, j: int) -> None:
        data[i], data[j] = data[j], data[i]

    def insertion(a: int, b: int) -> None:
        for i in range(a + 1, b):
            j = i
            while j > a and less(j, j - 1):
                swap(j, j - 1)
                j -= 1

    def swap_range(a: int, b: int, n: int) -> None:
        for i in range(n):
            swap(a + i, b + i)

    def rotate(a: int, m: int, b: int) -> None:
        i, j = m - a, b - m
        while i != j:
            if i > j:
                swap_range(m - i, m, j)
                i -= j
            else:
                swap_range(m - i, m + j - i, i)
                j -= i
        swap_range(m - i, m, i)

    def sym_merge(a: int, m: int, b: int) -> None:
        if m - a == 1:
            i, j = m, b
            while i < j:
                h = (i + j) >> 1
                if less(h, a):
                    i = h + 1
                else:
                    j = h
            for k in range(a, i - 1):
                swap(k, k + 1)
            return
        if b - m == 1:
            i, j = a, m
            while i < j:
                h = (i + j) >> 1
                if not less(m, h):
                    i = h + 1
                else:
                    j = h
            for k in range(m, i, -1):
                swap(k, k - 1)
            return
        mid = (a + b) >> 1
        n = mid + m
        start, r = (n - b, mid) if m > mid else (a, m)
        p = n - 1
        while start < r:
            c = (start + r) >> 1
            if not less(p - c, c):
                start = c + 1
            else:
                r = c
        end = n - start
        if start < m < end:
            rotate(start, m, end)
        if a < start < mid:
            sym_merge(a, start, mid)
        if mid < end < b:
            sym_merge(mid, end, b)

    n, block = len(data), 20
    a, b = 0, block
    while b <= n:
        insertion(a, b)
        a, b = b, b + block
    insertion(a, n)
    while block < n:
        a, b = 0, 2 * block
        while b <= n:
            sym_merge(a, a + block, b)
            a, b = b, b + 2 * block
        if a + block < n:
            sym_merge(a, a + block, n)
        block *= 2


def _normalize_slice_order(to_sort: list[Any], order: list[Any], merge_key: str, kind: str) -> list[Any]:
    to_delete: list[Any] = []
    if kind == _MAP:
        for lst in (to_sort, order):
            for item in lst:
                if not isinstance(item, dict):
                    raise _bad_arg_type(_MAP, item)
                if merge_key not in item:
                    raise _no_merge_key(item, merge_key)
        to_sort, to_delete = _to_delete_split(to_sort)
    to_sort = list(to_sort)

    def less(i: int, j: int) -> bool:
        ii = _index(order, to_sort[i], merge_key, kind)
        if ii >= 0:
            ij = _index(order, to_sort[j], merge_key, kind)
            if ij >= 0:
                return ii < ij
        return True

    _stable_sort(to_sort, less)
    return to_sort + to_delete


def _normalize_element_order(patch: list[Any], server_only: list[Any], patch_order: list[Any],
                             server_order: list[Any], merge_key: str, kind: str) -> list[Any]:
    patch = _normalize_slice_order(patch, patch_order, merge_key, kind)
    server_only = _normalize_slice_order(server_only, server_order, merge_key, kind)
    # Interleave server-only items into the patch items by their place in the live list.
    out: list[Any] = []
    i = j = 0
    while i < len(server_only) or j < len(patch):
        if i >= len(server_only):
            out.append(patch[j])
            j += 1
        elif j >= len(patch):
            out.append(server_only[i])
            i += 1
        else:
            li = _index(server_order, server_only[i], merge_key, kind)
            ri = _index(server_order, patch[j], merge_key, kind)
            if li >= 0 and ri >= 0 and li < ri:
                out.append(server_only[i])
                i += 1
            else:
                out.append(patch[j])
                j += 1
    return out


def _partition(merged: list[Any], by: list[Any], merge_key: str) -> tuple[list[Any], list[Any]]:
    in_patch: list[Any] = []
    server_only: list[Any] = []
    for v in merged:
        if merge_key:
            if not isinstance(v, dict):
                raise _bad_arg_type(_MAP, v)
            if merge_key not in v:
                raise _no_merge_key(v, merge_key)
            found = _find_map(by, merge_key, v[merge_key])[0] is not None
        else:
            found = _contains(by, v)
        (in_patch if found else server_only).append(v)
    return in_patch, server_only


# --- merging ------------------------------------------------------------------------------


def _merge_map(original: dict[str, Any] | None, patch: dict[str, Any], meta: _Meta) -> dict[str, Any]:
    if DIRECTIVE in patch:
        directive = patch[DIRECTIVE]
        if jsonvalue.go_equal(directive, "replace"):
            del patch[DIRECTIVE]
            return patch
        if jsonvalue.go_equal(directive, "delete"):
            return {}
        raise _bad_patch_type(directive, patch)
    if original is None:
        original = {}
    _apply_retain_keys(original, patch)
    _merge_set_element_order(original, patch, meta)
    for key, patch_v in list(patch.items()):
        k, is_delete_list = key, False
        if key.startswith(DELETE_FROM_PRIMITIVE_LIST):
            k, is_delete_list = _extract_key(key, DELETE_FROM_PRIMITIVE_LIST), True
        if patch_v is None:
            # null deletes the field (even for a $deleteFromPrimitiveList key, as kube does).
            original.pop(k, None)
            continue
        if k not in original or _kind(original[k]) != _kind(patch_v):
            if not is_delete_list:
                _discard_nulls(patch_v)
                value, keep = _remove_directives(patch_v)
                if keep:
                    original[k] = value
                else:
                    original.pop(k, None)
            continue
        kind = _kind(original[k])
        if kind == _MAP:
            sub, strategies, _ = meta.for_struct(k)
            strategy = _retain_keys_strategy(strategies)
            original[k] = patch_v if strategy == "replace" else _merge_map(original[k], patch_v, sub)
        elif kind == _SLICE:
            sub, strategies, merge_key = meta.for_slice(k)
            strategy = _retain_keys_strategy(strategies)
            original[k] = _merge_slice_handler(original[k], patch_v, sub, strategy, merge_key, is_delete_list)
        else:
            value, keep = _remove_directives(patch_v)
            if keep:
                original[k] = value
            else:
                del original[k]
    return original


def _apply_retain_keys(original: dict[str, Any], patch: dict[str, Any]) -> None:
    if RETAIN_KEYS not in patch:
        return
    retain = patch.pop(RETAIN_KEYS)
    if not isinstance(retain, list):
        raise _Error(ERR_RETAIN_KEYS)
    names = {v for v in retain if isinstance(v, str)}
    for k, v in patch.items():
        if v is None or k.startswith(DELETE_FROM_PRIMITIVE_LIST) or k.startswith(SET_ELEMENT_ORDER):
            continue
        if k not in names:
            raise _Error(ERR_RETAIN_KEYS)
    for k in [k for k in original if k not in names]:
        del original[k]


def _merge_set_element_order(original: dict[str, Any], patch: dict[str, Any], meta: _Meta) -> None:
    """Apply each $setElementOrder/<field> with its list: merge, then order as the directive says."""
    for key in list(patch):
        if not key.startswith(SET_ELEMENT_ORDER) or key not in patch:
            continue
        order = patch.pop(key)
        if not isinstance(order, list):
            raise _bad_arg_type(_SLICE, order)
        field = _extract_key(key, SET_ELEMENT_ORDER)
        found_original, found_patch = field in original, field in patch
        original_list: list[Any] = []
        patch_list: list[Any] = []
        if found_original:
            if not isinstance(original[field], list):
                raise _bad_arg_type(_SLICE, original[field])
            original_list = original[field]
        if found_patch:
            if not isinstance(patch[field], list):
                raise _bad_arg_type(_SLICE, patch[field])
            patch_list = patch[field]
        sub, strategies, merge_key = meta.for_slice(field)
        strategy = _retain_keys_strategy(strategies)
        _validate_order(patch_list, order, merge_key)
        if found_original and not found_patch:
            merged = original_list
        elif found_patch and not found_original:
            merged = _remove_directives(patch_list)[0]
        elif found_original and found_patch:
            merged = _merge_slice_handler(original_list, patch_list, sub, strategy, merge_key, False)
        else:
            continue
        in_patch, server_only = _partition(merged, order, merge_key)
        kind = _element_kind(original_list, patch_list)
        original[field] = _normalize_element_order(in_patch, server_only, order, original_list, merge_key, kind)
        patch.pop(field, None)


def _validate_order(patch_list: list[Any], order: list[Any], merge_key: str) -> None:
    if not order or not patch_list:
        return
    items = _to_delete_split(patch_list)[0] if merge_key else patch_list
    pi = oi = 0
    while pi < len(items) and oi < len(order):
        if isinstance(items[pi], dict) and DIRECTIVE in items[pi]:
            pi += 1
            continue
        if _merge_key_equal(items[pi], order[oi], merge_key):
            pi += 1
        oi += 1
    if pi < len(items) and oi >= len(order):
        raise _Error(f"The order in patch list:\n{_go_v(patch_list)}\n doesn't match "
                     f"{SET_ELEMENT_ORDER} list:\n{_go_v(order)}\n")


def _merge_slice_handler(original: Any, patch: Any, meta: _Meta, strategy: str, merge_key: str,
                         is_delete_list: bool) -> list[Any]:
    for v in (original, patch):
        if not isinstance(v, list):
            raise _bad_arg_type(_SLICE, v)
    if strategy == "merge" or is_delete_list:
        return _merge_slice(original, patch, meta, merge_key, is_delete_list)
    return patch


def _merge_slice(original: list[Any], patch: list[Any], meta: _Meta, merge_key: str,
                 is_delete_list: bool) -> list[Any]:
    if not original and not patch:
        return original
    kind = _element_kind(original, patch)
    if kind != _MAP:
        if is_delete_list:
            return [v for v in original if not _contains(patch, v)]
        merged = _dedup_scalars(original + patch)
    else:
        if not merge_key:
            raise _Error("cannot merge lists without merge key for struct")
        merged, original, patch = _merge_maps_by_key(original, patch, meta, merge_key)
    in_patch, server_only = _partition(merged, patch, merge_key)
    return _normalize_element_order(in_patch, server_only, patch, original, merge_key, kind)


def _merge_maps_by_key(outer: list[Any], patch: list[Any], meta: _Meta,
                       merge_key: str) -> tuple[list[Any], list[Any], list[Any]]:
    """Merge a list of maps by merge key; returns (merged, live list after deletions, plain patch items).

    kube works on Go slices that share the live list's backing array: deleting shifts the
    later items left in place and appending fills the freed slots. `outer` is updated the
    same way because a $setElementOrder on this list orders by that mutated live list.
    """
    n = live = len(outer)
    plain: list[Any] = []
    replace = False
    for v in patch:
        if DIRECTIVE not in v:
            plain.append(v)
            continue
        directive = v[DIRECTIVE]
        if jsonvalue.go_equal(directive, "delete"):
            if merge_key not in v:
                raise _no_merge_key(v, merge_key)
            while True:
                found, i = _find_map(outer[:live], merge_key, v[merge_key])
                if found is None:
                    break
                outer[i:live - 1] = outer[i + 1:live]
                live -= 1
        elif jsonvalue.go_equal(directive, "replace"):
            replace = True
        elif jsonvalue.go_equal(directive, "merge"):
            raise _Error("merging lists cannot yet be specified in the patch")
        else:
            raise _bad_patch_type(directive, v)
    if replace:
        # The replacement list becomes the live list; nothing is left to merge into it.
        return list(plain), plain, []
    original = outer[:live]
    merged = list(original)
    shared = True
    for v in plain:
        if merge_key not in v:
            raise _no_merge_key(v, merge_key)
        found, i = _find_map(merged, merge_key, v[merge_key])
        if found is not None:
            merged[i] = _merge_map(found, v, meta)
            if shared:
                outer[i] = merged[i]
        else:
            merged.append(v)
            if shared and len(merged) <= n:
                outer[len(merged) - 1] = v
            else:
                # Go reallocates once the backing array is full; later writes miss the live list.
                shared = False
    return merged, original, plain


def _dedup_scalars(s: list[Any]) -> list[Any]:
    # kube's in-place dedup moves the last item into each duplicate's slot; order is fixed later.
    s = list(s)
    length = len(s) - 1
    i = 0
    while i < length:
        j = i + 1
        while j <= length:
            if jsonvalue.go_equal(s[i], s[j]):
                s[j] = s[length]
                s = s[:length]
                length -= 1
                j -= 1
            j += 1
        i += 1
    return s


# --- entry point --------------------------------------------------------------------------


def apply(original: dict[str, Any], patch: dict[str, Any] | bytes | str, schema: dict[str, Any] | None, *,
          resolve: Resolver | None = None) -> dict[str, Any]:
    """Apply a strategic merge patch to a copy of original; neither input is modified.

    schema is the kind's OpenAPI v2 definition (e.g. schemas.definitions()[name]); None means
    the kind has no strategic merge metadata (a custom resource), refused with 400 as kube does.
    resolve follows `$ref` nodes (default: schemas.resolve).
    """
    if schema is None:
        raise errors.BadRequest(ERR_UNSUPPORTED)
    resolver: Resolver = resolve or schemas.resolve
    if not isinstance(original, dict):
        raise errors.BadRequest(ERR_BAD_JSON_DOC)
    if isinstance(patch, (bytes, str)):
        patch = jsonvalue.decode_json(patch)
    if patch is None:
        patch = {}
    if not isinstance(patch, dict):
        raise errors.BadRequest(f"json: cannot unmarshal {jsonvalue.json_type(patch)} "
                                "into Go value of type map[string]interface {}")
    try:
        return _merge_map(jsonvalue.deep_copy(original), jsonvalue.deep_copy(patch),
                          _Meta(resolver(schema) or schema, resolver))
    except _Error as e:
        msg = str(e)
        if msg in _REJECTED:
            raise errors.PatchRejected(msg) from None
        raise errors.BadRequest(msg) from None
    except RecursionError:
        raise errors.BadRequest("strategic merge patch: document nested too deeply") from None
