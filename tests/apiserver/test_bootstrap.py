"""Bootstrap: the objects every cluster starts with, each created once with one definition."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import bootstrappolicy, conversion, resources
from pocketkube.apiserver import allocators, bootstrap, context, objects, rbac_escalation
from pocketkube.base import clock as clock_mod


@pytest.fixture
def server(store: Any) -> context.Server:
    """An API server context over the store, with a fake clock and the service allocators bootstrap needs."""
    server = context.Server(registry=resources.Registry.builtin(), objects=objects.Objects(store, conversion.convert),
                            store=store, clock=clock_mod.FakeClock())
    server.allocators = allocators.Allocators()
    return server


async def test_local_path_provisioner_binding_has_one_definition(server: context.Server) -> None:
    """The provisioner's binding always points at its own role (it used to race a second definition)."""
    await bootstrap.run(server, secure_port=6443)
    res = server.registry.get("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
    assert res is not None
    binding = await server.objects.get(res, "", "local-path-provisioner-bind")
    assert binding["roleRef"]["name"] == "local-path-provisioner-role"
    assert binding["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                    "name": "system:local-path-provisioner"}]


def _role(rules: list[dict[str, Any]], *, annotations: dict[str, str] | None = None, **extra: Any) -> dict[str, Any]:
    return {"kind": "ClusterRole", "metadata": {"name": "r", "annotations": annotations or {}}, "rules": rules, **extra}


GET_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}
LIST_PODS = {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}
AUTO = {bootstrappolicy.AUTOUPDATE: "true"}


@pytest.mark.parametrize(("existing", "expected", "want"), [
    # Up to date: nothing to write.
    (_role([GET_PODS], annotations=AUTO), _role([GET_PODS], annotations=AUTO), None),
    # A missing verb is added broken down, after the existing rules; extra rules stay.
    (_role([GET_PODS, {"apiGroups": ["x"], "resources": ["y"], "verbs": ["*"]}], annotations=AUTO),
     _role([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]}], annotations=AUTO),
     [GET_PODS, {"apiGroups": ["x"], "resources": ["y"], "verbs": ["*"]}, LIST_PODS]),
    # autoupdate=false is left alone whatever it lacks.
    (_role([], annotations={bootstrappolicy.AUTOUPDATE: "false"}), _role([GET_PODS], annotations=AUTO), None),
])
def test_reconcile_role(existing: dict[str, Any], expected: dict[str, Any], want: list[dict[str, Any]] | None) -> None:
    """Roles get the missing rules added as kube's union reconciliation does; protected ones are never touched."""
    got = bootstrap.reconcile_role(existing, expected)
    assert (got if got is None else got["rules"]) == want


def test_reconcile_role_metadata_and_selectors() -> None:
    """Expected labels, annotations and aggregation selectors are added; existing values win on conflicts."""
    existing = _role([], annotations={"mine": "1"}, aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"a": "1"}}]})
    existing["metadata"]["labels"] = {"k": "mine"}
    expected = _role([], annotations=AUTO, aggregationRule={"clusterRoleSelectors": [{"matchLabels": {"b": "1"}}]})
    expected["metadata"]["labels"] = {"k": "theirs", "new": "x"}
    got = bootstrap.reconcile_role(existing, expected)
    assert got is not None
    assert got["metadata"]["annotations"] == {"mine": "1", **AUTO}
    assert got["metadata"]["labels"] == {"k": "mine", "new": "x"}
    assert got["aggregationRule"]["clusterRoleSelectors"] == [{"matchLabels": {"a": "1"}}, {"matchLabels": {"b": "1"}}]


def _binding(subjects: list[dict[str, Any]], *, role: str = "r", protected: bool = False) -> dict[str, Any]:
    ann = {bootstrappolicy.AUTOUPDATE: "false" if protected else "true"}
    return {"kind": "ClusterRoleBinding", "metadata": {"name": "b", "annotations": ann},
            "roleRef": {"apiGroup": bootstrappolicy.GROUP, "kind": "ClusterRole", "name": role}, "subjects": subjects}


ALICE = {"kind": "User", "apiGroup": bootstrappolicy.GROUP, "name": "alice"}
BOB = {"kind": "User", "name": "bob"}


@pytest.mark.parametrize(("existing", "expected", "want"), [
    (_binding([ALICE]), _binding([ALICE]), ("none", None)),
    (_binding([ALICE]), _binding([{**BOB}, {"kind": "User", "name": "alice"}]), ("update", [ALICE, BOB])),
    (_binding([ALICE], protected=True), _binding([BOB]), ("none", None)),
    (_binding([ALICE], role="old"), _binding([BOB]), ("recreate", [BOB])),
])
def test_reconcile_binding(existing: dict[str, Any], expected: dict[str, Any],
                           want: tuple[str, list[dict[str, Any]] | None]) -> None:
    """Missing subjects are added (apiGroup defaults count), a changed roleRef recreates, autoupdate=false stays."""
    op, got = bootstrap.reconcile_binding(existing, expected)
    assert (op, got if got is None else got["subjects"]) == want


async def test_restart_adds_missing_rules_and_subjects_but_spares_protected(server: context.Server, store: Any) -> None:
    """An old data dir's default roles and bindings gain what they lack on the next start; autoupdate=false stays."""
    await bootstrap.run(server, secure_port=6443)
    before = store.current_revision()
    await bootstrap.run(server, secure_port=6443)
    assert store.current_revision() == before  # an up-to-date policy is not rewritten
    roles = server.registry.get("rbac.authorization.k8s.io", "v1", "clusterroles")
    bindings = server.registry.get("rbac.authorization.k8s.io", "v1", "clusterrolebindings")
    assert roles is not None and bindings is not None
    node = await server.objects.get(roles, "", "system:node")
    full = list(node["rules"])
    node["rules"] = full[:1]
    await server.objects.update(roles, node, expected_revision=int(node["metadata"]["resourceVersion"]))
    basic = await server.objects.get(bindings, "", "system:basic-user")
    basic["subjects"] = []
    await server.objects.update(bindings, basic, expected_revision=int(basic["metadata"]["resourceVersion"]))
    view = await server.objects.get(roles, "", "system:discovery")
    view["metadata"]["annotations"][bootstrappolicy.AUTOUPDATE] = "false"
    view["rules"] = []
    await server.objects.update(roles, view, expected_revision=int(view["metadata"]["resourceVersion"]))
    await bootstrap.run(server, secure_port=6443)
    node = await server.objects.get(roles, "", "system:node")
    assert not rbac_escalation.missing(node["rules"], full)
    basic = await server.objects.get(bindings, "", "system:basic-user")
    assert basic["subjects"] == [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group",
                                  "name": "system:authenticated"}]
    assert basic["metadata"]["managedFields"][-1]["manager"] == "kube-apiserver"
    assert (await server.objects.get(roles, "", "system:discovery"))["rules"] == []


async def test_periodic_round_leaves_rbac_to_start_up(server: context.Server) -> None:
    """A deleted system namespace comes back in the periodic round, a default ClusterRole only at the next start-up."""
    await bootstrap.run(server, secure_port=6443)
    roles = server.registry.get("rbac.authorization.k8s.io", "v1", "clusterroles")
    namespaces = server.registry.get("", "v1", "namespaces")
    assert roles is not None and namespaces is not None
    for res, ns, name in ((roles, "", "view"), (namespaces, "", "kube-node-lease")):
        current = await server.objects.get(res, ns, name)
        await server.objects.delete(res, ns, name, expected_revision=int(current["metadata"]["resourceVersion"]))
    await bootstrap.run(server, secure_port=6443, rbac=False)
    assert await server.objects.get_or_none(namespaces, "", "kube-node-lease") is not None
    assert await server.objects.get_or_none(roles, "", "view") is None
    await bootstrap.run(server, secure_port=6443)
    assert await server.objects.get_or_none(roles, "", "view") is not None
