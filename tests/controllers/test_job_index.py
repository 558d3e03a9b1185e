"""Indexed Job rules: backoffLimitPerIndex, maxFailedIndexes, FailIndex and successPolicy, pure and through sync."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pocketkube.controllers import job_index as jx
from pocketkube.controllers import job_util as ju
from tests.controllers import test_job as base

FAIL_INDEX = {"rules": [{"action": "FailIndex", "onExitCodes": {"operator": "In", "values": [42]}},
                        {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]}]}


def pod(ix: int, phase: str = "Failed", *, count: int | None = None, ignored: int = 0, uid: str = "u",
        code: int = 1, finished: float = 0, finalizer: bool = True) -> dict[str, Any]:
    annotations = {ju.COMPLETION_INDEX: str(ix)}
    if count is not None:
        annotations[ju.INDEX_FAILURE_COUNT] = str(count)
    if ignored:
        annotations[ju.INDEX_IGNORED_FAILURE_COUNT] = str(ignored)
    return {"metadata": {"uid": uid, "name": uid, "annotations": annotations,
                         "finalizers": [ju.TRACKING_FINALIZER] if finalizer else []},
            "status": {"phase": phase, "containerStatuses": [{"name": "main", "state": {"terminated": {
                "exitCode": code, "finishedAt": base.stamp(finished)}}}]}}


def job(**spec: Any) -> dict[str, Any]:
    return base.make_job(**{"completionMode": "Indexed", "completions": 4, "parallelism": 4,
                            "backoffLimit": 2147483647, **spec})


# --- pure rules ------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "p", "failed"), [
    ({"backoffLimitPerIndex": 1}, pod(0, count=0), False),
    ({"backoffLimitPerIndex": 1}, pod(0, count=1), True),
    ({"backoffLimitPerIndex": 0}, pod(0), True),
    ({"backoffLimitPerIndex": 1}, pod(0, "Running", count=5), False),
    ({"backoffLimitPerIndex": 3, "podFailurePolicy": FAIL_INDEX, "podReplacementPolicy": "Failed"},
     pod(0, count=0, code=42), True),
    ({"backoffLimitPerIndex": 0, "podFailurePolicy": FAIL_INDEX, "podReplacementPolicy": "Failed"},
     {**pod(0, count=0), "status": {"phase": "Failed", "conditions": [{"type": "DisruptionTarget",
                                                                       "status": "True"}]}}, False),
    ({}, pod(0, count=9), False),
])
def test_is_index_failed(spec: dict[str, Any], p: dict[str, Any], failed: bool) -> None:
    """An index fails on a FailIndex rule or when a counted failure reaches backoffLimitPerIndex."""
    assert jx.is_index_failed(job(**spec), p) is failed


@pytest.mark.parametrize(("spec", "replaced", "counts"), [
    ({"backoffLimitPerIndex": 2}, None, (0, 0)),
    ({"backoffLimitPerIndex": 2}, pod(1, count=1), (2, 0)),
    ({"backoffLimitPerIndex": 2, "podFailurePolicy": FAIL_INDEX, "podReplacementPolicy": "Failed"},
     {**pod(1, count=1, ignored=2), "status": {"phase": "Failed", "conditions": [{"type": "DisruptionTarget",
                                                                                  "status": "True"}]}}, (1, 3)),
])
def test_new_failure_counts(spec: dict[str, Any], replaced: dict[str, Any] | None, counts: tuple[int, int]) -> None:
    """A replacement pod carries its index's failure count, ignored failures counted apart."""
    assert jx.new_failure_counts(job(**spec), replaced) == counts


@pytest.mark.parametrize(("spec", "failed", "succeeded", "outcome"), [
    ({"backoffLimitPerIndex": 1}, [], [(0, 3)], None),
    ({"backoffLimitPerIndex": 1}, [(1, 1)], [(0, 0)], None),
    ({"backoffLimitPerIndex": 1}, [(1, 1)], [(0, 0), (2, 3)], ("FailedIndexes", "Job has failed indexes")),
    ({"backoffLimitPerIndex": 1, "maxFailedIndexes": 1}, [(1, 2)], [],
     ("MaxFailedIndexesExceeded", "Job has exceeded the specified maximal number of failed indexes")),
    ({"backoffLimitPerIndex": 1, "maxFailedIndexes": 2}, [(1, 2)], [], None),
])
def test_failure_condition(spec: dict[str, Any], failed: ju.Intervals, succeeded: ju.Intervals,
                           outcome: tuple[str, str] | None) -> None:
    """Too many failed indexes, or all indexes done with some failed, fail the Job."""
    assert jx.failure_condition(job(**spec), failed, succeeded) == outcome


@pytest.mark.parametrize(("rules", "succeeded", "message"), [
    ([{"succeededIndexes": "0"}], [(0, 0)], "Matched rules at index 0"),
    ([{"succeededIndexes": "0"}], [(1, 3)], None),
    ([{"succeededIndexes": "0-2", "succeededCount": 2}], [(1, 1), (3, 3)], None),
    ([{"succeededIndexes": "0-2", "succeededCount": 2}], [(1, 3)], "Matched rules at index 0"),
    ([{"succeededIndexes": "x"}, {"succeededCount": 2}], [(0, 1)], "Matched rules at index 1"),
    ([{"succeededCount": 3}], [(0, 1)], None),
    ([{"succeededCount": 1}], [], None),
])
def test_match_success_policy(rules: list[dict[str, Any]], succeeded: ju.Intervals, message: str | None) -> None:
    """A rule matches when all its indexes succeeded, or succeededCount of them (of all indexes without a list)."""
    assert jx.match_success_policy(job(successPolicy={"rules": rules}), succeeded) == message


def test_delayed_deletion_keeps_latest_failure_of_idle_indexes() -> None:
    """Per index the latest failed pod waits for its replacement, unless the index is running or finished."""
    j = job(backoffLimitPerIndex=3)
    pods = [pod(0, count=0, uid="a", finished=1), pod(0, count=1, uid="b", finished=5),
            pod(1, count=0, uid="c"), pod(2, count=0, uid="d"), pod(3, count=0, uid="e", finalizer=False)]
    running = [pod(1, "Running", count=1, uid="f")]
    out = jx.delayed_deletions(j, pods + running, active=running, succeeded=[(2, 2)], failed=[], skip=set())
    assert {ix: p["metadata"]["uid"] for ix, p in out.items()} == {0: "b"}


def test_index_backoff_grows_with_the_failure_count() -> None:
    """An index waits 10 s after its first failure, 20 s after its second; idle indexes are created first."""
    now = base.START + datetime.timedelta(seconds=4)
    delayed = {0: pod(0, count=0, finished=0), 1: pod(1, count=1, finished=0)}
    assert jx.indexes_to_create([0, 1], delayed, now) == ([], pytest.approx(6))
    assert jx.indexes_to_create([0, 1, 2], delayed, now) == ([2], 0.0)
    later = base.START + datetime.timedelta(seconds=12)
    assert jx.indexes_to_create([0, 1], delayed, later) == ([0], 0.0)


# --- sync against the fake API ---------------------------------------------------------


def by_index(h: base.Harness, phase: str = "Pending") -> dict[int, str]:
    return {ju.completion_index(p): n for n, p in h.api.pods.items() if ju.phase(p) == phase
            and not p["metadata"].get("deletionTimestamp")}


async def test_backoff_limit_per_index_fails_one_index() -> None:
    """Index 1 failing twice with backoffLimitPerIndex 1 is replaced once, then fails; the Job ends FailedIndexes."""
    h = base.Harness(job(backoffLimitPerIndex=1, completions=3, parallelism=3))
    await h.sync()
    pods = by_index(h)
    assert [h.api.pods[pods[i]]["metadata"]["annotations"][ju.INDEX_FAILURE_COUNT] for i in range(3)] == ["0"] * 3
    assert h.status["failedIndexes"] == ""
    h.api.finish(pods[1], "Failed")
    assert await h.sync() == pytest.approx(10)
    # The failed pod keeps its finalizer until a replacement carries the index's failure count.
    assert h.api.pods[pods[1]]["metadata"]["finalizers"] == [ju.TRACKING_FINALIZER]
    assert "failed" not in h.status
    h.clock.advance(10)
    await h.sync()
    second = by_index(h)[1]
    assert h.api.pods[second]["metadata"]["annotations"][ju.INDEX_FAILURE_COUNT] == "1"
    await h.sync()
    assert h.api.pods[pods[1]]["metadata"]["finalizers"] == [] and h.status["failed"] == 1
    h.api.finish(second, "Failed")
    h.api.finish(pods[0], "Succeeded")
    await h.sync()
    assert h.status["failedIndexes"] == "1" and h.status["completedIndexes"] == "0"
    assert h.condition_types() == []
    assert len(by_index(h)) == 1
    h.api.finish(pods[2], "Succeeded")
    await h.sync()
    # No pod left to terminate: FailureTarget and Failed land in one sync.
    assert h.condition_types() == [("FailureTarget", "FailedIndexes"), ("Failed", "FailedIndexes")]
    assert h.status["failed"] == 2 and h.status["succeeded"] == 2 and h.status["completedIndexes"] == "0,2"
    assert h.api.events[-1] == ("FailedIndexes", "Job has failed indexes")


async def test_max_failed_indexes_exceeded_stops_the_job() -> None:
    """More failed indexes than maxFailedIndexes fail the Job at once and delete the running pods."""
    h = base.Harness(job(backoffLimitPerIndex=0, maxFailedIndexes=1))
    await h.sync()
    pods = by_index(h)
    h.api.finish(pods[0], "Failed")
    await h.sync()
    assert h.status["failedIndexes"] == "0" and h.condition_types() == []
    h.api.finish(pods[3], "Failed")
    await h.sync()
    assert h.condition_types() == [("FailureTarget", "MaxFailedIndexesExceeded")]
    assert h.status["failedIndexes"] == "0,3"
    assert sorted(line for line in h.api.log if line.startswith("delete")) == [f"delete {pods[1]}",
                                                                                f"delete {pods[2]}"]
    await h.sync()
    assert h.condition_types()[-1] == ("Failed", "MaxFailedIndexesExceeded")
    assert h.status["conditions"][-1]["message"] == "Job has exceeded the specified maximal number of failed indexes"


async def test_fail_index_rule_fails_index_at_once() -> None:
    """A FailIndex rule fails the index on its first failure even below backoffLimitPerIndex."""
    h = base.Harness(job(backoffLimitPerIndex=5, podFailurePolicy=FAIL_INDEX, podReplacementPolicy="Failed",
                         completions=2, parallelism=2))
    await h.sync()
    pods = by_index(h)
    h.api.finish(pods[0], "Failed", code=42)
    assert await h.sync() is None
    assert h.status["failedIndexes"] == "0" and h.status["failed"] == 1
    assert list(by_index(h)) == [1]
    h.api.finish(pods[1], "Succeeded")
    await h.sync()
    await h.sync()
    assert h.condition_types() == [("FailureTarget", "FailedIndexes"), ("Failed", "FailedIndexes")]


async def test_success_policy_completes_early() -> None:
    """Once index 0 succeeds, SuccessCriteriaMet is set, other pods are terminated, then Complete follows."""
    h = base.Harness(job(successPolicy={"rules": [{"succeededIndexes": "0"}]}, completions=3, parallelism=3))
    await h.sync()
    pods = by_index(h)
    h.api.finish(pods[0], "Succeeded")
    await h.sync()
    assert h.condition_types() == [("SuccessCriteriaMet", "SuccessPolicy")]
    assert h.status["conditions"][0]["message"] == "Matched rules at index 0"
    assert h.status["terminating"] == 2 and "active" not in h.status
    assert h.api.pods == {pods[0]: h.api.pods[pods[0]]}
    await h.sync()
    assert h.condition_types() == [("SuccessCriteriaMet", "SuccessPolicy"), ("Complete", "SuccessPolicy")]
    assert h.status["succeeded"] == 1 and h.status["completedIndexes"] == "0" and h.status["terminating"] == 0
    assert "failed" not in h.status and h.status["completionTime"]
    assert h.api.events[-1] == ("Completed", "Job completed")
