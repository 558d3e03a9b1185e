"""A container's environment: env and envFrom resolved from ConfigMaps, Secrets and pod fields, $(VAR) expanded."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer as informer_mod
from pocketkube.client import rest
from pocketkube.network import etchosts, resolvconf
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


SERVICES = rest.GVR("", "v1", "services")
NAMESPACE_INDEX = "namespace"
MASTER_SERVICE = ("default", "kubernetes")


def service_link_env(services: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The kubelet's per-Service variables (FOO_SERVICE_HOST, FOO_PORT_80_TCP_ADDR, ...) of services with a ClusterIP."""
    env: dict[str, str] = {}
    for svc in sorted(services, key=lambda s: str((s.get("metadata") or {}).get("name") or "")):
        spec = svc.get("spec") or {}
        ip = str(spec.get("clusterIP") or "")
        ports = [p for p in spec.get("ports") or [] if isinstance(p.get("port"), int)]
        if not ip or ip == "None" or spec.get("type") == "ExternalName" or not ports:
            continue
        name = str((svc.get("metadata") or {}).get("name") or "").upper().replace("-", "_")
        host = f"[{ip}]" if ":" in ip else ip
        env[f"{name}_SERVICE_HOST"] = ip
        env[f"{name}_SERVICE_PORT"] = str(ports[0]["port"])
        for p in ports:
            if p.get("name"):
                env[f"{name}_SERVICE_PORT_{str(p['name']).upper().replace('-', '_')}"] = str(p["port"])
        first = ports[0]
        env[f"{name}_PORT"] = f"{str(first.get('protocol') or 'TCP').lower()}://{host}:{first['port']}"
        for p in ports:
            proto = str(p.get("protocol") or "TCP")
            prefix = f"{name}_PORT_{p['port']}_{proto.upper()}"
            env[prefix] = f"{proto.lower()}://{host}:{p['port']}"
            env[f"{prefix}_PROTO"] = proto.lower()
            env[f"{prefix}_PORT"] = str(p["port"])
            env[f"{prefix}_ADDR"] = ip
    return env


class ServiceLister(Protocol):
    """Services from a synced cache, as the kubelet's service lister serves them (no API call per container)."""

    def namespace(self, namespace: str) -> list[dict[str, Any]] | None:
        """The namespace's services, or None while the cache has not been filled yet."""

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One service from the cache (None when absent)."""


class ServiceCache:
    """A ServiceLister over one informer on every Service of the cluster (the kubelet's service informer)."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None) -> None:
        self.informer = informer_mod.Informer(client, SERVICES, clock=clock)
        self.informer.add_indexer(NAMESPACE_INDEX, informer_mod.namespace_index)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the list+watch in the background (idempotent)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.informer.run(), name="kubelet-services")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def namespace(self, namespace: str) -> list[dict[str, Any]] | None:
        if not self.informer.has_synced:
            return None
        return self.informer.by_index(NAMESPACE_INDEX, namespace)

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.informer.get(f"{namespace}/{name}")


async def _service_links(client: rest.Client, pod: Mapping[str, Any], *, in_pod_network: bool,
                         services: ServiceLister | None = None) -> dict[str, str]:
    """Service variables a container starts with: its namespace's services (enableServiceLinks) and the master one."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ns = str(meta.get("namespace") or "")
    found: list[Mapping[str, Any]] = []
    # Before its cache is filled, the lister gives way to reading the API (the kubelet would refuse instead).
    cached = services.namespace(ns) if services is not None else None
    if spec.get("enableServiceLinks") is not False:
        if cached is not None:
            found = list(cached)
        else:
            try:
                found = list((await client.get(SERVICES.path(ns, ""))).get("items") or [])
            except errors.APIError:
                found = []
    env = service_link_env(found)
    if in_pod_network:
        # The master service's ClusterIP is routed to the API server by the service proxy.
        master: Mapping[str, Any] | None
        if services is not None and cached is not None:
            master = services.get(*MASTER_SERVICE)
        else:
            try:
                master = await client.get(SERVICES.path(*MASTER_SERVICE))
            except errors.APIError:
                master = None
        if master is not None:
            env.update({k: v for k, v in service_link_env([master]).items() if k.startswith("KUBERNETES_")})
    else:
        # Without a pod network pods share the host's: the API's real address replaces the ClusterIP.
        env = {k: v for k, v in env.items() if not k.startswith("KUBERNETES_")}
        env.update(satoken.service_env(client))
    return env


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
                  allocatable: Mapping[str, str], in_pod_network: bool = False,
                  services: ServiceLister | None = None,
                  cluster_domain: str = resolvconf.CLUSTER_DOMAIN) -> dict[str, str]:
    """The full environment of a container (base, envFrom, then env in order); ConfigError when it cannot be built."""
    meta = pod.get("metadata") or {}
    objs = _Objects(client, str(meta.get("namespace") or ""))
    env = {k: os.environ[k] for k in BASE_KEYS if k in os.environ}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    # As containerd sets it: the sandbox's hostname, the node's for a host-network pod.
    env["HOSTNAME"] = socket.gethostname() if (pod.get("spec") or {}).get("hostNetwork") else \
        etchosts.uts_hostname(pod, cluster_domain=cluster_domain)
    env.update(await _service_links(client, pod, in_pod_network=in_pod_network, services=services))
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
