"""Specification of how a node agent's event recorder sends: one write at a time, in order, a bounded queue."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import events
from tests.node import fakes

NODE = "node-1"


def _pod(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"u-{name}"}}


class CountingClient(fakes.FakeClient):
    """Creates take a while and the client counts how many are in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.in_flight = 0
        self.most = 0

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(0.01)
            return await super().create(gvr, body, namespace=namespace)
        finally:
            self.in_flight -= 1


@pytest.fixture
def clk() -> clock_mod.FakeClock:
    return clock_mod.FakeClock()


async def test_a_burst_is_written_one_event_at_a_time_in_order(clk: clock_mod.FakeClock) -> None:
    """Events recorded together are created one after another, in the order they were recorded."""
    client = CountingClient()
    rec = events.Recorder(client, host=NODE, clock=clk)
    reasons = ["Scheduled", "Pulled", "Created", "Started"]
    for reason in reasons:
        rec.event(events.pod_ref(_pod("web")), "Normal", reason, reason)
    await rec.close()
    assert client.most == 1
    assert [c[2]["reason"] for c in client.calls if c[0] == "create"] == reasons


async def test_events_past_the_queue_are_dropped(clk: clock_mod.FakeClock) -> None:
    """Once max_queued events wait, more are dropped rather than held in memory."""
    client = CountingClient()
    rec = events.Recorder(client, host=NODE, clock=clk, max_queued=2)
    for i in range(5):
        rec.event(events.pod_ref(_pod(f"p{i}")), "Normal", "Pulled", "x")
    await rec.close()
    # Recorded in one go, before the sender runs: two wait and the rest are dropped.
    assert [c[2]["involvedObject"]["name"] for c in client.calls if c[0] == "create"] == ["p0", "p1"]


async def test_recording_after_close_sends_again(clk: clock_mod.FakeClock) -> None:
    """A recorder whose queue ran dry (or was closed) starts sending again on the next event."""
    client = CountingClient()
    rec = events.Recorder(client, host=NODE, clock=clk)
    rec.event(events.pod_ref(_pod("a")), "Normal", "Pulled", "x")
    await rec.close()
    rec.event(events.pod_ref(_pod("b")), "Normal", "Pulled", "x")
    await rec.close()
    assert [c[2]["involvedObject"]["name"] for c in client.calls if c[0] == "create"] == ["a", "b"]
