"""End to end: StatefulSets and DaemonSets driven by the real kubectl, pods made ready by hand (no kubelet)."""

from __future__ import annotations

import json
import time

from tests.e2e import cluster as cluster_mod

READY = json.dumps({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}})


def _sts(name: str, *, replicas: int = 3, policy: str = "OrderedReady", mount: bool = False,
         retention: str = "Retain") -> str:
    container: dict = {"name": "c", "image": "busybox", "command": ["sleep", "3600"]}
    if mount:
        container["volumeMounts"] = [{"name": "data", "mountPath": "/data"}]
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name},
        "spec": {"serviceName": name, "replicas": replicas, "podManagementPolicy": policy,
                 "selector": {"matchLabels": {"app": name}},
                 "persistentVolumeClaimRetentionPolicy": {"whenDeleted": retention, "whenScaled": retention},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})


def _pods(cluster: cluster_mod.Cluster, ns: str, selector: str) -> list[str]:
    out = cluster.kubectl("-n", ns, "get", "pods", "-l", selector, "-o", "name").stdout.split()
    return sorted(p.removeprefix("pod/") for p in out)


def _ready(cluster: cluster_mod.Cluster, ns: str, pod: str) -> None:
    cluster.kubectl("-n", ns, "patch", "pod", pod, "--subresource=status", "--type=merge", "-p", READY)


def test_statefulset_comes_up_in_order_with_claims(cluster: cluster_mod.Cluster) -> None:
    """OrderedReady creates web-0, web-1, web-2 one at a time as each turns Ready, each after its PVC."""
    cluster.kubectl("create", "namespace", "sts1")
    cluster.kubectl("-n", "sts1", "apply", "-f", "-", input=_sts("web"))
    for i in range(3):
        cluster_mod.eventually(lambda i=i: _pods(cluster, "sts1", "app=web") == [f"web-{j}" for j in range(i + 1)])
        time.sleep(0.3)
        assert _pods(cluster, "sts1", "app=web") == [f"web-{j}" for j in range(i + 1)]
        _ready(cluster, "sts1", f"web-{i}")
    cluster_mod.eventually(lambda: "3/3" in cluster.kubectl("-n", "sts1", "get", "sts", "web").stdout)
    table = cluster.kubectl("-n", "sts1", "get", "sts").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "AGE"] and table[1].split()[:2] == ["web", "3/3"]
    pvcs = cluster.kubectl("-n", "sts1", "get", "pvc", "-o", "name").stdout.split()
    assert pvcs == [f"persistentvolumeclaim/data-web-{i}" for i in range(3)]
    pod = cluster.json("-n", "sts1", "get", "pod", "web-1")
    labels = pod["metadata"]["labels"]
    assert labels["statefulset.kubernetes.io/pod-name"] == "web-1" and labels["apps.kubernetes.io/pod-index"] == "1"
    assert pod["spec"]["hostname"] == "web-1" and pod["spec"]["subdomain"] == "web"
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "data-web-1"}} in pod["spec"]["volumes"]
    status = cluster.json("-n", "sts1", "get", "sts", "web")["status"]
    assert status["currentRevision"] == status["updateRevision"] == labels["controller-revision-hash"]
    assert (status["replicas"], status["readyReplicas"], status["availableReplicas"], status["currentReplicas"],
            status["updatedReplicas"], status["observedGeneration"]) == (3, 3, 3, 3, 3, 1)
    events = cluster.kubectl("-n", "sts1", "get", "events", "--field-selector", "involvedObject.kind=StatefulSet",
                             "-o", "custom-columns=R:.reason,M:.message", "--no-headers").stdout
    assert "create Pod web-0 in StatefulSet web successful" in events
    assert "create Claim data-web-0 Pod web-0 in StatefulSet web success" in events
    out = cluster.kubectl("-n", "sts1", "rollout", "status", "sts/web", "--timeout=10s").stdout
    assert "partitioned roll out complete: 3 new pods have been updated" in out


def test_statefulset_update_history_undo_and_scale_down(cluster: cluster_mod.Cluster) -> None:
    """An image change rolls pods from the highest ordinal; history lists both revisions; scale-down goes last-first."""
    ns = "sts1"
    cluster.kubectl("-n", ns, "set", "image", "sts/web", "c=busybox:1.36")
    for i in (2, 1, 0):
        cluster_mod.eventually(lambda i=i: cluster.json("-n", ns, "get", "pod", f"web-{i}")["spec"]["containers"][0]["image"]
                               == "busybox:1.36" if cluster.kubectl("-n", ns, "get", "pod", f"web-{i}", check=False).returncode
                               == 0 else False)
        _ready(cluster, ns, f"web-{i}")
    out = cluster.kubectl("-n", ns, "rollout", "status", "sts/web", "--timeout=10s").stdout
    assert "3 new pods have been updated" in out
    history = cluster.kubectl("-n", ns, "rollout", "history", "sts/web").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    revs = cluster.kubectl("-n", ns, "get", "controllerrevisions").stdout.splitlines()
    assert revs[0].split() == ["NAME", "CONTROLLER", "REVISION", "AGE"]
    assert sorted(r.split()[1:3] for r in revs[1:]) == [["statefulset.apps/web", "1"], ["statefulset.apps/web", "2"]]
    cluster.kubectl("-n", ns, "rollout", "undo", "sts/web")
    cluster_mod.eventually(lambda: "3" in cluster.kubectl("-n", ns, "get", "controllerrevisions", "-o",
                                                          "jsonpath={.items[*].revision}").stdout.split())
    cluster.kubectl("-n", ns, "scale", "sts/web", "--replicas=1")
    # Scale-down removes the highest ordinals first (pods being rolled may be missing for a moment).
    cluster_mod.eventually(lambda: (pods := _pods(cluster, ns, "app=web")) and len(pods) < 3 and "web-2" not in pods,
                           timeout=30, what="web-2 removed first")
    assert cluster.kubectl("-n", ns, "get", "pvc", "data-web-2", check=False).returncode == 0


def test_parallel_statefulset_with_delete_retention(cluster: cluster_mod.Cluster) -> None:
    """Parallel creates every pod at once; whenDeleted=Delete makes the set the claims' controller owner."""
    cluster.kubectl("create", "namespace", "sts2")
    cluster.kubectl("-n", "sts2", "apply", "-f", "-", input=_sts("db", policy="Parallel", retention="Delete"))
    cluster_mod.eventually(lambda: _pods(cluster, "sts2", "app=db") == ["db-0", "db-1", "db-2"])
    sset = cluster.json("-n", "sts2", "get", "sts", "db")
    refs = cluster_mod.eventually(lambda: cluster.json("-n", "sts2", "get", "pvc", "data-db-0")["metadata"].get(
        "ownerReferences"))
    assert refs == [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db",
                     "uid": sset["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
    cluster.kubectl("-n", "sts2", "delete", "sts", "db", "--wait=false")
    cluster_mod.eventually(lambda: not cluster.kubectl("-n", "sts2", "get", "pvc", "-o", "name").stdout.strip(), timeout=15)


def test_statefulset_may_mount_its_claim_templates(cluster: cluster_mod.Cluster) -> None:
    """A container may mount a volume named after a volumeClaimTemplate, as in the Kubernetes docs."""
    cluster.kubectl("create", "namespace", "sts3")
    cluster.kubectl("-n", "sts3", "apply", "-f", "-", input=_sts("m", mount=True))


NODES = json.dumps({"apiVersion": "v1", "kind": "List", "items": [
    {"apiVersion": "v1", "kind": "Node", "metadata": {"name": f"ds-n{i}", "labels": {"dsrole": role}},
     "spec": spec, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
    for i, (role, spec) in enumerate([
        ("agent", {}),
        ("agent", {"unschedulable": True, "taints": [{"key": "node.kubernetes.io/unschedulable",
                                                      "effect": "NoSchedule"}]}),
        ("agent", {"taints": [{"key": "dedicated", "value": "db", "effect": "NoSchedule"}]}),
        ("other", {}),
    ])]})


def test_daemonset_runs_one_pod_per_eligible_node(cluster: cluster_mod.Cluster) -> None:
    """A DaemonSet targets matching nodes (cordoned ones too, untolerated taints not) and rolls out a new template."""
    cluster.kubectl("apply", "-f", "-", input=NODES)
    cluster.kubectl("create", "namespace", "ds1")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
          "spec": {"selector": {"matchLabels": {"app": "agent"}},
                   "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
                   "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {
                       "nodeSelector": {"dsrole": "agent"},
                       "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}}
    cluster.kubectl("-n", "ds1", "apply", "-f", "-", input=json.dumps(ds))
    cluster_mod.eventually(lambda: len(_pods(cluster, "ds1", "app=agent")) == 2)
    pods = cluster.json("-n", "ds1", "get", "pods", "-l", "app=agent")["items"]
    targets = sorted(p["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"][0]["matchFields"][0]["values"][0] for p in pods)
    assert targets == ["ds-n0", "ds-n1"]
    tolerations = {(t["key"], t["effect"]) for t in pods[0]["spec"]["tolerations"]}
    assert ("node.kubernetes.io/unschedulable", "NoSchedule") in tolerations
    for p in pods:
        _ready(cluster, "ds1", p["metadata"]["name"])
    cluster_mod.eventually(lambda: cluster.json("-n", "ds1", "get", "ds", "agent").get("status", {}).get("numberAvailable") == 2)
    table = cluster.kubectl("-n", "ds1", "get", "ds").stdout.splitlines()
    assert table[0].split() == ["NAME", "DESIRED", "CURRENT", "READY", "UP-TO-DATE", "AVAILABLE", "NODE", "SELECTOR",
                                "AGE"]
    assert table[1].split()[:7] == ["agent", "2", "2", "2", "2", "2", "dsrole=agent"]
    out = cluster.kubectl("-n", "ds1", "rollout", "status", "ds/agent", "--timeout=10s").stdout
    assert 'daemon set "agent" successfully rolled out' in out
    cluster.kubectl("-n", "ds1", "set", "image", "ds/agent", "c=busybox:1.36")
    cluster_mod.eventually(lambda: len(_pods(cluster, "ds1", "app=agent")) == 3)
    history = cluster.kubectl("-n", "ds1", "rollout", "history", "ds/agent").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["1", "2"]
    status = cluster.json("-n", "ds1", "get", "ds", "agent")["status"]
    assert status["desiredNumberScheduled"] == 2 and status["observedGeneration"] == 2
    revs = cluster.json("-n", "ds1", "get", "controllerrevisions")["items"]
    assert sorted(r["revision"] for r in revs) == [1, 2]
    assert all(r["metadata"]["labels"]["controller-revision-hash"] in r["metadata"]["name"] for r in revs)


def test_daemonset_template_generation_annotation(cluster: cluster_mod.Cluster) -> None:
    """The API server records the pod template's generation on DaemonSets, as kube's strategy does."""
    cluster.kubectl("create", "namespace", "dsgen")
    ds = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "g", "namespace": "dsgen"},
          "spec": {"selector": {"matchLabels": {"a": "g"}},
                   "template": {"metadata": {"labels": {"a": "g"}},
                                "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(ds))
    key = "deprecated.daemonset.template.generation"
    assert cluster.json("-n", "dsgen", "get", "ds", "g")["metadata"]["annotations"][key] == "1"
    cluster.kubectl("-n", "dsgen", "set", "image", "ds/g", "c=busybox:1.36")
    assert cluster.json("-n", "dsgen", "get", "ds", "g")["metadata"]["annotations"][key] == "2"


def test_reapplying_an_unchanged_statefulset_keeps_its_generation(cluster: cluster_mod.Cluster) -> None:
    """A second `kubectl apply` of the same manifest is a no-op: volumeClaimTemplates' defaults do not bump generation."""
    cluster.kubectl("create", "namespace", "stsgen")
    manifest = _sts("same", replicas=0)
    cluster.kubectl("-n", "stsgen", "apply", "-f", "-", input=manifest)
    before = cluster.json("-n", "stsgen", "get", "sts", "same")["metadata"]
    # kubectl still sends the atomic volumeClaimTemplates list (says "configured", as against kube): a no-op there.
    cluster.kubectl("-n", "stsgen", "apply", "-f", "-", input=manifest)
    after = cluster.json("-n", "stsgen", "get", "sts", "same")["metadata"]
    assert (after["generation"], after["resourceVersion"]) == (before["generation"], before["resourceVersion"])
    assert cluster.kubectl("-n", "stsgen", "diff", "-f", "-", input=manifest).stdout == ""
