"""Record core/v1 Events as the kubelet does (source kubelet/<node>), without blocking the caller."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
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
# client-go's EventCorrelator defaults, which the kubelet keeps: how many events it remembers, how many
# different messages of one reason about one object make it combine them, and within how long.
CACHE_SIZE = 4096
SIMILAR_MAX = 10
SIMILAR_WINDOW_SECONDS = 600
COMBINED_PREFIX = "(combined from similar events): "
# Its spam filter: a burst of 25 events per object and source, then one more every 5 minutes.
SPAM_BURST = 25
SPAM_REFILL_SECONDS = 300.0
# The broadcaster's queue (client-go's maxQueuedEvents): events past it are dropped rather than held.
MAX_QUEUED = 1000


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


def _ref_key(event: Mapping[str, Any]) -> tuple[str, ...]:
    src, ref = event.get("source") or {}, event.get("involvedObject") or {}
    return (str(src.get("component", "")), str(src.get("host", "")), str(ref.get("kind", "")),
            str(ref.get("namespace", "")), str(ref.get("name", "")), str(ref.get("uid", "")),
            str(ref.get("apiVersion", "")))


def event_key(event: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes two events the same one (client-go's getEventKey): source, object, field path, type, reason, message."""
    field_path = str((event.get("involvedObject") or {}).get("fieldPath", ""))
    return (*_ref_key(event), field_path, str(event.get("type", "")), str(event.get("reason", "")),
            str(event.get("message", "")))


def similar_key(event: Mapping[str, Any]) -> tuple[str, ...]:
    """What makes events similar (client-go's EventAggregatorByReasonFunc): all of the key but the message."""
    return (*_ref_key(event), str(event.get("type", "")), str(event.get("reason", "")),
            str(event.get("reportingComponent", "")), str(event.get("reportingInstance", "")))


@dataclasses.dataclass(frozen=True)
class Decision:
    """What to write for one event: nothing (skip), a new Event (patch None), or a patch of an existing one."""

    event: dict[str, Any]
    patch: dict[str, Any] | None = None
    skip: bool = False
    key: tuple[str, ...] = ()


@dataclasses.dataclass
class _Similar:
    messages: set[str]
    last: datetime.datetime


@dataclasses.dataclass
class _Bucket:
    tokens: float
    at: datetime.datetime


class Correlator:
    """client-go's EventCorrelator: combines similar events, counts repeats of one event, filters spam.

    A repeat of an event (same object, field path, type, reason and message) becomes a patch of the first
    one's count, lastTimestamp and message; once SIMILAR_MAX different messages of one reason about one
    object come within SIMILAR_WINDOW_SECONDS, they are counted on one "(combined from similar events)" event."""

    def __init__(self, *, burst: int = SPAM_BURST, refill_seconds: float = SPAM_REFILL_SECONDS) -> None:
        self.burst = burst
        self.refill_seconds = refill_seconds
        self._seen: collections.OrderedDict[tuple[str, ...], tuple[str, int, str]] = collections.OrderedDict()
        self._similar: collections.OrderedDict[tuple[str, ...], _Similar] = collections.OrderedDict()
        self._buckets: collections.OrderedDict[tuple[str, ...], _Bucket] = collections.OrderedDict()

    def correlate(self, event: dict[str, Any], *, now: datetime.datetime) -> Decision:
        """Decide how to record a freshly made event (count 1, its own name) at `now`."""
        event, key = self._aggregate(event, now=now)
        prev = self._seen.get(key)
        patch = None
        if prev is not None:
            name, count, first = prev
            event = {**event, "metadata": {**event["metadata"], "name": name}, "count": count + 1,
                     "firstTimestamp": first}
            patch = {"count": count + 1, "lastTimestamp": event["lastTimestamp"], "message": event["message"]}
        _remember(self._seen, key, (event["metadata"]["name"], int(event["count"]), str(event["firstTimestamp"])))
        if not self._allow(_ref_key(event), now=now):
            return Decision(event, skip=True, key=key)
        return Decision(event, patch, key=key)

    def _aggregate(self, event: dict[str, Any], *, now: datetime.datetime) -> tuple[dict[str, Any], tuple[str, ...]]:
        skey = similar_key(event)
        rec = self._similar.get(skey)
        if rec is None or (now - rec.last).total_seconds() > SIMILAR_WINDOW_SECONDS:
            rec = _Similar(messages=set(), last=now)
        rec.messages.add(str(event.get("message", "")))
        rec.last = now
        _remember(self._similar, skey, rec)
        if len(rec.messages) < SIMILAR_MAX:
            return event, event_key(event)
        rec.messages.pop()
        # As client-go's aggregate copy: no reporting fields, the same name scheme, a combined message.
        combined = {k: v for k, v in event.items() if k not in ("reportingComponent", "reportingInstance")}
        combined["message"] = COMBINED_PREFIX + str(event.get("message", ""))
        return combined, skey

    def _allow(self, key: tuple[str, ...], *, now: datetime.datetime) -> bool:
        b = self._buckets.get(key)
        if b is None:
            b = _Bucket(tokens=float(self.burst), at=now)
        else:
            b.tokens = min(float(self.burst), b.tokens + (now - b.at).total_seconds() / self.refill_seconds)
            b.at = now
        _remember(self._buckets, key, b)
        if b.tokens < 1:
            return False
        b.tokens -= 1
        return True


def _remember(cache: collections.OrderedDict[tuple[str, ...], Any], key: tuple[str, ...], value: Any) -> None:
    cache[key] = value
    cache.move_to_end(key)
    while len(cache) > CACHE_SIZE:
        cache.popitem(last=False)


class Recorder:
    """Posts events in the background, correlated as client-go does; close() waits for the ones queued.

    One sender writes them in order, as client-go's broadcaster does: a repeat's patch follows its create, and
    a burst of events (a node starting, a pod starting) takes one connection instead of one each."""

    def __init__(self, client: rest.Client, *, host: str, clock: clock_mod.Clock | None = None,
                 max_queued: int = MAX_QUEUED) -> None:
        self.client = client
        self.host = host
        self.clock = clock or clock_mod.Clock()
        self.max_queued = max_queued
        self._last = 0
        self.correlator = Correlator()
        self._queue: collections.deque[Decision] = collections.deque()
        self._sender: asyncio.Task[None] | None = None

    def _serial(self, now: datetime.datetime) -> int:
        # Nanoseconds since the epoch, forced unique so two events in one tick never collide.
        ns = int(now.timestamp() * 1_000_000) * 1000
        self._last = max(self._last + 1, ns)
        return self._last

    def event(self, ref: Mapping[str, Any], etype: str, reason: str, message: str) -> None:
        """Record an event about ref, or count it again on the Event already recorded for it."""
        now = self.clock.now()
        obj = event_object(ref, etype=etype, reason=reason, message=message, host=self.host, now=now,
                           serial=self._serial(now))
        decision = self.correlator.correlate(obj, now=now)
        if decision.skip:
            log.debug("event %s %s about %s dropped by the spam filter", reason, message, ref.get("name"))
            return
        if len(self._queue) >= self.max_queued:
            log.debug("event %s %s about %s dropped: %d events wait already", reason, message, ref.get("name"),
                      len(self._queue))
            return
        self._queue.append(decision)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        # Returns (and so is done) in the same step that finds the queue empty: event() then starts a new one.
        while self._queue:
            await self._post(self._queue.popleft())

    async def _post(self, decision: Decision) -> None:
        obj = decision.event
        try:
            if decision.patch is not None:
                try:
                    await self.client.patch(EVENTS.path(obj["metadata"]["namespace"], obj["metadata"]["name"]),
                                            decision.patch, patch_type="strategic")
                    return
                except errors.NotFound:
                    pass  # gone (expired or never written): write it whole again, count and all, as client-go does
            await self.client.create(EVENTS, obj)
        except (errors.APIError, aiohttp.ClientError, OSError, TimeoutError) as e:
            # Events are best effort, as in client-go: a lost one never fails the work it describes.
            log.debug("event %s/%s not recorded: %s", obj["metadata"]["namespace"], obj["metadata"]["name"], e)

    async def close(self) -> None:
        while self._sender is not None and not self._sender.done():
            await asyncio.gather(self._sender, return_exceptions=True)
