"""Specification of the scheduling queue: priority order, backoff, waiting for cluster events."""

from __future__ import annotations

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.scheduler import queue
from tests.scheduler import helpers as h


def _q() -> tuple[queue.SchedulingQueue, clock_mod.FakeClock]:
    clk = clock_mod.FakeClock()
    return queue.SchedulingQueue(clock=clk), clk


def test_pops_by_priority_then_age() -> None:
    """Higher priority first; equal priorities in arrival order."""
    q, clk = _q()
    q.add(h.pod("a"))
    clk.advance(1)
    q.add(h.pod("b", priority=10))
    clk.advance(1)
    q.add(h.pod("c"))
    assert [q.pop_nowait().key for _ in range(3)] == ["default/b", "default/a", "default/c"]  # type: ignore[union-attr]
    assert q.pop_nowait() is None


@pytest.mark.parametrize("attempts,want", [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (9, 10.0)])
def test_backoff_doubles_to_ten_seconds(attempts: int, want: float) -> None:
    """podInitialBackoffSeconds 1 doubling up to podMaxBackoffSeconds 10."""
    q, _ = _q()
    qp = queue.QueuedPod(h.pod("a"), 0.0)
    qp.attempts = attempts
    assert q.backoff_duration(qp) == want


def test_unschedulable_pods_wait_for_a_relevant_event() -> None:
    """A rejected pod waits; an event for its rejecting plugin moves it (via backoff while it lasts)."""
    q, clk = _q()
    q.add(h.pod("a"))
    qp = q.pop_nowait()
    assert qp is not None
    q.requeue(qp, {"NodeResourcesFit"})
    assert q.where("default/a") == "unschedulable"
    assert q.move_all({"InterPodAffinity"}) == 0
    assert q.move_all({"NodeResourcesFit"}) == 1
    assert q.where("default/a") == "backoff"
    clk.advance(1.0)
    q.flush()
    assert q.where("default/a") == "active"


def test_event_after_backoff_goes_straight_to_active() -> None:
    """Once the backoff has passed, a moved pod is active at once."""
    q, clk = _q()
    q.add(h.pod("a"))
    q.requeue(q.pop_nowait(), {"NodeAffinity"})  # type: ignore[arg-type]
    clk.advance(5)
    q.move_all(None)
    assert q.where("default/a") == "active"


def test_errors_back_off_and_old_unschedulable_pods_are_flushed() -> None:
    """Errors retry after backoff; pods unschedulable for 5 minutes retry anyway."""
    q, clk = _q()
    q.add(h.pod("a"))
    q.add(h.pod("b"))
    q.requeue(q.pop_nowait(), error=True)  # type: ignore[arg-type]
    q.requeue(q.pop_nowait(), {"TaintToleration"})  # type: ignore[arg-type]
    assert (q.where("default/a"), q.where("default/b")) == ("backoff", "unschedulable")
    assert q.next_backoff() == 1.0
    clk.advance(300)
    q.flush()
    assert (q.where("default/a"), q.where("default/b")) == ("active", "active")


def test_change_during_attempt_sends_failure_to_backoff() -> None:
    """A cluster event while a pod is in flight means its failure may be stale: back off, don't wait."""
    q, _ = _q()
    q.add(h.pod("a"))
    qp = q.pop_nowait()
    q.move_all(None)
    q.requeue(qp, {"NodeResourcesFit"})  # type: ignore[arg-type]
    assert q.where("default/a") == "backoff"


def test_spec_update_retries_an_unschedulable_pod_but_status_does_not() -> None:
    """A user's change to the pod retries it; the scheduler's own status writes do not."""
    q, clk = _q()
    p = h.pod("a")
    q.add(p)
    q.requeue(q.pop_nowait(), {"NodeAffinity"})  # type: ignore[arg-type]
    clk.advance(2)
    q.update({**p, "status": {"conditions": [{"type": "PodScheduled"}]},
              "metadata": {**p["metadata"], "resourceVersion": "2"}})
    assert q.where("default/a") == "unschedulable"
    q.update({**p, "spec": {**p["spec"], "nodeSelector": {}}})
    assert q.where("default/a") == "active"


def test_gated_pods_wait_for_their_gates_to_go() -> None:
    """Pods with schedulingGates are held until the gates are removed."""
    q, _ = _q()
    p = h.pod("a", schedulingGates=[{"name": "x"}])
    q.add(p)
    assert q.pop_nowait() is None and q.where("default/a") == "gated"
    q.update(h.pod("a"))
    assert q.pop_nowait() is not None


def test_deleted_pods_leave_every_queue() -> None:
    """Deleting a pod drops it whether waiting or in flight."""
    q, _ = _q()
    q.add(h.pod("a"))
    qp = q.pop_nowait()
    q.delete("default/a")
    q.requeue(qp, {"X"})  # type: ignore[arg-type]
    assert q.where("default/a") == "" and len(q) == 0


async def test_pop_waits_for_a_pod() -> None:
    """pop() blocks until a pod is added."""
    import asyncio
    q, _ = _q()
    task = asyncio.ensure_future(q.pop())
    await asyncio.sleep(0)
    assert not task.done()
    q.add(h.pod("a"))
    assert (await task).key == "default/a"
