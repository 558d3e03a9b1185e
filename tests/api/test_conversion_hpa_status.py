"""Specification of the HPA v1 -> v2 status conversion's Go zero values (desiredReplicas, currentMetrics)."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import conversion


def _v1(status: dict[str, Any] | None) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
                           "metadata": {"name": "h"},
                           "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 3}}
    if status is not None:
        obj["status"] = status
    return obj


@pytest.mark.parametrize(("status", "want"), [
    ({}, {"currentMetrics": None, "desiredReplicas": 0}),
    ({"currentReplicas": 0, "desiredReplicas": 0}, {"currentMetrics": None, "desiredReplicas": 0}),
    ({"currentReplicas": 2, "desiredReplicas": 3}, {"currentReplicas": 2, "desiredReplicas": 3, "currentMetrics": None}),
    ({"currentReplicas": 1, "desiredReplicas": 1, "currentCPUUtilizationPercentage": 40},
     {"currentReplicas": 1, "desiredReplicas": 1, "currentMetrics": [
         {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 40}}}]}),
], ids=["empty", "zeros", "counts", "cpu"])
def test_v1_status_converts_to_v2_as_go_encodes_it(status: dict[str, Any], want: dict[str, Any]) -> None:
    """v2 always has desiredReplicas and currentMetrics (null when none); a zero currentReplicas is omitted."""
    assert conversion.convert(_v1(status), "autoscaling/v2")["status"] == want


def test_v1_without_status_gets_none() -> None:
    """An object with no status at all (as sent by a client) converts without inventing one."""
    assert "status" not in conversion.convert(_v1(None), "autoscaling/v2")
