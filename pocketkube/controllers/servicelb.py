"""Service load balancer (like k3s's): LoadBalancer Services get the nodes' addresses as status.loadBalancer.ingress."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.servicelb")

SERVICES = rest.GVR("", "v1", "services")
NODES = rest.GVR("", "v1", "nodes")
COMPONENT = "service-lb-controller"


def node_addresses(nodes: Sequence[Mapping[str, Any]]) -> list[str]:
    """InternalIPs of Ready, schedulable nodes, sorted and unique: where the service proxy answers LB traffic."""
    found: set[str] = set()
    for n in nodes:
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (n.get("status") or {}).get("conditions") or [])
        if not ready or (n.get("spec") or {}).get("unschedulable"):
            continue
        for a in (n.get("status") or {}).get("addresses") or []:
            if a.get("type") == "InternalIP" and a.get("address"):
                found.add(str(a["address"]))
    return sorted(found, key=lambda ip: (ipaddress.ip_address(ip).version, ipaddress.ip_address(ip)))


def wanted(service: Mapping[str, Any], addresses: list[str]) -> dict[str, Any] | None:
    """The status.loadBalancer this controller wants, or None when the Service is not its to serve."""
    spec = service.get("spec") or {}
    if spec.get("type") != "LoadBalancer" or spec.get("loadBalancerClass"):
        return None
    return {"ingress": [{"ip": ip, "ipMode": "VIP"} for ip in addresses]} if addresses else {}


class ServiceLBController(controller.Reconciler):
    """Keeps each LoadBalancer Service's ingress equal to the nodes' addresses; clears it when the type changes."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 1,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers)
        self.services = self.watch(SERVICES)
        self.nodes = self.watch(NODES, self._all_lb_services)

    def _all_lb_services(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        return [informer.key_of(s) for s in self.services.list()
                if (s.get("spec") or {}).get("type") == "LoadBalancer"]

    async def reconcile(self, key: str) -> controller.Outcome:
        svc = self.services.get(key)
        if svc is None:
            return controller.DONE
        current = (svc.get("status") or {}).get("loadBalancer") or {}
        want = wanted(svc, node_addresses(self.nodes.list()))
        if want is None:
            if not current.get("ingress"):
                return controller.DONE
            want = {}  # no longer a LoadBalancer: kube's service controller clears the status
        if current == want:
            return controller.DONE
        ns, _, name = key.partition("/")
        try:
            await self.client.patch(SERVICES.path(ns, name, subresource="status"),
                                    {"status": {"loadBalancer": want or {"ingress": None}}}, patch_type="merge")
        except errors.NotFound:
            return controller.DONE
        log.info("service %s: load balancer ingress %s", key, [i["ip"] for i in want.get("ingress") or []])
        return controller.DONE
