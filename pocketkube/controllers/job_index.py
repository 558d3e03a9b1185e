"""Pure rules of Indexed Jobs: per-index failure counts and back-off, failed indexes, success policy."""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from pocketkube.controllers import job_util as ju

FAILED_INDEXES_REASON = "FailedIndexes"
MAX_FAILED_INDEXES_REASON = "MaxFailedIndexesExceeded"
SUCCESS_POLICY_REASON = "SuccessPolicy"


def backoff_limit_per_index(job: dict[str, Any]) -> int | None:
    value = ju.spec(job).get("backoffLimitPerIndex")
    return None if value is None else int(value)


def _annotation_count(pod: dict[str, Any], key: str) -> int:
    # kube treats a missing or malformed count as zero.
    value = (ju.meta(pod).get("annotations") or {}).get(key)
    return int(value) if isinstance(value, str) and value.isdigit() else 0


def index_failure_count(pod: dict[str, Any]) -> int:
    return _annotation_count(pod, ju.INDEX_FAILURE_COUNT)


def index_absolute_failure_count(pod: dict[str, Any]) -> int:
    """Failures of the pod's index before it, counted or ignored by the pod failure policy."""
    return index_failure_count(pod) + _annotation_count(pod, ju.INDEX_IGNORED_FAILURE_COUNT)


def _valid_index(job: dict[str, Any], pod: dict[str, Any]) -> int:
    ix = ju.completion_index(pod)
    return ix if 0 <= ix < (ju.completions(job) or 0) else -1


def is_index_failed(job: dict[str, Any], pod: dict[str, Any]) -> bool:
    """Whether this pod's failure fails its whole index: a FailIndex rule, or the index's back-off limit reached."""
    limit = backoff_limit_per_index(job)
    if limit is None or not ju.is_pod_failed(pod, job):
        return False
    _, counts, action = ju.match_failure_policy(job, pod)
    if action == "FailIndex":
        return True
    return counts and index_failure_count(pod) >= limit


def failed_indexes(job: dict[str, Any], pods: Iterable[dict[str, Any]]) -> ju.Intervals:
    """status.failedIndexes plus the indexes failed by pods not yet counted (they still carry the finalizer)."""
    limit = ju.completions(job) or 0
    prev = ju.parse_indexes((job.get("status") or {}).get("failedIndexes"), limit)
    fresh = [ix for p in pods if ju.has_finalizer(p) and is_index_failed(job, p) and (ix := _valid_index(job, p)) >= 0]
    return ju.with_indexes(prev, fresh)


def delayed_deletions(job: dict[str, Any], pods: Iterable[dict[str, Any]], *, active: Iterable[dict[str, Any]],
                      succeeded: ju.Intervals, failed: ju.Intervals, skip: set[str]) -> dict[int, dict[str, Any]]:
    """Per index, the latest failed pod whose finalizer stays until a replacement carries its failure count on.

    Indexes already succeeded, failed or running again need no such pod: its count is recorded elsewhere.
    """
    running = {ju.completion_index(p) for p in active}
    out: dict[int, dict[str, Any]] = {}
    for p in pods:
        if not ju.has_finalizer(p) or (ju.meta(p).get("uid") or "") in skip or not ju.is_pod_failed(p, job):
            continue
        ix = _valid_index(job, p)
        if ix < 0 or ju.has_index(succeeded, ix) or ju.has_index(failed, ix) or ix in running:
            continue
        last = out.get(ix)
        if last is None or (index_absolute_failure_count(last) <= index_absolute_failure_count(p)
                            and ju.finished_time(p) >= ju.finished_time(last)):
            out[ix] = p
    return out


def new_failure_counts(job: dict[str, Any], replaced: dict[str, Any] | None) -> tuple[int, int]:
    """(failure count, ignored failure count) annotations for the pod replacing `replaced` in its index."""
    if replaced is None:
        return 0, 0
    counted, ignored = index_failure_count(replaced), _annotation_count(replaced, ju.INDEX_IGNORED_FAILURE_COUNT)
    if ju.match_failure_policy(job, replaced)[1]:
        return counted + 1, ignored
    return counted, ignored + 1


def index_backoff_remaining(replaced: dict[str, Any] | None, now: datetime.datetime) -> float:
    """Seconds before the index of this failed pod may get a new pod (the Job back-off, per index)."""
    if replaced is None:
        return 0.0
    record = ju.Backoff(index_absolute_failure_count(replaced) + 1, ju.finished_time(replaced))
    return ju.backoff_remaining(record, now)


def indexes_to_create(indexes: list[int], delayed: dict[int, dict[str, Any]],
                      now: datetime.datetime) -> tuple[list[int], float]:
    """The pending indexes whose back-off is over; if none, the shortest wait among the others."""
    ready: list[int] = []
    waits: list[float] = []
    for ix in indexes:
        left = index_backoff_remaining(delayed.get(ix), now)
        if left <= 0:
            ready.append(ix)
        else:
            waits.append(left)
    if ready:
        return ready, 0.0
    return [], min(waits, default=0.0)


def failure_condition(job: dict[str, Any], failed: ju.Intervals, succeeded: ju.Intervals) -> tuple[str, str] | None:
    """(reason, message) when failed indexes end the Job: too many of them, or every index is done."""
    max_failed = ju.spec(job).get("maxFailedIndexes")
    n_failed = ju.total(failed)
    if max_failed is not None and n_failed > int(max_failed):
        return MAX_FAILED_INDEXES_REASON, ju.MSG_MAX_FAILED_INDEXES
    if n_failed > 0 and n_failed + ju.total(succeeded) >= (ju.completions(job) or 0):
        return FAILED_INDEXES_REASON, ju.MSG_FAILED_INDEXES
    return None


def _overlap(rule: ju.Intervals, succeeded: ju.Intervals) -> int:
    return sum(max(0, min(b, d) - max(a, c) + 1) for a, b in rule for c, d in succeeded)


def match_success_policy(job: dict[str, Any], succeeded: ju.Intervals) -> str | None:
    """The SuccessCriteriaMet message of the first satisfied successPolicy rule, or None."""
    policy = ju.spec(job).get("successPolicy")
    if not isinstance(policy, dict) or not succeeded:
        return None
    limit = ju.completions(job) or 0
    for i, rule in enumerate(policy.get("rules") or []):
        if not isinstance(rule, dict):
            continue
        count = rule.get("succeededCount")
        if rule.get("succeededIndexes") is not None:
            wanted = ju.parse_indexes(str(rule["succeededIndexes"]), limit)
            if not wanted:
                # An unparsable rule matches nothing.
                continue
            done = _overlap(wanted, succeeded)
            if done == ju.total(wanted) or (count is not None and done >= int(count)):
                return f"Matched rules at index {i}"
        elif count is not None and ju.total(succeeded) >= int(count):
            return f"Matched rules at index {i}"
    return None
