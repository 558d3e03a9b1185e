"""RBAC escalation prevention: nobody grants, through a role or a binding, permissions they do not hold."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pocketkube.api import bootstrappolicy, errors, selectors
from pocketkube.apiserver import context, rbac

_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
_FULL_AUTHORITY = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]
# Fields the garbage collector changes; an update touching only these is never an escalation.
_GC_META = ("ownerReferences", "finalizers", "managedFields", "resourceVersion", "generation")


def _strings(value: Any) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def breakdown(rule: Mapping[str, Any]) -> list[dict[str, list[str]]]:
    """One rule per group x resource x verb (x name), and per URL x verb: rbac's BreakdownRule."""
    out: list[dict[str, list[str]]] = []
    verbs, names = _strings(rule.get("verbs")), _strings(rule.get("resourceNames"))
    for group in _strings(rule.get("apiGroups")):
        for resource in _strings(rule.get("resources")):
            for verb in verbs:
                base = {"apiGroups": [group], "resources": [resource], "verbs": [verb]}
                out.extend([{**base, "resourceNames": [n]} for n in names] if names else [base])
    for url in _strings(rule.get("nonResourceURLs")):
        out.extend({"nonResourceURLs": [url], "verbs": [verb]} for verb in verbs)
    return out


def _has_all(have: Sequence[str], want: Sequence[str]) -> bool:
    return all(w in have for w in want)


def _resources_cover(have: Sequence[str], want: Sequence[str]) -> bool:
    if "*" in have or _has_all(have, want):
        return True
    for path in want:
        if path in have:
            continue
        if "/" not in path or "*/" + path.split("/", 1)[1] not in have:
            return False
    return True


def _url_covers(owner: str, path: str) -> bool:
    return owner == path or (owner.endswith("*") and path.startswith(owner.rstrip("*")))


def rule_covers(owner: Mapping[str, Any], sub: Mapping[str, Any]) -> bool:
    """Whether an owner rule grants everything a (broken-down) rule does: rbac's ruleCovers."""
    o_verbs, o_groups = _strings(owner.get("verbs")), _strings(owner.get("apiGroups"))
    o_names, s_names = _strings(owner.get("resourceNames")), _strings(sub.get("resourceNames"))
    verbs = "*" in o_verbs or _has_all(o_verbs, _strings(sub.get("verbs")))
    groups = "*" in o_groups or _has_all(o_groups, _strings(sub.get("apiGroups")))
    resources = _resources_cover(_strings(owner.get("resources")), _strings(sub.get("resources")))
    urls = all(any(_url_covers(o, p) for o in _strings(owner.get("nonResourceURLs")))
               for p in _strings(sub.get("nonResourceURLs")))
    names = not o_names or (bool(s_names) and _has_all(o_names, s_names))
    return verbs and groups and resources and urls and names


def missing(owner_rules: Sequence[Mapping[str, Any]], requested: Sequence[Mapping[str, Any]]) -> list[dict[str, list[str]]]:
    """The broken-down requested rules no owner rule covers (rbac's Covers)."""
    out = []
    for rule in requested:
        for sub in breakdown(rule):
            if not any(rule_covers(o, sub) for o in owner_rules):
                out.append(sub)
    return out


def compact(rules: Sequence[Mapping[str, list[str]]]) -> list[dict[str, list[str]]]:
    """Merge the verbs of single group/resource rules (rbac's CompactRules)."""
    out: list[dict[str, list[str]]] = []
    simple: dict[tuple[str, str, str | None], dict[str, list[str]]] = {}
    for rule in rules:
        groups, resources, names = rule.get("apiGroups") or [], rule.get("resources") or [], rule.get("resourceNames") or []
        if len(names) > 1 or rule.get("nonResourceURLs") or len(groups) != 1 or len(resources) != 1:
            out.append(dict(rule))
            continue
        key = (groups[0], resources[0], names[0] if names else None)
        if key in simple:
            simple[key]["verbs"] = simple[key]["verbs"] + list(rule.get("verbs") or [])
        else:
            simple[key] = {k: list(v) for k, v in rule.items()}
            out.append(simple[key])
    return out


def _go_list(values: Sequence[str]) -> str:
    return "[" + " ".join(selectors.go_quote(v) for v in values) + "]"


def compact_string(rule: Mapping[str, Sequence[str]]) -> str:
    """rbacv1helpers.CompactString: `{APIGroups:[""], Resources:["secrets"], Verbs:["get"]}`."""
    parts = [f"{label}:{_go_list(rule[key])}" for label, key in (
        ("APIGroups", "apiGroups"), ("Resources", "resources"), ("NonResourceURLs", "nonResourceURLs"),
        ("ResourceNames", "resourceNames"), ("Verbs", "verbs")) if rule.get(key)]
    return "{" + ", ".join(parts) + "}"


def _rules(obj: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    return [r for r in obj.get("rules") or () if isinstance(r, dict)]


def _only_gc_fields(obj: Mapping[str, Any], old: Mapping[str, Any] | None) -> bool:
    if old is None:
        return False

    def strip(o: Mapping[str, Any]) -> dict[str, Any]:
        meta = {k: v for k, v in (o.get("metadata") or {}).items() if k not in _GC_META}
        return {**o, "metadata": meta}

    return strip(obj) == strip(old)


async def _confirm(server: context.Server, authz: rbac.Authorizer, call: context.Call, name: str, namespace: str,
                   requested: Sequence[Mapping[str, Any]], *, message: str = "") -> None:
    index = await authz.index(server)
    user = call.user
    owner, errs = index.rules_for(user.name, user.groups, namespace, plural="s")
    lacking = missing(owner, requested)
    if not lacking:
        return
    if not message:
        lines = sorted({compact_string(r) for r in compact(lacking)})
        message = (f"user {selectors.go_quote(user.name)} (groups={_go_list(user.groups)}) is attempting to grant "
                   "RBAC permissions not currently held:\n" + "\n".join(lines))
        if errs:
            message += f"; resolution errors: [{rbac.aggregate(errs)}]"
    res = call.res
    raise errors.Forbidden(f"{errors.qualified(res.resource, res.group)} {selectors.go_quote(name)} is forbidden: {message}",
                           details={"name": name, "group": res.group, "kind": res.resource})


async def check(server: context.Server, call: context.Call, obj: dict[str, Any], old: dict[str, Any] | None,
                operation: str) -> None:
    """Admission plugin: refuse roles and bindings that would grant more than the caller holds."""
    res = call.res
    if res.group != rbac.GROUP or res.kind not in _KINDS or operation not in ("CREATE", "UPDATE"):
        return
    authz = server.authorizer
    if not isinstance(authz, rbac.Authorizer) or bootstrappolicy.MASTERS in call.user.groups:
        return
    if _only_gc_fields(obj, old):
        return
    namespace = call.info.namespace if res.namespaced else ""
    name = str((obj.get("metadata") or {}).get("name") or "")
    if res.kind in ("Role", "ClusterRole"):
        escalate = rbac.Attributes("escalate", True, res.group, res.resource, "", namespace, name)
        if (await authz.decide(server, call.user, escalate))[0]:
            return
        await _confirm(server, authz, call, name, namespace, _rules(obj))
        if res.kind == "ClusterRole" and (obj.get("aggregationRule") or (old or {}).get("aggregationRule")):
            await _confirm(server, authz, call, name, namespace, _FULL_AUTHORITY,
                           message="must have cluster-admin privileges to use the aggregationRule")
        return
    ref = obj.get("roleRef") if isinstance(obj.get("roleRef"), dict) else {}
    assert isinstance(ref, dict)
    role_resource = "roles" if ref.get("kind") == "Role" else "clusterroles"
    bind = rbac.Attributes("bind", True, str(ref.get("apiGroup") or ""), role_resource, "", namespace,
                           str(ref.get("name") or ""))
    if (await authz.decide(server, call.user, bind))[0]:
        return
    index = await authz.index(server)
    rules, err = index.role_rules(ref, namespace)
    if err:
        raise errors.NotFound.for_object(role_resource, rbac.GROUP, str(ref.get("name") or ""))
    await _confirm(server, authz, call, name, namespace, rules)
