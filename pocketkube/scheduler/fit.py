"""Resource and port plugins: NodeName, NodePorts, NodeResourcesFit (LeastAllocated), BalancedAllocation."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pocketkube.scheduler import framework, nodeinfo
from pocketkube.scheduler.framework import Status

NODE_NAME_REASON = "node(s) didn't match the requested node name"
PORTS_REASON = "node(s) didn't have free ports for the requested pod ports"
TOO_MANY_PODS = "Too many pods"
_BASIC = (nodeinfo.CPU, nodeinfo.MEMORY, nodeinfo.EPHEMERAL)


class NodeName(framework.Plugin):
    """Filter: a pod naming a node in spec.nodeName fits only that node."""

    name = "NodeName"

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | None:
        return None if pod.node_name else Status(framework.SKIP)

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        if pod.node_name and pod.node_name != node.name:
            return Status(framework.UNRESOLVABLE, NODE_NAME_REASON)
        return None


class NodePorts(framework.Plugin):
    """Filter: hostPorts (per IP and protocol) must be free on the node."""

    name = "NodePorts"

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | None:
        return None if pod.host_ports else Status(framework.SKIP)

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        if nodeinfo.ports_conflict(node.used_ports, pod.host_ports):
            return Status(framework.UNSCHEDULABLE, PORTS_REASON)
        return None


def insufficient(pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> list[str]:
    """kube's fitsRequest: every reason the node cannot hold the pod's requests (pods count first)."""
    alloc, used, req = node.allocatable, node.requested, pod.requests
    fast = _fits_basic(req, alloc, used)
    if fast and len(node.pods) < alloc.get(nodeinfo.PODS, 0):
        return []
    reasons = []
    if len(node.pods) + 1 > alloc.get(nodeinfo.PODS, 0):
        reasons.append(TOO_MANY_PODS)
    if fast:
        return reasons
    for name in _BASIC:
        want = req.get(name, 0)
        if want > 0 and want > alloc.get(name, 0) - used.get(name, 0):
            reasons.append(f"Insufficient {name}")
    for name in sorted(req):
        if name in _BASIC or name == nodeinfo.PODS:
            continue
        want = req[name]
        if want > 0 and alloc.get(name, 0) < want + used.get(name, 0):
            reasons.append(f"Insufficient {name}")
    return reasons


def _fits_basic(req: dict[str, int], alloc: dict[str, int], used: dict[str, int]) -> bool:
    # The common case, checked first: only cpu/memory/ephemeral-storage requested, and they fit.
    for name, want in req.items():
        if name not in _BASIC or (want > 0 and want > alloc.get(name, 0) - used.get(name, 0)):
            return False
    return True


class NodeResourcesFit(framework.Plugin):
    """Filter: requests against allocatable minus what bound pods request; Score: LeastAllocated."""

    name = "NodeResourcesFit"
    weight = 1
    node_local = True
    # The default scoring resources and their weights.
    resources = ((nodeinfo.CPU, 1), (nodeinfo.MEMORY, 1))

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | None:
        return None

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        # Only fits are remembered (a Status is mutable and carries its plugin name).
        key = ("filter", pod.shape)
        hit = node.results.get(key)
        if hit is not None and hit[0] == node.generation:
            return None
        reasons = insufficient(pod, node)
        if reasons:
            return Status(framework.UNSCHEDULABLE, *reasons)
        if len(node.results) > 64:
            node.results.clear()
        node.results[key] = (node.generation, True)
        return None

    def pre_score(self, state: framework.State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                  cluster: framework.Cluster) -> Status | None:
        return None

    def score(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        if self.resources is NodeResourcesFit.resources:
            # The default cpu+memory at weight 1 each, unrolled: this runs for every pod and node.
            allocatable = node.allocatable
            cpu, mem = allocatable.get(nodeinfo.CPU, 0), allocatable.get(nodeinfo.MEMORY, 0)
            if cpu and mem:
                return (least_requested(node.nonzero_cpu + pod.nonzero_cpu, cpu)
                        + least_requested(node.nonzero_mem + pod.nonzero_mem, mem)) // 2
        total = weights = 0
        for name, weight in self.resources:
            alloc = node.allocatable.get(name, 0)
            if alloc == 0:
                continue
            if name == nodeinfo.CPU:
                requested = node.nonzero_cpu + pod.nonzero_cpu
            else:
                requested = node.nonzero_mem + pod.nonzero_mem
            total += least_requested(requested, alloc) * weight
            weights += weight
        return total // weights if weights else 0


def least_requested(requested: int, capacity: int) -> int:
    """kube's leastRequestedScore: the free share of capacity, 0..100."""
    if capacity == 0 or requested > capacity:
        return 0
    return (capacity - requested) * framework.MAX_NODE_SCORE // capacity


def balanced_score(requested: Sequence[int], allocatable: Sequence[int]) -> int:
    """kube's balancedResourceScorer: 100 * (1 - standard deviation of the requested fractions)."""
    fractions = [min(r / a, 1.0) for r, a in zip(requested, allocatable, strict=True) if a]
    std = 0.0
    if len(fractions) == 2:
        std = abs((fractions[0] - fractions[1]) / 2)
    elif len(fractions) > 2:
        mean = sum(fractions) / len(fractions)
        std = math.sqrt(sum((f - mean) ** 2 for f in fractions) / len(fractions))
    return int((1 - std) * framework.MAX_NODE_SCORE)


class BalancedAllocation(framework.Plugin):
    """Score: prefer nodes whose cpu and memory would be equally used (actual requests, not defaults)."""

    name = "NodeResourcesBalancedAllocation"
    weight = 1
    node_local = True

    def pre_score(self, state: framework.State, pod: nodeinfo.PodInfo, nodes: Sequence[nodeinfo.NodeInfo],
                  cluster: framework.Cluster) -> Status | None:
        return None

    def score(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> int:
        allocatable, requested, wanted = node.allocatable, node.requested, pod.requests
        cpu, mem = allocatable.get(nodeinfo.CPU, 0), allocatable.get(nodeinfo.MEMORY, 0)
        if cpu and mem:
            # Two resources: the standard deviation is half the difference (balanced_score, unrolled).
            f_cpu = min((requested.get(nodeinfo.CPU, 0) + wanted.get(nodeinfo.CPU, 0)) / cpu, 1.0)
            f_mem = min((requested.get(nodeinfo.MEMORY, 0) + wanted.get(nodeinfo.MEMORY, 0)) / mem, 1.0)
            return int((1 - abs((f_cpu - f_mem) / 2)) * framework.MAX_NODE_SCORE)
        req, alloc = [], []
        for name in (nodeinfo.CPU, nodeinfo.MEMORY):
            a = node.allocatable.get(name, 0)
            if a == 0:
                continue
            req.append(node.requested.get(name, 0) + pod.requests.get(name, 0))
            alloc.append(a)
        return balanced_score(req, alloc)
