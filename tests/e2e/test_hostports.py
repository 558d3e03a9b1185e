"""End to end: a pod's hostPort answers on the node's addresses (and 127.0.0.1) until the pod is deleted."""

from __future__ import annotations

import collections.abc
import random
import socket
import subprocess

import pytest

from pocketkube.node import hostports
from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

NODE = "pocketkube-node-1"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[tuple[cluster_mod.Cluster, str]]:
    netutil.require_root_network(nft=True)
    data_dir = str(tmp_path_factory.mktemp("pk"))
    c, _, _ = netutil.start(data_dir, nodes=1)
    try:
        cluster_mod.eventually(lambda: c.kubectl("get", "node", NODE, check=False).returncode == 0,
                               what="the node to register")
        yield c, data_dir
    finally:
        c.stop()


def _curl(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["curl", "-sS", "--max-time", "3", "-o", "/dev/null", "-w", "%{http_code}", url],
                          capture_output=True, text=True, check=False)


def _body(url: str) -> str:
    """The body at url, or "" while nothing (or a reset connection) answers there."""
    try:
        return netutil.get(url)
    except OSError:
        return ""


def _host_ip() -> str:
    """The host's primary IPv4 address (the source of its default route), or "" on a machine with none."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.123", 9))  # no packet is sent: connect only picks the route
            return str(s.getsockname()[0])
        except OSError:
            return ""


def _table(data_dir: str) -> str:
    cp = subprocess.run(["nft", "list", "table", "ip", hostports.table_name(data_dir)],
                        capture_output=True, text=True, check=False)
    return cp.stdout


def test_hostport_reaches_the_pod_and_goes_with_it(net: tuple[cluster_mod.Cluster, str]) -> None:
    """127.0.0.1, the node's InternalIP, the host's IP and the pod itself (hairpin) reach it; delete removes it."""
    c, data_dir = net
    port = random.randint(18000, 18999)
    body = netutil.pod("hp", node=NODE)
    body["spec"]["containers"][0].update({
        "image": "python:3.12", "command": ["python3", "-m", "http.server", "8080"],
        "ports": [{"containerPort": 8080, "hostPort": port}],
        "readinessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}})
    netutil.apply(c, body)
    netutil.wait_ready(c, "hp")
    pod_ip = c.json("get", "pod", "hp")["status"]["podIP"]
    assert pod_ip != "127.0.0.1"  # on the bridge: without forwarding nothing would listen on the port
    internal = [a["address"] for a in c.json("get", "node", NODE)["status"]["addresses"] if a["type"] == "InternalIP"]
    addresses = ["127.0.0.1", *internal]
    if _host_ip():
        addresses.append(_host_ip())
    for addr in addresses:
        cluster_mod.eventually(lambda a=addr: _curl(f"http://{a}:{port}/").stdout == "200",  # type: ignore[misc]
                               what=f"the hostPort to answer on {addr}")
    gateway = netutil.in_pod(c, "hp", "http://127.0.0.1:8080/")  # the pod's own server works
    assert gateway.returncode == 0, gateway.stderr
    # Hairpin: the pod dials its node's address on the bridge (its default gateway) at its own hostPort.
    bridge_gw = ".".join(pod_ip.split(".")[:3]) + ".1"
    hairpin = netutil.in_pod(c, "hp", f"http://{bridge_gw}:{port}/")
    assert hairpin.returncode == 0 and "Directory listing" in hairpin.stdout, hairpin.stderr
    assert f"dport {port}" in _table(data_dir)

    c.kubectl("delete", "pod", "hp", "--wait=true", "--timeout=60s")
    cluster_mod.eventually(lambda: f"dport {port}" not in _table(data_dir), what="the rule to go")
    assert _curl(f"http://127.0.0.1:{port}/").stdout != "200"


def test_table_goes_when_the_cluster_stops(tmp_path: pytest.TempPathFactory) -> None:
    """Stopping the cluster removes its hostPort table from the kernel."""
    netutil.require_root_network(nft=True)
    data_dir = str(tmp_path)
    c, _, _ = netutil.start(data_dir, nodes=1)
    try:
        cluster_mod.eventually(lambda: "chain hostports" in _table(data_dir), what="the table to appear")
    finally:
        c.stop()
    assert _table(data_dir) == ""


def test_two_nodes_sharing_the_host_keep_the_port_for_the_older_pod(tmp_path: pytest.TempPathFactory) -> None:
    """Both nodes answer on the host's addresses: the later pod's hostPort is not taken over, and it is warned."""
    netutil.require_root_network(nft=True)
    c, _, _ = netutil.start(str(tmp_path), nodes=2)
    try:
        port = random.randint(18000, 18999)
        for name, node in (("first", "pocketkube-node-1"), ("second", "pocketkube-node-2")):
            body = netutil.pod(name, node=node)
            body["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "hostPort": port}]
            cluster_mod.eventually(lambda n=node: c.kubectl("get", "node", n, check=False).returncode == 0,  # type: ignore[misc]
                                   what=f"{node} to register")
            netutil.apply(c, body)
            netutil.wait_ready(c, name)
        cluster_mod.eventually(lambda: _body(f"http://127.0.0.1:{port}/") == "first", what="the first pod")
        events = cluster_mod.eventually(
            lambda: c.kubectl("get", "events", "--field-selector", "reason=HostPortConflict,involvedObject.name=second",
                              "-o", "jsonpath={.items[*].message}").stdout or None, what="the warning")
        assert f"hostPort 0.0.0.0:{port}/TCP is not forwarded to this pod: pod default/first" in str(events)
        c.kubectl("delete", "pod", "first", "--wait=true", "--timeout=60s")
        cluster_mod.eventually(lambda: _body(f"http://127.0.0.1:{port}/") == "second", what="the second pod")
    finally:
        c.stop()
