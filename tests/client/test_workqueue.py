"""Specification of the keyed work queue: dedup, exclusive processing, delays and backoff."""

from __future__ import annotations

import asyncio

import pytest

from pocketkube.base import clock
from pocketkube.client import workqueue


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_dedup_while_queued():
    """Adding a queued key again keeps one entry, in first-added order."""
    q = workqueue.WorkQueue()
    for k in ("a", "b", "a", "c", "b"):
        q.add(k)
    assert len(q) == 3
    assert [await q.get() for _ in range(3)] == ["a", "b", "c"]


async def test_key_added_while_processing_waits_for_done():
    """A key re-added while a worker holds it is handed out again only after done()."""
    q = workqueue.WorkQueue()
    q.add("a")
    assert await q.get() == "a"
    q.add("a")
    assert len(q) == 0
    q.done("a")
    assert len(q) == 1
    assert await q.get() == "a"


async def test_get_waits_for_add():
    """get() blocks until a key is added."""
    q = workqueue.WorkQueue()
    waiter = asyncio.ensure_future(q.get())
    await _settle()
    assert not waiter.done()
    q.add("x")
    assert await asyncio.wait_for(waiter, 1) == "x"


async def test_add_after_uses_clock_and_earliest_deadline_wins():
    """add_after fires on the fake clock; a later duplicate does not postpone, an earlier one advances."""
    c = clock.FakeClock()
    q = workqueue.WorkQueue(clock=c)
    q.add_after("a", 10)
    q.add_after("a", 20)
    q.add_after("b", 10)
    q.add_after("b", 3)
    await _settle()
    c.advance(3)
    await _settle()
    assert len(q) == 1 and await q.get() == "b"
    c.advance(7)
    await _settle()
    assert await q.get() == "a"
    c.advance(100)
    await _settle()
    assert len(q) == 0


@pytest.mark.parametrize("failures,want", [(0, 0.005), (1, 0.01), (3, 0.04), (40, 1000.0)])
def test_backoff_is_exponential_and_capped(failures, want):
    """The per-key delay doubles from 5 ms with each failure, capped at 1000 s."""
    q = workqueue.WorkQueue()
    q._failures["k"] = failures
    assert q.backoff("k") == pytest.approx(want)


async def test_rate_limited_counts_and_forget_resets():
    """add_rate_limited counts a failure and requeues after the backoff; forget resets the count."""
    c = clock.FakeClock()
    q = workqueue.WorkQueue(clock=c, base_delay=1.0, max_delay=8.0)
    q.add_rate_limited("k")
    assert q.num_requeues("k") == 1
    await _settle()
    c.advance(0.5)
    await _settle()
    assert len(q) == 0
    c.advance(0.5)
    await _settle()
    assert await q.get() == "k"
    q.done("k")
    assert q.backoff("k") == 2.0
    q.forget("k")
    assert q.num_requeues("k") == 0 and q.backoff("k") == 1.0


async def test_shutdown_wakes_getters_and_refuses_adds():
    """shutdown() makes waiting and later get() calls raise ShutDown and ignores new keys."""
    q = workqueue.WorkQueue()
    waiter = asyncio.ensure_future(q.get())
    await _settle()
    q.shutdown()
    with pytest.raises(workqueue.ShutDown):
        await asyncio.wait_for(waiter, 1)
    q.add("a")
    assert len(q) == 0


async def test_cancelled_getter_passes_its_wakeup_on():
    """A getter cancelled right after being woken hands the key to another waiting getter."""
    q = workqueue.WorkQueue()
    first = asyncio.ensure_future(q.get())
    second = asyncio.ensure_future(q.get())
    await _settle()
    q.add("a")
    first.cancel()
    assert await asyncio.wait_for(second, 1) == "a"


def test_invalid_delays_rejected():
    """A non-positive base delay or a max below the base is a construction error."""
    with pytest.raises(ValueError):
        workqueue.WorkQueue(base_delay=0)
    with pytest.raises(ValueError):
        workqueue.WorkQueue(base_delay=2, max_delay=1)
