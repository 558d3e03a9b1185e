"""End to end: externalTrafficPolicy Local keeps the client's address and serves kube-proxy's health check."""

from __future__ import annotations

import collections.abc
import json
import random
import subprocess
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

# Answers GET with the address the connection came from.
ECHO = ("import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "  def log_message(s,*a): pass\n"
        "  def do_GET(s):\n"
        "    b=s.client_address[0].encode(); s.send_response(200); s.end_headers(); s.wfile.write(b)\n"
        "http.server.ThreadingHTTPServer(('0.0.0.0',8080),H).serve_forever()\n")


class Outside:
    """A network namespace joined to the host by a veth pair: a client that is neither a pod nor the host."""

    def __init__(self) -> None:
        n = random.randint(0, 127 * 64 - 1)
        self.netns = f"pkh8-{n}"
        self.host_if, peer = f"pkh8h{n}", f"pkh8p{n}"
        base = f"192.168.{128 + n // 64}.{(n % 64) * 4}"
        prefix = base.rsplit(".", 1)[0]
        last = int(base.rsplit(".", 1)[1])
        self.host_ip, self.ip = f"{prefix}.{last + 1}", f"{prefix}.{last + 2}"
        for cmd in (["ip", "netns", "add", self.netns],
                    ["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", peer, "netns", self.netns],
                    ["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if],
                    ["ip", "link", "set", self.host_if, "up"],
                    ["ip", "-n", self.netns, "addr", "add", f"{self.ip}/30", "dev", peer],
                    ["ip", "-n", self.netns, "link", "set", peer, "up"],
                    ["ip", "-n", self.netns, "link", "set", "lo", "up"],
                    ["ip", "-n", self.netns, "route", "add", "default", "via", self.host_ip]):
            subprocess.run(cmd, check=True, capture_output=True)

    def get(self, url: str, *, timeout: float = 3.0) -> tuple[int, str]:
        """(status, body) of a GET from inside the namespace; (0, error) when it fails."""
        code = ("import sys,urllib.request as u,urllib.error as e\n"
                f"try: r=u.urlopen({url!r}, timeout={timeout}); print(r.status); print(r.read().decode(), end='')\n"
                "except e.HTTPError as x: print(x.code); print(x.read().decode(), end='')\n"
                "except Exception as x: print(0); print(x, end='')\n")
        out = subprocess.run(["ip", "netns", "exec", self.netns, "python3", "-c", code], capture_output=True,
                             text=True, timeout=timeout + 10).stdout
        status, _, body = out.partition("\n")
        return int(status or 0), body

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)


Net = tuple[cluster_mod.Cluster, Outside]


def _service(name: str, *, policy: str, kind: str = "NodePort", selector: bool = True) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": kind, "externalTrafficPolicy": policy,
                            "ports": [{"name": "http", "port": random.randint(20000, 29999), "targetPort": 8080}]}
    if selector:
        spec["selector"] = {"app": "echo"}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[Net]:
    netutil.require_root_network(nft=True)
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk")), nodes=1)
    outside = Outside()
    try:
        echo = netutil.pod("echo", labels={"app": "echo"})
        echo["spec"]["containers"][0]["command"] = ["python3", "-c", ECHO]
        netutil.apply(c, echo, _service("local", policy="Local"), _service("cluster", policy="Cluster"),
                      _service("lb", policy="Local", kind="LoadBalancer"))
        netutil.wait_ready(c, "echo")
        yield c, outside
    finally:
        c.stop()
        outside.remove()


def _node_port(c: cluster_mod.Cluster, name: str) -> int:
    return int(c.json("get", "service", name)["spec"]["ports"][0]["nodePort"])


def _bridge_ip(c: cluster_mod.Cluster) -> str:
    node = c.json("get", "nodes")["items"][0]
    bridge = node["metadata"]["annotations"]["pocketkube.io/pod-network"].split()[1]
    addrs = json.loads(subprocess.run(["ip", "-j", "-4", "addr", "show", bridge], capture_output=True,
                                      text=True, check=True).stdout)
    return str(addrs[0]["addr_info"][0]["local"])


def test_local_node_port_shows_the_pod_the_client_address(net: Net) -> None:
    """curl <node>:<nodePort> of a Local Service from outside: the pod sees the client's own address."""
    c, outside = net
    url = f"http://{outside.host_ip}:{_node_port(c, 'local')}/"
    assert cluster_mod.eventually(lambda: outside.get(url), what="the NodePort to answer") == (200, outside.ip)


def test_cluster_node_port_is_masqueraded(net: Net) -> None:
    """With the Cluster policy the pod sees the node's address on its pod bridge instead, as kube-proxy does."""
    c, outside = net
    url = f"http://{outside.host_ip}:{_node_port(c, 'cluster')}/"
    assert cluster_mod.eventually(lambda: outside.get(url), what="the NodePort to answer") == (200, _bridge_ip(c))


def test_load_balancer_local_gets_and_serves_a_health_check_node_port(net: Net) -> None:
    """A Local LoadBalancer gets spec.healthCheckNodePort; it answers 200 with one local endpoint, from anywhere."""
    c, outside = net
    svc = c.json("get", "service", "lb")
    hc = svc["spec"]["healthCheckNodePort"]
    assert 30000 <= hc <= 32767 and hc not in [p["nodePort"] for p in svc["spec"]["ports"]]
    assert "HealthCheck NodePort:     " + str(hc) in c.kubectl("describe", "service", "lb").stdout
    want = {"service": {"namespace": "default", "name": "lb"}, "localEndpoints": 1, "serviceProxyHealthy": True}
    url = f"http://{outside.host_ip}:{hc}/"
    body = cluster_mod.eventually(lambda: (lambda got: got[1] if got[0] == 200 else "")(outside.get(url)),
                                  what="the health check to pass")
    assert json.loads(body) == want
    with urllib.request.urlopen(f"http://127.0.0.1:{hc}/", timeout=3) as r:
        assert r.headers["Content-Type"] == "application/json" and r.headers["X-Load-Balancing-Endpoint-Weight"] == "1"
    # The LoadBalancer's ingress address (the node's, k3s style) answers from the host, which is short-circuited.
    ingress = cluster_mod.eventually(lambda: c.json("get", "service", "lb")["status"]["loadBalancer"].get("ingress"),
                                     what="the load balancer's ingress")
    port = svc["spec"]["ports"][0]["port"]
    assert cluster_mod.eventually(lambda: netutil.get(f"http://{ingress[0]['ip']}:{port}/"),
                                  what="the ingress address to answer") == _bridge_ip(c)


def test_no_local_endpoint_fails_the_health_check_and_drops_outside_traffic(net: Net) -> None:
    """Endpoints only on another node: the health check says 503 with 0 local endpoints, outside clients get
    nothing, and the host itself is still served (kube-proxy's short-circuit)."""
    c, outside = net
    pod_ip = c.json("get", "pod", "echo")["status"]["podIP"]
    svc = _service("far", policy="Local", kind="LoadBalancer", selector=False)
    far = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": "far-1", "labels": {"kubernetes.io/service-name": "far"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
           "endpoints": [{"addresses": [pod_ip], "nodeName": "somewhere-else", "conditions": {"ready": True}}]}
    netutil.apply(c, svc, far)
    spec = c.json("get", "service", "far")["spec"]
    hc, node_port = spec["healthCheckNodePort"], spec["ports"][0]["nodePort"]
    status, body = cluster_mod.eventually(lambda: outside.get(f"http://{outside.host_ip}:{hc}/"),
                                          what="the health check to answer")
    assert status == 503 and json.loads(body)["localEndpoints"] == 0
    assert cluster_mod.eventually(lambda: netutil.get(f"http://127.0.0.1:{node_port}/"),
                                  what="the host to be served") == _bridge_ip(c)
    status, body = outside.get(f"http://{outside.host_ip}:{node_port}/", timeout=2)
    assert status == 0 and "timed out" in body


def test_health_check_port_goes_with_the_local_policy(net: Net) -> None:
    """Switching the LoadBalancer to Cluster frees its healthCheckNodePort and stops serving it."""
    c, outside = net
    netutil.apply(c, _service("flip", policy="Local", kind="LoadBalancer"))
    hc = c.json("get", "service", "flip")["spec"]["healthCheckNodePort"]
    cluster_mod.eventually(lambda: outside.get(f"http://{outside.host_ip}:{hc}/")[0] == 200,
                           what="the health check to pass")
    c.kubectl("patch", "service", "flip", "-p", '{"spec":{"externalTrafficPolicy":"Cluster"}}')
    assert "healthCheckNodePort" not in c.json("get", "service", "flip")["spec"]

    def closed() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{hc}/", timeout=2)
        except urllib.error.URLError as e:
            return "refused" in str(e).lower()
        return False

    cluster_mod.eventually(closed, what="the health check to close")
    # Free again: another Service may ask for it.
    again = _service("again", policy="Local", kind="LoadBalancer")
    again["spec"]["healthCheckNodePort"] = hc
    netutil.apply(c, again)
    assert c.json("get", "service", "again")["spec"]["healthCheckNodePort"] == hc
