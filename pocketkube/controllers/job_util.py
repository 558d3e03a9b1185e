"""Pure Job rules: pod states, completion indexes, pod failure policy, back-off, conditions, pod templates."""

from __future__ import annotations

import copy
import dataclasses
import datetime
from collections.abc import Iterable
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.controllers import podutil

TRACKING_FINALIZER = "batch.kubernetes.io/job-tracking"
COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
INDEX_FAILURE_COUNT = "batch.kubernetes.io/job-index-failure-count"
INDEX_IGNORED_FAILURE_COUNT = "batch.kubernetes.io/job-index-ignored-failure-count"
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"
CONTROLLER_NAME = "kubernetes.io/job-controller"
# Pod re-creation back-off after failures: 10 s doubling, capped (kube's MaxJobPodFailureBackOff is 10 min;
# the Job docs still say six minutes).
POD_FAILURE_BACKOFF = 10.0
MAX_POD_FAILURE_BACKOFF = 600.0
# Bounds kube keeps per sync: uncounted UIDs in status, pods created or deleted.
MAX_UNCOUNTED_PODS = 500
MAX_POD_CREATE_DELETE_PER_SYNC = 500
# Names from the pod name generator: 63 characters, 5 of them random.
MAX_GENERATED_NAME = 58
_PHASE_ORDINAL = {"Pending": 0, "Unknown": 1, "Running": 2}

# Condition types and reasons.
COMPLETE, FAILED, FAILURE_TARGET, SUCCESS_CRITERIA_MET, SUSPENDED = (
    "Complete", "Failed", "FailureTarget", "SuccessCriteriaMet", "Suspended")
MSG_BACKOFF = "Job has reached the specified backoff limit"
MSG_DEADLINE = "Job was active longer than specified deadline"
MSG_COMPLETIONS = "Reached expected number of succeeded pods"
MSG_FAILED_INDEXES = "Job has failed indexes"
MSG_MAX_FAILED_INDEXES = "Job has exceeded the specified maximal number of failed indexes"


meta = podutil.meta
parse_time = podutil.parse_time


def spec(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("spec") or {}


# --- pods --------------------------------------------------------------------------------


phase = podutil.phase
is_terminal = podutil.is_terminal
is_active = podutil.is_active
is_ready = podutil.is_ready


def is_terminating(pod: dict[str, Any]) -> bool:
    return not is_terminal(pod) and bool(meta(pod).get("deletionTimestamp"))


def _condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def has_finalizer(pod: dict[str, Any]) -> bool:
    return TRACKING_FINALIZER in (meta(pod).get("finalizers") or [])


def completion_index(pod: dict[str, Any]) -> int:
    """The pod's completion index annotation, or -1 when missing or not a non-negative integer."""
    value = (meta(pod).get("annotations") or {}).get(COMPLETION_INDEX)
    if not isinstance(value, str) or not value.isdigit():
        return -1
    return int(value)


def finished_time(pod: dict[str, Any]) -> datetime.datetime:
    """When a pod finished: its containers' last finishedAt, else Ready=False, else deletion, else creation."""
    status = pod.get("status") or {}
    latest: datetime.datetime | None = None
    statuses = status.get("containerStatuses") or []
    for cs in statuses:
        term = ((cs or {}).get("state") or {}).get("terminated") or {}
        at = parse_time(term.get("finishedAt"))
        if at is None:
            latest = None
            break
        latest = at if latest is None or at > latest else latest
    if latest is not None:
        return latest
    ready = _condition(pod, "Ready")
    if ready is not None and ready.get("status") == "False":
        at = parse_time(ready.get("lastTransitionTime"))
        if at is not None:
            return at
    at = parse_time(meta(pod).get("deletionTimestamp"))
    if at is not None:
        return at
    return parse_time(meta(pod).get("creationTimestamp")) or datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _rank(pod: dict[str, Any]) -> tuple[Any, ...]:
    """controller.ActivePods order: the pods to delete first sort first."""
    status = pod.get("status") or {}
    ready = is_ready(pod)
    ready_since = parse_time((_condition(pod, "Ready") or {}).get("lastTransitionTime")) if ready else None
    restarts = max((int(cs.get("restartCount") or 0) for cs in status.get("containerStatuses") or []
                    if isinstance(cs, dict)), default=0)
    created = parse_time(meta(pod).get("creationTimestamp"))
    return (1 if spec(pod).get("nodeName") else 0, _PHASE_ORDINAL.get(phase(pod), 0), 1 if ready else 0,
            -(ready_since.timestamp() if ready_since else 0.0), -restarts,
            -(created.timestamp() if created else 0.0), meta(pod).get("name") or "")


def removal_order(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=_rank)


# --- jobs --------------------------------------------------------------------------------


def is_indexed(job: dict[str, Any]) -> bool:
    return spec(job).get("completionMode") == "Indexed"


def completions(job: dict[str, Any]) -> int | None:
    c = spec(job).get("completions")
    return None if c is None else int(c)


def suspended(job: dict[str, Any]) -> bool:
    return bool(spec(job).get("suspend"))


def backoff_limit(job: dict[str, Any]) -> int:
    value = spec(job).get("backoffLimit")
    return 6 if value is None else int(value)


def has_backoff_limit_per_index(job: dict[str, Any]) -> bool:
    return spec(job).get("backoffLimitPerIndex") is not None


def only_replace_failed(job: dict[str, Any]) -> bool:
    """podReplacementPolicy Failed (the default with a podFailurePolicy): terminating pods are not replaced yet."""
    if spec(job).get("podReplacementPolicy") == "Failed":
        return True
    return spec(job).get("podFailurePolicy") is not None


def condition(job: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return _condition(job, ctype)


def is_true(job: dict[str, Any], ctype: str) -> bool:
    c = _condition(job, ctype)
    return c is not None and c.get("status") == "True"


def is_finished(job: dict[str, Any]) -> bool:
    return is_true(job, COMPLETE) or is_true(job, FAILED)


def is_pod_failed(pod: dict[str, Any], job: dict[str, Any]) -> bool:
    """Failed phase, or (unless only failed pods are replaced) deleted before succeeding."""
    if phase(pod) == "Failed":
        return True
    if only_replace_failed(job):
        return False
    return bool(meta(pod).get("deletionTimestamp")) and phase(pod) != "Succeeded"


def new_condition(ctype: str, status: str, reason: str, message: str, now: datetime.datetime) -> dict[str, Any]:
    stamp = clock_mod.rfc3339(now)
    return {"type": ctype, "status": status, "lastProbeTime": stamp, "lastTransitionTime": stamp,
            "reason": reason, "message": message}


def ensure_condition(conditions: list[dict[str, Any]], ctype: str, status: str, reason: str, message: str,
                     now: datetime.datetime) -> tuple[list[dict[str, Any]], bool]:
    """Set a condition (a new False one is not added); whether anything changed."""
    out = [dict(c) for c in conditions]
    for i, c in enumerate(out):
        if c.get("type") == ctype:
            if c.get("status") != status or c.get("reason") != reason or c.get("message") != message:
                out[i] = new_condition(ctype, status, reason, message, now)
                return out, True
            return out, False
    if status != "False":
        return [*out, new_condition(ctype, status, reason, message, now)], True
    return out, False


def past_backoff_limit_on_failure(job: dict[str, Any], pods: Iterable[dict[str, Any]]) -> bool:
    """restartPolicy OnFailure: container restarts of running/pending pods count against backoffLimit."""
    tmpl = spec(spec(job).get("template") or {})
    if tmpl.get("restartPolicy") != "OnFailure":
        return False
    restarts = 0
    for pod in pods:
        if phase(pod) in ("Running", "Pending"):
            st = pod.get("status") or {}
            for cs in (st.get("initContainerStatuses") or []) + (st.get("containerStatuses") or []):
                restarts += int((cs or {}).get("restartCount") or 0)
    limit = backoff_limit(job)
    return restarts > 0 if limit == 0 else restarts >= limit


def deadline_remaining(job: dict[str, Any], now: datetime.datetime) -> float | None:
    """Seconds left of activeDeadlineSeconds (<= 0: exceeded); None when there is no running deadline."""
    deadline = spec(job).get("activeDeadlineSeconds")
    start = parse_time((job.get("status") or {}).get("startTime"))
    if deadline is None or start is None or suspended(job):
        return None
    return int(deadline) - (now - start).total_seconds()


# --- pod failure policy ------------------------------------------------------------------


def _exit_code_match(status: dict[str, Any], req: dict[str, Any]) -> dict[str, Any] | None:
    values = [int(v) for v in req.get("values") or []]
    op = req.get("operator")
    for key in ("containerStatuses", "initContainerStatuses"):
        for cs in status.get(key) or []:
            term = ((cs or {}).get("state") or {}).get("terminated")
            if not term:
                continue
            if req.get("containerName") is not None and req.get("containerName") != cs.get("name"):
                continue
            code = int(term.get("exitCode") or 0)
            if code == 0:
                continue
            if (op == "In" and code in values) or (op == "NotIn" and code not in values):
                return dict(cs)
    return None


def _pod_condition_match(status: dict[str, Any], patterns: list[dict[str, Any]]) -> dict[str, Any] | None:
    for c in status.get("conditions") or []:
        for p in patterns:
            if c.get("type") == p.get("type") and c.get("status") == (p.get("status") or "True"):
                return dict(c)
    return None


def match_failure_policy(job: dict[str, Any], pod: dict[str, Any]) -> tuple[str | None, bool, str | None]:
    """(FailJob message, whether the failure counts toward backoffLimit, the matched action)."""
    policy = spec(job).get("podFailurePolicy")
    if not isinstance(policy, dict):
        return None, True, None
    status = pod.get("status") or {}
    m = meta(pod)
    for i, rule in enumerate(policy.get("rules") or []):
        action = rule.get("action")
        if rule.get("onExitCodes") is not None:
            cs = _exit_code_match(status, rule["onExitCodes"])
            if cs is None:
                continue
            code = ((cs.get("state") or {}).get("terminated") or {}).get("exitCode")
            msg = (f"Container {cs.get('name')} for pod {m.get('namespace')}/{m.get('name')} failed with exit "
                   f"code {code} matching {action} rule at index {i}")
        elif rule.get("onPodConditions") is not None:
            cond = _pod_condition_match(status, rule["onPodConditions"])
            if cond is None:
                continue
            msg = (f"Pod {m.get('namespace')}/{m.get('name')} has condition {cond.get('type')} matching "
                   f"{action} rule at index {i}")
        else:
            continue
        if action == "Ignore":
            return None, False, "Ignore"
        if action == "FailIndex":
            return None, True, "FailIndex"
        if action == "Count":
            return None, True, "Count"
        if action == "FailJob":
            return msg, True, "FailJob"
    return None, True, None


def fail_job_message(job: dict[str, Any], pods: Iterable[dict[str, Any]]) -> str | None:
    """The message of the first failed pod matching a FailJob rule."""
    if spec(job).get("podFailurePolicy") is None:
        return None
    for pod in pods:
        if is_pod_failed(pod, job):
            msg, _, _ = match_failure_policy(job, pod)
            if msg is not None:
                return msg
    return None


# --- completion index intervals ----------------------------------------------------------

Intervals = list[tuple[int, int]]


def parse_indexes(text: str | None, limit: int) -> Intervals:
    """"1,3-5,7" into ordered intervals, dropping indexes >= limit and anything malformed."""
    out: Intervals = []
    for part in (text or "").split(","):
        if not part:
            continue
        lo_s, _, hi_s = part.partition("-")
        if not lo_s.isdigit() or (hi_s and not hi_s.isdigit()):
            continue
        lo, hi = int(lo_s), int(hi_s) if hi_s else int(lo_s)
        if lo >= limit or hi < lo:
            continue
        out = with_indexes(out, range(lo, min(hi, limit - 1) + 1))
    return out


def format_indexes(intervals: Intervals) -> str:
    return ",".join(f"{a}" if a == b else (f"{a},{b}" if b == a + 1 else f"{a}-{b}") for a, b in intervals)


def with_indexes(intervals: Intervals, indexes: Iterable[int]) -> Intervals:
    points = sorted({i for a, b in intervals for i in range(a, b + 1)} | set(indexes))
    out: Intervals = []
    for i in points:
        if out and out[-1][1] + 1 == i:
            out[-1] = (out[-1][0], i)
        else:
            out.append((i, i))
    return out


def total(intervals: Intervals) -> int:
    return sum(b - a + 1 for a, b in intervals)


def has_index(intervals: Intervals, ix: int) -> bool:
    return any(a <= ix <= b for a, b in intervals)


def first_pending_indexes(count: int, limit: int, non_pending: Intervals) -> list[int]:
    """Up to count indexes below limit, lowest first, not in non_pending."""
    out: list[int] = []
    ix = 0
    while ix < limit and len(out) < count:
        if not has_index(non_pending, ix):
            out.append(ix)
        ix += 1
    return out


def duplicates_for_removal(pods: list[dict[str, Any]], limit: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Indexed Jobs: (pods to remove: no/out-of-range index, or all but the best of a repeated index; the rest)."""
    rm: list[dict[str, Any]] = []
    left: list[dict[str, Any]] = []
    groups: dict[int, list[dict[str, Any]]] = {}
    for p in pods:
        groups.setdefault(completion_index(p), []).append(p)
    for ix in sorted(groups):
        group = groups[ix]
        if ix < 0 or ix >= limit:
            rm.extend(group)
        elif len(group) == 1:
            left.append(group[0])
        else:
            ordered = removal_order(group)
            rm.extend(ordered[:-1])
            left.append(ordered[-1])
    return rm, left


def active_pods_for_removal(job: dict[str, Any], active: list[dict[str, Any]], at_least: int) -> list[dict[str, Any]]:
    rm: list[dict[str, Any]] = []
    left = active
    if is_indexed(job):
        rm, left = duplicates_for_removal(active, completions(job) or 0)
    if len(rm) < at_least:
        rm += removal_order(left)[:at_least - len(rm)]
    return rm


# --- back-off ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Backoff:
    """Pod failures since the last success and when the latest happened (kube's backOffRecord)."""

    failures: int = 0
    last_failure: datetime.datetime | None = None


def next_backoff(prev: Backoff, succeeded: list[dict[str, Any]], failed: list[dict[str, Any]]) -> Backoff:
    """Fold newly finished pods into the record: a success resets it, later failures count again."""
    failed_at = sorted(finished_time(p) for p in failed)
    if not succeeded:
        if not failed_at:
            return prev
        return Backoff(prev.failures + len(failed_at), failed_at[-1])
    last_success = max(finished_time(p) for p in succeeded)
    after = [t for t in failed_at if t > last_success]
    return Backoff(len(after), after[-1] if after else None)


def backoff_remaining(record: Backoff, now: datetime.datetime, *, base: float = POD_FAILURE_BACKOFF,
                      cap: float = MAX_POD_FAILURE_BACKOFF) -> float:
    """Seconds to wait before creating pods again: base * 2^(failures-1), capped, from the last failure."""
    if record.failures == 0 or record.last_failure is None:
        return 0.0
    delay = base
    for _ in range(1, record.failures):
        delay *= 2
        if delay >= cap:
            delay = cap
            break
    elapsed = (now - record.last_failure).total_seconds()
    return 0.0 if delay < elapsed else delay - elapsed


# --- pods from the template --------------------------------------------------------------


def controller_ref(job: dict[str, Any]) -> dict[str, Any]:
    m = meta(job)
    return {"apiVersion": "batch/v1", "kind": "Job", "name": m.get("name") or "", "uid": m.get("uid") or "",
            "controller": True, "blockOwnerDeletion": True}


def generate_name(job_name: str, index: int) -> str:
    suffix = f"-{index}-"
    prefix = job_name + suffix
    if len(prefix) > MAX_GENERATED_NAME:
        prefix = job_name[:MAX_GENERATED_NAME - len(suffix)] + suffix
    return prefix


def _add_index_env(container: dict[str, Any]) -> None:
    env = container.setdefault("env", [])
    if any(isinstance(e, dict) and e.get("name") == COMPLETION_INDEX_ENV for e in env):
        return
    env.append({"name": COMPLETION_INDEX_ENV, "valueFrom": {"fieldRef": {
        "fieldPath": f"metadata.annotations['{COMPLETION_INDEX}']"}}})


def pod_for(job: dict[str, Any], index: int = -1, *, failure_counts: tuple[int, int] | None = None) -> dict[str, Any]:
    """The pod to create: template labels/annotations, the tracking finalizer, controller ref, and for
    Indexed Jobs the completion index annotation, label, env var, hostname and name prefix."""
    m = meta(job)
    name = m.get("name") or ""
    tmpl = copy.deepcopy(spec(job).get("template") or {})
    tmeta = tmpl.get("metadata") or {}
    pspec = tmpl.get("spec") or {}
    labels = dict(tmeta.get("labels") or {})
    annotations = dict(tmeta.get("annotations") or {})
    finalizers = list(tmeta.get("finalizers") or [])
    if TRACKING_FINALIZER not in finalizers:
        finalizers.append(TRACKING_FINALIZER)
    gen = f"{name}-"
    if is_indexed(job):
        for c in (pspec.get("initContainers") or []) + (pspec.get("containers") or []):
            if isinstance(c, dict):
                _add_index_env(c)
    if index >= 0:
        annotations[COMPLETION_INDEX] = str(index)
        labels[COMPLETION_INDEX] = str(index)
        pspec["hostname"] = f"{name}-{index}"
        gen = generate_name(name, index)
        if failure_counts is not None:
            annotations[INDEX_FAILURE_COUNT] = str(failure_counts[0])
            if failure_counts[1]:
                annotations[INDEX_IGNORED_FAILURE_COUNT] = str(failure_counts[1])
    pod_meta: dict[str, Any] = {"generateName": gen, "namespace": m.get("namespace") or "",
                                "finalizers": finalizers, "ownerReferences": [controller_ref(job)]}
    if labels:
        pod_meta["labels"] = labels
    if annotations:
        pod_meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "Pod", "metadata": pod_meta, "spec": pspec}


def remove_finalizer_patch(pod: dict[str, Any]) -> dict[str, Any]:
    """A strategic merge patch dropping the tracking finalizer (and only it)."""
    return {"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}}
