"""Scheduling queue: active (priority order), backoff and unschedulable pods, moved back on cluster events."""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import Iterable
from typing import Any

from pocketkube.base import clock as clock_mod

# kube-scheduler's defaults: podInitialBackoffSeconds, podMaxBackoffSeconds and
# podMaxInUnschedulablePodsDuration.
INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 10.0
MAX_UNSCHEDULABLE = 300.0
ACTIVE, BACKOFF, UNSCHEDULABLE, GATED = "active", "backoff", "unschedulable", "gated"


def _key(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


def _priority(pod: dict[str, Any]) -> int:
    return int((pod.get("spec") or {}).get("priority") or 0)


def _gated(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("schedulingGates"))


def _spec_view(pod: dict[str, Any]) -> Any:
    # What a user can change that may make a pod schedulable: everything but status and bookkeeping.
    meta = {k: v for k, v in (pod.get("metadata") or {}).items()
            if k not in ("resourceVersion", "generation", "managedFields")}
    return meta, pod.get("spec")


class QueuedPod:
    """A pending pod and its scheduling history."""

    __slots__ = ("key", "pod", "timestamp", "initial_attempt", "attempts", "rejected_by", "cycle", "where")

    def __init__(self, pod: dict[str, Any], now: float) -> None:
        self.key = _key(pod)
        self.pod = pod
        self.timestamp = now
        self.initial_attempt = now
        self.attempts = 0
        self.rejected_by: set[str] = set()
        self.cycle = 0
        self.where = ""

    @property
    def priority(self) -> int:
        return _priority(self.pod)


class SchedulingQueue:
    """kube's PriorityQueue: pop by priority then age; failed pods back off or wait for a relevant event."""

    def __init__(self, *, clock: clock_mod.Clock | None = None, initial_backoff: float = INITIAL_BACKOFF,
                 max_backoff: float = MAX_BACKOFF, max_unschedulable: float = MAX_UNSCHEDULABLE) -> None:
        self.clock = clock or clock_mod.Clock()
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        self.max_unschedulable = max_unschedulable
        self.pods: dict[str, QueuedPod] = {}
        self.in_flight: dict[str, QueuedPod] = {}
        self._active: list[tuple[int, float, int, str]] = []
        self._backoff: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._wakeup = asyncio.Event()
        self.scheduling_cycle = 0
        self._move_request_cycle = -1
        self._closed = False

    # --- what lives where -----------------------------------------------------------------

    def where(self, key: str) -> str:
        """"active", "backoff", "unschedulable", "gated", "in-flight" or "" for a pod key."""
        if key in self.in_flight:
            return "in-flight"
        qp = self.pods.get(key)
        return qp.where if qp is not None else ""

    def __len__(self) -> int:
        return len(self.pods)

    def _to_active(self, qp: QueuedPod) -> None:
        qp.where = ACTIVE
        heapq.heappush(self._active, (-qp.priority, qp.timestamp, next(self._seq), qp.key))
        self._wakeup.set()

    def _to_backoff(self, qp: QueuedPod) -> None:
        qp.where = BACKOFF
        heapq.heappush(self._backoff, (self.backoff_expiry(qp), next(self._seq), qp.key))

    def backoff_duration(self, qp: QueuedPod) -> float:
        """initial * 2^(attempts-1), capped at the maximum."""
        d = self.initial_backoff
        for _ in range(1, qp.attempts):
            d *= 2
            if d >= self.max_backoff:
                return self.max_backoff
        return d

    def backoff_expiry(self, qp: QueuedPod) -> float:
        return qp.timestamp + self.backoff_duration(qp)

    def _activate_or_backoff(self, qp: QueuedPod) -> None:
        if qp.attempts and self.backoff_expiry(qp) > self.clock.monotonic():
            self._to_backoff(qp)
        else:
            self._to_active(qp)

    # --- informer events ------------------------------------------------------------------

    def add(self, pod: dict[str, Any]) -> None:
        """A new pending pod: straight to the active queue (or held while it has scheduling gates)."""
        key = _key(pod)
        if key in self.pods or key in self.in_flight:
            self.update(pod)
            return
        qp = QueuedPod(pod, self.clock.monotonic())
        self.pods[key] = qp
        if _gated(pod):
            qp.where = GATED
        else:
            self._to_active(qp)

    def update(self, pod: dict[str, Any]) -> None:
        """A pending pod changed; a real change to an unschedulable or gated pod makes it retry."""
        key = _key(pod)
        flying = self.in_flight.get(key)
        if flying is not None:
            if _spec_view(flying.pod) != _spec_view(pod):
                # It changed under the running attempt: a failure goes to backoff, not to waiting.
                self._move_request_cycle = self.scheduling_cycle
            flying.pod = pod
            return
        qp = self.pods.get(key)
        if qp is None:
            self.add(pod)
            return
        old, qp.pod = qp.pod, pod
        if qp.where == GATED:
            if not _gated(pod):
                self._to_active(qp)
        elif qp.where == UNSCHEDULABLE:
            if _spec_view(old) != _spec_view(pod):
                self._activate_or_backoff(qp)
        elif qp.where == ACTIVE and _priority(old) != _priority(pod):
            self._to_active(qp)

    def delete(self, key: str) -> None:
        """The pod is gone, bound elsewhere, or no longer ours."""
        self.pods.pop(key, None)
        self.in_flight.pop(key, None)

    # --- the scheduling loop --------------------------------------------------------------

    def pop_nowait(self) -> QueuedPod | None:
        """The highest-priority, oldest active pod, now in flight; None when the active queue is empty."""
        while self._active:
            _, ts, _, key = heapq.heappop(self._active)
            qp = self.pods.get(key)
            if qp is None or qp.where != ACTIVE or qp.timestamp != ts:
                continue  # a stale heap entry
            del self.pods[key]
            qp.where = ""
            qp.attempts += 1
            self.scheduling_cycle += 1
            qp.cycle = self.scheduling_cycle
            self.in_flight[key] = qp
            return qp
        return None

    async def pop(self) -> QueuedPod:
        """Wait for the next pod to schedule."""
        while True:
            qp = self.pop_nowait()
            if qp is not None:
                return qp
            if self._closed:
                raise asyncio.CancelledError()
            self._wakeup.clear()
            await self._wakeup.wait()

    def done(self, key: str) -> None:
        """The attempt on key finished (bound, or requeued already)."""
        self.in_flight.pop(key, None)

    def requeue(self, qp: QueuedPod, rejected_by: Iterable[str] = (), *, error: bool = False) -> None:
        """A failed attempt: wait in unschedulable for a cluster event, or back off after an error or a
        relevant change during the attempt."""
        if self.in_flight.pop(qp.key, None) is None and qp.key not in self.pods:
            return  # deleted meanwhile
        if qp.key in self.pods:
            return  # re-added meanwhile
        qp.timestamp = self.clock.monotonic()
        qp.rejected_by = set(rejected_by)
        self.pods[qp.key] = qp
        if error or not qp.rejected_by or self._move_request_cycle >= qp.cycle:
            self._to_backoff(qp)
        else:
            qp.where = UNSCHEDULABLE

    def move_all(self, plugins: Iterable[str] | None = None) -> int:
        """A cluster event that may help pods rejected by `plugins` (None: any): move them to retry."""
        wanted = set(plugins) if plugins is not None else None
        moved = 0
        for qp in list(self.pods.values()):
            if qp.where != UNSCHEDULABLE:
                continue
            if wanted is not None and qp.rejected_by and not (qp.rejected_by & wanted):
                continue
            self._activate_or_backoff(qp)
            moved += 1
        if self.in_flight:
            self._move_request_cycle = self.scheduling_cycle
        return moved

    def flush(self) -> None:
        """Move expired backoffs to active, and pods unschedulable for too long to retry."""
        now = self.clock.monotonic()
        while self._backoff and self._backoff[0][0] <= now:
            _, _, key = heapq.heappop(self._backoff)
            qp = self.pods.get(key)
            if qp is not None and qp.where == BACKOFF:
                if self.backoff_expiry(qp) <= now:
                    self._to_active(qp)
                else:
                    self._to_backoff(qp)  # a stale entry from an earlier backoff
        for qp in list(self.pods.values()):
            if qp.where == UNSCHEDULABLE and now - qp.timestamp >= self.max_unschedulable:
                self._activate_or_backoff(qp)

    def next_backoff(self) -> float | None:
        """Seconds until the earliest backoff ends (None if nobody backs off)."""
        while self._backoff:
            expiry, _, key = self._backoff[0]
            qp = self.pods.get(key)
            if qp is None or qp.where != BACKOFF:
                heapq.heappop(self._backoff)
                continue
            return max(0.0, expiry - self.clock.monotonic())
        return None

    def close(self) -> None:
        self._closed = True
        self._wakeup.set()

    def pending(self) -> list[QueuedPod]:
        return list(self.pods.values())
