"""The store mirror: one list, then a watch keeps the objects current and bumps the generation on each change."""

from __future__ import annotations

import asyncio

import orjson

from pocketkube.apiserver import storemirror
from pocketkube.store import memory


async def _settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_mirror_follows_creates_and_deletes_of_kept_keys() -> None:
    """Kept keys appear and disappear with the store; other keys under the prefix change nothing."""
    store = memory.MemoryStore()
    await store.start()
    await store.create("/registry/x/a", orjson.dumps({"n": 1}))
    mirror = storemirror.Mirror("/registry/x/", name="test", keep=lambda key: not key.endswith("skip"))
    try:
        await mirror.sync(store)
        assert mirror.objects == {"/registry/x/a": {"n": 1}}
        first = mirror.generation
        await store.create("/registry/x/skip", b"{}")
        await _settle()
        assert mirror.generation == first and "/registry/x/skip" not in mirror.objects
        await store.create("/registry/x/b", orjson.dumps({"n": 2}))
        await _settle()
        assert mirror.generation > first and mirror.objects["/registry/x/b"] == {"n": 2}
        await store.delete("/registry/x/a")
        await _settle()
        assert set(mirror.objects) == {"/registry/x/b"}
    finally:
        mirror.close()
        await store.close()


async def test_concurrent_syncs_list_once_and_a_closed_watch_lists_again() -> None:
    """Callers racing the first sync share one list; after the watch stops, the next sync lists afresh."""
    store = memory.MemoryStore()
    await store.start()
    mirror = storemirror.Mirror("/registry/y/", name="test")
    try:
        await asyncio.gather(*(mirror.sync(store) for _ in range(5)))
        assert mirror.generation == 1
        mirror.close()
        await _settle()
        stopped = mirror.generation
        await store.create("/registry/y/c", b"{}")
        await mirror.sync(store)
        assert mirror.generation > stopped and "/registry/y/c" in mirror.objects
    finally:
        mirror.close()
        await store.close()
