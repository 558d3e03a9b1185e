"""kube-scheduler's loop: informers feed the queue and cache, one pod at a time is placed, bound, reported."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer as informer_mod
from pocketkube.client import rest
from pocketkube.scheduler import (
    events,
    fit,
    framework,
    interpod,
    nodeaffinity,
    nodeinfo,
    preemption,
    spread,
    taints,
    volumebinding,
)
from pocketkube.scheduler import queue as queue_mod

log = logging.getLogger("pocketkube.scheduler")

SCHEDULER_NAME = "default-scheduler"
PODS = rest.GVR("", "v1", "pods")
NODES = rest.GVR("", "v1", "nodes")
BINDINGS = rest.GVR("", "v1", "bindings")
NAMESPACES = rest.GVR("", "v1", "namespaces")
SERVICES = rest.GVR("", "v1", "services")
RCS = rest.GVR("", "v1", "replicationcontrollers")
REPLICASETS = rest.GVR("apps", "v1", "replicasets")
STATEFULSETS = rest.GVR("apps", "v1", "statefulsets")
# Terminal pods hold no resources: kube-scheduler does not even watch them.
NOT_TERMINAL = "status.phase!=Succeeded,status.phase!=Failed"
UNSCHEDULABLE_REASON = "Unschedulable"
ERROR_REASON = "SchedulerError"
# How often backoffs are checked for expiry, as kube's flushBackoffQCompleted does.
FLUSH_INTERVAL = 1.0
BIND_CONCURRENCY = 64
# Cluster events and the plugins whose rejections they may lift (kube's queueing hints, coarsely).
FREED = ("NodeResourcesFit", "NodePorts", "InterPodAffinity", "PodTopologySpread")
POD_PLACED = ("InterPodAffinity", "PodTopologySpread")
NAMESPACE_INDEX = "namespace"
PREEMPTION_MESSAGE = "default-scheduler: preempting to accommodate a higher priority pod"


def plugins(default_selector: spread.DefaultSelector | None = None,
            volumes: volumebinding.Listers | None = None) -> list[framework.Plugin]:
    """kube-scheduler 1.32's default plugins that apply here, in its order (VolumeBinding given listers)."""
    return [taints.NodeUnschedulable(), fit.NodeName(), taints.TaintToleration(), nodeaffinity.NodeAffinity(),
            fit.NodePorts(), fit.NodeResourcesFit(),
            *([volumebinding.VolumeBinding(volumes)] if volumes is not None else []),
            spread.PodTopologySpread(default_selector),
            interpod.InterPodAffinity(), fit.BalancedAllocation()]


def responsible(pod: dict[str, Any], name: str = SCHEDULER_NAME) -> bool:
    """Whether this scheduler should place pod: its schedulerName, unassigned, not being deleted."""
    spec = pod.get("spec") or {}
    return ((spec.get("schedulerName") or SCHEDULER_NAME) == name and not spec.get("nodeName")
            and not (pod.get("metadata") or {}).get("deletionTimestamp"))


def condition_patch(pod: dict[str, Any], reason: str, message: str, now: str, *,
                    nominated: str | None = None) -> dict[str, Any] | None:
    """The status patch setting PodScheduled=False (and nominatedNodeName), or None if nothing changes."""
    status = pod.get("status") or {}
    old = next((c for c in status.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    cond = {"type": "PodScheduled", "status": "False", "lastProbeTime": None, "lastTransitionTime": now,
            "reason": reason, "message": message}
    if old is not None and old.get("status") == "False":
        cond["lastTransitionTime"] = old.get("lastTransitionTime")
    same = old is not None and all(old.get(k) == cond[k] for k in ("status", "reason", "message")) \
        and old.get("lastTransitionTime") == cond["lastTransitionTime"]
    nnn_change = nominated is not None and (status.get("nominatedNodeName") or "") != nominated
    if same and not nnn_change:
        return None
    body: dict[str, Any] = {"status": {"conditions": [cond]}}
    if nnn_change:
        body["status"]["nominatedNodeName"] = nominated or None
    return body


class Scheduler:
    """The default scheduler: watch pods and nodes, schedule pending pods, bind them through the API."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None,
                 rng: random.Random | None = None, name: str = SCHEDULER_NAME,
                 bind_concurrency: int = BIND_CONCURRENCY) -> None:
        self.client = client
        self.name = name
        self.clock = clock or clock_mod.Clock()
        self.cache = nodeinfo.Cache()
        self.queue = queue_mod.SchedulingQueue(clock=self.clock)
        self.volumes = volumebinding.InformerListers(client, clock=self.clock)
        self.volume_binder = volumebinding.Binder(client, self.volumes, clock=self.clock)
        for inf in self.volumes.informers:
            inf.add_handler(self._on_volume_object)
        self.framework = framework.Framework(plugins(self._default_selector, self.volumes), rng=rng)
        self.recorder = events.Recorder(client, controller=name, clock=self.clock)
        self.nominated: dict[str, dict[str, nodeinfo.PodInfo]] = {}
        self._bind_slots = asyncio.Semaphore(bind_concurrency)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._legacy_bindings = False
        # As kube-scheduler's pod informer: managedFields are dropped (the cache holds every pod, reads none).
        self.pods = informer_mod.Informer(client, PODS, field_selector=NOT_TERMINAL, clock=self.clock,
                                          transform=informer_mod.trim_managed_fields)
        self.nodes = informer_mod.Informer(client, NODES, clock=self.clock)
        self.namespaces = informer_mod.Informer(client, NAMESPACES, clock=self.clock)
        self.services = informer_mod.Informer(client, SERVICES, clock=self.clock)
        # Every pod's default spread looks up its namespace's services (kube's lister by namespace).
        self.services.add_indexer(NAMESPACE_INDEX, informer_mod.namespace_index)
        self.owners = {"ReplicaSet": informer_mod.Informer(client, REPLICASETS, clock=self.clock),
                       "StatefulSet": informer_mod.Informer(client, STATEFULSETS, clock=self.clock),
                       "ReplicationController": informer_mod.Informer(client, RCS, clock=self.clock)}
        self.nodes.add_handler(self._on_node)
        self.namespaces.add_handler(self._on_namespace)
        self.pods.add_handler(self._on_pod)

    @property
    def informers(self) -> list[informer_mod.Informer]:
        return [self.nodes, self.namespaces, self.services, *self.owners.values(), *self.volumes.informers, self.pods]

    # --- informer handlers: keep the cache and the queue in step with the cluster ----------

    def _on_node(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            if old is not None:
                self.cache.remove_node(str((old.get("metadata") or {}).get("name") or ""))
            return
        self.cache.set_node(new)
        if old is None or _node_view(old) != _node_view(new):
            self.queue.move_all(None)

    def _on_volume_object(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        # A claim, volume or class that changed may let pods VolumeBinding turned away fit now.
        self.queue.move_all((volumebinding.NAME,))

    def _on_namespace(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        if obj is None:
            return
        meta = obj.get("metadata") or {}
        if new is None:
            self.cache.namespace_labels.pop(str(meta.get("name")), None)
            return
        self.cache.namespace_labels[str(meta.get("name"))] = meta.get("labels") or {}
        if old is not None and (old.get("metadata") or {}).get("labels") != meta.get("labels"):
            self.queue.move_all(("InterPodAffinity",))

    def _on_pod(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if new is None:
            if old is None:
                return
            key = informer_mod.key_of(old)
            self.queue.delete(key)
            self._unnominate(key)
            if self.cache.remove_pod(key) is not None:
                self.queue.move_all(FREED + ("DefaultPreemption",))
            return
        key = informer_mod.key_of(new)
        node = (new.get("spec") or {}).get("nodeName")
        if node:
            self.queue.delete(key)
            self._unnominate(key)
            was_assumed = self.cache.is_assumed(key)
            try:
                self.cache.add_pod(new)
            except errors.APIError as e:
                log.warning("pod %s has unreadable resources: %s", key, e)
                return
            relabelled = old is not None and (old.get("metadata") or {}).get("labels") != \
                (new.get("metadata") or {}).get("labels")
            if (not was_assumed and not (old or {}).get("spec", {}).get("nodeName")) or relabelled:
                self.queue.move_all(POD_PLACED)
            if (new.get("metadata") or {}).get("deletionTimestamp") and \
                    not (old or {}).get("metadata", {}).get("deletionTimestamp"):
                self.queue.move_all(("DefaultPreemption",))
            return
        if not responsible(new, self.name):
            self.queue.delete(key)
            self._unnominate(key)
            return
        self.queue.add(new)
        nominated = str((new.get("status") or {}).get("nominatedNodeName") or "")
        self._unnominate(key)
        if nominated:
            with contextlib.suppress(errors.APIError):
                self.nominated.setdefault(nominated, {})[key] = nodeinfo.PodInfo(new)

    def _unnominate(self, key: str) -> None:
        for node in list(self.nominated):
            pods = self.nominated[node]
            if pods.pop(key, None) is not None and not pods:
                del self.nominated[node]

    def _default_selector(self, pod: nodeinfo.PodInfo) -> selectors.Selector | None:
        svcs = []
        for svc in self.services.by_index(NAMESPACE_INDEX, pod.namespace):
            sel = (svc.get("spec") or {}).get("selector")
            if sel and selectors.from_set(sel).matches(pod.labels):
                svcs.append(svc)
        owner = None
        for ref in (pod.pod.get("metadata") or {}).get("ownerReferences") or []:
            if ref.get("controller") and ref.get("kind") in self.owners:
                owner = self.owners[ref["kind"]].get(f"{pod.namespace}/{ref.get('name')}")
                if owner is not None:
                    owner = {**owner, "kind": ref["kind"]}
                break
        return spread.default_selector_from(svcs, owner)

    # --- the loop ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Start informers and the event writer, then schedule pods until cancelled."""
        loop = asyncio.get_running_loop()
        bg = [loop.create_task(i.run(), name=f"scheduler-informer-{i.gvr.resource}") for i in self.informers]
        bg.append(loop.create_task(self.recorder.run(), name="scheduler-events"))
        bg.append(loop.create_task(self._flush_loop(), name="scheduler-flush"))
        try:
            await asyncio.gather(*(i.wait_synced() for i in self.informers))
            while True:
                qp = await self.queue.pop()
                self.schedule_one(qp)
                # Let binding and informer traffic through between pods.
                await asyncio.sleep(0)
        finally:
            self.queue.close()
            for t in [*bg, *self._tasks]:
                t.cancel()
            for t in [*bg, *self._tasks]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t

    async def _flush_loop(self) -> None:
        while True:
            await self.clock.sleep(FLUSH_INTERVAL)
            self.queue.flush()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def schedule_one(self, qp: queue_mod.QueuedPod) -> str:
        """One scheduling cycle for a popped pod: assume and start binding, or record why not.

        Returns the chosen node ("" when the pod was not placed)."""
        pod = self.pods.get(qp.key) or qp.pod
        if not responsible(pod, self.name) or self.pods.get(qp.key) is None:
            self.queue.done(qp.key)
            return ""
        qp.pod = pod
        try:
            pi = nodeinfo.PodInfo(pod)
            nominated = {n: list(ps.values()) for n, ps in self.nominated.items()}
            result = self.framework.schedule(pi, self.cache, nominated)
        except framework.NoNodes as e:
            self._fail(qp, pod, UNSCHEDULABLE_REASON, str(e), rejected_by=(), error=False)
            return ""
        except framework.FitError as fe:
            candidate, fe.postfilter_msg = preemption.preempt(self.framework, pi, self.cache, fe)
            rejected = {st.plugin for st in fe.statuses.values()}
            nominate: str | None = "" if pi.nominated_node else None
            if candidate is not None:
                nominate = candidate.node
                self._unnominate(pi.key)
                self.nominated.setdefault(candidate.node, {})[pi.key] = pi
                rejected.add("DefaultPreemption")
                self._spawn(self._evict(pi, candidate))
            self._fail(qp, pod, UNSCHEDULABLE_REASON, str(fe), rejected_by=rejected, nominate=nominate)
            return ""
        except errors.APIError as e:
            self._fail(qp, pod, ERROR_REASON, str(e), rejected_by=(), error=True)
            return ""
        self.cache.assume(pi, result.node)
        self._unnominate(pi.key)
        self._spawn(self._bind(qp, pod, result.node))
        return result.node

    def _fail(self, qp: queue_mod.QueuedPod, pod: dict[str, Any], reason: str, message: str, *,
              rejected_by: Any, error: bool = False, nominate: str | None = None) -> None:
        self.queue.requeue(qp, rejected_by, error=error)
        self.recorder.event(pod, events.WARNING, "FailedScheduling", "Scheduling", message)
        patch = condition_patch(pod, reason, message, clock_mod.rfc3339(self.clock.now()), nominated=nominate)
        if patch is not None:
            self._spawn(self._patch_status(pod, patch))

    async def _patch_status(self, pod: dict[str, Any], patch: dict[str, Any]) -> None:
        meta = pod.get("metadata") or {}
        path = PODS.path(meta.get("namespace") or "", meta.get("name") or "", subresource="status")
        try:
            await self.client.patch(path, patch, patch_type="strategic")
        except errors.NotFound:
            pass
        except Exception as e:
            log.warning("could not update the status of pod %s/%s: %s", meta.get("namespace"), meta.get("name"), e)

    async def _bind(self, qp: queue_mod.QueuedPod, pod: dict[str, Any], node: str) -> None:
        meta = pod.get("metadata") or {}
        ns, name = meta.get("namespace") or "", meta.get("name") or ""
        body = {"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name, "namespace": ns, "uid": meta.get("uid")},
                "target": {"kind": "Node", "name": node}}
        try:
            node_info = self.cache.nodes.get(node)
            await self.volume_binder.pre_bind(pod, node, node_info.labels if node_info is not None else {})
            async with self._bind_slots:
                await self._post_binding(ns, name, body)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            self.cache.forget(qp.key)
            current = self.pods.get(qp.key)
            if current is None or not responsible(current, self.name):
                self.queue.done(qp.key)
                return
            log.info("binding %s to %s failed: %s", qp.key, node, e)
            self._fail(qp, current, ERROR_REASON, str(e), rejected_by=(), error=True)
            self.queue.move_all(None)
            return
        self.queue.done(qp.key)
        self.recorder.event(pod, events.NORMAL, "Scheduled", "Binding",
                            f"Successfully assigned {ns}/{name} to {node}")

    async def _post_binding(self, ns: str, name: str, body: dict[str, Any]) -> None:
        if not self._legacy_bindings:
            try:
                await self.client.request("POST", PODS.path(ns, name, subresource="binding"), body=body)
                return
            except errors.MethodNotAllowed:
                # A server without the pods/binding subresource still takes the bindings collection.
                self._legacy_bindings = True
        await self.client.request("POST", BINDINGS.path(ns), body=body)

    async def _evict(self, preemptor: nodeinfo.PodInfo, candidate: preemption.Candidate) -> None:
        """Preempt the victims: mark them DisruptionTarget, delete them, tell them why."""
        now = clock_mod.rfc3339(self.clock.now())
        for v in candidate.victims:
            cond = {"type": "DisruptionTarget", "status": "True", "lastProbeTime": None,
                    "lastTransitionTime": now, "reason": "PreemptionByScheduler", "message": PREEMPTION_MESSAGE}
            try:
                await self.client.patch(PODS.path(v.namespace, v.name, subresource="status"),
                                        {"status": {"conditions": [cond]}}, patch_type="strategic")
                await self.client.delete(PODS.path(v.namespace, v.name), preconditions={"uid": v.uid})
            except errors.NotFound:
                continue
            except Exception as e:
                log.warning("preempting %s for %s failed: %s", v.key, preemptor.key, e)
                continue
            self.recorder.event(v.pod, events.NORMAL, "Preempted", "Preempting",
                                f"Preempted by pod {preemptor.uid} on node {candidate.node}")


def _node_view(node: dict[str, Any]) -> Any:
    # The parts of a node that can change a scheduling decision (heartbeats alone do not).
    meta, spec, status = node.get("metadata") or {}, node.get("spec") or {}, node.get("status") or {}
    return (meta.get("labels"), spec.get("taints"), spec.get("unschedulable"),
            status.get("allocatable"), status.get("capacity"))
