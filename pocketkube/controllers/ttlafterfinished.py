"""TTL-after-finished controller: deletes finished Jobs once spec.ttlSecondsAfterFinished has passed."""

from __future__ import annotations

import datetime
import logging
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import job_util as ju
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.ttlafterfinished")

JOBS = rest.GVR("batch", "v1", "jobs")
COMPONENT = "ttl-after-finished-controller"


def needs_cleanup(job: dict[str, Any]) -> bool:
    """A finished Job with a TTL that is not already being deleted."""
    return (ju.spec(job).get("ttlSecondsAfterFinished") is not None and ju.is_finished(job)
            and not ju.meta(job).get("deletionTimestamp"))


def finish_time(job: dict[str, Any]) -> datetime.datetime | None:
    """lastTransitionTime of the Complete or Failed condition that finished the Job."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if c.get("type") in (ju.COMPLETE, ju.FAILED) and c.get("status") == "True":
            return ju.parse_time(c.get("lastTransitionTime"))
    return None


def time_left(job: dict[str, Any], now: datetime.datetime) -> float | None:
    """Seconds until the Job expires (<= 0: delete it now); None when it needs no clean-up."""
    if not needs_cleanup(job):
        return None
    done = finish_time(job)
    if done is None:
        return None
    if done > now:
        log.warning("job %s/%s finished in the future (%s): clock skew?", ju.meta(job).get("namespace"),
                    ju.meta(job).get("name"), done)
    expire = done + datetime.timedelta(seconds=int(ju.spec(job)["ttlSecondsAfterFinished"]))
    return (expire - now).total_seconds()


class TTLAfterFinishedController(controller.Reconciler):
    """Watches Jobs; deletes each (foreground, guarded by uid) when its TTL after finishing runs out."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers)
        self.jobs = self.watch(JOBS, self._keys)

    def _keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        if new is None or not needs_cleanup(new):
            return []
        return [informer.key_of(new)]

    async def reconcile(self, key: str) -> controller.Outcome:
        job = self.jobs.get(key)
        if job is None:
            return controller.DONE
        left = time_left(job, self.clock.now())
        if left is None:
            return controller.DONE
        if left > 0:
            return controller.requeue_after(left)
        m = ju.meta(job)
        path = JOBS.path(m.get("namespace") or "", m.get("name") or "")
        # The cache may be stale: check the TTL against the server's copy before deleting.
        try:
            fresh = await self.client.get(path)
        except errors.NotFound:
            return controller.DONE
        left = time_left(fresh, self.clock.now())
        if left is None:
            return controller.DONE
        if left > 0:
            return controller.requeue_after(left)
        try:
            await self.client.delete(path, propagation_policy="Foreground",
                                     preconditions={"uid": ju.meta(fresh).get("uid") or ""})
        except (errors.NotFound, errors.Conflict):
            return controller.DONE
        log.info("deleted job %s after its TTL", key)
        return controller.DONE
