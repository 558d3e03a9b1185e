"""Job spec and status rules of 1.32 batch validation: per-index back-off, pod failure and success policies."""

from __future__ import annotations

import json
import re
from typing import Any

from pocketkube.api import errors, names
from pocketkube.api import validation_meta as vm

FE = errors.FieldError

# Limits of the 1.32 batch validation.
_MAX_INDEXED_PARALLELISM = 100_000
_MAX_FAILED_INDEXES = 100_000
_COMPLETIONS_SOFT_LIMIT = 100_000
_HIGH_COMPLETIONS_LIMIT = 10_000
_MAX_POLICY_RULES = 20
_MAX_EXIT_CODES = 255
_MAX_CONDITION_PATTERNS = 20
_MAX_SUCCEEDED_INDEXES_LEN = 64 * 1024
_PFP_ACTIONS = ["Count", "FailIndex", "FailJob", "Ignore"]


def _go_quoted_list(values: list[str]) -> str:
    return "[" + " ".join(json.dumps(v) for v in values) + "]"


def _omitted(field: str, detail: str) -> FE:
    """field.Invalid with field.OmitValueType{}: the message names no value."""
    return FE("Invalid", field, detail=detail)


def _go_ptr(value: Any, typ: str) -> str:
    # Go's %#v prints a set pointer as its address; any fixed address reads the same to a person.
    return f"(*{typ})(nil)" if value is None else f"(*{typ})(0xc000010000)"


def go_success_policy(policy: Any) -> str:
    rules = [f"batch.SuccessPolicyRule{{SucceededIndexes:{_go_ptr(r.get('succeededIndexes'), 'string')}, "
             f"SucceededCount:{_go_ptr(r.get('succeededCount'), 'int32')}}}" for r in vm.dicts(vm.as_dict(policy).get("rules"))]
    inner = "nil" if vm.as_dict(policy).get("rules") is None else "{" + ", ".join(rules) + "}"
    return f"raw:batch.SuccessPolicy{{Rules:[]batch.SuccessPolicyRule{inner}}}"


def _index_interval(text: str, completions: int) -> tuple[int, int]:
    parts = text.split("-")
    if len(parts) > 2:
        raise ValueError(f"the fragment {json.dumps(text)} violates the requirement that an index interval can have "
                         "at most two parts separated by '-'")
    bounds: list[int] = []
    for part in parts:
        if not re.fullmatch(r"[+-]?[0-9]+", part):
            raise ValueError(f"cannot convert string to integer for index: {json.dumps(part)}")
        if int(part) >= completions:
            raise ValueError(f"too large index: {json.dumps(part)}")
        bounds.append(int(part))
    if len(bounds) == 2 and bounds[0] >= bounds[1]:
        raise ValueError(f"non-increasing order, previous: {bounds[0]}, current: {bounds[1]}")
    return bounds[0], bounds[-1]


def index_set_total(text: str, completions: int) -> int:
    """Count the indexes in "1,3-5"; raises ValueError with kube's message for a malformed or unordered list."""
    total, last = 0, None
    for part in text.split(",") if text else []:
        lo, hi = _index_interval(part, completions)
        if last is not None and last >= lo:
            raise ValueError(f"non-increasing order, previous: {last}, current: {lo}")
        total += hi - lo + 1
        last = hi
    return total


def index_limits(spec: dict[str, Any], field: str) -> list[FE]:
    """backoffLimitPerIndex, maxFailedIndexes and the Indexed completion mode limits."""
    out: list[FE] = []
    blpi, mfi, comp, par = (spec.get("backoffLimitPerIndex"), spec.get("maxFailedIndexes"), spec.get("completions"),
                            spec.get("parallelism"))
    out.extend(names.validate_nonnegative(blpi, f"{field}.backoffLimitPerIndex"))
    if mfi is not None:
        out.extend(names.validate_nonnegative(mfi, f"{field}.maxFailedIndexes"))
        if blpi is None:
            out.append(errors.required(f"{field}.backoffLimitPerIndex", "when maxFailedIndexes is specified"))
    mode = spec.get("completionMode")
    if mode is not None and mode not in ("NonIndexed", "Indexed"):
        out.append(errors.unsupported(f"{field}.completionMode", mode, ["NonIndexed", "Indexed"]))
    if mode == "Indexed":
        if comp is None:
            out.append(errors.required(f"{field}.completions", "when completion mode is Indexed"))
        if vm.is_int(par) and par > _MAX_INDEXED_PARALLELISM:
            out.append(errors.invalid(f"{field}.parallelism", par,
                                      "must be less than or equal to 100000 when completion mode is Indexed"))
        if vm.is_int(comp) and vm.is_int(mfi) and mfi > comp:
            out.append(errors.invalid(f"{field}.maxFailedIndexes", mfi, "must be less than or equal to completions"))
        if vm.is_int(mfi) and mfi > _MAX_FAILED_INDEXES:
            out.append(errors.invalid(f"{field}.maxFailedIndexes", mfi, "must be less than or equal to 100000"))
        if vm.is_int(comp) and comp > _COMPLETIONS_SOFT_LIMIT and blpi is not None:
            high = "when completions are above 100000 and used with backoff limit per index"
            if mfi is None:
                out.append(errors.required(f"{field}.maxFailedIndexes", "must be specified when completions is above 100000"))
            if vm.is_int(par) and par > _HIGH_COMPLETIONS_LIMIT:
                out.append(errors.invalid(f"{field}.parallelism", par, f"must be less than or equal to 10000 {high}"))
            if vm.is_int(mfi) and mfi > _HIGH_COMPLETIONS_LIMIT:
                out.append(errors.invalid(f"{field}.maxFailedIndexes", mfi, f"must be less than or equal to 10000 {high}"))
    if mode is None or mode == "NonIndexed":
        if blpi is not None:
            out.append(errors.invalid(f"{field}.backoffLimitPerIndex", blpi, "requires indexed completion mode"))
        if mfi is not None:
            out.append(errors.invalid(f"{field}.maxFailedIndexes", mfi, "requires indexed completion mode"))
    return out


def pod_failure_policy(spec: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    rules = vm.as_list(vm.as_dict(spec.get("podFailurePolicy")).get("rules"))
    if len(rules) > _MAX_POLICY_RULES:
        out.append(errors.too_many(f"{field}.rules", len(rules), _MAX_POLICY_RULES))
    pspec = vm.as_dict(vm.as_dict(spec.get("template")).get("spec"))
    containers = {c.get("name") for c in vm.dicts(pspec.get("containers")) + vm.dicts(pspec.get("initContainers"))}
    for i, rule in enumerate(rules):
        path = f"{field}.rules[{i}]"
        rule = vm.as_dict(rule)
        action = rule.get("action") or ""
        if not action:
            out.append(errors.required(f"{path}.action", f"valid values: {_go_quoted_list(_PFP_ACTIONS)}"))
        elif action == "FailIndex":
            if spec.get("backoffLimitPerIndex") is None:
                out.append(errors.invalid(f"{path}.action", action, "requires the backoffLimitPerIndex to be set"))
        elif action not in _PFP_ACTIONS:
            out.append(errors.unsupported(f"{path}.action", action, _PFP_ACTIONS))
        codes, conds = rule.get("onExitCodes"), vm.as_list(rule.get("onPodConditions"))
        if codes is not None:
            out.extend(_on_exit_codes(vm.as_dict(codes), f"{path}.onExitCodes", containers))
        if conds:
            out.extend(_on_pod_conditions(conds, f"{path}.onPodConditions"))
        if codes is not None and conds:
            out.append(_omitted(path, "specifying both OnExitCodes and OnPodConditions is not supported"))
        if codes is None and not conds:
            out.append(_omitted(path, "specifying one of OnExitCodes and OnPodConditions is required"))
    return out


def _on_pod_conditions(patterns: list[Any], field: str) -> list[FE]:
    out: list[FE] = []
    if len(patterns) > _MAX_CONDITION_PATTERNS:
        out.append(errors.too_many(field, len(patterns), _MAX_CONDITION_PATTERNS))
    for j, pattern in enumerate(patterns):
        pattern = vm.as_dict(pattern)
        out.extend(names.validate_qualified_name(str(pattern.get("type") or ""), f"{field}[{j}].type"))
        status = pattern.get("status") or ""
        if not status:
            out.append(errors.required(f"{field}[{j}].status", 'valid values: ["False" "True" "Unknown"]'))
        elif status not in ("False", "True", "Unknown"):
            out.append(errors.unsupported(f"{field}[{j}].status", status, ["False", "True", "Unknown"]))
    return out


def _on_exit_codes(req: dict[str, Any], field: str, containers: set[Any]) -> list[FE]:
    out: list[FE] = []
    op = req.get("operator") or ""
    if not op:
        out.append(errors.required(f"{field}.operator", 'valid values: ["In" "NotIn"]'))
    elif op not in ("In", "NotIn"):
        out.append(errors.unsupported(f"{field}.operator", op, ["In", "NotIn"]))
    name = req.get("containerName")
    if name is not None and name not in containers:
        out.append(errors.invalid(f"{field}.containerName", name,
                                  "must be one of the container or initContainer names in the pod template"))
    values = [v for v in vm.as_list(req.get("values")) if vm.is_int(v)]
    go_values = "raw:[]int32{" + ", ".join(str(v) for v in values) + "}" if values else "raw:[]int32(nil)"
    if not values:
        out.append(errors.invalid(f"{field}.values", go_values, "at least one value is required"))
    elif len(values) > _MAX_EXIT_CODES:
        out.append(errors.too_many(f"{field}.values", len(values), _MAX_EXIT_CODES))
    seen: set[int] = set()
    for j, v in enumerate(values):
        if op == "In" and v == 0:
            out.append(errors.invalid(f"{field}.values[{j}]", v, "must not be 0 for the In operator"))
        if v in seen:
            out.append(errors.duplicate(f"{field}.values[{j}]", v))
        seen.add(v)
    if any(a > b for a, b in zip(values, values[1:], strict=False)):
        out.append(errors.invalid(f"{field}.values", go_values, "must be ordered"))
    return out


def success_policy(spec: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    rules = vm.as_list(vm.as_dict(spec.get("successPolicy")).get("rules"))
    if not rules:
        out.append(errors.required(f"{field}.rules",
                                   "at least one rules must be specified when the successPolicy is specified"))
    if len(rules) > _MAX_POLICY_RULES:
        out.append(errors.too_many(f"{field}.rules", len(rules), _MAX_POLICY_RULES))
    comp = vm.num(spec.get("completions"))
    for i, rule in enumerate(rules):
        path = f"{field}.rules[{i}]"
        rule = vm.as_dict(rule)
        indexes, count = rule.get("succeededIndexes"), rule.get("succeededCount")
        if indexes is None and count is None:
            out.append(errors.required(path, "at least one of succeededCount or succeededIndexes must be specified"))
        total = 0
        if isinstance(indexes, str):
            if len(indexes) > _MAX_SUCCEEDED_INDEXES_LEN:
                out.append(errors.too_long(f"{path}.succeededIndexes", _MAX_SUCCEEDED_INDEXES_LEN))
            try:
                total = index_set_total(indexes, comp)
            except ValueError as e:
                out.append(errors.invalid(f"{path}.succeededIndexes", indexes, f"error parsing succeededIndexes: {e}"))
        if vm.is_int(count):
            out.extend(names.validate_nonnegative(count, f"{path}.succeededCount"))
            if count > comp:
                out.append(errors.invalid(f"{path}.succeededCount", count,
                                          f"must be less than or equal to {comp} (the number of specified completions)"))
            if indexes is not None and count > total:
                out.append(errors.invalid(f"{path}.succeededCount", count, f"must be less than or equal to {total} "
                                          "(the number of indexes in the specified succeededIndexes field)"))
    return out


def _indexes_error(text: str, completions: int) -> str | None:
    try:
        index_set_total(text, completions)
    except ValueError as e:
        return str(e)
    return None


def status_indexes(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    """completedIndexes/failedIndexes rules, checked (as kube does) only when those fields change."""
    spec, st, ost = vm.as_dict(new.get("spec")), vm.as_dict(new.get("status")), vm.as_dict(old.get("status"))
    completed, failed = st.get("completedIndexes") or "", st.get("failedIndexes")
    completed_changed = completed != (ost.get("completedIndexes") or "")
    failed_changed = failed != ost.get("failedIndexes")
    comp = spec.get("completions")
    out: list[FE] = []
    if completed_changed and vm.is_int(comp) and (err := _indexes_error(completed, comp)):
        out.append(errors.invalid("status.completedIndexes", completed, f"error parsing completedIndexes: {err}"))
    if (failed_changed and vm.is_int(comp) and spec.get("backoffLimitPerIndex") is not None
            and isinstance(failed, str) and (err := _indexes_error(failed, comp))):
        out.append(errors.invalid("status.failedIndexes", failed, f"error parsing failedIndexes: {err}"))
    if completed_changed and completed and spec.get("completionMode") != "Indexed":
        out.append(errors.invalid("status.completedIndexes", completed,
                                  "cannot set non-empty completedIndexes when non-indexed completion mode"))
    if failed_changed and spec.get("backoffLimitPerIndex") is None and failed is not None:
        out.append(errors.invalid("status.failedIndexes", failed,
                                  "cannot set non-null failedIndexes when backoffLimitPerIndex is null"))
    if (failed_changed or completed_changed) and vm.is_int(comp) and isinstance(failed, str):
        both = _overlap_at(completed, failed, comp)
        if both is not None:
            out.append(errors.invalid("status.failedIndexes", failed,
                                      f"failedIndexes and completedIndexes overlap at index: {both}"))
    return out


def _overlap_at(completed: str, failed: str, completions: int) -> int | None:
    """The first index in both lists; unparsable intervals are skipped (the format check reports them)."""
    def intervals(text: str) -> list[tuple[int, int]]:
        out = []
        for part in text.split(",") if text else []:
            try:
                out.append(_index_interval(part, completions))
            except ValueError:
                continue
        return out
    firsts = [max(a, c) for a, b in intervals(completed) for c, d in intervals(failed) if a <= d and c <= b]
    return min(firsts) if firsts else None
