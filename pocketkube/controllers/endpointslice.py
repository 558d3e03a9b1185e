"""EndpointSlice controller: each selecting Service's ready, serving and terminating pod addresses as EndpointSlices."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import endpoints_util, ownerrefs, podutil
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.endpointslice")

NODES = rest.GVR("", "v1", "nodes")
SLICES = rest.GVR("discovery.k8s.io", "v1", "endpointslices")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"
# kube-controller-manager's --max-endpoints-per-slice default.
MAX_ENDPOINTS_PER_SLICE = 100


def endpoint(service: Mapping[str, Any], pod: Mapping[str, Any], *, zones: Mapping[str, str]) -> dict[str, Any]:
    """One pod as a slice endpoint, with kube's ready/serving/terminating conditions."""
    publish = bool((service.get("spec") or {}).get("publishNotReadyAddresses"))
    serving = podutil.is_ready(dict(pod))
    terminating = bool((pod.get("metadata") or {}).get("deletionTimestamp"))
    ready = publish or (serving and not terminating)
    ep: dict[str, Any] = {"addresses": endpoints_util.pod_ips(pod)[:1],
                          "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    if endpoints_util.should_set_hostname(pod, service):
        ep["hostname"] = (pod.get("spec") or {})["hostname"]
    ep["targetRef"] = endpoints_util.target_ref(pod)
    node = (pod.get("spec") or {}).get("nodeName")
    if node:
        ep["nodeName"] = node
        if zones.get(node):
            ep["zone"] = zones[node]
    return ep


def desired(service: Mapping[str, Any], pods: list[dict[str, Any]], *, zones: Mapping[str, str],
            max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> list[tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]]:
    """(ports, endpoints) of every slice the Service should have; one empty placeholder when no pod qualifies."""
    groups: dict[bytes, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for pod in endpoints_util.selected_pods(service, pods):
        if not endpoints_util.should_include(pod, include_terminating=True):
            continue
        ports = endpoints_util.endpoint_ports(service, pod)
        key = orjson.dumps(ports)
        groups.setdefault(key, (ports, []))[1].append(endpoint(service, pod, zones=zones))
    out: list[tuple[list[dict[str, Any]] | None, list[dict[str, Any]]]] = []
    for ports, eps in groups.values():
        for i in range(0, len(eps), max_per_slice):
            out.append((ports, eps[i:i + max_per_slice]))
    return out or [(None, [])]


def labels_for(service: Mapping[str, Any]) -> dict[str, str]:
    labels = endpoints_util.copied_labels(service, drop=(SERVICE_NAME_LABEL, MANAGED_BY_LABEL))
    labels[SERVICE_NAME_LABEL] = str((service.get("metadata") or {}).get("name", ""))
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    return labels


def _same_ports(a: Any, b: Any) -> bool:
    return (a or None) == (b or None)


def plan(service: Mapping[str, Any], pods: list[dict[str, Any]], existing: list[dict[str, Any]], *,
         zones: Mapping[str, str], trigger: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(slices to create, slices to update, slices to delete) that make `existing` what the Service needs."""
    meta = service.get("metadata") or {}
    labels = labels_for(service)
    owner = endpoints_util.owner_ref(service)
    unused = sorted(existing, key=lambda s: (s.get("metadata") or {}).get("name", ""))
    creates: list[dict[str, Any]] = []
    updates: list[dict[str, Any]] = []
    for ports, eps in desired(service, pods, zones=zones):
        match = next((s for s in unused if _same_ports(s.get("ports"), ports)), None)
        if match is not None:
            unused.remove(match)
            smeta = match.get("metadata") or {}
            if match.get("endpoints") == eps and smeta.get("labels") == labels \
                    and owner in (smeta.get("ownerReferences") or []):
                continue
            body = dict(match)
            body["metadata"] = dict(smeta, labels=labels, ownerReferences=[owner],
                                    annotations={**(smeta.get("annotations") or {}),
                                                 endpoints_util.LAST_CHANGE_TRIGGER_TIME: trigger})
            body["endpoints"] = eps
            body["ports"] = ports
            updates.append(body)
            continue
        creates.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"generateName": _name_prefix(str(meta.get("name", ""))),
                         "namespace": meta.get("namespace", ""), "labels": labels,
                         "annotations": {endpoints_util.LAST_CHANGE_TRIGGER_TIME: trigger},
                         "ownerReferences": [owner]},
            "addressType": "IPv4", "endpoints": eps, "ports": ports})
    return creates, updates, unused


def _name_prefix(service_name: str) -> str:
    # generateName appends 5 characters; kube trims the prefix so the whole name stays a valid 63-char label.
    prefix = service_name + "-"
    return prefix[:58] if len(prefix) > 58 else prefix


class EndpointSliceController(controller.Reconciler):
    """Reconciles Services by key: their EndpointSlices follow the selected pods' IPs, ports and readiness."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "endpointslice", workers=workers, clock=clock, informers=informers)
        self.cache = endpoints_util.ServicesAndPods(self)
        self.written = endpoints_util.WriteTracker()
        self.slices = self.watch(SLICES, _slice_key, label_selector=f"{MANAGED_BY_LABEL}={CONTROLLER_NAME}")
        self.nodes = self.watch(NODES, controller.no_keys)

    def _existing(self, ns: str, name: str) -> list[dict[str, Any]]:
        cached = [s for s in self.slices.list() if (podutil.meta(s).get("namespace") or "") == ns
                  and (podutil.meta(s).get("labels") or {}).get(SERVICE_NAME_LABEL) == name]
        return self.written.overlay(f"{ns}/{name}", cached)

    def _zones(self) -> dict[str, str]:
        return {podutil.meta(n).get("name") or "": (podutil.meta(n).get("labels") or {}).get(endpoints_util.ZONE_LABEL, "")
                for n in self.nodes.list()}

    async def reconcile(self, key: str) -> controller.Outcome:
        ns, _, name = key.partition("/")
        service = self.cache.services.get(key)
        if service is None or endpoints_util.selector_of(service) is None \
                or podutil.meta(service).get("deletionTimestamp"):
            # The garbage collector removes a deleted Service's slices through their owner references.
            return controller.DONE
        existing = self._existing(ns, name)
        pods = self.cache.pods_in(ns)
        selected = endpoints_util.selected_pods(service, pods)
        creates, updates, deletes = plan(service, pods, existing, zones=self._zones(),
                                         trigger=endpoints_util.trigger_time(service, selected))
        try:
            await write_slices(self.client, self.written, key, creates=creates, updates=updates, deletes=deletes)
        except errors.Conflict:
            self.written.forget(key)
            return controller.REQUEUE
        except (errors.Forbidden, errors.NotFound) as e:
            if "being terminated" in e.message or isinstance(e, errors.NotFound):
                return controller.DONE
            raise
        return controller.DONE


async def write_slices(client: rest.Client, written: endpoints_util.WriteTracker, key: str, *,
                       creates: list[dict[str, Any]], updates: list[dict[str, Any]], deletes: list[dict[str, Any]]) -> None:
    """Apply a plan, remembering each write so the next reconcile sees it before the informer does."""
    ns = key.partition("/")[0]
    for body in updates:
        done = await client.update(SLICES, body)
        written.record(key, podutil.meta(done).get("name") or "", done)
    for body in creates:
        done = await client.create(SLICES, body, namespace=ns)
        written.record(key, podutil.meta(done).get("name") or "", done)
    for s in deletes:
        written.record(key, podutil.meta(s).get("name") or "", None)
        try:
            await client.delete(ownerrefs.object_path(SLICES, s))
        except errors.NotFound:
            pass


def _slice_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    obj = new if new is not None else old
    if obj is None:
        return []
    name = (podutil.meta(obj).get("labels") or {}).get(SERVICE_NAME_LABEL)
    return [f"{podutil.meta(obj).get('namespace') or ''}/{name}"] if name else []
