"""Deployment status: counts, the Available/Progressing/ReplicaFailure conditions and the progress deadline."""

from __future__ import annotations

import copy
import datetime
from typing import Any

from pocketkube.controllers import deployment_util as du
from pocketkube.controllers import replicaset_util as rsutil

_OMIT_ZERO = ("observedGeneration", "replicas", "updatedReplicas", "readyReplicas", "availableReplicas",
              "unavailableReplicas")


def new_condition(ctype: str, cstatus: str, reason: str, message: str, now: str) -> dict[str, Any]:
    return {"type": ctype, "status": cstatus, "lastUpdateTime": now, "lastTransitionTime": now,
            "reason": reason, "message": message}


def get_condition(st: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in st.get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def set_condition(st: dict[str, Any], cond: dict[str, Any]) -> None:
    """SetDeploymentCondition: no-op for the same status and reason; keeps transition time on same status."""
    cur = get_condition(st, cond["type"])
    if cur is not None and cur.get("status") == cond["status"] and cur.get("reason") == cond["reason"]:
        return
    if cur is not None and cur.get("status") == cond["status"]:
        cond = {**cond, "lastTransitionTime": cur.get("lastTransitionTime")}
    st["conditions"] = [*(c for c in st.get("conditions") or [] if c.get("type") != cond["type"]), cond]


def remove_condition(st: dict[str, Any], ctype: str) -> None:
    conds = [c for c in st.get("conditions") or [] if c.get("type") != ctype]
    if conds:
        st["conditions"] = conds
    else:
        st.pop("conditions", None)


def has_progress_deadline(d: dict[str, Any]) -> bool:
    pds = du.spec(d).get("progressDeadlineSeconds")
    return pds is not None and pds != du.MAX_INT32


def clean_status(st: dict[str, Any]) -> dict[str, Any]:
    """The status as the API would store it: zero counts and empty lists left out (omitempty)."""
    out = {k: v for k, v in st.items() if not (k in _OMIT_ZERO and not v) and v is not None}
    if not out.get("conditions"):
        out.pop("conditions", None)
    return out


def calculate_status(all_rss: list[dict[str, Any] | None], new_rs: dict[str, Any] | None, d: dict[str, Any],
                     now: str) -> dict[str, Any]:
    """calculateStatus: counts from the ReplicaSets and the Available condition."""
    available = du.sum_status(all_rss, "availableReplicas")
    total = du.sum_spec(all_rss)
    st: dict[str, Any] = {
        "observedGeneration": du.as_int(du.meta(d).get("generation")),
        "replicas": du.sum_status(all_rss, "replicas"),
        "updatedReplicas": du.sum_status([new_rs], "replicas"),
        "readyReplicas": du.sum_status(all_rss, "readyReplicas"),
        "availableReplicas": available,
        "unavailableReplicas": max(0, total - available),
        "conditions": copy.deepcopy(du.status(d).get("conditions") or []),
    }
    if du.status(d).get("collisionCount") is not None:
        st["collisionCount"] = du.status(d)["collisionCount"]
    if available >= du.replicas(d) - du.max_unavailable(d):
        set_condition(st, new_condition(du.AVAILABLE, "True", du.MIN_AVAILABLE, "Deployment has minimum availability.",
                                        now))
    else:
        set_condition(st, new_condition(du.AVAILABLE, "False", du.MIN_UNAVAILABLE,
                                        "Deployment does not have minimum availability.", now))
    return st


def complete(d: dict[str, Any], st: dict[str, Any]) -> bool:
    """DeploymentComplete: every replica updated and available, and the generation observed."""
    want = du.replicas(d)
    return (du.as_int(st.get("updatedReplicas")) == want and du.as_int(st.get("replicas")) == want
            and du.as_int(st.get("availableReplicas")) == want
            and du.as_int(st.get("observedGeneration")) >= du.as_int(du.meta(d).get("generation")))


def progressing(d: dict[str, Any], st: dict[str, Any]) -> bool:
    """DeploymentProgressing: more updated, fewer old, more ready or more available replicas than before."""
    old = du.status(d)
    old_olds = du.as_int(old.get("replicas")) - du.as_int(old.get("updatedReplicas"))
    new_olds = du.as_int(st.get("replicas")) - du.as_int(st.get("updatedReplicas"))
    return (du.as_int(st.get("updatedReplicas")) > du.as_int(old.get("updatedReplicas")) or new_olds < old_olds
            or du.as_int(st.get("readyReplicas")) > du.as_int(old.get("readyReplicas"))
            or du.as_int(st.get("availableReplicas")) > du.as_int(old.get("availableReplicas")))


def timed_out(d: dict[str, Any], st: dict[str, Any], now: datetime.datetime) -> bool:
    """DeploymentTimedOut: no progress reported for progressDeadlineSeconds."""
    if not has_progress_deadline(d):
        return False
    cond = get_condition(st, du.PROGRESSING)
    if cond is None or cond.get("reason") == du.NEW_RS_AVAILABLE:
        return False
    if cond.get("reason") == du.TIMED_OUT:
        return True
    since = rsutil.parse_time(cond.get("lastUpdateTime"))
    if since is None:
        return False
    return since + datetime.timedelta(seconds=int(du.spec(d)["progressDeadlineSeconds"])) < now


def rollout_status(all_rss: list[dict[str, Any] | None], new_rs: dict[str, Any] | None, d: dict[str, Any],
                   now: datetime.datetime, stamp: str) -> dict[str, Any]:
    """syncRolloutStatus's new status: counts, Available, Progressing (with deadline) and ReplicaFailure."""
    st = calculate_status(all_rss, new_rs, d, stamp)
    if not has_progress_deadline(d):
        remove_condition(st, du.PROGRESSING)
    current = get_condition(du.status(d), du.PROGRESSING)
    done = (du.as_int(st.get("replicas")) == du.as_int(st.get("updatedReplicas")) and current is not None
            and current.get("reason") == du.NEW_RS_AVAILABLE)
    name = du.meta(new_rs).get("name") if new_rs is not None else None
    if has_progress_deadline(d) and not done:
        if complete(d, st):
            msg = (f'ReplicaSet "{name}" has successfully progressed.' if name
                   else f'Deployment "{du.meta(d).get("name")}" has successfully progressed.')
            set_condition(st, new_condition(du.PROGRESSING, "True", du.NEW_RS_AVAILABLE, msg, stamp))
        elif progressing(d, st):
            msg = (f'ReplicaSet "{name}" is progressing.' if name
                   else f'Deployment "{du.meta(d).get("name")}" is progressing.')
            cond = new_condition(du.PROGRESSING, "True", du.RS_UPDATED, msg, stamp)
            if current is not None:
                if current.get("status") == "True":
                    cond["lastTransitionTime"] = current.get("lastTransitionTime")
                remove_condition(st, du.PROGRESSING)
            set_condition(st, cond)
        elif timed_out(d, st, now):
            msg = (f'ReplicaSet "{name}" has timed out progressing.' if name
                   else f'Deployment "{du.meta(d).get("name")}" has timed out progressing.')
            set_condition(st, new_condition(du.PROGRESSING, "False", du.TIMED_OUT, msg, stamp))
    failures = replica_failures(all_rss, new_rs)
    if failures:
        set_condition(st, failures[0])
    else:
        remove_condition(st, du.REPLICA_FAILURE)
    return st


def replica_failures(all_rss: list[dict[str, Any] | None], new_rs: dict[str, Any] | None) -> list[dict[str, Any]]:
    """ReplicaFailure conditions of the new ReplicaSet, else of any ReplicaSet, as Deployment conditions."""
    def convert(rs: dict[str, Any] | None) -> list[dict[str, Any]]:
        return [{"type": c.get("type"), "status": c.get("status"), "lastUpdateTime": c.get("lastTransitionTime"),
                 "lastTransitionTime": c.get("lastTransitionTime"), "reason": c.get("reason"),
                 "message": c.get("message")}
                for c in du.status(rs).get("conditions") or [] if c.get("type") == du.REPLICA_FAILURE]
    found = convert(new_rs)
    if found:
        return found
    return [c for rs in all_rss if rs is not None for c in convert(rs)]


def stuck_requeue(d: dict[str, Any], st: dict[str, Any], now: datetime.datetime) -> float | None:
    """requeueStuckDeployment: seconds until the progress deadline should be checked (None: never)."""
    current = get_condition(du.status(d), du.PROGRESSING)
    if not has_progress_deadline(d) or current is None:
        return None
    if complete(d, st) or current.get("reason") == du.TIMED_OUT:
        return None
    since = rsutil.parse_time(current.get("lastUpdateTime"))
    if since is None:
        return None
    after = (since + datetime.timedelta(seconds=int(du.spec(d)["progressDeadlineSeconds"])) - now).total_seconds()
    return 0.0 if after < 1 else after + 1


def paused_condition(d: dict[str, Any], stamp: str) -> dict[str, Any] | None:
    """checkPausedConditions: the Progressing condition to set when pausing or resuming, if any."""
    if not has_progress_deadline(d):
        return None
    cond = get_condition(du.status(d), du.PROGRESSING)
    if cond is not None and cond.get("reason") == du.TIMED_OUT:
        return None
    paused_exists = cond is not None and cond.get("reason") == du.PAUSED
    if du.spec(d).get("paused") and not paused_exists:
        return new_condition(du.PROGRESSING, "Unknown", du.PAUSED, "Deployment is paused", stamp)
    if not du.spec(d).get("paused") and paused_exists:
        return new_condition(du.PROGRESSING, "Unknown", du.RESUMED, "Deployment is resumed", stamp)
    return None
