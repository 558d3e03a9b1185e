"""End to end: the issue's Service, DNS and NetworkPolicy cases the other network suites leave out."""

from __future__ import annotations

import collections.abc
import json
import shutil
import time
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

NODES = ["pocketkube-node-1", "pocketkube-node-2"]
# Answers "<pod>:<port>:<client address>" on 8080 and 9090; /healthz fails after /unready until /ready.
SERVER = ("import http.server,os,threading\n"
          "state={'ready':True}\n"
          "class H(http.server.BaseHTTPRequestHandler):\n"
          "  def log_message(s,*a): pass\n"
          "  def do_GET(s):\n"
          "    if s.path in ('/unready','/ready'): state['ready']=s.path=='/ready'\n"
          "    if s.path=='/healthz' and not state['ready']: s.send_response(500); s.end_headers(); return\n"
          "    b='%s:%d:%s'%(os.environ['HOSTNAME'],s.server.server_address[1],s.client_address[0])\n"
          "    s.send_response(200); s.end_headers(); s.wfile.write(b.encode())\n"
          "for p in (8080,9090): threading.Thread(target=http.server.ThreadingHTTPServer(('0.0.0.0',p),H).serve_forever).start()\n")


def _service(name: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": ports, **spec}}


def _client(name: str, *, node: str, namespace: str = "default") -> dict[str, Any]:
    body = netutil.pod(name, node=node, labels={"role": "client"})
    body["metadata"]["namespace"] = namespace
    return body


def _policy(name: str, spec: dict[str, Any], namespace: str = "default") -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    netutil.require_root_network(nft=True)
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk")))
    try:
        cluster_mod.eventually(lambda: all(c.kubectl("get", "node", n, check=False).returncode == 0 for n in NODES),
                               what="both nodes to register")
        container = {"name": "web", "image": "python:3.11", "command": ["python3", "-c", SERVER],
                     "ports": [{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9090}],
                     "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}, "periodSeconds": 1}}
        web = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"terminationGracePeriodSeconds": 1, "containers": [container],
                                              "topologySpreadConstraints": [{
                                                  "maxSkew": 1, "topologyKey": "kubernetes.io/hostname",
                                                  "whenUnsatisfiable": "DoNotSchedule",
                                                  "labelSelector": {"matchLabels": {"app": "web"}}}]}}}}
        other = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other", "labels": {"team": "blue"}}}
        netutil.apply(c, web, other,
                      _service("web", [{"port": 80, "targetPort": "http"}]),
                      _service("multi", [{"name": "http", "port": 80, "targetPort": "http"},
                                         {"name": "admin", "port": 81, "targetPort": "admin"}]),
                      _service("sticky", [{"port": 80, "targetPort": "http"}], sessionAffinity="ClientIP"),
                      _service("pnr", [{"port": 80, "targetPort": "http"}], publishNotReadyAddresses=True))
        cluster_mod.eventually(lambda: c.kubectl("get", "serviceaccount", "default", "-n", "other",
                                                 check=False).returncode == 0, what="other's ServiceAccount")
        netutil.apply(c, _client("client", node=NODES[0]), _client("client", node=NODES[1], namespace="other"))
        c.kubectl("rollout", "status", "deployment/web", "--timeout=60s")
        c.kubectl("wait", "--for=condition=Ready", "pod/client", "--timeout=60s")
        c.kubectl("wait", "--for=condition=Ready", "pod/client", "-n", "other", "--timeout=60s")
        yield c
    finally:
        c.stop()


def _web_pods(c: cluster_mod.Cluster) -> dict[str, str]:
    """Name -> IP of the web pods."""
    return {p["metadata"]["name"]: p["status"]["podIP"] for p in c.json("get", "pods", "-l", "app=web")["items"]}


def _ip(c: cluster_mod.Cluster, kind: str, name: str, namespace: str = "default") -> str:
    obj = c.json("get", kind, name, "-n", namespace)
    return str(obj["status"]["podIP"] if kind == "pod" else obj["spec"]["clusterIP"])


def _spread(url: str, tries: int = 20) -> set[str]:
    """The pods that answered tries requests from the host."""
    return {netutil.get(url).split(":")[0] for _ in range(tries)}


def _fetch(c: cluster_mod.Cluster, url: str, namespace: str = "default") -> str | None:
    """The body a client pod gets for url, or None when the connection times out."""
    code = f"import urllib.request as u\nprint(u.urlopen({url!r}, timeout=2).read().decode())"
    out = c.kubectl("exec", "client", "-n", namespace, "--", "python3", "-c", code, check=False)
    if out.returncode == 0:
        return out.stdout.strip()
    assert "timed out" in out.stderr, out.stderr
    return None


def test_multi_port_service_reaches_each_named_target_port(net: cluster_mod.Cluster) -> None:
    """A two-port Service sends port 80 to the pods' port named http and 81 to the one named admin."""
    c = net
    ip = _ip(c, "service", "multi")
    assert {netutil.get(f"http://{ip}:80").split(":")[1] for _ in range(5)} == {"8080"}
    assert {netutil.get(f"http://{ip}:81").split(":")[1] for _ in range(5)} == {"9090"}
    ports = c.json("get", "endpoints", "multi")["subsets"][0]["ports"]
    assert sorted((p["name"], p["port"]) for p in ports) == [("admin", 9090), ("http", 8080)]


def test_pods_see_each_others_own_address(net: cluster_mod.Cluster) -> None:
    """Pod to pod traffic keeps the client pod's IP as its source: no NAT between pods."""
    c = net
    client = _ip(c, "pod", "client")
    for ip in _web_pods(c).values():
        assert _fetch(c, f"http://{ip}:8080") is not None
        assert str(_fetch(c, f"http://{ip}:8080")).split(":")[2] == client


def test_client_ip_affinity_sticks_to_one_pod(net: cluster_mod.Cluster) -> None:
    """sessionAffinity ClientIP sends every request of a client to one pod; without it both pods answer."""
    c = net
    assert len(_spread(f"http://{_ip(c, 'service', 'sticky')}")) == 1
    assert _spread(f"http://{_ip(c, 'service', 'web')}") == set(_web_pods(c))


def test_internal_traffic_policy_local_keeps_pod_traffic_on_its_node(net: cluster_mod.Cluster) -> None:
    """internalTrafficPolicy Local: a pod reaches only its own node's endpoints, or none; the host reaches all."""
    c = net
    lonely = netutil.pod("lonely", node=NODES[1], labels={"app": "lonely"})
    local = _service("local", [{"port": 80, "targetPort": 8080}], internalTrafficPolicy="Local")
    far = dict(local, metadata={"name": "local-far"}, spec=dict(local["spec"], selector={"app": "lonely"}))
    netutil.apply(c, lonely, local, far)
    netutil.wait_ready(c, "lonely")
    mine = next(p["metadata"]["name"] for p in c.json("get", "pods", "-l", "app=web")["items"]
                if p["spec"]["nodeName"] == NODES[0])
    ip, far_ip = _ip(c, "service", "local"), _ip(c, "service", "local-far")
    cluster_mod.eventually(lambda: _spread(f"http://{ip}") == set(_web_pods(c)), what="the host to reach both pods")
    assert {str(_fetch(c, f"http://{ip}")).split(":")[0] for _ in range(8)} == {mine}
    assert _fetch(c, f"http://{far_ip}") is None
    assert _fetch(c, f"http://{far_ip}", "other") == "lonely"


def test_a_pod_failing_readiness_stops_getting_traffic(net: cluster_mod.Cluster) -> None:
    """Once a pod fails its readiness probe the Service skips it, unless it publishes not-ready addresses."""
    c = net
    pods = _web_pods(c)
    sick, well = sorted(pods)
    web, pnr = _ip(c, "service", "web"), _ip(c, "service", "pnr")
    netutil.get(f"http://{pods[sick]}:8080/unready")
    try:
        cluster_mod.eventually(lambda: _spread(f"http://{web}") == {well}, what="traffic to skip the unready pod")
        ready = c.kubectl("get", "pod", sick, "-o", "jsonpath={.status.conditions[?(@.type=='Ready')].status}")
        assert ready.stdout == "False"
        assert _spread(f"http://{pnr}") == {sick, well}
    finally:
        netutil.get(f"http://{pods[sick]}:8080/ready")
    cluster_mod.eventually(lambda: _spread(f"http://{web}") == {sick, well}, what="the pod to get traffic again")


def test_nslookup_service_dot_namespace(net: cluster_mod.Cluster) -> None:
    """`nslookup api.demo` in a pod answers the Service's ClusterIP through the search path."""
    assert shutil.which("nslookup"), "nslookup is missing: apt-get install bind9-dnsutils (scripts/setup does)"
    c = net
    c.kubectl("create", "namespace", "demo")
    c.kubectl("create", "service", "clusterip", "api", "-n", "demo", "--tcp=80:8080")
    ip = _ip(c, "service", "api", "demo")
    dns = _ip(c, "service", "kube-dns", "kube-system")
    out = cluster_mod.eventually(lambda: c.kubectl("exec", "client", "--", "nslookup", "api.demo", check=False),
                                 what="nslookup to answer")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"Server:\t\t{dns}\nAddress:\t{dns}#53\n" in out.stdout
    assert f"Name:\tapi.demo.svc.cluster.local\nAddress: {ip}\n" in out.stdout


def test_namespace_selector_admits_only_that_namespace(net: cluster_mod.Cluster) -> None:
    """An ingress rule from namespaces labelled team=blue lets other's client in, by IP and Service, not default's."""
    c = net
    target, svc = sorted(_web_pods(c).values())[0], _ip(c, "service", "web")
    netutil.apply(c, _policy("from-blue", {"podSelector": {"matchLabels": {"app": "web"}},
                                           "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}))
    try:
        time.sleep(1.0)
        assert _fetch(c, f"http://{target}:8080") is None
        assert _fetch(c, f"http://{svc}") is None
        assert _fetch(c, f"http://{target}:8080", "other") is not None
        assert _fetch(c, f"http://{svc}", "other") is not None
    finally:
        c.kubectl("delete", "networkpolicy", "from-blue")


def test_overlapping_policies_add_up(net: cluster_mod.Cluster) -> None:
    """Two policies selecting the same pods admit the union of their rules, and deleting one narrows it again."""
    c = net
    target = sorted(_web_pods(c).values())[0]
    client = _ip(c, "pod", "client")
    netutil.apply(c,
                  _policy("from-blue", {"podSelector": {"matchLabels": {"app": "web"}},
                                        "ingress": [{"from": [{"namespaceSelector": {"matchLabels": {"team": "blue"}}}]}]}),
                  _policy("from-client", {"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": f"{client}/32"}}],
                                                                          "ports": [{"port": 8080}]}]}))
    try:
        time.sleep(1.0)
        assert _fetch(c, f"http://{target}:8080") is not None
        assert _fetch(c, f"http://{target}:9090") is None  # the ipBlock rule names port 8080 only
        assert _fetch(c, f"http://{target}:9090", "other") is not None
        c.kubectl("delete", "networkpolicy", "from-blue")
        time.sleep(1.0)
        assert _fetch(c, f"http://{target}:8080", "other") is None
        assert _fetch(c, f"http://{target}:8080") is not None
    finally:
        c.kubectl("delete", "networkpolicy", "--all")


def test_ip_block_except_carves_out_one_client(net: cluster_mod.Cluster) -> None:
    """An ipBlock of the whole pod network with one client's /32 in except admits every pod but that client."""
    c = net
    target = sorted(_web_pods(c).values())[0]
    client = _ip(c, "pod", "client")
    cidr = c.json("get", "node", NODES[0])["spec"]["podCIDR"].split(".")[:2]
    netutil.apply(c, _policy("all-but-one", {"podSelector": {"matchLabels": {"app": "web"}}, "ingress": [
        {"from": [{"ipBlock": {"cidr": ".".join(cidr) + ".0.0/16", "except": [f"{client}/32"]}}]}]}))
    try:
        time.sleep(1.0)
        assert _fetch(c, f"http://{target}:8080") is None
        assert _fetch(c, f"http://{target}:8080", "other") is not None
    finally:
        c.kubectl("delete", "networkpolicy", "--all")


def test_egress_ip_block_with_a_port_range(net: cluster_mod.Cluster) -> None:
    """An egress rule to one node's pod CIDR on ports 9000-9100 lets only those connections out, via Services too."""
    c = net
    pods = c.json("get", "pods", "-l", "app=web")["items"]
    far = next(p for p in pods if p["spec"]["nodeName"] == NODES[0])
    near = next(p for p in pods if p["spec"]["nodeName"] == NODES[1])
    cidr = c.json("get", "node", NODES[0])["spec"]["podCIDR"]
    netutil.apply(c, _policy("out", {"podSelector": {}, "policyTypes": ["Egress"], "egress": [
        {"to": [{"ipBlock": {"cidr": cidr}}], "ports": [{"protocol": "TCP", "port": 9000, "endPort": 9100}]}]},
        namespace="other"))
    try:
        time.sleep(1.0)
        assert str(_fetch(c, f"http://{far['status']['podIP']}:9090", "other")).startswith(far["metadata"]["name"])
        assert _fetch(c, f"http://{far['status']['podIP']}:8080", "other") is None
        assert _fetch(c, f"http://{near['status']['podIP']}:9090", "other") is None
        multi = _ip(c, "service", "multi")
        answers: set[str | None] = set()
        for _ in range(30):   # the Service picks a backend at random: ask until both have answered
            answers.add(_fetch(c, f"http://{multi}:81", "other"))
            if None in answers and len(answers) > 1:
                break
        assert answers & {None} and any(a and a.startswith(far["metadata"]["name"]) for a in answers)
    finally:
        c.kubectl("delete", "networkpolicy", "--all", "-n", "other")


def test_conflicting_host_ports_leave_the_pod_pending(net: cluster_mod.Cluster) -> None:
    """A third pod asking for a hostPort both nodes have given out stays Pending with kube's FailedScheduling event."""
    c = net
    pods = []
    for i in range(3):
        p = netutil.pod(f"hp{i}")
        p["spec"]["containers"][0]["ports"] = [{"containerPort": 8080, "hostPort": 28080}]
        pods.append(p)
    netutil.apply(c, *pods)
    try:

        def event() -> str:
            items = c.json("get", "events", "--field-selector", "reason=FailedScheduling")["items"]
            return next((e["message"] for e in items if e["involvedObject"]["name"].startswith("hp")), "")

        msg = cluster_mod.eventually(event, what="a FailedScheduling event")
        assert msg == ("0/2 nodes are available: 2 node(s) didn't have free ports for the requested pod ports. "
                       "preemption: 0/2 nodes are available: 2 No preemption victims found for incoming pod.")
        phases = sorted(p["status"]["phase"] for p in c.json("get", "pods", "hp0", "hp1", "hp2")["items"])
        assert phases.count("Pending") >= 1
    finally:
        c.kubectl("delete", "pod", "hp0", "hp1", "hp2", "--wait=false")


@pytest.mark.parametrize(("body", "want"), [
    ({"type": "NodePort", "ports": [{"port": 80, "nodePort": 29999}]},
     'The Service "bad" is invalid: spec.ports[0].nodePort: Invalid value: 29999: provided port is not in the '
     "valid range. The range of valid ports is 30000-32767"),
    ({"ports": [{"port": 70000}]},
     'The Service "bad" is invalid: \n* spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, '
     "inclusive\n* spec.ports[0].targetPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ({"ports": [{"port": 80, "targetPort": "much-too-long-name"}]},
     'The Service "bad" is invalid: spec.ports[0].targetPort: Invalid value: "much-too-long-name": '
     "must be no more than 15 characters"),
])
def test_ports_out_of_range_are_refused(net: cluster_mod.Cluster, body: dict[str, Any], want: str) -> None:
    """Service ports out of range are a 422 naming the field, with kube's message."""
    c = net
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad"}, "spec": body}
    out = c.kubectl("apply", "-f", "-", input=json.dumps(svc), check=False)
    assert out.returncode == 1 and out.stderr.strip() == want


def test_pod_network_off_says_so_on_the_node(tmp_path_factory: pytest.TempPathFactory) -> None:
    """With --pod-network off pods share the host's network and IP, and the Node's annotation says why."""
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk"))).start(args=["--nodes", "1", "--pod-network", "off"])
    try:
        note = cluster_mod.eventually(lambda: c.kubectl(
            "get", "node", NODES[0], "-o", "jsonpath={.metadata.annotations.pocketkube\\.io/pod-network}",
            check=False).stdout, what="the node's pod-network annotation")
        assert note == "host network: pod networking is turned off (--pod-network off)"
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
               "spec": {"containers": [{"name": "c", "image": "python:3.11", "command": ["sleep", "60"]}],
                        "terminationGracePeriodSeconds": 0}}
        c.kubectl("apply", "-f", "-", input=json.dumps(pod))
        c.kubectl("wait", "--for=condition=Ready", "pod/p", "--timeout=60s")
        status = c.json("get", "pod", "p")["status"]
        assert status["podIP"] == status["hostIP"]
    finally:
        c.stop()


@pytest.mark.parametrize(("spec", "want"), [
    ({"podSelector": {}, "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]},
     'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "192.168.0.0/16": must be a strict subset of `cidr`'),
    ({"podSelector": {}, "ingress": [{"ports": [{"port": 90, "endPort": 80}]}]},
     "spec.ingress[0].ports[0].endPort: Invalid value: 80: must be greater than or equal to `port`"),
])
def test_bad_network_policies_are_refused(net: cluster_mod.Cluster, spec: dict[str, Any], want: str) -> None:
    """A NetworkPolicy whose except lies outside its cidr, or whose port range runs backwards, is a 422."""
    out = net.kubectl("apply", "-f", "-", input=json.dumps(_policy("np", spec)), check=False)
    assert out.returncode == 1 and out.stderr.strip() == f'The NetworkPolicy "np" is invalid: {want}'
