"""ClusterRole aggregation: an aggregated ClusterRole's rules are the union of the ClusterRoles its selectors match."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer as informer_mod
from pocketkube.client import rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.clusterroleaggregation")

CLUSTER_ROLES = rest.GVR("rbac.authorization.k8s.io", "v1", "clusterroles")


def _selectors(role: Mapping[str, Any]) -> list[selectors.Selector] | None:
    agg = role.get("aggregationRule")
    if not isinstance(agg, dict):
        return None
    out = []
    for sel in agg.get("clusterRoleSelectors") or ():
        try:
            out.append(selectors.from_label_selector(sel))
        except errors.BadRequest:
            continue
    return out


def aggregated_rules(role: Mapping[str, Any], roles: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]] | None:
    """The rules `role` should hold (None when it is not aggregated): matching roles by name, duplicates once."""
    sels = _selectors(role)
    if sels is None:
        return None
    own = (role.get("metadata") or {}).get("name")
    matched: dict[str, Mapping[str, Any]] = {}
    for other in roles:
        meta = other.get("metadata") or {}
        name = str(meta.get("name") or "")
        if name != own and any(s.matches(meta.get("labels") or {}) for s in sels):
            matched[name] = other
    rules: list[dict[str, Any]] = []
    for name in sorted(matched):
        for rule in matched[name].get("rules") or ():
            if isinstance(rule, dict) and rule not in rules:
                rules.append(rule)
    return rules


class ClusterRoleAggregationController(controller.Reconciler):
    """Reconciles aggregated ClusterRoles by name; any ClusterRole change requeues every aggregated one."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 1,
                 informers: informer_mod.Factory | None = None) -> None:
        super().__init__(client, "clusterrole-aggregation", workers=workers, clock=clock, informers=informers)
        self.roles = self.watch(CLUSTER_ROLES, self._aggregated_keys)

    def _aggregated_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        # A label or rule change anywhere may change what an aggregated role gathers.
        return [r["metadata"]["name"] for r in self.roles.list() if isinstance(r.get("aggregationRule"), dict)]

    async def reconcile(self, name: str) -> controller.Outcome:
        role = self.roles.get(name)
        if role is None:
            return controller.DONE
        rules = aggregated_rules(role, self.roles.list())
        if rules is None or rules == (role.get("rules") or []) and role.get("rules") is not None:
            return controller.DONE
        try:
            await self.client.patch(CLUSTER_ROLES.path("", name), {"rules": rules}, patch_type="merge")
        except errors.NotFound:
            return controller.DONE
        return controller.DONE
