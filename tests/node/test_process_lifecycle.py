"""Specification of the process runtime's lifecycle: hooks, cgroup limits and OOM kills, adoption, the watchdog."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import cgroups, process, runtime
from tests.node.test_process import Harness, pod


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    await harness.rt.close()


async def wait_for(check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met"
        await asyncio.sleep(0.02)


def with_grace(p, seconds):
    p["spec"]["terminationGracePeriodSeconds"] = seconds
    return p


async def test_post_start_holds_running_until_done(h, tmp_path):
    """A container is waiting (not started) while its postStart runs, and running once it succeeds."""
    flag = tmp_path / "go"
    p = pod(policy="Always", command=["sleep", "30"],
            lifecycle={"postStart": {"exec": {"command": ["sh", "-c", f"while [ ! -e {flag} ]; do sleep 0.05; done"]}}})
    result = await h.rt.sync_pod(p)
    assert [e.reason for e in result.events] == ["Pulled", "Created", "Started"]
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.state, cs.started, cs.ready) == (runtime.WAITING, False, False)
    flag.write_text("")
    await h.exit()
    assert (cs.state, cs.started) == (runtime.RUNNING, True)


async def test_failing_post_start_kills_the_container(h):
    """A failing postStart records FailedPostStartHook, kills the container, and shows PostStartHookError."""
    p = with_grace(pod(command=["sleep", "30"], lifecycle={"postStart": {"exec": {"command": ["sh", "-c", "exit 7"]}}}), 5)
    await h.rt.sync_pod(p)
    await h.exit()
    cs = h.rt.pod_status("u1").containers["main"]
    assert cs.reason == "PostStartHookError" and "exited with" in cs.message
    await wait_for(lambda: cs.state == runtime.TERMINATED)
    assert cs.termination.exit_code == 143
    events = [(e.type, e.reason, e.message) for e in (await h.rt.sync_pod(p)).events]
    assert events == [("Warning", "FailedPostStartHook", "PostStartHook failed"),
                      ("Normal", "Killing", "FailedPostStartHook")]


async def test_post_start_orders_the_next_container(h, tmp_path):
    """The next container starts only once the previous container's postStart hook has finished."""
    flag = tmp_path / "go"
    p = pod(policy="Always", command=["sleep", "30"],
            lifecycle={"postStart": {"exec": {"command": ["sh", "-c", f"while [ ! -e {flag} ]; do sleep 0.05; done"]}}})
    p["spec"]["containers"].append({"name": "second", "image": "python:3.11", "command": ["sleep", "30"]})
    await h.rt.sync_pod(p)
    assert "second" not in h.rt.pod_status("u1").containers
    flag.write_text("")
    await h.exit()
    await h.rt.sync_pod(p)
    assert h.rt.pod_status("u1").containers["second"].state == runtime.RUNNING


async def test_pre_stop_runs_before_sigterm_and_counts_against_grace(h, tmp_path):
    """preStop runs before SIGTERM; its time comes off the grace period (at least 2 s stay for SIGTERM)."""
    mark = tmp_path / "prestop"
    p = with_grace(pod(command=["sh", "-c", f"trap 'test -e {mark} && exit 5; exit 6' TERM; sleep 30 & wait"],
                       lifecycle={"preStop": {"exec": {"command": ["sh", "-c", f"sleep 1; touch {mark}"]}}}), 10)
    await h.rt.sync_pod(p)
    await asyncio.sleep(0.2)
    started = time.monotonic()
    events = await h.rt.kill_pod(p, grace_seconds=10)
    assert 0.9 < time.monotonic() - started < 3
    assert h.rt.pod_status("u1").containers["main"].termination.exit_code == 5
    assert [e.reason for e in events] == ["Killing"]


async def test_failing_and_slow_pre_stop(h):
    """A failing preStop gives FailedPreStopHook; one outlasting the grace period is cut off for SIGTERM."""
    p = with_grace(pod(command=["sleep", "30"], lifecycle={"preStop": {"exec": {"command": ["false"]}}}), 5)
    await h.rt.sync_pod(p)
    events = await h.rt.kill_pod(p, grace_seconds=5)
    assert [(e.reason, e.message) for e in events] == [("Killing", "Stopping container main"),
                                                     ("FailedPreStopHook", "PreStopHook failed")]
    p = pod(uid="u2", command=["sh", "-c", "trap '' TERM; sleep 30 & wait; sleep 30"],
            lifecycle={"preStop": {"sleep": {"seconds": 100}}})
    await h.rt.sync_pod(p)
    started = time.monotonic()
    await h.rt.kill_pod(p, grace_seconds=1)
    # the hook takes the whole second, then SIGTERM still gets the 2-second minimum before SIGKILL
    assert 2.5 < time.monotonic() - started < 5
    assert h.rt.pod_status("u2").containers["main"].termination.exit_code == 137


def _enforced(h):
    layout = cgroups.detect(process.cgroup_name(h.rt.data_dir))
    if layout.problem or os.geteuid() != 0:
        pytest.skip(f"cgroups are not usable here: {layout.problem or 'not root'}")


async def test_memory_limit_oom_kills_with_reason(h):
    """A container allocating past limits.memory is OOM-killed by the kernel and reported OOMKilled, 137."""
    _enforced(h)
    p = pod(command=[sys.executable, "-c", "import time; b = bytearray(200 * 2**20); b[::4096] = b'x' * len(b[::4096]); time.sleep(30)"],
            resources={"limits": {"memory": "50Mi"}})
    await h.rt.sync_pod(p)
    await h.exit(timeout=20)
    t = h.rt.pod_status("u1").containers["main"].termination
    assert (t.exit_code, t.reason) == (137, "OOMKilled")


async def test_usage_and_cleanup(h):
    """usage() reports a running container's CPU and memory from its cgroup; removing the pod removes them."""
    _enforced(h)
    p = pod(policy="Always", command=[sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 0.3: pass\ntime.sleep(30)"],
            resources={"limits": {"cpu": "500m"}})
    await h.rt.sync_pod(p)
    await asyncio.sleep(0.5)
    usage = h.rt.usage("u1")
    assert usage["containers"]["main"]["cpuUsageNanoSeconds"] > 10**8
    assert usage["pod"]["memoryWorkingSetBytes"] > 0
    assert h.rt.summary()["node"]["cpuUsageNanoSeconds"] >= usage["pod"]["cpuUsageNanoSeconds"]
    layout = h.rt.cgroups.layout
    if layout.version == cgroups.V1:
        path = os.path.join(layout.roots["cpu"], "kubepods/burstable/podu1/main/cpu.cfs_quota_us")
        assert open(path).read().strip() == "50000"
    await h.rt.remove_pod("u1")
    assert not any(os.path.exists(os.path.join(r, "kubepods/burstable/podu1")) for r in layout.roots.values())


async def test_adopts_a_pod_from_an_earlier_agent(h):
    """A pod the last agent ran gets a new sandbox: same IP, restart counted from its logs, lastState 137."""
    cdir = os.path.join(h.rt.pod_dir("u1"), "main")
    os.makedirs(cdir)
    for n in (0, 1):
        open(os.path.join(cdir, f"{n}.log"), "w").close()
    p = pod(policy="Always", command=["sleep", "30"])
    p["status"] = {"podIP": "10.244.0.7", "containerStatuses": [{
        "name": "main", "restartCount": 1, "containerID": "pocketkube://abc",
        "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]}
    result = await h.rt.sync_pod(p)
    assert ("SandboxChanged", "Pod sandbox changed, it will be killed and re-created.") in \
        [(e.reason, e.message) for e in result.events]
    ps = h.rt.pod_status("u1")
    cs = ps.containers["main"]
    assert ps.ips == ["10.244.0.7"] and cs.state == runtime.RUNNING and cs.restart_count == 2
    assert (cs.last_termination.exit_code, cs.last_termination.reason) == (137, "Error")
    await wait_for(lambda: os.path.exists(h.rt.log_path("u1", "main", 2)))


async def test_reaper_kills_what_a_dead_agent_left(tmp_path):
    """The watchdog kills every registered process group once its input ends, as when the agent is SIGKILLed."""
    victim = subprocess.Popen(["sh", "-c", "sleep 60 & sleep 60"], start_new_session=True)
    reaper = subprocess.Popen([sys.executable, "-I", "-S", "-c", process.REAPER], stdin=subprocess.PIPE,
                              start_new_session=True)
    reaper.stdin.write(f"+pg {victim.pid}\n".encode())
    reaper.stdin.close()
    assert reaper.wait(timeout=10) == 0
    assert victim.wait(timeout=5) == -9
    await wait_for(lambda: subprocess.run(["pgrep", "-g", str(victim.pid)], capture_output=True).returncode == 1)


async def test_containers_die_with_their_agent(tmp_path):
    """A container process and its children die when the agent process running them is SIGKILLed."""
    script = f"""
import asyncio, sys
from pocketkube.node import process
from tests.node import fakes
async def main():
    rt = process.ProcessRuntime(fakes.FakeClient(), data_dir={str(tmp_path)!r}, pod_cidr="10.244.0.0/24",
                                host_ip="127.0.0.1", state_root={str(tmp_path / "run")!r})
    await rt.sync_pod({{"metadata": {{"name": "p", "namespace": "ns", "uid": "u1"}},
                       "spec": {{"containers": [{{"name": "main", "image": "busybox",
                                                  "command": ["sh", "-c", "sleep 61.5 & sleep 62.5"]}}]}}}})
    print("up", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""
    agent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert agent.stdout.readline().strip() == "up"
        await wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 61.5"], capture_output=True).returncode == 0)
        agent.kill()
        agent.wait()
        await wait_for(lambda: subprocess.run(["pgrep", "-f", "sleep 6[12].5"], capture_output=True).returncode == 1)
    finally:
        agent.kill()


def test_cgroup_name_is_per_data_dir():
    """Two data dirs get two cgroup subtrees; the same one always the same."""
    assert process.cgroup_name("/a") == process.cgroup_name("/a/") != process.cgroup_name("/b")
    assert process.cgroup_name("/a").startswith("pocketkube-")


def test_past_attempts(tmp_path):
    """The next attempt of a container counts every run with a log, rotated ones too."""
    assert process.past_attempts(str(tmp_path / "none")) == 0
    for n in ("0.log", "1.log", "3.log.20240101-000000", "3.ts", "x.log"):
        (tmp_path / n).write_text("")
    assert process.past_attempts(str(tmp_path)) == 4


def test_fake_clock_is_only_for_tests():
    """(guard) The harness runs on the real clock, so hook and grace timings above are real seconds."""
    assert type(clock_mod.Clock()) is clock_mod.Clock
