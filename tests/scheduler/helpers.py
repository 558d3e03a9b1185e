"""Builders for pods, nodes and clusters used by the scheduler tests."""

from __future__ import annotations

import random
from typing import Any

from pocketkube.scheduler import framework, nodeinfo, scheduler


def node(name: str, *, cpu: str = "4", memory: str = "8Gi", pods: str = "110", labels: dict[str, str] | None = None,
         taints: list[dict[str, Any]] | None = None, unschedulable: bool = False, zone: str = "") -> dict[str, Any]:
    lab = {"kubernetes.io/hostname": name, **(labels or {})}
    if zone:
        lab[nodeinfo.ZONE] = zone
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if unschedulable:
        spec["unschedulable"] = True
    alloc = {"cpu": cpu, "memory": memory, "pods": pods}
    return {"kind": "Node", "metadata": {"name": name, "labels": lab}, "spec": spec,
            "status": {"capacity": alloc, "allocatable": alloc}}


def pod(name: str, *, ns: str = "default", cpu: str = "", memory: str = "", node_name: str = "",
        labels: dict[str, str] | None = None, priority: int = 0, **spec: Any) -> dict[str, Any]:
    requests = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v}
    container: dict[str, Any] = {"name": "c", "image": "nginx"}
    if requests:
        container["resources"] = {"requests": requests}
    s: dict[str, Any] = {"containers": [container], "schedulerName": "default-scheduler", **spec}
    if node_name:
        s["nodeName"] = node_name
    if priority:
        s["priority"] = priority
    return {"kind": "Pod", "metadata": {"name": name, "namespace": ns, "uid": f"uid-{name}",
                                        "labels": labels or {}, "resourceVersion": "1"},
            "spec": s, "status": {"phase": "Pending"}}


def cluster(nodes: list[dict[str, Any]], pods: list[dict[str, Any]] = ()) -> nodeinfo.Cache:  # type: ignore[assignment]
    c = nodeinfo.Cache()
    for n in nodes:
        c.set_node(n)
    for p in pods:
        c.add_pod(p)
    c.namespace_labels = {"default": {"kubernetes.io/metadata.name": "default"},
                          "other": {"kubernetes.io/metadata.name": "other", "team": "x"}}
    return c


def fw(seed: int = 1) -> framework.Framework:
    return framework.Framework(scheduler.plugins(), rng=random.Random(seed))


def place(c: nodeinfo.Cache, p: dict[str, Any]) -> str:
    """Schedule p on c; the node name, or the FitError message."""
    try:
        return fw().schedule(nodeinfo.PodInfo(p), c).node
    except framework.FitError as e:
        return str(e)
