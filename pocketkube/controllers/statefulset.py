"""StatefulSet controller: ordered pods with stable names and claims, revisions, rolling updates, status."""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import history, ownerrefs
from pocketkube.controllers import replicaset_util as rsutil
from pocketkube.controllers import statefulset_util as util
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.controllers.statefulset")

STATEFULSETS = rest.GVR("apps", "v1", "statefulsets")
PODS = rest.GVR("", "v1", "pods")
PVCS = rest.GVR("", "v1", "persistentvolumeclaims")
COMPONENT = "statefulset-controller"
API_VERSION, KIND = "apps/v1", "StatefulSet"
meta = rsutil.meta


def _typed(obj: dict[str, Any], api_version: str, kind: str) -> dict[str, Any]:
    # List items arrive without apiVersion/kind; owner references and events need them.
    return {**obj, "apiVersion": obj.get("apiVersion") or api_version, "kind": obj.get("kind") or kind}


class StatefulSetController(controller.Reconciler):
    """Reconciles StatefulSets by "namespace/name"."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 5,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.sets = self.watch(STATEFULSETS)
        self.pods = self.watch(PODS, self._pod_keys)
        self.revisions = self.watch(history.CONTROLLER_REVISIONS, self._revision_keys)
        self.claims = self.watch(PVCS, controller.no_keys)

    # --- event handlers

    def _owner_key(self, obj: dict[str, Any]) -> str | None:
        return ownerrefs.owner_key(self.sets, KIND, meta(obj).get("namespace") or "", rsutil.controller_of(obj))

    def _selecting(self, obj: dict[str, Any]) -> list[str]:
        return ownerrefs.selecting(self.sets.list(), obj)

    def _pod_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        keys: list[str] = []
        for obj in (old, new):
            if obj is None:
                continue
            key = self._owner_key(obj)
            if key is not None:
                if key not in keys:
                    keys.append(key)
            elif new is obj and rsutil.controller_of(obj) is None and not meta(obj).get("deletionTimestamp"):
                keys += [k for k in self._selecting(obj) if k not in keys]
        if old is not None and new is not None and not rsutil.is_ready(old) and rsutil.is_ready(new):
            for key in keys:
                sset = self.sets.get(key) or {}
                min_ready = int((sset.get("spec") or {}).get("minReadySeconds") or 0)
                if min_ready > 0:
                    self.controller.queue.add_after(key, min_ready + 1)
        return keys

    def _revision_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        obj = new if new is not None else old
        if obj is None:
            return []
        key = self._owner_key(obj)
        if key is not None:
            return [key]
        return self._selecting(obj) if rsutil.controller_of(obj) is None else []

    # --- reconcile

    async def reconcile(self, key: str) -> controller.Outcome:
        cached = self.sets.get(key)
        if cached is None:
            return controller.DONE
        sset = _typed(copy.deepcopy(cached), API_VERSION, KIND)
        try:
            selector = selectors.from_label_selector((sset.get("spec") or {}).get("selector"))
        except errors.APIError as e:
            log.warning("StatefulSet %s: invalid selector: %s", key, e.message)
            return controller.DONE
        ns = meta(sset).get("namespace") or ""
        uid = meta(sset).get("uid") or ""
        await self._adopt_revisions(sset, selector)
        pods = await self._claim_pods(sset, selector)
        revisions = history.sort_revisions(
            r for r in self.revisions.list()
            if meta(r).get("namespace") == ns and selector.matches(meta(r).get("labels") or {})
            and (rsutil.controller_of(r) is None or (rsutil.controller_of(r) or {}).get("uid") == uid))
        current, update, collisions = await self._revisions(sset, revisions)
        if update not in revisions:
            revisions = history.sort_revisions([r for r in revisions if meta(r).get("name") != meta(update).get("name")]
                                               + [update])
        claims = {meta(c).get("name") or "": c for c in self.claims.list() if meta(c).get("namespace") == ns}
        the_plan = util.plan(sset, pods, current, update, collisions, claims, self.clock.now())
        failure = await self._execute(sset, the_plan, claims)
        status = the_plan.status
        util.complete_rolling_update(sset, status)
        if util.status_changed(sset, status):
            await self._update_status(sset, status)
        await self._truncate_history(sset, pods, revisions, current, update)
        if failure is not None:
            raise failure
        min_ready = int((sset.get("spec") or {}).get("minReadySeconds") or 0)
        if min_ready > 0 and int(status.get("availableReplicas") or 0) != util.replicas_of(sset):
            return controller.requeue_after(min_ready)
        return controller.DONE

    async def _adopt_revisions(self, sset: dict[str, Any], selector: selectors.Selector) -> None:
        ns = meta(sset).get("namespace")
        orphans = [r for r in self.revisions.list() if meta(r).get("namespace") == ns
                   and rsutil.controller_of(r) is None and selector.matches(meta(r).get("labels") or {})]
        if not orphans or meta(sset).get("deletionTimestamp") or \
                not await ownerrefs.can_adopt(self.client, STATEFULSETS, sset):
            return
        await ownerrefs.adopt(self.client, history.CONTROLLER_REVISIONS, sset, orphans)

    async def _claim_pods(self, sset: dict[str, Any], selector: selectors.Selector) -> list[dict[str, Any]]:
        """ClaimPods with isMemberOf: owned members stay, matching orphan members are adopted, others released."""
        ns = meta(sset).get("namespace")
        uid = meta(sset).get("uid")
        candidates = [p for p in self.pods.list() if meta(p).get("namespace") == ns]
        members = [p for p in candidates if util.is_member(sset, p)]
        strangers = [p for p in candidates if not util.is_member(sset, p)
                     and (rsutil.controller_of(p) or {}).get("uid") == uid and not meta(p).get("deletionTimestamp")]
        claims = rsutil.claim(sset, selector, members)
        owned = [p for p in claims.owned if p not in claims.adopt]
        if claims.adopt and await ownerrefs.can_adopt(self.client, STATEFULSETS, sset):
            adopted = ownerrefs.uids(await ownerrefs.adopt(self.client, PODS, sset, claims.adopt))
            owned += [p for p in claims.adopt if meta(p).get("uid") in adopted]
        await ownerrefs.release(self.client, PODS, sset,
                                claims.release + (strangers if not meta(sset).get("deletionTimestamp") else []))
        return owned

    async def _revisions(self, sset: dict[str, Any],
                         revisions: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any], int]:
        """getStatefulSetRevisions: find or create the update revision, renumbering on a rollback."""
        status = sset.get("status") or {}
        collisions = int(status.get("collisionCount") or 0)
        data = history.template_patch(sset)
        candidate = history.new_revision(sset, data, history.next_revision(revisions), collision_count=collisions)
        equal = history.find_equal(revisions, candidate)
        if equal and revisions and history.equal_revision(revisions[-1], equal[-1]):
            update = revisions[-1]
        elif equal:
            update = await history.set_revision_number(self.client, equal[-1], int(candidate["revision"]))
        else:
            update, collisions = await history.create_revision(self.client, sset, candidate, collisions)
        current = next((r for r in revisions if meta(r).get("name") == status.get("currentRevision")), update)
        return current, update, collisions

    # --- carrying out the plan

    async def _execute(self, sset: dict[str, Any], the_plan: util.Plan,
                       claims: dict[str, dict[str, Any]]) -> BaseException | None:
        """Run the plan's steps: one by one for OrderedReady, in growing batches for Parallel."""

        async def run_step(step: list[util.Action]) -> None:
            for action in step:
                await self._act(sset, action, claims)

        if the_plan.monotonic:
            for step in the_plan.steps:
                try:
                    await run_step(step)
                except errors.APIError as e:
                    return e
            return None
        done = 0
        for size in rsutil.slow_start_batches(len(the_plan.steps)):
            batch = the_plan.steps[done:done + size]
            done += size
            results = await asyncio.gather(*(run_step(s) for s in batch), return_exceptions=True)
            for r in results:
                if isinstance(r, errors.APIError):
                    return r
                if isinstance(r, BaseException):
                    raise r
        return None

    async def _act(self, sset: dict[str, Any], action: util.Action, claims: dict[str, dict[str, Any]]) -> None:
        if action.event is not None:
            await self.recorder.event(sset, *action.event)
        handler: dict[str, Callable[[], Awaitable[None]]] = {
            "create": lambda: self._create_pod(sset, action.pod, claims),
            "delete": lambda: self._delete_pod(sset, action.pod),
            "claims": lambda: self._create_claims(sset, action.pod, claims),
            "update": lambda: self._update_pod(sset, action),
            "fix-claims": lambda: self._update_claims(action.claims),
        }
        await handler[action.kind]()

    async def _pod_event(self, verb: str, sset: dict[str, Any], pod: dict[str, Any],
                         err: errors.APIError | None) -> None:
        """recordPodEvent: "create Pod web-0 in StatefulSet web successful" (or failed, with the error)."""
        pname, sname = meta(pod).get("name"), meta(sset).get("name")
        if err is None:
            await self.recorder.event(sset, events.NORMAL, f"Successful{verb.title()}",
                                      f"{verb} Pod {pname} in StatefulSet {sname} successful")
        else:
            await self.recorder.event(sset, events.WARNING, f"Failed{verb.title()}",
                                      f"{verb} Pod {pname} in StatefulSet {sname} failed error: {err.message}")

    async def _create_claims(self, sset: dict[str, Any], pod: dict[str, Any],
                             claims: dict[str, dict[str, Any]]) -> None:
        """createPersistentVolumeClaims: every missing claim of the pod; one being deleted blocks the pod."""
        problems: list[str] = []
        pname, sname = meta(pod).get("name"), meta(sset).get("name")
        for _, want in util.claims_for(sset, util.ordinal_of(pod)):
            cname = meta(want)["name"]
            have = claims.get(cname)
            if have is not None:
                if meta(have).get("deletionTimestamp"):
                    problems.append(f"pvc {cname} is being deleted")
                continue
            try:
                claims[cname] = await self.client.create(PVCS, want)
            except errors.AlreadyExists:
                # Our cache is behind our own earlier write; the claim is there.
                claims[cname] = await self.client.get(ownerrefs.object_path(PVCS, want))
                continue
            except errors.APIError as e:
                problems.append(f"failed to create PVC {cname}: {e.message}")
                await self.recorder.event(sset, events.WARNING, "FailedCreate",
                                          f"create Claim {cname} for Pod {pname} in StatefulSet {sname} "
                                          f"failed error: {e.message}")
                continue
            await self.recorder.event(sset, events.NORMAL, "SuccessfulCreate",
                                      f"create Claim {cname} Pod {pname} in StatefulSet {sname} success")
        if problems:
            raise errors.Conflict("; ".join(problems))

    async def _create_pod(self, sset: dict[str, Any], pod: dict[str, Any], claims: dict[str, dict[str, Any]]) -> None:
        """CreateStatefulPod: claims first, then the pod, then claim owners per the retention policy."""
        try:
            await self._create_claims(sset, pod, claims)
        except errors.APIError as e:
            await self._pod_event("create", sset, pod, e)
            raise
        try:
            created = await self.client.create(PODS, pod)
        except errors.APIError as e:
            if not isinstance(e, errors.AlreadyExists):
                await self._pod_event("create", sset, pod, e)
            raise
        fixes = util.claims_to_fix(sset, _typed(created, "v1", "Pod"), claims)
        try:
            await self._update_claims(fixes)
        except errors.APIError as e:
            await self._pod_event("update", sset, created, e)
            raise
        await self._pod_event("create", sset, created, None)

    async def _delete_pod(self, sset: dict[str, Any], pod: dict[str, Any]) -> None:
        try:
            await self.client.delete(ownerrefs.object_path(PODS, pod), preconditions={"uid": meta(pod).get("uid") or ""})
        except errors.NotFound:
            return
        except errors.APIError as e:
            await self._pod_event("delete", sset, pod, e)
            raise
        await self._pod_event("delete", sset, pod, None)

    async def _update_claims(self, fixes: list[dict[str, Any]]) -> None:
        for claim in fixes:
            try:
                await self.client.update(PVCS, claim)
            except errors.NotFound:
                continue

    async def _update_pod(self, sset: dict[str, Any], action: util.Action) -> None:
        """UpdateStatefulPod: repaired identity/storage written back, claims re-owned; one event either way."""
        err: errors.APIError | None = None
        try:
            if action.claims:
                await self._update_claims(action.claims)
            original = self.pods.get(informer.key_of(action.pod))
            if original is None or original.get("metadata") != action.pod.get("metadata") \
                    or original.get("spec") != action.pod.get("spec"):
                await self.client.update(PODS, action.pod)
        except errors.APIError as e:
            err = e
        await self._pod_event("update", sset, action.pod, err)
        if err is not None:
            raise err

    async def _update_status(self, sset: dict[str, Any], status: dict[str, Any]) -> None:
        current = sset
        for attempt in range(2):
            body = dict(current)
            body["status"] = {**(current.get("status") or {}), **status}
            try:
                await self.client.update_status(STATEFULSETS, body)
                return
            except errors.NotFound:
                return
            except errors.Conflict:
                if attempt:
                    raise
                current = await self.client.get(ownerrefs.object_path(STATEFULSETS, sset))

    async def _truncate_history(self, sset: dict[str, Any], pods: list[dict[str, Any]],
                                revisions: list[dict[str, Any]], current: dict[str, Any],
                                update: dict[str, Any]) -> None:
        live = {meta(current).get("name") or "", meta(update).get("name") or ""}
        live |= {util.pod_revision(p) for p in pods}
        limit = (sset.get("spec") or {}).get("revisionHistoryLimit")
        for rev in history.stale_by_limit(revisions, live, 10 if limit is None else int(limit)):
            await history.delete_revision(self.client, rev)
