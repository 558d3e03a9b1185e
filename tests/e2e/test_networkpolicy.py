"""End to end: NetworkPolicies applied with kubectl are enforced on the pod bridges within a second."""

from __future__ import annotations

import collections.abc
import json
import subprocess
import time
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

NODES = ["pocketkube-node-1", "pocketkube-node-2"]
# A DNS A query for argv[1] over UDP with a 1 s timeout, to the server argv[2] (the kube-dns ClusterIP).
DNS_QUERY = ("import socket,struct,sys\n"
             "ns=sys.argv[2]\n"
             "q=struct.pack('>HHHHHH',7,0x100,1,0,0,0)+b''.join(bytes([len(p)])+p.encode() "
             "for p in sys.argv[1].split('.'))+b'\\0'+struct.pack('>HH',1,1)\n"
             "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.settimeout(1); s.sendto(q,(ns,53))\n"
             "print(socket.inet_ntoa(s.recv(512)[-4:]))\n")


def policy(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": name}, "spec": spec}


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    netutil.require_root_network(nft=True)
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk")))
    try:
        cluster_mod.eventually(lambda: all(c.kubectl("get", "node", n, check=False).returncode == 0 for n in NODES),
                               what="both nodes to register")
        srv = netutil.pod("srv", node=NODES[0], labels={"app": "srv"})
        srv["spec"]["containers"][0]["ports"] = [{"name": "http", "containerPort": 8080}]
        netutil.apply(c, srv,
                      netutil.pod("front", node=NODES[1], labels={"role": "frontend"}),
                      netutil.pod("plain", node=NODES[0]),
                      {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "srv"},
                       "spec": {"selector": {"app": "srv"}, "ports": [{"port": 80, "targetPort": 8080}]}})
        netutil.wait_ready(c, "srv", "front", "plain")
        yield c
    finally:
        c.stop()


def _ip(c: cluster_mod.Cluster, name: str) -> str:
    return str(c.json("get", "pod", name)["status"]["podIP"])


def _svc(c: cluster_mod.Cluster, name: str = "srv", namespace: str = "default") -> str:
    return str(c.json("get", "service", name, "-n", namespace)["spec"]["clusterIP"])


def _lookup(c: cluster_mod.Cluster, client: str) -> subprocess.CompletedProcess[str]:
    return c.kubectl("exec", client, "--", "python3", "-c", DNS_QUERY, "srv.default.svc.cluster.local",
                     _svc(c, "kube-dns", "kube-system"), check=False)


def _fetch(c: cluster_mod.Cluster, client: str, url: str) -> subprocess.CompletedProcess[str]:
    code = f"import urllib.request as u\nprint(u.urlopen({url!r}, timeout=2).read().decode())"
    return c.kubectl("exec", client, "--", "python3", "-c", code, check=False)


def _reaches(c: cluster_mod.Cluster, client: str, url: str) -> bool:
    out = _fetch(c, client, url)
    if out.returncode == 0:
        assert out.stdout.strip() == "srv"
        return True
    assert "timed out" in out.stderr or "timeout" in out.stderr.lower(), out.stderr
    return False


def _apply_and_wait(c: cluster_mod.Cluster, *objs: dict[str, Any]) -> None:
    """Apply with kubectl, then allow the enforcer its one second."""
    netutil.apply(c, *objs)
    time.sleep(1.0)


def test_pods_without_policies_reach_each_other(net: cluster_mod.Cluster) -> None:
    """Before any policy a pod reaches another pod by IP and through its Service."""
    c = net
    assert _reaches(c, "plain", f"http://{_ip(c, 'srv')}:8080")
    assert _reaches(c, "front", f"http://{_svc(c)}")


def test_default_deny_ingress_blocks_new_connections_within_a_second(net: cluster_mod.Cluster) -> None:
    """A namespace-wide ingress deny makes the same requests time out a second later, by IP and by Service."""
    c = net
    _apply_and_wait(c, policy("deny-ingress", {"podSelector": {}, "policyTypes": ["Ingress"]}))
    assert not _reaches(c, "plain", f"http://{_ip(c, 'srv')}:8080")
    assert not _reaches(c, "front", f"http://{_svc(c)}")


def test_node_still_reaches_its_pods(net: cluster_mod.Cluster) -> None:
    """Traffic from the node (kubelet probes, the host) is never judged: srv stays Ready and answers the host."""
    c = net
    assert netutil.get(f"http://{_ip(c, 'srv')}:8080") == "srv"
    conds = {x["type"]: x["status"] for x in c.json("get", "pod", "srv")["status"]["conditions"]}
    assert conds["Ready"] == "True"


def test_allow_from_frontend_lets_only_labelled_clients_in(net: cluster_mod.Cluster) -> None:
    """An ingress rule from role=frontend pods to the named port http admits them (also via the ClusterIP) and nobody else."""
    c = net
    _apply_and_wait(c, policy("allow-frontend", {
        "podSelector": {"matchLabels": {"app": "srv"}},
        "ingress": [{"from": [{"podSelector": {"matchLabels": {"role": "frontend"}}}],
                     "ports": [{"protocol": "TCP", "port": "http"}]}]}))
    assert _reaches(c, "front", f"http://{_ip(c, 'srv')}:8080")
    assert _reaches(c, "front", f"http://{_svc(c)}")
    assert not _reaches(c, "plain", f"http://{_ip(c, 'srv')}:8080")


def test_labelling_a_pod_lets_it_in(net: cluster_mod.Cluster) -> None:
    """Labelling a client role=frontend changes what it may reach without touching the policy."""
    c = net
    c.kubectl("label", "pod", "plain", "role=frontend")
    time.sleep(1.0)
    try:
        assert _reaches(c, "plain", f"http://{_ip(c, 'srv')}:8080")
    finally:
        c.kubectl("label", "pod", "plain", "role-")


def test_default_deny_egress_blocks_pods_and_dns(net: cluster_mod.Cluster) -> None:
    """An egress deny stops a permitted client reaching srv, and stops its DNS lookups too."""
    c = net
    assert _lookup(c, "front").returncode == 0
    _apply_and_wait(c, policy("deny-egress", {"podSelector": {}, "policyTypes": ["Egress"]}))
    assert not _reaches(c, "front", f"http://{_ip(c, 'srv')}:8080")
    out = _lookup(c, "front")
    assert out.returncode != 0 and "timed out" in out.stderr


def test_egress_to_kube_dns_on_port_53_resolves_names(net: cluster_mod.Cluster) -> None:
    """An egress rule to kube-dns pods in kube-system on port 53 lets lookups through, and nothing else."""
    c = net
    _apply_and_wait(c, policy("allow-dns", {
        "podSelector": {}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
                    "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}]}))
    out = _lookup(c, "front")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == _svc(c)
    assert not _reaches(c, "front", f"http://{_svc(c)}")


def test_egress_rule_to_a_named_port_reopens_the_path(net: cluster_mod.Cluster) -> None:
    """An egress rule to app=srv pods on their port named http lets the frontend through again, via the Service too."""
    c = net
    _apply_and_wait(c, policy("allow-srv", {
        "podSelector": {"matchLabels": {"role": "frontend"}}, "policyTypes": ["Egress"],
        "egress": [{"to": [{"podSelector": {"matchLabels": {"app": "srv"}}}], "ports": [{"port": "http"}]}]}))
    assert _reaches(c, "front", f"http://{_svc(c)}")
    assert not _reaches(c, "plain", f"http://{_ip(c, 'srv')}:8080")


def test_nodes_say_policies_are_enforced(net: cluster_mod.Cluster) -> None:
    """Each process node names the nftables table enforcing its pods' policies."""
    c = net
    for n in NODES:
        notes = c.json("get", "node", n)["metadata"]["annotations"]
        assert notes["pocketkube.io/network-policy"].startswith("nftables table ip pknp_")


def test_deleting_the_policies_restores_traffic_and_stop_removes_the_table(net: cluster_mod.Cluster) -> None:
    """Without policies every pod is reachable again; stopping the cluster leaves no table behind."""
    c = net
    table = c.json("get", "node", NODES[0])["metadata"]["annotations"]["pocketkube.io/network-policy"].split()[-1]
    c.kubectl("delete", "networkpolicy", "--all")
    time.sleep(1.0)
    assert _reaches(c, "plain", f"http://{_ip(c, 'srv')}:8080")
    assert subprocess.run(["nft", "list", "table", "ip", table], capture_output=True).returncode == 0
    c.stop()
    listed = subprocess.run(["nft", "-j", "list", "tables"], capture_output=True, text=True).stdout
    assert table not in json.dumps(json.loads(listed or "{}"))
