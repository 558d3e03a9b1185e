"""Specification of the kubelet's event recorder: repeats counted, similar events combined, spam dropped."""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.node import events
from tests.node import fakes

NODE = "node-1"
POD = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1", "resourceVersion": "7"}}


@pytest.fixture
def clk() -> clock_mod.FakeClock:
    return clock_mod.FakeClock()


def _rec(client: Any, clk: clock_mod.FakeClock) -> events.Recorder:
    return events.Recorder(client, host=NODE, clock=clk)


def _created(client: fakes.FakeClient) -> list[dict[str, Any]]:
    return [c[2] for c in client.calls if c[0] == "create"]


def _stored(client: fakes.FakeClient) -> list[dict[str, Any]]:
    return list(client.objects.values())


async def test_a_repeated_event_is_one_event_with_a_count(clk: clock_mod.FakeClock) -> None:
    """The same reason and message about the same object is created once, then patched: count and lastTimestamp."""
    client = fakes.FakeClient()
    rec = _rec(client, clk)
    ref = events.pod_ref(POD)
    for _ in range(3):
        rec.event(ref, "Warning", "FailedMount", 'MountVolume.SetUp failed for volume "cfg" : configmap "x" not found')
        await rec.close()
        clk.advance(10)
    assert [c[0] for c in client.calls] == ["create", "patch:strategic", "patch:strategic"]
    assert client.calls[2][2]["count"] == 3 and set(client.calls[2][2]) == {"count", "lastTimestamp", "message"}
    (ev,) = _stored(client)
    assert ev["count"] == 3
    assert ev["firstTimestamp"] == clock_mod.rfc3339(clk.now() - datetime.timedelta(seconds=30))
    assert ev["lastTimestamp"] == clock_mod.rfc3339(clk.now() - datetime.timedelta(seconds=10))


@pytest.mark.parametrize(("second", "separate"), [
    ({"message": "other"}, True),
    ({"reason": "Other"}, True),
    ({"etype": "Normal"}, True),
    ({"field_path": "spec.containers{b}"}, True),
    ({"resource_version": "8"}, False),  # a newer pod resourceVersion is still the same object
    ({}, False),
])
async def test_what_makes_events_the_same(clk: clock_mod.FakeClock, second: dict[str, str], separate: bool) -> None:
    """Events are the same only with the same object, field path, type, reason and message."""
    client = fakes.FakeClient()
    rec = _rec(client, clk)

    def send(etype: str = "Warning", reason: str = "Unhealthy", message: str = "m",
             field_path: str = "spec.containers{a}", resource_version: str = "7") -> None:
        pod = {"metadata": {**POD["metadata"], "resourceVersion": resource_version}}
        rec.event(events.pod_ref(pod, field_path=field_path), etype, reason, message)

    send()
    await rec.close()
    send(**second)
    await rec.close()
    assert len(_created(client)) == (2 if separate else 1)


async def test_similar_events_are_combined(clk: clock_mod.FakeClock) -> None:
    """From the tenth different message of one reason about one object, they count on one combined event."""
    client = fakes.FakeClient()
    rec = _rec(client, clk)
    ref = events.pod_ref(POD)
    for i in range(12):
        rec.event(ref, "Warning", "FailedMount", f"volume v{i} failed")
        await rec.close()
    created = _created(client)
    assert len(created) == 10
    assert created[-1]["message"] == "(combined from similar events): volume v9 failed"
    combined = client.objects[events.EVENTS.path("ns", created[-1]["metadata"]["name"])]
    assert combined["count"] == 3 and combined["message"] == "(combined from similar events): volume v11 failed"


async def test_similar_events_reset_after_the_window(clk: clock_mod.FakeClock) -> None:
    """Similar messages farther apart than ten minutes are not combined."""
    client = fakes.FakeClient()
    rec = _rec(client, clk)
    for i in range(12):
        rec.event(events.pod_ref(POD), "Warning", "FailedMount", f"volume v{i} failed")
        await rec.close()
        clk.advance(events.SIMILAR_WINDOW_SECONDS + 1)
    assert not any(e["message"].startswith(events.COMBINED_PREFIX) for e in _created(client))


async def test_spam_filter_drops_past_the_burst_then_refills(clk: clock_mod.FakeClock) -> None:
    """After 25 events about one object the rest are dropped, until the bucket refills (one per 5 minutes)."""
    client = fakes.FakeClient()
    rec = _rec(client, clk)
    for i in range(events.SPAM_BURST + 3):
        rec.event(events.pod_ref(POD), "Normal", f"Reason{i}", "m")
    await rec.close()
    assert len(client.calls) == events.SPAM_BURST
    clk.advance(events.SPAM_REFILL_SECONDS)
    rec.event(events.pod_ref(POD), "Normal", "Later", "m")
    rec.event(events.pod_ref(POD), "Normal", "TooSoon", "m")
    await rec.close()
    assert [c[2]["reason"] for c in client.calls[events.SPAM_BURST:]] == ["Later"]
    rec.event(events.node_ref(NODE), "Normal", "Starting", "Starting kubelet.")  # another object has its own burst
    await rec.close()
    assert client.calls[-1][2]["reason"] == "Starting"


async def test_a_lost_event_is_written_whole_again(clk: clock_mod.FakeClock) -> None:
    """When the patched Event is gone, the repeat is created again with its name and running count."""
    client = fakes.FakeClient()
    rec = _rec(client, clk)
    rec.event(events.pod_ref(POD), "Warning", "BackOff", "Back-off restarting failed container")
    await rec.close()
    client.objects.clear()
    rec.event(events.pod_ref(POD), "Warning", "BackOff", "Back-off restarting failed container")
    await rec.close()
    assert [c[0] for c in client.calls] == ["create", "patch:strategic", "create"]
    assert client.calls[2][2]["count"] == 2
    assert client.calls[2][2]["metadata"]["name"] == client.calls[0][2]["metadata"]["name"]


class SlowClient(fakes.FakeClient):
    """Creates take a while, so a repeat arrives while the first write is still in flight."""

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        await asyncio.sleep(0.05)
        return await super().create(gvr, body, namespace=namespace)


async def test_a_repeat_waits_for_the_write_before_it(clk: clock_mod.FakeClock) -> None:
    """A repeat recorded while the first write is in flight patches after the create, never before it."""
    client = SlowClient()
    rec = _rec(client, clk)
    for _ in range(3):
        rec.event(events.pod_ref(POD), "Warning", "Unhealthy", "Liveness probe failed: ")
    await rec.close()
    assert [c[0] for c in client.calls] == ["create", "patch:strategic", "patch:strategic"]
    assert _stored(client)[0]["count"] == 3


async def test_write_failures_are_swallowed(clk: clock_mod.FakeClock) -> None:
    """An event the API refuses is logged and dropped; recording never raises."""
    client = fakes.FakeClient()
    client.fail_next["create"] = errors.Forbidden("no")
    rec = _rec(client, clk)
    rec.event(events.pod_ref(POD), "Normal", "Pulled", "x")
    await rec.close()
    assert client.objects == {}
