"""The scheduler's view of the cluster: parsed pods and nodes, per-node requested resources, assumed pods."""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pocketkube.api import errors, quantity, selectors

CPU, MEMORY, EPHEMERAL, PODS = "cpu", "memory", "ephemeral-storage", "pods"
# What a container without requests counts as when scoring (kube's DefaultMilliCPURequest and
# DefaultMemoryRequest), so best-effort pods still spread.
DEFAULT_MILLI_CPU = 100
DEFAULT_MEMORY = 200 * 1024 * 1024
HOSTNAME = "kubernetes.io/hostname"
ZONE = "topology.kubernetes.io/zone"
# Namespace labels by namespace name, for namespaceSelector in pod affinity terms.
NamespaceLabels = Callable[[str], "Mapping[str, str] | None"]


@functools.lru_cache(maxsize=4096)
def _amount(name: str, text: str) -> int:
    q = quantity.parse(text).value
    return math.ceil(q * 1000) if name == CPU else math.ceil(q)


def amount(name: str, value: Any) -> int:
    """A resource quantity as an integer: millicores for cpu, units (bytes, count) otherwise."""
    try:
        return _amount(name, str(value))
    except (quantity.QuantityError, ValueError, TypeError):
        raise errors.BadRequest(f"invalid quantity {value!r} for resource {name}") from None


def resource_list(rl: Mapping[str, Any] | None) -> dict[str, int]:
    """A ResourceList (name -> quantity) as name -> integer amount."""
    return {name: amount(name, v) for name, v in (rl or {}).items()}


def _add(into: dict[str, int], rl: Mapping[str, int]) -> None:
    for k, v in rl.items():
        into[k] = into.get(k, 0) + v


def _max(into: dict[str, int], rl: Mapping[str, int]) -> None:
    for k, v in rl.items():
        if v > into.get(k, 0):
            into[k] = v


def pod_requests(spec: Mapping[str, Any]) -> dict[str, int]:
    """kube's PodRequests: containers plus sidecars, at least each init container's peak, plus overhead."""
    reqs: dict[str, int] = {}
    for c in spec.get("containers") or []:
        _add(reqs, resource_list((c.get("resources") or {}).get("requests")))
    sidecars: dict[str, int] = {}
    init_peak: dict[str, int] = {}
    for c in spec.get("initContainers") or []:
        r = resource_list((c.get("resources") or {}).get("requests"))
        if c.get("restartPolicy") == "Always":
            # A sidecar keeps running beside everything started after it.
            _add(sidecars, r)
            _max(init_peak, sidecars)
        else:
            peak = dict(sidecars)
            _add(peak, r)
            _max(init_peak, peak)
    _add(reqs, sidecars)
    _max(reqs, init_peak)
    _add(reqs, resource_list(spec.get("overhead")))
    return reqs


def nonzero_requests(spec: Mapping[str, Any]) -> tuple[int, int]:
    """(milli cpu, memory) for scoring, with kube's defaults for containers that request none."""
    def one(c: Mapping[str, Any]) -> tuple[int, int]:
        r = (c.get("resources") or {}).get("requests") or {}
        cpu = amount(CPU, r[CPU]) if CPU in r else DEFAULT_MILLI_CPU
        mem = amount(MEMORY, r[MEMORY]) if MEMORY in r else DEFAULT_MEMORY
        return cpu, mem
    cpu = mem = 0
    side_cpu = side_mem = 0
    init_cpu = init_mem = 0
    for c in spec.get("containers") or []:
        a, b = one(c)
        cpu, mem = cpu + a, mem + b
    for c in spec.get("initContainers") or []:
        a, b = one(c)
        if c.get("restartPolicy") == "Always":
            side_cpu, side_mem = side_cpu + a, side_mem + b
            init_cpu, init_mem = max(init_cpu, side_cpu), max(init_mem, side_mem)
        else:
            init_cpu, init_mem = max(init_cpu, side_cpu + a), max(init_mem, side_mem + b)
    cpu, mem = max(cpu + side_cpu, init_cpu), max(mem + side_mem, init_mem)
    overhead = resource_list(spec.get("overhead"))
    return cpu + overhead.get(CPU, 0), mem + overhead.get(MEMORY, 0)


class AffinityTerm:
    """One pod (anti-)affinity term, resolved: selector, namespaces, namespace selector, topology key."""

    __slots__ = ("selector", "namespaces", "ns_selector", "topology_key", "weight")

    def __init__(self, term: Mapping[str, Any], owner_namespace: str, weight: int = 0) -> None:
        self.selector = selectors.from_label_selector(term.get("labelSelector"))
        nss = term.get("namespaces") or []
        raw_ns_sel = term.get("namespaceSelector")
        self.ns_selector = selectors.from_label_selector(raw_ns_sel) if raw_ns_sel is not None else None
        if not nss and raw_ns_sel is None:
            nss = [owner_namespace]
        self.namespaces = frozenset(nss)
        self.topology_key = str(term.get("topologyKey") or "")
        self.weight = weight

    def matches(self, pod: PodInfo, ns_labels: NamespaceLabels) -> bool:
        """Whether pod is selected by this term (its namespace and its labels)."""
        if pod.namespace not in self.namespaces:
            if self.ns_selector is None:
                return False
            labels = ns_labels(pod.namespace)
            if labels is None or not self.ns_selector.matches(labels):
                return False
        return self.selector.matches(pod.labels)


def _terms(raw: Any, ns: str, *, weighted: bool) -> list[AffinityTerm]:
    out = []
    for t in raw or []:
        if weighted:
            w = int(t.get("weight") or 0)
            if w:
                out.append(AffinityTerm(t.get("podAffinityTerm") or {}, ns, w))
        else:
            out.append(AffinityTerm(t, ns))
    return out


class PodInfo:
    """A pod with everything the plugins read parsed once: requests, ports, affinity terms."""

    def __init__(self, pod: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        self.pod = pod
        self.name = str(meta.get("name") or "")
        self.namespace = str(meta.get("namespace") or "")
        self.key = f"{self.namespace}/{self.name}"
        self.uid = str(meta.get("uid") or "")
        self.labels: dict[str, str] = meta.get("labels") or {}
        self.terminating = bool(meta.get("deletionTimestamp"))
        self.priority = int(spec.get("priority") or 0)
        self.node_name = str(spec.get("nodeName") or "")
        self.requests = pod_requests(spec)
        self.nonzero_cpu, self.nonzero_mem = nonzero_requests(spec)
        self.host_ports = host_ports(spec)
        # What resource plugins read of the pod: pods of one shape get the same node-local scores. A string,
        # as it keys every node's memo once per node and plugin each cycle: a str caches its hash, a tuple
        # of tuples is hashed anew on every lookup.
        self.shape = repr((tuple(sorted(self.requests.items())), self.nonzero_cpu, self.nonzero_mem))
        self.tolerations: list[dict[str, Any]] = spec.get("tolerations") or []
        aff = spec.get("affinity") or {}
        self.has_node_constraints = bool(spec.get("nodeSelector") or (aff.get("nodeAffinity") or {}).get(
            "requiredDuringSchedulingIgnoredDuringExecution"))
        pa, paa = aff.get("podAffinity") or {}, aff.get("podAntiAffinity") or {}
        ns = self.namespace
        self.required_affinity = _terms(pa.get("requiredDuringSchedulingIgnoredDuringExecution"), ns, weighted=False)
        self.required_anti_affinity = _terms(paa.get("requiredDuringSchedulingIgnoredDuringExecution"), ns,
                                             weighted=False)
        self.preferred_affinity = _terms(pa.get("preferredDuringSchedulingIgnoredDuringExecution"), ns, weighted=True)
        self.preferred_anti_affinity = _terms(paa.get("preferredDuringSchedulingIgnoredDuringExecution"), ns,
                                              weighted=True)
        self.has_affinity = bool(self.required_affinity or self.required_anti_affinity
                                 or self.preferred_affinity or self.preferred_anti_affinity)
        status = pod.get("status") or {}
        self.start_time = str(status.get("startTime") or meta.get("creationTimestamp") or "")
        self.nominated_node = str(status.get("nominatedNodeName") or "")


def _reparsed(old: PodInfo, pod: dict[str, Any]) -> PodInfo | None:
    """old carrying the new pod object, when nothing PodInfo parses has changed (status updates of a
    running pod, or the confirmation of an assumed one); None when the pod needs parsing again."""
    prev = old.pod
    pm, nm = prev.get("metadata") or {}, pod.get("metadata") or {}
    ps, ns = prev.get("status") or {}, pod.get("status") or {}
    same = (pm.get("uid") == nm.get("uid") and pm.get("labels") == nm.get("labels")
            and pm.get("deletionTimestamp") == nm.get("deletionTimestamp")
            and pm.get("creationTimestamp") == nm.get("creationTimestamp")
            and ps.get("startTime") == ns.get("startTime")
            and ps.get("nominatedNodeName") == ns.get("nominatedNodeName")
            and prev.get("spec") == pod.get("spec"))
    if not same:
        return None
    p = copy.copy(old)
    p.pod = pod
    return p


def host_ports(spec: Mapping[str, Any]) -> list[tuple[str, str, int]]:
    """(hostIP, protocol, hostPort) of every container port that claims a host port."""
    out = []
    containers = list(spec.get("containers") or [])
    containers += [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") == "Always"]
    for c in containers:
        for p in c.get("ports") or []:
            hp = int(p.get("hostPort") or 0)
            if hp > 0:
                out.append((str(p.get("hostIP") or "0.0.0.0"), str(p.get("protocol") or "TCP"), hp))
    return out


def ports_conflict(used: Iterable[tuple[str, str, int]], wanted: Iterable[tuple[str, str, int]]) -> bool:
    """Whether any wanted host port is taken (0.0.0.0 conflicts with every address)."""
    used = list(used)
    for ip, proto, port in wanted:
        for uip, uproto, uport in used:
            if port == uport and proto == uproto and (ip == uip or "0.0.0.0" in (ip, uip)):
                return True
    return False


class NodeInfo:
    """One node with the pods on it and their summed requests."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.node: dict[str, Any] | None = None
        self.labels: dict[str, str] = {}
        self.taints: list[dict[str, Any]] = []
        self.unschedulable = False
        self.allocatable: dict[str, int] = {}
        self.pods: dict[str, PodInfo] = {}
        self.requested: dict[str, int] = {}
        self.nonzero_cpu = 0
        self.nonzero_mem = 0
        self.used_ports: list[tuple[str, str, int]] = []
        self.with_affinity: list[PodInfo] = []
        self.with_required_anti_affinity: list[PodInfo] = []
        # Bumped on every pod change, so per-node memos (spread counts) know when to recount.
        self.generation = 0
        self._memo: dict[Any, tuple[int, int]] = {}
        # Node-local plugin results by (plugin, pod shape), valid while generation is unchanged.
        self.results: dict[Any, tuple[int, Any]] = {}

    def count_matching(self, namespace: str, selector: selectors.Selector, key: Any = None) -> int:
        """Pods in namespace, not terminating, whose labels selector matches (memoized per generation;
        pass a cheap hashable key standing for (namespace, selector) when calling in a loop)."""
        key = key if key is not None else (namespace, str(selector))
        hit = self._memo.get(key)
        if hit is not None and hit[0] == self.generation:
            return hit[1]
        n = sum(1 for p in self.pods.values()
                if p.namespace == namespace and not p.terminating and selector.matches(p.labels))
        if len(self._memo) > 256:
            self._memo.clear()
        self._memo[key] = (self.generation, n)
        return n

    def set_node(self, node: dict[str, Any] | None) -> None:
        self.node = node
        self.generation += 1
        if node is None:
            return
        meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
        self.labels = meta.get("labels") or {}
        self.taints = spec.get("taints") or []
        self.unschedulable = bool(spec.get("unschedulable"))
        try:
            self.allocatable = resource_list(status.get("allocatable") or status.get("capacity"))
        except errors.APIError:
            self.allocatable = {}

    def add_pod(self, p: PodInfo) -> None:
        if p.key in self.pods:
            self.remove_pod(p.key)
        self.pods[p.key] = p
        self.generation += 1
        _add(self.requested, p.requests)
        self.nonzero_cpu += p.nonzero_cpu
        self.nonzero_mem += p.nonzero_mem
        self.used_ports.extend(p.host_ports)
        if p.has_affinity:
            self.with_affinity.append(p)
        if p.required_anti_affinity:
            self.with_required_anti_affinity.append(p)

    def remove_pod(self, key: str) -> PodInfo | None:
        p = self.pods.pop(key, None)
        if p is None:
            return None
        self.generation += 1
        for k, v in p.requests.items():
            self.requested[k] = self.requested.get(k, 0) - v
        self.nonzero_cpu -= p.nonzero_cpu
        self.nonzero_mem -= p.nonzero_mem
        for hp in p.host_ports:
            self.used_ports.remove(hp)
        if p.has_affinity:
            self.with_affinity = [q for q in self.with_affinity if q.key != key]
        if p.required_anti_affinity:
            self.with_required_anti_affinity = [q for q in self.with_required_anti_affinity if q.key != key]
        return p

    def clone(self) -> NodeInfo:
        """A copy whose pod set can change without touching this one (for preemption what-ifs)."""
        c = NodeInfo(self.name)
        c.set_node(self.node)
        for p in self.pods.values():
            c.add_pod(p)
        return c


class Cache:
    """Nodes and the pods bound (or assumed bound) to them; pure bookkeeping, no I/O."""

    def __init__(self) -> None:
        self.nodes: dict[str, NodeInfo] = {}
        self._pod_node: dict[str, str] = {}
        self.assumed: set[str] = set()
        self._order: list[NodeInfo] | None = None
        self.namespace_labels: dict[str, dict[str, str]] = {}

    def ns_labels(self, namespace: str) -> Mapping[str, str] | None:
        return self.namespace_labels.get(namespace)

    def set_node(self, node: dict[str, Any]) -> None:
        name = str((node.get("metadata") or {}).get("name") or "")
        info = self.nodes.get(name)
        if info is None:
            info = self.nodes[name] = NodeInfo(name)
            self._order = None
        elif info.node is None or info.labels.get(ZONE) != ((node.get("metadata") or {}).get("labels") or {}).get(ZONE):
            self._order = None
        info.set_node(node)

    def remove_node(self, name: str) -> None:
        info = self.nodes.get(name)
        if info is None:
            return
        self._order = None
        if info.pods:
            # Pods still bound to a deleted node keep counting until they go too (kube keeps a ghost).
            info.set_node(None)
        else:
            del self.nodes[name]

    def node_list(self) -> list[NodeInfo]:
        """Schedulable-candidate nodes, interleaved across zones as kube's node tree orders them."""
        if self._order is None:
            zones: dict[str, list[NodeInfo]] = {}
            for info in sorted(self.nodes.values(), key=lambda n: n.name):
                if info.node is not None:
                    zones.setdefault(info.labels.get(ZONE, ""), []).append(info)
            columns = list(zones.values())
            order: list[NodeInfo] = []
            for i in range(max((len(c) for c in columns), default=0)):
                order.extend(c[i] for c in columns if i < len(c))
            self._order = order
        return self._order

    def add_pod(self, pod: dict[str, Any]) -> None:
        """Add or update an assigned pod (confirming it if it was assumed)."""
        meta = pod.get("metadata") or {}
        old = self.pod(f"{meta.get('namespace') or ''}/{meta.get('name') or ''}")
        p = _reparsed(old, pod) if old is not None else None
        if p is None:
            p = PodInfo(pod)
        self.assumed.discard(p.key)
        self._place(p)

    def assume(self, p: PodInfo, node: str) -> None:
        """Count a pod on node before the binding is confirmed, so the next pods see it."""
        spec = dict(p.pod.get("spec") or {})
        spec["nodeName"] = node
        # Everything parsed from the pod stays valid: only the node differs.
        assumed = PodInfo.__new__(PodInfo)  # copy.copy without its generic __reduce_ex__ round trip
        assumed.__dict__.update(p.__dict__)
        assumed.pod = {**p.pod, "spec": spec}
        assumed.node_name = node
        self.assumed.add(assumed.key)
        self._place(assumed)

    def forget(self, key: str) -> None:
        """Drop an assumed pod whose binding failed."""
        if key in self.assumed:
            self.assumed.discard(key)
            self.remove_pod(key)

    def is_assumed(self, key: str) -> bool:
        return key in self.assumed

    def _place(self, p: PodInfo) -> None:
        old = self._pod_node.get(p.key)
        if old is not None and old != p.node_name:
            self.remove_pod(p.key)
        info = self.nodes.get(p.node_name)
        if info is None:
            info = self.nodes[p.node_name] = NodeInfo(p.node_name)
        info.add_pod(p)
        self._pod_node[p.key] = p.node_name

    def remove_pod(self, key: str) -> PodInfo | None:
        node = self._pod_node.pop(key, None)
        self.assumed.discard(key)
        if node is None:
            return None
        info = self.nodes.get(node)
        if info is None:
            return None
        p = info.remove_pod(key)
        if info.node is None and not info.pods:
            del self.nodes[node]
        return p

    def pod(self, key: str) -> PodInfo | None:
        node = self._pod_node.get(key)
        info = self.nodes.get(node) if node is not None else None
        return info.pods.get(key) if info is not None else None
