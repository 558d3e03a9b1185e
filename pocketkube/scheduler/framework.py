"""The scheduling cycle of kube-scheduler's framework: prefilter, filter, score, pick; FitError wording."""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from pocketkube.scheduler import nodeinfo

SUCCESS, ERROR, UNSCHEDULABLE, UNRESOLVABLE, SKIP = "Success", "Error", "Unschedulable", \
    "UnschedulableAndUnresolvable", "Skip"
MAX_NODE_SCORE = 100
# kube evaluates every node up to 100, then an adaptive share of them (percentageOfNodesToScore).
MIN_FEASIBLE_NODES = 100
MIN_FEASIBLE_PERCENTAGE = 5
NO_NODES = "no nodes available to schedule pods"


class Status:
    """A plugin's verdict: a code and the reasons shown in FailedScheduling messages."""

    __slots__ = ("code", "reasons", "plugin")

    def __init__(self, code: str, *reasons: str, plugin: str = "") -> None:
        self.code = code
        self.reasons = list(reasons)
        self.plugin = plugin

    @property
    def rejected(self) -> bool:
        return self.code in (UNSCHEDULABLE, UNRESOLVABLE)

    def message(self) -> str:
        return ", ".join(self.reasons)

    def __repr__(self) -> str:
        return f"Status({self.code!r}, {', '.join(map(repr, self.reasons))})"


class NodeNames(frozenset[str]):
    """A PreFilter result naming the only nodes worth filtering."""


class Cluster(Protocol):
    """What plugins read: the nodes (with their pods), namespace labels, nominated pods."""

    nodes: dict[str, nodeinfo.NodeInfo]

    def node_list(self) -> list[nodeinfo.NodeInfo]: ...

    def ns_labels(self, namespace: str) -> Mapping[str, str] | None: ...


class View:
    """A cluster view with some nodes replaced, for preemption's what-if runs."""

    def __init__(self, base: Cluster, replaced: Mapping[str, nodeinfo.NodeInfo]) -> None:
        self._base = base
        self.nodes = {**base.nodes, **replaced}
        self._list = [replaced.get(n.name, n) for n in base.node_list()]

    def node_list(self) -> list[nodeinfo.NodeInfo]:
        return self._list

    def ns_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self._base.ns_labels(namespace)


State = dict[str, Any]


class FitError(Exception):
    """No node fits: the per-node statuses and what preemption said, worded as kube-scheduler does."""

    def __init__(self, pod: nodeinfo.PodInfo, num_all_nodes: int, statuses: dict[str, Status], *,
                 prefilter_msg: str = "", absent: Status | None = None, postfilter_msg: str = "") -> None:
        super().__init__()
        self.pod = pod
        self.num_all_nodes = num_all_nodes
        self.statuses = statuses
        self.prefilter_msg = prefilter_msg
        self.absent = absent
        self.postfilter_msg = postfilter_msg

    def histogram(self) -> str:
        """kube's reason histogram: "<count> <reason>" entries, sorted as strings, comma separated."""
        counts: dict[str, int] = {}
        for st in self.statuses.values():
            for r in st.reasons:
                counts[r] = counts.get(r, 0) + 1
        missing = self.num_all_nodes - len(self.statuses)
        if self.absent is not None and missing > 0:
            for r in self.absent.reasons:
                counts[r] = counts.get(r, 0) + missing
        return ", ".join(sorted(f"{n} {r}" for r, n in counts.items()))

    def __str__(self) -> str:
        msg = f"0/{self.num_all_nodes} nodes are available:"
        if self.prefilter_msg:
            msg += f" {self.prefilter_msg}."
        else:
            hist = self.histogram()
            if hist:
                msg += f" {hist}."
        if self.postfilter_msg:
            # The PostFilter message is itself a sentence; kube shows it with one final period.
            msg += f" {self.postfilter_msg.rstrip('.')}."
        return msg


class Plugin:
    """Base of every plugin: each extension point is optional; weight applies to scores."""

    name = ""
    weight = 0
    # True when Score reads only the node (its NodeInfo) and the pod's shape (requests), so the
    # framework may reuse a node's score for the next pod of the same shape until the node changes.
    node_local = False

    def pre_filter(self, state: State, pod: nodeinfo.PodInfo, cluster: Cluster) -> Status | NodeNames | None:
        return Status(SKIP)

    def filter(self, state: State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        return None

    def pre_score(self, state: State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                  cluster: Cluster) -> Status | None:
        return Status(SKIP)

    def score(self, state: State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        return 0

    def normalize(self, state: State, pod: nodeinfo.PodInfo, scores: list[int],
                  nodes: Sequence[nodeinfo.NodeInfo]) -> None:
        return None


def default_normalize(scores: list[int], *, reverse: bool = False) -> None:
    """kube's DefaultNormalizeScore: scale to 0..100 by the maximum, optionally reversed."""
    top = max(scores, default=0)
    if top == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, s in enumerate(scores):
        s = MAX_NODE_SCORE * s // top
        scores[i] = MAX_NODE_SCORE - s if reverse else s


def num_feasible_nodes_to_find(num_all: int, percentage: int = 0) -> int:
    """How many feasible nodes kube looks for before it stops filtering (adaptive percentage)."""
    if num_all < MIN_FEASIBLE_NODES:
        return num_all
    if percentage <= 0:
        percentage = max(50 - num_all // 125, MIN_FEASIBLE_PERCENTAGE)
    return max(num_all * percentage // 100, MIN_FEASIBLE_NODES)


class Result:
    """A placement: the chosen node and how many nodes were evaluated and found feasible."""

    def __init__(self, node: str, evaluated: int, feasible: int) -> None:
        self.node = node
        self.evaluated = evaluated
        self.feasible = feasible


class Framework:
    """One scheduling profile: its plugins in kube's order, a round-robin start and a random tie-break."""

    def __init__(self, plugins: Sequence[Plugin], *, rng: random.Random | None = None,
                 percentage_of_nodes_to_score: int = 0) -> None:
        self.plugins = list(plugins)
        self.rng = rng or random.Random()
        self.percentage = percentage_of_nodes_to_score
        self._next_start = 0

    def pre_filter(self, state: State, pod: nodeinfo.PodInfo, cluster: Cluster
                   ) -> tuple[Status | None, NodeNames | None, set[str]]:
        """Run every PreFilter: (failure, node subset, plugins skipped)."""
        skipped: set[str] = set()
        subset: NodeNames | None = None
        narrowing: list[str] = []
        for pl in self.plugins:
            out = pl.pre_filter(state, pod, cluster)
            if isinstance(out, NodeNames):
                subset = out if subset is None else NodeNames(subset & out)
                narrowing.append(pl.name)
            elif out is not None:
                if out.code == SKIP:
                    skipped.add(pl.name)
                elif out.code != SUCCESS:
                    out.plugin = pl.name
                    return out, None, skipped
        state["_narrowing"] = sorted(narrowing)
        return None, subset, skipped

    def run_filters(self, state: State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo,
                    skipped: set[str]) -> Status | None:
        """The first failing Filter's status for node, or None when it fits."""
        return _run(self._filters(skipped), state, pod, node)

    def _filters(self, skipped: set[str]) -> list[tuple[str, Any]]:
        # Resolved once per cycle: the bound Filter methods of the plugins that have one and were not skipped.
        return [(pl.name, pl.filter) for pl in self.plugins
                if pl.name not in skipped and type(pl).filter is not Plugin.filter]

    def filter_one(self, pod: nodeinfo.PodInfo, cluster: Cluster, node: str) -> Status | None:
        """Fresh PreFilter plus Filter of one node of cluster (preemption's check)."""
        state: State = {}
        failed, subset, skipped = self.pre_filter(state, pod, cluster)
        if failed is not None:
            return failed
        if subset is not None and node not in subset:
            return Status(UNRESOLVABLE, f"node(s) didn't satisfy plugin(s) {_go_list(state['_narrowing'])}")
        return self.run_filters(state, pod, cluster.nodes[node], skipped)

    def schedule(self, pod: nodeinfo.PodInfo, cluster: Cluster,
                 nominated: Mapping[str, Sequence[nodeinfo.PodInfo]] | None = None) -> Result:
        """Pick a node for pod, or raise FitError (ValueError-free: bad specs become errors.APIError)."""
        all_nodes = cluster.node_list()
        if not all_nodes:
            raise NoNodes(NO_NODES)
        state: State = {}
        failed, subset, skipped = self.pre_filter(state, pod, cluster)
        if failed is not None:
            raise FitError(pod, len(all_nodes), {n.name: failed for n in all_nodes},
                           prefilter_msg=failed.message())
        absent = None
        nodes = all_nodes
        if subset is not None:
            nodes = [n for n in all_nodes if n.name in subset]
            absent = Status(UNRESOLVABLE, f"node(s) didn't satisfy plugin(s) {_go_list(state['_narrowing'])}")
        statuses: dict[str, Status] = {}
        feasible: list[nodeinfo.NodeInfo] = []
        want = num_feasible_nodes_to_find(len(nodes), self.percentage)
        # A node nominated for this pod by an earlier preemption is tried first.
        if pod.nominated_node and pod.nominated_node in cluster.nodes and cluster.nodes[pod.nominated_node] in nodes:
            n = cluster.nodes[pod.nominated_node]
            st = self._filter_with_nominated(state, pod, n, skipped, nominated)
            if st is None:
                return Result(n.name, 1, 1)
        start = self._next_start % len(nodes) if nodes else 0
        processed = 0
        filters = self._filters(skipped)
        for i in range(len(nodes)):
            n = nodes[(start + i) % len(nodes)]
            processed += 1
            if nominated and n.name in nominated:
                st = self._filter_with_nominated(state, pod, n, skipped, nominated)
            else:
                st = _run(filters, state, pod, n)
            if st is None:
                feasible.append(n)
                if len(feasible) >= want:
                    break
            else:
                statuses[n.name] = st
        if nodes:
            self._next_start = (start + processed) % len(nodes)
        if not feasible:
            raise FitError(pod, len(all_nodes), statuses, absent=absent)
        if len(feasible) == 1:
            return Result(feasible[0].name, processed, 1)
        totals = self.prioritize(state, pod, feasible, cluster)
        return Result(self.select(feasible, totals), processed, len(feasible))

    def _filter_with_nominated(self, state: State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo,
                               skipped: set[str], nominated: Mapping[str, Sequence[nodeinfo.PodInfo]] | None
                               ) -> Status | None:
        if not nominated or node.name not in nominated:
            return self.run_filters(state, pod, node, skipped)
        # Pods of at least this priority nominated to the node count as if already there.
        others = [p for p in nominated[node.name]
                  if p.key != pod.key and p.priority >= pod.priority and p.key not in node.pods]
        if others:
            with_them = node.clone()
            for p in others:
                with_them.add_pod(p)
            st = self.run_filters(state, pod, with_them, skipped)
            if st is not None:
                return st
        return self.run_filters(state, pod, node, skipped)

    def prioritize(self, state: State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                   cluster: Cluster) -> list[int]:
        """Weighted sum of every Score plugin's normalized scores, per node."""
        totals = [0] * len(nodes)
        for pl in self.plugins:
            if not pl.weight:
                continue
            st = pl.pre_score(state, pod, nodes, cluster)
            if st is not None and st.code == SKIP:
                continue
            score = pl.score
            if pl.node_local:
                scores = _memo_scores(pl.name, score, state, pod, nodes)
            else:
                scores = [score(state, pod, n) for n in nodes]
            pl.normalize(state, pod, scores, nodes)
            w = pl.weight
            totals = [t + s * w for t, s in zip(totals, scores, strict=True)]
        return totals

    def select(self, nodes: Sequence[nodeinfo.NodeInfo], totals: Sequence[int]) -> str:
        """The highest-scoring node; ties broken uniformly at random (one draw among the tied nodes)."""
        if not nodes:
            return ""
        best = max(totals)
        tied = [n.name for n, s in zip(nodes, totals, strict=True) if s == best]
        return tied[0] if len(tied) == 1 else tied[self.rng.randrange(len(tied))]


class NoNodes(Exception):
    """The cluster has no nodes at all."""


def _memo_scores(name: str, score: Any, state: State, pod: nodeinfo.PodInfo,
                 nodes: Sequence[nodeinfo.NodeInfo]) -> list[int]:
    # A burst of like pods changes one node per cycle: every other node's score is still valid.
    key = (name, pod.shape)
    out = []
    for n in nodes:
        hit = n.results.get(key)
        if hit is not None and hit[0] == n.generation:
            out.append(hit[1])
            continue
        v = score(state, pod, n)
        if len(n.results) > 64:
            n.results.clear()
        n.results[key] = (n.generation, v)
        out.append(v)
    return out


def _run(filters: Sequence[tuple[str, Any]], state: State, pod: nodeinfo.PodInfo,
         node: nodeinfo.NodeInfo) -> Status | None:
    for name, fn in filters:
        st = fn(state, pod, node)
        if st is not None and st.code != SUCCESS:
            st.plugin = name
            return st
    return None


def _go_list(items: Iterable[str]) -> str:
    return "[" + " ".join(items) + "]"
