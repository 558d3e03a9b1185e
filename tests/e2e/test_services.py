"""End to end: Service defaults, ClusterIP and NodePort allocation with conflict detection."""

from __future__ import annotations

import json

from tests.e2e import cluster as cluster_mod


def _svc(name: str, **spec: object) -> str:
    body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80}], **spec}}
    return json.dumps(body)


def test_cluster_ip_and_node_port_allocation(cluster: cluster_mod.Cluster) -> None:
    """Services get a ClusterIP from 10.96.0.0/12 and NodePorts from 30000-32767, defaults filled in."""
    cluster.kubectl("create", "-f", "-", input=_svc("a"))
    a = cluster.json("get", "svc", "a")
    assert a["spec"]["clusterIP"].startswith("10.") and a["spec"]["clusterIPs"] == [a["spec"]["clusterIP"]]
    assert a["spec"]["ports"][0] == {"port": 80, "protocol": "TCP", "targetPort": 80}
    assert a["spec"]["sessionAffinity"] == "None" and a["spec"]["type"] == "ClusterIP"
    cluster.kubectl("create", "-f", "-", input=_svc("b", type="NodePort"))
    b = cluster.json("get", "svc", "b")
    assert 30000 <= b["spec"]["ports"][0]["nodePort"] <= 32767
    header = cluster.kubectl("get", "svc", "b").stdout.split("\n")[0].split()
    assert header == ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"]


def test_conflicting_cluster_ip_and_node_port_are_refused(cluster: cluster_mod.Cluster) -> None:
    """Asking for an IP or node port already taken is a 422 naming the field, as in Kubernetes."""
    cluster.kubectl("create", "-f", "-", input=_svc("c", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]))
    taken_ip = cluster.json("get", "svc", "c")["spec"]["clusterIP"]
    cp = cluster.kubectl("create", "-f", "-", input=_svc("d", clusterIP=taken_ip), check=False)
    assert cp.returncode == 1 and "provided IP is already allocated" in cp.stderr
    cp = cluster.kubectl("create", "-f", "-", input=_svc("e", type="NodePort", ports=[{"port": 80, "nodePort": 30080}]),
                         check=False)
    assert cp.returncode == 1 and "spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated" in cp.stderr
    cp = cluster.kubectl("create", "-f", "-", input=_svc("f", ports=[{"port": 70000}]), check=False)
    assert cp.returncode == 1 and "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive" in cp.stderr


def test_deleting_a_service_frees_its_node_port(cluster: cluster_mod.Cluster) -> None:
    """A node port is free again once its Service is deleted."""
    cluster.kubectl("create", "-f", "-", input=_svc("g", type="NodePort", ports=[{"port": 80, "nodePort": 30090}]))
    cluster.kubectl("delete", "svc", "g")
    cluster.kubectl("create", "-f", "-", input=_svc("h", type="NodePort", ports=[{"port": 80, "nodePort": 30090}]))


def test_headless_and_external_name(cluster: cluster_mod.Cluster) -> None:
    """clusterIP None makes a headless Service; ExternalName gets no ClusterIP."""
    cluster.kubectl("create", "-f", "-", input=_svc("headless", clusterIP="None"))
    assert cluster.json("get", "svc", "headless")["spec"]["clusterIP"] == "None"
    cluster.kubectl("create", "service", "externalname", "ext", "--external-name=example.com")
    ext = cluster.json("get", "svc", "ext")
    assert ext["spec"]["type"] == "ExternalName" and "clusterIP" not in ext["spec"]
