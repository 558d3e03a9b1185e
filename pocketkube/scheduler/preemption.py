"""DefaultPreemption, planned purely: which lower-priority pods to evict so a pending pod fits."""

from __future__ import annotations

import dataclasses

from pocketkube.scheduler import framework, nodeinfo
from pocketkube.scheduler.framework import Status

NOT_HELPFUL = "Preemption is not helpful for scheduling"
NO_VICTIMS = "No preemption victims found for incoming pod"
POLICY_NEVER = "not eligible due to preemptionPolicy=Never."
TERMINATING = "not eligible due to a terminating pod on the nominated node."
_INT32 = 2**31


@dataclasses.dataclass
class Candidate:
    """A node that fits the preemptor once its victims are gone."""

    node: str
    victims: list[nodeinfo.PodInfo]


def _more_important(p: nodeinfo.PodInfo) -> tuple[int, str]:
    # Higher priority first, then the pod that started earlier.
    return (-p.priority, p.start_time)


def eligible(pod: nodeinfo.PodInfo, cluster: framework.Cluster) -> str:
    """"" when pod may preempt, else kube's reason why not."""
    if ((pod.pod.get("spec") or {}).get("preemptionPolicy") or "PreemptLowerPriority") == "Never":
        return POLICY_NEVER
    nominated = cluster.nodes.get(pod.nominated_node) if pod.nominated_node else None
    if nominated is not None:
        for p in nominated.pods.values():
            if p.terminating and p.priority < pod.priority:
                return TERMINATING
    return ""


def select_victims(fw: framework.Framework, pod: nodeinfo.PodInfo, cluster: framework.Cluster,
                   node: nodeinfo.NodeInfo) -> tuple[list[nodeinfo.PodInfo], Status | None]:
    """The fewest lower-priority pods on node whose removal lets pod fit, or the reason none do."""
    trial = node.clone()
    lower = sorted((p for p in node.pods.values() if p.priority < pod.priority), key=_more_important)
    if not lower:
        return [], Status(framework.UNRESOLVABLE, NO_VICTIMS)
    for p in lower:
        trial.remove_pod(p.key)
    view = framework.View(cluster, {node.name: trial})
    st = fw.filter_one(pod, view, node.name)
    if st is not None:
        return [], st
    victims = []
    for p in lower:
        trial.add_pod(p)
        if fw.filter_one(pod, framework.View(cluster, {node.name: trial}), node.name) is not None:
            trial.remove_pod(p.key)
            victims.append(p)
    return victims, None


def pick(candidates: list[Candidate]) -> Candidate:
    """kube's pickOneNodeForPreemption (without PDBs): lowest top victim priority, lowest sum, fewest
    victims, latest start among the top-priority victims, then the first."""
    def top(c: Candidate) -> int:
        return max((v.priority for v in c.victims), default=-_INT32)

    def ordering(c: Candidate) -> tuple[int, int, int, str]:
        hi = top(c)
        earliest = min((v.start_time for v in c.victims if v.priority == hi), default="")
        # Negate the start time's order by sorting on it in reverse below.
        return (hi, sum(v.priority + _INT32 for v in c.victims), len(c.victims), earliest)

    best = candidates[0]
    for c in candidates[1:]:
        a, b = ordering(c), ordering(best)
        if a[:3] < b[:3] or (a[:3] == b[:3] and a[3] > b[3]):
            best = c
    return best


def preempt(fw: framework.Framework, pod: nodeinfo.PodInfo, cluster: framework.Cluster,
            fit: framework.FitError) -> tuple[Candidate | None, str]:
    """PostFilter: the candidate to evict for (or None) and the "preemption: ..." message kube adds."""
    why = eligible(pod, cluster)
    if why:
        return None, "preemption: " + why
    nodes = cluster.node_list()
    statuses: dict[str, Status] = {}
    candidates: list[Candidate] = []
    for n in nodes:
        st = fit.statuses.get(n.name) or fit.absent
        if st is None or st.code != framework.UNSCHEDULABLE:
            statuses[n.name] = Status(framework.UNRESOLVABLE, NOT_HELPFUL)
            continue
        victims, failed = select_victims(fw, pod, cluster, n)
        if failed is not None:
            statuses[n.name] = failed
        else:
            candidates.append(Candidate(n.name, victims))
    if candidates:
        return pick(candidates), ""
    return None, "preemption: " + str(framework.FitError(pod, len(nodes), statuses))
