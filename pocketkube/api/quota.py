"""Quota usage as kube's quota evaluators measure it: resource lists, per-resource evaluators, scopes, admission checks."""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable, Mapping
from fractions import Fraction
from typing import Any

from pocketkube.api import quantity
from pocketkube.base import clock as clock_mod

Quantity = quantity.Quantity
ResourceList = dict[str, quantity.Quantity]

ONE = Quantity(Fraction(1))
ZERO = Quantity(Fraction(0))

# --- resource lists (k8s.io/apiserver/pkg/quota/v1/resources.go) ---------------------------------------------


def parse_list(raw: Any) -> ResourceList:
    """A ResourceList from its JSON form; entries that are not quantities are left out (validation refuses them)."""
    out: ResourceList = {}
    if not isinstance(raw, Mapping):
        return out
    for k, v in raw.items():
        try:
            out[str(k)] = quantity.parse(v)
        except quantity.QuantityError:
            continue
    return out


def to_json(rl: Mapping[str, Quantity]) -> dict[str, str]:
    """The JSON form, keys sorted as Go marshals a map."""
    return {k: str(rl[k]) for k in sorted(rl)}


def plus(a: Quantity, b: Quantity) -> Quantity:
    # Quantity.Add keeps the receiver's format unless the receiver is zero.
    return Quantity(a.value + b.value, b.format if a.value == 0 else a.format)


def _minus(a: Quantity, b: Quantity) -> Quantity:
    return Quantity(a.value - b.value, b.format if a.value == 0 else a.format)


def add(a: Mapping[str, Quantity], b: Mapping[str, Quantity]) -> ResourceList:
    out = dict(a)
    for k, v in b.items():
        out[k] = plus(out[k], v) if k in out else v
    return out


def subtract_non_negative(a: Mapping[str, Quantity], b: Mapping[str, Quantity]) -> ResourceList:
    """a - b per resource, floored at zero; resources only in b appear as zero."""
    out: ResourceList = {}
    for k, v in a.items():
        d = _minus(v, b[k]) if k in b else v
        out[k] = d if d.value > 0 else Quantity(Fraction(0))
    for k in b:
        out.setdefault(k, Quantity(Fraction(0)))
    return out


def mask(rl: Mapping[str, Quantity], names: Iterable[str]) -> ResourceList:
    keep = set(names)
    return {k: v for k, v in rl.items() if k in keep}


def remove_zeros(rl: Mapping[str, Quantity]) -> ResourceList:
    return {k: v for k, v in rl.items() if v.value != 0}


def negative(rl: Mapping[str, Quantity]) -> list[str]:
    return sorted(k for k, v in rl.items() if v.value < 0)


def less_than_or_equal(a: Mapping[str, Quantity], b: Mapping[str, Quantity]) -> list[str]:
    """The resources of b that a exceeds (empty when a fits)."""
    return sorted(k for k, v in b.items() if k in a and a[k].value > v.value)


def equals(a: Mapping[str, Quantity], b: Mapping[str, Quantity]) -> bool:
    return a.keys() == b.keys() and all(a[k].value == b[k].value for k in a)


def pretty(rl: Mapping[str, Quantity]) -> str:
    """kube's prettyPrint: name=value pairs sorted by name, joined by commas."""
    return ",".join(f"{k}={rl[k]}" for k in sorted(rl))


def count_name(group: str, resource: str) -> str:
    """The object count resource name: count/pods, count/deployments.apps."""
    return f"count/{resource}.{group}" if group else f"count/{resource}"


def parse_count_name(name: str) -> tuple[str, str] | None:
    """(group, resource) of a count/<resource>[.<group>] name; None for other names."""
    if not name.startswith("count/") or len(name) == len("count/"):
        return None
    resource, _, group = name[len("count/"):].partition(".")
    return group, resource


# --- pod resource arithmetic (k8s.io/kubernetes/pkg/api/v1/resource) ----------------------------------------


def dicts(v: Any) -> list[dict[str, Any]]:
    return [x for x in v if isinstance(x, dict)] if isinstance(v, list) else []


def container_resources(container: Mapping[str, Any], field: str) -> ResourceList:
    res = container.get("resources")
    return parse_list(res.get(field)) if isinstance(res, Mapping) else {}


def _add_into(total: ResourceList, more: Mapping[str, Quantity]) -> None:
    for k, v in more.items():
        total[k] = plus(total[k], v) if k in total else v


def _max_into(total: ResourceList, more: Mapping[str, Quantity]) -> None:
    for k, v in more.items():
        if k not in total or v.value > total[k].value:
            total[k] = v


def containers_total(spec: Mapping[str, Any], field: str) -> ResourceList:
    """Containers add up; init containers run one at a time, each beside the sidecars started before it."""
    total: ResourceList = {}
    for c in dicts(spec.get("containers")):
        _add_into(total, container_resources(c, field))
    sidecars: ResourceList = {}
    init_peak: ResourceList = {}
    for c in dicts(spec.get("initContainers")):
        own = container_resources(c, field)
        if c.get("restartPolicy") == "Always":
            _add_into(total, own)
            _add_into(sidecars, own)
            running = dict(sidecars)
        else:
            running = dict(own)
            _add_into(running, sidecars)
        _max_into(init_peak, running)
    _max_into(total, init_peak)
    return total


def pod_requests(spec: Mapping[str, Any]) -> ResourceList:
    """The pod's effective requests, overhead included."""
    total = containers_total(spec, "requests")
    _add_into(total, parse_list(spec.get("overhead")))
    return total


def pod_limits(spec: Mapping[str, Any]) -> ResourceList:
    """The pod's effective limits; overhead counts only towards resources that have a limit."""
    total = containers_total(spec, "limits")
    for k, v in parse_list(spec.get("overhead")).items():
        if k in total:
            total[k] = plus(total[k], v)
    return total


def is_best_effort(spec: Mapping[str, Any]) -> bool:
    """No container asks for or is limited in cpu or memory (ComputePodQOS == BestEffort)."""
    for c in dicts(spec.get("containers")) + dicts(spec.get("initContainers")):
        for field in ("requests", "limits"):
            for k, v in container_resources(c, field).items():
                if k in ("cpu", "memory") and v.value > 0:
                    return False
    return True


# --- evaluators (k8s.io/kubernetes/pkg/quota/v1/evaluator/core and apiserver's generic) ------------------------


class Evaluator:
    """Measures one resource for quota: which quota names it serves, what an object uses, which scopes it matches."""

    group = ""
    resource = ""
    operations: tuple[str, ...] = ("CREATE",)

    def handles(self, operation: str) -> bool:
        return operation in self.operations

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        raise NotImplementedError

    def usage(self, obj: Mapping[str, Any], now: datetime.datetime) -> ResourceList:
        raise NotImplementedError

    def matches_scope(self, selector: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
        # Only pods know scopes: a scoped quota never covers other objects.
        return False

    def constraints(self, required: Iterable[str], obj: Mapping[str, Any]) -> str:
        """Why the object cannot be charged to a quota tracking `required` ("" when it can)."""
        return ""

    def replenishes(self, old: Mapping[str, Any], new: Mapping[str, Any], now: datetime.datetime) -> bool:
        """Whether an update may have released usage (the quota controller then recalculates)."""
        return False


class CountEvaluator(Evaluator):
    """Object count of any resource (count/<resource>.<group>), plus the legacy bare name for a few core kinds."""

    def __init__(self, group: str, resource: str, alias: str = "") -> None:
        self.group, self.resource = group, resource
        self.names = [count_name(group, resource)] + ([alias] if alias else [])

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return sorted(set(names) & set(self.names))

    def usage(self, obj: Mapping[str, Any], now: datetime.datetime) -> ResourceList:
        return {n: ONE for n in self.names}


POD_RESOURCES = frozenset({
    "count/pods", "cpu", "memory", "ephemeral-storage", "requests.cpu", "requests.memory",
    "requests.ephemeral-storage", "limits.cpu", "limits.memory", "limits.ephemeral-storage", "pods",
})
# Tracking any of these made requests/limits mandatory on every container: a historical mistake kube keeps.
_VALIDATION_SET = frozenset({"cpu", "memory", "requests.cpu", "requests.memory", "limits.cpu", "limits.memory"})
_QUALIFIED = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


def is_native(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def is_extended(name: str) -> bool:
    """An extended resource (example.com/dongle) that a quota can track as requests.<name>."""
    if is_native(name) or name.startswith("requests."):
        return False
    prefix, _, short = ("requests." + name).rpartition("/")
    return bool(short) and len(short) <= 63 and bool(_QUALIFIED.match(short)) and bool(prefix)


def _compute_usage(requests: Mapping[str, Quantity], limits: Mapping[str, Quantity]) -> ResourceList:
    out: ResourceList = {"pods": ONE}
    for name in ("cpu", "memory", "ephemeral-storage"):
        if name in requests:
            out[name] = requests[name]
            out[f"requests.{name}"] = requests[name]
        if name in limits:
            out[f"limits.{name}"] = limits[name]
    for name, q in requests.items():
        if name.startswith("hugepages-"):
            out[name] = q
            out[f"requests.{name}"] = q
        if is_extended(name):
            out[f"requests.{name}"] = q
    return out


def pod_is_charged(pod: Mapping[str, Any], now: datetime.datetime) -> bool:
    """Terminal pods, and pods whose deletion grace ran out, use no compute quota (QuotaV1Pod)."""
    if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
        return False
    meta = pod.get("metadata") or {}
    stamp, grace = meta.get("deletionTimestamp"), meta.get("deletionGracePeriodSeconds")
    if stamp and isinstance(grace, int):
        try:
            deleted = clock_mod.parse_time(stamp)
        except ValueError:
            return True
        if now > deleted + datetime.timedelta(seconds=grace):
            return False
    return True


def _scope_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    key, op = selector.get("scopeName") or "", selector.get("operator") or ""
    values = selector.get("values") or []
    if op == "In":
        return bool(values) and key in labels and labels[key] in values
    if op == "NotIn":
        return bool(values) and (key not in labels or labels[key] not in values)
    if op == "Exists":
        return key in labels
    if op == "DoesNotExist":
        return key not in labels
    return False


def _cross_namespace_affinity(spec: Mapping[str, Any]) -> bool:
    affinity = spec.get("affinity") or {}
    for kind in ("podAffinity", "podAntiAffinity"):
        a = affinity.get(kind) or {}
        terms = dicts(a.get("requiredDuringSchedulingIgnoredDuringExecution"))
        terms += [t.get("podAffinityTerm") or {} for t in dicts(a.get("preferredDuringSchedulingIgnoredDuringExecution"))]
        if any(t.get("namespaces") or t.get("namespaceSelector") is not None for t in terms):
            return True
    return False


class PodEvaluator(Evaluator):
    """pods: count, compute requests and limits, hugepages, extended resources; the pod scopes."""

    resource = "pods"

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return sorted({n for n in names if n in POD_RESOURCES or n.startswith(("hugepages-", "requests.hugepages-"))
                       or (not is_native(n) and n.startswith("requests."))})

    def usage(self, obj: Mapping[str, Any], now: datetime.datetime) -> ResourceList:
        out: ResourceList = {"count/pods": ONE}
        if not pod_is_charged(obj, now):
            return out
        spec = obj.get("spec") or {}
        return add(out, _compute_usage(pod_requests(spec), pod_limits(spec)))

    def matches_scope(self, selector: Mapping[str, Any], obj: Mapping[str, Any]) -> bool:
        spec = obj.get("spec") or {}
        scope = selector.get("scopeName")
        if scope in ("Terminating", "NotTerminating"):
            ads = spec.get("activeDeadlineSeconds")
            terminating = isinstance(ads, int) and not isinstance(ads, bool) and ads >= 0
            return terminating == (scope == "Terminating")
        if scope in ("BestEffort", "NotBestEffort"):
            return is_best_effort(spec) == (scope == "BestEffort")
        if scope == "PriorityClass":
            pc = spec.get("priorityClassName") or ""
            if selector.get("operator") == "Exists":
                return bool(pc)
            return _scope_selector_matches(selector, {"PriorityClass": pc} if pc else {})
        if scope == "CrossNamespacePodAffinity":
            return _cross_namespace_affinity(spec)
        return False

    def constraints(self, required: Iterable[str], obj: Mapping[str, Any]) -> str:
        need = set(required) & _VALIDATION_SET
        if not need:
            return ""
        spec = obj.get("spec") or {}
        missing: dict[str, set[str]] = {}
        for c in dicts(spec.get("containers")) + dicts(spec.get("initContainers")):
            have = _compute_usage(container_resources(c, "requests"), container_resources(c, "limits"))
            for name in need - have.keys():
                missing.setdefault(name, set()).add(str(c.get("name") or ""))
        if not missing:
            return ""
        return "must specify " + "; ".join(f"{r} for: {','.join(sorted(missing[r]))}" for r in sorted(missing))

    def replenishes(self, old: Mapping[str, Any], new: Mapping[str, Any], now: datetime.datetime) -> bool:
        return pod_is_charged(old, now) and not pod_is_charged(new, now)


def _service_quota_type(svc: Mapping[str, Any]) -> str:
    t = (svc.get("spec") or {}).get("type") or "ClusterIP"
    return t if t in ("NodePort", "LoadBalancer") else ""


class ServiceEvaluator(Evaluator):
    """services: count, node ports and load balancers."""

    resource = "services"
    operations = ("CREATE", "UPDATE")
    names = frozenset({"count/services", "services", "services.nodeports", "services.loadbalancers"})

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        return sorted(set(names) & self.names)

    def usage(self, obj: Mapping[str, Any], now: datetime.datetime) -> ResourceList:
        spec = obj.get("spec") or {}
        ports = dicts(spec.get("ports"))
        out: ResourceList = {"count/services": ONE, "services": ONE,
                             "services.loadbalancers": ZERO, "services.nodeports": ZERO}
        kind = spec.get("type") or "ClusterIP"
        if kind == "NodePort":
            out["services.nodeports"] = Quantity(Fraction(len(ports)))
        elif kind == "LoadBalancer":
            if spec.get("allocateLoadBalancerNodePorts") is False:
                out["services.nodeports"] = Quantity(Fraction(sum(1 for p in ports if p.get("nodePort"))))
            else:
                out["services.nodeports"] = Quantity(Fraction(len(ports)))
            out["services.loadbalancers"] = ONE
        return out

    def replenishes(self, old: Mapping[str, Any], new: Mapping[str, Any], now: datetime.datetime) -> bool:
        return _service_quota_type(old) != _service_quota_type(new)


_STORAGE_CLASS_SUFFIX = ".storageclass.storage.k8s.io/"
_PVC_RESOURCES = ("persistentvolumeclaims", "count/persistentvolumeclaims", "requests.storage")


def storage_class_of(pvc: Mapping[str, Any]) -> str:
    """The claim's class: the beta annotation wins over spec.storageClassName."""
    ann = ((pvc.get("metadata") or {}).get("annotations") or {}).get("volume.beta.kubernetes.io/storage-class")
    if ann:
        return str(ann)
    return str((pvc.get("spec") or {}).get("storageClassName") or "")


def _whole_bytes(q: Quantity) -> Quantity:
    # Storage is counted in whole bytes (kube rounds fractional requests up).
    if q.value.denominator == 1:
        return q
    return Quantity(Fraction(-(-q.value.numerator // q.value.denominator)), q.format)


class PVCEvaluator(Evaluator):
    """persistentvolumeclaims: count and requested storage, overall and per storage class."""

    resource = "persistentvolumeclaims"
    operations = ("CREATE", "UPDATE")

    def matching_resources(self, names: Iterable[str]) -> list[str]:
        out = set()
        for n in names:
            if n in _PVC_RESOURCES or any(n.endswith(_STORAGE_CLASS_SUFFIX + r) for r in _PVC_RESOURCES):
                out.add(n)
        return sorted(out)

    def usage(self, obj: Mapping[str, Any], now: datetime.datetime) -> ResourceList:
        out: ResourceList = {"persistentvolumeclaims": ONE, "count/persistentvolumeclaims": ONE}
        sc = storage_class_of(obj)
        if sc:
            out[sc + _STORAGE_CLASS_SUFFIX + "persistentvolumeclaims"] = ONE
        storage = self._storage(obj)
        if storage is not None:
            out["requests.storage"] = storage
            if sc:
                out[sc + _STORAGE_CLASS_SUFFIX + "requests.storage"] = storage
        return out

    @staticmethod
    def _storage(pvc: Mapping[str, Any]) -> Quantity | None:
        requested = parse_list(((pvc.get("spec") or {}).get("resources") or {}).get("requests")).get("storage")
        if requested is None:
            return None
        requested = _whole_bytes(requested)
        # RecoverVolumeExpansionFailure (beta, on in 1.32): a larger allocation is what the claim holds.
        allocated = parse_list((pvc.get("status") or {}).get("allocatedResources")).get("storage")
        if allocated is not None and allocated.value > requested.value:
            return _whole_bytes(allocated)
        return requested

    def replenishes(self, old: Mapping[str, Any], new: Mapping[str, Any], now: datetime.datetime) -> bool:
        def allocated(o: Mapping[str, Any]) -> Fraction | None:
            q = parse_list((o.get("status") or {}).get("allocatedResources")).get("storage")
            return q.value if q is not None else None
        return allocated(old) != allocated(new)


LEGACY_ALIASES = {"configmaps": "configmaps", "resourcequotas": "resourcequotas",
                  "replicationcontrollers": "replicationcontrollers", "secrets": "secrets"}
# Not quota-able at all (kube's default ignored resources).
IGNORED = frozenset({("", "events"), ("events.k8s.io", "events")})
_POD, _SERVICE, _PVC = PodEvaluator(), ServiceEvaluator(), PVCEvaluator()
_CORE = {("", "pods"): _POD, ("", "services"): _SERVICE, ("", "persistentvolumeclaims"): _PVC}
_cache: dict[tuple[str, str], Evaluator] = {}


def evaluator_for(group: str, resource: str) -> Evaluator | None:
    """The evaluator of a resource: a specific one for pods, services and claims, an object count otherwise."""
    key = (group, resource)
    if key in IGNORED or not resource:
        return None
    found = _CORE.get(key) or _cache.get(key)
    if found is None:
        alias = LEGACY_ALIASES.get(resource, "") if not group else ""
        found = _cache[key] = CountEvaluator(group, resource, alias)
    return found


def evaluators_for_names(names: Iterable[str]) -> list[Evaluator]:
    """The evaluators a quota tracking these resource names needs to measure usage."""
    names = list(names)
    keys: list[tuple[str, str]] = [k for k, ev in _CORE.items() if ev.matching_resources(names)]
    for res in LEGACY_ALIASES:
        if res in names:
            keys.append(("", res))
    for n in names:
        parsed = parse_count_name(n)
        if parsed is not None:
            keys.append(parsed)
    out: list[Evaluator] = []
    for group, resource in dict.fromkeys(keys):
        ev = evaluator_for(group, resource)
        if ev is not None and ev not in out:
            out.append(ev)
    return out


# --- quotas: scopes, usage calculation, admission ---------------------------------------------------------------


def scope_selectors(q: Mapping[str, Any]) -> list[dict[str, Any]]:
    """spec.scopes (as Exists requirements) followed by spec.scopeSelector's expressions."""
    spec = q.get("spec") or {}
    out: list[dict[str, Any]] = [{"scopeName": s, "operator": "Exists"} for s in spec.get("scopes") or []
                                 if isinstance(s, str)]
    out += dicts((spec.get("scopeSelector") or {}).get("matchExpressions"))
    return out


def matches_scopes(ev: Evaluator, q: Mapping[str, Any], *, obj: Mapping[str, Any]) -> bool:
    return all(ev.matches_scope(s, obj) for s in scope_selectors(q))


def covers(ev: Evaluator, q: Mapping[str, Any], *, obj: Mapping[str, Any]) -> bool:
    """The quota's enforced (status) hard limits name something ev measures, and its scopes select obj."""
    hard = parse_list((q.get("status") or {}).get("hard"))
    return bool(ev.matching_resources(hard)) and matches_scopes(ev, q, obj=obj)


def calculate_usage(q: Mapping[str, Any], objects: Mapping[Evaluator, Iterable[Mapping[str, Any]]], *,
                    now: datetime.datetime) -> ResourceList:
    """Usage of the quota's spec.hard resources by the objects (grouped by evaluator) its scopes select."""
    hard = list(parse_list((q.get("spec") or {}).get("hard")))
    matched: set[str] = set()
    usage: ResourceList = {}
    for ev, items in objects.items():
        tracked = ev.matching_resources(hard)
        if not tracked:
            continue
        matched.update(tracked)
        # Every tracked resource shows, at zero when nothing uses it.
        stats: ResourceList = {r: Quantity(Fraction(0)) for r in tracked}
        for item in items:
            if matches_scopes(ev, q, obj=item):
                stats = add(stats, ev.usage(item, now))
        usage = add(usage, stats)
    return mask(usage, matched)


def sync_status(q: Mapping[str, Any], objects: Mapping[Evaluator, Iterable[Mapping[str, Any]]], *,
                now: datetime.datetime) -> dict[str, Any] | None:
    """The status the quota controller writes (hard from spec, used recalculated), or None when unchanged."""
    spec_hard = parse_list((q.get("spec") or {}).get("hard"))
    status = q.get("status") or {}
    old_hard, old_used = status.get("hard"), status.get("used")
    dirty = old_hard is None or old_used is None or not equals(spec_hard, parse_list(old_hard))
    used = parse_list(old_used)
    used.update(calculate_usage(q, objects, now=now))
    used = mask(used, spec_hard)
    dirty = dirty or not equals(used, parse_list(old_used))
    if not dirty:
        return None
    return {"hard": to_json(spec_hard), "used": to_json(used)}


class Rejected(Exception):
    """The request does not fit a quota; the message follows `<resource> "<name>" is forbidden: `."""


def check_request(quotas: list[dict[str, Any]], ev: Evaluator, *, obj: Mapping[str, Any], old: Mapping[str, Any] | None,
                  operation: str, now: datetime.datetime) -> dict[str, ResourceList]:
    """New status.used of every quota the request charges, by quota name; raises Rejected (kube's CheckRequest)."""
    if not ev.handles(operation):
        return {}
    interesting: list[dict[str, Any]] = []
    for q in quotas:
        name = (q.get("metadata") or {}).get("name", "")
        if not covers(ev, q, obj=obj):
            continue
        hard = parse_list((q.get("status") or {}).get("hard"))
        restricted = ev.matching_resources(hard)
        why = ev.constraints(restricted, obj)
        if why:
            raise Rejected(f"failed quota: {name}: {why}")
        used = parse_list((q.get("status") or {}).get("used"))
        if any(r not in used for r in restricted):
            raise Rejected(f"status unknown for quota: {name}, resources: {','.join(sorted(restricted))}")
        interesting.append(q)
    if not interesting:
        return {}
    usage = ev.usage(obj, now)
    bad = negative(usage)
    if bad:
        raise Rejected(f"quota usage is negative for resource(s): {','.join(bad)}")
    deltas: dict[str, ResourceList] = {}
    for q in interesting:
        delta = usage
        if operation == "UPDATE" and old is not None and (old.get("metadata") or {}).get("resourceVersion") \
                and matches_scopes(ev, q, obj=old):
            delta = subtract_non_negative(usage, ev.usage(old, now))
        delta = remove_zeros(delta)
        if delta:
            deltas[q["metadata"]["name"]] = delta
    out: dict[str, ResourceList] = {}
    for q in interesting:
        name = q["metadata"]["name"]
        if name not in deltas:
            continue
        status = q.get("status") or {}
        hard, used = parse_list(status.get("hard")), parse_list(status.get("used"))
        requested = mask(deltas[name], hard)
        new_used = add(used, requested)
        exceeded = less_than_or_equal(mask(new_used, requested), hard)
        if exceeded:
            raise Rejected(f"exceeded quota: {name}, requested: {pretty(mask(requested, exceeded))}, "
                           f"used: {pretty(mask(used, exceeded))}, limited: {pretty(mask(hard, exceeded))}")
        if not equals(new_used, used):
            out[name] = new_used
    return out
