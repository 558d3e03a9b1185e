"""Specification of quota usage: what each object uses, which quotas cover it, and kube's admission verdicts."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pocketkube.api import quota

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def container(name: str = "c", requests: dict[str, str] | None = None, limits: dict[str, str] | None = None,
              **extra: Any) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "image": "nginx", "resources": res, **extra}


def pod(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None, phase: str = "Pending",
        **spec: Any) -> dict[str, Any]:
    s: dict[str, Any] = {"containers": list(containers) or [container()], **spec}
    if init:
        s["initContainers"] = init
    return {"metadata": {"name": "p", "namespace": "ns", "resourceVersion": "5"}, "spec": s, "status": {"phase": phase}}


def strings(rl: quota.ResourceList) -> dict[str, str]:
    return quota.to_json(rl)


@pytest.mark.parametrize("p,want", [
    (pod(), {"count/pods": "1", "pods": "1"}),
    (pod(container(requests={"cpu": "250m", "memory": "64Mi"}, limits={"cpu": "500m", "memory": "128Mi"})),
     {"count/pods": "1", "pods": "1", "cpu": "250m", "requests.cpu": "250m", "limits.cpu": "500m",
      "memory": "64Mi", "requests.memory": "64Mi", "limits.memory": "128Mi"}),
    (pod(container("a", requests={"cpu": "1"}), container("b", requests={"cpu": "500m"})),
     {"count/pods": "1", "pods": "1", "cpu": "1500m", "requests.cpu": "1500m"}),
    # An init container runs alone: the pod needs the larger of it and the sum of the app containers.
    (pod(container(requests={"cpu": "1"}), init=[container("i", requests={"cpu": "3"})]),
     {"count/pods": "1", "pods": "1", "cpu": "3", "requests.cpu": "3"}),
    # A sidecar (restartPolicy Always) runs beside everything after it.
    (pod(container(requests={"cpu": "1"}), init=[container("s", requests={"cpu": "1"}, restartPolicy="Always"),
                                                 container("i", requests={"cpu": "1500m"})]),
     {"count/pods": "1", "pods": "1", "cpu": "2500m", "requests.cpu": "2500m"}),
    (pod(container(requests={"cpu": "1"}), overhead={"cpu": "100m"}),
     {"count/pods": "1", "pods": "1", "cpu": "1100m", "requests.cpu": "1100m"}),
    (pod(container(requests={"hugepages-2Mi": "4Mi", "example.com/dongle": "2", "ephemeral-storage": "1Gi"})),
     {"count/pods": "1", "pods": "1", "hugepages-2Mi": "4Mi", "requests.hugepages-2Mi": "4Mi",
      "requests.example.com/dongle": "2", "ephemeral-storage": "1Gi", "requests.ephemeral-storage": "1Gi"}),
    # Finished pods are only counted as objects.
    (pod(container(requests={"cpu": "1"}), phase="Succeeded"), {"count/pods": "1"}),
    (pod(container(requests={"cpu": "1"}), phase="Failed"), {"count/pods": "1"}),
])
def test_pod_usage(p, want):
    """A pod uses its effective requests and limits, under both the bare and requests./limits. names."""
    assert strings(quota.evaluator_for("", "pods").usage(p, NOW)) == want  # type: ignore[union-attr]


@pytest.mark.parametrize("stamp,grace,charged", [
    ("2026-01-01T00:00:00Z", 30, True),
    ("2025-12-31T23:59:00Z", 30, False),
    (None, None, True),
])
def test_terminating_pod_past_grace_is_not_charged(stamp, grace, charged):
    """A pod whose deletion grace period has run out no longer uses compute quota."""
    p = pod()
    if stamp:
        p["metadata"].update(deletionTimestamp=stamp, deletionGracePeriodSeconds=grace)
    assert quota.pod_is_charged(p, NOW) is charged


def svc(kind: str = "ClusterIP", ports: int = 1, **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "s"}, "spec": {"type": kind, "ports": [{"port": 80 + i} for i in range(ports)], **spec}}


@pytest.mark.parametrize("s,nodeports,lbs", [
    (svc(), "0", "0"),
    (svc("NodePort", 2), "2", "0"),
    (svc("LoadBalancer", 3), "3", "1"),
    (svc("LoadBalancer", 2, allocateLoadBalancerNodePorts=False), "0", "1"),
    (svc("ExternalName", 1), "0", "0"),
])
def test_service_usage(s, nodeports, lbs):
    """Services count once, plus their node ports and load balancers."""
    got = strings(quota.evaluator_for("", "services").usage(s, NOW))  # type: ignore[union-attr]
    assert got == {"count/services": "1", "services": "1", "services.nodeports": nodeports,
                   "services.loadbalancers": lbs}


@pytest.mark.parametrize("claim,want", [
    ({"spec": {"resources": {"requests": {"storage": "1Gi"}}}},
     {"persistentvolumeclaims": "1", "count/persistentvolumeclaims": "1", "requests.storage": "1Gi"}),
    ({"spec": {"storageClassName": "gold", "resources": {"requests": {"storage": "1Gi"}}}},
     {"persistentvolumeclaims": "1", "count/persistentvolumeclaims": "1", "requests.storage": "1Gi",
      "gold.storageclass.storage.k8s.io/persistentvolumeclaims": "1",
      "gold.storageclass.storage.k8s.io/requests.storage": "1Gi"}),
    # The beta annotation names the class over the spec field.
    ({"metadata": {"annotations": {"volume.beta.kubernetes.io/storage-class": "fast"}},
      "spec": {"storageClassName": "gold"}},
     {"persistentvolumeclaims": "1", "count/persistentvolumeclaims": "1",
      "fast.storageclass.storage.k8s.io/persistentvolumeclaims": "1"}),
    # A larger allocation (after a failed expansion) is what counts.
    ({"spec": {"resources": {"requests": {"storage": "1Gi"}}}, "status": {"allocatedResources": {"storage": "2Gi"}}},
     {"persistentvolumeclaims": "1", "count/persistentvolumeclaims": "1", "requests.storage": "2Gi"}),
])
def test_claim_usage(claim, want):
    """Claims count once, with their requested storage, also per storage class."""
    assert strings(quota.evaluator_for("", "persistentvolumeclaims").usage(claim, NOW)) == want  # type: ignore[union-attr]


@pytest.mark.parametrize("group,resource,want", [
    ("", "configmaps", {"count/configmaps": "1", "configmaps": "1"}),
    ("", "secrets", {"count/secrets": "1", "secrets": "1"}),
    ("apps", "deployments", {"count/deployments.apps": "1"}),
    ("example.com", "widgets", {"count/widgets.example.com": "1"}),
])
def test_object_count_usage(group, resource, want):
    """Other objects count once, under count/<resource>.<group> (and the legacy name for a few core kinds)."""
    assert strings(quota.evaluator_for(group, resource).usage({}, NOW)) == want  # type: ignore[union-attr]


def test_events_are_not_quota_resources():
    """Events are never measured."""
    assert quota.evaluator_for("", "events") is None


@pytest.mark.parametrize("names,want", [
    (["pods", "requests.cpu", "secrets"], [("", "pods"), ("", "secrets")]),
    (["count/deployments.apps", "count/pods"], [("", "pods"), ("apps", "deployments")]),
    (["requests.storage", "services.nodeports"], [("", "services"), ("", "persistentvolumeclaims")]),
    (["bogus"], []),
])
def test_evaluators_for_names(names, want):
    """A quota's resource names select the evaluators the controller must run."""
    got = [(ev.group, ev.resource) for ev in quota.evaluators_for_names(names)]
    assert sorted(got) == sorted(want)


@pytest.mark.parametrize("scope,p,want", [
    ({"scopeName": "Terminating", "operator": "Exists"}, pod(activeDeadlineSeconds=30), True),
    ({"scopeName": "Terminating", "operator": "Exists"}, pod(), False),
    ({"scopeName": "NotTerminating", "operator": "Exists"}, pod(), True),
    ({"scopeName": "BestEffort", "operator": "Exists"}, pod(), True),
    ({"scopeName": "BestEffort", "operator": "Exists"}, pod(container(limits={"memory": "1Gi"})), False),
    # Only cpu and memory decide the QoS class.
    ({"scopeName": "BestEffort", "operator": "Exists"}, pod(container(requests={"ephemeral-storage": "1Gi"})), True),
    ({"scopeName": "NotBestEffort", "operator": "Exists"}, pod(container(requests={"cpu": "1"})), True),
    ({"scopeName": "PriorityClass", "operator": "Exists"}, pod(priorityClassName="high"), True),
    ({"scopeName": "PriorityClass", "operator": "Exists"}, pod(), False),
    ({"scopeName": "PriorityClass", "operator": "In", "values": ["high", "mid"]}, pod(priorityClassName="high"), True),
    ({"scopeName": "PriorityClass", "operator": "In", "values": ["low"]}, pod(priorityClassName="high"), False),
    ({"scopeName": "PriorityClass", "operator": "NotIn", "values": ["low"]}, pod(), True),
    ({"scopeName": "PriorityClass", "operator": "DoesNotExist"}, pod(), True),
    ({"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"},
     pod(affinity={"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
         {"topologyKey": "zone", "namespaceSelector": {}}]}}), True),
    ({"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"},
     pod(affinity={"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
         {"weight": 1, "podAffinityTerm": {"topologyKey": "zone", "namespaces": ["other"]}}]}}), True),
    ({"scopeName": "CrossNamespacePodAffinity", "operator": "Exists"}, pod(), False),
])
def test_pod_scopes(scope, p, want):
    """Pods match the quota scopes as kube's pod evaluator decides them."""
    assert quota.evaluator_for("", "pods").matches_scope(scope, p) is want  # type: ignore[union-attr]


def test_scoped_quota_never_covers_other_objects():
    """A scoped quota only ever covers pods."""
    q = rq("q", {"count/configmaps": "5"}, {"count/configmaps": "0"}, scopes=["BestEffort"])
    assert not quota.covers(quota.evaluator_for("", "configmaps"), q, obj={})  # type: ignore[arg-type]


def rq(name: str, hard: dict[str, str], used: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    q: dict[str, Any] = {"metadata": {"name": name, "namespace": "ns"}, "spec": {"hard": hard, **spec}}
    if used is not None:
        q["status"] = {"hard": hard, "used": used}
    return q


def check(quotas: list[dict[str, Any]], obj: dict[str, Any], *, resource: str = "pods", operation: str = "CREATE",
          old: dict[str, Any] | None = None) -> dict[str, dict[str, str]]:
    ev = quota.evaluator_for("", resource)
    assert ev is not None
    return {k: strings(v) for k, v in quota.check_request(quotas, ev, obj=obj, old=old, operation=operation, now=NOW).items()}


@pytest.mark.parametrize("quotas,obj,want", [
    ([rq("q", {"pods": "10"}, {"pods": "3"})], pod(), {"q": {"pods": "4"}}),
    ([rq("q", {"pods": "10", "requests.cpu": "2"}, {"pods": "0", "requests.cpu": "500m"})],
     pod(container(requests={"cpu": "1"})), {"q": {"pods": "1", "requests.cpu": "1500m"}}),
    # A quota without computed status constrains nothing yet.
    ([rq("q", {"pods": "1"})], pod(), {}),
    # A quota not tracking what the object uses is left alone.
    ([rq("q", {"services": "1"}, {"services": "0"})], pod(), {}),
    ([rq("q", {"pods": "1"}, {"pods": "0"}, scopes=["Terminating"])], pod(), {}),
    ([rq("a", {"pods": "5"}, {"pods": "1"}), rq("b", {"count/pods": "5"}, {"count/pods": "2"})], pod(),
     {"a": {"pods": "2"}, "b": {"count/pods": "3"}}),
])
def test_check_request_charges(quotas, obj, want):
    """An admitted request adds its usage to every quota that covers it."""
    assert check(quotas, obj) == want


@pytest.mark.parametrize("quotas,obj,message", [
    ([rq("q", {"pods": "10"}, {"pods": "10"})], pod(),
     "exceeded quota: q, requested: pods=1, used: pods=10, limited: pods=10"),
    ([rq("q", {"pods": "10", "requests.cpu": "1"}, {"pods": "1", "requests.cpu": "800m"})],
     pod(container(requests={"cpu": "300m"})),
     "exceeded quota: q, requested: requests.cpu=300m, used: requests.cpu=800m, limited: requests.cpu=1"),
    ([rq("q", {"limits.cpu": "2", "requests.memory": "1Gi"}, {"limits.cpu": "0", "requests.memory": "0"})],
     pod(container("c"), container("b", requests={"memory": "1Mi"}, limits={"cpu": "1"})),
     "failed quota: q: must specify limits.cpu for: c; requests.memory for: c"),
    ([rq("q", {"cpu": "2"}, {"cpu": "0"})], pod(container("b"), container("a")),
     "failed quota: q: must specify cpu for: a,b"),
    ([rq("q", {"pods": "10", "requests.cpu": "1"}, {"pods": "0"})], pod(container(requests={"cpu": "1"})),
     "status unknown for quota: q, resources: pods,requests.cpu"),
])
def test_check_request_refuses(quotas, obj, message):
    """Requests beyond a quota, without required requests, or against an uncounted quota get kube's messages."""
    with pytest.raises(quota.Rejected) as e:
        check(quotas, obj)
    assert str(e.value) == message


def test_service_update_charges_only_the_increase():
    """An update is charged the growth over the old object's usage, never a refund."""
    q = rq("q", {"services.nodeports": "3", "services": "5"}, {"services.nodeports": "1", "services": "1"})
    old = {**svc("NodePort", 1), "metadata": {"name": "s", "resourceVersion": "3"}}
    assert check([q], svc("NodePort", 2), resource="services", operation="UPDATE", old=old) == \
        {"q": {"services": "1", "services.nodeports": "2"}}
    assert check([q], svc("ClusterIP", 1), resource="services", operation="UPDATE", old=old) == {}


def test_pod_updates_are_not_charged():
    """Pod updates are not measured (in-place resize is off in 1.32)."""
    assert check([rq("q", {"pods": "1"}, {"pods": "1"})], pod(), operation="UPDATE", old=pod()) == {}


def test_calculate_and_sync_status():
    """The controller's recount covers spec.hard, counts zero for unused resources, and skips terminal pods."""
    q = rq("q", {"pods": "5", "requests.memory": "1Gi", "count/configmaps": "3", "bogus": "1"})
    pods = [pod(container(requests={"memory": "100Mi"})), pod(container(requests={"memory": "1Gi"}), phase="Failed")]
    objects = {quota.evaluator_for("", "pods"): pods, quota.evaluator_for("", "configmaps"): []}
    status = quota.sync_status(q, objects, now=NOW)  # type: ignore[arg-type]
    assert status == {"hard": {"bogus": "1", "count/configmaps": "3", "pods": "5", "requests.memory": "1Gi"},
                      "used": {"count/configmaps": "0", "pods": "1", "requests.memory": "100Mi"}}
    q["status"] = status
    assert quota.sync_status(q, objects, now=NOW) is None  # type: ignore[arg-type]


def test_scoped_recount_counts_only_selected_pods():
    """A scoped quota's usage comes only from pods its scopes select."""
    q = rq("q", {"pods": "5"}, scopes=["BestEffort"])
    pods = [pod(), pod(container(requests={"cpu": "1"}))]
    assert strings(quota.calculate_usage(q, {quota.evaluator_for("", "pods"): pods}, now=NOW)) == {"pods": "1"}  # type: ignore[dict-item]


@pytest.mark.parametrize("a,b,want", [
    ({"cpu": "500m"}, {"cpu": "500m"}, {"cpu": "1"}),
    ({"memory": "0"}, {"memory": "128Mi"}, {"memory": "128Mi"}),
    ({"memory": "1Gi"}, {"memory": "512Mi"}, {"memory": "1536Mi"}),
    ({"pods": "1"}, {"cpu": "1"}, {"pods": "1", "cpu": "1"}),
])
def test_add_keeps_go_formats(a, b, want):
    """Sums print as kube prints them: the first operand's format unless it is zero."""
    assert strings(quota.add(quota.parse_list(a), quota.parse_list(b))) == want
