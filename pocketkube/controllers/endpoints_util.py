"""What the Endpoints and EndpointSlice controllers share: which pods back a Service, on which ports."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.client import informer, rest
from pocketkube.controllers import ownerrefs, podutil
from pocketkube.runtime import controller

LAST_CHANGE_TRIGGER_TIME = "endpoints.kubernetes.io/last-change-trigger-time"
HEADLESS_LABEL = "service.kubernetes.io/headless"
ZONE_LABEL = "topology.kubernetes.io/zone"


def selector_of(service: Mapping[str, Any]) -> selectors.Selector | None:
    """The Service's pod selector; None when it has none (its endpoints are managed by someone else)."""
    spec = service.get("spec") or {}
    if spec.get("type") == "ExternalName":
        return None
    sel = spec.get("selector")
    if not isinstance(sel, dict) or not sel:
        return None
    try:
        return selectors.from_set({str(k): str(v) for k, v in sel.items()})
    except errors.APIError:
        return None


def is_headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def selected_pods(service: Mapping[str, Any], pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The Service's namespace's pods its selector matches, by name."""
    sel = selector_of(service)
    if sel is None:
        return []
    ns = podutil.meta(dict(service)).get("namespace") or ""
    out = [p for p in pods if (podutil.meta(p).get("namespace") or "") == ns
           and sel.matches(podutil.meta(p).get("labels") or {})]
    out.sort(key=lambda p: podutil.meta(p).get("name") or "")
    return out


def pod_ips(pod: Mapping[str, Any]) -> list[str]:
    status = pod.get("status") or {}
    ips = [str(i.get("ip")) for i in status.get("podIPs") or [] if isinstance(i, dict) and i.get("ip")]
    if not ips and status.get("podIP"):
        ips = [str(status["podIP"])]
    return ips


def should_include(pod: dict[str, Any], *, include_terminating: bool) -> bool:
    """kube's ShouldPodBeInEndpoints: not terminal, has an IP, and not deleting unless asked to keep those."""
    if podutil.is_terminal(pod):
        return False
    if not pod_ips(pod):
        return False
    return include_terminating or not podutil.meta(pod).get("deletionTimestamp")


def find_port(pod: Mapping[str, Any], service_port: Mapping[str, Any]) -> int | None:
    """The container port a service port's targetPort names in this pod (kube's FindPort); None if absent."""
    target = service_port.get("targetPort")
    if target is None or target == "" or target == 0:
        target = service_port.get("port")
    if isinstance(target, int):
        return target
    target = str(target)
    if target.isdigit():
        return int(target)
    protocol = service_port.get("protocol") or "TCP"
    spec = pod.get("spec") or {}
    for c in list(spec.get("containers") or []) + [c for c in spec.get("initContainers") or []
                                                    if c.get("restartPolicy") == "Always"]:
        for p in c.get("ports") or []:
            if p.get("name") == target and (p.get("protocol") or "TCP") == protocol:
                return int(p.get("containerPort") or 0) or None
    return None


def endpoint_ports(service: Mapping[str, Any], pod: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The slice ports for one pod: every service port whose target the pod has, in the Service's order."""
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        number = find_port(pod, sp)
        if number is None:
            continue
        port: dict[str, Any] = {"name": sp.get("name") or "", "port": number, "protocol": sp.get("protocol") or "TCP"}
        if sp.get("appProtocol"):
            port["appProtocol"] = sp["appProtocol"]
        out.append(port)
    return out


def should_set_hostname(pod: Mapping[str, Any], service: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    smeta = service.get("metadata") or {}
    return bool(spec.get("hostname")) and spec.get("subdomain") == smeta.get("name") \
        and (pod.get("metadata") or {}).get("namespace") == smeta.get("namespace")


def target_ref(pod: Mapping[str, Any]) -> dict[str, Any]:
    meta = pod.get("metadata") or {}
    return {"kind": "Pod", "namespace": meta.get("namespace", ""), "name": meta.get("name", ""),
            "uid": meta.get("uid", "")}


def trigger_time(service: Mapping[str, Any], pods: Iterable[Mapping[str, Any]]) -> str:
    """The last time a change that moved these endpoints happened: the newest service or pod change we can see."""
    times = [str((service.get("metadata") or {}).get("creationTimestamp") or "")]
    for pod in pods:
        meta = pod.get("metadata") or {}
        times.append(str(meta.get("creationTimestamp") or ""))
        times.append(str(meta.get("deletionTimestamp") or ""))
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "Ready":
                times.append(str(cond.get("lastTransitionTime") or ""))
    return max(times)


def copied_labels(service: Mapping[str, Any], *, drop: Iterable[str] = ()) -> dict[str, str]:
    """The Service's labels as its endpoints carry them, plus the headless marker."""
    skip = set(drop)
    labels = {k: v for k, v in ((service.get("metadata") or {}).get("labels") or {}).items() if k not in skip}
    if is_headless(service):
        labels[HEADLESS_LABEL] = ""
    return labels


def services_selecting(services: Iterable[dict[str, Any]], *pods: dict[str, Any] | None) -> set[str]:
    """Keys of the Services whose selector matches any of the given versions of a pod."""
    out: set[str] = set()
    for pod in pods:
        if pod is None:
            continue
        ns = podutil.meta(pod).get("namespace") or ""
        labels = podutil.meta(pod).get("labels") or {}
        for svc in services:
            if (podutil.meta(svc).get("namespace") or "") != ns:
                continue
            sel = selector_of(svc)
            if sel is not None and sel.matches(labels):
                out.add(informer.key_of(svc))
    return out


def owner_ref(service: Mapping[str, Any]) -> dict[str, Any]:
    meta = service.get("metadata") or {}
    return {"apiVersion": "v1", "kind": "Service", "name": meta.get("name", ""), "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True}


class WriteTracker:
    """Our own recent writes of slices (None: deleted), overlaid on an informer cache that may lag behind them."""

    def __init__(self) -> None:
        self._written: dict[str, dict[str, dict[str, Any] | None]] = {}

    def record(self, key: str, name: str, obj: dict[str, Any] | None) -> None:
        self._written.setdefault(key, {})[name] = obj

    def forget(self, key: str) -> None:
        self._written.pop(key, None)

    def overlay(self, key: str, cached: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """The objects as they are after our writes: newer cache entries win and retire the record."""
        by_name = {podutil.meta(o).get("name") or "": o for o in cached}
        written = self._written.get(key, {})
        for name, mine in list(written.items()):
            seen = by_name.get(name)
            if mine is None:
                if seen is None:
                    del written[name]
                else:
                    by_name.pop(name)
            elif seen is not None and podutil.resource_version(seen) >= podutil.resource_version(mine):
                del written[name]
            else:
                by_name[name] = mine
        if not written:
            self._written.pop(key, None)
        return list(by_name.values())


class ServicesAndPods:
    """The Service and Pod caches an endpoints controller reconciles from; pod changes enqueue their Services."""

    def __init__(self, owner: controller.Reconciler) -> None:
        self._service_index = ownerrefs.OwnerIndex()
        self._pod_index = ownerrefs.OwnerIndex()
        self.services = owner.watch(rest.GVR("", "v1", "services"), index=self._service_index.update)
        self.pods = owner.watch(rest.GVR("", "v1", "pods"), self._pod_keys, index=self._pod_index.update)

    def pods_in(self, namespace: str) -> list[dict[str, Any]]:
        return self._pod_index.in_namespace(namespace)

    def _pod_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> set[str]:
        pod = new if new is not None else old
        ns = podutil.meta(pod).get("namespace") or "" if pod is not None else ""
        return services_selecting(self._service_index.in_namespace(ns), old, new)
