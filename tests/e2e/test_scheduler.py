"""End to end: the real kubectl sees pods placed by the scheduler on Nodes created from manifests."""

from __future__ import annotations

import asyncio
import collections.abc
import re
import threading
import time
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod

NODES = """
apiVersion: v1
kind: Node
metadata:
  name: sn1
  labels: {kubernetes.io/hostname: sn1, topology.kubernetes.io/zone: a, disk: ssd}
status:
  capacity: {cpu: "2", memory: 4Gi, pods: "110"}
  allocatable: {cpu: "2", memory: 4Gi, pods: "110"}
---
apiVersion: v1
kind: Node
metadata:
  name: sn2
  labels: {kubernetes.io/hostname: sn2, topology.kubernetes.io/zone: b}
status:
  capacity: {cpu: "4", memory: 8Gi, pods: "110"}
  allocatable: {cpu: "4", memory: 8Gi, pods: "110"}
---
apiVersion: v1
kind: Node
metadata:
  name: sn3
  labels: {kubernetes.io/hostname: sn3, topology.kubernetes.io/zone: b, gpu: "true"}
spec:
  taints: [{key: dedicated, value: gpu, effect: NoSchedule}]
status:
  capacity: {cpu: "8", memory: 16Gi, pods: "110"}
  allocatable: {cpu: "8", memory: 16Gi, pods: "110"}
"""

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: on-ssd}
spec:
  nodeSelector: {disk: ssd}
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: on-gpu}
spec:
  affinity:
    nodeAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
        nodeSelectorTerms:
        - matchExpressions: [{key: gpu, operator: Exists}]
  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: untolerated}
spec:
  nodeSelector: {gpu: "true"}
  containers: [{name: c, image: nginx}]
---
apiVersion: v1
kind: Pod
metadata: {name: too-big}
spec:
  containers: [{name: c, image: nginx, resources: {requests: {cpu: "6"}}}]
"""


def _wait(cond: collections.abc.Callable[[], Any], timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def _standalone_scheduler(c: cluster_mod.Cluster) -> collections.abc.Callable[[], None]:
    """Run the scheduler in a thread of the test process, as a separate kube-scheduler would run."""
    from pocketkube.client import config
    from pocketkube.scheduler import scheduler

    loop = asyncio.new_event_loop()
    task: list[asyncio.Task[None]] = []

    async def main() -> None:
        client = config.from_kubeconfig(c.kubeconfig)
        try:
            await scheduler.Scheduler(client).run()
        finally:
            await client.close()

    def run() -> None:
        asyncio.set_event_loop(loop)
        task.append(loop.create_task(main()))
        try:
            loop.run_until_complete(task[0])
        except BaseException:  # noqa: BLE001 - stopped by cancellation
            pass

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def stop() -> None:
        if task:
            loop.call_soon_threadsafe(task[0].cancel)
        thread.join(10)

    return stop


@pytest.fixture(scope="module")
def scheduled(cluster: cluster_mod.Cluster) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """The cluster with nodes and pods applied; a scheduler runs (the server's own, or one started here)."""
    cluster.kubectl("apply", "-f", "-", input=NODES)
    cluster.kubectl("run", "probe", "--image=nginx")
    stop = None
    if not _wait(lambda: cluster.json("get", "pod", "probe")["spec"].get("nodeName"), timeout=3):
        stop = _standalone_scheduler(cluster)
    cluster.kubectl("apply", "-f", "-", input=PODS)
    try:
        yield cluster
    finally:
        if stop is not None:
            stop()


def _node_of(c: cluster_mod.Cluster, pod: str) -> str:
    return str(_wait(lambda: c.json("get", "pod", pod)["spec"].get("nodeName") or "") or "")


def test_selectors_affinity_and_taints_steer_placement(scheduled: cluster_mod.Cluster) -> None:
    """nodeSelector, required node affinity with a toleration, and taints decide the NODE column."""
    assert _node_of(scheduled, "on-ssd") == "sn1"
    assert _node_of(scheduled, "on-gpu") == "sn3"
    assert _node_of(scheduled, "probe") in ("sn1", "sn2")
    out = scheduled.kubectl("get", "pods", "-o", "wide").stdout
    row = next(line.split() for line in out.splitlines() if line.startswith("on-ssd "))
    assert row[6] == "sn1"


def test_scheduled_event_in_describe(scheduled: cluster_mod.Cluster) -> None:
    """kubectl describe shows PodScheduled True and the Scheduled event from default-scheduler."""
    _node_of(scheduled, "on-ssd")
    out = _wait(lambda: (o := scheduled.kubectl("describe", "pod", "on-ssd").stdout)
                and "Successfully assigned" in o and o)
    assert re.search(r"^Node:\s+sn1/$", out, re.M)
    assert re.search(r"PodScheduled\s+True", out)
    assert "Normal  Scheduled" in out and "default-scheduler  Successfully assigned default/on-ssd to sn1" in out


def test_pod_that_fits_nowhere_stays_pending_with_failed_scheduling(scheduled: cluster_mod.Cluster) -> None:
    """A pod too big for every node stays Pending with kube's message in the condition, describe and events."""
    msg = ("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu. "
           "preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, "
           "2 No preemption victims found for incoming pod.")

    def cond() -> Any:
        pod = scheduled.json("get", "pod", "too-big")
        return next((c for c in pod["status"].get("conditions") or [] if c["type"] == "PodScheduled"), None)

    c = _wait(cond)
    assert c is not None and (c["status"], c["reason"], c["message"]) == ("False", "Unschedulable", msg)
    assert scheduled.json("get", "pod", "too-big")["status"]["phase"] == "Pending"
    out = _wait(lambda: (o := scheduled.kubectl("describe", "pod", "too-big").stdout) and "FailedScheduling" in o
                and o)
    assert "Warning  FailedScheduling" in out and msg in out
    events = scheduled.kubectl("get", "events", "--field-selector", "involvedObject.name=too-big").stdout
    assert "FailedScheduling" in events and "pod/too-big" in events
    untol = _wait(lambda: [c for c in scheduled.json("get", "pod", "untolerated")["status"].get("conditions") or []
                           if c["type"] == "PodScheduled"])
    assert untol[0]["message"].startswith("0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, "
                                          "2 node(s) didn't match Pod's node affinity/selector.")


def test_new_node_unblocks_a_pending_pod(scheduled: cluster_mod.Cluster) -> None:
    """Adding a node big enough moves the unschedulable pod back into the queue and it is bound there."""
    _wait(lambda: scheduled.json("get", "pod", "too-big")["status"].get("conditions"))
    scheduled.kubectl("apply", "-f", "-", input="""
apiVersion: v1
kind: Node
metadata: {name: sn4, labels: {kubernetes.io/hostname: sn4}}
status:
  capacity: {cpu: "16", memory: 32Gi, pods: "110"}
  allocatable: {cpu: "16", memory: 32Gi, pods: "110"}
""")
    assert _node_of(scheduled, "too-big") == "sn4"
