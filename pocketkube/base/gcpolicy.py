"""The cyclic garbage collector's policy for a long-running server whose heap keeps growing."""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator
from typing import Any

from pocketkube.base import clock as clock_mod

log = logging.getLogger("pocketkube.gc")

# Young objects the collector lets pile up before it looks (CPython's default is 700).
YOUNG_THRESHOLD = 20_000
# A complete pass over the frozen heap, reclaiming cycles that died in it, this long after the last one. (Not
# by heap growth: gc.get_freeze_count() walks the whole frozen heap to count it.)
RESCAN_SECONDS = 600.0
# Full collections slower than this are logged.
SLOW_SECONDS = 0.5


class Policy:
    """Keeps full collections proportional to what is new rather than to the whole heap.

    CPython's full collection walks every tracked object that is not frozen, and runs each time the heap
    grew by a quarter: with 1000 nodes and 10,000 pods cached by informers, collections took half of the
    process's CPU. Objects that survived a full collection are the long-lived ones (cached API objects,
    connections, tasks), so each full collection freezes its survivors: the next ones only walk what
    arrived since. Freezing does not keep objects alive (reference counting still frees them); it only
    hides reference cycles that die among frozen objects, so every RESCAN_SECONDS the whole heap is unfrozen
    and walked again, reclaiming them then."""

    def __init__(self, *, clock: clock_mod.Clock | None = None, young: int = YOUNG_THRESHOLD,
                 rescan_seconds: float = RESCAN_SECONDS) -> None:
        self.clock = clock or clock_mod.Clock()
        self.young = young
        self.rescan_seconds = rescan_seconds
        self.full_collections = 0
        self.rescans = 0
        self.seconds = 0.0  # CPU time spent in full collections
        self._rescanning = False
        self._rescanned_at = 0.0
        self._started = 0.0
        self._installed = False

    def install(self) -> None:
        """Freeze the heap built so far (start-up: modules, schemas, the registry) and take over from here."""
        if self._installed:
            return
        self._installed = True
        gc.freeze()  # no collection first: it would cost the start-up time a few cycles of garbage are worth
        _, mid, old = gc.get_threshold()
        gc.set_threshold(self.young, mid, old)
        self._rescanned_at = self.clock.monotonic()
        gc.callbacks.append(self.callback)

    def uninstall(self) -> None:
        """Stop steering the collector (tests); what is frozen stays frozen."""
        if self._installed:
            self._installed = False
            gc.callbacks.remove(self.callback)

    def callback(self, phase: str, info: dict[str, Any]) -> None:
        """gc.callbacks hook: after each full collection, freeze its survivors or schedule a complete pass."""
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = time.thread_time()
            return
        took = time.thread_time() - self._started
        self.full_collections += 1
        self.seconds += took
        if self._rescanning:
            self.rescans += 1
            self._rescanning = False
        if took >= SLOW_SECONDS:
            log.info("full garbage collection took %.2fs (%d objects collected)", took, info.get("collected", 0))
        # At the end of a full collection the young generations are empty: what is left survived it.
        gc.freeze()
        now = self.clock.monotonic()
        if now - self._rescanned_at >= self.rescan_seconds:
            # The next full collection walks everything again, reclaiming cycles that died while frozen.
            gc.unfreeze()
            self._rescanning = True
            self._rescanned_at = now


_process_policy: Policy | None = None


def install() -> Policy:
    """The process's one Policy, installed on the first call (a process running clusters one after another
    keeps the first)."""
    global _process_policy
    if _process_policy is None:
        _process_policy = Policy()
        _process_policy.install()
    return _process_policy


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """Hold the cyclic collector off while synchronous code builds a large acyclic structure (a list response's
    decoded items). Every object it makes survives the build, so collections meanwhile find nothing, yet each
    one walks what was built so far: decoding 30,000 pods took three times as long with them. No other code
    runs on the event loop in between, and the next collection after it sees the young objects once."""
    if not gc.isenabled():
        yield  # nested, or switched off by someone else: theirs to switch back on
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
