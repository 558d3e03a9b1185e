"""Conversion between versions that share storage: HPA v1/v2 and Event core/events.k8s.io."""

import copy
import json

import pytest

from pocketkube.api import conversion

HPA_V2 = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "web", "namespace": "default", "annotations": {"keep": "me"}},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
        "minReplicas": 1, "maxReplicas": 5,
        "metrics": [
            {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue",
                                                                            "averageValue": "10"}}},
            {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                        "averageUtilization": 50}}},
        ],
        "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60, "selectPolicy": "Max",
                                   "policies": [{"type": "Percent", "value": 10, "periodSeconds": 60}]}},
    },
    "status": {
        "currentReplicas": 2, "desiredReplicas": 2,
        "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageValue": "100m", "averageUtilization": 40}}}],
        "conditions": [{"type": "AbleToScale", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z",
                        "reason": "ReadyForNewScale", "message": "ok"}],
    },
}


def test_hpa_v2_to_v1():
    """The CPU target becomes targetCPUUtilizationPercentage; other v2 data moves into the round-trip annotations."""
    v1 = conversion.convert(HPA_V2, "autoscaling/v1")
    assert v1["apiVersion"] == "autoscaling/v1"
    assert v1["spec"] == {"scaleTargetRef": HPA_V2["spec"]["scaleTargetRef"], "minReplicas": 1, "maxReplicas": 5,
                          "targetCPUUtilizationPercentage": 50}
    assert v1["status"] == {"currentReplicas": 2, "desiredReplicas": 2, "currentCPUUtilizationPercentage": 40}
    ann = v1["metadata"]["annotations"]
    assert ann["keep"] == "me"
    assert ann[conversion.METRICS_ANNOTATION] == (
        '[{"type":"Pods","pods":{"metricName":"qps","targetAverageValue":"10"}}]')
    assert ann[conversion.CURRENT_METRICS_ANNOTATION] == (
        '[{"type":"Resource","resource":{"name":"cpu","currentAverageUtilization":40,"currentAverageValue":"100m"}}]')
    assert ann[conversion.BEHAVIOR_ANNOTATION] == (
        '{"ScaleDown":{"StabilizationWindowSeconds":60,"SelectPolicy":"Max",'
        '"Policies":[{"Type":"Percent","Value":10,"PeriodSeconds":60}]}}')
    assert json.loads(ann[conversion.CONDITIONS_ANNOTATION]) == HPA_V2["status"]["conditions"]


def test_hpa_round_trip_is_lossless():
    """v2 -> v1 -> v2 gives back the original object (metric order: annotation metrics, then CPU)."""
    back = conversion.convert(conversion.convert(HPA_V2, "autoscaling/v1"), "autoscaling/v2")
    want = copy.deepcopy(HPA_V2)
    assert back == want


@pytest.mark.parametrize("spec,metrics", [
    ({"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 3}, [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                    "averageUtilization": 80}}}]),
    ({"scaleTargetRef": {"kind": "Deployment", "name": "w"}, "maxReplicas": 3,
      "targetCPUUtilizationPercentage": 70}, [
        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization",
                                                                    "averageUtilization": 70}}}]),
])
def test_hpa_v1_to_v2_cpu(spec, metrics):
    """A v1 HPA without a target means 80% CPU, as autoscaling/v1 always did."""
    v1 = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "w"}, "spec": spec}
    v2 = conversion.convert(v1, "autoscaling/v2")
    assert v2["spec"]["metrics"] == metrics
    assert "annotations" not in v2["metadata"]


CORE_EVENT = {
    "kind": "Event", "apiVersion": "v1",
    "metadata": {"name": "web.1", "namespace": "default"},
    "involvedObject": {"kind": "Pod", "namespace": "default", "name": "web", "apiVersion": "v1"},
    "reason": "Scheduled", "message": "Successfully assigned", "source": {"component": "default-scheduler"},
    "firstTimestamp": "2024-01-01T00:00:00Z", "lastTimestamp": "2024-01-01T00:00:05Z", "count": 2,
    "type": "Normal", "eventTime": None, "reportingComponent": "default-scheduler", "reportingInstance": "",
}


def test_event_core_to_events_v1():
    """Core fields map onto their events.k8s.io/v1 names."""
    ev = conversion.convert(CORE_EVENT, "events.k8s.io/v1")
    assert ev == {
        "kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": CORE_EVENT["metadata"], "eventTime": None,
        "reportingController": "default-scheduler", "reason": "Scheduled",
        "regarding": CORE_EVENT["involvedObject"], "note": "Successfully assigned", "type": "Normal",
        "deprecatedSource": {"component": "default-scheduler"},
        "deprecatedFirstTimestamp": "2024-01-01T00:00:00Z", "deprecatedLastTimestamp": "2024-01-01T00:00:05Z",
        "deprecatedCount": 2,
    }
    assert list(ev)[:4] == ["kind", "apiVersion", "metadata", "eventTime"]


def test_event_round_trip_and_zero_fields():
    """events.k8s.io -> core prints Go's zero fields; a round trip restores the core event."""
    ev = conversion.convert(CORE_EVENT, "events.k8s.io/v1")
    assert conversion.convert(ev, "v1") == CORE_EVENT
    minimal = conversion.convert({"kind": "Event", "apiVersion": "events.k8s.io/v1", "metadata": {"name": "e"},
                                  "eventTime": "2024-01-01T00:00:00.000000Z", "note": "n",
                                  "series": {"count": 3, "lastObservedTime": "2024-01-01T00:00:00.000000Z"}}, "v1")
    assert minimal["message"] == "n" and minimal["series"]["count"] == 3
    assert minimal["firstTimestamp"] is None and minimal["reportingComponent"] == ""
    assert minimal["involvedObject"] == {} and minimal["source"] == {}


def test_identity_and_no_mutation():
    """Unrelated kinds only change apiVersion, and inputs are never mutated."""
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 1}}
    snapshot = copy.deepcopy(obj)
    out = conversion.convert(obj, "apps/v1")
    assert out == obj and out is not obj
    conversion.convert(HPA_V2, "autoscaling/v1")
    conversion.convert(CORE_EVENT, "events.k8s.io/v1")
    assert obj == snapshot
    assert HPA_V2["metadata"]["annotations"] == {"keep": "me"}
