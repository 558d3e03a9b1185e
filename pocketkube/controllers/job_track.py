"""Job status tracking through the pod finalizer (kube's trackJobStatusAndRemoveFinalizers) and the sync state."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import job_cache, podutil
from pocketkube.controllers import job_util as ju
from pocketkube.runtime import events

PODS = rest.GVR("", "v1", "pods")
JOBS = rest.GVR("batch", "v1", "jobs")


@dataclasses.dataclass
class SyncState:
    """One sync's working view of a Job (kube's syncJobCtx)."""

    job: dict[str, Any]
    pods: list[dict[str, Any]]
    active_pods: list[dict[str, Any]]
    succeeded: int
    failed: int
    ready: int
    terminating: int
    backoff: ju.Backoff
    finished: dict[str, Any] | None = None
    prev_succeeded_ix: ju.Intervals = dataclasses.field(default_factory=list)
    succeeded_ix: ju.Intervals = dataclasses.field(default_factory=list)
    # Only with backoffLimitPerIndex: the failed indexes, and per index the failed pod a replacement waits on.
    failed_ix: ju.Intervals | None = None
    delayed: dict[int, dict[str, Any]] = dataclasses.field(default_factory=dict)
    requeue: list[float] = dataclasses.field(default_factory=list)

    @property
    def status(self) -> dict[str, Any]:
        return self.job.setdefault("status", {})


class StatusTracker:
    """Counts finished pods into the Job status, releases their finalizers, and adds the final condition."""

    def __init__(self, client: rest.Client, *, recorder: events.Recorder, expectations: job_cache.Expectations,
                 clock: clock_mod.Clock, written: dict[str, int], backoffs: dict[str, ju.Backoff]) -> None:
        self.client = client
        self.recorder = recorder
        self.expectations = expectations
        self.clock = clock
        # Shared with the controller: our last written resourceVersion and back-off record per Job.
        self.written = written
        self.backoffs = backoffs

    async def track(self, key: str, st: SyncState, needs_flush: bool) -> None:
        job = st.job
        status = job["status"]
        pending_rm = self.expectations.finalizers_pending(key)
        with_finalizer = {ju.meta(p).get("uid") or "" for p in st.pods
                          if ju.has_finalizer(p) and ju.meta(p).get("uid") not in pending_rm}
        if count_uncounted(status, with_finalizer):
            needs_flush = True
        unc = status["uncountedTerminatedPods"]
        unc_s: list[str] = unc.setdefault("succeeded", [])
        unc_f: list[str] = unc.setdefault("failed", [])
        indexed = ju.is_indexed(job)
        limit = ju.completions(job) or 0
        new_ix: list[int] = []
        to_release: list[dict[str, Any]] = []
        reached_max = False
        failing = st.finished is not None and st.finished.get("type") != ju.SUCCESS_CRITERIA_MET
        for pod in st.pods:
            uid = ju.meta(pod).get("uid") or ""
            if not ju.has_finalizer(pod) or uid in pending_rm:
                continue
            considered_failed = ju.is_pod_failed(pod, job)
            if not (ju.meta(job).get("deletionTimestamp") or st.finished is not None
                    or ju.phase(pod) == "Succeeded" or considered_failed):
                continue
            if (not ju.meta(job).get("deletionTimestamp") and st.finished is None and ju.phase(pod) != "Succeeded"
                    and uid == ju.meta(st.delayed.get(ju.completion_index(pod), {})).get("uid")):
                # Its index failure count moves to the replacement pod first.
                continue
            to_release.append(pod)
            if ju.phase(pod) == "Succeeded" and uid not in unc_f:
                if indexed:
                    ix = ju.completion_index(pod)
                    if 0 <= ix < limit and not ju.has_index(st.prev_succeeded_ix, ix):
                        new_ix.append(ix)
                        needs_flush = True
                elif uid not in unc_s:
                    unc_s.append(uid)
                    needs_flush = True
            elif considered_failed or failing:
                ix = ju.completion_index(pod)
                if uid not in unc_f and (not indexed or 0 <= ix < limit) and ju.match_failure_policy(job, pod)[1]:
                    unc_f.append(uid)
                    needs_flush = True
            if len(new_ix) + len(unc_s) + len(unc_f) >= ju.MAX_UNCOUNTED_PODS:
                reached_max = True
                break
        if indexed:
            st.succeeded_ix = ju.with_indexes(st.succeeded_ix, new_ix)
            text = ju.format_indexes(st.succeeded_ix)
            if text != (status.get("completedIndexes") or ""):
                needs_flush = True
            set_count(status, "succeeded", ju.total(st.succeeded_ix))
            if text:
                status["completedIndexes"] = text
            else:
                status.pop("completedIndexes", None)
            failed_text = None if st.failed_ix is None else ju.format_indexes(st.failed_ix)
            if failed_text != status.get("failedIndexes"):
                needs_flush = True
            if failed_text is None:
                status.pop("failedIndexes", None)
            else:
                status["failedIndexes"] = failed_text
        now = self.clock.now()
        finished = st.finished
        conds = list(status.get("conditions") or [])
        if finished is not None and finished.get("type") == ju.FAILURE_TARGET:
            # Record the failure before the finalizers go, so a crash cannot lose it.
            conds.append(finished)
            needs_flush = True
            finished = ju.new_condition(ju.FAILED, "True", finished.get("reason") or "",
                                        finished.get("message") or "", now)
        elif finished is not None and finished.get("type") == ju.SUCCESS_CRITERIA_MET:
            if ju.condition(job, ju.SUCCESS_CRITERIA_MET) is None:
                conds.append(finished)
                needs_flush = True
            finished = ju.new_condition(ju.COMPLETE, "True", finished.get("reason") or "",
                                        finished.get("message") or "", now)
        if conds:
            status["conditions"] = conds
        if needs_flush:
            await self.write_status(job)
            self.backoffs[key] = st.backoff
            needs_flush = False
        rm_error: BaseException | None = None
        if to_release:
            uids = [ju.meta(p).get("uid") or "" for p in to_release]
            self.expectations.expect_finalizers_removed(key, uids)
            results = await asyncio.gather(*(self.remove_finalizer(p) for p in to_release), return_exceptions=True)
            for pod, r in zip(to_release, results, strict=True):
                uid = ju.meta(pod).get("uid") or ""
                if r is True:
                    with_finalizer.discard(uid)
                else:
                    self.expectations.finalizer_removed(key, uid)
                    if isinstance(r, BaseException):
                        rm_error = rm_error or r
        if count_uncounted(status, with_finalizer):
            needs_flush = True
        if rm_error is not None:
            if needs_flush:
                await self.write_status(job)
            raise rm_error
        done = not reached_max and self._enact_finished(st, finished)
        if done or needs_flush:
            await self.write_status(job)
        if done and finished is not None:
            await self._record_finished(job, finished)

    def _enact_finished(self, st: SyncState, finished: dict[str, Any] | None) -> bool:
        """Add Complete or Failed once no pod is left uncounted or terminating."""
        if finished is None:
            return False
        status = st.job["status"]
        unc = status.get("uncountedTerminatedPods") or {}
        if unc.get("succeeded") or unc.get("failed") or st.terminating > 0:
            return False
        now = self.clock.now()
        conds, _ = ju.ensure_condition(list(status.get("conditions") or []), finished["type"], "True",
                                       finished.get("reason") or "", finished.get("message") or "", now)
        status["conditions"] = conds
        if finished["type"] == ju.COMPLETE:
            status["completionTime"] = ju.condition(st.job, ju.COMPLETE)["lastTransitionTime"]  # type: ignore[index]
        return True

    async def _record_finished(self, job: dict[str, Any], finished: dict[str, Any]) -> None:
        if finished["type"] == ju.COMPLETE:
            total = ju.completions(job)
            if total is not None and int(job["status"].get("succeeded") or 0) > total:
                await self.recorder.event(job, events.WARNING, "TooManySucceededPods",
                                          "Too many succeeded pods running after completion count reached")
            await self.recorder.event(job, events.NORMAL, "Completed", "Job completed")
        else:
            await self.recorder.event(job, events.WARNING, finished.get("reason") or "",
                                      finished.get("message") or "")

    async def remove_finalizer(self, pod: dict[str, Any]) -> bool:
        m = ju.meta(pod)
        try:
            await self.client.patch(PODS.path(m.get("namespace") or "", m.get("name") or ""),
                                    ju.remove_finalizer_patch(pod), patch_type="strategic")
        except errors.NotFound:
            return True
        return True

    async def write_status(self, job: dict[str, Any]) -> None:
        """PUT /status with the Job's current status; the returned resourceVersion is used for the next write."""
        body = dict(job)
        status = dict(job.get("status") or {})
        unc = {k: v for k, v in (status.get("uncountedTerminatedPods") or {}).items() if v}
        status["uncountedTerminatedPods"] = unc
        body["status"] = status
        updated = await self.client.update_status(JOBS, body)
        job["metadata"] = updated.get("metadata") or job.get("metadata")
        self.written[informer.key_of(job)] = podutil.resource_version(updated)


def set_count(status: dict[str, Any], key: str, value: int) -> None:
    # active/succeeded/failed are omitempty in the API.
    if value:
        status[key] = value
    else:
        status.pop(key, None)


def count_uncounted(status: dict[str, Any], with_finalizer: set[str]) -> bool:
    """Move uncounted pods whose finalizer is gone into the succeeded/failed counters."""
    unc = status.setdefault("uncountedTerminatedPods", {})
    changed = False
    for field in ("succeeded", "failed"):
        uids = list(unc.get(field) or [])
        keep = [u for u in uids if u in with_finalizer]
        if len(keep) != len(uids):
            changed = True
            set_count(status, field, int(status.get(field) or 0) + len(uids) - len(keep))
            unc[field] = keep
    return changed
