"""List+watch caches of resources, shared per (resource, namespace, selectors) by a Factory, telling handlers of changes."""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import logging
import os
import random
from collections.abc import Callable
from typing import Any

import aiohttp
import orjson

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
# A transform rewrites each object as it arrives, before caching (client-go's TransformFunc).
Transform = Callable[[dict[str, Any]], "dict[str, Any]"]
# An index function maps an object to the values it is filed under (client-go's IndexFunc).
IndexFunc = Callable[[dict[str, Any]], "list[str]"]
# As client-go's KUBE_CACHE_MUTATION_DETECTOR: keep a serialized copy of every cached object and complain
# when a handler or reconciler changed the shared object in place (the caches are shared between controllers).
MUTATION_DETECTOR_ENV = "KUBE_CACHE_MUTATION_DETECTOR"
# (resource, key) of every mutation the detector found, for tests to assert on.
detected_mutations: list[tuple[str, str]] = []


def mutation_detector_enabled() -> bool:
    """Whether KUBE_CACHE_MUTATION_DETECTOR asks for the (costly) cached object mutation checks."""
    return os.environ.get(MUTATION_DETECTOR_ENV, "").lower() in ("1", "true", "yes")


def trim_managed_fields(obj: dict[str, Any]) -> dict[str, Any]:
    """Drop metadata.managedFields, as kube-controller-manager's and kube-scheduler's informers do: caches
    hold each object for its lifetime, and managedFields are often its largest part while no controller reads
    them (an update without them keeps the stored ones)."""
    meta = obj.get("metadata")
    if isinstance(meta, dict):
        meta.pop("managedFields", None)
    return obj


def key_of(obj: dict[str, Any]) -> str:
    """The cache key: "namespace/name", or "name" for cluster-scoped objects."""
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or ""
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


class Informer:
    """Keeps an up-to-date copy of every object of one resource (optionally filtered).

    One list+watch serves every handler: run() may be called by many controllers at once (a Factory hands the
    same informer to all of them); the first call starts the list+watch, the last one to stop ends it."""

    def __init__(self, client: rest.Client, gvr: rest.GVR, *, namespace: str = "",
                 label_selector: str = "", field_selector: str = "", metadata_only: bool = False,
                 resync_seconds: float = 0.0, clock: clock_mod.Clock | None = None,
                 transform: Transform | None = None) -> None:
        self.client = client
        self.gvr = gvr
        # Applied to every object as it arrives, before it is cached or handed to handlers (client-go's
        # SetTransform): the informer owns the freshly decoded object, so it may change it in place.
        self.transform = transform
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
        self._task: asyncio.Task[None] | None = None
        self._runners = 0
        self._indexers: dict[str, IndexFunc] = {}
        # index name -> indexed value -> keys of the objects filed under it
        self._indices: dict[str, dict[str, set[str]]] = {}
        self._snapshots: dict[str, bytes] | None = {} if mutation_detector_enabled() else None

    def add_handler(self, handler: Handler) -> None:
        """Register a handler; it is replayed ADDED for every object already cached."""
        self._handlers.append(handler)
        for obj in list(self._cache.values()):
            self._call(handler, ADDED, None, obj)

    def remove_handler(self, handler: Handler) -> None:
        """Stop telling handler of changes (a user leaving an informer others keep running)."""
        if handler in self._handlers:
            self._handlers.remove(handler)

    def add_indexer(self, name: str, func: IndexFunc) -> None:
        """File every cached object under func(obj) in the index `name` (shared by every user of the cache)."""
        if name in self._indexers:
            return
        self._indexers[name] = func
        self._indices[name] = {}
        for key, obj in self._cache.items():
            self._index_add(name, key, obj)

    def by_index(self, name: str, value: str) -> builtins.list[dict[str, Any]]:
        """The cached objects filed under value in the index `name`; never mutate them."""
        keys = self._indices[name].get(value) or ()
        return [self._cache[k] for k in keys if k in self._cache]

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

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def wait_synced(self) -> None:
        await self._synced.wait()

    async def run(self) -> None:
        """Make sure the list+watch runs and wait on it; cancel to stop (the last caller stopping ends it)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._list_and_watch(), name=f"informer-{self.gvr.resource}")
        task = self._task
        self._runners += 1
        try:
            # shield: one caller cancelled must not stop the cache the other callers share.
            await asyncio.shield(task)
        finally:
            self._runners -= 1
            if self._runners == 0 and self._task is task:
                self._task = None
                task.cancel()

    async def _list_and_watch(self) -> None:
        """List then watch forever."""
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
            page_items = page.get("items") or []
            if self.transform is not None:
                page_items = [self.transform(o) for o in page_items]
            items.extend(page_items)
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
        if self._snapshots is not None:
            for key in old:
                self._check_unchanged(key, old[key])
            self._snapshots = {key: orjson.dumps(obj) for key, obj in fresh.items()}
        for name in self._indexers:
            self._indices[name] = {}
            for key, obj in fresh.items():
                self._index_add(name, key, obj)
        for key, obj in old.items():
            if key not in fresh:
                self._emit(DELETED, obj, None)
        for key, obj in fresh.items():
            prev = old.get(key)
            if prev is None:
                self._emit(ADDED, None, obj)
            elif _rv(prev) != _rv(obj):
                self._emit(MODIFIED, prev, obj)

    def _put(self, key: str, obj: dict[str, Any]) -> dict[str, Any] | None:
        prev = self._cache.get(key)
        if prev is not None:
            self._unfile(key, prev)
        self._cache[key] = obj
        for name in self._indexers:
            self._index_add(name, key, obj)
        if self._snapshots is not None:
            self._snapshots[key] = orjson.dumps(obj)
        return prev

    def _pop(self, key: str) -> dict[str, Any] | None:
        prev = self._cache.pop(key, None)
        if prev is not None:
            self._unfile(key, prev)
            if self._snapshots is not None:
                self._snapshots.pop(key, None)
        return prev

    def _unfile(self, key: str, obj: dict[str, Any]) -> None:
        if self._snapshots is not None:
            self._check_unchanged(key, obj)
        for name, func in self._indexers.items():
            index = self._indices[name]
            for value in _index_values(func, obj):
                keys = index.get(value)
                if keys is not None:
                    keys.discard(key)
                    if not keys:
                        del index[value]

    def _index_add(self, name: str, key: str, obj: dict[str, Any]) -> None:
        index = self._indices[name]
        for value in _index_values(self._indexers[name], obj):
            index.setdefault(value, set()).add(key)

    def _check_unchanged(self, key: str, obj: dict[str, Any]) -> None:
        snap = (self._snapshots or {}).get(key)
        if snap is not None and orjson.dumps(obj) != snap:
            detected_mutations.append((self.gvr.resource, key))
            log.error("%s %s: a cached object was mutated in place (handlers and reconcilers must copy it first)",
                      self.gvr.resource, key)

    def check_mutations(self) -> int:
        """With the mutation detector on: compare every cached object to its copy; the number found changed."""
        if self._snapshots is None:
            return 0
        before = len(detected_mutations)
        for key, obj in self._cache.items():
            self._check_unchanged(key, obj)
            self._snapshots[key] = orjson.dumps(obj)
        return len(detected_mutations) - before

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
            if self.transform is not None:
                obj = self.transform(obj)
            if etype in (ADDED, MODIFIED):
                prev = self._put(key, obj)
                self._emit(ADDED if prev is None else MODIFIED, prev, obj)
            elif etype == DELETED:
                prev = self._pop(key)
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


@dataclasses.dataclass(frozen=True)
class InformerKey:
    """What makes two informers the same list+watch (resync included: it is per informer here)."""

    gvr: rest.GVR
    namespace: str = ""
    label_selector: str = ""
    field_selector: str = ""
    metadata_only: bool = False
    resync_seconds: float = 0.0


class Factory:
    """client-go's SharedInformerFactory: one Informer per key, shared by every controller that asks for it.

    Every user registers its own handlers (each replayed the cache when added) and must treat cached objects
    as read-only. Informers run while any user runs them (Controller.run does) or once start() was called."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None,
                 transform: Transform | None = None) -> None:
        self.client = client
        self.clock = clock or clock_mod.Clock()
        # Applied by every informer of the factory (client-go's WithTransform option).
        self.transform = transform
        self._informers: dict[InformerKey, Informer] = {}
        self._started: dict[InformerKey, asyncio.Task[None]] = {}
        if mutation_detector_enabled():
            log.warning("cache mutation detector is on (%s): every cached object is kept twice",
                        MUTATION_DETECTOR_ENV)

    def informer(self, gvr: rest.GVR, *, namespace: str = "", label_selector: str = "", field_selector: str = "",
                 metadata_only: bool = False, resync_seconds: float = 0.0) -> Informer:
        """The shared informer for this resource and filter, created on first use."""
        key = InformerKey(gvr, namespace, label_selector, field_selector, metadata_only, float(resync_seconds))
        inf = self._informers.get(key)
        if inf is None:
            inf = Informer(self.client, gvr, namespace=namespace, label_selector=label_selector,
                           field_selector=field_selector, metadata_only=metadata_only,
                           resync_seconds=resync_seconds, clock=self.clock, transform=self.transform)
            self._informers[key] = inf
        return inf

    def existing(self, gvr: rest.GVR) -> Informer | None:
        """The unfiltered, whole-object informer of gvr if some user already asked for one, else None.

        For users content with any view of a resource (the garbage collector reads only metadata): kube's
        ObjectOrMetadataInformerFactory hands them the typed shared informer, so they cost no watch of their own."""
        return self._informers.get(InformerKey(gvr))

    def informers(self) -> builtins.list[Informer]:
        return list(self._informers.values())

    def start(self) -> None:
        """Run every informer asked for so far until shutdown() (call again for ones asked for later)."""
        loop = asyncio.get_running_loop()
        for key, inf in self._informers.items():
            if key not in self._started:
                self._started[key] = loop.create_task(inf.run(), name=f"shared-informer-{key.gvr.resource}")

    async def wait_for_cache_sync(self, timeout: float | None = None) -> dict[InformerKey, bool]:
        """Wait until every started informer has listed once (or timeout); whether each one has."""
        pending = [self._informers[k].wait_synced() for k in self._started]
        if pending:
            try:
                await asyncio.wait_for(asyncio.gather(*pending), timeout)
            except TimeoutError:
                pass
        return {k: self._informers[k].has_synced for k in self._started}

    async def shutdown(self) -> None:
        """Stop the runs start() began (informers other users still run keep running)."""
        tasks = list(self._started.values())
        self._started.clear()
        for t in tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("shared informer %s failed", t.get_name())


def _index_values(func: IndexFunc, obj: dict[str, Any]) -> builtins.list[str]:
    try:
        return func(obj)
    except Exception:
        # A broken index function must not stop the cache from following the server.
        log.exception("index function failed")
        return []


def namespace_index(obj: dict[str, Any]) -> builtins.list[str]:
    """client-go's MetaNamespaceIndexFunc: file an object under its namespace."""
    return [str((obj.get("metadata") or {}).get("namespace") or "")]


def _rv(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")
