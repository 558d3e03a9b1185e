"""Composition root: wires store, API server and controllers into one process and runs it."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import socket
from collections.abc import Callable
from typing import Any

from pocketkube.api import conversion, resources
from pocketkube.apiserver import (
    admission,
    allocators,
    audit,
    audit_policy,
    authn,
    authz,
    bootstrap,
    context,
    crds,
    encryption,
    loopback,
    objects,
    satokens,
    selfendpoints,
    server,
    webhooks,
)
from pocketkube.base import clock as clock_mod
from pocketkube.base import gcpolicy, pki
from pocketkube.client import loopback as client_loopback
from pocketkube.store import sqlite

log = logging.getLogger("pocketkube")


@dataclasses.dataclass
class Settings:
    """How to run a cluster: where its data lives and where it listens."""

    data_dir: str
    host: str = "127.0.0.1"
    port: int = 6443
    controllers: bool = True
    nodes: int = 0
    virtual_nodes: int = 0
    zones: list[str] | None = None
    # kube-apiserver --token-auth-file: CSV token,user,uid,"group1,group2" of static bearer tokens.
    token_auth_file: str | None = None
    # kube-apiserver --encryption-provider-config: an EncryptionConfiguration for values at rest.
    encryption_provider_config: str | None = None
    # kube-apiserver --audit-policy-file, --audit-log-path ("-" = stdout), --audit-log-maxsize (MB), --audit-log-maxbackup.
    audit_policy_file: str | None = None
    audit_log_path: str | None = None
    audit_log_maxsize: int = 0
    audit_log_maxbackup: int = 0
    # Pod IPs (each process node gets a /24 of it), Service ClusterIPs, and whether pods get their own netns.
    cluster_cidr: str = "10.244.0.0/16"
    service_cidr: str = "10.96.0.0/12"
    pod_network: str = "auto"
    # Host ports of the ingress proxy; None tries 80/443, then 8080/8443, then any free port.
    ingress_http_port: int | None = None
    ingress_https_port: int | None = None
    # Cluster DNS (kube-system/kube-dns): listens on host at dns_port (0: a free port); names outside
    # cluster.local go to dns_upstreams ("ip[:port]"), by default the nameservers of /etc/resolv.conf.
    dns: bool = True
    dns_port: int = 0
    dns_upstreams: list[str] | None = None
    # kube-apiserver --authorization-mode, --enable/--disable-admission-plugins and the in-flight limits
    # (with APF their sum is the server's concurrency limit).
    authorization_mode: tuple[str, ...] = authz.DEFAULT_MODES
    enable_admission_plugins: tuple[str, ...] = ()
    disable_admission_plugins: tuple[str, ...] = ()
    max_requests_inflight: int = 400
    max_mutating_requests_inflight: int = 200

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {self.port}")
        if not self.data_dir:
            raise ValueError("data_dir is required")


@dataclasses.dataclass
class ReadyInfo:
    url: str
    port: int
    data_dir: str
    dns_address: str = ""


class Cluster:
    """A running cluster inside this event loop; stop() shuts it down cleanly."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.api: context.Server | None = None
        self._runner: Any = None
        self._store: sqlite.SQLiteStore | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.port = 0
        self.url = ""
        self.pki: pki.Pki | None = None
        self._auditor: audit.Auditor | None = None
        self.dns: Any = None
        self._loopback: loopback.Server | None = None

    async def start(self) -> ReadyInfo:
        s = self.settings
        os.makedirs(s.data_dir, exist_ok=True)
        hosts = [s.host, socket.gethostname()]
        self.pki = await asyncio.to_thread(pki.ensure_pki, s.data_dir, hosts=hosts)
        self._store = sqlite.SQLiteStore(os.path.join(s.data_dir, "state.db"))
        await self._store.start()
        store = encryption.wrap(self._store, encryption.load(s.encryption_provider_config)
                                if s.encryption_provider_config else None)
        clock = clock_mod.Clock()
        registry = resources.Registry.builtin()
        api = context.Server(registry=registry, objects=objects.Objects(store, conversion.convert),
                             store=store, clock=clock)
        api.allocators = allocators.Allocators(s.service_cidr)
        api.authorizer = authz.new(s.authorization_mode)
        await _attach_authenticator(api, self.pki, s.token_auth_file)
        api.admission = admission.chain(enable=s.enable_admission_plugins, disable=s.disable_admission_plugins)
        api.crds = crds.CRDs(api)
        api.kubelet_ssl = pki.ssl_client_context(self.pki)
        await api.crds.load()
        svc_res = registry.get("", "v1", "services")
        assert svc_res is not None
        listed = await store.list(objects.list_prefix(svc_res, ""))
        api.allocators.load([objects.decode(e.value, e.mod_revision) for e in listed.entries])
        self.api = api
        ssl_ctx = pki.ssl_server_context(self.pki)
        if s.audit_policy_file and s.audit_log_path:
            self._auditor = audit.Auditor(audit_policy.load_policy(s.audit_policy_file), audit.LogSink(
                s.audit_log_path, max_size_mb=s.audit_log_maxsize, max_backups=s.audit_log_maxbackup), clock=clock)
        self._runner, self.port = await server.start(api, host=s.host, port=s.port, ssl_context=ssl_ctx,
                                                     auditor=self._auditor,
                                                     max_requests_inflight=s.max_requests_inflight,
                                                     max_mutating_requests_inflight=s.max_mutating_requests_inflight)
        host = s.host if s.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        api.server_address = f"{host}:{self.port}"
        await bootstrap.run(api, secure_port=self.port)
        await selfendpoints.reconcile(api, ip=host, port=self.port)
        netloc = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"https://{netloc}"
        if os.environ.get(client_loopback.ENV, "1") != "0":
            # The components below reach the API at self.url: serve them in memory, skipping TLS and sockets.
            self._loopback = loopback.Server(self._runner.app, ca_pem=self.pki.ca_cert_pem, peername=(host, 0),
                                             sockname=(host, self.port), ssl_context=ssl_ctx, clock=clock)
            client_loopback.register(self.url, self._loopback)
        self._tasks.append(asyncio.create_task(_keep_bootstrapped(api, self.port), name="bootstrap"))
        # The API is ready now; controllers, the scheduler and node agents start behind it, as their
        # processes would on a real control plane, so start-up does not wait for them.
        self._tasks.append(asyncio.create_task(self._run_components(), name="components"))
        dns_address = await self._start_dns() if s.dns else ""
        return ReadyInfo(url=self.url, port=self.port, data_dir=s.data_dir, dns_address=dns_address)

    async def _start_dns(self) -> str:
        """Bind the cluster DNS server now (its address is part of being ready); it follows the API behind."""
        from pocketkube.network import dnsbootstrap

        s = self.settings
        assert self.pki is not None
        self.dns = dnsbootstrap.ClusterDNS(
            dnsbootstrap.Settings(host=s.host or "127.0.0.1", port=s.dns_port, upstreams=s.dns_upstreams,
                                  service_cidr=s.service_cidr), url=self.url, pki=self.pki)
        await self.dns.listen()
        self._tasks.append(asyncio.create_task(self.dns.run(), name="dns"))
        return str(self.dns.address)

    async def _run_components(self) -> None:
        s = self.settings
        tasks: list[asyncio.Task[Any]] = []
        try:
            if s.controllers:
                tasks += await _start_controllers(self)
            if s.nodes or s.virtual_nodes:
                from pocketkube.node import agent

                assert self.pki is not None
                if s.nodes:
                    tasks += await agent.start(url=self.url, pki=self.pki, nodes=s.nodes, zones=s.zones,
                                               virtual=False, data_dir=s.data_dir, pod_network=s.pod_network,
                                               cluster_cidr=s.cluster_cidr, cluster_dns=_cluster_dns(s))
                    tasks += await _start_proxy(self)
                    tasks += await _start_netpolicy(self)
                    tasks += await _start_hostports(self)
                if s.virtual_nodes:
                    tasks += await agent.start(url=self.url, pki=self.pki, nodes=s.virtual_nodes,
                                               zones=s.zones, virtual=True)
            await asyncio.gather(*tasks)
        except Exception:
            # every component stops with the one that failed: say which and why, or the API serves on, silently
            # without controllers or nodes
            log.exception("a cluster component failed; controllers, scheduler and nodes are stopped")
            raise
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def stop(self) -> None:
        if self.api is not None:
            self.api.shutting_down = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._loopback is not None:
            client_loopback.unregister(self.url)
            self._loopback.close()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.api is not None and self.api.crds is not None:
            await self.api.crds.close()
        if self.api is not None:
            await webhooks.close(self.api)
        if self._auditor is not None:
            self._auditor.close()
        if self._store is not None:
            await self._store.close()


async def _attach_authenticator(api: context.Server, p: pki.Pki, token_file: str | None) -> None:
    """Bearer tokens the API server accepts: ServiceAccount JWTs signed with sa.key, and the static token file."""
    private_pem, _ = await asyncio.to_thread(pki.service_account_key, p)
    tokens = await asyncio.to_thread(authn.load_token_file, token_file) if token_file else {}
    authn.attach(api, authn.Authenticator(signer=satokens.Signer(private_pem), tokens=tokens))


async def _keep_bootstrapped(api: context.Server, port: int, *, every: float = 10.0) -> None:
    """Recreate system objects someone deleted (the kubernetes Service, system namespaces), as kube-apiserver does."""
    while True:
        await api.clock.sleep(every)
        try:
            await bootstrap.run(api, secure_port=port, rbac=False)
            await selfendpoints.reconcile(api, ip=api.server_address.rpartition(":")[0].strip("[]"), port=port)
        except Exception:  # noqa: BLE001 - a failed round is retried on the next tick
            log.exception("re-creating system objects failed")


async def _start_proxy(cluster: Cluster) -> list[asyncio.Task[Any]]:
    """The service proxy (kube-proxy) of the machine the process nodes share, as user system:kube-proxy."""
    from pocketkube.node import proxy

    assert cluster.pki is not None
    s = cluster.settings
    return await proxy.start(url=cluster.url, pki=cluster.pki, data_dir=s.data_dir, cluster_cidr=s.cluster_cidr,
                             service_cidr=s.service_cidr)


def _cluster_dns(s: Settings) -> list[str]:
    """The nameserver the kubelets give ClusterFirst pods: kube-dns's ClusterIP, or none without cluster DNS."""
    from pocketkube.network import dnsbootstrap

    return [dnsbootstrap.cluster_dns_ip(s.service_cidr)] if s.dns else []


async def _start_netpolicy(cluster: Cluster) -> list[asyncio.Task[Any]]:
    """NetworkPolicy enforcement on the process nodes' pod bridges, beside the service proxy."""
    from pocketkube.node import netpolicy

    assert cluster.pki is not None
    s = cluster.settings
    return await netpolicy.start(url=cluster.url, pki=cluster.pki, data_dir=s.data_dir, service_cidr=s.service_cidr,
                                 dns=s.dns)


async def _start_hostports(cluster: Cluster) -> list[asyncio.Task[Any]]:
    """hostPort forwarding to the process nodes' pods (what the CNI portmap plugin does), beside the proxy."""
    from pocketkube.node import hostports

    assert cluster.pki is not None
    return await hostports.start(url=cluster.url, pki=cluster.pki, data_dir=cluster.settings.data_dir)


async def _start_controllers(cluster: Cluster) -> list[asyncio.Task[Any]]:
    """Start the built-in controllers; they reach the API over HTTPS like any client."""
    from pocketkube.controllers import manager
    from pocketkube.scheduler import app as scheduler_app

    assert cluster.pki is not None
    tasks = await manager.start(url=cluster.url, pki=cluster.pki)
    tasks += await scheduler_app.start(url=cluster.url, pki=cluster.pki)
    from pocketkube.gateway import controller as ingress

    s = cluster.settings
    tasks += await ingress.start(url=cluster.url, pki=cluster.pki, host=s.host, http_port=s.ingress_http_port,
                                 https_port=s.ingress_https_port)
    return tasks


def _tune_gc() -> None:
    """Hand the cyclic garbage collector to gcpolicy: the start-up heap frozen, rarer young collections, and
    each full collection's survivors frozen so full collections stay proportional to what is new.

    With 1000 virtual nodes, collections took a third of the process's CPU (half of it at 8,000 pods): each
    full one walked every cached object, which never becomes garbage."""
    gcpolicy.install()


async def run(settings: Settings, *, on_ready: Callable[[ReadyInfo], None] | None = None) -> None:
    """Run a cluster until SIGINT or SIGTERM, then stop it cleanly."""
    cluster = Cluster(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        info = await cluster.start()
        if on_ready is not None:
            on_ready(info)
        _tune_gc()
        await stop.wait()
    finally:
        await cluster.stop()
