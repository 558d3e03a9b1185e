"""Specification of webhook configuration defaults and validation, with kube 1.32's field errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketkube.api import webhookconfig


def config(**hook_fields: Any) -> dict[str, Any]:
    hook = {"name": "check.example.com", "clientConfig": {"url": "https://127.0.0.1:9443/validate"},
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
            "sideEffects": "None", "admissionReviewVersions": ["v1"]}
    hook.update(hook_fields)
    return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "cfg"}, "webhooks": [{k: v for k, v in hook.items() if v is not None}]}


def test_defaults():
    """Missing optional fields get kube's v1 defaults, mutating webhooks a reinvocationPolicy too."""
    obj = config(clientConfig={"service": {"namespace": "ns", "name": "svc"}})
    webhookconfig.apply_defaults(obj, mutating=True)
    hook = obj["webhooks"][0]
    assert {k: hook[k] for k in ("failurePolicy", "matchPolicy", "namespaceSelector", "objectSelector",
                                 "timeoutSeconds", "reinvocationPolicy")} == {
        "failurePolicy": "Fail", "matchPolicy": "Equivalent", "namespaceSelector": {}, "objectSelector": {},
        "timeoutSeconds": 10, "reinvocationPolicy": "Never"}
    assert hook["rules"][0]["scope"] == "*"
    assert hook["clientConfig"]["service"]["port"] == 443
    validating = config()
    webhookconfig.apply_defaults(validating, mutating=False)
    assert "reinvocationPolicy" not in validating["webhooks"][0]


@pytest.mark.parametrize("fields,want", [
    ({}, []),
    ({"name": "check"}, ['webhooks[0].name: Invalid value: "check": should be a domain with at least three '
                         "segments separated by dots"]),
    ({"sideEffects": None}, ["webhooks[0].sideEffects: Required value: must specify one of None, NoneOnDryRun"]),
    ({"sideEffects": "Some"}, ['webhooks[0].sideEffects: Unsupported value: "Some": supported values: "None", '
                               '"NoneOnDryRun"']),
    ({"admissionReviewVersions": None},
     ["webhooks[0].admissionReviewVersions: Required value: must specify one of v1, v1beta1"]),
    ({"admissionReviewVersions": ["v2"]},
     ['webhooks[0].admissionReviewVersions: Invalid value: []string{"v2"}: must include at least one of v1, '
      "v1beta1"]),
    ({"timeoutSeconds": 31}, ["webhooks[0].timeoutSeconds: Invalid value: 31: the timeout value must be between 1 "
                              "and 30 seconds"]),
    ({"failurePolicy": "Maybe"}, ['webhooks[0].failurePolicy: Unsupported value: "Maybe": supported values: '
                                  '"Fail", "Ignore"']),
    ({"clientConfig": {}}, ["webhooks[0].clientConfig: Required value: exactly one of url or service is required"]),
    ({"clientConfig": {"url": "http://127.0.0.1/x"}},
     ['webhooks[0].clientConfig.url: Invalid value: "http": \'https\' is the only allowed URL scheme; desired '
      "format: https://host[/path]"]),
    ({"clientConfig": {"service": {"name": "s", "namespace": "n", "path": "no-slash"}}},
     ['webhooks[0].clientConfig.service.path: Invalid value: "no-slash": must start with a \'/\'']),
    ({"rules": [{"operations": ["CREATE", "*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}]},
     ['webhooks[0].rules[0].operations: Invalid value: []admissionregistration.OperationType{"CREATE", "*"}: if \'*\' is present, must not '
      "specify other operations"]),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                 "resources": ["pods/*", "pods/status"]}]},
     ['webhooks[0].rules[0].resources[1]: Invalid value: "pods/status": if \'pods/*\' is present, must not '
      "specify pods/status"]),
    ({"rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*", "pods"]}]},
     ['webhooks[0].rules[0].resources: Invalid value: []string{"*", "pods"}: if \'*\' is present, must not '
      "specify other resources without subresources"]),
    ({"matchConditions": [{"name": "c", "expression": "object.metadata.name =="}]},
     None),  # a compile error, worded by api/cel.py
])
def test_validate(fields, want):
    """Each invalid field yields kube's field error."""
    got = [e.text() for e in webhookconfig.validate(config(**fields), mutating=False)]
    if want is None:
        assert len(got) == 1 and got[0].startswith("webhooks[0].matchConditions[0].expression: Invalid value")
    else:
        assert got == want


def test_duplicate_names():
    """Two webhooks of one configuration may not share a name."""
    obj = config()
    obj["webhooks"].append(copy.deepcopy(obj["webhooks"][0]))
    got = [e.text() for e in webhookconfig.validate(obj, mutating=True)]
    assert got == ['webhooks[1].name: Duplicate value: "check.example.com"']
