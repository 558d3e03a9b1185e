"""Pure Deployment rules: template hash, revisions and annotations, fenceposts and rollout plans."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

import orjson

from pocketkube.controllers import history
from pocketkube.controllers import replicaset_util as rsutil

REVISION = "deployment.kubernetes.io/revision"
REVISION_HISTORY = "deployment.kubernetes.io/revision-history"
DESIRED_REPLICAS = "deployment.kubernetes.io/desired-replicas"
MAX_REPLICAS = "deployment.kubernetes.io/max-replicas"
ROLLBACK_TO = "deprecated.deployment.rollback.to"
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
CHANGE_CAUSE = "kubernetes.io/change-cause"
HASH_LABEL = "pod-template-hash"
# Annotations a Deployment never hands down to its ReplicaSets.
SKIPPED_ANNOTATIONS = frozenset({LAST_APPLIED, REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS,
                                 ROLLBACK_TO})
MAX_REV_HISTORY_CHARS = 2000
MAX_INT32 = 2 ** 31 - 1

PROGRESSING = "Progressing"
AVAILABLE = "Available"
REPLICA_FAILURE = "ReplicaFailure"
# Reasons, worded as kube's deployment util.
NEW_RS_CREATED = "NewReplicaSetCreated"
FOUND_NEW_RS = "FoundNewReplicaSet"
RS_UPDATED = "ReplicaSetUpdated"
NEW_RS_AVAILABLE = "NewReplicaSetAvailable"
TIMED_OUT = "ProgressDeadlineExceeded"
PAUSED = "DeploymentPaused"
RESUMED = "DeploymentResumed"
FAILED_RS_CREATE = "ReplicaSetCreateError"
MIN_AVAILABLE = "MinimumReplicasAvailable"
MIN_UNAVAILABLE = "MinimumReplicasUnavailable"


def meta(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("metadata") or {}


def spec(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("spec") or {}


def status(obj: dict[str, Any] | None) -> dict[str, Any]:
    return (obj or {}).get("status") or {}


def replicas(obj: dict[str, Any] | None) -> int:
    """spec.replicas (1 when unset, as defaulted)."""
    return rsutil.replicas_of(obj) if obj is not None else 0


def as_int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


# --- the pod-template-hash -----------------------------------------------------------------


SAFE_ALPHABET = history.SAFE_ALPHABET
fnv32a = history.fnv32a
safe_encode = history.safe_encode


def compute_hash(template: dict[str, Any], collision_count: int | None) -> str:
    """controller.ComputeHash: FNV-32a of the template (canonical JSON here), salted by collisionCount."""
    data = orjson.dumps(_normalize(template), option=orjson.OPT_SORT_KEYS)
    if collision_count is not None:
        # kube writes the count as a little-endian uint32 into an 8-byte buffer.
        data += (collision_count & 0xFFFFFFFF).to_bytes(4, "little") + bytes(4)
    h = fnv32a(data)
    return safe_encode(str(h))


def _normalize(value: Any) -> Any:
    """Drop what Go's semantic equality ignores: nulls, empty maps and empty lists."""
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            n = _normalize(v)
            if n is None or n == {} or n == []:
                continue
            out[k] = n
        return out
    if isinstance(value, list):
        return [_normalize(v) for v in value]
    return value


def without_hash(template: dict[str, Any] | None) -> Any:
    t = copy.deepcopy(template or {})
    labels = (t.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    return _normalize(t)


def equal_ignore_hash(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """EqualIgnoreHash: two pod templates equal once the pod-template-hash label is dropped."""
    return bool(without_hash(a) == without_hash(b))


def new_rs_template(d: dict[str, Any], pod_hash: str) -> dict[str, Any]:
    t = copy.deepcopy(spec(d).get("template") or {})
    tm = t.setdefault("metadata", {})
    tm["labels"] = {**(tm.get("labels") or {}), HASH_LABEL: pod_hash}
    return t


def new_rs_selector(d: dict[str, Any], pod_hash: str) -> dict[str, Any]:
    sel = copy.deepcopy(spec(d).get("selector") or {})
    sel["matchLabels"] = {**(sel.get("matchLabels") or {}), HASH_LABEL: pod_hash}
    return sel


# --- sorting ---------------------------------------------------------------------------------


def _created(rs: dict[str, Any]) -> tuple[str, str]:
    return (str(meta(rs).get("creationTimestamp") or ""), str(meta(rs).get("name") or ""))


def by_creation(rss: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """ReplicaSetsByCreationTimestamp: oldest first, ties by name."""
    return sorted(rss, key=_created)


def by_size(rss: Iterable[dict[str, Any]], *, newer_first: bool) -> list[dict[str, Any]]:
    """ReplicaSetsBySizeNewer/Older: largest first; equal sizes newest (or oldest) first."""
    def cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
        if replicas(a) != replicas(b):
            return -1 if replicas(a) > replicas(b) else 1
        ca, cb = _created(a), _created(b)
        if ca == cb:
            return 0
        older = -1 if ca < cb else 1
        return -older if newer_first else older
    return sorted(rss, key=functools.cmp_to_key(cmp))


def revision(rs: dict[str, Any]) -> int | None:
    try:
        return int((meta(rs).get("annotations") or {}).get(REVISION, ""))
    except ValueError:
        return None


def max_revision(rss: Iterable[dict[str, Any]]) -> int:
    return max((r for r in (revision(rs) for rs in rss) if r is not None), default=0)


def by_revision(rss: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """ReplicaSetsByRevision: lowest revision first (unparsable as 0), ties by creation."""
    return sorted(rss, key=lambda rs: (revision(rs) or 0, _created(rs)))


# --- finding the new and old ReplicaSets ------------------------------------------------------


def find_new(d: dict[str, Any], rss: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """FindNewReplicaSet: the oldest ReplicaSet whose template equals the Deployment's."""
    template = spec(d).get("template")
    for rs in by_creation(rss):
        if equal_ignore_hash(spec(rs).get("template"), template):
            return rs
    return None


def find_old(new_rs: dict[str, Any] | None, rss: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every ReplicaSet but the new one."""
    uid = meta(new_rs).get("uid") if new_rs is not None else None
    return [rs for rs in rss if uid is None or meta(rs).get("uid") != uid]


def active(rss: Iterable[dict[str, Any] | None]) -> list[dict[str, Any]]:
    """FilterActiveReplicaSets: those asking for at least one pod."""
    return [rs for rs in rss if rs is not None and replicas(rs) > 0]


def sum_spec(rss: Iterable[dict[str, Any] | None]) -> int:
    return sum(replicas(rs) for rs in rss if rs is not None)


def sum_status(rss: Iterable[dict[str, Any] | None], field: str) -> int:
    return sum(as_int(status(rs).get(field)) for rs in rss if rs is not None)


# --- fenceposts --------------------------------------------------------------------------------


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent; bad values raise ValueError with kube's wording."""
    if value is None:
        raise ValueError("nil value for IntOrString")
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: invalid type: {value!r}")
    if isinstance(value, int):
        return value
    if not isinstance(value, str) or not value.endswith("%"):
        raise ValueError("invalid value for IntOrString: invalid type: string is not a percentage")
    try:
        pct = int(value[:-1])
    except ValueError:
        raise ValueError(f'invalid value for IntOrString: invalid value "{value}"') from None
    return -(-pct * total // 100) if round_up else pct * total // 100


def _rolling(d: dict[str, Any]) -> dict[str, Any] | None:
    strategy = spec(d).get("strategy") or {}
    if (strategy.get("type") or "RollingUpdate") != "RollingUpdate":
        return None
    return strategy.get("rollingUpdate") or {}


def is_rolling(d: dict[str, Any]) -> bool:
    return _rolling(d) is not None


def resolve_fenceposts(max_surge: Any, max_unavailable: Any, desired: int) -> tuple[int, int]:
    """ResolveFenceposts: surge rounds up, unavailable rounds down; both zero becomes (0, 1)."""
    surge = scaled_value(0 if max_surge is None else max_surge, desired, round_up=True)
    unavailable = scaled_value(0 if max_unavailable is None else max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        unavailable = 1
    return surge, unavailable


def max_surge(d: dict[str, Any]) -> int:
    ru = _rolling(d)
    if ru is None:
        return 0
    return resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), replicas(d))[0]


def max_unavailable(d: dict[str, Any]) -> int:
    ru = _rolling(d)
    if ru is None or replicas(d) == 0:
        return 0
    unavailable = resolve_fenceposts(ru.get("maxSurge"), ru.get("maxUnavailable"), replicas(d))[1]
    return min(unavailable, replicas(d))


def new_rs_new_replicas(d: dict[str, Any], all_rss: list[dict[str, Any]], new_rs: dict[str, Any]) -> int:
    """NewRSNewReplicas: how big the new ReplicaSet may be now."""
    ru = _rolling(d)
    if ru is None:
        return replicas(d)
    surge = scaled_value(ru.get("maxSurge", "25%"), replicas(d), round_up=True)
    current = sum_spec(all_rss)
    max_total = replicas(d) + surge
    if current >= max_total:
        return replicas(new_rs)
    up = min(max_total - current, replicas(d) - replicas(new_rs))
    return replicas(new_rs) + up


# --- annotations -------------------------------------------------------------------------------


def copy_annotations(d: dict[str, Any], rs: dict[str, Any]) -> bool:
    """copyDeploymentAnnotationsToReplicaSet (change-cause and user annotations); True if any changed."""
    ann = rs.setdefault("metadata", {}).get("annotations")
    if ann is None:
        ann = rs["metadata"]["annotations"] = {}
    changed = False
    for k, v in (meta(d).get("annotations") or {}).items():
        if k in SKIPPED_ANNOTATIONS or ann.get(k) == v:
            continue
        ann[k] = v
        changed = True
    return changed


def set_replicas_annotations(rs: dict[str, Any], desired: int, max_replicas: int) -> bool:
    ann = rs.setdefault("metadata", {}).get("annotations")
    if ann is None:
        ann = rs["metadata"]["annotations"] = {}
    changed = False
    for k, v in ((DESIRED_REPLICAS, str(desired)), (MAX_REPLICAS, str(max_replicas))):
        if ann.get(k) != v:
            ann[k] = v
            changed = True
    return changed


def replicas_annotations_need_update(rs: dict[str, Any], desired: int, max_replicas: int) -> bool:
    ann = meta(rs).get("annotations") or {}
    return ann.get(DESIRED_REPLICAS) != str(desired) or ann.get(MAX_REPLICAS) != str(max_replicas)


def set_new_rs_annotations(d: dict[str, Any], rs: dict[str, Any], new_revision: int, *, exists: bool) -> bool:
    """SetNewReplicaSetAnnotations: copy annotations, bump revision keeping revision-history, set sizes."""
    changed = copy_annotations(d, rs)
    ann = rs["metadata"]["annotations"]
    had = REVISION in ann
    old_raw = ann.get(REVISION, "")
    try:
        old = int(old_raw) if old_raw != "" else 0
    except ValueError:
        return False
    if old < new_revision:
        ann[REVISION] = str(new_revision)
        changed = True
        if had:
            history = ann.get(REVISION_HISTORY, "")
            olds = history.split(",")
            if not olds[0]:
                ann[REVISION_HISTORY] = old_raw
            else:
                total = len(history) + len(old_raw) + 1
                start = 0
                while total > MAX_REV_HISTORY_CHARS and start < len(olds):
                    total -= len(olds[start]) + 1
                    start += 1
                if total <= MAX_REV_HISTORY_CHARS:
                    ann[REVISION_HISTORY] = ",".join([*olds[start:], old_raw])
    if not exists and set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d)):
        changed = True
    return changed


def desired_replicas_annotation(rs: dict[str, Any]) -> int | None:
    try:
        return int((meta(rs).get("annotations") or {}).get(DESIRED_REPLICAS, ""))
    except ValueError:
        return None


def is_saturated(d: dict[str, Any], rs: dict[str, Any] | None) -> bool:
    """IsSaturated: the ReplicaSet has all the Deployment's replicas, all available."""
    if rs is None:
        return False
    want = replicas(d)
    return (replicas(rs) == want and desired_replicas_annotation(rs) == want
            and as_int(status(rs).get("availableReplicas")) == want)


def is_scaling_event(d: dict[str, Any], new_rs: dict[str, Any] | None, old_rss: list[dict[str, Any]]) -> bool:
    """isScalingEvent: an active ReplicaSet was sized for a different replica count."""
    for rs in active([*old_rss, new_rs]):
        desired = desired_replicas_annotation(rs)
        if desired is not None and desired != replicas(d):
            return True
    return False


# --- plans -------------------------------------------------------------------------------------


Scale = tuple[dict[str, Any], int]


def plan_new_rs(d: dict[str, Any], all_rss: list[dict[str, Any]], new_rs: dict[str, Any]) -> int | None:
    """reconcileNewReplicaSet: the new ReplicaSet's next size, or None when it is right."""
    want = replicas(d)
    if replicas(new_rs) == want:
        return None
    if replicas(new_rs) > want:
        return want
    target = new_rs_new_replicas(d, all_rss, new_rs)
    return None if target == replicas(new_rs) else target


def plan_old_rss(d: dict[str, Any], all_rss: list[dict[str, Any]], old_rss: list[dict[str, Any]],
                 new_rs: dict[str, Any]) -> list[Scale]:
    """reconcileOldReplicaSets: unhealthy replicas first, then as many as availability allows."""
    old_count = sum_spec(old_rss)
    if old_count == 0:
        return []
    all_count = sum_spec(all_rss)
    min_available = replicas(d) - max_unavailable(d)
    new_unavailable = replicas(new_rs) - as_int(status(new_rs).get("availableReplicas"))
    max_scaled_down = all_count - min_available - new_unavailable
    if max_scaled_down <= 0:
        return []
    sizes = {id(rs): replicas(rs) for rs in old_rss}
    out: list[Scale] = []
    olds = by_creation(old_rss)
    cleaned = 0
    for rs in olds:
        if cleaned >= max_scaled_down:
            break
        size, avail = sizes[id(rs)], as_int(status(rs).get("availableReplicas"))
        if size == 0 or size == avail:
            continue
        down = min(max_scaled_down - cleaned, size - avail)
        sizes[id(rs)] = size - down
        out.append((rs, size - down))
        cleaned += down
    available = sum_status([*olds, new_rs], "availableReplicas")
    if available <= min_available:
        return out
    budget = available - min_available
    scaled = 0
    for rs in olds:
        if scaled >= budget:
            break
        size = sizes[id(rs)]
        if size == 0:
            continue
        down = min(size, budget - scaled)
        sizes[id(rs)] = size - down
        out.append((rs, size - down))
        scaled += down
    return out


def active_or_latest(new_rs: dict[str, Any] | None, old_rss: list[dict[str, Any]]) -> dict[str, Any] | None:
    """FindActiveOrLatest: the only active ReplicaSet, or the newest when none is active."""
    if new_rs is None and not old_rss:
        return None
    olds = list(reversed(by_creation(old_rss)))
    acts = active([*olds, new_rs])
    if not acts:
        return new_rs if new_rs is not None else olds[0]
    if len(acts) == 1:
        return acts[0]
    return None


def _fraction(rs: dict[str, Any], d: dict[str, Any]) -> int:
    if replicas(d) == 0:
        return -replicas(rs)
    max_now = replicas(d) + max_surge(d)
    try:
        before = int((meta(rs).get("annotations") or {}).get(MAX_REPLICAS, ""))
    except ValueError:
        before = 0
    if before == 0:
        before = as_int(status(d).get("replicas"))
        if before == 0:
            return 0
    size = replicas(rs) * max_now / before
    rounded = int(size + 0.5) if size >= 0 else -int(-size + 0.5)
    return rounded - replicas(rs)


def _proportion(rs: dict[str, Any], d: dict[str, Any], to_add: int, added: int) -> int:
    if replicas(rs) == 0 or to_add == 0 or to_add == added:
        return 0
    fraction = _fraction(rs, d)
    allowed = to_add - added
    return min(fraction, allowed) if to_add > 0 else max(fraction, allowed)


def plan_scale(d: dict[str, Any], new_rs: dict[str, Any] | None,
               old_rss: list[dict[str, Any]]) -> list[tuple[dict[str, Any], int, str]]:
    """scale(): (ReplicaSet, size, "up"/"down"/"") for a Deployment whose replica count changed.

    Entries are applied with scaleReplicaSet, which also refreshes the size annotations.
    """
    target = active_or_latest(new_rs, old_rss)
    if target is not None:
        if replicas(target) == replicas(d):
            return []
        return [(target, replicas(d), "up" if replicas(target) < replicas(d) else "down")]
    if is_saturated(d, new_rs):
        return [(rs, 0, "down") for rs in active(old_rss)]
    if not is_rolling(d):
        return []
    rss = active([*old_rss, new_rs])
    allowed = replicas(d) + max_surge(d) if replicas(d) > 0 else 0
    to_add = allowed - sum_spec(rss)
    op = ""
    if to_add > 0:
        rss = by_size(rss, newer_first=True)
        op = "up"
    elif to_add < 0:
        rss = by_size(rss, newer_first=False)
        op = "down"
    added = 0
    sizes: list[int] = []
    for rs in rss:
        if to_add != 0:
            p = _proportion(rs, d, to_add, added)
            sizes.append(replicas(rs) + p)
            added += p
        else:
            sizes.append(replicas(rs))
    if rss and to_add != 0:
        sizes[0] = max(0, sizes[0] + to_add - added)
    return [(rs, size, op) for rs, size in zip(rss, sizes, strict=True)]


def cleanup_victims(old_rss: list[dict[str, Any]], d: dict[str, Any]) -> list[dict[str, Any]]:
    """cleanupDeployment: the oldest idle ReplicaSets beyond revisionHistoryLimit."""
    limit = spec(d).get("revisionHistoryLimit")
    if limit is None or limit == MAX_INT32:
        return []
    alive = [rs for rs in old_rss if not meta(rs).get("deletionTimestamp")]
    diff = len(alive) - int(limit)
    if diff <= 0:
        return []
    out = []
    for rs in by_revision(alive)[:diff]:
        if (as_int(status(rs).get("replicas")) != 0 or replicas(rs) != 0
                or as_int(meta(rs).get("generation")) > as_int(status(rs).get("observedGeneration"))):
            continue
        out.append(rs)
    return out


def old_pods_running(new_rs: dict[str, Any] | None, old_rss: list[dict[str, Any]],
                     pods_by_rs: dict[str, list[dict[str, Any]]]) -> bool:
    """oldPodsRunning (Recreate): any old ReplicaSet still has a pod not in a terminal phase."""
    if sum_status(old_rss, "replicas") > 0:
        return True
    new_uid = meta(new_rs).get("uid") if new_rs is not None else None
    for uid, pods in pods_by_rs.items():
        if uid == new_uid:
            continue
        if any((p.get("status") or {}).get("phase") not in ("Failed", "Succeeded") for p in pods):
            return True
    return False
