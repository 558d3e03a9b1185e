"""Pure ReplicaSet rules: pod activity/readiness, ownership claims, deletion ranking, status, expectations."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
import math
from collections.abc import Iterable
from typing import Any

from pocketkube.api import selectors
from pocketkube.base import clock as clock_mod
from pocketkube.controllers import ownerrefs, podutil

DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
REPLICA_FAILURE = "ReplicaFailure"
# kube's ControllerExpectations give up on an unobserved create/delete after five minutes.
EXPECTATIONS_TTL = 300.0
# kube's --concurrent-... burstReplicas: at most this many creates or deletes per sync.
BURST_REPLICAS = 500
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}


meta = podutil.meta
parse_time = podutil.parse_time


# --- pods ------------------------------------------------------------------------------

is_active = podutil.is_active
ready_condition = podutil.ready_condition
is_ready = podutil.is_ready


def is_available(pod: dict[str, Any], min_ready_seconds: int, now: datetime.datetime) -> bool:
    """podutil.IsPodAvailable: ready, and for longer than minReadySeconds."""
    if not is_ready(pod):
        return False
    if not min_ready_seconds:
        return True
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    return since is not None and since + datetime.timedelta(seconds=min_ready_seconds) < now


def available_at(pod: dict[str, Any], min_ready_seconds: int) -> datetime.datetime | None:
    """When a ready pod becomes available (None when not ready or it has no transition time)."""
    if not is_ready(pod):
        return None
    since = parse_time((ready_condition(pod) or {}).get("lastTransitionTime"))
    return None if since is None else since + datetime.timedelta(seconds=min_ready_seconds)


# --- ownership -------------------------------------------------------------------------


controller_of = ownerrefs.controller_of
controller_ref = ownerrefs.controller_ref


@dataclasses.dataclass
class Claims:
    """What a controller owns among candidates, and which objects to adopt or release."""

    owned: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    adopt: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    release: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def claim(owner: dict[str, Any], selector: selectors.Selector, objs: Iterable[dict[str, Any]]) -> Claims:
    """ControllerRefManager.Claim: keep matching owned objects, adopt matching orphans, release the rest.

    Orphans are adopted only while the owner is not being deleted; objects being deleted are
    neither adopted nor released. Adopted objects count as owned (the adoption patch is the caller's).
    """
    out = Claims()
    uid = meta(owner).get("uid")
    deleting = bool(meta(owner).get("deletionTimestamp"))
    for obj in objs:
        ref = controller_of(obj)
        labels = meta(obj).get("labels") or {}
        if ref is not None:
            if ref.get("uid") != uid:
                continue
            if selector.matches(labels):
                out.owned.append(obj)
            elif not meta(obj).get("deletionTimestamp") and not deleting:
                out.release.append(obj)
            continue
        if deleting or meta(obj).get("deletionTimestamp") or not selector.matches(labels):
            continue
        if meta(obj).get("namespace") != meta(owner).get("namespace"):
            continue
        out.adopt.append(obj)
        out.owned.append(obj)
    return out


adopt_patch = ownerrefs.adopt_patch
release_patch = ownerrefs.release_patch


# --- creating pods ---------------------------------------------------------------------


def pod_from_template(owner: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
    """controller.GetPodFromTemplate: labels, annotations, finalizers and spec from the template."""
    tmeta = template.get("metadata") or {}
    name = meta(owner).get("name") or ""
    pod_meta: dict[str, Any] = {"generateName": f"{name}-", "namespace": meta(owner).get("namespace") or ""}
    for key in ("labels", "annotations", "finalizers"):
        if tmeta.get(key):
            pod_meta[key] = copy.deepcopy(tmeta[key])
    pod_meta["ownerReferences"] = [controller_ref(owner)]
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta,
            "spec": copy.deepcopy(template.get("spec") or {})}


# --- choosing pods to delete -----------------------------------------------------------


def _restarts(pod: dict[str, Any]) -> tuple[int, int]:
    status = pod.get("status") or {}
    regular = max((int(s.get("restartCount") or 0) for s in status.get("containerStatuses") or []), default=0)
    sidecars = {c.get("name") for c in (pod.get("spec") or {}).get("initContainers") or []
                if c.get("restartPolicy") == "Always"}
    sidecar = max((int(s.get("restartCount") or 0) for s in status.get("initContainerStatuses") or []
                   if s.get("name") in sidecars), default=0)
    return regular, sidecar


def _deletion_cost(pod: dict[str, Any]) -> int:
    raw = (meta(pod).get("annotations") or {}).get(DELETION_COST)
    try:
        value = int(raw) if raw is not None else 0
    except (TypeError, ValueError):
        return 0
    return value if -(2 ** 31) <= value < 2 ** 31 else 0


def _log_rank(t: datetime.datetime, now: datetime.datetime) -> int:
    ns = (now - t) / datetime.timedelta(microseconds=1) * 1000
    return int(math.log2(ns)) if ns > 0 else -1


def _after_or_zero(a: datetime.datetime | None, b: datetime.datetime | None) -> bool:
    if a is None or b is None:
        return a is None
    return a > b


def _time_less(a: datetime.datetime | None, b: datetime.datetime | None, uid_a: str, uid_b: str,
               now: datetime.datetime) -> bool:
    if a is None or b is None:
        return _after_or_zero(a, b)
    diff = _log_rank(a, now) - _log_rank(b, now)
    if diff == 0:
        return uid_a < uid_b
    return diff < 0


def _less(a: dict[str, Any], rank_a: int, b: dict[str, Any], rank_b: int, now: datetime.datetime) -> bool:
    """ActivePodsWithRanks.Less with LogarithmicScaleDown and PodDeletionCost (both on in 1.32)."""
    node_a = (a.get("spec") or {}).get("nodeName") or ""
    node_b = (b.get("spec") or {}).get("nodeName") or ""
    if node_a != node_b and (not node_a or not node_b):
        return not node_a
    pa = _PHASE_ORDINAL.get((a.get("status") or {}).get("phase") or "", 0)
    pb = _PHASE_ORDINAL.get((b.get("status") or {}).get("phase") or "", 0)
    if pa != pb:
        return pa < pb
    ra, rb = is_ready(a), is_ready(b)
    if ra != rb:
        return not ra
    ca, cb = _deletion_cost(a), _deletion_cost(b)
    if ca != cb:
        return ca < cb
    if rank_a != rank_b:
        return rank_a > rank_b
    uid_a, uid_b = str(meta(a).get("uid") or ""), str(meta(b).get("uid") or "")
    if ra and rb:
        ta = parse_time((ready_condition(a) or {}).get("lastTransitionTime"))
        tb = parse_time((ready_condition(b) or {}).get("lastTransitionTime"))
        if ta != tb:
            return _time_less(ta, tb, uid_a, uid_b, now)
    (ga, sa), (gb, sb) = _restarts(a), _restarts(b)
    if ga != gb:
        return ga > gb
    if sa != sb:
        return sa > sb
    ta = parse_time(meta(a).get("creationTimestamp"))
    tb = parse_time(meta(b).get("creationTimestamp"))
    if ta != tb:
        return _time_less(ta, tb, uid_a, uid_b, now)
    return False


def deletion_order(pods: list[dict[str, Any]], related: Iterable[dict[str, Any]],
                   now: datetime.datetime) -> list[dict[str, Any]]:
    """Pods sorted most-deletable first: unscheduled, pending, not ready, cheap, doubled up, young."""
    on_node: dict[str, int] = {}
    for p in related:
        node = (p.get("spec") or {}).get("nodeName") or ""
        if node and is_active(p):
            on_node[node] = on_node.get(node, 0) + 1
    ranked = [(p, on_node.get((p.get("spec") or {}).get("nodeName") or "", 0)) for p in pods]

    def cmp(x: tuple[dict[str, Any], int], y: tuple[dict[str, Any], int]) -> int:
        if _less(x[0], x[1], y[0], y[1], now):
            return -1
        if _less(y[0], y[1], x[0], x[1], now):
            return 1
        return 0

    return [p for p, _ in sorted(ranked, key=functools.cmp_to_key(cmp))]


def pods_to_delete(pods: list[dict[str, Any]], related: Iterable[dict[str, Any]], diff: int,
                   now: datetime.datetime) -> list[dict[str, Any]]:
    """getPodsToDelete: the first `diff` pods in deletion order (all of them without sorting)."""
    if diff < len(pods):
        return deletion_order(pods, related, now)[:diff]
    return list(pods[:diff])


# --- status ----------------------------------------------------------------------------


def new_condition(ctype: str, status: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {"type": ctype, "status": status, "lastTransitionTime": now, "reason": reason, "message": message}


def calculate_status(rs: dict[str, Any], pods: list[dict[str, Any]], manage_error: str | None,
                     now: datetime.datetime) -> dict[str, Any]:
    """The ReplicaSet's new status from its active pods and the last manageReplicas error."""
    spec = rs.get("spec") or {}
    status = copy.deepcopy(rs.get("status") or {})
    template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    full = ready = available = 0
    for pod in pods:
        labels = meta(pod).get("labels") or {}
        if all(labels.get(k) == v for k, v in template_labels.items()):
            full += 1
        if is_ready(pod):
            ready += 1
            if is_available(pod, min_ready, now):
                available += 1
    conditions = [c for c in status.get("conditions") or [] if isinstance(c, dict)]
    failure = next((c for c in conditions if c.get("type") == REPLICA_FAILURE), None)
    if manage_error is not None and failure is None:
        diff = len(pods) - replicas_of(rs)
        reason = "FailedCreate" if diff < 0 else "FailedDelete" if diff > 0 else ""
        conditions.append(new_condition(REPLICA_FAILURE, "True", reason, manage_error, clock_mod.rfc3339(now)))
    elif manage_error is None and failure is not None:
        conditions = [c for c in conditions if c.get("type") != REPLICA_FAILURE]
    status["replicas"] = len(pods)
    status["fullyLabeledReplicas"] = full
    status["readyReplicas"] = ready
    status["availableReplicas"] = available
    if conditions:
        status["conditions"] = conditions
    else:
        status.pop("conditions", None)
    return status


def status_unchanged(rs: dict[str, Any], new: dict[str, Any]) -> bool:
    """updateReplicaSetStatus's steady state: counts, observed generation and conditions all equal."""
    old = rs.get("status") or {}
    counts = ("replicas", "fullyLabeledReplicas", "readyReplicas", "availableReplicas")
    return (all(int(old.get(k) or 0) == int(new.get(k) or 0) for k in counts)
            and int(meta(rs).get("generation") or 0) == int(old.get("observedGeneration") or 0)
            and (old.get("conditions") or []) == (new.get("conditions") or []))


def replicas_of(obj: dict[str, Any]) -> int:
    """spec.replicas, defaulting to 1 as the API does."""
    value = (obj.get("spec") or {}).get("replicas")
    return 1 if value is None else int(value)


def plan_replicas(rs: dict[str, Any], pods: list[dict[str, Any]]) -> int:
    """Pods to create (positive) or delete (negative), capped at the burst size."""
    diff = replicas_of(rs) - len(pods)
    return max(-BURST_REPLICAS, min(BURST_REPLICAS, diff))


def slow_start_batches(count: int, initial: int = 1) -> list[int]:
    """slowStartBatch sizes: 1, 2, 4, ... until count is reached."""
    out: list[int] = []
    size, left = initial, count
    while left > 0:
        batch = min(size, left)
        out.append(batch)
        left -= batch
        size *= 2
    return out


# --- expectations ----------------------------------------------------------------------


@dataclasses.dataclass
class _Expectation:
    adds: int
    deletes: set[str]
    at: float


class Expectations:
    """UIDTrackingControllerExpectations: creates and deletes in flight per controller key."""

    def __init__(self, ttl: float = EXPECTATIONS_TTL) -> None:
        self.ttl = ttl
        self._by_key: dict[str, _Expectation] = {}

    def satisfied(self, key: str, now: float) -> bool:
        """Whether the informer has caught up with our last writes (or they are too old to wait for)."""
        exp = self._by_key.get(key)
        if exp is None:
            return True
        return (exp.adds <= 0 and not exp.deletes) or now - exp.at > self.ttl

    def expect(self, key: str, *, adds: int = 0, deletes: Iterable[str] = (), now: float) -> None:
        self._by_key[key] = _Expectation(adds, set(deletes), now)

    def creation_observed(self, key: str) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.adds -= 1

    def deletion_observed(self, key: str, pod_key: str) -> None:
        exp = self._by_key.get(key)
        if exp is not None:
            exp.deletes.discard(pod_key)

    def forget(self, key: str) -> None:
        self._by_key.pop(key, None)
