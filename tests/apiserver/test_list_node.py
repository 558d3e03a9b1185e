"""Node-selected pod lists skip other nodes' pods undecoded yet answer exactly what a full scan would."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import test_utils

from pocketkube.api import resources
from pocketkube.apiserver import filters, objects
from pocketkube.store import memory
from tests.apiserver import harness

HEADERS = {"User-Agent": "test/1"}


def _pod(name: str, ns: str = "default", **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": name},
            "spec": {"containers": [{"name": "c", "image": "i"}], **spec}, "status": {"phase": "Pending"}}


# Pods that name node-a in ways other than their nodeName, and near-misses of its name.
PODS = [
    _pod("on-a", nodeName="node-a"),
    _pod("on-a-other-ns", "kube-system", nodeName="node-a"),
    _pod("on-a2", nodeName="node-a2"),
    _pod("on-b-selecting-a", nodeName="node-b", nodeSelector={"kubernetes.io/hostname": "node-a"}),
    _pod("unscheduled"),
    _pod("unscheduled-selecting-a", nodeSelector={"kubernetes.io/hostname": "node-a"}),
    _pod("on-b", nodeName="node-b"),
    _pod("node-a", nodeName="node-b"),  # its name is the node's
    _pod("on-a-too", nodeName="node-a"),
]


@pytest.fixture
async def client() -> AsyncIterator[test_utils.TestClient]:
    """A server app over a memory store holding PODS."""
    store = memory.MemoryStore()
    await store.start()
    for pod in PODS:
        m = pod["metadata"]
        await store.create(f"/registry/core/pods/{m['namespace']}/{m['name']}", objects.encode(pod))
    async with harness.admin_client(store) as c:
        yield c
    await store.close()


async def _get(client: test_utils.TestClient, url: str) -> dict[str, Any]:
    r = await client.get(url, headers=HEADERS)
    body: dict[str, Any] = orjson.loads(await r.read())
    assert r.status == 200, body
    return body


def _names(body: dict[str, Any]) -> list[str]:
    return [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in body["items"]]


@pytest.mark.parametrize("path", ["/api/v1/pods", "/api/v1/namespaces/default/pods"])
@pytest.mark.parametrize("selector", [
    "spec.nodeName=node-a", "spec.host=node-a", "spec.nodeName=node-b", "spec.nodeName=",
    "spec.nodeName=node-a,metadata.namespace=default", "spec.nodeName=nowhere", "spec.nodeName!=node-a",
])
async def test_selected_list_equals_full_scan(client: test_utils.TestClient, path: str, selector: str) -> None:
    """Every pod the selector picks from a full list is listed, and nothing else, at the same revision."""
    everything = await _get(client, path)
    assert len(everything["items"]) >= 8
    pods = resources.Registry.builtin().get("", "v1", "pods")
    assert pods is not None
    match = filters.build(pods, "", selector)
    assert match is not None
    want = [f"{i['metadata']['namespace']}/{i['metadata']['name']}" for i in everything["items"] if match(i)]
    got = await _get(client, f"{path}?fieldSelector={selector}")
    assert _names(got) == want
    assert got["metadata"]["resourceVersion"] == everything["metadata"]["resourceVersion"]
    assert [i["metadata"]["resourceVersion"] for i in got["items"]] == [
        i["metadata"]["resourceVersion"] for i in everything["items"] if match(i)]


async def test_selected_list_pages_like_a_full_scan(client: test_utils.TestClient) -> None:
    """With limit=1, following continue tokens yields the same pods, one page at a time."""
    seen: list[str] = []
    url = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a&limit=1"
    cont = ""
    for _ in range(len(PODS) + 1):
        body = await _get(client, url + (f"&continue={cont}" if cont else ""))
        seen += _names(body)
        cont = body["metadata"].get("continue", "")
        if not cont:
            break
    assert seen == ["default/on-a", "default/on-a-too", "kube-system/on-a-other-ns"]


@pytest.mark.parametrize("node,want", [
    ("node-a", b'"node-a"'),
    ("ip-10-0-0-1.ec2.internal", b'"ip-10-0-0-1.ec2.internal"'),
    ("", None),
    (None, None),
    ('we"ird', None),
    ("nöde", None),
    ("back\\slash", None),
])
def test_node_needle(node: str | None, want: bytes | None) -> None:
    """Only names every JSON encoder writes alike get a byte test; the rest are decoded and checked."""
    assert filters.node_needle(node) == want
