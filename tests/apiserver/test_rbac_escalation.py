"""Escalation prevention: rule coverage, compaction and kube's 'attempting to grant' message."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.apiserver import rbac_escalation as esc


def rule(verbs: str, groups: list[str], resources: str, names: str = "") -> dict[str, Any]:
    r: dict[str, Any] = {"verbs": verbs.split(), "apiGroups": groups, "resources": resources.split()}
    if names:
        r["resourceNames"] = names.split()
    return r


@pytest.mark.parametrize(("owner", "sub", "covers"), [
    (rule("get", [""], "pods"), rule("get", [""], "pods"), True),
    (rule("*", ["*"], "*"), rule("delete", ["apps"], "deployments/scale"), True),
    (rule("get", [""], "pods"), rule("list", [""], "pods"), False),
    (rule("get", [""], "*/scale"), rule("get", [""], "deployments/scale"), True),
    (rule("get", [""], "*/scale"), rule("get", [""], "deployments"), False),
    (rule("get", [""], "pods"), rule("get", [""], "pods", "a"), True),
    (rule("get", [""], "pods", "a"), rule("get", [""], "pods"), False),
    (rule("get", [""], "pods", "a b"), rule("get", [""], "pods", "b"), True),
    ({"verbs": ["get"], "nonResourceURLs": ["/apis/*"]}, {"verbs": ["get"], "nonResourceURLs": ["/apis/apps"]}, True),
    ({"verbs": ["get"], "nonResourceURLs": ["/apis"]}, {"verbs": ["get"], "nonResourceURLs": ["/apis/apps"]}, False),
])
def test_rule_covers(owner: dict[str, Any], sub: dict[str, Any], covers: bool) -> None:
    """An owner rule covers a broken-down rule as kube's ruleCovers decides."""
    assert esc.rule_covers(owner, sub) is covers


def test_breakdown_and_compact() -> None:
    """Requested rules break down per group/resource/verb and the missing ones compact back per resource."""
    requested = [rule("get list", ["", "apps"], "secrets")]
    lacking = esc.missing([rule("get", ["apps"], "secrets")], requested)
    assert lacking == [rule("get", [""], "secrets"), rule("list", [""], "secrets"), rule("list", ["apps"], "secrets")]
    assert [esc.compact_string(r) for r in esc.compact(lacking)] == [
        '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}',
        '{APIGroups:["apps"], Resources:["secrets"], Verbs:["list"]}']


@pytest.mark.parametrize(("r", "text"), [
    (rule("get", [""], "configmaps", "a"), '{APIGroups:[""], Resources:["configmaps"], ResourceNames:["a"], Verbs:["get"]}'),
    ({"verbs": ["get"], "nonResourceURLs": ["/x"]}, '{NonResourceURLs:["/x"], Verbs:["get"]}'),
])
def test_compact_string(r: dict[str, Any], text: str) -> None:
    """Missing rules print as rbacv1helpers.CompactString does."""
    assert esc.compact_string(r) == text
