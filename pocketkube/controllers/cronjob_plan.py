"""Pure CronJob rules: which scheduled time is due, what to do about it, the Job to create, history to prune."""

from __future__ import annotations

import copy
import dataclasses
import datetime
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.controllers import cronschedule, podutil

SCHEDULED_TIMESTAMP = "batch.kubernetes.io/cronjob-scheduled-timestamp"
# kube requeues 100 ms past the next activation so the sync surely lands after it.
NEXT_SCHEDULE_DELTA = 0.1
# More missed activations than this earns a TooManyMissedTimes warning.
MANY_MISSED = 100
NORMAL, WARNING = "Normal", "Warning"

Event = tuple[str, str, str]


meta = podutil.meta
parse_time = podutil.parse_time


def job_name(cronjob_name: str, scheduled: datetime.datetime) -> str:
    """"<cronjob>-<scheduled time in unix minutes>": one name per activation, so a retry cannot run it twice."""
    return f"{cronjob_name}-{int(scheduled.timestamp()) // 60}"


def finished_condition(job: dict[str, Any]) -> str | None:
    """"Complete" or "Failed" when the Job has that condition True, else None."""
    for c in (job.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") in ("Complete", "Failed") and c.get("status") == "True":
            return str(c["type"])
    return None


def controlled_by(obj: dict[str, Any], owner: dict[str, Any]) -> bool:
    uid = meta(owner).get("uid")
    return any(isinstance(r, dict) and r.get("controller") and r.get("uid") == uid
               for r in meta(obj).get("ownerReferences") or [])


def job_ref(job: dict[str, Any]) -> dict[str, Any]:
    """The ObjectReference kept in status.active."""
    m = meta(job)
    ref = {"kind": "Job", "namespace": m.get("namespace") or "", "name": m.get("name") or "",
           "uid": m.get("uid") or "", "apiVersion": "batch/v1", "resourceVersion": m.get("resourceVersion") or ""}
    return {k: v for k, v in ref.items() if v}


# --- schedule --------------------------------------------------------------------------


def schedule_of(cj: dict[str, Any]) -> tuple[cronschedule.Schedule | None, list[Event]]:
    """The parsed schedule in the CronJob's zone, or None and the warning event kube records."""
    spec = cj.get("spec") or {}
    text = str(spec.get("schedule") or "")
    tz = spec.get("timeZone")
    events: list[Event] = []
    zone: datetime.tzinfo | None = None
    if tz is not None:
        try:
            zone = cronschedule.load_zone(str(tz))
        except cronschedule.ScheduleError as e:
            return None, [(WARNING, "UnknownTimeZone", f'invalid timeZone: "{tz}": {e}')]
    if cronschedule.has_tz_prefix(text):
        events.append((WARNING, "UnsupportedSchedule",
                       f'CRON_TZ or TZ used in schedule "{text}" is not officially supported, see '
                       "https://kubernetes.io/docs/concepts/workloads/controllers/cron-jobs/ for more details"))
        zone = None
    try:
        return cronschedule.parse(text, zone=zone), events
    except cronschedule.ScheduleError as e:
        return None, [*events, (WARNING, "UnparseableSchedule", f'unparseable schedule: "{text}" : {e}')]


@dataclasses.dataclass(frozen=True)
class Recent:
    """Where the search for due activations started, the latest due one, and how many were missed."""

    earliest: datetime.datetime
    most_recent: datetime.datetime | None
    missed: str  # "none", "few" or "many"


def most_recent_schedule_time(cj: dict[str, Any], now: datetime.datetime, sched: cronschedule.Schedule, *,
                              include_deadline: bool) -> Recent:
    """The latest activation at or before now since the last schedule (or creation); ScheduleError when the
    schedule is logically impossible (two activations less than a second apart, or none at all)."""
    earliest = parse_time(meta(cj).get("creationTimestamp")) or now
    last = parse_time((cj.get("status") or {}).get("lastScheduleTime"))
    if last is not None:
        earliest = last
    deadline = (cj.get("spec") or {}).get("startingDeadlineSeconds")
    if include_deadline and deadline is not None:
        # Nothing older than the starting deadline can still be started.
        floor = now - datetime.timedelta(seconds=int(deadline))
        earliest = max(earliest, floor)
    t1 = sched.next(earliest)
    if t1 is not None and now < t1:
        return Recent(earliest, None, "none")
    t2 = sched.next(t1) if t1 is not None else None
    if t1 is not None and t2 is not None and now < t2:
        return Recent(earliest, t1, "none")
    # A schedule with no activation at all (e.g. "0 0 30 2 *") ends here too, as in kube.
    between = round((t2 - t1).total_seconds()) if t1 is not None and t2 is not None else 0
    if t1 is None or t2 is None or between < 1:
        raise cronschedule.ScheduleError("time difference between two schedules is less than 1 second")
    missed = int((now - t1).total_seconds()) // between + 1
    # Jump close to now using the interval, then walk the real schedule (irregular ones like "30 6-16/4 * * 1-5").
    t: datetime.datetime | None = sched.next(t1 + datetime.timedelta(seconds=(missed - 2) * between))
    most_recent = None
    while t is not None and t <= now:
        most_recent = t
        t = sched.next(t)
    kind = "many" if missed > MANY_MISSED else "few"
    return Recent(earliest, most_recent, kind)


def next_schedule_time(cj: dict[str, Any], now: datetime.datetime,
                       sched: cronschedule.Schedule) -> tuple[datetime.datetime | None, bool]:
    """The activation to start now (or None), and whether too many were missed to list them all."""
    recent = most_recent_schedule_time(cj, now, sched, include_deadline=True)
    if recent.most_recent is None or recent.most_recent > now:
        return None, False
    return recent.most_recent, recent.missed == "many"


def requeue_delay(cj: dict[str, Any], now: datetime.datetime, sched: cronschedule.Schedule) -> float | None:
    """Seconds until just after the next activation (None when the schedule never fires again)."""
    try:
        recent = most_recent_schedule_time(cj, now, sched, include_deadline=False)
        base = recent.most_recent or (recent.earliest if recent.missed == "none" else now)
    except cronschedule.ScheduleError:
        base = now
    nxt = sched.next(base)
    if nxt is None:
        return None
    return max(0.0, (nxt - now).total_seconds() + NEXT_SCHEDULE_DELTA)


# --- observing children ----------------------------------------------------------------


@dataclasses.dataclass
class Observed:
    """Status after looking at the child Jobs, what to record, and active refs to verify against the API."""

    status: dict[str, Any]
    events: list[Event]
    unverified: list[dict[str, Any]]
    changed: bool


def observe(cj: dict[str, Any], jobs: list[dict[str, Any]]) -> Observed:
    """Drop finished Jobs from status.active, note the latest success, flag unknown running children."""
    status = copy.deepcopy(cj.get("status") or {})
    active = list(status.get("active") or [])
    events: list[Event] = []
    changed = False
    uids = {meta(j).get("uid") for j in jobs}
    active_uids = {r.get("uid") for r in active}
    for j in jobs:
        name = meta(j).get("name") or ""
        uid = meta(j).get("uid")
        cond = finished_condition(j)
        if uid not in active_uids and cond is None:
            events.append((WARNING, "UnexpectedJob", f"Saw a job that the controller did not create or forgot: {name}"))
        elif uid in active_uids and cond is not None:
            active = [r for r in active if r.get("uid") != uid]
            active_uids.discard(uid)
            events.append((NORMAL, "SawCompletedJob", f"Saw completed job: {name}, condition: {cond}"))
            changed = True
        elif cond == "Complete":
            done = parse_time((j.get("status") or {}).get("completionTime"))
            last = parse_time(status.get("lastSuccessfulTime"))
            if done is not None and (last is None or done > last):
                status["lastSuccessfulTime"] = clock_mod.rfc3339(done)
                changed = True
    if active:
        status["active"] = active
    else:
        status.pop("active", None)
    unverified = [r for r in active if r.get("uid") not in uids]
    return Observed(status, events, unverified, changed)


def without_active(status: dict[str, Any], uid: str) -> dict[str, Any]:
    out = dict(status)
    active = [r for r in out.get("active") or [] if r.get("uid") != uid]
    if active:
        out["active"] = active
    else:
        out.pop("active", None)
    return out


# --- deciding a run --------------------------------------------------------------------


@dataclasses.dataclass
class Decision:
    """Whether to start a Job for `scheduled` now, which active Jobs to replace first, and when to look again."""

    scheduled: datetime.datetime | None = None
    replace: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)
    requeue_after: float | None = None


def decide(cj: dict[str, Any], now: datetime.datetime, sched: cronschedule.Schedule) -> Decision:
    """kube's syncCronJob after the children are reconciled: the run to start, if any."""
    spec = cj.get("spec") or {}
    status = cj.get("status") or {}
    if spec.get("suspend"):
        return Decision()
    try:
        scheduled, too_many = next_schedule_time(cj, now, sched)
    except cronschedule.ScheduleError as e:
        return Decision(events=[(WARNING, "InvalidSchedule", f"invalid schedule: {spec.get('schedule', '')} : {e}")])
    out = Decision()
    if too_many:
        out.events.append((WARNING, "TooManyMissedTimes", "too many missed start times. Set or decrease "
                                                          ".spec.startingDeadlineSeconds or check clock skew"))
    out.requeue_after = requeue_delay(cj, now, sched)
    if scheduled is None:
        return out
    deadline = spec.get("startingDeadlineSeconds")
    if deadline is not None and scheduled + datetime.timedelta(seconds=int(deadline)) < now:
        out.events.append((WARNING, "MissSchedule", "Missed scheduled time to start a job: "
                           + scheduled.astimezone(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")))
        return out
    active = status.get("active") or []
    name = job_name(meta(cj).get("name") or "", scheduled)
    last = parse_time(status.get("lastScheduleTime"))
    if any(r.get("name") == name for r in active) or last == scheduled:
        return out
    policy = spec.get("concurrencyPolicy") or "Allow"
    if policy == "Forbid" and active:
        out.events.append((NORMAL, "JobAlreadyActive", "Not starting job because prior execution is running "
                                                       "and concurrency policy is Forbid"))
        return out
    if policy == "Replace":
        out.replace = list(active)
    out.scheduled = scheduled
    after = dict(cj, status={**status, "lastScheduleTime": clock_mod.rfc3339(scheduled)})
    out.requeue_after = requeue_delay(after, now, sched)
    return out


def job_from_template(cj: dict[str, Any], scheduled: datetime.datetime) -> dict[str, Any]:
    """The Job for one activation: template labels/annotations, the scheduled-timestamp annotation, controller ref."""
    m = meta(cj)
    tmpl = (cj.get("spec") or {}).get("jobTemplate") or {}
    tmeta = tmpl.get("metadata") or {}
    tz = (cj.get("spec") or {}).get("timeZone")
    try:
        zone = cronschedule.load_zone(str(tz)) if tz is not None else datetime.UTC
    except cronschedule.ScheduleError:
        zone = datetime.UTC
    annotations = dict(tmeta.get("annotations") or {})
    annotations[SCHEDULED_TIMESTAMP] = go_rfc3339(scheduled.astimezone(zone))
    body: dict[str, Any] = {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": job_name(m.get("name") or "", scheduled), "namespace": m.get("namespace") or "",
                     "annotations": annotations,
                     "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": m.get("name") or "",
                                          "uid": m.get("uid") or "", "controller": True,
                                          "blockOwnerDeletion": True}]},
        "spec": copy.deepcopy(tmpl.get("spec") or {}),
    }
    if tmeta.get("labels"):
        body["metadata"]["labels"] = dict(tmeta["labels"])
    return body


def go_rfc3339(t: datetime.datetime) -> str:
    """Go's time.RFC3339 layout: offset as ±hh:mm, or Z when it is zero."""
    text = t.replace(microsecond=0).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


# --- history ---------------------------------------------------------------------------


def _start_key(job: dict[str, Any]) -> tuple[int, datetime.datetime, str]:
    start = parse_time((job.get("status") or {}).get("startTime"))
    far = datetime.datetime.max.replace(tzinfo=datetime.UTC)
    return (0 if start is not None else 1, start or far, meta(job).get("name") or "")


def history_to_delete(cj: dict[str, Any], jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished Jobs past successfulJobsHistoryLimit / failedJobsHistoryLimit, oldest start first."""
    spec = cj.get("spec") or {}
    out: list[dict[str, Any]] = []
    for cond, limit in (("Complete", spec.get("successfulJobsHistoryLimit")),
                        ("Failed", spec.get("failedJobsHistoryLimit"))):
        if limit is None:
            continue
        done = sorted((j for j in jobs if finished_condition(j) == cond), key=_start_key)
        extra = len(done) - int(limit)
        if extra > 0:
            out.extend(done[:extra])
    return out
