"""A container's environment: env and envFrom resolved from ConfigMaps, Secrets and pod fields, $(VAR) expanded."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.client import rest
from pocketkube.node import satoken, volumes

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# What every container starts from: a usable PATH and HOME, never the agent's own environment.
BASE_KEYS = ("PATH", "HOME", "LANG")


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion: defined names are replaced, $$ escapes, anything else stays as written."""
    out, i = [], 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i):
            end = text.find(")", i + 2)
            if end < 0:
                out.append(text[i:])
                break
            name = text[i + 2:end]
            out.append(env[name] if name in env else text[i:end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


class _Objects:
    """ConfigMaps and Secrets of one namespace, each read once per resolution."""

    def __init__(self, client: rest.Client, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self._cache: dict[tuple[str, str], dict[str, str] | None] = {}

    async def data(self, kind: str, name: str) -> dict[str, str] | None:
        key = (kind, name)
        if key not in self._cache:
            gvr = volumes.CONFIGMAPS if kind == "ConfigMap" else volumes.SECRETS
            try:
                obj = await self.client.get(gvr.path(self.namespace, name))
            except errors.NotFound:
                self._cache[key] = None
            else:
                raw = volumes.configmap_data(obj) if kind == "ConfigMap" else volumes.secret_data(obj)
                self._cache[key] = {k: v.decode("utf-8", "replace") for k, v in raw.items()}
        return self._cache[key]


async def _key_ref(objs: _Objects, kind: str, ref: Mapping[str, Any]) -> str | None:
    name, key = str(ref.get("name") or ""), str(ref.get("key") or "")
    data = await objs.data(kind, name)
    if data is None:
        if ref.get("optional"):
            return None
        raise volumes.ConfigError(f'{kind.lower()} "{name}" not found')
    if key not in data:
        if ref.get("optional"):
            return None
        raise volumes.ConfigError(f"couldn't find key {key} in {kind} {objs.namespace}/{name}")
    return data[key]


async def resolve(client: rest.Client, pod: Mapping[str, Any], container: Mapping[str, Any], *,
                  allocatable: Mapping[str, str]) -> dict[str, str]:
    """The full environment of a container (base, envFrom, then env in order); ConfigError when it cannot be built."""
    meta = pod.get("metadata") or {}
    objs = _Objects(client, str(meta.get("namespace") or ""))
    env = {k: os.environ[k] for k in BASE_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    env["HOSTNAME"] = str((pod.get("spec") or {}).get("hostname") or meta.get("name") or "")
    env.update(satoken.service_env(client))  # the kubernetes Service's variables, in every container
    own: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = str(src.get("prefix") or "")
        kind, ref = ("ConfigMap", src["configMapRef"]) if src.get("configMapRef") else ("Secret", src.get("secretRef"))
        if not ref:
            continue
        data = await objs.data(kind, str(ref.get("name") or ""))
        if data is None:
            if ref.get("optional"):
                continue
            raise volumes.ConfigError(f'{kind.lower()} "{ref.get("name")}" not found')
        for k, v in data.items():
            if _ENV_NAME.match(prefix + k):
                own[prefix + k] = v
    for var in container.get("env") or []:
        name = str(var.get("name") or "")
        source = var.get("valueFrom")
        if not source:
            own[name] = expand(str(var.get("value") or ""), own)
            continue
        value: str | None
        if source.get("configMapKeyRef"):
            value = await _key_ref(objs, "ConfigMap", source["configMapKeyRef"])
        elif source.get("secretKeyRef"):
            value = await _key_ref(objs, "Secret", source["secretKeyRef"])
        elif source.get("fieldRef"):
            value = volumes.field_value(pod, str(source["fieldRef"].get("fieldPath") or ""))
        elif source.get("resourceFieldRef"):
            ref = source["resourceFieldRef"]
            value = volumes.resource_value(pod, str(ref.get("containerName") or container.get("name") or ""), ref,
                                           allocatable=allocatable)
        else:
            value = None
        if value is not None:
            own[name] = value
    env.update(own)
    return env
