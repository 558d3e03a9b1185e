"""Specification of the controller framework: outcomes, errors with backoff, one worker per key."""

from __future__ import annotations

import asyncio

import pytest

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.client import workqueue
from pocketkube.runtime import controller


async def _settle(n: int = 10) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


@pytest.mark.parametrize("outcome,queued_now,requeues,delayed", [
    (controller.DONE, 0, 0, None),
    (controller.REQUEUE, 0, 1, 0.005),
    (controller.requeue_after(7), 0, 0, 7.0),
    (controller.requeue_after(0), 1, 0, None),
])
async def test_apply_outcome(outcome, queued_now, requeues, delayed):
    """done forgets the key, requeue backs off, requeue_after waits exactly that long without a failure."""
    c = clock.FakeClock()
    q = workqueue.WorkQueue(clock=c)
    q._failures["k"] = 0
    controller.apply_outcome(q, "k", outcome)
    assert len(q) == queued_now
    assert q.num_requeues("k") == requeues
    if delayed is not None:
        await _settle()
        c.advance(delayed * 0.99)
        await _settle()
        assert len(q) == 0
        c.advance(delayed * 0.02)
        await _settle()
        assert len(q) == 1


def test_requeue_after_rejects_negative():
    """A negative delay is a programming error."""
    with pytest.raises(ValueError):
        controller.requeue_after(-1)


async def test_errors_are_requeued_with_growing_backoff(caplog):
    """A reconcile that raises is logged and retried after an exponentially growing delay."""
    c = clock.FakeClock()
    calls: list[str] = []

    async def reconcile(key):
        calls.append(key)
        raise errors.Conflict("modified")

    ctl = controller.Controller("t", reconcile, clock=c)
    await ctl.process("a")
    await ctl.process("a")
    assert ctl.queue.num_requeues("a") == 2
    assert ctl.queue.backoff("a") == pytest.approx(0.02)
    assert "reconciling 'a' failed: Conflict: modified" in caplog.text


async def test_success_resets_backoff():
    """A successful reconcile (None counts as done) forgets earlier failures."""
    async def reconcile(key):
        return None

    ctl = controller.Controller("t", reconcile)
    ctl.queue._failures["a"] = 4
    await ctl.process("a")
    assert ctl.queue.num_requeues("a") == 0


async def test_never_two_workers_on_one_key():
    """With several workers, one key is never reconciled twice at the same time, while other keys run in parallel."""
    running: set[str] = set()
    overlaps: list[str] = []
    done: list[str] = []
    gate = asyncio.Event()

    async def reconcile(key):
        if key in running:
            overlaps.append(key)
        running.add(key)
        await gate.wait()
        running.discard(key)
        done.append(key)
        return controller.DONE

    ctl = controller.Controller("t", reconcile, workers=3)
    task = asyncio.ensure_future(ctl.run())
    ctl.enqueue("a")
    ctl.enqueue("b")
    await _settle()
    ctl.enqueue("a")  # while "a" is being processed
    await _settle()
    assert running == {"a", "b"}
    gate.set()
    await _settle(30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert overlaps == []
    assert sorted(done) == ["a", "a", "b"]


async def test_watch_maps_events_to_keys():
    """watch() registers a handler that enqueues whatever keys key_func maps an event to."""
    class FakeInformer:
        gvr = None

        def add_handler(self, h):
            self.h = h

    async def reconcile(key):
        return controller.DONE

    ctl = controller.Controller("t", reconcile)
    inf = FakeInformer()
    ctl.watch(inf)
    inf.h("ADDED", None, {"metadata": {"name": "a", "namespace": "ns"}})
    inf.h("DELETED", {"metadata": {"name": "b"}}, None)
    assert [await ctl.queue.get(), await ctl.queue.get()] == ["ns/a", "b"]
    assert ctl.informers == [inf]


def test_workers_must_be_positive():
    """A controller with no workers is refused."""
    async def reconcile(key):
        return None

    with pytest.raises(ValueError):
        controller.Controller("t", reconcile, workers=0)
