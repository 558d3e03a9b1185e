"""Object and pod predicates every workload controller shares: metadata, timestamps, phase, readiness, taints."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from typing import Any

from pocketkube.base import clock as clock_mod


def meta(obj: dict[str, Any]) -> dict[str, Any]:
    """The object's metadata ({} when absent)."""
    return obj.get("metadata") or {}


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp field, or None when it is missing or malformed."""
    if not value or not isinstance(value, str):
        return None
    try:
        return clock_mod.parse_time(value)
    except ValueError:
        return None


def resource_version(obj: dict[str, Any]) -> int:
    """metadata.resourceVersion as a number (0 when absent or not numeric), to tell newer copies apart."""
    value = str(meta(obj).get("resourceVersion") or "0")
    return int(value) if value.isdigit() else 0


# The pods-by-node index of the shared pod informer (kube's controllers keep the same one, "spec.nodeName").
NODE_NAME_INDEX = "spec.nodeName"


def node_name_index(pod: dict[str, Any]) -> list[str]:
    """IndexFunc filing a pod under the node it is bound to (unbound pods under nothing)."""
    name = (pod.get("spec") or {}).get("nodeName")
    return [name] if isinstance(name, str) and name else []


def phase(pod: dict[str, Any]) -> str:
    return str((pod.get("status") or {}).get("phase") or "")


def is_terminal(pod: dict[str, Any]) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def is_active(pod: dict[str, Any]) -> bool:
    """controller.IsPodActive: not Succeeded/Failed and not being deleted."""
    return not is_terminal(pod) and not meta(pod).get("deletionTimestamp")


def ready_condition(pod: dict[str, Any]) -> dict[str, Any] | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if isinstance(c, dict) and c.get("type") == "Ready":
            return c
    return None


def is_ready(pod: dict[str, Any]) -> bool:
    """podutil.IsPodReady: the Ready condition is True."""
    c = ready_condition(pod)
    return c is not None and c.get("status") == "True"


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Toleration.ToleratesTaint: effect and key match (empty matches all), Exists or Equal on the value."""
    if toleration.get("effect") and toleration.get("effect") != taint.get("effect"):
        return False
    if toleration.get("key") and toleration.get("key") != taint.get("key"):
        return False
    op = toleration.get("operator") or "Equal"
    if op == "Equal":
        return (toleration.get("value") or "") == (taint.get("value") or "")
    return op == "Exists"
