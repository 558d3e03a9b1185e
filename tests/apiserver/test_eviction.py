"""Specification of the eviction subresource's decisions: which budgets apply and what a disruption costs."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.apiserver import eviction

NOW = "2026-01-01T00:00:00Z"


def pod(*, phase: str = "Running", ready: bool = True, deleting: bool = False, labels=None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "web-1", "namespace": "default", "labels": {"app": "web"} if labels is None else labels}
    if deleting:
        meta["deletionTimestamp"] = NOW
    return {"metadata": meta, "status": {"phase": phase,
                                         "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}


def pdb(name: str = "web", *, selector: Any = None, allowed: int = 1, current: int = 3, desired: int = 2,
        generation: int = 1, observed: int = 1, disrupted: dict[str, str] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"observedGeneration": observed, "disruptionsAllowed": allowed, "currentHealthy": current,
                              "desiredHealthy": desired, "expectedPods": 3,
                              "conditions": [{"type": "DisruptionAllowed", "status": "True" if allowed else "False",
                                              "observedGeneration": observed, "lastTransitionTime": "2025-01-01T00:00:00Z",
                                              "reason": "SufficientPods" if allowed else "InsufficientPods",
                                              "message": ""}]}
    if disrupted:
        status["disruptedPods"] = disrupted
    return {"metadata": {"name": name, "namespace": "default", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "web"}} if selector is None else selector},
            "status": status}


@pytest.mark.parametrize("p,want", [
    (pod(), False),
    (pod(phase="Pending"), True),
    (pod(phase="Succeeded"), True),
    (pod(phase="Failed"), True),
    (pod(deleting=True), True),
])
def test_can_ignore_pdb(p, want):
    """Pending, finished and terminating pods are evicted without consulting a budget."""
    assert eviction.can_ignore_pdb(p) is want


@pytest.mark.parametrize("p,want", [
    (pod(), True),
    (pod(phase="Pending"), True),
    (pod(phase="Failed"), False),
    (pod(deleting=True), False),
])
def test_should_enforce_resource_version(p, want):
    """Only pods that could still turn ready are deleted under a resourceVersion precondition."""
    assert eviction.should_enforce_resource_version(p) is want


@pytest.mark.parametrize("budgets,labels,want", [
    ([pdb()], None, ["web"]),
    ([pdb(), pdb("db", selector={"matchLabels": {"app": "db"}})], None, ["web"]),
    ([pdb(), pdb("all-web", selector={"matchExpressions": [{"key": "app", "operator": "Exists"}]})], None,
     ["web", "all-web"]),
    # An empty selector covers nothing here (kube's eviction guard), nor does a broken one.
    ([pdb(selector={})], None, []),
    ([pdb(selector={"matchExpressions": [{"key": "app", "operator": "Bogus"}]})], None, []),
    ([pdb()], {}, []),
])
def test_matching_pdbs(budgets, labels, want):
    """The budgets an eviction must respect are those whose non-empty selector matches the pod's labels."""
    out = eviction.matching_pdbs(pod(labels=labels), budgets)
    assert [b["metadata"]["name"] for b in out] == want


def test_check_and_decrement_allows_one():
    """An allowed disruption is spent: the count drops, the pod is recorded, the condition turns False at zero."""
    out = eviction.check_and_decrement(pdb(allowed=1), "web-1", NOW, dry_run=False)
    status = out["status"]
    assert status["disruptionsAllowed"] == 0
    assert status["disruptedPods"] == {"web-1": NOW}
    cond = status["conditions"][0]
    assert (cond["status"], cond["reason"], cond["lastTransitionTime"]) == ("False", "InsufficientPods", NOW)


def test_check_and_decrement_dry_run_records_nothing():
    """A dry run checks the budget but writes no disrupted pod."""
    out = eviction.check_and_decrement(pdb(allowed=2), "web-1", NOW, dry_run=True)
    assert out["status"]["disruptionsAllowed"] == 1
    assert "disruptedPods" not in out["status"]
    assert out["status"]["conditions"][0]["status"] == "True"


def test_check_and_decrement_refuses_with_kube_words():
    """With no disruption allowed the answer is 429 with a DisruptionBudget cause naming the numbers."""
    with pytest.raises(errors.TooManyRequests) as e:
        eviction.check_and_decrement(pdb(allowed=0, current=2, desired=2), "web-1", NOW, dry_run=False)
    assert e.value.status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "Cannot evict pod as it would violate the pod's disruption budget.",
        "reason": "TooManyRequests",
        "details": {"causes": [{"reason": "DisruptionBudget",
                                "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]},
        "code": 429}
    assert "Retry-After" not in e.value.headers


def test_check_and_decrement_unobserved_generation():
    """A budget the controller has not caught up with asks the client to come back in 10 s."""
    with pytest.raises(errors.TooManyRequests) as e:
        eviction.check_and_decrement(pdb(generation=2, observed=1), "web-1", NOW, dry_run=False)
    assert e.value.details == {"causes": [{"reason": "DisruptionBudget", "message":
                                           "The disruption budget web is still being processed by the server."}],
                               "retryAfterSeconds": 10}
    assert e.value.headers == {"Retry-After": "10"}


@pytest.mark.parametrize("budget,message", [
    (pdb(allowed=-1), 'poddisruptionbudget.policy "web" is forbidden: pdb disruptions allowed is negative'),
    (pdb(disrupted={f"p{i}": NOW for i in range(2001)}),
     'poddisruptionbudget.policy "web" is forbidden: DisruptedPods map too big - too many evictions not confirmed '
     "by PDB controller"),
])
def test_check_and_decrement_forbidden(budget, message):
    """A negative allowance or too many unconfirmed evictions is refused outright (403)."""
    with pytest.raises(errors.Forbidden, match="^" + message + "$"):
        eviction.check_and_decrement(budget, "web-1", NOW, dry_run=False)


@pytest.mark.parametrize("p,opts,ok", [
    (pod(), {}, True),
    (pod(), {"preconditions": {"uid": "other"}}, False),
    (pod(), {"preconditions": {"resourceVersion": "9"}}, False),
])
def test_check_preconditions(p, opts, ok):
    """DeleteOptions preconditions are checked against the pod as it is now (409 otherwise)."""
    p["metadata"]["uid"], p["metadata"]["resourceVersion"] = "u1", "5"
    if ok:
        eviction.check_preconditions(p, opts)
    else:
        with pytest.raises(errors.Conflict, match="Precondition failed"):
            eviction.check_preconditions(p, opts)
