"""CustomResourceDefinition objects themselves: defaulting and validation (names, versions, structural schemas)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from pocketkube.api import errors, jsonpath, names, validation_meta

FE = errors.FieldError
CLEANUP_FINALIZER = "customresourcecleanup.apiextensions.k8s.io"
APPROVAL_ANNOTATION = "api-approved.kubernetes.io"

# check_default(value, schema, json_path) -> field errors of the default against its own schema
DefaultChecker = Callable[[Any, dict[str, Any], str], list[FE]]

_SCHEMA_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_COLUMN_TYPES = ("boolean", "date", "integer", "number", "string")
_COLUMN_FORMATS = ("byte", "date", "date-time", "double", "float", "int32", "int64", "password")
_SPEC_ORDER = ("group", "names", "scope", "versions", "conversion", "preserveUnknownFields")
_NAMES_ORDER = ("plural", "singular", "shortNames", "kind", "listKind", "categories")
_VERSION_ORDER = ("name", "served", "storage", "deprecated", "deprecationWarning", "schema", "subresources",
                  "additionalPrinterColumns", "selectableFields")


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _ordered(d: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    out = {k: d[k] for k in order if k in d}
    out.update((k, v) for k, v in d.items() if k not in out)
    return out


def versions(crd: dict[str, Any]) -> list[dict[str, Any]]:
    """spec.versions entries that are objects."""
    return [v for v in _l(_d(crd.get("spec")).get("versions")) if isinstance(v, dict)]


def storage_version(crd: dict[str, Any]) -> str | None:
    """The version marked `storage: true`, if exactly one is found first."""
    for v in versions(crd):
        if v.get("storage") is True and isinstance(v.get("name"), str):
            return v["name"]
    return None


def version(crd: dict[str, Any], name: str) -> dict[str, Any] | None:
    for v in versions(crd):
        if v.get("name") == name:
            return v
    return None


def is_protected_group(group: str) -> bool:
    """Groups under k8s.io and kubernetes.io need the api-approved annotation."""
    return group in ("k8s.io", "kubernetes.io") or group.endswith(".k8s.io") or group.endswith(".kubernetes.io")


# --- defaulting --------------------------------------------------------------------------------

def default_crd(obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """kube's defaults for a CRD, plus the status kube-apiserver's strategy keeps and the cleanup finalizer."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    nm = spec.get("names")
    if isinstance(nm, dict):
        kind = nm.get("kind")
        if isinstance(kind, str) and kind:
            if not nm.get("singular"):
                nm["singular"] = kind.lower()
            if not nm.get("listKind"):
                nm["listKind"] = kind + "List"
        spec["names"] = _ordered(nm, _NAMES_ORDER)
    conv = spec.get("conversion")
    if conv is None:
        spec["conversion"] = {"strategy": "None"}
    elif isinstance(conv, dict):
        conv.setdefault("strategy", "None")
        service = _d(_d(_d(conv.get("webhook")).get("clientConfig")).get("service"))
        if service and "port" not in service:
            service["port"] = 443
    if isinstance(spec.get("versions"), list):
        spec["versions"] = [_ordered(v, _VERSION_ORDER) if isinstance(v, dict) else v for v in spec["versions"]]
    obj["spec"] = _ordered(spec, _SPEC_ORDER)
    status = obj.get("status")
    if not isinstance(status, dict):
        status = {}
    status.setdefault("acceptedNames", {"plural": "", "kind": ""})
    stored = storage_version(obj)
    sv = status.get("storedVersions")
    if not isinstance(sv, list):
        sv = []
    if stored and stored not in sv:
        sv.append(stored)
    if sv:
        status["storedVersions"] = sv
    obj["status"] = _ordered(status, ("conditions", "acceptedNames", "storedVersions"))
    meta = obj.setdefault("metadata", {})
    if old is None and isinstance(meta, dict) and not meta.get("deletionTimestamp"):
        finalizers = meta.get("finalizers")
        if not isinstance(finalizers, list):
            finalizers = []
        if CLEANUP_FINALIZER not in finalizers:
            meta["finalizers"] = [*finalizers, CLEANUP_FINALIZER]


# --- validation --------------------------------------------------------------------------------

def validate_crd(obj: dict[str, Any], old: dict[str, Any] | None = None, *,
                 check_default: DefaultChecker | None = None) -> list[FE]:
    """Every field error of a CRD create (old=None) or update, in kube-apiserver's order and wording."""
    spec = _d(obj.get("spec"))
    meta = _d(obj.get("metadata"))
    group = str(spec.get("group") or "")
    plural = str(_d(spec.get("names")).get("plural") or "")

    def name_fn(name: str, prefix: bool) -> list[str]:
        out = names.name_is_dns_subdomain(name, prefix)
        if name != f"{plural}.{group}":
            out.append('must be spec.names.plural+"."+spec.group')
        return out

    errs: list[FE] = []
    if old is None:
        errs.extend(validation_meta.validate_metadata(meta, namespaced=False, name_validator=name_fn,
                                                    kube_finalizers=False))
    else:
        errs.extend(validation_meta.validate_metadata_update(meta, _d(old.get("metadata")), kube_finalizers=False))
    if group and is_protected_group(group) and not _d(meta.get("annotations")).get(APPROVAL_ANNOTATION):
        errs.append(errors.required(f"metadata.annotations[{APPROVAL_ANNOTATION}]",
                                    f'protected groups must have approval annotation "{APPROVAL_ANNOTATION}", '
                                    "see https://github.com/kubernetes/enhancements/pull/1111"))
    errs.extend(validate_spec(spec, "spec", check_default=check_default))
    if old is not None:
        errs.extend(_validate_spec_update(spec, _d(old.get("spec")), established=_established(old)))
    status = _d(obj.get("status"))
    errs.extend(validate_names(_d(status.get("acceptedNames")), "status.acceptedNames"))
    if old is not None:
        errs.extend(_stored_versions(_l(status.get("storedVersions")), versions(obj)))
    return errs


def _established(crd: dict[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("type") == "Established" and c.get("status") == "True"
               for c in _l(_d(crd.get("status")).get("conditions")))


def _stored_versions(stored: list[Any], vs: list[dict[str, Any]]) -> list[FE]:
    if not stored:
        return [errors.invalid("status.storedVersions", "raw:[]string{}", "must have at least one stored version")]
    names_ = {v.get("name") for v in vs}
    return [errors.invalid(f"status.storedVersions[{i}]", s, "must appear in spec.versions")
            for i, s in enumerate(stored) if s not in names_]


def _validate_spec_update(spec: dict[str, Any], old: dict[str, Any], *, established: bool) -> list[FE]:
    errs: list[FE] = []
    if established:
        errs.extend(validation_meta.immutable(spec.get("scope"), old.get("scope"), "spec.scope"))
        errs.extend(validation_meta.immutable(_d(spec.get("names")).get("kind"), _d(old.get("names")).get("kind"),
                                              "spec.names.kind"))
    errs.extend(validation_meta.immutable(spec.get("group"), old.get("group"), "spec.group"))
    errs.extend(validation_meta.immutable(_d(spec.get("names")).get("plural"), _d(old.get("names")).get("plural"),
                                          "spec.names.plural"))
    return errs


def _go_versions(vs: Any) -> str:
    """[]apiextensions.CustomResourceDefinitionVersion printed briefly (kube prints the whole struct)."""
    items = [f'apiextensions.CustomResourceDefinitionVersion{{Name:"{_d(v).get("name", "")}", '
             f'Served:{str(bool(_d(v).get("served"))).lower()}, Storage:{str(bool(_d(v).get("storage"))).lower()}}}'
             for v in _l(vs)]
    return "raw:[]apiextensions.CustomResourceDefinitionVersion{" + ", ".join(items) + "}"


def validate_spec(spec: dict[str, Any], path: str = "spec", *,
                  check_default: DefaultChecker | None = None) -> list[FE]:
    """ValidateCustomResourceDefinitionSpec for apiextensions.k8s.io/v1."""
    errs: list[FE] = []
    group = spec.get("group")
    if not group:
        errs.append(errors.required(f"{path}.group"))
    elif not isinstance(group, str) or names.is_dns1123_subdomain(group):
        errs.append(errors.invalid(f"{path}.group", group, ",".join(names.is_dns1123_subdomain(str(group)))))
    elif len(group.split(".")) < 2:
        errs.append(errors.invalid(f"{path}.group", group, "should be a domain with at least one dot"))
    scope = spec.get("scope")
    if not scope:
        errs.append(errors.required(f"{path}.scope"))
    elif scope not in ("Cluster", "Namespaced"):
        errs.append(errors.unsupported(f"{path}.scope", scope, ["Cluster", "Namespaced"]))
    raw_versions = spec.get("versions")
    storage_count = 0
    seen: set[str] = set()
    unique = True
    for i, v in enumerate(_l(raw_versions)):
        vp = f"{path}.versions[{i}]"
        v = _d(v)
        if v.get("storage") is True:
            storage_count += 1
        name = v.get("name")
        if name in seen:
            unique = False
        if isinstance(name, str):
            seen.add(name)
        if not isinstance(name, str) or names.is_dns1035_label(name):
            errs.append(errors.invalid(f"{vp}.name", name, ",".join(names.is_dns1035_label(str(name or "")))))
        errs.extend(validate_version(v, vp, check_default=check_default))
    if not unique:
        errs.append(errors.invalid(f"{path}.versions", _go_versions(raw_versions), "must contain unique version names"))
    if storage_count != 1:
        errs.append(errors.invalid(f"{path}.versions", _go_versions(raw_versions),
                                   "must have exactly one version marked as storage version"))
    errs.extend(_validate_conversion(_d(spec.get("conversion")), f"{path}.conversion",
                                     present=spec.get("conversion") is not None))
    nm = _d(spec.get("names"))
    for field in ("plural", "singular", "kind", "listKind"):
        if not nm.get(field):
            errs.append(errors.required(f"{path}.names.{field}"))
    errs.extend(validate_names(nm, f"{path}.names"))
    if spec.get("preserveUnknownFields") is True:
        errs.append(errors.invalid(f"{path}.preserveUnknownFields", True,
                                   "cannot set to true, set x-kubernetes-preserve-unknown-fields to true in "
                                   "spec.versions[*].schema instead"))
    return errs


def _validate_conversion(conv: dict[str, Any], path: str, *, present: bool) -> list[FE]:
    if not present:
        return []
    errs: list[FE] = []
    strategy = conv.get("strategy")
    if strategy not in ("None", "Webhook"):
        errs.append(errors.unsupported(f"{path}.strategy", strategy, ["None", "Webhook"]))
        return errs
    webhook = conv.get("webhook")
    if strategy == "None" and webhook is not None:
        errs.append(errors.forbidden(f"{path}.webhook", "should not be set when strategy is not set to Webhook"))
    if strategy == "Webhook":
        if not isinstance(webhook, dict):
            errs.append(errors.required(f"{path}.webhook", "required when strategy is set to Webhook"))
            return errs
        cc = _d(webhook.get("clientConfig"))
        if bool(cc.get("url")) == bool(cc.get("service")):
            errs.append(errors.required(f"{path}.webhook.clientConfig", "exactly one of url or service is required"))
        if not _l(webhook.get("conversionReviewVersions")):
            errs.append(errors.required(f"{path}.webhook.conversionReviewVersions",
                                        "must contain at least one of v1, v1beta1"))
    return errs


def validate_names(nm: dict[str, Any], path: str) -> list[FE]:
    """ValidateCustomResourceDefinitionNames (empty names are only checked as required in the spec)."""
    errs: list[FE] = []
    for field in ("plural", "singular"):
        v = nm.get(field)
        if v and (not isinstance(v, str) or names.is_dns1035_label(v)):
            errs.append(errors.invalid(f"{path}.{field}", v, ",".join(names.is_dns1035_label(str(v)))))
    for field in ("kind", "listKind"):
        v = nm.get(field)
        if v and (not isinstance(v, str) or names.is_dns1035_label(v.lower())):
            errs.append(errors.invalid(f"{path}.{field}", v, "may have mixed case, but should otherwise match: "
                                       + ",".join(names.is_dns1035_label(str(v).lower()))))
    for i, short in enumerate(_l(nm.get("shortNames"))):
        if not isinstance(short, str) or names.is_dns1035_label(short):
            errs.append(errors.invalid(f"{path}.shortNames[{i}]", short, ",".join(names.is_dns1035_label(str(short)))))
    if nm.get("kind") and nm.get("kind") == nm.get("listKind"):
        errs.append(errors.invalid(f"{path}.listKind", nm.get("listKind"), "kind and listKind may not be the same"))
    for i, cat in enumerate(_l(nm.get("categories"))):
        if not isinstance(cat, str) or names.is_dns1035_label(cat):
            errs.append(errors.invalid(f"{path}.categories[{i}]", cat, ",".join(names.is_dns1035_label(str(cat)))))
    return errs


def validate_version(v: dict[str, Any], path: str, *, check_default: DefaultChecker | None = None) -> list[FE]:
    """One spec.versions[i]: schema (required and structural), subresources and printer columns."""
    errs: list[FE] = []
    schema = _d(v.get("schema")).get("openAPIV3Schema")
    sp = f"{path}.schema.openAPIV3Schema"
    if not isinstance(schema, dict):
        errs.append(errors.required(sp, "schemas are required"))
    else:
        errs.extend(validate_schema(schema, sp, check_default=check_default))
    errs.extend(_validate_subresources(_d(v.get("subresources")), f"{path}.subresources"))
    for j, col in enumerate(_l(v.get("additionalPrinterColumns"))):
        errs.extend(_validate_column(_d(col), f"{path}.additionalPrinterColumns[{j}]"))
    return errs


def _validate_subresources(subs: dict[str, Any], path: str) -> list[FE]:
    scale = subs.get("scale")
    if not isinstance(scale, dict):
        return []
    errs: list[FE] = []
    sp = f"{path}.scale"
    spec_path = scale.get("specReplicasPath")
    if not spec_path:
        errs.append(errors.required(f"{sp}.specReplicasPath"))
    elif not _simple_path(spec_path) or not str(spec_path).startswith(".spec."):
        errs.append(errors.invalid(f"{sp}.specReplicasPath", spec_path, "should be a json path under .spec"))
    status_path = scale.get("statusReplicasPath")
    if not status_path:
        errs.append(errors.required(f"{sp}.statusReplicasPath"))
    elif not _simple_path(status_path) or not str(status_path).startswith(".status."):
        errs.append(errors.invalid(f"{sp}.statusReplicasPath", status_path, "should be a json path under .status"))
    sel = scale.get("labelSelectorPath")
    if sel and (not _simple_path(sel) or not (str(sel).startswith(".spec.") or str(sel).startswith(".status."))):
        errs.append(errors.invalid(f"{sp}.labelSelectorPath", sel, "should be a json path under either .spec or .status"))
    return errs


_SIMPLE_PATH = re.compile(r"^(\.[A-Za-z0-9_-]+)+$")


def _simple_path(p: Any) -> bool:
    return isinstance(p, str) and bool(_SIMPLE_PATH.match(p))


def _validate_column(col: dict[str, Any], path: str) -> list[FE]:
    errs: list[FE] = []
    if not col.get("name"):
        errs.append(errors.required(f"{path}.name"))
    t = col.get("type")
    if not t:
        errs.append(errors.required(f"{path}.type"))
    elif t not in _COLUMN_TYPES:
        errs.append(errors.unsupported(f"{path}.type", t, list(_COLUMN_TYPES)))
    fmt = col.get("format")
    if fmt and fmt not in _COLUMN_FORMATS:
        errs.append(errors.unsupported(f"{path}.format", fmt, list(_COLUMN_FORMATS)))
    jp = col.get("jsonPath")
    if not jp:
        errs.append(errors.required(f"{path}.jsonPath"))
    else:
        try:
            jsonpath.parse("{" + str(jp) + "}")
        except Exception as exc:  # any parse failure of the user's template
            errs.append(errors.invalid(f"{path}.jsonPath", jp, f"must be a valid JSON Path: {exc}"))
    return errs


# --- schemas -------------------------------------------------------------------------------------

_NESTED_FORBIDDEN = (
    ("type", "must be empty to be structural"), ("additionalProperties", "must be undefined to be structural"),
    ("default", "must be undefined to be structural"), ("title", "must be empty to be structural"),
    ("description", "must be empty to be structural"), ("externalDocs", "must be undefined to be structural"),
    ("x-kubernetes-preserve-unknown-fields", "must be false to be structural"),
    ("x-kubernetes-embedded-resource", "must be false to be structural"),
    ("x-kubernetes-int-or-string", "must be false to be structural"),
    ("x-kubernetes-list-map-keys", "must be empty to be structural"),
    ("x-kubernetes-list-type", "must be undefined to be structural"),
    ("x-kubernetes-map-type", "must be undefined to be structural"),
    ("x-kubernetes-validations", "must be empty to be structural"),
)


def validate_schema(schema: dict[str, Any], path: str, *, check_default: DefaultChecker | None = None) -> list[FE]:
    """The openAPIV3Schema of a version: OpenAPI rules, then structural-schema rules (sorted, as kube does)."""
    errs: list[FE] = []
    _openapi_rules(schema, path, "", errs, check_default)
    structural: list[FE] = []
    _structural(schema, path, "root", structural)
    structural.sort(key=lambda e: e.text())
    return errs + structural


def _openapi_rules(s: dict[str, Any], path: str, json_path: str, errs: list[FE],
                   check_default: DefaultChecker | None) -> None:
    t = s.get("type")
    if t == "null":
        errs.append(errors.forbidden(f"{path}.type", "type cannot be set to null, use nullable as an alternative"))
    elif t is not None and t not in _SCHEMA_TYPES:
        errs.append(errors.unsupported(f"{path}.type", t, list(_SCHEMA_TYPES)))
    if s.get("uniqueItems") is True:
        errs.append(errors.forbidden(f"{path}.uniqueItems",
                                     "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"))
    ap = s.get("additionalProperties")
    if ap is not None and _d(s.get("properties")) and (ap is False or isinstance(ap, dict)):
        errs.append(errors.forbidden(f"{path}.additionalProperties", "additionalProperties and properties are mutual exclusive"))
    if s.get("x-kubernetes-preserve-unknown-fields") is False:
        errs.append(errors.invalid(f"{path}.x-kubernetes-preserve-unknown-fields", False, "must be true or undefined"))
    pattern = s.get("pattern")
    if isinstance(pattern, str):
        try:
            re.compile(pattern)
        except re.error as exc:
            errs.append(errors.invalid(f"{path}.pattern", pattern, f"must be a valid regular expression, but isn't: {exc}"))
    lt = s.get("x-kubernetes-list-type")
    keys = s.get("x-kubernetes-list-map-keys")
    if lt is not None and lt not in ("atomic", "map", "set"):
        errs.append(errors.unsupported(f"{path}.x-kubernetes-list-type", lt, ["atomic", "map", "set"]))
    if lt == "map":
        if not _l(keys):
            errs.append(errors.required(f"{path}.x-kubernetes-list-map-keys",
                                        "must not be empty if x-kubernetes-list-type is map"))
        else:
            item_props = _d(_d(s.get("items")).get("properties"))
            if any(k not in item_props for k in _l(keys)):
                errs.append(errors.invalid(f"{path}.x-kubernetes-list-map-keys", "raw:[]string{" + ", ".join(
                    f'"{k}"' for k in _l(keys)) + "}", "entries must all be names of item properties"))
    elif keys is not None:
        errs.append(errors.forbidden(f"{path}.x-kubernetes-list-map-keys",
                                     "must not be set if x-kubernetes-list-type is not map"))
    mt = s.get("x-kubernetes-map-type")
    if mt is not None and mt not in ("atomic", "granular"):
        errs.append(errors.unsupported(f"{path}.x-kubernetes-map-type", mt, ["atomic", "granular"]))
    if "default" in s and check_default is not None and json_path != "metadata":
        for e in check_default(s["default"], s, ""):
            e.field = f"{path}.default" + (f".{e.field}" if e.field else "")
            errs.append(e)
    for k, sub in _d(s.get("properties")).items():
        if isinstance(sub, dict):
            _openapi_rules(sub, f"{path}.properties[{k}]", f"{json_path}.{k}" if json_path else k, errs, check_default)
    if isinstance(ap, dict):
        _openapi_rules(ap, f"{path}.additionalProperties", f"{json_path}[*]", errs, check_default)
    if isinstance(s.get("items"), dict):
        _openapi_rules(s["items"], f"{path}.items", f"{json_path}[*]", errs, check_default)
    for comb in ("allOf", "anyOf", "oneOf"):
        for i, sub in enumerate(_l(s.get(comb))):
            if isinstance(sub, dict):
                _openapi_rules(sub, f"{path}.{comb}[{i}]", json_path, errs, None)
    if isinstance(s.get("not"), dict):
        _openapi_rules(s["not"], f"{path}.not", json_path, errs, None)


def _is_int_or_string_anyof(s: dict[str, Any]) -> bool:
    any_of = _l(s.get("anyOf"))
    return len(any_of) == 2 and any_of[0] == {"type": "integer"} and any_of[1] == {"type": "string"}


def _structural(s: dict[str, Any], path: str, level: str, errs: list[FE]) -> None:
    t = s.get("type") or ""
    if t == "array" and not isinstance(s.get("items"), dict):
        errs.append(errors.required(f"{path}.items", "must be specified"))
    if isinstance(s.get("items"), dict):
        _structural(s["items"], f"{path}.items", "item", errs)
    for k, sub in _d(s.get("properties")).items():
        if isinstance(sub, dict):
            _structural(sub, f"{path}.properties[{k}]", "field", errs)
    ap = s.get("additionalProperties")
    if ap is not None and ap is not False:
        if level == "root":
            errs.append(errors.forbidden(f"{path}.additionalProperties", "must not be used at the root"))
        if isinstance(ap, dict):
            _structural(ap, f"{path}.additionalProperties", "field", errs)
    ios = bool(s.get("x-kubernetes-int-or-string"))
    puf = bool(s.get("x-kubernetes-preserve-unknown-fields"))
    embedded = bool(s.get("x-kubernetes-embedded-resource"))
    if ios and puf:
        errs.append(errors.invalid(f"{path}.x-kubernetes-preserve-unknown-fields", True,
                                   "must be false if x-kubernetes-int-or-string is true"))
    if ios and embedded:
        errs.append(errors.invalid(f"{path}.x-kubernetes-embedded-resource", True,
                                   "must be false if x-kubernetes-int-or-string is true"))
    skip_any_of = ios and _is_int_or_string_anyof(s)
    for comb in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(_l(s.get(comb))):
            if comb == "anyOf" and skip_any_of:
                continue
            if comb == "allOf" and i == 0 and ios and isinstance(sub, dict) and _is_int_or_string_anyof(sub):
                continue
            if isinstance(sub, dict):
                _nested(sub, f"{path}.{comb}[{i}]", errs)
    if isinstance(s.get("not"), dict):
        _nested(s["not"], f"{path}.not", errs)
    if embedded and t != "object":
        if not t:
            errs.append(errors.required(f"{path}.type", "must be object if x-kubernetes-embedded-resource is true"))
        else:
            errs.append(errors.invalid(f"{path}.type", t, "must be object if x-kubernetes-embedded-resource is true"))
    elif not t and not ios and not puf:
        detail = {"root": "must not be empty at the root", "item": "must not be empty for specified array items",
                  "field": "must not be empty for specified object fields"}[level]
        errs.append(errors.required(f"{path}.type", detail))
    if embedded and ap is not None:
        errs.append(errors.forbidden(f"{path}.additionalProperties", "must not be used if x-kubernetes-embedded-resource is set"))
    if level == "root" and t and t != "object":
        errs.append(errors.invalid(f"{path}.type", t, "must be object at the root"))
    props = _d(s.get("properties"))
    check_meta = level == "root" or embedded
    for field in ("kind", "apiVersion"):
        if field in props and check_meta and _d(props[field]).get("type") != "string":
            errs.append(errors.invalid(f"{path}.properties[{field}].type", _d(props[field]).get("type") or "",
                                       "must be string"))
    if "metadata" in props:
        meta = _d(props["metadata"])
        mp = f"{path}.properties[metadata]"
        if check_meta and meta.get("type") != "object":
            errs.append(errors.invalid(f"{mp}.type", meta.get("type") or "", "must be object"))
        if level == "root":
            rest = {k: v for k, v in meta.items() if k not in ("type", "default", "description")}
            mprops = _d(rest.pop("properties", None))
            if rest or any(k not in ("name", "generateName") for k in mprops):
                errs.append(errors.forbidden(mp, "must not specify anything other than name and generateName, "
                                                 "but metadata is implicitly specified"))
    if embedded and not puf and not props:
        errs.append(errors.required(f"{path}.properties", "must not be empty if x-kubernetes-embedded-resource is "
                                                          "true without x-kubernetes-preserve-unknown-fields"))


def _nested(s: dict[str, Any], path: str, errs: list[FE]) -> None:
    """Value validations under allOf/anyOf/oneOf/not may only restrict values, never add structure."""
    for comb in ("anyOf", "allOf", "oneOf"):
        for i, sub in enumerate(_l(s.get(comb))):
            if isinstance(sub, dict):
                _nested(sub, f"{path}.{comb}[{i}]", errs)
    if isinstance(s.get("not"), dict):
        _nested(s["not"], f"{path}.not", errs)
    if isinstance(s.get("items"), dict):
        _nested(s["items"], f"{path}.items", errs)
    for k, sub in _d(s.get("properties")).items():
        if isinstance(sub, dict):
            _nested(sub, f"{path}.properties[{k}]", errs)
    for key, detail in _NESTED_FORBIDDEN:
        v = s.get(key)
        if v is None or v is False or v == "" or v == []:
            continue
        errs.append(errors.forbidden(f"{path}.{key}", detail))
    if s.get("nullable") is True:
        errs.append(errors.forbidden(f"{path}.nullable", "must be false to be structural"))
    if "metadata" in _d(s.get("properties")):
        errs.append(errors.forbidden(f"{path}.properties[metadata]", "must not be specified in a nested context"))
