"""Taint plugins: NodeUnschedulable and TaintToleration (NoSchedule/NoExecute filter, PreferNoSchedule score)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pocketkube.scheduler import framework, nodeinfo
from pocketkube.scheduler.framework import Status

UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
UNSCHEDULABLE_REASON = "node(s) were unschedulable"
NO_SCHEDULE, PREFER_NO_SCHEDULE, NO_EXECUTE = "NoSchedule", "PreferNoSchedule", "NoExecute"


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """corev1 Toleration.ToleratesTaint: effect and key (when set), then Equal or Exists."""
    effect = toleration.get("effect") or ""
    if effect and effect != taint.get("effect"):
        return False
    key = toleration.get("key") or ""
    if key and key != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Exists":
        return True
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return False


def tolerated(tolerations: Iterable[Mapping[str, Any]], taint: Mapping[str, Any]) -> bool:
    return any(tolerates(t, taint) for t in tolerations)


def untolerated(taints: Iterable[Mapping[str, Any]], tolerations: Sequence[Mapping[str, Any]],
                effects: tuple[str, ...] = (NO_SCHEDULE, NO_EXECUTE)) -> Mapping[str, Any] | None:
    """The first taint with one of effects that no toleration tolerates."""
    for taint in taints:
        if taint.get("effect") in effects and not tolerated(tolerations, taint):
            return taint
    return None


class NodeUnschedulable(framework.Plugin):
    """Filter: cordoned nodes (spec.unschedulable) only take pods tolerating the unschedulable taint."""

    name = "NodeUnschedulable"

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | None:
        return None

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        if node.unschedulable and not tolerated(pod.tolerations, {"key": UNSCHEDULABLE_TAINT,
                                                                   "effect": NO_SCHEDULE}):
            return Status(framework.UNRESOLVABLE, UNSCHEDULABLE_REASON)
        return None


class TaintToleration(framework.Plugin):
    """Filter: every NoSchedule/NoExecute taint tolerated; Score: fewer untolerated PreferNoSchedule taints."""

    name = "TaintToleration"
    weight = 3

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | None:
        return None

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        if not node.taints:
            return None
        taint = untolerated(node.taints, pod.tolerations)
        if taint is None:
            return None
        return Status(framework.UNRESOLVABLE,
                      f"node(s) had untolerated taint {{{taint.get('key') or ''}: {taint.get('value') or ''}}}")

    def pre_score(self, state: framework.State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                  cluster: framework.Cluster) -> Status | None:
        state["taint_tolerations"] = [t for t in pod.tolerations
                                      if (t.get("effect") or "") in ("", PREFER_NO_SCHEDULE)]
        return None

    def score(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        if not node.taints:
            return 0
        tols = state["taint_tolerations"]
        return sum(1 for t in node.taints
                   if t.get("effect") == PREFER_NO_SCHEDULE and not tolerated(tols, t))

    def normalize(self, state: framework.State, pod: nodeinfo.PodInfo, scores: list[int],
                  nodes: Sequence[nodeinfo.NodeInfo]) -> None:
        framework.default_normalize(scores, reverse=True)
