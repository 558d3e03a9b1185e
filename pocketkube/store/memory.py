"""In-memory revisioned store with history, compaction and watch: the Store contract for unit tests."""

from __future__ import annotations

import asyncio
import bisect

from pocketkube.base import clock as clock_mod
from pocketkube.store import base


def _revision_of(item: tuple[int, base.Entry | None]) -> int:
    return item[0]


def _event_revision(event: base.Event) -> int:
    return event.revision


class MemoryStore:
    """Everything the SQLite store does, held in dicts and lists; nothing survives close()."""

    def __init__(self, *, settings: base.StoreSettings | None = None,
                 clock: clock_mod.Clock | None = None) -> None:
        self._settings = settings or base.StoreSettings()
        self._clock = clock or clock_mod.Clock()
        self._index = base.KeyIndex()
        # key -> [(revision, entry or None for a deletion)], oldest first; survivors of compaction only.
        self._history: dict[str, list[tuple[int, base.Entry | None]]] = {}
        self._history_keys: list[str] = []  # sorted keys of _history
        self._events: list[base.Event] = []  # revisions > compacted, in order
        self._rev = 0
        self._compacted = 0
        self._broadcaster = base.Broadcaster()
        self._compactor: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._compactor = asyncio.get_running_loop().create_task(
            base.compact_periodically(self, settings=self._settings, clock=self._clock))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._compactor is not None:
            self._compactor.cancel()
            try:
                await self._compactor
            except asyncio.CancelledError:
                pass
        self._broadcaster.close_all()

    def current_revision(self) -> int:
        return self._rev

    def compacted_revision(self) -> int:
        return self._compacted

    def _check_open(self) -> None:
        if self._closed or not self._started:
            raise base.StoreClosed("store is closed" if self._closed else "store is not started")

    def _check_revision(self, revision: int) -> None:
        if revision > self._rev:
            raise base.FutureRevision(revision, current_revision=self._rev)
        if revision < self._compacted:
            raise base.Compacted(revision, compacted_revision=self._compacted, current_revision=self._rev)

    def _state_at(self, key: str, revision: int) -> base.Entry | None:
        history = self._history.get(key)
        if not history:
            return None
        i = bisect.bisect_right(history, revision, key=_revision_of) - 1
        return history[i][1] if i >= 0 else None

    async def get(self, key: str, *, revision: int = 0) -> base.Entry | None:
        self._check_open()
        if revision <= 0 or revision == self._rev:
            return self._index.get(key)
        self._check_revision(revision)
        return self._state_at(key, revision)

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> base.ListResult:
        self._check_open()
        if revision <= 0 or revision == self._rev:
            entries, remaining = self._index.page(prefix, start_after=start_after, limit=limit)
            return base.ListResult(entries=entries, revision=self._rev, more=remaining > 0, remaining=remaining)
        self._check_revision(revision)
        keys = self._history_keys
        lo = bisect.bisect_left(keys, prefix)
        if start_after:
            lo = max(lo, bisect.bisect_right(keys, start_after))
        end = base.prefix_end(prefix)
        hi = len(keys) if end is None else bisect.bisect_left(keys, end)
        live = []
        for key in keys[lo:hi]:
            entry = self._state_at(key, revision)
            if entry is not None:
                live.append(entry)
        return base.paginate(live, revision=revision, limit=limit)

    async def count(self, prefix: str) -> int:
        self._check_open()
        return self._index.count(prefix)

    def _commit(self, key: str, entry: base.Entry | None, event: base.Event) -> None:
        self._rev = event.revision
        history = self._history.get(key)
        if history is None:
            history = self._history[key] = []
            bisect.insort(self._history_keys, key)
        history.append((event.revision, entry))
        self._events.append(event)
        if entry is None:
            self._index.remove(key)
        else:
            self._index.put(entry)
        self._broadcaster.publish([event])

    async def create(self, key: str, value: bytes) -> base.Entry:
        self._check_open()
        base.check_key(key)
        base.check_value(value)
        if self._index.get(key) is not None:
            raise base.KeyExists(key)
        value = bytes(value)
        rev = self._rev + 1
        entry = base.Entry(key=key, value=value, create_revision=rev, mod_revision=rev)
        self._commit(key, entry, base.Event(type="PUT", key=key, value=value, prev_value=None, revision=rev,
                                            create_revision=rev, created=True))
        return entry

    def _live(self, key: str, expected_revision: int) -> base.Entry:
        current = self._index.get(key)
        if current is None:
            raise base.KeyNotFound(key)
        if expected_revision and expected_revision != current.mod_revision:
            raise base.RevisionMismatch(key, expected=expected_revision, current=current)
        return current

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> base.Entry:
        self._check_open()
        base.check_key(key)
        base.check_value(value)
        current = self._live(key, expected_revision)
        value = bytes(value)
        rev = self._rev + 1
        entry = base.Entry(key=key, value=value, create_revision=current.create_revision, mod_revision=rev)
        self._commit(key, entry, base.Event(type="PUT", key=key, value=value, prev_value=current.value,
                                            revision=rev, create_revision=current.create_revision,
                                            created=False))
        return entry

    async def delete(self, key: str, *, expected_revision: int = 0) -> base.Entry:
        self._check_open()
        base.check_key(key)
        current = self._live(key, expected_revision)
        rev = self._rev + 1
        self._commit(key, None, base.Event(type="DELETE", key=key, value=current.value,
                                           prev_value=current.value, revision=rev,
                                           create_revision=current.create_revision, created=False))
        return base.Entry(key=key, value=current.value, create_revision=current.create_revision, mod_revision=rev)

    async def compact(self, revision: int) -> None:
        """Drop history at or below revision except each key's version live at that revision."""
        self._check_open()
        if revision > self._rev:
            raise base.FutureRevision(revision, current_revision=self._rev)
        if revision <= self._compacted:
            return
        cut = bisect.bisect_right(self._events, revision, key=_event_revision)
        touched = {e.key for e in self._events[:cut]}
        del self._events[:cut]
        for key in touched:
            history = self._history[key]
            i = bisect.bisect_right(history, revision, key=_revision_of) - 1
            keep_from = i if history[i][1] is not None else i + 1
            if keep_from:
                del history[:keep_from]
            if not history:
                del self._history[key]
                del self._history_keys[bisect.bisect_left(self._history_keys, key)]
        self._compacted = revision

    def watch(self, prefix: str, *, after_revision: int) -> base.Watcher:
        self._check_open()
        if after_revision < 0:
            raise base.StoreError(f"invalid revision {after_revision}")
        if after_revision and after_revision < self._compacted:
            raise base.Compacted(after_revision, compacted_revision=self._compacted, current_revision=self._rev)
        initial = None
        if after_revision and after_revision < self._rev:
            start = bisect.bisect_right(self._events, after_revision, key=_event_revision)
            initial = [e for e in self._events[start:] if e.key.startswith(prefix)]
        watcher = base.Watcher(prefix, live_after=max(after_revision, self._rev),
                               limit=self._settings.watch_queue_limit, initial=initial,
                               on_close=self._broadcaster.remove)
        self._broadcaster.add(watcher)
        return watcher
