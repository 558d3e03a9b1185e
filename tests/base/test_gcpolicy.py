"""Tests of the garbage collector policy: survivors of full collections frozen, dead frozen cycles reclaimed."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.base import gcpolicy


class Node:
    """A weak-referenceable object to build reference cycles with."""

    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> tuple[Node, weakref.ref[Node]]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return a, weakref.ref(a)


@pytest.fixture
def policy() -> Iterator[gcpolicy.Policy]:
    thresholds = gc.get_threshold()
    p = gcpolicy.Policy(clock=clock_mod.FakeClock(), rescan_seconds=600.0)
    p.install()
    try:
        yield p
    finally:
        p.uninstall()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
        gc.collect()


def test_install_freezes_the_heap_and_raises_the_young_threshold(policy: gcpolicy.Policy) -> None:
    """Installing freezes what exists and makes young collections rarer."""
    assert gc.get_freeze_count() > 0
    assert gc.get_threshold()[0] == gcpolicy.YOUNG_THRESHOLD
    assert policy.callback in gc.callbacks


def test_full_collection_freezes_its_survivors(policy: gcpolicy.Policy) -> None:
    """Objects alive after a full collection move out of the collector's sight."""
    keep = [Node() for _ in range(1000)]
    before = gc.get_freeze_count()
    gc.collect()
    assert gc.get_freeze_count() >= before + len(keep)
    assert policy.full_collections == 1
    assert gc.get_count() == (0, 0, 0)


def test_young_collections_freeze_nothing(policy: gcpolicy.Policy) -> None:
    """Only a full collection proves an object long-lived."""
    before = gc.get_freeze_count()
    keep = [Node() for _ in range(100)]
    gc.collect(0)
    gc.collect(1)
    assert gc.get_freeze_count() == before
    assert policy.full_collections == 0
    assert keep


def test_new_cycles_are_still_collected(policy: gcpolicy.Policy) -> None:
    """Garbage cycles made after a freeze are reclaimed by the next full collection."""
    gc.collect()
    a, ref = cycle()
    del a
    gc.collect()
    assert ref() is None


def test_cycle_dead_while_frozen_is_reclaimed_after_the_rescan_interval(policy: gcpolicy.Policy) -> None:
    """A cycle that dies among frozen objects stays until the periodic complete pass, then goes."""
    a, ref = cycle()
    gc.collect()  # a survives: frozen
    del a
    gc.collect()
    assert ref() is not None  # hidden from the collector while frozen
    assert isinstance(policy.clock, clock_mod.FakeClock)
    policy.clock.advance(601)
    gc.collect()  # notices the interval passed and unfreezes
    gc.collect()  # the complete pass
    assert ref() is None
    assert policy.rescans == 1


def test_install_twice_registers_one_callback(policy: gcpolicy.Policy) -> None:
    """A second install is a no-op."""
    policy.install()
    assert gc.callbacks.count(policy.callback) == 1


def test_process_policy_is_installed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Clusters run one after another in one process share one installed policy."""
    thresholds = gc.get_threshold()
    monkeypatch.setattr(gcpolicy, "_process_policy", None)
    try:
        first = gcpolicy.install()
        assert gcpolicy.install() is first
        assert gc.callbacks.count(first.callback) == 1
    finally:
        first.uninstall()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_paused_holds_the_collector_off_and_restores_it() -> None:
    """Inside paused() the collector is off; after it (even after an error) it is on again."""
    assert gc.isenabled()
    with gcpolicy.paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(ValueError), gcpolicy.paused():
        raise ValueError("boom")
    assert gc.isenabled()


def test_paused_nested_or_already_off_leaves_the_switch_to_its_owner() -> None:
    """A nested paused() does not switch the collector back on early; one that found it off leaves it off."""
    with gcpolicy.paused():
        with gcpolicy.paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with gcpolicy.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
