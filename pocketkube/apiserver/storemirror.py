"""A store prefix mirrored in memory: listed once, kept current by a store watch, listed again after the watch ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from pocketkube.store import base as store_base

log = logging.getLogger("pocketkube.apiserver.storemirror")


def _everything(key: str) -> bool:
    return True


class Mirror:
    """Decoded objects by store key; `generation` changes whenever they change, so users rebuild what they derive."""

    def __init__(self, prefix: str, *, name: str, keep: Callable[[str], bool] = _everything) -> None:
        self.prefix = prefix
        self.name = name
        self.keep = keep
        self.objects: dict[str, dict[str, Any]] = {}
        self.generation = 0
        self._loading: asyncio.Future[None] | None = None
        self._follower: asyncio.Task[None] | None = None

    async def sync(self, store: store_base.Store) -> None:
        """List the prefix and start following it, unless a watch is already doing so."""
        if self._follower is None or self._follower.done():
            await self._load(store)

    async def _load(self, store: store_base.Store) -> None:
        if self._loading is not None:
            # One list at a time: concurrent callers wait for the one in flight.
            await asyncio.shield(self._loading)
            return
        self._loading = asyncio.get_running_loop().create_future()
        try:
            listed = await store.list(self.prefix)
            self.objects = {e.key: orjson.loads(e.value) for e in listed.entries if self.keep(e.key)}
            watcher = store.watch(self.prefix, after_revision=listed.revision)
            self.generation += 1
            self._follower = asyncio.get_running_loop().create_task(self._follow(watcher), name=self.name)
            self._loading.set_result(None)
        except Exception as exc:
            self._loading.set_exception(exc)
            self._loading.exception()  # retrieved: waiters re-raise it
            raise
        except BaseException:
            self._loading.cancel()
            raise
        finally:
            self._loading = None

    async def _follow(self, watcher: store_base.Watcher) -> None:
        try:
            async for batch in watcher:
                changed = False
                for ev in batch:
                    if not self.keep(ev.key):
                        continue
                    if ev.type == "DELETE":
                        self.objects.pop(ev.key, None)
                    else:
                        self.objects[ev.key] = orjson.loads(ev.value)
                    changed = True
                if changed:
                    self.generation += 1
        except store_base.StoreError as exc:  # overflow or closed store: the next sync lists again
            log.info("%s watch ended (%s); it is reloaded on the next request", self.name, exc)
        finally:
            watcher.close()
            self.generation += 1

    def close(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
