"""Specification of the ResourceQuota controller: when it recounts, what it writes, and how releases reach it."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import errors, quota
from pocketkube.base import clock
from pocketkube.client import informer, rest
from pocketkube.controllers import resourcequota as rqc
from pocketkube.runtime import controller


def rq(hard: dict[str, str], status: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    q: dict[str, Any] = {"apiVersion": "v1", "kind": "ResourceQuota",
                         "metadata": {"name": "q", "namespace": "ns", "resourceVersion": "7"},
                         "spec": {"hard": hard, **spec}}
    if status is not None:
        q["status"] = status
    return q


SYNCED = rq({"pods": "10"}, {"hard": {"pods": "10"}, "used": {"pods": "1"}})


@pytest.mark.parametrize("etype,old,new,want", [
    (informer.ADDED, None, SYNCED, ["ns/q"]),
    # Admission charging usage changes only status.used: no recount, which could race it.
    (informer.MODIFIED, SYNCED, rq({"pods": "10"}, {"hard": {"pods": "10"}, "used": {"pods": "2"}}), []),
    (informer.MODIFIED, SYNCED, rq({"pods": "20"}, {"hard": {"pods": "10"}, "used": {"pods": "1"}}), ["ns/q"]),
    (informer.MODIFIED, SYNCED, rq({"pods": "10"}), ["ns/q"]),
    (informer.MODIFIED, SYNCED, rq({"pods": "10"}, {"hard": {"pods": "10"}, "used": {"pods": "1"}},
                                   scopes=["BestEffort"]), ["ns/q"]),
    (informer.DELETED, SYNCED, None, []),
])
def test_quota_keys(etype, old, new, want):
    """A quota is recounted when it appears or its intent changes, never for usage-only writes."""
    assert rqc.quota_keys(etype, old, new) == want


@pytest.mark.parametrize("env,want", [({}, 300.0), ({rqc.RESYNC_ENV: "2.5"}, 2.5)])
def test_resync_from_env(env, want):
    """The full recount period defaults to kube's 5 minutes and can be set."""
    assert rqc.resync_from_env(env) == want


@pytest.mark.parametrize("raw", ["soon", "0", "-1"])
def test_resync_from_env_refuses_nonsense(raw):
    """A period that is not a positive number of seconds is refused."""
    with pytest.raises(ValueError):
        rqc.resync_from_env({rqc.RESYNC_ENV: raw})


class FakeClient:
    def __init__(self, q: dict[str, Any] | None, items: dict[str, list[dict[str, Any]]],
                 fail: errors.APIError | None = None) -> None:
        self.q, self.items, self.fail = q, items, fail
        self.written: list[dict[str, Any]] = []
        self.listed: list[tuple[str, bool]] = []

    async def list(self, gvr: rest.GVR, namespace: str = "", *, limit: int = 0, continue_: str = "",
                   metadata_only: bool = False, field_selector: str = "", **_: Any) -> dict[str, Any]:
        if gvr.resource == "resourcequotas":
            assert field_selector == "metadata.name=q"
            return {"items": [self.q] if self.q is not None else [], "metadata": {}}
        self.listed.append((gvr.resource, metadata_only))
        return {"items": self.items.get(gvr.resource, []), "metadata": {}}

    async def update_status(self, gvr: rest.GVR, body: dict[str, Any]) -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.written.append(body)
        return body

    async def discover(self) -> rest.Discovery:
        deployments = rest.APIResource("apps", "v1", "deployments", "Deployment", True,
                                       frozenset({"list", "watch", "create"}), True)
        return rest.Discovery([deployments])

    async def watch(self, *a: Any, **kw: Any) -> Any:
        raise errors.Gone("too old")  # pragma: no cover - monitors never get to run in these tests


def pod(phase: str = "Running", cpu: str = "") -> dict[str, Any]:
    res = {"requests": {"cpu": cpu}} if cpu else {}
    return {"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [{"name": "c", "resources": res}]}, "status": {"phase": phase}}


async def test_reconcile_writes_hard_and_recounted_used():
    """The status gets spec.hard and the usage of live objects; finished pods and other objects count right."""
    q = rq({"pods": "10", "requests.cpu": "2", "count/deployments.apps": "3", "secrets": "5"})
    client = FakeClient(q, {"pods": [pod(cpu="500m"), pod(phase="Succeeded", cpu="1")],
                            "deployments": [{"metadata": {"name": "d"}}], "secrets": []})
    ctl = rqc.ResourceQuotaController(client, clock=clock.FakeClock())  # type: ignore[arg-type]
    assert await ctl.reconcile("ns/q") == controller.DONE
    assert client.written[0]["status"] == {
        "hard": {"count/deployments.apps": "3", "pods": "10", "requests.cpu": "2", "secrets": "5"},
        "used": {"count/deployments.apps": "1", "pods": "1", "requests.cpu": "500m", "secrets": "0"}}
    assert client.written[0]["metadata"]["resourceVersion"] == "7"
    # Object counts need only metadata.
    assert ("deployments", True) in client.listed and ("pods", False) in client.listed
    assert set(ctl.monitors) == {("", "pods"), ("apps", "deployments"), ("", "secrets")}
    for task in ctl.monitors.values():
        task.cancel()


async def test_reconcile_skips_unchanged_and_gone_quotas():
    """Nothing is written when the status is already right, or when the quota is gone."""
    synced = FakeClient(rq({"pods": "1"}, {"hard": {"pods": "1"}, "used": {"pods": "0"}}), {"pods": []})
    ctl = rqc.ResourceQuotaController(synced, clock=clock.FakeClock())  # type: ignore[arg-type]
    assert await ctl.reconcile("ns/q") == controller.DONE
    assert synced.written == []
    gone = FakeClient(None, {})
    ctl2 = rqc.ResourceQuotaController(gone, clock=clock.FakeClock())  # type: ignore[arg-type]
    assert await ctl2.reconcile("ns/q") == controller.DONE
    for task in [*ctl.monitors.values(), *ctl2.monitors.values()]:
        task.cancel()


async def test_lost_race_with_admission_requeues():
    """A conflicting write (admission charged meanwhile) is retried from a fresh read."""
    client = FakeClient(rq({"pods": "1"}), {"pods": []}, fail=errors.Conflict("modified"))
    ctl = rqc.ResourceQuotaController(client, clock=clock.FakeClock())  # type: ignore[arg-type]
    assert await ctl.reconcile("ns/q") == controller.REQUEUE
    for task in ctl.monitors.values():
        task.cancel()


@pytest.mark.parametrize("etype,old,new,queued", [
    (informer.DELETED, pod(), None, ["ns/q"]),
    (informer.MODIFIED, pod(), pod(phase="Succeeded"), ["ns/q"]),
    (informer.MODIFIED, pod(), pod(cpu="1"), []),
    (informer.ADDED, None, pod(), []),
])
def test_releases_enqueue_the_quotas_tracking_them(etype, old, new, queued):
    """Deleting a pod, or a pod finishing, queues the namespace's quotas that track pods, and only those."""
    ctl = rqc.ResourceQuotaController(FakeClient(None, {}), clock=clock.FakeClock())  # type: ignore[arg-type]
    services = rq({"services": "1"})
    services["metadata"] = {"name": "svc", "namespace": "ns", "resourceVersion": "1"}
    elsewhere = rq({"pods": "1"})
    elsewhere["metadata"] = {"name": "q", "namespace": "other", "resourceVersion": "1"}
    # Filled behind the handlers' back, so the queue holds only what the release adds.
    ctl.quotas._cache = {informer.key_of(q): q for q in (SYNCED, services, elsewhere)}
    ev = quota.evaluator_for("", "pods")
    assert ev is not None
    ctl.released(ev, etype, old, new)
    assert sorted(ctl.controller.queue._queue) == queued  # type: ignore[attr-defined]
