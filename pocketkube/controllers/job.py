"""Job controller: runs pods to completion, counts them through the tracking finalizer, finishes the Job."""

from __future__ import annotations

import asyncio
import copy
import datetime
import logging
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import job_cache, ownerrefs, podutil
from pocketkube.controllers import job_index as jx
from pocketkube.controllers import job_track as jt
from pocketkube.controllers import job_util as ju
from pocketkube.runtime import controller, events, writes

log = logging.getLogger("pocketkube.controllers.job")

PODS = rest.GVR("", "v1", "pods")
JOBS = rest.GVR("batch", "v1", "jobs")
COMPONENT = "job-controller"
ORPHAN = "orphan-pod"
STALE_RETRY = 1.0


class JobController(controller.Reconciler):
    """Reconciles Jobs by "namespace/name" (and orphaned pods with the tracking finalizer)."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 5,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.expectations = job_cache.Expectations()
        self.backoffs: dict[str, ju.Backoff] = {}
        # The resourceVersion of our last status write per Job: an older cached copy is not worth a sync.
        self.written: dict[str, int] = {}
        self.tracker = jt.StatusTracker(client, recorder=self.recorder, expectations=self.expectations, clock=self.clock,
                                        written=self.written, backoffs=self.backoffs)
        self.pod_index = ownerrefs.OwnerIndex()
        self.jobs = self.watch(JOBS, self._job_keys)
        self.pods = self.watch(PODS, self._pod_keys, index=self.pod_index.update)

    # --- event handlers: only enqueue and count expectations

    def _job_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Any]:
        obj = new if new is not None else old
        if obj is None:
            return []
        key = informer.key_of(obj)
        if new is not None:
            return [key]
        self.expectations.forget(key)
        self.backoffs.pop(key, None)
        # Its pods may still carry our finalizer: release them.
        m = ju.meta(obj)
        return [key] + [(ORPHAN, informer.key_of(p)) for p in self.pod_index.owned_by(m.get("uid") or "",
                                                                                   m.get("namespace") or "")
                        if ju.has_finalizer(p)]

    def _job_for(self, pod: dict[str, Any]) -> str | None:
        return ownerrefs.owner_key(self.jobs, "Job", ju.meta(pod).get("namespace") or "", ownerrefs.controller_of(pod))

    def _pod_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Any]:
        pod = new if new is not None else old
        if pod is None:
            return []
        key = self._job_for(pod)
        pkey = informer.key_of(pod)
        uid = ju.meta(pod).get("uid") or ""
        if key is None:
            if new is not None and ju.has_finalizer(new):
                return [(ORPHAN, pkey)]
            if new is not None and ownerrefs.controller_of(new) is None and not ju.meta(new).get("deletionTimestamp"):
                return self._matching_jobs(new)
            return []
        if new is None:
            self.expectations.deletion_observed(key)
            self.expectations.finalizer_removed(key, uid)
            return [key]
        if old is None and not ju.meta(new).get("deletionTimestamp"):
            self.expectations.creation_observed(key)
        if ju.meta(new).get("deletionTimestamp"):
            self.expectations.deletion_observed(key)
        if not ju.has_finalizer(new):
            self.expectations.finalizer_removed(key, uid)
        keys: list[Any] = [key]
        old_key = self._job_for(old) if old is not None else None
        if old_key is not None and old_key != key:
            keys.append(old_key)
        return keys

    def _matching_jobs(self, pod: dict[str, Any]) -> list[Any]:
        return ownerrefs.selecting(self.jobs.list(), pod)

    # --- reconcile

    async def reconcile(self, key: Any) -> controller.Outcome:
        if isinstance(key, tuple):
            await self._release_orphan(key[1])
            return controller.DONE
        job = self.jobs.get(key)
        if job is None:
            self.expectations.forget(key)
            self.backoffs.pop(key, None)
            self.written.pop(key, None)
            return controller.DONE
        if podutil.resource_version(job) < self.written.get(key, 0):
            # The informer has not caught up with our own write; its event will bring the key back.
            return controller.requeue_after(STALE_RETRY)
        pods = await self._claim_pods(job)
        delay = await self.sync(key, job, pods)
        return controller.requeue_after(delay) if delay is not None else controller.DONE

    async def _release_orphan(self, pkey: str) -> None:
        pod = self.pods.get(pkey)
        if pod is None or not ju.has_finalizer(pod):
            return
        ref = ownerrefs.controller_of(pod)
        ns = ju.meta(pod).get("namespace") or ""
        if ref is not None and ref.get("kind") == "Job":
            try:
                job = await self.client.get(JOBS.path(ns, ref.get("name") or ""))
                if ju.meta(job).get("uid") == ref.get("uid") and not ju.is_finished(job):
                    return
            except errors.NotFound:
                pass
        await self.tracker.remove_finalizer(pod)

    async def _claim_pods(self, job: dict[str, Any]) -> list[dict[str, Any]]:
        """Owned pods, plus matching orphans adopted (with our finalizer); non-matching owned pods released."""
        m = ju.meta(job)
        ns, uid = m.get("namespace") or "", m.get("uid") or ""
        try:
            selector = selectors.from_label_selector(ju.spec(job).get("selector"))
        except errors.APIError:
            return self.pod_index.owned_by(uid, ns)
        owned: list[dict[str, Any]] = []
        for pod in self.pod_index.in_namespace(ns):
            ref = ownerrefs.controller_of(pod)
            matches = selector.matches(ju.meta(pod).get("labels") or {})
            pm = ju.meta(pod)
            path = PODS.path(ns, pm.get("name") or "")
            if ref is not None:
                if ref.get("uid") != uid:
                    continue
                if matches or pm.get("deletionTimestamp"):
                    owned.append(pod)
                    continue
                release = {"metadata": {"ownerReferences": [{"$patch": "delete", "uid": uid}], "uid": pm.get("uid"),
                                        "$deleteFromPrimitiveList/finalizers": [ju.TRACKING_FINALIZER]}}
                await self._patch_quietly(path, release)
                continue
            if not matches or pm.get("deletionTimestamp") or m.get("deletionTimestamp") or ju.is_finished(job):
                continue
            adopt = {"metadata": {"ownerReferences": [ju.controller_ref(job)], "uid": pm.get("uid"),
                                  "finalizers": [ju.TRACKING_FINALIZER]}}
            if await self._patch_quietly(path, adopt):
                adopted = copy.deepcopy(pod)
                adopted["metadata"].setdefault("finalizers", [])
                if ju.TRACKING_FINALIZER not in adopted["metadata"]["finalizers"]:
                    adopted["metadata"]["finalizers"].append(ju.TRACKING_FINALIZER)
                owned.append(adopted)
        return owned

    async def _patch_quietly(self, path: str, body: dict[str, Any]) -> bool:
        try:
            await self.client.patch(path, body, patch_type="strategic")
            return True
        except (errors.NotFound, errors.Conflict, errors.Invalid):
            return False

    async def sync(self, key: str, job: dict[str, Any], pods: list[dict[str, Any]]) -> float | None:
        """One pass of kube's syncJob; returns seconds until the Job must be looked at again (or None)."""
        if ju.is_finished(job):
            self.backoffs.pop(key, None)
            return None
        managed_by = ju.spec(job).get("managedBy")
        if managed_by is not None and managed_by != ju.CONTROLLER_NAME:
            return None
        now = self.clock.now()
        job = copy.deepcopy(job)
        status = job.setdefault("status", {})
        uncounted = status.get("uncountedTerminatedPods") or {}
        status["uncountedTerminatedPods"] = {k: list(v) for k, v in uncounted.items() if v}
        expectations_ok = self.expectations.satisfied(key, self.clock.monotonic())
        pending_rm = self.expectations.finalizers_pending(key)
        active_pods = [p for p in pods if ju.is_active(p)]
        new_succeeded, new_failed = self._new_finished(job, pods, pending_rm)
        unc = status["uncountedTerminatedPods"]
        failed_counted = [p for p in new_failed if ju.match_failure_policy(job, p)[1]]
        st = jt.SyncState(job=job, pods=pods, active_pods=active_pods,
                       succeeded=int(status.get("succeeded") or 0) + len(new_succeeded) + len(unc.get("succeeded") or []),
                       failed=int(status.get("failed") or 0) + len(failed_counted) + len(unc.get("failed") or []),
                       ready=sum(1 for p in active_pods if ju.is_ready(p)),
                       terminating=sum(1 for p in pods if ju.is_terminating(p)),
                       backoff=ju.next_backoff(self.backoffs.get(key, ju.Backoff()), new_succeeded, new_failed))
        if not status.get("startTime") and not ju.suspended(job):
            status["startTime"] = clock_mod.rfc3339(now)
        self._finished_by_failure(st, now)
        if ju.is_indexed(job):
            limit = ju.completions(job) or 0
            st.prev_succeeded_ix = ju.parse_indexes(status.get("completedIndexes"), limit)
            fresh = [ju.completion_index(p) for p in pods
                     if ju.phase(p) == "Succeeded" and ju.has_finalizer(p) and 0 <= ju.completion_index(p) < limit]
            st.succeeded_ix = ju.with_indexes(st.prev_succeeded_ix, fresh)
            st.succeeded = ju.total(st.succeeded_ix)
            self._index_outcome(st, pending_rm, now)
        active = len(active_pods)
        suspend_changed = False
        manage_error: BaseException | None = None
        if st.finished is not None:
            deleted, deleted_ready = await self._delete_pods(key, job, active_pods, expect=False)
            if deleted != active or not expectations_ok:
                # Pods not yet gone (or not yet seen): finish on a later sync.
                st.finished = None
            active -= deleted
            st.terminating += deleted
            st.ready -= deleted_ready
        else:
            manage_called = False
            if expectations_ok and not ju.meta(job).get("deletionTimestamp"):
                try:
                    active = await self._manage(key, st)
                except errors.APIError as e:
                    manage_error = e
                    active = len(st.active_pods)
                manage_called = True
            total = ju.completions(job)
            complete = (st.succeeded > 0 and active == 0) if total is None else (st.succeeded >= total and active == 0)
            if complete:
                st.finished = ju.new_condition(ju.SUCCESS_CRITERIA_MET, "True", "CompletionsReached",
                                               ju.MSG_COMPLETIONS, now)
            elif manage_called:
                suspend_changed = await self._suspend_condition(job, now)
        needs_update = (suspend_changed or active != int(status.get("active") or 0)
                        or st.ready != status.get("ready") or st.terminating != status.get("terminating"))
        jt.set_count(status, "active", active)
        status["ready"] = st.ready
        status["terminating"] = st.terminating
        await self.tracker.track(key, st, needs_update)
        if manage_error is not None:
            raise manage_error
        return min(st.requeue) if st.requeue else None

    def _new_finished(self, job: dict[str, Any], pods: list[dict[str, Any]],
                      pending_rm: set[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Finished pods not yet counted (they still carry the finalizer and are not in uncounted)."""
        unc = (job.get("status") or {}).get("uncountedTerminatedPods") or {}
        unc_s, unc_f = set(unc.get("succeeded") or []), set(unc.get("failed") or [])
        limit = ju.completions(job) or 0
        prev_ix = ju.parse_indexes((job.get("status") or {}).get("completedIndexes"), limit)
        succeeded, failed = [], []
        for p in pods:
            uid = ju.meta(p).get("uid") or ""
            if not ju.has_finalizer(p) or uid in pending_rm:
                continue
            if ju.phase(p) == "Succeeded":
                if ju.is_indexed(job):
                    ix = ju.completion_index(p)
                    if 0 <= ix < limit and not ju.has_index(prev_ix, ix):
                        succeeded.append(p)
                elif uid not in unc_s:
                    succeeded.append(p)
            elif ju.is_pod_failed(p, job) and uid not in unc_f:
                failed.append(p)
        return succeeded, failed

    def _index_outcome(self, st: jt.SyncState, pending_rm: set[str], now: datetime.datetime) -> None:
        """Indexed Jobs: failed indexes (backoffLimitPerIndex) may fail the Job, the success policy may end it."""
        job = st.job
        if jx.backoff_limit_per_index(job) is not None:
            st.failed_ix = jx.failed_indexes(job, st.pods)
            if st.finished is None:
                outcome = jx.failure_condition(job, st.failed_ix, st.succeeded_ix)
                if outcome is not None:
                    st.finished = ju.new_condition(ju.FAILURE_TARGET, "True", outcome[0], outcome[1], now)
            st.delayed = jx.delayed_deletions(job, st.pods, active=st.active_pods, succeeded=st.succeeded_ix,
                                              failed=st.failed_ix, skip=pending_rm)
        if st.finished is None:
            msg = jx.match_success_policy(job, st.succeeded_ix)
            if msg is not None:
                st.finished = ju.new_condition(ju.SUCCESS_CRITERIA_MET, "True", jx.SUCCESS_POLICY_REASON, msg, now)

    def _finished_by_failure(self, st: jt.SyncState, now: datetime.datetime) -> None:
        """The failure (or recorded success) that ends the Job, if any; a deadline still ahead is requeued."""
        job = st.job
        scm = ju.condition(job, ju.SUCCESS_CRITERIA_MET)
        if scm is not None and scm.get("status") == "True":
            st.finished = scm
            return
        ft = ju.condition(job, ju.FAILURE_TARGET)
        if ft is not None and ft.get("status") == "True":
            st.finished = ju.new_condition(ju.FAILED, "True", ft.get("reason") or "", ft.get("message") or "", now)
            return
        msg = ju.fail_job_message(job, st.pods)
        if msg is not None:
            st.finished = ju.new_condition(ju.FAILURE_TARGET, "True", "PodFailurePolicy", msg, now)
            return
        left = ju.deadline_remaining(job, now)
        if st.failed > ju.backoff_limit(job) or ju.past_backoff_limit_on_failure(job, st.pods):
            st.finished = ju.new_condition(ju.FAILURE_TARGET, "True", "BackoffLimitExceeded", ju.MSG_BACKOFF, now)
        elif left is not None and left <= 0:
            st.finished = ju.new_condition(ju.FAILURE_TARGET, "True", "DeadlineExceeded", ju.MSG_DEADLINE, now)
        elif left is not None:
            st.requeue.append(left)

    async def _suspend_condition(self, job: dict[str, Any], now: datetime.datetime) -> bool:
        status = job["status"]
        conds = list(status.get("conditions") or [])
        if ju.suspended(job):
            conds, changed = ju.ensure_condition(conds, ju.SUSPENDED, "True", "JobSuspended", "Job suspended", now)
            if changed:
                await self.recorder.event(job, events.NORMAL, "Suspended", "Job suspended")
        else:
            conds, changed = ju.ensure_condition(conds, ju.SUSPENDED, "False", "JobResumed", "Job resumed", now)
            if changed:
                await self.recorder.event(job, events.NORMAL, "Resumed", "Job resumed")
                # activeDeadlineSeconds counts continuous activity: a resumed Job starts its clock again.
                status["startTime"] = clock_mod.rfc3339(now)
        if changed:
            status["conditions"] = conds
        return changed

    async def _manage(self, key: str, st: jt.SyncState) -> int:
        """Create or delete pods toward the wanted number of active ones; returns the new active count."""
        job = st.job
        active = len(st.active_pods)
        if ju.suspended(job):
            deleted, deleted_ready = await self._delete_pods(key, job, st.active_pods)
            st.terminating += deleted
            st.ready -= deleted_ready
            return active - deleted
        raw = ju.spec(job).get("parallelism")
        parallelism = 1 if raw is None else int(raw)
        total = ju.completions(job)
        if total is None:
            want = active if st.succeeded > 0 else parallelism
        else:
            want = max(0, min(total - st.succeeded, parallelism))
        victims = ju.active_pods_for_removal(job, st.active_pods, max(0, active - want))
        victims = victims[:ju.MAX_POD_CREATE_DELETE_PER_SYNC]
        if victims:
            deleted, deleted_ready = await self._delete_pods(key, job, victims)
            st.terminating += deleted
            st.ready -= deleted_ready
            return active - deleted
        terminating = st.terminating if ju.only_replace_failed(job) else 0
        diff = want - terminating - active
        if diff <= 0:
            return active
        now = self.clock.now()
        per_index = jx.backoff_limit_per_index(job) is not None
        # With backoffLimitPerIndex every index backs off on its own.
        wait = 0.0 if per_index else ju.backoff_remaining(st.backoff, now)
        if wait > 0:
            st.requeue.append(wait)
            return active
        diff = min(diff, ju.MAX_POD_CREATE_DELETE_PER_SYNC)
        indexes: list[int] = [-1] * diff
        counts: dict[int, tuple[int, int]] | None = None
        if ju.is_indexed(job):
            non_pending = ju.with_indexes(st.succeeded_ix, [ju.completion_index(p) for p in st.active_pods])
            if st.failed_ix:
                non_pending = ju.with_indexes(non_pending, [i for a, b in st.failed_ix for i in range(a, b + 1)])
            if ju.only_replace_failed(job):
                non_pending = ju.with_indexes(non_pending, [ju.completion_index(p) for p in st.pods
                                                            if ju.is_terminating(p)])
            non_pending = [(a, b) for a, b in non_pending if a >= 0]
            indexes = ju.first_pending_indexes(diff, total or 0, non_pending)
            if per_index:
                indexes, wait = jx.indexes_to_create(indexes, st.delayed, now)
                if wait > 0:
                    st.requeue.append(wait)
                    return active
                counts = {ix: jx.new_failure_counts(job, st.delayed.get(ix)) for ix in indexes}
        created = await self._create_pods(key, job, indexes, counts=counts)
        return active + created

    async def _create_pods(self, key: str, job: dict[str, Any], indexes: list[int], *,
                           counts: dict[int, tuple[int, int]] | None = None) -> int:
        """Create pods in slow-start batches (1, 2, 4, ...), stopping at the first failing batch."""
        if not indexes:
            return 0
        self.expectations.expect(key, adds=len(indexes), now=self.clock.monotonic())
        ns = ju.meta(job).get("namespace") or ""
        done = 0
        pos = 0
        batch = 1
        first_error: errors.APIError | None = None
        while pos < len(indexes):
            chunk = indexes[pos:pos + batch]
            results = await asyncio.gather(*(self._create_one(job, ns, ix, None if counts is None else counts.get(ix))
                                             for ix in chunk), return_exceptions=True)
            for r in results:
                if isinstance(r, errors.APIError):
                    first_error = first_error or r
                    self.expectations.creation_observed(key)
                elif isinstance(r, BaseException):
                    raise r
                elif r:
                    done += 1
                else:
                    self.expectations.creation_observed(key)
            pos += len(chunk)
            if first_error is not None:
                for _ in indexes[pos:]:
                    self.expectations.creation_observed(key)
                raise first_error
            batch *= 2
        return done

    async def _create_one(self, job: dict[str, Any], ns: str, index: int, counts: tuple[int, int] | None) -> bool:
        body = ju.pod_for(job, index, failure_counts=counts)
        try:
            pod = await self.client.create(PODS, body, namespace=ns)
        except errors.APIError as e:
            if writes.namespace_terminating(e):
                return False
            await self.recorder.event(job, events.WARNING, "FailedCreate", f"Error creating: {e.message}")
            raise
        await self.recorder.event(job, events.NORMAL, "SuccessfulCreate",
                                  f"Created pod: {ju.meta(pod).get('name', '')}")
        return True

    async def _delete_pods(self, key: str, job: dict[str, Any], pods: list[dict[str, Any]], *,
                           expect: bool = True) -> tuple[int, int]:
        """Delete pods (keeping their finalizers: counting them is the tracker's job); (deleted, of which ready)."""
        if not pods:
            return 0, 0
        if expect:
            self.expectations.expect(key, deletes=len(pods), now=self.clock.monotonic())

        async def one(pod: dict[str, Any]) -> bool:
            m = ju.meta(pod)
            try:
                await self.client.delete(PODS.path(m.get("namespace") or "", m.get("name") or ""))
            except errors.NotFound:
                if expect:
                    self.expectations.deletion_observed(key)
                return True
            except errors.APIError as e:
                if expect:
                    self.expectations.deletion_observed(key)
                await self.recorder.event(job, events.WARNING, "FailedDelete", f"Error deleting: {e.message}")
                return False
            await self.recorder.event(job, events.NORMAL, "SuccessfulDelete", f"Deleted pod: {m.get('name')}")
            return True

        results = await asyncio.gather(*(one(p) for p in pods))
        deleted = sum(1 for ok in results if ok)
        ready = sum(1 for ok, p in zip(results, pods, strict=True) if ok and ju.is_ready(p))
        return deleted, ready
