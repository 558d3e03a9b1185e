"""The hand-packed NETLINK_ROUTE client: message bytes, ACK parsing, and real round trips in a namespace."""

from __future__ import annotations

import errno
import json
import os
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from pocketkube.base import threadns
from pocketkube.network import rtnetlink
from tests.network import nsthreads

H = bytes.fromhex
little = pytest.mark.skipif(sys.byteorder != "little", reason="expected bytes are those of a little-endian host")


@little
@pytest.mark.parametrize(("got", "want"), [
    # nlmsghdr(len 32, RTM_NEWLINK, REQUEST|ACK, seq 1, pid 0) + ifinfomsg(AF_UNSPEC, index 2, IFF_UP, change IFF_UP)
    (rtnetlink.link_up(2, seq=1),
     H("20000000" "1000" "0500" "01000000" "00000000" "00" "00" "0000" "02000000" "01000000" "01000000")),
    # nlmsghdr(len 40, RTM_NEWADDR, REQUEST|ACK|EXCL|CREATE, seq 7) + ifaddrmsg(AF_INET, /24, 0, universe, index 3)
    # + IFA_LOCAL 10.0.0.5 + IFA_ADDRESS 10.0.0.5
    (rtnetlink.addr_add(3, "10.0.0.5", 24, seq=7),
     H("28000000" "1400" "0506" "07000000" "00000000" "02" "18" "00" "00" "03000000"
       "0800" "0200" "0a000005" "0800" "0100" "0a000005")),
    # nlmsghdr(len 44, RTM_NEWROUTE, REQUEST|ACK|EXCL|CREATE, seq 9) + rtmsg(AF_INET, dst_len 0, table main,
    # RTPROT_BOOT, universe, RTN_UNICAST) + RTA_GATEWAY 10.0.0.1 + RTA_OIF 3
    (rtnetlink.default_route("10.0.0.1", 3, seq=9),
     H("2c000000" "1800" "0506" "09000000" "00000000" "02" "00" "00" "00" "fe" "03" "00" "01" "00000000"
       "0800" "0500" "0a000001" "0800" "0400" "03000000")),
    # An attribute is padded to 4 bytes; its length field does not count the padding.
    (rtnetlink.rtattr(1, b"abc"), H("0700" "0100" "616263" "00")),
    (rtnetlink.rtattr(3, b""), H("0400" "0300")),
])
def test_messages_pack_like_the_kernel_structs(got: bytes, want: bytes) -> None:
    """Each request is laid out exactly as nlmsghdr/ifinfomsg/ifaddrmsg/rtmsg/rtattr in the kernel headers."""
    assert got.hex() == want.hex()


# What iproute2 6.1 sent (strace -e write=3), seq and indexes as they were: `ip link add pkvtst0 master pkbtst0 up
# type veth peer name eth0 address 0a:58:0a:00:00:05 netns pktst-a` (bridge index 0x8738, namespace fd 4) ...
IP_VETH_ADD = H("78000000" "1000" "0506" "5c01046b" "00000000" "00" "00" "0000" "00000000" "01000000" "01000000"
                "0800" "0a00" "38870000"  # IFLA_MASTER
                "0c00" "0300" "706b76747374300" "0"  # IFLA_IFNAME "pkvtst0\0"
                "4400" "1200"  # IFLA_LINKINFO, no NLA_F_NESTED
                "0800" "0100" "76657468"  # IFLA_INFO_KIND "veth", no NUL
                "3800" "0200" "3400" "0100"  # IFLA_INFO_DATA { VETH_INFO_PEER { ifinfomsg + attributes } }
                "00" "00" "0000" "00000000" "00000000" "00000000"
                "0a00" "0100" "0a580a000005" "0000"  # IFLA_ADDRESS
                "0800" "1c00" "04000000"  # IFLA_NET_NS_FD
                "0900" "0300" "6574683000" "000000")  # IFLA_IFNAME "eth0\0"
# ... and `ip link set pkvtst0 type bridge_slave hairpin on` (the veth's index 0x8739).
IP_HAIRPIN_ON = H("40000000" "1000" "0500" "5c01046b" "00000000" "00" "00" "0000" "39870000" "00000000" "00000000"
                  "2000" "1200" "1000" "0100" "6272696467655f736c617665"  # IFLA_INFO_KIND "bridge_slave"
                  "0c00" "0500" "0500" "0400" "01" "000000")  # IFLA_INFO_SLAVE_DATA { IFLA_BRPORT_MODE 1 }


@little
@pytest.mark.parametrize(("got", "want"), [
    (rtnetlink.veth_add("pkvtst0", peer="eth0", peer_mac="0a:58:0a:00:00:05", netns_fd=4, master=0x8738, up=True,
                        seq=0x6b04015c), IP_VETH_ADD),
    # Without master and up: the same request less IFLA_MASTER and with ifi_flags/ifi_change 0.
    (rtnetlink.veth_add("pkvtst0", peer="eth0", peer_mac="0a:58:0a:00:00:05", netns_fd=4, seq=0x6b04015c),
     H("70000000") + IP_VETH_ADD[4:24] + H("00000000" "00000000") + IP_VETH_ADD[40:]),
    (rtnetlink.hairpin_on(0x8739, seq=0x6b04015c), IP_HAIRPIN_ON),
])
def test_link_requests_are_what_ip_sends(got: bytes, want: bytes) -> None:
    """The veth pair and hairpin requests are byte for byte those iproute2 sends for the same commands."""
    assert got.hex() == want.hex()


@pytest.mark.parametrize(("name", "peer", "mac"), [
    ("", "eth0", "0a:58:0a:00:00:05"), ("a" * 16, "eth0", "0a:58:0a:00:00:05"), ("a/b", "eth0", "0a:58:0a:00:00:05"),
    ("veth0", "", "0a:58:0a:00:00:05"), ("veth0", "eth0", "0a:58:0a:00:00"), ("veth0", "eth0", "zz:58:0a:00:00:05"),
])
def test_veth_add_refuses_bad_names_and_macs(name: str, peer: str, mac: str) -> None:
    """An interface name the kernel would refuse or a MAC that is not 6 bytes is a ValueError before sending."""
    with pytest.raises(ValueError):
        rtnetlink.veth_add(name, peer=peer, peer_mac=mac, netns_fd=4, seq=1)


@pytest.mark.parametrize(("index", "address", "prefix"), [(1, "10.0.0.300", 24), (1, "fd00::1", 64), (1, "10.0.0.1", 33)])
def test_addr_add_refuses_what_is_not_an_ipv4_prefix(index: int, address: str, prefix: int) -> None:
    """A bad IPv4 address or prefix length is a ValueError before anything reaches the kernel."""
    with pytest.raises(ValueError):
        rtnetlink.addr_add(index, address, prefix, seq=1)


def _err(seq: int, code: int, *, size: int | None = None) -> bytes:
    body = struct.pack("=i", code) + rtnetlink.NLMSGHDR.pack(16, 0, 0, seq, 0)
    return rtnetlink.NLMSGHDR.pack(size or 16 + len(body), rtnetlink.NLMSG_ERROR, 0, seq, 0) + body


@pytest.mark.parametrize(("reply", "seq", "want"), [
    (_err(7, 0), 7, 0),
    (_err(7, -errno.EEXIST), 7, errno.EEXIST),
    (_err(6, -errno.EEXIST), 7, None),
    (rtnetlink.NLMSGHDR.pack(20, 16, 0, 7, 0) + b"\0" * 4 + _err(7, -errno.ENETUNREACH), 7, errno.ENETUNREACH),
    (b"", 7, None),
])
def test_ack_error_finds_the_answer_to_the_request(reply: bytes, seq: int, want: int | None) -> None:
    """The NLMSG_ERROR carrying the request's sequence number gives its errno (0 = done); others are skipped."""
    assert rtnetlink.ack_error(reply, seq=seq) == want


@pytest.mark.parametrize("reply", [_err(7, 0, size=400), _err(7, 0, size=18)[:18], rtnetlink.NLMSGHDR.pack(8, 2, 0, 7, 0)])
def test_ack_error_refuses_a_truncated_reply(reply: bytes) -> None:
    """A reply shorter than it claims is a protocol error, never an index error or a silent success."""
    with pytest.raises(OSError) as e:
        rtnetlink.ack_error(reply, seq=7)
    assert e.value.errno == errno.EPROTO


needs_root = nsthreads.needs_root


def _ip_json(*args: str) -> list[dict[str, Any]]:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True).stdout or "[]")


@pytest.fixture
def netns() -> Iterator[str]:
    """A fresh network namespace (made by `ip`) with a veth pair veth0 (down) + peer0 (up) in it."""
    name = f"pk-rtnl-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "veth0", "type", "veth", "peer", "name", "peer0"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "peer0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@needs_root
def test_configures_a_namespace_as_ip_shows_it(netns: str) -> None:
    """Link up, address and default route sent over a socket opened in the namespace are what `ip` reads back."""
    own = os.readlink("/proc/thread-self/ns/net")

    def configure() -> str:
        route, (lo, veth) = rtnetlink.open_in(f"/run/netns/{netns}", ("lo", "veth0"))
        home = os.readlink("/proc/thread-self/ns/net")
        with route:
            route.link_up(lo, name="lo")
            route.addr_add(veth, "10.252.9.5", 24, name="veth0")
            route.link_up(veth, name="veth0")
            route.default_route("10.252.9.1", veth, name="veth0")
        return home

    assert nsthreads.on_thread(configure) == own
    links = {link["ifname"]: link for link in _ip_json("-n", netns, "link")}
    assert "UP" in links["lo"]["flags"] and "UP" in links["veth0"]["flags"]
    addrs = [(a["local"], a["prefixlen"], a["scope"]) for link in _ip_json("-n", netns, "-4", "addr", "show", "dev", "veth0")
             for a in link["addr_info"]]
    assert addrs == [("10.252.9.5", 24, "global")]
    routes = _ip_json("-n", netns, "-4", "route", "show", "default")
    assert routes == [{"dst": "default", "gateway": "10.252.9.1", "dev": "veth0", "flags": []}]
    # Nothing of it leaked into the host's namespace.
    assert not _ip_json("-4", "addr", "show", "to", "10.252.9.5")


@needs_root
def test_refusals_are_oserrors_saying_what_failed(netns: str) -> None:
    """An address added twice is EEXIST and a missing link ENODEV, each with a message as `ip` words it."""
    def twice() -> None:
        route, (veth,) = rtnetlink.open_in(f"/run/netns/{netns}", ("veth0",))
        with route:
            route.addr_add(veth, "10.252.9.5", 24, name="veth0")
            route.addr_add(veth, "10.252.9.5", 24, name="veth0")

    with pytest.raises(OSError) as e:
        nsthreads.on_thread(twice)
    assert e.value.errno == errno.EEXIST
    assert e.value.strerror == "addr add 10.252.9.5/24 dev veth0: RTNETLINK answers: File exists"
    with pytest.raises(OSError) as e:
        nsthreads.on_thread(lambda: rtnetlink.open_in(f"/run/netns/{netns}", ("eth9",)))
    assert e.value.errno == errno.ENODEV and e.value.strerror == 'Cannot find device "eth9"'
    with pytest.raises(FileNotFoundError):
        nsthreads.on_thread(lambda: rtnetlink.open_in("/run/netns/pk-rtnl-test-missing", ("lo",)))


@needs_root
def test_a_thread_that_cannot_go_home_is_never_used_inside(netns: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """When the way back fails the call raises, and the thread's next use retries going home before anything."""
    real = threadns.setns
    home_fd = threadns.own("net")
    broken = [True]

    def setns(fd: int, nstype: int) -> None:
        if fd == home_fd and broken[0]:
            raise OSError(errno.EPERM, "setns: Operation not permitted")
        real(fd, nstype)

    monkeypatch.setattr(threadns, "setns", setns)
    own = os.readlink("/proc/thread-self/ns/net")

    def scenario() -> list[object]:
        seen: list[object] = []
        for _ in range(2):
            try:
                rtnetlink.open_in(f"/run/netns/{netns}", ("lo",))
            except OSError as e:
                seen.append(e.errno)
        seen.append(threading.get_ident() in threadns._stranded)
        broken[0] = False
        route, _ = rtnetlink.open_in(f"/run/netns/{netns}", ("lo",))
        route.close()
        seen.append(threading.get_ident() in threadns._stranded)
        seen.append(os.readlink("/proc/thread-self/ns/net") == own)
        return seen

    assert nsthreads.on_thread(scenario) == [errno.EPERM, errno.EPERM, True, False, True]


@needs_root
def test_a_refused_veth_pair_is_undone_whole(netns: str) -> None:
    """A veth request the kernel refuses (no such master) says what failed and leaves neither end behind."""
    name = f"pkvt{uuid.uuid4().hex[:8]}"
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    try:
        with rtnetlink.Route() as route, pytest.raises(OSError) as e:
            route.veth_add(name, peer="eth0", peer_mac="0a:58:0a:00:00:09", netns=netns, netns_fd=fd,
                           master="nobridge", master_index=0x7FFFFFF0)
    finally:
        os.close(fd)
    assert e.value.errno == errno.EINVAL
    assert e.value.strerror == (f"link add {name} master nobridge up type veth peer name eth0 address "
                                f"0a:58:0a:00:00:09 netns {netns}: RTNETLINK answers: Invalid argument")
    assert not os.path.exists(f"/sys/class/net/{name}")
    assert "eth0" not in {link["ifname"] for link in _ip_json("-n", netns, "link")}
