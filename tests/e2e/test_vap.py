"""End to end: ValidatingAdmissionPolicy and bindings with CEL, driven by the real kubectl."""

from __future__ import annotations

import json
from typing import Any

from tests.e2e import cluster as cluster_mod

MAX_REPLICAS = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: max-replicas
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: ["apps"]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["deployments", "deployments/scale"]
  validations:
  - expression: "object.spec.replicas <= 5"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: max-replicas-binding
spec:
  policyName: max-replicas
  validationActions: [Deny]
  matchResources:
    namespaceSelector:
      matchLabels:
        policy: strict
"""


def _deployment(name: str, replicas: int, namespace: str, labels: dict[str, str] | None = None) -> str:
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels or {}},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}})


def _eventually_denied(cluster: cluster_mod.Cluster, *args: str, input: str | None = None, want: str) -> Any:
    """Policies reach admission through a watch: retry until the write is refused with `want`."""
    def check() -> Any:
        got = cluster.kubectl(*args, input=input, check=False)
        if got.returncode == 0 and input:
            # admitted before the policy arrived: remove it so the next try is a create again
            cluster.kubectl("delete", "-f", "-", "--ignore-not-found", input=input, check=False)
        return got if got.returncode != 0 and want in got.stderr else None
    return cluster_mod.eventually(check, what=f"{args} denied with {want!r}")


def test_max_replicas_policy_denies_apply_and_scale(cluster: cluster_mod.Cluster) -> None:
    """A policy capping replicas at 5 refuses apply and scale with kube's exact Invalid status, only where bound."""
    cluster.kubectl("create", "namespace", "strict")
    cluster.kubectl("label", "namespace", "strict", "policy=strict")
    cluster.kubectl("create", "namespace", "relaxed")
    cluster.kubectl("apply", "-f", "-", input=MAX_REPLICAS)
    msg = ("ValidatingAdmissionPolicy 'max-replicas' with binding 'max-replicas-binding' denied request: "
           "failed expression: object.spec.replicas <= 5")
    got = _eventually_denied(cluster, "apply", "-f", "-", input=_deployment("web", 6, "strict"), want=msg)
    assert got.stderr.strip() == f'The deployments "web" is invalid: : {msg}'
    raw = cluster.kubectl("create", "--raw", "/apis/apps/v1/namespaces/strict/deployments", "-f", "-",
                          input=_deployment("web", 7, "strict"), check=False)
    assert raw.returncode != 0
    # the other namespace is not selected by the binding
    cluster.kubectl("apply", "-f", "-", input=_deployment("web", 6, "relaxed"))
    cluster.kubectl("apply", "-f", "-", input=_deployment("web", 3, "strict"))
    scaled = cluster.kubectl("scale", "deployment/web", "-n", "strict", "--replicas=6", check=False)
    assert scaled.returncode != 0
    assert scaled.stderr.strip() == f'The deployments "web" is invalid: : {msg}'
    cluster.kubectl("scale", "deployment/web", "-n", "strict", "--replicas=5")
    status = cluster_mod.eventually(
        lambda: cluster.json("get", "validatingadmissionpolicy", "max-replicas", "-o", "json").get("status"),
        what="policy status")
    assert status == {"observedGeneration": 1, "typeChecking": {}}
    spec = cluster.json("get", "validatingadmissionpolicy", "max-replicas", "-o", "json")["spec"]
    assert spec["failurePolicy"] == "Fail" and spec["matchConstraints"]["matchPolicy"] == "Equivalent"
    assert spec["matchConstraints"]["resourceRules"][0]["scope"] == "*"
    cluster.kubectl("delete", "validatingadmissionpolicybinding", "max-replicas-binding")


PARAMS = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: required-label
spec:
  failurePolicy: Fail
  paramKind:
    apiVersion: v1
    kind: ConfigMap
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE", "UPDATE"]
      resources: ["configmaps"]
  matchConditions:
  - name: not-the-params
    expression: "object.metadata.name != 'label-rules'"
  variables:
  - name: wanted
    expression: "params.data.label"
  validations:
  - expression: "has(object.metadata.labels) && variables.wanted in object.metadata.labels"
    messageExpression: "'missing label ' + variables.wanted"
    reason: Forbidden
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: required-label-binding
spec:
  policyName: required-label
  validationActions: [Deny]
  paramRef:
    name: label-rules
    namespace: default
    parameterNotFoundAction: Deny
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: params
"""


def test_params_from_a_configmap(cluster: cluster_mod.Cluster) -> None:
    """A ConfigMap param names the required label; a missing param denies per parameterNotFoundAction."""
    cluster.kubectl("create", "namespace", "params")
    cluster.kubectl("apply", "-f", "-", input=PARAMS)
    _eventually_denied(cluster, "create", "configmap", "c1", "-n", "params",
                       want="failed to configure binding: no params found for policy binding with `Deny` "
                            "parameterNotFoundAction")
    cluster.kubectl("create", "configmap", "label-rules", "-n", "default", "--from-literal=label=team")
    got = cluster.kubectl("create", "configmap", "c2", "-n", "params", check=False)
    assert got.returncode != 0
    assert got.stderr.strip() == ('error: failed to create configmap: configmaps "c2" is forbidden: ValidatingAdmissionPolicy '
                                  "'required-label' with binding 'required-label-binding' denied request: "
                                  "missing label team")
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c3", "namespace": "params",
                                                             "labels": {"team": "a"}}}))
    cluster.kubectl("delete", "validatingadmissionpolicybinding", "required-label-binding")


WARN = """
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata:
  name: no-latest
spec:
  matchConstraints:
    resourceRules:
    - apiGroups: [""]
      apiVersions: ["v1"]
      operations: ["CREATE"]
      resources: ["pods"]
  validations:
  - expression: "object.spec.containers.all(c, !c.image.endsWith(':latest'))"
    message: "images must not use the latest tag"
  auditAnnotations:
  - key: image-count
    valueExpression: "string(size(object.spec.containers))"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata:
  name: no-latest-warn
spec:
  policyName: no-latest
  validationActions: [Warn, Audit]
  matchResources:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: warned
"""


def test_warn_action_prints_a_warning(cluster: cluster_mod.Cluster) -> None:
    """A Warn binding admits the pod and kubectl prints kube's `Warning: Validation failed ...` line."""
    cluster.kubectl("create", "namespace", "warned")
    cluster.kubectl("apply", "-f", "-", input=WARN)
    want = ("Warning: Validation failed for ValidatingAdmissionPolicy 'no-latest' with binding 'no-latest-warn': "
            "images must not use the latest tag")

    def check() -> Any:
        name = f"p{check.n}"  # type: ignore[attr-defined]
        check.n += 1  # type: ignore[attr-defined]
        got = cluster.kubectl("run", name, "-n", "warned", "--image=nginx:latest", check=False)
        return got if got.returncode == 0 and want in got.stderr else None
    check.n = 0  # type: ignore[attr-defined]
    got = cluster_mod.eventually(check, what="the warning")
    assert want in got.stderr.splitlines()
    quiet = cluster.kubectl("run", "tagged", "-n", "warned", "--image=nginx:1.27")
    assert "Warning" not in quiet.stderr


def test_bad_expression_is_rejected_at_create(cluster: cluster_mod.Cluster) -> None:
    """A policy whose expression does not compile is a 422 naming the field and cel's compile error."""
    bad = MAX_REPLICAS.split("---")[0].replace("max-replicas", "broken").replace(
        "object.spec.replicas <= 5", "object.spec.replicas <=")
    got = cluster.kubectl("apply", "-f", "-", input=bad, check=False)
    assert got.returncode != 0
    assert ('The ValidatingAdmissionPolicy "broken" is invalid: spec.validations[0].expression: Invalid value: '
            '"object.spec.replicas <=": compilation failed: ERROR: <input>:1:24: Syntax error: mismatched input '
            "'<EOF>' expecting") in got.stderr
    binding = cluster.kubectl("apply", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": "b"}, "spec": {"policyName": "x", "validationActions": ["Deny", "Warn"]}}))
    assert binding.returncode != 0
    assert "must not contain both Deny and Warn" in binding.stderr


def test_the_issue_example(cluster: cluster_mod.Cluster) -> None:
    """The issue's expectation: a CEL policy rejecting Deployments with more than 5 replicas, everywhere."""
    cluster.kubectl("create", "namespace", "issue")
    policy = MAX_REPLICAS.replace("max-replicas", "issue-max").split("  matchResources:")[0]
    cluster.kubectl("apply", "-f", "-", input=policy)
    got = _eventually_denied(cluster, "create", "deployment", "big", "-n", "issue", "--image=nginx",
                             "--replicas=10", want="denied request")
    assert ("ValidatingAdmissionPolicy 'issue-max' with binding 'issue-max-binding' denied request: "
            "failed expression: object.spec.replicas <= 5") in got.stderr
    cluster.kubectl("create", "deployment", "small", "-n", "issue", "--image=nginx", "--replicas=2")
    cluster.kubectl("delete", "validatingadmissionpolicybinding", "issue-max-binding")


def test_delete_is_judged_on_the_old_object(cluster: cluster_mod.Cluster) -> None:
    """A policy matching DELETE sees oldObject and can refuse deleting a protected ConfigMap."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
             "metadata": {"name": "keep-protected"},
             "spec": {"failurePolicy": "Fail",
                      "matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                              "operations": ["DELETE"], "resources": ["configmaps"]}]},
                      "validations": [{"expression": "!has(oldObject.metadata.labels) || "
                                                     "oldObject.metadata.labels.?protected.orValue('') != 'true'",
                                       "message": "protected configmaps cannot be deleted"}]}},
            {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
             "metadata": {"name": "keep-protected-binding"},
             "spec": {"policyName": "keep-protected", "validationActions": ["Deny"]}}]}))
    cluster.kubectl("create", "configmap", "precious")
    cluster.kubectl("label", "configmap", "precious", "protected=true")
    cluster.kubectl("create", "configmap", "disposable")
    _eventually_denied(cluster, "delete", "configmap", "precious", want="protected configmaps cannot be deleted")
    cluster.kubectl("delete", "configmap", "disposable")
    assert cluster.kubectl("get", "configmap", "precious", check=False).returncode == 0


def test_warnings_survive_a_denial(cluster: cluster_mod.Cluster) -> None:
    """When one binding warns and another denies, kubectl shows the warning along with the error."""
    def policy(name: str, expression: str, message: str, action: str) -> list[dict[str, Any]]:
        return [{"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                 "metadata": {"name": name},
                 "spec": {"matchConstraints": {"resourceRules": [{"apiGroups": [""], "apiVersions": ["v1"],
                                                                  "operations": ["CREATE"], "resources": ["secrets"]}]},
                          "validations": [{"expression": expression, "message": message}]}},
                {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                 "metadata": {"name": name + "-binding"},
                 "spec": {"policyName": name, "validationActions": [action]}}]
    items = policy("secret-warn", "object.metadata.name != 'both'", "secret names are watched", "Warn") + \
        policy("secret-deny", "object.metadata.name != 'both'", "secret name refused", "Deny")
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    got = _eventually_denied(cluster, "create", "secret", "generic", "both", want="secret name refused")
    assert "Warning: Validation failed for ValidatingAdmissionPolicy 'secret-warn'" in got.stderr
