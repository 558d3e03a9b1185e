"""End to end: pods get their own network namespace and an IP from their node's CIDR, reachable without NAT."""

from __future__ import annotations

import collections.abc
import contextlib
import ipaddress
import json
import subprocess

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

NODES = ["pocketkube-node-1", "pocketkube-node-2"]


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[tuple[cluster_mod.Cluster, str]]:
    netutil.require_root_network()
    c, pods, _ = netutil.start(str(tmp_path_factory.mktemp("pk")))
    try:
        cluster_mod.eventually(lambda: all(c.kubectl("get", "node", n, check=False).returncode == 0 for n in NODES),
                               what="both nodes to register")
        netutil.apply(c, netutil.pod("a", node=NODES[0]), netutil.pod("b", node=NODES[1]))
        netutil.wait_ready(c, "a", "b")
        yield c, pods
    finally:
        c.stop()


def _ip(c: cluster_mod.Cluster, name: str) -> str:
    return str(c.json("get", "pod", name)["status"]["podIP"])


def test_pod_ips_come_from_each_nodes_cidr(net: tuple[cluster_mod.Cluster, str]) -> None:
    """Each pod's IP lies in its node's podCIDR, which lies in the --cluster-cidr."""
    c, pods = net
    for name, node in (("a", NODES[0]), ("b", NODES[1])):
        cidr = c.json("get", "node", node)["spec"]["podCIDR"]
        assert ipaddress.ip_network(cidr).subnet_of(ipaddress.ip_network(pods))  # type: ignore[arg-type]
        assert ipaddress.ip_address(_ip(c, name)) in ipaddress.ip_network(cidr)


def test_host_reaches_pods_by_ip(net: tuple[cluster_mod.Cluster, str]) -> None:
    """The host connects to a pod's IP directly."""
    c, _ = net
    assert netutil.get(f"http://{_ip(c, 'a')}:8080") == "a"
    assert netutil.get(f"http://{_ip(c, 'b')}:8080") == "b"


def test_pods_reach_each_other_across_nodes(net: tuple[cluster_mod.Cluster, str]) -> None:
    """A pod on node 1 reaches a pod on node 2 by its IP, and the other way round."""
    c, _ = net
    assert netutil.in_pod(c, "a", f"http://{_ip(c, 'b')}:8080").stdout.strip() == "b"
    assert netutil.in_pod(c, "b", f"http://{_ip(c, 'a')}:8080").stdout.strip() == "a"


def test_pod_has_its_own_localhost(net: tuple[cluster_mod.Cluster, str]) -> None:
    """Port 8080 on a pod's localhost is its own server, not another pod's nor the host's."""
    c, _ = net
    assert netutil.in_pod(c, "b", "http://127.0.0.1:8080").stdout.strip() == "b"


def test_containers_of_one_pod_share_localhost(net: tuple[cluster_mod.Cluster, str]) -> None:
    """A sidecar container reaches the main container on localhost."""
    c, _ = net
    body = netutil.pod("pair", node=NODES[0])
    body["spec"]["containers"].append({"name": "side", "image": "python:3.11",
                                       "command": ["python3", "-c", "import time; time.sleep(3600)"]})
    netutil.apply(c, body)
    netutil.wait_ready(c, "pair")
    assert netutil.in_pod(c, "pair", "http://localhost:8080", container="side").stdout.strip() == "pair"


def test_host_network_pod_keeps_the_host_ip(net: tuple[cluster_mod.Cluster, str]) -> None:
    """A hostNetwork pod gets the node's IP and no namespace of its own."""
    c, _ = net
    body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "hostnet"},
            "spec": {"nodeName": NODES[0], "hostNetwork": True, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "python:3.11",
                                     "command": ["python3", "-c", "import time; time.sleep(3600)"]}]}}
    c.kubectl("apply", "-f", "-", input=json.dumps(body))
    cluster_mod.eventually(lambda: c.json("get", "pod", "hostnet")["status"].get("podIP"), what="a pod IP")
    status = c.json("get", "pod", "hostnet")["status"]
    assert status["podIP"] == status["hostIP"]


def test_node_says_which_bridge_it_uses(net: tuple[cluster_mod.Cluster, str]) -> None:
    """The Node's pocketkube.io/pod-network annotation names its bridge and gateway."""
    c, _ = net
    note = c.json("get", "node", NODES[0])["metadata"]["annotations"]["pocketkube.io/pod-network"]
    assert note.startswith("bridge pkb")


def test_deleting_a_pod_removes_its_namespace(net: tuple[cluster_mod.Cluster, str]) -> None:
    """Once a pod is deleted its namespace and veth are gone."""
    c, _ = net
    netutil.apply(c, netutil.pod("gone", node=NODES[1]))
    netutil.wait_ready(c, "gone")
    uid = c.json("get", "pod", "gone")["metadata"]["uid"]
    c.kubectl("delete", "pod", "gone", "--wait=true")
    cluster_mod.eventually(lambda: not [n for n in netutil.leftovers(c.data_dir, NODES) if n.endswith(uid)],
                           what="the pod's namespace to go")


def test_nothing_leaks_after_the_cluster_stops(tmp_path_factory: pytest.TempPathFactory) -> None:
    """After `pocketkube up` stops, none of its namespaces or bridges remain."""
    netutil.require_root_network()
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk")), nodes=1)
    try:
        cluster_mod.eventually(lambda: c.kubectl("get", "node", NODES[0], check=False).returncode == 0,
                               what="the node to register")
        netutil.apply(c, netutil.pod("x", node=NODES[0]))
        netutil.wait_ready(c, "x")
        assert netutil.leftovers(c.data_dir, NODES[:1])
    finally:
        c.stop()
    assert netutil.leftovers(c.data_dir, NODES[:1]) == []


def test_port_forward_reaches_the_pods_own_localhost(net: tuple[cluster_mod.Cluster, str]) -> None:
    """kubectl port-forward connects to localhost inside the pod's namespace, as the kubelet does."""
    c, _ = net
    body = netutil.pod("local", node=NODES[1])
    body["spec"]["containers"][0]["command"] = ["python3", "-c", netutil.SERVER.replace("'0.0.0.0'", "'127.0.0.1'")]
    body["spec"]["containers"][0]["readinessProbe"] = {"exec": {"command": ["true"]}, "periodSeconds": 1}
    netutil.apply(c, body)
    netutil.wait_ready(c, "local")
    # kubectl port-forward gives up on a refused connection: wait until the server listens inside the pod.
    cluster_mod.eventually(lambda: netutil.in_pod(c, "local", "http://127.0.0.1:8080").stdout.strip() == "local",
                           what="the server to listen on the pod's localhost")
    port = netutil.free_port()
    proc = subprocess.Popen([cluster_mod.kubectl_binary(), "--kubeconfig", c.kubeconfig, "port-forward", "pod/local",
                             f"{port}:8080"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def fetch() -> str:
            try:
                return netutil.get(f"http://127.0.0.1:{port}")
            except OSError:
                return ""
        got = ""
        with contextlib.suppress(AssertionError):
            got = cluster_mod.eventually(fetch, what="the forwarded port to answer")
    finally:
        proc.terminate()
        out = proc.communicate(timeout=10)[0]
    assert got == "local", out
