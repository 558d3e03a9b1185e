"""Broadcaster routing by key prefix: every watcher gets exactly the events whose key starts with its prefix."""

from __future__ import annotations

import pytest

from pocketkube.store import base

KEYS = ["/registry/core/pods/default/p1", "/registry/core/pods/kube-system/p2", "/registry/core/nodes/n1",
        "/registry/apps/deployments/default/d", "/registry/core/podtemplates/default/t", "other"]

PREFIXES = ["", "/", "/registry/", "/registry/core/pods/", "/registry/core/pods/default/",
            "/registry/core/pod", "/registry/core/pods/default/p1", "/registry/core/nodes/n1/", "oth", "/nothing/"]


def _event(rev: int, key: str) -> base.Event:
    return base.Event(type="PUT", key=key, value=b"{}", prev_value=None, revision=rev, create_revision=rev,
                      created=True)


def _watchers(broadcaster: base.Broadcaster, prefixes: list[str]) -> list[base.Watcher]:
    out = []
    for p in prefixes:
        w = base.Watcher(p, live_after=0, limit=1000, on_close=broadcaster.remove)
        broadcaster.add(w)
        out.append(w)
    return out


@pytest.mark.parametrize("batch", [[k] for k in KEYS] + [KEYS, list(reversed(KEYS))],
                         ids=[*KEYS, "all", "all-reversed"])
async def test_each_prefix_gets_its_events_in_order(batch: list[str]) -> None:
    """A published batch reaches each watcher filtered to its prefix, in revision order, once."""
    broadcaster = base.Broadcaster()
    watchers = _watchers(broadcaster, PREFIXES + PREFIXES)  # two watchers per prefix
    events = [_event(i + 1, k) for i, k in enumerate(batch)]
    broadcaster.publish(events)
    for w in watchers:
        want = [e for e in events if e.key.startswith(w.prefix)]
        got = list(w._pending[0]) if w._pending else []
        assert got == want, w.prefix
        assert len(w._pending) <= 1


async def test_removed_watchers_get_nothing() -> None:
    """Closing a watcher (odd prefix or not) takes it out of the routing."""
    broadcaster = base.Broadcaster()
    odd, even = _watchers(broadcaster, ["/registry/core/pod", "/registry/core/pods/"])
    odd.close()
    even.close()
    assert len(broadcaster) == 0
    broadcaster.publish([_event(1, KEYS[0])])
    assert not odd._pending and not even._pending
    assert not broadcaster._odd
