"""NetworkPolicy enforcement: watches policies, pods and namespaces and keeps an nftables table in step."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import subprocess
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, informer, rest
from pocketkube.network import dnsbootstrap, podnet, policyrules
from pocketkube.node import nftsync, proxy

log = logging.getLogger("pocketkube.node.netpolicy")

# Its own identity, as network plugins run policy agents (calico-node, cilium-agent) under their own
# ClusterRole: kube-proxy's system:node-proxier does not read NetworkPolicies.
USER = "system:pocketkube-network-policy"
USER_AGENT = "network-policy/v1.32.0 (linux/amd64) pocketkube"
ANNOTATION = "pocketkube.io/network-policy"
POLICIES = rest.GVR("networking.k8s.io", "v1", "networkpolicies")
PODS = rest.GVR("", "v1", "pods")
NAMESPACES = rest.GVR("", "v1", "namespaces")
NODES = rest.GVR("", "v1", "nodes")
# Changes arrive in bursts (a pod's status, then its IP): gather them, then write the table once.
DEBOUNCE_SECONDS = 0.05
RETRY_SECONDS = 1.0
BRIDGE_NF = "/proc/sys/net/bridge/bridge-nf-call-iptables"


def table_name(data_dir: str) -> str:
    """One table per cluster (its data dir), beside the service proxy's."""
    return "pknp_" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:10]


def bridge_problem(path: str = BRIDGE_NF) -> str:
    """Why bridged pod-to-pod traffic would bypass the ip hooks ("" when br_netfilter passes it through them)."""
    if not os.path.exists(path):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            subprocess.run(["modprobe", "br_netfilter"], capture_output=True, check=False, timeout=20)
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return ""
        # kubeadm's preflight demands it too: pods on one bridge are bridged, not routed.
        with open(path, "w") as f:
            f.write("1")
        return ""
    except OSError as e:
        return f"bridged traffic does not reach nftables (br_netfilter, {path}: {e.strerror or e})"


def node_state(node: dict[str, Any], *, problem: str, table: str) -> str:
    """The Node annotation's value: the table enforcing policies for its pods, or why nothing does."""
    network = str((node["metadata"].get("annotations") or {}).get(podnet.ANNOTATION) or "")
    if problem:
        return f"not enforced: {problem}"
    if not network.startswith("bridge "):
        return "not enforced: pods share the host network"
    return f"nftables table ip {table}"


class Enforcer:
    """Informers on NetworkPolicies, Pods, Namespaces and Nodes; every change replaces the table atomically."""

    def __init__(self, client: rest.Client, *, table: str, dns_ip: str = "",
                 clock: clock_mod.Clock | None = None, use_nft: bool | None = None) -> None:
        self.client = client
        self.table = table
        self.clock = clock or clock_mod.Clock()
        self.problem = proxy.nft_problem() if use_nft is None or use_nft else "nftables turned off"
        self.dns = policyrules.dns_info(dns_ip, namespace=dnsbootstrap.NAMESPACE, labels=dnsbootstrap.LABELS,
                                        ports=[("dns", "UDP", 53), ("dns-tcp", "TCP", 53),
                                               ("metrics", "TCP", 9153)]) if dns_ip else None
        self.informers = [informer.Informer(client, gvr, clock=self.clock)
                          for gvr in (POLICIES, PODS, NAMESPACES, NODES)]
        self.policies, self.pods, self.namespaces, self.nodes = self.informers
        self.applier = nftsync.Applier(self.informers, table=table, name="network policy", log=log, sync=self.sync,
                                       clock=self.clock, debounce=DEBOUNCE_SECONDS, retry=RETRY_SECONDS)
        self.syncs = 0

    def bridges(self) -> list[str]:
        """This cluster's pod bridges, from the nodes' pod-network annotations ("bridge NAME CIDR")."""
        out = []
        for n in self.nodes.list():
            words = str((n["metadata"].get("annotations") or {}).get(podnet.ANNOTATION) or "").split()
            if len(words) >= 2 and words[0] == "bridge":
                out.append(words[1])
        return out

    def script(self) -> str:
        return policyrules.render(self.policies.list(), self.pods.list(), self.namespaces.list(), table=self.table,
                                  bridges=self.bridges(), dns=self.dns)

    async def run(self) -> None:
        if not self.problem:
            self.problem = await asyncio.to_thread(bridge_problem)
        await self.applier.run(task_prefix="netpolicy", problem=self.problem,
                               warning="NetworkPolicies are not enforced: %s")

    async def sync(self) -> None:
        """Bring the kernel and the Node annotations in line with the informers' view now."""
        self.syncs += 1
        await self._annotate()
        if self.problem:
            return
        await self.applier.apply(self.script(), nft=proxy.run_nft)

    async def _annotate(self) -> None:
        """Say on each node with real pods whether its pods' policies are enforced (never pretend they are)."""
        for node in self.nodes.list():
            annotations = node["metadata"].get("annotations") or {}
            if podnet.ANNOTATION not in annotations:
                continue  # a virtual node: no data path at all
            want = node_state(node, problem=self.problem, table=self.table)
            if annotations.get(ANNOTATION) == want:
                continue
            with contextlib.suppress(errors.NotFound):
                await self.client.patch(NODES.path("", node["metadata"]["name"]),
                                        {"metadata": {"annotations": {ANNOTATION: want}}}, patch_type="strategic")

    async def close(self) -> None:
        if not self.problem:
            await self.applier.remove(nft=proxy.run_nft)


async def start(*, url: str, pki: pki_mod.Pki, data_dir: str, service_cidr: str = "", dns: bool = True,
                clock: clock_mod.Clock | None = None) -> list[asyncio.Task[Any]]:
    """Start enforcement as user system:pocketkube-network-policy; cancel the task to stop it."""
    cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, pki, USER, days=365)
    client = config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key, user_agent=USER_AGENT)
    dns_ip = dnsbootstrap.cluster_dns_ip(service_cidr or dnsbootstrap.SERVICE_CIDR) if dns else ""
    enforcer = Enforcer(client, table=table_name(data_dir), dns_ip=dns_ip, clock=clock)

    async def run() -> None:
        try:
            await enforcer.run()
        finally:
            await enforcer.close()
            await client.close()

    return [asyncio.get_running_loop().create_task(run(), name="network-policy")]
