"""Specification of the process runtime: real processes, exits, restarts with back-off, termination, mounts."""

from __future__ import annotations

import asyncio
import errno
import os
import time

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.network import podnet
from pocketkube.node import envvars, launcher, process, runtime
from tests.node import fakes


class Harness:
    """A ProcessRuntime on a fake API with a way to wait for its containers to change."""

    def __init__(self, tmp_path, client=None):
        self.client = client or fakes.FakeClient()
        self.clock = clock_mod.Clock()
        self.rt = process.ProcessRuntime(self.client, data_dir=str(tmp_path), pod_cidr="10.244.0.0/24",
                                         host_ip="127.0.0.1", allocatable={"cpu": "2", "memory": "1Gi"},
                                         clock=self.clock)
        self.changed = asyncio.Event()
        self.rt.set_notify(lambda uid: self.changed.set())

    async def exit(self, timeout=5.0):
        await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()


def pod(name="p", policy="Never", uid="u1", **container):
    c = {"name": "main", "image": "python:3.11", **container}
    return {"metadata": {"name": name, "namespace": "ns", "uid": uid},
            "spec": {"restartPolicy": policy, "containers": [c], "volumes": container.pop("_volumes", [])}}


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    await harness.rt.close()


async def test_exit_code_and_log(h, tmp_path):
    """A container runs its command as a process, writes its log per run and reports its exit code."""
    p = pod(command=["sh", "-c", "echo out; echo err >&2; exit 3"])
    result = await h.rt.sync_pod(p)
    assert [e.reason for e in result.events] == ["Pulled", "Created", "Started"]
    cs = h.rt.pod_status("u1").containers["main"]
    assert cs.state == runtime.RUNNING and cs.ready and cs.container_id.startswith("pocketkube://")
    await h.exit()
    assert cs.state == runtime.TERMINATED
    assert (cs.termination.exit_code, cs.termination.reason) == (3, "Error")
    assert open(h.rt.log_path("u1", "main", 0)).read() == "out\nerr\n"
    await h.rt.sync_pod(p)
    assert cs.state == runtime.TERMINATED and not h.rt.pod_status("u1").network_ready


async def test_env_working_dir_and_expansion(h, tmp_path):
    """env values, fieldRefs and $(VAR) in args reach the process, which starts in workingDir."""
    wd = str(tmp_path / "work")
    p = pod(command=["sh", "-c"], args=['echo "$GREETING"; pwd; echo $HOSTNAME; echo "$0|$1|$2"',
                                        "$(POD)", "$(NOPE)", "$$(POD)"],
            workingDir=wd, env=[{"name": "GREETING", "value": "hello"},
                                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}])
    await h.rt.sync_pod(p)
    await h.exit()
    assert open(h.rt.log_path("u1", "main", 0)).read() == f"hello\n{wd}\np\np|$(NOPE)|$(POD)\n"


async def test_restart_always_backs_off(h):
    """restartPolicy Always restarts at once after the first exit, then waits in CrashLoopBackOff."""
    p = pod(policy="Always", command=["sh", "-c", "exit 1"])
    await h.rt.sync_pod(p)
    await h.exit()
    result = await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert cs.restart_count == 1 and cs.last_termination.exit_code == 1
    assert [e.reason for e in result.events] == ["Pulled", "Created", "Started"]
    await h.exit()
    result = await h.rt.sync_pod(p)
    assert cs.state == runtime.WAITING and cs.reason == "CrashLoopBackOff" and cs.restart_count == 1
    assert cs.message == "back-off 10s restarting failed container=main pod=p_ns(u1)"
    assert [e.reason for e in result.events] == ["BackOff"] and 9 < result.retry_after <= 10
    assert os.path.exists(h.rt.log_path("u1", "main", 1))


async def test_on_failure_does_not_restart_success(h):
    """restartPolicy OnFailure leaves a container that exited 0 Completed."""
    p = pod(policy="OnFailure", command=["true"])
    await h.rt.sync_pod(p)
    await h.exit()
    await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.state, cs.termination.reason, cs.restart_count) == (runtime.TERMINATED, "Completed", 0)


async def test_kill_sends_sigterm_then_sigkill(h):
    """kill_pod stops the process group: SIGTERM first, SIGKILL once the grace period is over."""
    p = pod(command=["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"])
    await h.rt.sync_pod(p)
    await asyncio.sleep(0.2)
    pid = h.rt.pid("u1", "main")
    started = time.monotonic()
    events = await h.rt.kill_pod(p, grace_seconds=1)
    assert 0.9 < time.monotonic() - started < 3
    assert [(e.reason, e.message) for e in events] == [("Killing", "Stopping container main")]
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.state, cs.termination.exit_code, cs.termination.signal) == (runtime.TERMINATED, 137, 9)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


async def test_graceful_exit_on_sigterm(h):
    """A process that exits on SIGTERM is not waited for; it reports 143."""
    p = pod(command=["sleep", "30"])
    await h.rt.sync_pod(p)
    started = time.monotonic()
    await h.rt.kill_pod(p, grace_seconds=30)
    assert time.monotonic() - started < 2
    assert h.rt.pod_status("u1").containers["main"].termination.exit_code == 143


async def test_missing_program_is_a_start_error(h):
    """A command not on PATH never runs: StartError with exit code 128 and runc's wording."""
    await h.rt.sync_pod(pod(command=["no-such-program-xyz"]))
    await h.exit()
    t = h.rt.pod_status("u1").containers["main"].termination
    assert (t.exit_code, t.reason) == (128, "StartError")
    assert 'exec: "no-such-program-xyz": executable file not found in $PATH' in t.message


async def test_unavailable_image_backs_off(h):
    """An image with no local program waits in ErrImagePull, then ImagePullBackOff."""
    p = pod(image="example.com/app:1")
    result = await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.state, cs.reason) == (runtime.WAITING, "ErrImagePull")
    assert "set the container's command" in cs.message and 9 < result.retry_after <= 10
    assert [e.reason for e in result.events] == ["Pulling", "Failed", "Failed"]
    cs.backoff_until = h.clock.now()
    await h.rt.sync_pod(p)
    assert cs.reason == "ImagePullBackOff" and cs.message.startswith('Back-off pulling image "example.com/app:1"')


async def test_missing_config_key_is_a_config_error(h):
    """An env var from a missing ConfigMap leaves the container in CreateContainerConfigError."""
    p = pod(command=["true"], env=[{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}])
    result = await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.reason, cs.message) == ("CreateContainerConfigError", 'configmap "cfg" not found')
    assert [(e.reason, e.message) for e in result.events] == [("Failed", 'Error: configmap "cfg" not found')]


async def test_mounts_refused_when_namespaces_are_not_permitted(h, tmp_path):
    """Without mount namespaces a container with volume mounts is refused, never run without them."""
    h.rt.starter.mount_problem = "unshare --mount failed: Operation not permitted"
    p = pod(command=["true"], volumeMounts=[{"name": "v", "mountPath": str(tmp_path / "m")}],
            _volumes=[{"name": "v", "emptyDir": {}}])
    await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert cs.reason == "CreateContainerConfigError" and "Operation not permitted" in cs.message
    assert h.rt.pid("u1", "main") is None


@pytest.mark.skipif(process.probe_mounts(process.shutil.which("unshare")) != "",
                    reason="mount namespaces are not permitted here")
async def test_volumes_are_bind_mounted_in_a_private_namespace(tmp_path):
    """A configMap volume appears read-only at its mountPath inside the container only; made mount points go."""
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"data": {"key": "value"}}
    h = Harness(tmp_path / "data", client)
    mnt, out = tmp_path / "etc" / "demo", tmp_path / "etc" / "out"
    p = pod(command=["sh", "-c", f"cat {mnt}/key > {out}/copy; touch {mnt}/x 2>/dev/null || echo ro > {out}/ro"],
            volumeMounts=[{"name": "cfg", "mountPath": str(mnt)}, {"name": "scratch", "mountPath": str(out)}],
            _volumes=[{"name": "cfg", "configMap": {"name": "cfg"}}, {"name": "scratch", "emptyDir": {}}])
    await h.rt.sync_pod(p)
    await h.exit()
    assert h.rt.pod_status("u1").containers["main"].termination.exit_code == 0
    scratch = tmp_path / "data" / "pods" / "u1" / "volumes" / "scratch"
    assert (scratch / "copy").read_text() == "value" and (scratch / "ro").read_text() == "ro\n"
    assert not os.path.exists(tmp_path / "etc"), "mount points the runtime made are removed after the exit"
    await h.rt.remove_pod("u1")
    assert not os.path.exists(tmp_path / "data" / "pods" / "u1")
    await h.rt.close()


async def test_env_from_and_secret_refs():
    """envFrom adds a ConfigMap's keys with a prefix; secretKeyRef and resourceFieldRef resolve."""
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"data": {"A": "1", "bad key": "x"}}
    client.objects["/api/v1/namespaces/ns/secrets/sec"] = {"data": {"pw": "czNjcmV0"}}
    c = {"name": "main", "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "cfg"}}],
         "env": [{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "pw"}}},
                 {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                 {"name": "OPT", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "no", "optional": True}}}]}
    p = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [c]}}
    env = await envvars.resolve(client, p, c, allocatable={"memory": "1Gi"})
    assert (env["CFG_A"], env["PW"], env["MEM"], env["HOSTNAME"]) == ("1", "s3cret", "1024", "p")
    assert "CFG_bad key" not in env and "OPT" not in env and "PATH" in env
    with pytest.raises(process.volumes.ConfigError, match="couldn't find key nope in Secret ns/sec"):
        await envvars.resolve(client, p, {**c, "env": [{"name": "X", "valueFrom": {"secretKeyRef": {
            "name": "sec", "key": "nope"}}}]}, allocatable={})


async def test_init_containers_run_to_completion_first(h):
    """Main containers start only after every init container exited 0."""
    p = pod(command=["sleep", "30"])
    p["spec"]["initContainers"] = [{"name": "init", "image": "busybox", "command": ["sh", "-c", "exit 0"]}]
    await h.rt.sync_pod(p)
    ps = h.rt.pod_status("u1")
    assert ps.init_containers["init"].state == runtime.RUNNING and "main" not in ps.containers
    await h.exit()
    await h.rt.sync_pod(p)
    assert ps.init_containers["init"].termination.reason == "Completed"
    assert ps.containers["main"].state == runtime.RUNNING


async def test_volumes_are_set_up_once_then_refreshed_periodically(tmp_path):
    """Later syncs reuse a pod's volumes; a label change rewrites them at once, and they refresh every minute."""
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"data": {"k": "v1"}}
    h = Harness(tmp_path, client)
    clock = h.rt.volumes.clock = clock_mod.FakeClock()  # the volume manager's clock decides when to refresh
    try:
        p = pod(policy="Always", command=["sleep", "30"],
                _volumes=[{"name": "cfg", "configMap": {"name": "cfg"}},
                          {"name": "info", "downwardAPI": {"items": [
                              {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}}])
        p["metadata"]["labels"] = {"a": "1"}
        reads = lambda: sum(c[1].endswith("/configmaps/cfg") for c in client.calls)  # noqa: E731
        await h.rt.sync_pod(p)
        await h.rt.sync_pod(p)
        assert reads() == 1
        labels = os.path.join(str(tmp_path), "pods", "u1", "volumes", "info", "labels")
        p["metadata"]["labels"] = {"a": "2"}
        await h.rt.sync_pod(p)
        assert open(labels).read() == 'a="2"' and reads() == 2
        client.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"data": {"k": "v2"}}
        clock.advance(process.REFRESH_SECONDS)
        await h.rt.sync_pod(p)
        assert reads() == 3
        assert open(os.path.join(str(tmp_path), "pods", "u1", "volumes", "cfg", "k")).read() == "v2"
    finally:
        await h.rt.close()


async def test_downward_api_volume_has_the_pod_ip_from_the_first_start(h, tmp_path):
    """status.podIP and status.hostIP in a downwardAPI volume are filled before the first status write."""
    p = pod(policy="Always", command=["sleep", "30"], _volumes=[{"name": "info", "downwardAPI": {"items": [
        {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}},
        {"path": "host", "fieldRef": {"fieldPath": "status.hostIP"}}]}}])
    await h.rt.sync_pod(p)
    d = os.path.join(str(tmp_path), "pods", "u1", "volumes", "info")
    assert open(os.path.join(d, "ip")).read() == h.rt.pod_status("u1").ips[0]
    assert open(os.path.join(d, "host")).read() == "127.0.0.1"


def test_runtime_shows_the_agent_its_pod_network(tmp_path):
    """The agent sets up and describes the node's pod network, which it finds on the runtime as `network`."""
    network = podnet.PodNetwork(str(tmp_path), pod_cidr="10.244.0.0/24", mode="off")
    rt = process.ProcessRuntime(fakes.FakeClient(), data_dir=str(tmp_path), pod_cidr="10.244.0.0/24",
                                host_ip="127.0.0.1", network=network)
    assert rt.network is network


def _failing_once(monkeypatch, error):
    """Make the next container spawn raise error; later ones start as usual."""
    real = launcher.spawn
    calls = []

    async def spawn(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return await real(*args, **kwargs)

    monkeypatch.setattr(launcher, "spawn", spawn)


async def test_failed_start_under_restart_always_is_retried(h, monkeypatch):
    """A start that fails (StartError) under restartPolicy Always keeps the sandbox and restarts at once, not
    'done for good' with the pod stuck un-Ready (a stray EBADF in a pod start did that)."""
    _failing_once(monkeypatch, OSError(errno.EBADF, "Bad file descriptor"))
    p = pod(policy="Always", command=["sleep", "30"])
    result = await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.state, cs.termination.reason) == (runtime.TERMINATED, "StartError")
    assert h.rt.pod_status("u1").network_ready and result.retry_after == 0.0
    await h.rt.sync_pod(p)
    cs = h.rt.pod_status("u1").containers["main"]
    assert cs.state == runtime.RUNNING and cs.last_termination.reason == "StartError"


async def test_failed_start_under_restart_never_is_final(h, monkeypatch):
    """Under restartPolicy Never the same StartError ends the pod: no retry, the sandbox goes."""
    _failing_once(monkeypatch, OSError(errno.EBADF, "Bad file descriptor"))
    result = await h.rt.sync_pod(pod(command=["sleep", "30"]))
    assert not h.rt.pod_status("u1").network_ready and result.retry_after is None


async def test_unexpected_error_in_first_start_is_retried(h, monkeypatch):
    """An error escaping the first start fails the sync, and the retry starts the container (it was left
    waiting for a start that never came, the pod un-Ready for good)."""
    _failing_once(monkeypatch, RuntimeError("File descriptor 154 is used by transport"))
    p = pod(policy="Always", command=["sleep", "30"])
    with pytest.raises(RuntimeError):
        await h.rt.sync_pod(p)
    await h.rt.sync_pod(p)
    assert h.rt.pod_status("u1").containers["main"].state == runtime.RUNNING


@pytest.mark.skipif(process.probe_mounts(process.shutil.which("unshare")) != "",
                    reason="mount namespaces are not permitted here")
async def test_a_start_that_raises_unexpectedly_releases_its_mount_points(h, tmp_path, monkeypatch):
    """A spawn failing with something other than OSError (or cancelled) still gives back the mount points it
    claimed, so the runtime removes the ones it made and counts no phantom user."""
    _failing_once(monkeypatch, RuntimeError("unexpected"))
    target = str(tmp_path / "made" / "m")
    p = pod(command=["true"], volumeMounts=[{"name": "v", "mountPath": target}],
            _volumes=[{"name": "v", "emptyDir": {}}])
    with pytest.raises(RuntimeError):
        await h.rt.sync_pod(p)
    assert target not in launcher._IN_USE
    assert not os.path.exists(tmp_path / "made")


async def test_killing_is_recorded_before_the_grace_period(h):
    """With a recorder set, Killing is recorded when the kill starts, a grace period before the container ends,
    and not returned again with kill_pod's events."""
    recorded: list[tuple[str, float]] = []
    h.rt.set_recorder(lambda pod, ev: recorded.append((ev.reason, time.monotonic())))
    p = pod(policy="Always", command=["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"])
    p["metadata"]["deletionGracePeriodSeconds"] = 1
    await h.rt.sync_pod(p)
    await asyncio.sleep(0.3)  # the shell sets its trap
    began = time.monotonic()
    events = await h.rt.kill_pod(p, grace_seconds=1)
    ended = time.monotonic()
    assert [r for r, _ in recorded] == ["Killing"] and "Killing" not in [e.reason for e in events]
    assert recorded[0][1] - began < 0.2 and ended - began >= 0.9


@pytest.mark.skipif(process.probe_mounts(process.shutil.which("unshare")) != "" or
                    process.statedir.mount_of("/dev/shm")[0] != "tmpfs",
                    reason="needs mount namespaces and a tmpfs /dev/shm")
async def test_a_pod_has_its_own_dev_shm_shared_by_its_containers(h):
    """/dev/shm is the pod's own (in its run directory, gone with it), shared by its containers, never the host's;
    a hostIPC pod keeps the host's."""
    name = f"pk-test-{os.getpid()}"
    p = pod(policy="Never", command=["sh", "-c", f"echo from-a > /dev/shm/{name}; sleep 30"])
    p["spec"]["containers"].append({"name": "b", "image": "busybox", "command": [
        "sh", "-c", f"for i in $(seq 50); do cat /dev/shm/{name} 2>/dev/null && exit 0; sleep 0.1; done; exit 1"]})
    await h.rt.sync_pod(p)
    own = os.path.join(h.rt.run_dir("u1"), "shm")
    for _ in range(50):
        if h.rt.pod_status("u1").containers["b"].state == runtime.TERMINATED:
            break
        await asyncio.sleep(0.1)
    log_b = open(h.rt.log_path("u1", "b", 0)).read()
    assert h.rt.pod_status("u1").containers["b"].termination.exit_code == 0, log_b
    assert open(os.path.join(own, name)).read() == "from-a\n" and not os.path.exists(f"/dev/shm/{name}")
    assert os.stat(own).st_mode & 0o7777 == 0o1777
    await h.rt.kill_pod(p, grace_seconds=0)
    await h.rt.remove_pod("u1")
    assert not os.path.exists(own)
    host_ipc = pod(uid="u2", policy="Never", command=["true"])
    host_ipc["spec"]["hostIPC"] = True
    await h.rt.sync_pod(host_ipc)
    assert h.rt.sandboxes.shm_dir(host_ipc, "u2") is None
