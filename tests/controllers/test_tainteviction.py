"""Specification of the taint eviction controller: NoExecute taints, tolerations and tolerationSeconds."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pocketkube.base import clock
from pocketkube.controllers import tainteviction as te
from pocketkube.runtime import controller

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
UR = {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}
NR = {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z"}
DEFAULT_TOLS = [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                 "tolerationSeconds": 300}]


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def pod(tolerations=None, *, created: str = "2025-12-31T00:00:00Z", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "p", "namespace": "default", "uid": "u1", "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"nodeName": "n1", "tolerations": tolerations or []}, "status": {}}


def node(*taints: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "n1"}, "spec": {"taints": list(taints)}}


@pytest.mark.parametrize("tol,taint,want", [
    ({"key": "k", "operator": "Exists"}, {"key": "k", "effect": "NoExecute"}, True),
    ({"operator": "Exists"}, {"key": "anything", "effect": "NoSchedule"}, True),
    ({"key": "k", "value": "v"}, {"key": "k", "value": "v", "effect": "NoExecute"}, True),
    ({"key": "k", "operator": "Equal", "value": "v"}, {"key": "k", "value": "w", "effect": "NoExecute"}, False),
    ({"key": "k", "operator": "Exists", "effect": "NoSchedule"}, {"key": "k", "effect": "NoExecute"}, False),
    ({"key": "j", "operator": "Exists"}, {"key": "k", "effect": "NoExecute"}, False),
    ({"key": "k", "operator": "Bogus"}, {"key": "k", "effect": "NoExecute"}, False),
])
def test_tolerates(tol, taint, want):
    """Toleration matching as core/v1 ToleratesTaint: empty key/effect match all, Exists ignores the value."""
    assert te.tolerates(tol, taint) is want


@pytest.mark.parametrize("used,want", [
    ([], 0.0),
    ([{"tolerationSeconds": 300}, {"tolerationSeconds": 60}], 60.0),
    ([{"tolerationSeconds": 300}, {}], 300.0),
    ([{}], None),
    ([{"tolerationSeconds": 0}, {"tolerationSeconds": 60}], 0.0),
    ([{"tolerationSeconds": -5}], 0.0),
])
def test_min_toleration_seconds(used, want):
    """The shortest tolerationSeconds wins; none at all tolerates forever; zero or less means now."""
    assert te.min_toleration_seconds(used) == want


@pytest.mark.parametrize("p,n,now,want", [
    (pod(), node(), 0, ("keep", 0.0)),
    (pod(), node(UR), 0, ("evict", 0.0)),
    (pod(DEFAULT_TOLS), node(UR), 10, ("wait", 290.0)),
    (pod(DEFAULT_TOLS), node(UR), 300, ("evict", 0.0)),
    (pod(DEFAULT_TOLS), node(UR, NR), 100, ("wait", 200.0)),
    (pod([{"operator": "Exists"}]), node(UR), 10_000, ("keep", 0.0)),
    (pod([{"key": "node.kubernetes.io/unreachable", "operator": "Exists"}]), node(UR, NR), 0, ("evict", 0.0)),
    # A pod bound after the taint arrived gets its full tolerationSeconds from its own creation.
    (pod(DEFAULT_TOLS, created="2026-01-01T00:01:40Z"), node(UR), 200, ("wait", 200.0)),
    (pod(deleting=True), node(UR), 0, ("keep", 0.0)),
    (pod(), None, 0, ("keep", 0.0)),
])
def test_plan(p, n, now, want):
    """Pods not tolerating a NoExecute taint go now; tolerating ones after tolerationSeconds; forever ones stay."""
    assert te.plan(p, n, at(now)) == want


class FakeClient:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge", metadata_only: bool = False) -> Any:
        self.calls.append(("patch", path, body))
        return {}

    async def delete(self, path: str, **kw: Any) -> Any:
        self.calls.append(("delete", path, kw))
        return {}

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        self.calls.append(("event", body["reason"], body["message"]))
        return body


async def test_reconcile_waits_then_evicts_with_condition():
    """A pod tolerating for 300 s is requeued, then marked DisruptionTarget and deleted with an event."""
    fake = clock.FakeClock(T0)
    client = FakeClient()
    ctl = te.TaintEvictionController(client, clock=fake)  # type: ignore[arg-type]
    ctl.nodes._replace([node(UR)])
    ctl.pods._replace([pod(DEFAULT_TOLS)])
    out = await ctl.reconcile("default/p")
    assert out == controller.requeue_after(300.0)
    fake.advance(300)
    assert await ctl.reconcile("default/p") == controller.DONE
    assert client.calls[0] == ("event", "TaintManagerEviction", "Marking for deletion Pod default/p")
    kind, path, body = client.calls[1]
    assert (kind, path) == ("patch", "/api/v1/namespaces/default/pods/p/status")
    assert body["status"]["conditions"][0]["reason"] == "DeletionByTaintManager"
    assert client.calls[2][:2] == ("delete", "/api/v1/namespaces/default/pods/p")


async def test_reconcile_cancels_when_taint_goes():
    """A scheduled eviction whose taint went away is cancelled with an event."""
    client = FakeClient()
    ctl = te.TaintEvictionController(client, clock=clock.FakeClock(T0))  # type: ignore[arg-type]
    ctl.nodes._replace([node(UR)])
    ctl.pods._replace([pod(DEFAULT_TOLS)])
    await ctl.reconcile("default/p")
    ctl.nodes._replace([node()])
    assert await ctl.reconcile("default/p") == controller.DONE
    assert client.calls == [("event", "TaintManagerEviction", "Cancelling deletion of Pod default/p")]


def test_node_taint_change_enqueues_its_pods():
    """Only a change of a node's NoExecute taints sends its pods round."""
    ctl = te.TaintEvictionController(FakeClient(), clock=clock.FakeClock(T0))  # type: ignore[arg-type]
    ctl.pods._replace([pod()])
    assert ctl._node_pods("MODIFIED", node(), node(UR)) == ["default/p"]
    assert ctl._node_pods("MODIFIED", node(UR), node(UR)) == []
