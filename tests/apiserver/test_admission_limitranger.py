"""Specification of LimitRanger: container defaults with kube's annotation, and kube's exact bound messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketkube.apiserver import admission_limitranger as lr


def limit_range(*items: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "lr", "namespace": "ns"}, "spec": {"limits": list(items)}}


def pod(*containers: dict[str, Any], init: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": list(containers)}
    if init:
        spec["initContainers"] = init
    return {"metadata": {"name": "p"}, "spec": spec}


def c(name: str = "c", requests: dict[str, str] | None = None, limits: dict[str, str] | None = None) -> dict[str, Any]:
    res: dict[str, Any] = {}
    if requests:
        res["requests"] = requests
    if limits:
        res["limits"] = limits
    return {"name": name, "image": "nginx", **({"resources": res} if res else {})}


DEFAULTS = {"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
            "defaultRequest": {"cpu": "250m", "memory": "128Mi"}}


@pytest.mark.parametrize("p,want_resources,annotation", [
    (pod(c()), [{"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "250m", "memory": "128Mi"}}],
     "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"),
    (pod(c(requests={"cpu": "100m"}, limits={"cpu": "200m"})),
     [{"limits": {"cpu": "200m", "memory": "256Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}],
     "LimitRanger plugin set: memory request for container c; memory limit for container c"),
    (pod(c("app"), init=[c("setup", requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"})]),
     [{"limits": {"cpu": "500m", "memory": "256Mi"}, "requests": {"cpu": "250m", "memory": "128Mi"}}],
     "LimitRanger plugin set: cpu, memory request for container app; cpu, memory limit for container app"),
])
def test_default_pod(p, want_resources, annotation):
    """Containers get the range's defaults for what they leave out, and the pod says so in an annotation."""
    assert lr.default_pod(limit_range(DEFAULTS), p) is True
    assert [ct["resources"] for ct in p["spec"]["containers"]] == want_resources
    assert p["metadata"]["annotations"] == {lr.ANNOTATION: annotation}


def test_default_init_containers_are_named_as_such():
    """Init containers are defaulted too, and named "init container" in the annotation."""
    p = pod(c("app", requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"}), init=[c("setup")])
    assert lr.default_pod(limit_range(DEFAULTS), p)
    assert p["metadata"]["annotations"][lr.ANNOTATION] == \
        "LimitRanger plugin set: cpu, memory request for init container setup; cpu, memory limit for init container setup"


def test_nothing_to_default_leaves_the_pod_alone():
    """A pod that already sets everything, or a range without defaults, is not touched."""
    full = pod(c(requests={"cpu": "1", "memory": "1Gi"}, limits={"cpu": "1", "memory": "1Gi"}))
    before = copy.deepcopy(full)
    assert lr.default_pod(limit_range(DEFAULTS), full) is False
    assert lr.default_pod(limit_range({"type": "Container", "max": {"cpu": "2"}}), full) is False
    assert full == before


@pytest.mark.parametrize("item,p,message", [
    ({"type": "Container", "max": {"cpu": "1"}}, pod(c(limits={"cpu": "2"}, requests={"cpu": "2"})),
     "maximum cpu usage per Container is 1, but limit is 2"),
    ({"type": "Container", "max": {"cpu": "1"}}, pod(c(requests={"cpu": "500m"})),
     "maximum cpu usage per Container is 1.  No limit is specified"),
    ({"type": "Container", "max": {"cpu": "1"}}, pod(c(limits={"cpu": "1"}, requests={"cpu": "2"})),
     "maximum cpu usage per Container is 1, but request is 2"),
    ({"type": "Container", "min": {"memory": "100Mi"}}, pod(c(requests={"memory": "50Mi"})),
     "minimum memory usage per Container is 100Mi, but request is 50Mi"),
    ({"type": "Container", "min": {"memory": "100Mi"}}, pod(c()),
     "minimum memory usage per Container is 100Mi.  No request is specified"),
    ({"type": "Container", "min": {"memory": "100Mi"}}, pod(c(requests={"memory": "200Mi"}, limits={"memory": "50Mi"})),
     "minimum memory usage per Container is 100Mi, but limit is 50Mi"),
    ({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}, pod(c(requests={"cpu": "100m"}, limits={"cpu": "300m"})),
     "cpu max limit to request ratio per Container is 2, but provided ratio is 3.000000"),
    ({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}, pod(c(limits={"cpu": "300m"})),
     "cpu max limit to request ratio per Container is 2, but no request is specified or request is 0"),
    ({"type": "Pod", "max": {"cpu": "1"}}, pod(c("a", requests={"cpu": "600m"}, limits={"cpu": "600m"}),
                                               c("b", requests={"cpu": "600m"}, limits={"cpu": "600m"})),
     "maximum cpu usage per Pod is 1, but limit is 1200m"),
    ({"type": "Container", "max": {"cpu": "1", "memory": "1Gi"}}, pod(c(limits={"cpu": "2", "memory": "2Gi"})),
     "[maximum cpu usage per Container is 1, but limit is 2, maximum memory usage per Container is 1Gi, but limit is 2Gi]"),
])
def test_validate_pod(item, p, message):
    """Bounds are checked per container or per pod, with kube's wording; several failures are bracketed."""
    assert lr.validate_pod(limit_range(item), p) == message


@pytest.mark.parametrize("item,p", [
    ({"type": "Container", "max": {"cpu": "1"}}, pod(c(limits={"cpu": "1"}, requests={"cpu": "500m"}))),
    ({"type": "Container", "min": {"cpu": "100m"}}, pod(c(requests={"cpu": "0.1"}))),
    ({"type": "Container", "maxLimitRequestRatio": {"cpu": "2"}}, pod(c(requests={"cpu": "100m"}, limits={"cpu": "200m"}))),
    ({"type": "PersistentVolumeClaim", "max": {"storage": "1Gi"}}, pod(c())),
])
def test_validate_pod_accepts(item, p):
    """Pods within the bounds, or bounds of other types, pass."""
    assert lr.validate_pod(limit_range(item), p) == ""


@pytest.mark.parametrize("storage,message", [
    ("5Gi", "maximum storage usage per PersistentVolumeClaim is 2Gi, but request is 5Gi"),
    ("500Mi", "minimum storage usage per PersistentVolumeClaim is 1Gi, but request is 500Mi"),
    (None, "[minimum storage usage per PersistentVolumeClaim is 1Gi.  No request is specified, "
           "maximum storage usage per PersistentVolumeClaim is 2Gi.  No request is specified]"),
    ("1Gi", ""),
])
def test_validate_claim(storage, message):
    """Claims are bounded on the storage they request."""
    item = {"type": "PersistentVolumeClaim", "min": {"storage": "1Gi"}, "max": {"storage": "2Gi"}}
    claim = {"spec": {"resources": {"requests": {"storage": storage}} if storage else {}}}
    assert lr.validate_claim(limit_range(item), claim) == message
