"""End to end: default ServiceAccounts, PDB status, the eviction API under `kubectl drain`, node lifecycle."""

from __future__ import annotations

import collections.abc
import datetime
import json
import os
import threading
import time
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import http

NODE = """apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
"""

POD = """apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: web
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: busybox
"""

VIOLATION = "Cannot evict pod as it would violate the pod's disruption budget."


def running_ready_pod(c: cluster_mod.Cluster, name: str, node: str) -> None:
    c.kubectl("apply", "-f", "-", input=POD.format(name=name, node=node))
    c.kubectl("patch", "pod", name, "--subresource=status", "--type=merge", "-p",
              json.dumps({"status": {"phase": "Running",
                                     "conditions": [{"type": "Ready", "status": "True"}]}}))


def pdb_status(c: cluster_mod.Cluster, name: str) -> dict[str, Any]:
    return c.json("get", "pdb", name).get("status") or {}


def test_default_service_account_in_new_namespace(cluster: cluster_mod.Cluster) -> None:
    """`kubectl get sa` in a fresh namespace lists "default", and it comes back after being deleted."""
    cluster.kubectl("create", "namespace", "team-a")
    def listed() -> str:
        out = cluster.kubectl("get", "sa", "-n", "team-a", check=False).stdout
        return out if "default" in out else ""

    out = cluster_mod.eventually(listed)
    assert out.splitlines()[0].split() == ["NAME", "SECRETS", "AGE"]
    uid = cluster.json("get", "sa", "default", "-n", "team-a")["metadata"]["uid"]
    cluster.kubectl("delete", "sa", "default", "-n", "team-a")
    cluster_mod.eventually(lambda: (r := cluster.kubectl("get", "sa", "default", "-n", "team-a", "-o", "json", check=False))
                           .returncode == 0 and json.loads(r.stdout)["metadata"]["uid"] != uid)


def test_drain_respects_pod_disruption_budget(cluster: cluster_mod.Cluster) -> None:
    """`kubectl drain` evicts while the budget allows, then retries with kube's 429 message until its timeout."""
    cluster.kubectl("apply", "-f", "-", input=NODE.format(name="drain-node"))
    for i in (1, 2, 3):
        running_ready_pod(cluster, f"web-{i}", "drain-node")
    cluster.kubectl("create", "pdb", "web", "--selector=app=web", "--min-available=2")
    cluster_mod.eventually(lambda: pdb_status(cluster, "web").get("disruptionsAllowed") == 1)
    table = cluster.kubectl("get", "pdb", "web").stdout.splitlines()
    assert table[0].split() == ["NAME", "MIN", "AVAILABLE", "MAX", "UNAVAILABLE", "ALLOWED", "DISRUPTIONS", "AGE"]
    assert table[1].split()[:4] == ["web", "2", "N/A", "1"]
    status = pdb_status(cluster, "web")
    assert (status["currentHealthy"], status["desiredHealthy"], status["expectedPods"]) == (3, 2, 3)
    cond = status["conditions"][0]
    assert (cond["type"], cond["status"], cond["reason"]) == ("DisruptionAllowed", "True", "SufficientPods")

    drain = cluster.kubectl("drain", "drain-node", "--force", "--timeout=7s", check=False, timeout=60)
    out = drain.stdout + drain.stderr
    assert drain.returncode != 0, out
    assert "node/drain-node cordoned" in out
    assert f"(will retry after 5s): {VIOLATION}" in out
    assert out.count(" evicted") == 1, out
    pods = cluster.json("get", "pods", "-l", "app=web")["items"]
    assert len(pods) == 2
    assert cluster.json("get", "node", "drain-node")["spec"]["unschedulable"] is True
    status = cluster_mod.eventually(lambda: (s := pdb_status(cluster, "web")).get("currentHealthy") == 2 and s)
    assert status["disruptionsAllowed"] == 0
    assert status["conditions"][0]["reason"] == "InsufficientPods"


def test_eviction_api_answers_as_kube(cluster: cluster_mod.Cluster) -> None:
    """Raw POSTs to pods/NAME/eviction: 429 with the DisruptionBudget cause, 500 for two budgets, 201 Success."""
    raw = http.Raw(cluster.kubeconfig)
    cluster.kubectl("apply", "-f", "-", input=NODE.format(name="evict-node"))
    cluster.kubectl("create", "namespace", "evict")
    for i in (1, 2):
        cluster.kubectl("apply", "-n", "evict", "-f", "-", input=POD.format(name=f"api-{i}", node="evict-node"))
        cluster.kubectl("patch", "pod", f"api-{i}", "-n", "evict", "--subresource=status", "--type=merge", "-p",
                        json.dumps({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}))
    cluster.kubectl("create", "pdb", "web", "-n", "evict", "--selector=app=web", "--min-available=2")
    cluster_mod.eventually(lambda: cluster.json("get", "pdb", "web", "-n", "evict").get("status", {}).get("currentHealthy") == 2)

    def evict(name: str, body_name: str | None = None) -> tuple[int, Any]:
        body = {"apiVersion": "policy/v1", "kind": "Eviction",
                "metadata": {"name": body_name or name, "namespace": "evict"}}
        code, _, out = raw.request("POST", f"/api/v1/namespaces/evict/pods/{name}/eviction", body)
        return code, out

    assert evict("api-1") == (429, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": VIOLATION,
        "reason": "TooManyRequests",
        "details": {"causes": [{"reason": "DisruptionBudget",
                                "message": "The disruption budget web needs 2 healthy pods and has 2 currently"}]},
        "code": 429})
    code, out = evict("api-1", "other")
    assert (code, out["message"]) == (400, "name in URL does not match name in Eviction object")
    assert evict("missing")[0] == 404

    cluster.kubectl("create", "pdb", "web2", "-n", "evict", "--selector=app=web", "--max-unavailable=1")
    assert evict("api-1") == (500, {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
        "code": 500})
    cluster.kubectl("delete", "pdb", "web2", "-n", "evict")
    cluster.kubectl("patch", "pdb", "web", "-n", "evict", "--type=merge", "-p", '{"spec":{"minAvailable":1}}')
    cluster_mod.eventually(lambda: (s := cluster.json("get", "pdb", "web", "-n", "evict").get("status", {}))
                           .get("disruptionsAllowed") == 1 and s.get("observedGeneration") == 2)
    assert evict("api-1") == (201, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                    "code": 201})
    assert cluster.kubectl("get", "pod", "api-1", "-n", "evict", check=False).returncode != 0


def test_percentage_budget_counts_the_controllers_scale(cluster: cluster_mod.Cluster) -> None:
    """A maxUnavailable percentage is taken of the Deployment's replicas, read through its scale subresource."""
    cluster.kubectl("create", "namespace", "scaled")
    cluster.kubectl("create", "deployment", "api", "-n", "scaled", "--image=busybox", "--replicas=4")
    cluster.kubectl("create", "pdb", "api", "-n", "scaled", "--selector=app=api", "--max-unavailable=25%")
    status = cluster_mod.eventually(lambda: (s := cluster.json("get", "pdb", "api", "-n", "scaled").get("status", {}))
                                    .get("expectedPods") == 4 and s, timeout=15)
    # No pod runs (no node), so none is healthy and nothing may be disrupted.
    assert (status["desiredHealthy"], status["currentHealthy"], status["disruptionsAllowed"]) == (3, 0, 0)
    row = cluster.kubectl("get", "pdb", "api", "-n", "scaled", "--no-headers").stdout.split()
    assert row[:4] == ["api", "N/A", "25%", "0"]


@pytest.fixture(scope="module")
def fast_cluster(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """A cluster whose node controller gives up on a silent node after 2 s instead of 40 s."""
    old = os.environ.get("POCKETKUBE_NODE_MONITOR_GRACE_SECONDS")
    os.environ["POCKETKUBE_NODE_MONITOR_GRACE_SECONDS"] = "2"
    try:
        c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk-fast"))).start()
    finally:
        if old is None:
            del os.environ["POCKETKUBE_NODE_MONITOR_GRACE_SECONDS"]
        else:
            os.environ["POCKETKUBE_NODE_MONITOR_GRACE_SECONDS"] = old
    try:
        yield c
    finally:
        c.stop()


def _ready(c: cluster_mod.Cluster, node: str) -> dict[str, Any]:
    conds = c.json("get", "node", node).get("status", {}).get("conditions") or []
    return next((x for x in conds if x["type"] == "Ready"), {})


def _taints(c: cluster_mod.Cluster, node: str) -> list[tuple[str, str]]:
    return sorted((t["key"], t["effect"]) for t in (c.json("get", "node", node).get("spec") or {}).get("taints") or [])


def test_silent_node_becomes_unknown_and_tainted(fast_cluster: cluster_mod.Cluster) -> None:
    """A Node without a Lease goes Ready=Unknown with the unreachable taint; posting Ready again clears it."""
    c = fast_cluster
    c.kubectl("apply", "-f", "-", input=NODE.format(name="silent"))
    c.kubectl("apply", "-f", "-", input=NODE.format(name="lost"))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    ready = {"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
             "reason": "KubeletReady", "message": "kubelet is posting ready status"}
    c.kubectl("patch", "node", "lost", "--subresource=status", "--type=merge", "-p",
              json.dumps({"status": {"conditions": [ready]}}))
    running_ready_pod(c, "on-lost", "lost")

    lost = cluster_mod.eventually(lambda: (r := _ready(c, "lost")).get("status") == "Unknown" and r)
    assert (lost["reason"], lost["message"]) == ("NodeStatusUnknown", "Kubelet stopped posting node status.")
    assert ("node.kubernetes.io/unreachable", "NoSchedule") in cluster_mod.eventually(lambda: _taints(c, "lost"))
    silent = cluster_mod.eventually(lambda: (r := _ready(c, "silent")).get("status") == "Unknown" and r)
    assert (silent["reason"], silent["message"]) == ("NodeStatusNeverUpdated", "Kubelet never posted node status.")
    assert "NotReady" in c.kubectl("get", "node", "lost").stdout
    # The pods of the lost node are no longer Ready.
    cluster_mod.eventually(lambda: any(x["type"] == "Ready" and x["status"] == "False"
                                       for x in c.json("get", "pod", "on-lost")["status"]["conditions"]))

    # The kubelet posts again: the node is Ready and its taints go.
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    c.kubectl("patch", "node", "lost", "--subresource=status", "--type=merge", "-p",
              json.dumps({"status": {"conditions": [dict(ready, lastHeartbeatTime=now, lastTransitionTime=now)]}}))
    cluster_mod.eventually(lambda: not any(k == "node.kubernetes.io/unreachable" for k, _ in _taints(c, "lost")), timeout=3,
                           every=0.1)


def test_unreachable_node_evicts_pods_after_their_toleration_seconds(fast_cluster: cluster_mod.Cluster) -> None:
    """The NoExecute unreachable taint deletes a pod once its tolerationSeconds pass (the default 300 s keeps one);
    pod GC force-deletes a pod stuck terminating there once the node is tainted out-of-service."""
    c = fast_cluster
    # A healthy node beside it: with every node lost the controller would take it for its own outage and evict
    # nobody. A kubelet renews its Lease every 10 s, too slow for this cluster's 2 s grace: renew one here.
    c.kubectl("apply", "-f", "-", input=NODE.format(name="alive") + "    topology.kubernetes.io/zone: near\n")
    _post_ready(c, "alive")
    lease: dict[str, Any] = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "alive", "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": "alive", "leaseDurationSeconds": 40}}
    stop = threading.Event()

    def renew() -> None:
        while not stop.is_set():
            now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            c.kubectl("apply", "-f", "-", input=json.dumps(dict(lease, spec=dict(lease["spec"], renewTime=now))),
                      check=False)
            stop.wait(0.5)
    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    try:
        cluster_mod.eventually(lambda: c.kubectl("get", "node", "alive", "--no-headers",
                                                 check=False).stdout.split()[1:2] == ["Ready"], timeout=20)
        _evict_from_gone_node(c)
    finally:
        stop.set()
        renewer.join(10)


def _post_ready(c: cluster_mod.Cluster, node: str) -> None:
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    c.kubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps({"status": {
        "conditions": [{"type": "Ready", "status": "True", "lastHeartbeatTime": now, "lastTransitionTime": now,
                        "reason": "KubeletReady", "message": "kubelet is posting ready status"}]}}))


def _evict_from_gone_node(c: cluster_mod.Cluster) -> None:
    # A zone of its own: the other lost nodes of this module must not make it a partially disrupted zone (no evictions).
    c.kubectl("apply", "-f", "-", input=NODE.format(name="gone") + "    topology.kubernetes.io/zone: far-away\n")
    _post_ready(c, "gone")
    brief = json.loads(c.kubectl("create", "-f", "-", "--dry-run=client", "-o", "json",
                                 input=POD.format(name="brief", node="gone")).stdout)
    brief["spec"]["tolerations"] = [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                     "effect": "NoExecute", "tolerationSeconds": 2}]
    c.kubectl("apply", "-f", "-", input=json.dumps(brief))
    running_ready_pod(c, "patient", "gone")
    assert {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
            "tolerationSeconds": 300} in c.json("get", "pod", "patient")["spec"]["tolerations"]
    cluster_mod.eventually(lambda: ("node.kubernetes.io/unreachable", "NoExecute") in _taints(c, "gone"))
    added = next(t["timeAdded"] for t in c.json("get", "node", "gone")["spec"]["taints"] if t["effect"] == "NoExecute")
    cluster_mod.eventually(lambda: c.kubectl("get", "pod", "brief", check=False).returncode != 0, timeout=10,
                           what="the pod tolerating 2 s to go")
    # timeAdded has whole seconds: the 2 s toleration shows as at least 1.5 s here.
    assert time.time() - datetime.datetime.fromisoformat(added).timestamp() >= 1.5
    events = c.kubectl("get", "events", "--field-selector", "involvedObject.name=brief", "-o",
                       "custom-columns=R:.reason,M:.message", "--no-headers").stdout
    assert "TaintManagerEviction" in events and "Marking for deletion Pod default/brief" in events
    assert c.kubectl("get", "pod", "patient", check=False).returncode == 0
    # Pod GC: a pod stuck terminating on a lost node goes once an admin taints the node out-of-service.
    stuck = json.loads(c.kubectl("create", "-f", "-", "--dry-run=client", "-o", "json",
                                 input=POD.format(name="stuck", node="gone")).stdout)
    stuck["spec"].update(terminationGracePeriodSeconds=30, tolerations=[{"operator": "Exists"}])
    c.kubectl("apply", "-f", "-", input=json.dumps(stuck))
    c.kubectl("delete", "pod", "stuck", "--wait=false")
    time.sleep(1)
    assert c.json("get", "pod", "stuck")["metadata"].get("deletionTimestamp"), "no kubelet finishes the deletion"
    c.kubectl("taint", "node", "gone", "node.kubernetes.io/out-of-service=nodeshutdown:NoExecute")
    cluster_mod.eventually(lambda: c.kubectl("get", "pod", "stuck", check=False).returncode != 0, timeout=30,
                           what="pod GC to force-delete the pod")
