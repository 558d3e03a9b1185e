"""Specification of the pod status the node agent reports: phase, conditions, container statuses."""

from __future__ import annotations

import datetime

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import podstatus, runtime

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T0S = "2026-01-01T00:00:00Z"
LATER = T0 + datetime.timedelta(seconds=30)
LATERS = "2026-01-01T00:00:30Z"


def running(name="c"):
    return {"name": name, "state": {"running": {"startedAt": T0S}}, "ready": True, "started": True}


def terminated(name="c", code=0):
    return {"name": name, "state": {"terminated": {"exitCode": code}}, "ready": False}


def waiting(name="c", *, crashed=None):
    s = {"name": name, "state": {"waiting": {"reason": "X"}}, "ready": False}
    if crashed is not None:
        s["lastState"] = {"terminated": {"exitCode": crashed}}
    return s


def spec(*names, policy="Always", init=(), sidecars=()):
    s = {"restartPolicy": policy, "containers": [{"name": n, "image": "nginx:1.25"} for n in names]}
    inits = [{"name": n, "image": "busybox"} for n in init]
    inits += [{"name": n, "image": "busybox", "restartPolicy": "Always"} for n in sidecars]
    if inits:
        s["initContainers"] = inits
    return s


@pytest.mark.parametrize("pod_spec,init,main,terminal,want", [
    (spec("c"), [], [], False, "Pending"),
    (spec("c"), [], [waiting()], False, "Pending"),
    (spec("c"), [], [running()], False, "Running"),
    (spec("a", "b"), [], [running("a"), terminated("b")], False, "Running"),
    (spec("c"), [], [terminated(code=0)], False, "Running"),
    (spec("c", policy="Never"), [], [terminated(code=0)], False, "Succeeded"),
    (spec("c", policy="Never"), [], [terminated(code=2)], False, "Failed"),
    (spec("c", policy="OnFailure"), [], [terminated(code=0)], False, "Succeeded"),
    (spec("c", policy="OnFailure"), [], [terminated(code=1)], False, "Running"),
    (spec("c", policy="OnFailure"), [], [waiting(crashed=1)], False, "Running"),
    (spec("c"), [], [terminated(code=0)], True, "Succeeded"),
    (spec("c"), [], [terminated(code=137)], True, "Failed"),
    (spec("c", init=["i"]), [], [waiting()], False, "Pending"),
    (spec("c", init=["i"]), [running("i")], [], False, "Pending"),
    (spec("c", init=["i"], policy="Never"), [terminated("i", 1)], [waiting()], False, "Failed"),
    (spec("c", init=["i"]), [terminated("i", 0)], [running()], False, "Running"),
    (spec("c", sidecars=["s"]), [running("s")], [running()], False, "Running"),
])
def test_phase(pod_spec, init, main, terminal, want):
    """The phase follows kubelet's getPhase: init progress, waiting, running, and the restart policy."""
    assert podstatus.phase(pod_spec, init, main, terminal=terminal) == want


@pytest.mark.parametrize("pod_spec,init,main,pod_phase,want", [
    (spec("c"), [], [], "Pending", ("True", None, None)),
    (spec("c", init=["i", "j"]), [], [], "Pending",
     ("False", "ContainersNotInitialized", "containers with unknown status: [i j]")),
    (spec("c", init=["i", "j"]), [{**terminated("i"), "ready": True}, {**running("j"), "ready": False}], [waiting()], "Pending",
     ("False", "ContainersNotInitialized", "containers with incomplete status: [j]")),
    (spec("c", init=["i"]), [{**terminated("i"), "ready": True}], [running()], "Running", ("True", None, None)),
    (spec("c", init=["i"]), [{**terminated("i"), "ready": True}], [terminated()], "Succeeded",
     ("True", "PodCompleted", None)),
    (spec("c", sidecars=["s"]), [{**running("s"), "started": False}], [waiting()], "Pending",
     ("False", "ContainersNotInitialized", "containers with incomplete status: [s]")),
])
def test_initialized(pod_spec, init, main, pod_phase, want):
    """Initialized waits for every init container (sidecars: started) and says which ones are missing."""
    c = podstatus.initialized(pod_spec, init, main, pod_phase)
    assert (c["status"], c.get("reason"), c.get("message")) == want


@pytest.mark.parametrize("pod_spec,init,main,pod_phase,want", [
    (spec("c"), [], [running()], "Running", ("True", None, None)),
    (spec("a", "b"), [], [running("a"), waiting("b")], "Running",
     ("False", "ContainersNotReady", "containers with unready status: [b]")),
    (spec("a", "b"), [], [running("a")], "Running",
     ("False", "ContainersNotReady", "containers with unknown status: [b]")),
    (spec("c", sidecars=["s"]), [{**running("s"), "ready": False}], [running()], "Running",
     ("False", "ContainersNotReady", "containers with unready status: [s]")),
    (spec("c", policy="Never"), [], [terminated()], "Succeeded", ("False", "PodCompleted", None)),
    (spec("c", policy="Never"), [], [terminated(code=1)], "Failed", ("False", "PodFailed", None)),
])
def test_containers_ready(pod_spec, init, main, pod_phase, want):
    """ContainersReady needs every main container and sidecar ready; terminal pods say why they are not."""
    c = podstatus.containers_ready(pod_spec, init, main, pod_phase)
    assert (c["status"], c.get("reason"), c.get("message")) == want


GATE = "example.com/ready"


@pytest.mark.parametrize("cr,conditions,want", [
    ({"status": "True"}, [], ("True", None, None)),
    ({"status": "False", "reason": "ContainersNotReady", "message": "m"}, [], ("False", "ContainersNotReady", "m")),
    ({"status": "True"}, "gate-missing",
     ("False", "ReadinessGatesNotReady", 'corresponding condition of pod readiness gate "example.com/ready" does not exist.')),
    ({"status": "True"}, [{"type": GATE, "status": "False"}],
     ("False", "ReadinessGatesNotReady", 'the status of pod readiness gate "example.com/ready" is not "True", but False')),
    ({"status": "True"}, [{"type": GATE, "status": "True"}], ("True", None, None)),
])
def test_ready(cr, conditions, want):
    """Ready copies ContainersReady when that is not True, then requires every readiness gate's condition."""
    pod_spec = spec("c")
    if conditions == "gate-missing" or conditions:
        pod_spec["readinessGates"] = [{"conditionType": GATE}]
    c = podstatus.ready(pod_spec, cr, [] if conditions == "gate-missing" else conditions)
    assert (c["status"], c.get("reason"), c.get("message")) == want


def _rt(*containers, init=(), ips=("10.244.0.2",), network=True):
    ps = runtime.PodStatus(uid="u1", ips=list(ips), network_ready=network, created_at=T0)
    for cs in containers:
        ps.containers[cs.name] = cs
    for cs in init:
        ps.init_containers[cs.name] = cs
    return ps


def _running_cs(name="c"):
    return runtime.ContainerStatus(name=name, image="docker.io/library/nginx:1.25", image_id="img@sha256:1",
                                   container_id="pocketkube://abc", state=runtime.RUNNING, started_at=T0,
                                   ready=True, started=True)


def _pod(pod_spec=None, status=None):
    return {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": pod_spec or spec("c"),
            "status": status or {"phase": "Pending", "qosClass": "BestEffort"}}


def test_compute_running_pod():
    """A running pod reports Running, all five kubelet conditions True, IPs, start time and its container."""
    st = podstatus.compute(_pod(), _rt(_running_cs()), host_ip="127.0.0.1", now=T0)
    assert st["phase"] == "Running"
    assert [(c["type"], c["status"]) for c in st["conditions"]] == [
        ("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("Ready", "True"),
        ("ContainersReady", "True"), ("PodScheduled", "True")]
    assert all(c["lastProbeTime"] is None and c["lastTransitionTime"] == T0S for c in st["conditions"])
    assert st["hostIP"] == "127.0.0.1" and st["hostIPs"] == [{"ip": "127.0.0.1"}]
    assert st["podIP"] == "10.244.0.2" and st["podIPs"] == [{"ip": "10.244.0.2"}]
    assert st["startTime"] == T0S and st["qosClass"] == "BestEffort"
    assert st["containerStatuses"] == [{
        "name": "c", "state": {"running": {"startedAt": T0S}}, "lastState": {}, "ready": True, "restartCount": 0,
        "image": "docker.io/library/nginx:1.25", "imageID": "img@sha256:1", "containerID": "pocketkube://abc",
        "started": True}]
    assert "initContainerStatuses" not in st


def test_compute_keeps_transition_times_and_foreign_conditions():
    """Unchanged conditions keep their transition time; other owners' conditions come first, untouched."""
    first = podstatus.compute(_pod(), _rt(_running_cs()), host_ip="127.0.0.1", now=T0)
    gate = {"type": GATE, "status": "True", "lastTransitionTime": T0S}
    first["conditions"].insert(0, gate)
    pod = _pod({**spec("c"), "readinessGates": [{"conditionType": GATE}]}, first)
    later = podstatus.compute(pod, _rt(_running_cs()), host_ip="127.0.0.1", now=LATER)
    assert later == first
    unready = _running_cs()
    unready.ready = False
    changed = podstatus.compute(pod, _rt(unready), host_ip="127.0.0.1", now=LATER)
    by_type = {c["type"]: c for c in changed["conditions"]}
    assert changed["conditions"][0] == gate
    assert by_type["Ready"]["lastTransitionTime"] == LATERS
    assert by_type["PodReadyToStartContainers"]["lastTransitionTime"] == T0S


def test_compute_keeps_the_schedulers_condition():
    """A PodScheduled condition written by the scheduler is carried over exactly."""
    sched = {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": "2025-12-31T00:00:00Z"}
    st = podstatus.compute(_pod(status={"phase": "Pending", "conditions": [sched]}), _rt(_running_cs()),
                           host_ip="127.0.0.1", now=T0)
    assert st["conditions"][-1] == sched


def test_compute_before_the_runtime_knows_the_pod():
    """Without a sandbox the pod is Pending with containers waiting in ContainerCreating (PodInitializing behind init)."""
    st = podstatus.compute(_pod(spec("c", init=["i"])), None, host_ip="127.0.0.1", now=T0)
    assert st["phase"] == "Pending"
    assert st["conditions"][0] == {"type": "PodReadyToStartContainers", "status": "False", "lastProbeTime": None,
                                   "lastTransitionTime": T0S}
    assert st["initContainerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert st["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
    assert st["containerStatuses"][0]["imageID"] == "" and "podIP" not in st
    plain = podstatus.compute(_pod(), None, host_ip="127.0.0.1", now=T0)
    assert plain["containerStatuses"][0]["state"] == {"waiting": {"reason": "ContainerCreating"}}


def test_compute_sorts_container_statuses_and_reports_mounts():
    """Container statuses are sorted by name, as the kubelet sorts them, with their volume mounts."""
    pod_spec = spec("zeta", "alpha")
    pod_spec["containers"][0]["volumeMounts"] = [{"name": "v", "mountPath": "/v", "readOnly": True},
                                                 {"name": "w", "mountPath": "/w"}]
    st = podstatus.compute(_pod(pod_spec), _rt(_running_cs("zeta"), _running_cs("alpha")), host_ip="h", now=T0)
    assert [s["name"] for s in st["containerStatuses"]] == ["alpha", "zeta"]
    assert st["containerStatuses"][1]["volumeMounts"] == [
        {"name": "v", "mountPath": "/v", "readOnly": True, "recursiveReadOnly": "Disabled"},
        {"name": "w", "mountPath": "/w"}]


def test_compute_completed_pod():
    """A finished Never pod is Succeeded with PodCompleted conditions, its sandbox gone and its IP kept."""
    cs = _running_cs()
    cs.state = runtime.TERMINATED
    cs.ready = cs.started = False
    cs.termination = runtime.Termination(exit_code=0, reason="Completed", finished_at=LATER, started_at=T0,
                                         container_id=cs.container_id)
    st = podstatus.compute(_pod(spec("c", policy="Never")), _rt(cs, network=False), host_ip="h", now=LATER)
    assert st["phase"] == "Succeeded"
    by_type = {c["type"]: c for c in st["conditions"]}
    assert by_type["PodReadyToStartContainers"]["status"] == "False"
    assert (by_type["Ready"]["status"], by_type["Ready"]["reason"]) == ("False", "PodCompleted")
    assert st["containerStatuses"][0]["state"] == {"terminated": {
        "exitCode": 0, "reason": "Completed", "startedAt": T0S, "finishedAt": LATERS,
        "containerID": "pocketkube://abc"}}
    assert st["podIP"] == "10.244.0.2"


def test_compute_terminal_phase_is_sticky():
    """Once Succeeded or Failed, a pod's phase never changes again."""
    st = podstatus.compute(_pod(status={"phase": "Failed"}), _rt(_running_cs()), host_ip="h", now=T0)
    assert st["phase"] == "Failed"


def test_compute_failure_reason():
    """A pod the kubelet fails on purpose is Failed with its reason and message."""
    st = podstatus.compute(_pod(), _rt(_running_cs()), host_ip="h", now=T0,
                           failure=("DeadlineExceeded", "Pod was active on the node longer than the specified deadline"))
    assert (st["phase"], st["reason"]) == ("Failed", "DeadlineExceeded")


def test_compute_crash_loop_container():
    """A backing-off container shows waiting CrashLoopBackOff with its message and the last termination."""
    cs = _running_cs()
    cs.state, cs.reason, cs.message, cs.ready, cs.started = runtime.WAITING, "CrashLoopBackOff", "back-off 10s", False, False
    cs.restart_count = 1
    cs.last_termination = runtime.Termination(exit_code=1, reason="Error", finished_at=T0, started_at=T0)
    st = podstatus.compute(_pod(), _rt(cs), host_ip="h", now=T0)
    s = st["containerStatuses"][0]
    assert s["state"] == {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}}
    assert s["lastState"]["terminated"]["exitCode"] == 1 and s["restartCount"] == 1
    assert st["phase"] == "Running"
    assert clock_mod.rfc3339(T0) == T0S


def test_compute_running_init_container_is_not_ready():
    """A plain init container is not ready while it runs, so the pod is not Initialized; a sidecar is ready."""
    running_init = _running_cs("setup")
    sidecar = _running_cs("side")
    st = podstatus.compute(_pod(spec("c", init=("setup",), sidecars=("side",))),
                           _rt(init=(running_init, sidecar)), host_ip="127.0.0.1", now=T0)
    assert {s["name"]: s["ready"] for s in st["initContainerStatuses"]} == {"setup": False, "side": True}
    initialized = next(c for c in st["conditions"] if c["type"] == "Initialized")
    assert (initialized["status"], initialized["reason"]) == ("False", "ContainersNotInitialized")
    assert st["containerStatuses"][0]["state"] == {"waiting": {"reason": "PodInitializing"}}
