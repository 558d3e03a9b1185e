"""Controller framework: informers feed a keyed queue, N workers call reconcile(key) -> Outcome."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any

import aiohttp

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer as informer_mod
from pocketkube.client import rest, workqueue
from pocketkube.runtime import events

log = logging.getLogger("pocketkube.controller")

# How long run() waits for its informers' first list before starting workers anyway.
SYNC_TIMEOUT = 60.0


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a reconcile asks for next: done, requeue (with backoff) or requeue after a delay."""

    kind: str
    after: float = 0.0


DONE = Outcome("done")
REQUEUE = Outcome("requeue")


def requeue_after(seconds: float) -> Outcome:
    """Reconcile the key again after `seconds`, without counting a failure."""
    if seconds < 0:
        raise ValueError(f"requeue_after needs a non-negative delay, got {seconds}")
    return Outcome("requeue_after", float(seconds))


Reconcile = Callable[[Any], Awaitable["Outcome | None"]]
# Maps an informer event to the keys to enqueue (usually the object's own key).
KeyFunc = Callable[[str, "dict[str, Any] | None", "dict[str, Any] | None"], Iterable[Hashable]]


def own_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """The changed object's own "namespace/name" key."""
    obj = new if new is not None else old
    return [informer_mod.key_of(obj)] if obj is not None else []


def no_keys(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """For informers watched only to fill a cache (and be synced before workers start): enqueue nothing."""
    return []


class Controller:
    """Runs reconcile(key) for queued keys on `workers` tasks; never two at once for one key."""

    def __init__(self, name: str, reconcile: Reconcile, *, workers: int = 1,
                 clock: clock_mod.Clock | None = None, queue: workqueue.WorkQueue | None = None) -> None:
        if workers < 1:
            raise ValueError("a controller needs at least one worker")
        self.name = name
        self.reconcile = reconcile
        self.workers = workers
        self.clock = clock or clock_mod.Clock()
        self.queue = queue or workqueue.WorkQueue(clock=self.clock, name=name)
        self.informers: list[informer_mod.Informer] = []

    def watch(self, inf: informer_mod.Informer, key_func: KeyFunc = own_key) -> None:
        """Enqueue the keys key_func maps each of inf's events to; run() starts inf."""
        if inf not in self.informers:
            self.informers.append(inf)

        def handler(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            for key in key_func(etype, old, new):
                self.queue.add(key)

        inf.add_handler(handler)

    def enqueue(self, key: Hashable) -> None:
        self.queue.add(key)

    async def run(self) -> None:
        """Start informers, wait for their first list, then work until cancelled."""
        tasks = [asyncio.get_running_loop().create_task(i.run(), name=f"{self.name}-informer-{i.gvr.resource}")
                 for i in self.informers]
        try:
            await self.wait_synced()
            tasks += [asyncio.get_running_loop().create_task(self._worker(), name=f"{self.name}-worker-{n}")
                      for n in range(self.workers)]
            await asyncio.gather(*tasks)
        finally:
            self.queue.shutdown()
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def wait_synced(self) -> None:
        if not self.informers:
            return
        try:
            await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i in self.informers)), SYNC_TIMEOUT)
        except TimeoutError:
            log.warning("%s: informers not synced after %ss; starting anyway", self.name, SYNC_TIMEOUT)

    async def _worker(self) -> None:
        while True:
            try:
                key = await self.queue.get()
            except workqueue.ShutDown:
                return
            try:
                await self.process(key)
            finally:
                self.queue.done(key)

    async def process(self, key: Hashable) -> None:
        """Reconcile one key and apply its outcome to the queue (errors: log and back off)."""
        try:
            outcome = await self.reconcile(key) or DONE
        except asyncio.CancelledError:
            raise
        except Exception as e:
            delay = self.queue.backoff(key)
            log.warning("%s: reconciling %r failed: %s: %s (retry in %.3fs)",
                        self.name, key, type(e).__name__, e, delay,
                        exc_info=not _is_api_error(e))
            self.queue.add_rate_limited(key)
            return
        apply_outcome(self.queue, key, outcome)


class Reconciler:
    """Base of a controller object: the client, clock, shared informers, event recorder and queue its reconcile runs on.

    Subclasses call __init__ first, ask for informers with watch() and define reconcile(key); run() runs them."""

    recorder: events.Recorder

    def __init__(self, client: rest.Client, name: str, *, workers: int = 1, clock: clock_mod.Clock | None = None,
                 informers: informer_mod.Factory | None = None, event_source: str = "") -> None:
        self.client = client
        self.clock = clock or clock_mod.Clock()
        # A private factory when none is shared (tests); the manager shares one between all controllers.
        self.factory = informers or informer_mod.Factory(client, clock=self.clock)
        if event_source:
            self.recorder = events.Recorder(client, event_source, clock=self.clock)
        self.controller = Controller(name, self.reconcile, workers=workers, clock=self.clock)

    def watch(self, gvr: rest.GVR, key_func: KeyFunc = own_key, *, index: informer_mod.Handler | None = None,
              namespace: str = "", label_selector: str = "", field_selector: str = "",
              resync_seconds: float = 0.0) -> informer_mod.Informer:
        """The shared informer for gvr (and filter); its events enqueue the keys key_func maps them to.

        index: a handler keeping the controller's own index of these objects, told of each event first.
        Call it from __init__, before the informers run: a running one replays its cache to key_func at once,
        before the caller has the informer to read."""
        inf = self.factory.informer(gvr, namespace=namespace, label_selector=label_selector,
                                    field_selector=field_selector, resync_seconds=resync_seconds)
        if index is not None:
            inf.add_handler(index)
        self.controller.watch(inf, key_func)
        return inf

    async def reconcile(self, key: Any) -> Outcome | None:
        raise NotImplementedError

    async def run(self) -> None:
        """Start the informers, wait for their first list, then reconcile queued keys until cancelled."""
        await self.controller.run()


def apply_outcome(queue: workqueue.WorkQueue, key: Hashable, outcome: Outcome) -> None:
    """Turn a reconcile outcome into queue operations."""
    if outcome.kind == "done":
        queue.forget(key)
    elif outcome.kind == "requeue":
        queue.add_rate_limited(key)
    elif outcome.kind == "requeue_after":
        queue.forget(key)
        queue.add_after(key, outcome.after)
    else:
        raise ValueError(f"unknown outcome {outcome.kind!r}")


def _is_api_error(e: BaseException) -> bool:
    # API and network errors are expected traffic; other exceptions are bugs worth a traceback.
    return isinstance(e, errors.APIError | aiohttp.ClientError | OSError | TimeoutError)
