"""The only source of "now" and of sleeping: a real clock and a fake one for tests."""

from __future__ import annotations

import asyncio
import datetime
import heapq
import itertools
import time


class Clock:
    """Real time: wall clock for timestamps, monotonic for durations."""

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock(Clock):
    """Time that moves only when a test calls advance(); sleepers wake in order."""

    def __init__(self, start: datetime.datetime | None = None) -> None:
        self._now = start or datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
        self._mono = 1000.0
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def now(self) -> datetime.datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    async def sleep(self, seconds: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._mono + max(0.0, seconds), next(self._seq), fut))
        await fut

    def advance(self, seconds: float) -> None:
        """Move time forward and wake every sleeper whose deadline has passed."""
        self._mono += seconds
        self._now += datetime.timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= self._mono:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)


def rfc3339(dt: datetime.datetime) -> str:
    """Kubernetes metav1.Time: second precision, UTC, `Z` suffix."""
    # Every write stamps one or two of these: formatting the fields beats astimezone + strftime.
    if dt.tzinfo is not datetime.UTC:
        dt = dt.astimezone(datetime.UTC)
    if dt.year < 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%SZ")   # as before: the C library decides how to pad
    return f"{dt.year}-{dt.month:02}-{dt.day:02}T{dt.hour:02}:{dt.minute:02}:{dt.second:02}Z"


def rfc3339_micro(dt: datetime.datetime) -> str:
    """Kubernetes metav1.MicroTime: microsecond precision, UTC, `Z` suffix."""
    if dt.tzinfo is not datetime.UTC:
        dt = dt.astimezone(datetime.UTC)
    if dt.year < 1000:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return (f"{dt.year}-{dt.month:02}-{dt.day:02}T{dt.hour:02}:{dt.minute:02}:{dt.second:02}"
            f".{dt.microsecond:06}Z")


def parse_time(s: str) -> datetime.datetime:
    """Parse an RFC 3339 timestamp as Kubernetes writes them."""
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))
