"""Pure DaemonSet rules: which nodes run a daemon pod, what to create and delete, rolling updates, status."""

from __future__ import annotations

import copy
import dataclasses
import datetime
import functools
from typing import Any

from pocketkube.controllers import history, podutil
from pocketkube.controllers import replicaset_util as rsutil

HASH_LABEL = history.HASH_LABEL
# extensions.DaemonSetTemplateGenerationKey, from the deprecated generation annotation.
GENERATION_LABEL = "pod-template-generation"
GENERATION_ANNOTATION = "deprecated.daemonset.template.generation"
NAME_FIELD = "metadata.name"
# The DaemonSet controller's failed-pod back-off: 1 s doubling to 15 minutes.
BACKOFF_INITIAL, BACKOFF_MAX = 1.0, 900.0

meta = rsutil.meta

# util.AddOrUpdateDaemonPodTolerations: daemons survive node problems and cordons.
DAEMON_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
    {"key": "node.kubernetes.io/disk-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/memory-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/pid-pressure", "operator": "Exists", "effect": "NoSchedule"},
    {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"},
)
HOST_NETWORK_TOLERATION = {"key": "node.kubernetes.io/network-unavailable", "operator": "Exists",
                           "effect": "NoSchedule"}


# --- node eligibility -------------------------------------------------------------------


def _same_toleration(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return all((a.get(k) or "") == (b.get(k) or "") for k in ("key", "operator", "value", "effect"))


def add_daemon_tolerations(spec: dict[str, Any]) -> None:
    """AddOrUpdateTolerationInPodSpec for each automatic daemon toleration."""
    wanted = list(DAEMON_TOLERATIONS) + ([HOST_NETWORK_TOLERATION] if spec.get("hostNetwork") else [])
    tolerations = [t for t in spec.get("tolerations") or [] if isinstance(t, dict)]
    for want in wanted:
        for i, t in enumerate(tolerations):
            if _same_toleration(t, want):
                tolerations[i] = dict(want)
                break
        else:
            tolerations.append(dict(want))
    spec["tolerations"] = tolerations


tolerates = podutil.tolerates


def untolerated_taint(taints: list[dict[str, Any]], tolerations: list[dict[str, Any]],
                      effects: tuple[str, ...]) -> dict[str, Any] | None:
    """FindMatchingUntoleratedTaint over taints with the given effects."""
    for taint in taints:
        if taint.get("effect") in effects and not any(tolerates(t, taint) for t in tolerations):
            return taint
    return None


def _requirement_matches(req: dict[str, Any], value: str | None) -> bool:
    op, values = req.get("operator"), [str(v) for v in req.get("values") or []]
    if op == "In":
        return value is not None and value in values
    if op == "NotIn":
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            have, bound = int(value), int(values[0])
        except ValueError:
            return False
        return have > bound if op == "Gt" else have < bound
    return False


def _term_matches(term: dict[str, Any], node: dict[str, Any]) -> bool:
    exprs, fields = term.get("matchExpressions") or [], term.get("matchFields") or []
    if not exprs and not fields:
        return False
    labels = meta(node).get("labels") or {}
    if not all(_requirement_matches(r, labels.get(r.get("key"))) for r in exprs):
        return False
    for r in fields:
        if r.get("key") != NAME_FIELD or not _requirement_matches(r, meta(node).get("name")):
            return False
    return True


def matches_node_affinity(pod_spec: dict[str, Any], node: dict[str, Any]) -> bool:
    """GetRequiredNodeAffinity(pod).Match(node): nodeSelector and required node affinity terms."""
    labels = meta(node).get("labels") or {}
    if any(labels.get(k) != v for k, v in (pod_spec.get("nodeSelector") or {}).items()):
        return False
    required = (((pod_spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution"))
    if required is None:
        return True
    return any(_term_matches(t, node) for t in required.get("nodeSelectorTerms") or [] if isinstance(t, dict))


def daemon_pod_spec(ds: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(((ds.get("spec") or {}).get("template") or {}).get("spec") or {})
    add_daemon_tolerations(spec)
    return spec


def should_run(node: dict[str, Any], ds: dict[str, Any]) -> tuple[bool, bool]:
    """NodeShouldRunDaemonPod: (should run a daemon pod, should keep one already running)."""
    spec = daemon_pod_spec(ds)
    node_name = meta(node).get("name")
    if spec.get("nodeName") and spec.get("nodeName") != node_name:
        return False, False
    if not matches_node_affinity(spec, node):
        return False, False
    taints = [t for t in (node.get("spec") or {}).get("taints") or [] if isinstance(t, dict)]
    tolerations = spec.get("tolerations") or []
    if untolerated_taint(taints, tolerations, ("NoExecute", "NoSchedule")) is None:
        return True, True
    return False, untolerated_taint(taints, tolerations, ("NoExecute",)) is None


# --- pods -------------------------------------------------------------------------------


def target_node(pod: dict[str, Any]) -> str | None:
    """GetTargetNodeName: spec.nodeName, or the metadata.name In [node] affinity a daemon pod carries."""
    spec = pod.get("spec") or {}
    if spec.get("nodeName"):
        return str(spec["nodeName"])
    required = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
                .get("requiredDuringSchedulingIgnoredDuringExecution")) or {}
    for term in required.get("nodeSelectorTerms") or []:
        for r in (term or {}).get("matchFields") or []:
            if r.get("key") == NAME_FIELD and r.get("operator") == "In":
                values = r.get("values") or []
                return str(values[0]) if len(values) == 1 else None
    return None


def node_affinity_for(affinity: dict[str, Any] | None, node_name: str) -> dict[str, Any]:
    """ReplaceDaemonSetPodNodeNameNodeAffinity: require metadata.name In [node], keeping other affinity."""
    term = {"matchFields": [{"key": NAME_FIELD, "operator": "In", "values": [node_name]}]}
    out = copy.deepcopy(affinity) if affinity else {}
    na = out.setdefault("nodeAffinity", {})
    required = na.get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is None:
        na["requiredDuringSchedulingIgnoredDuringExecution"] = {"nodeSelectorTerms": [term]}
    else:
        required["nodeSelectorTerms"] = [term]
    return out


def template_generation(ds: dict[str, Any]) -> str | None:
    raw = (meta(ds).get("annotations") or {}).get(GENERATION_ANNOTATION)
    try:
        return str(int(raw)) if raw is not None else None
    except ValueError:
        return None


def pod_template(ds: dict[str, Any], hash_: str) -> dict[str, Any]:
    """CreatePodTemplate: the template with daemon tolerations and the hash (and generation) labels."""
    template = copy.deepcopy((ds.get("spec") or {}).get("template") or {})
    spec = template.setdefault("spec", {})
    add_daemon_tolerations(spec)
    labels = template.setdefault("metadata", {}).setdefault("labels", {})
    gen = template_generation(ds)
    if gen is not None:
        labels[GENERATION_LABEL] = gen
    if hash_:
        labels[HASH_LABEL] = hash_
    return template


def new_pod(ds: dict[str, Any], hash_: str, node_name: str) -> dict[str, Any]:
    """The pod syncNodes creates for one node: generateName "<ds>-", bound to the node by affinity."""
    template = pod_template(ds, hash_)
    template["spec"]["affinity"] = node_affinity_for(template["spec"].get("affinity"), node_name)
    return rsutil.pod_from_template(ds, template)


def is_updated(pod: dict[str, Any], hash_: str, generation: str | None) -> bool:
    """IsPodUpdated: the hash label matches (or the deprecated template generation does)."""
    labels = meta(pod).get("labels") or {}
    return bool((hash_ and labels.get(HASH_LABEL) == hash_)
                or (generation is not None and labels.get(GENERATION_LABEL) == generation))


def _by_creation(a: dict[str, Any], b: dict[str, Any]) -> int:
    """podByCreationTimestampAndPhase: scheduled first, then oldest, then by name."""
    sa, sb = bool((a.get("spec") or {}).get("nodeName")), bool((b.get("spec") or {}).get("nodeName"))
    if sa != sb:
        return -1 if sa else 1
    ta, tb = meta(a).get("creationTimestamp") or "", meta(b).get("creationTimestamp") or ""
    if ta != tb:
        return -1 if ta < tb else 1
    na, nb = meta(a).get("name") or "", meta(b).get("name") or ""
    return (na > nb) - (na < nb)


def by_creation(pods: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(pods, key=functools.cmp_to_key(_by_creation))


def _available(pod: dict[str, Any], ds: dict[str, Any], now: datetime.datetime) -> bool:
    return rsutil.is_available(pod, int((ds.get("spec") or {}).get("minReadySeconds") or 0), now)


def allows_surge(ds: dict[str, Any]) -> bool:
    ru = (((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate")) or {}
    try:
        return ru.get("maxSurge") is not None and history.scaled_value(ru["maxSurge"], 1, round_up=True) != 0
    except ValueError:
        return False


# --- plans ------------------------------------------------------------------------------


class FailedBackoff:
    """flowcontrol.Backoff for deleting failed daemon pods, keyed per DaemonSet and node."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[float, float]] = {}  # key -> (delay, last update)

    def in_backoff(self, key: str, now: float) -> bool:
        entry = self._entries.get(key)
        return entry is not None and now - entry[1] < entry[0]

    def delay(self, key: str) -> float:
        return self._entries.get(key, (0.0, 0.0))[0]

    def next(self, key: str, now: float) -> None:
        entry = self._entries.get(key)
        if entry is None or now - entry[1] > 2 * BACKOFF_MAX:
            self._entries[key] = (BACKOFF_INITIAL, now)
        else:
            self._entries[key] = (min(entry[0] * 2, BACKOFF_MAX), now)


@dataclasses.dataclass
class Sync:
    """Nodes needing a daemon pod, pods to delete, warnings to record and when to look again."""

    create_on: list[str] = dataclasses.field(default_factory=list)
    delete: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    requeue_after: float | None = None


def group_by_node(pods: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """getNodesToDaemonPods: owned pods by target node (pods without one are ignored)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for pod in pods:
        node = target_node(pod)
        if node is not None:
            out.setdefault(node, []).append(pod)
    return out


def plan_manage(ds: dict[str, Any], nodes: list[dict[str, Any]], by_node: dict[str, list[dict[str, Any]]],
                hash_: str, now: datetime.datetime, *, backoff: FailedBackoff, mono: float) -> Sync:
    """manage: podsShouldBeOnNode for every node, plus unscheduled pods aimed at nodes that are gone."""
    out = Sync()
    surge = allows_surge(ds)
    uid = meta(ds).get("uid") or ""
    for node in nodes:
        name = meta(node).get("name") or ""
        run, keep = should_run(node, ds)
        pods = by_node.get(name)
        if run and not pods:
            out.create_on.append(name)
            continue
        if not keep:
            out.delete += [p for p in pods or [] if not meta(p).get("deletionTimestamp")]
            continue
        running = []
        for pod in pods or []:
            if meta(pod).get("deletionTimestamp"):
                continue
            phase = (pod.get("status") or {}).get("phase")
            if phase == "Failed":
                key = f"{uid}/{name}"
                if backoff.in_backoff(key, mono):
                    delay = backoff.delay(key)
                    out.requeue_after = delay if out.requeue_after is None else min(out.requeue_after, delay)
                    continue
                backoff.next(key, mono)
                out.events.append(("Warning", "FailedDaemonPod",
                                   f"Found failed daemon pod {meta(pod).get('namespace')}/{meta(pod).get('name')} "
                                   f"on node {name}, will try to kill it"))
                out.delete.append(pod)
            elif phase == "Succeeded":
                out.delete.append(pod)
            else:
                running.append(pod)
        if not surge:
            out.delete += by_creation(running)[1:]
            continue
        if len(running) <= 1:
            if not running and run:
                out.create_on.append(name)
            continue
        oldest_new = oldest_old = None
        for pod in by_creation(running):
            if (meta(pod).get("labels") or {}).get(HASH_LABEL) == hash_:
                if oldest_new is None:
                    oldest_new = pod
                    continue
            elif oldest_old is None:
                oldest_old = pod
                continue
            out.delete.append(pod)
        if oldest_new is not None and oldest_old is not None and (
                not rsutil.is_ready(oldest_old) or _available(oldest_new, ds, now)):
            out.delete.append(oldest_old)
    names = {meta(n).get("name") for n in nodes}
    for node_name, pods in by_node.items():
        if node_name not in names:
            out.delete += [p for p in pods if not (p.get("spec") or {}).get("nodeName")]
    return out


def _updated_pods_on_node(pods: list[dict[str, Any]], hash_: str,
                          generation: str | None) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """findUpdatedPodsOnNode: (new pod, old pod, ok) where ok is False for more than one of either."""
    new = old = None
    for pod in pods:
        if meta(pod).get("deletionTimestamp"):
            continue
        if is_updated(pod, hash_, generation):
            if new is not None:
                return None, None, False
            new = pod
        else:
            if old is not None:
                return None, None, False
            old = pod
    return new, old, True


def desired_counts(ds: dict[str, Any], nodes: list[dict[str, Any]]) -> tuple[int, int, int]:
    """updatedDesiredNodeCounts: (maxSurge, maxUnavailable, desired) with the unavailable=1 fallback."""
    desired = sum(1 for n in nodes if should_run(n, ds)[0])
    ru = (((ds.get("spec") or {}).get("updateStrategy") or {}).get("rollingUpdate")) or {}
    max_unavailable = history.scaled_value(ru.get("maxUnavailable", 1), desired, round_up=True)
    max_surge = history.scaled_value(ru.get("maxSurge") or 0, desired, round_up=True)
    if desired > 0 and max_unavailable == 0 and max_surge == 0:
        max_unavailable = 1
    return max_surge, max_unavailable, desired


def plan_rolling_update(ds: dict[str, Any], nodes: list[dict[str, Any]],
                        by_node: dict[str, list[dict[str, Any]]], hash_: str, now: datetime.datetime) -> Sync:
    """rollingUpdate: replace old pods within maxUnavailable, or surge new ones within maxSurge."""
    out = Sync()
    max_surge, max_unavailable, desired = desired_counts(ds, nodes)
    all_nodes = {meta(n).get("name") or "": n for n in nodes}
    node_pods = dict(by_node)
    for name, node in all_nodes.items():
        if should_run(node, ds)[0]:
            node_pods.setdefault(name, [])
    generation = template_generation(ds)
    if max_surge == 0:
        unavailable = 0
        allowed: list[dict[str, Any]] = []
        candidates: list[dict[str, Any]] = []
        for name in sorted(node_pods):
            new, old, ok = _updated_pods_on_node(node_pods[name], hash_, generation)
            if not ok or (new is None) == (old is None):
                unavailable += 1
            elif new is not None:
                unavailable += not _available(new, ds, now)
            elif old is not None and not _available(old, ds, now):
                allowed.append(old)
                unavailable += 1
            elif old is not None and unavailable < max_unavailable:
                candidates.append(old)
        remaining = min(max(0, max_unavailable - unavailable), len(candidates))
        out.delete = allowed + candidates[:remaining]
        return out
    surged = available = 0
    allowed_nodes: list[str] = []
    candidate_nodes: list[str] = []
    not_running: list[dict[str, Any]] = []
    for name in sorted(node_pods):
        new, old, ok = _updated_pods_on_node(node_pods[name], hash_, generation)
        if not ok:
            surged += 1
            continue
        counted = old if old is not None else new
        if counted is not None and _available(counted, ds, now):
            available += 1
        target = all_nodes.get(name)
        if old is None:
            continue
        if new is None:
            runs = target is not None and should_run(target, ds)[0]
            if not _available(old, ds, now) and runs:
                allowed_nodes.append(name)
            elif not _available(old, ds, now):
                out.delete.append(old)
            elif not runs:
                not_running.append(old)
            elif surged < max_surge:
                candidate_nodes.append(name)
            continue
        if not _available(new, ds, now):
            surged += 1
            continue
        out.delete.append(old)
    deletable = min(available - desired, len(not_running))
    if deletable > 0:
        out.delete += not_running[:deletable]
    remaining = min(max(0, max_surge - surged), len(candidate_nodes))
    out.create_on = allowed_nodes + candidate_nodes[:remaining]
    return out


def compute_status(ds: dict[str, Any], nodes: list[dict[str, Any]], by_node: dict[str, list[dict[str, Any]]],
                   hash_: str, now: datetime.datetime) -> dict[str, int]:
    """updateDaemonSetStatus's counts; the oldest pod on each node speaks for it."""
    desired = current = mis = ready = updated = available = 0
    generation = template_generation(ds)
    for node in nodes:
        run, _ = should_run(node, ds)
        pods = by_node.get(meta(node).get("name") or "") or []
        if not run:
            mis += bool(pods)
            continue
        desired += 1
        if not pods:
            continue
        current += 1
        pod = by_creation(pods)[0]
        if rsutil.is_ready(pod):
            ready += 1
            available += _available(pod, ds, now)
        updated += is_updated(pod, hash_, generation)
    return {"desiredNumberScheduled": desired, "currentNumberScheduled": current, "numberMisscheduled": mis,
            "numberReady": ready, "updatedNumberScheduled": updated, "numberAvailable": available,
            "numberUnavailable": desired - available}


def status_unchanged(ds: dict[str, Any], counts: dict[str, int]) -> bool:
    old = ds.get("status") or {}
    return (all(int(old.get(k) or 0) == v for k, v in counts.items())
            and int(old.get("observedGeneration") or 0) >= int(meta(ds).get("generation") or 0))
