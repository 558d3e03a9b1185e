"""Specification of the runtime seam's helpers and of the virtual runtime's container lifecycle."""

from __future__ import annotations

import datetime

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import runtime


@pytest.mark.parametrize("ref,want", [
    ("nginx", "docker.io/library/nginx:latest"),
    ("nginx:1.25", "docker.io/library/nginx:1.25"),
    ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"),
    ("localhost:5000/app", "localhost:5000/app:latest"),
    ("index.docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36"),
    ("nginx@sha256:abc", "docker.io/library/nginx@sha256:abc"),
])
def test_normalize_image(ref, want):
    """Image references are reported fully qualified, the way containerd reports them."""
    assert runtime.normalize_image(ref) == want


def test_image_id_is_a_stable_digest():
    """An image id is repo@sha256:<64 hex>, the same for the same reference, and kept when given a digest."""
    a = runtime.image_id("nginx:1.25")
    assert a.startswith("docker.io/library/nginx@sha256:") and len(a.split(":")[-1]) == 64
    assert a == runtime.image_id("docker.io/library/nginx:1.25") != runtime.image_id("nginx:1.26")
    assert runtime.image_id("nginx@sha256:abc") == "docker.io/library/nginx@sha256:abc"


@pytest.mark.parametrize("seconds,want", [(0, "0s"), (0.0054, "5ms"), (1.5, "1.5s"), (10, "10s"), (300, "5m0s"),
                                          (90.25, "1m30.25s")])
def test_go_duration(seconds, want):
    """Durations in messages read like Go's time.Duration."""
    assert runtime.go_duration(seconds) == want


@pytest.mark.parametrize("policy,want", [
    ("IfNotPresent", [("Pulled", 'Container image "nginx:1.25" already present on machine')]),
    ("Always", [("Pulling", 'Pulling image "nginx:1.25"'), ("Pulled", "Successfully pulled image")]),
])
def test_start_events(policy, want):
    """Starting a container records the image events, then Created and Started in kubelet 1.32 words."""
    evs = runtime.start_events({"name": "c", "image": "nginx:1.25", "imagePullPolicy": policy}, init=False)
    assert [(e.reason, e.message[:len(m)]) for e, (_, m) in zip(evs, want, strict=False)] == want
    assert [(e.reason, e.message) for e in evs[-2:]] == [("Created", "Created container: c"),
                                                          ("Started", "Started container c")]
    assert {e.field_path for e in evs} == {"spec.containers{c}"}


@pytest.mark.parametrize("ann,want", [
    ({}, None),
    ({runtime.EXIT_CODE_ANNOTATION: "3"}, (3, 0.0)),
    ({runtime.EXIT_CODE_ANNOTATION: "0", runtime.RUN_SECONDS_ANNOTATION: "2.5"}, (0, 2.5)),
    ({runtime.EXIT_CODE_ANNOTATION: "x"}, None),
])
def test_virtual_exit(ann, want):
    """The virtual-exit annotations give an exit code and a run time; malformed ones are ignored."""
    assert runtime.virtual_exit({"metadata": {"annotations": ann}}) == want


def test_ip_allocator():
    """Pod IPs skip the gateway, are reused after release, and a reservation claims one only once."""
    ips = runtime.IPAllocator("10.244.3.0/24")
    assert [ips.allocate(), ips.allocate()] == ["10.244.3.2", "10.244.3.3"]
    ips.release("10.244.3.2")
    assert ips.allocate() == "10.244.3.2"
    assert ips.reserve("10.244.3.9") and not ips.reserve("10.244.3.9") and not ips.reserve("10.9.9.9")


@pytest.mark.parametrize("cidr,reserved,released,want", [
    # the lowest free address first, skipping the gateway, what is reserved and, in IPv4, the broadcast address
    ("10.244.3.0/29", [], [], ["10.244.3.2", "10.244.3.3", "10.244.3.4", "10.244.3.5", "10.244.3.6"]),
    ("10.244.3.0/29", ["10.244.3.3", "10.244.3.5"], [], ["10.244.3.2", "10.244.3.4", "10.244.3.6"]),
    # released addresses come back lowest first, before any never used
    ("10.244.3.0/29", [], ["10.244.3.4", "10.244.3.2"], ["10.244.3.2", "10.244.3.4", "10.244.3.5", "10.244.3.6"]),
    # a released address reserved again is not handed out twice
    ("10.244.3.0/29", [], ["10.244.3.3", "+10.244.3.3"], ["10.244.3.5", "10.244.3.6"]),
    ("10.244.3.0/31", [], [], ["10.244.3.0"]),
    ("fd00::/126", [], [], ["fd00::2", "fd00::3"]),
])
def test_ip_allocator_order(cidr, reserved, released, want):
    """Allocation order: the lowest free address first, released ones again, until the CIDR is used up."""
    ips = runtime.IPAllocator(cidr)
    for ip in reserved:
        assert ips.reserve(ip)
    if released:
        first = [ips.allocate() for _ in range(3)]
        for ip in released:
            if ip.startswith("+"):
                assert ips.reserve(ip[1:])
            else:
                assert ip in first
                ips.release(ip)
    got = []
    with pytest.raises(RuntimeError, match="no pod IPs left"):
        while True:
            got.append(ips.allocate())
    assert got == want


def pod(*, policy="Always", ann=None, init=(), sidecars=(), host_network=False, uid="u1"):
    spec = {"restartPolicy": policy, "containers": [{"name": "c", "image": "nginx:1.25"}]}
    inits = [{"name": n, "image": "busybox"} for n in init]
    inits += [{"name": n, "image": "busybox", "restartPolicy": "Always"} for n in sidecars]
    if inits:
        spec["initContainers"] = inits
    if host_network:
        spec["hostNetwork"] = True
    return {"metadata": {"name": "p", "namespace": "ns", "uid": uid, "annotations": ann or {}}, "spec": spec}


@pytest.fixture
def clk():
    return clock_mod.FakeClock()


@pytest.fixture
def rt(clk):
    return runtime.VirtualRuntime(pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clk)


async def test_virtual_start(rt, clk):
    """A new pod gets an IP and its containers run at once; init containers complete; a second sync is quiet."""
    res = await rt.sync_pod(pod(init=["i"], sidecars=["s"]))
    assert [(e.reason, e.field_path) for e in res.events if e.reason == "Started"] == [
        ("Started", "spec.initContainers{i}"), ("Started", "spec.initContainers{s}"), ("Started", "spec.containers{c}")]
    ps = rt.pod_status("u1")
    assert ps.ips == ["10.244.0.2"] and ps.network_ready
    assert ps.init_containers["i"].state == runtime.TERMINATED and ps.init_containers["i"].termination.reason == "Completed"
    assert ps.init_containers["s"].state == runtime.RUNNING
    c = ps.containers["c"]
    assert (c.state, c.ready, c.started, c.started_at) == (runtime.RUNNING, True, True, clk.now())
    assert c.container_id.startswith("pocketkube://") and c.image == "docker.io/library/nginx:1.25"
    assert (await rt.sync_pod(pod(init=["i"], sidecars=["s"]))).events == []
    assert res.retry_after is None


async def test_host_network_pod_uses_the_host_ip(rt):
    """A hostNetwork pod shares the node's address and takes no pod IP."""
    await rt.sync_pod(pod(host_network=True))
    assert rt.pod_status("u1").ips == ["127.0.0.1"]
    await rt.sync_pod(pod(uid="u2"))
    assert rt.pod_status("u2").ips == ["10.244.0.2"]


@pytest.mark.parametrize("policy,code,state,phase_done", [
    ("Never", 0, runtime.TERMINATED, True),
    ("Never", 3, runtime.TERMINATED, True),
    ("OnFailure", 0, runtime.TERMINATED, True),
    ("OnFailure", 3, runtime.RUNNING, False),
    ("Always", 0, runtime.RUNNING, False),
])
async def test_virtual_exit_after_run_seconds(rt, clk, policy, code, state, phase_done):
    """A pod with the virtual-exit annotations exits after its run time; the restart policy decides what follows."""
    p = pod(policy=policy, ann={runtime.EXIT_CODE_ANNOTATION: str(code), runtime.RUN_SECONDS_ANNOTATION: "5"})
    res = await rt.sync_pod(p)
    assert res.retry_after == 5
    clk.advance(5)
    res = await rt.sync_pod(p)
    c = rt.pod_status("u1").containers["c"]
    assert c.state == state
    if state == runtime.TERMINATED:
        assert (c.termination.exit_code, c.termination.reason) == (code, "Completed" if code == 0 else "Error")
        assert c.termination.finished_at == clk.now()
    else:
        # The first restart is immediate, as the kubelet's back-off allows.
        assert c.restart_count == 1 and c.last_termination.exit_code == code
        assert [e.reason for e in res.events][-1] == "Started"
    assert rt.pod_status("u1").network_ready is not phase_done


async def test_crash_loop_back_off(rt, clk):
    """A container that keeps exiting restarts at once, then after 10 s, 20 s, ... in CrashLoopBackOff."""
    p = pod(ann={runtime.EXIT_CODE_ANNOTATION: "1"})
    res = await rt.sync_pod(p)
    c = rt.pod_status("u1").containers["c"]
    assert c.restart_count == 0 and c.state == runtime.RUNNING and res.retry_after == 0
    res = await rt.sync_pod(p)  # exited at once: the first restart is immediate
    assert c.restart_count == 1 and c.state == runtime.RUNNING and res.retry_after == 0
    res = await rt.sync_pod(p)
    assert (c.state, c.reason) == (runtime.WAITING, "CrashLoopBackOff")
    assert c.message == "back-off 10s restarting failed container=c pod=p_ns(u1)"
    assert res.retry_after == 10
    assert [(e.type, e.reason, e.message) for e in res.events] == [
        ("Warning", "BackOff", "Back-off restarting failed container c in pod p_ns(u1)")]
    clk.advance(10)
    await rt.sync_pod(p)
    assert c.restart_count == 2
    res = await rt.sync_pod(p)
    assert c.message.startswith("back-off 20s") and res.retry_after == 20


async def test_kill_and_remove(rt, clk):
    """Killing stops running containers (Killing events, exit 0) and tears the sandbox down; removal frees the IP."""
    p = pod(sidecars=["s"])
    await rt.sync_pod(p)
    evs = await rt.kill_pod(p, grace_seconds=30)
    assert [(e.reason, e.message) for e in evs] == [("Killing", "Stopping container c"),
                                                     ("Killing", "Stopping container s")]
    ps = rt.pod_status("u1")
    assert not ps.network_ready and ps.containers["c"].termination.exit_code == 0
    assert (await rt.sync_pod(p)).events == []
    await rt.remove_pod("u1")
    assert rt.pod_status("u1") is None
    await rt.sync_pod(pod(uid="u2"))
    assert rt.pod_status("u2").ips == ["10.244.0.2"]


async def test_adopts_a_pod_it_reported_before(rt):
    """After an agent restart, a running pod is adopted with its IP, container id and start time unchanged."""
    started = "2025-12-31T23:00:00Z"
    p = pod()
    p["status"] = {"phase": "Running", "podIP": "10.244.0.7", "containerStatuses": [{
        "name": "c", "image": "docker.io/library/nginx:1.25", "imageID": "x", "containerID": "pocketkube://old",
        "restartCount": 2, "ready": True, "started": True, "state": {"running": {"startedAt": started}}}]}
    res = await rt.sync_pod(p)
    assert res.events == []
    ps = rt.pod_status("u1")
    c = ps.containers["c"]
    assert ps.ips == ["10.244.0.7"]
    assert (c.container_id, c.restart_count, c.started_at) == (
        "pocketkube://old", 2, datetime.datetime(2025, 12, 31, 23, tzinfo=datetime.UTC))
