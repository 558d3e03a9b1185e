"""pods/binding through the real server app: the write, its Status, and the refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp import test_utils

from pocketkube.store import memory
from tests.apiserver import harness

HEADERS = {"Content-Type": "application/json", "User-Agent": "test/1"}
PODS = "/api/v1/namespaces/default/pods"
MESSAGE = 'Operation cannot be fulfilled on pods "p1": pod p1 is already assigned to node "n1"'


@pytest.fixture
async def client() -> AsyncIterator[test_utils.TestClient]:
    """A server app over a memory store with one unbound pod p1."""
    store = memory.MemoryStore()
    await store.start()
    async with harness.admin_client(store) as c:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p1"},
               "spec": {"containers": [{"name": "c", "image": "i"}]}}
        r = await c.post(PODS, data=orjson.dumps(pod), headers=HEADERS)
        assert r.status == 201, await r.text()
        yield c
    await store.close()


def _binding(node: str) -> bytes:
    return orjson.dumps({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p1"},
                         "target": {"kind": "Node", "name": node}})


async def test_binding_sets_node_and_condition(client: test_utils.TestClient) -> None:
    """A binding answers 201 Success and stores nodeName and a PodScheduled=True condition."""
    before = orjson.loads(await (await client.get(PODS + "/p1")).read())
    r = await client.post(PODS + "/p1/binding", data=_binding("n1"), headers=HEADERS)
    assert r.status == 201
    assert orjson.loads(await r.read()) == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                            "status": "Success", "code": 201}
    pod = orjson.loads(await (await client.get(PODS + "/p1")).read())
    assert pod["spec"]["nodeName"] == "n1"
    assert int(pod["metadata"]["resourceVersion"]) > int(before["metadata"]["resourceVersion"])
    conds = pod["status"]["conditions"]
    assert [(c["type"], c["status"], c["lastProbeTime"]) for c in conds] == [("PodScheduled", "True", None)]


async def test_second_binding_conflicts(client: test_utils.TestClient) -> None:
    """Binding a bound pod is a 409 naming the node it is on."""
    assert (await client.post(PODS + "/p1/binding", data=_binding("n1"), headers=HEADERS)).status == 201
    r = await client.post(PODS + "/p1/binding", data=_binding("n2"), headers=HEADERS)
    out = orjson.loads(await r.read())
    assert r.status == 409 and out["reason"] == "Conflict"
    assert out["message"] == MESSAGE


async def test_dry_run_binding_changes_nothing(client: test_utils.TestClient) -> None:
    """A dry-run binding answers Success and leaves the pod unbound and unchanged."""
    before = await (await client.get(PODS + "/p1")).read()
    r = await client.post(PODS + "/p1/binding?dryRun=All", data=_binding("n1"), headers=HEADERS)
    assert r.status == 201
    assert await (await client.get(PODS + "/p1")).read() == before
