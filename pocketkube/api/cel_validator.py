"""A ValidatingAdmissionPolicy compiled once, and its decisions for one request (kube's validator.Validate)."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from pocketkube.api import cel, cel_policy
from pocketkube.api import validation_meta as vm

Compiled = cel.Program | cel.CompileError


@dataclasses.dataclass(frozen=True)
class Validation:
    expression: str
    program: Compiled
    message: str
    message_program: Compiled | None
    reason: str


@dataclasses.dataclass(frozen=True)
class Policy:
    """The parts of a policy object that admission needs, with every expression compiled."""

    name: str
    generation: int
    failure_policy: str
    param_kind: dict[str, Any] | None
    match_constraints: dict[str, Any] | None
    match_conditions: list[tuple[str, Compiled]]
    variables: list[tuple[str, Compiled]]
    validations: list[Validation]
    audit_annotations: list[tuple[str, str, Compiled]]

    @property
    def fail(self) -> bool:
        return self.failure_policy != "Ignore"


@dataclasses.dataclass(frozen=True)
class Decision:
    """One failed validation (or evaluation error when failing closed): deny, warn or audit per the binding."""

    message: str
    reason: str = "Invalid"
    index: int = 0
    error: bool = False


@dataclasses.dataclass
class Result:
    decisions: list[Decision] = dataclasses.field(default_factory=list)
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)


def _compile(expression: str, *, variables: tuple[str, ...], returns: tuple[str, ...]) -> Compiled:
    try:
        return cel.compile(expression, variables=variables, returns=returns)
    except cel.CompileError as e:
        return e


def compile_policy(obj: dict[str, Any]) -> Policy:
    """Compile every expression of a stored policy; compile errors are kept and surface when the policy runs."""
    meta, spec = vm.as_dict(obj.get("metadata")), vm.as_dict(obj.get("spec"))
    pk = spec.get("paramKind") if isinstance(spec.get("paramKind"), dict) else None
    names = tuple(v for v in cel.VAP_VARIABLES if pk is not None or v != "params")
    no_authz = tuple(v for v in names if v != "authorizer")
    return Policy(
        name=str(meta.get("name") or ""),
        generation=int(meta.get("generation") or 0),
        failure_policy=str(spec.get("failurePolicy") or "Fail"),
        param_kind=pk,
        match_constraints=spec.get("matchConstraints") if isinstance(spec.get("matchConstraints"), dict) else None,
        match_conditions=[(str(c.get("name") or ""), _compile(str(c.get("expression") or ""), variables=names,
                                                              returns=("bool",)))
                          for c in vm.dicts(spec.get("matchConditions"))],
        variables=[(str(v.get("name") or ""), _compile(str(v.get("expression") or ""), variables=names, returns=()))
                   for v in vm.dicts(spec.get("variables"))],
        validations=[Validation(
            expression=str(v.get("expression") or ""),
            program=_compile(str(v.get("expression") or ""), variables=names, returns=("bool",)),
            message=str(v.get("message") or ""),
            message_program=(_compile(str(v["messageExpression"]), variables=no_authz, returns=("string",))
                             if str(v.get("messageExpression") or "").strip() else None),
            reason=str(v.get("reason") or "Invalid"),
        ) for v in vm.dicts(spec.get("validations"))],
        audit_annotations=[(str(a.get("key") or ""), str(a.get("valueExpression") or ""),
                            _compile(str(a.get("valueExpression") or "").strip(), variables=names,
                                     returns=("string", "null_type")))
                           for a in vm.dicts(spec.get("auditAnnotations"))],
    )


class _Failed(Exception):
    pass


class _OutOfBudget(Exception):
    """The evaluation's RuntimeCELCostBudget ran out: kube stops and decides by the failure policy."""


class _Budget:
    """What is left of one evaluation's cost budget; variables are charged when an expression first uses them."""

    def __init__(self) -> None:
        self.left = cel.RUNTIME_COST_BUDGET
        self.variable_costs: dict[str, int] = {}

    def charge(self, spent: int) -> None:
        self.left -= spent
        if self.left < 0:
            raise _OutOfBudget(cel.OUT_OF_BUDGET)

    def charge_variables(self, expression: str) -> None:
        for name in [n for n in self.variable_costs if f"variables.{n}" in expression]:
            self.charge(self.variable_costs.pop(name))


def _run(program: Compiled, expression: str, activation: dict[str, Any], var_errors: dict[str, str],
         budget: _Budget | None = None) -> Any:
    """The expression's value; _Failed carries kube's error text for compile and evaluation errors."""
    if isinstance(program, cel.CompileError):
        raise _Failed(f"compilation error: {program.detail}")
    try:
        if budget is None:
            return program.evaluate(activation)
        budget.charge_variables(expression)
        try:
            value, spent = program.evaluate_costed(activation, limit=budget.left)
        except cel.OutOfBudget:
            raise _OutOfBudget(cel.OUT_OF_BUDGET) from None
        except cel.CostLimitExceeded:
            budget.charge(cel.PER_CALL_LIMIT)  # cel-go reports the cost it reached when it cancelled
            raise
        budget.charge(spent)
        return value
    except cel.EvalError as e:
        message = str(e)
        # A variable that failed to evaluate is absent from `variables`: report its own error instead.
        if (m := re.fullmatch(r"no such key: (\w+)", message)) and m.group(1) in var_errors \
                and f"variables.{m.group(1)}" in expression:
            message = var_errors[m.group(1)]
        raise _Failed(f"expression '{expression}' resulted in error: {message}") from None


def evaluate(policy: Policy, activation: dict[str, Any]) -> Result:
    """Match conditions, then validations and audit annotations, for one binding and one param.

    As kube, the match conditions and then the rest each spend one RuntimeCELCostBudget; running out
    ends the evaluation with one error decided by the failure policy."""
    variables: dict[str, Any] = {}
    var_errors: dict[str, str] = {}
    variable_costs: dict[str, int] = {}
    act = {**activation, "variables": variables}
    for name, program in policy.variables:
        if isinstance(program, cel.CompileError):
            var_errors[name] = f'composited variable "{name}" fails to compile: {program.detail}'
            continue
        try:
            variables[name], variable_costs[name] = program.evaluate_costed(act)
        except cel.EvalError as e:
            var_errors[name] = str(e)
    failures: list[str] = []
    match_budget = _Budget()
    match_budget.variable_costs = dict(variable_costs)
    try:
        for _, program in policy.match_conditions:
            try:
                if _run(program, _expr(program), act, var_errors, match_budget) is False:
                    return Result()
            except _Failed as e:
                failures.append(str(e))
    except _OutOfBudget as e:
        failures = [str(e)]
    budget = _Budget()
    budget.variable_costs = dict(variable_costs)
    try:
        return _validate(policy, act, failures, var_errors, budget)
    except _OutOfBudget as e:
        return Result([Decision(str(e), error=True)]) if policy.fail else Result()


def _validate(policy: Policy, act: dict[str, Any], failures: list[str], var_errors: dict[str, str],
              budget: _Budget) -> Result:
    if failures:
        if not policy.fail:
            return Result()
        return Result([Decision(failures[0] if len(failures) == 1 else "[" + ", ".join(failures) + "]",
                                error=True)])
    result = Result()
    no_authz = {k: v for k, v in act.items() if k != "authorizer"}
    for i, v in enumerate(policy.validations):
        try:
            ok = _run(v.program, v.expression, act, var_errors, budget)
        except _Failed as e:
            if policy.fail:
                result.decisions.append(Decision(str(e), index=i, error=True))
            continue
        if ok is True:
            continue
        result.decisions.append(Decision(_message(v, no_authz, var_errors, budget), reason=v.reason, index=i))
    for key, expression, program in policy.audit_annotations:
        try:
            value = _run(program, expression.strip(), act, var_errors, budget)
        except _Failed as e:
            if policy.fail:
                result.decisions.append(Decision(str(e), error=True))
            continue
        if value is None:
            continue
        if not isinstance(value, str):
            if policy.fail:
                result.decisions.append(Decision(
                    f"valueExpression '{expression}' resulted in unsupported return type: {type(value).__name__}. "
                    "Return type must be either string or null.", error=True))
            continue
        if value.strip():
            result.annotations[key] = value.strip()[:cel_policy.MAX_AUDIT_VALUE]
    return result


def _expr(program: Compiled) -> str:
    return program.expression if isinstance(program, cel.Program) else ""


def _message(v: Validation, activation: dict[str, Any], var_errors: dict[str, str], budget: _Budget) -> str:
    """messageExpression's single-line string when it gives one, else message, else the failed expression."""
    if v.message_program is not None:
        try:
            msg = _run(v.message_program, _expr(v.message_program), activation, var_errors, budget)
        except _Failed:
            msg = None
        if isinstance(msg, str):
            msg = msg.strip()
            if msg and len(msg) <= 5 * 1024 and "\n" not in msg and "\r" not in msg:
                return msg
    if v.message.strip():
        return v.message.strip()
    return f"failed expression: {v.expression.strip()}"
