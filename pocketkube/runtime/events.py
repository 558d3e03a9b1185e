"""Records core/v1 Events about objects as client-go's EventRecorder does, counting repeats."""

from __future__ import annotations

import collections
import itertools
import logging
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import rest

log = logging.getLogger("pocketkube.runtime.events")

EVENTS = rest.GVR("", "v1", "events")
NORMAL = "Normal"
WARNING = "Warning"
# client-go's correlator remembers this many distinct events to aggregate repeats.
CACHE_SIZE = 4096


def involved_object(obj: dict[str, Any]) -> dict[str, Any]:
    """The ObjectReference an Event names (what kubectl describe looks events up by)."""
    meta = obj.get("metadata") or {}
    ref = {"kind": obj.get("kind") or "", "namespace": meta.get("namespace") or "",
           "name": meta.get("name") or "", "uid": meta.get("uid") or "",
           "apiVersion": obj.get("apiVersion") or "", "resourceVersion": meta.get("resourceVersion") or ""}
    return {k: v for k, v in ref.items() if v}


def make_event(obj: dict[str, Any], etype: str, reason: str, message: str, *, component: str,
               now: str, name_suffix: int) -> dict[str, Any]:
    """A fresh Event body: name "<object>.<hex nanoseconds>", count 1, source and reporting component."""
    ref = involved_object(obj)
    ns = ref.get("namespace") or "default"
    return {"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{ref.get('name', '')}.{name_suffix:x}", "namespace": ns},
            "involvedObject": ref, "reason": reason, "message": message,
            "source": {"component": component}, "firstTimestamp": now, "lastTimestamp": now,
            "count": 1, "type": etype, "eventTime": None, "reportingComponent": component,
            "reportingInstance": ""}


class Recorder:
    """Writes Events for one component; failures are logged, never raised (events are best effort)."""

    def __init__(self, client: rest.Client, component: str, *, clock: clock_mod.Clock | None = None) -> None:
        self.client = client
        self.component = component
        self.clock = clock or clock_mod.Clock()
        self._seen: collections.OrderedDict[tuple[str, ...], tuple[str, str, int]] = collections.OrderedDict()
        self._seq = itertools.count()

    async def event(self, obj: dict[str, Any], etype: str, reason: str, message: str) -> None:
        """Record (or count again) an event about obj."""
        ref = involved_object(obj)
        key = (ref.get("namespace", ""), ref.get("kind", ""), ref.get("name", ""), ref.get("uid", ""),
               etype, reason, message)
        now = self.clock.now()
        stamp = clock_mod.rfc3339(now)
        try:
            prev = self._seen.get(key)
            if prev is not None:
                ns, name, count = prev
                try:
                    await self.client.patch(EVENTS.path(ns, name), {"count": count + 1, "lastTimestamp": stamp},
                                            patch_type="merge")
                    self._remember(key, (ns, name, count + 1))
                    return
                except errors.NotFound:
                    pass
            nanos = int(now.timestamp() * 1e9) + next(self._seq)
            body = make_event(obj, etype, reason, message, component=self.component, now=stamp,
                              name_suffix=nanos)
            created = await self.client.create(EVENTS, body)
            meta = created.get("metadata") or {}
            self._remember(key, (meta.get("namespace") or "", meta.get("name") or "", 1))
        except Exception as e:  # noqa: BLE001 - an event lost must never fail a sync
            log.debug("%s: could not record event %s %s: %s", self.component, reason, message, e)

    def _remember(self, key: tuple[str, ...], value: tuple[str, str, int]) -> None:
        self._seen[key] = value
        self._seen.move_to_end(key)
        while len(self._seen) > CACHE_SIZE:
            self._seen.popitem(last=False)
