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
    authn,
    authz,
    bootstrap,
    context,
    crds,
    objects,
    satokens,
    selfendpoints,
    server,
)
from pocketkube.base import clock as clock_mod
from pocketkube.base import pki
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

    async def start(self) -> ReadyInfo:
        s = self.settings
        os.makedirs(s.data_dir, exist_ok=True)
        hosts = [s.host, socket.gethostname()]
        self.pki = await asyncio.to_thread(pki.ensure_pki, s.data_dir, hosts=hosts)
        self._store = sqlite.SQLiteStore(os.path.join(s.data_dir, "state.db"))
        await self._store.start()
        clock = clock_mod.Clock()
        registry = resources.Registry.builtin()
        api = context.Server(registry=registry, objects=objects.Objects(self._store, conversion.convert),
                             store=self._store, clock=clock)
        api.allocators = allocators.Allocators()
        api.authorizer = authz.new()
        await _attach_authenticator(api, self.pki, s.token_auth_file)
        api.admission = list(admission.PLUGINS)
        api.crds = crds.CRDs(api)
        api.kubelet_ssl = pki.ssl_client_context(self.pki)
        await api.crds.load()
        svc_res = registry.get("", "v1", "services")
        assert svc_res is not None
        listed = await self._store.list(objects.list_prefix(svc_res, ""))
        api.allocators.load([objects.decode(e.value, e.mod_revision) for e in listed.entries])
        self.api = api
        ssl_ctx = pki.ssl_server_context(self.pki)
        self._runner, self.port = await server.start(api, host=s.host, port=s.port, ssl_context=ssl_ctx)
        host = s.host if s.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        api.server_address = f"{host}:{self.port}"
        await bootstrap.run(api, secure_port=self.port)
        await selfendpoints.reconcile(api, ip=host, port=self.port)
        netloc = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        self.url = f"https://{netloc}"
        self._tasks.append(asyncio.create_task(_keep_bootstrapped(api, self.port), name="bootstrap"))
        # The API is ready now; controllers, the scheduler and node agents start behind it, as their
        # processes would on a real control plane, so start-up does not wait for them.
        self._tasks.append(asyncio.create_task(self._run_components(), name="components"))
        return ReadyInfo(url=self.url, port=self.port, data_dir=s.data_dir)

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
                                               virtual=False, data_dir=s.data_dir)
                if s.virtual_nodes:
                    tasks += await agent.start(url=self.url, pki=self.pki, nodes=s.virtual_nodes,
                                               zones=s.zones, virtual=True)
            await asyncio.gather(*tasks)
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
        if self._runner is not None:
            await self._runner.cleanup()
        if self.api is not None and self.api.crds is not None:
            await self.api.crds.close()
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
            await bootstrap.run(api, secure_port=port)
            await selfendpoints.reconcile(api, ip=api.server_address.rpartition(":")[0].strip("[]"), port=port)
        except Exception:  # noqa: BLE001 - a failed round is retried on the next tick
            log.exception("re-creating system objects failed")


async def _start_controllers(cluster: Cluster) -> list[asyncio.Task[Any]]:
    """Start the built-in controllers; they reach the API over HTTPS like any client."""
    from pocketkube.controllers import manager
    from pocketkube.scheduler import app as scheduler_app

    assert cluster.pki is not None
    tasks = await manager.start(url=cluster.url, pki=cluster.pki)
    tasks += await scheduler_app.start(url=cluster.url, pki=cluster.pki)
    return tasks


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
        await stop.wait()
    finally:
        await cluster.stop()
