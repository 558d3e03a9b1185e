"""events.k8s.io/v1 Events as kube-scheduler's event broadcaster records them: create once, then a series."""

from __future__ import annotations

import asyncio
import collections
import logging
import socket
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import rest

log = logging.getLogger("pocketkube.scheduler.events")

EVENTS = rest.GVR("events.k8s.io", "v1", "events")
NORMAL, WARNING = "Normal", "Warning"
CACHE_SIZE = 4096
# Writers working the backlog; events must never hold up scheduling.
WORKERS = 4
BACKLOG = 10000


def regarding(pod: dict[str, Any]) -> dict[str, Any]:
    """The ObjectReference of a pod, resourceVersion included (so a changed pod starts a new event)."""
    meta = pod.get("metadata") or {}
    ref = {"kind": "Pod", "namespace": meta.get("namespace") or "", "name": meta.get("name") or "",
           "uid": meta.get("uid") or "", "apiVersion": "v1", "resourceVersion": meta.get("resourceVersion") or ""}
    return {k: v for k, v in ref.items() if v}


class Recorder:
    """Queues events and writes them in the background; repeats of one event become its series."""

    def __init__(self, client: rest.Client, *, controller: str = "default-scheduler", instance: str = "",
                 clock: clock_mod.Clock | None = None) -> None:
        self.client = client
        self.controller = controller
        self.instance = instance or f"{controller}-{socket.gethostname()}"
        self.clock = clock or clock_mod.Clock()
        self._seen: collections.OrderedDict[tuple[Any, ...], dict[str, Any]] = collections.OrderedDict()
        self._backlog: asyncio.Queue[dict[str, Any]] = asyncio.Queue(BACKLOG)
        self._last_ns = 0

    def event(self, pod: dict[str, Any], etype: str, reason: str, action: str, note: str) -> None:
        """Record an event about pod (never blocks, never raises)."""
        ref = regarding(pod)
        key = (tuple(sorted(ref.items())), etype, reason, action, note)
        now = self.clock.now()
        prior = self._seen.get(key)
        if prior is not None:
            series = prior.get("series")
            prior["series"] = {"count": (series or {}).get("count", 1) + 1,
                               "lastObservedTime": clock_mod.rfc3339_micro(now)}
            if series is not None:
                return  # later repeats only count; kube writes them on its 30-minute heartbeat
            self._put({"op": "series", "event": prior})
            return
        ns = int(now.timestamp() * 1e9)
        # Names carry nanoseconds; keep them unique when the clock is coarse.
        ns = max(ns, self._last_ns + 1)
        self._last_ns = ns
        ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
              "metadata": {"name": f"{ref.get('name', '')}.{ns:x}", "namespace": ref.get("namespace") or "default"},
              "eventTime": clock_mod.rfc3339_micro(now), "reportingController": self.controller,
              "reportingInstance": self.instance, "action": action, "reason": reason,
              "regarding": ref, "note": note[:1024], "type": etype}
        self._seen[key] = ev
        if len(self._seen) > CACHE_SIZE:
            self._seen.popitem(last=False)
        self._put({"op": "create", "event": ev})

    def _put(self, item: dict[str, Any]) -> None:
        try:
            self._backlog.put_nowait(item)
        except asyncio.QueueFull:
            log.warning("event backlog full; dropping %s", item["event"]["metadata"]["name"])

    async def run(self) -> None:
        """Write queued events until cancelled."""
        await asyncio.gather(*(self._worker() for _ in range(WORKERS)))

    async def _worker(self) -> None:
        while True:
            item = await self._backlog.get()
            try:
                await self._write(item)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # events are best effort
                log.info("could not write event %s: %s", item["event"]["metadata"]["name"], e)
            finally:
                self._backlog.task_done()

    async def _write(self, item: dict[str, Any]) -> None:
        ev = item["event"]
        meta = ev["metadata"]
        if item["op"] == "create":
            await self.client.create(EVENTS, ev)
            return
        path = EVENTS.path(meta["namespace"], meta["name"])
        try:
            await self.client.patch(path, {"series": ev["series"]}, patch_type="merge")
        except errors.NotFound:
            await self.client.create(EVENTS, ev)

    async def drain(self) -> None:
        """Wait until everything queued so far is written (tests)."""
        await self._backlog.join()
