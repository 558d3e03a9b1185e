"""NodeAffinity plugin: nodeSelector and required node affinity (filter), preferred node affinity (score)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pocketkube.scheduler import framework, nodeinfo
from pocketkube.scheduler.framework import Status

POD_REASON = "node(s) didn't match Pod's node affinity/selector"
CONFLICT_REASON = "pod affinity terms conflict"
NAME_FIELD = "metadata.name"


def _int(s: Any) -> int | None:
    try:
        return int(str(s), 10)
    except ValueError:
        return None


def requirement_matches(req: Mapping[str, Any], value: str | None) -> bool:
    """One NodeSelectorRequirement against a label value (None when the label is absent).

    Malformed requirements match nothing, as kube drops terms it cannot parse."""
    op = req.get("operator")
    values = [str(v) for v in req.get("values") or []]
    if op == "In":
        return bool(values) and value is not None and value in values
    if op == "NotIn":
        return bool(values) and (value is None or value not in values)
    if op == "Exists":
        return not values and value is not None
    if op == "DoesNotExist":
        return not values and value is None
    if op in ("Gt", "Lt"):
        if len(values) != 1 or value is None:
            return False
        want, have = _int(values[0]), _int(value)
        if want is None or have is None:
            return False
        return have > want if op == "Gt" else have < want
    return False


def is_empty_term(term: Mapping[str, Any] | None) -> bool:
    return not term or (not term.get("matchExpressions") and not term.get("matchFields"))


def term_matches(term: Mapping[str, Any], labels: Mapping[str, str], node_name: str) -> bool:
    """A NodeSelectorTerm: every label expression and every metadata.name field expression holds."""
    if is_empty_term(term):
        return False
    for req in term.get("matchExpressions") or []:
        if not requirement_matches(req, labels.get(str(req.get("key") or ""))):
            return False
    for req in term.get("matchFields") or []:
        if req.get("key") != NAME_FIELD or len(req.get("values") or []) != 1:
            return False
        if req.get("operator") not in ("In", "NotIn") or not requirement_matches(req, node_name):
            return False
    return True


def required_terms(pod: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The required nodeSelectorTerms, or None when the pod has no required node affinity."""
    aff = ((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
    req = aff.get("requiredDuringSchedulingIgnoredDuringExecution")
    if req is None:
        return None
    return list(req.get("nodeSelectorTerms") or [])


def matches_required(pod: Mapping[str, Any], node: nodeinfo.NodeInfo) -> bool:
    """kube's RequiredNodeAffinity.Match: nodeSelector labels and any required term."""
    sel = (pod.get("spec") or {}).get("nodeSelector") or {}
    labels = node.labels
    for k, v in sel.items():
        if labels.get(k) != v:
            return False
    terms = required_terms(pod)
    if terms is None:
        return True
    return any(term_matches(t, labels, node.name) for t in terms)


class NodeAffinity(framework.Plugin):
    """Filter on nodeSelector + required terms; score preferred terms by weight."""

    name = "NodeAffinity"
    weight = 2

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | framework.NodeNames | None:
        spec = pod.pod.get("spec") or {}
        terms = required_terms(pod.pod)
        if terms is None and spec.get("nodeSelector") is None:
            return Status(framework.SKIP)
        if not terms:
            return None
        # Terms pinning metadata.name narrow the nodes to look at (the terms are ORed).
        names: set[str] = set()
        for t in terms:
            term_names: set[str] | None = None
            for r in t.get("matchFields") or []:
                if r.get("key") == NAME_FIELD and r.get("operator") == "In":
                    vals = {str(v) for v in r.get("values") or []}
                    term_names = vals if term_names is None else term_names & vals
            if term_names is None:
                return None
            names |= term_names
        if not names:
            return Status(framework.UNRESOLVABLE, CONFLICT_REASON)
        return framework.NodeNames(names)

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        if not matches_required(pod.pod, node):
            return Status(framework.UNRESOLVABLE, POD_REASON)
        return None

    def pre_score(self, state: framework.State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                  cluster: framework.Cluster) -> Status | None:
        aff = ((pod.pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {}
        prefs = [(int(p.get("weight") or 0), p.get("preference") or {})
                 for p in aff.get("preferredDuringSchedulingIgnoredDuringExecution") or []]
        prefs = [(w, t) for w, t in prefs if w and not is_empty_term(t)]
        if not prefs:
            return Status(framework.SKIP)
        state["node_preferences"] = prefs
        return None

    def score(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        return sum(w for w, t in state["node_preferences"] if term_matches(t, node.labels, node.name))

    def normalize(self, state: framework.State, pod: nodeinfo.PodInfo, scores: list[int],
                  nodes: Sequence[nodeinfo.NodeInfo]) -> None:
        framework.default_normalize(scores)
