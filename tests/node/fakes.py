"""A recording stand-in for rest.Client with just what the node agent calls."""

from __future__ import annotations

import copy
import itertools
from typing import Any

from pocketkube.api import errors


class FakeClient:
    """Objects by path; every call recorded as (verb, path, body)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str, Any]] = []
        self._rv = itertools.count(10)
        self.fail_next: dict[str, errors.APIError] = {}

    def _fail(self, verb: str) -> None:
        err = self.fail_next.pop(verb, None)
        if err is not None:
            raise err

    def _save(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj.setdefault("metadata", {})["resourceVersion"] = str(next(self._rv))
        obj["metadata"].setdefault("uid", "uid-" + obj["metadata"].get("name", ""))
        self.objects[path] = obj
        return copy.deepcopy(obj)

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        meta = body.get("metadata") or {}
        path = gvr.path(namespace or meta.get("namespace", ""), meta.get("name", ""))
        self.calls.append(("create", path, copy.deepcopy(body)))
        self._fail("create")
        if path in self.objects:
            raise errors.AlreadyExists(f'{gvr.resource} "{meta.get("name")}" already exists')
        return self._save(path, body)

    async def get(self, path: str, **_: Any) -> dict[str, Any]:
        self.calls.append(("get", path, None))
        self._fail("get")
        if path not in self.objects:
            raise errors.NotFound(f'"{path}" not found')
        return copy.deepcopy(self.objects[path])

    async def update(self, gvr: Any, body: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        meta = body["metadata"]
        path = gvr.path(meta.get("namespace", ""), meta["name"])
        self.calls.append(("update" + (f"/{subresource}" if subresource else ""), path, copy.deepcopy(body)))
        self._fail("update")
        if path not in self.objects:
            raise errors.NotFound(f'"{path}" not found')
        return self._save(path, body)

    async def update_status(self, gvr: Any, body: dict[str, Any]) -> dict[str, Any]:
        return await self.update(gvr, body, subresource="status")

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge", **_: Any) -> dict[str, Any]:
        self.calls.append((f"patch:{patch_type}", path, copy.deepcopy(body)))
        self._fail("patch")
        base = path.removesuffix("/status")
        if base not in self.objects:
            raise errors.NotFound(f'"{base}" not found')
        obj = self.objects[base]
        for key, value in body.items():
            if isinstance(value, dict) and isinstance(obj.get(key), dict):
                obj[key].update(copy.deepcopy(value))
            else:
                obj[key] = copy.deepcopy(value)
        return self._save(base, obj)

    async def delete(self, path: str, **kw: Any) -> dict[str, Any]:
        self.calls.append(("delete", path, kw))
        self._fail("delete")
        if path not in self.objects:
            raise errors.NotFound(f'"{path}" not found')
        return self.objects.pop(path)

    def verbs(self) -> list[str]:
        return [c[0] for c in self.calls]
