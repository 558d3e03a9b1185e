"""The kubernetes Service's Endpoints and EndpointSlice: they point at this API server, as kube's endpoint reconciler keeps them."""

from __future__ import annotations

from typing import Any

from pocketkube.apiserver import bootstrap, context, objects

NAME, NAMESPACE = "kubernetes", "default"


def endpoints(ip: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}], "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}]}


def endpoint_slice(ip: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {"kubernetes.io/service-name": NAME}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}


async def reconcile(server: context.Server, *, ip: str, port: int) -> None:
    """Create both objects, or bring back their addresses and ports if they changed (a new port after a restart)."""
    for group, version, resource, want, fields in (
            ("", "v1", "endpoints", endpoints(ip, port), ("subsets",)),
            ("discovery.k8s.io", "v1", "endpointslices", endpoint_slice(ip, port), ("endpoints", "ports"))):
        res = server.registry.get(group, version, resource)
        if res is None:
            continue
        current = await server.objects.get_or_none(res, NAMESPACE, NAME)
        if current is None:
            await bootstrap.ensure(server, res, want)
            continue
        if all(current.get(f) == want[f] for f in fields):
            continue
        updated = objects.clone(current)
        for f in fields:
            updated[f] = want[f]
        try:
            await server.objects.update(res, updated, expected_revision=int(current["metadata"]["resourceVersion"]))
        except Exception:  # noqa: BLE001 - someone else wrote it meanwhile; the next round looks again
            continue
