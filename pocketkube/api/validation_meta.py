"""Shared validation pieces: ObjectMeta rules, label selectors, int-or-percent, and Go-style value printing."""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from pocketkube.api import errors, names, quantity

FE = errors.FieldError
IMMUTABLE = "field is immutable"
STANDARD_FINALIZERS = ("kubernetes", "orphan", "foregroundDeletion")


# --- Go %#v rendering for the values Kubernetes prints that way ---------------------------

def _q(s: Any) -> str:
    return json.dumps("" if s is None else str(s), ensure_ascii=False)


def go_map(m: Any) -> str:
    """map[string]string as Go's %#v prints it: nil, or keys sorted."""
    if not isinstance(m, dict):
        return "raw:map[string]string(nil)"
    inner = ", ".join(f"{_q(k)}:{_q(m[k])}" for k in sorted(m))
    return "raw:map[string]string{" + inner + "}"


def _go_strings(values: Any) -> str:
    if values is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(_q(v) for v in values) + "}"


def go_selector(sel: Any) -> str:
    """A *metav1.LabelSelector dereferenced and printed with %#v (the famous immutable-selector message)."""
    if not isinstance(sel, dict):
        return "null"
    ml = sel.get("matchLabels")
    ml_s = go_map(ml)[4:]
    exprs = sel.get("matchExpressions")
    if not isinstance(exprs, list):
        ex_s = "[]v1.LabelSelectorRequirement(nil)"
    else:
        items = [f"v1.LabelSelectorRequirement{{Key:{_q(e.get('key'))}, Operator:{_q(e.get('operator'))}, "
                 f"Values:{_go_strings(e.get('values'))}}}" for e in exprs if isinstance(e, dict)]
        ex_s = "[]v1.LabelSelectorRequirement{" + ", ".join(items) + "}"
    return f"raw:v1.LabelSelector{{MatchLabels:{ml_s}, MatchExpressions:{ex_s}}}"


def go_intstr(v: Any) -> str:
    """intstr.IntOrString printed with %#v (it has no value-receiver String method)."""
    if isinstance(v, str):
        return f"raw:intstr.IntOrString{{Type:1, IntVal:0, StrVal:{_q(v)}}}"
    n = v if isinstance(v, int) and not isinstance(v, bool) else 0
    return f'raw:intstr.IntOrString{{Type:0, IntVal:{n}, StrVal:""}}'


def go_string_list(values: Any) -> str:
    return "raw:" + _go_strings(values if isinstance(values, list) else None)


# --- small typed accessors ----------------------------------------------------------------

def as_dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def as_list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def dicts(v: Any) -> list[dict[str, Any]]:
    return [x if isinstance(x, dict) else {} for x in as_list(v)]


def is_int(v: Any) -> TypeGuard[int]:
    return isinstance(v, int) and not isinstance(v, bool)


def num(v: Any, default: int = 0) -> int:
    return v if is_int(v) else default


def immutable(new: Any, old: Any, field: str, *, value: Any = None) -> list[FE]:
    if new == old:
        return []
    return [errors.invalid(field, new if value is None else value, IMMUTABLE)]


def quantity_or_bad_request(v: Any, *, kind: str, version: str) -> quantity.Quantity:
    """Quantities fail at decode in Kubernetes, so a bad one is a 400, not a field error."""
    try:
        return quantity.parse(v)
    except quantity.QuantityError as e:
        raise errors.BadRequest(f'{kind} in version "{version}" cannot be handled as a {kind}: {e}') from e


# --- ObjectMeta ----------------------------------------------------------------------------

def _finalizers(finalizers: Any, field: str, *, kube: bool) -> list[FE]:
    out: list[FE] = []
    fs = [str(f) for f in as_list(finalizers)]
    for f in fs:
        out.extend(errors.invalid(field, f, m) for m in names.is_qualified_name(f))
    if "orphan" in fs and "foregroundDeletion" in fs:
        out.append(errors.invalid(field, go_string_list(fs),
                                  "finalizer orphan and foregroundDeletion cannot be both set"))
    if kube:
        out.extend(_kube_finalizers(fs, field))
    return out


def _kube_finalizers(finalizers: Any, field: str) -> list[FE]:
    # Built-in kinds (core's ValidateObjectMeta wrapper) also want unprefixed finalizers to be standard ones.
    return [errors.invalid(f"{field}[{i}]", str(f), "name is neither a standard finalizer name nor is it fully "
                           "qualified")
            for i, f in enumerate(as_list(finalizers)) if "/" not in str(f) and str(f) not in STANDARD_FINALIZERS]


def _owner_references(refs: Any, field: str) -> list[FE]:
    out: list[FE] = []
    first_controller = ""
    for ref in dicts(refs):
        api_version = str(ref.get("apiVersion") or "")
        kind = str(ref.get("kind") or "")
        version = api_version.split("/")[-1] if api_version else ""
        if not version or api_version.count("/") > 1:
            out.append(errors.invalid(f"{field}.apiVersion", api_version, "version must not be empty"))
        if not kind:
            out.append(errors.invalid(f"{field}.kind", kind, "must not be empty"))
        if not ref.get("name"):
            out.append(errors.invalid(f"{field}.name", str(ref.get("name") or ""), "must not be empty"))
        if not ref.get("uid"):
            out.append(errors.invalid(f"{field}.uid", str(ref.get("uid") or ""), "must not be empty"))
        if api_version == "v1" and kind == "Event":
            out.append(errors.invalid(field, "raw:" + json.dumps(ref, separators=(",", ":")),
                                      "/v1, Kind=Event is disallowed from being an owner"))
        if ref.get("controller") is True:
            cur = f"{kind}/{ref.get('name') or ''}"
            if first_controller:
                out.append(errors.invalid(field, "raw:" + json.dumps(refs, separators=(",", ":")),
                                          'Only one reference can have Controller set to true. Found "true" in '
                                          f"references for {first_controller} and {cur}"))
            else:
                first_controller = cur
    return out


def validate_metadata(meta: Any, *, namespaced: bool, name_validator: names.NameFunc,
                      kube_finalizers: bool = True, field: str = "metadata") -> list[FE]:
    """ValidateObjectMeta: generateName, name, namespace, labels, annotations, ownerReferences, finalizers."""
    m = as_dict(meta)
    out: list[FE] = []
    gen = str(m.get("generateName") or "")
    if gen:
        out.extend(errors.invalid(f"{field}.generateName", gen, msg) for msg in name_validator(gen, True))
    name = str(m.get("name") or "")
    if not name:
        out.append(errors.required(f"{field}.name", "name or generateName is required"))
    else:
        out.extend(errors.invalid(f"{field}.name", name, msg) for msg in name_validator(name, False))
    out.extend(_meta_common(m, namespaced=namespaced, field=field))
    if kube_finalizers:
        out.extend(_kube_finalizers(m.get("finalizers"), f"{field}.finalizers"))
    return out


def _meta_common(m: dict[str, Any], *, namespaced: bool, field: str) -> list[FE]:
    out: list[FE] = []
    ns = str(m.get("namespace") or "")
    if namespaced:
        if not ns:
            out.append(errors.required(f"{field}.namespace"))
        else:
            out.extend(errors.invalid(f"{field}.namespace", ns, msg) for msg in names.name_is_dns_label(ns))
    elif ns:
        out.append(errors.forbidden(f"{field}.namespace", "not allowed on this type"))
    out.extend(names.validate_nonnegative(m.get("generation"), f"{field}.generation"))
    out.extend(names.validate_labels(m.get("labels"), f"{field}.labels"))
    out.extend(names.validate_annotations(m.get("annotations"), f"{field}.annotations"))
    out.extend(_owner_references(m.get("ownerReferences"), f"{field}.ownerReferences"))
    out.extend(_finalizers(m.get("finalizers"), f"{field}.finalizers", kube=False))
    return out


def validate_metadata_update(new: Any, old: Any, *, kube_finalizers: bool = True,
                             field: str = "metadata") -> list[FE]:
    """ValidateObjectMetaUpdate: identity fields immutable, resourceVersion required, no new finalizers while deleting."""
    n, o = as_dict(new), as_dict(old)
    out: list[FE] = []
    if o.get("deletionTimestamp"):
        extra = sorted(set(as_list(n.get("finalizers"))) - set(as_list(o.get("finalizers"))))
        if extra:
            out.append(errors.forbidden(f"{field}.finalizers",
                                        "no new finalizers can be added if the object is being deleted, found "
                                        f"new finalizers {go_string_list(extra)[4:]}"))
    if not n.get("resourceVersion"):
        out.append(errors.invalid(f"{field}.resourceVersion", str(n.get("resourceVersion") or ""),
                                  "must be specified for an update"))
    if num(n.get("generation")) < num(o.get("generation")):
        out.append(errors.invalid(f"{field}.generation", num(n.get("generation")), "must not be decremented"))
    for key in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds"):
        nv, ov = n.get(key), o.get(key)
        if key in ("name", "namespace", "uid"):
            nv, ov = nv or "", ov or ""
        out.extend(immutable(nv, ov, f"{field}.{key}"))
    out.extend(names.validate_labels(n.get("labels"), f"{field}.labels"))
    out.extend(names.validate_annotations(n.get("annotations"), f"{field}.annotations"))
    out.extend(_owner_references(n.get("ownerReferences"), f"{field}.ownerReferences"))
    out.extend(_finalizers(n.get("finalizers"), f"{field}.finalizers", kube=kube_finalizers))
    return out


# --- label selectors -------------------------------------------------------------------------

def validate_label_selector(sel: Any, field: str) -> list[FE]:
    if not isinstance(sel, dict):
        return []
    out = names.validate_labels(sel.get("matchLabels"), f"{field}.matchLabels")
    for i, expr in enumerate(dicts(sel.get("matchExpressions"))):
        p = f"{field}.matchExpressions[{i}]"
        op = expr.get("operator")
        values = as_list(expr.get("values"))
        if op in ("In", "NotIn"):
            if not values:
                out.append(errors.required(f"{p}.values", "must be specified when `operator` is 'In' or 'NotIn'"))
        elif op in ("Exists", "DoesNotExist"):
            if values:
                out.append(errors.forbidden(f"{p}.values",
                                            "may not be specified when `operator` is 'Exists' or 'DoesNotExist'"))
        else:
            out.append(errors.invalid(f"{p}.operator", "" if op is None else op, "not a valid selector operator"))
        out.extend(names.validate_label_name(str(expr.get("key") or ""), f"{p}.key"))
        for j, v in enumerate(values):
            out.extend(errors.invalid(f"{p}.values[{j}]", str(v), m) for m in names.is_label_value(str(v)))
    return out


def selector_is_valid(sel: Any) -> bool:
    """Whether LabelSelectorAsSelector would succeed."""
    if sel is None:
        return True
    if not isinstance(sel, dict):
        return False
    for expr in dicts(sel.get("matchExpressions")):
        op = expr.get("operator")
        values = as_list(expr.get("values"))
        if op not in ("In", "NotIn", "Exists", "DoesNotExist"):
            return False
        if op in ("In", "NotIn") and not values:
            return False
        if op in ("Exists", "DoesNotExist") and values:
            return False
        if names.is_qualified_name(str(expr.get("key") or "")):
            return False
    for k, v in as_dict(sel.get("matchLabels")).items():
        if names.is_qualified_name(str(k)) or names.is_label_value(str(v)):
            return False
    return True


def selector_is_empty(sel: Any) -> bool:
    """Empty selectors (`{}`) select everything; nil selects nothing and is not empty."""
    return isinstance(sel, dict) and not sel.get("matchLabels") and not sel.get("matchExpressions")


def selector_matches(sel: Any, labels: Any) -> bool:
    if not isinstance(sel, dict):
        return False
    # Keyed by Any: an expression's key comes straight from JSON and may be null or a non-string.
    lbl: dict[Any, Any] = as_dict(labels)
    for k, v in as_dict(sel.get("matchLabels")).items():
        if k not in lbl or str(lbl[k]) != str(v):
            return False
    for expr in dicts(sel.get("matchExpressions")):
        key, op, values = expr.get("key"), expr.get("operator"), [str(v) for v in as_list(expr.get("values"))]
        present = key in lbl
        if op == "In" and not (present and str(lbl[key]) in values):
            return False
        if op == "NotIn" and present and str(lbl[key]) in values:
            return False
        if op == "Exists" and not present:
            return False
        if op == "DoesNotExist" and present:
            return False
    return True


# --- int-or-percent (apps validation helpers) --------------------------------------------

def int_or_percent_value(v: Any) -> int:
    if isinstance(v, str):
        try:
            return int(v.rstrip("%")) if v.endswith("%") else int(v)
        except ValueError:
            return 0
    return num(v)


def validate_positive_int_or_percent(v: Any, field: str) -> list[FE]:
    if isinstance(v, str):
        return [errors.invalid(field, go_intstr(v), m) for m in names.is_valid_percent(v)]
    if is_int(v):
        return names.validate_nonnegative(v, field)
    return [errors.invalid(field, go_intstr(v), "must be an integer or percentage (e.g '5%')")]


def not_more_than_100_percent(v: Any, field: str) -> list[FE]:
    if isinstance(v, str) and v.endswith("%") and not names.is_valid_percent(v) and int(v[:-1]) > 100:
        return [errors.invalid(field, go_intstr(v), "must not be greater than 100%")]
    return []
