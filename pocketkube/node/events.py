"""Record core/v1 Events as the kubelet does (source kubelet/<node>), without blocking the caller."""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Mapping
from typing import Any

import aiohttp

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import rest

log = logging.getLogger("pocketkube.node.events")

EVENTS = rest.GVR("", "v1", "events")
COMPONENT = "kubelet"


def pod_ref(pod: Mapping[str, Any], *, field_path: str = "") -> dict[str, Any]:
    """The involvedObject of an event about a pod (or one of its containers)."""
    meta = pod.get("metadata") or {}
    ref: dict[str, Any] = {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
                           "uid": meta.get("uid", ""), "apiVersion": "v1"}
    if meta.get("resourceVersion"):
        ref["resourceVersion"] = meta["resourceVersion"]
    if field_path:
        ref["fieldPath"] = field_path
    return ref


def node_ref(node: str) -> dict[str, Any]:
    """The involvedObject of an event about a node: the kubelet uses the node name as its uid."""
    return {"kind": "Node", "name": node, "uid": node}


def event_object(ref: Mapping[str, Any], *, etype: str, reason: str, message: str, host: str,
                 now: datetime.datetime, serial: int) -> dict[str, Any]:
    """A core/v1 Event named <object>.<hex nanoseconds> like client-go's recorder names them."""
    stamp = clock_mod.rfc3339(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{ref.get('name', '')}.{serial:x}", "namespace": ref.get("namespace") or "default"},
        "involvedObject": dict(ref),
        "reason": reason,
        "message": message,
        "source": {"component": COMPONENT, "host": host},
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
        "type": etype,
        "eventTime": None,
        "reportingComponent": COMPONENT,
        "reportingInstance": host,
    }


class Recorder:
    """Posts events in the background; close() waits for the ones still in flight."""

    def __init__(self, client: rest.Client, *, host: str, clock: clock_mod.Clock | None = None) -> None:
        self.client = client
        self.host = host
        self.clock = clock or clock_mod.Clock()
        self._last = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def _serial(self, now: datetime.datetime) -> int:
        # Nanoseconds since the epoch, forced unique so two events in one tick never collide.
        ns = int(now.timestamp() * 1_000_000) * 1000
        self._last = max(self._last + 1, ns)
        return self._last

    def event(self, ref: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        now = self.clock.now()
        obj = event_object(ref, etype=etype, reason=reason, message=message, host=self.host, now=now,
                           serial=self._serial(now))
        task = asyncio.get_running_loop().create_task(self._post(obj))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, obj: dict[str, Any]) -> None:
        try:
            await self.client.create(EVENTS, obj)
        except (errors.APIError, aiohttp.ClientError, OSError, TimeoutError) as e:
            # Events are best effort, as in client-go: a lost one never fails the work it describes.
            log.debug("event %s/%s not recorded: %s", obj["metadata"]["namespace"], obj["metadata"]["name"], e)

    async def close(self) -> None:
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
