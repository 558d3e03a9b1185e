"""CronJob controller: due activations, concurrency policies, history limits, and a reconcile against a fake API."""

from __future__ import annotations

import copy
import datetime
import itertools
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.controllers import cronjob, cronschedule
from pocketkube.controllers import cronjob_plan as plan

UTC = datetime.UTC


def t(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def cj(schedule: str = "*/5 * * * *", *, created: str = "2026-01-01T10:00:00", status: dict[str, Any] | None = None,
       **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "tick", "namespace": "ns", "uid": "cj-uid", "creationTimestamp": created + "Z",
                         "resourceVersion": "10"},
            "spec": {"schedule": schedule, "concurrencyPolicy": "Allow", "suspend": False,
                     "successfulJobsHistoryLimit": 3, "failedJobsHistoryLimit": 1,
                     "jobTemplate": {"metadata": {"labels": {"app": "t"}},
                                     "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}},
                     **spec},
            "status": status or {}}


def job(name: str, uid: str, *, cond: str | None = None, start: str | None = None,
        completed: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {}
    if cond:
        status["conditions"] = [{"type": cond, "status": "True"}]
    if start:
        status["startTime"] = start + "Z"
    if completed:
        status["completionTime"] = completed + "Z"
    return {"apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": name, "namespace": "ns", "uid": uid, "resourceVersion": "5",
                         "ownerReferences": [{"kind": "CronJob", "name": "tick", "uid": "cj-uid", "controller": True}]},
            "status": status}


def sched(text: str = "*/5 * * * *") -> cronschedule.Schedule:
    return cronschedule.parse(text, zone=UTC)


def test_job_name_is_scheduled_unix_minutes() -> None:
    """Job names are "<cronjob>-<scheduled time in minutes since the epoch>"."""
    assert plan.job_name("tick", t("2026-01-01T10:05:00")) == f"tick-{int(t('2026-01-01T10:05:00').timestamp()) // 60}"


@pytest.mark.parametrize(("created", "last", "now", "deadline", "expected", "too_many"), [
    ("2026-01-01T10:00:00", None, "2026-01-01T10:04:59", None, None, False),
    ("2026-01-01T10:00:00", None, "2026-01-01T10:05:00", None, "2026-01-01T10:05:00", False),
    ("2026-01-01T10:00:00", None, "2026-01-01T10:07:00", None, "2026-01-01T10:05:00", False),
    # Several missed: the latest is the one to run.
    ("2026-01-01T10:00:00", None, "2026-01-01T10:31:00", None, "2026-01-01T10:30:00", False),
    ("2026-01-01T10:00:00", "2026-01-01T10:30:00", "2026-01-01T10:31:00", None, None, False),
    ("2026-01-01T10:00:00", "2026-01-01T10:30:00", "2026-01-01T10:35:10", None, "2026-01-01T10:35:00", False),
    # More than 100 missed: still the latest, with a warning.
    ("2026-01-01T10:00:00", None, "2026-01-03T10:01:00", None, "2026-01-03T10:00:00", True),
    # A starting deadline bounds how far back to look, so few are missed.
    ("2026-01-01T10:00:00", None, "2026-01-03T10:01:00", 200, "2026-01-03T10:00:00", False),
    ("2026-01-01T10:00:00", None, "2026-01-03T10:04:00", 60, None, False),
])
def test_next_schedule_time(created: str, last: str | None, now: str, deadline: int | None,
                            expected: str | None, too_many: bool) -> None:
    """The activation to start now is the latest one due since the last schedule (or creation)."""
    extra = {"startingDeadlineSeconds": deadline} if deadline is not None else {}
    obj = cj(created=created, status={"lastScheduleTime": last + "Z"} if last else {}, **extra)
    got, many = plan.next_schedule_time(obj, t(now), sched())
    assert got == (t(expected) if expected else None)
    assert many is too_many


def test_impossible_schedule_is_an_error() -> None:
    """A schedule that never fires is reported (kube's InvalidSchedule), not looped on."""
    with pytest.raises(cronschedule.ScheduleError):
        plan.next_schedule_time(cj("0 0 30 2 *"), t("2026-01-01T11:00:00"), sched("0 0 30 2 *"))
    d = plan.decide(cj("0 0 30 2 *"), t("2026-01-01T11:00:00"), sched("0 0 30 2 *"))
    assert d.scheduled is None and d.events[0][1] == "InvalidSchedule"


@pytest.mark.parametrize(("now", "delay"), [
    ("2026-01-01T10:01:00", 240.1),
    ("2026-01-01T10:04:59", 1.1),
])
def test_requeue_just_after_next_activation(now: str, delay: float) -> None:
    """The controller looks again 100 ms after the next activation."""
    assert plan.requeue_delay(cj(), t(now), sched()) == pytest.approx(delay)


ACTIVE = [{"kind": "Job", "name": "tick-1", "namespace": "ns", "uid": "j1", "apiVersion": "batch/v1"}]


@pytest.mark.parametrize(("spec", "status", "now", "scheduled", "replace", "reasons"), [
    ({}, {}, "2026-01-01T10:05:00", "2026-01-01T10:05:00", 0, []),
    ({"suspend": True}, {}, "2026-01-01T10:05:00", None, 0, []),
    ({"concurrencyPolicy": "Forbid"}, {"active": ACTIVE}, "2026-01-01T10:05:00", None, 0, ["JobAlreadyActive"]),
    ({"concurrencyPolicy": "Replace"}, {"active": ACTIVE}, "2026-01-01T10:05:00", "2026-01-01T10:05:00", 1, []),
    ({"concurrencyPolicy": "Allow"}, {"active": ACTIVE}, "2026-01-01T10:05:00", "2026-01-01T10:05:00", 0, []),
    # Past its starting deadline the run is skipped: the search starts at now - deadline, as in kube.
    ({"startingDeadlineSeconds": 10}, {"lastScheduleTime": "2026-01-01T10:00:00Z"}, "2026-01-01T10:05:30",
     None, 0, []),
    ({"startingDeadlineSeconds": 60}, {"lastScheduleTime": "2026-01-01T10:00:00Z"}, "2026-01-01T10:05:30",
     "2026-01-01T10:05:00", 0, []),
    ({}, {"lastScheduleTime": "2026-01-01T10:05:00Z"}, "2026-01-01T10:05:30", None, 0, []),
    ({}, {}, "2026-01-03T10:01:00", "2026-01-03T10:00:00", 0, ["TooManyMissedTimes"]),
])
def test_decide(spec: dict[str, Any], status: dict[str, Any], now: str, scheduled: str | None, replace: int,
                reasons: list[str]) -> None:
    """Suspend, concurrency policy, starting deadline and missed runs decide whether a Job starts."""
    d = plan.decide(cj(status=status, **spec), t(now), sched())
    assert d.scheduled == (t(scheduled) if scheduled else None)
    assert len(d.replace) == replace
    assert [e[1] for e in d.events] == reasons


def test_observe_completed_and_unexpected_jobs() -> None:
    """Finished active Jobs leave status.active; unknown running ones are reported; successes set lastSuccessfulTime."""
    obj = cj(status={"active": [{"name": "a", "uid": "a"}, {"name": "gone", "uid": "gone"}]})
    jobs = [job("a", "a", cond="Complete", completed="2026-01-01T10:06:00"),
            job("b", "b"), job("c", "c", cond="Complete", completed="2026-01-01T09:00:00")]
    out = plan.observe(obj, jobs)
    assert [r["uid"] for r in out.status["active"]] == ["gone"]
    assert out.unverified == [{"name": "gone", "uid": "gone"}]
    assert out.status["lastSuccessfulTime"] == "2026-01-01T09:00:00Z"
    assert out.events == [("Normal", "SawCompletedJob", "Saw completed job: a, condition: Complete"),
                          ("Warning", "UnexpectedJob", "Saw a job that the controller did not create or forgot: b")]
    assert out.changed


def test_history_to_delete_oldest_first() -> None:
    """Finished Jobs beyond the history limits are deleted, oldest start time first (no start time last)."""
    jobs = [job("s1", "1", cond="Complete", start="2026-01-01T01:00:00"),
            job("s2", "2", cond="Complete", start="2026-01-01T02:00:00"),
            job("s0", "0", cond="Complete"),
            job("f1", "f1", cond="Failed", start="2026-01-01T01:00:00"),
            job("f2", "f2", cond="Failed", start="2026-01-01T03:00:00"),
            job("run", "r")]
    doomed = plan.history_to_delete(cj(successfulJobsHistoryLimit=1, failedJobsHistoryLimit=1), jobs)
    assert [plan.meta(j)["name"] for j in doomed] == ["s1", "s2", "f1"]
    assert plan.history_to_delete(cj(successfulJobsHistoryLimit=None, failedJobsHistoryLimit=None), jobs) == []


def test_job_from_template() -> None:
    """The Job carries the template's labels, the scheduled time in the CronJob's zone, and a controller ref."""
    body = plan.job_from_template(cj(timeZone="Asia/Kolkata"), t("2026-01-01T10:05:00"))
    m = body["metadata"]
    assert m["name"] == plan.job_name("tick", t("2026-01-01T10:05:00"))
    assert m["labels"] == {"app": "t"}
    assert m["annotations"] == {plan.SCHEDULED_TIMESTAMP: "2026-01-01T15:35:00+05:30"}
    assert m["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "tick", "uid": "cj-uid",
                                     "controller": True, "blockOwnerDeletion": True}]
    assert body["spec"]["template"]["spec"]["containers"][0]["image"] == "i"
    utc = plan.job_from_template(cj(), t("2026-01-01T10:05:00"))
    assert utc["metadata"]["annotations"][plan.SCHEDULED_TIMESTAMP] == "2026-01-01T10:05:00Z"


@pytest.mark.parametrize(("spec", "reason"), [
    ({"timeZone": "Mars/Olympus"}, "UnknownTimeZone"),
    ({"schedule": "61 * * * *"}, "UnparseableSchedule"),
])
def test_schedule_of_reports_bad_schedules(spec: dict[str, Any], reason: str) -> None:
    """An unknown zone or unparseable schedule yields no schedule and kube's warning."""
    got, events = plan.schedule_of(cj(**spec))
    assert got is None and events[-1][1] == reason


def test_schedule_of_warns_about_tz_prefix() -> None:
    """A TZ= schedule (only possible on old objects) still runs, with an UnsupportedSchedule warning."""
    got, events = plan.schedule_of(cj("TZ=UTC */5 * * * *"))
    assert got is not None and events[0][1] == "UnsupportedSchedule"


# --- reconcile against a fake API ------------------------------------------------------


class FakeClient:
    """Just enough of rest.Client for the CronJob controller: jobs, cronjob status, events."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.events: list[tuple[str, str]] = []
        self.statuses: list[dict[str, Any]] = []
        self._uid = itertools.count(1)

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        if gvr.resource == "events":
            self.events.append((body["reason"], body["message"]))
            return body
        name = body["metadata"]["name"]
        if name in self.jobs:
            raise errors.AlreadyExists.for_object("jobs", "batch", name)
        obj = copy.deepcopy(body)
        obj["metadata"].update(uid=f"job-{next(self._uid)}", resourceVersion="20")
        self.jobs[name] = obj
        self.calls.append(("create", name))
        return copy.deepcopy(obj)

    async def get(self, path: str, **kw: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        if name not in self.jobs:
            raise errors.NotFound(f'jobs.batch "{name}" not found')
        return copy.deepcopy(self.jobs[name])

    async def delete(self, path: str, **kw: Any) -> dict[str, Any]:
        name = path.rsplit("/", 1)[-1]
        self.calls.append(("delete", name))
        return self.jobs.pop(name)

    async def update_status(self, gvr: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.statuses.append(copy.deepcopy(body["status"]))
        out = copy.deepcopy(body)
        out["metadata"]["resourceVersion"] = "30"
        return out

    async def patch(self, *a: Any, **kw: Any) -> dict[str, Any]:
        return {}


def controller_with(obj: dict[str, Any], jobs: list[dict[str, Any]], now: str) -> tuple[cronjob.CronJobController,
                                                                                         FakeClient]:
    client = FakeClient()
    ctl = cronjob.CronJobController(client, clock=clock_mod.FakeClock(t(now)))  # type: ignore[arg-type]
    ctl.cronjobs._cache["ns/tick"] = obj
    for j in jobs:
        client.jobs[j["metadata"]["name"]] = j
        ctl.index.update("ADDED", None, j)
    return ctl, client


async def test_reconcile_creates_due_job_and_records_it() -> None:
    """A due activation creates the Job, lists it in status.active and sets lastScheduleTime."""
    ctl, client = controller_with(cj(), [], "2026-01-01T10:05:02")
    outcome = await ctl.reconcile("ns/tick")
    name = plan.job_name("tick", t("2026-01-01T10:05:00"))
    assert client.calls == [("create", name)]
    assert client.events == [("SuccessfulCreate", f"Created job {name}")]
    status = client.statuses[-1]
    assert status["lastScheduleTime"] == "2026-01-01T10:05:00Z"
    assert [r["name"] for r in status["active"]] == [name]
    assert outcome.after == pytest.approx(298.1)


async def test_reconcile_replace_deletes_running_job_first() -> None:
    """concurrencyPolicy Replace deletes the running Job before starting the new one."""
    old = job("tick-1", "j1")
    ctl, client = controller_with(cj(concurrencyPolicy="Replace", status={"active": ACTIVE}), [old],
                                  "2026-01-01T10:05:02")
    await ctl.reconcile("ns/tick")
    assert client.calls[0] == ("delete", "tick-1")
    assert ("SuccessfulDelete", "Deleted job tick-1") in client.events
    assert [r["uid"] for r in client.statuses[-1]["active"]] == ["job-1"]


async def test_reconcile_missing_active_job_is_dropped() -> None:
    """An active Job that no longer exists is removed from status with a MissingJob event."""
    ctl, client = controller_with(cj(suspend=True, status={"active": ACTIVE}), [], "2026-01-01T10:05:02")
    await ctl.reconcile("ns/tick")
    assert client.events == [("MissingJob", "Active job went missing: tick-1")]
    assert "active" not in client.statuses[-1]


async def test_reconcile_prunes_history_and_notes_success() -> None:
    """Completed Jobs past the limit are deleted; lastSuccessfulTime follows the latest completion."""
    jobs = [job(f"tick-{i}", f"u{i}", cond="Complete", start=f"2026-01-01T0{i}:00:00",
                completed=f"2026-01-01T0{i}:00:30") for i in range(1, 6)]
    ctl, client = controller_with(cj(suspend=True), jobs, "2026-01-01T10:05:02")
    await ctl.reconcile("ns/tick")
    assert client.calls == [("delete", "tick-1"), ("delete", "tick-2")]
    assert client.statuses[-1]["lastSuccessfulTime"] == "2026-01-01T05:00:30Z"
