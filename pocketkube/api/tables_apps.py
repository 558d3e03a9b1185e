"""Table printers of the workload kinds: apps, batch, autoscaling and policy."""

from __future__ import annotations

import datetime
from typing import Any

from pocketkube.api import tables_docs as docs
from pocketkube.api import tables_fmt as fmt
from pocketkube.api.tables_fmt import AGE, NAME, NONE, Printer, col

Obj = dict[str, Any]
Now = datetime.datetime

def _template_spec(obj: Obj) -> Any:
    return fmt.dig(obj, "spec", "template", "spec")


def _deployment_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    try:
        selector = fmt.selector_string(spec.get("selector"))
    except fmt.SelectorError:
        selector = "<invalid>"
    names, images = fmt.containers_cells(_template_spec(obj))
    return [fmt.name(obj), f"{fmt.as_int(status.get('readyReplicas'))}/{fmt.as_int(spec.get('replicas'), 1)}",
            fmt.as_int(status.get("updatedReplicas")), fmt.as_int(status.get("availableReplicas")),
            fmt.age(obj, now), names, images, selector]


DEPLOYMENT = Printer([
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", docs.DEPLOY_UPDATED),
    col("Available", "string", docs.DEPLOY_AVAILABLE),
    AGE, fmt.CONTAINERS_WIDE, fmt.IMAGES_WIDE,
    col("Selector", "string", docs.DEPLOY_SELECTOR, priority=1),
], _deployment_cells)


def _replica_set_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    names, images = fmt.containers_cells(_template_spec(obj))
    return [fmt.name(obj), fmt.as_int(spec.get("replicas"), 1), fmt.as_int(status.get("replicas")),
            fmt.as_int(status.get("readyReplicas")), fmt.age(obj, now), names, images,
            fmt.format_selector(spec.get("selector"))]


REPLICA_SET = Printer([
    NAME,
    col("Desired", "integer", docs.RS_REPLICAS),
    col("Current", "integer", docs.RS_STATUS_REPLICAS),
    col("Ready", "integer", docs.RS_READY),
    AGE, fmt.CONTAINERS_WIDE, fmt.IMAGES_WIDE,
    col("Selector", "string", docs.RS_SELECTOR, priority=1),
], _replica_set_cells)


def _stateful_set_cells(obj: Obj, now: Now) -> list[Any]:
    ready = fmt.as_int(fmt.dig(obj, "status", "readyReplicas"))
    desired = fmt.as_int(fmt.dig(obj, "spec", "replicas"), 1)
    names, images = fmt.containers_cells(_template_spec(obj))
    return [fmt.name(obj), f"{ready}/{desired}", fmt.age(obj, now), names, images]


STATEFUL_SET = Printer([
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE, fmt.CONTAINERS_WIDE, fmt.IMAGES_WIDE,
], _stateful_set_cells)


def _daemon_set_cells(obj: Obj, now: Now) -> list[Any]:
    status = obj.get("status") or {}
    names, images = fmt.containers_cells(_template_spec(obj))
    return [fmt.name(obj), fmt.as_int(status.get("desiredNumberScheduled")),
            fmt.as_int(status.get("currentNumberScheduled")), fmt.as_int(status.get("numberReady")),
            fmt.as_int(status.get("updatedNumberScheduled")), fmt.as_int(status.get("numberAvailable")),
            fmt.format_labels(fmt.dig(_template_spec(obj), "nodeSelector")), fmt.age(obj, now), names, images,
            fmt.format_selector(fmt.dig(obj, "spec", "selector"))]


DAEMON_SET = Printer([
    NAME,
    col("Desired", "integer", docs.DS_DESIRED),
    col("Current", "integer", docs.DS_CURRENT),
    col("Ready", "integer", docs.DS_READY),
    col("Up-to-date", "integer", docs.DS_UPDATED),
    col("Available", "integer", docs.DS_AVAILABLE),
    col("Node Selector", "string", docs.POD_NODE_SELECTOR),
    AGE, fmt.CONTAINERS_WIDE, fmt.IMAGES_WIDE,
    col("Selector", "string", docs.DS_SELECTOR, priority=1),
], _daemon_set_cells)


def controller_of(obj: Obj) -> str:
    """`kind.group/name` of the controlling owner, lower-cased as formatResourceName does."""
    for ref in fmt.dig(obj, "metadata", "ownerReferences") or []:
        if ref.get("controller") is True:
            api_version = ref.get("apiVersion") or ""
            group = api_version.rsplit("/", 1)[0] if "/" in api_version else ""
            kind = ref.get("kind") or ""
            if not kind and not group:
                return ref.get("name") or ""
            gk = f"{kind}.{group}" if group else kind
            return f"{gk.lower()}/{ref.get('name') or ''}"
    return NONE


CONTROLLER_REVISION = Printer([
    NAME,
    col("Controller", "string", "Controller of the object"),
    col("Revision", "string", docs.CR_REVISION),
    AGE,
], lambda o, now: [fmt.name(o), controller_of(o), fmt.as_int(o.get("revision")), fmt.age(o, now)])


def _job_status(obj: Obj) -> str:
    conditions = fmt.dig(obj, "status", "conditions")

    def has(type_: str) -> bool:
        return fmt.condition_true(conditions, type_)

    if has("Complete"):
        return "Complete"
    if has("Failed"):
        return "Failed"
    if fmt.dig(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    if has("Suspended"):
        return "Suspended"
    if has("FailureTarget"):
        return "FailureTarget"
    return "Running"


def _job_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    succeeded = fmt.as_int(status.get("succeeded"))
    if spec.get("completions") is not None:
        completions = f"{succeeded}/{fmt.as_int(spec.get('completions'))}"
    else:
        parallelism = fmt.as_int(spec.get("parallelism"))
        completions = f"{succeeded}/1 of {parallelism}" if parallelism > 1 else f"{succeeded}/1"
    start = fmt.parse_time(status.get("startTime"))
    done = fmt.parse_time(status.get("completionTime"))
    duration = ""
    if start is not None:
        duration = fmt.human_duration(fmt.span_us(done or now, start))
    names, images = fmt.containers_cells(_template_spec(obj))
    return [fmt.name(obj), _job_status(obj), completions, duration, fmt.age(obj, now), names, images,
            fmt.format_selector(spec.get("selector"))]


JOB = Printer([
    NAME,
    col("Status", "string", "Status of the job."),
    col("Completions", "string", docs.JOB_SUCCEEDED),
    col("Duration", "string", "Time required to complete the job."),
    AGE, fmt.CONTAINERS_WIDE, fmt.IMAGES_WIDE,
    col("Selector", "string", docs.JOB_SELECTOR, priority=1),
], _job_cells)


def _cron_job_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    last = status.get("lastScheduleTime")
    job_spec = fmt.dig(spec, "jobTemplate", "spec") or {}
    names, images = fmt.containers_cells(fmt.dig(job_spec, "template", "spec"))
    return [fmt.name(obj), spec.get("schedule") or "", spec.get("timeZone") or NONE, fmt.go_bool(spec.get("suspend")),
            len(status.get("active") or []), fmt.since(last, now) if last else NONE, fmt.age(obj, now),
            names, images, fmt.format_selector(job_spec.get("selector"))]


CRON_JOB = Printer([
    NAME,
    col("Schedule", "string", docs.CJ_SCHEDULE),
    col("Timezone", "string", docs.CJ_TIMEZONE),
    col("Suspend", "boolean", docs.CJ_SUSPEND),
    col("Active", "integer", docs.CJ_ACTIVE),
    col("Last Schedule", "string", docs.CJ_LAST_SCHEDULE),
    AGE, fmt.CONTAINERS_WIDE, fmt.IMAGES_WIDE,
    col("Selector", "string", docs.JOB_SELECTOR, priority=1),
], _cron_job_cells)

# --- HorizontalPodAutoscaler -----------------------------------------------------------------


def _hpa_v1_to_v2(obj: Obj) -> tuple[list[Obj], list[Obj]]:
    # The internal type is the v2 shape; v1 converts its CPU target into one Resource metric.
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    metrics, current = [], []
    if spec.get("targetCPUUtilizationPercentage") is not None:
        metrics = [{"type": "Resource", "resource": {"name": "cpu", "target": {
            "type": "Utilization", "averageUtilization": spec["targetCPUUtilizationPercentage"]}}}]
    if status.get("currentCPUUtilizationPercentage") is not None:
        current = [{"type": "Resource", "resource": {"name": "cpu", "current": {
            "averageUtilization": status["currentCPUUtilizationPercentage"]}}}]
    return metrics, current


def _q(value: Any) -> str:
    return fmt.UNKNOWN if value is None else fmt.quantity(value)


def format_hpa_metrics(specs: list[Obj], statuses: list[Obj]) -> str:
    if not specs:
        return NONE
    out: list[str] = []
    for i, spec in enumerate(specs):
        st = statuses[i] if i < len(statuses) and isinstance(statuses[i], dict) else {}
        kind = spec.get("type")
        if kind in ("External", "Object"):
            field = kind[0].lower() + kind[1:]
            target = fmt.dig(spec, field, "target") or {}
            cur_src = st.get(field)
            if target.get("averageValue") is not None:
                cur = fmt.dig(cur_src, "current", "averageValue")
                out.append(f"{_q(cur) if cur is not None else fmt.UNKNOWN}/{_q(target['averageValue'])} (avg)")
            else:
                cur = _q(fmt.dig(cur_src, "current", "value")) if cur_src is not None else fmt.UNKNOWN
                out.append(f"{cur}/{_q(target.get('value'))}")
        elif kind == "Pods":
            cur_src = st.get("pods")
            cur = _q(fmt.dig(cur_src, "current", "averageValue")) if cur_src is not None else fmt.UNKNOWN
            out.append(f"{cur}/{_q(fmt.dig(spec, 'pods', 'target', 'averageValue'))}")
        elif kind in ("Resource", "ContainerResource"):
            field = "resource" if kind == "Resource" else "containerResource"
            source = spec.get(field) or {}
            target = source.get("target") or {}
            cur_src = st.get(field)
            if target.get("averageValue") is not None:
                cur = _q(fmt.dig(cur_src, "current", "averageValue")) if cur_src is not None else fmt.UNKNOWN
                out.append(f"{source.get('name', '')}: {cur}/{_q(target['averageValue'])}")
            else:
                util = fmt.dig(cur_src, "current", "averageUtilization")
                cur = f"{util}%" if util is not None else fmt.UNKNOWN
                tgt = f"{target['averageUtilization']}%" if target.get("averageUtilization") is not None else "<auto>"
                out.append(f"{source.get('name', '')}: {cur}/{tgt}")
        else:
            out.append("<unknown type>")
    if len(out) > 2:
        return f"{', '.join(out[:2])} + {len(out) - 2} more..."
    return ", ".join(out)


def _hpa_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    v1 = obj.get("apiVersion") == "autoscaling/v1" or (
        "metrics" not in spec and ("targetCPUUtilizationPercentage" in spec or "currentCPUUtilizationPercentage" in status))
    if v1:
        metrics, current = _hpa_v1_to_v2(obj)
    else:
        metrics, current = spec.get("metrics") or [], status.get("currentMetrics") or []
    ref = spec.get("scaleTargetRef") or {}
    min_pods = str(fmt.as_int(spec["minReplicas"])) if spec.get("minReplicas") is not None else fmt.UNSET
    return [fmt.name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", format_hpa_metrics(metrics, current),
            min_pods, fmt.as_int(spec.get("maxReplicas")), fmt.as_int(status.get("currentReplicas")), fmt.age(obj, now)]


HORIZONTAL_POD_AUTOSCALER = Printer([
    NAME,
    col("Reference", "string", docs.HPA_REF),
    col("Targets", "string", docs.HPA_METRICS),
    col("MinPods", "string", docs.HPA_MIN),
    col("MaxPods", "string", docs.HPA_MAX),
    col("Replicas", "string", docs.HPA_CURRENT),
    AGE,
], _hpa_cells)


def _pdb_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    min_available = fmt.int_or_string(spec["minAvailable"]) if spec.get("minAvailable") is not None else "N/A"
    max_unavailable = fmt.int_or_string(spec["maxUnavailable"]) if spec.get("maxUnavailable") is not None else "N/A"
    return [fmt.name(obj), min_available, max_unavailable, fmt.as_int(fmt.dig(obj, "status", "disruptionsAllowed")),
            fmt.age(obj, now)]


POD_DISRUPTION_BUDGET = Printer([
    NAME,
    col("Min Available", "string", "The minimum number of pods that must be available."),
    col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    AGE,
], _pdb_cells)

PRINTERS: dict[tuple[str, str], Printer] = {
    ("apps", "Deployment"): DEPLOYMENT,
    ("apps", "ReplicaSet"): REPLICA_SET,
    ("apps", "StatefulSet"): STATEFUL_SET,
    ("apps", "DaemonSet"): DAEMON_SET,
    ("apps", "ControllerRevision"): CONTROLLER_REVISION,
    ("batch", "Job"): JOB,
    ("batch", "CronJob"): CRON_JOB,
    ("autoscaling", "HorizontalPodAutoscaler"): HORIZONTAL_POD_AUTOSCALER,
    ("policy", "PodDisruptionBudget"): POD_DISRUPTION_BUDGET,
}
