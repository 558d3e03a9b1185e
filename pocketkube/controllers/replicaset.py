"""ReplicaSet and ReplicationController controller: keeps spec.replicas pods, adopts and releases by selector."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import ownerrefs
from pocketkube.controllers import replicaset_util as util
from pocketkube.runtime import controller, events, writes

log = logging.getLogger("pocketkube.controllers.replicaset")

PODS = rest.GVR("", "v1", "pods")
REPLICASETS = rest.GVR("apps", "v1", "replicasets")
REPLICATIONCONTROLLERS = rest.GVR("", "v1", "replicationcontrollers")
# (gvr, apiVersion, kind, event component) per flavour, as kube-controller-manager names them.
FLAVOURS = {
    "ReplicaSet": (REPLICASETS, "apps/v1", "ReplicaSet", "replicaset-controller"),
    "ReplicationController": (REPLICATIONCONTROLLERS, "v1", "ReplicationController", "replication-controller"),
}
STATUS_UPDATE_RETRIES = 1


def selector_of(owner: dict[str, Any]) -> selectors.Selector:
    """The owner's pod selector: a LabelSelector for ReplicaSets, a plain label map for RCs."""
    sel = (owner.get("spec") or {}).get("selector")
    if owner.get("kind") == "ReplicationController":
        return selectors.from_label_selector({"matchLabels": sel or {}})
    return selectors.from_label_selector(sel)


def _pod_key(pod: dict[str, Any]) -> str:
    return informer.key_of(pod)


def _clean_status(status: dict[str, Any]) -> dict[str, Any]:
    # The API drops these zero values (omitempty); sending them would make every write look like a change.
    return {k: v for k, v in status.items()
            if not (k in ("fullyLabeledReplicas", "readyReplicas", "availableReplicas", "observedGeneration")
                    and not v)}


class ReplicaSetController(controller.Reconciler):
    """Reconciles ReplicaSets (or ReplicationControllers) by "namespace/name"."""

    def __init__(self, client: rest.Client, *, kind: str = "ReplicaSet", clock: clock_mod.Clock | None = None,
                 workers: int = 5,
                 informers: informer.Factory | None = None) -> None:
        if kind not in FLAVOURS:
            raise ValueError(f"unknown replica controller kind {kind!r}")
        self.gvr, self.api_version, self.kind, component = FLAVOURS[kind]
        super().__init__(client, component, workers=workers, clock=clock, informers=informers,
                         event_source=component)
        self.expectations = util.Expectations()
        self.owner_index = ownerrefs.OwnerIndex()
        self.pod_index = ownerrefs.OwnerIndex()
        self.owners = self.watch(self.gvr, self._owner_keys, index=self.owner_index.update)
        self.pods = self.watch(PODS, self._pod_keys, index=self.pod_index.update)

    # --- event handlers (synchronous: they only enqueue and count expectations)

    def _owner_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        obj = new if new is not None else old
        if obj is None:
            return []
        key = informer.key_of(obj)
        if new is None:
            self.expectations.forget(key)
        return [key]

    def _resolve(self, ns: str, ref: dict[str, Any] | None) -> str | None:
        """The key of the owner a controller reference points to, if it is one of ours and cached."""
        return ownerrefs.owner_key(self.owners, self.kind, ns, ref)

    def _matching_owners(self, pod: dict[str, Any]) -> list[str]:
        ns = util.meta(pod).get("namespace") or ""
        return ownerrefs.selecting(self.owner_index.in_namespace(ns), pod, selector_of=selector_of)

    def _pod_deleted(self, pod: dict[str, Any]) -> list[str]:
        key = self._resolve(util.meta(pod).get("namespace") or "", util.controller_of(pod))
        if key is None:
            return []
        self.expectations.deletion_observed(key, _pod_key(pod))
        return [key]

    def _pod_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        if new is None:
            return self._pod_deleted(old) if old is not None else []
        ns = util.meta(new).get("namespace") or ""
        if old is None:
            if util.meta(new).get("deletionTimestamp"):
                return self._pod_deleted(new)
            ref = util.controller_of(new)
            if ref is not None:
                key = self._resolve(ns, ref)
                if key is None:
                    return []
                self.expectations.creation_observed(key)
                return [key]
            return self._matching_owners(new)
        if util.meta(old).get("resourceVersion") == util.meta(new).get("resourceVersion"):
            return []
        labels_changed = util.meta(old).get("labels") != util.meta(new).get("labels")
        if util.meta(new).get("deletionTimestamp"):
            keys = self._pod_deleted(new)
            if labels_changed:
                keys += [k for k in self._pod_deleted(old) if k not in keys]
            return keys
        keys = []
        cur_ref, old_ref = util.controller_of(new), util.controller_of(old)
        ref_changed = (cur_ref or {}).get("uid") != (old_ref or {}).get("uid")
        if ref_changed and old_ref is not None:
            k = self._resolve(ns, old_ref)
            if k is not None:
                keys.append(k)
        if cur_ref is not None:
            k = self._resolve(ns, cur_ref)
            if k is not None:
                keys.append(k)
                owner = self.owners.get(k) or {}
                min_ready = int((owner.get("spec") or {}).get("minReadySeconds") or 0)
                if min_ready > 0 and not util.is_ready(old) and util.is_ready(new):
                    # Look again once the pod has been ready long enough to count as available.
                    self.controller.queue.add_after(k, min_ready + 1)
            return keys
        if labels_changed or ref_changed:
            keys += [k for k in self._matching_owners(new) if k not in keys]
        return keys

    # --- reconcile

    async def reconcile(self, key: str) -> controller.Outcome:
        rs = self.owners.get(key)
        if rs is None:
            self.expectations.forget(key)
            return controller.DONE
        needs_sync = self.expectations.satisfied(key, self.clock.monotonic())
        try:
            selector = selector_of(rs)
        except errors.APIError as e:
            log.warning("%s %s: invalid selector: %s", self.kind, key, e.message)
            return controller.DONE
        ns = util.meta(rs).get("namespace") or ""
        candidates = [p for p in self.pod_index.in_namespace(ns) if util.is_active(p)]
        pods = await self._claim_pods(rs, selector, candidates)
        manage_error: str | None = None
        failure: BaseException | None = None
        if needs_sync and not util.meta(rs).get("deletionTimestamp"):
            try:
                await self._manage_replicas(key, rs, pods)
            except errors.APIError as e:
                manage_error, failure = e.message, e
        now = self.clock.now()
        status = util.calculate_status(rs, pods, manage_error, now)
        updated = await self._update_status(rs, status)
        if failure is not None:
            raise failure
        if not needs_sync:
            # Our writes are not all observed yet; look again once expectations expire at the latest.
            return controller.requeue_after(util.EXPECTATIONS_TTL)
        spec = updated.get("spec") or {}
        st = updated.get("status") or {}
        min_ready = int(spec.get("minReadySeconds") or 0)
        replicas = util.replicas_of(updated)
        if min_ready > 0 and int(st.get("readyReplicas") or 0) == replicas \
                and int(st.get("availableReplicas") or 0) != replicas:
            return controller.requeue_after(min_ready)
        return controller.DONE

    async def _claim_pods(self, rs: dict[str, Any], selector: selectors.Selector,
                          pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
        claims = util.claim(rs, selector, pods)
        if not claims.adopt and not claims.release:
            return claims.owned
        owned = [p for p in claims.owned if p not in claims.adopt]
        if claims.adopt and await ownerrefs.can_adopt(self.client, self.gvr, rs):
            adopted = ownerrefs.uids(await ownerrefs.adopt(self.client, PODS, rs, claims.adopt))
            owned += [p for p in claims.adopt if util.meta(p).get("uid") in adopted]
        await ownerrefs.release(self.client, PODS, rs, claims.release)
        return owned

    async def _manage_replicas(self, key: str, rs: dict[str, Any], pods: list[dict[str, Any]]) -> None:
        diff = util.plan_replicas(rs, pods)
        if diff > 0:
            await self._create_pods(key, rs, diff)
        elif diff < 0:
            await self._delete_pods(key, rs, pods, -diff)

    async def _create_pods(self, key: str, rs: dict[str, Any], count: int) -> None:
        self.expectations.expect(key, adds=count, now=self.clock.monotonic())
        template = (rs.get("spec") or {}).get("template") or {}
        body = util.pod_from_template(rs, template)
        ns = util.meta(rs).get("namespace") or ""
        done = 0
        first_error: errors.APIError | None = None
        for batch in util.slow_start_batches(count):
            results = await asyncio.gather(*(self._create_one(rs, body, ns) for _ in range(batch)),
                                           return_exceptions=True)
            for r in results:
                if isinstance(r, BaseException):
                    if not isinstance(r, errors.APIError):
                        raise r
                    first_error = first_error or r
                else:
                    done += 1
            if first_error is not None:
                break
        for _ in range(count - done):
            # Never-attempted and failed creates will not show up in the informer.
            self.expectations.creation_observed(key)
        if first_error is not None:
            raise first_error

    async def _create_one(self, rs: dict[str, Any], body: dict[str, Any], ns: str) -> None:
        labels = (body.get("metadata") or {}).get("labels")
        if not labels:
            raise errors.BadRequest("unable to create pods, no labels")
        try:
            pod = await self.client.create(PODS, body, namespace=ns)
        except errors.APIError as e:
            if writes.namespace_terminating(e):
                # Every create will fail until the namespace is gone; nothing to report.
                return
            await self.recorder.event(rs, events.WARNING, "FailedCreate", f"Error creating: {e.message}")
            raise
        await self.recorder.event(rs, events.NORMAL, "SuccessfulCreate",
                                  f"Created pod: {util.meta(pod).get('name', '')}")

    async def _delete_pods(self, key: str, rs: dict[str, Any], pods: list[dict[str, Any]], count: int) -> None:
        related = self._related_pods(rs)
        victims = util.pods_to_delete(pods, related, count, self.clock.now())
        self.expectations.expect(key, deletes=[_pod_key(p) for p in victims], now=self.clock.monotonic())
        results = await asyncio.gather(*(self._delete_one(key, rs, p) for p in victims), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _delete_one(self, key: str, rs: dict[str, Any], pod: dict[str, Any]) -> None:
        m = util.meta(pod)
        try:
            await self.client.delete(PODS.path(m.get("namespace") or "", m.get("name") or ""))
        except errors.APIError as e:
            self.expectations.deletion_observed(key, _pod_key(pod))
            if isinstance(e, errors.NotFound):
                return
            await self.recorder.event(rs, events.WARNING, "FailedDelete", f"Error deleting: {e.message}")
            raise
        await self.recorder.event(rs, events.NORMAL, "SuccessfulDelete", f"Deleted pod: {m.get('name', '')}")

    def _related_pods(self, rs: dict[str, Any]) -> list[dict[str, Any]]:
        """Pods of every ReplicaSet sharing this one's controller (a Deployment's), for spreading deletes."""
        ns = util.meta(rs).get("namespace") or ""
        ref = util.controller_of(rs)
        siblings = [rs]
        if ref is not None:
            siblings = [o for o in self.owner_index.in_namespace(ns)
                        if (util.controller_of(o) or {}).get("uid") == ref.get("uid")] or [rs]
        out: list[dict[str, Any]] = []
        for s in siblings:
            out.extend(self.pod_index.owned_by(util.meta(s).get("uid") or "", ns))
        return out

    async def _update_status(self, rs: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
        if util.status_unchanged(rs, status):
            return rs
        status = dict(status)
        current = rs
        for attempt in range(STATUS_UPDATE_RETRIES + 1):
            status["observedGeneration"] = int(util.meta(current).get("generation") or 0)
            body = dict(current)
            body["status"] = _clean_status(status)
            try:
                return await self.client.update_status(self.gvr, body)
            except errors.NotFound:
                return current
            except errors.Conflict:
                if attempt >= STATUS_UPDATE_RETRIES:
                    raise
                m = util.meta(current)
                current = await self.client.get(self.gvr.path(m.get("namespace") or "", m.get("name") or ""))
        return current
