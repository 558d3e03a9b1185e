"""PodTopologySpread plugin: DoNotSchedule constraints (filter), ScheduleAnyway and system defaults (score)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pocketkube.api import selectors
from pocketkube.scheduler import framework, nodeaffinity, nodeinfo, taints
from pocketkube.scheduler.framework import Status

CONSTRAINTS_REASON = "node(s) didn't match pod topology spread constraints"
MISSING_LABEL_REASON = CONSTRAINTS_REASON + " (missing required label)"
DO_NOT_SCHEDULE, SCHEDULE_ANYWAY = "DoNotSchedule", "ScheduleAnyway"
# kube-scheduler's system default constraints, applied to pods without their own.
SYSTEM_DEFAULTS = ((nodeinfo.HOSTNAME, 3), (nodeinfo.ZONE, 5))
_MAX = 2**31 - 1

# The selector of the Services and controllers owning a pod (kube's DefaultSelector), or None.
DefaultSelector = Callable[[nodeinfo.PodInfo], "selectors.Selector | None"]


class Constraint:
    """One topology spread constraint, with matchLabelKeys folded into its selector."""

    __slots__ = ("max_skew", "key", "selector", "min_domains", "honor_affinity", "honor_taints", "memo")

    def __init__(self, max_skew: int, key: str, selector: selectors.Selector, *, min_domains: int = 1,
                 honor_affinity: bool = True, honor_taints: bool = False) -> None:
        self.max_skew = max_skew
        self.key = key
        self.selector = selector
        self.min_domains = min_domains
        self.honor_affinity = honor_affinity
        self.honor_taints = honor_taints
        self.memo: Any = None

    def count(self, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        """Matching pods of pod's namespace on node."""
        if self.memo is None:
            self.memo = (pod.namespace, str(self.selector))
        return node.count_matching(pod.namespace, self.selector, self.memo)

    def includes(self, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> bool:
        """nodeAffinityPolicy / nodeTaintsPolicy: whether node's pods count toward the skew."""
        if self.honor_affinity and pod.has_node_constraints and not nodeaffinity.matches_required(pod.pod, node):
            return False
        return not (self.honor_taints and taints.untolerated(node.taints, pod.tolerations) is not None)


def constraints(pod: nodeinfo.PodInfo, when: str) -> list[Constraint]:
    """The pod's own constraints with the given whenUnsatisfiable."""
    out = []
    for c in (pod.pod.get("spec") or {}).get("topologySpreadConstraints") or []:
        if (c.get("whenUnsatisfiable") or "") != when:
            continue
        sel = selectors.from_label_selector(c.get("labelSelector"))
        extra = [selectors.Requirement(k, selectors.IN, (pod.labels[k],))
                 for k in c.get("matchLabelKeys") or [] if k in pod.labels]
        if extra and not sel.matches_nothing:
            sel = selectors.Selector(tuple(sorted((*sel.requirements, *extra), key=lambda r: r.key)))
        out.append(Constraint(int(c.get("maxSkew") or 1), str(c.get("topologyKey") or ""), sel,
                              min_domains=int(c.get("minDomains") or 1),
                              honor_affinity=(c.get("nodeAffinityPolicy") or "Honor") == "Honor",
                              honor_taints=(c.get("nodeTaintsPolicy") or "Ignore") == "Honor"))
    return out


def _has_keys(labels: Mapping[str, str], cs: Sequence[Constraint]) -> bool:
    return all(c.key in labels for c in cs)


class PodTopologySpread(framework.Plugin):
    """Keeps matching pods evenly spread over topology domains."""

    name = "PodTopologySpread"
    weight = 2

    def __init__(self, default_selector: DefaultSelector | None = None) -> None:
        self.default_selector = default_selector

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | None:
        cs = constraints(pod, DO_NOT_SCHEDULE)
        if not cs:
            return Status(framework.SKIP)
        counts: list[dict[str, int]] = [{} for _ in cs]
        for n in cluster.node_list():
            if not _has_keys(n.labels, cs):
                continue
            for i, c in enumerate(cs):
                if not c.includes(pod, n):
                    continue
                v = n.labels[c.key]
                counts[i][v] = counts[i].get(v, 0) + c.count(pod, n)
        state["spread_filter"] = (cs, counts, [min(m.values(), default=_MAX) for m in counts])
        return None

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        cs, counts, mins = state["spread_filter"]
        for i, c in enumerate(cs):
            v = node.labels.get(c.key)
            if v is None:
                return Status(framework.UNRESOLVABLE, MISSING_LABEL_REASON)
            min_match = 0 if len(counts[i]) < c.min_domains else mins[i]
            self_match = 1 if c.selector.matches(pod.labels) else 0
            if counts[i].get(v, 0) + self_match - min_match > c.max_skew:
                return Status(framework.UNSCHEDULABLE, CONSTRAINTS_REASON)
        return None

    def _soft(self, pod: nodeinfo.PodInfo) -> tuple[list[Constraint], bool]:
        if (pod.pod.get("spec") or {}).get("topologySpreadConstraints"):
            return constraints(pod, SCHEDULE_ANYWAY), True
        sel = self.default_selector(pod) if self.default_selector is not None else None
        if sel is None or sel.empty or sel.matches_nothing:
            return [], False
        return [Constraint(skew, key, sel) for key, skew in SYSTEM_DEFAULTS], False

    def pre_score(self, state: framework.State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                  cluster: framework.Cluster) -> Status | None:
        cs, require_all = self._soft(pod)
        if not cs or not nodes:
            return Status(framework.SKIP)
        ignored: set[str] = set()
        pairs: dict[tuple[str, str], int] = {}
        sizes = [0] * len(cs)
        for n in nodes:
            if require_all and not _has_keys(n.labels, cs):
                ignored.add(n.name)
                continue
            for i, c in enumerate(cs):
                if c.key == nodeinfo.HOSTNAME:
                    continue
                pair = (c.key, n.labels.get(c.key, ""))
                if pair not in pairs:
                    pairs[pair] = 0
                    sizes[i] += 1
        weights = []
        for i, c in enumerate(cs):
            size = len(nodes) - len(ignored) if c.key == nodeinfo.HOSTNAME else sizes[i]
            weights.append(math.log(size + 2))
        for n in cluster.node_list():
            if require_all and not _has_keys(n.labels, cs):
                continue
            for c in cs:
                pair = (c.key, n.labels.get(c.key, ""))
                if pair in pairs and c.includes(pod, n):
                    pairs[pair] += c.count(pod, n)
        state["spread_score"] = (cs, pairs, weights, ignored)
        return None

    def score(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        cs, pairs, weights, ignored = state["spread_score"]
        if node.name in ignored:
            return 0
        total = 0.0
        for c, w in zip(cs, weights, strict=True):
            v = node.labels.get(c.key)
            if v is None:
                continue
            cnt = c.count(pod, node) if c.key == nodeinfo.HOSTNAME \
                else pairs.get((c.key, v), 0)
            total += cnt * w + (c.max_skew - 1)
        return math.floor(total + 0.5)

    def normalize(self, state: framework.State, pod: nodeinfo.PodInfo, scores: list[int],
                  nodes: Sequence[nodeinfo.NodeInfo]) -> None:
        ignored = state["spread_score"][3]
        valid = [s for s, n in zip(scores, nodes, strict=True) if n.name not in ignored]
        lo, hi = min(valid, default=0), max(valid, default=0)
        for i, n in enumerate(nodes):
            if n.name in ignored:
                scores[i] = 0
            elif hi == 0:
                scores[i] = framework.MAX_NODE_SCORE
            else:
                scores[i] = framework.MAX_NODE_SCORE * (hi + lo - scores[i]) // hi


def default_selector_from(services: Sequence[Mapping[str, Any]], owner: Mapping[str, Any] | None,
                          ) -> selectors.Selector | None:
    """kube's DefaultSelector: merged selectors of the pod's Services plus its controller's selector.

    services are the Services selecting the pod; owner is the controlling ReplicaSet, StatefulSet
    or ReplicationController object (or None)."""
    labels: dict[str, str] = {}
    for svc in services:
        labels.update((svc.get("spec") or {}).get("selector") or {})
    reqs = list(selectors.from_set(labels).requirements)
    if owner is not None:
        spec = owner.get("spec") or {}
        if owner.get("kind") == "ReplicationController":
            labels.update(spec.get("selector") or {})
            reqs = list(selectors.from_set(labels).requirements)
        else:
            try:
                other = selectors.from_label_selector(spec.get("selector"))
            except Exception:
                other = selectors.EVERYTHING
            if not other.matches_nothing:
                reqs.extend(other.requirements)
    if not reqs:
        return None
    return selectors.Selector(tuple(sorted(reqs, key=lambda r: r.key)))
