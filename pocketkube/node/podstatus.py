"""A pod's status as the kubelet reports it: phase, conditions, container statuses, IPs, start time."""

from __future__ import annotations

import copy
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.node import runtime

TERMINAL = ("Succeeded", "Failed")
# Conditions the kubelet owns; any other condition type (readiness gates, DisruptionTarget, ...) is
# someone else's and is carried over untouched, ahead of the kubelet's own as its status manager does.
KUBELET_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def _go_list(names: Sequence[str]) -> str:
    # Go prints a []string with %s as [a b c].
    return "[" + " ".join(names) + "]"


def _ts(dt: datetime.datetime | None) -> str | None:
    return clock_mod.rfc3339(dt) if dt is not None else None


def _termination(t: runtime.Termination) -> dict[str, Any]:
    out: dict[str, Any] = {"exitCode": t.exit_code}
    if t.signal:
        out["signal"] = t.signal
    if t.reason:
        out["reason"] = t.reason
    if t.message:
        out["message"] = t.message
    out["startedAt"] = _ts(t.started_at)
    out["finishedAt"] = _ts(t.finished_at)
    if t.container_id:
        out["containerID"] = t.container_id
    return out


def _mounts(container: Mapping[str, Any]) -> list[dict[str, Any]]:
    out = []
    for m in container.get("volumeMounts") or []:
        vm: dict[str, Any] = {"name": m.get("name", ""), "mountPath": m.get("mountPath", "")}
        if m.get("readOnly"):
            vm["readOnly"] = True
            vm["recursiveReadOnly"] = "Disabled"
        out.append(vm)
    return out


def container_status(container: Mapping[str, Any], cs: runtime.ContainerStatus | None, *,
                     waiting_reason: str = "ContainerCreating") -> dict[str, Any]:
    """One v1.ContainerStatus: the runtime's view, or waiting with waiting_reason before it has one."""
    name = str(container.get("name") or "")
    if cs is None:
        return {"name": name, "state": {"waiting": {"reason": waiting_reason}}, "lastState": {},
                "ready": False, "restartCount": 0, "image": container.get("image", ""), "imageID": "",
                "started": False}
    if cs.state == runtime.RUNNING:
        state: dict[str, Any] = {"running": {"startedAt": _ts(cs.started_at)}}
    elif cs.state == runtime.TERMINATED and cs.termination is not None:
        state = {"terminated": _termination(cs.termination)}
    else:
        waiting: dict[str, Any] = {"reason": cs.reason or waiting_reason}
        if cs.message:
            waiting["message"] = cs.message
        state = {"waiting": waiting}
    out: dict[str, Any] = {
        "name": name,
        "state": state,
        "lastState": {"terminated": _termination(cs.last_termination)} if cs.last_termination else {},
        "ready": cs.ready,
        "restartCount": cs.restart_count,
        "image": cs.image,
        "imageID": cs.image_id,
    }
    if cs.container_id:
        out["containerID"] = cs.container_id
    out["started"] = cs.started
    mounts = _mounts(container)
    if mounts:
        out["volumeMounts"] = mounts
    return out


def _started(cs: Mapping[str, Any]) -> bool:
    state = cs.get("state") or {}
    return "running" in state or "terminated" in state or bool((cs.get("lastState") or {}).get("terminated"))


def phase(spec: Mapping[str, Any], init: Sequence[Mapping[str, Any]], main: Sequence[Mapping[str, Any]], *,
          terminal: bool = False) -> str:
    """The pod phase from its container statuses (kubelet's getPhase); terminal: nothing will restart."""
    by_name = {s["name"]: s for s in init}
    pending_init = failed_init = 0
    for c in spec.get("initContainers") or []:
        if runtime.is_sidecar(c):
            continue
        s = by_name.get(c.get("name", ""))
        state = (s or {}).get("state") or {}
        if s is None or "running" in state:
            pending_init += 1
        elif "terminated" in state:
            failed_init += (state["terminated"].get("exitCode") or 0) != 0
        elif "waiting" in state:
            last = (s.get("lastState") or {}).get("terminated")
            if last is not None:
                failed_init += (last.get("exitCode") or 0) != 0
            else:
                pending_init += 1
        else:
            pending_init += 1
    by_name = {s["name"]: s for s in main}
    unknown = running = waiting = stopped = succeeded = 0
    for c in spec.get("containers") or []:
        s = by_name.get(c.get("name", ""))
        state = (s or {}).get("state") or {}
        if s is None:
            unknown += 1
        elif "running" in state:
            running += 1
        elif "terminated" in state:
            stopped += 1
            succeeded += (state["terminated"].get("exitCode") or 0) == 0
        elif "waiting" in state:
            if (s.get("lastState") or {}).get("terminated") is not None:
                stopped += 1
            else:
                waiting += 1
        else:
            unknown += 1
    policy = spec.get("restartPolicy") or "Always"
    if failed_init > 0 and policy == "Never":
        return "Failed"
    if (pending_init > 0 and not any(_started(s) for s in main)) or waiting > 0:
        return "Pending"
    if running > 0 and unknown == 0:
        return "Running"
    if running == 0 and stopped > 0 and unknown == 0:
        if terminal:
            return "Succeeded" if stopped == succeeded else "Failed"
        if policy == "Always":
            return "Running"
        if stopped == succeeded:
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"
    return "Pending"


def _cond(ctype: str, status: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"type": ctype, "status": "True" if status else "False"}
    if reason:
        out["reason"] = reason
    if message:
        out["message"] = message
    return out


def initialized(spec: Mapping[str, Any], init: Sequence[Mapping[str, Any]], main: Sequence[Mapping[str, Any]],
                pod_phase: str) -> dict[str, Any]:
    """The Initialized condition (kubelet's GeneratePodInitializedCondition)."""
    inits = spec.get("initContainers") or []
    if not inits:
        return _cond("Initialized", True)
    by_name = {s["name"]: s for s in init}
    unknown, incomplete = [], []
    for c in inits:
        name = c.get("name", "")
        s = by_name.get(name)
        if s is None:
            unknown.append(name)
            continue
        if not s.get("started" if runtime.is_sidecar(c) else "ready"):
            incomplete.append(name)
    if pod_phase == "Succeeded" and not unknown:
        return _cond("Initialized", True, "PodCompleted")
    if any(_started(s) for s in main):
        return _cond("Initialized", True)
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_go_list(unknown)}")
    if incomplete:
        messages.append(f"containers with incomplete status: {_go_list(incomplete)}")
    if messages:
        return _cond("Initialized", False, "ContainersNotInitialized", ", ".join(messages))
    return _cond("Initialized", True)


def containers_ready(spec: Mapping[str, Any], init: Sequence[Mapping[str, Any]],
                     main: Sequence[Mapping[str, Any]], pod_phase: str) -> dict[str, Any]:
    """The ContainersReady condition: every main container and sidecar ready."""
    init_by = {s["name"]: s for s in init}
    main_by = {s["name"]: s for s in main}
    unknown, unready = [], []
    wanted = [(c, init_by) for c in spec.get("initContainers") or [] if runtime.is_sidecar(c)]
    wanted += [(c, main_by) for c in spec.get("containers") or []]
    for c, by in wanted:
        name = c.get("name", "")
        s = by.get(name)
        if s is None:
            unknown.append(name)
        elif not s.get("ready"):
            unready.append(name)
    if pod_phase == "Succeeded" and not unknown:
        return _cond("ContainersReady", False, "PodCompleted")
    if pod_phase == "Failed":
        return _cond("ContainersReady", False, "PodFailed")
    messages = []
    if unknown:
        messages.append(f"containers with unknown status: {_go_list(unknown)}")
    if unready:
        messages.append(f"containers with unready status: {_go_list(unready)}")
    if messages:
        return _cond("ContainersReady", False, "ContainersNotReady", ", ".join(messages))
    return _cond("ContainersReady", True)


def ready(spec: Mapping[str, Any], containers_ready_cond: Mapping[str, Any],
          conditions: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The Ready condition: ContainersReady, then every readiness gate's condition True."""
    if containers_ready_cond.get("status") != "True":
        return _cond("Ready", False, str(containers_ready_cond.get("reason") or ""),
                     str(containers_ready_cond.get("message") or ""))
    by_type = {c.get("type"): c for c in conditions}
    messages = []
    for gate in spec.get("readinessGates") or []:
        ctype = gate.get("conditionType", "")
        c = by_type.get(ctype)
        if c is None:
            messages.append(f'corresponding condition of pod readiness gate "{ctype}" does not exist.')
        elif c.get("status") != "True":
            messages.append(f'the status of pod readiness gate "{ctype}" is not "True", but {c.get("status")}')
    if messages:
        return _cond("Ready", False, "ReadinessGatesNotReady", ", ".join(messages))
    return _cond("Ready", True)


def _stamp(conds: list[dict[str, Any]], old: Sequence[Mapping[str, Any]], now: str) -> list[dict[str, Any]]:
    """Give each condition lastProbeTime null and a lastTransitionTime kept while its status holds."""
    previous = {c.get("type"): c for c in old}
    out = []
    for c in conds:
        prev = previous.get(c["type"])
        kept = prev is not None and prev.get("status") == c["status"] and prev.get("lastTransitionTime")
        stamped = {"type": c["type"], "status": c["status"], "lastProbeTime": None,
                   "lastTransitionTime": prev["lastTransitionTime"] if kept and prev else now}
        for k in ("reason", "message"):
            if k in c:
                stamped[k] = c[k]
        out.append(stamped)
    return out


def compute(pod: Mapping[str, Any], rt: runtime.PodStatus | None, *, host_ip: str, now: datetime.datetime,
            terminal: bool = False, failure: tuple[str, str] | None = None) -> dict[str, Any]:
    """The status the kubelet would write for pod given the runtime's view of it at `now`.

    terminal: the pod is being (or has been) torn down for good, so stopped containers settle its phase;
    failure: (reason, message) of a pod the kubelet failed on purpose (e.g. DeadlineExceeded)."""
    spec = pod.get("spec") or {}
    old: dict[str, Any] = copy.deepcopy(dict(pod.get("status") or {}))
    stamp = clock_mod.rfc3339(now)
    init_specs = spec.get("initContainers") or []
    main_specs = spec.get("containers") or []
    rt_init = rt.init_containers if rt else {}
    rt_main = rt.containers if rt else {}

    init = [container_status(c, rt_init.get(c.get("name", "")), waiting_reason="PodInitializing")
            for c in init_specs]
    for c, s in zip(init_specs, init, strict=True):
        if not runtime.is_sidecar(c):
            # The kubelet's prober: a plain init container is ready once it exited 0, never while it runs.
            term = (s.get("state") or {}).get("terminated")
            s["ready"] = term is not None and term.get("exitCode") == 0
    init_pending = any(
        not runtime.is_sidecar(c) and "terminated" not in (s.get("state") or {}) for c, s in zip(init_specs, init, strict=True)
    ) or any(runtime.is_sidecar(c) and not s.get("started") for c, s in zip(init_specs, init, strict=True))
    main = [container_status(c, rt_main.get(c.get("name", "")),
                             waiting_reason="PodInitializing" if init_pending else "ContainerCreating")
            for c in main_specs]
    main.sort(key=lambda s: s["name"])

    pod_phase = old.get("phase") if old.get("phase") in TERMINAL else phase(spec, init, main, terminal=terminal)
    pod_phase = "Failed" if failure else str(pod_phase)

    foreign = [c for c in old.get("conditions") or [] if c.get("type") not in KUBELET_CONDITIONS]
    cr = containers_ready(spec, init, main, pod_phase)
    own = [
        _cond("PodReadyToStartContainers", bool(rt and rt.network_ready)),
        initialized(spec, init, main, pod_phase),
        ready(spec, cr, foreign),
        cr,
    ]
    conditions = foreign + _stamp(own, old.get("conditions") or [], stamp)
    scheduled = next((c for c in old.get("conditions") or [] if c.get("type") == "PodScheduled"), None)
    if scheduled is not None and scheduled.get("status") == "True":
        conditions.append(scheduled)
    else:
        conditions += _stamp([_cond("PodScheduled", True)], old.get("conditions") or [], stamp)

    status = old
    status["phase"] = pod_phase
    if failure:
        status["reason"], status["message"] = failure
    status["conditions"] = conditions
    status["hostIP"] = host_ip
    status["hostIPs"] = [{"ip": host_ip}]
    ips = list(rt.ips) if rt and rt.ips else [p.get("ip") for p in old.get("podIPs") or [] if p.get("ip")]
    if ips:
        status["podIP"] = ips[0]
        status["podIPs"] = [{"ip": ip} for ip in ips]
    status["startTime"] = old.get("startTime") or stamp
    if init:
        status["initContainerStatuses"] = init
    status["containerStatuses"] = main
    return status
