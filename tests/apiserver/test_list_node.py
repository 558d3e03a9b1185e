"""Node-selected pod lists skip other nodes' pods undecoded yet answer exactly what a full scan would."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import test_utils

from pocketkube.api import resources
from pocketkube.apiserver import filters, listing, objects
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


async def test_list_decodes_with_the_cyclic_collector_paused(client: test_utils.TestClient,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A list decodes its items with the cyclic collector off and switches it back on before answering."""
    seen: list[bool] = []
    decode = objects.decode

    def spy(value: bytes, revision: int) -> dict[str, Any]:
        seen.append(gc.isenabled())
        return decode(value, revision)

    monkeypatch.setattr(objects, "decode", spy)
    body = await _get(client, "/api/v1/pods")
    assert len(body["items"]) == len(PODS)
    assert seen and not any(seen)
    assert gc.isenabled()


async def _pages(client: test_utils.TestClient, url: str) -> tuple[list[str], list[Any]]:
    names: list[str] = []
    remaining: list[Any] = []
    cont = ""
    while True:
        body = await _get(client, url + (f"&continue={cont}" if cont else ""))
        names += _names(body)
        remaining.append(body["metadata"].get("remainingItemCount"))
        cont = body["metadata"].get("continue") or ""
        if not cont:
            return names, remaining


async def test_chunks_read_only_their_page_from_the_store(client: test_utils.TestClient,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Paging by 2 returns every pod once, counts what is left, and never asks the store for more than 3."""
    whole = _names(await _get(client, "/api/v1/pods"))
    asked: list[int] = []
    original = memory.MemoryStore.list

    async def spy(self: memory.MemoryStore, prefix: str, **kw: Any) -> Any:
        asked.append(kw.get("limit", 0))
        return await original(self, prefix, **kw)

    monkeypatch.setattr(memory.MemoryStore, "list", spy)
    names, remaining = await _pages(client, "/api/v1/pods?limit=2")
    assert names == whole
    assert remaining == [len(PODS) - 2 * (i + 1) for i in range(len(PODS) // 2)] + [None]
    assert asked and all(0 < n <= 3 for n in asked)


async def test_filtered_chunks_span_store_batches(client: test_utils.TestClient,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A node-selected list read in small store batches pages through exactly the node's pods."""
    monkeypatch.setattr(listing, "_FILTERED_BATCH", 2)
    url = "/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"
    whole = _names(await _get(client, url))
    names, _ = await _pages(client, url + "&limit=1")
    assert names == whole == ["default/on-a", "default/on-a-too", "kube-system/on-a-other-ns"]
