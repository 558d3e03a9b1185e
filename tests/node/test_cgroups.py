"""Specification of cgroup handling: the kubelet's conversions, hierarchy detection, limits written, OOM, usage."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from pocketkube.node import cgroups

MOUNTINFO_V1 = """\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
"""
SELF_V1 = "8:pids:/\n4:memory:/jobs/42\n2:cpu,cpuacct:/\n0::/\n"
MOUNTINFO_V2 = "30 23 0:27 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"


def pod(*containers, qos="", uid="u1"):
    return {"metadata": {"uid": uid}, "spec": {"containers": list(containers)},
            "status": {"qosClass": qos} if qos else {}}


def ctr(name="main", **resources):
    return {"name": name, "resources": resources}


@pytest.mark.parametrize(("milli", "shares", "quota"), [
    (0, 2, None), (1, 2, 1000), (100, 102, 10000), (250, 256, 25000), (1000, 1024, 100000), (2500, 2560, 250000),
])
def test_cpu_conversions(milli, shares, quota):
    """Millicores become cpu.shares and a CFS quota exactly as the kubelet computes them."""
    assert cgroups.milli_to_shares(milli) == shares
    assert cgroups.milli_to_quota(milli) == quota


@pytest.mark.parametrize(("shares", "weight"), [(2, 1), (1024, 39), (262144, 10000)])
def test_shares_to_weight(shares, weight):
    """cgroup v2 cpu.weight follows the shares-to-weight mapping runc uses."""
    assert cgroups.shares_to_weight(shares) == weight


@pytest.mark.parametrize(("resources", "expected"), [
    ({}, cgroups.Limits()),
    ({"limits": {"memory": "50Mi"}}, cgroups.Limits(memory=50 * 2**20)),
    ({"limits": {"cpu": "500m"}}, cgroups.Limits(cpu_quota=50000, cpu_shares=512)),
    ({"requests": {"cpu": "250m"}, "limits": {"cpu": "1", "memory": "1G"}},
     cgroups.Limits(memory=10**9, cpu_quota=100000, cpu_shares=256)),
    ({"limits": {"memory": "not-a-quantity"}}, cgroups.Limits()),
])
def test_container_limits(resources, expected):
    """A container's limits and requests map to memory bytes, CFS quota and shares."""
    assert cgroups.container_limits(ctr(**resources)) == expected


def test_pod_limits_sum_only_when_every_container_is_limited():
    """The pod cgroup's memory limit is the sum of its containers' only if each has one; requests add up."""
    both = pod(ctr("a", limits={"memory": "10Mi"}, requests={"cpu": "100m"}),
               ctr("b", limits={"memory": "20Mi"}, requests={"cpu": "200m"}))
    assert cgroups.pod_limits(both) == cgroups.Limits(memory=30 * 2**20, cpu_shares=307)
    one = pod(ctr("a", limits={"memory": "10Mi"}), ctr("b"))
    assert cgroups.pod_limits(one).memory is None


@pytest.mark.parametrize(("p", "qos", "path"), [
    (pod(ctr()), "BestEffort", "kubepods/besteffort/podu1"),
    (pod(ctr(limits={"memory": "1Gi"})), "Burstable", "kubepods/burstable/podu1"),
    (pod(ctr(limits={"memory": "1Gi", "cpu": "1"})), "Guaranteed", "kubepods/podu1"),
    (pod(ctr(), qos="Guaranteed"), "Guaranteed", "kubepods/podu1"),
])
def test_qos_and_pod_path(p, qos, path):
    """The QoS class (reported, else computed) places the pod cgroup as the kubelet does."""
    assert cgroups.qos_class(p) == qos
    assert cgroups.pod_relpath(qos, "u1") == path


def test_detect_v1_nests_under_own_cgroups():
    """On cgroup v1, each controller's root sits under the agent's own cgroup in that hierarchy."""
    layout = cgroups.detect("pk", mountinfo=MOUNTINFO_V1, self_cgroup=SELF_V1, writable=True)
    assert layout.version == cgroups.V1 and not layout.problem
    assert layout.roots == {"cpu": "/sys/fs/cgroup/cpu,cpuacct/pk", "cpuacct": "/sys/fs/cgroup/cpu,cpuacct/pk",
                            "memory": "/sys/fs/cgroup/memory/jobs/42/pk", "pids": "/sys/fs/cgroup/pids/pk"}


def test_detect_v2_and_problems(tmp_path):
    """Pure cgroup v2 uses the unified root; no controllers, or no write access, leaves a problem to report."""
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    info = MOUNTINFO_V2.replace("/sys/fs/cgroup", str(tmp_path))
    layout = cgroups.detect("pk", mountinfo=info, self_cgroup="0::/user.slice\n", writable=True)
    assert (layout.version, layout.roots, layout.problem) == (cgroups.V2, {"": str(tmp_path / "pk")}, "")
    assert "not writable" in cgroups.detect("pk", mountinfo=info, self_cgroup="0::/\n", writable=False).problem
    (tmp_path / "cgroup.controllers").write_text("")
    assert "no memory and cpu" in cgroups.detect("pk", mountinfo=info, self_cgroup="0::/\n").problem


def test_v1_limits_written_to_fake_tree(tmp_path):
    """On v1 the pod and container cgroups get memory.limit_in_bytes, CFS quota/period and shares."""
    roots = {c: str(tmp_path / c / "pk") for c in cgroups.V1_CONTROLLERS}
    m = cgroups.Manager(cgroups.Layout(cgroups.V1, roots))
    p = pod(ctr(limits={"memory": "50Mi", "cpu": "500m"}), qos="Burstable")
    procs = m.create(p, p["spec"]["containers"][0])
    cdir = "kubepods/burstable/podu1/main"
    assert procs == sorted(os.path.join(r, cdir, "cgroup.procs") for r in roots.values())
    assert (tmp_path / "memory/pk" / cdir / "memory.limit_in_bytes").read_text() == str(50 * 2**20)
    assert (tmp_path / "cpu/pk" / cdir / "cpu.cfs_quota_us").read_text() == "50000"
    assert (tmp_path / "cpu/pk" / cdir / "cpu.cfs_period_us").read_text() == "100000"
    assert (tmp_path / "cpu/pk" / cdir / "cpu.shares").read_text() == "512"
    assert (tmp_path / "memory/pk/kubepods/burstable/podu1/memory.limit_in_bytes").read_text() == str(50 * 2**20)
    assert not m.oom_killed("u1", "main")
    (tmp_path / "memory/pk" / cdir / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
    assert m.oom_killed("u1", "main")


def test_v2_limits_and_oom_in_fake_tree(tmp_path):
    """On v2 the container cgroup gets memory.max, cpu.max and cpu.weight; memory.events tells an OOM kill."""
    m = cgroups.Manager(cgroups.Layout(cgroups.V2, {"": str(tmp_path / "pk")}))
    p = pod(ctr(limits={"memory": "64Mi", "cpu": "2"}, requests={"cpu": "1"}), qos="Burstable")
    m.create(p, p["spec"]["containers"][0])
    cdir = tmp_path / "pk/kubepods/burstable/podu1/main"
    assert (cdir / "memory.max").read_text() == str(64 * 2**20)
    assert (cdir / "cpu.max").read_text() == "200000 100000"
    assert (cdir / "cpu.weight").read_text() == "39"
    assert "+memory" in (tmp_path / "cgroup.subtree_control").read_text()
    (cdir / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert m.oom_killed("u1", "main")
    (cdir / "cpu.stat").write_text("usage_usec 1500\nuser_usec 1000\n")
    (cdir / "memory.current").write_text("4096\n")
    (cdir / "memory.stat").write_text("anon 1024\ninactive_file 1024\n")
    assert m.usage("u1", ["main"])["containers"]["main"] == {
        "cpuUsageNanoSeconds": 1_500_000, "memoryWorkingSetBytes": 3072, "memoryUsageBytes": 4096}


def test_not_enforced_layout_does_nothing(tmp_path):
    """Without a usable hierarchy nothing is created and the problem is kept for reporting."""
    m = cgroups.Manager(cgroups.Layout("", {}, "no cgroups here"))
    p = pod(ctr(limits={"memory": "1Mi"}))
    assert m.create(p, p["spec"]["containers"][0]) == [] and not m.enforced and m.problem == "no cgroups here"
    assert m.usage("u1", ["main"]) == {}


def _real_layout(name):
    layout = cgroups.detect(name)
    if layout.problem or os.geteuid() != 0:
        pytest.skip(f"cgroups are not usable here: {layout.problem or 'not root'}")
    return layout


def test_real_cgroup_limits_a_process_and_is_removed():
    """On this machine a process joined to its container cgroup is limited, counted, and killed on removal."""
    m = cgroups.Manager(_real_layout(f"pocketkube-test-{os.getpid()}"))
    m.setup()
    p = pod(ctr(limits={"memory": "32Mi", "cpu": "100m"}), qos="Burstable", uid="real")
    procs = m.create(p, p["spec"]["containers"][0])
    try:
        child = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: pass"])
        for f in procs:
            with open(f, "w") as fh:
                fh.write(str(child.pid))
        time.sleep(0.3)
        usage = m.usage("real", ["main"])
        assert usage["containers"]["main"]["cpuUsageNanoSeconds"] > 0
        assert usage["pod"]["memoryWorkingSetBytes"] > 0
        if m.layout.version == cgroups.V1:
            with open(os.path.join(m.layout.roots["cpu"], "kubepods/burstable/podreal/main/cpu.cfs_quota_us")) as f:
                assert f.read().strip() == "10000"
        m.remove_pod("real")
        assert child.wait(timeout=5) == -9
    finally:
        m.clean(keep_root=False)
    assert not any(os.path.exists(r) for r in m.layout.roots.values())
