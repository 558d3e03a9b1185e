"""Specification of shared informers: one list+watch per key for many users, indexers, the mutation detector."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pocketkube.base import clock
from pocketkube.client import informer, rest
from tests.client import test_informer as ti

CM = rest.GVR("", "v1", "configmaps")
PODS = rest.GVR("", "v1", "pods")


class Recorder:
    """A handler recording (event type, name) pairs."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        self.seen.append((etype, obj["metadata"]["name"]))


async def _settle(inf: informer.Informer, fake: ti.FakeClient) -> None:
    """Advance the fake clock until the fake client has served every list and watch script."""
    await ti._drive(inf.clock, fake)  # type: ignore[arg-type]


async def _stop(*tasks: asyncio.Task[Any]) -> None:
    for t in tasks:
        t.cancel()
    for t in tasks:
        with pytest.raises(asyncio.CancelledError):
            await t


@pytest.mark.parametrize(("first", "second", "same"), [
    ({}, {}, True),
    ({"namespace": "a"}, {"namespace": "a"}, True),
    ({}, {"namespace": "a"}, False),
    ({}, {"label_selector": "app=x"}, False),
    ({}, {"field_selector": "spec.nodeName=n"}, False),
    ({}, {"metadata_only": True}, False),
    ({}, {"resync_seconds": 30}, False),
    ({"resync_seconds": 30}, {"resync_seconds": 30.0}, True),
])
def test_factory_shares_by_resource_namespace_and_selectors(first, second, same):
    """The factory hands out one informer per resource, namespace, selectors, metadata-only and resync period."""
    factory = informer.Factory(ti.FakeClient([], []), clock=clock.FakeClock())
    a = factory.informer(CM, **first)
    b = factory.informer(CM, **second)
    assert (a is b) is same
    assert factory.informer(PODS, **first) is not a


async def test_many_runners_share_one_list_and_watch():
    """Two users running one shared informer cause one list and one watch; both handlers see every event."""
    fake = ti.FakeClient([[ti.page([ti.cm("a", "1")], "5")]], [[("ADDED", ti.cm("b", "6"))]])
    factory = informer.Factory(fake, clock=clock.FakeClock())
    inf = factory.informer(CM)
    first, second = Recorder(), Recorder()
    inf.add_handler(first)
    inf.add_handler(second)
    runs = [asyncio.ensure_future(inf.run()), asyncio.ensure_future(factory.informer(CM).run())]
    await _settle(inf, fake)
    assert len(fake.list_calls) == 1
    # One watch at a time: the scripted one, then its resumption from the last resourceVersion.
    assert [c["resource_version"] for c in fake.watch_calls] == ["5", "6"]
    assert first.seen == second.seen == [("ADDED", "a"), ("ADDED", "b")]
    await _stop(*runs)


async def test_one_user_stopping_keeps_the_cache_running_for_the_others():
    """Cancelling one user's run leaves the shared watch going; the last user stopping ends it."""
    fake = ti.FakeClient([[ti.page([ti.cm("a", "1")], "5")]], [])
    inf = informer.Factory(fake, clock=clock.FakeClock()).informer(CM)
    one, two = asyncio.ensure_future(inf.run()), asyncio.ensure_future(inf.run())
    await _settle(inf, fake)
    await _stop(one)
    await asyncio.sleep(0)
    assert inf.running and not two.done()
    await _stop(two)
    await asyncio.sleep(0)
    assert not inf.running
    assert inf.keys() == ["ns/a"]


async def test_late_handler_gets_its_own_replay_and_failures_stay_contained():
    """A handler added after the first list is replayed the cache alone; a failing handler does not stop others."""
    fake = ti.FakeClient([[ti.page([ti.cm("a", "1"), ti.cm("b", "2")], "5")]], [])
    inf = informer.Factory(fake, clock=clock.FakeClock()).informer(CM)
    early = Recorder()
    inf.add_handler(early)
    run = asyncio.ensure_future(inf.run())
    await _settle(inf, fake)

    def broken(etype: str, old: Any, new: Any) -> None:
        raise RuntimeError("boom")

    inf.add_handler(broken)
    late = Recorder()
    inf.add_handler(late)
    assert sorted(late.seen) == [("ADDED", "a"), ("ADDED", "b")]
    assert len(early.seen) == 2
    await _stop(run)


async def test_factory_start_wait_for_cache_sync_and_shutdown():
    """start() runs every informer asked for, wait_for_cache_sync reports them synced, shutdown stops them."""
    fake = ti.FakeClient([[ti.page([ti.cm("a", "1")], "5")]], [])
    factory = informer.Factory(fake, clock=clock.FakeClock())
    inf = factory.informer(CM)
    factory.start()
    factory.start()
    synced = await factory.wait_for_cache_sync(timeout=5)
    assert list(synced.values()) == [True]
    assert len(fake.list_calls) == 1
    await factory.shutdown()
    await asyncio.sleep(0)
    assert not inf.running


async def test_indexer_follows_adds_updates_and_deletes():
    """A namespace index files objects by namespace and follows moves and deletions from the watch."""
    fake = ti.FakeClient([[ti.page([ti.cm("a", "1", ns="x"), ti.cm("b", "2", ns="y")], "5")]],
                         [[("ADDED", ti.cm("c", "6", ns="x")), ("DELETED", ti.cm("a", "7", ns="x"))]])
    inf = informer.Factory(fake, clock=clock.FakeClock()).informer(CM)
    inf.add_indexer("namespace", informer.namespace_index)
    run = asyncio.ensure_future(inf.run())
    await _settle(inf, fake)
    assert [o["metadata"]["name"] for o in inf.by_index("namespace", "x")] == ["c"]
    assert [o["metadata"]["name"] for o in inf.by_index("namespace", "y")] == ["b"]
    assert inf.by_index("namespace", "z") == []
    inf.add_indexer("namespace", informer.namespace_index)
    await _stop(run)


@pytest.mark.parametrize(("obj", "values"), [
    ({"metadata": {"name": "a", "namespace": "x"}}, ["x"]),
    ({"metadata": {"name": "n"}}, [""]),
    ({}, [""]),
])
def test_namespace_index(obj, values):
    """namespace_index files namespaced objects under their namespace and cluster-scoped ones under ""."""
    assert informer.namespace_index(obj) == values


async def test_mutation_detector_reports_in_place_changes(monkeypatch):
    """With KUBE_CACHE_MUTATION_DETECTOR on, changing a cached object in place is reported with its key."""
    monkeypatch.setenv(informer.MUTATION_DETECTOR_ENV, "true")
    monkeypatch.setattr(informer, "detected_mutations", [])
    fake = ti.FakeClient([[ti.page([ti.cm("a", "1"), ti.cm("b", "2")], "5")]],
                         [[("MODIFIED", ti.cm("a", "8"))]])
    inf = informer.Informer(fake, CM, clock=clock.FakeClock())

    def mutating(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if etype == informer.ADDED and new is not None and new["metadata"]["name"] == "a":
            new["metadata"]["labels"] = {"oops": "1"}

    inf.add_handler(mutating)
    run = asyncio.ensure_future(inf.run())
    await _settle(inf, fake)
    assert informer.detected_mutations == [("configmaps", "ns/a")]
    assert inf.check_mutations() == 0
    inf.get("ns/b")["data"] = {"k": "v"}  # type: ignore[index]
    assert inf.check_mutations() == 1
    await _stop(run)


async def test_mutation_detector_is_off_by_default(monkeypatch):
    """Without the variable no copies are kept and check_mutations finds nothing."""
    monkeypatch.delenv(informer.MUTATION_DETECTOR_ENV, raising=False)
    inf = informer.Informer(ti.FakeClient([], []), CM, clock=clock.FakeClock())
    assert inf.check_mutations() == 0


def _managed(obj: dict[str, Any]) -> dict[str, Any]:
    obj["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:data": {}}}]
    return obj


async def test_factory_transform_trims_managed_fields_of_listed_and_watched_objects():
    """WithTransform(trim managedFields) as kube-controller-manager: neither the cache nor a handler sees them."""
    fake = ti.FakeClient([[ti.page([_managed(ti.cm("a", "1"))], "5")]],
                         [[("ADDED", _managed(ti.cm("b", "6"))), ("DELETED", _managed(ti.cm("a", "7")))]])
    factory = informer.Factory(fake, clock=clock.FakeClock(), transform=informer.trim_managed_fields)
    inf = factory.informer(CM)
    seen: list[dict[str, Any]] = []
    inf.add_handler(lambda etype, old, new: seen.append(new if new is not None else old))
    run = asyncio.ensure_future(inf.run())
    await _settle(inf, fake)
    assert [o["metadata"]["name"] for o in seen] == ["a", "b", "a"]
    assert all("managedFields" not in o["metadata"] for o in seen + inf.list())
    assert inf.get("ns/b") == ti.cm("b", "6")
    await _stop(run)


@pytest.mark.parametrize(("obj", "trimmed"), [
    ({"metadata": {"name": "a", "managedFields": []}}, {"metadata": {"name": "a"}}),
    ({"metadata": {"name": "a"}}, {"metadata": {"name": "a"}}),
    ({"kind": "Status"}, {"kind": "Status"}),
    ({"metadata": None}, {"metadata": None}),
])
def test_trim_managed_fields(obj, trimmed):
    """Only metadata.managedFields goes; objects without it (or without metadata) pass unchanged."""
    assert informer.trim_managed_fields(obj) == trimmed


def test_existing_is_the_unfiltered_whole_object_informer_only():
    """existing() finds what some user asked for unfiltered, never creates one, and ignores filtered ones."""
    factory = informer.Factory(ti.FakeClient([], []), clock=clock.FakeClock())
    assert factory.existing(CM) is None
    factory.informer(CM, metadata_only=True)
    factory.informer(CM, namespace="a")
    assert factory.existing(CM) is None and len(factory.informers()) == 2
    whole = factory.informer(CM)
    assert factory.existing(CM) is whole


async def test_removed_handler_hears_nothing_more():
    """remove_handler: a user leaving a shared informer stops getting events; the others keep theirs."""
    fake = ti.FakeClient([[ti.page([ti.cm("a", "1")], "5")]], [[("ADDED", ti.cm("b", "6"))]])
    inf = informer.Factory(fake, clock=clock.FakeClock()).informer(CM)
    leaving, staying = Recorder(), Recorder()
    inf.add_handler(leaving)
    inf.add_handler(staying)
    inf.remove_handler(leaving)
    inf.remove_handler(leaving)  # a second removal is harmless
    run = asyncio.ensure_future(inf.run())
    await _settle(inf, fake)
    assert leaving.seen == [] and staying.seen == [("ADDED", "a"), ("ADDED", "b")]
    await _stop(run)
