"""SQLite store specifics: durability, restart, group commit, compaction on disk, crash safety."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from pocketkube.store import base, sqlite

QUIET = base.StoreSettings(compact_interval=3600.0)


@pytest.fixture
async def open_store(tmp_path):
    """Open SQLiteStores on one database file; all are closed at teardown."""
    stores: list[sqlite.SQLiteStore] = []

    async def open_(settings: base.StoreSettings = QUIET) -> sqlite.SQLiteStore:
        store = sqlite.SQLiteStore(tmp_path / "db.sqlite", settings=settings)
        await store.start()
        stores.append(store)
        return store

    yield open_
    for store in stores:
        await store.close()


def rows(path) -> list[tuple]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT id, key, created, deleted, create_revision, prev_revision FROM log "
                            "ORDER BY id").fetchall()


async def test_restart_restores_entries_revision_and_history(open_store):
    """A new store on the same file sees every entry, the revision, the compaction and older versions."""
    s1 = await open_store()
    await s1.create("/a", b"1")  # 1
    await s1.create("/b", b"1")  # 2
    await s1.update("/a", b"2")  # 3
    await s1.delete("/b")  # 4
    await s1.create("/c", b"1")  # 5
    await s1.update("/a", b"3")  # 6
    await s1.compact(3)
    before = await s1.list("/")
    await s1.close()

    s2 = await open_store()
    assert s2.current_revision() == 6
    assert s2.compacted_revision() == 3
    assert await s2.list("/") == before
    assert (await s2.get("/a", revision=4)).value == b"2"
    assert (await s2.get("/b", revision=3)).value == b"1"
    assert await s2.get("/b", revision=4) is None
    with pytest.raises(base.Compacted):
        await s2.get("/a", revision=2)
    assert (await s2.create("/d", b"1")).mod_revision == 7


async def test_revision_never_goes_back_when_compaction_drops_the_newest_row(open_store, tmp_path):
    """Compacting away a trailing deletion keeps the revision counter where it was across a restart."""
    s1 = await open_store()
    await s1.create("/a", b"1")
    await s1.create("/b", b"1")
    await s1.delete("/b")  # 3: the newest row, a deletion
    await s1.compact(3)
    await s1.close()
    assert [r[0] for r in rows(tmp_path / "db.sqlite")] == [1]
    s2 = await open_store()
    assert s2.current_revision() == 3
    assert (await s2.create("/b", b"again")).mod_revision == 4


async def test_watch_replays_history_after_restart(open_store):
    """A watch on a reopened store replays the events written before the restart."""
    s1 = await open_store()
    await s1.create("/w/a", b"1")
    await s1.update("/w/a", b"2")
    await s1.delete("/w/a")
    await s1.close()
    s2 = await open_store()
    watcher = s2.watch("/w/", after_revision=1)
    events = await asyncio.wait_for(anext(watcher), 1)
    assert [(e.type, e.revision, e.value, e.prev_value) for e in events] == [
        ("PUT", 2, b"2", b"1"), ("DELETE", 3, b"2", b"2")]
    watcher.close()


async def test_compaction_removes_superseded_rows_from_disk(open_store, tmp_path):
    """compact(r) deletes rows superseded at r and deletions at or below r; later rows stay."""
    store = await open_store()
    await store.create("/a", b"1")  # 1
    await store.update("/a", b"2")  # 2
    await store.create("/b", b"1")  # 3
    await store.delete("/b")  # 4
    await store.update("/a", b"3")  # 5
    await store.compact(4)
    assert [r[0] for r in rows(tmp_path / "db.sqlite")] == [2, 5]
    await store.compact(5)
    assert [r[0] for r in rows(tmp_path / "db.sqlite")] == [5]
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("SELECT value FROM meta WHERE name = 'compacted_revision'").fetchone() == (5,)


async def test_watch_fails_if_compaction_overtakes_its_replay(open_store):
    """A watch whose history is compacted before it is read raises Compacted from iteration."""
    store = await open_store()
    for i in range(5):
        await store.create(f"/k/{i}", b"v")
    watcher = store.watch("/k/", after_revision=2)
    await store.compact(4)
    with pytest.raises(base.Compacted):
        await anext(watcher)
    assert watcher.closed


async def test_database_rejects_lost_update(open_store, tmp_path):
    """Two rows built on the same previous revision of a key are refused by the unique index."""
    store = await open_store()
    await store.create("/a", b"1")
    await store.update("/a", b"2")
    with sqlite3.connect(tmp_path / "db.sqlite") as conn, pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO log (id, key, created, deleted, create_revision, prev_revision, value) "
                     "VALUES (99, '/a', 0, 0, 1, 1, x'00')")


async def test_database_is_wal_with_full_sync(open_store, tmp_path):
    """The file is in WAL mode and the store writes with synchronous=FULL."""
    await open_store()
    with sqlite3.connect(tmp_path / "db.sqlite") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert sqlite._connect(str(tmp_path / "db.sqlite")).execute("PRAGMA synchronous").fetchone() == (2,)


async def test_reads_see_only_committed_writes(open_store, tmp_path):
    """While a write waits to commit, reads, list, count and the revision do not show it."""
    store = await open_store()
    await store.create("/a", b"1")
    blocker = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the writer thread must wait
    try:
        pending = asyncio.create_task(store.create("/b", b"1"))
        await asyncio.sleep(0.05)
        assert not pending.done()
        assert await store.get("/b") is None
        assert await store.count("/") == 1
        assert store.current_revision() == 1
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert (await asyncio.wait_for(pending, 5)).mod_revision == 2
    assert (await store.get("/b")).value == b"1"


async def test_concurrent_writers_share_commits(open_store):
    """32 concurrent writers are group-committed in far fewer transactions than writes."""
    store = await open_store()
    before = store.commits

    async def writer(n: int) -> None:
        for i in range(10):
            await store.create(f"/g/{n}/{i}", b"v")

    await asyncio.gather(*(writer(n) for n in range(32)))
    assert await store.count("/g/") == 320
    assert store.current_revision() == 320
    assert store.commits - before < 320 // 4


async def test_close_finishes_queued_writes(open_store):
    """Writes submitted before close() are committed and acknowledged."""
    store = await open_store()
    tasks = [asyncio.create_task(store.create(f"/q/{i}", b"v")) for i in range(50)]
    await asyncio.sleep(0)
    await store.close()
    assert all(e.mod_revision > 0 for e in await asyncio.gather(*tasks))
    reopened = await open_store()
    assert await reopened.count("/q/") == 50


async def test_list_of_2000_current_entries_is_fast(open_store):
    """Listing 2000 entries at the current revision is served from memory well under 10 ms."""
    store = await open_store()
    await asyncio.gather(*(store.create(f"/l/{i:05d}", b"x" * 300) for i in range(2000)))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        result = await store.list("/l/")
        best = min(best, time.perf_counter() - t)
    assert len(result.entries) == 2000
    assert best < 0.1  # 10x headroom: not a benchmark


_CRASH_WRITER = textwrap.dedent("""
    import asyncio, sys
    from pocketkube.store import sqlite

    async def main():
        store = sqlite.SQLiteStore(sys.argv[1])
        await store.start()

        async def writer(n):
            i = 0
            while True:
                key = f"/crash/{n}/{i}"
                e = await store.create(key, b"c%d" % i)
                print(e.mod_revision, key, "c%d" % i, flush=True)
                e = await store.update(key, b"u%d" % i, expected_revision=e.mod_revision)
                print(e.mod_revision, key, "u%d" % i, flush=True)
                i += 1

        await asyncio.gather(*(writer(n) for n in range(8)))

    asyncio.run(main())
""")


async def test_every_acknowledged_write_survives_sigkill(tmp_path):
    """A writer killed with SIGKILL leaves a sound database holding every write it acknowledged."""
    path = tmp_path / "crash.sqlite"
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=root)
    proc = subprocess.Popen([sys.executable, "-c", _CRASH_WRITER, str(path)], stdout=subprocess.PIPE,
                            env=env, text=True)
    acked = []
    try:
        deadline = time.monotonic() + 10
        while len(acked) < 400 and time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            if not line:
                break
            acked.append(line)
        os.kill(proc.pid, signal.SIGKILL)
        rest = await asyncio.to_thread(proc.stdout.read)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    acked.extend(rest.splitlines())
    acks = [line.split() for line in acked if len(line.split()) == 3]
    assert len(acks) >= 400

    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    store = sqlite.SQLiteStore(path, settings=QUIET)
    await store.start()
    try:
        assert store.current_revision() >= max(int(rev) for rev, _, _ in acks)
        for rev, key, value in acks:
            entry = await store.get(key, revision=int(rev))
            assert entry is not None and (entry.mod_revision, entry.value) == (int(rev), value.encode())
        # The log has no holes: every revision up to the current one is there.
        assert [r[0] for r in rows(path)] == list(range(1, store.current_revision() + 1))
    finally:
        await store.close()


async def test_a_file_that_is_not_a_database_is_refused(tmp_path):
    """Opening a file that is not SQLite raises StoreError instead of a raw sqlite3 error."""
    path = tmp_path / "junk.sqlite"
    path.write_bytes(b"not a database at all" * 100)
    store = sqlite.SQLiteStore(path)
    with pytest.raises(base.StoreError):
        await store.start()
    await store.close()
