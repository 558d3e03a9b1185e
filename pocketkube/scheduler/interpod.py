"""InterPodAffinity plugin: required pod affinity/anti-affinity (filter) and preferred terms (score)."""

from __future__ import annotations

from collections.abc import Sequence

from pocketkube.scheduler import framework, nodeinfo
from pocketkube.scheduler.framework import Status

AFFINITY_REASON = "node(s) didn't match pod affinity rules"
ANTI_AFFINITY_REASON = "node(s) didn't match pod anti-affinity rules"
EXISTING_ANTI_AFFINITY_REASON = "node(s) didn't satisfy existing pods anti-affinity rules"
# kube-scheduler's default hardPodAffinityWeight: existing pods' required affinity, scored.
HARD_POD_AFFINITY_WEIGHT = 1

Pair = tuple[str, str]


def _bump(counts: dict[Pair, int], pair: Pair, by: int = 1) -> None:
    counts[pair] = counts.get(pair, 0) + by


class InterPodAffinity(framework.Plugin):
    """Pods attract or repel each other within a topology domain (any node label as topologyKey)."""

    name = "InterPodAffinity"
    weight = 2

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | None:
        nodes = cluster.node_list()
        ns_labels = cluster.ns_labels
        existing_anti: dict[Pair, int] = {}
        for n in nodes:
            for ex in n.with_required_anti_affinity:
                for t in ex.required_anti_affinity:
                    if t.topology_key in n.labels and t.matches(pod, ns_labels):
                        _bump(existing_anti, (t.topology_key, n.labels[t.topology_key]))
        if not pod.required_affinity and not pod.required_anti_affinity and not existing_anti:
            return Status(framework.SKIP)
        affinity: dict[Pair, int] = {}
        anti: dict[Pair, int] = {}
        if pod.required_affinity or pod.required_anti_affinity:
            for n in nodes:
                for ex in n.pods.values():
                    if pod.required_affinity and all(t.matches(ex, ns_labels) for t in pod.required_affinity):
                        for t in pod.required_affinity:
                            if t.topology_key in n.labels:
                                _bump(affinity, (t.topology_key, n.labels[t.topology_key]))
                    for t in pod.required_anti_affinity:
                        if t.topology_key in n.labels and t.matches(ex, ns_labels):
                            _bump(anti, (t.topology_key, n.labels[t.topology_key]))
        state["interpod"] = (existing_anti, affinity, anti,
                             all(t.matches(pod, ns_labels) for t in pod.required_affinity))
        return None

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        existing_anti, affinity, anti, self_match = state["interpod"]
        labels = node.labels
        if pod.required_affinity:
            pods_exist = True
            for t in pod.required_affinity:
                if t.topology_key not in labels:
                    return Status(framework.UNRESOLVABLE, AFFINITY_REASON)
                if affinity.get((t.topology_key, labels[t.topology_key]), 0) <= 0:
                    pods_exist = False
            # The first pod of a group with affinity to itself may go anywhere with the topology.
            if not pods_exist and not (not affinity and self_match):
                return Status(framework.UNRESOLVABLE, AFFINITY_REASON)
        for t in pod.required_anti_affinity:
            v = labels.get(t.topology_key)
            if v is not None and anti.get((t.topology_key, v), 0) > 0:
                return Status(framework.UNSCHEDULABLE, ANTI_AFFINITY_REASON)
        if existing_anti:
            for k, v in labels.items():
                if existing_anti.get((k, v), 0) > 0:
                    return Status(framework.UNSCHEDULABLE, EXISTING_ANTI_AFFINITY_REASON)
        return None

    def pre_score(self, state: framework.State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                  cluster: framework.Cluster) -> Status | None:
        has_own = bool(pod.preferred_affinity or pod.preferred_anti_affinity)
        ns_labels = cluster.ns_labels
        scores: dict[str, dict[str, int]] = {}

        def add(term: nodeinfo.AffinityTerm, weight: int, target: nodeinfo.PodInfo,
                node: nodeinfo.NodeInfo, sign: int) -> None:
            v = node.labels.get(term.topology_key)
            if v is not None and term.matches(target, ns_labels):
                by_value = scores.setdefault(term.topology_key, {})
                by_value[v] = by_value.get(v, 0) + weight * sign

        for n in cluster.node_list():
            if not n.labels:
                continue
            for ex in (n.pods.values() if has_own else n.with_affinity):
                for t in pod.preferred_affinity:
                    add(t, t.weight, ex, n, 1)
                for t in pod.preferred_anti_affinity:
                    add(t, t.weight, ex, n, -1)
                for t in ex.required_affinity:
                    add(t, HARD_POD_AFFINITY_WEIGHT, pod, n, 1)
                for t in ex.preferred_affinity:
                    add(t, t.weight, pod, n, 1)
                for t in ex.preferred_anti_affinity:
                    add(t, t.weight, pod, n, -1)
        if not scores:
            return Status(framework.SKIP)
        state["interpod_scores"] = scores
        return None

    def score(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        total = 0
        for key, by_value in state["interpod_scores"].items():
            v = node.labels.get(key)
            if v is not None:
                total += by_value.get(v, 0)
        return total

    def normalize(self, state: framework.State, pod: nodeinfo.PodInfo, scores: list[int],
                  nodes: Sequence[nodeinfo.NodeInfo]) -> None:
        if not scores:
            return
        lo, hi = min(scores), max(scores)
        span = hi - lo
        for i, s in enumerate(scores):
            scores[i] = int(framework.MAX_NODE_SCORE * ((s - lo) / span)) if span > 0 else 0
