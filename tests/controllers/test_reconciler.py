"""Specification of controller.Reconciler, the shared base of the built-in controllers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pocketkube.base import clock
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

PODS = rest.GVR("", "v1", "pods")
NODES = rest.GVR("", "v1", "nodes")


def pod(name: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": "1"}}


class Sample(controller.Reconciler):
    """A controller keyed by pod, with an index the key function reads."""

    def __init__(self, client: Any, **kw: Any) -> None:
        super().__init__(client, "sample", event_source="sample-controller", **kw)
        self.seen: list[str] = []
        self.index: dict[str, dict[str, Any]] = {}
        self.pods = self.watch(PODS, self._keys, index=self._index)
        self.nodes = self.watch(NODES, controller.no_keys)

    def _index(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        assert obj is not None
        if new is None:
            self.index.pop(informer.key_of(obj), None)
        else:
            self.index[informer.key_of(obj)] = obj

    def _keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        # Only keys the index already holds: proves the index heard of the event first.
        return [k for k in controller.own_key(etype, old, new) if k in self.index]

    async def reconcile(self, key: str) -> controller.Outcome:
        self.seen.append(key)
        return controller.DONE


def test_plumbing_defaults() -> None:
    """Without a shared factory or clock the base makes its own; the Controller and Recorder get their names."""
    client = object()
    ctl = Sample(client)
    assert ctl.client is client
    assert isinstance(ctl.clock, clock.Clock)
    assert ctl.factory.clock is ctl.clock
    assert ctl.controller.name == "sample" and ctl.controller.workers == 1
    assert ctl.controller.clock is ctl.clock
    assert ctl.recorder.component == "sample-controller" and ctl.recorder.clock is ctl.clock
    assert ctl.controller.informers == [ctl.pods, ctl.nodes]


def test_shared_factory_and_clock_are_used() -> None:
    """Two controllers given one factory and clock share the informer for a resource."""
    fake = clock.FakeClock()
    shared = informer.Factory(object(), clock=fake)  # type: ignore[arg-type]
    a, b = Sample(object(), clock=fake, informers=shared, workers=3), Sample(object(), clock=fake, informers=shared)
    assert a.factory is shared and a.clock is fake
    assert a.pods is b.pods and a.nodes is b.nodes
    assert a.controller.workers == 3


def test_no_event_source_means_no_recorder() -> None:
    """A controller that records no events has no recorder attribute."""
    ctl = controller.Reconciler(object(), "quiet")  # type: ignore[arg-type]
    assert not hasattr(ctl, "recorder")


def test_watch_passes_the_filter_to_the_factory() -> None:
    """watch() asks the factory for the informer with the given namespace, selectors and resync period."""
    ctl = controller.Reconciler(object(), "filtered")  # type: ignore[arg-type]
    inf = ctl.watch(PODS, namespace="kube-system", label_selector="a=b", field_selector="spec.nodeName=n1",
                    resync_seconds=30)
    assert inf is ctl.factory.informer(PODS, namespace="kube-system", label_selector="a=b",
                                       field_selector="spec.nodeName=n1", resync_seconds=30)
    assert ctl.controller.informers == [inf]


def test_index_hears_of_events_before_the_queue() -> None:
    """The index handler runs before the key function, so keys it computes see the index up to date."""
    ctl = Sample(object())
    ctl.pods._replace([pod("a"), pod("b")])
    assert sorted(str(k) for k in ctl.controller.queue._queue) == ["ns/a", "ns/b"]


async def test_base_reconcile_is_abstract() -> None:
    """A Reconciler without its own reconcile refuses to guess."""
    with pytest.raises(NotImplementedError):
        await controller.Reconciler(object(), "bare").reconcile("k")  # type: ignore[arg-type]


async def test_run_reconciles_queued_keys_until_cancelled() -> None:
    """run() runs the Controller: queued keys reach reconcile, and cancelling stops it."""
    ctl = Sample(object())
    ctl.controller.informers.clear()  # no server to list from
    ctl.controller.enqueue("ns/x")
    task = asyncio.get_running_loop().create_task(ctl.run())
    for _ in range(50):
        if ctl.seen:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert ctl.seen == ["ns/x"]
