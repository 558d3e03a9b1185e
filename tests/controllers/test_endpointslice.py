"""EndpointSlice and Endpoints planning: which pods back a Service, on which ports, with which conditions."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.controllers import endpoints, endpoints_util, endpointslice, endpointslicemirroring


def _svc(**spec: Any) -> dict[str, Any]:
    base = {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]}
    return {"metadata": {"name": "web", "namespace": "ns", "uid": "s1", "creationTimestamp": "2026-01-01T00:00:00Z",
                         "labels": {"team": "a"}},
            "spec": {**base, **spec}}


def _pod(name: str, ip: str = "10.0.0.1", *, ready: bool = True, port: int = 8080, phase: str = "Running",
         deleting: bool = False, labels: dict[str, str] | None = None, node: str = "n1") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "uid": "u-" + name, "labels": labels or {"app": "web"}}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    return {"metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": port}]}]},
            "status": {"phase": phase, "podIP": ip, "podIPs": [{"ip": ip}] if ip else [],
                       "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


@pytest.mark.parametrize(("pod", "include_terminating", "want"), [
    (_pod("a"), False, True),
    (_pod("a", ip=""), False, False),
    (_pod("a", phase="Succeeded"), True, False),
    (_pod("a", phase="Failed"), True, False),
    (_pod("a", deleting=True), False, False),
    (_pod("a", deleting=True), True, True),
])
def test_should_include(pod: dict[str, Any], include_terminating: bool, want: bool) -> None:
    """Pods back a Service when they have an IP and are not terminal; deleting ones only where terminating counts."""
    assert endpoints_util.should_include(pod, include_terminating=include_terminating) is want


@pytest.mark.parametrize(("service_port", "want"), [
    ({"port": 80, "targetPort": "http"}, 8080),
    ({"port": 80, "targetPort": 9000}, 9000),
    ({"port": 80}, 80),
    ({"port": 80, "targetPort": "missing"}, None),
    ({"port": 80, "targetPort": "http", "protocol": "UDP"}, None),
])
def test_find_port(service_port: dict[str, Any], want: int | None) -> None:
    """Named target ports resolve against the pod's container ports of the same protocol; numbers pass through."""
    assert endpoints_util.find_port(_pod("a"), service_port) == want


def test_slice_conditions_follow_readiness_and_termination() -> None:
    """Ready pods are ready and serving; unready ones neither; deleting ones terminating and not ready."""
    pods = [_pod("a", "10.0.0.1"), _pod("b", "10.0.0.2", ready=False), _pod("c", "10.0.0.3", deleting=True)]
    [(ports, eps)] = endpointslice.desired(_svc(), pods, zones={"n1": "z1"})
    assert ports == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    got = {e["targetRef"]["name"]: e["conditions"] for e in eps}
    assert got == {"a": {"ready": True, "serving": True, "terminating": False},
                   "b": {"ready": False, "serving": False, "terminating": False},
                   "c": {"ready": False, "serving": True, "terminating": True}}
    assert eps[0]["addresses"] == ["10.0.0.1"] and eps[0]["nodeName"] == "n1" and eps[0]["zone"] == "z1"


def test_publish_not_ready_addresses_marks_everything_ready() -> None:
    """publishNotReadyAddresses makes every qualifying endpoint ready, as DNS for StatefulSet peers needs."""
    [(_, eps)] = endpointslice.desired(_svc(publishNotReadyAddresses=True), [_pod("b", ready=False)], zones={})
    assert eps[0]["conditions"]["ready"] is True


def test_placeholder_and_chunking() -> None:
    """No pods give one empty placeholder slice; many pods split into slices of at most the maximum."""
    assert endpointslice.desired(_svc(), [], zones={}) == [(None, [])]
    pods = [_pod(f"p{i:03d}", f"10.0.1.{i}") for i in range(1, 6)]
    slices = endpointslice.desired(_svc(), pods, zones={}, max_per_slice=2)
    assert [len(eps) for _, eps in slices] == [2, 2, 1]


def test_pods_with_different_ports_go_to_different_slices() -> None:
    """A named port resolving to different numbers on different pods yields one slice per port set."""
    slices = endpointslice.desired(_svc(), [_pod("a", port=8080), _pod("b", "10.0.0.2", port=9090)], zones={})
    assert sorted(p[0]["port"] for p, _ in slices if p) == [8080, 9090]


def test_plan_creates_then_leaves_an_unchanged_slice_alone() -> None:
    """The first plan creates an owned, labelled slice; planning against it changes nothing; no pods: a placeholder."""
    svc = _svc(clusterIP="None")
    creates, updates, deletes = endpointslice.plan(svc, [_pod("a")], [], zones={}, trigger="t")
    assert not updates and not deletes and len(creates) == 1
    made = creates[0]
    assert made["metadata"]["generateName"] == "web-"
    assert made["metadata"]["labels"] == {"team": "a", "service.kubernetes.io/headless": "",
                                          "kubernetes.io/service-name": "web",
                                          "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}
    assert made["metadata"]["ownerReferences"][0]["uid"] == "s1"
    existing = dict(made, metadata=dict(made["metadata"], name="web-abcde"))
    assert endpointslice.plan(svc, [_pod("a")], [existing], zones={}, trigger="t2") == ([], [], [])
    creates, updates, deletes = endpointslice.plan(svc, [], [existing], zones={}, trigger="t3")
    assert updates == [] and deletes == [existing]
    assert [(c["endpoints"], c["ports"]) for c in creates] == [([], None)]
    placeholder = dict(creates[0], metadata=dict(creates[0]["metadata"], name="web-fghij"))
    assert endpointslice.plan(svc, [], [placeholder], zones={}, trigger="t4") == ([], [], [])


def test_endpoints_subsets_split_ready_and_not_ready() -> None:
    """Endpoints put ready pods under addresses and unready ones under notReadyAddresses, sorted by IP."""
    pods = [_pod("b", "10.0.0.10"), _pod("a", "10.0.0.9"), _pod("c", "10.0.0.2", ready=False),
            _pod("d", "10.0.0.3", deleting=True), _pod("x", "10.0.0.4", labels={"app": "other"})]
    [subset] = endpoints.subsets(_svc(), pods)
    assert [a["ip"] for a in subset["addresses"]] == ["10.0.0.9", "10.0.0.10"]
    assert [a["ip"] for a in subset["notReadyAddresses"]] == ["10.0.0.2"]
    assert subset["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    assert subset["addresses"][0]["targetRef"] == {"kind": "Pod", "namespace": "ns", "name": "a", "uid": "u-a"}


def test_services_without_selector_are_left_alone() -> None:
    """A Service with no selector (or ExternalName) has no managed endpoints."""
    assert endpoints_util.selector_of(_svc(selector=None)) is None
    assert endpoints_util.selector_of(_svc(type="ExternalName")) is None
    assert endpoints.subsets(_svc(selector={}), [_pod("a")]) == []


def test_mirroring_turns_subsets_into_slices() -> None:
    """Each Endpoints subset becomes a mirrored slice; not-ready addresses become endpoints with ready=false."""
    eps = {"metadata": {"name": "ext", "namespace": "ns", "uid": "e1", "labels": {"a": "b"},
                        "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}", "note": "x"}},
           "subsets": [{"addresses": [{"ip": "192.0.2.1"}], "notReadyAddresses": [{"ip": "192.0.2.2"}],
                        "ports": [{"name": "db", "port": 5432, "protocol": "TCP"}]}]}
    svc = {"metadata": {"name": "ext", "namespace": "ns"}, "spec": {"ports": [{"port": 5432}]}}
    creates, updates, deletes = endpointslicemirroring.plan(svc, eps, [])
    [made] = creates
    assert made["endpoints"] == [{"addresses": ["192.0.2.1"], "conditions": {"ready": True}},
                                 {"addresses": ["192.0.2.2"], "conditions": {"ready": False}}]
    assert made["ports"] == [{"name": "db", "port": 5432, "protocol": "TCP"}]
    assert made["metadata"]["labels"] == {"a": "b", "kubernetes.io/service-name": "ext",
                                          "endpointslice.kubernetes.io/managed-by": "endpointslicemirroring-controller.k8s.io"}
    assert made["metadata"]["annotations"] == {"note": "x"}
    assert made["metadata"]["ownerReferences"][0]["kind"] == "Endpoints"
    existing = dict(made, metadata=dict(made["metadata"], name="ext-abcde"))
    assert endpointslicemirroring.plan(svc, eps, [existing]) == ([], [], [])
    assert not endpointslicemirroring.wanted({"metadata": {"labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}})


def test_write_tracker_overlays_until_the_cache_catches_up() -> None:
    """A slice we just created or deleted counts as such until the informer shows a version at least as new."""
    tracker = endpoints_util.WriteTracker()
    mine = {"metadata": {"name": "s1", "resourceVersion": "5"}}
    tracker.record("ns/web", "s1", mine)
    assert tracker.overlay("ns/web", []) == [mine]
    newer = {"metadata": {"name": "s1", "resourceVersion": "6"}}
    assert tracker.overlay("ns/web", [newer]) == [newer]
    assert tracker.overlay("ns/web", []) == []
    tracker.record("ns/web", "s1", None)
    assert tracker.overlay("ns/web", [newer]) == []
