"""Specification of ValidatingAdmissionPolicy semantics: defaults, validation, matching and decisions."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketkube.api import cel_policy, cel_validator


def attrs(**kw: Any) -> cel_policy.Attributes:
    base: dict[str, Any] = {"operation": "CREATE", "group": "apps", "version": "v1", "resource": "deployments",
                            "subresource": "", "kind": "Deployment", "namespace": "ns", "name": "web",
                            "obj": {"metadata": {"name": "web", "labels": {"tier": "front"}}}, "old": None}
    base.update(kw)
    return cel_policy.Attributes(**base)


def rule(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"operations": ["CREATE"], "apiGroups": ["apps"], "apiVersions": ["v1"],
                            "resources": ["deployments"]}
    base.update(kw)
    return base


@pytest.mark.parametrize("r,a,want", [
    (rule(), attrs(), True),
    (rule(operations=["*"]), attrs(operation="UPDATE"), True),
    (rule(), attrs(operation="UPDATE"), False),
    (rule(apiGroups=["*"], apiVersions=["*"], resources=["*"]), attrs(), True),
    (rule(apiGroups=[""]), attrs(), False),
    (rule(resources=["*"]), attrs(subresource="scale"), False),
    (rule(resources=["deployments/scale"]), attrs(subresource="scale"), True),
    (rule(resources=["*/scale"]), attrs(subresource="scale"), True),
    (rule(resources=["deployments/*"]), attrs(subresource="status"), True),
    (rule(resources=["*/*"]), attrs(), True),
    (rule(resources=["deployments/*"]), attrs(), True),
    (rule(scope="Namespaced"), attrs(), True),
    (rule(scope="Cluster"), attrs(), False),
    (rule(scope="Cluster", apiGroups=[""], resources=["namespaces"]),
     attrs(group="", resource="namespaces", namespace="ns"), True),
    (rule(scope="Namespaced", apiGroups=[""], resources=["namespaces"]),
     attrs(group="", resource="namespaces", namespace="ns"), False),
])
def test_rule_matches(r: dict[str, Any], a: cel_policy.Attributes, want: bool) -> None:
    """Operations, groups, versions, resource/subresource wildcards and scope match as kube's rules.Matcher."""
    assert cel_policy.rule_matches(r, a) is want


@pytest.mark.parametrize("mr,a,ns,want", [
    ({"resourceRules": [rule()]}, attrs(), None, ("apps", "v1", "deployments")),
    ({"resourceRules": [rule(resourceNames=["other"])]}, attrs(), None, None),
    ({"resourceRules": [rule(resourceNames=["web"])]}, attrs(), None, ("apps", "v1", "deployments")),
    ({"resourceRules": [rule()], "excludeResourceRules": [rule()]}, attrs(), None, None),
    ({"resourceRules": [rule()], "objectSelector": {"matchLabels": {"tier": "back"}}}, attrs(), None, None),
    ({"resourceRules": [rule()], "objectSelector": {"matchLabels": {"tier": "front"}}}, attrs(), None,
     ("apps", "v1", "deployments")),
    ({"resourceRules": [rule()], "namespaceSelector": {"matchLabels": {"env": "prod"}}}, attrs(),
     {"metadata": {"labels": {"env": "prod"}}}, ("apps", "v1", "deployments")),
    ({"resourceRules": [rule()], "namespaceSelector": {"matchLabels": {"env": "prod"}}}, attrs(),
     {"metadata": {"labels": {"env": "dev"}}}, None),
    # cluster-scoped objects other than namespaces are never exempted by a namespaceSelector
    ({"resourceRules": [rule(apiGroups=[""], resources=["nodes"])],
      "namespaceSelector": {"matchLabels": {"env": "prod"}}}, attrs(group="", resource="nodes", namespace=""), None,
     ("", "v1", "nodes")),
    # Equivalent matches another version serving the same objects; Exact does not
    ({"resourceRules": [rule(apiGroups=["autoscaling"], apiVersions=["v2"], resources=["horizontalpodautoscalers"])],
      "matchPolicy": "Equivalent"},
     attrs(group="autoscaling", version="v1", resource="horizontalpodautoscalers",
           equivalents=(("autoscaling", "v2", "horizontalpodautoscalers"),)), None,
     ("autoscaling", "v2", "horizontalpodautoscalers")),
    ({"resourceRules": [rule(apiGroups=["autoscaling"], apiVersions=["v2"], resources=["horizontalpodautoscalers"])],
      "matchPolicy": "Exact"},
     attrs(group="autoscaling", version="v1", resource="horizontalpodautoscalers",
           equivalents=(("autoscaling", "v2", "horizontalpodautoscalers"),)), None, None),
])
def test_match(mr: dict[str, Any], a: cel_policy.Attributes, ns: dict[str, Any] | None, want: Any) -> None:
    """matchResources combine selectors, exclusions, resource names and the match policy as kube does."""
    assert cel_policy.match(mr, a, ns) == want


def test_namespace_selector_on_namespaces_uses_the_object() -> None:
    """Creating a namespace matches its own labels against the namespaceSelector."""
    mr = {"resourceRules": [rule(apiGroups=[""], resources=["namespaces"])],
          "namespaceSelector": {"matchLabels": {"env": "prod"}}}
    a = attrs(group="", resource="namespaces", namespace="", name="n1",
              obj={"metadata": {"name": "n1", "labels": {"env": "prod"}}})
    assert cel_policy.match(mr, a, None) == ("", "v1", "namespaces")


POLICY: dict[str, Any] = {
    "metadata": {"name": "p"},
    "spec": {"matchConstraints": {"resourceRules": [rule()]},
             "validations": [{"expression": "object.spec.replicas <= 5"}]},
}


def test_defaults() -> None:
    """failurePolicy, matchPolicy, selectors and rule scope get kube's defaults."""
    p = copy.deepcopy(POLICY)
    cel_policy.default_policy(p)
    assert p["spec"]["failurePolicy"] == "Fail"
    assert p["spec"]["matchConstraints"] == {"resourceRules": [{**rule(), "scope": "*"}], "matchPolicy": "Equivalent",
                                             "namespaceSelector": {}, "objectSelector": {}}


def _errors(spec_changes: dict[str, Any], old: dict[str, Any] | None = None) -> list[str]:
    p = copy.deepcopy(POLICY)
    p["spec"].update(spec_changes)
    cel_policy.default_policy(p)
    return [e.text() for e in cel_policy.validate_policy(p, old)]


@pytest.mark.parametrize("changes,want", [
    ({}, []),
    ({"validations": []}, ["spec.validations: Required value: validations or auditAnnotations must contain at least "
                           "one item", "spec.auditAnnotations: Required value: validations or auditAnnotations must "
                           "contain at least one item"]),
    ({"failurePolicy": "Maybe"}, ['spec.failurePolicy: Unsupported value: "Maybe": supported values: "Fail", '
                                  '"Ignore"']),
    ({"matchConstraints": {"resourceRules": []}}, ["spec.matchConstraints.resourceRules: Required value"]),
    ({"matchConstraints": {"resourceRules": [rule(operations=["GET"])]}},
     ['spec.matchConstraints.resourceRules[0].operations[0]: Unsupported value: "GET": supported values: "*", '
      '"CONNECT", "CREATE", "DELETE", "UPDATE"']),
    ({"matchConstraints": {"resourceRules": [rule(resources=["*", "pods"])]}},
     ['spec.matchConstraints.resourceRules[0].resources: Invalid value: []string{"*", "pods"}: if \'*\' is present, '
      "must not specify other resources without subresources"]),
    ({"validations": [{"expression": "object.x", "reason": "Teapot"}]},
     ['spec.validations[0].reason: Unsupported value: "Teapot": supported values: "Forbidden", "Invalid", '
      '"RequestEntityTooLarge"']),
    ({"validations": [{"expression": "params.x"}]},
     ["spec.validations[0].expression: Invalid value: \"params.x\": compilation failed: ERROR: <input>:1:1: "
      "undeclared reference to 'params' (in container '')\n | params.x\n | ^"]),
    ({"validations": [{"expression": "true", "messageExpression": "1"}]},
     ['spec.validations[0].messageExpression: Invalid value: "1": must evaluate to string']),
    ({"validations": [{"expression": "true", "message": "a\nb"}]},
     ['spec.validations[0].message: Invalid value: "a\\nb": message must not contain line breaks']),
    ({"variables": [{"name": "1x", "expression": "1"}]},
     ['spec.variables[0].name: Invalid value: "1x": name is not a valid CEL identifier']),
    ({"paramKind": {"apiVersion": "v1"}}, ["spec.paramKind.kind: Required value"]),
    ({"matchConditions": [{"name": "a", "expression": "true"}, {"name": "a", "expression": "'x'"}]},
     ['spec.matchConditions[1].expression: Invalid value: "\'x\'": must evaluate to bool',
      'spec.matchConditions[1].name: Duplicate value: "a"']),
])
def test_validate_policy(changes: dict[str, Any], want: list[str]) -> None:
    """Policy specs are validated with kube's field errors, CEL compile errors included."""
    assert _errors(changes) == want


def test_stored_expressions_are_not_recompiled() -> None:
    """An update keeping an expression that no longer compiles is accepted, as kube's stored-expression env does."""
    old = copy.deepcopy(POLICY)
    old["spec"]["validations"] = [{"expression": "params.x"}]
    assert _errors({"validations": [{"expression": "params.x"}]}, old=old) == []


@pytest.mark.parametrize("spec,want", [
    ({"policyName": "p", "validationActions": ["Deny"]}, []),
    ({"policyName": "p", "validationActions": []},
     ["spec.validationActions: Required value: at least one validation action is required"]),
    ({"policyName": "p", "validationActions": ["Deny", "Warn"]},
     ['spec.validationActions: Invalid value: []string{"Deny", "Warn"}: must not contain both Deny and Warn '
      "(repeating the same validation failure information in the API response and headers serves no purpose)"]),
    ({"policyName": "", "validationActions": ["Audit", "Audit"]},
     ["spec.policyName: Required value", 'spec.validationActions[1]: Duplicate value: "Audit"']),
    ({"policyName": "p", "validationActions": ["Deny"], "paramRef": {"name": "x"}},
     ["spec.paramRef.parameterNotFoundAction: Required value"]),
    ({"policyName": "p", "validationActions": ["Deny"],
      "paramRef": {"name": "x", "selector": {}, "parameterNotFoundAction": "Allow"}},
     ["spec.paramRef.name: Forbidden: name and selector are mutually exclusive",
      "spec.paramRef.selector: Forbidden: name and selector are mutually exclusive"]),
])
def test_validate_binding(spec: dict[str, Any], want: list[str]) -> None:
    """Bindings are validated with kube's field errors."""
    b = {"metadata": {"name": "b"}, "spec": spec}
    cel_policy.default_binding(b)
    assert [e.text() for e in cel_policy.validate_binding(b)] == want


def _policy(**spec: Any) -> cel_validator.Policy:
    return cel_validator.compile_policy({"metadata": {"name": "p", "generation": 1}, "spec": spec})


DEPLOY = {"metadata": {"name": "web"}, "spec": {"replicas": 7}}


@pytest.mark.parametrize("spec,want", [
    ({"validations": [{"expression": "object.spec.replicas <= 5"}]},
     [cel_validator.Decision("failed expression: object.spec.replicas <= 5")]),
    ({"validations": [{"expression": "object.spec.replicas <= 5", "message": "too many", "reason": "Forbidden"}]},
     [cel_validator.Decision("too many", reason="Forbidden")]),
    ({"validations": [{"expression": "object.spec.replicas <= 5",
                       "messageExpression": "'replicas ' + string(object.spec.replicas) + ' > 5'"}]},
     [cel_validator.Decision("replicas 7 > 5")]),
    # a messageExpression giving nothing usable falls back to message
    ({"validations": [{"expression": "false", "message": "fallback", "messageExpression": "'two\\nlines'"}]},
     [cel_validator.Decision("fallback")]),
    ({"validations": [{"expression": "true"}, {"expression": "object.spec.nope > 1"}]},
     [cel_validator.Decision("expression 'object.spec.nope > 1' resulted in error: no such key: nope", index=1,
                             error=True)]),
    ({"failurePolicy": "Ignore", "validations": [{"expression": "object.spec.nope > 1"}]}, []),
    ({"matchConditions": [{"name": "small", "expression": "object.spec.replicas < 3"}],
      "validations": [{"expression": "false"}]}, []),
    ({"matchConditions": [{"name": "bad", "expression": "object.nope"}], "validations": [{"expression": "false"}]},
     [cel_validator.Decision("expression 'object.nope' resulted in error: no such key: nope", error=True)]),
    ({"variables": [{"name": "limit", "expression": "5"}, {"name": "over", "expression": "object.spec.replicas > "
                                                                                         "variables.limit"}],
      "validations": [{"expression": "!variables.over"}]},
     [cel_validator.Decision("failed expression: !variables.over")]),
    ({"variables": [{"name": "boom", "expression": "object.spec.nope"}],
      "validations": [{"expression": "variables.boom == 1"}]},
     [cel_validator.Decision("expression 'variables.boom == 1' resulted in error: no such key: nope", error=True)]),
])
def test_evaluate(spec: dict[str, Any], want: list[cel_validator.Decision]) -> None:
    """Validations, messages, reasons, match conditions, variables and failurePolicy decide as kube's validator."""
    assert cel_validator.evaluate(_policy(**spec), {"object": DEPLOY}).decisions == want


def test_audit_annotations() -> None:
    """auditAnnotations publish trimmed string values and skip nulls and blanks."""
    policy = _policy(auditAnnotations=[{"key": "replicas", "valueExpression": "' ' + string(object.spec.replicas)"},
                                       {"key": "none", "valueExpression": "null"},
                                       {"key": "blank", "valueExpression": "'  '"}])
    assert cel_validator.evaluate(policy, {"object": DEPLOY}).annotations == {"replicas": "7"}


def test_stored_compile_errors_surface_when_the_policy_runs() -> None:
    """A stored expression that does not compile denies with kube's `compilation error:` message."""
    policy = _policy(validations=[{"expression": "object.spec.replicas <="}])
    [decision] = cel_validator.evaluate(policy, {"object": DEPLOY}).decisions
    assert decision.error and decision.message.startswith("compilation error: compilation failed: ERROR: <input>:1:24")
