"""RBAC authorization: kube's rule semantics over an in-memory index of roles and bindings kept current from the store."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pocketkube.api import bootstrappolicy, errors, selectors
from pocketkube.apiserver import context, requestinfo, storemirror

log = logging.getLogger("pocketkube.apiserver.rbac")

GROUP = bootstrappolicy.GROUP
PREFIX = f"/registry/{GROUP}/"
SA_PREFIX = "system:serviceaccount:"
_CACHE_LIMIT = 50_000
_COMPONENTS = (bootstrappolicy.CONTROLLER_MANAGER, bootstrappolicy.SCHEDULER, bootstrappolicy.NODE_PREFIX)


@dataclasses.dataclass(frozen=True, slots=True)
class Attributes:
    """What a request asks to do, as kube's authorizer.Attributes (user aside)."""

    verb: str
    resource_request: bool = True
    group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


def review_attributes(spec: Mapping[str, Any]) -> Attributes:
    """The attributes an access review's spec asks about (resourceAttributes or nonResourceAttributes)."""
    ra = spec.get("resourceAttributes")
    if isinstance(ra, dict):
        return Attributes(str(ra.get("verb") or ""), True, str(ra.get("group") or ""), str(ra.get("resource") or ""),
                          str(ra.get("subresource") or ""), str(ra.get("namespace") or ""), str(ra.get("name") or ""))
    nra = spec.get("nonResourceAttributes") or {}
    return Attributes(str(nra.get("verb") or ""), False, path=str(nra.get("path") or ""))


def attributes_of(info: requestinfo.RequestInfo) -> Attributes:
    if not info.is_resource_request:
        return Attributes(info.verb, False, path=info.path)
    return Attributes(info.verb, True, info.group, info.resource, info.subresource, info.namespace, info.name)


# --- rule semantics (rbac.RuleAllows) ------------------------------------------------------

def _has(values: Sequence[str] | None, want: str) -> bool:
    return bool(values) and ("*" in values or want in values)  # type: ignore[operator]


def resource_matches(rule_resources: Sequence[str] | None, resource: str, subresource: str) -> bool:
    """`*`, the exact resource (`pods/log` for a subresource), or `*/sub` for any resource's subresource."""
    combined = f"{resource}/{subresource}" if subresource else resource
    for r in rule_resources or ():
        if r == "*" or r == combined:
            return True
        if subresource and r == "*/" + subresource:
            return True
    return False


def nonresource_url_matches(rule_urls: Sequence[str] | None, path: str) -> bool:
    """An exact path, `*`, or a prefix ending in `*`."""
    for u in rule_urls or ():
        if u == "*" or u == path or (u.endswith("*") and path.startswith(u[:-1])):
            return True
    return False


def rule_allows(attrs: Attributes, rule: Mapping[str, Any]) -> bool:
    """Whether one PolicyRule grants the request."""
    if not _has(rule.get("verbs"), attrs.verb):
        return False
    if not attrs.resource_request:
        return nonresource_url_matches(rule.get("nonResourceURLs"), attrs.path)
    if not _has(rule.get("apiGroups"), attrs.group):
        return False
    if not resource_matches(rule.get("resources"), attrs.resource, attrs.subresource):
        return False
    names = rule.get("resourceNames")
    return not names or attrs.name in names


def applies_to(subject: Mapping[str, Any], user: str, groups: Iterable[str], namespace: str) -> bool:
    """Whether a binding subject names this user (a ServiceAccount's namespace defaults to the binding's)."""
    kind = subject.get("kind")
    name = subject.get("name") or ""
    if kind == "User":
        return user == name
    if kind == "Group":
        return name in groups
    if kind == "ServiceAccount":
        ns = subject.get("namespace") or namespace
        return bool(ns) and user == f"{SA_PREFIX}{ns}:{name}"
    return False


def describe_subject(subject: Mapping[str, Any], namespace: str) -> str:
    kind, name = subject.get("kind", ""), subject.get("name", "")
    if kind == "ServiceAccount":
        return f"{kind} {selectors.go_quote(name + '/' + (subject.get('namespace') or namespace))}"
    return f"{kind} {selectors.go_quote(name)}"


def describe_binding(binding: Mapping[str, Any], subject: Mapping[str, Any]) -> str:
    """kube's source description: `ClusterRoleBinding "x" of ClusterRole "y" to User "z"`."""
    meta = binding.get("metadata") or {}
    ref = binding.get("roleRef") or {}
    ns = meta.get("namespace") or ""
    name = meta.get("name", "") + ("/" + ns if ns else "")
    kind = "RoleBinding" if ns else "ClusterRoleBinding"
    return (f"{kind} {selectors.go_quote(name)} of {ref.get('kind', '')} {selectors.go_quote(ref.get('name', ''))} "
            f"to {describe_subject(subject, ns)}")


def aggregate(messages: list[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message bare, several in brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def forbidden(user: str, attrs: Attributes, reason: str = "") -> errors.Forbidden:
    """The 403 kube-apiserver's authorization filter answers with."""
    q = selectors.go_quote
    if not attrs.resource_request:
        msg = f"User {q(user)} cannot {attrs.verb} path {q(attrs.path)}"
        return errors.Forbidden(f"forbidden: {msg}" + (f": {reason}" if reason else ""), details={})
    target = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
    scope = f" in the namespace {q(attrs.namespace)}" if attrs.namespace else " at the cluster scope"
    msg = f"User {q(user)} cannot {attrs.verb} resource {q(target)} in API group {q(attrs.group)}{scope}"
    if reason:
        msg += f": {reason}"
    qualified = errors.qualified(attrs.resource, attrs.group)
    head = f"{qualified} {q(attrs.name)}" if attrs.name else qualified
    details: dict[str, Any] = {}
    for key, value in (("name", attrs.name), ("group", attrs.group), ("kind", attrs.resource)):
        if value:
            details[key] = value
    return errors.Forbidden(f"{head} is forbidden: {msg}", details=details)


class _AnyName(str):
    """A name that no resourceNames entry equals: a rule allowing it allows every name."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        return False

    def __ne__(self, other: object) -> bool:
        return True

    __hash__ = str.__hash__


_ANY_NAME = _AnyName("")


# --- the index --------------------------------------------------------------------------

class Index:
    """Roles by name and bindings by the users, groups and service accounts they name."""

    def __init__(self, objs: Iterable[Mapping[str, Any]]) -> None:
        self.cluster_roles: dict[str, Mapping[str, Any]] = {}
        self.roles: dict[tuple[str, str], Mapping[str, Any]] = {}
        # (namespace or "" for ClusterRoleBindings, subject key) -> bindings; keys are ("User", name) or ("Group", name)
        self._bindings: dict[tuple[str, tuple[str, str]], list[Mapping[str, Any]]] = {}
        for obj in objs:
            kind = obj.get("kind")
            meta = obj.get("metadata") or {}
            ns, name = meta.get("namespace") or "", meta.get("name") or ""
            if kind == "ClusterRole":
                self.cluster_roles[name] = obj
            elif kind == "Role":
                self.roles[(ns, name)] = obj
            elif kind in ("ClusterRoleBinding", "RoleBinding"):
                self._add_binding(obj, "" if kind == "ClusterRoleBinding" else ns)
        for group in self._bindings.values():
            group.sort(key=lambda b: b["metadata"].get("name", ""))

    def _add_binding(self, binding: Mapping[str, Any], ns: str) -> None:
        seen: set[tuple[str, str]] = set()
        for s in binding.get("subjects") or ():
            if not isinstance(s, dict):
                continue
            kind, name = s.get("kind"), s.get("name") or ""
            if kind == "ServiceAccount":
                sa_ns = s.get("namespace") or ns
                if not sa_ns:
                    continue
                key = ("User", f"{SA_PREFIX}{sa_ns}:{name}")
            elif kind in ("User", "Group"):
                key = (str(kind), name)
            else:
                continue
            if key not in seen:
                seen.add(key)
                self._bindings.setdefault((ns, key), []).append(binding)

    def bindings_for(self, user: str, groups: Sequence[str], namespace: str) -> list[Mapping[str, Any]]:
        """The bindings that apply in `namespace` ("" = cluster bindings only), cluster bindings first."""
        out: list[Mapping[str, Any]] = []
        for ns in ("", namespace) if namespace else ("",):
            found: dict[int, Mapping[str, Any]] = {}
            for key in (("User", user), *(("Group", g) for g in groups)):
                for b in self._bindings.get((ns, key), ()):
                    found.setdefault(id(b), b)
            out.extend(sorted(found.values(), key=lambda b: b["metadata"].get("name", "")))
        return out

    def role_rules(self, ref: Mapping[str, Any], namespace: str, *,
                   plural: str = "") -> tuple[list[Mapping[str, Any]], str]:
        """The rules a roleRef points at, or an error message when the role is missing.

        The authorizer reads roles through listers, whose NotFound names the singular resource
        (`clusterrole.rbac...`); the registry's escalation checks say `clusterroles.rbac...` (plural="s").
        """
        kind, name = ref.get("kind"), ref.get("name") or ""
        if kind == "ClusterRole":
            role = self.cluster_roles.get(name)
            if role is None:
                return [], f"clusterrole{plural}.{GROUP} {selectors.go_quote(name)} not found"
        elif kind == "Role":
            role = self.roles.get((namespace, name))
            if role is None:
                return [], f"role{plural}.{GROUP} {selectors.go_quote(name)} not found"
        else:
            return [], f"unsupported role reference kind: {selectors.go_quote(str(kind))}"
        return [r for r in role.get("rules") or () if isinstance(r, dict)], ""

    def visit(self, user: str, groups: Sequence[str], namespace: str, *,
              plural: str = "") -> Iterable[tuple[str, Mapping[str, Any] | None, str]]:
        """(source description, rule, error) for every rule bound to the user, as VisitRulesFor yields them."""
        for binding in self.bindings_for(user, groups, namespace):
            ns = (binding.get("metadata") or {}).get("namespace") or ""
            subject = next((s for s in binding.get("subjects") or () if isinstance(s, dict)
                            and applies_to(s, user, groups, ns)), None)
            if subject is None:
                continue
            rules, err = self.role_rules(binding.get("roleRef") or {}, ns, plural=plural)
            if err:
                yield "", None, err
                continue
            source = describe_binding(binding, subject)
            for rule in rules:
                yield source, rule, ""

    def decide(self, user: str, groups: Sequence[str], attrs: Attributes) -> tuple[bool, str]:
        # visit() in the order it yields, but a binding is described only once one of its rules allows.
        errs: list[str] = []
        for binding in self.bindings_for(user, groups, attrs.namespace):
            ns = (binding.get("metadata") or {}).get("namespace") or ""
            subject = next((s for s in binding.get("subjects") or () if isinstance(s, dict)
                            and applies_to(s, user, groups, ns)), None)
            if subject is None:
                continue
            rules, err = self.role_rules(binding.get("roleRef") or {}, ns)
            if err:
                errs.append(err)
                continue
            for rule in rules:
                if rule_allows(attrs, rule):
                    return True, f"RBAC: allowed by {describe_binding(binding, subject)}"
        return False, f"RBAC: {aggregate(errs)}" if errs else ""

    def rules_for(self, user: str, groups: Sequence[str], namespace: str, *,
                  plural: str = "") -> tuple[list[Mapping[str, Any]], list[str]]:
        rules: list[Mapping[str, Any]] = []
        errs: list[str] = []
        for _, rule, err in self.visit(user, groups, namespace, plural=plural):
            if rule is not None:
                rules.append(rule)
            elif err:
                errs.append(err)
        return rules, errs


_NODE_RULES = bootstrappolicy.node_rules()
# The Node authorizer lets a kubelet read these only one by one (and, in Kubernetes, only those its
# pods reference; pocketkube does not keep that graph).
_NODE_GET_ONLY = {"secrets", "configmaps", "persistentvolumeclaims", "persistentvolumes"}


def is_node(user: str, groups: Sequence[str]) -> bool:
    return bootstrappolicy.NODES_GROUP in groups and user.startswith(bootstrappolicy.NODE_PREFIX) \
        and len(user) > len(bootstrappolicy.NODE_PREFIX)


def node_allows(user: str, groups: Sequence[str], attrs: Attributes) -> bool:
    """The Node authorizer: kubelets get the system:node rules without any binding."""
    if not is_node(user, groups):
        return False
    if attrs.resource_request and attrs.group == "" and attrs.resource in _NODE_GET_ONLY and attrs.verb != "get":
        return False
    return any(rule_allows(attrs, r) for r in _NODE_RULES)


# --- the authorizer ------------------------------------------------------------------------

class Authorizer:
    """server.authorizer: system:masters, then the Node authorizer, then RBAC; decisions cached per index generation."""

    def __init__(self, *, node: bool = True, rbac: bool = True, deny_reason: str = "") -> None:
        # --authorization-mode: which of the Node and RBAC authorizers run, and the reason a final
        # AlwaysDeny adds to denials ("Everything is forbidden.").
        self.node = node
        self.rbac = rbac
        self.deny_reason = deny_reason
        self._mirror = storemirror.Mirror(PREFIX, name="RBAC index")
        self._index: Index | None = None
        self._built = -1  # the mirror generation the index and decision cache were made from
        self._cache: dict[tuple[Any, ...], tuple[bool, str]] = {}

    async def __call__(self, server: context.Server, user: context.User, info: requestinfo.RequestInfo,
                       request: Any) -> None:
        if bootstrappolicy.MASTERS in user.groups:
            return
        path = "" if info.is_resource_request else info.path
        if not self._dirty:
            # The hot path: a decision already made since the last RBAC change, keyed by a plain tuple;
            # for a named object, also the decision that holds for every name.
            head = (user.name, tuple(user.groups), info.verb, info.is_resource_request, info.group, info.resource,
                    info.subresource, info.namespace)
            hit = self._cache.get((*head, info.name, path))
            if hit is not None and hit[0]:
                return
            if info.name:
                hit = self._cache.get((*head, None, path))
                if hit is not None and hit[0]:
                    return
        attrs = attributes_of(info)
        if attrs.name and await self._allows_any_name(server, user, attrs):
            return
        allowed, reason = await self.decide(server, user, attrs)
        if not allowed:
            err = forbidden(user.name, attrs, reason)
            if user.name.startswith(_COMPONENTS):
                # Our own components run least-privileged: a denial here means a default rule is missing.
                log.warning("RBAC denied a cluster component: %s", err.message)
            raise err

    async def decide(self, server: context.Server, user: context.User, attrs: Attributes) -> tuple[bool, str]:
        """(allowed, reason) with kube's reason strings; a denial is re-checked once after pending updates land."""
        if bootstrappolicy.MASTERS in user.groups:
            return True, ""
        groups = tuple(user.groups)
        key = (user.name, groups, attrs.verb, attrs.resource_request, attrs.group, attrs.resource, attrs.subresource,
               attrs.namespace, attrs.name, attrs.path)
        index = await self.index(server)
        hit = self._cache.get(key)
        if hit is not None and hit[0]:
            return hit
        result = hit or self._compute(index, user.name, groups, attrs)
        if not result[0]:
            # A binding written just before this request may still be on its way from the store.
            await asyncio.sleep(0)
            if self._dirty:
                result = self._compute(await self.index(server), user.name, groups, attrs)
            elif hit is not None:
                return hit
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = result
        return result

    async def _allows_any_name(self, server: context.Server, user: context.User, attrs: Attributes) -> bool:
        """Whether a rule without resourceNames allows the request, whatever object it names (cached if so).

        Without this, every get of another object would miss the decision cache and walk the bindings again.
        """
        groups = tuple(user.groups)
        index = await self.index(server)
        if not self._compute(index, user.name, groups, dataclasses.replace(attrs, name=_ANY_NAME))[0]:
            return False
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[(user.name, groups, attrs.verb, attrs.resource_request, attrs.group, attrs.resource,
                     attrs.subresource, attrs.namespace, None, attrs.path)] = (True, "")
        return True

    @property
    def _dirty(self) -> bool:
        return self._built != self._mirror.generation

    def _compute(self, index: Index, user: str, groups: tuple[str, ...], attrs: Attributes) -> tuple[bool, str]:
        if self.node and node_allows(user, groups, attrs):
            return True, ""
        allowed, reason = index.decide(user, groups, attrs) if self.rbac else (False, "")
        if not allowed and self.deny_reason:
            reason = f"{reason}, {self.deny_reason}" if reason else self.deny_reason
        return allowed, reason

    async def rules_for(self, server: context.Server, user: context.User,
                        namespace: str) -> tuple[list[Mapping[str, Any]], list[str]]:
        """Every rule the user holds in namespace (Node authorizer rules first), and resolution errors."""
        index = await self.index(server)
        rules, errs = index.rules_for(user.name, user.groups, namespace) if self.rbac else ([], [])
        if self.node and is_node(user.name, user.groups):
            rules = [*_NODE_RULES, *rules]
        return rules, errs

    async def rules_review(self, server: context.Server, user: context.User, namespace: str) -> dict[str, Any]:
        """A SelfSubjectRulesReview's status: the rules as kube's union of Node and RBAC rule resolvers lists them."""
        rules, errs = await self.rules_for(server, user, namespace)
        resource_rules: list[dict[str, Any]] = []
        nonresource_rules: list[dict[str, Any]] = []
        for rule in rules:
            if rule.get("resources"):
                rr: dict[str, Any] = {"verbs": list(rule.get("verbs") or [])}
                for key in ("apiGroups", "resources", "resourceNames"):
                    if rule.get(key):
                        rr[key] = list(rule[key])
                resource_rules.append(rr)
            if rule.get("nonResourceURLs"):
                nonresource_rules.append({"verbs": list(rule.get("verbs") or []),
                                          "nonResourceURLs": list(rule["nonResourceURLs"])})
        # RBAC reports missing roles as an evaluation error but never as incomplete, like kube-apiserver.
        status: dict[str, Any] = {"resourceRules": resource_rules, "nonResourceRules": nonresource_rules,
                                  "incomplete": False}
        if errs:
            status["evaluationError"] = aggregate(errs)
        return status

    async def index(self, server: context.Server) -> Index:
        """The current index, loading it from the store on first use and rebuilding it after changes."""
        await self._mirror.sync(server.store)
        if self._dirty or self._index is None:
            self._built = self._mirror.generation
            self._index = Index(self._mirror.objects.values())
            self._cache.clear()
        return self._index

    def close(self) -> None:
        self._mirror.close()
