"""A small in-memory API for workload controller tests: pods, ReplicaSets, Deployments, RCs and Events."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.client import rest

NOW = "2026-01-01T00:00:00Z"


class FakeClient:
    """Objects keyed by URL path; every write is recorded in `calls` as (verb, path, body)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self.fail_creates: dict[str, errors.APIError] = {}
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)
        self._name = itertools.count(1)

    def put(self, gvr: rest.GVR, obj: dict[str, Any]) -> dict[str, Any]:
        """Store an object as if it already existed (no call recorded)."""
        obj = copy.deepcopy(obj)
        m = obj.setdefault("metadata", {})
        m.setdefault("uid", f"uid-{m['name']}")
        m.setdefault("creationTimestamp", NOW)
        m["resourceVersion"] = str(next(self._rv))
        self.objects[gvr.path(m.get("namespace", ""), m["name"])] = obj
        return copy.deepcopy(obj)

    def of(self, gvr: rest.GVR, namespace: str = "default") -> list[dict[str, Any]]:
        prefix = gvr.path(namespace) + "/"
        return [copy.deepcopy(o) for p, o in sorted(self.objects.items())
                if p.startswith(prefix) and "/" not in p[len(prefix):]]

    def verbs(self, verb: str, resource: str = "") -> list[tuple[str, str, Any]]:
        return [c for c in self.calls if c[0] == verb and (not resource or f"/{resource}" in c[1])]

    def _get(self, path: str) -> dict[str, Any]:
        obj = self.objects.get(path)
        if obj is None:
            raise errors.NotFound(f'"{path.rsplit("/", 1)[-1]}" not found')
        return obj

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        return copy.deepcopy(self._get(path))

    async def list(self, gvr: rest.GVR, namespace: str = "", *, label_selector: str = "", **kw: Any
                   ) -> dict[str, Any]:
        sel = selectors.parse(label_selector) if label_selector else selectors.EVERYTHING
        items = [o for o in self.of(gvr, namespace) if sel.matches(o["metadata"].get("labels") or {})]
        return {"items": items, "metadata": {"resourceVersion": "1"}}

    async def create(self, gvr: rest.GVR, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        ns = namespace or body["metadata"].get("namespace", "")
        self.calls.append(("create", gvr.path(ns), copy.deepcopy(body)))
        if gvr.resource in self.fail_creates:
            raise self.fail_creates[gvr.resource]
        obj = copy.deepcopy(body)
        m = obj["metadata"]
        m["namespace"] = ns
        if not m.get("name"):
            m["name"] = f"{m.get('generateName', '')}{next(self._name):05d}"
        path = gvr.path(ns, m["name"])
        if path in self.objects:
            raise errors.AlreadyExists.for_object(gvr.resource, gvr.group, m["name"])
        m["uid"] = f"uid-{next(self._uid)}"
        m["creationTimestamp"] = NOW
        m["generation"] = 1
        m["resourceVersion"] = str(next(self._rv))
        self.objects[path] = obj
        return copy.deepcopy(obj)

    async def update(self, gvr: rest.GVR, body: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        m = body["metadata"]
        path = gvr.path(m.get("namespace", ""), m["name"])
        self.calls.append(("update" + (f"/{subresource}" if subresource else ""), path, copy.deepcopy(body)))
        cur = self._get(path)
        if m.get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise errors.Conflict.modified(gvr.resource, gvr.group, m["name"])
        new = copy.deepcopy(cur)
        if subresource == "status":
            new["status"] = copy.deepcopy(body.get("status"))
        else:
            status = new.get("status")
            new = copy.deepcopy(body)
            if status is not None:
                new["status"] = status
            if new.get("spec") != cur.get("spec"):
                new["metadata"]["generation"] = int(cur["metadata"].get("generation") or 1) + 1
        new["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[path] = new
        return copy.deepcopy(new)

    async def update_status(self, gvr: rest.GVR, body: dict[str, Any]) -> dict[str, Any]:
        return await self.update(gvr, body, subresource="status")

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge", **kw: Any) -> dict[str, Any]:
        self.calls.append(("patch", path, copy.deepcopy(body)))
        cur = copy.deepcopy(self._get(path))
        pm = body.get("metadata") or {}
        if "uid" in pm and pm["uid"] != cur["metadata"]["uid"]:
            raise errors.Conflict("uid precondition failed")
        if "annotations" in pm:
            cur["metadata"]["annotations"] = {**(cur["metadata"].get("annotations") or {}), **pm["annotations"]}
        for ref in pm.get("ownerReferences") or []:
            refs = [r for r in cur["metadata"].get("ownerReferences") or [] if r.get("uid") != ref.get("uid")]
            if ref.get("$patch") != "delete":
                refs.append(ref)
            cur["metadata"]["ownerReferences"] = refs
        cur["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[path] = cur
        return copy.deepcopy(cur)

    async def delete(self, path: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("delete", path, None))
        return self.objects.pop(path, None) or self._get(path)
