"""End to end: CEL cost limits and the authorizer variable in ValidatingAdmissionPolicies, driven by the real kubectl."""

from __future__ import annotations

import json
from typing import Any

import yaml

from tests.e2e import cluster as cluster_mod


def _policy(name: str, expression: str, *, failure_policy: str = "Fail") -> str:
    docs: list[dict[str, Any]] = [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": failure_policy, "matchConstraints": {"resourceRules": [
             {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]},
             "matchConditions": [{"name": "mine", "expression": f"object.metadata.name.startsWith('{name}')"}],
             "validations": [{"expression": expression}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": f"{name}-binding"},
         "spec": {"policyName": name, "validationActions": ["Deny"]}},
    ]
    return yaml.safe_dump_all(docs)


def _configmap(name: str, keys: int) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
                       "data": {f"k{i}": "v" for i in range(keys)}})


def _create_until(cluster: cluster_mod.Cluster, name: str, keys: int, want: str, *user: str) -> str:
    """Policies arrive through a watch: retry the create until the answer contains want."""
    def attempt() -> str | None:
        got = cluster.kubectl(*user, "create", "-f", "-", input=_configmap(name, keys), check=False)
        if got.returncode == 0:
            cluster.kubectl("delete", "configmap", name, check=False)
        return got.stderr if want in got.stderr else None
    return cluster_mod.eventually(attempt, what=f"create {name} answered with {want!r}")


def test_expression_over_the_per_call_limit(cluster: cluster_mod.Cluster) -> None:
    """An expression costing more than PerCallLimit is cancelled; failurePolicy Fail denies with cel-go's error."""
    expression = "object.data.all(a, object.data.all(b, object.data.all(c, a != '' && b != '' && c != '')))"
    cluster.kubectl("apply", "-f", "-", input=_policy("costly", expression))
    err = _create_until(cluster, "costly-cm", 60, "cost limit")
    assert err == ('The configmaps "costly-cm" is invalid: : ValidatingAdmissionPolicy \'costly\' with binding '
                   f"'costly-binding' denied request: expression '{expression}' resulted in error: operation "
                   "cancelled: actual cost limit exceeded\n")
    # A small map stays well under the limit.
    cluster.kubectl("create", "-f", "-", input=_configmap("costly-small", 3))


def test_ignore_admits_over_the_limit(cluster: cluster_mod.Cluster) -> None:
    """With failurePolicy Ignore an expression over the limit admits the request."""
    expression = "object.data.all(a, object.data.all(b, object.data.all(c, a != '' && b != '' && c != '')))"
    cluster.kubectl("apply", "-f", "-", input=_policy("lenient", expression, failure_policy="Ignore"))
    cluster.kubectl("create", "-f", "-", input=_policy("lenient-probe", "false"))
    # Once the probe policy denies, the lenient one has arrived too (both come through one watch).
    _create_until(cluster, "lenient-probe-cm", 1, "denied request")
    cluster.kubectl("create", "-f", "-", input=_configmap("lenient-cm", 60))


def test_authorizer_variable_uses_rbac(cluster: cluster_mod.Cluster) -> None:
    """authorizer.group(..).resource(..).check(verb).allowed() answers from RBAC for the requesting user."""
    expression = "authorizer.group('').resource('secrets').namespace('default').check('delete').allowed()"
    cluster.kubectl("apply", "-f", "-", input=_policy("authz", expression))
    cluster.kubectl("create", "role", "cm-maker", "--verb=create", "--resource=configmaps")
    cluster.kubectl("create", "rolebinding", "cm-maker", "--role=cm-maker", "--user=carol")
    err = _create_until(cluster, "authz-carol", 1, "denied request", "--as=carol")
    assert err == ('The configmaps "authz-carol" is invalid: : ValidatingAdmissionPolicy \'authz\' with binding '
                   f"'authz-binding' denied request: failed expression: {expression}\n")
    cluster.kubectl("create", "-f", "-", input=_configmap("authz-admin", 1))
