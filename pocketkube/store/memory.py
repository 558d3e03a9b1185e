"""In-memory revisioned store with history, compaction and watch: the Store contract for unit tests."""

from __future__ import annotations

import bisect

from pocketkube.base import clock as clock_mod
from pocketkube.store import base


def _revision_of(item: tuple[int, base.Entry | None]) -> int:
    return item[0]


def _event_revision(event: base.Event) -> int:
    return event.revision


class MemoryStore(base.StoreCore):
    """Everything the SQLite store does, held in dicts and lists; nothing survives close()."""

    def __init__(self, *, settings: base.StoreSettings | None = None,
                 clock: clock_mod.Clock | None = None) -> None:
        super().__init__(settings=settings, clock=clock)
        # key -> [(revision, entry or None for a deletion)], oldest first; survivors of compaction only.
        self._history: dict[str, list[tuple[int, base.Entry | None]]] = {}
        self._history_keys: list[str] = []  # sorted keys of _history
        self._events: list[base.Event] = []  # revisions > compacted, in order

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        self._start_compactor()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_compactor()
        self._broadcaster.close_all()

    def _state_at(self, key: str, revision: int) -> base.Entry | None:
        history = self._history.get(key)
        if not history:
            return None
        i = bisect.bisect_right(history, revision, key=_revision_of) - 1
        return history[i][1] if i >= 0 else None

    async def _get_at(self, key: str, revision: int) -> base.Entry | None:
        return self._state_at(key, revision)

    async def _list_at(self, prefix: str, revision: int, *, start_after: str, limit: int) -> base.ListResult:
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
                                            created=False, prev_revision=current.mod_revision))
        return entry

    async def delete(self, key: str, *, expected_revision: int = 0) -> base.Entry:
        self._check_open()
        base.check_key(key)
        current = self._live(key, expected_revision)
        rev = self._rev + 1
        self._commit(key, None, base.Event(type="DELETE", key=key, value=current.value,
                                           prev_value=current.value, revision=rev,
                                           create_revision=current.create_revision, created=False,
                                           prev_revision=current.mod_revision))
        return base.Entry(key=key, value=current.value, create_revision=current.create_revision, mod_revision=rev)

    async def _compact_to(self, revision: int) -> None:
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
        self._check_watch(after_revision)
        initial = None
        if after_revision and after_revision < self._rev:
            start = bisect.bisect_right(self._events, after_revision, key=_event_revision)
            initial = [e for e in self._events[start:] if e.key.startswith(prefix)]
        return self._add_watcher(prefix, live_after=max(after_revision, self._rev), initial=initial)
