"""ValidatingAdmissionPolicy semantics as pure functions: defaults, validation, request matching and decisions."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pocketkube.api import cel, errors, names
from pocketkube.api import validation_meta as vm

GROUP = "admissionregistration.k8s.io"
POLICY = "ValidatingAdmissionPolicy"
BINDING = "ValidatingAdmissionPolicyBinding"

FE = errors.FieldError
_OPERATIONS = ["*", "CONNECT", "CREATE", "DELETE", "UPDATE"]
_SCOPES = ["*", "Cluster", "Namespaced"]
_REASONS = ["Forbidden", "Invalid", "RequestEntityTooLarge"]
_ACTIONS = ["Audit", "Deny", "Warn"]
_MAX_AUDIT_ANNOTATIONS = 20
_MAX_VALUE_EXPRESSION = 5 * 1024
_MAX_MESSAGE = 5 * 1024
MAX_AUDIT_VALUE = 10 * 1024


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What a request does, as admission.Attributes: the resource addressed and the objects involved."""

    operation: str
    group: str
    version: str
    resource: str
    subresource: str
    kind: str
    namespace: str
    name: str
    obj: dict[str, Any] | None
    old: dict[str, Any] | None
    # Other (group, version, resource) serving the same objects, for matchPolicy Equivalent.
    equivalents: tuple[tuple[str, str, str], ...] = ()

    @property
    def is_namespace(self) -> bool:
        return (self.group, self.resource) == ("", "namespaces")


# --- defaults ---------------------------------------------------------------------------------------------

def _default_match(mr: Any) -> None:
    if not isinstance(mr, dict):
        return
    mr.setdefault("matchPolicy", "Equivalent")
    mr.setdefault("namespaceSelector", {})
    mr.setdefault("objectSelector", {})
    for key in ("resourceRules", "excludeResourceRules"):
        for rule in vm.dicts(mr.get(key)):
            rule.setdefault("scope", "*")


def default_policy(obj: dict[str, Any]) -> None:
    """failurePolicy Fail, matchPolicy Equivalent, empty selectors and rule scope `*`, as kube defaults them."""
    spec = obj.get("spec")
    if isinstance(spec, dict):
        spec.setdefault("failurePolicy", "Fail")
        _default_match(spec.get("matchConstraints"))


def default_binding(obj: dict[str, Any]) -> None:
    spec = obj.get("spec")
    if isinstance(spec, dict):
        _default_match(spec.get("matchResources"))


# --- validation -------------------------------------------------------------------------------------------

def _variables(*, params: bool, authorizer: bool = True) -> tuple[str, ...]:
    return tuple(v for v in cel.VAP_VARIABLES
                 if (params or v != "params") and (authorizer or v != "authorizer"))


def _compile_error(field: str, expression: str, *, variables: tuple[str, ...], returns: tuple[str, ...],
                   stored: set[str]) -> list[FE]:
    # Expressions already stored may keep compiling as they did (kube's StoredExpressions environment).
    if expression in stored:
        return []
    try:
        cel.compile(expression, variables=variables, returns=returns)
    except cel.CompileError as e:
        return [errors.invalid(field, expression, e.detail)]
    return []


def _param_kind(pk: Any, field: str) -> list[FE]:
    pk = vm.as_dict(pk)
    out: list[FE] = []
    api_version = str(pk.get("apiVersion") or "")
    if not api_version:
        out.append(errors.required(f"{field}.apiVersion"))
    elif api_version.count("/") > 1:
        out.append(errors.invalid(f"{field}.apiVersion", api_version, f"unexpected GroupVersion string: {api_version}"))
    else:
        group, _, version = api_version.rpartition("/")
        if group and (msgs := names.is_dns1123_subdomain(group)):
            out.append(errors.invalid(f"{field}.apiVersion", group, ",".join(msgs)))
        if not version:
            out.append(errors.invalid(f"{field}.apiVersion", api_version, "version must be specified"))
        elif msgs := names.is_dns1035_label(version):
            out.append(errors.invalid(f"{field}.apiVersion", version, ",".join(msgs)))
    kind = str(pk.get("kind") or "")
    if not kind:
        out.append(errors.required(f"{field}.kind"))
    elif msgs := names.is_dns1035_label(kind.lower()):
        out.append(errors.invalid(f"{field}.kind", kind, "may have mixed case, but should otherwise match: "
                                  + ",".join(msgs)))
    return out


def _wildcard_list(values: list[Any], field: str, what: str) -> list[FE]:
    if len(values) > 1 and "*" in values:
        return [errors.invalid(field, vm.go_string_list(values),
                               f"if '*' is present, must not specify other {what}")]
    return []


def _resources(resources: list[Any], field: str) -> list[FE]:
    out: list[FE] = []
    if not resources:
        out.append(errors.required(field))
    with_wild_sub: set[str] = set()
    wild_res_subs: set[str] = set()
    double = single = plain = False
    for i, rs in enumerate(str(r) for r in resources):
        if not rs:
            out.append(errors.required(f"{field}[{i}]"))
            continue
        double = double or rs == "*/*"
        single = single or rs == "*"
        res, sep, sub = rs.partition("/")
        if not sep:
            plain = rs != "*"
            continue
        if res in with_wild_sub:
            out.append(errors.invalid(f"{field}[{i}]", rs, f"if '{res}/*' is present, must not specify {rs}"))
        if sub in wild_res_subs:
            out.append(errors.invalid(f"{field}[{i}]", rs, f"if '*/{sub}' is present, must not specify {rs}"))
        if sub == "*":
            with_wild_sub.add(res)
        if res == "*":
            wild_res_subs.add(sub)
    raw = vm.go_string_list(resources)
    if len(resources) > 1 and double:
        out.append(errors.invalid(field, raw, "if '*/*' is present, must not specify other resources"))
    if single and plain:
        out.append(errors.invalid(field, raw, "if '*' is present, must not specify other resources without subresources"))
    return out


def _rule(rule: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    ops = vm.as_list(rule.get("operations"))
    if not ops:
        out.append(errors.required(f"{field}.operations"))
    out += _wildcard_list(ops, f"{field}.operations", "operations")
    out += [errors.unsupported(f"{field}.operations[{i}]", op, _OPERATIONS)
            for i, op in enumerate(ops) if op not in _OPERATIONS]
    groups, versions = vm.as_list(rule.get("apiGroups")), vm.as_list(rule.get("apiVersions"))
    if not groups:
        out.append(errors.required(f"{field}.apiGroups"))
    out += _wildcard_list(groups, f"{field}.apiGroups", "API groups")
    if not versions:
        out.append(errors.required(f"{field}.apiVersions"))
    out += _wildcard_list(versions, f"{field}.apiVersions", "API versions")
    out += [errors.required(f"{field}.apiVersions[{i}]") for i, v in enumerate(versions) if not v]
    out += _resources(vm.as_list(rule.get("resources")), f"{field}.resources")
    scope = rule.get("scope")
    if scope is not None and scope not in _SCOPES:
        out.append(errors.unsupported(f"{field}.scope", scope, _SCOPES))
    seen: set[str] = set()
    for i, name in enumerate(str(n) for n in vm.as_list(rule.get("resourceNames"))):
        out += [errors.invalid(f"{field}.resourceNames[{i}]", name, m) for m in names.is_path_segment_name(name)]
        if name in seen:
            out.append(errors.duplicate(f"{field}.resourceNames[{i}]", name))
        seen.add(name)
    return out


def _match_resources(mr: Any, field: str) -> list[FE]:
    if mr is None:
        return []
    mr = vm.as_dict(mr)
    out: list[FE] = []
    policy = mr.get("matchPolicy")
    if policy is None:
        out.append(errors.required(f"{field}.matchPolicy"))
    elif policy not in ("Equivalent", "Exact"):
        out.append(errors.unsupported(f"{field}.matchPolicy", policy, ["Equivalent", "Exact"]))
    for key in ("namespaceSelector", "objectSelector"):
        if mr.get(key) is None:
            out.append(errors.required(f"{field}.{key}"))
        else:
            out += vm.validate_label_selector(mr[key], f"{field}.{key}")
    for key in ("resourceRules", "excludeResourceRules"):
        for i, rule in enumerate(vm.dicts(mr.get(key))):
            out += _rule(rule, f"{field}.{key}[{i}]")
    return out


def _stored(old: dict[str, Any] | None) -> set[str]:
    if old is None:
        return set()
    spec = vm.as_dict(old.get("spec"))
    out = {str(c.get("expression")) for c in vm.dicts(spec.get("matchConditions"))}
    for v in vm.dicts(spec.get("validations")):
        out |= {str(v.get("expression")), str(v.get("messageExpression") or "")}
    out |= {str(a.get("valueExpression")) for a in vm.dicts(spec.get("auditAnnotations"))}
    out |= {str(v.get("expression")) for v in vm.dicts(spec.get("variables"))}
    return out


def _match_conditions(conditions: list[dict[str, Any]], field: str, *, params: bool, stored: set[str]) -> list[FE]:
    out: list[FE] = []
    if len(conditions) > 64:
        out.append(errors.too_many(field, len(conditions), 64))
    seen: set[str] = set()
    for i, mc in enumerate(conditions):
        expr = str(mc.get("expression") or "")
        if not expr.strip():
            out.append(errors.required(f"{field}[{i}].expression"))
        else:
            out += _compile_error(f"{field}[{i}].expression", expr.strip(), variables=_variables(params=params),
                                  returns=("bool",), stored=stored)
        name = str(mc.get("name") or "")
        if not name:
            out.append(errors.required(f"{field}[{i}].name"))
        else:
            out += [errors.invalid(f"{field}[{i}].name", name, m) for m in names.is_qualified_name(name)]
            if name in seen:
                out.append(errors.duplicate(f"{field}[{i}].name", name))
            seen.add(name)
    return out


def _validation(v: dict[str, Any], field: str, *, params: bool, stored: set[str]) -> list[FE]:
    out: list[FE] = []
    expr, msg, msg_expr = (str(v.get(k) or "") for k in ("expression", "message", "messageExpression"))
    if not expr.strip():
        out.append(errors.required(f"{field}.expression", "expression is not specified"))
    else:
        out += _compile_error(f"{field}.expression", expr, variables=_variables(params=params), returns=("bool",),
                              stored=stored)
    if msg_expr and not msg_expr.strip():
        out.append(errors.invalid(f"{field}.messageExpression", msg_expr, "must be non-empty if specified"))
    elif msg_expr.strip():
        out += _compile_error(f"{field}.messageExpression", msg_expr,
                              variables=_variables(params=params, authorizer=False), returns=("string",), stored=stored)
    if msg and not msg.strip():
        out.append(errors.invalid(f"{field}.message", msg, "message must be non-empty if specified"))
    elif "\n" in msg.strip() or "\r" in msg.strip():
        out.append(errors.invalid(f"{field}.message", msg, "message must not contain line breaks"))
    reason = v.get("reason")
    if reason is not None and reason not in _REASONS:
        out.append(errors.unsupported(f"{field}.reason", reason, _REASONS))
    return out


def validate_policy(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[FE]:
    """ValidateValidatingAdmissionPolicy(Update) for the spec: rules, selectors and every CEL expression."""
    spec = vm.as_dict(obj.get("spec"))
    stored = _stored(old)
    out: list[FE] = []
    fp = spec.get("failurePolicy")
    if fp is None:
        out.append(errors.required("spec.failurePolicy"))
    elif fp not in ("Fail", "Ignore"):
        out.append(errors.unsupported("spec.failurePolicy", fp, ["Fail", "Ignore"]))
    params = spec.get("paramKind") is not None
    if params:
        out += _param_kind(spec["paramKind"], "spec.paramKind")
    mc = spec.get("matchConstraints")
    if mc is None:
        out.append(errors.required("spec.matchConstraints"))
    else:
        out += _match_resources(mc, "spec.matchConstraints")
        if not vm.as_list(vm.as_dict(mc).get("resourceRules")):
            out.append(errors.required("spec.matchConstraints.resourceRules"))
    old_spec = vm.as_dict((old or {}).get("spec"))
    unchanged = old is not None and all(old_spec.get(k) == spec.get(k) for k in ("paramKind", "matchConditions"))
    if not unchanged:
        out += _match_conditions(vm.dicts(spec.get("matchConditions")), "spec.matchConditions", params=params,
                                 stored=stored)
    for i, var in enumerate(vm.dicts(spec.get("variables"))):
        f = f"spec.variables[{i}]"
        name, expr = str(var.get("name") or ""), str(var.get("expression") or "")
        if not name.strip():
            out.append(errors.required(f"{f}.name", "name is not specified"))
        elif not cel.is_identifier(name):
            out.append(errors.invalid(f"{f}.name", name, "name is not a valid CEL identifier"))
        if not expr.strip():
            out.append(errors.required(f"{f}.expression", "expression is not specified"))
        else:
            out += _compile_error(f"{f}.expression", expr, variables=_variables(params=params), returns=(),
                                  stored=stored)
    validations, annotations = vm.dicts(spec.get("validations")), vm.dicts(spec.get("auditAnnotations"))
    if not validations and not annotations:
        detail = "validations or auditAnnotations must contain at least one item"
        return out + [errors.required("spec.validations", detail), errors.required("spec.auditAnnotations", detail)]
    for i, v in enumerate(validations):
        out += _validation(v, f"spec.validations[{i}]", params=params, stored=stored)
    if len(annotations) > _MAX_AUDIT_ANNOTATIONS:
        out.append(errors.invalid("spec.auditAnnotations", "raw:" + str(len(annotations)) + " items",
                                  f"must not have more than {_MAX_AUDIT_ANNOTATIONS} auditAnnotations"))
    policy_name = str(vm.as_dict(obj.get("metadata")).get("name") or "")
    keys: set[str] = set()
    for i, a in enumerate(annotations):
        f = f"spec.auditAnnotations[{i}]"
        key, value = str(a.get("key") or ""), str(a.get("valueExpression") or "")
        if policy_name:
            out += [errors.invalid(f"{f}.key", f"{policy_name}/{key}", m)
                    for m in names.is_qualified_name(f"{policy_name}/{key}")]
        else:
            out.append(errors.invalid(f"{f}.key", key, "requires metadata.name be non-empty"))
        if not value.strip():
            out.append(errors.required(f"{f}.valueExpression", "valueExpression is not specified"))
        elif len(value.strip()) > _MAX_VALUE_EXPRESSION:
            out.append(errors.required(f"{f}.valueExpression", f"must not exceed {_MAX_VALUE_EXPRESSION} bytes in length"))
        elif value not in stored:
            try:
                cel.compile(value.strip(), variables=_variables(params=params), returns=("string", "null_type"))
            except cel.CompileError as e:
                out.append(errors.invalid(f"{f}.valueExpression", value, e.detail))
        if key in keys:
            out.append(errors.duplicate(f"{f}.key", key))
        keys.add(key)
    return out


def validate_binding(obj: dict[str, Any]) -> list[FE]:
    """ValidateValidatingAdmissionPolicyBinding for the spec: policyName, paramRef, matchResources, actions."""
    spec = vm.as_dict(obj.get("spec"))
    out: list[FE] = []
    policy = str(spec.get("policyName") or "")
    if not policy:
        out.append(errors.required("spec.policyName"))
    else:
        out += [errors.invalid("spec.policyName", policy, m) for m in names.is_dns1123_subdomain(policy)]
    pr = spec.get("paramRef")
    if isinstance(pr, dict):
        name, sel = str(pr.get("name") or ""), pr.get("selector")
        if name:
            out += [errors.invalid("spec.paramRef.name", name, m) for m in names.is_path_segment_name(name)]
            if sel is not None:
                out.append(errors.forbidden("spec.paramRef.name", "name and selector are mutually exclusive"))
        if sel is not None:
            out += vm.validate_label_selector(sel, "spec.paramRef.selector")
            if name:
                out.append(errors.forbidden("spec.paramRef.selector", "name and selector are mutually exclusive"))
        if not name and sel is None:
            out.append(errors.required("spec.paramRef", "one of name or selector must be specified"))
        action = pr.get("parameterNotFoundAction")
        if not action:
            out.append(errors.required("spec.paramRef.parameterNotFoundAction"))
        elif action not in ("Deny", "Allow"):
            out.append(errors.unsupported("spec.paramRef.parameterNotFoundAction", action, ["Deny", "Allow"]))
    out += _match_resources(spec.get("matchResources"), "spec.matchResources")
    actions = vm.as_list(spec.get("validationActions"))
    seen: set[str] = set()
    for i, a in enumerate(actions):
        if a not in _ACTIONS:
            out.append(errors.unsupported(f"spec.validationActions[{i}]", a, _ACTIONS))
        if a in seen:
            out.append(errors.duplicate(f"spec.validationActions[{i}]", a))
        seen.add(str(a))
    if "Deny" in seen and "Warn" in seen:
        out.append(errors.invalid("spec.validationActions", vm.go_string_list(actions),
                                  "must not contain both Deny and Warn (repeating the same validation failure "
                                  "information in the API response and headers serves no purpose)"))
    if not seen:
        out.append(errors.required("spec.validationActions", "at least one validation action is required"))
    return out


# --- matching ---------------------------------------------------------------------------------------------

def _has(values: Any, want: str) -> bool:
    vals = vm.as_list(values)
    return "*" in vals or want in vals


def rule_matches(rule: Mapping[str, Any], a: Attributes, gvr: tuple[str, str, str] | None = None) -> bool:
    """rules.Matcher: operation, group, version, resource/subresource (with wildcards) and scope."""
    group, version, resource = gvr or (a.group, a.version, a.resource)
    if not (_has(rule.get("operations"), a.operation) and _has(rule.get("apiGroups"), group)
            and _has(rule.get("apiVersions"), version)):
        return False
    for rs in vm.as_list(rule.get("resources")):
        res, _, sub = str(rs).partition("/")
        if res in ("*", resource) and sub in ("*", a.subresource):
            break
    else:
        return False
    scope = rule.get("scope") or "*"
    is_ns = (group, resource) == ("", "namespaces")
    if scope == "Namespaced":
        return not is_ns and bool(a.namespace)
    if scope == "Cluster":
        return is_ns or not a.namespace
    return True


def matches_rules(rules: list[dict[str, Any]], policy: str, a: Attributes) -> tuple[str, str, str] | None:
    """The (group, version, resource) a rule list matches the request as, or None (matchesResourceRules)."""
    for rule in rules:
        if rule_matches(rule, a):
            wanted = vm.as_list(rule.get("resourceNames"))
            if not wanted or a.name in wanted:
                return a.group, a.version, a.resource
    if policy != "Equivalent":
        return None
    for rule in rules:
        for eq in a.equivalents:
            if eq[1] != a.version and rule_matches(rule, a, eq):
                return eq
    return None


def _labels(obj: Any) -> dict[str, Any]:
    return vm.as_dict(vm.as_dict(vm.as_dict(obj).get("metadata")).get("labels"))


class NamespaceMissing(Exception):
    """The request's namespace is not there to match a namespaceSelector against."""


def _namespace_matches(sel: Any, a: Attributes, ns: Mapping[str, Any] | None) -> bool:
    if not a.namespace and not a.is_namespace:
        return True  # cluster-scoped objects other than namespaces are never exempted
    if sel is None or vm.selector_is_empty(sel):
        return True
    if a.is_namespace and not a.subresource and a.operation in ("CREATE", "UPDATE"):
        return vm.selector_matches(sel, _labels(a.obj))
    if ns is None:
        raise NamespaceMissing(a.namespace or a.name)
    return vm.selector_matches(sel, _labels(ns))


def _object_matches(sel: Any, a: Attributes) -> bool:
    if sel is None or vm.selector_is_empty(sel):
        return True
    return any(o is not None and vm.selector_matches(sel, _labels(o)) for o in (a.obj, a.old))


def match(mr: Mapping[str, Any] | None, a: Attributes, namespace: Mapping[str, Any] | None
          ) -> tuple[str, str, str] | None:
    """The matched (group, version, resource) when matchResources select the request, else None.

    Raises NamespaceMissing when only the namespace's absence stands between the request and a match."""
    if mr is None:
        return a.group, a.version, a.resource
    try:
        ns_ok: bool | None = _namespace_matches(mr.get("namespaceSelector"), a, namespace)
    except NamespaceMissing:
        ns_ok = None
    if ns_ok is False or not _object_matches(mr.get("objectSelector"), a):
        return None
    policy = str(mr.get("matchPolicy") or "Equivalent")
    if matches_rules(vm.dicts(mr.get("excludeResourceRules")), policy, a) is not None:
        return None
    rules = vm.dicts(mr.get("resourceRules"))
    matched = matches_rules(rules, policy, a) if rules else (a.group, a.version, a.resource)
    if matched is not None and ns_ok is None:
        raise NamespaceMissing(a.namespace or a.name)
    return matched
