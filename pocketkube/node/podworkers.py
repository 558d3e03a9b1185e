"""Pod workers of one node: run the pods bound to it through a runtime, report status, finish deletions."""

from __future__ import annotations

import asyncio
import datetime
import logging
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer as informer_mod
from pocketkube.client import rest
from pocketkube.node import events as events_mod
from pocketkube.node import podstatus, runtime
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.node.pods")

PODS = rest.GVR("", "v1", "pods")
# Pods synced at once. The kubelet gives every pod a goroutine of its own; a pod's start mostly waits (on its
# sandbox, its volumes' API reads, the spawn, its status write), so a 100-pod burst needs many in flight.
WORKERS = 16
# Pods torn down at once (their processes, network namespace, cgroups, directory), in the background: as in the
# kubelet, where every pod's worker ends its own pod, a burst of deletions never holds up the pods starting
# meanwhile, neither in the work queue nor in the thread pool their set-up shares.
TEARDOWNS = 4
DEADLINE_REASON = "DeadlineExceeded"
DEADLINE_MESSAGE = "Pod was active on the node longer than the specified deadline"


def pods_informer(client: rest.Client, node: str, *, clock: clock_mod.Clock) -> informer_mod.Informer:
    """An informer on the pods bound to `node`, as the kubelet watches them.

    Its cache drops managedFields (nearly half of a pod's size): the kubelet never reads them, and its status
    writes go to the status subresource, which keeps the stored ones."""
    return informer_mod.Informer(client, PODS, field_selector=f"spec.nodeName={node}", clock=clock,
                                 transform=informer_mod.trim_managed_fields)


def deadline_left(pod: dict[str, Any], now: datetime.datetime) -> float | None:
    """Seconds until spec.activeDeadlineSeconds runs out (<= 0: already), or None without a deadline."""
    limit = (pod.get("spec") or {}).get("activeDeadlineSeconds")
    started = (pod.get("status") or {}).get("startTime")
    if not isinstance(limit, int) or isinstance(limit, bool) or not started:
        return None
    try:
        begun = clock_mod.parse_time(started)
    except ValueError:
        return None
    return limit - (now - begun).total_seconds()


class PodWorkers:
    """Reconciles each pod bound to one node: sync through the runtime, write status, finish deletion."""

    def __init__(self, client: rest.Client, *, node: str, host_ip: str, rt: runtime.Runtime,
                 recorder: events_mod.Recorder, clock: clock_mod.Clock, workers: int = WORKERS) -> None:
        self.client = client
        self.node = node
        self.host_ip = host_ip
        self.runtime = rt
        self.recorder = recorder
        self.clock = clock
        self.informer = pods_informer(client, node, clock=clock)
        self.controller = controller.Controller(f"kubelet-{node}", self.reconcile, workers=workers, clock=clock)
        self.controller.watch(self.informer)
        # pod key -> uid we run under it, and uid -> the status we last wrote (so a server that
        # normalises what we send never makes us write the same status again and again)
        self._uids: dict[str, str] = {}
        self._keys: dict[str, str] = {}
        self._written: dict[str, dict[str, Any]] = {}
        # uid -> the background removal of a pod that is gone (see TEARDOWNS)
        self._teardowns: dict[str, asyncio.Task[None]] = {}
        # uid -> the grace period and task of a deleted pod's termination (see _terminate_in_background)
        self._terminating: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._teardown_slots = asyncio.Semaphore(TEARDOWNS)
        rt.set_notify(self._on_runtime_change)
        rt.set_recorder(lambda pod, ev: self._record(dict(pod), [ev]))

    def _on_runtime_change(self, uid: str) -> None:
        key = self._keys.get(uid)
        if key is not None:
            self.controller.enqueue(key)

    async def run(self) -> None:
        try:
            await self.controller.run()
        finally:
            tasks = [*(task for _, task in self._terminating.values()), *self._teardowns.values()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def settled(self) -> None:
        """Wait until the pods deleted so far are stopped and the pods removed so far are torn down."""
        while self._terminating or self._teardowns:
            await asyncio.gather(*(task for _, task in self._terminating.values()), *self._teardowns.values(),
                                 return_exceptions=True)

    async def reconcile(self, key: str) -> controller.Outcome:
        pod = self.informer.get(key)
        old_uid = self._uids.get(key)
        if pod is None:
            if old_uid:
                await self._forget(key, old_uid)
            return controller.DONE
        uid = str(pod["metadata"].get("uid") or "")
        if old_uid and old_uid != uid:
            # Deleted and created again under the same name: the old one is gone for good, and ends before the
            # new one starts (a StatefulSet's pod must not run twice at once, on the same volumes).
            await self._forget(key, old_uid)
            teardown = self._teardowns.get(old_uid)
            if teardown is not None:
                await asyncio.wait({teardown})
        self._uids[key], self._keys[uid] = uid, key
        if (pod.get("spec") or {}).get("nodeName") != self.node:
            return controller.DONE
        if pod["metadata"].get("deletionTimestamp"):
            self._terminate_in_background(key, pod)
            return controller.DONE
        phase = (pod.get("status") or {}).get("phase")
        if phase in podstatus.TERMINAL:
            if self.runtime.pod_status(uid) is not None:
                await self.runtime.kill_pod(pod, grace_seconds=0)
            return controller.DONE
        left = deadline_left(pod, self.clock.now())
        if left is not None and left <= 0:
            await self._terminate(pod, deleting=False, reason=DEADLINE_REASON, message=DEADLINE_MESSAGE)
            return controller.DONE
        result = await self.runtime.sync_pod(pod)
        self._record(pod, result.events)
        status = podstatus.compute(pod, self.runtime.pod_status(uid), host_ip=self.host_ip, now=self.clock.now())
        await self._write_status(pod, status)
        # The deadline counts from the start time, which the first status write sets.
        left = deadline_left({"spec": pod.get("spec"), "status": status}, self.clock.now())
        waits = [w for w in (result.retry_after, left) if w is not None]
        return controller.requeue_after(min(waits)) if waits else controller.DONE

    def _terminate_in_background(self, key: str, pod: dict[str, Any]) -> None:
        """Stop a deleted pod in a task of its own, as the kubelet's per-pod workers do, so that a long grace
        period holds up neither the other pods' starts nor this pod's queue.

        A shorter grace period than the one being waited out (a forced deletion meanwhile) replaces it with a
        quicker kill; a termination that fails is tried again through the queue, with back-off."""
        uid = str(pod["metadata"].get("uid") or "")
        grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        running = self._terminating.get(uid)
        if running is not None:
            if grace >= running[0]:
                return
            running[1].cancel()  # the new kill signals the same processes, sooner
        task = asyncio.get_running_loop().create_task(self._terminate(pod, deleting=True), name=f"terminate-{uid}")
        self._terminating[uid] = (grace, task)

        def finished(t: asyncio.Task[None]) -> None:
            if self._terminating.get(uid, (0, None))[1] is t:
                del self._terminating[uid]
            if t.cancelled() or t.exception() is None:
                return
            log.warning("stopping deleted pod %s failed: %s (retrying)", key, t.exception())
            self.controller.queue.add_rate_limited(key)

        task.add_done_callback(finished)

    def _record(self, pod: dict[str, Any], evs: list[runtime.Event]) -> None:
        for ev in evs:
            self.recorder.event(events_mod.pod_ref(pod, field_path=ev.field_path), ev.type, ev.reason, ev.message)

    async def _write_status(self, pod: dict[str, Any], status: dict[str, Any]) -> dict[str, Any] | None:
        uid = str(pod["metadata"].get("uid") or "")
        if status == pod.get("status") or status == self._written.get(uid):
            return None
        body = dict(pod)
        body["status"] = status
        try:
            stored = await self.client.update_status(PODS, body)
        except errors.Conflict:
            # Someone wrote the pod since our cache saw it: read it and write once more on top.
            fresh = await self.client.get(PODS.path(pod["metadata"]["namespace"], pod["metadata"]["name"]))
            if fresh["metadata"].get("uid") != uid:
                return None
            fresh["status"] = podstatus.compute(fresh, self.runtime.pod_status(uid), host_ip=self.host_ip,
                                                now=self.clock.now())
            stored = await self.client.update_status(PODS, fresh)
            status = fresh["status"]
        self._written[uid] = status
        return stored

    async def _terminate(self, pod: dict[str, Any], *, deleting: bool, reason: str = "", message: str = "") -> None:
        """Stop the pod's containers, report the terminal status and, when deleting, remove the pod."""
        meta = pod["metadata"]
        uid = str(meta.get("uid") or "")
        grace = int(meta.get("deletionGracePeriodSeconds") or 0)
        if reason:
            self.recorder.event(events_mod.pod_ref(pod), runtime.WARNING, reason, message)
        self._record(pod, await self.runtime.kill_pod(pod, grace_seconds=grace))
        rt = self.runtime.pod_status(uid)
        if rt is not None or reason:
            status = podstatus.compute(pod, rt, host_ip=self.host_ip, now=self.clock.now(), terminal=True,
                                       failure=(reason, message) if reason else None)
            try:
                await self._write_status(pod, status)
            except errors.NotFound:
                pass
        if not deleting:
            return
        try:
            await self.client.delete(PODS.path(meta["namespace"], meta["name"]), grace_period_seconds=0,
                                     preconditions={"uid": uid})
        except (errors.NotFound, errors.Conflict):
            pass  # already gone, or a new pod with this name
        if uid in self._keys:  # else it was forgotten meanwhile, which started its teardown already
            self._remove(uid)

    async def _forget(self, key: str, uid: str) -> None:
        self._remove(uid)
        self._uids.pop(key, None)
        self._keys.pop(uid, None)
        self._written.pop(uid, None)

    def _remove(self, uid: str) -> None:
        """Tear the pod down in the background (once per uid)."""
        if uid in self._teardowns:
            return
        task = asyncio.get_running_loop().create_task(self._teardown(uid), name=f"teardown-{uid}")
        self._teardowns[uid] = task
        task.add_done_callback(lambda _: self._teardowns.pop(uid, None))

    async def _teardown(self, uid: str) -> None:
        async with self._teardown_slots:
            try:
                await self.runtime.remove_pod(uid)
            except Exception:  # noqa: BLE001 - one pod's leftovers must not stop the others' teardown
                log.exception("removing pod %s failed", uid)
