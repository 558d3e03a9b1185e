"""deletecollection answers in the shape the Accept header asks for, as kube's transformResponseObject does."""

from __future__ import annotations

from typing import Any

import orjson

from tests.apiserver import harness

CMS = "/api/v1/namespaces/default/configmaps"


async def test_deletecollection_answers_metadata_when_asked(store: Any) -> None:
    """A metadata client's deletecollection gets a PartialObjectMetadataList of what it deleted, without data."""
    async with harness.admin_client(store) as c:
        for name in ("a", "b"):
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "x" * 100}}
            r = await c.post(CMS, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
            assert r.status == 201
        r = await c.delete(CMS, headers={
            "Accept": "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json"})
        assert r.status == 200
        out = await r.json()
        assert out["kind"] == "PartialObjectMetadataList" and out["apiVersion"] == "meta.k8s.io/v1"
        assert sorted(i["metadata"]["name"] for i in out["items"]) == ["a", "b"]
        assert all("data" not in i and i["kind"] == "PartialObjectMetadata" for i in out["items"])
        assert (await (await c.get(CMS)).json())["items"] == []
