"""Resolves route backends (Service + port) to the addresses of their ready endpoints from EndpointSlices."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from pocketkube.gateway import routes
from pocketkube.network import podnet

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def endpoint_address(address: str, port: int) -> tuple[str, int]:
    """Where the proxy connects to reach an endpoint: the one place that decides it.

    A pod with its own network namespace is dialled at its IP; pods sharing the host network (no pod
    network on this machine) listen on the host's loopback at their target port.
    """
    return (address, port) if podnet.routed_to_pod(address) else ("127.0.0.1", port)


@dataclasses.dataclass(frozen=True)
class Upstream:
    """A backend's resolution: its endpoint addresses, or why there are none (error is the log/event text)."""

    addresses: tuple[tuple[str, int], ...] = ()
    error: str = ""
    missing_service: bool = False


def _service_port(svc: Mapping[str, Any], port: int | str) -> Mapping[str, Any] | None:
    for p in (svc.get("spec") or {}).get("ports") or []:
        if (isinstance(port, int) and p.get("port") == port) or (isinstance(port, str) and p.get("name") == port):
            return dict(p)
    return None


def _ready(ep: Mapping[str, Any]) -> bool:
    # A nil ready condition means ready, as consumers of EndpointSlices must read it.
    return (ep.get("conditions") or {}).get("ready") is not False


def resolve(backend: routes.Backend, services: Mapping[str, Mapping[str, Any]],
            slices_by_service: Mapping[str, Iterable[Mapping[str, Any]]]) -> Upstream:
    """The ready endpoint addresses of backend, using Services and EndpointSlices keyed "namespace/name"."""
    key = f"{backend.namespace}/{backend.service}"
    svc = services.get(key)
    if svc is None:
        return Upstream(error=f'Error obtaining Endpoints for Service "{key}": no object matching key "{key}" '
                              "in local store", missing_service=True)
    sport = _service_port(svc, backend.port)
    if sport is None:
        return Upstream(error=f'Service "{key}" does not have any port {backend.port}')
    port_name = sport.get("name") or ""
    seen: set[tuple[str, int]] = set()
    out: list[tuple[str, int]] = []
    for sl in slices_by_service.get(key, ()):
        number = next((p.get("port") for p in sl.get("ports") or [] if (p.get("name") or "") == port_name), None)
        if not isinstance(number, int):
            continue
        for ep in sl.get("endpoints") or []:
            if not _ready(ep):
                continue
            for addr in ep.get("addresses") or []:
                target = endpoint_address(str(addr), number)
                if target not in seen:
                    seen.add(target)
                    out.append(target)
    if not out:
        return Upstream(error=f'Service "{key}" does not have any active Endpoint.')
    return Upstream(addresses=tuple(out))


def slices_index(slices: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """EndpointSlices grouped by the "namespace/service" their kubernetes.io/service-name label names."""
    out: dict[str, list[Mapping[str, Any]]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        svc = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if svc:
            out.setdefault(f"{meta.get('namespace') or ''}/{svc}", []).append(sl)
    return out
