"""Specification of the scheduler loop: binding, failure reporting, events, preemption, ownership."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer as informer_mod
from pocketkube.scheduler import framework, nodeinfo, preemption, scheduler
from tests.scheduler import helpers as h


class RecordingClient:
    """Records every write the scheduler makes; answers like a server that accepts them."""

    def __init__(self, *, binding_405: bool = False) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.binding_405 = binding_405

    async def request(self, method: str, path: str, *, body: Any = None, **kw: Any) -> Any:
        self.calls.append((method, path, body))
        if self.binding_405 and path.endswith("/binding"):
            raise errors.MethodNotAllowed("the server does not allow this method on the requested resource")
        return {"kind": "Status", "status": "Success", "code": 201}

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge", **kw: Any) -> dict[str, Any]:
        self.calls.append(("PATCH:" + patch_type, path, body))
        return {}

    async def create(self, gvr: Any, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.calls.append(("CREATE", gvr.resource, body))
        return body

    async def delete(self, path: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("DELETE", path, kw))
        return {}


def _sched(client: RecordingClient, nodes: list[dict[str, Any]], pods: list[dict[str, Any]]) -> scheduler.Scheduler:
    s = scheduler.Scheduler(client, clock=clock_mod.FakeClock(), rng=random.Random(1))  # type: ignore[arg-type]
    for n in nodes:
        s.nodes._cache[n["metadata"]["name"]] = n
        s._on_node("ADDED", None, n)
    for p in pods:
        key = f"{p['metadata']['namespace']}/{p['metadata']['name']}"
        s.pods._cache[key] = p
        s._on_pod("ADDED", None, p)
    return s


async def _settle(s: scheduler.Scheduler) -> None:
    for _ in range(5):
        await asyncio.sleep(0)
    while s._tasks:
        await asyncio.gather(*list(s._tasks))


def _events(s: scheduler.Scheduler) -> list[dict[str, Any]]:
    out = []
    while not s.recorder._backlog.empty():
        out.append(s.recorder._backlog.get_nowait()["event"])
    return out


async def test_binds_through_the_binding_subresource_and_reports_scheduled() -> None:
    """A pending pod is bound with a Binding to pods/NAME/binding and gets a Scheduled event."""
    c = RecordingClient()
    s = _sched(c, [h.node("n1")], [h.pod("web")])
    qp = s.queue.pop_nowait()
    assert qp is not None and s.schedule_one(qp) == "n1"
    await _settle(s)
    method, path, body = c.calls[0]
    assert (method, path) == ("POST", "/api/v1/namespaces/default/pods/web/binding")
    assert body["target"] == {"kind": "Node", "name": "n1"} and body["metadata"]["uid"] == "uid-web"
    [ev] = _events(s)
    assert (ev["type"], ev["reason"], ev["action"], ev["note"]) == (
        "Normal", "Scheduled", "Binding", "Successfully assigned default/web to n1")
    assert ev["reportingController"] == "default-scheduler" and ev["regarding"]["name"] == "web"
    assert s.cache.is_assumed("default/web") and s.queue.where("default/web") == ""


async def test_falls_back_to_the_bindings_collection() -> None:
    """A server without pods/binding still gets the pod bound through POST .../bindings."""
    c = RecordingClient(binding_405=True)
    s = _sched(c, [h.node("n1")], [h.pod("web")])
    s.schedule_one(s.queue.pop_nowait())  # type: ignore[arg-type]
    await _settle(s)
    assert [p for _, p, _ in c.calls[:2]] == ["/api/v1/namespaces/default/pods/web/binding",
                                              "/api/v1/namespaces/default/bindings"]


async def test_unschedulable_pod_gets_condition_and_warning_then_retries_on_node_add() -> None:
    """PodScheduled=False/Unschedulable with kube's message, a FailedScheduling event, retry on a new node."""
    c = RecordingClient()
    s = _sched(c, [h.node("n1", cpu="1")], [h.pod("big", cpu="2")])
    assert s.schedule_one(s.queue.pop_nowait()) == ""  # type: ignore[arg-type]
    await _settle(s)
    msg = ("0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: "
           "1 No preemption victims found for incoming pod.")
    kind, path, body = c.calls[0]
    assert (kind, path) == ("PATCH:strategic", "/api/v1/namespaces/default/pods/big/status")
    cond = body["status"]["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"], cond["message"]) == \
        ("PodScheduled", "False", "Unschedulable", msg)
    [ev] = _events(s)
    assert (ev["type"], ev["reason"], ev["action"], ev["note"]) == ("Warning", "FailedScheduling", "Scheduling", msg)
    assert s.queue.where("default/big") == "unschedulable"
    s._on_node("ADDED", None, h.node("n2", cpu="4"))
    s.clock.advance(1)  # type: ignore[attr-defined]
    s.queue.flush()
    assert s.schedule_one(s.queue.pop_nowait()) == "n2"  # type: ignore[arg-type]


async def test_no_nodes_message() -> None:
    """Without nodes the message is kube's "no nodes available to schedule pods"."""
    c = RecordingClient()
    s = _sched(c, [], [h.pod("p")])
    s.schedule_one(s.queue.pop_nowait())  # type: ignore[arg-type]
    await _settle(s)
    assert c.calls[0][2]["status"]["conditions"][0]["message"] == "no nodes available to schedule pods"


def test_only_default_scheduler_pods_without_node_are_queued() -> None:
    """Pods for another scheduler, already assigned or being deleted are not ours to schedule."""
    other = h.pod("o", schedulerName="my-scheduler")
    bound = h.pod("b", node_name="n1", cpu="1")
    gone = h.pod("g")
    gone["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    s = _sched(RecordingClient(), [h.node("n1")], [other, bound, gone])
    assert len(s.queue) == 0
    assert s.cache.nodes["n1"].requested["cpu"] == 1000


def test_condition_patch_keeps_transition_time_and_skips_no_ops() -> None:
    """An unchanged condition is not rewritten; a changed message keeps the transition time."""
    p = h.pod("p")
    p["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": "m", "lastTransitionTime": "T0"}]
    assert scheduler.condition_patch(p, "Unschedulable", "m", "T1") is None
    body = scheduler.condition_patch(p, "Unschedulable", "m2", "T1")
    assert body is not None and body["status"]["conditions"][0]["lastTransitionTime"] == "T0"
    body = scheduler.condition_patch(p, "Unschedulable", "m", "T1", nominated="n1")
    assert body is not None and body["status"]["nominatedNodeName"] == "n1"


async def test_preemption_evicts_the_fewest_lowest_priority_pods() -> None:
    """A high-priority pod evicts just enough lower-priority pods and is nominated to their node."""
    c = RecordingClient()
    low = [h.pod(f"low{i}", cpu="1", node_name="n1", priority=1) for i in range(3)]
    mid = h.pod("mid", cpu="1", node_name="n1", priority=5)
    s = _sched(c, [h.node("n1", cpu="4")], [*low, mid, h.pod("vip", cpu="2", priority=100)])
    s.schedule_one(s.queue.pop_nowait())  # type: ignore[arg-type]
    await _settle(s)
    deleted = sorted(p for k, p, _ in c.calls if k == "DELETE")
    assert len(deleted) == 2 and all("/pods/low" in p for p in deleted)
    patches = [b for k, p, b in c.calls if k == "PATCH:strategic" and p.endswith("/vip/status")]
    assert patches[0]["status"]["nominatedNodeName"] == "n1"
    assert patches[0]["status"]["conditions"][0]["message"] == "0/1 nodes are available: 1 Insufficient cpu."
    disruption = [b for k, p, b in c.calls if k == "PATCH:strategic" and "/low" in p]
    assert disruption[0]["status"]["conditions"][0]["reason"] == "PreemptionByScheduler"
    notes = [e["note"] for e in _events(s) if e["reason"] == "Preempted"]
    assert notes == ["Preempted by pod uid-vip on node n1"] * 2
    assert "default/vip" in s.nominated["n1"]


def test_preemption_refusals() -> None:
    """preemptionPolicy Never and nodes where eviction cannot help are reported as kube words them."""
    s = _sched(RecordingClient(), [h.node("n1", cpu="1"), h.node("n2", cpu="1", unschedulable=True)],
               [h.pod("low", cpu="1", node_name="n1", priority=1)])
    p = nodeinfo.PodInfo(h.pod("p", cpu="1", priority=10, preemptionPolicy="Never"))
    with pytest.raises(framework.FitError) as fe:
        s.framework.schedule(p, s.cache)
    assert preemption.preempt(s.framework, p, s.cache, fe.value)[1] == \
        "preemption: not eligible due to preemptionPolicy=Never."
    p = nodeinfo.PodInfo(h.pod("p", cpu="2", priority=10))
    with pytest.raises(framework.FitError) as fe:
        s.framework.schedule(p, s.cache)
    assert preemption.preempt(s.framework, p, s.cache, fe.value)[1] == (
        "preemption: 0/2 nodes are available: 1 Insufficient cpu, 1 Preemption is not helpful for scheduling.")


def test_pod_informer_drops_managed_fields_as_kube_schedulers_does() -> None:
    """The pod cache (every pod, kept for its lifetime) is trimmed of managedFields; other informers are not."""
    s = scheduler.Scheduler(RecordingClient(), clock=clock_mod.FakeClock())  # type: ignore[arg-type]
    assert s.pods.transform is informer_mod.trim_managed_fields
    assert s.nodes.transform is None


def test_default_spread_selector_reads_only_the_pods_namespace_services() -> None:
    """The default spread selector merges the selectors of the Services in the pod's namespace that select it."""
    s = scheduler.Scheduler(RecordingClient(), clock=clock_mod.FakeClock())  # type: ignore[arg-type]

    def svc(name: str, ns: str, selector: dict[str, str] | None) -> None:
        obj = {"metadata": {"name": name, "namespace": ns}, "spec": {"selector": selector} if selector else {}}
        s.services._put(f"{ns}/{name}", obj)

    svc("web", "default", {"app": "web"})
    svc("tier", "default", {"tier": "front"})
    svc("other", "default", {"app": "db"})
    svc("headless", "default", None)
    svc("web", "elsewhere", {"app": "web", "zone": "b"})
    pi = nodeinfo.PodInfo(h.pod("p", labels={"app": "web", "tier": "front"}))
    assert str(s._default_selector(pi)) == "app=web,tier=front"
    assert s._default_selector(nodeinfo.PodInfo(h.pod("q", ns="empty", labels={"app": "web"}))) is None
