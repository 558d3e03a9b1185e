"""Specification of the node agent: registration, lease renewal, status heartbeats, node planning."""

from __future__ import annotations

import asyncio
import random

import pytest

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.node import agent, nodes, runtime
from tests.node import fakes

MACHINE = nodes.Machine(hostname="box", cpu_millis=2000, memory_bytes=8 * 2**30, storage_bytes=50 * 2**30)
NODE_PATH = "/api/v1/nodes/n-1"
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n-1"


@pytest.fixture
def clk():
    return clock_mod.FakeClock()


class FixedRandom(random.Random):
    """A random source that always draws the same number, so jittered timers are exact in tests."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


def make_agent(client, clk, *, zone="", draw=0.5):
    spec = nodes.NodeSpec(name="n-1", zone=zone, pod_cidr="10.244.0.0/24")
    rt = runtime.VirtualRuntime(pod_cidr=spec.pod_cidr, host_ip=spec.address, clock=clk)
    return agent.NodeAgent(client, spec, machine=MACHINE, capacity=nodes.capacity(MACHINE), rt=rt, clock=clk,
                           rng=FixedRandom(draw))


async def test_register_creates_the_node(clk):
    """A new node is created with its labels, capacity and Ready condition, and announced with events."""
    client = fakes.FakeClient()
    a = make_agent(client, clk, zone="z1")
    await a.register()
    await a.recorder.close()
    node = client.objects[NODE_PATH]
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "z1"
    assert node["status"]["capacity"]["cpu"] == "2"
    assert a.node_uid == "uid-n-1"
    reasons = [c[2]["reason"] for c in client.calls if c[0] == "create" and c[2].get("kind") == "Event"]
    assert reasons == ["Starting", "NodeAllocatableEnforced", "NodeHasSufficientMemory", "NodeHasNoDiskPressure",
                       "NodeHasSufficientPID", "NodeReady"]


async def test_register_takes_over_an_existing_node(clk):
    """An existing Node of the same name gets its kubelet labels fixed and its status refreshed."""
    client = fakes.FakeClient()
    client.objects[NODE_PATH] = {"metadata": {"name": "n-1", "uid": "old", "labels": {"kubernetes.io/hostname": "n-1"}},
                                 "status": {}}
    a = make_agent(client, clk)
    await a.register()
    verbs = client.verbs()
    assert "patch:strategic" in verbs
    status_patch = next(c for c in client.calls if c[1] == NODE_PATH + "/status")
    assert status_patch[2]["status"]["nodeInfo"]["kubeletVersion"] == "v1.32.0"
    assert a.node_uid == "old"


async def test_lease_is_created_then_renewed(clk):
    """The first renewal creates the Lease owned by the Node; later ones update renewTime in place."""
    client = fakes.FakeClient()
    a = make_agent(client, clk)
    await a.register()
    lease = await a.renew_lease()
    assert lease["spec"]["holderIdentity"] == "n-1" and lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["uid"] == "uid-n-1"
    clk.advance(10)
    renewed = await a.renew_lease()
    assert renewed["spec"]["renewTime"] == "2026-01-01T00:00:10.000000Z"
    assert [c[0] for c in client.calls if c[1].startswith(LEASE_PATH.rsplit("/", 1)[0])][-1] == "update"


async def test_lease_conflict_rereads(clk):
    """A conflicting renewal is retried from a fresh read."""
    client = fakes.FakeClient()
    a = make_agent(client, clk)
    await a.register()
    await a.renew_lease()
    client.fail_next["update"] = errors.Conflict("modified")
    with pytest.raises(errors.Conflict):
        await a.renew_lease()
    await a.renew_lease()
    assert client.calls[-2][0] == "get" and client.calls[-1][0] == "update"


async def test_status_is_posted_on_change_or_every_five_minutes(clk):
    """Unchanged conditions are posted only once the report interval passes, with a fresh heartbeat."""
    client = fakes.FakeClient()
    a = make_agent(client, clk)
    await a.register()
    clk.advance(10)
    assert await a.update_status() is False
    clk.advance(agent.STATUS_REPORT_SECONDS)
    assert await a.update_status() is True
    conds = client.objects[NODE_PATH]["status"]["conditions"]
    assert {c["lastHeartbeatTime"] for c in conds} == {"2026-01-01T00:05:10Z"}
    assert {c["lastTransitionTime"] for c in conds} == {"2026-01-01T00:00:00Z"}


async def test_the_report_after_becoming_ready_moves_by_up_to_half_the_interval(clk):
    """After registering (the node became Ready) the periodic report comes 300 s +- up to 150 s later, at random."""
    client = fakes.FakeClient()
    a = make_agent(client, clk, draw=0.9)  # +0.4 of the interval: 420 s
    await a.register()
    clk.advance(agent.STATUS_REPORT_SECONDS)
    assert await a.update_status() is False
    clk.advance(119)
    assert await a.update_status() is False
    clk.advance(1)
    assert await a.update_status() is True
    # An unchanged Ready condition keeps the plain interval from then on.
    clk.advance(agent.STATUS_REPORT_SECONDS)
    assert await a.update_status() is True


@pytest.mark.parametrize("draw,jittered,backoff,report", [
    (0.0, 10.0, 0.1, -150.0),
    (0.5, 10.2, 0.2, 0.0),
    (1.0, 10.4, 0.3, 150.0),
])
def test_timer_spread(draw, jittered, backoff, report):
    """Loops stretch their period by up to 4 %, retries spread over half to one and a half times the delay."""
    rng = FixedRandom(draw)
    assert agent.jittered(agent.LEASE_RENEW_SECONDS, rng) == pytest.approx(jittered)
    assert agent.backoff(0.2, rng) == pytest.approx(backoff)
    assert agent.report_delay(rng) == pytest.approx(report)


async def test_lease_sync_backs_off_then_waits_for_the_next_round(clk):
    """A failing renewal is tried five times with growing pauses, then left to the next renewal round."""
    client = fakes.FakeClient()
    a = make_agent(client, clk)
    await a.register()
    await a.renew_lease()
    lease_calls = [c for c in client.calls if c[1].startswith(LEASE_PATH)]

    async def failing(*args, **kwargs):
        raise TimeoutError()

    client.update = failing
    task = asyncio.ensure_future(a.sync_lease())
    for pause in (0.2, 0.4, 0.8, 1.6):
        await asyncio.sleep(0)
        assert not task.done()
        clk.advance(pause)
    assert await task is False
    # A timeout is not a conflict: no reading the Lease again in between.
    assert [c for c in client.calls if c[1].startswith(LEASE_PATH)] == lease_calls


async def test_lease_sync_rereads_after_a_conflict_at_once(clk):
    """A conflicting renewal reads the Lease again and updates it without waiting."""
    client = fakes.FakeClient()
    a = make_agent(client, clk)
    await a.register()
    await a.renew_lease()
    client.fail_next["update"] = errors.Conflict("modified")
    assert await a.sync_lease() is True
    lease_verbs = [c[0] for c in client.calls if c[1].startswith(LEASE_PATH)]
    assert lease_verbs[-2:] == ["get", "update"]


async def test_deleted_node_registers_again(clk):
    """If the Node object is deleted, the next status update registers it again."""
    client = fakes.FakeClient()
    a = make_agent(client, clk)
    await a.register()
    del client.objects[NODE_PATH]
    clk.advance(agent.STATUS_REPORT_SECONDS)
    await a.update_status()
    assert NODE_PATH in client.objects


@pytest.mark.parametrize("count,zones,virtual,want", [
    (2, None, True, [("pocketkube-virtual-node-1", "", "10.245.0.0/24"), ("pocketkube-virtual-node-2", "", "10.245.1.0/24")]),
    (3, ["a", "b"], False, [("pocketkube-node-1", "a", "10.244.0.0/24"), ("pocketkube-node-2", "b", "10.244.1.0/24"),
                            ("pocketkube-node-3", "a", "10.244.2.0/24")]),
    (0, None, True, []),
])
def test_plan_nodes(count, zones, virtual, want):
    """Nodes are numbered from 1, zones are dealt round robin, and each node gets its own pod CIDR."""
    prefix = agent.VIRTUAL_PREFIX if virtual else agent.DEFAULT_PREFIX
    specs = agent.plan_nodes(count, prefix=prefix, zones=zones, virtual=virtual)
    assert [(s.name, s.zone, s.pod_cidr) for s in specs] == want
    assert all(s.virtual == virtual for s in specs)


@pytest.mark.parametrize(("cluster_dns", "domain", "want"), [
    (None, "cluster.local", ("10.96.0.10",)),
    ([], "cluster.local", ()),
    (["10.0.0.10", ""], "corp.local", ("10.0.0.10",)),
])
def test_dns_settings(cluster_dns, domain, want):
    """--cluster-dns defaults to kube-dns at 10.96.0.10; an empty list means no cluster DNS."""
    got = agent.dns_settings(cluster_dns, domain)
    assert (got.cluster_dns, got.cluster_domain) == (want, domain)
