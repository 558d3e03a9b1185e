"""Disruption controller: keeps each PodDisruptionBudget's status (healthy, expected, allowed) true."""

from __future__ import annotations

import dataclasses
import datetime
import logging
import math
from collections.abc import Hashable, Mapping
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.controllers import podutil
from pocketkube.runtime import controller, events

log = logging.getLogger("pocketkube.controllers.disruption")

PDBS = rest.GVR("policy", "v1", "poddisruptionbudgets")
PODS = rest.GVR("", "v1", "pods")
COMPONENT = "controllermanager"
# An eviction the API server approved must show up as a deleted pod within this time, or it is forgotten.
DELETION_TIMEOUT = 120.0
# A DisruptionTarget condition on a pod nobody deleted is withdrawn after this long.
STALE_POD_DISRUPTION_TIMEOUT = 120.0
RESYNC_SECONDS = 300.0
STALE = "stale"  # first element of the queue keys for pods with a stale DisruptionTarget condition

# Built-in workload kinds whose scale decides a percentage budget: (group, kind) -> resource.
_WORKLOADS = {("", "ReplicationController"): rest.GVR("", "v1", "replicationcontrollers"),
              ("apps", "ReplicaSet"): rest.GVR("apps", "v1", "replicasets"),
              ("apps", "Deployment"): rest.GVR("apps", "v1", "deployments"),
              ("apps", "StatefulSet"): rest.GVR("apps", "v1", "statefulsets")}


class SyncError(Exception):
    """A budget whose status cannot be computed; its message lands in the SyncFailed condition."""


@dataclasses.dataclass(frozen=True)
class Scale:
    """A workload controller's identity and desired replicas."""

    uid: str
    replicas: int


def controller_ref(obj: Mapping[str, Any]) -> dict[str, Any] | None:
    """metav1.GetControllerOf: the owner reference with controller: true."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller") is True:
            return ref
    return None


def group_of(api_version: str) -> str:
    return api_version.rpartition("/")[0] if "/" in api_version else ""


def selector_of(pdb: Mapping[str, Any]) -> selectors.Selector:
    """The pods a budget watches: a nil selector none, an empty one all (policy/v1)."""
    try:
        return selectors.from_label_selector((pdb.get("spec") or {}).get("selector"))
    except errors.APIError as e:
        raise SyncError(e.message) from None


def pods_for(pdb: Mapping[str, Any], pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The pods of the budget's namespace its selector picks."""
    ns = (pdb.get("metadata") or {}).get("namespace") or ""
    sel = selector_of(pdb)
    return [p for p in pods if (p.get("metadata") or {}).get("namespace") == ns
            and sel.matches((p.get("metadata") or {}).get("labels"))]


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, "N%" of total rounded up or down."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str) or not value.endswith("%"):
        raise SyncError("invalid value for IntOrString: invalid type: string is not a percentage")
    try:
        pct = int(value[:-1])
    except ValueError:
        raise SyncError(f'invalid value "{value}": strconv.Atoi: parsing "{value[:-1]}": invalid syntax') from None
    exact = pct * total / 100
    return math.ceil(exact) if round_up else math.floor(exact)


def expected_scale(pods: list[dict[str, Any]], scales: Mapping[str, Scale | None]) -> tuple[int, list[str]]:
    """Sum of the scales of the pods' controllers, and the pods that have none (unmanaged).

    scales maps a controller reference's uid to that controller's Scale, or None when it could
    not be found; such a pod is an error as in kube ("found no controllers").
    """
    seen: dict[str, int] = {}
    unmanaged: list[str] = []
    for pod in pods:
        ref = controller_ref(pod)
        name = (pod.get("metadata") or {}).get("name") or ""
        if ref is None:
            unmanaged.append(name)
            continue
        scale = scales.get(str(ref.get("uid") or ""))
        if scale is None:
            raise SyncError(f'found no controllers for pod "{name}"')
        seen[scale.uid] = scale.replicas
    return sum(seen.values()), unmanaged


def expected_counts(pdb: Mapping[str, Any], pods: list[dict[str, Any]],
                    scales: Mapping[str, Scale | None]) -> tuple[int, int, list[str]]:
    """(expectedPods, desiredHealthy, unmanaged pod names) as getExpectedPodCount computes them."""
    spec = pdb.get("spec") or {}
    max_unavailable, min_available = spec.get("maxUnavailable"), spec.get("minAvailable")
    if max_unavailable is not None:
        expected, unmanaged = expected_scale(pods, scales)
        desired = expected - scaled_value(max_unavailable, expected, round_up=True)
        return expected, max(0, desired), unmanaged
    if min_available is not None:
        if isinstance(min_available, int) and not isinstance(min_available, bool):
            return len(pods), min_available, []
        expected, unmanaged = expected_scale(pods, scales)
        return expected, scaled_value(min_available, expected, round_up=True), unmanaged
    return 0, 0, []


def needs_scale(pdb: Mapping[str, Any]) -> bool:
    """Whether the budget is relative to its pods' controllers (maxUnavailable, or a minAvailable percentage)."""
    spec = pdb.get("spec") or {}
    return spec.get("maxUnavailable") is not None or isinstance(spec.get("minAvailable"), str)


def is_pod_ready(pod: Mapping[str, Any]) -> bool:
    return any(isinstance(c, dict) and c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def disrupted_pods(pods: list[dict[str, Any]], pdb: Mapping[str, Any],
                   now: datetime.datetime) -> tuple[dict[str, str], datetime.datetime | None, list[str]]:
    """(disruptedPods still expected to go, when to look again, names whose deletion never came)."""
    recorded = (pdb.get("status") or {}).get("disruptedPods") or {}
    out: dict[str, str] = {}
    recheck: datetime.datetime | None = None
    overdue: list[str] = []
    if not isinstance(recorded, dict):
        return out, recheck, overdue
    timeout = datetime.timedelta(seconds=DELETION_TIMEOUT)
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        when = podutil.parse_time(recorded.get(meta.get("name")))
        if when is None:
            continue
        expected_deletion = when + timeout
        if expected_deletion < now:
            overdue.append(str(meta.get("name")))
            continue
        if recheck is None or expected_deletion < recheck:
            recheck = expected_deletion
        out[str(meta.get("name"))] = recorded[meta.get("name")]
    return out, recheck, overdue


def count_healthy(pods: list[dict[str, Any]], disrupted: Mapping[str, str], now: datetime.datetime) -> int:
    """Ready pods not being deleted and not about to be (an approved eviction still in flight)."""
    healthy = 0
    timeout = datetime.timedelta(seconds=DELETION_TIMEOUT)
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        when = podutil.parse_time(disrupted.get(meta.get("name") or ""))
        if when is not None and when + timeout > now:
            continue
        if is_pod_ready(pod):
            healthy += 1
    return healthy


def allowed_condition(status: Mapping[str, Any], now: str) -> list[dict[str, Any]]:
    """status.conditions with DisruptionAllowed set from disruptionsAllowed (SufficientPods/InsufficientPods)."""
    ok = int(status.get("disruptionsAllowed") or 0) > 0
    return set_condition(status.get("conditions") or [], "True" if ok else "False",
                         "SufficientPods" if ok else "InsufficientPods", "",
                         int(status.get("observedGeneration") or 0), now)


def set_condition(conds: list[dict[str, Any]], status: str, reason: str, message: str, generation: int,
                  now: str) -> list[dict[str, Any]]:
    """meta.SetStatusCondition for DisruptionAllowed: transition time moves only when the status does."""
    out = [dict(c) for c in conds if isinstance(c, dict)]
    for c in out:
        if c.get("type") == "DisruptionAllowed":
            if c.get("status") != status:
                c["lastTransitionTime"] = now
            c.update(status=status, reason=reason, message=message, observedGeneration=generation)
            return out
    out.append({"type": "DisruptionAllowed", "status": status, "observedGeneration": generation,
                "lastTransitionTime": now, "reason": reason, "message": message})
    return out


def conditions_up_to_date(pdb: Mapping[str, Any]) -> bool:
    status = pdb.get("status") or {}
    gen = int((pdb.get("metadata") or {}).get("generation") or 0)
    cond = next((c for c in status.get("conditions") or [] if isinstance(c, dict)
                 and c.get("type") == "DisruptionAllowed"), None)
    if cond is None or int(status.get("observedGeneration") or 0) != gen:
        return False
    if int(status.get("disruptionsAllowed") or 0) > 0:
        return cond.get("status") == "True" and cond.get("reason") == "SufficientPods"
    return cond.get("status") == "False" and cond.get("reason") == "InsufficientPods"


def plan_status(pdb: Mapping[str, Any], *, current: int, desired: int, expected: int,
                disrupted: dict[str, str], now: str) -> dict[str, Any] | None:
    """The new status (updatePdbStatus), or None when the stored one is already right."""
    allowed = current - desired
    if expected <= 0 or allowed <= 0:
        # A budget matching no pods yet must stay safe when its first pods appear.
        allowed = 0
    old = pdb.get("status") or {}
    gen = int((pdb.get("metadata") or {}).get("generation") or 0)
    if (int(old.get("currentHealthy") or 0) == current and int(old.get("desiredHealthy") or 0) == desired
            and int(old.get("expectedPods") or 0) == expected
            and int(old.get("disruptionsAllowed") or 0) == allowed
            and (old.get("disruptedPods") or {}) == disrupted
            and int(old.get("observedGeneration") or 0) == gen and conditions_up_to_date(pdb)):
        return None
    status: dict[str, Any] = {"observedGeneration": gen}
    if disrupted:
        status["disruptedPods"] = dict(disrupted)
    status.update(disruptionsAllowed=allowed, currentHealthy=current, desiredHealthy=desired,
                  expectedPods=expected, conditions=old.get("conditions") or [])
    status["conditions"] = allowed_condition(status, now)
    return status


def fail_safe_status(pdb: Mapping[str, Any], message: str, now: str) -> dict[str, Any]:
    """What a budget that cannot be computed shows: no disruptions allowed, DisruptionAllowed=False SyncFailed."""
    status = dict(pdb.get("status") or {})
    status["disruptionsAllowed"] = 0
    status["conditions"] = set_condition(status.get("conditions") or [], "False", "SyncFailed", message,
                                         int(status.get("observedGeneration") or 0), now)
    return status


def stale_disruption_wait(pod: Mapping[str, Any], now: datetime.datetime) -> float | None:
    """Seconds until a DisruptionTarget=True condition on a live, unfinished pod goes stale (None: not stale-able)."""
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return None
    status = pod.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed"):
        return None
    cond = next((c for c in status.get("conditions") or [] if isinstance(c, dict)
                 and c.get("type") == "DisruptionTarget"), None)
    if cond is None or cond.get("status") != "True" or cond.get("reason") == "TerminationByKubelet":
        return None
    since = podutil.parse_time(cond.get("lastTransitionTime")) or now
    return max(0.0, STALE_POD_DISRUPTION_TIMEOUT - (now - since).total_seconds())


class DisruptionController(controller.Reconciler):
    """Reconciles PodDisruptionBudgets by "namespace/name" and stale DisruptionTarget pods by (STALE, key)."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "disruption", workers=workers, clock=clock, informers=informers,
                         event_source=COMPONENT)
        self._discovery: rest.Discovery | None = None
        self.pdbs = self.watch(PDBS, resync_seconds=RESYNC_SECONDS)
        self.pods = self.watch(PODS, self._pod_keys)

    def _pod_keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[Hashable]:
        keys: list[Hashable] = []
        for pod in (old, new):
            if pod is None:
                continue
            ns = (pod.get("metadata") or {}).get("namespace") or ""
            labels = (pod.get("metadata") or {}).get("labels")
            for pdb in self.pdbs.list():
                if (pdb.get("metadata") or {}).get("namespace") != ns:
                    continue
                try:
                    if selector_of(pdb).matches(labels):
                        keys.append(informer.key_of(pdb))
                except SyncError:
                    continue
        if new is not None and stale_disruption_wait(new, self.clock.now()) is not None:
            keys.append((STALE, informer.key_of(new)))
        return list(dict.fromkeys(keys))

    async def reconcile(self, key: Hashable) -> controller.Outcome:
        if isinstance(key, tuple):
            return await self._sync_stale(str(key[1]))
        pdb = self.pdbs.get(str(key))
        if pdb is None:
            return controller.DONE
        now = self.clock.now()
        stamp = clock_mod.rfc3339(now)
        try:
            pods = pods_for(pdb, self.pods.list())
            if not pods:
                await self.recorder.event(pdb, events.NORMAL, "NoPods", "No matching pods found")
            scales = await self._scales(pdb, pods) if needs_scale(pdb) else {}
            expected, desired, unmanaged = expected_counts(pdb, pods, scales)
        except SyncError as e:
            await self.recorder.event(pdb, events.WARNING, "CalculateExpectedPodCountFailed",
                                      f"Failed to calculate the number of expected pods: {e}")
            await self._write(pdb, fail_safe_status(pdb, str(e), stamp))
            return controller.REQUEUE
        if unmanaged:
            sel = selectors.format((pdb.get("spec") or {}).get("selector"))
            await self.recorder.event(
                pdb, events.WARNING, "UnmanagedPods",
                f"Pods selected by this PodDisruptionBudget (selector: {sel}) were found to be unmanaged. As a "
                "result, the status of the PDB cannot be calculated correctly, which may result in undefined "
                "behavior. To account for these pods please set \".spec.minAvailable\" field of the PDB to an "
                "integer value.")
        disrupted, recheck, overdue = disrupted_pods(pods, pdb, now)
        for name in overdue:
            pod = self.pods.get(f"{pdb['metadata'].get('namespace')}/{name}")
            if pod is not None:
                ns = pdb["metadata"].get("namespace")
                await self.recorder.event(pod, events.WARNING, "NotDeleted",
                                          f"Pod was expected by PDB {ns}/{ns} to be deleted but it wasn't")
        current = count_healthy(pods, disrupted, now)
        status = plan_status(pdb, current=current, desired=desired, expected=expected, disrupted=disrupted, now=stamp)
        if status is not None and not await self._write(pdb, status):
            return controller.REQUEUE
        if recheck is not None:
            return controller.requeue_after(max(0.0, (recheck - now).total_seconds()))
        return controller.DONE

    async def _write(self, pdb: dict[str, Any], status: dict[str, Any]) -> bool:
        """PUT the status; False on a conflict (our cache was behind: try again)."""
        body = {k: v for k, v in pdb.items() if k != "status"}
        body["status"] = status
        try:
            await self.client.update_status(PDBS, body)
        except errors.Conflict:
            return False
        except errors.NotFound:
            return True
        return True

    async def _scales(self, pdb: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Scale | None]:
        """The Scale behind each distinct controller reference of the pods (None when there is none)."""
        out: dict[str, Scale | None] = {}
        for pod in pods:
            ref = controller_ref(pod)
            if ref is None or str(ref.get("uid") or "") in out:
                continue
            out[str(ref.get("uid") or "")] = await self._find_scale(ref, (pod.get("metadata") or {}).get("namespace") or "")
        return out

    async def _find_scale(self, ref: Mapping[str, Any], namespace: str) -> Scale | None:
        group, kind = group_of(str(ref.get("apiVersion") or "")), str(ref.get("kind") or "")
        name, uid = str(ref.get("name") or ""), str(ref.get("uid") or "")
        if (group, kind) == ("apps", "ReplicaSet"):
            # A ReplicaSet a Deployment controls is scaled through that Deployment.
            try:
                rs = await self.client.get(_WORKLOADS[(group, kind)].path(namespace, name))
            except errors.NotFound:
                return None
            if str((rs.get("metadata") or {}).get("uid")) != uid:
                return None
            owner = controller_ref(rs)
            if owner is not None and owner.get("kind") == "Deployment" and group_of(str(owner.get("apiVersion") or "")) == "apps":
                return await self._scale_of(_WORKLOADS[("apps", "Deployment")], namespace, str(owner.get("name") or ""),
                                            str(owner.get("uid") or ""))
        gvr = _WORKLOADS.get((group, kind))
        if gvr is None:
            gvr = await self._resource_for(group, kind)
            if gvr is None:
                raise SyncError(f'found no controllers for pod with controller {kind} "{name}"')
        return await self._scale_of(gvr, namespace, name, uid)

    async def _scale_of(self, gvr: rest.GVR, namespace: str, name: str, uid: str) -> Scale | None:
        try:
            scale = await self.client.get(gvr.path(namespace, name, subresource="scale"))
        except errors.NotFound:
            try:
                await self.client.get(gvr.path(namespace, name), metadata_only=True)
            except errors.NotFound:
                return None
            res = f"{gvr.resource}.{gvr.group}" if gvr.group else gvr.resource
            raise SyncError(f"{res} does not implement the scale subresource") from None
        if str((scale.get("metadata") or {}).get("uid")) != uid:
            return None
        return Scale(uid, int((scale.get("spec") or {}).get("replicas") or 0))

    async def _resource_for(self, group: str, kind: str) -> rest.GVR | None:
        if self._discovery is None or self._discovery.for_kind(group, kind) is None:
            self._discovery = await self.client.discover()
        found = self._discovery.for_kind(group, kind)
        return found.gvr if found is not None else None

    async def _sync_stale(self, key: str) -> controller.Outcome:
        pod = self.pods.get(key)
        if pod is None:
            return controller.DONE
        wait = stale_disruption_wait(pod, self.clock.now())
        if wait is None:
            return controller.DONE
        if wait > 0:
            return controller.requeue_after(wait)
        meta = pod["metadata"]
        patch = {"status": {"conditions": [{"type": "DisruptionTarget", "status": "False",
                                            "lastTransitionTime": clock_mod.rfc3339(self.clock.now()),
                                            "reason": None, "message": None}]}}
        try:
            await self.client.patch(PODS.path(meta.get("namespace") or "", meta["name"], subresource="status"),
                                    patch, patch_type="strategic")
        except errors.NotFound:
            pass
        return controller.DONE
