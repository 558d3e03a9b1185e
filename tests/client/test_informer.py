"""Specification of the informer: list, watch, bookmarks, relist on 410 and handler events."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.client import informer, rest

CM = rest.GVR("", "v1", "configmaps")


def cm(name: str, rv: str, ns: str = "ns") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "resourceVersion": rv}}


class FakeClient:
    """Answers list() from `lists` (one list of pages per relist) and watch() from `watches`."""

    def __init__(self, lists: list[list[dict[str, Any]]], watches: list[Any]) -> None:
        self.lists = lists
        self.watches = watches
        self.list_calls: list[dict[str, Any]] = []
        self.watch_calls: list[dict[str, Any]] = []
        self.idle = asyncio.Event()

    async def list(self, gvr, namespace="", **kw):
        self.list_calls.append(kw)
        pages = self.lists[0]
        page = pages[len([c for c in self.list_calls if c.get("continue_")]) % len(pages)] \
            if kw.get("continue_") else pages[0]
        if not page.get("metadata", {}).get("continue"):
            self.lists.pop(0)
        return page

    async def watch(self, gvr, namespace="", **kw):
        self.watch_calls.append(kw)
        if not self.watches:
            self.idle.set()
            await asyncio.Event().wait()
        script = self.watches.pop(0)
        for item in script:
            if isinstance(item, Exception):
                raise item
            yield item


def page(items, rv, cont=""):
    meta = {"resourceVersion": rv}
    if cont:
        meta["continue"] = cont
    return {"items": items, "metadata": meta}


async def _drive(c: clock.FakeClock, fake: FakeClient) -> None:
    """Let time pass on the fake clock until the fake client has no more watch scripts."""
    for _ in range(200):
        if fake.idle.is_set():
            return
        await asyncio.sleep(0)
        c.advance(informer.RETRY_MAX)
    raise AssertionError("informer never went idle")


async def _run_until_idle(inf: informer.Informer, fake: FakeClient) -> None:
    task = asyncio.ensure_future(inf.run())
    try:
        await _drive(inf.clock, fake)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def test_key_of():
    """Keys are namespace/name, or the bare name for cluster-scoped objects."""
    assert informer.key_of(cm("a", "1")) == "ns/a"
    assert informer.key_of({"metadata": {"name": "n"}}) == "n"


async def test_list_then_watch_events_reach_handlers():
    """The first list emits ADDED; watch events update the cache and reach handlers with old and new."""
    fake = FakeClient([[page([cm("a", "1")], "10")]], [[
        ("ADDED", cm("b", "11")), ("MODIFIED", cm("a", "12")), ("DELETED", cm("b", "13")),
        ("BOOKMARK", {"metadata": {"resourceVersion": "20"}})]])
    c = clock.FakeClock()
    inf = informer.Informer(fake, CM, clock=c)
    seen: list[tuple[str, str | None, str | None]] = []
    inf.add_handler(lambda t, old, new: seen.append(
        (t, old and old["metadata"]["resourceVersion"], new and new["metadata"]["resourceVersion"])))
    task = asyncio.ensure_future(inf.run())
    await _drive(c, fake)
    task.cancel()
    assert seen == [("ADDED", None, "1"), ("ADDED", None, "11"), ("MODIFIED", "1", "12"), ("DELETED", "11", None)]
    assert inf.keys() == ["ns/a"] and inf.has_synced
    assert inf.resource_version == "20"
    assert fake.watch_calls[0]["resource_version"] == "10"
    assert fake.watch_calls[0]["allow_bookmarks"] is True
    # after the bookmark the next watch resumes from it
    assert fake.watch_calls[1]["resource_version"] == "20"


async def test_gone_relists_and_diffs():
    """A 410 during watch relists; objects gone from the new list are DELETED, changed ones MODIFIED."""
    fake = FakeClient(
        [[page([cm("a", "1"), cm("b", "2")], "10")], [page([cm("a", "5"), cm("c", "6")], "30")]],
        [[errors.Gone("too old resource version: 10 (25)")]])
    inf = informer.Informer(fake, CM, clock=clock.FakeClock())
    events: list[tuple[str, str]] = []
    inf.add_handler(lambda t, old, new: events.append((t, informer.key_of(new or old))))
    await _run_until_idle(inf, fake)
    assert events == [("ADDED", "ns/a"), ("ADDED", "ns/b"), ("DELETED", "ns/b"), ("MODIFIED", "ns/a"),
                      ("ADDED", "ns/c")]
    assert len(fake.list_calls) == 2
    assert fake.watch_calls[-1]["resource_version"] == "30"


async def test_paginated_list():
    """The list follows continue tokens and caches every page."""
    fake = FakeClient([[page([cm("a", "1")], "10", cont="t1"), page([cm("b", "2")], "10")]], [])
    inf = informer.Informer(fake, CM, metadata_only=True, clock=clock.FakeClock())
    await _run_until_idle(inf, fake)
    assert sorted(inf.keys()) == ["ns/a", "ns/b"]
    assert fake.list_calls[0]["metadata_only"] is True
    assert fake.list_calls[1]["continue_"] == "t1"


async def test_handler_added_late_gets_replay_and_errors_are_contained():
    """A handler registered after sync sees ADDED for cached objects; a raising handler does not break others."""
    fake = FakeClient([[page([cm("a", "1")], "10")]], [[("ADDED", cm("b", "2"))]])
    inf = informer.Informer(fake, CM, clock=clock.FakeClock())

    def bad(t, old, new):
        raise RuntimeError("boom")

    inf.add_handler(bad)
    await _run_until_idle(inf, fake)
    seen: list[str] = []
    inf.add_handler(lambda t, old, new: seen.append(t + " " + informer.key_of(new)))
    assert sorted(seen) == ["ADDED ns/a", "ADDED ns/b"]


async def test_other_errors_back_off_then_retry():
    """A failing watch is retried after a pause on the clock, resuming from the last resourceVersion."""
    c = clock.FakeClock()
    fake = FakeClient([[page([], "10")]], [[errors.InternalError("boom")], [("ADDED", cm("a", "11"))]])
    inf = informer.Informer(fake, CM, clock=c)
    task = asyncio.ensure_future(inf.run())
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(fake.watch_calls) == 1
    await _drive(c, fake)
    task.cancel()
    assert inf.get("ns/a") is not None
    assert [w["resource_version"] for w in fake.watch_calls] == ["10", "10", "11"]


async def test_resync_redelivers_cached_objects():
    """With resync_seconds, every cached object is re-sent as MODIFIED with old == new."""
    c = clock.FakeClock()
    fake = FakeClient([[page([cm("a", "1")], "10")]], [])
    inf = informer.Informer(fake, CM, clock=c, resync_seconds=30)
    seen: list[str] = []
    inf.add_handler(lambda t, old, new: seen.append(t))
    task = asyncio.ensure_future(inf.run())
    await asyncio.wait_for(fake.idle.wait(), 2)
    c.advance(30)
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    assert seen == ["ADDED", "MODIFIED"]
