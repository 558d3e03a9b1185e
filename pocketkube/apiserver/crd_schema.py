"""Structural schemas of custom resources: validation (kube-openapi wording), pruning, null handling and defaults."""

from __future__ import annotations

import base64
import copy
import datetime
import decimal
import functools
import ipaddress
import logging
import math
import re
import uuid
from typing import Any

import orjson

from pocketkube.api import errors

log = logging.getLogger(__name__)

FE = errors.FieldError
_MISSING = object()

# ObjectMeta fields; anything else under an object's metadata is dropped like kube's decoder does.
OBJECT_META_FIELDS = frozenset((
    "name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
    "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations",
    "ownerReferences", "finalizers", "managedFields"))
_META_FIELDS = ("apiVersion", "kind", "metadata")


# --- Go-style value printing ------------------------------------------------------------------

def go_float(x: float) -> str:
    """fmt's %v of a float64: shortest digits, %e form when the exponent is below -4 or at least 6."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    if x == 0:
        return "0"
    _, digits, exponent = decimal.Decimal(repr(abs(x))).normalize().as_tuple()
    assert isinstance(exponent, int)
    ds = "".join(map(str, digits))
    exp = len(ds) + exponent - 1
    sign = "-" if x < 0 else ""
    if -4 <= exp < 6:
        if exponent >= 0:
            return sign + ds + "0" * exponent
        point = len(ds) + exponent
        if point > 0:
            return sign + ds[:point] + "." + ds[point:]
        return sign + "0." + "0" * -point + ds
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{sign}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


def go_number(v: Any) -> str:
    if isinstance(v, float):
        return go_float(v)
    return str(v)


def go_repr(v: Any) -> str:
    """%#v of a decoded JSON value, as field errors print compound values."""
    if v is None:
        return "interface {}(nil)"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return go_number(v)
    if isinstance(v, str):
        return orjson.dumps(v).decode()
    if isinstance(v, list):
        return "[]interface {}{" + ", ".join(go_repr(x) for x in v) + "}"
    if isinstance(v, dict):
        return "map[string]interface {}{" + ", ".join(
            f"{orjson.dumps(k).decode()}:{go_repr(v[k])}" for k in sorted(v)) + "}"
    return str(v)


def _value(v: Any) -> Any:
    """A field error value: scalars as they are, compound values pre-rendered the Go way."""
    if isinstance(v, float) and not isinstance(v, bool):
        return "raw:" + go_float(v)
    if isinstance(v, (dict, list)):
        return "raw:" + go_repr(v)
    return v


# --- schema helpers ----------------------------------------------------------------------------

def _types(s: dict[str, Any]) -> list[str]:
    if s.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    t = s.get("type")
    return [t] if isinstance(t, str) and t else []


def json_type(v: Any) -> str:
    """The JSON type name kube-openapi infers for a decoded value."""
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "null" if v is None else type(v).__name__


def _props(s: dict[str, Any] | None) -> dict[str, Any]:
    p = s.get("properties") if isinstance(s, dict) else None
    return p if isinstance(p, dict) else {}


def _additional(s: dict[str, Any] | None) -> dict[str, Any] | None:
    ap = s.get("additionalProperties") if isinstance(s, dict) else None
    return ap if isinstance(ap, dict) else None


def _items(s: dict[str, Any] | None) -> dict[str, Any] | None:
    it = s.get("items") if isinstance(s, dict) else None
    return it if isinstance(it, dict) else None


def _child(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@functools.lru_cache(maxsize=1024)
def _regex(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


# --- formats (the subset of go-openapi strfmt kube keeps) -------------------------------------

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}:?\d{2})?$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_HOSTNAME = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$")
_MAC = re.compile(r"^([0-9A-Fa-f]{2}[:-]){5}[0-9A-Fa-f]{2}$")
_HEXCOLOR = re.compile(r"^#([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")
_RGBCOLOR = re.compile(r"^rgb\(\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*,\s*\d{1,3}%?\s*\)$")
_DURATION = re.compile(r"^(\s*[-+]?\d+(\.\d+)?\s*(ns|us|µs|ms|s|m|h|d|w|[a-z]+)\s*)+$")
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
_BSON = re.compile(r"^[0-9a-fA-F]{24}$")
_URI = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:\S*$|^/\S*$")


def _ip(v: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(v).version == version
    except ValueError:
        return False


def _cidr(v: str) -> bool:
    try:
        ipaddress.ip_network(v, strict=False)
        return "/" in v
    except ValueError:
        return False


def _date_time(v: str) -> bool:
    if not _DATE_TIME.match(v):
        return False
    try:
        datetime.date.fromisoformat(v[:10])
    except ValueError:
        return False
    return True


def _uuid_v(n: int) -> Any:
    def check(v: str) -> bool:
        if not _UUID.match(v):
            return False
        try:
            return uuid.UUID(v).version == n
        except ValueError:
            return False
    return check


def _b64(v: str) -> bool:
    try:
        base64.b64decode(v, validate=True)
        return True
    except ValueError:
        return False


FORMATS: dict[str, Any] = {
    "date-time": _date_time, "datetime": _date_time,
    "date": lambda v: bool(_DATE.match(v)) and _date_time(v + "T00:00:00Z"),
    "email": lambda v: bool(_EMAIL.match(v)),
    "hostname": lambda v: len(v) <= 255 and bool(_HOSTNAME.match(v)),
    "ipv4": lambda v: _ip(v, 4), "ipv6": lambda v: _ip(v, 6), "cidr": _cidr,
    "mac": lambda v: bool(_MAC.match(v)),
    "uuid": lambda v: bool(_UUID.match(v)), "uuid3": _uuid_v(3), "uuid4": _uuid_v(4), "uuid5": _uuid_v(5),
    "byte": _b64, "bsonobjectid": lambda v: bool(_BSON.match(v)),
    "hexcolor": lambda v: bool(_HEXCOLOR.match(v)), "rgbcolor": lambda v: bool(_RGBCOLOR.match(v)),
    "duration": lambda v: bool(_DURATION.match(v)),
    "uri": lambda v: bool(_URI.match(v)),
}


# --- validation ---------------------------------------------------------------------------------

def _type_error(path: str, types: list[str], actual: str) -> FE:
    return FE("TypeInvalid", path, value=actual, has_value=True,
              detail=f'{path} in body must be of type {",".join(types)}: "{actual}"')


def _invalid(path: str, value: Any, detail: str) -> FE:
    return FE("Invalid", path, value=_value(value), detail=detail, has_value=True)


class _Walker:
    """kube-openapi's SchemaValidator, producing kube's field errors, with update ratcheting."""

    def __init__(self) -> None:
        self.errs: list[FE] = []

    def node(self, v: Any, s: dict[str, Any] | None, path: str, old: Any = _MISSING) -> None:
        if not isinstance(s, dict):
            return
        if old is not _MISSING and old == v and json_type(old) == json_type(v):
            return  # CRDValidationRatcheting: an unchanged value keeps passing
        types = _types(s)
        if v is None:
            if types and not s.get("nullable"):
                self.errs.append(_type_error(path, types, "null"))
            self._enum(v, s, path)
            return
        actual = json_type(v)
        ok = (not types or actual in types
              or (actual == "number" and "integer" in types and float(v).is_integer())
              or (actual == "integer" and "number" in types))
        if not ok:
            self.errs.append(_type_error(path, types, actual))
        self._combinators(v, s, path)
        if isinstance(v, str):
            self._string(v, s, path)
        elif actual in ("integer", "number"):
            self._number(v, s, path)
        elif isinstance(v, list):
            self._array(v, s, path, old)
        self._enum(v, s, path)
        if isinstance(v, dict):
            self._object(v, s, path, old)

    def _sub(self, v: Any, s: Any, path: str) -> list[FE]:
        w = _Walker()
        w.node(v, s, path)
        return w.errs

    def _combinators(self, v: Any, s: dict[str, Any], path: str) -> None:
        any_of = [x for x in s.get("anyOf") or () if isinstance(x, dict)]
        if any_of:
            results: list[list[FE]] = [self._sub(v, x, path) for x in any_of]
            if all(results):
                self.errs.append(FE("Invalid", "", value="", has_value=True,
                                    detail=f'"{path}" must validate at least one schema (anyOf)'))
                best: list[FE] = min(results, key=len)
                self.errs.extend(best)
        one_of = [x for x in s.get("oneOf") or () if isinstance(x, dict)]
        if one_of:
            one_results: list[list[FE]] = [self._sub(v, x, path) for x in one_of]
            valid = sum(1 for r in one_results if not r)
            if valid != 1:
                more = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
                self.errs.append(FE("Invalid", "", value="", has_value=True,
                                    detail=f'"{path}" must validate one and only one schema (oneOf). {more}'))
                if valid == 0:
                    best_one: list[FE] = min(one_results, key=len)
                    self.errs.extend(best_one)
        all_of = [x for x in s.get("allOf") or () if isinstance(x, dict)]
        if all_of:
            failed = [r for r in (self._sub(v, x, path) for x in all_of) if r]
            for r in failed:
                self.errs.extend(r)
            if failed:
                extra = ". None validated" if len(failed) == len(all_of) else ""
                self.errs.append(FE("Invalid", "", value="", has_value=True,
                                    detail=f'"{path}" must validate all the schemas (allOf){extra}'))
        if isinstance(s.get("not"), dict) and not self._sub(v, s["not"], path):
            self.errs.append(FE("Invalid", "", value="", has_value=True,
                                detail=f'"{path}" must not validate the schema (not)'))

    def _string(self, v: str, s: dict[str, Any], path: str) -> None:
        n = len(v)
        max_len = s.get("maxLength")
        if isinstance(max_len, int) and n > max_len:
            unit = "byte" if max_len == 1 else "bytes"
            self.errs.append(FE("TooLong", path, value=v, detail=f"may not be more than {max_len} {unit}"))
        min_len = s.get("minLength")
        if isinstance(min_len, int) and n < min_len:
            self.errs.append(_invalid(path, v, f"{path} in body should be at least {min_len} chars long"))
        pattern = s.get("pattern")
        if isinstance(pattern, str) and pattern:
            rx = _regex(pattern)
            if rx is not None and not rx.search(v):
                self.errs.append(_invalid(path, v, f"{path} in body should match '{pattern}'"))
        fmt = s.get("format")
        check = FORMATS.get(fmt) if isinstance(fmt, str) else None
        if check is not None and not check(v):
            self.errs.append(FE("TypeInvalid", path, value=v, has_value=True,
                                detail=f"{path} in body must be of type {fmt}: {orjson.dumps(v).decode()}"))

    def _number(self, v: int | float, s: dict[str, Any], path: str) -> None:
        mult = s.get("multipleOf")
        if isinstance(mult, (int, float)) and not isinstance(mult, bool) and mult > 0:
            q = v / mult
            if not math.isclose(q, round(q), rel_tol=0, abs_tol=1e-9):
                self.errs.append(_invalid(path, v, f"{path} in body should be a multiple of {go_number(mult)}"))
        mx = s.get("maximum")
        if isinstance(mx, (int, float)) and not isinstance(mx, bool):
            exclusive = bool(s.get("exclusiveMaximum"))
            if v > mx or (exclusive and v == mx):
                rel = "less than" if exclusive else "less than or equal to"
                self.errs.append(_invalid(path, v, f"{path} in body should be {rel} {go_number(mx)}"))
        mn = s.get("minimum")
        if isinstance(mn, (int, float)) and not isinstance(mn, bool):
            exclusive = bool(s.get("exclusiveMinimum"))
            if v < mn or (exclusive and v == mn):
                rel = "greater than" if exclusive else "greater than or equal to"
                self.errs.append(_invalid(path, v, f"{path} in body should be {rel} {go_number(mn)}"))

    def _array(self, v: list[Any], s: dict[str, Any], path: str, old: Any) -> None:
        items = _items(s)
        if items is not None:
            correlate = _list_correlator(s, old)
            for i, x in enumerate(v):
                self.node(x, items, f"{path}[{i}]", correlate(x))
        n = len(v)
        mn = s.get("minItems")
        if isinstance(mn, int) and n < mn:
            self.errs.append(_invalid(path, n, f"{path} in body should have at least {mn} items"))
        mx = s.get("maxItems")
        if isinstance(mx, int) and n > mx:
            self.errs.append(FE("TooMany", path, value=n, has_value=True,
                                detail=f"must have at most {mx} items"))

    def _enum(self, v: Any, s: dict[str, Any], path: str) -> None:
        enum = s.get("enum")
        if not isinstance(enum, list) or not enum:
            return
        for e in enum:
            if e == v and json_type(e) in (json_type(v), "integer", "number") and \
                    (json_type(v) in ("integer", "number")) == (json_type(e) in ("integer", "number")):
                return
        values = [e if isinstance(e, str) else orjson.dumps(e).decode() for e in enum]
        self.errs.append(errors.unsupported(path, _value(v), values))

    def _object(self, v: dict[str, Any], s: dict[str, Any], path: str, old: Any) -> None:
        n = len(v)
        mn = s.get("minProperties")
        if isinstance(mn, int) and n < mn:
            self.errs.append(_invalid(path, n, f"{path} in body should have at least {mn} properties"))
            return
        mx = s.get("maxProperties")
        if isinstance(mx, int) and n > mx:
            self.errs.append(FE("TooMany", path, value=n, has_value=True, detail=f"must have at most {mx} items"))
            return
        props = _props(s)
        ap = s.get("additionalProperties")
        old_map = old if isinstance(old, dict) else {}
        if ap is False:
            for k in v:
                if k not in props:
                    self.errs.append(_invalid(_child(path, k), k, f"{path}.{k} in body is a forbidden property"))
        for k, ps in props.items():
            if k in v:
                self.node(v[k], ps, _child(path, k), old_map.get(k, _MISSING))
        for k in s.get("required") or ():
            if isinstance(k, str) and k not in v:
                self.errs.append(errors.required(_child(path, k)))
        if isinstance(ap, dict):
            for k, x in v.items():
                if k not in props:
                    self.node(x, ap, f"{path}.{k}", old_map.get(k, _MISSING))


def _list_correlator(s: dict[str, Any], old: Any) -> Any:
    """Which old element an array element is compared with for ratcheting (map and set lists only)."""
    if not isinstance(old, list):
        return lambda x: _MISSING
    kind = s.get("x-kubernetes-list-type")
    if kind == "set":
        return lambda x: x if x in old else _MISSING
    keys = s.get("x-kubernetes-list-map-keys")
    if kind == "map" and isinstance(keys, list) and keys:
        index: dict[str, Any] = {}
        for o in old:
            if isinstance(o, dict):
                index.setdefault(orjson.dumps([o.get(k) for k in keys]).decode(), o)

        def find(x: Any) -> Any:
            if not isinstance(x, dict):
                return _MISSING
            return index.get(orjson.dumps([x.get(k) for k in keys]).decode(), _MISSING)
        return find
    return lambda x: _MISSING


def _list_types(v: Any, s: dict[str, Any] | None, path: str, errs: list[FE]) -> None:
    """x-kubernetes-list-type uniqueness: set elements and map keys may not repeat."""
    if not isinstance(s, dict):
        return
    if isinstance(v, dict):
        props = _props(s)
        ap = _additional(s)
        for k, x in v.items():
            if k in props:
                _list_types(x, props[k], _child(path, k), errs)
            elif ap is not None:
                _list_types(x, ap, f"{path}[{k}]", errs)
        return
    if not isinstance(v, list):
        return
    kind = s.get("x-kubernetes-list-type")
    if kind == "set":
        for i in _duplicates([orjson.dumps(x, option=orjson.OPT_SORT_KEYS) for x in v]):
            errs.append(errors.duplicate(f"{path}[{i}]", _value(v[i])))
    elif kind == "map":
        keys = [k for k in s.get("x-kubernetes-list-map-keys") or () if isinstance(k, str)]
        bad = next((i for i, x in enumerate(v) if x is not None and not isinstance(x, dict)), None)
        if bad is not None:
            errs.append(_invalid(f"{path}[{bad}]", v[bad], "must be an object for an array of list-type map"))
        else:
            key_values = [{k: x[k] for k in keys if isinstance(x, dict) and k in x} for x in v]
            for i in _duplicates([orjson.dumps(kv, option=orjson.OPT_SORT_KEYS) for kv in key_values]):
                errs.append(errors.duplicate(f"{path}[{i}]", _value(key_values[i])))
    items = _items(s)
    for i, x in enumerate(v):
        _list_types(x, items, f"{path}[{i}]", errs)


def _duplicates(encoded: list[bytes]) -> list[int]:
    seen: dict[bytes, int] = {}
    out = []
    for i, e in enumerate(encoded):
        seen[e] = seen.get(e, 0) + 1
        if seen[e] == 2:
            out.append(i)
    return out


def _embedded(v: Any, s: dict[str, Any] | None, path: str, errs: list[FE], *, root: bool) -> None:
    """Embedded resources (x-kubernetes-embedded-resource) must name their apiVersion and kind."""
    if not isinstance(s, dict):
        return
    if isinstance(v, dict):
        if s.get("x-kubernetes-embedded-resource") and not root:
            for f in ("apiVersion", "kind"):
                if not v.get(f):
                    errs.append(errors.required(_child(path, f), "must not be empty"))
        props = _props(s)
        ap = _additional(s)
        for k, x in v.items():
            if root and k in _META_FIELDS:
                continue
            if k in props:
                _embedded(x, props[k], _child(path, k), errs, root=False)
            elif ap is not None:
                _embedded(x, ap, f"{path}[{k}]", errs, root=False)
    elif isinstance(v, list):
        items = _items(s)
        for i, x in enumerate(v):
            _embedded(x, items, f"{path}[{i}]", errs, root=False)


class Schema:
    """One version's openAPIV3Schema, compiled for fast validation (jsonschema_rs) with a kube-worded fallback."""

    def __init__(self, schema: dict[str, Any] | None) -> None:
        self.raw = schema if isinstance(schema, dict) else {}
        self._fast: Any = None
        self._fast_ready = False

    def _fast_validator(self) -> Any:
        if not self._fast_ready:
            self._fast_ready = True
            if not _has_format(self.raw):
                try:
                    import jsonschema_rs
                    self._fast = jsonschema_rs.Draft4Validator(to_json_schema(self.raw))
                except Exception:  # an exotic pattern jsonschema_rs cannot compile: the walker still works
                    log.debug("jsonschema_rs could not compile a CRD schema", exc_info=True)
                    self._fast = None
        return self._fast

    def validate(self, obj: Any, old: Any = None) -> list[FE]:
        """Schema errors of obj (old enables ratcheting of unchanged fields), kube's field errors."""
        errs: list[FE] = []
        fast = self._fast_validator()
        if fast is None or not fast.is_valid(_for_fast(obj)):
            w = _Walker()
            w.node(obj, self.raw, "", _MISSING if old is None else old)
            errs.extend(w.errs)
        _list_types(obj, self.raw, "", errs)
        _embedded(obj, self.raw, "", errs, root=True)
        # TODO(cel): x-kubernetes-validations need a CEL evaluator (cel-expr-python is not installed);
        # until then CEL rules are accepted and not enforced.
        return errs

    def prune(self, obj: dict[str, Any]) -> list[str]:
        """Drop fields the schema does not specify (in place); returns their paths."""
        return prune(obj, self.raw)

    def default(self, obj: Any) -> None:
        prune_nulls(obj, self.raw)
        default(obj, self.raw, root=True)


def _for_fast(obj: Any) -> Any:
    # metadata is validated by the walker's rules only when its schema restricts it; the fast path
    # never rejects on account of it since to_json_schema leaves it unconstrained but typed.
    return obj


def _has_format(s: Any) -> bool:
    if isinstance(s, dict):
        if isinstance(s.get("format"), str) and s["format"] in FORMATS:
            return True
        return any(_has_format(v) for k, v in s.items() if k not in ("default", "enum", "example"))
    if isinstance(s, list):
        return any(_has_format(v) for v in s)
    return False


_FAST_KEYS = ("maximum", "minimum", "exclusiveMaximum", "exclusiveMinimum", "maxLength", "minLength",
              "pattern", "maxItems", "minItems", "multipleOf", "maxProperties", "minProperties", "required", "enum")


def to_json_schema(s: Any) -> Any:
    """An OpenAPI v3 structural schema as a draft-4 JSON Schema (nullable and int-or-string as type lists)."""
    if not isinstance(s, dict):
        return {}
    out: dict[str, Any] = {}
    types = _types(s)
    if types:
        if s.get("nullable"):
            types = [*types, "null"]
        out["type"] = types[0] if len(types) == 1 else types
    for k in _FAST_KEYS:
        if k in s:
            out[k] = s[k]
    if "enum" in out and s.get("nullable"):
        out["enum"] = [*out["enum"], None] if None not in out["enum"] else out["enum"]
    if isinstance(s.get("properties"), dict):
        out["properties"] = {k: to_json_schema(v) for k, v in s["properties"].items()}
    if isinstance(s.get("items"), dict):
        out["items"] = to_json_schema(s["items"])
    ap = s.get("additionalProperties")
    if isinstance(ap, dict):
        out["additionalProperties"] = to_json_schema(ap)
    elif isinstance(ap, bool):
        out["additionalProperties"] = ap
    for k in ("allOf", "anyOf", "oneOf"):
        if isinstance(s.get(k), list):
            out[k] = [to_json_schema(x) for x in s[k]]
    if isinstance(s.get("not"), dict):
        out["not"] = to_json_schema(s["not"])
    return out


# --- pruning -------------------------------------------------------------------------------------

def prune(obj: Any, schema: dict[str, Any] | None) -> list[str]:
    """kube's structural pruning of a whole object (apiVersion, kind, metadata are kept at the root;
    metadata loses non-ObjectMeta fields). Mutates obj; returns the pruned paths, sorted."""
    paths: list[str] = []
    if isinstance(obj, dict):
        _coerce_meta(obj, "", paths)
        root = dict(schema or {})
        root["x-kubernetes-embedded-resource"] = True
        _prune(obj, root, "", paths)
    return sorted(paths)


def _coerce_meta(obj: dict[str, Any], path: str, paths: list[str]) -> None:
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        for k in [k for k in meta if k not in OBJECT_META_FIELDS]:
            del meta[k]
            paths.append(_child(_child(path, "metadata"), k))


def _prune(x: Any, s: dict[str, Any] | None, path: str, paths: list[str]) -> None:
    if isinstance(s, dict) and s.get("x-kubernetes-preserve-unknown-fields"):
        _skip_prune(x, s, path, paths)
        return
    if isinstance(x, dict):
        if s is None:
            for k in list(x):
                paths.append(_child(path, k))
                del x[k]
            return
        embedded = bool(s.get("x-kubernetes-embedded-resource"))
        if embedded and path:
            _coerce_meta(x, path, paths)
        props = _props(s)
        ap = s.get("additionalProperties")
        for k in list(x):
            if embedded and k in _META_FIELDS:
                continue
            if k in props:
                _prune(x[k], props[k], _child(path, k), paths)
            elif isinstance(ap, dict):
                _prune(x[k], ap, _child(path, k), paths)
            elif ap is True:
                continue
            else:
                paths.append(_child(path, k))
                del x[k]
    elif isinstance(x, list):
        items = _items(s) if s is not None else None
        for i, v in enumerate(x):
            _prune(v, items, f"{path}[{i}]", paths)


def _skip_prune(x: Any, s: dict[str, Any], path: str, paths: list[str]) -> None:
    if isinstance(x, dict):
        embedded = bool(s.get("x-kubernetes-embedded-resource"))
        if embedded and path:
            _coerce_meta(x, path, paths)
        props = _props(s)
        ap = _additional(s)
        for k, v in x.items():
            if embedded and k in _META_FIELDS:
                continue
            if k in props:
                _prune(v, props[k], _child(path, k), paths)
            elif ap is not None:
                _prune(v, ap, _child(path, k), paths)
    elif isinstance(x, list):
        items = _items(s)
        for i, v in enumerate(x):
            if items is not None:
                _skip_prune(v, items, f"{path}[{i}]", paths)


# --- nulls and defaults --------------------------------------------------------------------------

def prune_nulls(x: Any, s: dict[str, Any] | None) -> None:
    """Drop null values of non-nullable fields that have no default (defaulting fills the others)."""
    if not isinstance(s, dict):
        return
    if isinstance(x, dict):
        props = _props(s)
        ap = _additional(s)
        for k in list(x):
            ps = props.get(k, ap)
            if ps is None:
                continue
            if x[k] is None:
                if not ps.get("nullable") and "default" not in ps:
                    del x[k]
            else:
                prune_nulls(x[k], ps)
    elif isinstance(x, list):
        items = _items(s)
        for v in x:
            prune_nulls(v, items)


def default(x: Any, s: dict[str, Any] | None, *, root: bool = False) -> None:
    """Structural defaulting: missing (or null, non-nullable) fields get their schema default, recursively."""
    if not isinstance(s, dict):
        return
    if isinstance(x, dict):
        props = _props(s)
        for k, ps in props.items():
            if root and k == "metadata" or not isinstance(ps, dict) or "default" not in ps:
                continue
            if k not in x or (x[k] is None and not ps.get("nullable")):
                x[k] = copy.deepcopy(ps["default"])
        ap = _additional(s)
        for k, v in x.items():
            if root and k in _META_FIELDS:
                continue
            if k in props:
                default(v, props[k])
            elif ap is not None:
                if v is None and "default" in ap and not ap.get("nullable"):
                    x[k] = v = copy.deepcopy(ap["default"])
                default(v, ap)
    elif isinstance(x, list):
        items = _items(s)
        if items is None:
            return
        for i, v in enumerate(x):
            if v is None and "default" in items and not items.get("nullable"):
                x[i] = v = copy.deepcopy(items["default"])
            default(v, items)
