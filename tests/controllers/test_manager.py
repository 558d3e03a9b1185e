"""Specification of the controller manager: it starts the controllers and stops them cleanly."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pocketkube.base import clock, pki
from pocketkube.client import informer
from pocketkube.controllers import manager


@pytest.fixture(scope="module")
def cluster_pki(tmp_path_factory):
    return pki.ensure_pki(str(tmp_path_factory.mktemp("pki")))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_client_identity(cluster_pki):
    """The manager's client writes as kube-controller-manager over TLS with the cluster CA."""
    client = await manager.client_for("https://127.0.0.1:1", cluster_pki)
    try:
        assert client.field_manager == "kube-controller-manager"
        assert client.user_agent.startswith("kube-controller-manager/")
        assert client._ssl is not None
    finally:
        await client.close()


async def test_start_returns_tasks_that_cancel_cleanly(cluster_pki):
    """start() returns one task per controller; with no server reachable they retry, and cancel ends them."""
    tasks = await manager.start(url=f"https://127.0.0.1:{_free_port()}", pki=cluster_pki)
    names = [t.get_name() for t in tasks]
    assert {"namespace-controller", "garbagecollector-controller"} <= set(names)
    assert len(names) == len(set(names))
    await asyncio.sleep(0.2)
    assert not any(t.done() for t in tasks)
    for t in tasks:
        t.cancel()
    done, pending = await asyncio.wait(tasks, timeout=2)
    assert not pending
    assert all(t.cancelled() for t in done)


def _informers_of(obj: object) -> list[informer.Informer]:
    """Every informer an object (or its `cache` helper) holds as an attribute."""
    found = [v for v in vars(obj).values() if isinstance(v, informer.Informer)]
    cache = getattr(obj, "cache", None)
    return found + (_informers_of(cache) if cache is not None and hasattr(cache, "__dict__") else [])


async def test_controllers_share_one_informer_per_resource(cluster_pki):
    """Every controller that caches pods (or nodes) gets the same informer: one list+watch for all of them."""
    client = await manager.client_for("https://127.0.0.1:1", cluster_pki)
    try:
        controllers = manager._controllers(client, pki=cluster_pki, clock=clock.FakeClock())
        by_resource: dict[str, list[informer.Informer]] = {}
        for _, ctl in controllers:
            for inf in _informers_of(ctl):
                by_resource.setdefault(inf.gvr.resource, []).append(inf)
        for resource in ("pods", "nodes", "persistentvolumeclaims", "jobs", "services"):
            users = by_resource[resource]
            assert len(users) >= 2 and len({id(i) for i in users}) == 1, resource
        assert len(by_resource["pods"]) >= 12
    finally:
        await client.close()
