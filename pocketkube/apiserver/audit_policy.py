"""Audit policy: decode and validate an audit.k8s.io/v1 Policy, and decide each request's level by its rules."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import yaml

from pocketkube.api import errors, names
from pocketkube.apiserver import context, requestinfo

log = logging.getLogger("pocketkube.apiserver.audit")

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")


class PolicyError(Exception):
    """An audit Policy kube-apiserver would refuse to start with; the message names the field."""


@dataclasses.dataclass(frozen=True)
class GroupResources:
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class Rule:
    """One PolicyRule: empty selectors match everything."""

    level: str
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool | None = None


@dataclasses.dataclass(frozen=True)
class Decision:
    """What the policy says about one request."""

    level: str
    omit_stages: frozenset[str] = frozenset()
    omit_managed_fields: bool = False


NONE = Decision("None")


@dataclasses.dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    omit_stages: tuple[str, ...] = ()
    omit_managed_fields: bool = False

    def evaluate(self, user: context.User | None, info: requestinfo.RequestInfo, verb: str) -> Decision:
        """The first matching rule's level (None when nothing matches), as kube's policy checker."""
        for rule in self.rules:
            if rule_matches(rule, user, info, verb):
                omit_mf = self.omit_managed_fields if rule.omit_managed_fields is None else rule.omit_managed_fields
                return Decision(rule.level, frozenset(self.omit_stages) | frozenset(rule.omit_stages), omit_mf)
        return NONE


def rule_matches(rule: Rule, user: context.User | None, info: requestinfo.RequestInfo, verb: str) -> bool:
    """policy.ruleMatches: users, groups and verbs, then resources/namespaces or non-resource URLs."""
    if rule.users and (user is None or user.name not in rule.users):
        return False
    if rule.user_groups and (user is None or not any(g in rule.user_groups for g in user.groups)):
        return False
    if rule.verbs and verb not in rule.verbs:
        return False
    if rule.namespaces or rule.resources:
        return _matches_resource(rule, info)
    if rule.non_resource_urls:
        return not info.is_resource_request and any(_path_matches(info.path, s) for s in rule.non_resource_urls)
    return True


def _matches_resource(rule: Rule, info: requestinfo.RequestInfo) -> bool:
    if not info.is_resource_request:
        return False
    if rule.namespaces and info.namespace not in rule.namespaces:
        return False
    if not rule.resources:
        return True
    combined = f"{info.resource}/{info.subresource}" if info.subresource else info.resource
    for gr in rule.resources:
        if gr.group != info.group:
            continue
        if not gr.resources:
            return True
        if gr.resource_names and info.name not in gr.resource_names:
            continue
        for res in gr.resources:
            if res in (combined, "*"):
                return True
            if info.subresource and res.startswith("*/") and res[2:] == info.subresource:
                return True
            if res.endswith("/*") and res[:-2] == info.resource:
                return True
    return False


def _path_matches(path: str, spec: str) -> bool:
    return spec in ("*", path) or (spec.endswith("*") and path.startswith(spec.rstrip("*")))


def load_policy(path: str) -> Policy:
    """Read, decode and validate a Policy file; kube's messages, ending in `: from file PATH`."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise PolicyError(f'failed to read file path "{path}": {exc.strerror or exc}') from None
    try:
        return parse_policy(data)
    except PolicyError as exc:
        raise PolicyError(f"{exc}: from file {path}") from None


def parse_policy(data: bytes) -> Policy:
    """LoadPolicyFromBytes: decode (unknown fields only warn, as kube's lenient fallback), validate."""
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise PolicyError(f"failed decoding: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, Mapping):
        raise PolicyError("failed decoding: Object 'Kind' is missing in the policy")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if not api_version or not kind:
        raise PolicyError(f"failed decoding: Object '{'apiVersion' if not api_version else 'Kind'}' is missing")
    if api_version != "audit.k8s.io/v1":
        raise PolicyError(f"failed decoding: no kind \"{kind}\" is registered for version \"{api_version}\"")
    if kind != "Policy":
        raise PolicyError(f'failed decoding: no kind "{kind}" is registered for version "audit.k8s.io/v1"')
    unknown: list[str] = []
    _unknown(doc, ("apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"), "", unknown)
    rules = [_rule(r, f"rules[{i}]", unknown) for i, r in enumerate(_list(doc.get("rules"), "rules"))]
    if unknown:
        log.warning("Audit policy contains errors, falling back to lenient decoding: strict decoding error: %s",
                    ", ".join(unknown))
    policy = Policy(tuple(rules), tuple(_strs(doc.get("omitStages"), "omitStages")),
                    _bool(doc.get("omitManagedFields"), "omitManagedFields") or False)
    problems = _validate_stages(policy.omit_stages, "omitStages")
    for i, rule in enumerate(policy.rules):
        problems += _validate_rule(rule, f"rules[{i}]")
    if problems:
        raise PolicyError(problems[0] if len(problems) == 1 else "[" + ", ".join(problems) + "]")
    if not policy.rules:
        raise PolicyError("loaded illegal policy with 0 rules")
    return policy


_RULE_FIELDS = ("level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
                "omitStages", "omitManagedFields")


def _unknown(obj: Mapping[str, Any], known: tuple[str, ...], path: str, out: list[str]) -> None:
    out += [f'unknown field "{path}{k}"' for k in obj if k not in known]


def _rule(raw: Any, path: str, unknown: list[str]) -> Rule:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"failed decoding: {path}: expected an object")
    _unknown(raw, _RULE_FIELDS, path + ".", unknown)
    groups = []
    for j, gr in enumerate(_list(raw.get("resources"), f"{path}.resources")):
        if not isinstance(gr, Mapping):
            raise PolicyError(f"failed decoding: {path}.resources[{j}]: expected an object")
        _unknown(gr, ("group", "resources", "resourceNames"), f"{path}.resources[{j}].", unknown)
        group = gr.get("group") or ""
        if not isinstance(group, str):
            raise PolicyError(f"failed decoding: {path}.resources[{j}].group: expected a string")
        groups.append(GroupResources(group, tuple(_strs(gr.get("resources"), f"{path}.resources[{j}].resources")),
                                     tuple(_strs(gr.get("resourceNames"), f"{path}.resources[{j}].resourceNames"))))
    level = raw.get("level") or ""
    if not isinstance(level, str):
        raise PolicyError(f"failed decoding: {path}.level: expected a string")
    return Rule(level=level, users=tuple(_strs(raw.get("users"), f"{path}.users")),
                user_groups=tuple(_strs(raw.get("userGroups"), f"{path}.userGroups")),
                verbs=tuple(_strs(raw.get("verbs"), f"{path}.verbs")), resources=tuple(groups),
                namespaces=tuple(_strs(raw.get("namespaces"), f"{path}.namespaces")),
                non_resource_urls=tuple(_strs(raw.get("nonResourceURLs"), f"{path}.nonResourceURLs")),
                omit_stages=tuple(_strs(raw.get("omitStages"), f"{path}.omitStages")),
                omit_managed_fields=_bool(raw.get("omitManagedFields"), f"{path}.omitManagedFields"))


def _list(value: Any, path: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise PolicyError(f"failed decoding: {path}: expected a list, got {type(value).__name__}")
    return value


def _strs(value: Any, path: str) -> list[str]:
    items = _list(value, path)
    if not all(isinstance(v, str) for v in items):
        raise PolicyError(f"failed decoding: {path}: expected a list of strings")
    return items


def _bool(value: Any, path: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise PolicyError(f"failed decoding: {path}: expected true or false, got {value!r}")


def _validate_rule(rule: Rule, path: str) -> list[str]:
    problems: list[str] = []
    if not rule.level:
        problems.append(errors.required(f"{path}.level").text())
    elif rule.level not in LEVELS:
        problems.append(errors.unsupported(f"{path}.level", rule.level, list(LEVELS)).text())
    for i, url in enumerate(rule.non_resource_urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            problems.append(errors.invalid(f"{path}.nonResourceURLs[{i}]", url,
                                           "non-resource URL rules must begin with a '/' character").text())
        if url and "*" in url[:-1]:
            problems.append(errors.invalid(f"{path}.nonResourceURLs[{i}]", url,
                                           "non-resource URL wildcards '*' must be the final character of the rule").text())
    for gr in rule.resources:
        if gr.group:
            msgs = names.is_dns1123_subdomain(gr.group)
            if msgs:
                problems.append(errors.invalid(f"{path}.resources.group", gr.group, ",".join(msgs)).text())
        if gr.resource_names and not gr.resources:
            problems.append(errors.invalid(f"{path}.resources.resourceNames", _go_strings(gr.resource_names),
                                           "using resourceNames requires at least one resource").text())
    problems += _validate_stages(rule.omit_stages, f"{path}.omitStages")
    if rule.non_resource_urls and (rule.resources or rule.namespaces):
        problems.append(errors.invalid(f"{path}.nonResourceURLs", _go_strings(rule.non_resource_urls),
                                       "rules cannot apply to both regular resources and non-resource URLs").text())
    return problems


def _go_strings(values: tuple[str, ...]) -> str:
    return "raw:[]string{" + ", ".join(errors.go_value(v) for v in values) + "}"


def _validate_stages(stages: tuple[str, ...], path: str) -> list[str]:
    return [errors.invalid(f"{path}[{i}]", s, "allowed stages are " + ",".join(STAGES)).text()
            for i, s in enumerate(stages) if s not in STAGES]
