"""Node lifecycle controller: Lease/heartbeat health -> Ready=Unknown, condition taints, pods marked not ready."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
from collections.abc import Hashable, Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import podutil
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.controllers.nodelifecycle")

NODES = rest.GVR("", "v1", "nodes")
PODS = rest.GVR("", "v1", "pods")
LEASES = rest.GVR("coordination.k8s.io", "v1", "leases")
LEASE_NAMESPACE = "kube-node-lease"
COMPONENT = "node-controller"
GRACE_ENV = "POCKETKUBE_NODE_MONITOR_GRACE_SECONDS"
MONITOR = "monitor"  # the one queue key: every pass looks at all nodes, as zone states need

NOT_READY = "node.kubernetes.io/not-ready"
UNREACHABLE = "node.kubernetes.io/unreachable"
UNSCHEDULABLE = "node.kubernetes.io/unschedulable"
EXCLUDE_DISRUPTION = "node.kubernetes.io/exclude-disruption"
# Condition (type, status) -> the NoSchedule taint kube keeps in step with it.
CONDITION_TAINTS = {
    ("Ready", "False"): NOT_READY,
    ("Ready", "Unknown"): UNREACHABLE,
    ("MemoryPressure", "True"): "node.kubernetes.io/memory-pressure",
    ("DiskPressure", "True"): "node.kubernetes.io/disk-pressure",
    ("NetworkUnavailable", "True"): "node.kubernetes.io/network-unavailable",
    ("PIDPressure", "True"): "node.kubernetes.io/pid-pressure",
}
CONDITION_TAINT_KEYS = frozenset(CONDITION_TAINTS.values())
# NetworkUnavailable is left alone: the network plugin owns it.
MONITORED_CONDITIONS = ("Ready", "MemoryPressure", "DiskPressure", "PIDPressure")

NORMAL, PARTIAL, FULL = "Normal", "PartialDisruption", "FullDisruption"


@dataclasses.dataclass(frozen=True)
class Settings:
    """kube-controller-manager's node monitoring flags."""

    grace: float = 40.0          # --node-monitor-grace-period
    startup_grace: float = 60.0  # --node-startup-grace-period
    period: float = 5.0          # --node-monitor-period
    unhealthy_zone_threshold: float = 0.55
    large_cluster_threshold: int = 50

    def __post_init__(self) -> None:
        if self.grace <= 0 or self.startup_grace <= 0 or self.period <= 0:
            raise ValueError("node monitor grace periods and period must be positive")
        if not 0 < self.unhealthy_zone_threshold <= 1:
            raise ValueError("unhealthy_zone_threshold must be in (0, 1]")


def settings_from_env(env: Mapping[str, str] | None = None) -> Settings:
    """Settings with the grace period from $POCKETKUBE_NODE_MONITOR_GRACE_SECONDS (default 40 s).

    The startup grace keeps kube's 60:40 ratio to it, and the monitor period shrinks with short
    graces so a node is noticed soon after its grace runs out.
    """
    raw = (env if env is not None else os.environ).get(GRACE_ENV, "")
    if not raw:
        return Settings()
    try:
        grace = float(raw)
    except ValueError:
        raise ValueError(f"{GRACE_ENV} must be a number of seconds, not {raw!r}") from None
    if grace <= 0:
        raise ValueError(f"{GRACE_ENV} must be positive, not {raw!r}")
    return Settings(grace=grace, startup_grace=grace * 1.5, period=min(5.0, max(0.5, grace / 4)))


@dataclasses.dataclass
class Health:
    """What the controller last saw of a node: when it last showed life, and its Ready condition."""

    probe: datetime.datetime
    ready_transition: datetime.datetime
    ready: dict[str, Any] | None = None
    lease_renew: datetime.datetime | None = None


def condition(node: Mapping[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (node.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def ready_status(node: Mapping[str, Any]) -> str | None:
    """The node's Ready condition status ("True", "False", "Unknown"), None when it has none."""
    c = condition(node, "Ready")
    return str(c.get("status")) if c is not None else None


def observe(node: Mapping[str, Any], lease: Mapping[str, Any] | None, saved: Health | None,
            now: datetime.datetime) -> Health:
    """Update a node's health record: a new heartbeat or a renewed Lease moves its probe time to now."""
    current = condition(node, "Ready")
    created = podutil.parse_time((node.get("metadata") or {}).get("creationTimestamp")) or now
    if current is None:
        # Never posted: count from creation, with the startup grace.
        health = saved if saved is not None else Health(probe=created, ready_transition=created)
        health = dataclasses.replace(health, ready=None)
    elif saved is None or saved.ready is None:
        health = Health(probe=now, ready_transition=now, ready=dict(current),
                        lease_renew=saved.lease_renew if saved else None)
    elif saved.ready.get("lastHeartbeatTime") != current.get("lastHeartbeatTime"):
        moved = saved.ready.get("lastTransitionTime") != current.get("lastTransitionTime")
        health = Health(probe=now, ready_transition=now if moved else saved.ready_transition, ready=dict(current),
                        lease_renew=saved.lease_renew)
    else:
        health = dataclasses.replace(saved, ready=dict(current))
    renew = podutil.parse_time((lease or {}).get("spec", {}).get("renewTime")) if lease else None
    if renew is not None and (health.lease_renew is None or health.lease_renew < renew):
        health = dataclasses.replace(health, probe=now, lease_renew=renew)
    return health


def stale_conditions(node: Mapping[str, Any], health: Health, now: datetime.datetime,
                     settings: Settings) -> list[dict[str, Any]] | None:
    """The node's conditions turned Unknown once its grace ran out, or None when nothing changes."""
    grace = settings.grace if condition(node, "Ready") is not None else settings.startup_grace
    if now <= health.probe + datetime.timedelta(seconds=grace):
        return None
    stamp = clock_mod.rfc3339(now)
    conds = [dict(c) for c in (node.get("status") or {}).get("conditions") or [] if isinstance(c, dict)]
    before = next((dict(c) for c in conds if c.get("type") == "Ready"), None)
    created = (node.get("metadata") or {}).get("creationTimestamp")
    for ctype in MONITORED_CONDITIONS:
        cur = next((c for c in conds if c.get("type") == ctype), None)
        if cur is None:
            conds.append({"type": ctype, "status": "Unknown", "lastHeartbeatTime": created,
                          "lastTransitionTime": stamp, "reason": "NodeStatusNeverUpdated",
                          "message": "Kubelet never posted node status."})
        elif cur.get("status") != "Unknown":
            cur.update(status="Unknown", reason="NodeStatusUnknown", message="Kubelet stopped posting node status.",
                       lastTransitionTime=stamp)
    after = next((c for c in conds if c.get("type") == "Ready"), None)
    return None if after == before else conds


def zone_key(node: Mapping[str, Any]) -> str:
    """utilnode.GetZoneKey: region and zone labels joined, "" for nodes without them."""
    labels = (node.get("metadata") or {}).get("labels") or {}
    region = labels.get("topology.kubernetes.io/region") or labels.get("failure-domain.beta.kubernetes.io/region") or ""
    zone = labels.get("topology.kubernetes.io/zone") or labels.get("failure-domain.beta.kubernetes.io/zone") or ""
    if not region and not zone:
        return ""
    return f"{region}:\x00:{zone}"


def zone_states(nodes: list[dict[str, Any]], settings: Settings) -> dict[str, tuple[str, int]]:
    """Each zone's (state, size): FullDisruption when no node is ready, PartialDisruption past the threshold."""
    counts: dict[str, list[int]] = {}
    for node in nodes:
        if EXCLUDE_DISRUPTION in ((node.get("metadata") or {}).get("labels") or {}):
            continue
        tally = counts.setdefault(zone_key(node), [0, 0])
        tally[0 if ready_status(node) == "True" else 1] += 1
    out: dict[str, tuple[str, int]] = {}
    for zone, (ready_n, not_ready_n) in counts.items():
        size = ready_n + not_ready_n
        if ready_n == 0 and not_ready_n > 0:
            out[zone] = (FULL, size)
        elif not_ready_n > 2 and not_ready_n / size >= settings.unhealthy_zone_threshold:
            out[zone] = (PARTIAL, size)
        else:
            out[zone] = (NORMAL, size)
    return out


def plan_taints(node: Mapping[str, Any], *, zone_state: str, zone_size: int, all_disrupted: bool,
                settings: Settings, now: str) -> list[dict[str, Any]] | None:
    """The node's new spec.taints (condition NoSchedule taints, NoExecute not-ready/unreachable), or None."""
    spec = node.get("spec") or {}
    taints = [dict(t) for t in spec.get("taints") or [] if isinstance(t, dict)]
    # NoSchedule: one taint per bad condition, and cordoned nodes' unschedulable taint.
    want = {CONDITION_TAINTS[(str(c.get("type")), str(c.get("status")))]
            for c in (node.get("status") or {}).get("conditions") or []
            if isinstance(c, dict) and (str(c.get("type")), str(c.get("status"))) in CONDITION_TAINTS}
    if spec.get("unschedulable"):
        want.add(UNSCHEDULABLE)
    ours = {t.get("key") for t in taints if t.get("effect") == "NoSchedule"
            and (t.get("key") in CONDITION_TAINT_KEYS or t.get("key") == UNSCHEDULABLE)}
    new = [t for t in taints if not (t.get("effect") == "NoSchedule" and t.get("key") in ours - want)]
    new += [{"key": k, "effect": "NoSchedule", "timeAdded": now} for k in sorted(want - ours)]
    # NoExecute: drives the taint eviction of pods that do not tolerate a lost node.
    have = {str(t.get("key")) for t in new if t.get("effect") == "NoExecute" and t.get("key") in (NOT_READY, UNREACHABLE)}
    ready = ready_status(node)
    desired = set(have)
    if all_disrupted or ready == "True":
        # Every node lost at once looks like our own network failing: evict nobody.
        desired = set()
    elif ready in ("False", "Unknown"):
        key = NOT_READY if ready == "False" else UNREACHABLE
        halted = zone_state == PARTIAL and zone_size <= settings.large_cluster_threshold
        if have - {key} or (key not in have and not halted):
            desired = {key}
    if desired != have:
        new = [t for t in new if not (t.get("effect") == "NoExecute" and t.get("key") in have - desired)]
        new += [{"key": k, "effect": "NoExecute", "timeAdded": now} for k in sorted(desired - have)]
    return None if new == taints else new


def pods_to_mark_not_ready(node: Mapping[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods on a node whose Ready condition is not True that still claim to be Ready."""
    if ready_status(node) in (None, "True"):
        return []
    name = (node.get("metadata") or {}).get("name")
    return [p for p in pods if (p.get("spec") or {}).get("nodeName") == name
            and any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
                    for c in (p.get("status") or {}).get("conditions") or [])]


def not_ready_pod(pod: Mapping[str, Any], now: str) -> dict[str, Any]:
    """The pod with its Ready condition False (reason and message kept, transition now)."""
    new = dict(pod)
    status = dict(new.get("status") or {})
    conds = []
    for c in status.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") != "False":
            c = dict(c, status="False", lastTransitionTime=now)
        conds.append(c)
    status["conditions"] = conds
    new["status"] = status
    return new


def _node_ref(node: Mapping[str, Any], *, uid: str) -> dict[str, Any]:
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": (node.get("metadata") or {}).get("name"),
                                                            "uid": uid}}


class NodeLifecycleController(controller.Reconciler):
    """Watches Nodes, their Leases and pods; one monitor pass every settings.period."""

    def __init__(self, client: rest.Client, *, settings: Settings | None = None,
                 clock: clock_mod.Clock | None = None,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "nodelifecycle", workers=1, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.settings = settings or Settings()
        self.health: dict[str, Health] = {}
        self.nodes = self.watch(NODES, _on_node)
        self.leases = self.watch(LEASES, controller.no_keys, namespace=LEASE_NAMESPACE)
        self.pods = self.watch(PODS, controller.no_keys)
        # Each pass looks at the pods of the nodes that are not ready only: through the index, not all pods.
        self.pods.add_indexer(podutil.NODE_NAME_INDEX, podutil.node_name_index)

    async def run(self) -> None:
        self.controller.enqueue(MONITOR)
        await super().run()

    async def reconcile(self, key: Hashable) -> controller.Outcome:
        await self.monitor()
        return controller.requeue_after(self.settings.period)

    async def monitor(self) -> None:
        """One pass over every node: health, conditions, taints, pods of nodes that are not ready."""
        now = self.clock.now()
        stamp = clock_mod.rfc3339(now)
        nodes = [n for n in self.nodes.list() if (n.get("metadata") or {}).get("name")]
        names = {n["metadata"]["name"] for n in nodes}
        for gone in set(self.health) - names:
            del self.health[gone]
        current: list[dict[str, Any]] = []
        for node in nodes:
            current.append(await self._check_health(node, now))
        states = zone_states(current, self.settings)
        all_disrupted = bool(states) and all(s == FULL for s, _ in states.values())
        for node in current:
            state, size = states.get(zone_key(node), (NORMAL, 0))
            taints = plan_taints(node, zone_state=state, zone_size=size, all_disrupted=all_disrupted,
                                 settings=self.settings, now=stamp)
            if taints is not None:
                await self._set_taints(node, taints)
            if ready_status(node) in (None, "True"):
                continue  # nothing to mark on a ready node: skip the lookup
            pods = self.pods.by_index(podutil.NODE_NAME_INDEX, node["metadata"]["name"])
            for pod in pods_to_mark_not_ready(node, pods):
                await self._mark_not_ready(pod, stamp)

    async def _check_health(self, node: dict[str, Any], now: datetime.datetime) -> dict[str, Any]:
        name = node["metadata"]["name"]
        if name not in self.health:
            await self.recorder.event(_node_ref(node, uid=str(node["metadata"].get("uid") or "")),
                                      events.NORMAL, "RegisteredNode",
                                      f"Node {name} event: Registered Node {name} in Controller")
        health = observe(node, self.leases.get(f"{LEASE_NAMESPACE}/{name}"), self.health.get(name), now)
        self.health[name] = health
        conds = stale_conditions(node, health, now, self.settings)
        if conds is None:
            return node
        body = dict(node)
        body["status"] = dict(node.get("status") or {}, conditions=conds)
        try:
            stored = await self.client.update_status(NODES, body)
        except (errors.Conflict, errors.NotFound):
            return node  # our cache was behind: the next pass sees the fresh node
        was, now_ready = ready_status(node), ready_status(stored)
        self.health[name] = dataclasses.replace(health, ready_transition=now, ready=condition(stored, "Ready"))
        if was == "True" and now_ready != "True":
            await self.recorder.event(_node_ref(node, uid=name), events.NORMAL, "NodeNotReady",
                                      f"Node {name} status is now: NodeNotReady")
        return stored

    async def _set_taints(self, node: dict[str, Any], taints: list[dict[str, Any]]) -> None:
        meta = node["metadata"]
        body = {"metadata": {"resourceVersion": meta.get("resourceVersion")}, "spec": {"taints": taints}}
        try:
            await self.client.patch(NODES.path(name=meta["name"]), body, patch_type="merge")
        except (errors.Conflict, errors.NotFound):
            pass  # looked at again on the next pass with a fresh node

    async def _mark_not_ready(self, pod: dict[str, Any], stamp: str) -> None:
        try:
            await self.client.update_status(PODS, not_ready_pod(pod, stamp))
        except (errors.Conflict, errors.NotFound):
            return
        await self.recorder.event(pod, events.WARNING, "NodeNotReady", "Node is not ready")


def _on_node(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    # A node appearing or being cordoned gets its taints without waiting for the next pass.
    if etype == informer.ADDED:
        return [MONITOR]
    if old is not None and new is not None and \
            bool((old.get("spec") or {}).get("unschedulable")) != bool((new.get("spec") or {}).get("unschedulable")):
        return [MONITOR]
    return []
