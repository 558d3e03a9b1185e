"""Specification of the ClusterRole aggregation controller: aggregated roles hold the rules their selectors gather."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.base import clock
from pocketkube.controllers import clusterroleaggregation as agg
from pocketkube.runtime import controller

R1 = {"verbs": ["get"], "apiGroups": [""], "resources": ["pods"]}
R2 = {"verbs": ["list"], "apiGroups": [""], "resources": ["pods"]}
SEL = {"clusterRoleSelectors": [{"matchLabels": {"agg": "view"}}]}


def role(name: str, rules: list[dict[str, Any]] | None, labels: dict[str, str] | None = None,
         aggregation: dict[str, Any] | None = None) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": name, "labels": labels or {}}, "rules": rules}
    if aggregation is not None:
        obj["aggregationRule"] = aggregation
    return obj


@pytest.mark.parametrize(("target", "others", "want"), [
    (role("plain", [R1]), [], None),
    (role("view", None, aggregation=SEL), [], []),
    (role("view", None, aggregation=SEL), [role("b", [R2], {"agg": "view"}), role("a", [R1], {"agg": "view"})], [R1, R2]),
    (role("view", None, aggregation=SEL), [role("a", [R1, R2], {"agg": "view"}), role("b", [R2], {"agg": "view"})],
     [R1, R2]),
    (role("view", None, aggregation=SEL), [role("a", [R1], {"agg": "edit"})], []),
    (role("view", [R1], {"agg": "view"}, aggregation=SEL), [], []),
])
def test_aggregated_rules(target: dict[str, Any], others: list[dict[str, Any]], want: list[dict[str, Any]] | None) -> None:
    """Matching roles contribute their rules in name order, each rule once, never the role itself."""
    assert agg.aggregated_rules(target, [target, *others]) == want


class FakeClient:
    def __init__(self) -> None:
        self.patches: list[tuple[str, Any]] = []

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge") -> dict[str, Any]:
        self.patches.append((path, body))
        return {}


async def test_reconcile_patches_only_on_change() -> None:
    """The controller writes the gathered rules when they differ, and leaves a current role alone."""
    client = FakeClient()
    ctl = agg.ClusterRoleAggregationController(client, clock=clock.FakeClock())  # type: ignore[arg-type]
    ctl.roles._replace([role("view", None, aggregation=SEL), role("a", [R1], {"agg": "view"})])
    assert await ctl.reconcile("view") == controller.DONE
    assert client.patches == [("/apis/rbac.authorization.k8s.io/v1/clusterroles/view", {"rules": [R1]})]
    ctl.roles._replace([role("view", [R1], aggregation=SEL), role("a", [R1], {"agg": "view"})])
    client.patches.clear()
    assert await ctl.reconcile("view") == controller.DONE
    assert await ctl.reconcile("gone") == controller.DONE
    assert client.patches == []
    assert ctl._aggregated_keys("MODIFIED", None, None) == ["view"]
