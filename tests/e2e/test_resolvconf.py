"""End to end: each pod's /etc/resolv.conf follows its dnsPolicy, and cluster names resolve from pods through kube-dns."""

from __future__ import annotations

import collections.abc
import json
import random
import shutil
from typing import Any

import pytest

from pocketkube.network import resolvconf
from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil

SEARCH = "svc.cluster.local cluster.local"


@pytest.fixture(scope="module")
def dns_cluster(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """One process node with its own pod network; kube-dns where the node's kubelet expects it (10.96.0.10)."""
    netutil.require_root_network(nft=True)
    assert shutil.which("busybox"), "the busybox image needs the busybox program: apt-get install busybox"
    c = cluster_mod.Cluster(str(tmp_path_factory.mktemp("pk"))).start(
        args=["--nodes", "1", "--cluster-cidr", f"10.{random.randint(100, 199)}.0.0/16"])
    try:
        cluster_mod.eventually(lambda: "node/" in c.kubectl("get", "nodes", "-o", "name").stdout,
                               what="the node to register")
        cluster_mod.eventually(lambda: c.kubectl("get", "serviceaccount", "default", check=False).returncode == 0,
                               what="the default ServiceAccount")
        yield c
    finally:
        c.stop()


def _run(c: cluster_mod.Cluster, name: str, *argv: str, namespace: str = "default",
         overrides: dict[str, Any] | None = None) -> str:
    """kubectl run -i --rm: a busybox pod's output once it ends (the pod is gone after).

    The command waits for a line of input first: attach then sees all of its output, however quick it is."""
    extra = [f"--overrides={json.dumps(overrides)}"] if overrides else []
    got = c.kubectl("run", "-i", "--rm", "--restart=Never", "--image=busybox", "-n", namespace, name, *extra,
                    "--", "sh", "-c", 'read go; exec "$@"', "sh", *argv, input="go\n", check=False, timeout=90)
    assert got.returncode == 0, got.stderr
    return got.stdout.removesuffix(f'pod "{name}" deleted\n')


def _dns_ip(c: cluster_mod.Cluster) -> str:
    return str(c.json("get", "service", "-n", "kube-system", "kube-dns")["spec"]["clusterIP"])


def test_cluster_first_pod_uses_kube_dns(dns_cluster: cluster_mod.Cluster) -> None:
    """A ClusterFirst pod's resolv.conf names the kube-dns ClusterIP, its namespace's search path and ndots:5."""
    c = dns_cluster
    host = resolvconf.read_host()
    search = " ".join(["default.svc.cluster.local", SEARCH, *host.searches])
    want = f"search {search}\nnameserver {_dns_ip(c)}\noptions ndots:5\n"
    assert _run(c, "resolv", "cat", "/etc/resolv.conf") == want
    c.kubectl("create", "namespace", "dns-other")
    cluster_mod.eventually(lambda: c.kubectl("get", "serviceaccount", "default", "-n", "dns-other",
                                             check=False).returncode == 0, what="the namespace's ServiceAccount")
    out = _run(c, "resolv", "head", "-1", "/etc/resolv.conf", namespace="dns-other")
    assert out.startswith("search dns-other.svc.cluster.local svc.cluster.local cluster.local")


def test_names_resolve_from_a_pod(dns_cluster: cluster_mod.Cluster) -> None:
    """nslookup of the kubernetes Service from a pod answers its ClusterIP; short names resolve by the search path."""
    c = dns_cluster
    ip = c.json("get", "service", "kubernetes")["spec"]["clusterIP"]
    out = _run(c, "lookup", "busybox", "nslookup", "kubernetes.default.svc.cluster.local")
    assert f"Server:\t\t{_dns_ip(c)}" in out and f"Name:\tkubernetes.default.svc.cluster.local\nAddress: {ip}" in out
    # glibc's resolver applies search domains and ndots (busybox's nslookup does not, as with the real image).
    code = "import socket; print(socket.gethostbyname('kubernetes.default'))"
    assert _run(c, "short", "python3", "-c", code).strip() == ip


@pytest.mark.parametrize(("spec", "want"), [
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["192.0.2.1"], "searches": ["example.test"],
                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     "search example.test\nnameserver 192.0.2.1\noptions ndots:2 edns0\n"),
    ({"dnsPolicy": "ClusterFirst", "dnsConfig": {"searches": ["extra.test"], "options": [{"name": "ndots",
                                                                                         "value": "1"}]}},
     None),
])
def test_dns_config(dns_cluster: cluster_mod.Cluster, spec: dict[str, Any], want: str | None) -> None:
    """dnsPolicy None takes dnsConfig alone; dnsConfig adds to ClusterFirst's search path and overrides its options."""
    c = dns_cluster
    if want is None:
        host = resolvconf.read_host()
        search = " ".join(["default.svc.cluster.local", SEARCH, *host.searches, "extra.test"])
        want = f"search {search}\nnameserver {_dns_ip(c)}\noptions ndots:1\n"
    assert _run(c, "cfg", "cat", "/etc/resolv.conf", overrides={"spec": spec}) == want


def test_default_and_host_network_pods_use_the_nodes_resolver(dns_cluster: cluster_mod.Cluster) -> None:
    """dnsPolicy Default, and ClusterFirst on the host network, give the pod the node's own nameservers."""
    c = dns_cluster
    host = resolvconf.read_host()
    for name, spec in (("dflt", {"dnsPolicy": "Default"}), ("hostnet", {"hostNetwork": True})):
        out = resolvconf.parse(_run(c, name, "cat", "/etc/resolv.conf", overrides={"spec": spec}))
        assert out.nameservers == host.nameservers, name
        assert "default.svc.cluster.local" not in out.searches
