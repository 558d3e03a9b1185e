"""Durable revisioned store on SQLite: a kine-like append-only log, group-committed by one writer thread."""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import queue
import sqlite3
import threading
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.store import base

_SCHEMA = """
CREATE TABLE IF NOT EXISTS log (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    created INTEGER NOT NULL,
    deleted INTEGER NOT NULL,
    create_revision INTEGER NOT NULL,
    prev_revision INTEGER NOT NULL,
    value BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS log_key_prev_revision ON log (key, prev_revision);
CREATE INDEX IF NOT EXISTS log_key_id_deleted ON log (key, id, deleted);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('compacted_revision', 0);
"""

_LATEST = "SELECT id, deleted, create_revision, value FROM log WHERE key = ? ORDER BY id DESC LIMIT 1"
_INSERT = ("INSERT INTO log (id, key, created, deleted, create_revision, prev_revision, value) "
           "VALUES (?, ?, ?, ?, ?, ?, ?)")
_STOP = object()

# A pending write: (kind, key, value, expected_revision, future); kind is create/update/delete/compact.
_Op = tuple[str, str, bytes, int, "asyncio.Future[Any]"]
# The class defines a `list` method, which shadows the builtin inside its body for type checkers.
_Ops = list[_Op]
_Results = list[tuple[_Op, Any]]
_Entries = list[base.Entry]
_Events = list[base.Event]


def _connect(path: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("PRAGMA cache_size = -32768")  # 32 MiB: historical scans stay in memory
    return conn


def _key_range(prefix: str, column: str = "key") -> tuple[str, list[Any]]:
    """SQL condition on column and its parameters, selecting the keys that start with prefix."""
    if not prefix:
        return "1", []
    end = base.prefix_end(prefix)
    if end is None:
        return f"{column} >= ?", [prefix]
    return f"{column} >= ? AND {column} < ?", [prefix, end]


def _compacted_in(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT value FROM meta WHERE name = 'compacted_revision'").fetchone()[0])


class SQLiteStore(base.StoreCore):
    """The default store: one SQLite file in WAL mode, synchronous=FULL, reads of the present from memory."""

    def __init__(self, path: str | os.PathLike[str], *, settings: base.StoreSettings | None = None,
                 clock: clock_mod.Clock | None = None) -> None:
        super().__init__(settings=settings, clock=clock)
        self.path = os.fspath(path)
        # _rev is the latest revision committed AND applied on the event loop.
        self._commits = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._writer_done: asyncio.Future[None] | None = None
        self._reader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")
        self._rconn: sqlite3.Connection | None = None
        # Owned by the writer thread only:
        self._wrev = 0
        self._wcompacted = 0

    # ---- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Open (or create) the database, load the live index, and start the writer thread."""
        if self._started:
            return
        self._loop = asyncio.get_running_loop()
        try:
            live, rev, compacted = await self._read(self._load)
        except sqlite3.Error as exc:
            raise base.StoreError(f"cannot open store {self.path}: {exc}") from exc
        self._index.load(live)
        self._rev = self._wrev = rev
        self._compacted = self._wcompacted = compacted
        self._writer_done = self._loop.create_future()
        self._writer = threading.Thread(target=self._writer_main, name="store-write", daemon=True)
        self._writer.start()
        self._started = True
        self._start_compactor()

    async def close(self) -> None:
        """Finish queued writes, stop the threads, end every watch."""
        if self._closed:
            return
        self._closed = True
        await self._stop_compactor()
        if self._writer is not None and self._writer_done is not None:
            self._queue.put(_STOP)
            await self._writer_done
        self._broadcaster.close_all()
        if self._loop is not None:
            await self._loop.run_in_executor(self._reader, self._close_reader)
        self._reader.shutdown(wait=False)

    def _close_reader(self) -> None:
        if self._rconn is not None:
            self._rconn.close()
            self._rconn = None

    def _load(self, conn: sqlite3.Connection) -> tuple[_Entries, int, int]:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.executescript(_SCHEMA)
        rows = conn.execute(
            "SELECT l.key, l.value, l.create_revision, l.id FROM log AS l "
            "JOIN (SELECT MAX(id) AS id FROM log GROUP BY key) AS m ON l.id = m.id "
            "WHERE l.deleted = 0").fetchall()
        live = [base.Entry(key=k, value=v, create_revision=c, mod_revision=i) for k, v, c, i in rows]
        compacted = _compacted_in(conn)
        top = conn.execute("SELECT MAX(id) FROM log").fetchone()[0] or 0
        # Compaction may drop the newest row (a deletion); the compacted revision still counts as written.
        return live, max(top, compacted), compacted

    @property
    def commits(self) -> int:
        """SQLite transactions committed so far (several writes share one under load: group commit)."""
        return self._commits

    # ---- reads -----------------------------------------------------------------------------

    async def _read(self, fn: Any, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader, self._in_reader, fn, args)

    def _in_reader(self, fn: Any, args: tuple[Any, ...]) -> Any:
        if self._rconn is None:
            self._rconn = _connect(self.path)
        return fn(self._rconn, *args)

    def _snapshot(self, conn: sqlite3.Connection, revision: int, query: Any) -> Any:
        """Run query(conn) in one read transaction, after checking revision is not compacted in it."""
        conn.execute("BEGIN")
        try:
            compacted = _compacted_in(conn)
            if revision < compacted:
                raise base.Compacted(revision, compacted_revision=compacted, current_revision=self._rev)
            return query(conn)
        finally:
            conn.execute("COMMIT")

    async def _get_at(self, key: str, revision: int) -> base.Entry | None:
        def query(conn: sqlite3.Connection) -> base.Entry | None:
            row = conn.execute("SELECT id, deleted, create_revision, value FROM log "
                               "WHERE key = ? AND id <= ? ORDER BY id DESC LIMIT 1", (key, revision)).fetchone()
            if row is None or row[1]:
                return None
            return base.Entry(key=key, value=row[3], create_revision=row[2], mod_revision=row[0])

        entry: base.Entry | None = await self._read(self._snapshot, revision, query)
        return entry

    async def _list_at(self, prefix: str, revision: int, *, start_after: str, limit: int) -> base.ListResult:
        cond, params = _key_range(prefix)
        if start_after:
            cond += " AND key > ?"
            params.append(start_after)
        # SQLite returns `deleted` from the row holding MAX(id); the index covers the whole scan.
        latest = f"SELECT MAX(id), deleted FROM log WHERE {cond} AND id <= ? GROUP BY key"
        params.append(revision)

        def query(conn: sqlite3.Connection) -> base.ListResult:
            ids = [i for i, deleted in conn.execute(latest, params) if not deleted]
            page = ids if limit <= 0 else ids[:limit]
            entries: _Entries = []
            for n in range(0, len(page), 500):
                chunk = page[n:n + 500]
                rows = conn.execute("SELECT key, value, create_revision, id FROM log "
                                    f"WHERE id IN ({','.join('?' * len(chunk))}) ORDER BY key", chunk)
                entries.extend(base.Entry(key=k, value=v, create_revision=c, mod_revision=i) for k, v, c, i in rows)
            remaining = len(ids) - len(page)
            return base.ListResult(entries=entries, revision=revision, more=remaining > 0, remaining=remaining)

        result: base.ListResult = await self._read(self._snapshot, revision, query)
        return result

    # ---- writes ----------------------------------------------------------------------------

    async def _submit(self, kind: str, key: str, value: bytes, expected: int) -> Any:
        self._check_open()
        assert self._loop is not None
        future = self._loop.create_future()
        self._queue.put((kind, key, value, expected, future))
        return await future

    async def create(self, key: str, value: bytes) -> base.Entry:
        base.check_key(key)
        base.check_value(value)
        entry: base.Entry = await self._submit("create", key, bytes(value), 0)
        return entry

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> base.Entry:
        base.check_key(key)
        base.check_value(value)
        entry: base.Entry = await self._submit("update", key, bytes(value), expected_revision)
        return entry

    async def delete(self, key: str, *, expected_revision: int = 0) -> base.Entry:
        base.check_key(key)
        entry: base.Entry = await self._submit("delete", key, b"", expected_revision)
        return entry

    async def _compact_to(self, revision: int) -> None:
        await self._submit("compact", "", b"", revision)

    # ---- the writer thread -----------------------------------------------------------------

    def _writer_main(self) -> None:
        conn = _connect(self.path)
        try:
            stop = False
            while not stop:
                op = self._queue.get()
                if op is _STOP:
                    break
                batch: _Ops = [op]
                while len(batch) < self._settings.max_batch:
                    try:
                        op = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if op is _STOP:
                        stop = True
                        break
                    batch.append(op)
                results = self._commit_batch(conn, batch)
                self._to_loop(self._apply, results)
        finally:
            conn.close()
            self._to_loop(self._writer_stopped)

    def _to_loop(self, callback: Any, *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is gone; nobody is waiting any more
            pass

    def _commit_batch(self, conn: sqlite3.Connection, batch: _Ops) -> _Results:
        rev, compacted = self._wrev, self._wcompacted
        results: _Results = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for op in batch:
                    try:
                        results.append((op, self._write(conn, op)))
                    except base.StoreError as exc:
                        results.append((op, exc))
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        except Exception as exc:  # the whole batch failed to commit: nothing of it happened
            self._wrev, self._wcompacted = rev, compacted
            return [(op, base.StoreError(f"write not committed: {exc}")) for op in batch]
        self._commits += 1
        return results

    def _write(self, conn: sqlite3.Connection, op: _Op) -> Any:
        kind, key, value, expected, _ = op
        if kind == "compact":
            return self._compact_rows(conn, expected)
        row = conn.execute(_LATEST, (key,)).fetchone()
        live = row is not None and not row[1]
        rev = self._wrev + 1
        if kind == "create":
            if live:
                raise base.KeyExists(key)
            self._insert(conn, (rev, key, 1, 0, rev, row[0] if row else 0, value))
            entry = base.Entry(key=key, value=value, create_revision=rev, mod_revision=rev)
            return entry, base.Event(type="PUT", key=key, value=value, prev_value=None, revision=rev,
                                     create_revision=rev, created=True)
        if not live:
            raise base.KeyNotFound(key)
        prev_rev, _, create_rev, prev_value = row
        if expected and expected != prev_rev:
            current = base.Entry(key=key, value=prev_value, create_revision=create_rev, mod_revision=prev_rev)
            raise base.RevisionMismatch(key, expected=expected, current=current)
        if kind == "update":
            self._insert(conn, (rev, key, 0, 0, create_rev, prev_rev, value))
            entry = base.Entry(key=key, value=value, create_revision=create_rev, mod_revision=rev)
            return entry, base.Event(type="PUT", key=key, value=value, prev_value=prev_value, revision=rev,
                                     create_revision=create_rev, created=False, prev_revision=prev_rev)
        # A deletion row carries the last live value, so history and watch replay can show it.
        self._insert(conn, (rev, key, 0, 1, create_rev, prev_rev, prev_value))
        entry = base.Entry(key=key, value=prev_value, create_revision=create_rev, mod_revision=rev)
        return entry, base.Event(type="DELETE", key=key, value=prev_value, prev_value=prev_value, revision=rev,
                                 create_revision=create_rev, created=False, prev_revision=prev_rev)

    def _insert(self, conn: sqlite3.Connection, row: tuple[Any, ...]) -> None:
        try:
            conn.execute(_INSERT, row)
        except sqlite3.IntegrityError as exc:
            # Only another process writing the same file can get here: the database refused a lost update.
            raise base.StoreError(f"write to {row[1]!r} conflicts with a concurrent write: {exc}") from exc
        self._wrev = row[0]

    def _compact_rows(self, conn: sqlite3.Connection, revision: int) -> int:
        old = self._wcompacted
        if revision <= old:
            return old
        if revision > self._wrev:
            raise base.FutureRevision(revision, current_revision=self._wrev)
        # Rows superseded by a write in (old, revision] are no longer anyone's state at `revision`;
        # rows superseded earlier went in earlier compactions. Deletions at or below it go too.
        conn.execute("DELETE FROM log WHERE id IN (SELECT prev_revision FROM log "
                     "WHERE id > ? AND id <= ? AND prev_revision > 0)", (old, revision))
        conn.execute("DELETE FROM log WHERE id > ? AND id <= ? AND deleted = 1", (old, revision))
        conn.execute("UPDATE meta SET value = ? WHERE name = 'compacted_revision'", (revision,))
        self._wcompacted = revision
        return revision

    # ---- back on the event loop ------------------------------------------------------------

    def _apply(self, results: _Results) -> None:
        """Publish a committed batch: index, revision, watchers, then the writers' futures."""
        events = []
        for op, outcome in results:
            future = op[4]
            if isinstance(outcome, BaseException):
                if not future.done():
                    future.set_exception(outcome)
                continue
            if op[0] == "compact":
                self._compacted = max(self._compacted, outcome)
                if not future.done():
                    future.set_result(None)
                continue
            entry, event = outcome
            if event.type == "DELETE":
                self._index.remove(event.key)
            else:
                self._index.put(entry)
            self._rev = event.revision
            events.append(event)
            if not future.done():
                future.set_result(entry)
        if events:
            self._broadcaster.publish(events)

    def _writer_stopped(self) -> None:
        if self._writer_done is not None and not self._writer_done.done():
            self._writer_done.set_result(None)
        # Anything queued after the stop marker never reached the writer.
        while True:
            try:
                op = self._queue.get_nowait()
            except queue.Empty:
                break
            if op is not _STOP and not op[4].done():
                op[4].set_exception(base.StoreClosed("store is closed"))

    # ---- watch -----------------------------------------------------------------------------

    def watch(self, prefix: str, *, after_revision: int) -> base.Watcher:
        self._check_watch(after_revision)
        current = self._rev

        async def replay() -> _Events:
            events: _Events = await self._read(
                self._snapshot, after_revision, lambda conn: self._history(conn, prefix, after_revision, current))
            return events

        needs_replay = bool(after_revision) and after_revision < current
        return self._add_watcher(prefix, live_after=max(after_revision, current),
                                 replay=replay if needs_replay else None)

    def _history(self, conn: sqlite3.Connection, prefix: str, after: int, upto: int) -> _Events:
        cond, params = _key_range(prefix, "l.key")
        rows = conn.execute(
            "SELECT l.id, l.key, l.created, l.deleted, l.create_revision, l.value, p.value, l.prev_revision "
            "FROM log AS l "
            "LEFT JOIN log AS p ON p.id = l.prev_revision "
            f"WHERE l.id > ? AND l.id <= ? AND {cond} ORDER BY l.id",
            [after, upto, *params]).fetchall()
        events = []
        for rev, key, created, deleted, create_rev, value, prev_value, prev_rev in rows:
            events.append(base.Event(type="DELETE" if deleted else "PUT", key=key, value=value,
                                     prev_value=None if created else prev_value, revision=rev,
                                     create_revision=create_rev, created=bool(created),
                                     prev_revision=0 if created or prev_value is None else prev_rev))
        return events
