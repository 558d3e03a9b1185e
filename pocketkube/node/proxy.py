"""The service proxy (kube-proxy): watches Services and EndpointSlices and keeps the kernel's nftables in step."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import random
import shutil
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, informer, rest
from pocketkube.network import podnet, proxyrules
from pocketkube.node import nftsync, spawn

log = logging.getLogger("pocketkube.node.proxy")

USER = "system:kube-proxy"
USER_AGENT = "kube-proxy/v1.32.0 (linux/amd64) pocketkube"
SERVICES = rest.GVR("", "v1", "services")
SLICES = rest.GVR("discovery.k8s.io", "v1", "endpointslices")
NODES = rest.GVR("", "v1", "nodes")
RETRY_SECONDS = 1.0
CONNECT_TIMEOUT = 5.0


def table_name(data_dir: str) -> str:
    """One nftables table per cluster (its data dir), so clusters on one machine never touch each other's rules."""
    return "pk_" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:10]


def nft_problem() -> str:
    """Why the kernel data path cannot be used here ("" when it can)."""
    if os.geteuid() != 0:
        return "nftables rules need root"
    if shutil.which("nft") is None:
        return "the nft command (nftables) is not installed"
    return ""


async def run_nft(script: str) -> str:
    """Run an `nft -f -` script; returns its error output ("" on success)."""
    cp = await spawn.run(["nft", "-f", "-"], input=script.encode())
    return "" if cp.returncode == 0 else (cp.stderr.decode(errors="replace").strip() or f"nft exited {cp.returncode}")


class Proxy:
    """Informers on Services, EndpointSlices and Nodes; every change re-renders and atomically replaces the table."""

    def __init__(self, client: rest.Client, *, table: str, cluster_cidr: str,
                 clock: clock_mod.Clock | None = None, use_nft: bool | None = None) -> None:
        self.client = client
        self.table = table
        self.cluster_cidr = cluster_cidr
        self.clock = clock or clock_mod.Clock()
        self.problem = nft_problem() if use_nft is None or use_nft else "nftables turned off"
        self.services = informer.Informer(client, SERVICES, clock=self.clock)
        self.slices = informer.Informer(client, SLICES, clock=self.clock)
        self.nodes = informer.Informer(client, NODES, clock=self.clock)
        # No debounce: a Service's rules should follow its endpoints as soon as they change.
        self.applier = nftsync.Applier((self.services, self.slices, self.nodes), table=table, name="service proxy",
                                       log=log, sync=self.sync, clock=self.clock, retry=RETRY_SECONDS)
        self.userspace = UserspaceProxy()
        self.syncs = 0

    def local_nodes(self) -> frozenset[str]:
        """The nodes whose pods run on this machine: those with a pod network (process nodes)."""
        return frozenset(str(n["metadata"]["name"]) for n in self.nodes.list()
                         if podnet.ANNOTATION in (n["metadata"].get("annotations") or {}))

    def bridges(self) -> list[str]:
        """This machine's pod bridges of this cluster, from the nodes' pod-network annotations ("bridge NAME CIDR")."""
        return sorted(self.node_bridges().values())

    def node_bridges(self) -> dict[str, str]:
        """Node name -> its pod bridge, for the nodes whose pods have their own network namespaces."""
        out = {}
        for n in self.nodes.list():
            words = str((n["metadata"].get("annotations") or {}).get(podnet.ANNOTATION) or "").split()
            if len(words) >= 2 and words[0] == "bridge":
                out[str(n["metadata"]["name"])] = words[1]
        return out

    def rules(self) -> list[proxyrules.ServicePort]:
        return proxyrules.service_ports(self.services.list(), self.slices.list(), local_nodes=self.local_nodes())

    async def run(self) -> None:
        try:
            await self.applier.run(task_prefix="proxy", problem=self.problem,
                                   warning="service proxy: no kernel data path (%s); NodePorts are proxied in userspace")
        finally:
            await self.close()

    async def sync(self) -> None:
        """Bring the data path in line with the informers' view now."""
        ports = self.rules()
        self.syncs += 1
        if self.problem:
            await self.userspace.apply(ports)
            return
        script = proxyrules.render(ports, table=self.table, cluster_cidr=self.cluster_cidr, bridges=self.bridges(),
                                   node_bridges=self.node_bridges())
        await self.applier.apply(script, nft=run_nft)

    async def close(self) -> None:
        await self.userspace.close()
        if not self.problem:
            await self.applier.remove(nft=run_nft)


class UserspaceProxy:
    """Without nftables: each NodePort listens on 127.0.0.1 and splices TCP connections to a random endpoint."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self._servers: dict[int, asyncio.Server] = {}
        self._backends: dict[int, tuple[proxyrules.Backend, ...]] = {}

    async def apply(self, ports: list[proxyrules.ServicePort]) -> None:
        want = {sp.node_port: sp.external_backends for sp in ports if sp.node_port and sp.protocol == "tcp"}
        self._backends = want
        for port in [p for p in self._servers if p not in want]:
            self._servers.pop(port).close()
        for port in want:
            if port in self._servers:
                continue
            try:
                self._servers[port] = await asyncio.start_server(functools.partial(self._serve, port), self.host, port)
            except OSError as e:
                log.warning("userspace proxy: cannot listen on %s:%d: %s", self.host, port, e)

    async def _serve(self, port: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backends = self._backends.get(port) or ()
        try:
            if not backends:
                return
            b = random.choice(backends)
            up_r, up_w = await asyncio.wait_for(asyncio.open_connection(b.ip, b.port), CONNECT_TIMEOUT)
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer), return_exceptions=True)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for s in self._servers.values():
            s.close()
        self._servers.clear()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while data := await src.read(65536):
            dst.write(data)
            await dst.drain()
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            dst.write_eof()


async def start(*, url: str, pki: pki_mod.Pki, data_dir: str, cluster_cidr: str, service_cidr: str = "",
                clock: clock_mod.Clock | None = None) -> list[asyncio.Task[Any]]:
    """Start the proxy as user system:kube-proxy (bound to system:node-proxier); cancel the task to stop it."""
    cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, pki, USER, days=365)
    client = config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key, user_agent=USER_AGENT)
    proxy = Proxy(client, table=table_name(data_dir), cluster_cidr=cluster_cidr, clock=clock)

    async def run() -> None:
        try:
            await proxy.run()
        finally:
            await client.close()

    return [asyncio.get_running_loop().create_task(run(), name="kube-proxy")]
