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
    cluster.kubectl("create", "-f", "-", input=_svc("g", type="NodePort", ports=[{"port": 80, "nodePort": 30070}]))
    cluster.kubectl("delete", "svc", "g")
    cluster.kubectl("create", "-f", "-", input=_svc("h", type="NodePort", ports=[{"port": 80, "nodePort": 30070}]))


def test_headless_and_external_name(cluster: cluster_mod.Cluster) -> None:
    """clusterIP None makes a headless Service; ExternalName gets no ClusterIP."""
    cluster.kubectl("create", "-f", "-", input=_svc("headless", clusterIP="None"))
    assert cluster.json("get", "svc", "headless")["spec"]["clusterIP"] == "None"
    cluster.kubectl("create", "service", "externalname", "ext", "--external-name=example.com")
    ext = cluster.json("get", "svc", "ext")
    assert ext["spec"]["type"] == "ExternalName" and "clusterIP" not in ext["spec"]


def _local_lb(name: str, **spec: object) -> str:
    return _svc(name, type="LoadBalancer", externalTrafficPolicy="Local", **spec)


def test_local_load_balancer_gets_a_health_check_node_port(cluster: cluster_mod.Cluster) -> None:
    """type LoadBalancer with externalTrafficPolicy Local gets spec.healthCheckNodePort from the NodePort range."""
    cluster.kubectl("create", "-f", "-", input=_local_lb("hc-a"))
    spec = cluster.json("get", "svc", "hc-a")["spec"]
    assert 30000 <= spec["healthCheckNodePort"] <= 32767 and spec["healthCheckNodePort"] != spec["ports"][0]["nodePort"]
    cluster.kubectl("create", "-f", "-", input=_svc("hc-b", type="LoadBalancer"))
    assert "healthCheckNodePort" not in cluster.json("get", "svc", "hc-b")["spec"]
    # A manifest without the field keeps the allocated port: replace, apply, and turning Local on later.
    cluster.kubectl("replace", "-f", "-", input=_local_lb("hc-a"))
    cluster.kubectl("apply", "-f", "-", input=_local_lb("hc-a"))
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=_local_lb("hc-a"))
    assert cluster.json("get", "svc", "hc-a")["spec"]["healthCheckNodePort"] == spec["healthCheckNodePort"]
    cluster.kubectl("patch", "svc", "hc-b", "-p", '{"spec":{"externalTrafficPolicy":"Local"}}')
    assert 30000 <= cluster.json("get", "svc", "hc-b")["spec"]["healthCheckNodePort"] <= 32767


def test_health_check_node_port_errors_are_kubes(cluster: cluster_mod.Cluster) -> None:
    """A taken or out-of-range healthCheckNodePort is kube's 500 from the allocator; a bad one is a 422."""
    cluster.kubectl("create", "-f", "-", input=_local_lb("hc-c", healthCheckNodePort=30011))
    cases = [
        (_local_lb("hc-d", healthCheckNodePort=30011), "Error from server (InternalError): error when creating "
         '"STDIN": Internal error occurred: failed to allocate requested HealthCheck NodePort 30011: '
         "provided port is already allocated"),
        (_local_lb("hc-d", healthCheckNodePort=80), "Internal error occurred: failed to allocate requested "
         "HealthCheck NodePort 80: provided port is not in the valid range. The range of valid ports is 30000-32767"),
        (_local_lb("hc-d", healthCheckNodePort=70000),
         "spec.healthCheckNodePort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
        (_svc("hc-d", type="NodePort", externalTrafficPolicy="Local", healthCheckNodePort=30012),
         "spec.healthCheckNodePort: Invalid value: 30012: may only be set when `type` is 'LoadBalancer' and "
         "`externalTrafficPolicy` is 'Local'"),
    ]
    for body, want in cases:
        cp = cluster.kubectl("create", "-f", "-", input=body, check=False)
        assert cp.returncode == 1 and want in cp.stderr, cp.stderr
    assert cluster.kubectl("get", "svc", "hc-d", check=False).returncode == 1  # nothing half-created
    cp = cluster.kubectl("patch", "svc", "hc-c", "-p", '{"spec":{"healthCheckNodePort":30013}}', check=False)
    assert cp.returncode == 1 and "spec.healthCheckNodePort: Forbidden: field is immutable" in cp.stderr


def test_type_changes_give_ports_back(cluster: cluster_mod.Cluster) -> None:
    """Leaving Local frees the health check port; leaving NodePort drops and frees the node ports, as kube does."""
    cluster.kubectl("create", "-f", "-", input=_local_lb("hc-e", healthCheckNodePort=30021,
                                                          ports=[{"port": 80, "nodePort": 30022}]))
    cluster.kubectl("patch", "svc", "hc-e", "-p", '{"spec":{"type":"NodePort"}}')
    spec = cluster.json("get", "svc", "hc-e")["spec"]
    assert "healthCheckNodePort" not in spec and spec["externalTrafficPolicy"] == "Local"
    assert "allocateLoadBalancerNodePorts" not in spec
    cluster.kubectl("patch", "svc", "hc-e", "-p", '{"spec":{"type":"ClusterIP"}}')
    spec = cluster.json("get", "svc", "hc-e")["spec"]
    assert "nodePort" not in spec["ports"][0] and "externalTrafficPolicy" not in spec
    ip = spec["clusterIP"]
    cluster.kubectl("patch", "svc", "hc-e", "-p", '{"spec":{"type":"ExternalName","externalName":"example.com"}}')
    spec = cluster.json("get", "svc", "hc-e")["spec"]
    assert not {"clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"} & set(spec)
    cluster.kubectl("create", "-f", "-", input=_svc("hc-h", clusterIP=ip))  # the address is free again
    cluster.kubectl("create", "-f", "-", input=_local_lb("hc-f", healthCheckNodePort=30022,
                                                          ports=[{"port": 80, "nodePort": 30021}]))
    cluster.kubectl("delete", "svc", "hc-f")
    cluster.kubectl("create", "-f", "-", input=_local_lb("hc-g", healthCheckNodePort=30022))
    assert cluster.json("get", "svc", "hc-g")["spec"]["healthCheckNodePort"] == 30022
