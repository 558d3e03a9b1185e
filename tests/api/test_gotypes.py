"""Go's JSON type errors for built-in kinds, as kube-apiserver's decoder words them."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import gotypes

DEPLOY = ("apps", "v1", "Deployment")
CM = ("", "v1", "ConfigMap")
GO = "json: cannot unmarshal {} into Go struct field {} of type {}"


@pytest.mark.parametrize(("gvk", "obj", "want"), [
    (CM, {"metadata": {"name": "a", "labels": {"x": "y"}}, "data": {"k": "v"}}, None),
    (CM, {"metadata": {"labels": "x"}}, GO.format("string", "ObjectMeta.metadata.labels", "map[string]string")),
    (CM, {"metadata": {"labels": {"a": 1}}}, GO.format("number", "ObjectMeta.metadata.labels", "string")),
    (CM, {"metadata": {"finalizers": "x"}}, GO.format("string", "ObjectMeta.metadata.finalizers", "[]string")),
    (CM, {"data": {"a": True}}, GO.format("bool", "ConfigMap.data", "string")),
    (CM, {"immutable": "yes"}, GO.format("string", "ConfigMap.immutable", "bool")),
    (CM, {"data": None, "metadata": {"labels": None}}, None),
    (DEPLOY, {"spec": {"replicas": "2"}}, GO.format("string", "DeploymentSpec.spec.replicas", "int32")),
    (DEPLOY, {"spec": {"replicas": 2.5}}, GO.format("number 2.5", "DeploymentSpec.spec.replicas", "int32")),
    (DEPLOY, {"spec": {"replicas": 2 ** 31}},
     GO.format("number 2147483648", "DeploymentSpec.spec.replicas", "int32")),
    (DEPLOY, {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": 5}]}}}},
     GO.format("number", "Container.spec.template.spec.containers.image", "string")),
    (DEPLOY, {"spec": {"template": {"spec": {"containers": {"name": "c"}}}}},
     GO.format("object", "PodSpec.spec.template.spec.containers", "[]v1.Container")),
    (DEPLOY, {"spec": "x"}, GO.format("string", "Deployment.spec", "v1.DeploymentSpec")),
    # the first problem in document order wins, as with Go's decoder
    (DEPLOY, {"spec": {"paused": 1, "replicas": "x"}}, GO.format("number", "DeploymentSpec.spec.paused", "bool")),
    # types with their own decoding (IntOrString, Quantity, Time) are left to validation
    (("", "v1", "Service"), {"spec": {"ports": [{"port": 80, "targetPort": "http"}]}}, None),
    (("", "v1", "Pod"), {"spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": 1}}}]}}, None),
    (("", "v1", "Pod"), {"metadata": {"creationTimestamp": None}}, None),
    (("", "v1", "Secret"), {"data": {"a": 5}}, GO.format("number", "Secret.data", "[]uint8")),
    (("example.com", "v1", "Widget"), {"spec": "anything"}, None),
])
def test_type_error(gvk: tuple[str, str, str], obj: dict[str, Any], want: str | None) -> None:
    """The first ill-typed field is reported with Go's struct name, field path and type; well-typed objects pass."""
    assert gotypes.type_error(obj, *gvk) == want
