"""EndpointSlice mirroring controller: hand-written Endpoints of selectorless Services reappear as EndpointSlices."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import endpoints_util, endpointslice, podutil
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.endpointslicemirroring")

SERVICES = rest.GVR("", "v1", "services")
ENDPOINTS = rest.GVR("", "v1", "endpoints")
SLICES = rest.GVR("discovery.k8s.io", "v1", "endpointslices")
CONTROLLER_NAME = "endpointslicemirroring-controller.k8s.io"
SKIP_MIRROR_LABEL = "endpointslice.kubernetes.io/skip-mirror"
# kube-controller-manager's --mirroring-max-endpoints-per-subset default.
MAX_ENDPOINTS_PER_SUBSET = 1000
_NOT_COPIED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration", endpoints_util.LAST_CHANGE_TRIGGER_TIME)


def wanted(endpoints: Mapping[str, Any]) -> bool:
    """Endpoints are mirrored unless they opt out or are the ones the Endpoints controller manages."""
    return (endpoints.get("metadata") or {}).get("labels", {}).get(SKIP_MIRROR_LABEL) != "true"


def _endpoint(address: Mapping[str, Any], *, ready: bool) -> dict[str, Any]:
    ep: dict[str, Any] = {"addresses": [address.get("ip", "")], "conditions": {"ready": ready}}
    for field in ("hostname", "targetRef", "nodeName"):
        if address.get(field):
            ep[field] = address[field]
    return ep


def desired(endpoints: Mapping[str, Any]) -> list[tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]]:
    """(ports, endpoints) per mirrored slice: one per subset, at most MAX_ENDPOINTS_PER_SUBSET addresses each."""
    out: list[tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]] = []
    for subset in endpoints.get("subsets") or []:
        ports = [{"name": p.get("name") or "", "port": p.get("port"), "protocol": p.get("protocol") or "TCP",
                  **({"appProtocol": p["appProtocol"]} if p.get("appProtocol") else {})}
                 for p in subset.get("ports") or []]
        eps = [_endpoint(a, ready=True) for a in subset.get("addresses") or []]
        eps += [_endpoint(a, ready=False) for a in subset.get("notReadyAddresses") or []]
        if eps:
            out.append((ports, eps[:MAX_ENDPOINTS_PER_SUBSET]))
    return out


def plan(service: Mapping[str, Any], endpoints: Mapping[str, Any], existing: list[dict[str, Any]]
         ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(creates, updates, deletes) that turn `existing` mirrored slices into the Endpoints' subsets."""
    meta = endpoints.get("metadata") or {}
    labels = {k: v for k, v in (meta.get("labels") or {}).items()
              if k not in (endpointslice.SERVICE_NAME_LABEL, endpointslice.MANAGED_BY_LABEL)}
    labels[endpointslice.SERVICE_NAME_LABEL] = str((service.get("metadata") or {}).get("name", ""))
    labels[endpointslice.MANAGED_BY_LABEL] = CONTROLLER_NAME
    annotations = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _NOT_COPIED_ANNOTATIONS}
    owner = {"apiVersion": "v1", "kind": "Endpoints", "name": meta.get("name", ""), "uid": meta.get("uid", ""),
             "controller": True, "blockOwnerDeletion": True}
    unused = sorted(existing, key=lambda s: (s.get("metadata") or {}).get("name", ""))
    creates, updates = [], []
    for ports, eps in desired(endpoints):
        match = next((s for s in unused if (s.get("ports") or None) == (ports or None)), None)
        if match is not None:
            unused.remove(match)
            smeta = match.get("metadata") or {}
            if match.get("endpoints") == eps and smeta.get("labels") == labels \
                    and (smeta.get("annotations") or {}) == annotations:
                continue
            updates.append(dict(match, endpoints=eps, ports=ports,
                                metadata=dict(smeta, labels=labels, annotations=annotations, ownerReferences=[owner])))
            continue
        creates.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                        "metadata": {"generateName": str(meta.get("name", ""))[:57] + "-",
                                     "namespace": meta.get("namespace", ""), "labels": labels,
                                     "annotations": annotations, "ownerReferences": [owner]},
                        "addressType": "IPv4", "endpoints": eps, "ports": ports})
    return creates, updates, unused


class EndpointSliceMirroringController(controller.Reconciler):
    """Reconciles by Service key: selectorless Services' Endpoints are mirrored into managed EndpointSlices."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 1,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "endpointslicemirroring", workers=workers, clock=clock, informers=informers)
        self.written = endpoints_util.WriteTracker()
        self.services = self.watch(SERVICES)
        self.endpoints = self.watch(ENDPOINTS)
        self.slices = self.watch(SLICES, _slice_key,
                                 label_selector=f"{endpointslice.MANAGED_BY_LABEL}={CONTROLLER_NAME}")

    async def reconcile(self, key: str) -> controller.Outcome:
        ns, _, name = key.partition("/")
        service = self.services.get(key)
        eps = self.endpoints.get(key)
        existing = self.written.overlay(key, [
            s for s in self.slices.list() if (podutil.meta(s).get("namespace") or "") == ns
            and (podutil.meta(s).get("labels") or {}).get(endpointslice.SERVICE_NAME_LABEL) == name])
        mirror = service is not None and eps is not None and wanted(eps) \
            and not (service.get("spec") or {}).get("selector")
        if mirror:
            assert service is not None and eps is not None
            creates, updates, deletes = plan(service, eps, existing)
        else:
            creates, updates, deletes = [], [], existing
        try:
            await endpointslice.write_slices(self.client, self.written, key, creates=creates, updates=updates,
                                             deletes=deletes)
        except errors.Conflict:
            self.written.forget(key)
            return controller.REQUEUE
        except (errors.Forbidden, errors.NotFound) as e:
            if isinstance(e, errors.NotFound) or "being terminated" in e.message:
                return controller.DONE
            raise
        return controller.DONE


def _slice_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    obj = new if new is not None else old
    if obj is None:
        return []
    name = (podutil.meta(obj).get("labels") or {}).get(endpointslice.SERVICE_NAME_LABEL)
    return [f"{podutil.meta(obj).get('namespace') or ''}/{name}"] if name else []
