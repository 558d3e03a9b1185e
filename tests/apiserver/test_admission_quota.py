"""Specification of ResourceQuota admission inside a real API server pipeline: exact under concurrency, dry run free."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp import test_utils

from pocketkube.api import conversion, errors, resources
from pocketkube.apiserver import admission_quota, context, create, objects, requestinfo
from pocketkube.base import clock as clock_mod
from pocketkube.store import memory


async def make_server() -> context.Server:
    store = memory.MemoryStore()
    await store.start()
    server = context.Server(registry=resources.Registry.builtin(), objects=objects.Objects(store, conversion.convert),
                            store=store, clock=clock_mod.FakeClock())
    server.admission = [admission_quota.resource_quota]
    return server


def make_call(server: context.Server, resource: str = "pods", *, query: str = "") -> context.Call:
    path = f"/api/v1/namespaces/ns/{resource}"
    res = server.registry.get("", "v1", resource)
    assert res is not None
    request = test_utils.make_mocked_request("POST", path + (f"?{query}" if query else ""))
    return context.Call(request=request, info=requestinfo.parse("POST", path), res=res,
                        user=context.User("admin"), query=dict(request.query))


async def add_quota(server: context.Server, hard: dict[str, str], used: dict[str, str] | None = None) -> None:
    q = {"apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "q", "namespace": "ns"},
         "spec": {"hard": hard}}
    if used is not None:
        q["status"] = {"hard": hard, "used": used}
    res = server.registry.get("", "v1", "resourcequotas")
    assert res is not None
    await server.objects.create(res, q)


async def used(server: context.Server) -> dict[str, str]:
    res = server.registry.get("", "v1", "resourcequotas")
    assert res is not None
    q = await server.objects.get(res, "ns", "q")
    return dict(q["status"]["used"])


def pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"containers": [{"name": "c", "image": "nginx"}]}}


async def test_concurrent_creates_admit_exactly_the_quota():
    """Twenty pods created at once against pods=10: exactly ten are admitted and status.used says 10."""
    server = await make_server()
    await add_quota(server, {"pods": "10"}, {"pods": "0"})
    results = await asyncio.gather(*(create.create_object(server, make_call(server), pod(f"p{i}"))
                                     for i in range(20)), return_exceptions=True)
    refused = [r for r in results if isinstance(r, errors.Forbidden)]
    assert len(refused) == 10 and len([r for r in results if isinstance(r, dict)]) == 10
    assert "exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10" in refused[0].message
    assert await used(server) == {"pods": "10"}


async def test_forbidden_status_names_the_object():
    """The refusal is a 403 whose message and details name the pod, as admission.NewForbidden builds them."""
    server = await make_server()
    await add_quota(server, {"pods": "0"}, {"pods": "0"})
    with pytest.raises(errors.Forbidden) as e:
        await create.create_object(server, make_call(server), pod("x"))
    assert e.value.status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'pods "x" is forbidden: exceeded quota: q, requested: pods=1, used: pods=0, limited: pods=0',
        "reason": "Forbidden", "details": {"name": "x", "kind": "pods"}, "code": 403}


async def test_dry_run_and_duplicate_names_are_not_charged():
    """A dry run is checked but not charged, and neither is a create that will fail with AlreadyExists."""
    server = await make_server()
    await add_quota(server, {"pods": "2"}, {"pods": "0"})
    await create.create_object(server, make_call(server, query="dryRun=All"), pod("a"))
    assert await used(server) == {"pods": "0"}
    await create.create_object(server, make_call(server), pod("a"))
    with pytest.raises(errors.AlreadyExists):
        await create.create_object(server, make_call(server), pod("a"))
    assert await used(server) == {"pods": "1"}


async def test_lost_race_is_retried_against_the_fresh_quota(monkeypatch):
    """When the quota changed after it was read, the charge is checked again against the new version."""
    server = await make_server()
    await add_quota(server, {"pods": "5"}, {"pods": "1"})
    res = server.registry.get("", "v1", "resourcequotas")
    assert res is not None
    stale = [await server.objects.get(res, "ns", "q")]
    # Meanwhile the quota controller recounts: two pods are in use.
    q = await server.objects.get(res, "ns", "q")
    q["status"]["used"] = {"pods": "2"}
    await server.objects.update(res, q, expected_revision=int(q["metadata"]["resourceVersion"]))
    real = admission_quota._quotas

    async def first_stale(server: context.Server, quota_res: Any, namespace: str) -> list[dict[str, Any]]:
        if stale:
            return [stale.pop()]
        return await real(server, quota_res, namespace)

    monkeypatch.setattr(admission_quota, "_quotas", first_stale)
    await create.create_object(server, make_call(server), pod("a"))
    assert await used(server) == {"pods": "3"}


async def test_objects_outside_quota_pass_untouched():
    """Without quotas, or for resources no quota tracks, admission does nothing."""
    server = await make_server()
    await create.create_object(server, make_call(server), pod("a"))
    await add_quota(server, {"services": "1"}, {"services": "0"})
    await create.create_object(server, make_call(server), pod("b"))
    assert await used(server) == {"services": "0"}
