"""Automatic compaction keeps both a number of revisions and a span of time, as kube keeps 5 minutes of etcd history."""

from __future__ import annotations

import asyncio

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.store import base


class _Store:
    """The two revisions the compactor reads, and the compactions it asks for."""

    def __init__(self) -> None:
        self.current = 0
        self.compacted = 0
        self.asked: list[int] = []

    def current_revision(self) -> int:
        return self.current

    def compacted_revision(self) -> int:
        return self.compacted

    async def compact(self, revision: int) -> None:
        self.asked.append(revision)
        self.compacted = revision


async def _tick(clock: clock_mod.FakeClock, seconds: float) -> None:
    clock.advance(seconds)
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.mark.parametrize(("history_revisions", "history_seconds", "rate", "expected"), [
    # 100 writes a second for 20 ticks of 5 s: the time window (300 s) is not reached, nothing goes
    (10, 300.0, 100, []),
    # without a time window, the revision count alone decides (each tick: current - 10)
    (10, 0.0, 100, [490, 990]),
    # a long time window with a small rate: the revision count keeps more, it decides
    (10_000, 10.0, 100, []),
])
async def test_compaction_keeps_the_larger_window(history_revisions: int, history_seconds: float, rate: int,
                                                  expected: list[int]) -> None:
    """Each compaction drops only history older than both the revision count and the time span."""
    clock = clock_mod.FakeClock()
    store = _Store()
    settings = base.StoreSettings(history_revisions=history_revisions, history_seconds=history_seconds,
                                  compact_interval=5.0)
    task = asyncio.create_task(base.compact_periodically(store, settings=settings, clock=clock))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    for _ in range(2):
        store.current += rate * 5
        await _tick(clock, 5.0)
    task.cancel()
    assert store.asked == expected


async def test_busy_store_keeps_five_minutes() -> None:
    """At 100 writes a second, compaction goes to the revision seen 5 minutes earlier, not 10,000 back."""
    clock = clock_mod.FakeClock()
    store = _Store()
    task = asyncio.create_task(base.compact_periodically(store, settings=base.StoreSettings(), clock=clock))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    for _ in range(80):  # 400 s
        store.current += 500
        await _tick(clock, 5.0)
    task.cancel()
    # the last tick at t=400 s saw revision 40,000; 5 minutes earlier (t=100 s) the store was at 10,000
    assert store.compacted == 10_000
    assert store.current - store.compacted == 30_000


def test_negative_window_is_refused() -> None:
    """history_seconds below zero is a configuration error."""
    with pytest.raises(ValueError, match="history_seconds"):
        base.StoreSettings(history_seconds=-1)
