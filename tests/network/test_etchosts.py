"""Specification of network/etchosts.py: pod hostnames and the kubelet-managed /etc/hosts."""

from __future__ import annotations

import os

import pytest

from pocketkube.network import etchosts


def _pod(name="web-0", ns="default", **spec):
    return {"metadata": {"name": name, "namespace": ns}, "spec": spec}


@pytest.mark.parametrize(("pod", "want"), [
    (_pod(), ("web-0", "")),
    (_pod(hostname="db"), ("db", "")),
    (_pod(subdomain="web"), ("web-0", "web.default.svc.cluster.local")),
    (_pod(ns="shop", hostname="h", subdomain="s"), ("h", "s.shop.svc.cluster.local")),
    # 63 characters at most, never ending in - or . once cut
    (_pod(name="a" * 62 + "-b"), ("a" * 62, "")),
    (_pod(name="a" * 61 + ".-bc"), ("a" * 61, "")),
    (_pod(name="b" * 70), ("b" * 63, "")),
])
def test_hostname_and_domain(pod, want):
    """The hostname is spec.hostname or the pod's name cut to 63 characters; the domain comes from subdomain."""
    assert etchosts.hostname_and_domain(pod) == want


@pytest.mark.parametrize(("pod", "want"), [
    (_pod(subdomain="web"), "web-0"),
    (_pod(subdomain="web", setHostnameAsFQDN=True), "web-0.web.default.svc.cluster.local"),
    (_pod(setHostnameAsFQDN=True), "web-0"),
])
def test_uts_hostname(pod, want):
    """setHostnameAsFQDN makes the kernel hostname the fully qualified name, when the pod has a domain."""
    assert etchosts.uts_hostname(pod) == want


def test_render_pod_with_domain_and_aliases():
    """A pod's hosts file: the header, localhost lines, its IP with FQDN and hostname, then its hostAliases."""
    pod = _pod(subdomain="web", hostAliases=[{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}])
    assert etchosts.render(pod, ["10.244.0.5"]) == (
        "# Kubernetes-managed hosts file.\n"
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "fe00::0\tip6-mcastprefix\n"
        "fe00::1\tip6-allnodes\n"
        "fe00::2\tip6-allrouters\n"
        "10.244.0.5\tweb-0.web.default.svc.cluster.local\tweb-0\n"
        "\n"
        "# Entries added by HostAliases.\n"
        "10.1.2.3\tfoo.local\tbar.local\n")


def test_render_plain_pod():
    """Without a subdomain the pod's IP maps to its hostname alone."""
    assert etchosts.render(_pod(name="p"), ["10.244.0.9"]).endswith("fe00::2\tip6-allrouters\n10.244.0.9\tp\n")


def test_render_host_network_pod_copies_the_node_file():
    """A host-network pod gets the node's own hosts file under the host-network header, plus its aliases."""
    pod = _pod(hostNetwork=True, hostAliases=[{"ip": "1.2.3.4", "hostnames": ["x"]}])
    assert etchosts.render(pod, ["192.168.1.2"], node_hosts="127.0.0.1 localhost\n10.0.0.1 vm") == (
        "# Kubernetes-managed hosts file (host network).\n127.0.0.1 localhost\n10.0.0.1 vm\n"
        "\n# Entries added by HostAliases.\n1.2.3.4\tx\n")


def test_write_is_atomic_and_readable(tmp_path):
    """The file lands as <dir>/hosts, mode 0644, with no temporary left behind."""
    path = etchosts.write(str(tmp_path / "pod"), "x\n")
    assert path == str(tmp_path / "pod" / "hosts") and open(path).read() == "x\n"
    assert oct(os.stat(path).st_mode & 0o777) == "0o644" and os.listdir(tmp_path / "pod") == ["hosts"]
