"""Specification of the controller manager: it starts the controllers and stops them cleanly."""

from __future__ import annotations

import asyncio
import socket

import pytest

from pocketkube.base import pki
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
