"""Specification of the node lifecycle controller: lease health, Unknown conditions, taints, pods not ready."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.controllers import nodelifecycle as nl
from pocketkube.controllers import podutil

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
S = nl.Settings()


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def stamp(seconds: float) -> str:
    return clock.rfc3339(at(seconds))


def node(name: str = "n1", *, ready: str | None = "True", heartbeat: float = 0, zone: str = "", taints=None,
         unschedulable: bool = False, extra_conditions=()) -> dict[str, Any]:
    conds = []
    if ready is not None:
        conds.append({"type": "Ready", "status": ready, "lastHeartbeatTime": stamp(heartbeat),
                      "lastTransitionTime": stamp(0), "reason": "KubeletReady", "message": "kubelet is posting ready status"})
    conds.extend(extra_conditions)
    meta: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "creationTimestamp": stamp(0), "resourceVersion": "5"}
    if zone:
        meta["labels"] = {"topology.kubernetes.io/zone": zone}
    spec: dict[str, Any] = {}
    if taints is not None:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    return {"apiVersion": "v1", "kind": "Node", "metadata": meta, "spec": spec, "status": {"conditions": conds}}


def lease(renew: float) -> dict[str, Any]:
    return {"metadata": {"name": "n1", "namespace": nl.LEASE_NAMESPACE},
            "spec": {"holderIdentity": "n1", "renewTime": clock.rfc3339_micro(at(renew))}}


@pytest.mark.parametrize("env,want", [
    ({}, nl.Settings()),
    ({nl.GRACE_ENV: "40"}, nl.Settings(grace=40, startup_grace=60, period=5)),
    ({nl.GRACE_ENV: "2"}, nl.Settings(grace=2, startup_grace=3, period=0.5)),
    ({nl.GRACE_ENV: "8"}, nl.Settings(grace=8, startup_grace=12, period=2)),
])
def test_settings_from_env(env, want):
    """The grace period comes from the environment; startup grace and monitor period scale with it."""
    assert nl.settings_from_env(env) == want


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_settings_from_env_rejects_bad_values(value):
    """A grace that is not a positive number stops the manager with a clear message."""
    with pytest.raises(ValueError, match=nl.GRACE_ENV):
        nl.settings_from_env({nl.GRACE_ENV: value})


def test_observe_lease_renewal_moves_probe():
    """A renewed Lease counts as life; the same renewTime seen again does not."""
    h = nl.observe(node(), lease(10), None, at(10))
    assert h.probe == at(10)
    h2 = nl.observe(node(), lease(10), h, at(30))
    assert h2.probe == at(10)
    h3 = nl.observe(node(), lease(31), h2, at(32))
    assert h3.probe == at(32)


def test_observe_heartbeat_moves_probe():
    """A new lastHeartbeatTime on the Ready condition counts as life too."""
    h = nl.observe(node(heartbeat=0), None, None, at(1))
    assert nl.observe(node(heartbeat=0), None, h, at(20)).probe == at(1)
    assert nl.observe(node(heartbeat=20), None, h, at(21)).probe == at(21)


def test_observe_never_posted_counts_from_creation():
    """A node that never posted status is judged from its creation time."""
    h = nl.observe(node(ready=None), None, None, at(100))
    assert h.probe == at(0) and h.ready is None


@pytest.mark.parametrize("n,probe,now,want_ready", [
    # Within the grace period nothing changes.
    (node(), 0, 40, None),
    # Past it, Ready (and the pressure conditions) become Unknown: the kubelet stopped posting.
    (node(), 0, 41, ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")),
    (node(ready="False"), 0, 41, ("Unknown", "NodeStatusUnknown", "Kubelet stopped posting node status.")),
    # Already Unknown: nothing to write.
    (node(ready="Unknown"), 0, 100, None),
    # Never posted: the startup grace (60 s) applies, then every condition is created Unknown.
    (node(ready=None), 0, 50, None),
    (node(ready=None), 0, 61, ("Unknown", "NodeStatusNeverUpdated", "Kubelet never posted node status.")),
])
def test_stale_conditions(n, probe, now, want_ready):
    """A node whose lease and heartbeat are older than the grace period gets Ready=Unknown with kube's words."""
    health = nl.Health(probe=at(probe), ready_transition=at(0))
    out = nl.stale_conditions(n, health, at(now), S)
    if want_ready is None:
        assert out is None
        return
    by_type = {c["type"]: c for c in out}
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"], by_type["Ready"]["message"]) == want_ready
    assert by_type["Ready"]["lastTransitionTime"] == stamp(now)
    assert {"MemoryPressure", "DiskPressure", "PIDPressure"} <= set(by_type)
    assert all(c["status"] == "Unknown" for c in out)


def _keys(taints):
    return sorted((t["key"], t["effect"]) for t in taints or [])


NR, UR = nl.NOT_READY, nl.UNREACHABLE


@pytest.mark.parametrize("n,zone_state,all_disrupted,want", [
    (node(), nl.NORMAL, False, None),
    (node(ready="Unknown"), nl.NORMAL, False, [(UR, "NoExecute"), (UR, "NoSchedule")]),
    (node(ready="False"), nl.NORMAL, False, [(NR, "NoExecute"), (NR, "NoSchedule")]),
    # Unreachable turned NotReady: the taints are swapped.
    (node(ready="False", taints=[{"key": UR, "effect": "NoSchedule"}, {"key": UR, "effect": "NoExecute"}]),
     nl.NORMAL, False, [(NR, "NoExecute"), (NR, "NoSchedule")]),
    # Recovered: both go.
    (node(taints=[{"key": UR, "effect": "NoSchedule"}, {"key": UR, "effect": "NoExecute"}]), nl.NORMAL, False, []),
    # Every node lost at once: no NoExecute taint (master disruption mode), NoSchedule still.
    (node(ready="Unknown"), nl.FULL, True, [(UR, "NoSchedule")]),
    (node(ready="Unknown", taints=[{"key": UR, "effect": "NoExecute"}]), nl.FULL, True, [(UR, "NoSchedule")]),
    # A small zone in partial disruption stops new NoExecute taints.
    (node(ready="Unknown"), nl.PARTIAL, False, [(UR, "NoSchedule")]),
    # Cordoned nodes carry the unschedulable taint; other people's taints are left alone.
    (node(unschedulable=True, taints=[{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]), nl.NORMAL,
     False, [("dedicated", "NoSchedule"), (nl.UNSCHEDULABLE, "NoSchedule")]),
    (node(extra_conditions=[{"type": "MemoryPressure", "status": "True"}]), nl.NORMAL, False,
     [("node.kubernetes.io/memory-pressure", "NoSchedule")]),
])
def test_plan_taints(n, zone_state, all_disrupted, want):
    """Taints follow the Ready condition and pressure conditions, as doNoScheduleTaintingPass and the NoExecute pass."""
    out = nl.plan_taints(n, zone_state=zone_state, zone_size=1, all_disrupted=all_disrupted, settings=S,
                         now=stamp(5))
    if want is None:
        assert out is None
    else:
        assert out is not None and _keys(out) == sorted(want)
        assert all(t.get("timeAdded") == stamp(5) for t in out if t["key"].startswith("node.kubernetes.io/"))


@pytest.mark.parametrize("readies,want", [
    (["True", "True"], (nl.NORMAL, 2)),
    (["Unknown"], (nl.FULL, 1)),
    (["True", "Unknown", "Unknown"], (nl.NORMAL, 3)),
    (["True", "Unknown", "Unknown", "False"], (nl.PARTIAL, 4)),
    (["True", "True", "Unknown", "Unknown", "False"], (nl.PARTIAL, 5)),
    (["True", "True", "True", "Unknown", "Unknown", "False"], (nl.NORMAL, 6)),
])
def test_zone_states(readies, want):
    """A zone with no ready node is fully disrupted; more than 2 and >= 55% not ready is partial."""
    nodes = [node(f"n{i}", ready=r, zone="a") for i, r in enumerate(readies)]
    assert nl.zone_states(nodes, S) == {":\x00:a": want}


def test_pods_to_mark_not_ready():
    """Ready pods on a node that is not ready are the ones to flip; other nodes' pods are left alone."""
    pods = [{"metadata": {"name": "a"}, "spec": {"nodeName": "n1"},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}},
            {"metadata": {"name": "b"}, "spec": {"nodeName": "n1"},
             "status": {"conditions": [{"type": "Ready", "status": "False"}]}},
            {"metadata": {"name": "c"}, "spec": {"nodeName": "n2"},
             "status": {"conditions": [{"type": "Ready", "status": "True"}]}}]
    assert [p["metadata"]["name"] for p in nl.pods_to_mark_not_ready(node(ready="Unknown"), pods)] == ["a"]
    assert nl.pods_to_mark_not_ready(node(), pods) == []
    flipped = nl.not_ready_pod(pods[0], stamp(3))
    assert flipped["status"]["conditions"] == [{"type": "Ready", "status": "False", "lastTransitionTime": stamp(3)}]
    assert pods[0]["status"]["conditions"][0]["status"] == "True"


class FakeClient:
    """Records status updates, patches and events; nodes' status updates come back as stored."""

    def __init__(self) -> None:
        self.status_updates: list[dict[str, Any]] = []
        self.patches: list[tuple[str, Any]] = []
        self.events: list[dict[str, Any]] = []

    async def update_status(self, gvr: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.status_updates.append(body)
        return body

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge", metadata_only: bool = False) -> Any:
        self.patches.append((path, body))
        return {}

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        self.events.append(body)
        return body

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        raise errors.NotFound("not found")


async def test_monitor_pass_marks_lost_node_unknown_and_taints_it():
    """Two nodes, one whose lease stops: after the grace it is Unknown, tainted unreachable, its pods not ready."""
    fake = clock.FakeClock(T0)
    client = FakeClient()
    ctl = nl.NodeLifecycleController(client, clock=fake)  # type: ignore[arg-type]
    ctl.nodes._replace([node("n1"), node("n2")])
    ctl.leases._replace([lease(0)])
    ctl.pods._replace([{"metadata": {"name": "p", "namespace": "default"}, "spec": {"nodeName": "n1"},
                        "status": {"conditions": [{"type": "Ready", "status": "True"}]}}])
    await ctl.monitor()
    assert client.status_updates == []
    assert any(e["reason"] == "RegisteredNode" for e in client.events)
    # n2 keeps posting heartbeats; n1's lease stays where it was.
    fake.advance(41)
    ctl.nodes._replace([node("n1"), node("n2", heartbeat=41)])
    await ctl.monitor()
    assert [u["metadata"]["name"] for u in client.status_updates][0] == "n1"
    n1_status = client.status_updates[0]["status"]["conditions"][0]
    assert (n1_status["status"], n1_status["reason"]) == ("Unknown", "NodeStatusUnknown")
    assert any(e["reason"] == "NodeNotReady" and e["involvedObject"]["kind"] == "Node" for e in client.events)
    path, body = client.patches[0]
    assert path == "/api/v1/nodes/n1"
    assert _keys(body["spec"]["taints"]) == [(UR, "NoExecute"), (UR, "NoSchedule")]
    pod_update = client.status_updates[1]
    assert pod_update["metadata"]["name"] == "p"
    assert pod_update["status"]["conditions"][0]["status"] == "False"


@pytest.mark.parametrize("pod,want", [
    ({"spec": {"nodeName": "n1"}}, ["n1"]),
    ({"spec": {"nodeName": ""}}, []),
    ({"spec": {}}, []),
    ({}, []),
    ({"spec": None}, []),
])
def test_node_name_index(pod, want):
    """Pods are filed under the node they are bound to; unbound ones under nothing."""
    assert podutil.node_name_index(pod) == want


async def test_monitor_finds_pods_through_the_node_index():
    """Pods that arrive by watch after the first list are found on their not-ready node; deleted ones are not."""
    fake = clock.FakeClock(T0)
    client = FakeClient()
    ctl = nl.NodeLifecycleController(client, clock=fake)  # type: ignore[arg-type]
    ctl.nodes._replace([node("n1", ready="False"), node("n2", ready="False")])
    ctl.leases._replace([])
    ctl.pods._replace([])
    ready = {"conditions": [{"type": "Ready", "status": "True"}]}
    for name, on in (("a", "n1"), ("b", "n2"), ("gone", "n1")):
        ctl.pods._put(f"default/{name}", {"metadata": {"name": name, "namespace": "default"},
                                          "spec": {"nodeName": on}, "status": ready})
    ctl.pods._pop("default/gone")
    await ctl.monitor()
    assert sorted(u["metadata"]["name"] for u in client.status_updates) == ["a", "b"]
