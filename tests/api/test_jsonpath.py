"""Specification of the Kubernetes JSONPath dialect used by printer columns and kubectl templates."""

from __future__ import annotations

import pytest

from pocketkube.api import jsonpath

OBJ = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web", "labels": {"app": "web", "app.kubernetes.io/name": "shop"}},
    "spec": {"replicas": 3, "ratio": 0.25, "paused": False,
             "containers": [{"name": "a", "image": "nginx", "ports": [{"containerPort": 80}]},
                            {"name": "b", "image": "busybox", "ports": [{"containerPort": 8080}, {"containerPort": 9090}]}]},
    "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Initialized", "status": "False"}],
               "nothing": None},
}


@pytest.mark.parametrize("expr,expected", [
    (".spec.replicas", [3]),
    ("{.spec.replicas}", [3]),
    ("{$.spec.replicas}", [3]),
    (".metadata.labels.app", ["web"]),
    (".status.conditions[?(@.type==\"Ready\")].status", ["True"]),
    (".status.conditions[?(@.type=='Initialized')].status", ["False"]),
    (".status.conditions[?(@.status!=\"True\")].type", ["Initialized"]),
    (".status.conditions[?(@.type)].type", ["Ready", "Initialized"]),
    (".spec.containers[*].image", ["nginx", "busybox"]),
    (".spec.containers[0].name", ["a"]),
    (".spec.containers[-1].name", ["b"]),
    (".spec.containers[0:1].name", ["a"]),
    (".spec.containers[0,1].name", ["a", "b"]),
    (".spec.containers[*].ports[*].containerPort", [80, 8080, 9090]),
    (".spec.containers[?(@.ports[0].containerPort > 100)].name", ["b"]),
    ("..containerPort", [80, 8080, 9090]),
    (".metadata.labels['app.kubernetes.io/name']", ["shop"]),
    (".metadata.labels.app\\.kubernetes\\.io/name", ["shop"]),
    (".metadata.labels['app','missing']", ["web"]),
    (".metadata.missing.deeper", []),
    (".spec.containers[5].name", []),
    (".status.nothing", [None]),
    (".metadata.labels.*", ["web", "shop"]),
    ("{.metadata.name}{.kind}", ["web", "Pod"]),
])
def test_find(expr: str, expected: list) -> None:
    """Expressions select the values client-go's JSONPath selects, missing keys yielding nothing."""
    assert jsonpath.find(expr, OBJ) == expected


@pytest.mark.parametrize("template,expected", [
    ("{.metadata.name}", "web"),
    ("name={.metadata.name} kind={.kind}", "name=web kind=Pod"),
    ("{.spec.containers[*].name}", "a b"),
    ("{range .spec.containers[*]}{.name}:{.image}{\"\\n\"}{end}", "a:nginx\nb:busybox\n"),
    ("{.spec.containers[0].ports}", '[{"containerPort":80}]'),
    ("{.metadata.labels}", '{"app":"web","app.kubernetes.io/name":"shop"}'),
    ("{.spec.paused}", "false"),
    ("{.spec.ratio}", "0.25"),
    ("{.status.nothing}", "null"),
    ("{.missing}", ""),
])
def test_render(template: str, expected: str) -> None:
    """Templates print like `kubectl -o jsonpath`: scalars bare, objects as compact JSON."""
    assert jsonpath.render(template, OBJ) == expected


def test_strict_lookup_reports_missing_keys() -> None:
    """With missing keys disallowed, the error names the key like client-go does."""
    with pytest.raises(jsonpath.JSONPathError, match="missing is not found"):
        jsonpath.render("{.metadata.missing}", OBJ, allow_missing=False)


@pytest.mark.parametrize("bad", ["", "{.a", "{.a[}", "{.a[x]}", "{range .a}{.b}", "{end}", "{.a[?(@.b=~\"x\")]}"])
def test_parse_errors(bad: str) -> None:
    """Malformed templates are refused with JSONPathError."""
    with pytest.raises(jsonpath.JSONPathError):
        jsonpath.parse(bad)


@pytest.mark.parametrize("value,expected", [
    (1.5, "1.5"), (2.0, "2"), (1e21, "1e+21"), (1.5e-05, "1.5e-05"), (1e20, "100000000000000000000"),
    (-0.0001, "-0.0001"), (True, "true"), (None, "null"), ("<x>", "<x>"), ({"a": "<"}, '{"a":"\\u003c"}'),
])
def test_to_text(value: object, expected: str) -> None:
    """Values print as Go's fmt and encoding/json would."""
    assert jsonpath.to_text(value) == expected


def test_first_and_cache() -> None:
    """first returns the first selected value or the default; parsed templates are reused."""
    assert jsonpath.first(".spec.containers[*].name", OBJ) == "a"
    assert jsonpath.first(".nope", OBJ, "dflt") == "dflt"
    assert jsonpath.parse(".spec.replicas") is jsonpath.parse(".spec.replicas")
