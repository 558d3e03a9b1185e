"""Deployment controller: one ReplicaSet per pod template, rolled out by RollingUpdate or Recreate."""

from __future__ import annotations

import copy
import logging
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import deployment_status as ds
from pocketkube.controllers import deployment_util as du
from pocketkube.controllers import ownerrefs, replicaset
from pocketkube.controllers import replicaset_util as rsutil
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.controllers.deployment")

DEPLOYMENTS = rest.GVR("apps", "v1", "deployments")
REPLICASETS = replicaset.REPLICASETS
PODS = replicaset.PODS
COMPONENT = "deployment-controller"
# Recreate waits for old pods to go; without a pod informer we look again this often.
RECREATE_POLL = 1.0


def _replace(rss: list[dict[str, Any]], updated: dict[str, Any]) -> list[dict[str, Any]]:
    uid = du.meta(updated).get("uid")
    return [updated if du.meta(rs).get("uid") == uid else rs for rs in rss]


class DeploymentController(controller.Reconciler):
    """Reconciles Deployments by "namespace/name"."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 5,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "deployment", workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self.deployment_index = ownerrefs.OwnerIndex()
        self.rs_index = ownerrefs.OwnerIndex()
        # key -> (resourceVersions our own writes superseded, the object we last wrote): lets a sync
        # that starts before the informer has caught up with our last write build on that write.
        self._written: dict[str, tuple[set[str], dict[str, Any]]] = {}
        self.deployments = self.watch(DEPLOYMENTS, index=self.deployment_index.update)
        self.replicasets = self.watch(REPLICASETS, self._rs_keys, index=self.rs_index.update)

    # --- event handlers

    def _owner_key(self, ns: str, ref: dict[str, Any] | None) -> str | None:
        return ownerrefs.owner_key(self.deployments, "Deployment", ns, ref)

    def _matching(self, rs: dict[str, Any]) -> list[str]:
        ns = du.meta(rs).get("namespace") or ""
        labels = du.meta(rs).get("labels") or {}
        out = []
        for d in self.deployment_index.in_namespace(ns):
            try:
                sel = selectors.from_label_selector(du.spec(d).get("selector"))
            except errors.APIError:
                continue
            if not sel.empty and sel.matches(labels):
                out.append(informer.key_of(d))
        return out

    def _rs_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        obj = new if new is not None else old
        if obj is None:
            return []
        ns = du.meta(obj).get("namespace") or ""
        keys: list[str] = []
        cur_ref = rsutil.controller_of(obj)
        if old is not None and new is not None:
            if du.meta(old).get("resourceVersion") == du.meta(new).get("resourceVersion"):
                return []
            old_ref = rsutil.controller_of(old)
            if (old_ref or {}).get("uid") != (cur_ref or {}).get("uid"):
                k = self._owner_key(ns, old_ref)
                if k is not None:
                    keys.append(k)
        if cur_ref is not None:
            k = self._owner_key(ns, cur_ref)
            if k is not None and k not in keys:
                keys.append(k)
            return keys
        if new is None:
            return keys
        if old is None or du.meta(old).get("labels") != du.meta(new).get("labels") or keys:
            keys += [k for k in self._matching(new) if k not in keys]
        return keys

    # --- reconcile

    async def reconcile(self, key: str) -> controller.Outcome:
        cached = self.deployments.get(key)
        if cached is None:
            self._written.pop(key, None)
            return controller.DONE
        written = self._written.get(key)
        if written is not None:
            if du.meta(cached).get("resourceVersion") in written[0]:
                cached = written[1]
            else:
                del self._written[key]
        try:
            return await self._sync_deployment(key, copy.deepcopy(cached))
        except errors.Conflict as e:
            # Someone (often our own informer lagging) changed the object first: retry on fresh state.
            log.debug("deployment %s: %s", key, e.message)
            return controller.REQUEUE

    async def _sync_deployment(self, key: str, d: dict[str, Any]) -> controller.Outcome:
        d.setdefault("status", {})
        sel = du.spec(d).get("selector")
        if sel == {}:
            await self.recorder.event(d, events.WARNING, "SelectingAll",
                                      "This deployment is selecting all pods. A non-empty selector is required.")
            gen = int(du.meta(d).get("generation") or 0)
            if int(du.status(d).get("observedGeneration") or 0) < gen:
                d["status"]["observedGeneration"] = gen
                await self._write_status(d)
            return controller.DONE
        try:
            selector = selectors.from_label_selector(sel)
        except errors.APIError as e:
            log.warning("deployment %s has invalid label selector: %s", key, e.message)
            return controller.DONE
        rss = await self._claim_replicasets(d, selector)
        if du.meta(d).get("deletionTimestamp"):
            new_rs, olds = await self._all_replicasets(d, rss, create=False)
            await self._sync_status(d, [*olds, new_rs], new_rs)
            return controller.DONE
        await self._check_paused(d)
        if du.spec(d).get("paused"):
            return await self._sync(d, rss)
        new_rs, olds = await self._all_replicasets(d, rss, create=False)
        if du.is_scaling_event(d, new_rs, olds):
            return await self._sync(d, rss)
        if (du.spec(d).get("strategy") or {}).get("type") == "Recreate":
            return await self._rollout_recreate(d, rss)
        return await self._rollout_rolling(d, rss)

    async def _claim_replicasets(self, d: dict[str, Any], selector: selectors.Selector) -> list[dict[str, Any]]:
        ns = du.meta(d).get("namespace") or ""
        claims = rsutil.claim(d, selector, self.rs_index.in_namespace(ns))
        owned = [rs for rs in claims.owned if rs not in claims.adopt]
        if claims.adopt and await ownerrefs.can_adopt(self.client, DEPLOYMENTS, d):
            owned += await ownerrefs.adopt(self.client, REPLICASETS, d, claims.adopt)
        await ownerrefs.release(self.client, REPLICASETS, d, claims.release)
        return owned

    # --- writes

    def _stamp(self) -> str:
        return clock_mod.rfc3339(self.clock.now())

    def _wrote(self, d: dict[str, Any], updated: dict[str, Any]) -> None:
        key = informer.key_of(d)
        superseded = self._written.get(key, (set(), {}))[0]
        superseded.add(str(du.meta(d).get("resourceVersion") or ""))
        self._written[key] = (superseded, updated)
        d["metadata"]["resourceVersion"] = du.meta(updated).get("resourceVersion")

    async def _write_status(self, d: dict[str, Any]) -> None:
        d["status"] = ds.clean_status(d.get("status") or {})
        self._wrote(d, await self.client.update_status(DEPLOYMENTS, d))

    async def _set_revision(self, d: dict[str, Any], rev: str) -> bool:
        """SetDeploymentRevision; written at once since status writes do not carry metadata here."""
        ann = d["metadata"].get("annotations") or {}
        if ann.get(du.REVISION) == rev:
            return False
        d["metadata"]["annotations"] = {**ann, du.REVISION: rev}
        updated = await self.client.patch(ownerrefs.object_path(DEPLOYMENTS, d), {"metadata": {"annotations": {du.REVISION: rev}}},
                                          patch_type="merge")
        self._wrote(d, updated)
        return True

    async def _scale(self, d: dict[str, Any], rs: dict[str, Any], size: int, op: str) -> tuple[bool, dict[str, Any]]:
        """scaleReplicaSet: set the size and the size annotations; an event when the size changed."""
        want, most = du.replicas(d), du.replicas(d) + du.max_surge(d)
        resize = du.replicas(rs) != size
        if not resize and not du.replicas_annotations_need_update(rs, want, most):
            return False, rs
        old = du.replicas(rs)
        body = copy.deepcopy(rs)
        body.setdefault("spec", {})["replicas"] = size
        du.set_replicas_annotations(body, want, most)
        updated = await self.client.update(REPLICASETS, body)
        if resize:
            await self.recorder.event(d, events.NORMAL, "ScalingReplicaSet",
                                      f"Scaled {op} replica set {du.meta(rs).get('name')} from {old} to {size}")
        return resize, updated

    async def _scale_and_record(self, d: dict[str, Any], rs: dict[str, Any], size: int) -> tuple[bool, dict[str, Any]]:
        if du.replicas(rs) == size:
            return False, rs
        return await self._scale(d, rs, size, "up" if du.replicas(rs) < size else "down")

    # --- the new and old ReplicaSets

    async def _all_replicasets(self, d: dict[str, Any], rss: list[dict[str, Any]], *,
                               create: bool) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        olds = du.find_old(du.find_new(d, rss), rss)
        return await self._new_replicaset(d, rss, olds, create=create), olds

    async def _new_replicaset(self, d: dict[str, Any], rss: list[dict[str, Any]], olds: list[dict[str, Any]], *,
                              create: bool) -> dict[str, Any] | None:
        existing = du.find_new(d, rss)
        new_revision = du.max_revision(olds) + 1
        deadline = ds.has_progress_deadline(d)
        if existing is not None:
            rs = copy.deepcopy(existing)
            annotated = du.set_new_rs_annotations(d, rs, new_revision, exists=True)
            min_ready = du.spec(d).get("minReadySeconds") or 0
            if annotated or (du.spec(rs).get("minReadySeconds") or 0) != min_ready:
                rs.setdefault("spec", {})["minReadySeconds"] = min_ready
                if not min_ready:
                    rs["spec"].pop("minReadySeconds")
                rs = await self.client.update(REPLICASETS, rs)
            needs = await self._set_revision(d, (du.meta(rs).get("annotations") or {}).get(du.REVISION, ""))
            if deadline and ds.get_condition(d["status"], du.PROGRESSING) is None:
                ds.set_condition(d["status"], ds.new_condition(
                    du.PROGRESSING, "True", du.FOUND_NEW_RS, f'Found new replica set "{du.meta(rs).get("name")}"',
                    self._stamp()))
                needs = True
            if needs:
                await self._write_status(d)
            return rs
        if not create:
            return None
        collisions = du.status(d).get("collisionCount")
        pod_hash = du.compute_hash(du.spec(d).get("template") or {}, collisions)
        template = du.new_rs_template(d, pod_hash)
        name = f"{du.meta(d).get('name')}-{pod_hash}"
        ns = du.meta(d).get("namespace") or ""
        body: dict[str, Any] = {
            "apiVersion": "apps/v1", "kind": "ReplicaSet",
            "metadata": {"name": name, "namespace": ns, "labels": dict(template["metadata"]["labels"]),
                         "ownerReferences": [rsutil.controller_ref(d)]},
            "spec": {"replicas": 0, "selector": du.new_rs_selector(d, pod_hash), "template": template},
        }
        if du.spec(d).get("minReadySeconds"):
            body["spec"]["minReadySeconds"] = du.spec(d)["minReadySeconds"]
        count = du.new_rs_new_replicas(d, [*olds, body], body)
        body["spec"]["replicas"] = count
        du.set_new_rs_annotations(d, body, new_revision, exists=False)
        already = False
        try:
            created = await self.client.create(REPLICASETS, body)
        except errors.AlreadyExists:
            found = self.replicasets.get(f"{ns}/{name}")
            if found is None:
                found = await self.client.get(REPLICASETS.path(ns, name))
            ref = rsutil.controller_of(found)
            if (ref is not None and ref.get("uid") == du.meta(d).get("uid")
                    and du.equal_ignore_hash(du.spec(d).get("template"), du.spec(found).get("template"))):
                created, already = found, True
            else:
                # A hash collision: a different template owns this name. Salt the hash and retry.
                d["status"]["collisionCount"] = int(collisions or 0) + 1
                await self._write_status(d)
                raise
        except errors.APIError as e:
            if _namespace_terminating(e):
                raise
            msg = f'Failed to create new replica set "{name}": {e.message}'
            if deadline:
                ds.set_condition(d["status"], ds.new_condition(du.PROGRESSING, "False", du.FAILED_RS_CREATE, msg,
                                                               self._stamp()))
                await self._write_status(d)
            await self.recorder.event(d, events.WARNING, du.FAILED_RS_CREATE, msg)
            raise
        if not already and count > 0:
            await self.recorder.event(d, events.NORMAL, "ScalingReplicaSet",
                                      f"Scaled up replica set {name} from 0 to {count}")
        needs = await self._set_revision(d, str(new_revision))
        if not already and deadline:
            ds.set_condition(d["status"], ds.new_condition(du.PROGRESSING, "True", du.NEW_RS_CREATED,
                                                           f'Created new replica set "{name}"', self._stamp()))
            needs = True
        if needs:
            await self._write_status(d)
        return created

    # --- strategies

    async def _rollout_rolling(self, d: dict[str, Any], rss: list[dict[str, Any]]) -> controller.Outcome:
        new_rs, olds = await self._all_replicasets(d, rss, create=True)
        assert new_rs is not None
        all_rss = [*olds, new_rs]
        target = du.plan_new_rs(d, all_rss, new_rs)
        if target is not None:
            scaled, new_rs = await self._scale_and_record(d, new_rs, target)
            if scaled:
                return await self._sync_rollout_status(d, [*olds, new_rs], new_rs)
        scaled_down = False
        for rs, size in du.plan_old_rss(d, [*olds, new_rs], du.active(olds), new_rs):
            current = next((o for o in olds if du.meta(o).get("uid") == du.meta(rs).get("uid")), rs)
            scaled, updated = await self._scale_and_record(d, current, size)
            olds = _replace(olds, updated)
            scaled_down = scaled_down or scaled
        if scaled_down:
            return await self._sync_rollout_status(d, [*olds, new_rs], new_rs)
        if ds.complete(d, d["status"]):
            await self._cleanup(d, olds)
        return await self._sync_rollout_status(d, [*olds, new_rs], new_rs)

    async def _rollout_recreate(self, d: dict[str, Any], rss: list[dict[str, Any]]) -> controller.Outcome:
        new_rs, olds = await self._all_replicasets(d, rss, create=False)
        scaled_down = False
        for rs in du.active(olds):
            scaled, updated = await self._scale_and_record(d, rs, 0)
            olds = _replace(olds, updated)
            scaled_down = scaled_down or scaled
        if scaled_down:
            return await self._sync_rollout_status(d, [*olds, new_rs], new_rs)
        if await self._old_pods_running(d, new_rs, olds):
            outcome = await self._sync_rollout_status(d, [*olds, new_rs], new_rs)
            if outcome.kind == "requeue_after" and outcome.after <= RECREATE_POLL:
                return outcome
            return controller.requeue_after(RECREATE_POLL)
        if new_rs is None:
            new_rs, olds = await self._all_replicasets(d, rss, create=True)
            assert new_rs is not None
        _, new_rs = await self._scale_and_record(d, new_rs, du.replicas(d))
        if ds.complete(d, d["status"]):
            await self._cleanup(d, olds)
        return await self._sync_rollout_status(d, [*olds, new_rs], new_rs)

    async def _old_pods_running(self, d: dict[str, Any], new_rs: dict[str, Any] | None,
                                olds: list[dict[str, Any]]) -> bool:
        if du.sum_status(olds, "replicas") > 0:
            return True
        uids = {du.meta(rs).get("uid") for rs in olds}
        if not uids:
            return False
        selector = selectors.from_label_selector(du.spec(d).get("selector"))
        page = await self.client.list(PODS, du.meta(d).get("namespace") or "", label_selector=str(selector))
        by_rs: dict[str, list[dict[str, Any]]] = {}
        for pod in page.get("items") or []:
            ref = rsutil.controller_of(pod)
            if ref is not None and ref.get("uid") in uids:
                by_rs.setdefault(ref["uid"], []).append(pod)
        return du.old_pods_running(new_rs, olds, by_rs)

    async def _sync(self, d: dict[str, Any], rss: list[dict[str, Any]]) -> controller.Outcome:
        """sync(): apply a replica count change (or a paused Deployment) without rolling anything out."""
        new_rs, olds = await self._all_replicasets(d, rss, create=False)
        for rs, size, op in du.plan_scale(d, new_rs, olds):
            _, updated = await self._scale(d, rs, size, op)
            if new_rs is not None and du.meta(updated).get("uid") == du.meta(new_rs).get("uid"):
                new_rs = updated
            olds = _replace(olds, updated)
        if du.spec(d).get("paused"):
            await self._cleanup(d, olds)
        await self._sync_status(d, [*olds, new_rs], new_rs)
        return controller.DONE

    async def _cleanup(self, d: dict[str, Any], olds: list[dict[str, Any]]) -> None:
        for rs in du.cleanup_victims(olds, d):
            try:
                await self.client.delete(ownerrefs.object_path(REPLICASETS, rs))
            except errors.NotFound:
                continue

    async def _check_paused(self, d: dict[str, Any]) -> None:
        cond = ds.paused_condition(d, self._stamp())
        if cond is None:
            return
        ds.set_condition(d["status"], cond)
        await self._write_status(d)

    # --- status

    async def _sync_status(self, d: dict[str, Any], all_rss: list[dict[str, Any] | None],
                           new_rs: dict[str, Any] | None) -> None:
        st = ds.calculate_status(all_rss, new_rs, d, self._stamp())
        if ds.clean_status(st) == ds.clean_status(d["status"]):
            return
        d["status"] = st
        await self._write_status(d)

    async def _sync_rollout_status(self, d: dict[str, Any], all_rss: list[dict[str, Any] | None],
                                   new_rs: dict[str, Any] | None) -> controller.Outcome:
        now = self.clock.now()
        st = ds.rollout_status(all_rss, new_rs, d, now, clock_mod.rfc3339(now))
        if ds.clean_status(st) == ds.clean_status(d["status"]):
            after = ds.stuck_requeue(d, st, now)
            if after is None:
                return controller.DONE
            return controller.REQUEUE if after == 0 else controller.requeue_after(after)
        d["status"] = st
        await self._write_status(d)
        return controller.DONE


def _namespace_terminating(e: errors.APIError) -> bool:
    causes = (e.details or {}).get("causes") or []
    return any(c.get("reason") == "NamespaceTerminating" for c in causes)
