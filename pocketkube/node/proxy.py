"""The service proxy (kube-proxy): watches Services and EndpointSlices and keeps the kernel's nftables in step."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import functools
import hashlib
import json
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
# kube-proxy listens for health checks on every address of the node (nodePortAddresses unset).
HEALTH_HOST = "0.0.0.0"
HEALTH_IDLE_SECONDS = 30.0
MAX_REQUEST_HEAD = 16384


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
        self.health = HealthServer(clock=self.clock)
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
        """Bring the data path (and the health checks of Local LoadBalancers) in line with the informers' view now."""
        ports = self.rules()
        checks = proxyrules.health_checks(self.services.list(), self.slices.list(), local_nodes=self.local_nodes())
        self.syncs += 1
        try:
            if self.problem:
                await self.userspace.apply(ports)
            else:
                script = proxyrules.render(ports, table=self.table, cluster_cidr=self.cluster_cidr,
                                           bridges=self.bridges(), node_bridges=self.node_bridges())
                await self.applier.apply(script, nft=run_nft)
        except Exception:
            self.health.healthy = False  # as kube-proxy's: load balancers stop sending here while rules are stale
            raise
        finally:
            await self.health.sync(checks)
        self.health.healthy = True

    async def close(self) -> None:
        await self.health.close()
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


def health_body(namespace: str, name: str, *, local_endpoints: int, healthy: bool) -> bytes:
    """kube-proxy's health check answer, byte for byte (tab-indented JSON, no trailing newline)."""
    return (f'{{\n\t"service": {{\n\t\t"namespace": {json.dumps(namespace)},\n\t\t"name": {json.dumps(name)}\n\t}},'
            f'\n\t"localEndpoints": {local_endpoints},\n\t"serviceProxyHealthy": {str(healthy).lower()}\n}}').encode()


class HealthServer:
    """kube-proxy's service health checks: an HTTP listener per healthCheckNodePort, 200 while the Service has
    ready endpoints on this machine's nodes, 503 otherwise, so an outside load balancer skips this node."""

    def __init__(self, *, host: str = HEALTH_HOST, clock: clock_mod.Clock | None = None) -> None:
        self.host = host
        self.clock = clock or clock_mod.Clock()
        self.healthy = False
        self._servers: dict[tuple[str, str], tuple[int, asyncio.Server]] = {}
        self._counts: dict[tuple[str, str], int] = {}

    def ports(self) -> dict[tuple[str, str], int]:
        """(namespace, name) -> the port its health check listens on."""
        return {key: port for key, (port, _) in self._servers.items()}

    async def sync(self, checks: list[proxyrules.HealthCheck]) -> None:
        """Open listeners for new checks, close those of gone or moved ones; failed listens retry on the next sync."""
        want = {(h.namespace, h.name): h for h in checks}
        self._counts = {key: h.local_endpoints for key, h in want.items()}
        for key in [k for k, (port, _) in self._servers.items() if k not in want or want[k].port != port]:
            self._servers.pop(key)[1].close()
        for key, h in want.items():
            if key in self._servers:
                continue
            try:
                server = await asyncio.start_server(functools.partial(self._serve, key), self.host, h.port)
            except OSError as e:
                log.warning("service %s/%s: cannot serve its health check on %s:%d: %s", *key, self.host, h.port, e)
                continue
            self._servers[key] = (h.port, server)

    def response(self, key: tuple[str, str], *, head: bool = False, close: bool = False) -> bytes:
        count = self._counts.get(key, 0)
        ok = count > 0 and self.healthy
        body = health_body(*key, local_endpoints=count, healthy=self.healthy)
        date = email.utils.formatdate(self.clock.now().timestamp(), usegmt=True)
        lines = ["HTTP/1.1 200 OK" if ok else "HTTP/1.1 503 Service Unavailable",
                 "Content-Type: application/json", "X-Content-Type-Options: nosniff",
                 f"X-Load-Balancing-Endpoint-Weight: {count}", f"Date: {date}", f"Content-Length: {len(body)}"]
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head else body)

    async def _serve(self, key: tuple[str, str], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                raw = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEALTH_IDLE_SECONDS)
                if len(raw) > MAX_REQUEST_HEAD:
                    break
                lines = raw.decode("latin-1").split("\r\n")
                words = lines[0].split(" ")
                if len(words) != 3 or words[2] not in ("HTTP/1.0", "HTTP/1.1"):
                    writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
                                 b"Connection: close\r\n\r\n400 Bad Request")
                    break
                headers = {k.strip().lower(): v.strip().lower() for k, _, v in (h.partition(":") for h in lines[1:])}
                length = headers.get("content-length", "0")
                if not length.isdigit() or int(length) > MAX_REQUEST_HEAD:
                    break
                await reader.readexactly(int(length))  # a health checker's GET has no body; skip any
                conn = headers.get("connection", "")
                close = conn == "close" or words[2] == "HTTP/1.0" and conn != "keep-alive"
                writer.write(self.response(key, head=words[0] == "HEAD", close=close))
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        for _, server in self._servers.values():
            server.close()
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
