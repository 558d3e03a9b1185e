"""The Store contract, run against both the memory and the SQLite backend."""

from __future__ import annotations

import asyncio

import pytest

from pocketkube.store import base, memory, sqlite

QUIET = base.StoreSettings(compact_interval=3600.0)  # no automatic compaction unless a test asks


@pytest.fixture(params=["memory", "sqlite"])
async def make_store(request, tmp_path):
    """A factory of started stores of the parametrized backend; all are closed at teardown."""
    stores: list = []

    async def make(settings: base.StoreSettings = QUIET):
        if request.param == "memory":
            store = memory.MemoryStore(settings=settings)
        else:
            store = sqlite.SQLiteStore(tmp_path / f"db{len(stores)}.sqlite", settings=settings)
        stores.append(store)
        await store.start()
        return store

    yield make
    for store in stores:
        await store.close()


@pytest.fixture
async def store(make_store):
    return await make_store()


async def take(watcher: base.Watcher, n: int, timeout: float = 2.0) -> list[base.Event]:
    """Read batches until at least n events arrived."""
    events: list[base.Event] = []
    async with asyncio.timeout(timeout):
        while len(events) < n:
            events.extend(await anext(watcher))
    return events


async def nothing_more(watcher: base.Watcher) -> None:
    """Assert no further batch arrives promptly."""
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.05):
            await anext(watcher)


def keys(entries: list[base.Entry]) -> list[str]:
    return [e.key for e in entries]


# ---- create / get / update / delete ---------------------------------------------------------

async def test_create_assigns_next_revision_and_get_returns_it(store):
    """A create gets the next revision as both create and mod revision, and get returns it."""
    assert store.current_revision() == 0
    e = await store.create("/a/x", b"1")
    assert e == base.Entry(key="/a/x", value=b"1", create_revision=1, mod_revision=1)
    assert store.current_revision() == 1
    assert await store.get("/a/x") == e
    assert await store.get("/a/missing") is None


async def test_every_write_takes_exactly_one_revision(store):
    """Creates, updates and deletes each advance the global revision by one."""
    revs = [(await store.create("/k1", b"a")).mod_revision,
            (await store.create("/k2", b"a")).mod_revision,
            (await store.update("/k1", b"b")).mod_revision,
            (await store.delete("/k2")).mod_revision,
            (await store.create("/k2", b"c")).mod_revision]
    assert revs == [1, 2, 3, 4, 5]
    assert store.current_revision() == 5


async def test_create_of_live_key_is_refused(store):
    """Creating a key that exists raises KeyExists and writes nothing."""
    await store.create("/a/x", b"1")
    with pytest.raises(base.KeyExists):
        await store.create("/a/x", b"2")
    assert store.current_revision() == 1
    assert (await store.get("/a/x")).value == b"1"


async def test_update_keeps_create_revision(store):
    """An unconditional update bumps mod_revision and keeps create_revision."""
    await store.create("/a/x", b"1")
    e = await store.update("/a/x", b"2")
    assert (e.create_revision, e.mod_revision, e.value) == (1, 2, b"2")
    assert await store.get("/a/x") == e


async def test_conditional_update_succeeds_on_matching_revision(store):
    """An update whose expected_revision is the live mod_revision succeeds."""
    e1 = await store.create("/a/x", b"1")
    e2 = await store.update("/a/x", b"2", expected_revision=e1.mod_revision)
    assert e2.mod_revision == 2


async def test_conditional_update_on_stale_revision_reports_current(store):
    """A stale expected_revision raises RevisionMismatch carrying the live entry."""
    e1 = await store.create("/a/x", b"1")
    e2 = await store.update("/a/x", b"2")
    with pytest.raises(base.RevisionMismatch) as info:
        await store.update("/a/x", b"3", expected_revision=e1.mod_revision)
    assert info.value.current == e2
    assert store.current_revision() == 2


@pytest.mark.parametrize("op", ["update", "update-conditional", "delete", "delete-conditional"])
async def test_writes_to_missing_key_raise_key_not_found(store, op):
    """update and delete of a key that is not live raise KeyNotFound, conditional or not."""
    await store.create("/gone", b"1")
    await store.delete("/gone")
    for key in ("/never", "/gone"):
        with pytest.raises(base.KeyNotFound):
            if op.startswith("update"):
                await store.update(key, b"x", expected_revision=1 if op.endswith("conditional") else 0)
            else:
                await store.delete(key, expected_revision=1 if op.endswith("conditional") else 0)
    assert store.current_revision() == 2


async def test_delete_returns_last_value_at_delete_revision(store):
    """delete returns the last live value with mod_revision set to the delete's revision."""
    await store.create("/a/x", b"1")
    await store.update("/a/x", b"2")
    gone = await store.delete("/a/x")
    assert gone == base.Entry(key="/a/x", value=b"2", create_revision=1, mod_revision=3)
    assert await store.get("/a/x") is None
    assert await store.count("/a/") == 0


async def test_conditional_delete_on_stale_revision_is_refused(store):
    """A delete with a stale expected_revision raises RevisionMismatch and keeps the key."""
    await store.create("/a/x", b"1")
    await store.update("/a/x", b"2")
    with pytest.raises(base.RevisionMismatch):
        await store.delete("/a/x", expected_revision=1)
    assert (await store.delete("/a/x", expected_revision=2)).mod_revision == 3


async def test_recreate_after_delete_starts_a_new_lifetime(store):
    """A deleted key can be created again; it gets a fresh create_revision."""
    await store.create("/a/x", b"1")
    await store.delete("/a/x")
    e = await store.create("/a/x", b"again")
    assert (e.create_revision, e.mod_revision) == (3, 3)


async def test_values_must_be_bytes(store):
    """A str value is refused rather than stored with another type."""
    with pytest.raises(base.StoreError):
        await store.create("/a/x", "text")  # type: ignore[arg-type]


async def test_concurrent_creates_of_one_key_admit_exactly_one(store):
    """Of many concurrent creates of the same key exactly one wins."""
    results = await asyncio.gather(*(store.create("/race", b"%d" % i) for i in range(20)),
                                   return_exceptions=True)
    assert sum(isinstance(r, base.Entry) for r in results) == 1
    assert all(isinstance(r, base.KeyExists) for r in results if not isinstance(r, base.Entry))


async def test_concurrent_compare_and_swap_admits_exactly_one(store):
    """Of many updates based on the same revision exactly one wins: no lost update."""
    e = await store.create("/cas", b"0")
    results = await asyncio.gather(
        *(store.update("/cas", b"%d" % i, expected_revision=e.mod_revision) for i in range(20)),
        return_exceptions=True)
    winners = [r for r in results if isinstance(r, base.Entry)]
    assert len(winners) == 1
    assert await store.get("/cas") == winners[0]


# ---- list / count ---------------------------------------------------------------------------

async def test_list_is_sorted_and_respects_prefix(store):
    """list returns live keys with the prefix, sorted; a sibling prefix does not leak in."""
    for k in ["/a/c", "/a/a", "/ab", "/a/b", "/b/a"]:
        await store.create(k, b"v")
    await store.delete("/a/b")
    result = await store.list("/a/")
    assert keys(result.entries) == ["/a/a", "/a/c"]
    assert (result.revision, result.more, result.remaining) == (6, False, 0)
    assert await store.count("/a/") == 2
    assert await store.count("/") == 4
    assert keys((await store.list("")).entries) == ["/a/a", "/a/c", "/ab", "/b/a"]


@pytest.mark.parametrize(("start_after", "limit", "want", "remaining"), [
    ("", 2, ["/p/0", "/p/1"], 3),
    ("/p/1", 2, ["/p/2", "/p/3"], 1),
    ("/p/3", 2, ["/p/4"], 0),
    ("/p/4", 2, [], 0),
    ("/p/1", 0, ["/p/2", "/p/3", "/p/4"], 0),
    ("/p/10", 1, ["/p/2"], 2),  # start_after need not be an existing key
])
async def test_list_pages(store, start_after, limit, want, remaining):
    """start_after and limit select one page; more/remaining tell what is left after it."""
    for i in range(5):
        await store.create(f"/p/{i}", b"v")
    await store.create("/q/0", b"v")
    result = await store.list("/p/", start_after=start_after, limit=limit)
    assert keys(result.entries) == want
    assert (result.more, result.remaining) == (remaining > 0, remaining)


async def test_paging_at_fixed_revision_ignores_later_writes(store):
    """Pages read at the first page's revision show that revision even while writes continue."""
    for i in range(6):
        await store.create(f"/p/{i}", b"v%d" % i)
    first = await store.list("/p/", limit=2)
    await store.create("/p/25", b"new")
    await store.delete("/p/3")
    await store.update("/p/4", b"changed")
    await store.create("/p/9", b"new")
    pages = [first]
    while pages[-1].more:
        pages.append(await store.list("/p/", revision=first.revision, start_after=pages[-1].entries[-1].key,
                                      limit=2))
    seen = [e for page in pages for e in page.entries]
    assert [(e.key, e.value) for e in seen] == [(f"/p/{i}", b"v%d" % i) for i in range(6)]
    assert [p.remaining for p in pages] == [4, 2, 0]
    assert all(p.revision == 6 for p in pages)
    now = await store.list("/p/")
    assert keys(now.entries) == ["/p/0", "/p/1", "/p/2", "/p/25", "/p/4", "/p/5", "/p/9"]


async def test_historical_get_sees_each_version(store):
    """get at a past revision returns the version live then, or None before creation and after deletion."""
    await store.create("/x", b"1")  # 1
    await store.create("/other", b"o")  # 2
    await store.update("/x", b"2")  # 3
    await store.delete("/x")  # 4
    await store.create("/x", b"3")  # 5
    await store.create("/other2", b"o")  # 6
    want = {1: b"1", 2: b"1", 3: b"2", 4: None, 5: b"3", 6: b"3"}
    for rev, value in want.items():
        got = await store.get("/x", revision=rev)
        assert (got.value if got else None) == value, rev
    assert (await store.get("/x", revision=3)).mod_revision == 3
    assert (await store.get("/x", revision=2)).create_revision == 1


async def test_historical_list_matches_snapshots(store):
    """list at each past revision equals the list taken when that revision was current."""
    snapshots = {}
    script = [("c", "/s/a"), ("c", "/s/b"), ("u", "/s/a"), ("c", "/t/x"), ("d", "/s/b"), ("c", "/s/c"),
              ("c", "/s/b"), ("u", "/s/c"), ("d", "/s/a")]
    for op, key in script:
        if op == "c":
            await store.create(key, key.encode())
        elif op == "u":
            await store.update(key, b"u" + key.encode())
        else:
            await store.delete(key)
        snapshots[store.current_revision()] = (await store.list("/s/")).entries
    for rev, entries in snapshots.items():
        result = await store.list("/s/", revision=rev)
        assert result.entries == entries, rev
        assert result.revision == rev
        page = await store.list("/s/", revision=rev, limit=1)
        assert page.entries == entries[:1] and page.remaining == max(0, len(entries) - 1)


async def test_future_revision_is_refused(store):
    """Reads at a revision the store has not reached raise FutureRevision."""
    await store.create("/x", b"1")
    with pytest.raises(base.FutureRevision):
        await store.get("/x", revision=5)
    with pytest.raises(base.FutureRevision):
        await store.list("/", revision=5)


# ---- compaction -----------------------------------------------------------------------------

async def test_compaction_refuses_older_reads_and_keeps_live_state(store):
    """After compact(r) reads below r raise Compacted; at r and later they still see the right state."""
    await store.create("/old", b"kept")  # 1, never touched again
    await store.create("/x", b"1")  # 2
    await store.update("/x", b"2")  # 3
    await store.create("/y", b"y")  # 4
    await store.delete("/y")  # 5
    await store.update("/x", b"3")  # 6
    await store.compact(4)
    assert store.compacted_revision() == 4
    with pytest.raises(base.Compacted) as info:
        await store.get("/x", revision=3)
    assert (info.value.compacted_revision, info.value.current_revision) == (4, 6)
    with pytest.raises(base.Compacted):
        await store.list("/", revision=2)
    assert (await store.get("/x", revision=4)).value == b"2"
    assert keys((await store.list("/", revision=4)).entries) == ["/old", "/x", "/y"]
    assert keys((await store.list("/", revision=5)).entries) == ["/old", "/x"]
    assert (await store.get("/old")).value == b"kept"
    await store.compact(6)
    assert (await store.get("/old", revision=6)).mod_revision == 1
    assert [(e.key, e.value) for e in (await store.list("/", revision=6)).entries] == [
        ("/old", b"kept"), ("/x", b"3")]
    await store.compact(5)  # below the compacted revision: nothing to do
    assert store.compacted_revision() == 6
    with pytest.raises(base.FutureRevision):
        await store.compact(7)


async def test_watch_older_than_compaction_is_refused_synchronously(store):
    """watch from a revision below the compacted one raises Compacted at once; from it, it replays."""
    for i in range(5):
        await store.create(f"/w/{i}", b"v")
    await store.compact(3)
    with pytest.raises(base.Compacted):
        store.watch("/w/", after_revision=2)
    watcher = store.watch("/w/", after_revision=3)
    assert [e.revision for e in await take(watcher, 2)] == [4, 5]
    watcher.close()


async def test_automatic_compaction_keeps_a_window(make_store):
    """The background compactor drops history older than history_revisions (with no time window asked for)."""
    store = await make_store(base.StoreSettings(history_revisions=3, history_seconds=0, compact_interval=0.01))
    for i in range(10):
        await store.create(f"/k/{i}", b"v")
    async with asyncio.timeout(2):
        while store.compacted_revision() < 7:
            await asyncio.sleep(0.01)
    assert store.compacted_revision() == 7
    assert await store.count("/k/") == 10
    with pytest.raises(base.Compacted):
        await store.get("/k/0", revision=6)


# ---- watch ----------------------------------------------------------------------------------

async def test_watch_from_now_sees_live_events_with_full_fields(store):
    """A watch from revision 0 sees only later writes, each with type, values and revisions."""
    await store.create("/w/before", b"0")
    watcher = store.watch("/w/", after_revision=0)
    await store.create("/w/a", b"1")
    await store.update("/w/a", b"2")
    await store.delete("/w/a")
    await store.create("/w/a", b"3")
    events = await take(watcher, 4)
    assert events == [
        base.Event(type="PUT", key="/w/a", value=b"1", prev_value=None, revision=2, create_revision=2,
                   created=True),
        base.Event(type="PUT", key="/w/a", value=b"2", prev_value=b"1", revision=3, create_revision=2,
                   created=False),
        base.Event(type="DELETE", key="/w/a", value=b"2", prev_value=b"2", revision=4, create_revision=2,
                   created=False),
        base.Event(type="PUT", key="/w/a", value=b"3", prev_value=None, revision=5, create_revision=5,
                   created=True),
    ]
    await nothing_more(watcher)
    watcher.close()


async def test_replayed_history_equals_live_events(store):
    """Events replayed from history are identical to the ones live watchers saw."""
    live = store.watch("/", after_revision=0)
    await store.create("/r/a", b"1")
    await store.create("/r/b", b"1")
    await store.update("/r/a", b"2")
    await store.delete("/r/b")
    await store.create("/r/b", b"3")
    seen = await take(live, 5)
    replay = store.watch("/", after_revision=1)
    assert await take(replay, 4) == seen[1:]
    live.close()
    replay.close()


async def test_watch_replays_then_continues_live_without_gap_or_duplicate(store):
    """A watch from a past revision yields history then live events, consecutive and in order."""
    for i in range(10):
        await store.create(f"/w/{i}", b"v")
    watcher = store.watch("/w/", after_revision=4)

    async def writer():
        for i in range(10, 30):
            await store.create(f"/w/{i}", b"v")
            if i % 3 == 0:
                await asyncio.sleep(0)

    task = asyncio.create_task(writer())
    events = await take(watcher, 26)
    await task
    assert [e.revision for e in events] == list(range(5, 31))
    assert [e.key for e in events] == [f"/w/{i}" for i in range(4, 30)]
    await nothing_more(watcher)
    watcher.close()


async def test_watch_filters_by_prefix(store):
    """A watcher only sees keys under its prefix, in replay and live."""
    await store.create("/a/1", b"v")
    await store.create("/ab/1", b"v")
    watcher = store.watch("/a/", after_revision=0)
    replaying = store.watch("/a/", after_revision=1)
    await store.create("/b/1", b"v")
    await store.create("/a/2", b"v")
    assert [e.key for e in await take(watcher, 1)] == ["/a/2"]
    assert [(e.key, e.revision) for e in await take(replaying, 1)] == [("/a/2", 4)]
    await nothing_more(watcher)
    watcher.close()
    replaying.close()


async def test_watch_from_future_revision_waits_for_it(store):
    """A watch from a revision not reached yet skips events up to that revision."""
    await store.create("/f/0", b"v")
    watcher = store.watch("/f/", after_revision=3)
    for i in range(1, 5):
        await store.create(f"/f/{i}", b"v")
    assert [e.revision for e in await take(watcher, 2)] == [4, 5]
    watcher.close()


async def test_closing_a_watcher_ends_iteration(store):
    """close() ends a watcher's iteration, also while a reader waits on it."""
    watcher = store.watch("/", after_revision=0)

    async def drain():
        return [batch async for batch in watcher]

    task = asyncio.create_task(drain())
    await asyncio.sleep(0.01)
    watcher.close()
    assert await asyncio.wait_for(task, 1) == []
    assert watcher.closed
    await store.create("/after", b"v")  # a closed watcher is gone from the fan-out


async def test_slow_watcher_is_dropped_with_an_error(make_store):
    """A watcher whose undelivered events exceed the limit is closed and raises a StoreError."""
    store = await make_store(base.StoreSettings(compact_interval=3600.0, watch_queue_limit=5))
    slow = store.watch("/", after_revision=0)
    fast = store.watch("/", after_revision=0)
    for i in range(8):
        await store.create(f"/k/{i}", b"v")
        await take(fast, 1)
    assert slow.closed
    with pytest.raises(base.WatchOverflow):
        await anext(slow)
    with pytest.raises(StopAsyncIteration):
        await anext(slow)
    assert not fast.closed


async def test_closing_the_store_ends_watches_and_refuses_calls(make_store):
    """After close(), watchers end and every call raises StoreClosed."""
    store = await make_store()
    watcher = store.watch("/", after_revision=0)
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await anext(watcher)
    with pytest.raises(base.StoreClosed):
        await store.create("/x", b"v")
    with pytest.raises(base.StoreClosed):
        await store.get("/x")
    with pytest.raises(base.StoreClosed):
        store.watch("/", after_revision=0)
