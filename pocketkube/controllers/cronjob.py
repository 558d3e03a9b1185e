"""CronJob controller: starts a Job at each activation of the schedule, tracks active runs, prunes history."""

from __future__ import annotations

import logging
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import cronjob_plan as plan
from pocketkube.controllers import podutil
from pocketkube.runtime import controller, writes

log = logging.getLogger("pocketkube.controllers.cronjob")

CRONJOBS = rest.GVR("batch", "v1", "cronjobs")
JOBS = rest.GVR("batch", "v1", "jobs")
COMPONENT = "cronjob-controller"
STALE_RETRY = 1.0


def _owner_name(job: dict[str, Any]) -> str | None:
    for ref in plan.meta(job).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") and ref.get("kind") == "CronJob":
            return str(ref.get("name") or "")
    return None


class JobIndex:
    """Jobs controlled by a CronJob, by "namespace/cronjob-name"."""

    def __init__(self) -> None:
        self.by_owner: dict[str, dict[str, dict[str, Any]]] = {}

    def update(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for obj, add in ((old, False), (new, True)):
            if obj is None:
                continue
            owner = _owner_name(obj)
            if owner is None:
                continue
            okey = f"{plan.meta(obj).get('namespace') or ''}/{owner}"
            jobs = self.by_owner.setdefault(okey, {})
            if add:
                jobs[informer.key_of(obj)] = obj
            else:
                jobs.pop(informer.key_of(obj), None)

    def children(self, key: str) -> list[dict[str, Any]]:
        return list(self.by_owner.get(key, {}).values())


class CronJobController(controller.Reconciler):
    """Reconciles CronJobs by "namespace/name" against the injected clock."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 5,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.index = JobIndex()
        # The resourceVersion of our last status write per CronJob: an older cached copy is not worth a sync.
        self.written: dict[str, int] = {}
        self.cronjobs = self.watch(CRONJOBS)
        self.jobs = self.watch(JOBS, self._job_keys, index=self.index.update)

    def _job_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        keys: list[str] = []
        for obj in (old, new):
            if obj is None:
                continue
            owner = _owner_name(obj)
            if owner is not None:
                key = f"{plan.meta(obj).get('namespace') or ''}/{owner}"
                if key not in keys:
                    keys.append(key)
        return keys

    async def reconcile(self, key: str) -> controller.Outcome:
        cj = self.cronjobs.get(key)
        if cj is None:
            self.written.pop(key, None)
            return controller.DONE
        if podutil.resource_version(cj) < self.written.get(key, 0):
            # The informer has not caught up with our own write; its event will bring the key back.
            return controller.requeue_after(STALE_RETRY)
        jobs = self.index.children(key)
        observed = plan.observe(cj, jobs)
        if any(e[1] == "UnexpectedJob" for e in observed.events):
            # Our cache may predate our own status write that listed the Job: ask the server.
            cj = await self._fresh(cj)
            if cj is None:
                return controller.DONE
            observed = plan.observe(cj, jobs)
        for e in observed.events:
            await self.recorder.event(cj, *e)
        status = observed.status
        for ref in observed.unverified:
            try:
                await self.client.get(JOBS.path(ref.get("namespace") or "", ref.get("name") or ""))
            except errors.NotFound:
                await self.recorder.event(cj, plan.NORMAL, "MissingJob", f"Active job went missing: {ref.get('name')}")
                status = plan.without_active(status, ref.get("uid") or "")
        current = dict(cj, status=status)
        outcome = controller.DONE
        failure: BaseException | None = None
        if not plan.meta(cj).get("deletionTimestamp"):
            try:
                current, outcome = await self._schedule(current)
            except errors.APIError as e:
                failure = e
        current = await self._cleanup_history(current, jobs)
        if current.get("status") != (cj.get("status") or {}):
            await self._update_status(cj, current.get("status") or {})
        if failure is not None:
            raise failure
        return outcome

    async def _fresh(self, cj: dict[str, Any]) -> dict[str, Any] | None:
        m = plan.meta(cj)
        try:
            return await self.client.get(CRONJOBS.path(m.get("namespace") or "", m.get("name") or ""))
        except errors.NotFound:
            return None

    async def _schedule(self, cj: dict[str, Any]) -> tuple[dict[str, Any], controller.Outcome]:
        """Start the due run, if any; the CronJob with its new status and when to look again."""
        sched, parse_events = plan.schedule_of(cj)
        suspended = bool((cj.get("spec") or {}).get("suspend"))
        for e in parse_events:
            if not suspended or e[1] == "UnknownTimeZone":
                await self.recorder.event(cj, *e)
        if sched is None or suspended:
            return cj, controller.DONE
        now = self.clock.now()
        decision = plan.decide(cj, now, sched)
        for e in decision.events:
            await self.recorder.event(cj, *e)
        outcome = controller.requeue_after(decision.requeue_after) if decision.requeue_after is not None \
            else controller.DONE
        if decision.scheduled is None:
            return cj, outcome
        status = dict(cj.get("status") or {})
        for ref in decision.replace:
            status = await self._replace(cj, ref, status)
        body = plan.job_from_template(cj, decision.scheduled)
        ns = plan.meta(cj).get("namespace") or ""
        try:
            job = await self.client.create(JOBS, body, namespace=ns)
            await self.recorder.event(cj, plan.NORMAL, "SuccessfulCreate", f"Created job {plan.meta(job).get('name')}")
        except errors.AlreadyExists:
            # Created by an earlier sync whose status write was lost, or by someone else. A finished one
            # stays out of status.active (kube leaves it alone), else each later try would "see it complete" again.
            job = await self.client.get(JOBS.path(ns, body["metadata"]["name"]))
            if not plan.controlled_by(job, cj) or plan.finished_condition(job) is not None or any(
                    r.get("uid") == plan.meta(job).get("uid") for r in status.get("active") or []):
                return dict(cj, status=status), outcome
        except errors.APIError as e:
            if writes.namespace_terminating(e):
                return dict(cj, status=status), controller.DONE
            await self.recorder.event(cj, plan.WARNING, "FailedCreate", f"Error creating job: {e.message}")
            raise
        status["active"] = [*(status.get("active") or []), plan.job_ref(job)]
        status["lastScheduleTime"] = clock_mod.rfc3339(decision.scheduled)
        return dict(cj, status=status), outcome

    async def _replace(self, cj: dict[str, Any], ref: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        ns, name = ref.get("namespace") or "", ref.get("name") or ""
        try:
            job = await self.client.get(JOBS.path(ns, name))
        except errors.APIError as e:
            await self.recorder.event(cj, plan.WARNING, "FailedGet", f"Get job: {e.message}")
            raise
        if not await self._delete_job(cj, job):
            raise errors.InternalError(f"could not replace job {ns}/{name}")
        return plan.without_active(status, plan.meta(job).get("uid") or "")

    async def _delete_job(self, cj: dict[str, Any], job: dict[str, Any]) -> bool:
        m = plan.meta(job)
        try:
            await self.client.delete(JOBS.path(m.get("namespace") or "", m.get("name") or ""),
                                     propagation_policy="Background")
        except errors.APIError as e:
            if not isinstance(e, errors.NotFound):
                await self.recorder.event(cj, plan.WARNING, "FailedDelete", f"Deleted job: {e.message}")
                return False
        await self.recorder.event(cj, plan.NORMAL, "SuccessfulDelete", f"Deleted job {m.get('name')}")
        return True

    async def _cleanup_history(self, cj: dict[str, Any], jobs: list[dict[str, Any]]) -> dict[str, Any]:
        status = dict(cj.get("status") or {})
        for job in plan.history_to_delete(cj, jobs):
            if await self._delete_job(cj, job):
                status = plan.without_active(status, plan.meta(job).get("uid") or "")
        return dict(cj, status=status)

    async def _update_status(self, cj: dict[str, Any], status: dict[str, Any]) -> None:
        body = dict(cj, status=status)
        try:
            updated = await self.client.update_status(CRONJOBS, body)
        except errors.NotFound:
            return
        self.written[informer.key_of(cj)] = podutil.resource_version(updated)
