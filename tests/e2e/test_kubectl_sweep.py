"""End to end: a sweep of kubectl commands sees what a real 1.32 cluster would show (regressions of the sweep)."""

from __future__ import annotations

import json
import os

from tests.e2e import cluster as cluster_mod

MANIFESTS = os.path.join(os.path.dirname(__file__), "manifests")

def test_removing_the_last_label_and_annotation_leaves_no_empty_maps(cluster: cluster_mod.Cluster) -> None:
    """`kubectl label x-` / `annotate y-` on the last entries leave no `labels: {}`, as Go's omitempty drops them."""
    cluster.kubectl("create", "configmap", "sweep-labels", "--from-literal=a=b")
    cluster.kubectl("label", "cm", "sweep-labels", "x=1")
    cluster.kubectl("label", "--overwrite", "cm", "sweep-labels", "x=2")
    cluster.kubectl("annotate", "cm", "sweep-labels", "note=hi")
    assert cluster.kubectl("label", "cm", "sweep-labels", "x=3", check=False).returncode == 1
    cluster.kubectl("label", "cm", "sweep-labels", "x-")
    cluster.kubectl("annotate", "cm", "sweep-labels", "note-")
    meta = cluster.json("get", "cm", "sweep-labels")["metadata"]
    assert "labels" not in meta and "annotations" not in meta


def test_create_drops_empty_omitempty_fields(cluster: cluster_mod.Cluster) -> None:
    """Empty labels, finalizers and data sent on create are not stored, as kube-apiserver's Go round trip does."""
    manifest = {"apiVersion": "v1", "kind": "ConfigMap", "data": {},
                "metadata": {"name": "sweep-empty", "labels": {}, "annotations": {}, "finalizers": []}}
    out = json.loads(cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(manifest)).stdout)
    assert "data" not in out
    assert not {"labels", "annotations", "finalizers"} & set(out["metadata"])


def test_new_pod_gets_priority_and_default_tolerations(cluster: cluster_mod.Cluster) -> None:
    """Priority and DefaultTolerationSeconds admission stamp priority 0 and the 300s not-ready/unreachable tolerations."""
    cluster.kubectl("run", "sweep-pod", "--image=nginx")
    spec = cluster.json("get", "pod", "sweep-pod")["spec"]
    assert spec["priority"] == 0 and spec["preemptionPolicy"] == "PreemptLowerPriority"
    assert spec["tolerations"] == [
        {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
        {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300}]
    described = cluster.kubectl("describe", "pod", "sweep-pod").stdout
    assert "Priority: 0" in " ".join(described.split())
    assert "node.kubernetes.io/not-ready:NoExecute op=Exists for 300s" in described


def test_pod_priority_class_is_resolved_or_refused(cluster: cluster_mod.Cluster) -> None:
    """A known priorityClassName sets spec.priority from the class; an unknown one is a 403 naming the class."""
    cluster.kubectl("run", "sweep-critical", "--image=x",
                    "--overrides", '{"spec":{"priorityClassName":"system-node-critical"}}')
    assert cluster.json("get", "pod", "sweep-critical")["spec"]["priority"] == 2000001000
    cp = cluster.kubectl("run", "sweep-nopc", "--image=x", "--overrides", '{"spec":{"priorityClassName":"nope"}}',
                         check=False)
    assert cp.returncode == 1
    assert 'Error from server (Forbidden): pods "sweep-nopc" is forbidden: no PriorityClass with name nope was found' \
        in cp.stderr


def test_pod_tolerating_everything_gets_no_default_tolerations(cluster: cluster_mod.Cluster) -> None:
    """A pod whose toleration has an empty key and effect already tolerates both taints, so none are added."""
    tol = '{"spec":{"tolerations":[{"operator":"Exists"}]}}'
    cluster.kubectl("run", "sweep-tolerant", "--image=x", "--overrides", tol)
    assert cluster.json("get", "pod", "sweep-tolerant")["spec"]["tolerations"] == [{"operator": "Exists"}]


def test_create_dry_run_server_of_every_generator_kind(cluster: cluster_mod.Cluster) -> None:
    """Every `kubectl create <kind>` generator is accepted with --dry-run=server and leaves nothing behind."""
    commands = [
        ["clusterrole", "sweep-cr", "--verb=get", "--resource=pods"],
        ["clusterrolebinding", "sweep-crb", "--clusterrole=sweep-cr", "--user=u"],
        ["configmap", "sweep-cm", "--from-literal=a=b"],
        ["cronjob", "sweep-cj", "--image=busybox", "--schedule=*/1 * * * *"],
        ["deployment", "sweep-d", "--image=nginx", "--replicas=2", "--port=80"],
        ["ingress", "sweep-ing", "--rule=foo.com/bar=svc1:8080,tls=my-cert"],
        ["job", "sweep-j", "--image=busybox"],
        ["namespace", "sweep-ns"],
        ["poddisruptionbudget", "sweep-pdb", "--selector=app=x", "--min-available=1"],
        ["priorityclass", "sweep-pc", "--value=1000"],
        ["quota", "sweep-q", "--hard=cpu=1,pods=2"],
        ["role", "sweep-r", "--verb=get", "--resource=pods"],
        ["rolebinding", "sweep-rb", "--role=sweep-r", "--user=u"],
        ["secret", "generic", "sweep-s", "--from-literal=a=b"],
        ["secret", "docker-registry", "sweep-s2", "--docker-server=x", "--docker-username=u", "--docker-password=p"],
        ["service", "clusterip", "sweep-svc1", "--tcp=80:8080"],
        ["service", "nodeport", "sweep-svc2", "--tcp=80:8080"],
        ["service", "loadbalancer", "sweep-svc3", "--tcp=80:8080"],
        ["service", "externalname", "sweep-svc4", "--external-name=example.com"],
        ["serviceaccount", "sweep-sa"],
    ]
    for args in commands:
        out = cluster.kubectl("create", *args, "--dry-run=server").stdout
        assert out.endswith("created (server dry run)\n"), out
    assert cluster.kubectl("get", "cm", "sweep-cm", check=False).returncode == 1


def test_diff_exit_codes_and_server_side_apply_migration(cluster: cluster_mod.Cluster) -> None:
    """diff exits 0 without changes, 1 with changes, and SSA takes over a client-side-applied object's fields."""
    deploy = os.path.join(MANIFESTS, "deploy.yaml")
    cluster.kubectl("apply", "-f", deploy)
    assert cluster.kubectl("diff", "-f", deploy, check=False).returncode == 0
    with open(deploy) as f:
        changed = f.read().replace("nginx:1.25", "nginx:1.27")
    assert cluster.kubectl("diff", "-f", "-", input=changed, check=False).returncode == 1
    cluster.kubectl("apply", "--server-side", "-f", "-", input=changed)
    managers = {(m["manager"], m["operation"])
                for m in cluster.json("get", "deploy", "web", "--show-managed-fields")["metadata"]["managedFields"]}
    assert ("kubectl", "Apply") in managers and ("kubectl-client-side-apply", "Update") not in managers


def test_autoscale_reads_back_as_v2_with_go_zero_status(cluster: cluster_mod.Cluster) -> None:
    """`kubectl autoscale` creates through autoscaling/v1; v2 reads show desiredReplicas 0 and currentMetrics null."""
    cluster.kubectl("create", "deployment", "sweep-hpa", "--image=nginx")
    assert cluster.kubectl("autoscale", "deploy", "sweep-hpa", "--min=2", "--max=5",
                           "--cpu-percent=50").stdout == "horizontalpodautoscaler.autoscaling/sweep-hpa autoscaled\n"
    hpa = cluster.json("get", "hpa", "sweep-hpa")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["status"] == {"currentMetrics": None, "desiredReplicas": 0}
    assert hpa["spec"]["metrics"] == [{"type": "Resource", "resource": {
        "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]
    v1 = json.loads(cluster.kubectl("get", "--raw",
                                    "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/sweep-hpa").stdout)
    assert v1["status"] == {"currentReplicas": 0, "desiredReplicas": 0}
    assert v1["spec"]["targetCPUUtilizationPercentage"] == 50


def test_new_pdb_status_has_go_zero_counts(cluster: cluster_mod.Cluster) -> None:
    """A new PodDisruptionBudget's status carries the four non-omitempty counts at zero, as kube-apiserver writes it."""
    # The create response shows what the API server stored; the disruption controller updates it later.
    created = json.loads(cluster.kubectl("create", "pdb", "sweep-pdb", "--selector=app=x", "--min-available=1",
                                         "-o", "json").stdout)
    assert created["status"] == {"currentHealthy": 0, "desiredHealthy": 0, "disruptionsAllowed": 0, "expectedPods": 0}
