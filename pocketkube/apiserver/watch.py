"""The watch verb: a streamed sequence of ADDED/MODIFIED/DELETED/BOOKMARK/ERROR events."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
from typing import Any

import orjson
from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import context, filters, listing, negotiate, objects, render
from pocketkube.store import base as store_base

INITIAL_EVENTS_END = "k8s.io/initial-events-end"


class _DecodeCache:
    """Decoded event objects shared by every watcher: one write is decoded once, not once per watcher.

    Watchers only read these objects (shaping builds new dicts), so sharing is safe."""

    def __init__(self, size: int = 4096) -> None:
        self._items: collections.OrderedDict[tuple[int, str, bool], dict[str, Any]] = collections.OrderedDict()
        self._size = size

    def get(self, ev: Any, *, prev: bool = False) -> dict[str, Any]:
        key = (ev.revision, ev.key, prev)
        obj = self._items.get(key)
        if obj is None:
            obj = objects.decode(ev.prev_value if prev else ev.value, ev.revision)
            self._items[key] = obj
            if len(self._items) > self._size:
                self._items.popitem(last=False)
        return obj


_decoded = _DecodeCache()


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
    try:
        watcher = server.store.watch(prefix, after_revision=start)
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
                      bookmarks=bookmarks, last=start)
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
                  predicate: Any, shape: _Shaper, *, timeout: float, bookmarks: bool, last: int) -> None:
    res = call.res
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    it = watcher.__aiter__()
    while not server.shutting_down:
        remaining = deadline - loop.time()
        if remaining <= 0:
            return
        wait = min(remaining, server.bookmark_interval) if bookmarks else remaining
        try:
            batch = await asyncio.wait_for(it.__anext__(), timeout=wait)
        except TimeoutError:
            if bookmarks and deadline - loop.time() > 0:
                await response.write(_event("BOOKMARK", shape.bookmark(max(last, server.store.current_revision()))))
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
        chunks: list[bytes] = []
        for ev in batch:
            last = ev.revision
            new = _decoded.get(ev)
            if ev.type == "DELETE":
                new_match = predicate is None or predicate(new)
                if new_match:
                    chunks.append(_event("DELETED", shape(server.objects.from_storage(res, new))))
                continue
            new_match = predicate is None or predicate(new)
            if predicate is None:
                old_match = not ev.created
            else:
                old_match = (not ev.created and ev.prev_value is not None
                             and predicate(_decoded.get(ev, prev=True)))
            if new_match:
                kind = "MODIFIED" if old_match else "ADDED"
                chunks.append(_event(kind, shape(server.objects.from_storage(res, new))))
            elif old_match:
                # the object left the selection: tell the watcher it is gone from its view
                chunks.append(_event("DELETED", shape(server.objects.from_storage(res, new))))
        if chunks:
            await response.write(b"".join(chunks))
