"""DaemonSet controller: one pod per eligible node, revisions, rolling updates with surge, status."""

from __future__ import annotations

import asyncio
import copy
import logging
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import daemonset_util as util
from pocketkube.controllers import history, ownerrefs
from pocketkube.controllers import replicaset_util as rsutil
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.controllers.daemonset")

DAEMONSETS = rest.GVR("apps", "v1", "daemonsets")
PODS = rest.GVR("", "v1", "pods")
NODES = rest.GVR("", "v1", "nodes")
COMPONENT = "daemonset-controller"
API_VERSION, KIND = "apps/v1", "DaemonSet"
# kube's DaemonSet controller creates at most this many pods per sync.
BURST_REPLICAS = 250
meta = rsutil.meta


def _live(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """getNodesToDaemonPods without deleted terminal pods (they no longer hold a node's slot)."""
    return [p for p in pods if not (meta(p).get("deletionTimestamp")
                                    and (p.get("status") or {}).get("phase") in ("Succeeded", "Failed"))]


def _node_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Only what decides eligibility: labels, taints, and conditions (kube's shouldIgnoreNodeUpdate)."""
    return (meta(old).get("labels") != meta(new).get("labels")
            or (old.get("spec") or {}).get("taints") != (new.get("spec") or {}).get("taints")
            or (old.get("spec") or {}).get("unschedulable") != (new.get("spec") or {}).get("unschedulable"))


class DaemonSetController(controller.Reconciler):
    """Reconciles DaemonSets by "namespace/name"."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.expectations = rsutil.Expectations()
        self.backoff = util.FailedBackoff()
        self.sets = self.watch(DAEMONSETS, self._set_keys)
        self.pods = self.watch(PODS, self._pod_keys)
        self.nodes = self.watch(NODES, self._node_keys)
        self.revisions = self.watch(history.CONTROLLER_REVISIONS, self._revision_keys)

    # --- event handlers

    def _set_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        obj = new if new is not None else old
        if obj is None:
            return []
        if new is None:
            self.expectations.forget(informer.key_of(obj))
        return [informer.key_of(obj)]

    def _owner_key(self, obj: dict[str, Any]) -> str | None:
        return ownerrefs.owner_key(self.sets, KIND, meta(obj).get("namespace") or "", rsutil.controller_of(obj))

    def _selecting(self, obj: dict[str, Any]) -> list[str]:
        return ownerrefs.selecting(self.sets.list(), obj)

    def _pod_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        keys: list[str] = []
        if new is None and old is not None:
            key = self._owner_key(old)
            if key is not None:
                self.expectations.deletion_observed(key, informer.key_of(old))
                keys.append(key)
            return keys
        if new is None:
            return keys
        key = self._owner_key(new)
        if key is not None:
            if old is None:
                self.expectations.creation_observed(key)
            elif meta(new).get("deletionTimestamp") and not meta(old).get("deletionTimestamp"):
                self.expectations.deletion_observed(key, informer.key_of(new))
            keys.append(key)
            if old is not None and not rsutil.is_ready(old) and rsutil.is_ready(new):
                min_ready = int(((self.sets.get(key) or {}).get("spec") or {}).get("minReadySeconds") or 0)
                if min_ready > 0:
                    self.controller.queue.add_after(key, min_ready + 1)
        elif rsutil.controller_of(new) is None and not meta(new).get("deletionTimestamp"):
            keys += self._selecting(new)
        if old is not None:
            old_key = self._owner_key(old)
            if old_key is not None and old_key not in keys:
                keys.append(old_key)
        return keys

    def _node_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        if old is not None and new is not None and not _node_changed(old, new):
            return []
        return [informer.key_of(ds) for ds in self.sets.list()]

    def _revision_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        obj = new if new is not None else old
        key = self._owner_key(obj) if obj is not None else None
        return [key] if key is not None else []

    # --- reconcile

    async def reconcile(self, key: str) -> controller.Outcome:
        cached = self.sets.get(key)
        if cached is None:
            self.expectations.forget(key)
            return controller.DONE
        ds = copy.deepcopy(cached)
        ds["apiVersion"], ds["kind"] = API_VERSION, KIND
        raw_selector = (ds.get("spec") or {}).get("selector")
        if raw_selector == {}:
            await self.recorder.event(ds, events.WARNING, "SelectingAll",
                                      "This daemon set is selecting all pods. A non-empty selector is required.")
            return controller.DONE
        try:
            selector = selectors.from_label_selector(raw_selector)
        except errors.APIError as e:
            log.warning("DaemonSet %s: invalid selector: %s", key, e.message)
            return controller.DONE
        if meta(ds).get("deletionTimestamp"):
            return controller.DONE
        nodes = self.nodes.list()
        pods = await self._claim_pods(ds, selector)
        cur, old = await self._construct_history(ds, selector)
        hash_ = (meta(cur).get("labels") or {}).get(history.HASH_LABEL) or ""
        now = self.clock.now()
        if not self.expectations.satisfied(key, self.clock.monotonic()):
            await self._update_status(ds, nodes, pods, hash_, observed=False)
            return controller.requeue_after(rsutil.EXPECTATIONS_TTL)
        by_node = util.group_by_node(_live(pods))
        sync = util.plan_manage(ds, nodes, by_node, hash_, now, backoff=self.backoff, mono=self.clock.monotonic())
        for etype, reason, message in sync.events:
            await self.recorder.event(ds, etype, reason, message)
        failure: BaseException | None = None
        try:
            await self._sync_nodes(key, ds, sync.delete, sync.create_on, hash_)
            strategy = ((ds.get("spec") or {}).get("updateStrategy") or {}).get("type")
            if strategy == "RollingUpdate" and self.expectations.satisfied(key, self.clock.monotonic()):
                roll = util.plan_rolling_update(ds, nodes, by_node, hash_, now)
                await self._sync_nodes(key, ds, roll.delete, roll.create_on, hash_)
            await self._cleanup_history(ds, pods, old)
        except errors.APIError as e:
            failure = e
        status = await self._update_status(ds, nodes, pods, hash_, observed=True)
        if failure is not None:
            raise failure
        spec = ds.get("spec") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        if min_ready > 0 and status.get("numberReady") != status.get("numberAvailable"):
            return controller.requeue_after(min_ready)
        if sync.requeue_after is not None:
            return controller.requeue_after(sync.requeue_after)
        return controller.DONE

    async def _claim_pods(self, ds: dict[str, Any], selector: selectors.Selector) -> list[dict[str, Any]]:
        ns = meta(ds).get("namespace")
        candidates = [p for p in self.pods.list() if meta(p).get("namespace") == ns]
        claims = rsutil.claim(ds, selector, candidates)
        owned = [p for p in claims.owned if p not in claims.adopt]
        if claims.adopt and await ownerrefs.can_adopt(self.client, DAEMONSETS, ds):
            adopted = ownerrefs.uids(await ownerrefs.adopt(self.client, PODS, ds, claims.adopt))
            owned += [p for p in claims.adopt if meta(p).get("uid") in adopted]
        await ownerrefs.release(self.client, PODS, ds, claims.release)
        return owned

    # --- history

    async def _construct_history(self, ds: dict[str, Any],
                                 selector: selectors.Selector) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """constructHistory: the revision matching the template (created if missing) and all the others."""
        ns = meta(ds).get("namespace")
        mine = [r for r in self.revisions.list() if meta(r).get("namespace") == ns]
        claims = rsutil.claim(ds, selector, mine)
        revisions = [r for r in claims.owned if r not in claims.adopt]
        if claims.adopt and await ownerrefs.can_adopt(self.client, DAEMONSETS, ds):
            revisions += await ownerrefs.adopt(self.client, history.CONTROLLER_REVISIONS, ds, claims.adopt)
        patch = history.template_patch(ds)
        current: list[dict[str, Any]] = []
        old: list[dict[str, Any]] = []
        for rev in revisions:
            if history.HASH_LABEL not in (meta(rev).get("labels") or {}):
                rev = copy.deepcopy(rev)
                rev["metadata"].setdefault("labels", {})[history.HASH_LABEL] = meta(rev).get("name")
                rev = await self.client.update(history.CONTROLLER_REVISIONS, rev)
            (current if (rev.get("data") or {}) == patch else old).append(rev)
        number = max((history.revision_number(r) for r in old), default=0) + 1
        if not current:
            return await self._snapshot(ds, patch, number), old
        cur = max(current, key=history.revision_number)
        for dup in current:
            if dup is not cur:
                await history.delete_revision(self.client, dup)
        if history.revision_number(cur) < number:
            cur = await history.set_revision_number(self.client, cur, number)
        return cur, old

    async def _snapshot(self, ds: dict[str, Any], patch: dict[str, Any], number: int) -> dict[str, Any]:
        """snapshot: a new revision named "<ds>-<hash>"; a foreign revision on that name bumps collisionCount."""
        collisions = (ds.get("status") or {}).get("collisionCount")
        template = (ds.get("spec") or {}).get("template") or {}
        hash_ = history.compute_hash(template, None if collisions is None else int(collisions))
        body = history.new_revision(ds, patch, number, collision_count=None, hash_=hash_)
        try:
            return await self.client.create(history.CONTROLLER_REVISIONS, body)
        except errors.AlreadyExists:
            existing = await self.client.get(ownerrefs.object_path(history.CONTROLLER_REVISIONS, body))
            if (existing.get("data") or {}) == patch:
                return existing
            fresh = await self.client.get(ownerrefs.object_path(DAEMONSETS, ds))
            if (fresh.get("status") or {}).get("collisionCount") != collisions:
                raise errors.Conflict(f"found a stale collision count ({collisions}) of DaemonSet "
                                      f"{meta(ds).get('name')!r} while processing; will retry until it is "
                                      "updated") from None
            fresh.setdefault("status", {})["collisionCount"] = int(collisions or 0) + 1
            await self.client.update_status(DAEMONSETS, fresh)
            raise

    async def _cleanup_history(self, ds: dict[str, Any], pods: list[dict[str, Any]],
                               old: list[dict[str, Any]]) -> None:
        limit = (ds.get("spec") or {}).get("revisionHistoryLimit")
        live = {(meta(p).get("labels") or {}).get(history.HASH_LABEL) or "" for p in pods} - {""}
        for rev in history.stale_by_hash(old, live, 10 if limit is None else int(limit)):
            await history.delete_revision(self.client, rev)

    # --- writes

    async def _sync_nodes(self, key: str, ds: dict[str, Any], delete: list[dict[str, Any]],
                          create_on: list[str], hash_: str) -> None:
        """syncNodes: create pods for nodes (slow start, capped per sync) and delete pods, with expectations."""
        create_on = create_on[:BURST_REPLICAS]
        if not create_on and not delete:
            return
        self.expectations.expect(key, adds=len(create_on), deletes=[informer.key_of(p) for p in delete],
                                 now=self.clock.monotonic())
        first_error: errors.APIError | None = None
        done = 0
        for size in rsutil.slow_start_batches(len(create_on)):
            batch = create_on[done:done + size]
            results = await asyncio.gather(*(self._create(ds, hash_, n) for n in batch), return_exceptions=True)
            done += size
            for r in results:
                if isinstance(r, errors.APIError):
                    first_error = first_error or r
                    self.expectations.creation_observed(key)
                elif isinstance(r, BaseException):
                    raise r
            if first_error is not None:
                break
        for _ in range(len(create_on) - done):
            self.expectations.creation_observed(key)
        results = await asyncio.gather(*(self._delete(key, ds, p) for p in delete), return_exceptions=True)
        for r in results:
            if isinstance(r, errors.APIError):
                first_error = first_error or r
            elif isinstance(r, BaseException):
                raise r
        if first_error is not None:
            raise first_error

    async def _create(self, ds: dict[str, Any], hash_: str, node_name: str) -> None:
        body = util.new_pod(ds, hash_, node_name)
        try:
            pod = await self.client.create(PODS, body)
        except errors.APIError as e:
            if "being terminated" in e.message:
                return
            await self.recorder.event(ds, events.WARNING, "FailedCreate", f"Error creating: {e.message}")
            raise
        await self.recorder.event(ds, events.NORMAL, "SuccessfulCreate",
                                  f"Created pod: {meta(pod).get('name', '')}")

    async def _delete(self, key: str, ds: dict[str, Any], pod: dict[str, Any]) -> None:
        try:
            await self.client.delete(ownerrefs.object_path(PODS, pod))
        except errors.APIError as e:
            self.expectations.deletion_observed(key, informer.key_of(pod))
            if isinstance(e, errors.NotFound):
                return
            await self.recorder.event(ds, events.WARNING, "FailedDelete", f"Error deleting: {e.message}")
            raise
        await self.recorder.event(ds, events.NORMAL, "SuccessfulDelete",
                                  f"Deleted pod: {meta(pod).get('name', '')}")

    async def _update_status(self, ds: dict[str, Any], nodes: list[dict[str, Any]], pods: list[dict[str, Any]],
                             hash_: str, *, observed: bool) -> dict[str, int]:
        """storeDaemonSetStatus: write the counts (and observedGeneration) when anything moved."""
        by_node = util.group_by_node(_live(pods))
        counts = util.compute_status(ds, nodes, by_node, hash_, self.clock.now())
        if util.status_unchanged(ds, counts):
            return counts
        current = ds
        for attempt in range(2):
            body = dict(current)
            status = {**(current.get("status") or {}), **counts}
            if observed:
                status["observedGeneration"] = int(meta(current).get("generation") or 0)
            body["status"] = status
            try:
                await self.client.update_status(DAEMONSETS, body)
                break
            except errors.NotFound:
                break
            except errors.Conflict:
                if attempt:
                    raise
                current = await self.client.get(ownerrefs.object_path(DAEMONSETS, ds))
        return counts
