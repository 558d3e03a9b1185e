"""The FlowSchemas and PriorityLevelConfigurations kube-apiserver 1.32 creates (mandatory + suggested)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import context
from pocketkube.base import clock as clock_mod

GROUP = "flowcontrol.apiserver.k8s.io"
API_VERSION = GROUP + "/v1"
_AUTOUPDATE = {"apf.kubernetes.io/autoupdate-spec": "true"}

_ALL_RESOURCES = {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"], "clusterScope": True, "namespaces": ["*"]}
_ALL_NON_RESOURCES = {"verbs": ["*"], "nonResourceURLs": ["*"]}
_LEASES = {"verbs": ["get", "create", "update"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
           "namespaces": ["*"]}


def _groups(*names: str) -> list[dict[str, Any]]:
    return [{"kind": "Group", "group": {"name": n}} for n in names]


def _users(*names: str) -> list[dict[str, Any]]:
    return [{"kind": "User", "user": {"name": n}} for n in names]


def _kube_system_sas(*names: str) -> list[dict[str, Any]]:
    return [{"kind": "ServiceAccount", "serviceAccount": {"namespace": "kube-system", "name": n}} for n in names]


def _everything(subjects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"subjects": subjects, "resourceRules": [dict(_ALL_RESOURCES)],
             "nonResourceRules": [dict(_ALL_NON_RESOURCES)]}]


def _schema(name: str, level: str, precedence: int, method: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    spec: dict[str, Any] = {"priorityLevelConfiguration": {"name": level}, "matchingPrecedence": precedence}
    if method:
        spec["distinguisherMethod"] = {"type": method}
    spec["rules"] = rules
    return {"apiVersion": API_VERSION, "kind": "FlowSchema",
            "metadata": {"name": name, "annotations": dict(_AUTOUPDATE)}, "spec": spec}


def _limited(name: str, shares: int, lendable: int, queuing: tuple[int, int, int] | None) -> dict[str, Any]:
    response: dict[str, Any] = {"type": "Reject"}
    if queuing is not None:
        response = {"type": "Queue", "queuing": {"queues": queuing[0], "handSize": queuing[1],
                                                 "queueLengthLimit": queuing[2]}}
    return {"apiVersion": API_VERSION, "kind": "PriorityLevelConfiguration",
            "metadata": {"name": name, "annotations": dict(_AUTOUPDATE)},
            "spec": {"type": "Limited", "limited": {"nominalConcurrencyShares": shares, "lendablePercent": lendable,
                                                    "limitResponse": response}}}


def priority_levels() -> list[dict[str, Any]]:
    """Fresh copies of the default PriorityLevelConfigurations."""
    exempt = {"apiVersion": API_VERSION, "kind": "PriorityLevelConfiguration",
              "metadata": {"name": "exempt", "annotations": dict(_AUTOUPDATE)},
              "spec": {"type": "Exempt", "exempt": {"nominalConcurrencyShares": 0, "lendablePercent": 0}}}
    return [
        exempt,
        _limited("catch-all", 5, 0, None),
        _limited("system", 30, 33, (64, 6, 50)),
        _limited("node-high", 40, 25, (64, 6, 50)),
        _limited("leader-election", 10, 0, (16, 4, 50)),
        _limited("workload-high", 40, 50, (128, 6, 50)),
        _limited("workload-low", 100, 90, (128, 6, 50)),
        _limited("global-default", 20, 50, (128, 6, 50)),
    ]


def flow_schemas() -> list[dict[str, Any]]:
    """Fresh copies of the default FlowSchemas."""
    anyone = ("system:unauthenticated", "system:authenticated")
    return [
        _schema("exempt", "exempt", 1, "", _everything(_groups("system:masters"))),
        _schema("probes", "exempt", 2, "", [{
            "subjects": _groups(*anyone),
            "nonResourceRules": [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/readyz", "/livez"]}]}]),
        _schema("system-leader-election", "leader-election", 100, "ByUser", [{
            "subjects": _users("system:kube-controller-manager", "system:kube-scheduler") + _kube_system_sas("*"),
            "resourceRules": [dict(_LEASES)]}]),
        _schema("endpoint-controller", "workload-high", 150, "ByUser", [{
            "subjects": _users("system:kube-controller-manager")
            + _kube_system_sas("endpoint-controller", "endpointslicemirroring-controller"),
            "resourceRules": [{"verbs": ["get", "create", "update"], "apiGroups": [""], "resources": ["endpoints"],
                               "namespaces": ["*"]}]}]),
        _schema("workload-leader-election", "leader-election", 200, "ByUser", [{
            "subjects": _kube_system_sas("*"), "resourceRules": [dict(_LEASES)]}]),
        _schema("system-node-high", "node-high", 400, "ByUser", [{
            "subjects": _groups("system:nodes"),
            "resourceRules": [{"verbs": ["*"], "apiGroups": [""], "resources": ["nodes", "nodes/status"],
                               "clusterScope": True, "namespaces": ["*"]},
                              {"verbs": ["*"], "apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
                               "namespaces": ["*"]}]}]),
        _schema("system-nodes", "system", 500, "ByUser", _everything(_groups("system:nodes"))),
        _schema("kube-controller-manager", "workload-high", 800, "ByNamespace",
                _everything(_users("system:kube-controller-manager"))),
        _schema("kube-scheduler", "workload-high", 800, "ByNamespace", _everything(_users("system:kube-scheduler"))),
        _schema("kube-system-service-accounts", "workload-high", 900, "ByNamespace",
                _everything(_kube_system_sas("*"))),
        _schema("service-accounts", "workload-low", 9000, "ByUser", _everything(_groups("system:serviceaccounts"))),
        _schema("global-default", "global-default", 9900, "ByUser", _everything(_groups(*anyone))),
        _schema("catch-all", "catch-all", 10000, "ByUser", _everything(_groups(*anyone))),
    ]


def _dangling_false(level: str, now: str) -> dict[str, Any]:
    # What kube's APF config controller writes once the referenced level exists.
    return {"conditions": [{
        "type": "Dangling", "status": "False", "lastTransitionTime": now, "reason": "Found",
        "message": f'This FlowSchema references the PriorityLevelConfiguration object named "{level}" and it exists'}]}


async def ensure(server: context.Server,
                 ensure_one: Callable[[context.Server, Any, dict[str, Any]], Awaitable[None]]) -> None:
    """Create missing defaults (levels first) and mark each FlowSchema's level as found, as kube does."""
    reg = server.registry
    pl_res = reg.get(GROUP, "v1", "prioritylevelconfigurations")
    fs_res = reg.get(GROUP, "v1", "flowschemas")
    if pl_res is None or fs_res is None:
        return
    # Independent writes go together so the store commits them in one batch.
    await asyncio.gather(*(ensure_one(server, pl_res, pl) for pl in priority_levels()))
    await asyncio.gather(*(ensure_one(server, fs_res, fs) for fs in flow_schemas()))
    now = clock_mod.rfc3339(server.clock.now())
    await asyncio.gather(*(_mark_found(server, fs_res, pl_res, fs, now) for fs in flow_schemas()))


async def _mark_found(server: context.Server, fs_res: Any, pl_res: Any, fs: dict[str, Any], now: str) -> None:
    stored = await server.objects.get_or_none(fs_res, "", fs["metadata"]["name"])
    if stored is None or (stored.get("status") or {}).get("conditions"):
        return
    level = fs["spec"]["priorityLevelConfiguration"]["name"]
    if await server.objects.get_or_none(pl_res, "", level) is None:
        return
    stored["status"] = _dangling_false(level, now)
    try:
        await server.objects.update(fs_res, stored, expected_revision=int(stored["metadata"]["resourceVersion"]))
    except errors.APIError:  # someone else wrote it meanwhile (a restart race): their status is as good
        pass
