"""Taint eviction controller: deletes pods on nodes with NoExecute taints they do not tolerate (or not for long)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import podutil
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.controllers.tainteviction")

NODES = rest.GVR("", "v1", "nodes")
PODS = rest.GVR("", "v1", "pods")
COMPONENT = "taint-eviction-controller"
FOREVER = None


tolerates = podutil.tolerates


def matching_tolerations(taints: list[dict[str, Any]],
                         tolerations: list[dict[str, Any]]) -> tuple[bool, list[dict[str, Any]]]:
    """(every taint tolerated, the first toleration used for each) as v1helper.GetMatchingTolerations."""
    used: list[dict[str, Any]] = []
    for taint in taints:
        match = next((t for t in tolerations if isinstance(t, dict) and tolerates(t, taint)), None)
        if match is None:
            return False, []
        used.append(match)
    return True, used


def min_toleration_seconds(used: list[dict[str, Any]]) -> float | None:
    """How long the pod may stay: the smallest tolerationSeconds (<= 0 means now), None for forever."""
    if not used:
        return 0.0
    smallest: float | None = None
    for t in used:
        secs = t.get("tolerationSeconds")
        if secs is None:
            continue
        if secs <= 0:
            return 0.0
        smallest = float(secs) if smallest is None else min(smallest, float(secs))
    return smallest


def noexecute_taints(node: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    return [t for t in ((node or {}).get("spec") or {}).get("taints") or []
            if isinstance(t, dict) and t.get("effect") == "NoExecute"]


def plan(pod: Mapping[str, Any], node: Mapping[str, Any] | None, now: datetime.datetime) -> tuple[str, float]:
    """("keep", 0), ("evict", 0) or ("wait", seconds) for a pod given its node's NoExecute taints."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "keep", 0.0
    taints = noexecute_taints(node)
    if not taints:
        return "keep", 0.0
    tolerated, used = matching_tolerations(taints, list((pod.get("spec") or {}).get("tolerations") or []))
    if not tolerated:
        return "evict", 0.0
    limit = min_toleration_seconds(used)
    if limit is FOREVER:
        return "keep", 0.0
    if limit == 0:
        return "evict", 0.0
    # The clock starts when the pod first met the taint: the later of the taint's arrival and the pod's.
    added = [d for d in (podutil.parse_time(t.get("timeAdded")) for t in taints) if d is not None]
    start = min(added) if added else now
    created = podutil.parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    if created is not None and created > start:
        start = created
    left = (start - now).total_seconds() + (limit or 0.0)
    if left <= 0:
        return "evict", 0.0
    return "wait", left


class TaintEvictionController(controller.Reconciler):
    """Reconciles pods by "namespace/name"; node taint changes enqueue the node's pods."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "tainteviction", workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.scheduled: set[str] = set()
        self.nodes = self.watch(NODES, self._node_pods)
        self.pods = self.watch(PODS, _pod_key)

    def _node_pods(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        if new is None or noexecute_taints(old) == noexecute_taints(new):
            return []
        name = (new.get("metadata") or {}).get("name")
        return [informer.key_of(p) for p in self.pods.list() if (p.get("spec") or {}).get("nodeName") == name]

    async def reconcile(self, key: str) -> controller.Outcome:
        pod = self.pods.get(key)
        if pod is None:
            self.scheduled.discard(key)
            return controller.DONE
        node_name = (pod.get("spec") or {}).get("nodeName")
        if not node_name:
            return controller.DONE
        action, wait = plan(pod, self.nodes.get(node_name), self.clock.now())
        if action == "wait":
            self.scheduled.add(key)
            return controller.requeue_after(wait)
        if action == "keep":
            if key in self.scheduled:
                self.scheduled.discard(key)
                await self.recorder.event(pod, events.NORMAL, "TaintManagerEviction",
                                          f"Cancelling deletion of Pod {key}")
            return controller.DONE
        self.scheduled.discard(key)
        await self.recorder.event(pod, events.NORMAL, "TaintManagerEviction", f"Marking for deletion Pod {key}")
        await self._delete(pod)
        return controller.DONE

    async def _delete(self, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        ns, name = meta.get("namespace") or "", meta["name"]
        cond = {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                "lastTransitionTime": clock_mod.rfc3339(self.clock.now()),
                "reason": "DeletionByTaintManager", "message": "Taint manager: deleting due to NoExecute taint"}
        have = next((c for c in (pod.get("status") or {}).get("conditions") or []
                     if isinstance(c, dict) and c.get("type") == "DisruptionTarget"), None)
        try:
            if have is None or have.get("status") != "True" or have.get("reason") != cond["reason"]:
                await self.client.patch(PODS.path(ns, name, subresource="status"),
                                        {"metadata": {"uid": meta.get("uid")}, "status": {"conditions": [cond]}},
                                        patch_type="strategic")
            await self.client.delete(PODS.path(ns, name))
        except errors.NotFound:
            return


def _pod_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    if new is None or not (new.get("spec") or {}).get("nodeName"):
        return [informer.key_of(old)] if new is None and old is not None else []
    return [informer.key_of(new)]
