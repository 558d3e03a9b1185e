"""Watch restarts: pinned replays from the node index's memory, and the bookmark due just before the deadline."""

from __future__ import annotations

import types
from typing import Any

import orjson
import pytest

from pocketkube.apiserver import filters, watch
from tests.apiserver import harness

PREFIX = "/registry/core/pods/"


_pod = harness.pod_bytes




async def _lines(store: Any, watcher: Any, selector: str, *, timeout: float = 0.3, bookmarks: bool = False,
                 synced: bool = True) -> list[tuple[str, str, str]]:
    """Run the real watch loop over a watcher: (type, name, resourceVersion) of each line it sends."""
    res = types.SimpleNamespace(group="", kind="Pod", api_version="v1")
    server = types.SimpleNamespace(shutting_down=False, bookmark_interval=60.0, store=store,
                                   objects=types.SimpleNamespace(from_storage=lambda r, o: o))
    call = types.SimpleNamespace(res=res)
    # A plain-object shaper, built without the request its constructor reads the Accept header of.
    shaper = watch._Shaper.__new__(watch._Shaper)
    shaper.server, shaper.call, shaper.as_table, shaper.partial = server, call, False, False  # type: ignore[assignment]
    response = harness.Response()
    predicate = filters.build(res, "", selector)  # type: ignore[arg-type]
    await watch._stream(server, call, response, watcher, predicate, shaper,  # type: ignore[arg-type]
                        timeout=timeout, bookmarks=bookmarks, last=0, synced=synced)
    watcher.close()
    out = []
    for line in b"".join(response.chunks).splitlines():
        ev = orjson.loads(line)
        out.append((ev["type"], ev["object"]["metadata"].get("name", ""), ev["object"]["metadata"]["resourceVersion"]))
    return out


async def _churn(store: Any) -> None:
    """Pods binding to, changing on, leaving and being deleted from node-a and node-b."""
    k = PREFIX + "default/"
    await store.create(k + "p2", _pod("p2", "node-a"))
    await store.update(k + "p1", _pod("p1", "node-a"))  # bound: enters node-a's view
    await store.update(k + "p1", _pod("p1", "node-a", "Running"))
    await store.create(k + "p3", _pod("p3", "node-b", nodeSelector={"hostname": "node-a"}))
    await store.update(k + "p3", _pod("p3", "node-b", "Running", nodeSelector={"hostname": "node-a"}))
    await store.update(k + "p2", _pod("p2", "node-b"))  # leaves node-a's view: DELETED there
    await store.delete(k + "p1")
    await store.delete(k + "p3")
    await store.create(k + "p4", _pod("p4", ""))
    await store.create("/registry/core/configmaps/default/c", b"{}")  # moves the revision past the pods


@pytest.mark.parametrize("selector,node", [
    ("spec.nodeName=node-a", "node-a"),
    ("spec.nodeName=node-b", "node-b"),
    ("spec.nodeName=", ""),
    ("spec.nodeName=node-a,status.phase=Running", "node-a"),
])
@pytest.mark.parametrize("recent", [4096, 3])
async def test_restart_replays_what_a_plain_watch_sends(store: Any, monkeypatch: pytest.MonkeyPatch,
                                                        selector: str, node: str, recent: int) -> None:
    """A pinned watch resumed from a recent revision (from memory) or an evicted one (from the store) sends
    exactly what an unindexed watch from that revision sends."""
    monkeypatch.setattr(watch, "_RECENT", recent)
    await store.create(PREFIX + "default/p1", _pod("p1"))
    holder = watch._open(store, PREFIX, after_revision=store.current_revision(), node="node-z")
    start = store.current_revision()
    await _churn(store)
    plain = store.watch(PREFIX, after_revision=start)
    pinned = watch._open(store, PREFIX, after_revision=start, node=node)
    assert pinned.synced is (recent > 10)  # from memory it has nothing left to read from the store
    want = await _lines(store, plain, selector)
    got = await _lines(store, pinned, selector)
    assert got == want
    assert want
    holder.close()
    assert not watch._indexes


async def test_replay_from_memory_skips_other_nodes(store: Any) -> None:
    """Only events whose old or new pod is on the watcher's node are replayed to it."""
    await store.create("/registry/core/configmaps/default/c0", b"{}")  # revision 0 would mean "from now"
    holder = watch._open(store, PREFIX, after_revision=store.current_revision(), node="node-z")
    start = store.current_revision()
    for i in range(50):
        await store.create(PREFIX + f"default/b{i}", _pod(f"b{i}", "node-b"))
    await store.create(PREFIX + "default/a", _pod("a", "node-a"))
    pinned = watch._open(store, PREFIX, after_revision=start, node="node-a")
    assert [e.key for e in await pinned.__anext__()] == [PREFIX + "default/a"]
    pinned.close()
    holder.close()


async def test_replay_from_the_store_skips_other_nodes_undecoded(store: Any, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    """Without the index's memory, the store's history is filtered on the raw bytes before any decoding."""
    await store.create("/registry/core/configmaps/default/c0", b"{}")  # revision 0 would mean "from now"
    start = store.current_revision()
    await store.create("/registry/core/configmaps/default/c", b"{}")
    for i in range(20):
        await store.create(PREFIX + f"default/b{i}", _pod(f"b{i}", "node-b"))
    await store.create(PREFIX + "default/a", _pod("a", "node-a"))
    await store.create(PREFIX + "default/x", b"not json")  # unreadable: left for the decoder to report
    decoded: list[bytes] = []
    real = watch.objects.decode

    def spy(value: bytes, revision: int) -> dict[str, Any]:
        decoded.append(value)
        return real(value, revision)

    monkeypatch.setattr(watch.objects, "decode", spy)
    pinned = watch._open(store, PREFIX, after_revision=start, node="node-a")
    assert not pinned.synced
    batch = await pinned.__anext__()
    assert [e.key for e in batch] == [PREFIX + "default/a", PREFIX + "default/x"]
    assert pinned.synced
    pinned.close()
    assert not any(b'"node-b"' in v for v in decoded)


@pytest.mark.parametrize("timeout,want", [(0.6, True), (0.15, False)])
async def test_bookmark_before_the_deadline(store: Any, monkeypatch: pytest.MonkeyPatch, timeout: float,
                                            want: bool) -> None:
    """A bookmarking watch gets one bookmark at the current revision shortly before its deadline, unless the
    timeout is shorter than that lead."""
    monkeypatch.setattr(watch, "_PRE_DEADLINE", 0.2)
    await store.create(PREFIX + "default/a", _pod("a", "node-a"))
    await store.create("/registry/core/configmaps/default/c", b"{}")
    pinned = watch._open(store, PREFIX, after_revision=store.current_revision(), node="node-a")
    lines = await _lines(store, pinned, "spec.nodeName=node-a", timeout=timeout, bookmarks=True)
    assert lines == ([("BOOKMARK", "", str(store.current_revision()))] if want else [])


async def test_no_bookmark_while_the_replay_is_unread(store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A watch whose replay was not read cannot vouch for the current revision: no early bookmark."""
    monkeypatch.setattr(watch, "_PRE_DEADLINE", 0.2)
    await store.create("/registry/core/configmaps/default/c0", b"{}")  # revision 0 would mean "from now"
    start = store.current_revision()
    await store.create("/registry/core/configmaps/default/c", b"{}")  # history with no pod in it
    plain = store.watch(PREFIX, after_revision=start)
    assert await _lines(store, plain, "", timeout=0.5, bookmarks=True, synced=False) == []


@pytest.mark.parametrize("node", [None, "node-a"])
async def test_resumed_watch_with_empty_replay_bookmarks(store: Any, monkeypatch: pytest.MonkeyPatch,
                                                         node: str | None) -> None:
    """A watch resumed from a revision with nothing of its own since still gets its pre-deadline bookmark,
    at the current revision, whether it replays from the store (plain or pinned) or not."""
    monkeypatch.setattr(watch, "_PRE_DEADLINE", 0.2)
    await store.create("/registry/core/configmaps/default/c0", b"{}")  # revision 0 would mean "from now"
    start = store.current_revision()
    await store.create("/registry/core/configmaps/default/c", b"{}")
    resumed = watch._open(store, PREFIX, after_revision=start, node=node)
    assert not resumed.synced
    lines = await _lines(store, resumed, "spec.nodeName=node-a" if node else "", timeout=0.6, bookmarks=True,
                         synced=False)
    assert lines == [("BOOKMARK", "", str(store.current_revision()))]
