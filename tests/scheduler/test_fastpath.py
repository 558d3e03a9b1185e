"""Specification of the scheduler's fast paths: memoized node-local results give the same placements."""

from __future__ import annotations

import random

import pytest

from pocketkube.scheduler import fit, framework, nodeinfo
from tests.scheduler import helpers as h


def _place_all(cache: nodeinfo.Cache, fw: framework.Framework, pods: list[dict]) -> list[str]:  # type: ignore[type-arg]
    out = []
    for p in pods:
        pi = nodeinfo.PodInfo(p)
        node = fw.schedule(pi, cache, {}).node
        cache.assume(pi, node)
        out.append(node)
    return out


def test_burst_of_like_pods_spreads_evenly() -> None:
    """Pods of one shape, placed one after another with memoized scores, fill every node equally."""
    cache = h.cluster([h.node(f"n{i}", cpu="8", memory="16Gi") for i in range(10)])
    _place_all(cache, h.fw(), [h.pod(f"p{i}", cpu="100m", memory="128Mi") for i in range(50)])
    assert sorted(len(n.pods) for n in cache.nodes.values()) == [5] * 10


def test_memoized_scores_match_fresh_scores() -> None:
    """After a burst, every node's memoized score equals the score computed from scratch."""
    cache = h.cluster([h.node(f"n{i}", cpu="4", memory="8Gi") for i in range(5)])
    fw = h.fw()
    pods = [h.pod(f"p{i}", cpu=f"{100 + 50 * (i % 3)}m", memory=f"{64 * (1 + i % 2)}Mi") for i in range(30)]
    _place_all(cache, fw, pods)
    probe = nodeinfo.PodInfo(h.pod("probe", cpu="100m", memory="128Mi"))
    nodes = cache.node_list()
    memo = fw.prioritize({}, probe, nodes, cache)
    for n in nodes:
        n.results.clear()
    assert fw.prioritize({}, probe, nodes, cache) == memo


def test_node_update_invalidates_memoized_fit() -> None:
    """A node whose allocatable shrinks is re-checked, not trusted from a remembered fit."""
    cache = h.cluster([h.node("n1", cpu="4")])
    fw = h.fw()
    pi = nodeinfo.PodInfo(h.pod("p", cpu="2"))
    assert fw.schedule(pi, cache, {}).node == "n1"
    cache.set_node(h.node("n1", cpu="1"))
    with pytest.raises(framework.FitError, match="1 Insufficient cpu"):
        fw.schedule(pi, cache, {})


def test_filter_memo_does_not_leak_into_scores() -> None:
    """NodeResourcesFit's remembered fit and its remembered score are kept apart."""
    cache = h.cluster([h.node("n1"), h.node("n2")])
    pl = fit.NodeResourcesFit()
    pi = nodeinfo.PodInfo(h.pod("p", cpu="1", memory="1Gi"))
    n1 = cache.nodes["n1"]
    assert pl.filter({}, pi, n1) is None
    scores = framework._memo_scores(pl.name, pl.score, {}, pi, [n1])
    assert scores == [pl.score({}, pi, n1)] and isinstance(scores[0], int) and scores[0] > 1


@pytest.mark.parametrize("requested,allocatable", [
    ((1000, 2 << 30), (4000, 8 << 30)),
    ((4000, 1 << 30), (4000, 8 << 30)),
    ((5000, 9 << 30), (4000, 8 << 30)),
    ((0, 0), (4000, 8 << 30)),
])
def test_balanced_allocation_fast_path_matches_formula(requested: tuple[int, int],
                                                       allocatable: tuple[int, int]) -> None:
    """The unrolled two-resource BalancedAllocation score equals balanced_score's."""
    node = nodeinfo.NodeInfo("n")
    node.allocatable = {"cpu": allocatable[0], "memory": allocatable[1]}
    node.requested = {"cpu": requested[0], "memory": requested[1]}
    pi = nodeinfo.PodInfo(h.pod("p"))
    assert fit.BalancedAllocation().score({}, pi, node) == fit.balanced_score(list(requested), list(allocatable))


def test_tie_break_is_uniform_enough() -> None:
    """Equal totals are chosen among at random: every tied node is picked sometimes."""
    fw = framework.Framework([], rng=random.Random(7))
    nodes = [nodeinfo.NodeInfo(f"n{i}") for i in range(4)]
    picks = {fw.select(nodes, [5, 9, 9, 9]) for _ in range(200)}
    assert picks == {"n1", "n2", "n3"}


def test_status_update_reuses_parse_but_spec_change_reparses() -> None:
    """A bound pod's status update keeps its parsed requests; a changed spec is parsed again."""
    cache = h.cluster([h.node("n1")])
    pod = h.pod("p", cpu="1", node_name="n1")
    cache.add_pod(pod)
    running = {**pod, "status": {"phase": "Running"}}
    cache.add_pod(running)
    info = cache.pod("default/p")
    assert info is not None and info.pod is running and cache.nodes["n1"].requested["cpu"] == 1000
    resized = {**running, "spec": {**running["spec"], "containers": [
        {"name": "c", "image": "nginx", "resources": {"requests": {"cpu": "2"}}}]}}
    cache.add_pod(resized)
    assert cache.nodes["n1"].requested["cpu"] == 2000 and len(cache.nodes["n1"].pods) == 1


def test_confirmed_pod_with_new_labels_is_parsed_again() -> None:
    """Relabelled pods are parsed again, so affinity and spread see the new labels."""
    cache = h.cluster([h.node("n1")])
    pod = h.pod("p", node_name="n1", labels={"a": "1"})
    cache.add_pod(pod)
    cache.add_pod({**pod, "metadata": {**pod["metadata"], "labels": {"a": "2"}}})
    info = cache.pod("default/p")
    assert info is not None and info.labels == {"a": "2"}
