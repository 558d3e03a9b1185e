"""Pod network helpers: node CIDRs from the cluster CIDR, interface names, and clash detection."""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import subprocess
from typing import Any

import pytest

from pocketkube.network import podnet


@pytest.mark.parametrize(("cidr", "index", "want"), [
    ("10.244.0.0/16", 0, "10.244.0.0/24"),
    ("10.244.0.0/16", 3, "10.244.3.0/24"),
    ("10.123.0.0/16", 255, "10.123.255.0/24"),
    ("192.168.0.0/24", 0, "192.168.0.0/24"),
])
def test_node_cidr(cidr: str, index: int, want: str) -> None:
    """Node i gets the i-th /24 of the cluster CIDR."""
    assert podnet.node_cidr(cidr, index) == want


@pytest.mark.parametrize(("cidr", "index"), [("10.244.0.0/24", 1), ("10.0.0.0/25", 0), ("10.244.0.0/16", -1)])
def test_node_cidr_refuses_what_does_not_fit(cidr: str, index: int) -> None:
    """An index past the cluster CIDR, a CIDR smaller than a /24, or a negative index is a clear error."""
    with pytest.raises(ValueError):
        podnet.node_cidr(cidr, index)


def test_names_fit_linux_limits_and_differ_per_node() -> None:
    """Bridge and veth names stay within 15 characters; two data dirs never share a bridge or namespace prefix."""
    a, b = podnet.node_id("/tmp/one"), podnet.node_id("/tmp/two")
    assert a != b
    assert len(podnet.bridge_name(a)) <= 15
    assert len(podnet.veth_name(a, "0f1e2d3c-aaaa-bbbb-cccc-1234567890ab")) <= 15
    assert not podnet.netns_name(a, "x").startswith(podnet.netns_name(b, ""))


@pytest.mark.parametrize(("routes", "want"), [
    ([{"dst": "default", "dev": "eth0"}, {"dst": "172.17.0.0/16", "dev": "docker0"}], ""),
    ([{"dst": "10.244.0.0/24", "dev": "pkbother"}], "pkbother (10.244.0.0/24)"),
    ([{"dst": "10.0.0.0/8", "dev": "eth1"}], "eth1 (10.0.0.0/8)"),
    ([{"dst": "10.244.0.0/24", "dev": "pkbmine"}], ""),
])
def test_overlaps_finds_routes_of_other_interfaces(routes: list[dict[str, object]], want: str) -> None:
    """A pod CIDR already routed elsewhere (another cluster) is found; our own bridge's route is not a clash."""
    assert podnet.overlaps("10.244.0.0/24", routes, own="pkbmine") == want


def test_off_mode_reports_the_limit() -> None:
    """With the pod network off, the Node annotation states that pods share the host network."""
    net = podnet.PodNetwork("/tmp/x", pod_cidr="10.244.0.0/24", mode="off")
    assert not net.enabled and net.describe().startswith("host network:")
    with pytest.raises(ValueError):
        podnet.PodNetwork("/tmp/x", pod_cidr="10.244.0.0/24", mode="maybe")


ROUTES = ("Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n"
          "eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
          "pkb1234abcd\t0000F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
          "eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n")


@pytest.mark.parametrize(("address", "want"), [
    ("10.244.0.7", True), ("10.244.1.7", False), ("192.0.2.9", False), ("127.0.0.1", False), ("fd00::1", False),
])
def test_routed_to_pod(tmp_path: pathlib.Path, address: str, want: bool) -> None:
    """Only addresses on a pod bridge's route count as real pod IPs the host dials directly."""
    table = tmp_path / "route"
    table.write_text(ROUTES)
    assert podnet.routed_to_pod(address, route_table=str(table)) is want


@pytest.mark.parametrize(("ip", "mac"), [
    ("10.244.0.5", "0a:58:0a:f4:00:05"),
    ("10.244.1.255", "0a:58:0a:f4:01:ff"),
    ("192.168.0.1", "0a:58:c0:a8:00:01"),
])
def test_pod_mac_follows_the_ip(ip: str, mac: str) -> None:
    """A pod's MAC is a locally administered address made of its IP, the same every time the IP is reused."""
    assert podnet.pod_mac(ip) == mac


def _ip_json(*args: str) -> list[dict[str, Any]]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout or "[]")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
async def test_add_pod_configures_the_namespace_as_ip_would(tmp_path: pathlib.Path) -> None:
    """A pod's namespace gets lo and eth0 up, its IP on eth0 and a default route via the bridge."""
    net = podnet.PodNetwork(str(tmp_path), pod_cidr="10.251.77.0/24", mode="on")
    await net.setup()
    if net.problem:
        pytest.skip(net.problem)
    try:
        path = await net.add_pod("u-1", "10.251.77.5")
        ns = os.path.basename(path)
        links = {link["ifname"]: link for link in _ip_json("-n", ns, "link")}
        assert "UP" in links["lo"]["flags"] and "UP" in links["eth0"]["flags"]
        assert links["eth0"]["address"] == podnet.pod_mac("10.251.77.5")
        addrs = [(a["local"], a["prefixlen"]) for link in _ip_json("-n", ns, "-4", "addr", "show", "dev", "eth0")
                 for a in link["addr_info"]]
        assert addrs == [("10.251.77.5", 24)]
        routes = _ip_json("-n", ns, "-4", "route")
        assert {"dst": "default", "gateway": "10.251.77.1", "dev": "eth0"}.items() <= routes[0].items()
    finally:
        await net.remove_pod("u-1")
        net.close()
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)



@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
def test_delete_netns_does_what_ip_netns_del_does() -> None:
    """A namespace made by `ip netns add` is gone after delete_netns; deleting it again is not an error."""
    name = "pk-deltest-" + os.urandom(4).hex()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        podnet.delete_netns(name)
        assert not os.path.exists(os.path.join(podnet.NETNS_DIR, name))
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        with open("/proc/self/mountinfo") as f:
            assert f"/run/netns/{name} " not in f.read()
        podnet.delete_netns(name)
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
async def test_add_pod_failure_is_a_clear_error_and_leaves_no_namespace(tmp_path: pathlib.Path) -> None:
    """A refused in-namespace step (a gateway off the pod's subnet) names the request and removes the namespace."""
    net = podnet.PodNetwork(str(tmp_path), pod_cidr="10.251.78.0/24", mode="on")
    await net.setup()
    if net.problem:
        pytest.skip(net.problem)
    try:
        net.gateway = "192.0.2.1"
        with pytest.raises(podnet.NetworkError) as e:
            await net.add_pod("u-2", "10.251.78.5")
        ns = podnet.netns_name(net.id, "u-2")
        assert str(e.value) == (f'failed to set up sandbox network for pod "u-2": netns {ns}: route add default '
                                "via 192.0.2.1 dev eth0: RTNETLINK answers: Network is unreachable")
        assert not os.path.exists(os.path.join(podnet.NETNS_DIR, ns))
        assert net.netns_path("u-2") is None
        # The kernel destroys an unreferenced namespace, and the veth with it, in a work queue shortly after.
        veth = f"/sys/class/net/{podnet.veth_name(net.id, 'u-2')}"
        for _ in range(100):
            if not os.path.exists(veth):
                break
            await asyncio.sleep(0.05)
        assert not os.path.exists(veth)
    finally:
        net.close()
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None, reason="needs root and iproute2")
async def test_a_leftover_namespace_that_cannot_be_removed_is_a_network_error(
        tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An earlier try's namespace that will not go away fails the sandbox with NetworkError, not a raw OSError."""
    net = podnet.PodNetwork(str(tmp_path), pod_cidr="10.251.79.0/24", mode="on")
    await net.setup()
    if net.problem:
        pytest.skip(net.problem)
    ns = podnet.netns_name(net.id, "u-3")
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        def refuse(name: str) -> None:
            raise OSError(1, f"cannot remove namespace {name}: umount2: Operation not permitted")

        monkeypatch.setattr(podnet, "delete_netns", refuse)
        with pytest.raises(podnet.NetworkError, match=r'pod "u-3": .*umount2: Operation not permitted'):
            await net.add_pod("u-3", "10.251.79.5")
    finally:
        monkeypatch.undo()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
        net.close()
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)
