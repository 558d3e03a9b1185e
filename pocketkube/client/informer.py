"""List+watch cache of one resource type: relists on 410, follows bookmarks, tells handlers of changes."""

from __future__ import annotations

import asyncio
import builtins
import logging
import random
from collections.abc import Callable
from typing import Any

import aiohttp

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import rest

log = logging.getLogger("pocketkube.informer")

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
PAGE_SIZE = 500
# client-go picks each watch's timeout at random between 5 and 10 minutes to spread reconnects.
MIN_WATCH_TIMEOUT = 300
# Backoff between failed list/watch attempts.
RETRY_BASE = 0.2
RETRY_MAX = 30.0

# handler(event_type, old, new): old is None for ADDED, new is None for DELETED. Handlers must be
# quick and synchronous (enqueue a key and return); they must never mutate the objects.
Handler = Callable[[str, "dict[str, Any] | None", "dict[str, Any] | None"], None]


def key_of(obj: dict[str, Any]) -> str:
    """The cache key: "namespace/name", or "name" for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


class Informer:
    """Keeps an up-to-date copy of every object of one resource (optionally filtered)."""

    def __init__(self, client: rest.Client, gvr: rest.GVR, *, namespace: str = "",
                 label_selector: str = "", field_selector: str = "", metadata_only: bool = False,
                 resync_seconds: float = 0.0, clock: clock_mod.Clock | None = None) -> None:
        self.client = client
        self.gvr = gvr
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.metadata_only = metadata_only
        self.resync_seconds = resync_seconds
        self.clock = clock or clock_mod.Clock()
        self.resource_version = ""
        self._cache: dict[str, dict[str, Any]] = {}
        self._handlers: list[Handler] = []
        self._synced = asyncio.Event()

    def add_handler(self, handler: Handler) -> None:
        """Register a handler; it is replayed ADDED for every object already cached."""
        self._handlers.append(handler)
        for obj in list(self._cache.values()):
            self._call(handler, ADDED, None, obj)

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached object for "namespace/name" (or "name"); never mutate it."""
        return self._cache.get(key)

    def list(self) -> list[dict[str, Any]]:
        return list(self._cache.values())

    def keys(self) -> builtins.list[str]:
        return list(self._cache)

    @property
    def has_synced(self) -> bool:
        return self._synced.is_set()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """List then watch forever; cancel the task to stop."""
        resync = asyncio.get_running_loop().create_task(self._resync_loop()) if self.resync_seconds > 0 else None
        failures = 0
        try:
            while True:
                try:
                    if not self.resource_version:
                        await self._relist()
                    started = self.clock.monotonic()
                    await self._watch()
                    failures = 0
                    if self.clock.monotonic() - started < 1.0:
                        # A server that ends watches at once must not make us spin.
                        await self.clock.sleep(RETRY_BASE)
                except errors.Gone:
                    # Our resourceVersion fell out of the server's window: start over from a fresh list.
                    log.info("%s: watch expired at resourceVersion %s; relisting", self.gvr, self.resource_version)
                    self.resource_version = ""
                except (TimeoutError, errors.APIError, aiohttp.ClientError, OSError, ValueError) as e:
                    failures += 1
                    delay = min(RETRY_MAX, RETRY_BASE * 2 ** min(failures, 10))
                    log.warning("%s: list/watch failed (%s); retrying in %.1fs", self.gvr, e, delay)
                    if isinstance(e, errors.APIError) and e.code in (404, 403, 401):
                        # The resource may have gone away (a CRD deleted): relist after the pause.
                        self.resource_version = ""
                    await self.clock.sleep(delay)
        finally:
            if resync is not None:
                resync.cancel()

    async def _relist(self) -> None:
        items: list[dict[str, Any]] = []
        cont = ""
        rv = ""
        while True:
            try:
                page = await self.client.list(self.gvr, self.namespace, label_selector=self.label_selector,
                                              field_selector=self.field_selector, limit=PAGE_SIZE,
                                              continue_=cont, metadata_only=self.metadata_only)
            except errors.Gone:
                if not cont:
                    raise
                # The continue token expired mid-way: restart the whole list.
                items, cont = [], ""
                continue
            items.extend(page.get("items") or [])
            meta = page.get("metadata") or {}
            rv = meta.get("resourceVersion") or rv
            cont = meta.get("continue") or ""
            if not cont:
                break
        self._replace(items)
        self.resource_version = rv
        self._synced.set()

    def _replace(self, items: builtins.list[dict[str, Any]]) -> None:
        fresh = {key_of(o): o for o in items}
        old = self._cache
        self._cache = fresh
        for key, obj in old.items():
            if key not in fresh:
                self._emit(DELETED, obj, None)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._emit(ADDED, None, obj)
            elif _rv(prev) != _rv(obj):
                self._emit(MODIFIED, prev, obj)

    async def _watch(self) -> None:
        timeout = MIN_WATCH_TIMEOUT + int(random.random() * MIN_WATCH_TIMEOUT)
        async for etype, obj in self.client.watch(
                self.gvr, self.namespace, resource_version=self.resource_version,
                label_selector=self.label_selector, field_selector=self.field_selector,
                allow_bookmarks=True, timeout_seconds=timeout, metadata_only=self.metadata_only):
            rv = _rv(obj)
            if etype == "BOOKMARK":
                if rv:
                    self.resource_version = rv
                continue
            key = key_of(obj)
            if etype in (ADDED, MODIFIED):
                prev = self._cache.get(key)
                self._cache[key] = obj
                self._emit(ADDED if prev is None else MODIFIED, prev, obj)
            elif etype == DELETED:
                prev = self._cache.pop(key, None)
                self._emit(DELETED, prev or obj, None)
            else:
                log.warning("%s: ignoring watch event of type %r", self.gvr, etype)
            if rv:
                self.resource_version = rv

    async def _resync_loop(self) -> None:
        while True:
            await self.clock.sleep(self.resync_seconds)
            for obj in list(self._cache.values()):
                self._emit(MODIFIED, obj, obj)

    def _emit(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for h in self._handlers:
            self._call(h, etype, old, new)

    def _call(self, h: Handler, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        try:
            h(etype, old, new)
        except Exception:
            # A broken handler must not stop the cache from following the server.
            log.exception("%s: handler failed on %s", self.gvr, etype)


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
