"""Validation of workloads and their controllers' objects: apps, batch, autoscaling and policy kinds."""

from __future__ import annotations

import json
import re
import zoneinfo
from typing import Any

from pocketkube.api import errors, names, quantity
from pocketkube.api import validation_job as vj
from pocketkube.api import validation_meta as vm
from pocketkube.api import validation_pod as vp

FE = errors.FieldError
_MISMATCH = "`selector` does not match template `labels`"


def _meta(obj: dict[str, Any]) -> list[FE]:
    return vm.validate_metadata(obj.get("metadata"), namespaced=True, name_validator=names.name_is_dns_subdomain)


def _template_labels(tmpl: Any) -> Any:
    return vm.as_dict(vm.as_dict(tmpl).get("metadata")).get("labels")


def _selector_required(spec: dict[str, Any], field: str, what: str) -> list[FE]:
    sel = spec.get("selector")
    if sel is None:
        return [errors.required(field)]
    out = vm.validate_label_selector(sel, field)
    if vm.selector_is_empty(sel):
        out.append(errors.invalid(field, vm.go_selector(sel), f"empty selector is invalid for {what}"))
    return out


def _template_for_replicaset(spec: dict[str, Any], field: str, *, kind: str) -> list[FE]:
    """ValidatePodTemplateSpecForReplicaSet: labels match, pod template valid, restartPolicy Always."""
    tmpl = spec.get("template")
    sel = spec.get("selector")
    out: list[FE] = []
    if not vm.selector_is_empty(sel) and not vm.selector_matches(sel, _template_labels(tmpl)):
        out.append(errors.invalid(f"{field}.metadata.labels", vm.go_map(_template_labels(tmpl)), _MISMATCH))
    out.extend(vp.validate_pod_template_spec(tmpl, field))
    tspec = vm.as_dict(vm.as_dict(tmpl).get("spec"))
    if (tspec.get("restartPolicy") or "") != "Always":
        out.append(errors.unsupported(f"{field}.spec.restartPolicy", tspec.get("restartPolicy") or "", ["Always"]))
    if tspec.get("activeDeadlineSeconds") is not None:
        out.append(errors.forbidden(f"{field}.spec.activeDeadlineSeconds",
                                    f"activeDeadlineSeconds in {kind} is not Supported"))
    return out


# --- Deployment / ReplicaSet ----------------------------------------------------------------

def _rolling_update_deployment(ru: dict[str, Any], field: str) -> list[FE]:
    mu, ms = ru.get("maxUnavailable"), ru.get("maxSurge")
    out = vm.validate_positive_int_or_percent(mu, f"{field}.maxUnavailable")
    out.extend(vm.validate_positive_int_or_percent(ms, f"{field}.maxSurge"))
    if vm.int_or_percent_value(mu) == 0 and vm.int_or_percent_value(ms) == 0:
        out.append(errors.invalid(f"{field}.maxUnavailable", vm.go_intstr(mu), "may not be 0 when `maxSurge` is 0"))
    return out + vm.not_more_than_100_percent(mu, f"{field}.maxUnavailable")


def _deployment_strategy(strategy: dict[str, Any], field: str) -> list[FE]:
    typ = strategy.get("type") or ""
    if typ == "Recreate":
        if strategy.get("rollingUpdate") is not None:
            return [errors.forbidden(f"{field}.rollingUpdate", "may not be specified when strategy `type` is "
                                                               "'Recreate'")]
        return []
    if typ == "RollingUpdate":
        if not isinstance(strategy.get("rollingUpdate"), dict):
            return [errors.required(f"{field}.rollingUpdate", "this should be defaulted and never be nil")]
        return _rolling_update_deployment(strategy["rollingUpdate"], f"{field}.rollingUpdate")
    ru = "(*apps.RollingUpdateDeployment)(nil)" if strategy.get("rollingUpdate") is None \
        else "(*apps.RollingUpdateDeployment)(0xc000000000)"
    value = f"raw:apps.DeploymentStrategy{{Type:{json.dumps(typ)}, RollingUpdate:{ru}}}"
    return [errors.unsupported(field, value, ["Recreate", "RollingUpdate"])]


def validate_deployment(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj)
    spec = vm.as_dict(obj.get("spec"))
    out.extend(names.validate_nonnegative(spec.get("replicas"), "spec.replicas"))
    out.extend(_selector_required(spec, "spec.selector", "deployment"))
    if not vm.selector_is_valid(spec.get("selector")):
        out.append(errors.invalid("spec.selector", vm.go_selector(spec.get("selector")), "invalid label selector"))
    else:
        out.extend(_template_for_replicaset(spec, "spec.template", kind="ReplicaSet"))
    out.extend(_deployment_strategy(vm.as_dict(spec.get("strategy")), "spec.strategy"))
    out.extend(names.validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds"))
    out.extend(names.validate_nonnegative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit"))
    pds = spec.get("progressDeadlineSeconds")
    if vm.is_int(pds):
        out.extend(names.validate_nonnegative(pds, "spec.progressDeadlineSeconds"))
        if pds <= vm.num(spec.get("minReadySeconds")):
            out.append(errors.invalid("spec.progressDeadlineSeconds", pds, "must be greater than minReadySeconds"))
    return out


def validate_replica_set(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj)
    spec = vm.as_dict(obj.get("spec"))
    out.extend(names.validate_nonnegative(spec.get("replicas"), "spec.replicas"))
    out.extend(names.validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds"))
    # Kubernetes really says "deployment" here for ReplicaSets too.
    out.extend(_selector_required(spec, "spec.selector", "deployment"))
    if not vm.selector_is_valid(spec.get("selector")):
        out.append(errors.invalid("spec.selector", vm.go_selector(spec.get("selector")), "invalid label selector"))
    else:
        out.extend(_template_for_replicaset(spec, "spec.template", kind="ReplicaSet"))
    return out


def selector_immutable(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    """apps/v1 forbids changing spec.selector (the registry strategies add this to update validation)."""
    ns, os_ = vm.as_dict(new.get("spec")).get("selector"), vm.as_dict(old.get("spec")).get("selector")
    return vm.immutable(ns, os_, "spec.selector", value=vm.go_selector(ns))


# --- StatefulSet ---------------------------------------------------------------------------

def validate_stateful_set(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj)
    spec = vm.as_dict(obj.get("spec"))
    pmp = spec.get("podManagementPolicy") or ""
    if not pmp:
        out.append(errors.required("spec.podManagementPolicy"))
    elif pmp not in ("OrderedReady", "Parallel"):
        out.append(errors.invalid("spec.podManagementPolicy", pmp, "must be 'OrderedReady' or 'Parallel'"))
    us = vm.as_dict(spec.get("updateStrategy"))
    typ = us.get("type") or ""
    if not typ:
        out.append(errors.required("spec.updateStrategy"))
    elif typ == "OnDelete":
        if us.get("rollingUpdate") is not None:
            out.append(errors.invalid("spec.updateStrategy.rollingUpdate",
                                      "raw:" + json.dumps(us["rollingUpdate"], separators=(",", ":")),
                                      "only allowed for updateStrategy 'RollingUpdate'"))
    elif typ == "RollingUpdate":
        ru = us.get("rollingUpdate")
        if isinstance(ru, dict):
            out.extend(names.validate_nonnegative(ru.get("partition"), "spec.updateStrategy.rollingUpdate.partition"))
    else:
        out.append(errors.invalid("spec.updateStrategy", "raw:" + json.dumps(us, separators=(",", ":")),
                                  "must be 'RollingUpdate' or 'OnDelete'"))
    policy = spec.get("persistentVolumeClaimRetentionPolicy")
    if isinstance(policy, dict):
        for key in ("whenDeleted", "whenScaled"):
            v = policy.get(key) or ""
            if v not in ("Retain", "Delete"):
                out.append(errors.unsupported(f"spec.persistentVolumeClaimRetentionPolicy.{key}", v,
                                              ["Retain", "Delete"]))
    ordinals = spec.get("ordinals")
    if isinstance(ordinals, dict):
        out.extend(names.validate_nonnegative(ordinals.get("start"), "spec.ordinals.start"))
    out.extend(names.validate_nonnegative(spec.get("replicas"), "spec.replicas"))
    out.extend(names.validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds"))
    out.extend(_selector_required(spec, "spec.selector", "statefulset"))
    if not vm.selector_is_valid(spec.get("selector")):
        out.append(errors.invalid("spec.selector", vm.go_selector(spec.get("selector")), ""))
    else:
        tmpl = spec.get("template")
        sel = spec.get("selector")
        if not vm.selector_is_empty(sel) and not vm.selector_matches(sel, _template_labels(tmpl)):
            out.append(errors.invalid("spec.template.metadata.labels", vm.go_map(_template_labels(tmpl)), _MISMATCH))
        # ValidatePodTemplateSpecForStatefulSet checks only the template's metadata: the pod spec
        # (whose volumes come partly from volumeClaimTemplates) is validated when each pod is created.
        tmeta = vm.as_dict(vm.as_dict(tmpl).get("metadata"))
        out.extend(names.validate_labels(tmeta.get("labels"), "spec.template.metadata.labels"))
        out.extend(names.validate_annotations(tmeta.get("annotations"), "spec.template.metadata.annotations"))
    tspec = vm.as_dict(vm.as_dict(spec.get("template")).get("spec"))
    if (tspec.get("restartPolicy") or "") != "Always":
        out.append(errors.unsupported("spec.template.spec.restartPolicy", tspec.get("restartPolicy") or "",
                                      ["Always"]))
    if tspec.get("activeDeadlineSeconds") is not None:
        out.append(errors.forbidden("spec.template.spec.activeDeadlineSeconds",
                                    "activeDeadlineSeconds in StatefulSet is not Supported"))
    return out


_STS_MUTABLE = ("replicas", "ordinals", "template", "updateStrategy", "revisionHistoryLimit",
                "persistentVolumeClaimRetentionPolicy", "minReadySeconds")


def stateful_set_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    ns = {k: v for k, v in vm.as_dict(new.get("spec")).items() if k not in _STS_MUTABLE}
    os_ = {k: v for k, v in vm.as_dict(old.get("spec")).items() if k not in _STS_MUTABLE}
    if ns != os_:
        return [errors.forbidden("spec", "updates to statefulset spec for fields other than 'replicas', 'ordinals', "
                                         "'template', 'updateStrategy', 'revisionHistoryLimit', "
                                         "'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden")]
    return []


# --- DaemonSet -----------------------------------------------------------------------------

def validate_daemon_set(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj)
    spec = vm.as_dict(obj.get("spec"))
    sel = spec.get("selector")
    out.extend(vm.validate_label_selector(sel, "spec.selector"))
    tmpl = spec.get("template")
    if vm.selector_is_valid(sel) and not (vm.selector_is_empty(sel) or vm.selector_matches(sel, _template_labels(tmpl))):
        out.append(errors.invalid("spec.template.metadata.labels", vm.go_map(_template_labels(tmpl)), _MISMATCH))
    if vm.selector_is_empty(sel):
        out.append(errors.invalid("spec.selector", vm.go_selector(sel), "empty selector is invalid for daemonset"))
    out.extend(vp.validate_pod_template_spec(tmpl, "spec.template"))
    tspec = vm.as_dict(vm.as_dict(tmpl).get("spec"))
    if (tspec.get("restartPolicy") or "") != "Always":
        out.append(errors.unsupported("spec.template.spec.restartPolicy", tspec.get("restartPolicy") or "",
                                      ["Always"]))
    if tspec.get("activeDeadlineSeconds") is not None:
        out.append(errors.invalid("spec.template.spec.activeDeadlineSeconds", tspec["activeDeadlineSeconds"],
                                  "activeDeadlineSeconds must be nil for daemonset"))
    out.extend(names.validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds"))
    us = vm.as_dict(spec.get("updateStrategy"))
    typ = us.get("type") or ""
    if typ == "RollingUpdate":
        ru = us.get("rollingUpdate")
        if not isinstance(ru, dict):
            out.append(errors.required("spec.updateStrategy.rollingUpdate"))
        else:
            p = "spec.updateStrategy.rollingUpdate"
            mu, ms = ru.get("maxUnavailable"), ru.get("maxSurge")
            out.extend(vm.validate_positive_int_or_percent(mu, f"{p}.maxUnavailable"))
            out.extend(vm.validate_positive_int_or_percent(ms, f"{p}.maxSurge"))
            out.extend(vm.not_more_than_100_percent(mu, f"{p}.maxUnavailable"))
            out.extend(vm.not_more_than_100_percent(ms, f"{p}.maxSurge"))
            has_u, has_s = vm.int_or_percent_value(mu) != 0, vm.int_or_percent_value(ms) != 0
            if has_u and has_s:
                out.append(errors.invalid(f"{p}.maxSurge", vm.go_intstr(ms), "may not be set when maxUnavailable is "
                                                                              "non-zero"))
            elif not has_u and not has_s:
                out.append(errors.required(f"{p}.maxUnavailable", "cannot be 0 when maxSurge is 0"))
    elif typ != "OnDelete":
        out.append(errors.unsupported("spec.updateStrategy", "raw:" + json.dumps(us, separators=(",", ":")),
                                      ["RollingUpdate", "OnDelete"]))
    out.extend(names.validate_nonnegative(spec.get("revisionHistoryLimit"), "spec.revisionHistoryLimit"))
    return out


# --- Job / CronJob -------------------------------------------------------------------------

def _job_spec(spec: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    for key in ("parallelism", "completions", "activeDeadlineSeconds", "backoffLimit", "ttlSecondsAfterFinished"):
        out.extend(names.validate_nonnegative(spec.get(key), f"{field}.{key}"))
    out.extend(vj.index_limits(spec, field))
    if isinstance(spec.get("podFailurePolicy"), dict):
        out.extend(vj.pod_failure_policy(spec, f"{field}.podFailurePolicy"))
    if spec.get("successPolicy") is not None:
        if spec.get("completionMode") != "Indexed":
            out.append(errors.invalid(f"{field}.successPolicy", vj.go_success_policy(spec["successPolicy"]),
                                      "requires indexed completion mode"))
        else:
            out.extend(vj.success_policy(spec, f"{field}.successPolicy"))
    prp = spec.get("podReplacementPolicy")
    if prp is not None:
        if spec.get("podFailurePolicy") is not None:
            if prp != "Failed":
                out.append(errors.unsupported(f"{field}.podReplacementPolicy", prp, ["Failed"]))
        elif prp not in ("TerminatingOrFailed", "Failed"):
            out.append(errors.unsupported(f"{field}.podReplacementPolicy", prp, ["Failed", "TerminatingOrFailed"]))
    tmpl = spec.get("template")
    out.extend(vp.validate_pod_template_spec(tmpl, f"{field}.template"))
    rp = vm.as_dict(vm.as_dict(tmpl).get("spec")).get("restartPolicy") or ""
    if rp in ("Always", ""):
        out.append(errors.required(f"{field}.template.spec.restartPolicy", 'valid values: "OnFailure", "Never"'))
    elif rp not in ("OnFailure", "Never"):
        out.append(errors.unsupported(f"{field}.template.spec.restartPolicy", rp, ["OnFailure", "Never"]))
    elif spec.get("podFailurePolicy") is not None and rp != "Never":
        out.append(errors.invalid(f"{field}.template.spec.restartPolicy", rp,
                                  'only "Never" is supported when podFailurePolicy is specified'))
    return out


def validate_job(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj)
    meta = vm.as_dict(obj.get("metadata"))
    spec = vm.as_dict(obj.get("spec"))
    tmeta = vm.as_dict(vm.as_dict(spec.get("template")).get("metadata"))
    if spec.get("manualSelector") is not True:
        uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
        if tmeta.get("labels") is None:
            out.append(errors.required("spec.template.metadata.labels"))
        else:
            if not uid:
                out.append(errors.required("metadata.uid"))
            labels = vm.as_dict(tmeta.get("labels"))
            for key, want in (("controller-uid", uid), ("job-name", name),
                              ("batch.kubernetes.io/controller-uid", uid), ("batch.kubernetes.io/job-name", name)):
                if key not in labels:
                    out.append(errors.required(f"spec.template.metadata.labels[{key}]", f"must be '{want}'"))
                elif labels[key] != want:
                    out.append(errors.invalid(f"spec.template.metadata.labels[{key}]", vm.go_map(labels),
                                              f"must be '{want}'"))
            sel = spec.get("selector")
            if vm.selector_is_valid(sel) and sel is not None and \
                    not vm.selector_matches(sel, {"batch.kubernetes.io/controller-uid": uid}):
                out.append(errors.invalid("spec.selector", vm.go_selector(sel), "`selector` not auto-generated"))
    out.extend(_job_spec(spec, "spec"))
    sel = spec.get("selector")
    if sel is None:
        out.append(errors.required("spec.selector"))
    else:
        out.extend(vm.validate_label_selector(sel, "spec.selector"))
    if sel is not None and vm.selector_is_valid(sel) and not vm.selector_matches(sel, tmeta.get("labels")):
        out.append(errors.invalid("spec.template.metadata.labels", vm.go_map(tmeta.get("labels")), _MISMATCH))
    completions = spec.get("completions")
    if spec.get("completionMode") == "Indexed" and vm.is_int(completions) and completions > 0:
        host = f"{meta.get('name') or ''}-{completions - 1}"
        if names.is_dns1123_label(host):
            out.append(errors.invalid("metadata.name", meta.get("name") or "",
                                      f"will not able to create pod with invalid DNS label: {host}"))
    return out


def job_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    ns, os_ = vm.as_dict(new.get("spec")), vm.as_dict(old.get("spec"))
    out: list[FE] = []
    if ns.get("completionMode") != "Indexed" or ns.get("completions") == os_.get("completions") or \
            ns.get("completions") != ns.get("parallelism"):
        out.extend(vm.immutable(ns.get("completions"), os_.get("completions"), "spec.completions"))
    out.extend(vm.immutable(ns.get("selector"), os_.get("selector"), "spec.selector",
                            value=vm.go_selector(ns.get("selector"))))
    nt, ot = ns.get("template"), os_.get("template")
    if nt != ot and os_.get("suspend") is True and not vm.as_dict(old.get("status")).get("startTime"):
        # Suspended jobs that never started may change scheduling directives, labels and annotations.
        nt = json.loads(json.dumps(nt))
        for path in (("metadata", "labels"), ("metadata", "annotations"), ("spec", "nodeSelector"),
                     ("spec", "tolerations"), ("spec", "schedulingGates"), ("spec", "affinity")):
            dst, src = vm.as_dict(nt).get(path[0]), vm.as_dict(vm.as_dict(ot).get(path[0]))
            if isinstance(dst, dict):
                if path[1] in src:
                    dst[path[1]] = src[path[1]]
                else:
                    dst.pop(path[1], None)
    if nt != ot:
        out.append(errors.invalid("spec.template", "raw:" + json.dumps(ns.get("template"), separators=(",", ":")),
                                  vm.IMMUTABLE))
    for key in ("completionMode", "podFailurePolicy", "backoffLimitPerIndex", "managedBy"):
        out.extend(vm.immutable(ns.get(key), os_.get(key), f"spec.{key}"))
    sp = ns.get("successPolicy")
    out.extend(vm.immutable(sp, os_.get("successPolicy"), "spec.successPolicy",
                            value=None if sp is None else vj.go_success_policy(sp)))
    out.extend(vj.status_indexes(new, old))
    return out


_CRON_BOUNDS = (("minute", 0, 59, None), ("hour", 0, 23, None), ("dom", 1, 31, None),
                ("month", 1, 12, ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]),
                ("dow", 0, 6, ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]))
_DESCRIPTORS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def _cron_int(expr: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", expr):
        raise ValueError(f'failed to parse int from {expr}: strconv.Atoi: parsing "{expr}": invalid syntax')
    n = int(expr)
    if n < 0:
        raise ValueError(f"negative number ({n}) not allowed: {expr}")
    return n


def _cron_field(field: str, lo: int, hi: int, named: list[str] | None) -> None:
    for expr in field.split(","):
        range_step = expr.split("/")
        low_high = range_step[0].split("-")
        single = len(low_high) == 1

        def value(s: str) -> int:
            if named and s.lower() in named:
                return named.index(s.lower()) + (1 if lo == 1 else 0)
            return _cron_int(s)

        if low_high[0] in ("*", "?"):
            start, end = lo, hi
        else:
            start = value(low_high[0])
            if len(low_high) == 1:
                end = start
            elif len(low_high) == 2:
                end = value(low_high[1])
            else:
                raise ValueError(f"too many hyphens: {expr}")
        if len(range_step) == 1:
            step = 1
        elif len(range_step) == 2:
            step = _cron_int(range_step[1])
            if single:
                end = hi
        else:
            raise ValueError(f"too many slashes: {expr}")
        if start < lo:
            raise ValueError(f"beginning of range ({start}) below minimum ({lo}): {expr}")
        if end > hi:
            raise ValueError(f"end of range ({end}) above maximum ({hi}): {expr}")
        if start > end:
            raise ValueError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
        if step == 0:
            raise ValueError(f"step of range should be a positive number: {expr}")


def parse_cron(schedule: str) -> None:
    """Check a schedule as robfig/cron's ParseStandard does; raises ValueError with its message."""
    spec = schedule.strip()
    if spec.startswith(("TZ=", "CRON_TZ=")):
        parts = spec.split(None, 1)
        spec = parts[1] if len(parts) > 1 else ""
    if not spec:
        raise ValueError("empty spec string")
    if spec.startswith("@"):
        if spec in _DESCRIPTORS or spec.startswith("@every "):
            return
        raise ValueError(f"unrecognized descriptor: {spec}")
    fields = spec.split()
    if len(fields) != 5:
        raise ValueError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    for text, (_, lo, hi, named) in zip(fields, _CRON_BOUNDS, strict=True):
        _cron_field(text, lo, hi, named)


# One component of a tz database name (the tz "Theory" rules, with digits and + for legacy names).
_TZ_PART = re.compile(r"[A-Za-z.\-_0-9+]{1,14}")


def _time_zone(tz: str) -> list[FE]:
    """kube's validateTimeZone: the name rules, no "Local", and a zone the tz database (LoadLocation) knows."""
    if tz == "":
        return [errors.invalid("spec.timeZone", "", "timeZone must be nil or non-empty string")]
    for part in tz.split("/"):
        if part in (".", "..") or part.startswith("-") or not _TZ_PART.fullmatch(part):
            return [errors.invalid("spec.timeZone", tz, f"unknown time zone {tz}")]
    out: list[FE] = []
    if tz.lower() == "local":
        out.append(errors.invalid("spec.timeZone", tz, "timeZone must be an explicit time zone as defined in "
                                                       "https://www.iana.org/time-zones"))
    if tz not in ("UTC", "Local"):
        if ".." in tz:
            out.append(errors.invalid("spec.timeZone", tz, "time: invalid location name"))
        else:
            try:
                zoneinfo.ZoneInfo(tz)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
                out.append(errors.invalid("spec.timeZone", tz, f"unknown time zone {tz}"))
    return out


def _cron_job_spec(spec: dict[str, Any], old: dict[str, Any] | None) -> list[FE]:
    out: list[FE] = []
    schedule = str(spec.get("schedule") or "")
    tz = spec.get("timeZone")
    if not schedule:
        out.append(errors.required("spec.schedule"))
    else:
        try:
            parse_cron(schedule)
        except ValueError as e:
            out.append(errors.invalid("spec.schedule", schedule, str(e)))
        allow_tz = old is not None and "TZ" in str(old.get("schedule") or "")
        if allow_tz and "TZ" in schedule and tz is not None:
            out.append(errors.invalid("spec.schedule", schedule,
                                      "cannot use both timeZone field and TZ or CRON_TZ in schedule"))
        elif not allow_tz and "TZ" in schedule:
            out.append(errors.invalid("spec.schedule", schedule,
                                      "cannot use TZ or CRON_TZ in schedule, use timeZone field instead"))
    out.extend(names.validate_nonnegative(spec.get("startingDeadlineSeconds"), "spec.startingDeadlineSeconds"))
    if tz is not None and (old is None or old.get("timeZone") != tz):
        out.extend(_time_zone(str(tz)))
    cp = spec.get("concurrencyPolicy") or ""
    if not cp:
        out.append(errors.required("spec.concurrencyPolicy"))
    elif cp not in ("Allow", "Forbid", "Replace"):
        out.append(errors.unsupported("spec.concurrencyPolicy", cp, ["Allow", "Forbid", "Replace"]))
    jt = vm.as_dict(spec.get("jobTemplate"))
    jspec = vm.as_dict(jt.get("spec"))
    out.extend(_job_spec(jspec, "spec.jobTemplate.spec"))
    if jspec.get("selector") is not None:
        out.append(errors.invalid("spec.jobTemplate.spec.selector", vm.go_selector(jspec["selector"]),
                                  "`selector` will be auto-generated"))
    if jspec.get("manualSelector") is True:
        out.append(errors.unsupported("spec.jobTemplate.spec.manualSelector", True, ["nil", "false"]))
    for key in ("successfulJobsHistoryLimit", "failedJobsHistoryLimit"):
        out.extend(names.validate_nonnegative(spec.get(key), f"spec.{key}"))
    return out


def validate_cron_job(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[FE]:
    out = _meta(obj)
    out.extend(_cron_job_spec(vm.as_dict(obj.get("spec")), vm.as_dict(old.get("spec")) if old else None))
    name = str(vm.as_dict(obj.get("metadata")).get("name") or "")
    if old is None and len(name) > 52:
        out.append(errors.invalid("metadata.name", name, "must be no more than 52 characters"))
    return out


# --- HorizontalPodAutoscaler (validated in its autoscaling/v2 form) -----------------------

_METRIC_TYPES = ["ContainerResource", "External", "Object", "Pods", "Resource"]
_METRIC_KEYS = {"Object": "object", "Pods": "pods", "Resource": "resource", "ContainerResource": "containerResource",
                "External": "external"}


def _metric_target(t: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    typ = t.get("type") or ""
    if not typ:
        out.append(errors.required(f"{field}.type", "must specify a metric target type"))
    if typ not in ("Utilization", "Value", "AverageValue"):
        out.append(errors.invalid(f"{field}.type", typ, "must be either Utilization, Value, or AverageValue"))
    for key in ("value", "averageValue"):
        if t.get(key) is not None and quantity.parse(t[key]).sign() != 1:
            out.append(errors.invalid(f"{field}.{key}", str(quantity.parse(t[key])), "must be positive"))
    au = t.get("averageUtilization")
    if vm.is_int(au) and au < 1:
        out.append(errors.invalid(f"{field}.averageUtilization", au, "must be greater than 0"))
    return out


def _metric(m: dict[str, Any], field: str) -> list[FE]:
    typ = m.get("type") or ""
    if not typ:
        return [errors.required(f"{field}.type", "must specify a metric source type")]
    if typ not in _METRIC_TYPES:
        return [errors.unsupported(f"{field}.type", typ, _METRIC_TYPES)]
    out: list[FE] = []
    present = [k for k in _METRIC_KEYS.values() if m.get(k) is not None]
    key = _METRIC_KEYS[typ]
    if key not in present:
        out.append(errors.required(f"{field}.{key}", "must populate information for the given metric source"))
        return out
    if len(present) > 1:
        out.append(errors.forbidden(field, "must populate the given metric source only"))
    src = vm.as_dict(m.get(key))
    p = f"{field}.{key}"
    if key in ("resource", "containerResource"):
        if not src.get("name"):
            out.append(errors.required(f"{p}.name", "must specify a resource name"))
        if key == "containerResource" and not src.get("container"):
            out.append(errors.required(f"{p}.container", "must specify a container"))
        t = vm.as_dict(src.get("target"))
        out.extend(_metric_target(t, f"{p}.target"))
        if t.get("averageUtilization") is None and t.get("averageValue") is None:
            out.append(errors.required(f"{p}.target.averageUtilization",
                                       "must set either a target raw value or a target utilization"))
        elif t.get("averageUtilization") is not None and t.get("averageValue") is not None:
            out.append(errors.forbidden(f"{p}.target.averageValue",
                                        "may not set both a target raw value and a target utilization"))
    else:
        metric = vm.as_dict(src.get("metric"))
        if not metric.get("name"):
            out.append(errors.required(f"{p}.metric.name", "must specify a metric name"))
        if key == "object":
            ref = vm.as_dict(src.get("describedObject"))
            out.extend(_cross_version_ref(ref, f"{p}.describedObject"))
        out.extend(_metric_target(vm.as_dict(src.get("target")), f"{p}.target"))
    return out


def _cross_version_ref(ref: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    for key in ("kind", "name"):
        v = str(ref.get(key) or "")
        if not v:
            out.append(errors.required(f"{field}.{key}"))
        else:
            out.extend(errors.invalid(f"{field}.{key}", v, m) for m in names.is_path_segment_name(v))
    return out


def _scaling_rules(rules: Any, field: str) -> list[FE]:
    if not isinstance(rules, dict):
        return []
    out: list[FE] = []
    sw = rules.get("stabilizationWindowSeconds")
    if vm.is_int(sw):
        if sw < 0:
            out.append(errors.invalid(f"{field}.stabilizationWindowSeconds", sw, "must be greater than or equal to zero"))
        if sw > 3600:
            out.append(errors.invalid(f"{field}.stabilizationWindowSeconds", sw,
                                      "must be less than or equal to 3600"))
    sp = rules.get("selectPolicy")
    if sp is not None and sp not in ("Max", "Min", "Disabled"):
        out.append(errors.unsupported(f"{field}.selectPolicy", sp, ["Disabled", "Max", "Min"]))
    policies = vm.dicts(rules.get("policies"))
    if not policies:
        out.append(errors.required(f"{field}.policies", "must specify at least one Policy"))
    for i, pol in enumerate(policies):
        p = f"{field}.policies[{i}]"
        if pol.get("type") not in ("Pods", "Percent"):
            out.append(errors.unsupported(f"{p}.type", pol.get("type") or "", ["Percent", "Pods"]))
        if vm.num(pol.get("value")) <= 0:
            out.append(errors.invalid(f"{p}.value", vm.num(pol.get("value")), "must be greater than zero"))
        period = vm.num(pol.get("periodSeconds"))
        if period <= 0:
            out.append(errors.invalid(f"{p}.periodSeconds", period, "must be greater than zero"))
        if period > 1800:
            out.append(errors.invalid(f"{p}.periodSeconds", period, "must be less than or equal to 1800"))
    return out


def validate_hpa(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj)
    spec = vm.as_dict(obj.get("spec"))
    mn, mx = spec.get("minReplicas"), vm.num(spec.get("maxReplicas"))
    if vm.is_int(mn) and mn < 1:
        out.append(errors.invalid("spec.minReplicas", mn, "must be greater than or equal to 1"))
    if mx < 1:
        out.append(errors.invalid("spec.maxReplicas", mx, "must be greater than 0"))
    if vm.is_int(mn) and mx < mn:
        out.append(errors.invalid("spec.maxReplicas", mx, "must be greater than or equal to `minReplicas`"))
    out.extend(_cross_version_ref(vm.as_dict(spec.get("scaleTargetRef")), "spec.scaleTargetRef"))
    for i, m in enumerate(vm.dicts(spec.get("metrics"))):
        out.extend(_metric(m, f"spec.metrics[{i}]"))
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        out.extend(_scaling_rules(behavior.get("scaleUp"), "spec.behavior.scaleUp"))
        out.extend(_scaling_rules(behavior.get("scaleDown"), "spec.behavior.scaleDown"))
    return out


# --- PodDisruptionBudget -------------------------------------------------------------------

def validate_pdb(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj)
    spec = vm.as_dict(obj.get("spec"))
    if spec.get("minAvailable") is not None and spec.get("maxUnavailable") is not None:
        out.append(errors.invalid("spec", "raw:" + json.dumps(spec, separators=(",", ":")),
                                  "minAvailable and maxUnavailable cannot be both set"))
    for key in ("minAvailable", "maxUnavailable"):
        if spec.get(key) is not None:
            out.extend(vm.validate_positive_int_or_percent(spec[key], f"spec.{key}"))
            out.extend(vm.not_more_than_100_percent(spec[key], f"spec.{key}"))
    out.extend(vm.validate_label_selector(spec.get("selector"), "spec.selector"))
    upep = spec.get("unhealthyPodEvictionPolicy")
    if upep is not None and upep not in ("AlwaysAllow", "IfHealthyBudget"):
        out.append(errors.unsupported("spec.unhealthyPodEvictionPolicy", upep, ["AlwaysAllow", "IfHealthyBudget"]))
    return out
