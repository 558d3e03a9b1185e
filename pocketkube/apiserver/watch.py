"""The watch verb: a streamed sequence of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR events."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from typing import Any

import orjson
from aiohttp import web

from pocketkube.api import errors, fieldselectors
from pocketkube.apiserver import context, filters, listing, negotiate, objects, render
from pocketkube.store import base as store_base

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


# Decoded events shared by every watcher (and by the create that wrote them): see objects.DecodeCache.
_DecodeCache = objects.DecodeCache
_decoded = objects.DECODED


class _NodeIndex:
    """One store watcher per watched pod prefix that hands each event only to the watchers pinned (by
    `spec.nodeName=NODE`) to the event's old or new node: kube's watch cache "spec.nodeName" index.

    Without it every node agent's watch would wake up and run its selector for every pod event. The
    store's broadcaster calls this tap's `deliver`, which routes at once, so each pinned watcher's queue
    fills exactly when it would have had it watched the store itself."""

    def __init__(self, store: Any, prefix: str, tap: store_base.Watcher) -> None:
        self.store = store
        self.prefix = prefix
        self._tap = tap
        self._by_node: dict[str, set[store_base.Watcher]] = {}
        self._node_of: dict[store_base.Watcher, str] = {}
        # Recent events with the nodes they concern (None: every node), so a pinned watch resuming from
        # a recent resourceVersion replays its own node's events from memory (kube's watch cache), not
        # every pod's from the store. Complete for revisions after self.since.
        self._recent: collections.deque[tuple[store_base.Event, frozenset[str] | None]] = (
            collections.deque(maxlen=_RECENT))
        self.since = store.current_revision()
        tap.deliver = self._route  # type: ignore[method-assign]
        # The tap's own queue stays empty; reading it only tells when the store closes it.
        self._follower = asyncio.get_running_loop().create_task(self._follow())

    def add(self, node: str, *, live_after: int) -> store_base.Watcher:
        watcher = store_base.Watcher(self.prefix, live_after=live_after, limit=_QUEUE_LIMIT, on_close=self._remove)
        self._by_node.setdefault(node, set()).add(watcher)
        self._node_of[watcher] = node
        return watcher

    def _remove(self, watcher: store_base.Watcher) -> None:
        node = self._node_of.pop(watcher, None)
        group = self._by_node.get(node) if node is not None else None
        if group is not None:
            group.discard(watcher)
            if not group:
                del self._by_node[node]  # type: ignore[arg-type]
        if not self._node_of and _indexes.get((id(self.store), self.prefix)) is self:
            del _indexes[(id(self.store), self.prefix)]
            self._tap.close()
            self._follower.cancel()

    def replay(self, node: str, *, after: int) -> list[store_base.Event]:
        """The recent events after revision `after` that concern node (call only when after >= since)."""
        out = []
        for ev, nodes in reversed(self._recent):
            if ev.revision <= after:
                break
            if nodes is None or node in nodes:
                out.append(ev)
        out.reverse()
        return out

    def _route(self, events: list[store_base.Event]) -> None:
        by_node = self._by_node
        recent = self._recent
        out: dict[store_base.Watcher, list[store_base.Event]] = {}
        for ev in events:
            nodes: frozenset[str] | None
            try:
                new = fieldselectors.pod_node_name(_decoded.get(ev))
                if ev.type != "DELETE" and not ev.created and ev.prev_value is not None:
                    nodes = frozenset((new, fieldselectors.pod_node_name(_decoded.get(ev, prev=True))))
                else:
                    nodes = frozenset((new,))
            except Exception:
                # Unreadable: every watcher gets it and fails on it as it would have without the index.
                nodes = None
            if len(recent) == recent.maxlen:
                self.since = recent[0][0].revision
            recent.append((ev, nodes))
            for node in (by_node if nodes is None else nodes):
                for watcher in by_node.get(node, ()):
                    out.setdefault(watcher, []).append(ev)
        for watcher, batch in out.items():
            watcher.deliver(batch)

    async def _follow(self) -> None:
        error: BaseException | None = None
        try:
            async for _ in self._tap:
                pass
        except asyncio.CancelledError:
            return
        except Exception as exc:
            error = exc
        if _indexes.get((id(self.store), self.prefix)) is self:
            del _indexes[(id(self.store), self.prefix)]
        for watcher in list(self._node_of):
            if error is None:
                watcher.close()
            else:
                watcher.fail(error)


# The store's own limit for a watcher's undelivered events (store_base.StoreSettings.watch_queue_limit).
_QUEUE_LIMIT = store_base.StoreSettings().watch_queue_limit
# Events the node index keeps for replays: minutes of pod churn at the rates a 1000-node cluster sees,
# far more than the few seconds a watch restarted from its pre-deadline bookmark asks for.
_RECENT = 4096
_indexes: dict[tuple[int, str], _NodeIndex] = {}


class _Pinned:
    """A pinned watch: the events after its resourceVersion (from the index's memory or the store's
    history), then the index's live events."""

    def __init__(self, history: Any, live: store_base.Watcher, *, upto: int, node: str,
                 replayed: list[store_base.Event] | None = None) -> None:
        self._history = history
        self._live = live
        self._upto = upto
        self._needle = filters.node_needle(node)
        self._replayed = replayed or None

    @property
    def synced(self) -> bool:
        """Whether everything up to the store's current revision has been (or is queued to be) returned."""
        return self._history is None

    def __aiter__(self) -> _Pinned:
        return self

    async def __anext__(self) -> list[store_base.Event]:
        if self._replayed is not None:
            replayed, self._replayed = self._replayed, None
            return replayed
        if self._history is not None:
            try:
                batch = await self._history.__anext__()
            except StopAsyncIteration:
                batch = []
            # Its first batch is the replayed history, or (when there was none) the marker _open queued
            # (and maybe live events, which the index delivers too). An empty batch tells the watch loop
            # the replay is read, so it may bookmark the current revision.
            self._history.close()
            self._history = None
            # Other nodes' events go unread: the watch loop would decode each only to drop it.
            return [e for e in batch if e.revision <= self._upto and _may_concern(e, self._needle)]
        return await self._live.__anext__()

    def close(self) -> None:
        if self._history is not None:
            self._history.close()
        self._live.close()


def _may_concern(ev: store_base.Event, needle: bytes | None) -> bool:
    """False only when neither the old nor the new pod of ev can be on the needle's node."""
    if needle is None:
        return True
    if needle in ev.value or not ev.value.startswith(b"{"):
        # Values that are not plain JSON (say, encrypted) are left for the decoder to report on.
        return True
    prev = ev.prev_value
    return prev is not None and (needle in prev or not prev.startswith(b"{"))


class _Resumed:
    """A store watcher resuming from an older revision that knows when its replay has been read."""

    def __init__(self, watcher: store_base.Watcher, *, upto: int) -> None:
        self._watcher = watcher
        self._marker: store_base.Event | None = _marker(watcher, upto=upto)
        self.synced = False

    def __aiter__(self) -> _Resumed:
        return self

    async def __anext__(self) -> list[store_base.Event]:
        batch = await self._watcher.__anext__()
        self.synced = True
        if self._marker is not None and any(e is self._marker for e in batch):
            batch = [e for e in batch if e is not self._marker]
            self._marker = None
        return batch

    def close(self) -> None:
        self._watcher.close()


def _marker(watcher: store_base.Watcher, *, upto: int) -> store_base.Event:
    """Queue a no-op event just after upto on a replaying watcher, so an empty replay returns at once
    (with the marker) instead of waiting for the first live event: the replay's end becomes visible."""
    marker = store_base.Event(type="PUT", key=watcher.prefix, value=b"", prev_value=None, revision=upto + 1,
                              create_revision=0, created=False)
    watcher.deliver([marker])
    return marker


def _open(store: Any, prefix: str, *, after_revision: int, node: str | None) -> Any:
    """A store watcher from after_revision, through the node index when the watch is pinned to a node."""
    current = store.current_revision() if _indexable(store) else 0
    if node is None or not _indexable(store):
        watcher = store.watch(prefix, after_revision=after_revision)
        if 0 < after_revision < current:
            return _Resumed(watcher, upto=current)
        return watcher
    index = _indexes.get((id(store), prefix))
    history = replayed = None
    if 0 < after_revision < current:
        if index is not None and after_revision >= index.since:
            replayed = index.replay(node, after=after_revision)
        else:
            history = store.watch(prefix, after_revision=after_revision)
            _marker(history, upto=current)
    if index is None:
        index = _NodeIndex(store, prefix, store.watch(prefix, after_revision=0))
        _indexes[(id(store), prefix)] = index
    return _Pinned(history, index.add(node, live_after=current), upto=current, node=node, replayed=replayed)


def _indexable(store: Any) -> bool:
    # The memory and SQLite stores hand out store_base.Watchers; the encrypting wrapper does not.
    return isinstance(store, store_base.StoreCore)


# Seconds before a watch's deadline its last bookmark is due (kube's cacher: deadline minus 2 s).
_PRE_DEADLINE = 2.0


def _event(kind: str, obj: Any) -> bytes:
    return orjson.dumps({"type": kind, "object": obj}) + b"\n"


def _gone(message: str) -> bytes:
    return _event("ERROR", errors.Gone(message).status())


class _Shaper:
    """Turns stored objects into what this watcher asked for: objects, Tables or metadata."""

    def __init__(self, server: context.Server, call: context.Call) -> None:
        self.server = server
        self.call = call
        acc = render.accept(call)
        self.as_table, _ = negotiate.wants_table(acc)
        self.partial = bool(negotiate.wants_partial_metadata(acc))
        self.first = True

    def __call__(self, obj: dict[str, Any]) -> dict[str, Any]:
        if self.as_table:
            t = render.table(self.server, self.call, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                             headers=self.first)
            self.first = False
            return t
        if self.partial:
            return render.partial(obj)
        return obj

    def bookmark(self, revision: int, *, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(revision), "creationTimestamp": None}
        if initial_end:
            meta["annotations"] = {INITIAL_EVENTS_END: "true"}
        res = self.call.res
        if self.as_table:
            return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": str(revision)},
                    "columnDefinitions": None, "rows": None}
        if self.partial:
            return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
        return {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}


async def handle(server: context.Server, call: context.Call) -> web.StreamResponse:
    res = call.res
    predicate = filters.build(res, call.param("labelSelector"), call.param("fieldSelector"))
    if call.info.name:
        name_pred = _name_predicate(call.info.name)
        predicate = name_pred if predicate is None else (lambda o, a=predicate, b=name_pred: a(o) and b(o))
    rv = call.param("resourceVersion")
    send_initial = call.param("sendInitialEvents")
    if send_initial not in ("", "true", "false"):
        raise errors.BadRequest(f'sendInitialEvents: invalid value "{send_initial}"')
    if send_initial and call.param("resourceVersionMatch") != "NotOlderThan":
        raise errors.Invalid(kind="ListOptions", group="meta.k8s.io", name="", causes=[errors.forbidden(
            "resourceVersionMatch", "sendInitialEvents requires setting resourceVersionMatch to NotOlderThan")])
    bookmarks = call.bool_param("allowWatchBookmarks")
    timeout = call.int_param("timeoutSeconds")
    if timeout is None or timeout <= 0:
        timeout = int(server.min_watch_timeout * (1 + random.random()))

    prefix = objects.list_prefix(res, call.namespace)
    initial: list[dict[str, Any]] = []
    if send_initial == "true" or rv in ("", "0"):
        # Without a resourceVersion a watch starts with the current state as ADDED events.
        result = await server.store.list(prefix)
        start = result.revision
        for entry in result.entries:
            obj = objects.decode(entry.value, entry.mod_revision)
            if predicate is None or predicate(obj):
                initial.append(server.objects.from_storage(res, obj))
    else:
        start = listing.parse_revision(rv)
        if start > server.store.current_revision():
            raise errors.Timeout(f"Too large resource version: {start}, current: {server.store.current_revision()}")
    # A watch from an older revision first replays history; until that is read, only `last` is known covered.
    synced = not 0 < start < server.store.current_revision()
    try:
        watcher = _open(server.store, prefix, after_revision=start,
                        node=filters.pinned_node(res, call.param("fieldSelector")))
    except store_base.Compacted as exc:
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json",
                                                           "Cache-Control": "no-cache, private"})
        await response.prepare(call.request)
        await response.write(_gone(f"too old resource version: {start} ({exc.compacted_revision})"))
        return response

    response = web.StreamResponse(status=200, headers={
        "Content-Type": "application/json", "Cache-Control": "no-cache, private",
        "Transfer-Encoding": "chunked"})
    shape = _Shaper(server, call)
    await response.prepare(call.request)
    try:
        for obj in initial:
            await response.write(_event("ADDED", shape(obj)))
        if send_initial == "true":
            await response.write(_event("BOOKMARK", shape.bookmark(start, initial_end=True)))
        await _stream(server, call, response, watcher, predicate, shape, timeout=timeout,
                      bookmarks=bookmarks, last=start, synced=synced)
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        watcher.close()
    with contextlib.suppress(Exception):
        await response.write_eof()
    return response


def _name_predicate(name: str):  # type: ignore[no-untyped-def]
    return lambda o: (o.get("metadata") or {}).get("name") == name


async def _stream(server: context.Server, call: context.Call, response: web.StreamResponse, watcher: Any,
                  predicate: Any, shape: _Shaper, *, timeout: float, bookmarks: bool, last: int,
                  synced: bool = True) -> None:
    res = call.res
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    # kube's cacheWatcher.nextBookmarkTime: besides the periodic bookmarks, one 2 s before the deadline,
    # so the client resumes from a fresh resourceVersion and its next watch replays almost nothing.
    # None when that moment has passed already (timeouts of 2 s or less).
    closing: float | None = deadline - _PRE_DEADLINE
    if not bookmarks or closing is not None and closing <= loop.time():
        closing = None
    it = watcher.__aiter__()
    while not server.shutting_down:
        now = loop.time()
        remaining = deadline - now
        if remaining <= 0:
            return
        wait = remaining
        if bookmarks:
            wait = min(remaining, server.bookmark_interval)
            # Only once the replay is read: a timeout must not cut a replay short, and the bookmark
            # has to cover every event before it.
            if closing is not None and (synced or getattr(it, "synced", False)):
                wait = min(wait, max(closing - now, 0.0))
        try:
            # A timeout scope, not wait_for: no task per batch for every watcher.
            async with asyncio.timeout(wait):
                batch = await it.__anext__()
        except TimeoutError:
            if bookmarks and deadline - loop.time() > 0:
                await response.write(_event("BOOKMARK", shape.bookmark(max(last, server.store.current_revision()))))
                if closing is not None and loop.time() >= closing:
                    closing = None
            continue
        except StopAsyncIteration:
            return
        except errors.APIError as exc:
            # A value the store cannot read (say, undecryptable) ends the watch with its Status, as kube's
            # etcd watcher does (transformErrorToEvent: an InternalError event), not with 410 Gone.
            await response.write(_event("ERROR", exc.status()))
            return
        except store_base.StoreError:
            await response.write(_gone("the watch fell behind; please re-list"))
            return
        synced = True
        chunks: list[bytes] = []
        for ev in batch:
            last = ev.revision
            new = _decoded.get(ev)
            if ev.type == "DELETE":
                new_match = predicate is None or predicate(new)
                if new_match:
                    chunks.append(_line(server, res, shape, ev, "DELETED", new))
                continue
            new_match = predicate is None or predicate(new)
            if predicate is None:
                old_match = not ev.created
            else:
                old_match = (not ev.created and ev.prev_value is not None
                             and predicate(_decoded.get(ev, prev=True)))
            if new_match:
                chunks.append(_line(server, res, shape, ev, "MODIFIED" if old_match else "ADDED", new))
            elif old_match:
                # the object left the selection: tell the watcher it is gone from its view
                chunks.append(_line(server, res, shape, ev, "DELETED", new))
        if chunks:
            await response.write(b"".join(chunks))


def _line(server: context.Server, res: Any, shape: Any, ev: store_base.Event, kind: str,
          new: dict[str, Any]) -> bytes:
    """The watch line for ev's new value as this watcher sees it."""
    out = shape(server.objects.from_storage(res, new))
    if out is new:
        return _decoded.event(ev, kind, new)
    return _event(kind, out)
