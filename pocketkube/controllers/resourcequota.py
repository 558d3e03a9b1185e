"""ResourceQuota controller: keeps each quota's status.hard (from spec) and status.used (recounted) true."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors, quota
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.resourcequota")

QUOTAS = rest.GVR("", "v1", "resourcequotas")
# kube-controller-manager's --resource-quota-sync-period.
DEFAULT_RESYNC_SECONDS = 300.0
RESYNC_ENV = "POCKETKUBE_RESOURCE_QUOTA_SYNC_SECONDS"
# How often an unknown resource name may trigger a new discovery.
REDISCOVER_SECONDS = 30.0
PAGE_SIZE = 500


def resync_from_env(env: Mapping[str, str] | None = None) -> float:
    """The full recalculation period from $POCKETKUBE_RESOURCE_QUOTA_SYNC_SECONDS (default 300 s, kube's 5m)."""
    raw = (env if env is not None else os.environ).get(RESYNC_ENV, "")
    if not raw:
        return DEFAULT_RESYNC_SECONDS
    try:
        seconds = float(raw)
    except ValueError:
        raise ValueError(f"{RESYNC_ENV} must be a number of seconds, not {raw!r}") from None
    if seconds <= 0:
        raise ValueError(f"{RESYNC_ENV} must be positive, not {raw!r}")
    return seconds


def _hard(q: Mapping[str, Any] | None, part: str) -> quota.ResourceList:
    return quota.parse_list(((q or {}).get(part) or {}).get("hard"))


def quota_keys(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    """A quota is recalculated when it appears, and when its spec.hard changes or is not yet its status.hard.

    Status-only writes (admission charging usage) must not trigger a recount that could race them."""
    if new is None:
        return []
    key = informer.key_of(new)
    if etype == informer.ADDED or old is None:
        return [key]
    if not quota.equals(_hard(old, "spec"), _hard(new, "spec")) or not quota.equals(_hard(new, "spec"), _hard(new, "status")):
        return [key]
    if (old.get("spec") or {}).get("scopes") != (new.get("spec") or {}).get("scopes") or \
            (old.get("spec") or {}).get("scopeSelector") != (new.get("spec") or {}).get("scopeSelector"):
        return [key]
    return []


class ResourceQuotaController(controller.Reconciler):
    """Recounts a quota's usage on quota changes, on releases (deletes, pods finishing) and every resync period."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None,
                 resync_seconds: float = DEFAULT_RESYNC_SECONDS, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        if resync_seconds <= 0:
            raise ValueError("resync_seconds must be positive")
        super().__init__(client, "resourcequota", workers=workers, clock=clock, informers=informers)
        self.resync_seconds = resync_seconds
        self.quotas = self.watch(QUOTAS, quota_keys)
        # One informer per measured resource, started when a quota first needs it, to hear of releases.
        self.monitors: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._gvrs: dict[tuple[str, str], rest.GVR] = {
            ("", r): rest.GVR("", "v1", r) for r in ("pods", "services", "persistentvolumeclaims", "configmaps",
                                                     "secrets", "replicationcontrollers", "resourcequotas")}
        self._discovered_at: float | None = None

    async def run(self) -> None:
        resync = asyncio.get_running_loop().create_task(self._resync_loop(), name="resourcequota-resync")
        try:
            await super().run()
        finally:
            for task in [resync, *self.monitors.values()]:
                task.cancel()
            for task in [resync, *self.monitors.values()]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def _resync_loop(self) -> None:
        while True:
            await self.clock.sleep(self.resync_seconds)
            for key in self.quotas.keys():
                self.controller.enqueue(key)

    async def reconcile(self, key: str) -> controller.Outcome:
        namespace, _, name = key.partition("/")
        # A fresh read, so the status write below is a compare-and-swap against admission's charges. It is a
        # list, not a get: kube's system:controller:resourcequota-controller role may only list and watch.
        page = await self.client.list(QUOTAS, namespace, field_selector=f"metadata.name={name}")
        found = page.get("items") or []
        if not found:
            return controller.DONE
        q = {"apiVersion": "v1", "kind": "ResourceQuota", **found[0]}
        measured: dict[quota.Evaluator, list[dict[str, Any]]] = {}
        for ev in quota.evaluators_for_names(_hard(q, "spec")):
            gvr = await self._gvr(ev)
            if gvr is None:
                continue
            self._monitor(ev, gvr)
            measured[ev] = await self._list(gvr, namespace, metadata_only=isinstance(ev, quota.CountEvaluator))
        status = quota.sync_status(q, measured, now=self.clock.now())
        if status is None:
            return controller.DONE
        try:
            await self.client.update_status(QUOTAS, {**q, "status": status})
        except errors.Conflict:
            # Admission charged the quota meanwhile: count again from the new version.
            return controller.REQUEUE
        except errors.NotFound:
            return controller.DONE
        return controller.DONE

    async def _list(self, gvr: rest.GVR, namespace: str, *, metadata_only: bool) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cont = ""
        while True:
            page = await self.client.list(gvr, namespace, limit=PAGE_SIZE, continue_=cont, metadata_only=metadata_only)
            items.extend(page.get("items") or [])
            cont = (page.get("metadata") or {}).get("continue") or ""
            if not cont:
                return items

    async def _gvr(self, ev: quota.Evaluator) -> rest.GVR | None:
        key = (ev.group, ev.resource)
        if key in self._gvrs:
            return self._gvrs[key]
        now = self.clock.monotonic()
        if self._discovered_at is not None and now - self._discovered_at < REDISCOVER_SECONDS:
            return None
        self._discovered_at = now
        found = await self.client.discover()
        for r in found.preferred(verbs=("list", "watch")):
            self._gvrs.setdefault((r.group, r.resource), r.gvr)
        return self._gvrs.get(key)

    def _monitor(self, ev: quota.Evaluator, gvr: rest.GVR) -> None:
        key = (ev.group, ev.resource)
        if key in self.monitors:
            return
        inf = self.factory.informer(gvr, metadata_only=isinstance(ev, quota.CountEvaluator))
        inf.add_handler(functools.partial(self.released, ev))
        self.monitors[key] = asyncio.get_running_loop().create_task(inf.run(), name=f"resourcequota-monitor-{gvr.resource}")

    def released(self, ev: quota.Evaluator, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        """A monitor's handler: a deletion, or an update that frees usage, queues the quotas tracking it."""
        if etype == informer.DELETED and old is not None:
            changed = old
        elif etype == informer.MODIFIED and old is not None and new is not None \
                and ev.replenishes(old, new, self.clock.now()):
            changed = new
        else:
            return
        namespace = (changed.get("metadata") or {}).get("namespace") or ""
        for q in self.quotas.list():
            if (q.get("metadata") or {}).get("namespace") == namespace and ev.matching_resources(_hard(q, "spec")):
                self.controller.enqueue(informer.key_of(q))
