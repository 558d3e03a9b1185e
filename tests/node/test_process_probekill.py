"""The process runtime's liveness kills: the probe's grace period, and the restarted container's fresh start time."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from pocketkube.node import runtime
from tests.node import test_process as tp


@pytest.fixture
async def h(tmp_path):
    harness = tp.Harness(tmp_path)
    yield harness
    await harness.rt.close()


async def test_liveness_restart_counts_its_initial_delay_from_the_real_start(h):
    """After a liveness kill that waited out a grace period, the new container's probes wait their initial delay."""
    probe = {"exec": {"command": ["false"]}, "initialDelaySeconds": 1, "periodSeconds": 1, "failureThreshold": 1,
             "terminationGracePeriodSeconds": 1}
    p = tp.pod(policy="Always", command=["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"],
               livenessProbe=probe)
    p["spec"]["terminationGracePeriodSeconds"] = 60
    await h.rt.sync_pod(p)
    await asyncio.sleep(1.1)
    began = h.clock.now()
    result = await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert [e.reason for e in result.events if e.reason in ("Killing", "Started")] == ["Killing", "Started"]
    # SIGTERM is ignored: the probe's 1 s grace (not the pod's 60) ends in SIGKILL.
    assert (cs.last_termination.exit_code, cs.last_termination.signal) == (137, 9)
    assert cs.state == runtime.RUNNING and cs.restart_count == 1
    assert cs.started_at - began >= datetime.timedelta(seconds=0.9)
    # At once the new container is not due for a probe: its initial delay runs from its own start.
    result = await h.rt.sync_pod(p)
    assert not [e for e in result.events if e.reason in ("Unhealthy", "Killing")]
    assert cs.state == runtime.RUNNING and cs.restart_count == 1
