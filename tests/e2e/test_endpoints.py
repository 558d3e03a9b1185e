"""End to end: EndpointSlices and Endpoints follow a Service's pods as they scale, turn ready and go away."""

from __future__ import annotations

import json
import time
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
SLEEP = ["python3", "-c", "import time; time.sleep(3600)"]


def _deployment(name: str, replicas: int, **container: Any) -> str:
    c = {"name": "main", "image": "python:3.11", "command": SLEEP,
         "ports": [{"name": "http", "containerPort": 8080}], **container}
    return json.dumps({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"nodeName": NODE, "terminationGracePeriodSeconds": 1, "containers": [c]}}}})


def _service(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"tier": "web"}},
                       "spec": {"selector": {"app": name},
                                "ports": [{"name": "web", "port": 80, "targetPort": "http"}]}})


def _slices(cluster: cluster_mod.Cluster, service: str) -> list[dict[str, Any]]:
    out = cluster.json("get", "endpointslices", "-l", f"kubernetes.io/service-name={service}")
    return list(out["items"])


def _ready_ips(cluster: cluster_mod.Cluster, service: str) -> list[str]:
    return sorted(a for s in _slices(cluster, service) for e in s["endpoints"] or []
                  if e["conditions"]["ready"] for a in e["addresses"])


def test_slices_and_endpoints_follow_scaling(cluster: cluster_mod.Cluster, agent: None) -> None:
    """A Service's slice and Endpoints list its ready pods on the resolved named port, and follow scale up/down."""
    cluster.kubectl("apply", "-f", "-", input=_service("web"))
    cluster_mod.eventually(lambda: [(s["ports"], s["endpoints"]) for s in _slices(cluster, "web")] == [(None, [])],
                           what="a placeholder slice for a Service without pods")
    cluster.kubectl("apply", "-f", "-", input=_deployment("web", 2))
    cluster_mod.eventually(lambda: len(_ready_ips(cluster, "web")) == 2, timeout=30, what="two ready endpoints")
    [s] = _slices(cluster, "web")
    assert s["ports"] == [{"name": "web", "port": 8080, "protocol": "TCP"}]
    assert s["addressType"] == "IPv4" and s["metadata"]["labels"]["tier"] == "web"
    assert s["metadata"]["ownerReferences"][0]["kind"] == "Service"
    ep = cluster.json("get", "endpoints", "web")
    assert len(ep["subsets"][0]["addresses"]) == 2 and ep["subsets"][0]["ports"][0]["port"] == 8080
    table = cluster.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=web").stdout
    assert table.split("\n")[0].split() == ["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"]
    started = time.monotonic()
    cluster.kubectl("scale", "deployment", "web", "--replicas=3")
    cluster_mod.eventually(lambda: len(_ready_ips(cluster, "web")) == 3, timeout=30, what="a third endpoint")
    print(f"scale 2->3 visible in the slice after {time.monotonic() - started:.2f}s (incl. process start)")
    cluster.kubectl("scale", "deployment", "web", "--replicas=0")
    cluster_mod.eventually(lambda: _ready_ips(cluster, "web") == [], timeout=30, what="no endpoints")
    cluster_mod.eventually(lambda: "subsets" not in cluster.json("get", "endpoints", "web"), timeout=30,
                           what="an Endpoints object without subsets")


def test_unready_pods_are_listed_not_ready(cluster: cluster_mod.Cluster, agent: None) -> None:
    """A pod failing readiness is in the slice with ready=false and under notReadyAddresses in Endpoints."""
    cluster.kubectl("apply", "-f", "-", input=_service("gated"))
    cluster.kubectl("apply", "-f", "-", input=_deployment(
        "gated", 1, readinessProbe={"exec": {"command": ["false"]}, "periodSeconds": 1}))

    def unready() -> bool:
        eps = [e for s in _slices(cluster, "gated") for e in s["endpoints"] or []]
        return len(eps) == 1 and eps[0]["conditions"] == {"ready": False, "serving": False, "terminating": False}

    cluster_mod.eventually(unready, timeout=30, what="an unready endpoint")
    ep = cluster.json("get", "endpoints", "gated")
    assert "addresses" not in ep["subsets"][0] and len(ep["subsets"][0]["notReadyAddresses"]) == 1


def test_deleting_the_service_removes_its_endpoints(cluster: cluster_mod.Cluster) -> None:
    """Deleting a Service deletes its Endpoints and, through owner references, its slices."""
    cluster.kubectl("apply", "-f", "-", input=_service("gone"))
    cluster_mod.eventually(lambda: len(_slices(cluster, "gone")) == 1, what="a slice")
    cluster_mod.eventually(lambda: cluster.kubectl("get", "endpoints", "gone", check=False).returncode == 0,
                           what="an Endpoints object")
    cluster.kubectl("delete", "service", "gone")
    cluster_mod.eventually(lambda: _slices(cluster, "gone") == [], timeout=30, what="slices gone")
    cluster_mod.eventually(lambda: cluster.kubectl("get", "endpoints", "gone", check=False).returncode != 0,
                           what="Endpoints gone")


def test_kubernetes_service_points_at_the_api_server(cluster: cluster_mod.Cluster) -> None:
    """The default/kubernetes Endpoints and EndpointSlice carry the API server's address and port."""
    port = int(cluster.url.rsplit(":", 1)[1])
    ep = cluster.json("get", "endpoints", "kubernetes")
    assert ep["subsets"] == [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": port,
                                                                            "protocol": "TCP"}]}]
    s = cluster.json("get", "endpointslice", "kubernetes")
    assert s["endpoints"] == [{"addresses": ["127.0.0.1"], "conditions": {"ready": True}}]
    assert f"127.0.0.1:{port}" in cluster.kubectl("get", "endpoints", "kubernetes").stdout


def test_hand_written_endpoints_are_mirrored(cluster: cluster_mod.Cluster) -> None:
    """A selectorless Service's hand-written Endpoints show up as a mirrored EndpointSlice."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "List", "items": [
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "external"},
             "spec": {"ports": [{"name": "pg", "port": 5432}]}},
            {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "external"},
             "subsets": [{"addresses": [{"ip": "192.0.2.10"}], "ports": [{"name": "pg", "port": 5432}]}]}]}))

    def mirrored() -> list[Any]:
        return [(s["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], s["endpoints"])
                for s in _slices(cluster, "external")]

    cluster_mod.eventually(lambda: mirrored() == [("endpointslicemirroring-controller.k8s.io",
                                                   [{"addresses": ["192.0.2.10"], "conditions": {"ready": True}}])],
                           what="a mirrored slice")
