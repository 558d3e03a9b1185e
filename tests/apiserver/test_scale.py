"""The scale subresource: writes that name no resourceVersion survive a concurrent update, as in kube."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pocketkube.apiserver import objects
from tests.apiserver import harness

DEPLOYMENTS = "/apis/apps/v1/namespaces/default/deployments"
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


def _race_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make the first read of the Deployment go stale: a status write lands right after it (a controller's)."""
    real_get = objects.Objects.get
    raced: list[int] = []

    async def get(self: objects.Objects, res: Any, namespace: str, name: str, *args: Any, **kw: Any) -> Any:
        obj = await real_get(self, res, namespace, name, *args, **kw)
        if res.resource == "deployments" and not raced:
            raced.append(1)
            other = objects.clone(obj)
            other.setdefault("status", {})["observedGeneration"] = 1
            await self.update(res, other, expected_revision=int(obj["metadata"]["resourceVersion"]))
        return obj

    monkeypatch.setattr(objects.Objects, "get", get)
    return raced


@pytest.mark.parametrize(("method", "ctype", "body"), [
    ("PATCH", "application/merge-patch+json", {"spec": {"replicas": 3}}),
    ("PATCH", "application/json-patch+json", [{"op": "replace", "path": "/spec/replicas", "value": 3}]),
    ("PUT", "application/json", {"kind": "Scale", "apiVersion": "autoscaling/v1",
                                 "metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": 3}}),
])
async def test_scale_write_without_version_retries_a_conflict(store: Any, monkeypatch: pytest.MonkeyPatch,
                                                              method: str, ctype: str, body: Any) -> None:
    """`kubectl scale` (a merge patch) and a Scale PUT without resourceVersion apply despite a racing update."""
    async with harness.admin_client(store) as c:
        r = await c.post(DEPLOYMENTS, data=orjson.dumps(DEPLOYMENT), headers={"Content-Type": "application/json"})
        assert r.status == 201
        raced = _race_once(monkeypatch)
        r = await c.request(method, f"{DEPLOYMENTS}/web/scale", data=orjson.dumps(body),
                            headers={"Content-Type": ctype})
        assert r.status == 200, await r.text()
        assert raced and (await r.json())["spec"]["replicas"] == 3
        got = await (await c.get(f"{DEPLOYMENTS}/web")).json()
        assert got["spec"]["replicas"] == 3 and got["status"]["observedGeneration"] == 1


async def test_scale_write_with_a_stale_version_conflicts(store: Any) -> None:
    """A Scale naming an old resourceVersion gets kube's 409 Conflict, not a retry."""
    async with harness.admin_client(store) as c:
        r = await c.post(DEPLOYMENTS, data=orjson.dumps(DEPLOYMENT), headers={"Content-Type": "application/json"})
        rv = (await r.json())["metadata"]["resourceVersion"]
        r = await c.patch(f"{DEPLOYMENTS}/web/scale", data=orjson.dumps({"spec": {"replicas": 2}}),
                          headers={"Content-Type": "application/merge-patch+json"})
        assert r.status == 200
        r = await c.patch(f"{DEPLOYMENTS}/web/scale",
                          data=orjson.dumps({"metadata": {"resourceVersion": rv}, "spec": {"replicas": 4}}),
                          headers={"Content-Type": "application/merge-patch+json"})
        assert r.status == 409
        status = await r.json()
        assert status["reason"] == "Conflict" and "the object has been modified" in status["message"]
