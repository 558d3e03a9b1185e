"""Keyed work queue: dedup while queued, one worker per key at a time, delayed and rate-limited adds."""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Hashable

from pocketkube.base import clock as clock_mod

# client-go's default per-item exponential backoff: 5 ms doubling up to 1000 s.
BASE_DELAY = 0.005
MAX_DELAY = 1000.0


class ShutDown(Exception):
    """Raised by get() once the queue is shut down and drained of waiters."""


class WorkQueue:
    """client-go semantics: a key added while queued is kept once; a key added while being
    processed is queued again only after done(), so no two workers ever hold the same key."""

    def __init__(self, *, clock: clock_mod.Clock | None = None, base_delay: float = BASE_DELAY,
                 max_delay: float = MAX_DELAY, name: str = "") -> None:
        if base_delay <= 0 or max_delay < base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        self.name = name
        self.clock = clock or clock_mod.Clock()
        self.base_delay = base_delay
        self.max_delay = max_delay
        self._queue: collections.deque[Hashable] = collections.deque()
        self._dirty: set[Hashable] = set()
        self._processing: set[Hashable] = set()
        self._failures: dict[Hashable, int] = {}
        # key -> (monotonic deadline, timer task); only the earliest pending deadline is kept.
        self._waiting: dict[Hashable, tuple[float, asyncio.Task[None]]] = {}
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._shutting_down = False

    def __len__(self) -> int:
        return len(self._queue)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    def add(self, key: Hashable) -> None:
        """Queue key now unless it is already queued; keys held by a worker wait for done()."""
        if self._shutting_down or key in self._dirty:
            return
        self._dirty.add(key)
        if key in self._processing:
            return
        self._queue.append(key)
        self._wake()

    def add_after(self, key: Hashable, seconds: float) -> None:
        """Queue key once `seconds` have passed on the clock; an earlier pending deadline wins."""
        if self._shutting_down:
            return
        if seconds <= 0:
            self.add(key)
            return
        deadline = self.clock.monotonic() + seconds
        pending = self._waiting.get(key)
        if pending is not None:
            if pending[0] <= deadline:
                return
            pending[1].cancel()
        task = asyncio.get_running_loop().create_task(self._add_at(key, deadline))
        self._waiting[key] = (deadline, task)

    async def _add_at(self, key: Hashable, deadline: float) -> None:
        await self.clock.sleep(deadline - self.clock.monotonic())
        current = self._waiting.get(key)
        if current is not None and current[0] == deadline:
            del self._waiting[key]
        self.add(key)

    def backoff(self, key: Hashable) -> float:
        """The delay the next add_rate_limited(key) would use."""
        exp = self._failures.get(key, 0)
        return float(min(self.max_delay, self.base_delay * (2 ** min(exp, 64))))

    def add_rate_limited(self, key: Hashable) -> None:
        """Queue key after its exponential backoff, and count one more failure for it."""
        delay = self.backoff(key)
        self._failures[key] = self._failures.get(key, 0) + 1
        self.add_after(key, delay)

    def forget(self, key: Hashable) -> None:
        """Reset key's backoff (call after a successful reconcile)."""
        self._failures.pop(key, None)

    def num_requeues(self, key: Hashable) -> int:
        return self._failures.get(key, 0)

    async def get(self) -> Hashable:
        """The next key, marked as processing until done(key); raises ShutDown once shut down."""
        while not self._queue:
            if self._shutting_down:
                raise ShutDown(self.name)
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(fut)
            try:
                await fut
            except asyncio.CancelledError:
                if fut.done() and not fut.cancelled():
                    # We were handed a wake-up we will not use: pass it on.
                    self._wake()
                else:
                    fut.cancel()
                raise
        key = self._queue.popleft()
        self._processing.add(key)
        self._dirty.discard(key)
        return key

    def done(self, key: Hashable) -> None:
        """Release key; if it was added meanwhile, queue it again."""
        self._processing.discard(key)
        if key in self._dirty:
            self._queue.append(key)
            self._wake()

    def shutdown(self) -> None:
        """Stop accepting keys, cancel timers and wake every waiting get()."""
        self._shutting_down = True
        for _, task in self._waiting.values():
            task.cancel()
        self._waiting.clear()
        self._wake(every=True)

    def _wake(self, *, every: bool = False) -> None:
        while self._waiters:
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                if not every:
                    return
