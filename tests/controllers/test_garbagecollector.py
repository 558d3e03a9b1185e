"""Specification of the garbage collector: the owner graph, kube's decisions, and whole deletion flows."""

from __future__ import annotations

import pytest

from pocketkube.base import clock
from pocketkube.client import informer, rest
from pocketkube.controllers import garbagecollector as gcm
from tests.controllers import fakeapi

NOW = "2026-01-01T00:00:00Z"


def ref(uid, *, block=False, name=None, kind="ConfigMap", api_version="v1"):
    r = {"apiVersion": api_version, "kind": kind, "name": name or uid.removeprefix("uid-"), "uid": uid}
    if block:
        r["blockOwnerDeletion"] = True
    return r


def obj(name, *, owners=(), finalizers=(), deleting=False, ns="x"):
    meta = {"name": name, "namespace": ns, "uid": f"uid-{name}"}
    if owners:
        meta["ownerReferences"] = list(owners)
    if finalizers:
        meta["finalizers"] = list(finalizers)
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"metadata": meta}


# --- the graph ---------------------------------------------------------------------------------


def test_graph_links_and_virtual_owner():
    """A dependent naming an unseen owner creates a virtual owner node and asks to verify it."""
    g = gcm.Graph()
    fx = g.observe("v1", "ConfigMap", obj("child", owners=[ref("uid-parent")]))
    assert fx.delete == ["uid-parent"]
    parent = g.nodes["uid-parent"]
    assert parent.virtual and parent.dependents == {"uid-child"}
    assert parent.identity == gcm.Identity("v1", "ConfigMap", "x", "parent", "uid-parent")
    fx = g.observe("v1", "ConfigMap", obj("parent"))
    assert not g.nodes["uid-parent"].virtual and fx.delete == []


def test_graph_removal_enqueues_dependents_and_waiting_owners():
    """Removing a node asks to look at its dependents and at owners waiting for their dependents."""
    g = gcm.Graph()
    g.observe("v1", "ConfigMap", obj("owner", finalizers=["foregroundDeletion"], deleting=True))
    g.observe("v1", "ConfigMap", obj("mid", owners=[ref("uid-owner", block=True)]))
    g.observe("v1", "ConfigMap", obj("leaf", owners=[ref("uid-mid")]))
    fx = g.remove("uid-mid")
    assert fx.delete == ["uid-owner", "uid-leaf"]
    assert g.nodes["uid-owner"].dependents == set()
    assert g.remove("uid-nothing").delete == []


def test_graph_foreground_marks_and_enqueues_dependents():
    """An owner entering foreground deletion starts deleting dependents; new dependents join at once."""
    g = gcm.Graph()
    g.observe("v1", "ConfigMap", obj("owner"))
    g.observe("v1", "ConfigMap", obj("a", owners=[ref("uid-owner", block=True)]))
    fx = g.observe("v1", "ConfigMap", obj("owner", finalizers=["foregroundDeletion"], deleting=True))
    assert g.nodes["uid-owner"].deleting_dependents
    assert fx.delete == ["uid-a", "uid-owner"]
    fx = g.observe("v1", "ConfigMap", obj("b", owners=[ref("uid-owner")]))
    assert fx.delete == ["uid-b"]
    assert [n.identity.name for n in g.blocking_dependents(g.nodes["uid-owner"])] == ["a"]


def test_graph_orphan_and_unblocking():
    """An orphan-finalized owner is queued for orphaning; a dependent dropping its blocking ref wakes its owner."""
    g = gcm.Graph()
    g.observe("v1", "ConfigMap", obj("owner", finalizers=["foregroundDeletion"], deleting=True))
    g.observe("v1", "ConfigMap", obj("a", owners=[ref("uid-owner", block=True)]))
    fx = g.observe("v1", "ConfigMap", obj("a", owners=[ref("uid-owner")]))
    assert fx.delete == ["uid-owner"]
    fx = g.observe("v1", "ConfigMap", obj("a"))
    assert fx.delete == ["uid-owner"] and g.nodes["uid-owner"].dependents == set()
    fx = g.observe("v1", "ConfigMap", obj("o2", finalizers=["orphan"], deleting=True))
    assert fx.orphan == ["uid-o2"]


# --- decisions ---------------------------------------------------------------------------------


@pytest.mark.parametrize("owner,state", [
    (None, gcm.DANGLING),
    ({"metadata": {"uid": "other"}}, gcm.DANGLING),
    ({"metadata": {"uid": "u"}}, gcm.SOLID),
    ({"metadata": {"uid": "u", "deletionTimestamp": NOW}}, gcm.SOLID),
    ({"metadata": {"uid": "u", "deletionTimestamp": NOW, "finalizers": ["orphan"]}}, gcm.SOLID),
    ({"metadata": {"uid": "u", "deletionTimestamp": NOW, "finalizers": ["foregroundDeletion"]}}, gcm.WAITING),
    ({"metadata": {"uid": "u", "finalizers": ["foregroundDeletion"]}}, gcm.SOLID),
])
def test_owner_state(owner, state):
    """An owner is dangling when absent or replaced, waiting when foreground-deleting, else solid."""
    assert gcm.owner_state(owner, "u") == state


A, B = ref("uid-a"), ref("uid-b")


@pytest.mark.parametrize("dependent,states,has_deps,dep_deleting,actions", [
    (obj("d"), {}, False, False, []),
    (obj("d", owners=[A]), {"uid-a": gcm.SOLID}, False, False, []),
    (obj("d", owners=[A, B]), {"uid-a": gcm.SOLID, "uid-b": gcm.DANGLING}, False, False,
     [gcm.Action("remove_owner_refs", uids=("uid-b",))]),
    (obj("d", owners=[A, B]), {"uid-a": gcm.SOLID, "uid-b": gcm.WAITING}, True, False,
     [gcm.Action("remove_owner_refs", uids=("uid-b",))]),
    (obj("d", owners=[A]), {"uid-a": gcm.DANGLING}, False, False, [gcm.Action("delete", policy="Background")]),
    (obj("d", owners=[A]), {"uid-a": gcm.WAITING}, False, False, [gcm.Action("delete", policy="Background")]),
    (obj("d", owners=[A]), {"uid-a": gcm.WAITING}, True, False, [gcm.Action("delete", policy="Foreground")]),
    (obj("d", owners=[A]), {"uid-a": gcm.WAITING}, True, True,
     [gcm.Action("unblock_owner_refs"), gcm.Action("delete", policy="Foreground")]),
    (obj("d", owners=[A, B]), {"uid-a": gcm.DANGLING, "uid-b": gcm.WAITING}, True, False,
     [gcm.Action("delete", policy="Foreground")]),
    (obj("d", owners=[A], finalizers=["orphan"]), {"uid-a": gcm.DANGLING}, False, False,
     [gcm.Action("delete", policy="Orphan")]),
    (obj("d", owners=[A], finalizers=["foregroundDeletion"]), {"uid-a": gcm.DANGLING}, False, False,
     [gcm.Action("delete", policy="Foreground")]),
])
def test_plan(dependent, states, has_deps, dep_deleting, actions):
    """kube's attemptToDeleteItem rules: keep for solid owners, foreground for waiting ones, else collect."""
    assert gcm.plan(dependent, states, has_dependents=has_deps,
                    dependent_is_deleting_dependents=dep_deleting) == actions


# --- whole flows against the fake API ---------------------------------------------------------


async def _collector(api):
    gc = gcm.GarbageCollector(api, clock=clock.FakeClock())
    gc.discovery = await api.discover()
    return gc


async def settle(gc, api):
    """Feed the fake API's changes to the graph and run both queues until nothing moves."""
    for _ in range(100):
        moved = False
        while api.changes:
            gc.apply_event(*api.changes.pop(0))
            moved = True
        while not gc._events.empty():
            gc.apply_event(*gc._events.get_nowait())
            moved = True
        for ctl in (gc.deleter, gc.orphaner):
            while len(ctl.queue):
                key = await ctl.queue.get()
                await ctl.process(key)
                ctl.queue.done(key)
                moved = True
        if not moved:
            return
    raise AssertionError("garbage collection did not settle")


async def test_dependent_of_missing_owner_is_collected():
    """A ConfigMap whose owner never existed (or was replaced) is deleted in the background."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.CONFIGMAPS, "parent", "x", uid="uid-new-parent")
    api.add(fakeapi.CONFIGMAPS, "child", "x", ownerReferences=[ref("uid-parent")])
    api.add(fakeapi.CONFIGMAPS, "kept", "x", ownerReferences=[ref("uid-new-parent", name="parent")])
    gc = await _collector(api)
    await settle(gc, api)
    assert api.find(fakeapi.CONFIGMAPS, "child", "x") is None
    assert api.find(fakeapi.CONFIGMAPS, "kept", "x") is not None
    assert ("delete", "/api/v1/namespaces/x/configmaps/child", "Background") in api.calls


async def test_background_deletion_of_owner_collects_dependents():
    """Deleting an owner outright makes the collector delete its dependents, and theirs."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.CONFIGMAPS, "parent", "x")
    api.add(fakeapi.CONFIGMAPS, "child", "x", ownerReferences=[ref("uid-parent")])
    api.add(fakeapi.WIDGETS, "grandchild", "x", ownerReferences=[ref("uid-child")])
    api.add(fakeapi.CONFIGMAPS, "other", "y", ownerReferences=[ref("uid-parent")])
    gc = await _collector(api)
    await settle(gc, api)
    assert api.find(fakeapi.CONFIGMAPS, "child", "x") is not None
    await api.delete(fakeapi.CONFIGMAPS.gvr.path("x", "parent"))
    await settle(gc, api)
    assert api.find(fakeapi.CONFIGMAPS, "child", "x") is None
    assert api.find(fakeapi.WIDGETS, "grandchild", "x") is None
    # the owner reference is namespaced: "parent" in y never existed, so y's object is garbage too
    assert api.find(fakeapi.CONFIGMAPS, "other", "y") is None


async def test_foreground_deletion_deletes_blocking_dependents_first():
    """Foreground deletion removes dependents, then the foregroundDeletion finalizer, then the owner goes."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.CONFIGMAPS, "parent", "x")
    api.add(fakeapi.CONFIGMAPS, "child", "x", ownerReferences=[ref("uid-parent", block=True)])
    api.add(fakeapi.CONFIGMAPS, "held", "x", ownerReferences=[ref("uid-parent", block=True)],
            finalizers=["example.com/hold"])
    gc = await _collector(api)
    await settle(gc, api)
    await api.delete(fakeapi.CONFIGMAPS.gvr.path("x", "parent"), propagation_policy="Foreground")
    await settle(gc, api)
    parent = api.find(fakeapi.CONFIGMAPS, "parent", "x")
    assert parent is not None and parent["metadata"]["finalizers"] == ["foregroundDeletion"]
    assert api.find(fakeapi.CONFIGMAPS, "child", "x") is None
    assert api.find(fakeapi.CONFIGMAPS, "held", "x")["metadata"]["deletionTimestamp"]
    await api.patch(fakeapi.CONFIGMAPS.gvr.path("x", "held"), {"metadata": {"finalizers": None}})
    await settle(gc, api)
    assert api.find(fakeapi.CONFIGMAPS, "parent", "x") is None
    assert not gc.graph.nodes


async def test_orphan_deletion_keeps_dependents_without_the_reference():
    """Orphan deletion strips the owner's reference from dependents, removes the finalizer, keeps dependents."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.CONFIGMAPS, "parent", "x")
    api.add(fakeapi.CONFIGMAPS, "other-owner", "x")
    api.add(fakeapi.CONFIGMAPS, "child", "x", ownerReferences=[ref("uid-parent")])
    api.add(fakeapi.WIDGETS, "both", "x", ownerReferences=[ref("uid-parent"), ref("uid-other-owner")])
    gc = await _collector(api)
    await settle(gc, api)
    await api.delete(fakeapi.CONFIGMAPS.gvr.path("x", "parent"), propagation_policy="Orphan")
    await settle(gc, api)
    assert api.find(fakeapi.CONFIGMAPS, "parent", "x") is None
    child = api.find(fakeapi.CONFIGMAPS, "child", "x")
    assert child is not None and "ownerReferences" not in child["metadata"]
    both = api.find(fakeapi.WIDGETS, "both", "x")
    assert [r["uid"] for r in both["metadata"]["ownerReferences"]] == ["uid-other-owner"]


async def test_dangling_reference_removed_when_another_owner_lives():
    """A dependent with one live owner and one gone owner keeps living, minus the dead reference."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.CONFIGMAPS, "alive", "x")
    api.add(fakeapi.CONFIGMAPS, "child", "x", ownerReferences=[ref("uid-alive"), ref("uid-dead")])
    gc = await _collector(api)
    await settle(gc, api)
    child = api.find(fakeapi.CONFIGMAPS, "child", "x")
    assert [r["uid"] for r in child["metadata"]["ownerReferences"]] == ["uid-alive"]
    patches = [c for c in api.calls if c[0] == "patch"]
    assert patches[0][2]["metadata"]["resourceVersion"]  # guarded against lost updates


async def test_cluster_scoped_dependent_of_namespaced_owner_is_collected():
    """A cluster-scoped object cannot be owned by a namespaced kind: the reference counts as dangling."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.NAMESPACES, "n", ownerReferences=[ref("uid-cm", name="cm")])
    gc = await _collector(api)
    await settle(gc, api)
    assert api.find(fakeapi.NAMESPACES, "n") is None


async def test_resources_the_controllers_watch_whole_reuse_their_shared_informer():
    """As kube's ObjectOrMetadataInformerFactory: a shared full informer serves the collector, others get metadata."""
    api = fakeapi.FakeAPI()
    shared = informer.Factory(api, clock=clock.FakeClock())
    configmaps = shared.informer(fakeapi.CONFIGMAPS.gvr)
    gc = gcm.GarbageCollector(api, clock=clock.FakeClock(), informers=shared)
    await gc.refresh_discovery()
    try:
        assert gc._monitors[fakeapi.CONFIGMAPS.gvr][0] is configmaps
        widgets = gc._monitors[fakeapi.WIDGETS.gvr][0]
        assert widgets.metadata_only and widgets is not shared.existing(fakeapi.WIDGETS.gvr)
        assert len(configmaps._handlers) == 1
        # The resource leaving discovery takes the collector's handler off the informer the others keep.
        every = api.discover

        async def without_configmaps():
            found = await every()
            return rest.Discovery([r for r in found.resources if r.resource != "configmaps"], {})

        api.discover = without_configmaps
        await gc.refresh_discovery()
        assert fakeapi.CONFIGMAPS.gvr not in gc._monitors and configmaps._handlers == []
        api.discover = every
        await gc.refresh_discovery()
        assert gc._monitors[fakeapi.CONFIGMAPS.gvr][0] is configmaps and len(configmaps._handlers) == 1
    finally:
        for _, task, _ in gc._monitors.values():
            task.cancel()
