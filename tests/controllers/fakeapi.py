"""An in-memory stand-in for the API server with kube's deletion semantics, for controller tests."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from pocketkube.api import errors
from pocketkube.client import rest

NAMESPACES = rest.APIResource("", "v1", "namespaces", "Namespace", False,
                              frozenset({"get", "list", "watch", "delete", "update", "patch"}), True)
CONFIGMAPS = rest.APIResource("", "v1", "configmaps", "ConfigMap", True,
                              frozenset({"get", "list", "watch", "delete", "deletecollection", "create",
                                         "update", "patch"}), True)
WIDGETS = rest.APIResource("example.com", "v1", "widgets", "Widget", True,
                           frozenset({"get", "list", "watch", "delete", "create", "update", "patch"}), True)
BINDINGS = rest.APIResource("", "v1", "bindings", "Binding", True, frozenset({"create"}), True)
RESOURCES = [NAMESPACES, CONFIGMAPS, WIDGETS, BINDINGS]


class FakeAPI:
    """Objects keyed by path; writes recorded in `changes` as watch events would report them."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.changes: list[tuple[str, rest.APIResource, dict[str, Any]]] = []
        self.calls: list[tuple[str, str, Any]] = []
        self._rv = itertools.count(100)
        self._uid = itertools.count(1)
        self.discovery_failed: dict[str, str] = {}

    # --- helpers for tests

    def add(self, res: rest.APIResource, name: str, namespace: str = "", **meta: Any) -> dict[str, Any]:
        obj = {"apiVersion": f"{res.group}/{res.version}" if res.group else res.version, "kind": res.kind,
               "metadata": {"name": name, "uid": meta.pop("uid", f"uid-{name}"), **meta}}
        if namespace:
            obj["metadata"]["namespace"] = namespace
        return self._store(res, obj, "ADDED")

    def find(self, res: rest.APIResource, name: str, namespace: str = "") -> dict[str, Any] | None:
        return self.objects.get(res.gvr.path(namespace, name))

    def _store(self, res: rest.APIResource, obj: dict[str, Any], etype: str) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = str(next(self._rv))
        self.objects[self._path(res, obj)] = obj
        self.changes.append((etype, res, copy.deepcopy(obj)))
        return copy.deepcopy(obj)

    def _remove(self, res: rest.APIResource, obj: dict[str, Any]) -> None:
        del self.objects[self._path(res, obj)]
        self.changes.append(("DELETED", res, copy.deepcopy(obj)))

    @staticmethod
    def _path(res: rest.APIResource, obj: dict[str, Any]) -> str:
        m = obj["metadata"]
        return res.gvr.path(m.get("namespace", "") if res.namespaced else "", m["name"])

    def _res_of(self, path: str) -> rest.APIResource:
        parts = path.strip("/").split("/")
        group, rest_parts = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
        resource = rest_parts[2] if rest_parts[0] == "namespaces" and len(rest_parts) > 2 else rest_parts[0]
        for r in RESOURCES:
            if (r.group, r.resource) == (group, resource):
                return r
        raise errors.NotFound.resource()

    def _get(self, path: str) -> dict[str, Any]:
        obj = self.objects.get(path)
        if obj is None:
            raise errors.NotFound(f'"{path.rsplit("/", 1)[-1]}" not found')
        return obj

    # --- the client surface the controllers use

    async def discover(self) -> rest.Discovery:
        return rest.Discovery(list(RESOURCES), dict(self.discovery_failed))

    async def get(self, path: str, *, metadata_only: bool = False) -> dict[str, Any]:
        obj = copy.deepcopy(self._get(path))
        if metadata_only:
            return {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": obj["metadata"]}
        return obj

    async def list(self, gvr: rest.GVR, namespace: str = "", **kw: Any) -> dict[str, Any]:
        prefix = gvr.path(namespace) + "/"
        items = [copy.deepcopy(o) for p, o in sorted(self.objects.items())
                 if p.startswith(prefix) and p.count("/") == prefix.count("/")]
        return {"items": items, "metadata": {"resourceVersion": "1"}}

    async def create(self, gvr: rest.GVR, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        self.calls.append(("create", gvr.path(namespace or body["metadata"].get("namespace", "")), body))
        res = self._res_of(gvr.path())
        obj = copy.deepcopy(body)
        obj["metadata"].setdefault("uid", f"uid-{next(self._uid)}")
        if self._path(res, obj) in self.objects:
            raise errors.AlreadyExists.for_object(res.resource, res.group, obj["metadata"]["name"])
        return self._store(res, obj, "ADDED")

    async def update(self, gvr: rest.GVR, body: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        res = self._res_of(gvr.path())
        path = self._path(res, body)
        self.calls.append(("update" + (f"/{subresource}" if subresource else ""), path, copy.deepcopy(body)))
        cur = self._get(path)
        if body["metadata"].get("resourceVersion") != cur["metadata"]["resourceVersion"]:
            raise errors.Conflict.modified(res.resource, res.group, body["metadata"]["name"])
        new = copy.deepcopy(cur)
        if subresource == "status":
            new["status"] = copy.deepcopy(body.get("status"))
        elif subresource == "finalize":
            new.setdefault("spec", {})["finalizers"] = list((body.get("spec") or {}).get("finalizers") or [])
            if new["metadata"].get("deletionTimestamp") and not new["spec"]["finalizers"]:
                self._remove(res, cur)
                return new
        else:
            new = copy.deepcopy(body)
        return self._store(res, new, "MODIFIED")

    async def update_status(self, gvr: rest.GVR, body: dict[str, Any]) -> dict[str, Any]:
        return await self.update(gvr, body, subresource="status")

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge",
                    metadata_only: bool = False) -> dict[str, Any]:
        self.calls.append(("patch", path, copy.deepcopy(body)))
        res = self._res_of(path)
        cur = self._get(path)
        pm = body.get("metadata") or {}
        if pm.get("resourceVersion") and pm["resourceVersion"] != cur["metadata"]["resourceVersion"]:
            raise errors.Conflict.modified(res.resource, res.group, cur["metadata"]["name"])
        new = copy.deepcopy(cur)
        for k, v in pm.items():
            if k in ("resourceVersion", "uid"):
                continue
            if v is None:
                new["metadata"].pop(k, None)
            else:
                new["metadata"][k] = v
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self._remove(res, cur)
            return new
        return self._store(res, new, "MODIFIED")

    async def delete(self, path: str, *, propagation_policy: str = "",
                     preconditions: dict[str, str] | None = None, **kw: Any) -> dict[str, Any]:
        self.calls.append(("delete", path, propagation_policy))
        res = self._res_of(path)
        cur = self._get(path)
        if preconditions and preconditions.get("uid") != cur["metadata"]["uid"]:
            raise errors.Conflict("Precondition failed: UID in precondition: "
                                  f"{preconditions.get('uid')}, UID in object meta: {cur['metadata']['uid']}")
        new = copy.deepcopy(cur)
        fins = list(new["metadata"].get("finalizers") or [])
        extra = {"Orphan": "orphan", "Foreground": "foregroundDeletion"}.get(propagation_policy)
        if extra and extra not in fins:
            fins.append(extra)
        if res is NAMESPACES and (new.get("spec") or {}).get("finalizers"):
            new["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
            new.setdefault("status", {})["phase"] = "Terminating"
            return self._store(res, new, "MODIFIED")
        if not fins:
            self._remove(res, cur)
            return new
        new["metadata"]["finalizers"] = fins
        new["metadata"].setdefault("deletionTimestamp", "2026-01-01T00:00:00Z")
        return self._store(res, new, "MODIFIED")

    async def delete_collection(self, gvr: rest.GVR, namespace: str = "", *,
                                propagation_policy: str = "", **kw: Any) -> dict[str, Any]:
        self.calls.append(("deletecollection", gvr.path(namespace), propagation_policy))
        for item in (await self.list(gvr, namespace))["items"]:
            await self.delete(gvr.path(namespace, item["metadata"]["name"]), propagation_policy=propagation_policy)
        return {"kind": "Status", "status": "Success"}
