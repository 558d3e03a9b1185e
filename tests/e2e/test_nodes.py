"""End to end: virtual node agents register Ready nodes with leases and run pods bound to them."""

from __future__ import annotations

import collections.abc
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from tests.e2e import cluster as cluster_mod

NODES = ("pocketkube-virtual-node-1", "pocketkube-virtual-node-2")

POD = """
apiVersion: v1
kind: Pod
metadata:
  name: web
spec:
  nodeName: pocketkube-virtual-node-1
  containers:
  - name: c
    image: nginx:1.25
"""

JOB_POD = """
apiVersion: v1
kind: Pod
metadata:
  name: task
  annotations:
    pocketkube.dev/virtual-exit-code: "0"
    pocketkube.dev/virtual-run-seconds: "0.5"
spec:
  nodeName: pocketkube-virtual-node-2
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.36
"""


@pytest.fixture(scope="module")
def agents(cluster: cluster_mod.Cluster) -> collections.abc.Iterator[subprocess.Popen[str]]:
    log = open(os.path.join(cluster.data_dir, "agent.log"), "a")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "pocketkube.node.agent", "--kubeconfig", cluster.kubeconfig,
         "--data-dir", cluster.data_dir, "--nodes", "2", "--zones", "zone-a,zone-b"],
        cwd=cluster_mod.ROOT, stdout=log, stderr=log, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    try:
        cluster_mod.eventually(lambda: cluster.kubectl("get", "lease", "-n", "kube-node-lease", "-o", "name",
                                                       check=False).stdout.count("lease") == 2,
                               timeout=20, what="both node leases")
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_nodes_are_ready(cluster, agents):
    """kubectl get nodes lists both nodes Ready with no role and kubelet version v1.32.0."""
    out = cluster.kubectl("get", "nodes").stdout.splitlines()
    assert out[0].split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    rows = {line.split()[0]: line.split() for line in out[1:]}
    for name in NODES:
        assert rows[name][1:3] == ["Ready", "<none>"] and rows[name][4] == "v1.32.0"


def test_nodes_wide(cluster, agents):
    """The wide listing shows the internal IP, OS image, kernel and the pocketkube runtime."""
    out = cluster.kubectl("get", "nodes", "-o", "wide").stdout.splitlines()
    assert out[0].split()[:8] == ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE"]
    row = next(line for line in out if line.startswith(NODES[0]))
    assert "127.0.0.1" in row and "<none>" in row and row.rstrip().endswith("pocketkube://0.1.0")


def test_node_object(cluster, agents):
    """Each Node carries its zone label, capacity, allocatable, addresses and the kubelet's conditions."""
    node = cluster.json("get", "node", NODES[1], "--show-managed-fields")
    assert node["metadata"]["labels"]["topology.kubernetes.io/zone"] == "zone-b"
    assert node["metadata"]["labels"]["kubernetes.io/hostname"] == NODES[1]
    assert node["status"]["capacity"]["pods"] == "110"
    assert set(node["status"]["allocatable"]) >= {"cpu", "memory", "ephemeral-storage", "pods"}
    conds = {c["type"]: (c["status"], c["reason"]) for c in node["status"]["conditions"]}
    assert conds == {"MemoryPressure": ("False", "KubeletHasSufficientMemory"),
                     "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
                     "PIDPressure": ("False", "KubeletHasSufficientPID"),
                     "Ready": ("True", "KubeletReady")}
    assert {"type": "InternalIP", "address": "127.0.0.1"} in node["status"]["addresses"]
    managers = {m["manager"] for m in node["metadata"].get("managedFields") or []}
    assert "kubelet" in managers


def test_leases(cluster, agents):
    """Each node holds a Lease in kube-node-lease, shown with its holder."""
    out = cluster.kubectl("get", "lease", "-n", "kube-node-lease").stdout.splitlines()
    assert out[0].split() == ["NAME", "HOLDER", "AGE"]
    rows = {line.split()[0]: line.split()[1] for line in out[1:]}
    assert rows == {n: n for n in NODES}
    lease = cluster.json("get", "lease", "-n", "kube-node-lease", NODES[0])
    assert lease["spec"]["leaseDurationSeconds"] == 40
    assert lease["metadata"]["ownerReferences"][0]["kind"] == "Node"


def test_pod_runs_and_is_deleted(cluster, agents):
    """A pod bound to a node becomes Running 1/1 with kubelet events, and kubectl delete completes."""
    cluster.kubectl("apply", "-f", "-", input=POD)
    cluster.kubectl("wait", "--for=condition=Ready", "pod/web", "--timeout=15s")
    row = cluster.kubectl("get", "pods", "web", "-o", "wide").stdout.splitlines()[1].split()
    assert row[1:4] == ["1/1", "Running", "0"]
    assert row[5].startswith("10.245.0.") and row[6] == NODES[0]
    pod = cluster.json("get", "pod", "web")
    cs = pod["status"]["containerStatuses"][0]
    assert cs["containerID"].startswith("pocketkube://") and cs["image"] == "docker.io/library/nginx:1.25"
    assert cs["imageID"].startswith("docker.io/library/nginx@sha256:")
    assert [c["type"] for c in pod["status"]["conditions"]] == [
        "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]

    def events_shown() -> bool:
        text = cluster.kubectl("describe", "pod", "web").stdout
        return "Started container c" in text
    cluster_mod.eventually(events_shown, what="the Started event")
    text = cluster.kubectl("describe", "pod", "web").stdout
    assert re.search(rf"^Node:\s+{NODES[0]}/127\.0\.0\.1$", text, re.M)
    assert 'Container image "nginx:1.25" already present on machine' in text
    assert "Created container: c" in text and "kubelet" in text

    started = time.monotonic()
    out = cluster.kubectl("delete", "pod", "web", timeout=30).stdout
    assert out.strip() == 'pod "web" deleted'
    assert time.monotonic() - started < 10
    gone = cluster.kubectl("get", "pod", "web", check=False)
    assert gone.returncode != 0 and 'pods "web" not found' in gone.stderr


def test_virtual_exit_completes(cluster, agents):
    """A Never pod annotated to exit 0 after half a second ends Succeeded and is listed as Completed."""
    cluster.kubectl("apply", "-f", "-", input=JOB_POD)
    cluster.kubectl("wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/task", "--timeout=15s")
    row = cluster.kubectl("get", "pods", "task").stdout.splitlines()[1].split()
    assert row[1:3] == ["0/1", "Completed"]
    term = cluster.json("get", "pod", "task")["status"]["containerStatuses"][0]["state"]["terminated"]
    assert (term["exitCode"], term["reason"]) == (0, "Completed")
    cluster.kubectl("delete", "pod", "task")


def test_node_events(cluster, agents):
    """kubectl describe node shows the lease holder and the kubelet's start-up events."""
    text = cluster.kubectl("describe", "node", NODES[0]).stdout
    assert f"HolderIdentity:  {NODES[0]}" in text
    assert "Starting kubelet." in text
    assert json.loads(cluster.kubectl("get", "node", NODES[0], "-o", "json").stdout)["spec"]["podCIDR"] == "10.245.0.0/24"
