"""Objects every cluster starts with: system namespaces, the kubernetes Service, APIServices, PriorityClasses."""

from __future__ import annotations

import asyncio
from typing import Any

from pocketkube.api import bootstrappolicy, defaults, managedfields, resources
from pocketkube.apiserver import context, flowcontrol_defaults, objects, strategy, typeinfo
from pocketkube.base import clock as clock_mod

MANAGER = "kube-apiserver"
SYSTEM_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}, "spec": {}}


def _kubernetes_service(cluster_ip: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "type": "ClusterIP",
                 "sessionAffinity": "None", "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "internalTrafficPolicy": "Cluster",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]},
    }


def _priority_class(name: str, value: int, description: str) -> dict[str, Any]:
    return {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
            "value": value, "description": description, "preemptionPolicy": "PreemptLowerPriority"}


def _standard_storage_class() -> dict[str, Any]:
    # What kind ships: the local-path provisioner as the default class, binding once a pod needs the claim.
    return {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
            "metadata": {"name": "standard", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "reclaimPolicy": "Delete",
            "volumeBindingMode": "WaitForFirstConsumer"}


async def ensure(server: context.Server, res: resources.Resource | None, obj: dict[str, Any]) -> None:
    if res is None:
        return
    meta = obj["metadata"]
    if await server.objects.get_or_none(res, meta.get("namespace", ""), meta["name"]) is not None:
        return
    obj = objects.clone(obj)
    strategy.prepare_create(res, obj, clock=server.clock)
    if not res.crd:
        defaults.apply_defaults(obj, res.group, res.version, res.kind)
    schema, resolve = typeinfo.schema_for(server, res)
    obj["metadata"]["managedFields"] = managedfields.update(
        None, obj, manager=MANAGER, api_version=res.api_version, now=clock_mod.rfc3339(server.clock.now()),
        schema=schema, resolve=resolve)
    if server.allocators is not None and res.kind == "Service":
        server.allocators.allocate(obj, None)
    try:
        await server.objects.create(res, obj)
    except Exception:  # another writer got there first (restart race): that object is as good
        if await server.objects.get_or_none(res, meta.get("namespace", ""), meta["name"]) is None:
            raise


async def run(server: context.Server, *, secure_port: int) -> None:
    """Create what is missing; independent writes go together so the store commits them in one batch."""
    reg = server.registry
    ns = reg.get("", "v1", "namespaces")
    first_ip = server.allocators.first_ip() if server.allocators is not None else "10.96.0.1"
    pcs = reg.get("scheduling.k8s.io", "v1", "priorityclasses")
    api_res = reg.get("apiregistration.k8s.io", "v1", "apiservices")
    now = clock_mod.rfc3339(server.clock.now())
    # Add-ons such as the default StorageClass are installed once, on a fresh cluster: deleting them sticks.
    fresh = ns is not None and await server.objects.get_or_none(ns, "", "kube-system") is None
    # Namespaces first: the kubernetes Service lives in one.
    await asyncio.gather(*(ensure(server, ns, _namespace(name)) for name in SYSTEM_NAMESPACES))
    await asyncio.gather(
        ensure(server, reg.get("", "v1", "services"), _kubernetes_service(first_ip, secure_port)),
        ensure(server, pcs, _priority_class("system-node-critical", 2000001000,
                                             "Used for system critical pods that must not be moved from their current node.")),
        ensure(server, pcs, _priority_class("system-cluster-critical", 2000000000,
                                             "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary.")),
        *(ensure(server, api_res, svc) for svc in resources.builtin_apiservices(reg, now=now)),
        # The default RBAC policy, reconciled as kube-apiserver's autoupdate does: missing objects come back.
        *(ensure(server, reg.get(bootstrappolicy.GROUP, "v1", bootstrappolicy.RESOURCES[o["kind"]]), o)
          for o in bootstrappolicy.all_objects()),
        # API Priority and Fairness: the mandatory and suggested FlowSchemas and priority levels.
        flowcontrol_defaults.ensure(server, ensure))
    if fresh:
        await ensure(server, reg.get("storage.k8s.io", "v1", "storageclasses"), _standard_storage_class())
