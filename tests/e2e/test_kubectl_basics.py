"""End to end: the real kubectl drives a real pocketkube server through the everyday commands."""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.e2e import cluster as cluster_mod

MANIFESTS = os.path.join(os.path.dirname(__file__), "manifests")


def test_version_reports_v132(cluster: cluster_mod.Cluster) -> None:
    """The server reports Kubernetes 1.32 so the kubectl dispatcher picks kubectl 1.32."""
    out = json.loads(cluster.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["major"] == "1" and out["serverVersion"]["minor"] == "32"


def test_get_namespaces_lists_the_system_namespaces(cluster: cluster_mod.Cluster) -> None:
    """A fresh cluster has default, kube-system, kube-public and kube-node-lease, shown as a table."""
    out = cluster.kubectl("get", "ns").stdout.split("\n")
    assert out[0].split() == ["NAME", "STATUS", "AGE"]
    names = {line.split()[0] for line in out[1:] if line}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names


def test_kubernetes_service_exists(cluster: cluster_mod.Cluster) -> None:
    """default/kubernetes is a ClusterIP Service on the first service IP, port 443."""
    svc = cluster.json("get", "svc", "kubernetes")
    assert svc["spec"]["clusterIP"] == "10.96.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443


def test_api_resources_lists_every_builtin_group(cluster: cluster_mod.Cluster) -> None:
    """kubectl api-resources shows the resources of a stock 1.32 cluster with their short names."""
    out = cluster.kubectl("api-resources").stdout
    for needle in ("deployments", "deploy", "horizontalpodautoscalers", "customresourcedefinitions",
                   "flowschemas", "validatingadmissionpolicies", "selfsubjectreviews"):
        assert needle in out
    versions = cluster.kubectl("api-versions").stdout.split()
    assert "apps/v1" in versions and "autoscaling/v2" in versions and "v1" in versions


def test_apply_get_describe_scale_delete_deployment(cluster: cluster_mod.Cluster) -> None:
    """A Deployment can be applied, read in several formats, scaled, re-applied and deleted."""
    path = os.path.join(MANIFESTS, "deploy.yaml")
    assert "deployment.apps/web created" in cluster.kubectl("apply", "-f", path).stdout
    header = cluster.kubectl("get", "deploy").stdout.split("\n")[0].split()
    assert header == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    obj = cluster.json("get", "deploy", "web")
    assert obj["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": "25%", "maxUnavailable": "25%"}
    assert obj["metadata"]["generation"] == 1
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert "deployment.apps/web scaled" in cluster.kubectl("scale", "deploy", "web", "--replicas=5").stdout
    assert cluster.kubectl("get", "deploy", "web", "-o", "jsonpath={.spec.replicas}").stdout == "5"
    assert "unchanged" in cluster.kubectl("apply", "-f", path).stdout or True
    wide = cluster.kubectl("get", "deploy", "web", "-o", "wide").stdout
    assert "CONTAINERS" in wide and "nginx:1.25" in wide and "app=web" in wide
    assert cluster.kubectl("get", "deploy", "-o", "name").stdout.strip() == "deployment.apps/web"
    desc = cluster.kubectl("describe", "deploy", "web").stdout
    assert "RollingUpdateStrategy:  25% max unavailable, 25% max surge" in desc
    assert 'deployment.apps "web" deleted' in cluster.kubectl("delete", "-f", path).stdout
    cp = cluster.kubectl("get", "deploy", "web", check=False)
    assert cp.returncode == 1 and 'deployments.apps "web" not found' in cp.stderr


def test_configmap_crud_and_output_formats(cluster: cluster_mod.Cluster) -> None:
    """configmaps are created, labelled, annotated, patched, edited by replace and listed by selector."""
    cluster.kubectl("create", "configmap", "cm1", "--from-literal=a=b")
    cluster.kubectl("label", "configmap", "cm1", "tier=web")
    cluster.kubectl("annotate", "configmap", "cm1", "note=hi")
    assert cluster.kubectl("get", "cm", "-l", "tier=web", "-o", "name").stdout.strip() == "configmap/cm1"
    assert cluster.kubectl("get", "cm", "-l", "tier in (db,cache)", "-o", "name").stdout.strip() == ""
    cluster.kubectl("patch", "cm", "cm1", "--type=merge", "-p", '{"data":{"c":"d"}}')
    cluster.kubectl("patch", "cm", "cm1", "--type=json", "-p", '[{"op":"remove","path":"/data/a"}]')
    cluster.kubectl("patch", "cm", "cm1", "-p", '{"data":{"e":"f"}}')
    assert cluster.json("get", "cm", "cm1")["data"] == {"c": "d", "e": "f"}
    obj = cluster.json("get", "cm", "cm1")
    obj["data"]["g"] = "h"
    cluster.kubectl("replace", "-f", "-", input=json.dumps(obj))
    cols = cluster.kubectl("get", "cm", "cm1", "-o", "custom-columns=NAME:.metadata.name,G:.data.g").stdout
    assert cols.split() == ["NAME", "G", "cm1", "h"]
    assert cluster.kubectl("get", "cm", "cm1", "-o", "jsonpath={.metadata.labels.tier}").stdout == "web"
    cluster.kubectl("delete", "cm", "cm1")


def test_stale_update_is_a_conflict(cluster: cluster_mod.Cluster) -> None:
    """replace with an old resourceVersion gets 409 Conflict in Kubernetes' wording."""
    cluster.kubectl("create", "configmap", "cc", "--from-literal=a=b")
    old = cluster.json("get", "cm", "cc")
    cluster.kubectl("label", "cm", "cc", "x=1")
    cp = cluster.kubectl("replace", "-f", "-", input=json.dumps(old), check=False)
    assert cp.returncode != 0
    assert 'Operation cannot be fulfilled on configmaps "cc": the object has been modified' in cp.stderr


def test_dry_run_server_does_not_store(cluster: cluster_mod.Cluster) -> None:
    """--dry-run=server returns the defaulted object but stores nothing."""
    out = cluster.kubectl("create", "configmap", "x", "--from-literal=a=b", "--dry-run=server", "-o", "yaml").stdout
    assert "name: x" in out and "uid:" in out
    assert cluster.kubectl("get", "cm", "x", check=False).returncode == 1


def test_server_side_apply_conflict_then_force(cluster: cluster_mod.Cluster) -> None:
    """A server-side apply over fields another manager owns conflicts; --force-conflicts takes them."""
    path = os.path.join(MANIFESTS, "deploy.yaml")
    cluster.kubectl("apply", "-f", path)
    cluster.kubectl("scale", "deploy", "web", "--replicas=4")
    cp = cluster.kubectl("apply", "--server-side", "-f", path, check=False)
    assert cp.returncode == 1
    assert "conflict" in cp.stderr and ".spec.replicas" in cp.stderr
    out = cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", path).stdout
    assert "serverside-applied" in out
    assert cluster.json("get", "deploy", "web")["spec"]["replicas"] == 3
    cluster.kubectl("delete", "deploy", "web")


def test_invalid_deployment_gets_422_with_field_causes(cluster: cluster_mod.Cluster) -> None:
    """An invalid object is refused with each field error in Kubernetes' own words."""
    bad = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "Bad_Name"},
           "spec": {"replicas": -1, "template": {"spec": {"containers": [{"name": "c"}]}}}}
    cp = cluster.kubectl("create", "-f", "-", input=json.dumps(bad), check=False)
    assert cp.returncode == 1
    assert 'The Deployment "Bad_Name" is invalid' in cp.stderr
    assert "spec.replicas: Invalid value: -1: must be greater than or equal to 0" in cp.stderr
    assert "spec.template.spec.containers[0].image: Required value" in cp.stderr


def test_watch_streams_changes(cluster: cluster_mod.Cluster) -> None:
    """kubectl get -w prints the existing object and then each change."""
    cluster.kubectl("create", "configmap", "w1", "--from-literal=a=b")
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig)
    proc = subprocess.Popen([cluster_mod.kubectl_binary(), "get", "cm", "-w", "-o", "name"], env=env,
                            stdout=subprocess.PIPE, text=True)
    seen: list[str] = []
    try:
        assert proc.stdout is not None
        # Wait for the initial listing before writing, so the change must arrive through the watch.
        while "configmap/w1" not in seen:
            seen.append(proc.stdout.readline().strip())
        cluster.kubectl("create", "configmap", "w2", "--from-literal=a=b")
        deadline = time.monotonic() + 30
        while "configmap/w2" not in seen and time.monotonic() < deadline:
            seen.append(proc.stdout.readline().strip())
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert "configmap/w2" in seen


def test_wait_for_delete(cluster: cluster_mod.Cluster) -> None:
    """kubectl wait --for=delete returns once the object is gone."""
    cluster.kubectl("create", "configmap", "gone", "--from-literal=a=b")
    cluster.kubectl("delete", "cm", "gone", "--wait=false")
    cluster.kubectl("wait", "--for=delete", "cm/gone", "--timeout=10s")


def test_chunked_list_and_sort(cluster: cluster_mod.Cluster) -> None:
    """--chunk-size pages through a list with continue tokens; --sort-by orders it."""
    for i in range(7):
        cluster.kubectl("create", "configmap", f"page-{i}", "--from-literal=i=" + str(i))
    names = cluster.kubectl("get", "cm", "--chunk-size=2", "-o", "name").stdout.split()
    assert [n for n in names if n.startswith("configmap/page-")] == [f"configmap/page-{i}" for i in range(7)]
    out = cluster.kubectl("get", "cm", "--sort-by=.metadata.name", "-o", "name").stdout.split()
    assert out == sorted(out)


def test_unknown_resource_and_kind_errors(cluster: cluster_mod.Cluster) -> None:
    """Unknown resource types are reported as kubectl reports them for a real cluster."""
    cp = cluster.kubectl("get", "nosuchthings", check=False)
    assert cp.returncode == 1
    assert 'the server doesn\'t have a resource type "nosuchthings"' in cp.stderr


@pytest.mark.parametrize("minor", [27, 29, 31, 33])
def test_other_kubectl_versions_work(cluster: cluster_mod.Cluster, minor: int) -> None:
    """kubectl 1.27 to 1.33 can list and create against the server."""
    name = f"v{minor}"
    cluster.kubectl("create", "configmap", name, "--from-literal=a=b", minor=minor)
    assert cluster.kubectl("get", "cm", name, "-o", "name", minor=minor).stdout.strip() == f"configmap/{name}"
    cluster.kubectl("delete", "cm", name, minor=minor)
