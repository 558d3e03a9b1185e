"""End to end: CustomResourceDefinitions are served, validated, printed, scaled and cleaned up as in Kubernetes."""

from __future__ import annotations

import json
import os

from tests.e2e import cluster as cluster_mod

MANIFESTS = os.path.join(os.path.dirname(__file__), "manifests")


def test_crd_lifecycle(cluster: cluster_mod.Cluster) -> None:
    """A CRD becomes Established, its kind is discoverable, printable, scalable, validated and removed with it."""
    cluster.kubectl("apply", "-f", os.path.join(MANIFESTS, "crd.yaml"))
    cluster.kubectl("wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s")
    assert "widgets" in cluster.kubectl("api-resources", "--api-group=example.com").stdout
    cluster.kubectl("apply", "-f", os.path.join(MANIFESTS, "widget.yaml"))
    table = cluster.kubectl("get", "wd").stdout.split("\n")
    assert table[0].split() == ["NAME", "REPLICAS", "COLOR", "AGE"]
    assert table[1].split()[:3] == ["w1", "2", "blue"]
    assert cluster.json("get", "widget", "w1")["metadata"]["generation"] == 1
    cluster.kubectl("scale", "widget", "w1", "--replicas=4")
    assert cluster.json("get", "widget", "w1")["spec"]["replicas"] == 4
    explain = cluster.kubectl("explain", "widget.spec").stdout
    assert "What the widget should be." in explain
    bad = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "bad"},
           "spec": {"replicas": "many"}}
    cp = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert cp.returncode == 1 and "spec.replicas" in cp.stderr and "must be of type integer" in cp.stderr
    assert "widget.example.com/w1" in cluster.kubectl("get", "all", "-o", "name").stdout
    cluster.kubectl("delete", "crd", "widgets.example.com", timeout=30)
    cp = cluster.kubectl("get", "widgets", check=False)
    assert cp.returncode == 1
