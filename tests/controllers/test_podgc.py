"""Specification of pod GC: orphaned pods after quarantine, terminated pods over the threshold, stuck deletions."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.controllers import podgc

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


def pod(name: str, *, phase: str = "Running", node: str = "n1", created: int = 0, deleting: bool = False,
        reason: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}",
                            "creationTimestamp": clock.rfc3339(at(created))}
    if deleting:
        meta["deletionTimestamp"] = clock.rfc3339(at(0))
    status: dict[str, Any] = {"phase": phase}
    if reason:
        status["reason"] = reason
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


def names(pods):
    return [p["metadata"]["name"] for p in pods]


@pytest.mark.parametrize("pods,threshold,want", [
    ([pod("a", phase="Succeeded"), pod("b", phase="Failed")], 2, []),
    ([pod("a", phase="Succeeded", created=5), pod("b", phase="Failed", created=1), pod("c")], 1, ["b"]),
    # Evicted pods go first, then the oldest, then by name.
    ([pod("a", phase="Succeeded", created=1), pod("z", phase="Failed", created=9, reason="Evicted"),
      pod("c", phase="Failed", created=1), pod("b", phase="Failed", created=1)], 1, ["z", "a", "b"]),
    ([pod("a", phase="Succeeded")], 0, []),
    ([pod("a", phase="Pending"), pod("b", phase="Unknown"), pod("c")], 1, []),
])
def test_terminated_over_threshold(pods, threshold, want):
    """Only terminated pods past --terminated-pod-gc-threshold are collected (0 disables it)."""
    assert names(podgc.terminated_over_threshold(pods, threshold)) == want


def test_unscheduled_terminating():
    """A pod being deleted that no node holds is deleted for good; scheduled ones wait for their kubelet."""
    pods = [pod("a", node="", deleting=True), pod("b", deleting=True), pod("c", node="")]
    assert names(podgc.unscheduled_terminating(pods)) == ["a"]


def test_terminating_out_of_service():
    """Terminating pods on a not-ready node tainted out-of-service are force-deleted."""
    nodes = {"n1": {"spec": {"taints": [{"key": podgc.OUT_OF_SERVICE, "effect": "NoExecute"}]},
                    "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}},
             "n2": {"spec": {"taints": [{"key": podgc.OUT_OF_SERVICE, "effect": "NoExecute"}]},
                    "status": {"conditions": [{"type": "Ready", "status": "True"}]}}}
    pods = [pod("a", deleting=True), pod("b", node="n2", deleting=True), pod("c")]
    assert names(podgc.terminating_out_of_service(pods, nodes)) == ["a"]


def test_quarantine():
    """A missing node's pods wait out the quarantine; a node that comes back is forgotten."""
    pods = [pod("a", node="gone"), pod("b", node="n1"), pod("c", node="")]
    since, due = podgc.quarantine(pods, {"n1"}, {}, at(0), seconds=40)
    assert since == {"gone": at(0)} and due == set()
    since, due = podgc.quarantine(pods, {"n1"}, since, at(40), seconds=40)
    assert due == {"gone"}
    since, due = podgc.quarantine(pods, {"n1", "gone"}, since, at(50), seconds=40)
    assert since == {} and due == set()


class FakeClient:
    def __init__(self, nodes: set[str]) -> None:
        self.nodes = nodes
        self.calls: list[tuple[str, str, Any]] = []

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        if name not in self.nodes:
            raise errors.NotFound.for_object("nodes", "", name)
        return {"metadata": {"name": name}}

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge", metadata_only: bool = False) -> Any:
        self.calls.append(("patch", path, body))
        return {}

    async def delete(self, path: str, **kw: Any) -> Any:
        self.calls.append(("delete", path, kw))
        return {}


async def test_gc_pass_deletes_orphans_after_quarantine():
    """Pods of a deleted node are marked Failed with DisruptionTarget DeletionByPodGC, then force-deleted."""
    fake = clock.FakeClock(T0)
    client = FakeClient({"n1"})
    ctl = podgc.PodGCController(client, clock=fake)  # type: ignore[arg-type]
    ctl.nodes._replace([{"metadata": {"name": "n1"}}])
    ctl.pods._replace([pod("a", node="gone"), pod("b", node="n1"), pod("c", node="", deleting=True)])
    await ctl.gc()
    # Only the unscheduled terminating pod goes at once; the orphan waits out the quarantine.
    assert [c[1] for c in client.calls if c[0] == "delete"] == ["/api/v1/namespaces/default/pods/c"]
    client.calls.clear()
    fake.advance(40)
    await ctl.gc()
    patch = next(c for c in client.calls if c[0] == "patch" and c[1].endswith("/pods/a/status"))
    assert patch[2]["status"]["phase"] == "Failed"
    assert patch[2]["status"]["conditions"][0]["reason"] == "DeletionByPodGC"
    assert patch[2]["status"]["conditions"][0]["message"] == "PodGC: node no longer exists"
    delete = next(c for c in client.calls if c[0] == "delete" and c[1].endswith("/pods/a"))
    assert delete[2]["grace_period_seconds"] == 0
    assert not any(c[1].endswith("/pods/b") for c in client.calls)
