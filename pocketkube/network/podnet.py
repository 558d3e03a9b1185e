"""Pod network of one node: a Linux bridge on the node's pod CIDR and a network namespace + veth per pod."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import ipaddress
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
from typing import Any

from pocketkube.base import threadns
from pocketkube.network import rtnetlink

log = logging.getLogger("pocketkube.network.podnet")

NETNS_DIR = "/run/netns"
# Kubernetes' usual defaults; `pocketkube up --cluster-cidr/--service-cidr` change them.
CLUSTER_CIDR = "10.244.0.0/16"
SERVICE_CIDR = "10.96.0.0/12"
NODE_PREFIX = 24
ANNOTATION = "pocketkube.io/pod-network"
MODES = ("auto", "on", "off")


# Run beside the agent: when its stdin ends (the agent exited, even by SIGKILL) it removes what the agent
# made in the kernel: argv[1] is a netns name prefix, argv[2] a bridge, argv[3] an nftables table ("" = none).
JANITOR = """
import os, subprocess, sys
signal = __import__("signal")
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
sys.stdin.read()
prefix, bridge, table = sys.argv[1:4]
run = lambda *a: subprocess.run(a, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
if prefix:
    for name in os.listdir("/run/netns") if os.path.isdir("/run/netns") else []:
        if name.startswith(prefix):
            run("ip", "netns", "del", name)
if bridge and os.path.exists("/sys/class/net/" + bridge):
    run("ip", "link", "del", bridge)
if table:
    run("nft", "delete", "table", "ip", table)
"""


class Janitor:
    """A watchdog process that removes kernel state (netns, bridge, nftables table) once this process is gone."""

    def __init__(self, *, netns_prefix: str = "", bridge: str = "", table: str = "") -> None:
        self.args = [netns_prefix, bridge, table]
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        if self._proc is None:
            with contextlib.suppress(OSError):
                self._proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", JANITOR, *self.args],
                                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                              stderr=subprocess.DEVNULL, start_new_session=True)

    def finish(self) -> None:
        """Clean up now and wait for it (blocking: it must not be cut short by a cancellation)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)


class NetworkError(Exception):
    """A pod's sandbox network could not be set up (the kubelet's FailedCreatePodSandBox)."""


def node_cidr(cluster_cidr: str, index: int, *, prefix: int = NODE_PREFIX) -> str:
    """The index-th /24 (node CIDR) carved out of the cluster CIDR, as the node IPAM controller hands them out."""
    net = ipaddress.ip_network(cluster_cidr, strict=False)
    if index < 0:
        raise ValueError(f"a node index is not negative, got {index}")
    if net.prefixlen > prefix:
        raise ValueError(f"cluster CIDR {cluster_cidr} is smaller than a /{prefix} node CIDR")
    subnets = net.subnets(new_prefix=prefix)
    for i, sub in enumerate(subnets):
        if i == index:
            return str(sub)
    raise ValueError(f"no node CIDR left in {cluster_cidr} for node index {index}")


def node_id(data_dir: str) -> str:
    """A short id of one node agent (its data dir), so that several clusters on a machine never share names."""
    return hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:8]


def bridge_name(nid: str) -> str:
    return f"{BRIDGE_PREFIX}{nid}"


def netns_name(nid: str, uid: str) -> str:
    return f"pk-{nid}-{uid}"


def veth_name(nid: str, uid: str) -> str:
    """The host end of a pod's veth pair (interface names stop at 15 characters)."""
    return "pkv" + hashlib.sha256(f"{nid}/{uid}".encode()).hexdigest()[:11]


def pod_mac(ip: str) -> str:
    """The pod's eth0 MAC, derived from its IP: a reused IP keeps its MAC, so no neighbour cache goes stale."""
    return "0a:58:" + ":".join(f"{b:02x}" for b in ipaddress.IPv4Address(ip).packed)


def overlaps(cidr: str, routes: list[dict[str, object]], *, own: str) -> str:
    """The device of a route (not on our own bridge) overlapping cidr, or "" when cidr is free on this host."""
    net = ipaddress.ip_network(cidr, strict=False)
    for r in routes:
        dst, dev = str(r.get("dst") or ""), str(r.get("dev") or "")
        if dst in ("", "default") or dev == own:
            continue
        try:
            other = ipaddress.ip_network(dst, strict=False)
        except ValueError:
            continue
        if other.version == net.version and other.overlaps(net):
            return f"{dev} ({dst})"
    return ""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20, check=False)


def _must(*args: str) -> None:
    cp = _ip(*args)
    if cp.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {(cp.stderr or cp.stdout).strip()}")


MNT_DETACH = 2
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SHARED = 0x100000


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _mount(source: str, target: str, flags: int) -> int:
    """mount(2) with no file system type or data: 0, or the errno."""
    if _libc().mount(source.encode(), target.encode(), b"none", flags, None) == 0:
        return 0
    return ctypes.get_errno()


_run_dir_lock = threading.Lock()
_run_dir_shared: list[bool] = []


def _share_run_dir() -> None:
    """Make NETNS_DIR a shared mount point, as `ip netns add` does: a namespace unmounted in one mount namespace
    is then unmounted in all, so it is freed sooner. Once per process, under ip's flock of the directory, so
    this and concurrent `ip` processes never stack the bind mount twice."""
    with _run_dir_lock:
        if _run_dir_shared:
            return
        os.makedirs(NETNS_DIR, mode=0o755, exist_ok=True)
        lock = os.open(NETNS_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            with contextlib.suppress(OSError):  # ip goes on without the lock too
                fcntl.flock(lock, fcntl.LOCK_EX)
            made = False
            while err := _mount("", NETNS_DIR, MS_SHARED | MS_REC):
                if err != errno.EINVAL or made:
                    raise OSError(err, f"mount --make-shared {NETNS_DIR} failed: {os.strerror(err)}")
                # EINVAL: not a mount point yet, so make it one by binding it on itself.
                if err := _mount(NETNS_DIR, NETNS_DIR, MS_BIND | MS_REC):
                    raise OSError(err, f"mount --bind {NETNS_DIR} {NETNS_DIR} failed: {os.strerror(err)}")
                made = True
        finally:
            os.close(lock)  # which releases the flock
        _run_dir_shared.append(True)


def create_netns(name: str) -> str:
    """What `ip netns add NAME` does, without its process; returns the namespace's path.

    The calling thread makes a new network namespace of its own (unshare is per thread for it), binds it
    onto /run/netns/NAME so that it outlives the thread's stay, and goes back home. A thread that cannot go
    back raises and stays marked (base/threadns.py): its next netns work first retries the way home. On a
    failure nothing is left: no file, no mount."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f'Invalid netns name "{name}"')
    threadns.ensure_home()
    # Opened before the unshare: /proc/self is the main thread's, which may be this very thread.
    threadns.own("net")
    _share_run_dir()
    path = os.path.join(NETNS_DIR, name)
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0))
    except OSError as e:
        raise OSError(e.errno, f'Cannot create namespace file "{path}": {e.strerror}') from e
    try:
        try:
            threadns.unshare(threadns.CLONE_NEWNET)
        except OSError as e:
            raise OSError(e.errno, f'Failed to create a new network namespace "{name}": '
                                   f"{os.strerror(e.errno or 0)}") from e
        try:
            # The thread's own namespace: /proc/self/ns/net is the main thread's.
            if err := _mount("/proc/thread-self/ns/net", path, MS_BIND):
                raise OSError(err, f"Bind /proc/thread-self/ns/net -> {path} failed: {os.strerror(err)}")
        finally:
            threadns.go_home(("net",))
    except BaseException:
        with contextlib.suppress(OSError):
            delete_netns(name)
        raise
    return path


def delete_netns(name: str) -> None:
    """What `ip netns del NAME` does, without its process: detach the namespace's bind mount, remove the file.

    The namespace (and the pod's veth pair with it) goes away once nothing else holds it. Not mounted or
    not there is fine; any other failure is an OSError."""
    path = os.path.join(NETNS_DIR, name)
    if _libc().umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise OSError(err, f"cannot remove namespace {name}: umount2: {os.strerror(err)}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _sysctl(path: str, value: str) -> None:
    with open(os.path.join("/proc/sys", path), "w") as f:
        f.write(value)


CLONE_NEWNET = 0x40000000
BRIDGE_PREFIX = "pkb"


def routed_to_pod(address: str, *, route_table: str = "/proc/net/route") -> bool:
    """Whether address lies on a pod bridge of this host (a real pod IP), so the host can dial it directly."""
    try:
        ip = int(ipaddress.IPv4Address(address))
        with open(route_table) as f:
            lines = f.read().splitlines()[1:]
    except (ValueError, OSError):
        return False
    for line in lines:
        fields = line.split()
        if len(fields) < 8 or not fields[0].startswith(BRIDGE_PREFIX):
            continue
        # /proc/net/route prints addresses as little-endian hex.
        dest, mask = (int.from_bytes(bytes.fromhex(x), "little") for x in (fields[1], fields[7]))
        if ip & mask == dest:
            return True
    return False


def find_netns(uid: str) -> str | None:
    """The /run/netns path of the pod with this uid, whichever node agent made it (None: it has none)."""
    try:
        names = os.listdir(NETNS_DIR)
    except OSError:
        return None
    return next((os.path.join(NETNS_DIR, n) for n in names if n.startswith("pk-") and n.endswith("-" + uid)), None)


def connect_in(netns: str, host: str, port: int, *, timeout: float) -> socket.socket:
    """A TCP socket connected to host:port as seen from inside a network namespace (e.g. a pod's localhost).

    setns() switches only the calling thread, so a short-lived thread of its own does it; the socket keeps
    the namespace it was made in."""
    box: list[socket.socket | BaseException] = []

    def work() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        try:
            with open(netns) as target:
                if libc.setns(target.fileno(), CLONE_NEWNET) != 0:
                    raise OSError(ctypes.get_errno(), f"setns {netns}: {os.strerror(ctypes.get_errno())}")
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect((host, port))
            except BaseException:
                sock.close()
                raise
            sock.setblocking(False)
            box.append(sock)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            box.append(e)

    t = threading.Thread(target=work, name="netns-connect", daemon=True)
    t.start()
    t.join()
    got = box[0] if box else OSError("connecting inside the pod's network namespace failed")
    if isinstance(got, BaseException):
        raise got
    return got


class PodNetwork:
    """The bridge and pod namespaces of one node; `problem` says why pods keep the host network instead."""

    def __init__(self, data_dir: str, *, pod_cidr: str, mode: str = "auto") -> None:
        if mode not in MODES:
            raise ValueError(f"pod network mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.id = node_id(data_dir)
        self.cidr = ipaddress.ip_network(pod_cidr, strict=False)
        self.gateway = str(self.cidr.network_address + 1)
        self.bridge = bridge_name(self.id)
        self.mode = mode
        self.problem = "" if mode != "off" else "pod networking is turned off (--pod-network off)"
        self.started = False
        self._pods: dict[str, str] = {}
        self._janitor = Janitor(netns_prefix=netns_name(self.id, ""), bridge=self.bridge)

    @property
    def enabled(self) -> bool:
        return self.started and not self.problem

    def describe(self) -> str:
        """The Node annotation's value: the bridge in use, or the limit pods run under."""
        if self.enabled:
            return f"bridge {self.bridge} {self.gateway}/{self.cidr.prefixlen}"
        return f"host network: {self.problem}" if self.problem else "not started"

    def netns_path(self, uid: str) -> str | None:
        """/run/netns/<name> of a pod that has its own namespace, else None (it shares the host's)."""
        name = self._pods.get(uid)
        return os.path.join(NETNS_DIR, name) if name else None

    async def setup(self) -> None:
        """Check what the host allows, clean a crashed agent's leftovers, create the bridge."""
        if self.started:
            return
        self.started = True
        if self.problem:
            return
        self.problem = await asyncio.to_thread(self._setup)
        if self.problem:
            log.warning("pods keep the host network: %s", self.problem)

    def _setup(self) -> str:
        if os.geteuid() != 0:
            return "pod network namespaces need root; pods share the host network and its IP"
        if shutil.which("ip") is None:
            return "the ip command (iproute2) is not installed; pods share the host network and its IP"
        self._clean()
        self._janitor.start()
        try:
            routes = json.loads(_ip("-j", "-4", "route", "show").stdout or "[]")
        except ValueError:
            routes = []
        clash = overlaps(str(self.cidr), routes, own=self.bridge)
        if clash:
            return (f"the pod CIDR {self.cidr} is already routed via {clash}, probably another cluster; "
                    "choose another one with --cluster-cidr")
        try:
            _must("link", "add", self.bridge, "type", "bridge")
            _must("addr", "add", f"{self.gateway}/{self.cidr.prefixlen}", "dev", self.bridge)
            _must("link", "set", self.bridge, "up")
            _sysctl("net/ipv4/ip_forward", "1")
            # ClusterIPs whose endpoints are on the host's loopback (the API server) are DNATed there.
            _sysctl(f"net/ipv4/conf/{self.bridge}/route_localnet", "1")
        except (NetworkError, OSError) as e:
            self._clean()
            return f"cannot create the pod bridge: {e}"
        return ""

    def _clean(self) -> None:
        """Remove this node's namespaces (their veths go with them) and its bridge, whoever made them."""
        prefix = netns_name(self.id, "")
        try:
            names = os.listdir(NETNS_DIR)
        except OSError:
            names = []
        for name in names:
            if name.startswith(prefix):
                try:
                    delete_netns(name)
                except OSError as e:
                    log.warning("%s", e)
        if os.path.exists(f"/sys/class/net/{self.bridge}"):
            _ip("link", "del", self.bridge)

    async def add_pod(self, uid: str, ip: str) -> str:
        """Give a pod its namespace with eth0 = ip on the bridge; returns the namespace's path."""
        return await asyncio.to_thread(self.add, uid, ip)

    def add(self, uid: str, ip: str) -> str:
        """add_pod, blocking: for a caller already in a thread with more of the sandbox to set up."""
        if not self.enabled:
            raise NetworkError(f"pod networking is not available: {self.problem}")
        self._add(uid, ip)
        path = self.netns_path(uid)
        assert path is not None
        return path

    def _add(self, uid: str, ip: str) -> None:
        ns, veth = netns_name(self.id, uid), veth_name(self.id, uid)
        try:
            if os.path.exists(os.path.join(NETNS_DIR, ns)):
                delete_netns(ns)  # a half-made sandbox of an earlier try
            try:
                path = create_netns(ns)
            except OSError as e:
                raise NetworkError(e.strerror or str(e)) from e
            self._veth(path, ns, veth, ip)
            self._configure(ns, ip)
        except (NetworkError, OSError) as e:
            with contextlib.suppress(OSError):
                delete_netns(ns)
            raise NetworkError(f'failed to set up sandbox network for pod "{uid}": {e}') from e
        self._pods[uid] = ns

    def _veth(self, path: str, ns: str, veth: str, ip: str) -> None:
        """From home: the veth pair with eth0 in the pod's namespace and the host end up on the bridge.

        Two netlink requests from this process, instead of an `ip -batch` process (~4.6 ms of CPU a pod)."""
        try:
            threadns.ensure_home()  # the host end is made in the namespace the socket is opened in
            bridge = rtnetlink.index(self.bridge)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                with rtnetlink.Route() as route:
                    route.veth_add(veth, peer="eth0", peer_mac=pod_mac(ip), netns=ns, netns_fd=fd,
                                   master=self.bridge, master_index=bridge)
                    # A pod reaching itself through a Service IP comes back out of the port it went in by.
                    route.hairpin_on(rtnetlink.index(veth), name=veth)
            finally:
                os.close(fd)
        except OSError as e:
            raise NetworkError(e.strerror or str(e)) from e

    def _configure(self, ns: str, ip: str) -> None:
        """Inside the pod's namespace: lo and eth0 up, ip on eth0, the default route via the bridge.

        Four netlink requests from this process over a socket opened in the namespace, instead of an
        `ip -n NS -batch` process."""
        try:
            route, (lo, eth0) = rtnetlink.open_in(os.path.join(NETNS_DIR, ns), ("lo", "eth0"))
            with route:
                route.link_up(lo, name="lo")
                route.addr_add(eth0, ip, self.cidr.prefixlen, name="eth0")
                route.link_up(eth0, name="eth0")
                route.default_route(self.gateway, eth0, name="eth0")
        except OSError as e:
            raise NetworkError(f"netns {ns}: {e.strerror or e}") from e

    async def remove_pod(self, uid: str) -> None:
        """Delete a pod's namespace; its veth pair goes with it."""
        ns = self._pods.pop(uid, None)
        if ns is not None:
            # In a thread: unmounting waits for an RCU grace period, which must not stall the event loop.
            try:
                await asyncio.to_thread(delete_netns, ns)
            except OSError as e:
                log.warning("%s", e)

    def close(self) -> None:
        """Remove every namespace of this node and the bridge, now (blocking, so no cancellation cuts it short)."""
        self._pods.clear()
        self._janitor.finish()
        self.started = False
