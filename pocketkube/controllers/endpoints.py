"""Endpoints controller: the legacy v1 Endpoints object of each selecting Service, ready and not-ready addresses by port set."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import endpoints_util, podutil
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.endpoints")

ENDPOINTS = rest.GVR("", "v1", "endpoints")


def _ip_key(address: Mapping[str, Any]) -> tuple[Any, ...]:
    ip = str(address.get("ip", ""))
    parts = ip.split(".")
    numeric = tuple(int(p) for p in parts) if len(parts) == 4 and all(p.isdigit() for p in parts) else ()
    return numeric, ip, (address.get("targetRef") or {}).get("uid", "")


def subsets(service: Mapping[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Endpoints subsets: pods grouped by the ports they serve, ready ones apart from not-ready ones."""
    spec = service.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    headless_without_ports = endpoints_util.is_headless(service) and not spec.get("ports")
    groups: dict[bytes, dict[str, Any]] = {}
    for pod in endpoints_util.selected_pods(service, pods):
        if not endpoints_util.should_include(pod, include_terminating=publish):
            continue
        address: dict[str, Any] = {"ip": endpoints_util.pod_ips(pod)[0]}
        if endpoints_util.should_set_hostname(pod, service):
            address["hostname"] = (pod.get("spec") or {})["hostname"]
        node = (pod.get("spec") or {}).get("nodeName")
        if node:
            address["nodeName"] = node
        address["targetRef"] = endpoints_util.target_ref(pod)
        ports = [] if headless_without_ports else endpoints_util.endpoint_ports(service, pod)
        if not ports and not headless_without_ports:
            continue
        for p in ports:
            if not p["name"]:
                del p["name"]
        ports.sort(key=lambda p: (p.get("name", ""), p["port"], p["protocol"]))
        group = groups.setdefault(orjson.dumps(ports), {"addresses": [], "notReadyAddresses": [], "ports": ports})
        ready = publish or podutil.is_ready(pod)
        group["addresses" if ready else "notReadyAddresses"].append(address)
    out = []
    for group in groups.values():
        subset: dict[str, Any] = {}
        for field in ("addresses", "notReadyAddresses"):
            if group[field]:
                subset[field] = sorted(group[field], key=_ip_key)
        if group["ports"]:
            subset["ports"] = group["ports"]
        out.append(subset)
    out.sort(key=lambda s: _ip_key((s.get("addresses") or s.get("notReadyAddresses") or [{}])[0]))
    return out


class EndpointsController(controller.Reconciler):
    """Reconciles Services by key: their Endpoints object lists the selected pods."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "endpoints", workers=workers, clock=clock, informers=informers)
        self.cache = endpoints_util.ServicesAndPods(self)
        self.endpoints = self.watch(ENDPOINTS, _deleted_key)

    async def reconcile(self, key: str) -> controller.Outcome:
        ns, _, name = key.partition("/")
        service = self.cache.services.get(key)
        current = self.endpoints.get(key)
        try:
            if service is None:
                if current is not None:
                    await self.client.delete(ENDPOINTS.path(ns, name))
                return controller.DONE
            if endpoints_util.selector_of(service) is None:
                return controller.DONE
            pods = self.cache.pods_in(ns)
            want = subsets(service, pods)
            labels = endpoints_util.copied_labels(service)
            if current is not None and (current.get("subsets") or []) == want \
                    and (podutil.meta(current).get("labels") or {}) == labels:
                return controller.DONE
            trigger = endpoints_util.trigger_time(service, endpoints_util.selected_pods(service, pods))
            if current is None:
                body: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints",
                                        "metadata": {"name": name, "namespace": ns, "labels": labels,
                                                     "annotations": {endpoints_util.LAST_CHANGE_TRIGGER_TIME: trigger}}}
                if want:
                    body["subsets"] = want
                await self.client.create(ENDPOINTS, body, namespace=ns)
            else:
                meta = podutil.meta(current)
                body = dict(current, metadata=dict(meta, labels=labels, annotations={
                    **(meta.get("annotations") or {}), endpoints_util.LAST_CHANGE_TRIGGER_TIME: trigger}))
                body.pop("subsets", None)
                if want:
                    body["subsets"] = want
                await self.client.update(ENDPOINTS, body)
        except (errors.Conflict, errors.AlreadyExists):
            return controller.REQUEUE
        except errors.NotFound:
            return controller.DONE
        except errors.Forbidden as e:
            if "being terminated" in e.message:
                return controller.DONE
            raise
        return controller.DONE


def _deleted_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    # Someone deleting a managed Endpoints object: put it back.
    if etype == informer.DELETED and old is not None:
        return [informer.key_of(old)]
    return []
