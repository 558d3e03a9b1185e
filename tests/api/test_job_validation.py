"""Job spec validation for per-index back-off, pod failure and success policies, with kube-apiserver's wording."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from pocketkube.api import defaults, validation, validation_apps, validation_job


def _job(**spec: Any) -> dict[str, Any]:
    template = {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "busybox"}]}}
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j", "namespace": "default", "uid": "u1"},
            "spec": {"template": template, **spec}}


def _errors(obj: dict[str, Any]) -> list[str]:
    obj = copy.deepcopy(obj)
    defaults.apply_defaults(obj, "batch", "v1", "Job")
    defaults.job_prepare_create(obj, "u1")
    return [e.text() for e in validation.validate_create(obj, "batch", "v1", "Job", namespaced=True)]


INDEXED = {"completionMode": "Indexed", "completions": 3, "parallelism": 3}


@pytest.mark.parametrize(("spec", "expected"), [
    ({**INDEXED, "backoffLimitPerIndex": 1, "maxFailedIndexes": 3,
      "successPolicy": {"rules": [{"succeededIndexes": "0-2", "succeededCount": 2}]}}, []),
    ({"backoffLimitPerIndex": 1},
     ["spec.backoffLimitPerIndex: Invalid value: 1: requires indexed completion mode"]),
    ({"completionMode": "NonIndexed", "maxFailedIndexes": 1},
     ["spec.backoffLimitPerIndex: Required value: when maxFailedIndexes is specified",
      "spec.maxFailedIndexes: Invalid value: 1: requires indexed completion mode"]),
    ({**INDEXED, "backoffLimitPerIndex": -1},
     ["spec.backoffLimitPerIndex: Invalid value: -1: must be greater than or equal to 0"]),
    ({**INDEXED, "backoffLimitPerIndex": 1, "maxFailedIndexes": 4},
     ["spec.maxFailedIndexes: Invalid value: 4: must be less than or equal to completions"]),
    ({"completionMode": "Indexed", "completions": 100001, "parallelism": 10001, "backoffLimitPerIndex": 1},
     ["spec.maxFailedIndexes: Required value: must be specified when completions is above 100000",
      "spec.parallelism: Invalid value: 10001: must be less than or equal to 10000 when completions are above "
      "100000 and used with backoff limit per index"]),
    ({"successPolicy": {"rules": []}},
     ["spec.successPolicy: Invalid value: batch.SuccessPolicy{Rules:[]batch.SuccessPolicyRule{}}: "
      "requires indexed completion mode"]),
    ({**INDEXED, "successPolicy": {"rules": []}},
     ["spec.successPolicy.rules: Required value: at least one rules must be specified when the successPolicy is "
      "specified"]),
    ({**INDEXED, "successPolicy": {"rules": [{}]}},
     ["spec.successPolicy.rules[0]: Required value: at least one of succeededCount or succeededIndexes must be "
      "specified"]),
    ({**INDEXED, "successPolicy": {"rules": [{"succeededIndexes": "2-1"}, {"succeededIndexes": "0,7"}]}},
     ['spec.successPolicy.rules[0].succeededIndexes: Invalid value: "2-1": error parsing succeededIndexes: '
      "non-increasing order, previous: 2, current: 1",
      'spec.successPolicy.rules[1].succeededIndexes: Invalid value: "0,7": error parsing succeededIndexes: '
      'too large index: "7"']),
    ({**INDEXED, "successPolicy": {"rules": [{"succeededIndexes": "0,1", "succeededCount": 3}]}},
     ["spec.successPolicy.rules[0].succeededCount: Invalid value: 3: must be less than or equal to 2 (the number "
      "of indexes in the specified succeededIndexes field)"]),
    ({**INDEXED, "successPolicy": {"rules": [{"succeededCount": 4}]}},
     ["spec.successPolicy.rules[0].succeededCount: Invalid value: 4: must be less than or equal to 3 (the number "
      "of specified completions)"]),
    ({**INDEXED, "podFailurePolicy": {"rules": [{"action": "FailIndex",
                                                 "onExitCodes": {"operator": "In", "values": [1]}}]}},
     ['spec.podFailurePolicy.rules[0].action: Invalid value: "FailIndex": requires the backoffLimitPerIndex to '
      "be set"]),
    ({"podFailurePolicy": {"rules": [{"action": "Retry", "onExitCodes": {"operator": "In", "values": [2, 0, 2],
                                                                          "containerName": "nope"}}]}},
     ['spec.podFailurePolicy.rules[0].action: Unsupported value: "Retry": supported values: "Count", "FailIndex", '
      '"FailJob", "Ignore"',
      'spec.podFailurePolicy.rules[0].onExitCodes.containerName: Invalid value: "nope": must be one of the '
      "container or initContainer names in the pod template",
      "spec.podFailurePolicy.rules[0].onExitCodes.values[1]: Invalid value: 0: must not be 0 for the In operator",
      "spec.podFailurePolicy.rules[0].onExitCodes.values[2]: Duplicate value: 2",
      "spec.podFailurePolicy.rules[0].onExitCodes.values: Invalid value: []int32{2, 0, 2}: must be ordered"]),
    ({"podFailurePolicy": {"rules": [{"action": "Ignore"}]}},
     ["spec.podFailurePolicy.rules[0]: Invalid value: specifying one of OnExitCodes and OnPodConditions is "
      "required"]),
    ({"podFailurePolicy": {"rules": [{"action": "Count", "onExitCodes": {"operator": "In", "values": [3]},
                                      "onPodConditions": [{"type": "DisruptionTarget", "status": "Maybe"}]}]}},
     ['spec.podFailurePolicy.rules[0].onPodConditions[0].status: Unsupported value: "Maybe": supported values: '
      '"False", "True", "Unknown"',
      "spec.podFailurePolicy.rules[0]: Invalid value: specifying both OnExitCodes and OnPodConditions is not "
      "supported"]),
    ({"podFailurePolicy": {"rules": [{"action": "Count", "onExitCodes": {"operator": "In", "values": [3]}}]},
      "podReplacementPolicy": "TerminatingOrFailed"},
     ['spec.podReplacementPolicy: Unsupported value: "TerminatingOrFailed": supported values: "Failed"']),
])
def test_job_spec_rules(spec: dict[str, Any], expected: list[str]) -> None:
    """Each invalid Job spec yields exactly kube's field errors, in kube's order."""
    assert _errors(_job(**spec)) == expected


def test_success_policy_and_per_index_limit_immutable() -> None:
    """successPolicy and backoffLimitPerIndex cannot change after creation."""
    old = _job(**INDEXED, backoffLimitPerIndex=1, successPolicy={"rules": [{"succeededCount": 1}]})
    new = copy.deepcopy(old)
    new["spec"]["successPolicy"] = {"rules": [{"succeededCount": 2}]}
    new["spec"]["backoffLimitPerIndex"] = 2
    texts = [e.text() for e in validation_apps.job_update(new, old)]
    assert texts == ["spec.backoffLimitPerIndex: Invalid value: 2: field is immutable",
                     "spec.successPolicy: Invalid value: batch.SuccessPolicy{Rules:[]batch.SuccessPolicyRule{"
                     "batch.SuccessPolicyRule{SucceededIndexes:(*string)(nil), SucceededCount:(*int32)(0xc000010000)}}}: "
                     "field is immutable"]


@pytest.mark.parametrize(("text", "total", "error"), [
    ("", 0, None), ("0,2-4", 4, None), ("1-2,2", 0, "non-increasing order, previous: 2, current: 2"),
    ("a", 0, 'cannot convert string to integer for index: "a"'),
    ("1-2-3", 0, "the fragment \"1-2-3\" violates the requirement that an index interval can have at most two parts "
                 "separated by '-'"),
])
def test_index_set_total(text: str, total: int, error: str | None) -> None:
    """Index lists parse like kube's validateIndexesFormat, with its error messages."""
    if error is None:
        assert validation_job.index_set_total(text, 5) == total
    else:
        with pytest.raises(ValueError, match="^" + error.replace("(", r"\(").replace(")", r"\)") + "$"):
            validation_job.index_set_total(text, 5)


@pytest.mark.parametrize(("spec", "status", "expected"), [
    ({**INDEXED, "backoffLimitPerIndex": 1}, {"completedIndexes": "0", "failedIndexes": "1"}, []),
    ({**INDEXED, "backoffLimitPerIndex": 1}, {"completedIndexes": "0-1", "failedIndexes": "1,2"},
     ['status.failedIndexes: Invalid value: "1,2": failedIndexes and completedIndexes overlap at index: 1']),
    ({**INDEXED, "backoffLimitPerIndex": 1}, {"failedIndexes": "3"},
     ['status.failedIndexes: Invalid value: "3": error parsing failedIndexes: too large index: "3"']),
    (INDEXED, {"failedIndexes": ""},
     ['status.failedIndexes: Invalid value: "": cannot set non-null failedIndexes when backoffLimitPerIndex is null']),
    ({}, {"completedIndexes": "0"},
     ['status.completedIndexes: Invalid value: "0": cannot set non-empty completedIndexes when non-indexed '
      "completion mode"]),
])
def test_status_index_rules(spec: dict[str, Any], status: dict[str, Any], expected: list[str]) -> None:
    """Changed completedIndexes/failedIndexes must parse, fit the spec and not overlap."""
    old = _job(**spec)
    defaults.apply_defaults(old, "batch", "v1", "Job")
    new = copy.deepcopy(old)
    new["status"] = status
    assert [e.text() for e in validation_apps.job_update(new, old)] == expected
    assert validation_apps.job_update(copy.deepcopy(new), new) == []
