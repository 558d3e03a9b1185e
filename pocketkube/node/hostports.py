"""hostPort forwarding (the CNI portmap plugin's job): watches Pods and Nodes and keeps an nftables table in step."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, informer, rest
from pocketkube.network import hostports, podnet
from pocketkube.node import events as events_mod
from pocketkube.node import nftsync, proxy

log = logging.getLogger("pocketkube.node.hostports")

# Its own identity: portmap itself has none (the runtime runs it), and neither kube-proxy's nor the policy
# agent's role should grow event writes for it.
USER = "system:pocketkube-hostports"
USER_AGENT = "hostports/v1.32.0 (linux/amd64) pocketkube"
PODS = rest.GVR("", "v1", "pods")
NODES = rest.GVR("", "v1", "nodes")
DEBOUNCE_SECONDS = 0.05
RETRY_SECONDS = 1.0
SYS_NET = "/sys/class/net"


def table_name(data_dir: str) -> str:
    """One table per cluster (its data dir), beside the service proxy's and the policy agent's."""
    return "pkhp_" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:10]


def local_bridges(candidates: list[str], *, sys_net: str = SYS_NET) -> list[str]:
    """The bridges among candidates that exist on this host (nodes of other machines have theirs elsewhere)."""
    return [b for b in candidates if os.path.isdir(os.path.join(sys_net, b))]


def route_localnet(bridge: str) -> None:
    """Let 127.0.0.1-sourced packets (the host curling its own hostPort) leave through the bridge, as portmap does."""
    with contextlib.suppress(OSError), open(f"/proc/sys/net/ipv4/conf/{bridge}/route_localnet", "w") as f:
        f.write("1")


class Forwarder:
    """Informers on Pods and Nodes; every change re-plans the mappings and replaces the table atomically."""

    def __init__(self, client: rest.Client, *, table: str, clock: clock_mod.Clock | None = None,
                 use_nft: bool | None = None, sys_net: str = SYS_NET) -> None:
        self.client = client
        self.table = table
        self.clock = clock or clock_mod.Clock()
        self.sys_net = sys_net
        self.problem = proxy.nft_problem() if use_nft is None or use_nft else "nftables turned off"
        self.informers = [informer.Informer(client, gvr, clock=self.clock) for gvr in (PODS, NODES)]
        self.pods, self.nodes = self.informers
        self.applier = nftsync.Applier(self.informers, table=table, name="hostports", log=log, sync=self.sync,
                                       clock=self.clock, debounce=DEBOUNCE_SECONDS, retry=RETRY_SECONDS)
        self._warned: set[tuple[str, str]] = set()
        self._recorders: dict[str, events_mod.Recorder] = {}
        self._localnet: set[str] = set()
        self.syncs = 0

    def cidrs(self) -> dict[str, str]:
        return hostports.node_cidrs(self.nodes.list(), annotation=podnet.ANNOTATION, bridges=self._bridges())

    def plan(self) -> tuple[list[hostports.PortMapping], list[hostports.Conflict]]:
        return hostports.plan(self.pods.list(), cidrs=self.cidrs())

    def script(self) -> str:
        return hostports.render(self.plan()[0], table=self.table)

    async def run(self) -> None:
        try:
            await self.applier.run(task_prefix="hostports", problem=self.problem,
                                   warning="hostPorts are not forwarded: %s")
        finally:
            for r in self._recorders.values():
                await r.close()

    async def sync(self) -> None:
        """Bring the kernel in line with the informers' view now, and warn each pod left without its port."""
        self.syncs += 1
        mappings, conflicts = self.plan()
        self._warn(conflicts)
        if self.problem:
            return
        for bridge in {b for b in self._bridges() if b not in self._localnet}:
            await asyncio.to_thread(route_localnet, bridge)
            self._localnet.add(bridge)
        await self.applier.apply(hostports.render(mappings, table=self.table), nft=proxy.run_nft)

    def _bridges(self) -> list[str]:
        out = []
        for n in self.nodes.list():
            words = str((n["metadata"].get("annotations") or {}).get(podnet.ANNOTATION) or "").split()
            if len(words) >= 2 and words[0] == "bridge":
                out.append(words[1])
        return local_bridges(out, sys_net=self.sys_net)

    def _warn(self, conflicts: list[hostports.Conflict]) -> None:
        """One Warning event per pod and message (as the kubelet reports a sandbox it could not wire)."""
        self._warned &= {(c.uid, c.message) for c in conflicts}  # a conflict that comes back is told again
        for c in conflicts:
            if (c.uid, c.message) in self._warned:
                continue
            self._warned.add((c.uid, c.message))
            rec = self._recorders.get(c.node)
            if rec is None:
                rec = self._recorders[c.node] = events_mod.Recorder(self.client, host=c.node, clock=self.clock)
            ref = {"metadata": {"namespace": c.namespace, "name": c.pod, "uid": c.uid}}
            rec.event(events_mod.pod_ref(ref), "Warning", hostports.REASON_CONFLICT, c.message)

    async def close(self) -> None:
        if not self.problem:
            await self.applier.remove(nft=proxy.run_nft)


async def start(*, url: str, pki: pki_mod.Pki, data_dir: str,
                clock: clock_mod.Clock | None = None) -> list[asyncio.Task[Any]]:
    """Start hostPort forwarding as user system:pocketkube-hostports; cancel the task to stop it."""
    cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, pki, USER, days=365)
    client = config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key, user_agent=USER_AGENT)
    forwarder = Forwarder(client, table=table_name(data_dir), clock=clock)

    async def run() -> None:
        try:
            await forwarder.run()
        finally:
            await forwarder.close()
            await client.close()

    return [asyncio.get_running_loop().create_task(run(), name="hostports")]
