"""A pod's sandbox on this node: its IPs, network namespace, hostname, and the resolv.conf and hosts files formed for it."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pocketkube.network import etchosts, podnet, resolvconf
from pocketkube.node import runtime

log = logging.getLogger("pocketkube.node.sandbox")

RESOLV_CONF = "/etc/resolv.conf"
HOSTS = "/etc/hosts"
SHM = "/dev/shm"


class Sandboxes:
    """The pod sandboxes of one process runtime: IPs from the node's pod CIDR, network namespaces, resolv.conf files."""

    def __init__(self, *, pod_cidr: str, host_ip: str, run_dir: Callable[[str], str],
                 network: podnet.PodNetwork | None = None, dns: resolvconf.Settings | None = None) -> None:
        self.host_ip = host_ip
        # The node's pod network: each pod in its own namespace on the bridge (None: pods share the host's).
        self.network = network
        # The kubelet's cluster DNS settings, for each pod's /etc/resolv.conf (None: pods see the host's file).
        self.dns = dns
        self.ips = runtime.IPAllocator(pod_cidr)
        # A pod's directory in the node's state root, where its resolv.conf goes.
        self._run_dir = run_dir
        # Per pod: its resolv.conf, when one was formed, and its hosts file.
        self._resolv: dict[str, str] = {}
        self._hosts: dict[str, str] = {}
        # Whether pods get a /dev/shm of their own, from the run directory (only when that is on tmpfs).
        self.private_shm = False

    def ips_for(self, pod: Mapping[str, Any]) -> list[str]:
        """The IPs a new sandbox gets: the host's, the one its status already reports (if still free), or a new one."""
        spec = pod.get("spec") or {}
        if spec.get("hostNetwork") or (self.network and not self.network.enabled):
            return [self.host_ip]
        ip = str((pod.get("status") or {}).get("podIP") or "")
        return [ip if ip and self.ips.reserve(ip) else self.ips.allocate()]

    def own_netns(self, pod: Mapping[str, Any]) -> bool:
        """Whether the pod gets a network namespace of its own."""
        return self.network is not None and self.network.enabled and not (pod.get("spec") or {}).get("hostNetwork")

    def netns_path(self, uid: str) -> str | None:
        """The pod's network namespace, when it has one."""
        return self.network.netns_path(uid) if self.network is not None else None

    def create(self, pod: Mapping[str, Any], uid: str, ip: str, *, ips: Sequence[str] = ()) -> list[runtime.Event]:
        """In a thread: the pod's network namespace with ip (none when ip is ""; NetworkError when it fails), its
        resolv.conf and its hosts file naming ips; the events the resolv.conf warrants."""
        if ip and self.network is not None:
            self.network.add(uid, ip)
        self._write_hosts(pod, uid, ips or ([ip] if ip else []))
        self._make_shm(pod, uid)
        return self._write_resolv(pod, uid)

    def resolv_file(self, uid: str) -> str | None:
        """The resolv.conf formed for the pod (None: it sees the host's)."""
        return self._resolv.get(uid)

    def hosts_file(self, uid: str) -> str | None:
        """The hosts file the kubelet manages for the pod (None: it sees the host's)."""
        return self._hosts.get(uid)

    def shm_dir(self, pod: Mapping[str, Any], uid: str) -> str | None:
        """The pod's own /dev/shm, shared by its containers as the sandbox's is (None: they see the host's)."""
        if not self.private_shm or (pod.get("spec") or {}).get("hostIPC"):
            return None
        return os.path.join(self._run_dir(uid), "shm")

    def hostname(self, pod: Mapping[str, Any]) -> str | None:
        """The hostname of the pod's own UTS namespace (None: a host-network pod shares the node's)."""
        if (pod.get("spec") or {}).get("hostNetwork"):
            return None
        return etchosts.uts_hostname(pod, cluster_domain=self.cluster_domain()) or None

    def cluster_domain(self) -> str:
        """The kubelet's --cluster-domain."""
        return self.dns.cluster_domain if self.dns is not None else resolvconf.CLUSTER_DOMAIN

    def with_ips(self, pod: Mapping[str, Any], ips: list[str]) -> Mapping[str, Any]:
        """The pod with the IPs its status will report: the first start comes before the first status write,
        and the kubelet takes the downward API's status.podIP/hostIP from the sandbox and the node."""
        status = {**(pod.get("status") or {}), "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}]}
        if ips:
            status["podIP"], status["podIPs"] = ips[0], [{"ip": ip} for ip in ips]
        return {**pod, "status": status}

    def forget(self, uid: str) -> None:
        self._resolv.pop(uid, None)
        self._hosts.pop(uid, None)

    async def remove(self, uid: str, ips: list[str]) -> None:
        """Give the pod's IPs back and remove its network namespace."""
        for ip in ips:
            self.ips.release(ip)
        if self.network is not None:
            await self.network.remove_pod(uid)

    def _write_resolv(self, pod: Mapping[str, Any], uid: str) -> list[runtime.Event]:
        """Form the pod's resolv.conf in its run directory, as the kubelet does per dnsPolicy; the events it
        warrants."""
        if self.dns is None or resolvconf.uses_host_file(pod):
            return []
        try:
            formed, path = resolvconf.pod_file(pod, self.dns, self._run_dir(uid))
        except OSError as e:
            log.warning("cannot write the resolv.conf of %s: %s", runtime.pod_ref(pod), e)
            return []
        self._resolv[uid] = path
        return [runtime.Event(runtime.WARNING, reason, message) for reason, message in formed.events]

    def _write_hosts(self, pod: Mapping[str, Any], uid: str, ips: Sequence[str]) -> None:
        """Write the pod's hosts file in its run directory, as the kubelet manages /etc/hosts for every pod."""
        node_hosts = ""
        if (pod.get("spec") or {}).get("hostNetwork"):
            try:
                with open(HOSTS, encoding="utf-8", errors="replace") as f:
                    node_hosts = f.read(1 << 20)
            except OSError:
                node_hosts = ""
        content = etchosts.render(pod, ips, cluster_domain=self.cluster_domain(), node_hosts=node_hosts)
        try:
            self._hosts[uid] = etchosts.write(self._run_dir(uid), content)
        except OSError as e:
            log.warning("cannot write the hosts file of %s: %s", runtime.pod_ref(pod), e)

    def _make_shm(self, pod: Mapping[str, Any], uid: str) -> None:
        """Make the pod's /dev/shm (sticky and open to all, as the kernel's is), unless it shares the host's IPC."""
        path = self.shm_dir(pod, uid)
        if path is None:
            return
        try:
            os.makedirs(path, exist_ok=True)
            os.chmod(path, 0o1777)
        except OSError as e:
            log.warning("cannot make the /dev/shm of %s: %s", runtime.pod_ref(pod), e)
