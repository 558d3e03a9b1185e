"""Pod garbage collector: removes orphaned, excess terminated and unscheduled terminating pods."""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Hashable, Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import podutil
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.podgc")

NODES = rest.GVR("", "v1", "nodes")
PODS = rest.GVR("", "v1", "pods")
OUT_OF_SERVICE = "node.kubernetes.io/out-of-service"
GC = "gc"  # the one queue key: each pass looks at every pod


@dataclasses.dataclass(frozen=True)
class Settings:
    """kube-controller-manager's pod GC settings."""

    terminated_pod_threshold: int = 12500  # --terminated-pod-gc-threshold; 0 disables
    period: float = 20.0                   # gcCheckPeriod
    quarantine: float = 40.0               # how long a node must stay missing before its pods go

    def __post_init__(self) -> None:
        if self.terminated_pod_threshold < 0 or self.period <= 0 or self.quarantine < 0:
            raise ValueError("pod GC settings must be non-negative (period positive)")


def _time(s: Any) -> datetime.datetime:
    return podutil.parse_time(s) or datetime.datetime.min.replace(tzinfo=datetime.UTC)


def is_terminated(pod: Mapping[str, Any]) -> bool:
    """Phase is neither Pending, Running nor Unknown (Succeeded, Failed)."""
    return (pod.get("status") or {}).get("phase") not in ("Pending", "Running", "Unknown", None, "")


def is_evicted(pod: Mapping[str, Any]) -> bool:
    status = pod.get("status") or {}
    return status.get("phase") == "Failed" and status.get("reason") == "Evicted"


def terminated_over_threshold(pods: list[dict[str, Any]], threshold: int) -> list[dict[str, Any]]:
    """The terminated pods past the threshold: evicted ones first, then the oldest, names breaking ties."""
    if threshold <= 0:
        return []
    done = [p for p in pods if is_terminated(p)]
    excess = len(done) - threshold
    if excess <= 0:
        return []
    done.sort(key=lambda p: (not is_evicted(p), _time((p.get("metadata") or {}).get("creationTimestamp")),
                             (p.get("metadata") or {}).get("name") or ""))
    return done[:excess]


def unscheduled_terminating(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods being deleted that no node will ever finish deleting: they were never scheduled."""
    return [p for p in pods if (p.get("metadata") or {}).get("deletionTimestamp")
            and not (p.get("spec") or {}).get("nodeName")]


def terminating_out_of_service(pods: list[dict[str, Any]], nodes: Mapping[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Terminating pods on a not-ready node an admin tainted out-of-service: nobody is left to finish them."""
    out = []
    for p in pods:
        if not (p.get("metadata") or {}).get("deletionTimestamp"):
            continue
        node = nodes.get((p.get("spec") or {}).get("nodeName") or "")
        if node is None:
            continue
        ready = any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (node.get("status") or {}).get("conditions") or [])
        tainted = any(isinstance(t, dict) and t.get("key") == OUT_OF_SERVICE
                      for t in (node.get("spec") or {}).get("taints") or [])
        if not ready and tainted:
            out.append(p)
    return out


def quarantine(pods: list[dict[str, Any]], node_names: set[str], missing_since: Mapping[str, datetime.datetime],
               now: datetime.datetime, *, seconds: float) -> tuple[dict[str, datetime.datetime], set[str]]:
    """(when each missing node was first missed, the nodes missing for longer than the quarantine)."""
    wanted = {(p.get("spec") or {}).get("nodeName") for p in pods} - {None, ""} - node_names
    since = {n: missing_since.get(n, now) for n in wanted if isinstance(n, str)}
    due = {n for n, t in since.items() if (now - t).total_seconds() >= seconds}
    return since, due


def orphaned(pods: list[dict[str, Any]], deleted_nodes: set[str]) -> list[dict[str, Any]]:
    return [p for p in pods if (p.get("spec") or {}).get("nodeName") in deleted_nodes]


class PodGCController(controller.Reconciler):
    """Every settings.period: one pass over all pods and nodes."""

    def __init__(self, client: rest.Client, *, settings: Settings | None = None,
                 clock: clock_mod.Clock | None = None,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "podgc", workers=1, clock=clock, informers=informers)
        self.settings = settings or Settings()
        self.missing_since: dict[str, datetime.datetime] = {}
        self.nodes = self.watch(NODES, controller.no_keys)
        self.pods = self.watch(PODS, controller.no_keys)

    async def run(self) -> None:
        self.controller.enqueue(GC)
        await super().run()

    async def reconcile(self, key: Hashable) -> controller.Outcome:
        await self.gc()
        return controller.requeue_after(self.settings.period)

    async def gc(self) -> None:
        """One pass: terminated over threshold, out-of-service terminating, orphaned, unscheduled terminating."""
        pods = self.pods.list()
        nodes = {n["metadata"]["name"]: n for n in self.nodes.list() if (n.get("metadata") or {}).get("name")}
        for pod in terminated_over_threshold(pods, self.settings.terminated_pod_threshold):
            await self._fail_and_delete(pod)
        for pod in terminating_out_of_service(pods, nodes):
            await self._fail_and_delete(pod)
        self.missing_since, due = quarantine(pods, set(nodes), self.missing_since, self.clock.now(),
                                             seconds=self.settings.quarantine)
        gone = {n for n in due if await self._node_deleted(n)}
        for pod in orphaned(pods, gone):
            await self._fail_and_delete(pod, condition={
                "type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
                "message": "PodGC: node no longer exists"})
        for pod in unscheduled_terminating(pods):
            await self._fail_and_delete(pod)

    async def _node_deleted(self, name: str) -> bool:
        # The cache may lag: ask the API server before deleting anything.
        try:
            await self.client.get(NODES.path(name=name), metadata_only=True)
        except errors.NotFound:
            return True
        return False

    async def _fail_and_delete(self, pod: dict[str, Any], *, condition: dict[str, Any] | None = None) -> None:
        """Mark a pod Failed (nobody else will, once its node is gone), then force-delete it."""
        meta = pod["metadata"]
        ns, name = meta.get("namespace") or "", meta["name"]
        log.info("PodGC is force deleting Pod %s/%s", ns, name)
        try:
            if (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
                status: dict[str, Any] = {"phase": "Failed"}
                if condition is not None:
                    status["conditions"] = [dict(condition, lastTransitionTime=clock_mod.rfc3339(self.clock.now()))]
                await self.client.patch(PODS.path(ns, name, subresource="status"),
                                        {"metadata": {"uid": meta.get("uid")}, "status": status},
                                        patch_type="strategic")
            await self.client.delete(PODS.path(ns, name), grace_period_seconds=0,
                                     preconditions={"uid": str(meta.get("uid") or "")} if meta.get("uid") else None)
        except (errors.NotFound, errors.Conflict):
            return
