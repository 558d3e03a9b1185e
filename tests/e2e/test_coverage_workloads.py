"""End to end: issue 3 items the coverage audit found untested (images, OnFailure, back-off, Jobs, exec -it)."""

from __future__ import annotations

import calendar
import collections.abc
import fcntl
import json
import os
import pty
import signal
import struct
import termios
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from pocketkube.node import cgroups, process
from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

NODE = "pocketkube-node-1"
T = TypeVar("T")


def _until_some(check: Callable[[], T | None], *, timeout: float = 15.0, what: str = "condition") -> T:
    """cluster_mod.eventually for checks that return a value or None: the value, typed without the None."""
    got = cluster_mod.eventually(check, timeout=timeout, what=what)
    assert got is not None
    return got


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """`pocketkube up --nodes 1` with pod networking, so servers such as nginx get port 80 in their own netns."""
    netutil.require_root_network()
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk-cov")), nodes=1)
    try:
        yield c
    finally:
        c.stop()


def _apply(c: cluster_mod.Cluster, name: str, *, containers: list[dict[str, Any]], **spec: Any) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"terminationGracePeriodSeconds": 2, "containers": containers, **spec}}
    c.kubectl("apply", "-f", "-", input=json.dumps(pod))


def _events(c: cluster_mod.Cluster, name: str) -> list[tuple[str, str, str]]:
    items = c.json("get", "events", "--field-selector", f"involvedObject.name={name}")["items"]
    return [(e["type"], e["reason"], e["message"]) for e in items]


def _fetch(url: str) -> str:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return str(r.read().decode())
    except (OSError, urllib.error.URLError):
        return ""


def _node_ready(c: cluster_mod.Cluster) -> bool:
    conds = c.json("get", "node", NODE)["status"]["conditions"]
    return any(x["type"] == "Ready" and x["status"] == "True" for x in conds)


def test_process_pod_status_and_events(cluster: cluster_mod.Cluster) -> None:
    """A process pod reports kubelet's conditions, container status fields and the Scheduled..Killing events."""
    c = cluster
    c.kubectl("run", "stat", "--image=busybox", "--", "sleep", "3600")
    c.kubectl("wait", "--for=condition=Ready", "pod/stat", "--timeout=30s", timeout=45)
    pod = c.json("get", "pod", "stat")
    st = pod["status"]
    assert [(x["type"], x["status"]) for x in st["conditions"]] == [
        ("PodReadyToStartContainers", "True"), ("Initialized", "True"), ("Ready", "True"),
        ("ContainersReady", "True"), ("PodScheduled", "True")]
    assert st["phase"] == "Running" and st["qosClass"] == "BestEffort" and st["startTime"]
    addresses = c.json("get", "node", NODE)["status"]["addresses"]
    node_ip = next(a["address"] for a in addresses if a["type"] == "InternalIP")
    assert st["hostIP"] == node_ip and st["hostIPs"] == [{"ip": node_ip}]
    assert st["podIPs"] == [{"ip": st["podIP"]}] and st["podIP"] != node_ip
    cs, = st["containerStatuses"]
    assert (cs["name"], cs["ready"], cs["started"], cs["restartCount"]) == ("stat", True, True, 0)
    assert cs["image"] == "docker.io/library/busybox:latest" and cs["imageID"] and cs["containerID"]
    assert "startedAt" in cs["state"]["running"] and cs["lastState"] == {}
    reasons = [r for _, r, _ in _events(c, "stat")]
    for want in ("Scheduled", "Pulled", "Created", "Started"):
        assert want in reasons, reasons
    assert ("Normal", "Started", "Started container stat") in _events(c, "stat")
    c.kubectl("delete", "pod", "stat", "--grace-period=1")
    assert ("Normal", "Killing", "Stopping container stat") in _events(c, "stat")


def test_nginx_image_serves_its_welcome_page(cluster: cluster_mod.Cluster) -> None:
    """`kubectl run --image=nginx` without a command runs nginx from the image catalog, serving port 80."""
    c = cluster
    c.kubectl("run", "ng", "--image=nginx:1.27", "--port=80")
    c.kubectl("wait", "--for=condition=Ready", "pod/ng", "--timeout=30s", timeout=45)
    ip = c.json("get", "pod", "ng")["status"]["podIP"]
    page = cluster_mod.eventually(lambda: _fetch(f"http://{ip}/"), timeout=10, what="nginx to answer")
    assert "<title>Welcome to nginx!</title>" in page
    c.kubectl("delete", "pod", "ng", "--grace-period=1")


def test_nginx_access_log_reaches_kubectl_logs(cluster: cluster_mod.Cluster) -> None:
    """A request to an nginx pod shows up in `kubectl logs`, as the image links its access log to stdout."""
    c = cluster
    c.kubectl("run", "nglog", "--image=nginx:1.27")
    c.kubectl("wait", "--for=condition=Ready", "pod/nglog", "--timeout=30s", timeout=45)
    ip = c.json("get", "pod", "nglog")["status"]["podIP"]
    try:
        cluster_mod.eventually(lambda: _fetch(f"http://{ip}/"), timeout=10, what="nginx to answer")
        _fetch(f"http://{ip}/from-the-e2e-test")
        cluster_mod.eventually(lambda: '"GET /from-the-e2e-test HTTP/1.1" 404' in c.kubectl("logs", "nglog").stdout,
                               timeout=5, what="the access log line in kubectl logs")
        # nginx rewrites its process title over its environment: exec still gets the container's env.
        assert c.kubectl("exec", "nglog", "--", "sh", "-c", "echo $HOSTNAME").stdout == "nglog\n"
    finally:
        c.kubectl("delete", "pod", "nglog", "--grace-period=1", "--wait=false")


def test_pause_image_runs_until_deleted(cluster: cluster_mod.Cluster) -> None:
    """The pause image runs without a command, stays Running, and stops at once on SIGTERM when deleted."""
    c = cluster
    c.kubectl("run", "pause", "--image=registry.k8s.io/pause:3.10")
    c.kubectl("wait", "--for=condition=Ready", "pod/pause", "--timeout=30s", timeout=45)
    time.sleep(1)
    cs = c.json("get", "pod", "pause")["status"]["containerStatuses"][0]
    assert "running" in cs["state"] and cs["restartCount"] == 0
    began = time.monotonic()
    c.kubectl("delete", "pod", "pause")  # the default 30 s grace: pause exits on SIGTERM well before
    assert time.monotonic() - began < 10


def test_unknown_image_reports_pull_events_and_back_off(cluster: cluster_mod.Cluster) -> None:
    """An unavailable image gives kubelet's Failed/ErrImagePull events, then ImagePullBackOff; the node stays Ready."""
    c = cluster
    c.kubectl("run", "nopull", "--image=example.com/app:1")
    path = "jsonpath={.status.containerStatuses[0].state.waiting.reason}"
    cluster_mod.eventually(lambda: c.kubectl("get", "pod", "nopull", "-o", path).stdout == "ImagePullBackOff",
                           timeout=20, what="ImagePullBackOff")
    events = _events(c, "nopull")
    pulls = [m for t, r, m in events if (t, r) == ("Warning", "Failed") and m.startswith("Failed to pull image")]
    assert pulls and pulls[0].startswith('Failed to pull image "example.com/app:1": ') and "command" in pulls[0]
    assert ("Warning", "Failed", "Error: ErrImagePull") in events
    assert ("Normal", "BackOff", 'Back-off pulling image "example.com/app:1"') in events
    assert ("Warning", "Failed", "Error: ImagePullBackOff") in events
    row = c.kubectl("get", "pod", "nopull", "--no-headers").stdout.split()
    assert row[1:4] == ["0/1", "ImagePullBackOff", "0"]
    assert _node_ready(c)
    c.kubectl("delete", "pod", "nopull", "--grace-period=1")


def test_on_failure_restarts_until_success(cluster: cluster_mod.Cluster) -> None:
    """restartPolicy OnFailure restarts a failed container and ends Succeeded, with the failure in lastState."""
    c = cluster
    script = "if [ -e /state/once ]; then echo second; exit 0; fi; touch /state/once; echo first; exit 2"
    _apply(c, "onfail", containers=[{"name": "c", "image": "busybox", "command": ["sh", "-c", script],
                          "volumeMounts": [{"name": "state", "mountPath": "/state"}]}],
           restartPolicy="OnFailure", volumes=[{"name": "state", "emptyDir": {}}])
    cluster_mod.eventually(lambda: c.json("get", "pod", "onfail")["status"].get("phase") == "Succeeded",
                           timeout=20, what="the pod to succeed")
    cs = c.json("get", "pod", "onfail")["status"]["containerStatuses"][0]
    assert cs["restartCount"] == 1
    assert (cs["state"]["terminated"]["exitCode"], cs["state"]["terminated"]["reason"]) == (0, "Completed")
    assert (cs["lastState"]["terminated"]["exitCode"], cs["lastState"]["terminated"]["reason"]) == (2, "Error")
    assert c.kubectl("logs", "onfail").stdout == "second\n"
    assert c.kubectl("logs", "onfail", "--previous").stdout == "first\n"
    assert c.kubectl("get", "pod", "onfail", "--no-headers").stdout.split()[2] == "Completed"
    c.kubectl("delete", "pod", "onfail")


def test_crash_loop_back_off_doubles_from_ten_seconds(cluster: cluster_mod.Cluster) -> None:
    """A container exiting 1 restarts at once, then after 10 s, and waits in CrashLoopBackOff with kubelet's words."""
    c = cluster
    c.kubectl("create", "deployment", "crash", "--image=busybox", "--", "sh", "-c", "echo dying; exit 1")

    def status() -> dict[str, Any]:
        pods = c.json("get", "pods", "-l", "app=crash")["items"]
        return dict(pods[0]["status"]["containerStatuses"][0]) if pods and pods[0]["status"].get("containerStatuses") \
            else {}

    first = _until_some(lambda: s if (s := status()).get("restartCount") == 1
                                   and "waiting" in s["state"] else None, timeout=15, what="the first back-off")
    seen_at = time.monotonic()
    pod = c.json("get", "pods", "-l", "app=crash")["items"][0]
    key = f"pod={pod['metadata']['name']}_default({pod['metadata']['uid']})"
    assert first["state"]["waiting"] == {
        "reason": "CrashLoopBackOff", "message": f"back-off 10s restarting failed container=busybox {key}"}
    assert (first["lastState"]["terminated"]["exitCode"], first["lastState"]["terminated"]["reason"]) == (1, "Error")
    second = _until_some(lambda: s if (s := status()).get("restartCount") == 2
                                    and "waiting" in s["state"] else None, timeout=15, what="the second back-off")
    assert time.monotonic() - seen_at > 7  # ten seconds after the first restart's exit, give or take polling
    assert second["state"]["waiting"]["message"] == f"back-off 20s restarting failed container=busybox {key}"
    row = c.kubectl("get", "pods", "-l", "app=crash", "--no-headers").stdout.split()
    assert row[1:4] == ["0/1", "CrashLoopBackOff", "2"] and row[4].startswith("(") and row[5] == "ago)"
    assert c.kubectl("logs", "deployment/crash", "--previous").stdout == "dying\n"
    backoff = [m for t, r, m in _events(c, pod["metadata"]["name"]) if r == "BackOff"]
    assert backoff == [f"Back-off restarting failed container busybox in pod {key.removeprefix('pod=')}"]
    c.kubectl("delete", "deployment", "crash")


def test_probe_initial_delay_and_timeout(cluster: cluster_mod.Cluster) -> None:
    """Readiness waits initialDelaySeconds; an exec liveness probe past timeoutSeconds times out and restarts."""
    c = cluster
    sleeper = {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
    _apply(c, "delayed", containers=[{**sleeper, "readinessProbe": {
        "exec": {"command": ["true"]}, "initialDelaySeconds": 3, "periodSeconds": 1}}])
    _apply(c, "slowprobe", containers=[{**sleeper, "livenessProbe": {
        "exec": {"command": ["sleep", "3"]}, "timeoutSeconds": 1, "periodSeconds": 1, "failureThreshold": 2}}])
    c.kubectl("wait", "--for=condition=Ready", "pod/delayed", "--timeout=30s", timeout=45)
    st = c.json("get", "pod", "delayed")["status"]
    started = st["containerStatuses"][0]["state"]["running"]["startedAt"]
    ready = next(x["lastTransitionTime"] for x in st["conditions"] if x["type"] == "Ready")
    assert _seconds(ready) - _seconds(started) >= 3
    cluster_mod.eventually(lambda: c.json("get", "pod", "slowprobe")["status"]["containerStatuses"][0]["restartCount"],
                           timeout=15, what="the liveness probe to restart the container")
    events = _events(c, "slowprobe")
    assert ("Warning", "Unhealthy", 'Liveness probe failed: command "sleep 3" timed out') in events
    assert ("Normal", "Killing", "Container c failed liveness probe, will be restarted") in events
    c.kubectl("delete", "pod", "delayed", "slowprobe", "--grace-period=1", "--wait=false")


def _seconds(stamp: str) -> float:
    return float(calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ")))


def test_statefulset_claims_follow_the_retention_policy(cluster: cluster_mod.Cluster) -> None:
    """whenScaled Delete drops a scaled-away ordinal's claim; whenDeleted Delete drops the rest with the set."""
    c = cluster
    sts = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "ret"}, "spec": {
        "serviceName": "ret", "replicas": 2, "selector": {"matchLabels": {"app": "ret"}},
        "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
        "template": {"metadata": {"labels": {"app": "ret"}}, "spec": {
            "terminationGracePeriodSeconds": 1, "containers": [{
                "name": "c", "image": "busybox", "command": ["sh", "-c", "hostname > /data/who; sleep 3600"],
                "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}}
    c.kubectl("apply", "-f", "-", input=json.dumps(sts))
    c.kubectl("rollout", "status", "statefulset/ret", "--timeout=40s", timeout=60)

    def claims() -> dict[str, str]:
        return {p["metadata"]["name"]: p["spec"].get("volumeName", "") for p in c.json("get", "pvc")["items"]
                if p["metadata"]["name"].startswith("data-ret-")}

    bound = claims()
    assert sorted(bound) == ["data-ret-0", "data-ret-1"] and all(bound.values())
    c.kubectl("scale", "statefulset", "ret", "--replicas=1")
    cluster_mod.eventually(lambda: sorted(claims()) == ["data-ret-0"], timeout=15, what="data-ret-1 to go")
    cluster_mod.eventually(lambda: bound["data-ret-1"] not in c.kubectl("get", "pv", "-o", "name").stdout,
                           timeout=15, what="its volume to be reclaimed")
    c.kubectl("delete", "statefulset", "ret")
    cluster_mod.eventually(lambda: not claims(), timeout=15, what="data-ret-0 to go with the set")


def test_create_job_runs_to_completion_on_a_process_node(cluster: cluster_mod.Cluster) -> None:
    """`kubectl create job` runs its pod as a process; `wait --for=condition=complete` returns, logs show its output."""
    c = cluster
    assert c.kubectl("create", "job", "hello", "--image=busybox", "--", "sh", "-c",
                     "echo hello from the job").stdout == "job.batch/hello created\n"
    c.kubectl("wait", "--for=condition=complete", "job/hello", "--timeout=30s", timeout=45)
    assert c.kubectl("logs", "job/hello").stdout == "hello from the job\n"
    row = c.kubectl("get", "job", "hello", "--no-headers").stdout.split()
    assert row[:3] == ["hello", "Complete", "1/1"]
    job = c.json("get", "job", "hello")
    assert job["status"]["succeeded"] == 1 and job["status"]["ready"] == 0
    pod, = c.json("get", "pods", "-l", "job-name=hello")["items"]
    assert pod["status"]["phase"] == "Succeeded"
    c.kubectl("delete", "job", "hello")


def test_logs_all_containers(cluster: cluster_mod.Cluster) -> None:
    """kubectl logs --all-containers prints every container's log, --prefix names each line's container."""
    c = cluster
    _apply(c, "two", containers=[{"name": "a", "image": "busybox", "command": ["sh", "-c", "echo from-a; sleep 3600"]},
                      {"name": "b", "image": "busybox", "command": ["sh", "-c", "echo from-b; sleep 3600"]}])
    c.kubectl("wait", "--for=condition=Ready", "pod/two", "--timeout=30s", timeout=45)
    out = _until_some(lambda: o if (o := c.kubectl("logs", "two", "--all-containers").stdout).count("\n") == 2
                                 else None, timeout=10)
    # kubectl walks its per-container requests in Go map order: any order is right.
    assert sorted(out.splitlines()) == ["from-a", "from-b"]
    prefixed = c.kubectl("logs", "two", "--all-containers", "--prefix").stdout
    assert sorted(prefixed.splitlines()) == ["[pod/two/a] from-a", "[pod/two/b] from-b"]
    c.kubectl("delete", "pod", "two", "--grace-period=1", "--wait=false")


def test_exec_it_sh_has_a_terminal(cluster: cluster_mod.Cluster) -> None:
    """`kubectl exec -it POD -- sh` gets a shell on a terminal of kubectl's size; its exit code comes back."""
    c = cluster
    c.kubectl("run", "shell", "--image=busybox", "--", "sleep", "3600")
    c.kubectl("wait", "--for=condition=Ready", "pod/shell", "--timeout=30s", timeout=45)
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl on a terminal of 100x30
        env = dict(os.environ, KUBECONFIG=c.kubeconfig, KUBECACHEDIR=os.path.join(c.data_dir, "kcache"))
        os.execve(cluster_mod.kubectl_binary(), ["kubectl", "exec", "-it", "shell", "--", "sh"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        out = cluster_mod.read_until(fd, b"# ", timeout=20)
        os.write(fd, b"echo sum-$((40+2)); stty size; tty; exit 7\r")
        out += cluster_mod.read_until(fd, b"exit code 7", timeout=10)
        # Read to the end of kubectl's output: closing the terminal first would hang it up.
        out += cluster_mod.read_until(fd, b"\0never", timeout=5)
    finally:
        done, status = os.waitpid(pid, os.WNOHANG)
        if not done:  # kubectl is stuck: end it so the test fails rather than hangs
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        os.close(fd)
    text = out.decode(errors="replace")
    assert "sum-42\r\n30 100\r\n/dev/pts/" in text, text
    assert "command terminated with exit code 7" in text and os.waitstatus_to_exitcode(status) == 7
    c.kubectl("delete", "pod", "shell", "--grace-period=1", "--wait=false")


BAD_PROBES = """
apiVersion: v1
kind: Pod
metadata: {name: badprobe}
spec:
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    livenessProbe: {periodSeconds: 5}
    readinessProbe:
      exec: {command: ["true"]}
      tcpSocket: {port: 80}
      periodSeconds: -1
    startupProbe:
      httpGet: {port: 0}
      successThreshold: 2
"""

BAD_PROBE_FIELDS = """
apiVersion: v1
kind: Pod
metadata: {name: badprobe2}
spec:
  containers:
  - name: c
    image: busybox
    command: [sleep, "3600"]
    livenessProbe: {exec: {command: ["true"]}, successThreshold: 3, terminationGracePeriodSeconds: 0}
    readinessProbe: {exec: {command: ["true"]}, terminationGracePeriodSeconds: 5}
"""


def test_invalid_probes_are_refused_with_kube_messages(cluster: cluster_mod.Cluster) -> None:
    """Probes without or with two handlers, bad ports, thresholds and grace periods are a 422 listing each field."""
    c = cluster
    got = c.kubectl("apply", "-f", "-", input=BAD_PROBES, check=False)
    assert got.returncode == 1
    assert got.stderr == (
        'The Pod "badprobe" is invalid: \n'
        "* spec.containers[0].livenessProbe: Required value: must specify a handler type\n"
        "* spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type\n"
        "* spec.containers[0].readinessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0\n"
        "* spec.containers[0].startupProbe.httpGet.port: Invalid value: 0: must be between 1 and 65535, inclusive\n"
        "* spec.containers[0].startupProbe.successThreshold: Invalid value: 2: must be 1\n")
    got = c.kubectl("apply", "-f", "-", input=BAD_PROBE_FIELDS, check=False)
    assert got.stderr == (
        'The Pod "badprobe2" is invalid: \n'
        "* spec.containers[0].livenessProbe.terminationGracePeriodSeconds: Invalid value: 0: must be greater than 0\n"
        "* spec.containers[0].livenessProbe.successThreshold: Invalid value: 3: must be 1\n"
        "* spec.containers[0].readinessProbe.terminationGracePeriodSeconds: Invalid value: 5: "
        "must not be set for readinessProbes\n")
    assert c.kubectl("get", "pods", "badprobe", "badprobe2", check=False).returncode == 1


def test_up_with_nodes_zones_and_virtual_nodes(tmp_path: Any) -> None:
    """`up --nodes 2 --zones za,zb --virtual-nodes 2`: labelled nodes sharing the machine, virtual pods Running."""
    c = cluster_mod.Cluster(str(tmp_path)).start(args=["--nodes", "2", "--zones", "za,zb", "--virtual-nodes", "2",
                                                       "--pod-network", "off"])
    try:
        nodes = _until_some(lambda: n if len(n := {x["metadata"]["name"]: x for x in c.json("get", "nodes")["items"]})
                                       == 4 else None, timeout=15, what="four nodes to register")
        assert sorted(nodes) == ["pocketkube-node-1", "pocketkube-node-2",
                                 "pocketkube-virtual-node-1", "pocketkube-virtual-node-2"]
        for name, zone in (("pocketkube-node-1", "za"), ("pocketkube-node-2", "zb")):
            labels = nodes[name]["metadata"]["labels"]
            assert labels["kubernetes.io/hostname"] == name and labels["topology.kubernetes.io/zone"] == zone
            capacity = nodes[name]["status"]["capacity"]
            assert int(capacity["cpu"]) == max(1, (os.cpu_count() or 1) // 2)
            with open("/proc/meminfo") as f:
                total_ki = int(f.readline().split()[1])
            assert capacity["memory"] == f"{total_ki // 2}Ki"
        assert nodes["pocketkube-virtual-node-1"]["metadata"]["labels"]["type"] == "virtual"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "virt"}, "spec": {
            "nodeSelector": {"type": "virtual"}, "containers": [{"name": "c", "image": "example.com/none:1"}]}}
        c.kubectl("apply", "-f", "-", input=json.dumps(pod))
        # An image no host program provides still runs: a virtual node starts no process.
        c.kubectl("wait", "--for=condition=Ready", "pod/virt", "--timeout=20s", timeout=30)
        assert c.json("get", "pod", "virt")["spec"]["nodeName"].startswith("pocketkube-virtual-node-")
    finally:
        c.stop()


def test_no_process_outlives_the_pods_of_this_module(cluster: cluster_mod.Cluster) -> None:
    """Once every pod above (crashing, unpullable, probe-killed, done) is deleted, no process is left in its cgroups."""
    found = cgroups.detect(process.cgroup_name(os.path.join(cluster.data_dir, "nodes", NODE)))
    if found.problem or os.geteuid() != 0:
        pytest.skip(f"cgroups are not usable here: {found.problem or 'not root'}")
    cluster.kubectl("delete", "deployments,jobs,statefulsets", "--all", "--wait=false")
    cluster.kubectl("delete", "pods", "--all", "--grace-period=1", "--timeout=30s", timeout=45)
    root = found.roots["pids"] if found.version == cgroups.V1 else found.roots[""]

    def left() -> list[str]:
        pids = []
        for d, _, files in os.walk(root):
            if "cgroup.procs" in files:
                with open(os.path.join(d, "cgroup.procs")) as f:
                    pids += [f"{os.path.relpath(d, root)}:{p}" for p in f.read().split()]
        return pids
    cluster_mod.eventually(lambda: not left(), timeout=15, what=f"no process under {root}")


def test_pod_has_its_own_dev_shm(cluster: cluster_mod.Cluster) -> None:
    """A pod's containers share a /dev/shm of their own, as the sandbox's; the host's stays untouched, and the
    command does not inherit the launcher's descriptors."""
    c = cluster
    name = f"pk-e2e-shm-{os.getpid()}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "shm"},
           "spec": {"terminationGracePeriodSeconds": 0, "containers": [
               {"name": "a", "image": "busybox", "command": [
                   "sh", "-c", f"ls /proc/$$$$/fd > /dev/shm/{name}.fds; echo hi > /dev/shm/{name}; sleep 3600"]},  # $$: kube escape
               {"name": "b", "image": "busybox", "command": ["sleep", "3600"]}]}}
    c.kubectl("apply", "-f", "-", input=json.dumps(pod))
    c.kubectl("wait", "--for=condition=Ready", "pod/shm", "--timeout=30s", timeout=45)
    try:
        cluster_mod.eventually(lambda: c.kubectl("exec", "shm", "-c", "b", "--", "cat", f"/dev/shm/{name}",
                                                 check=False).stdout == "hi\n", timeout=10, what="b to see a's file")
        assert not os.path.exists(f"/dev/shm/{name}")
        fds = c.kubectl("exec", "shm", "-c", "a", "--", "cat", f"/dev/shm/{name}.fds").stdout.split()
        assert "9" not in fds and {"0", "1", "2"} <= set(fds)  # (10: the shell's saved stdout for the redirection)
    finally:
        c.kubectl("delete", "pod", "shm", "--grace-period=0", "--wait=false")
