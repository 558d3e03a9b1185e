"""Specification of the scheduling cycle: filter order, FitError wording, normalization, node sampling."""

from __future__ import annotations

import pytest

from pocketkube.scheduler import framework, nodeinfo
from tests.scheduler import helpers as h


def test_fit_error_sorts_count_prefixed_reasons_as_strings() -> None:
    """kube sorts "<count> <reason>" strings, so the count decides before the reason text."""
    p = nodeinfo.PodInfo(h.pod("p"))
    st = {"a": framework.Status(framework.UNRESOLVABLE, "node(s) didn't match Pod's node affinity/selector"),
          "b": framework.Status(framework.UNSCHEDULABLE, "Insufficient cpu"),
          "c": framework.Status(framework.UNSCHEDULABLE, "Insufficient cpu")}
    e = framework.FitError(p, 3, st, postfilter_msg="preemption: 0/3 nodes are available: 3 No preemption "
                                                    "victims found for incoming pod.")
    assert str(e) == ("0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
                      "2 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims "
                      "found for incoming pod.")


def test_one_node_can_count_several_reasons() -> None:
    """A node short of cpu and memory counts once for each."""
    c = h.cluster([h.node("n1", cpu="1", memory="1Gi")])
    assert h.place(c, h.pod("p", cpu="2", memory="2Gi")) == \
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory."


def test_no_nodes_raises_no_nodes() -> None:
    """An empty cluster gives kube's "no nodes available to schedule pods"."""
    with pytest.raises(framework.NoNodes, match="no nodes available to schedule pods"):
        h.fw().schedule(nodeinfo.PodInfo(h.pod("p")), h.cluster([]))


def test_first_failing_filter_wins() -> None:
    """A cordoned node reports only NodeUnschedulable, not the later plugins' reasons."""
    c = h.cluster([h.node("n1", cpu="1", unschedulable=True)])
    assert h.place(c, h.pod("p", cpu="2")) == "0/1 nodes are available: 1 node(s) were unschedulable."


@pytest.mark.parametrize("scores,reverse,want", [
    ([0, 5, 10], False, [0, 50, 100]),
    ([0, 5, 10], True, [100, 50, 0]),
    ([0, 0], True, [100, 100]),
    ([0, 0], False, [0, 0]),
])
def test_default_normalize(scores: list[int], reverse: bool, want: list[int]) -> None:
    """DefaultNormalizeScore scales by the maximum and can reverse."""
    framework.default_normalize(scores, reverse=reverse)
    assert scores == want


@pytest.mark.parametrize("n,want", [(5, 5), (99, 99), (100, 100), (500, 230), (1000, 420), (5000, 500), (10000, 500)])
def test_num_feasible_nodes(n: int, want: int) -> None:
    """Every node up to 100, then 50% minus n/125 percent (at least 5%, at least 100 nodes)."""
    assert framework.num_feasible_nodes_to_find(n) == want


def test_ties_are_broken_among_equals() -> None:
    """Equal nodes are chosen at random, so several seeds reach several nodes."""
    c = h.cluster([h.node(f"n{i}") for i in range(3)])
    chosen = {framework.Framework(h.fw().plugins, rng=__import__("random").Random(s))
              .schedule(nodeinfo.PodInfo(h.pod("p")), c).node for s in range(20)}
    assert len(chosen) > 1


def test_match_fields_narrow_nodes_and_absent_nodes_are_counted() -> None:
    """Affinity to metadata.name filters only the named nodes; the others show as not satisfying NodeAffinity."""
    c = h.cluster([h.node("n1", cpu="1"), h.node("n2"), h.node("n3")])
    aff = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}}
    assert h.place(c, h.pod("p", cpu="2", affinity=aff)) == (
        "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) didn't satisfy plugin(s) [NodeAffinity].")
    assert h.place(c, h.pod("q", affinity=aff)) == "n1"
