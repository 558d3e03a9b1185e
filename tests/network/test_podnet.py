"""Pod network: node CIDRs, interface names, clash detection, and namespaces + veth pairs made without `ip`."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import json
import os
import pathlib
import shutil
import stat
import subprocess
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from pocketkube.base import threadns
from pocketkube.network import podnet
from tests.network import nsthreads


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


needs_root = nsthreads.needs_root


def _mounts(path: str) -> list[tuple[str, str, str]]:
    """(root, propagation fields, fs type) of each mount at path in /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields = head.split()
            if fields[4] == path:
                found.append((fields[3], " ".join(w.split(":")[0] for w in fields[6:]), tail.split()[0]))
    return found


@pytest.fixture
def ns_name() -> Iterator[str]:
    """A fresh namespace name, removed afterwards whatever made it."""
    name = f"pk-nstest-{uuid.uuid4().hex[:8]}"
    yield name
    subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)


@needs_root
def test_create_netns_makes_what_ip_netns_add_makes(ns_name: str) -> None:
    """The namespace file is bind-mounted from nsfs as ip's is, `ip netns` sees and uses it, and the thread is home."""
    home = os.readlink("/proc/thread-self/ns/net")

    def create() -> tuple[str, str]:
        return podnet.create_netns(ns_name), os.readlink("/proc/thread-self/ns/net")

    path, after = nsthreads.on_thread(create)
    assert path == f"/run/netns/{ns_name}" and after == home
    assert ns_name in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert [link["ifname"] for link in _ip_json("-n", ns_name, "link")] == ["lo"]
    assert os.stat(path).st_ino != os.stat(f"/proc/{os.getpid()}/ns/net").st_ino
    theirs = f"{ns_name}-ip"
    subprocess.run(["ip", "netns", "add", theirs], check=True)
    try:
        ours_mount, ip_mount = _mounts(path), _mounts(f"/run/netns/{theirs}")
        assert [(m[1], m[2]) for m in ours_mount] == [(m[1], m[2]) for m in ip_mount] == [("shared", "nsfs")]
        ours_stat, ip_stat = os.stat(path), os.stat(f"/run/netns/{theirs}")
        assert (ours_stat.st_mode, ours_stat.st_dev) == (ip_stat.st_mode, ip_stat.st_dev)
    finally:
        subprocess.run(["ip", "netns", "del", theirs], check=False)
    podnet.delete_netns(ns_name)
    assert not os.path.exists(path) and not _mounts(path)
    assert ns_name not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def _fail_unshare(flags: int) -> None:
    raise OSError(errno.EPERM, "unshare: Operation not permitted")


@needs_root
@pytest.mark.parametrize(("target", "fake", "want"), [
    ("unshare", _fail_unshare, 'Failed to create a new network namespace "{name}": Operation not permitted'),
    ("_mount", lambda src, dst, flags: errno.EACCES if flags == podnet.MS_BIND else 0,
     "Bind /proc/thread-self/ns/net -> /run/netns/{name} failed: Permission denied"),
])
def test_create_netns_failure_leaves_nothing(ns_name: str, monkeypatch: pytest.MonkeyPatch, target: str,
                                             fake: Callable[..., Any], want: str) -> None:
    """A refused unshare or bind mount says so as ip does, removes the file and returns the thread home."""
    monkeypatch.setattr(threadns if target == "unshare" else podnet, target, fake)
    home = os.readlink("/proc/thread-self/ns/net")

    def create() -> tuple[BaseException, str]:
        try:
            podnet.create_netns(ns_name)
        except OSError as e:
            return e, os.readlink("/proc/thread-self/ns/net")
        raise AssertionError("create_netns did not fail")

    err, after = nsthreads.on_thread(create)
    assert isinstance(err, OSError) and err.strerror == want.format(name=ns_name)
    assert after == home
    assert not os.path.exists(f"/run/netns/{ns_name}") and not _mounts(f"/run/netns/{ns_name}")


@needs_root
def test_create_netns_never_touches_an_existing_namespace(ns_name: str) -> None:
    """A name already taken is EEXIST as ip words it, and the namespace there keeps working."""
    subprocess.run(["ip", "netns", "add", ns_name], check=True)
    with pytest.raises(OSError) as e:
        nsthreads.on_thread(lambda: podnet.create_netns(ns_name))
    assert e.value.errno == errno.EEXIST
    assert e.value.strerror == f'Cannot create namespace file "/run/netns/{ns_name}": File exists'
    assert _ip_json("-n", ns_name, "link")[0]["ifname"] == "lo"


@needs_root
def test_a_thread_that_cannot_go_home_makes_no_namespace(ns_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the way back fails nothing is left and the thread is marked; it makes nothing until it is home."""
    real, home_fd, broken = threadns.setns, threadns.own("net"), [True]

    def setns(fd: int, nstype: int) -> None:
        if fd == home_fd and broken[0]:
            raise OSError(errno.EPERM, "setns: Operation not permitted")
        real(fd, nstype)

    monkeypatch.setattr(threadns, "setns", setns)
    home = os.readlink("/proc/thread-self/ns/net")
    path = f"/run/netns/{ns_name}"

    def scenario() -> list[object]:
        seen: list[object] = []
        for _ in range(2):
            try:
                podnet.create_netns(ns_name)
            except OSError as e:
                seen.append((e.errno, os.path.exists(path), bool(_mounts(path))))
        seen.append(threading.get_ident() in threadns._stranded)
        broken[0] = False
        podnet.create_netns(ns_name)
        seen.append(os.readlink("/proc/thread-self/ns/net") == home)
        return seen

    assert nsthreads.on_thread(scenario) == [(errno.EPERM, False, False), (errno.EPERM, False, False), True, True]
    assert _ip_json("-n", ns_name, "link")[0]["ifname"] == "lo"


@needs_root
def test_the_namespace_directory_becomes_a_shared_mount_once(tmp_path: pathlib.Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """As with ip, a missing directory is made (0755), bound on itself and made shared, and never bound twice."""
    run_dir = str(tmp_path / "netns")
    monkeypatch.setattr(podnet, "NETNS_DIR", run_dir)
    monkeypatch.setattr(podnet, "_run_dir_shared", [])
    try:
        path = nsthreads.on_thread(lambda: podnet.create_netns("one"))
        assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o755
        assert [m[1] for m in _mounts(run_dir)] == ["shared"]
        monkeypatch.setattr(podnet, "_run_dir_shared", [])  # another process: the mount point is there already
        nsthreads.on_thread(lambda: podnet.create_netns("two"))
        assert len(_mounts(run_dir)) == 1
        assert [m[2] for m in _mounts(path)] == ["nsfs"]
        podnet.delete_netns("one")
        podnet.delete_netns("two")
        assert os.listdir(run_dir) == []
    finally:
        for name in ("one", "two"):
            podnet.delete_netns(name)
        while _mounts(run_dir):
            ctypes.CDLL(None, use_errno=True).umount2(run_dir.encode(), podnet.MNT_DETACH)


@needs_root
async def test_add_pod_puts_a_veth_on_the_bridge_up_with_hairpin(tmp_path: pathlib.Path) -> None:
    """eth0 (the pod's MAC) is in the namespace; the host end is on the bridge, up, hairpin on; removal leaves nothing."""
    net = podnet.PodNetwork(str(tmp_path), pod_cidr="10.251.80.0/24", mode="on")
    await net.setup()
    if net.problem:
        pytest.skip(net.problem)
    veth = podnet.veth_name(net.id, "u-5")
    try:
        path = await net.add_pod("u-5", "10.251.80.5")
        ns = os.path.basename(path)
        eth0 = _ip_json("-n", ns, "-d", "link", "show", "eth0")[0]
        assert eth0["address"] == "0a:58:0a:fb:50:05" and eth0["linkinfo"]["info_kind"] == "veth"
        host = _ip_json("-d", "link", "show", veth)[0]
        assert host["master"] == net.bridge and "UP" in host["flags"] and host["operstate"] == "UP"
        assert host["linkinfo"]["info_slave_data"]["hairpin"] is True
        assert host["link_index"] == eth0["ifindex"] and eth0["link_index"] == host["ifindex"]
        assert "0a:58:0a:fb:50:05" not in {link.get("address") for link in _ip_json("link")}
        await net.remove_pod("u-5")
        assert not os.path.exists(path) and not _mounts(path)
        for _ in range(100):
            if not os.path.exists(f"/sys/class/net/{veth}"):
                break
            await asyncio.sleep(0.05)
        assert not os.path.exists(f"/sys/class/net/{veth}")
    finally:
        await net.remove_pod("u-5")
        net.close()
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)


@needs_root
async def test_a_refused_veth_is_a_network_error_and_leaves_no_namespace(tmp_path: pathlib.Path) -> None:
    """A host end name already taken fails the sandbox as ip words it; the namespace goes, the other link stays."""
    net = podnet.PodNetwork(str(tmp_path), pod_cidr="10.251.81.0/24", mode="on")
    await net.setup()
    if net.problem:
        pytest.skip(net.problem)
    veth = podnet.veth_name(net.id, "u-6")
    subprocess.run(["ip", "link", "add", veth, "type", "bridge"], check=True)
    try:
        with pytest.raises(podnet.NetworkError) as e:
            await net.add_pod("u-6", "10.251.81.6")
        ns = podnet.netns_name(net.id, "u-6")
        assert str(e.value) == (f'failed to set up sandbox network for pod "u-6": link add {veth} master '
                                f"{net.bridge} up type veth peer name eth0 address 0a:58:0a:fb:51:06 netns {ns}: "
                                "RTNETLINK answers: File exists")
        assert not os.path.exists(f"/run/netns/{ns}") and net.netns_path("u-6") is None
        assert _ip_json("-d", "link", "show", veth)[0]["linkinfo"]["info_kind"] == "bridge"
    finally:
        subprocess.run(["ip", "link", "del", veth], capture_output=True, check=False)
        net.close()
        subprocess.run(["ip", "link", "del", net.bridge], capture_output=True, check=False)
