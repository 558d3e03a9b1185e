"""RBAC rule semantics, the binding index, Forbidden messages and the store-following authorizer."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from pocketkube.api import bootstrappolicy, errors
from pocketkube.apiserver import context, rbac, requestinfo
from pocketkube.store import memory

A = rbac.Attributes


def rule(verbs: str, groups: list[str], resources: str, names: str = "") -> dict[str, Any]:
    r: dict[str, Any] = {"verbs": verbs.split(), "apiGroups": groups, "resources": resources.split()}
    if names:
        r["resourceNames"] = names.split()
    return r


@pytest.mark.parametrize(("attrs", "r", "allowed"), [
    (A("get", True, "", "pods", namespace="ns"), rule("get", [""], "pods"), True),
    (A("list", True, "", "pods"), rule("get", [""], "pods"), False),
    (A("list", True, "", "pods"), rule("*", [""], "pods"), True),
    (A("get", True, "apps", "deployments"), rule("get", [""], "deployments"), False),
    (A("get", True, "apps", "deployments"), rule("get", ["*"], "deployments"), True),
    (A("get", True, "", "pods", "log"), rule("get", [""], "pods"), False),
    (A("get", True, "", "pods", "log"), rule("get", [""], "pods/log"), True),
    (A("get", True, "", "pods", "log"), rule("get", [""], "*"), True),
    (A("update", True, "apps", "deployments", "scale"), rule("update", ["*"], "*/scale"), True),
    (A("update", True, "apps", "deployments", "status"), rule("update", ["*"], "*/scale"), False),
    (A("update", True, "apps", "deployments"), rule("update", ["*"], "*/scale"), False),
    (A("get", True, "", "configmaps", name="a"), rule("get", [""], "configmaps", "a b"), True),
    (A("get", True, "", "configmaps", name="c"), rule("get", [""], "configmaps", "a b"), False),
    (A("list", True, "", "configmaps"), rule("list", [""], "configmaps", "a"), False),
    (A("get", False, path="/healthz"), {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, True),
    (A("get", False, path="/healthz/etcd"), {"verbs": ["get"], "nonResourceURLs": ["/healthz"]}, False),
    (A("get", False, path="/healthz/etcd"), {"verbs": ["get"], "nonResourceURLs": ["/healthz/*"]}, True),
    (A("get", False, path="/apis/apps/v1"), {"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, True),
    (A("post", False, path="/anything"), {"verbs": ["*"], "nonResourceURLs": ["*"]}, True),
    (A("get", False, path="/healthz"), rule("get", ["*"], "*"), False),
    (A("get", True, "", "pods"), {"verbs": ["get"], "nonResourceURLs": ["*"]}, False),
])
def test_rule_allows(attrs: rbac.Attributes, r: dict[str, Any], allowed: bool) -> None:
    """One PolicyRule grants exactly what kube's RuleAllows grants (verbs, groups, subresources, names, URLs)."""
    assert rbac.rule_allows(attrs, r) is allowed


@pytest.mark.parametrize(("subject", "user", "groups", "ns", "applies"), [
    ({"kind": "User", "name": "alice"}, "alice", (), "", True),
    ({"kind": "User", "name": "alice"}, "bob", (), "", False),
    ({"kind": "Group", "name": "devs"}, "bob", ("devs",), "", True),
    ({"kind": "ServiceAccount", "name": "app", "namespace": "prod"}, "system:serviceaccount:prod:app", (), "", True),
    ({"kind": "ServiceAccount", "name": "app"}, "system:serviceaccount:prod:app", (), "prod", True),
    ({"kind": "ServiceAccount", "name": "app"}, "system:serviceaccount:prod:app", (), "", False),
    ({"kind": "Group", "name": "system:serviceaccounts:prod"}, "x", ("system:serviceaccounts:prod",), "", True),
    ({"kind": "Other", "name": "alice"}, "alice", (), "", False),
])
def test_applies_to(subject: dict[str, Any], user: str, groups: tuple[str, ...], ns: str, applies: bool) -> None:
    """Subjects match users by name, groups by membership and service accounts by their user name."""
    assert rbac.applies_to(subject, user, groups, ns) is applies


def _role(kind: str, name: str, rules: list[dict[str, Any]], ns: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"kind": kind, "metadata": meta, "rules": rules}


def _binding(kind: str, name: str, ref_kind: str, ref: str, subjects: list[dict[str, Any]], ns: str = "") -> dict[str, Any]:
    meta = {"name": name, **({"namespace": ns} if ns else {})}
    return {"kind": kind, "metadata": meta, "roleRef": {"kind": ref_kind, "name": ref}, "subjects": subjects}


ALICE = {"kind": "User", "name": "alice"}
INDEX = rbac.Index([
    _role("ClusterRole", "reader", [rule("get list", [""], "pods")]),
    _role("Role", "cm", [rule("get", [""], "configmaps")], "team"),
    _binding("ClusterRoleBinding", "readers", "ClusterRole", "reader", [{"kind": "Group", "name": "devs"}, ALICE]),
    _binding("RoleBinding", "cm", "Role", "cm", [ALICE], "team"),
    _binding("RoleBinding", "gone", "ClusterRole", "missing", [{"kind": "User", "name": "carol"}], "team"),
    _binding("RoleBinding", "sa", "ClusterRole", "reader", [{"kind": "ServiceAccount", "name": "app"}], "team"),
])


@pytest.mark.parametrize(("user", "groups", "attrs", "expected"), [
    ("alice", ("devs",), A("list", True, "", "pods", namespace="x"),
     (True, 'RBAC: allowed by ClusterRoleBinding "readers" of ClusterRole "reader" to Group "devs"')),
    ("alice", (), A("get", True, "", "configmaps", namespace="team", name="c"),
     (True, 'RBAC: allowed by RoleBinding "cm/team" of Role "cm" to User "alice"')),
    ("alice", (), A("get", True, "", "configmaps", namespace="other"), (False, "")),
    ("carol", (), A("get", True, "", "pods", namespace="team"),
     (False, 'RBAC: clusterrole.rbac.authorization.k8s.io "missing" not found')),
    ("system:serviceaccount:team:app", (), A("get", True, "", "pods", namespace="team"),
     (True, 'RBAC: allowed by RoleBinding "sa/team" of ClusterRole "reader" to ServiceAccount "app/team"')),
    ("system:serviceaccount:team:app", (), A("get", True, "", "pods", namespace="other"), (False, "")),
])
def test_index_decide(user: str, groups: tuple[str, ...], attrs: rbac.Attributes, expected: tuple[bool, str]) -> None:
    """Cluster bindings apply everywhere, role bindings in their namespace, with kube's reason strings."""
    assert INDEX.decide(user, groups, attrs) == expected


def test_rules_for_reports_missing_roles() -> None:
    """The rules of every applicable binding are listed, and a missing role is an evaluation error."""
    rules, errs = INDEX.rules_for("carol", (), "team")
    assert rules == []
    assert errs == ['clusterrole.rbac.authorization.k8s.io "missing" not found']


@pytest.mark.parametrize(("attrs", "message", "details"), [
    (A("list", True, "", "pods", namespace="default"),
     'pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the namespace "default"',
     {"kind": "pods"}),
    (A("get", True, "apps", "deployments", "scale", "ns", "web"),
     'deployments.apps "web" is forbidden: User "alice" cannot get resource "deployments/scale" in API group "apps" '
     'in the namespace "ns"', {"name": "web", "group": "apps", "kind": "deployments"}),
    (A("list", True, "", "nodes"),
     'nodes is forbidden: User "alice" cannot list resource "nodes" in API group "" at the cluster scope',
     {"kind": "nodes"}),
    (A("get", False, path="/metrics"), 'forbidden: User "alice" cannot get path "/metrics"', {}),
])
def test_forbidden_message(attrs: rbac.Attributes, message: str, details: dict[str, Any]) -> None:
    """Denials carry the exact message and details kube-apiserver's authorization filter sends."""
    err = rbac.forbidden("alice", attrs)
    assert (err.code, err.message, err.details) == (403, message, details)


@pytest.mark.parametrize(("user", "groups", "attrs", "allowed"), [
    ("system:node:n1", ("system:nodes",), A("get", True, "", "secrets", namespace="a", name="s"), True),
    ("system:node:n1", ("system:nodes",), A("list", True, "", "secrets", namespace="a"), False),
    ("system:node:n1", ("system:nodes",), A("patch", True, "", "nodes", "status", name="n1"), True),
    ("system:node:n1", ("system:nodes",), A("delete", True, "", "nodes", name="n1"), False),
    ("system:node:n1", (), A("get", True, "", "pods", namespace="a"), False),
    ("alice", ("system:nodes",), A("get", True, "", "pods", namespace="a"), False),
])
def test_node_authorizer(user: str, groups: tuple[str, ...], attrs: rbac.Attributes, allowed: bool) -> None:
    """Kubelets (system:node:NAME in system:nodes) hold the system:node rules without a binding."""
    assert rbac.node_allows(user, groups, attrs) is allowed


def _server(store: memory.MemoryStore) -> context.Server:
    return context.Server(registry=None, objects=None, store=store, clock=None)  # type: ignore[arg-type]


async def _put(store: memory.MemoryStore, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    plural = bootstrappolicy.RESOURCES[obj["kind"]]
    key = f"{rbac.PREFIX}{plural}/" + (f"{meta['namespace']}/" if meta.get("namespace") else "") + meta["name"]
    await store.create(key, orjson.dumps(obj))


def test_authorizer_follows_the_store() -> None:
    """A binding written to the store takes effect on the next request; masters skip RBAC entirely."""
    async def main() -> None:
        store = memory.MemoryStore()
        await store.start()
        server = _server(store)
        authz = rbac.Authorizer()
        alice = context.User("alice", ("system:authenticated",))
        info = requestinfo.parse("GET", "/api/v1/namespaces/default/pods")
        with pytest.raises(errors.Forbidden):
            await authz(server, alice, info, None)
        await _put(store, _role("ClusterRole", "reader", [rule("list", [""], "pods")]))
        await _put(store, _binding("ClusterRoleBinding", "r", "ClusterRole", "reader", [ALICE]))
        await authz(server, alice, info, None)
        assert (await authz.decide(server, alice, rbac.attributes_of(info)))[1].startswith("RBAC: allowed by")
        await authz(server, context.User("root", ("system:masters",)), info, None)
        authz.close()
        await store.close()

    asyncio.run(main())
