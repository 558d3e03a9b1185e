"""The store contract: errors, entries, events, the Store protocol, and the pieces both backends share."""

from __future__ import annotations

import asyncio
import bisect
import collections
import dataclasses
import logging
import typing
from collections.abc import Awaitable, Callable, Iterable

from pocketkube.base import clock as clock_mod

log = logging.getLogger(__name__)


class StoreError(Exception):
    """Any failure of the store; the API server maps unknown ones to 500."""


class KeyExists(StoreError):
    """create of a key that is live."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} already exists")
        self.key = key


class KeyNotFound(StoreError):
    """update/delete of a key that is not live."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} not found")
        self.key = key


class RevisionMismatch(StoreError):
    """A conditional write whose expected revision is not the live mod_revision."""

    def __init__(self, key: str, *, expected: int, current: Entry) -> None:
        super().__init__(f"key {key!r}: expected revision {expected}, live revision is {current.mod_revision}")
        self.key = key
        self.expected = expected
        self.current = current


class Compacted(StoreError):
    """A read or watch of history older than what the store keeps (410 Gone upstairs)."""

    def __init__(self, revision: int, *, compacted_revision: int, current_revision: int) -> None:
        super().__init__(f"required revision {revision} has been compacted (compacted revision "
                         f"{compacted_revision}, current revision {current_revision})")
        self.revision = revision
        self.compacted_revision = compacted_revision
        self.current_revision = current_revision


class FutureRevision(StoreError):
    """A read at a revision the store has not reached yet."""

    def __init__(self, revision: int, *, current_revision: int) -> None:
        super().__init__(f"required revision {revision} is a future revision (current revision "
                         f"{current_revision})")
        self.revision = revision
        self.current_revision = current_revision


class WatchOverflow(StoreError):
    """A watcher fell so far behind that the store dropped it; the client must watch again."""


class StoreClosed(StoreError):
    """The store was closed (or never started)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Entry:
    """One live version of a key."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    """One committed write as watchers see it."""

    type: str  # "PUT" | "DELETE"
    key: str
    value: bytes  # the new value; for DELETE the last live value
    prev_value: bytes | None
    revision: int
    create_revision: int
    created: bool  # True when this PUT brought the key into existence
    # The revision prev_value was written at (0: unknown), so readers can reuse what they decoded of it then.
    prev_revision: int = dataclasses.field(default=0, compare=False)


@dataclasses.dataclass(frozen=True, slots=True)
class ListResult:
    """One page of a list: entries, the revision read, and what is left after this page."""

    entries: list[Entry]
    revision: int
    more: bool
    remaining: int


@dataclasses.dataclass(frozen=True, slots=True)
class StoreSettings:
    """Tuning for either backend."""

    history_revisions: int = 10000  # revisions of history kept by automatic compaction; 0 = never compact
    # ...and at least this many seconds of it, as kube-apiserver compacts etcd every 5 minutes to the revision it
    # saw 5 minutes earlier: 1000 kubelets renew ~100 Leases a second, and a revision count alone then kept
    # under a minute, so chunked lists of many pods expired half way (410) and watches could not resume
    history_seconds: float = 300.0
    compact_interval: float = 5.0  # seconds between automatic compactions
    watch_queue_limit: int = 10000  # events a watcher may have undelivered before it is dropped
    max_batch: int = 1000  # writes per group commit (SQLite)

    def __post_init__(self) -> None:
        if self.history_revisions < 0:
            raise ValueError("history_revisions must be >= 0")
        if self.history_seconds < 0:
            raise ValueError("history_seconds must be >= 0")
        if self.compact_interval <= 0:
            raise ValueError("compact_interval must be > 0")
        if self.watch_queue_limit < 1:
            raise ValueError("watch_queue_limit must be >= 1")
        if self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")


class Store(typing.Protocol):
    """A revisioned key-value log with watch, as the API server uses it."""

    async def start(self) -> None: ...
    async def close(self) -> None: ...
    def current_revision(self) -> int: ...
    def compacted_revision(self) -> int: ...
    async def get(self, key: str, *, revision: int = 0) -> Entry | None: ...
    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> ListResult: ...
    async def count(self, prefix: str) -> int: ...
    async def create(self, key: str, value: bytes) -> Entry: ...
    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> Entry: ...
    async def delete(self, key: str, *, expected_revision: int = 0) -> Entry: ...
    async def compact(self, revision: int) -> None: ...
    def watch(self, prefix: str, *, after_revision: int) -> Watcher: ...


def prefix_end(prefix: str) -> str | None:
    """The smallest string above every string that starts with prefix; None when there is none."""
    p = prefix
    while p:
        c = ord(p[-1]) + 1
        if c == 0xD800:  # skip surrogates: they cannot be encoded for SQLite
            c = 0xE000
        if c <= 0x10FFFF:
            return p[:-1] + chr(c)
        p = p[:-1]
    return None


def check_key(key: str) -> None:
    """Refuse keys the log cannot hold."""
    if not isinstance(key, str) or not key:
        raise StoreError(f"invalid key {key!r}")


_VALUE_TYPES = (bytes, bytearray, memoryview)  # a tuple, not a union built on every call


def check_value(value: bytes) -> None:
    """Refuse values that are not bytes (a str would silently change type in SQLite)."""
    if not isinstance(value, _VALUE_TYPES):
        raise StoreError(f"value must be bytes, not {type(value).__name__}")


class KeyIndex:
    """The latest live entry per key, with keys kept sorted for prefix ranges and paging."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._keys: list[str] = []

    def __len__(self) -> int:
        return len(self._keys)

    def load(self, entries: Iterable[Entry]) -> None:
        """Replace the contents (used at start-up)."""
        self._entries = {e.key: e for e in entries}
        self._keys = sorted(self._entries)

    def get(self, key: str) -> Entry | None:
        return self._entries.get(key)

    def put(self, entry: Entry) -> None:
        if entry.key not in self._entries:
            bisect.insort(self._keys, entry.key)
        self._entries[entry.key] = entry

    def remove(self, key: str) -> None:
        if self._entries.pop(key, None) is not None:
            del self._keys[bisect.bisect_left(self._keys, key)]

    def _bounds(self, prefix: str, start_after: str) -> tuple[int, int]:
        lo = bisect.bisect_left(self._keys, prefix)
        if start_after:
            lo = max(lo, bisect.bisect_right(self._keys, start_after))
        end = prefix_end(prefix)
        hi = len(self._keys) if end is None else bisect.bisect_left(self._keys, end)
        return lo, max(lo, hi)

    def page(self, prefix: str, *, start_after: str = "", limit: int = 0) -> tuple[list[Entry], int]:
        """Entries under prefix after start_after, at most limit (0 = all), and how many remain after."""
        lo, hi = self._bounds(prefix, start_after)
        stop = hi if limit <= 0 else min(hi, lo + limit)
        entries = self._entries
        return [entries[k] for k in self._keys[lo:stop]], hi - stop

    def count(self, prefix: str) -> int:
        lo, hi = self._bounds(prefix, "")
        return hi - lo


def paginate(entries: list[Entry], *, revision: int, limit: int) -> ListResult:
    """Cut a full, sorted list of live entries into its first page."""
    if limit <= 0 or len(entries) <= limit:
        return ListResult(entries=entries, revision=revision, more=False, remaining=0)
    return ListResult(entries=entries[:limit], revision=revision, more=True, remaining=len(entries) - limit)


class Watcher:
    """An async iterator of event batches: history replay first, then live events, until closed."""

    def __init__(self, prefix: str, *, live_after: int, limit: int, initial: list[Event] | None = None,
                 replay: Callable[[], Awaitable[list[Event]]] | None = None,
                 on_close: Callable[[Watcher], None] | None = None) -> None:
        self.prefix = prefix
        self._live_after = live_after
        self._limit = limit
        self._replay = replay
        self._on_close = on_close
        self._initial = initial or None  # replayed history does not count against the limit
        self._pending: collections.deque[list[Event]] = collections.deque()
        self._count = 0
        self._error: BaseException | None = None
        self._closed = False
        self._wakeup = asyncio.Event()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """End the iteration; events not yet taken are dropped."""
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        self._count = 0
        self._initial = None
        self._replay = None
        self._wakeup.set()
        if self._on_close is not None:
            on_close, self._on_close = self._on_close, None
            on_close(self)

    def fail(self, error: BaseException) -> None:
        """Close with an error that the next __anext__ raises."""
        if self._closed:
            return
        self._error = error
        self.close()

    def deliver(self, events: list[Event]) -> None:
        """Queue live events (already filtered by prefix, in revision order)."""
        if self._closed:
            return
        if events[0].revision <= self._live_after:
            events = [e for e in events if e.revision > self._live_after]
            if not events:
                return
        if self._count + len(events) > self._limit:
            self.fail(WatchOverflow(f"watcher on {self.prefix!r} fell more than {self._limit} events behind"))
            return
        self._pending.append(events)
        self._count += len(events)
        self._wakeup.set()

    def __aiter__(self) -> Watcher:
        return self

    async def __anext__(self) -> list[Event]:
        if self._initial is not None:
            initial, self._initial = self._initial, None
            return initial
        if self._replay is not None:
            replay, self._replay = self._replay, None
            try:
                history = await replay()
            except StoreError as exc:
                self.fail(exc)
            else:
                if history and not self._closed:
                    return history
        while True:
            if self._error is not None:
                error, self._error = self._error, None
                raise error
            if self._closed:
                raise StopAsyncIteration
            if self._pending:
                batch = list(self._pending.popleft())
                # Merge what else is waiting so a slow reader catches up in fewer, larger steps.
                while self._pending and len(batch) < 1000:
                    batch.extend(self._pending.popleft())
                self._count -= len(batch)
                return batch
            self._wakeup.clear()
            await self._wakeup.wait()


class Broadcaster:
    """Fans each committed batch of events out to the watchers whose prefix matches."""

    def __init__(self) -> None:
        self._by_prefix: dict[str, set[Watcher]] = {}
        # Prefixes that do not end at a "/" (rare): matched by startswith; the rest by looking up each
        # "/"-ended prefix of an event's key, so a write costs a few lookups however many resources are watched.
        self._odd: set[str] = set()

    def add(self, watcher: Watcher) -> None:
        prefix = watcher.prefix
        self._by_prefix.setdefault(prefix, set()).add(watcher)
        if prefix and not prefix.endswith("/"):
            self._odd.add(prefix)

    def remove(self, watcher: Watcher) -> None:
        group = self._by_prefix.get(watcher.prefix)
        if group is not None:
            group.discard(watcher)
            if not group:
                del self._by_prefix[watcher.prefix]
                self._odd.discard(watcher.prefix)

    def __len__(self) -> int:
        return sum(len(g) for g in self._by_prefix.values())

    def _prefixes(self, key: str) -> list[str]:
        """The watched prefixes key starts with."""
        by = self._by_prefix
        found = [""] if "" in by else []
        end = key.find("/")
        while end >= 0:
            end += 1
            if key[:end] in by:
                found.append(key[:end])
            end = key.find("/", end)
        for prefix in self._odd:
            if key.startswith(prefix):
                found.append(prefix)
        return found

    def publish(self, events: list[Event]) -> None:
        """Deliver events (in revision order) to every matching watcher."""
        matched: dict[str, list[Event]] = {}
        for e in events:
            for prefix in self._prefixes(e.key):
                batch = matched.get(prefix)
                if batch is None:
                    matched[prefix] = [e]
                else:
                    batch.append(e)
        for prefix, batch in matched.items():
            group = self._by_prefix.get(prefix)
            if group:
                for watcher in list(group):
                    watcher.deliver(batch)

    def close_all(self) -> None:
        for group in list(self._by_prefix.values()):
            for watcher in list(group):
                watcher.close()
        self._by_prefix.clear()


_Batch = list[Event]  # StoreCore defines `list`, which shadows the builtin in its body for type checkers


class StoreCore:
    """What both backends share: the live index, revisions, watchers, open/closed checks, the compactor.

    A backend fills in how it reads history (_get_at, _list_at) and how it compacts (_compact_to).
    """

    def __init__(self, *, settings: StoreSettings | None, clock: clock_mod.Clock | None) -> None:
        self._settings = settings or StoreSettings()
        self._clock = clock or clock_mod.Clock()
        self._index = KeyIndex()
        self._broadcaster = Broadcaster()
        self._rev = 0
        self._compacted = 0
        self._compactor: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    def current_revision(self) -> int:
        return self._rev

    def compacted_revision(self) -> int:
        return self._compacted

    def _start_compactor(self) -> None:
        self._compactor = asyncio.get_running_loop().create_task(
            compact_periodically(self, settings=self._settings, clock=self._clock))

    async def _stop_compactor(self) -> None:
        if self._compactor is not None:
            self._compactor.cancel()
            try:
                await self._compactor
            except asyncio.CancelledError:
                pass

    def _check_open(self) -> None:
        if self._closed or not self._started:
            raise StoreClosed("store is closed" if self._closed else "store is not started")

    def _check_revision(self, revision: int) -> None:
        if revision > self._rev:
            raise FutureRevision(revision, current_revision=self._rev)
        if revision < self._compacted:
            raise Compacted(revision, compacted_revision=self._compacted, current_revision=self._rev)

    async def get(self, key: str, *, revision: int = 0) -> Entry | None:
        self._check_open()
        if revision <= 0 or revision == self._rev:
            return self._index.get(key)
        self._check_revision(revision)
        return await self._get_at(key, revision)

    async def _get_at(self, key: str, revision: int) -> Entry | None:
        raise NotImplementedError

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> ListResult:
        self._check_open()
        if revision <= 0 or revision == self._rev:
            entries, remaining = self._index.page(prefix, start_after=start_after, limit=limit)
            return ListResult(entries=entries, revision=self._rev, more=remaining > 0, remaining=remaining)
        self._check_revision(revision)
        return await self._list_at(prefix, revision, start_after=start_after, limit=limit)

    async def _list_at(self, prefix: str, revision: int, *, start_after: str, limit: int) -> ListResult:
        raise NotImplementedError

    async def count(self, prefix: str) -> int:
        self._check_open()
        return self._index.count(prefix)

    async def compact(self, revision: int) -> None:
        """Drop history at or below revision except each key's version live at that revision."""
        self._check_open()
        if revision > self._rev:
            raise FutureRevision(revision, current_revision=self._rev)
        if revision <= self._compacted:
            return
        await self._compact_to(revision)

    async def _compact_to(self, revision: int) -> None:
        raise NotImplementedError

    def _check_watch(self, after_revision: int) -> None:
        self._check_open()
        if after_revision < 0:
            raise StoreError(f"invalid revision {after_revision}")
        if after_revision and after_revision < self._compacted:
            raise Compacted(after_revision, compacted_revision=self._compacted, current_revision=self._rev)

    def _add_watcher(self, prefix: str, *, live_after: int, initial: _Batch | None = None,
                     replay: Callable[[], Awaitable[_Batch]] | None = None) -> Watcher:
        watcher = Watcher(prefix, live_after=live_after, limit=self._settings.watch_queue_limit, initial=initial,
                          replay=replay, on_close=self._broadcaster.remove)
        self._broadcaster.add(watcher)
        return watcher


async def compact_periodically(store: StoreCore, *, settings: StoreSettings, clock: clock_mod.Clock) -> None:
    """Forever: every compact_interval, drop history older than both the last history_revisions revisions and
    the revision current history_seconds ago."""
    if settings.history_revisions == 0:
        return
    seen: collections.deque[tuple[float, int]] = collections.deque()  # (when, current revision), oldest first
    while True:
        await clock.sleep(settings.compact_interval)
        now, current = clock.monotonic(), store.current_revision()
        seen.append((now, current))
        old_enough = now - settings.history_seconds
        while len(seen) > 1 and seen[1][0] <= old_enough:
            seen.popleft()  # the next sample is old enough too: the newest such one is what counts
        by_time = seen[0][1] if seen[0][0] <= old_enough else 0
        target = min(current - settings.history_revisions, by_time)
        if target > store.compacted_revision():
            try:
                await store.compact(target)
            except StoreClosed:
                return
            except StoreError:
                log.exception("automatic compaction to revision %d failed", target)
