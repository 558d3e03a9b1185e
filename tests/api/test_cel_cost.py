"""CEL runtime cost: kube's per-expression limit and per-evaluation budget over ValidatingAdmissionPolicies."""

from __future__ import annotations

import time
from typing import Any

import pytest

from pocketkube.api import cel, cel_validator

ITEMS = {"object": {"spec": {"x": list(range(200))}}}


@pytest.mark.parametrize(("expression", "activation", "want"), [
    ("object.spec.replicas <= 5", {"object": {"spec": {"replicas": 3}}}, 4),
    ("object.metadata.name.startsWith('a')", {"object": {"metadata": {"name": "a" * 100}}}, 4),
    ("object.metadata.name.contains('ab')", {"object": {"metadata": {"name": "a" * 100}}}, 23),
    ("[1, 2, 3].map(x, x * 2).size() > 1", {}, 65),
    ("object.spec.x.all(a, a >= 0)", ITEMS, 1204),
])
def test_cost(expression: str, activation: dict[str, Any], want: int) -> None:
    """Idents, selects and O(1) calls cost 1, string calls their traversal, literals their creation, loops each step."""
    assert cel.cost(cel.compile(expression), activation) == want


@pytest.mark.parametrize("expression", [
    "object.spec.x.all(a, object.spec.x.all(b, object.spec.x.all(c, a + b + c >= 0)))",
    "authorizer.group('').resource('pods').check('get').allowed() && "
    "authorizer.group('').resource('pods').check('list').allowed() && "
    "authorizer.group('').resource('pods').check('watch').allowed()",
])
def test_over_the_per_call_limit(expression: str) -> None:
    """Past PerCallLimit the evaluation is cancelled with cel-go's error, quickly."""
    start = time.monotonic()
    with pytest.raises(cel.CostLimitExceeded, match="^operation cancelled: actual cost limit exceeded$"):
        cel.compile(expression).evaluate(ITEMS)
    assert time.monotonic() - start < 2


def _policy(*expressions: str, failure_policy: str = "Fail") -> cel_validator.Policy:
    return cel_validator.compile_policy({"metadata": {"name": "p"}, "spec": {
        "failurePolicy": failure_policy, "validations": [{"expression": e} for e in expressions]}})


def test_per_call_limit_is_an_expression_error() -> None:
    """An expression over the limit is an evaluation error for the failure policy: Fail denies, Ignore admits."""
    expensive = "object.spec.x.all(a, object.spec.x.all(b, object.spec.x.all(c, true)))"
    result = cel_validator.evaluate(_policy(expensive), ITEMS)
    assert [(d.message, d.error) for d in result.decisions] == [
        (f"expression '{expensive}' resulted in error: operation cancelled: actual cost limit exceeded", True)]
    assert cel_validator.evaluate(_policy(expensive, failure_policy="Ignore"), ITEMS).decisions == []


def test_the_budget_is_shared_by_a_policy() -> None:
    """Expressions each under the limit but together over RuntimeCELCostBudget end the evaluation as kube does."""
    strings = {"object": {"s": "a" * 10_000, "t": "b" * 100}}
    cheap_enough = "!object.s.contains(object.t)"  # a 10000 x 100 traversal: about 100k
    assert 100_000 < cel.cost(cel.compile(cheap_enough), strings) < cel.PER_CALL_LIMIT
    result = cel_validator.evaluate(_policy(*[cheap_enough] * 101), strings)
    assert [(d.message, d.error) for d in result.decisions] == [
        ("validation failed due to running out of cost budget, no further validation rules will be run", True)]
    assert cel_validator.evaluate(_policy(*[cheap_enough] * 101, failure_policy="Ignore"), strings).decisions == []
    assert cel_validator.evaluate(_policy(*[cheap_enough] * 99), strings).decisions == []
