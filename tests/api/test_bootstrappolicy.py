"""The default RBAC policy matches what a v1.32 cluster creates (names, labels, rules, bindings)."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import bootstrappolicy as bp
from pocketkube.api import validation

ROLES = {r["metadata"]["name"]: r for r in bp.cluster_roles()}
BINDINGS = {b["metadata"]["name"]: b for b in bp.cluster_role_bindings()}


def _g(name: str) -> dict[str, str]:
    return {"kind": "Group", "apiGroup": bp.GROUP, "name": name}


def _u(name: str) -> dict[str, str]:
    return {"kind": "User", "apiGroup": bp.GROUP, "name": name}


@pytest.mark.parametrize(("name", "rules"), [
    # Exactly as testdata/cluster-roles.yaml of kubernetes' bootstrappolicy lists them.
    ("cluster-admin", [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}, {"verbs": ["*"], "nonResourceURLs": ["*"]}]),
    ("system:basic-user", [
        {"verbs": ["create"], "apiGroups": ["authorization.k8s.io"],
         "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"]},
        {"verbs": ["create"], "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"]}]),
    ("system:public-info-viewer", [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version",
                                                                         "/version/"]}]),
    ("system:discovery", [{"verbs": ["get"], "nonResourceURLs": [
        "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez", "/openapi", "/openapi/*", "/readyz", "/version",
        "/version/"]}]),
    ("system:controller:clusterrole-aggregation-controller", [
        {"verbs": ["escalate", "get", "list", "patch", "update", "watch"], "apiGroups": [bp.GROUP],
         "resources": ["clusterroles"]}]),
    ("system:certificates.k8s.io:kubelet-serving-approver", [
        {"verbs": ["approve"], "apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
         "resourceNames": ["kubernetes.io/kubelet-serving"]}]),
])
def test_role_rules(name: str, rules: list[dict[str, Any]]) -> None:
    """Well-known roles carry kube's exact rules, in kube's order."""
    assert ROLES[name]["rules"] == rules


@pytest.mark.parametrize(("name", "subjects"), [
    ("cluster-admin", [_g("system:masters")]),
    ("system:basic-user", [_g("system:authenticated")]),
    ("system:discovery", [_g("system:authenticated")]),
    ("system:public-info-viewer", [_g("system:authenticated"), _g("system:unauthenticated")]),
    ("system:kube-scheduler", [_u("system:kube-scheduler")]),
    ("system:volume-scheduler", [_u("system:kube-scheduler")]),
    ("system:kube-controller-manager", [_u("system:kube-controller-manager")]),
    ("system:node", None),
    ("system:controller:deployment-controller", [
        {"kind": "ServiceAccount", "name": "deployment-controller", "namespace": "kube-system"},
        _u("system:kube-controller-manager")]),
    ("system:controller:certificate-controller", [
        {"kind": "ServiceAccount", "name": "certificate-controller", "namespace": "kube-system"},
        _u("system:kube-controller-manager")]),
])
def test_binding_subjects(name: str, subjects: list[dict[str, str]] | None) -> None:
    """Default bindings bind kube's subjects; the controllers we run are also bound to the controller manager."""
    assert BINDINGS[name].get("subjects") == subjects
    assert BINDINGS[name]["roleRef"] == {"apiGroup": bp.GROUP, "kind": "ClusterRole", "name": name}


def test_aggregated_roles() -> None:
    """admin, edit and view aggregate by label, and edit/view roll up into the broader role."""
    for name, labels in (("admin", {}), ("edit", {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}),
                         ("view", {"rbac.authorization.k8s.io/aggregate-to-edit": "true"})):
        role = ROLES[name]
        assert role["rules"] is None
        assert role["aggregationRule"] == {"clusterRoleSelectors": [
            {"matchLabels": {f"rbac.authorization.k8s.io/aggregate-to-{name}": "true"}}]}
        assert role["metadata"]["labels"] == {**bp.LABELS, **labels}


def test_every_object_is_valid_and_marked() -> None:
    """Every default object passes validation and carries the bootstrapping label and autoupdate annotation."""
    names = set()
    for obj in bp.all_objects():
        meta = obj["metadata"]
        names.add((obj["kind"], meta.get("namespace", ""), meta["name"]))
        if obj not in bp.addon_objects():
            assert meta["labels"]["kubernetes.io/bootstrapping"] == "rbac-defaults"
            assert meta["annotations"] == {bp.AUTOUPDATE: "true"}
        namespaced = obj["kind"] in ("Role", "RoleBinding")
        assert validation.validate_create(obj, bp.GROUP, "v1", obj["kind"], namespaced=namespaced) == [], meta["name"]
    assert len(names) == len(bp.all_objects())


def test_controller_manager_roles_exist() -> None:
    """Every controller role bound to the controller manager is a default ClusterRole."""
    for name in bp.CONTROLLER_MANAGER_ROLES:
        assert bp.CONTROLLER_PREFIX + name in ROLES
