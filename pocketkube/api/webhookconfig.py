"""Defaults and validation of Mutating/ValidatingWebhookConfiguration (admissionregistration.k8s.io/v1)."""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

from pocketkube.api import cel, errors, names
from pocketkube.api import validation_meta as vm

FE = errors.FieldError

_OPERATIONS = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]
_SCOPES = ["*", "Cluster", "Namespaced"]
_FAILURE_POLICIES = ["Fail", "Ignore"]
_MATCH_POLICIES = ["Equivalent", "Exact"]
_SIDE_EFFECTS = ["None", "NoneOnDryRun"]   # v1 accepts only side-effect-free classes
_REINVOCATION = ["IfNeeded", "Never"]
_REVIEW_VERSIONS = ["v1", "v1beta1"]
_URL_FORM = "; desired format: https://host[/path]"
_MAX_MATCH_CONDITIONS = 64


def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def apply_defaults(obj: dict[str, Any], *, mutating: bool) -> None:
    """kube's v1 defaults: Fail, Equivalent, empty selectors, 10s, Never, scope `*`, service port 443."""
    for hook in _l(obj.get("webhooks")):
        if not isinstance(hook, dict):
            continue
        hook.setdefault("failurePolicy", "Fail")
        hook.setdefault("matchPolicy", "Equivalent")
        if hook.get("namespaceSelector") is None:
            hook["namespaceSelector"] = {}
        if hook.get("objectSelector") is None:
            hook["objectSelector"] = {}
        if hook.get("timeoutSeconds") is None:
            hook["timeoutSeconds"] = 10
        if mutating and hook.get("reinvocationPolicy") is None:
            hook["reinvocationPolicy"] = "Never"
        for rule in _l(hook.get("rules")):
            if isinstance(rule, dict) and rule.get("scope") is None:
                rule["scope"] = "*"
        service = _d(_d(hook.get("clientConfig")).get("service"))
        if service and service.get("port") is None:
            service["port"] = 443


def validate(obj: dict[str, Any], *, mutating: bool) -> list[FE]:
    """Every field error of a webhook configuration, in kube's order."""
    out = vm.validate_metadata(obj.get("metadata"), namespaced=False, name_validator=names.name_is_dns_subdomain)
    seen: set[str] = set()
    for i, hook in enumerate(_l(obj.get("webhooks"))):
        path = f"webhooks[{i}]"
        h = _d(hook)
        name = h.get("name") or ""
        if name in seen:
            out.append(errors.duplicate(f"{path}.name", name))
        seen.add(name)
        out.extend(_webhook(h, path, mutating=mutating))
        out.extend(_review_versions(h.get("admissionReviewVersions"), f"{path}.admissionReviewVersions"))
    return out


def validate_update(new: dict[str, Any], old: dict[str, Any], *, mutating: bool) -> list[FE]:
    return vm.validate_metadata_update(new.get("metadata"), old.get("metadata")) + [
        e for e in validate(new, mutating=mutating) if not e.field.startswith("metadata.")]


def _fully_qualified(name: Any, path: str) -> list[FE]:
    if not name:
        return [errors.required(path)]
    errs = names.is_dns1123_subdomain(str(name))
    if errs:
        return [errors.invalid(path, name, ",".join(errs))]
    if len(str(name).split(".")) < 3:
        return [errors.invalid(path, name, "should be a domain with at least three segments separated by dots")]
    return []


def _webhook(h: dict[str, Any], path: str, *, mutating: bool) -> list[FE]:
    out = _fully_qualified(h.get("name"), f"{path}.name")
    for j, rule in enumerate(_l(h.get("rules"))):
        out.extend(_rule(_d(rule), f"{path}.rules[{j}]"))
    for key, allowed in (("failurePolicy", _FAILURE_POLICIES), ("matchPolicy", _MATCH_POLICIES)):
        if h.get(key) is not None and h[key] not in allowed:
            out.append(errors.unsupported(f"{path}.{key}", h[key], allowed))
    side = h.get("sideEffects")
    if side is None:
        out.append(errors.required(f"{path}.sideEffects", "must specify one of " + ", ".join(_SIDE_EFFECTS)))
    elif side not in _SIDE_EFFECTS:
        out.append(errors.unsupported(f"{path}.sideEffects", side, _SIDE_EFFECTS))
    timeout = h.get("timeoutSeconds")
    if timeout is not None and (not isinstance(timeout, int) or not 1 <= timeout <= 30):
        out.append(errors.invalid(f"{path}.timeoutSeconds", timeout, "the timeout value must be between 1 and 30 seconds"))
    if mutating and h.get("reinvocationPolicy") is not None and h["reinvocationPolicy"] not in _REINVOCATION:
        out.append(errors.unsupported(f"{path}.reinvocationPolicy", h["reinvocationPolicy"], _REINVOCATION))
    for key in ("namespaceSelector", "objectSelector"):
        if h.get(key) is not None:
            out.extend(vm.validate_label_selector(h[key], f"{path}.{key}"))
    out.extend(_client_config(_d(h.get("clientConfig")), f"{path}.clientConfig"))
    out.extend(_match_conditions(h.get("matchConditions"), f"{path}.matchConditions"))
    return out


def _go_slice(values: list[Any], go_type: str = "string") -> str:
    # field.Invalid prints a Go slice with %#v.
    return "raw:[]" + go_type + "{" + ", ".join(json.dumps(str(v)) for v in values) + "}"


def _wildcard_list(values: list[Any], path: str, what: str, go_type: str = "string") -> list[FE]:
    if not values:
        return [errors.required(path)]
    if len(values) > 1 and "*" in values:
        return [errors.invalid(path, _go_slice(values, go_type), f"if '*' is present, must not specify other {what}")]
    return []


def _rule(rule: dict[str, Any], path: str) -> list[FE]:
    ops = _l(rule.get("operations"))
    out = _wildcard_list(ops, f"{path}.operations", "operations", "admissionregistration.OperationType")
    for i, op in enumerate(ops):
        if op not in _OPERATIONS:
            out.append(errors.unsupported(f"{path}.operations[{i}]", op, _OPERATIONS))
    out.extend(_wildcard_list(_l(rule.get("apiGroups")), f"{path}.apiGroups", "API groups"))
    versions = _l(rule.get("apiVersions"))
    out.extend(_wildcard_list(versions, f"{path}.apiVersions", "API versions"))
    out.extend(errors.required(f"{path}.apiVersions[{i}]") for i, v in enumerate(versions) if not v)
    out.extend(_resources(_l(rule.get("resources")), f"{path}.resources"))
    if rule.get("scope") is not None and rule["scope"] not in _SCOPES:
        out.append(errors.unsupported(f"{path}.scope", rule["scope"], _SCOPES))
    return out


def _resources(items: list[Any], path: str) -> list[FE]:
    if not items:
        return [errors.required(path)]
    out: list[FE] = []
    wildcard_sub: set[str] = set()     # x/*
    wildcard_res: set[str] = set()     # */x
    single = plain = False
    for i, item in enumerate(items):
        text = str(item or "")
        if not text:
            out.append(errors.required(f"{path}[{i}]"))
            continue
        single = single or text == "*"
        res, slash, sub = text.partition("/")
        if not slash:
            plain = plain or text != "*"
            continue
        if res in wildcard_sub:
            out.append(errors.invalid(f"{path}[{i}]", text, f"if '{res}/*' is present, must not specify {text}"))
        if sub in wildcard_res:
            out.append(errors.invalid(f"{path}[{i}]", text, f"if '*/{sub}' is present, must not specify {text}"))
        if sub == "*":
            wildcard_sub.add(res)
        if res == "*":
            wildcard_res.add(sub)
    if len(items) > 1 and "*/*" in items:
        out.append(errors.invalid(path, _go_slice(items), "if '*/*' is present, must not specify other resources"))
    if single and plain:
        out.append(errors.invalid(path, _go_slice(items), "if '*' is present, must not specify other resources without "
                                               "subresources"))
    return out


def _client_config(cc: dict[str, Any], path: str) -> list[FE]:
    url, service = cc.get("url"), cc.get("service")
    if (url is None) == (service is None):
        return [errors.required(path, "exactly one of url or service is required")]
    if url is not None:
        return _url(str(url), f"{path}.url")
    return _service(_d(service), f"{path}.service")


def _url(url: str, path: str) -> list[FE]:
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError as e:
        return [errors.required(path, f"url must be a valid URL: {e}{_URL_FORM}")]
    out: list[FE] = []
    if u.scheme != "https":
        out.append(errors.invalid(path, u.scheme, "'https' is the only allowed URL scheme" + _URL_FORM))
    if not u.netloc.rpartition("@")[2]:
        out.append(errors.invalid(path, "", "host must be specified" + _URL_FORM))
    if "@" in u.netloc:
        out.append(errors.invalid(path, u.netloc.rpartition("@")[0], "user information is not permitted in the URL"))
    if u.fragment:
        out.append(errors.invalid(path, u.fragment, "fragments are not permitted in the URL"))
    if u.query:
        out.append(errors.invalid(path, u.query, "query parameters are not permitted in the URL"))
    return out


def _service(svc: dict[str, Any], path: str) -> list[FE]:
    out: list[FE] = []
    if not svc.get("name"):
        out.append(errors.required(f"{path}.name", "service name is required"))
    if not svc.get("namespace"):
        out.append(errors.required(f"{path}.namespace", "service namespace is required"))
    port = svc.get("port", 443)
    port_errs = names.is_valid_port_num(port) if isinstance(port, int) else ["must be an integer"]
    if port_errs:
        out.append(errors.invalid(f"{path}.port", port, "port is not valid: " + ", ".join(port_errs)))
    url_path = svc.get("path")
    if not isinstance(url_path, str) or url_path in ("", "/"):
        return out
    if url_path == "//":
        return [*out, errors.invalid(f"{path}.path", url_path, "segment[0] may not be empty")]
    if not url_path.startswith("/"):
        out.append(errors.invalid(f"{path}.path", url_path, "must start with a '/'"))
    steps = url_path[1:]
    steps = steps[:-1] if steps.endswith("/") else steps
    for i, step in enumerate(steps.split("/")):
        if not step:
            out.append(errors.invalid(f"{path}.path", url_path, f"segment[{i}] may not be empty"))
            continue
        out.extend(errors.invalid(f"{path}.path", url_path, f"segment[{i}]: {e}")
                   for e in names.is_dns1123_subdomain(step))
    return out


def _review_versions(versions: Any, path: str) -> list[FE]:
    items = _l(versions)
    if not items:
        return [errors.required(path, "must specify one of " + ", ".join(_REVIEW_VERSIONS))]
    out: list[FE] = []
    seen: set[str] = set()
    for i, v in enumerate(items):
        if v in seen:
            out.append(errors.invalid(f"{path}[{i}]", v, "duplicate version"))
            continue
        seen.add(v)
        out.extend(errors.invalid(f"{path}[{i}]", v, e) for e in names.is_dns1035_label(str(v)))
    if not any(v in _REVIEW_VERSIONS for v in items):
        out.append(errors.invalid(path, _go_slice(items), "must include at least one of " + ", ".join(_REVIEW_VERSIONS)))
    return out


def _match_conditions(conditions: Any, path: str) -> list[FE]:
    items = _l(conditions)
    out: list[FE] = []
    if len(items) > _MAX_MATCH_CONDITIONS:
        out.append(errors.too_many(path, len(items), _MAX_MATCH_CONDITIONS))
    seen: set[str] = set()
    for i, raw in enumerate(items):
        c = _d(raw)
        name, expression = c.get("name") or "", c.get("expression") or ""
        if not name:
            out.append(errors.required(f"{path}[{i}].name"))
        elif name in seen:
            out.append(errors.duplicate(f"{path}[{i}].name", name))
        else:
            out.extend(errors.invalid(f"{path}[{i}].name", name, e) for e in names.is_qualified_name(str(name)))
        seen.add(name)
        if not expression:
            out.append(errors.required(f"{path}[{i}].expression"))
            continue
        try:
            cel.compile(str(expression), variables=cel.WEBHOOK_VARIABLES, returns=("bool",))
        except cel.CompileError as e:
            out.append(errors.invalid(f"{path}[{i}].expression", expression, e.detail))
    return out
