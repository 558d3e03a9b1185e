"""The loop every nftables data plane shares: watch, debounce, render, apply when changed, retry, clean up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.client import informer
from pocketkube.network import nftables, podnet

# Runs an `nft -f -` script and returns its error output ("" on success).
Nft = Callable[[str], Awaitable[str]]


class Applier:
    """Informers whose every change triggers the owner's sync, and the table that sync last applied."""

    def __init__(self, informers: Sequence[informer.Informer], *, table: str, name: str, log: logging.Logger,
                 sync: Callable[[], Awaitable[None]], clock: clock_mod.Clock, debounce: float = 0.0,
                 retry: float = 1.0) -> None:
        self.informers = list(informers)
        self.table = table
        self.name = name
        self.log = log
        self.clock = clock
        self.debounce = debounce
        self.retry = retry
        self._sync = sync
        self._dirty = asyncio.Event()
        self._janitor = podnet.Janitor(table=table)
        self.applied = ""

    def _changed(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        self._dirty.set()

    async def run(self, *, task_prefix: str, problem: str, warning: str) -> None:
        """Sync after every burst of changes until cancelled; then the table goes, whatever else happens.

        warning is logged (with %s as the problem) once synced when there is no kernel data path."""
        for inf in self.informers:
            inf.add_handler(self._changed)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(inf.run(), name=f"{task_prefix}-{inf.gvr.resource}") for inf in self.informers]
        if not problem:
            self._janitor.start()
        try:
            for inf in self.informers:
                await inf.wait_synced()
            if problem:
                self.log.warning(warning, problem)
            while True:
                await self._dirty.wait()
                if self.debounce:
                    await self.clock.sleep(self.debounce)
                self._dirty.clear()
                try:
                    await self._sync()
                except Exception:  # noqa: BLE001 - a bad round must not stop the data plane; retried on the next change
                    self.log.exception("%s: applying the rules failed", self.name)
                    await self.clock.sleep(self.retry)
                    self._dirty.set()
        finally:
            self._janitor.finish()  # the table goes first, synchronously: a second cancellation cannot skip it
            self.applied = ""
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def apply(self, script: str, *, nft: Nft) -> None:
        """Replace the table with script unless it is the one already applied."""
        if script == self.applied:
            return
        err = await nft(script)
        if err:
            raise RuntimeError(f"nft -f failed: {err}")
        self.applied = script

    async def remove(self, *, nft: Nft) -> None:
        """Remove the table if this applier put one there."""
        if self.applied:
            with contextlib.suppress(OSError):
                await nft(nftables.cleanup_script(self.table))
            self.applied = ""
