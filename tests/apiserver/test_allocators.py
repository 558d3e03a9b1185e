"""Service IP and NodePort allocation: kube's static subranges keep user-picked values out of dynamic picks."""

from __future__ import annotations

import ipaddress

import pytest

from pocketkube.apiserver import allocators


@pytest.mark.parametrize(("size", "least", "most", "step", "want"), [
    (2768, 16, 128, 32, 86),        # the default node port range 30000-32767
    (10, 16, 128, 32, 0),           # too small for a static band
    (100, 16, 128, 32, 16),         # at least 16
    (100000, 16, 128, 32, 128),     # at most 128
    (1 << 20, 16, 256, 16, 256),    # a /12 service CIDR
    (256, 16, 256, 16, 16),         # a /24
])
def test_static_band(size: int, least: int, most: int, step: int, want: int) -> None:
    """The static band's size follows kube's calculateRangeOffset."""
    assert allocators._static_band(size, least=least, most=most, step=step) == want


def test_dynamic_node_ports_avoid_the_static_band() -> None:
    """Node ports picked for Services that ask for none come from above 30085 while any are free there."""
    a = allocators.Allocators()
    picked = {a._alloc_port("TCP") for _ in range(500)}
    assert min(picked) >= 30086


def test_dynamic_node_ports_fall_back_to_the_static_band() -> None:
    """With the upper band used up, dynamic picks take what is left in the static band."""
    a = allocators.Allocators(node_ports=(30000, 30199))
    a.ports = {("TCP", p) for p in range(30016, 30200)}
    assert a._alloc_port("TCP") < 30016


def test_dynamic_cluster_ips_avoid_the_static_band() -> None:
    """ClusterIPs picked for Services that ask for none skip the first 256 addresses of the range."""
    a = allocators.Allocators(cidr="10.96.0.0/12")
    first = int(a.network.network_address)
    picked = [int(ipaddress.ip_address(a._alloc_ip())) - first for _ in range(200)]
    assert min(picked) >= 258
