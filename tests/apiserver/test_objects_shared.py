"""Objects.get_shared and Objects.shared: one decode per stored revision for read-only lookups."""

from __future__ import annotations

from pocketkube.api import conversion, resources
from pocketkube.apiserver import objects
from pocketkube.store import memory


async def _objects() -> tuple[objects.Objects, resources.Registry]:
    store = memory.MemoryStore()
    await store.start()
    return objects.Objects(store, conversion.convert), resources.Registry.builtin()


def _res(reg: resources.Registry, group: str, resource: str) -> resources.Resource:
    res = reg.get(group, "v1", resource)
    assert res is not None
    return res


async def test_unchanged_object_is_decoded_once() -> None:
    """Two reads of an unchanged namespace return the same decoded object, with its resourceVersion."""
    objs, reg = await _objects()
    ns = _res(reg, "", "namespaces")
    await objs.create(ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    first = await objs.get_shared(ns, "", "a")
    second = await objs.get_shared(ns, "", "a")
    assert first is second
    assert first is not None and first == await objs.get_or_none(ns, "", "a")


async def test_new_revision_is_read_again() -> None:
    """After an update the next read sees the new content and resourceVersion, not the cached object."""
    objs, reg = await _objects()
    ns = _res(reg, "", "namespaces")
    created = await objs.create(ns, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a"}})
    before = await objs.get_shared(ns, "", "a")
    created["metadata"]["labels"] = {"x": "y"}
    await objs.update(ns, created, expected_revision=int(created["metadata"]["resourceVersion"]))
    after = await objs.get_shared(ns, "", "a")
    assert before is not None and after is not None
    assert after["metadata"]["labels"] == {"x": "y"}
    assert int(after["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])


async def test_missing_object_is_none_and_versions_do_not_mix() -> None:
    """A missing key reads as None; one stored Event read in two versions gives each version its own object."""
    objs, reg = await _objects()
    core, new = _res(reg, "", "events"), _res(reg, "events.k8s.io", "events")
    assert await objs.get_shared(core, "ns", "e") is None
    await objs.create(core, {"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "ns"},
                             "involvedObject": {"kind": "Pod", "name": "p", "namespace": "ns"}, "message": "hi"})
    as_core = await objs.get_shared(core, "ns", "e")
    as_new = await objs.get_shared(new, "ns", "e")
    assert as_core is not None and as_core["apiVersion"] == "v1" and as_core["message"] == "hi"
    assert as_new is not None and as_new["apiVersion"] == "events.k8s.io/v1" and as_new["note"] == "hi"
    assert await objs.get_shared(core, "ns", "e") is not as_new
