"""Conversion between API versions that share storage: HPA autoscaling/v1 <-> v2, Event core/v1 <-> events.k8s.io/v1."""

from __future__ import annotations

import copy
import json
from typing import Any

import orjson

from pocketkube.api import defaults_core

METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/metrics"
CURRENT_METRICS_ANNOTATION = "autoscaling.alpha.kubernetes.io/current-metrics"
CONDITIONS_ANNOTATION = "autoscaling.alpha.kubernetes.io/conditions"
BEHAVIOR_ANNOTATION = "autoscaling.alpha.kubernetes.io/behavior"
_ROUND_TRIP = (METRICS_ANNOTATION, CURRENT_METRICS_ANNOTATION, CONDITIONS_ANNOTATION, BEHAVIOR_ANNOTATION)


def _copy(obj: dict[str, Any]) -> dict[str, Any]:
    # A JSON round trip copies API objects in half copy.deepcopy's time; integers beyond 64 bits need the latter.
    try:
        out: dict[str, Any] = orjson.loads(orjson.dumps(obj))
    except TypeError:
        out = copy.deepcopy(obj)
    return out


def convert(obj: dict[str, Any], to_api_version: str) -> dict[str, Any]:
    """obj expressed in to_api_version; a deep copy, never the input. Unrelated kinds only get apiVersion set."""
    out = _copy(obj)
    src = str(obj.get("apiVersion") or "")
    kind = obj.get("kind")
    if src == to_api_version:
        return out
    if kind == "HorizontalPodAutoscaler" and {src, to_api_version} <= {"autoscaling/v1", "autoscaling/v2"}:
        return hpa_v1_to_v2(out) if to_api_version == "autoscaling/v2" else hpa_v2_to_v1(out)
    if kind == "Event" and {src, to_api_version} <= {"v1", "events.k8s.io/v1"}:
        return event_core_to_events(out) if to_api_version == "events.k8s.io/v1" else event_events_to_core(out)
    out["apiVersion"] = to_api_version
    return out


def _compact(v: Any) -> str:
    # Go's encoding/json: no spaces, struct field order (our dicts are built in that order).
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    if value is not None:
        d[key] = value


# --- HPA metrics: v2 MetricSpec <-> the autoscaling/v1 (v2beta1-shaped) MetricSpec kept in annotations ---

def _metric_v2_to_v1(m: dict[str, Any]) -> dict[str, Any]:
    typ = m.get("type")
    out: dict[str, Any] = {"type": typ}
    if typ == "Object" and isinstance(m.get("object"), dict):
        o, t = m["object"], m["object"].get("target") or {}
        src: dict[str, Any] = {"target": o.get("describedObject") or {},
                               "metricName": (o.get("metric") or {}).get("name", "")}
        _put(src, "targetValue", t.get("value"))
        _put(src, "selector", (o.get("metric") or {}).get("selector"))
        _put(src, "averageValue", t.get("averageValue"))
        if "targetValue" not in src:
            src["targetValue"] = "0"
        out["object"] = src
    elif typ == "Pods" and isinstance(m.get("pods"), dict):
        p, t = m["pods"], m["pods"].get("target") or {}
        src = {"metricName": (p.get("metric") or {}).get("name", ""), "targetAverageValue": t.get("averageValue", "0")}
        _put(src, "selector", (p.get("metric") or {}).get("selector"))
        out["pods"] = src
    elif typ in ("Resource", "ContainerResource"):
        key = "resource" if typ == "Resource" else "containerResource"
        r = m.get(key) or {}
        t = r.get("target") or {}
        src = {"name": r.get("name", "")}
        _put(src, "targetAverageUtilization", t.get("averageUtilization"))
        _put(src, "targetAverageValue", t.get("averageValue"))
        if typ == "ContainerResource":
            src["container"] = r.get("container", "")
        out[key] = src
    elif typ == "External" and isinstance(m.get("external"), dict):
        e, t = m["external"], m["external"].get("target") or {}
        src = {"metricName": (e.get("metric") or {}).get("name", "")}
        _put(src, "metricSelector", (e.get("metric") or {}).get("selector"))
        _put(src, "targetValue", t.get("value"))
        _put(src, "targetAverageValue", t.get("averageValue"))
        out["external"] = src
    return out


def _metric_v1_to_v2(m: dict[str, Any]) -> dict[str, Any]:
    typ = m.get("type")
    out: dict[str, Any] = {"type": typ}
    if typ == "Object" and isinstance(m.get("object"), dict):
        o = m["object"]
        metric: dict[str, Any] = {"name": o.get("metricName", "")}
        _put(metric, "selector", o.get("selector"))
        target: dict[str, Any] = {}
        if o.get("averageValue") is not None:
            target = {"type": "AverageValue", "averageValue": o["averageValue"]}
        else:
            target = {"type": "Value", "value": o.get("targetValue", "0")}
        out["object"] = {"describedObject": o.get("target") or {}, "target": target, "metric": metric}
    elif typ == "Pods" and isinstance(m.get("pods"), dict):
        p = m["pods"]
        metric = {"name": p.get("metricName", "")}
        _put(metric, "selector", p.get("selector"))
        out["pods"] = {"metric": metric, "target": {"type": "AverageValue",
                                                    "averageValue": p.get("targetAverageValue", "0")}}
    elif typ in ("Resource", "ContainerResource"):
        key = "resource" if typ == "Resource" else "containerResource"
        r = m.get(key) or {}
        if r.get("targetAverageUtilization") is not None:
            target = {"type": "Utilization", "averageUtilization": r["targetAverageUtilization"]}
        else:
            target = {"type": "AverageValue"}
            _put(target, "averageValue", r.get("targetAverageValue"))
        src = {"name": r.get("name", ""), "target": target}
        if typ == "ContainerResource":
            src["container"] = r.get("container", "")
        out[key] = src
    elif typ == "External" and isinstance(m.get("external"), dict):
        e = m["external"]
        metric = {"name": e.get("metricName", "")}
        _put(metric, "selector", e.get("metricSelector"))
        if e.get("targetValue") is not None:
            target = {"type": "Value", "value": e["targetValue"]}
        else:
            target = {"type": "AverageValue"}
            _put(target, "averageValue", e.get("targetAverageValue"))
        out["external"] = {"metric": metric, "target": target}
    return out


def _status_v2_to_v1(m: dict[str, Any]) -> dict[str, Any]:
    typ = m.get("type")
    out: dict[str, Any] = {"type": typ}
    if typ in ("Resource", "ContainerResource"):
        key = "resource" if typ == "Resource" else "containerResource"
        r = m.get(key) or {}
        cur = r.get("current") or {}
        src: dict[str, Any] = {"name": r.get("name", "")}
        _put(src, "currentAverageUtilization", cur.get("averageUtilization"))
        src["currentAverageValue"] = cur.get("averageValue", "0")
        if typ == "ContainerResource":
            src["container"] = r.get("container", "")
        out[key] = src
    elif typ == "Pods":
        p = m.get("pods") or {}
        src = {"metricName": (p.get("metric") or {}).get("name", ""),
               "currentAverageValue": (p.get("current") or {}).get("averageValue", "0")}
        _put(src, "selector", (p.get("metric") or {}).get("selector"))
        out["pods"] = src
    elif typ == "Object":
        o = m.get("object") or {}
        cur = o.get("current") or {}
        src = {"target": o.get("describedObject") or {}, "metricName": (o.get("metric") or {}).get("name", ""),
               "currentValue": cur.get("value", "0")}
        _put(src, "selector", (o.get("metric") or {}).get("selector"))
        _put(src, "averageValue", cur.get("averageValue"))
        out["object"] = src
    elif typ == "External":
        e = m.get("external") or {}
        cur = e.get("current") or {}
        src = {"metricName": (e.get("metric") or {}).get("name", "")}
        _put(src, "metricSelector", (e.get("metric") or {}).get("selector"))
        src["currentValue"] = cur.get("value", "0")
        _put(src, "currentAverageValue", cur.get("averageValue"))
        out["external"] = src
    return out


def _status_v1_to_v2(m: dict[str, Any]) -> dict[str, Any]:
    typ = m.get("type")
    out: dict[str, Any] = {"type": typ}
    if typ in ("Resource", "ContainerResource"):
        key = "resource" if typ == "Resource" else "containerResource"
        r = m.get(key) or {}
        cur: dict[str, Any] = {}
        _put(cur, "averageValue", r.get("currentAverageValue"))
        _put(cur, "averageUtilization", r.get("currentAverageUtilization"))
        src: dict[str, Any] = {"name": r.get("name", ""), "current": cur}
        if typ == "ContainerResource":
            src["container"] = r.get("container", "")
        out[key] = src
    elif typ == "Pods":
        p = m.get("pods") or {}
        metric = {"name": p.get("metricName", "")}
        _put(metric, "selector", p.get("selector"))
        out["pods"] = {"metric": metric, "current": {"averageValue": p.get("currentAverageValue", "0")}}
    elif typ == "Object":
        o = m.get("object") or {}
        metric = {"name": o.get("metricName", "")}
        _put(metric, "selector", o.get("selector"))
        cur = {"value": o.get("currentValue", "0")}
        _put(cur, "averageValue", o.get("averageValue"))
        out["object"] = {"metric": metric, "current": cur, "describedObject": o.get("target") or {}}
    elif typ == "External":
        e = m.get("external") or {}
        metric = {"name": e.get("metricName", "")}
        _put(metric, "selector", e.get("metricSelector"))
        cur = {"value": e.get("currentValue", "0")}
        _put(cur, "averageValue", e.get("currentAverageValue"))
        out["external"] = {"metric": metric, "current": cur}
    return out


def _is_cpu_utilization(m: dict[str, Any]) -> bool:
    r = m.get("resource")
    return (m.get("type") == "Resource" and isinstance(r, dict) and r.get("name") == "cpu"
            and (r.get("target") or {}).get("averageUtilization") is not None)


# The behavior annotation holds Go's internal type, which has no json tags: keys are Go field names.
_BEHAVIOR_KEYS = {"scaleUp": "ScaleUp", "scaleDown": "ScaleDown", "stabilizationWindowSeconds":
                  "StabilizationWindowSeconds", "selectPolicy": "SelectPolicy", "policies": "Policies",
                  "type": "Type", "value": "Value", "periodSeconds": "PeriodSeconds"}
_BEHAVIOR_BACK = {v.lower(): k for k, v in _BEHAVIOR_KEYS.items()}


def _behavior_to_go(b: Any) -> Any:
    if isinstance(b, dict):
        return {_BEHAVIOR_KEYS.get(k, k): _behavior_to_go(v) for k, v in b.items()}
    if isinstance(b, list):
        return [_behavior_to_go(x) for x in b]
    return b


def _behavior_from_go(b: Any) -> Any:
    # Go's json.Unmarshal matches keys case-insensitively, which is what lets this annotation round-trip.
    if isinstance(b, dict):
        return {_BEHAVIOR_BACK.get(k.lower(), k): _behavior_from_go(v) for k, v in b.items() if v is not None}
    if isinstance(b, list):
        return [_behavior_from_go(x) for x in b]
    return b


def _dict_or_empty(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _annotations(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.setdefault("metadata", {})
    return meta.setdefault("annotations", {}) if isinstance(meta, dict) else {}


def _drop_round_trip(obj: dict[str, Any]) -> None:
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not isinstance(meta.get("annotations"), dict):
        return
    for key in _ROUND_TRIP:
        meta["annotations"].pop(key, None)
    if not meta["annotations"]:
        del meta["annotations"]


def hpa_v2_to_v1(obj: dict[str, Any]) -> dict[str, Any]:
    """autoscaling/v2 -> v1: the CPU utilization target becomes targetCPUUtilizationPercentage, the rest annotations."""
    spec = _dict_or_empty(obj.get("spec"))
    status = obj.get("status") if isinstance(obj.get("status"), dict) else None
    _drop_round_trip(obj)
    metrics = [m for m in spec.get("metrics") or [] if isinstance(m, dict)]
    other = [_metric_v2_to_v1(m) for m in metrics if not _is_cpu_utilization(m)]
    cpu = next((m for m in metrics if _is_cpu_utilization(m)), None)
    new_spec: dict[str, Any] = {"scaleTargetRef": spec.get("scaleTargetRef", {})}
    _put(new_spec, "minReplicas", spec.get("minReplicas"))
    new_spec["maxReplicas"] = spec.get("maxReplicas", 0)
    if cpu is not None:
        new_spec["targetCPUUtilizationPercentage"] = cpu["resource"]["target"]["averageUtilization"]
    obj["spec"] = new_spec
    if other:
        _annotations(obj)[METRICS_ANNOTATION] = _compact(other)
    current = [m for m in (status or {}).get("currentMetrics") or [] if isinstance(m, dict)]
    if current:
        _annotations(obj)[CURRENT_METRICS_ANNOTATION] = _compact([_status_v2_to_v1(m) for m in current])
    if isinstance(spec.get("behavior"), dict):
        _annotations(obj)[BEHAVIOR_ANNOTATION] = _compact(_behavior_to_go(spec["behavior"]))
    conditions = (status or {}).get("conditions") or []
    if conditions:
        _annotations(obj)[CONDITIONS_ANNOTATION] = _compact(conditions)
    if status is not None:
        new_status: dict[str, Any] = {}
        for key in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"):
            _put(new_status, key, status.get(key))
        new_status.setdefault("currentReplicas", 0)
        new_status.setdefault("desiredReplicas", 0)
        for m in current:
            r = m.get("resource")
            if m.get("type") == "Resource" and isinstance(r, dict) and r.get("name") == "cpu":
                util = (r.get("current") or {}).get("averageUtilization")
                if util is not None:
                    new_status["currentCPUUtilizationPercentage"] = util
        obj["status"] = new_status
    obj["apiVersion"] = "autoscaling/v1"
    return obj


def _load(annotations: dict[str, Any], key: str) -> Any:
    raw = annotations.get(key)
    if not isinstance(raw, str):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def hpa_v1_to_v2(obj: dict[str, Any]) -> dict[str, Any]:
    """autoscaling/v1 -> v2: metrics from targetCPUUtilizationPercentage and the round-trip annotations."""
    spec = _dict_or_empty(obj.get("spec"))
    status = obj.get("status") if isinstance(obj.get("status"), dict) else None
    meta = _dict_or_empty(obj.get("metadata"))
    ann = _dict_or_empty(meta.get("annotations"))
    metrics: list[dict[str, Any]] = []
    for m in _load(ann, METRICS_ANNOTATION) or []:
        if isinstance(m, dict):
            metrics.append(_metric_v1_to_v2(m))
    cpu = spec.get("targetCPUUtilizationPercentage")
    if cpu is not None:
        metrics.append({"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": cpu}}})
    if not metrics:
        # autoscaling/v1 always meant 80% CPU when nothing else was said.
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": 80}}}]
    new_spec: dict[str, Any] = {"scaleTargetRef": spec.get("scaleTargetRef", {})}
    _put(new_spec, "minReplicas", spec.get("minReplicas"))
    new_spec["maxReplicas"] = spec.get("maxReplicas", 0)
    new_spec["metrics"] = metrics
    behavior = _load(ann, BEHAVIOR_ANNOTATION)
    if isinstance(behavior, dict):
        new_spec["behavior"] = _behavior_from_go(behavior)
    obj["spec"] = new_spec
    if status is not None or ann.get(CONDITIONS_ANNOTATION) or ann.get(CURRENT_METRICS_ANNOTATION):
        st = status or {}
        new_status: dict[str, Any] = {}
        for key in ("observedGeneration", "lastScaleTime", "currentReplicas", "desiredReplicas"):
            _put(new_status, key, st.get(key))
        current = _load(ann, CURRENT_METRICS_ANNOTATION)
        if isinstance(current, list):
            new_status["currentMetrics"] = [_status_v1_to_v2(m) for m in current if isinstance(m, dict)]
        elif st.get("currentCPUUtilizationPercentage") is not None:
            new_status["currentMetrics"] = [{"type": "Resource", "resource": {"name": "cpu", "current": {
                "averageUtilization": st["currentCPUUtilizationPercentage"]}}}]
        conditions = _load(ann, CONDITIONS_ANNOTATION)
        if isinstance(conditions, list):
            new_status["conditions"] = conditions
        # Go writes v2's desiredReplicas and currentMetrics even when zero/nil (no omitempty);
        # currentReplicas has omitempty in v2.
        if new_status.get("currentReplicas") == 0:
            del new_status["currentReplicas"]
        new_status.setdefault("desiredReplicas", 0)
        new_status.setdefault("currentMetrics", None)
        obj["status"] = new_status
    _drop_round_trip(obj)
    obj["apiVersion"] = "autoscaling/v2"
    return obj


# --- Event ------------------------------------------------------------------------------------

# (core/v1 name, events.k8s.io/v1 name) for the fields that are renamed; the rest keep their names.
_EVENT_RENAMES = (
    ("involvedObject", "regarding"),
    ("source", "deprecatedSource"),
    ("message", "note"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
    ("reportingComponent", "reportingController"),
)
_EVENTS_V1_ORDER = ("kind", "apiVersion", "metadata", "eventTime", "series", "reportingController",
                    "reportingInstance", "action", "reason", "regarding", "related", "note", "type",
                    "deprecatedSource", "deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount")
_CORE_ORDER = ("kind", "apiVersion", "metadata", "involvedObject", "reason", "message", "source", "firstTimestamp",
               "lastTimestamp", "count", "type", "eventTime", "series", "action", "related", "reportingComponent",
               "reportingInstance")


def _ordered(obj: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    out = {k: obj[k] for k in order if k in obj}
    out.update({k: v for k, v in obj.items() if k not in out})
    return out


def event_core_to_events(obj: dict[str, Any]) -> dict[str, Any]:
    for core_name, new_name in _EVENT_RENAMES:
        if core_name in obj:
            obj[new_name] = obj.pop(core_name)
    # Go prints these even when zero in events.k8s.io/v1: eventTime has no omitempty, structs always print.
    obj.setdefault("eventTime", None)
    obj.setdefault("regarding", {})
    obj.setdefault("deprecatedSource", {})
    for key in ("reportingController", "reportingInstance", "note", "action", "reason", "type"):
        if obj.get(key) == "":
            del obj[key]
    if not obj.get("deprecatedCount"):
        obj.pop("deprecatedCount", None)
    obj["apiVersion"] = "events.k8s.io/v1"
    return _ordered(obj, _EVENTS_V1_ORDER)


def event_events_to_core(obj: dict[str, Any]) -> dict[str, Any]:
    for core_name, new_name in _EVENT_RENAMES:
        if new_name in obj:
            obj[core_name] = obj.pop(new_name)
    defaults_core.event(obj)
    obj["apiVersion"] = "v1"
    return _ordered(obj, _CORE_ORDER)
