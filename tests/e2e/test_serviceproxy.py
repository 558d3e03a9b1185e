"""End to end: Services through the kernel proxy: ClusterIP from host and pods, NodePort, ready endpoints only."""

from __future__ import annotations

import collections.abc
import json
import subprocess
import time
from typing import Any

import pytest

from pocketkube.node import proxy
from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

Net = tuple[cluster_mod.Cluster, str]


def _deployment(name: str, replicas: int, *, ready: bool = True) -> dict[str, Any]:
    tmpl = netutil.pod(name, labels={"app": "web", "ready": str(ready).lower()})
    if not ready:
        tmpl["spec"]["containers"][0]["readinessProbe"] = {"tcpSocket": {"port": 9999}, "periodSeconds": 1}
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web", "ready": str(ready).lower()}},
                     "template": {"metadata": tmpl["metadata"], "spec": tmpl["spec"]}}}


SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
           "spec": {"type": "NodePort", "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[Net]:
    netutil.require_root_network(nft=True)
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk")))
    try:
        cluster_mod.eventually(lambda: c.kubectl("get", "nodes", "-o", "name").stdout.count("node/") == 2,
                               what="both nodes to register")
        netutil.apply(c, _deployment("web", 2), _deployment("web-unready", 1, ready=False), SERVICE)
        c.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        yield c, c.json("get", "service", "web")["spec"]["clusterIP"]
    finally:
        c.stop()


def _names(c: cluster_mod.Cluster, ready: bool = True) -> set[str]:
    pods = c.json("get", "pods", "-l", f"app=web,ready={str(ready).lower()}")["items"]
    return {p["metadata"]["name"] for p in pods}


def _spread(url: str, tries: int = 30) -> set[str]:
    return {netutil.get(url) for _ in range(tries)}


def test_cluster_ip_from_the_host_balances_over_ready_endpoints(net: Net) -> None:
    """curl http://<cluster-ip> from the host reaches every ready pod, never the unready one."""
    c, ip = net
    assert _spread(f"http://{ip}") == _names(c)


def test_cluster_ip_from_a_pod(net: Net) -> None:
    """A pod reaches the service's ClusterIP, including when it picks the pod itself (hairpin)."""
    c, ip = net
    name = sorted(_names(c))[0]
    code = f"import urllib.request as u\nprint(sorted({{u.urlopen('http://{ip}', timeout=3).read().decode() for _ in range(30)}}))"
    out = c.kubectl("exec", name, "--", "python3", "-c", code).stdout.strip()
    assert out == str(sorted(_names(c)))


def test_node_port_on_localhost(net: Net) -> None:
    """The NodePort answers on 127.0.0.1."""
    c, _ = net
    port = c.json("get", "service", "web")["spec"]["ports"][0]["nodePort"]
    assert _spread(f"http://127.0.0.1:{port}") == _names(c)


def test_kubernetes_service_from_a_pod(net: Net) -> None:
    """The kubernetes Service's ClusterIP (and the KUBERNETES_SERVICE_HOST a pod gets) reaches the API server."""
    c, _ = net
    name = sorted(_names(c))[0]
    env = c.kubectl("exec", name, "--", "printenv", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT").stdout.split()
    assert env == [c.json("get", "service", "kubernetes")["spec"]["clusterIP"], "443"]
    out = netutil.in_pod(c, name, f"https://{env[0]}:443/livez")
    assert out.stdout.strip() == "ok", out.stderr


def test_service_links_in_pod_env(net: Net) -> None:
    """Pods started after a Service exists get its WEB_SERVICE_HOST and docker-link variables."""
    c, ip = net
    netutil.apply(c, netutil.pod("envcheck"))
    netutil.wait_ready(c, "envcheck")
    env = c.kubectl("exec", "envcheck", "--", "printenv", "WEB_SERVICE_HOST", "WEB_SERVICE_PORT_HTTP",
                    "WEB_PORT_80_TCP").stdout.split()
    assert env == [ip, "80", f"tcp://{ip}:80"]


def test_scaling_adds_endpoints_quickly(net: Net) -> None:
    """A new ready replica gets traffic through the ClusterIP soon after its EndpointSlice lists it."""
    c, ip = net
    c.kubectl("scale", "deployment/web", "--replicas=3")
    c.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
    began = time.monotonic()
    cluster_mod.eventually(lambda: _spread(f"http://{ip}", 15) == _names(c), timeout=10, every=0.05,
                           what="the third endpoint to get traffic")
    assert time.monotonic() - began < 5


def test_service_without_endpoints_is_refused(net: Net) -> None:
    """A ClusterIP with no ready endpoints refuses connections at once rather than black-holing them."""
    c, _ = net
    netutil.apply(c, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "nothing"},
                      "spec": {"selector": {"app": "none"}, "ports": [{"port": 80}]}})
    ip = c.json("get", "service", "nothing")["spec"]["clusterIP"]

    def refused() -> bool:
        try:
            netutil.get(f"http://{ip}", timeout=2)
        except OSError as e:
            return "refused" in str(e).lower() or "unreachable" in str(e).lower()
        return False

    cluster_mod.eventually(refused, what="a refused connection")


def test_nft_table_removed_after_stop(tmp_path_factory: pytest.TempPathFactory) -> None:
    """After the cluster stops its nftables table is gone."""
    netutil.require_root_network(nft=True)
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk")), nodes=1)
    table = proxy.table_name(c.data_dir)
    try:
        cluster_mod.eventually(lambda: table in subprocess.run(["nft", "list", "tables"], capture_output=True,
                                                               text=True).stdout, what="the proxy's table")
    finally:
        c.stop()
    assert table not in subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    assert json.dumps(netutil.leftovers(c.data_dir, ["pocketkube-node-1"])) == "[]"


def test_load_balancer_gets_a_host_address(net: Net) -> None:
    """A LoadBalancer Service gets status.loadBalancer.ingress the host reaches, and answers there on its port."""
    c, _ = net
    port = netutil.free_port()
    netutil.apply(c, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
                      "spec": {"type": "LoadBalancer", "selector": {"app": "web", "ready": "true"},
                               "ports": [{"name": "http", "port": port, "targetPort": 8080}]}})
    ingress = cluster_mod.eventually(
        lambda: (c.json("get", "service", "lb").get("status") or {}).get("loadBalancer", {}).get("ingress"),
        what="the load balancer's ingress")
    assert ingress[0]["ip"] == "127.0.0.1"
    row = c.kubectl("get", "service", "lb", "--no-headers").stdout.split()
    assert row[3] == "127.0.0.1"
    assert cluster_mod.eventually(lambda: _spread(f"http://127.0.0.1:{port}", 10) == _names(c),
                                  what="the load balancer to answer")
