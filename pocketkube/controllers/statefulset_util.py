"""Pure StatefulSet rules: identities, claims and their retention owners, and the ordered sync plan."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import re
from typing import Any

from pocketkube.controllers import history, podutil
from pocketkube.controllers import replicaset_util as rsutil

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = history.HASH_LABEL
RETAIN, DELETE = "Retain", "Delete"
_ORDINAL_RE = re.compile(r"(.*)-([0-9]+)$")
_INT32_MAX = 2 ** 31 - 1

meta = rsutil.meta


# --- identity ---------------------------------------------------------------------------


def parent_and_ordinal(pod: dict[str, Any]) -> tuple[str, int]:
    """getParentNameAndOrdinal: "web-3" -> ("web", 3); ("", -1) for names without an ordinal."""
    m = _ORDINAL_RE.search(meta(pod).get("name") or "")
    if m is None:
        return "", -1
    ordinal = int(m.group(2))
    return (m.group(1), ordinal) if ordinal <= _INT32_MAX else ("", -1)


def ordinal_of(pod: dict[str, Any]) -> int:
    return parent_and_ordinal(pod)[1]


def replicas_of(sset: dict[str, Any]) -> int:
    return rsutil.replicas_of(sset)


def start_ordinal(sset: dict[str, Any]) -> int:
    """spec.ordinals.start (StatefulSetStartOrdinal is GA in 1.31)."""
    return int(((sset.get("spec") or {}).get("ordinals") or {}).get("start") or 0)


def end_ordinal(sset: dict[str, Any]) -> int:
    return start_ordinal(sset) + replicas_of(sset) - 1


def in_ordinal_range(pod: dict[str, Any], sset: dict[str, Any]) -> bool:
    return start_ordinal(sset) <= ordinal_of(pod) <= end_ordinal(sset)


def pod_name(sset: dict[str, Any], ordinal: int) -> str:
    return f"{meta(sset).get('name', '')}-{ordinal}"


def claim_name(sset: dict[str, Any], template: dict[str, Any], ordinal: int) -> str:
    return f"{meta(template).get('name', '')}-{meta(sset).get('name', '')}-{ordinal}"


def is_member(sset: dict[str, Any], pod: dict[str, Any]) -> bool:
    return parent_and_ordinal(pod)[0] == meta(sset).get("name")


def claims_for(sset: dict[str, Any], ordinal: int) -> list[tuple[str, dict[str, Any]]]:
    """getPersistentVolumeClaims: (template name, claim) per template, labelled with the selector's matchLabels."""
    spec = sset.get("spec") or {}
    match = ((spec.get("selector") or {}).get("matchLabels")) or {}
    out = []
    for tpl in spec.get("volumeClaimTemplates") or []:
        claim = copy.deepcopy(tpl)
        claim.pop("status", None)
        cm = claim.setdefault("metadata", {})
        cm.pop("creationTimestamp", None)
        cm["name"] = claim_name(sset, tpl, ordinal)
        cm["namespace"] = meta(sset).get("namespace") or ""
        cm["labels"] = {**(cm.get("labels") or {}), **match}
        claim["apiVersion"], claim["kind"] = "v1", "PersistentVolumeClaim"
        out.append((meta(tpl).get("name") or "", claim))
    return out


def update_identity(sset: dict[str, Any], pod: dict[str, Any]) -> None:
    ordinal = ordinal_of(pod)
    m = pod.setdefault("metadata", {})
    m["name"] = pod_name(sset, ordinal)
    m["namespace"] = meta(sset).get("namespace") or ""
    labels = m.setdefault("labels", {})
    labels[POD_NAME_LABEL] = m["name"]
    labels[POD_INDEX_LABEL] = str(ordinal)


def update_storage(sset: dict[str, Any], pod: dict[str, Any]) -> None:
    spec = pod.setdefault("spec", {})
    claims = claims_for(sset, ordinal_of(pod))
    names = {n for n, _ in claims}
    volumes = [{"name": n, "persistentVolumeClaim": {"claimName": meta(c)["name"]}} for n, c in claims]
    volumes += [v for v in spec.get("volumes") or [] if v.get("name") not in names]
    if volumes:
        spec["volumes"] = volumes


def identity_matches(sset: dict[str, Any], pod: dict[str, Any]) -> bool:
    parent, ordinal = parent_and_ordinal(pod)
    m = meta(pod)
    return (ordinal >= 0 and parent == meta(sset).get("name") and m.get("name") == pod_name(sset, ordinal)
            and m.get("namespace") == meta(sset).get("namespace")
            and (m.get("labels") or {}).get(POD_NAME_LABEL) == m.get("name"))


def storage_matches(sset: dict[str, Any], pod: dict[str, Any]) -> bool:
    ordinal = ordinal_of(pod)
    if ordinal < 0:
        return False
    volumes = {v.get("name"): v for v in (pod.get("spec") or {}).get("volumes") or []}
    for tpl in (sset.get("spec") or {}).get("volumeClaimTemplates") or []:
        vol = volumes.get(meta(tpl).get("name"))
        if vol is None or (vol.get("persistentVolumeClaim") or {}).get("claimName") != claim_name(sset, tpl, ordinal):
            return False
    return True


def new_pod(sset: dict[str, Any], ordinal: int, revision: str) -> dict[str, Any]:
    """newStatefulSetPod: the template with a stable name, hostname, subdomain, claims and revision label."""
    template = (sset.get("spec") or {}).get("template") or {}
    pod = rsutil.pod_from_template(sset, template)
    pod["metadata"].pop("generateName", None)
    pod["metadata"]["name"] = pod_name(sset, ordinal)
    update_identity(sset, pod)
    pod["spec"]["hostname"] = pod["metadata"]["name"]
    service = (sset.get("spec") or {}).get("serviceName")
    if service:
        pod["spec"]["subdomain"] = service
    update_storage(sset, pod)
    pod["metadata"]["labels"][REVISION_LABEL] = revision
    return pod


def apply_revision(sset: dict[str, Any], rev: dict[str, Any]) -> dict[str, Any]:
    """ApplyRevision: the set with its template replaced by the one a revision saved."""
    out = copy.deepcopy(sset)
    template = copy.deepcopy((((rev.get("data") or {}).get("spec") or {}).get("template")) or {})
    template.pop("$patch", None)
    out.setdefault("spec", {})["template"] = template
    return out


def pod_revision(pod: dict[str, Any]) -> str:
    return (meta(pod).get("labels") or {}).get(REVISION_LABEL) or ""


def versioned_pod(current_set: dict[str, Any], update_set: dict[str, Any], current_rev: str, update_rev: str,
                  ordinal: int) -> dict[str, Any]:
    """newVersionedStatefulSetPod: ordinals below the partition keep the current revision."""
    us = (current_set.get("spec") or {}).get("updateStrategy") or {}
    ru = us.get("rollingUpdate")
    current_replicas = int((current_set.get("status") or {}).get("currentReplicas") or 0)
    start = start_ordinal(current_set)
    keep = ((us.get("type") == "RollingUpdate" and ru is None and ordinal < start + current_replicas)
            or (ru is not None and ordinal < start + int(ru.get("partition") or 0)))
    if keep:
        return new_pod(current_set, ordinal, current_rev)
    return new_pod(update_set, ordinal, update_rev)


# --- pod state --------------------------------------------------------------------------


phase = podutil.phase


def is_created(pod: dict[str, Any]) -> bool:
    return phase(pod) != ""


def is_terminating(pod: dict[str, Any]) -> bool:
    return bool(meta(pod).get("deletionTimestamp"))


def running_and_ready(pod: dict[str, Any]) -> bool:
    return phase(pod) == "Running" and rsutil.is_ready(pod)


def running_and_available(pod: dict[str, Any], min_ready: int, now: datetime.datetime) -> bool:
    # kube 1.32 checks availability alone here; readiness is part of it.
    return rsutil.is_available(pod, min_ready, now)


def is_healthy(pod: dict[str, Any]) -> bool:
    return running_and_ready(pod) and not is_terminating(pod)


# --- claim retention --------------------------------------------------------------------


def retention_policy(sset: dict[str, Any]) -> tuple[str, str]:
    """(whenScaled, whenDeleted), Retain for anything unset."""
    p = (sset.get("spec") or {}).get("persistentVolumeClaimRetentionPolicy") or {}
    return p.get("whenScaled") or RETAIN, p.get("whenDeleted") or RETAIN


def _refs(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in meta(obj).get("ownerReferences") or [] if isinstance(r, dict)]


def _matches_ref(ref: dict[str, Any], obj: dict[str, Any], api_version: str, kind: str) -> bool:
    return ref.get("apiVersion") == api_version and ref.get("kind") == kind and ref.get("name") == meta(obj).get("name")


def _is_set_ref(ref: dict[str, Any], sset: dict[str, Any]) -> bool:
    return _matches_ref(ref, sset, "apps/v1", "StatefulSet")


def _is_pod_ref(ref: dict[str, Any], pod: dict[str, Any]) -> bool:
    return _matches_ref(ref, pod, "v1", "Pod")


def _has_ref(claim: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = meta(owner).get("uid")
    return any(r.get("uid") == uid for r in _refs(claim))


def _stale_ref(claim: dict[str, Any], owner: dict[str, Any], is_ref: Any) -> bool:
    for r in _refs(claim):
        if is_ref(r, owner):
            return bool(r.get("uid") != meta(owner).get("uid"))
    return False


def _unexpected_controller(claim: dict[str, Any], sset: dict[str, Any], pod: dict[str, Any]) -> bool:
    if retention_policy(sset) == (RETAIN, RETAIN):
        return False
    for r in _refs(claim):
        if _is_set_ref(r, sset):
            if r.get("uid") != meta(sset).get("uid"):
                return True
            continue
        if _is_pod_ref(r, pod):
            if r.get("uid") != meta(pod).get("uid"):
                return True
            continue
        if r.get("controller"):
            return True
    return False


def claim_owner_up_to_date(claim: dict[str, Any], sset: dict[str, Any], pod: dict[str, Any]) -> bool:
    """isClaimOwnerUpToDate: the claim's owner refs agree with the retention policy (or must not be touched)."""
    if _stale_ref(claim, sset, _is_set_ref) or _stale_ref(claim, pod, _is_pod_ref):
        return True
    if _unexpected_controller(claim, sset, pod):
        return not (_has_ref(claim, sset) or _has_ref(claim, pod))
    ours = {meta(sset).get("uid"), meta(pod).get("uid")}
    if any(r.get("uid") in ours and not r.get("controller") for r in _refs(claim)):
        return False
    scaled, deleted = retention_policy(sset)
    has_set, has_pod = _has_ref(claim, sset), _has_ref(claim, pod)
    scaled_down = not in_ordinal_range(pod, sset)
    if scaled == DELETE and deleted == DELETE:
        return scaled_down != has_set and scaled_down == has_pod
    if scaled == DELETE:
        return not has_set and scaled_down == has_pod
    if deleted == DELETE:
        return has_set and not has_pod
    return not has_set and not has_pod


def claim_with_owners(claim: dict[str, Any], sset: dict[str, Any], pod: dict[str, Any]) -> dict[str, Any]:
    """updateClaimOwnerRefForSetAndPod: a copy of the claim with set/pod controller refs per the policy."""
    unexpected = _unexpected_controller(claim, sset, pod)
    refs = [r for r in _refs(claim) if not (_is_set_ref(r, sset) or _is_pod_ref(r, pod))]
    if not unexpected:
        scaled, deleted = retention_policy(sset)
        scaled_down = not in_ordinal_range(pod, sset)
        if scaled == DELETE and scaled_down:
            refs.append(history.controller_ref({**pod, "apiVersion": "v1", "kind": "Pod"}))
        elif deleted == DELETE and (scaled == RETAIN or not scaled_down):
            refs.append(history.controller_ref({**sset, "apiVersion": "apps/v1", "kind": "StatefulSet"}))
    out = copy.deepcopy(claim)
    out["metadata"]["ownerReferences"] = refs
    if not refs:
        out["metadata"].pop("ownerReferences")
    return out


def claim_is_stale(claim: dict[str, Any] | None, sset: dict[str, Any], pod: dict[str, Any]) -> bool:
    """PodClaimIsStale for one claim: with whenScaled=Delete, a claim owned by an older pod of that name."""
    if claim is None or retention_policy(sset)[0] == RETAIN:
        return False
    return _stale_ref(claim, pod, _is_pod_ref)


def claims_to_fix(sset: dict[str, Any], pod: dict[str, Any], claims: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The pod's existing claims whose owners disagree with the retention policy, already corrected."""
    out = []
    for _, want in claims_for(sset, ordinal_of(pod)):
        have = claims.get(meta(want)["name"])
        if have is not None and not claim_owner_up_to_date(have, sset, pod):
            out.append(claim_with_owners(have, sset, pod))
    return out


# --- the plan ---------------------------------------------------------------------------


@dataclasses.dataclass
class Action:
    """One write: create/delete/update a pod (with its claims) or re-own a claim."""

    kind: str  # "create" | "delete" | "update" | "claims" | "fix-claims"
    pod: dict[str, Any]
    claims: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    event: tuple[str, str, str] | None = None  # (type, reason, message) recorded before the write


@dataclasses.dataclass
class Plan:
    """Steps in order (each a sequence of actions for one pod) and the status they lead to."""

    status: dict[str, Any]
    steps: list[list[Action]] = dataclasses.field(default_factory=list)
    monotonic: bool = True
    # Set when a step failing would make kube stop short of the later ones (OrderedReady).
    blocked: str = ""


def count_status(status: dict[str, Any], pod_lists: list[list[dict[str, Any]]], min_ready: int,
                 current_rev: str, update_rev: str, now: datetime.datetime) -> None:
    """updateStatus: replicas, ready, available, current and updated counts over the given pods."""
    counts = dict.fromkeys(("replicas", "readyReplicas", "availableReplicas", "currentReplicas",
                            "updatedReplicas"), 0)
    for pods in pod_lists:
        for pod in pods:
            if is_created(pod):
                counts["replicas"] += 1
            if running_and_ready(pod):
                counts["readyReplicas"] += 1
                if running_and_available(pod, min_ready, now):
                    counts["availableReplicas"] += 1
            if is_created(pod) and not is_terminating(pod):
                rev = pod_revision(pod)
                counts["currentReplicas"] += rev == current_rev
                counts["updatedReplicas"] += rev == update_rev
    status.update(counts)


def _max_unavailable(sset: dict[str, Any]) -> int | None:
    ru = (((sset.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate")) or {}
    raw = ru.get("maxUnavailable")
    if raw is None:
        return None
    return max(1, history.scaled_value(raw, replicas_of(sset), round_up=False))


def plan(sset: dict[str, Any], pods: list[dict[str, Any]], current: dict[str, Any], update: dict[str, Any],
         collision_count: int, claims: dict[str, dict[str, Any]], now: datetime.datetime) -> Plan:
    """updateStatefulSet as a list of writes: create/repair replicas, scale down, roll out the update revision."""
    spec = sset.get("spec") or {}
    min_ready = int(spec.get("minReadySeconds") or 0)
    current_name, update_name = meta(current).get("name") or "", meta(update).get("name") or ""
    current_set, update_set = apply_revision(sset, current), apply_revision(sset, update)
    status: dict[str, Any] = {"observedGeneration": int(meta(sset).get("generation") or 0),
                              "currentRevision": current_name, "updateRevision": update_name,
                              "collisionCount": collision_count}
    out = Plan(status, monotonic=spec.get("podManagementPolicy") != "Parallel")
    start, count = start_ordinal(sset), replicas_of(sset)
    slots: list[dict[str, Any] | None] = [None] * max(0, count)
    condemned: list[dict[str, Any]] = []
    for pod in pods:
        ordinal = ordinal_of(pod)
        if in_ordinal_range(pod, sset):
            slots[ordinal - start] = pod
        elif ordinal >= 0:
            condemned.append(pod)
    condemned.sort(key=ordinal_of, reverse=True)
    # Missing ordinals get their pod-to-be now (not created yet: no phase), as kube does.
    replicas = [p if p is not None else versioned_pod(current_set, update_set, current_name, update_name, start + i)
                for i, p in enumerate(slots)]

    def recount() -> None:
        count_status(status, [replicas, condemned], min_ready, current_name, update_name, now)

    recount()
    first_unhealthy = next((p for p in [*replicas, *reversed(condemned)] if not is_healthy(p)), None)
    if meta(sset).get("deletionTimestamp"):
        return out
    name, ns = meta(sset).get("name", ""), meta(sset).get("namespace", "")
    mono = out.monotonic

    def stop(reason: str, step: list[Action] | None = None) -> Plan:
        if step:
            out.steps.append(step)
        out.blocked = reason
        recount()
        return out

    # Replicas in ordinal order: recreate finished pods, create missing ones, repair identity and storage.
    for i, pod in enumerate(replicas):
        ordinal = start + i
        pname = meta(pod).get("name")
        step: list[Action] = []
        if phase(pod) in ("Failed", "Succeeded"):
            event = (("Warning", "RecreatingFailedPod", f"StatefulSet {ns}/{name} is recreating failed Pod {pname}")
                     if phase(pod) == "Failed" else
                     ("Normal", "RecreatingTerminatedPod",
                      f"StatefulSet {ns}/{name} is recreating terminated Pod {pname}"))
            step.append(Action("delete", pod, event=event))
            pod = replicas[i] = versioned_pod(current_set, update_set, current_name, update_name, ordinal)
        if not is_created(pod):
            if any(claim_is_stale(claims.get(meta(c)["name"]), sset, pod) for _, c in claims_for(sset, ordinal)):
                return stop(f"waiting for stale claims of {pname} to go", step)
            step.append(Action("create", pod))
            if mono:
                return stop(f"created {pname}", step)
            out.steps.append(step)
            continue
        if phase(pod) == "Pending" and any(meta(c)["name"] not in claims for _, c in claims_for(sset, ordinal)):
            step.append(Action("claims", pod))
        if is_terminating(pod) and mono:
            return stop(f"waiting for {pname} to terminate", step)
        if not running_and_available(pod, min_ready, now) and mono:
            return stop(f"waiting for {pname} to be available", step)
        fixes = claims_to_fix(update_set, pod, claims)
        if not (identity_matches(sset, pod) and storage_matches(sset, pod) and not fixes):
            repaired = copy.deepcopy(pod)
            if not identity_matches(update_set, repaired):
                update_identity(update_set, repaired)
            if not storage_matches(update_set, repaired):
                update_storage(update_set, repaired)
            step.append(Action("update", repaired, claims=fixes))
        if step:
            out.steps.append(step)

    # Condemned pods keep claims owned per policy (whenScaled=Delete hands them to the pod).
    for pod in condemned:
        fixes = claims_to_fix(update_set, pod, claims)
        if fixes:
            out.steps.append([Action("fix-claims", pod, claims=fixes)])
            if mono:
                return stop(f"re-owning claims of {meta(pod).get('name')}")

    # Scale down from the highest ordinal, after every predecessor is healthy.
    for pod in condemned:
        pname = meta(pod).get("name")
        if is_terminating(pod):
            if mono:
                return stop(f"waiting for {pname} to terminate before scaling down")
            continue
        if mono and pod is not first_unhealthy and (not running_and_ready(pod)
                                                    or not running_and_available(pod, min_ready, now)):
            return stop(f"waiting for {pname} to be available before scaling down")
        out.steps.append([Action("delete", pod)])
        if mono:
            return stop(f"scaling down {pname}")
    recount()

    us = spec.get("updateStrategy") or {}
    if us.get("type") == "OnDelete":
        return out
    live = replicas
    update_min = int((us.get("rollingUpdate") or {}).get("partition") or 0)
    max_unavailable = _max_unavailable(sset)
    if max_unavailable is not None:
        unavailable = sum(1 for p in live if not is_healthy(p))
        budget = max_unavailable - unavailable
        for target in range(len(live) - 1, update_min - 1, -1):
            if budget <= 0:
                break
            pod = live[target]
            if pod_revision(pod) != update_name and not is_terminating(pod):
                out.steps.append([Action("delete", pod)])
                status["currentReplicas"] -= 1
                budget -= 1
        return out
    for target in range(len(live) - 1, update_min - 1, -1):
        pod = live[target]
        if pod_revision(pod) != update_name and not is_terminating(pod):
            out.steps.append([Action("delete", pod)])
            status["currentReplicas"] -= 1
            out.blocked = f"updating {meta(pod).get('name')}"
            return out
        if not is_healthy(pod):
            out.blocked = f"waiting for {meta(pod).get('name')} to update"
            return out
    return out


def complete_rolling_update(sset: dict[str, Any], status: dict[str, Any]) -> None:
    """completeRollingUpdate: once every replica is updated and ready, the update revision becomes current."""
    us = (sset.get("spec") or {}).get("updateStrategy") or {}
    if (us.get("type") == "RollingUpdate" and status.get("updatedReplicas") == status.get("replicas")
            and status.get("readyReplicas") == status.get("replicas")):
        status["currentReplicas"] = status.get("updatedReplicas")
        status["currentRevision"] = status.get("updateRevision")


_COMPARED = ("replicas", "currentReplicas", "readyReplicas", "updatedReplicas", "availableReplicas")


def status_changed(sset: dict[str, Any], status: dict[str, Any]) -> bool:
    """inconsistentStatus: a newer generation observed or any count or revision differs."""
    old = sset.get("status") or {}
    return (int(status.get("observedGeneration") or 0) > int(old.get("observedGeneration") or 0)
            or any(int(status.get(k) or 0) != int(old.get(k) or 0) for k in _COMPARED)
            or (status.get("currentRevision") or "") != (old.get("currentRevision") or "")
            or (status.get("updateRevision") or "") != (old.get("updateRevision") or ""))
