"""The spec.nodeName watch index: pinned pod watches see exactly the events an unindexed watch would send."""

from __future__ import annotations

import types
from typing import Any

import orjson
import pytest

from pocketkube.api import errors, fieldselectors
from pocketkube.apiserver import filters, watch
from pocketkube.store import base as store_base
from tests.apiserver import harness

PREFIX = "/registry/pods/"


_pod = harness.pod_bytes




async def _seen(store: Any, watcher: Any, selector: str) -> list[tuple[str, str, str]]:
    """Run the real watch loop over a watcher for a moment: (type, name, resourceVersion) of what it sends."""
    res = types.SimpleNamespace(group="", kind="Pod")
    server = types.SimpleNamespace(shutting_down=False, bookmark_interval=60.0, store=store,
                                   objects=types.SimpleNamespace(from_storage=lambda r, o: o))
    call = types.SimpleNamespace(res=res)
    response = harness.Response()
    predicate = filters.build(res, "", selector)  # type: ignore[arg-type]
    await watch._stream(server, call, response, watcher, predicate, lambda o: o,  # type: ignore[arg-type]
                        timeout=0.3, bookmarks=False, last=0)
    watcher.close()
    out = []
    for line in b"".join(response.chunks).splitlines():
        ev = orjson.loads(line)
        out.append((ev["type"], ev["object"]["metadata"]["name"], ev["object"]["metadata"]["resourceVersion"]))
    return out


async def _churn(store: Any) -> None:
    """Pods binding to, changing on, leaving and being deleted from node-a and node-b."""
    k = PREFIX + "default/"
    await store.create(k + "p2", _pod("p2", "node-a"))
    await store.update(k + "p1", _pod("p1", "node-a"))  # bound: enters node-a's view
    await store.update(k + "p1", _pod("p1", "node-a", "Running"))
    await store.create(k + "p3", _pod("p3", "node-b"))
    await store.update(k + "p3", _pod("p3", "node-b", "Running"))
    await store.update(k + "p2", _pod("p2", "node-b"))  # leaves node-a's view: DELETED there
    await store.delete(k + "p1")
    await store.delete(k + "p3")
    await store.create(k + "p4", _pod("p4", ""))


@pytest.mark.parametrize("selector,node", [
    ("spec.nodeName=node-a", "node-a"),
    ("spec.host=node-b", "node-b"),
    ("spec.nodeName=", ""),
    ("spec.nodeName=node-a,status.phase=Running", "node-a"),
])
@pytest.mark.parametrize("from_history", [False, True])
async def test_pinned_watch_matches_unindexed(store: Any, selector: str, node: str, from_history: bool) -> None:
    """From the current revision or from history, a pinned watch sends what a plain store watch sends."""
    await store.create(PREFIX + "default/p1", _pod("p1"))
    await store.create("/registry/configmaps/default/c", b"{}")  # moves the revision past the pods
    start = store.current_revision() - 1 if from_history else store.current_revision()
    if from_history:
        await store.create(PREFIX + "default/p0", _pod("p0", node))
    plain = store.watch(PREFIX, after_revision=start)
    pinned = watch._open(store, PREFIX, after_revision=start, node=node)
    assert isinstance(pinned, watch._Pinned)
    await _churn(store)
    want = await _seen(store, plain, selector)
    got = await _seen(store, pinned, selector)
    assert got == want
    assert want  # the scenario does reach this watcher
    assert not watch._indexes  # the last pinned watcher took the index's store watcher with it


async def test_events_of_other_nodes_never_reach_a_pinned_watcher(store: Any) -> None:
    """Only events whose old or new pod is on the watcher's node are queued for it."""
    pinned = watch._open(store, PREFIX, after_revision=store.current_revision(), node="node-a")
    for i in range(50):
        await store.create(PREFIX + f"default/b{i}", _pod(f"b{i}", "node-b"))
    await store.create(PREFIX + "default/a", _pod("a", "node-a"))
    batch = await pinned.__anext__()
    assert [e.key for e in batch] == [PREFIX + "default/a"]
    pinned.close()


async def test_empty_history_then_live(store: Any) -> None:
    """A pinned watch from an older revision with nothing to replay goes straight on to live events."""
    start = store.current_revision()
    await store.create("/registry/configmaps/default/c", b"{}")
    pinned = watch._open(store, PREFIX, after_revision=start, node="node-a")
    await store.create(PREFIX + "default/b", _pod("b", "node-b"))
    await store.create(PREFIX + "default/a", _pod("a", "node-a"))
    batch = await pinned.__anext__()
    if not batch:  # the (empty) replay's end, when there was history to read
        batch = await pinned.__anext__()
    assert [e.key for e in batch] == [PREFIX + "default/a"]
    pinned.close()
    assert not watch._indexes


async def test_store_close_ends_pinned_watches(store: Any) -> None:
    """Closing the store ends every pinned watch as it ends plain ones."""
    pinned = watch._open(store, PREFIX, after_revision=store.current_revision(), node="node-a")
    await store.close()
    with pytest.raises(StopAsyncIteration):
        await pinned.__anext__()
    assert not watch._indexes


async def test_compacted_history_is_refused(store: Any) -> None:
    """A pinned watch from a compacted revision fails like a plain one (the handler answers 410 Gone)."""
    await store.create(PREFIX + "default/p", _pod("p", "node-a"))
    await store.update(PREFIX + "default/p", _pod("p", "node-a", "Running"))
    await store.compact(store.current_revision())
    with pytest.raises(store_base.Compacted):
        watch._open(store, PREFIX, after_revision=1, node="node-a")
    assert not watch._indexes


@pytest.mark.parametrize("selector,want", [
    ("", None),
    ("spec.nodeName=n1", "n1"),
    ("spec.host=n1", "n1"),
    ("spec.nodeName==n1,status.phase!=Failed", "n1"),
    ("spec.nodeName=", ""),
    ("spec.nodeName!=n1", None),
    ("status.phase=Running", None),
])
def test_pinned_node(selector: str, want: str | None) -> None:
    """Only a `spec.nodeName=` (or legacy `spec.host=`) term pins a pod watch to a node."""
    pods = types.SimpleNamespace(group="", kind="Pod")
    assert filters.pinned_node(pods, selector) == want  # type: ignore[arg-type]


def test_pinned_node_only_for_pods() -> None:
    """Other kinds are never indexed, ResourceSlice's spec.nodeName included."""
    slices = types.SimpleNamespace(group="resource.k8s.io", kind="ResourceSlice")
    assert filters.pinned_node(slices, "spec.nodeName=n1") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("selector,pod,want", [
    ("spec.nodeName=n1", {"spec": {"nodeName": "n1"}}, True),
    ("spec.nodeName=n1", {"spec": {}}, False),
    ("spec.nodeName!=n1", {"spec": {}}, True),
    ("spec.nodeName=", {}, True),
    ("spec.nodeName=n1", {"spec": "odd"}, False),
    ("spec.nodeName=n1,metadata.name=p", {"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}}, True),
    ("spec.host=n1", {"spec": {"nodeName": "n1"}}, True),
])
def test_matcher_agrees_with_matches(selector: str, pod: dict[str, Any], want: bool) -> None:
    """The compiled matcher answers as fieldselectors.matches does."""
    assert fieldselectors.matcher(selector, "", "Pod")(pod) is want
    assert fieldselectors.matches(pod, selector, "", "Pod") is want


def test_matcher_rejects_unsupported_fields() -> None:
    """A bad field is refused when the matcher is built, with kube's message."""
    with pytest.raises(errors.BadRequest, match="field label not supported: spec.bogus"):
        fieldselectors.matcher("spec.bogus=x", "", "Pod")
