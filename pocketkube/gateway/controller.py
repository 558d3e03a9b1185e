"""The ingress controller for IngressClass `pocketkube`: informers to route table to proxy, plus status and events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import copy
import logging
import ssl
import threading
from collections.abc import Sequence
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, rest
from pocketkube.client import informer as informer_mod
from pocketkube.gateway import endpoints, proxy, routes
from pocketkube.runtime import controller as controller_mod
from pocketkube.runtime import events

log = logging.getLogger("pocketkube.gateway")

CLASS_NAME = "pocketkube"
CONTROLLER_NAME = "pocketkube.io/ingress"
# The identity the controller authenticates as; api/bootstrappolicy.py binds its ClusterRole to this user.
USER = "system:pocketkube-ingress"
USER_AGENT = "pocketkube-ingress/v1.32.0 (linux/amd64) pocketkube"
FIELD_MANAGER = "pocketkube-ingress"
COMPONENT = "pocketkube-ingress-controller"
CERT_DAYS = 365
# Coalesce bursts of changes (a rollout touches many slices) into one table rebuild.
REBUILD_DELAY = 0.01

INGRESSES = rest.GVR("networking.k8s.io", "v1", "ingresses")
INGRESS_CLASSES = rest.GVR("networking.k8s.io", "v1", "ingressclasses")
SERVICES = rest.GVR("", "v1", "services")
SLICES = rest.GVR("discovery.k8s.io", "v1", "endpointslices")
SECRETS = rest.GVR("", "v1", "secrets")

DEFAULT_HTTP_PORTS = (80, 8080, 0)
DEFAULT_HTTPS_PORTS = (443, 8443, 0)


def ingress_class_object() -> dict[str, Any]:
    """The IngressClass created at start: the cluster's default class."""
    return {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": CLASS_NAME, "annotations": {routes.DEFAULT_CLASS_ANNOTATION: "true"},
                         "labels": {"app.kubernetes.io/component": "controller",
                                    "app.kubernetes.io/name": "pocketkube-ingress"}},
            "spec": {"controller": CONTROLLER_NAME}}


def status_for(address: str) -> dict[str, Any]:
    """status.loadBalancer as ingress-nginx publishes it: the address the proxy is reachable on."""
    return {"loadBalancer": {"ingress": [{"ip": address}]}}


class IngressController(controller_mod.Reconciler):
    """Keeps the proxy's table in step with Ingresses, Services, EndpointSlices and Secrets."""

    def __init__(self, client: rest.Client, px: proxy.Proxy, *, address: str,
                 clock: clock_mod.Clock | None = None) -> None:
        super().__init__(client, "ingress", clock=clock, event_source=COMPONENT)
        self.proxy = px
        self.address = address
        self.ingresses = self.watch(INGRESSES)
        self.classes, self.services, self.slices, self.secrets = (
            self.watch(gvr, controller_mod.no_keys) for gvr in (INGRESS_CLASSES, SERVICES, SLICES, SECRETS))
        for i in (self.ingresses, self.classes, self.services, self.slices, self.secrets):
            i.add_handler(self._changed)
        self.problems: dict[str, set[routes.Problem]] = {}
        self._reported: dict[str, set[routes.Problem]] = {}
        self._synced_generation: dict[str, int] = {}
        self._pending: asyncio.TimerHandle | None = None

    async def run(self) -> None:
        await self.ensure_class()
        await super().run()

    async def ensure_class(self) -> None:
        """Create the pocketkube IngressClass unless it exists (a user's edits to it are kept)."""
        try:
            await self.client.create(INGRESS_CLASSES, ingress_class_object())
        except errors.AlreadyExists:
            pass

    # -- data plane --------------------------------------------------------------------------------------------

    def _changed(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if self._pending is None:
            self._pending = asyncio.get_running_loop().call_later(REBUILD_DELAY, self.rebuild)

    def is_default(self) -> bool:
        cls = self.classes.get(CLASS_NAME)
        ann = ((cls or {}).get("metadata") or {}).get("annotations") or {}
        return str(ann.get(routes.DEFAULT_CLASS_ANNOTATION, "")).lower() == "true"

    def ours(self, ing: dict[str, Any]) -> bool:
        cls = routes.ingress_class(ing)
        return cls == CLASS_NAME or (cls == "" and self.is_default())

    def rebuild(self) -> None:
        """Compile the table, resolve backends and certificates, and swap them into the proxy in one step."""
        self._pending = None
        if not all(i.has_synced for i in (self.ingresses, self.classes, self.services, self.slices, self.secrets)):
            # A partial cache would route to nothing and report every backend missing: wait for the lists.
            self._pending = asyncio.get_running_loop().call_later(REBUILD_DELAY * 5, self.rebuild)
            return
        table = routes.compile_ingresses(self.ingresses.list(), class_name=CLASS_NAME, is_default=self.is_default())
        services = {informer_mod.key_of(s): s for s in self.services.list()}
        by_service = endpoints.slices_index(self.slices.list())
        upstreams = {b: endpoints.resolve(b, services, by_service) for b in table.backends()}
        problems: dict[str, set[routes.Problem]] = {}
        for p in table.problems:
            problems.setdefault(p.source, set()).add(p)
        sources: dict[routes.Backend, set[str]] = {}
        for rs in table.hosts.values():
            for r in rs:
                for b in r.backends:
                    sources.setdefault(b, set()).add(r.source)
        if table.default_backend is not None:
            sources.setdefault(table.default_backend, set()).add(table.default_source)
        for b, up in upstreams.items():
            if up.missing_service:
                for src in sources.get(b, ()):
                    problems.setdefault(src, set()).add(routes.Problem(src, "ServiceNotFound", up.error))
        contexts: dict[str, ssl.SSLContext] = {}
        for host, entry in table.tls.items():
            if not entry.secret:
                continue
            ref = f"{entry.namespace}/{entry.secret}"
            secret = self.secrets.get(ref)
            why = f"local SSL certificate {ref} was not found"
            ctx = None
            if secret is not None:
                ctx, why = self.proxy.tls.for_secret(secret)
            if ctx is not None:
                contexts[host] = ctx
            else:
                problems.setdefault(entry.source, set()).add(routes.Problem(
                    entry.source, "SecretNotFound" if secret is None else "InvalidSecret",
                    f'Error getting SSL certificate "{ref}": {why}. Using default certificate'))
        self.proxy.tls.forget_except({f"{t.namespace}/{t.secret}" for t in table.tls.values()})
        self.proxy.update(proxy.State(table=table, upstreams=upstreams, contexts=contexts))
        changed = {k for k in set(problems) | set(self.problems) if problems.get(k) != self.problems.get(k)}
        self.problems = problems
        for key in changed:
            self.controller.enqueue(key)

    # -- status and events -------------------------------------------------------------------------------------

    async def reconcile(self, key: str) -> controller_mod.Outcome | None:
        ing = self.ingresses.get(key)
        if ing is None:
            self._reported.pop(key, None)
            self._synced_generation.pop(key, None)
            return None
        if not self.ours(ing):
            return None
        meta = ing.get("metadata") or {}
        generation = int(meta.get("generation") or 0)
        if self._synced_generation.get(key) != generation:
            self._synced_generation[key] = generation
            await self.recorder.event(ing, events.NORMAL, "Sync", "Scheduled for sync")
        for p in sorted(self.problems.get(key, set()) - self._reported.get(key, set()), key=lambda p: p.message):
            await self.recorder.event(ing, events.WARNING, p.reason, p.message)
        self._reported[key] = set(self.problems.get(key, set()))
        want = status_for(self.address)
        if (ing.get("status") or {}).get("loadBalancer") != want["loadBalancer"]:
            body = copy.deepcopy(ing)
            body["status"] = want
            try:
                await self.client.update_status(INGRESSES, body)
            except errors.NotFound:
                return None
        return None


async def client_for(url: str, pki: pki_mod.Pki) -> rest.Client:
    """A client authenticating as the ingress controller with a certificate from the cluster CA."""
    cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, pki, USER, days=CERT_DAYS)
    return config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key,
                           user_agent=USER_AGENT, field_manager=FIELD_MANAGER)


def ports(explicit: int | None, defaults: Sequence[int]) -> list[int]:
    """The ports to try: the one asked for, else 80/443, then 8080/8443, then any free one."""
    return [explicit] if explicit is not None else list(defaults)


async def start(*, url: str, pki: pki_mod.Pki, host: str = "127.0.0.1", http_port: int | None = None,
                https_port: int | None = None, clock: clock_mod.Clock | None = None,
                own_thread: bool = True) -> list[asyncio.Task[Any]]:
    """Listen on the ingress ports and run the controller; cancel the task to stop both.

    With own_thread the ingress (informers, table, data plane) runs on its own thread and event loop: a new
    endpoint must not wait behind the API server and controllers of the same process (on the shared loop a
    burst of their work delayed table updates and requests by 100-200 ms). It talks to the API over HTTPS
    either way, so nothing is shared but the GIL.
    """
    if not own_thread:
        return await _start_here(url=url, pki=pki, host=host, http_port=http_port, https_port=https_port,
                                 clock=clock)
    started: concurrent.futures.Future[tuple[asyncio.AbstractEventLoop, list[asyncio.Task[Any]]]] = (
        concurrent.futures.Future())

    async def main() -> None:
        try:
            tasks = await _start_here(url=url, pki=pki, host=host, http_port=http_port, https_port=https_port,
                                      clock=clock)
        except BaseException as e:
            started.set_exception(e)
            raise
        started.set_result((asyncio.get_running_loop(), tasks))
        await asyncio.gather(*tasks, return_exceptions=True)

    def thread_main() -> None:
        factory: Any = None
        with contextlib.suppress(ImportError):
            import uvloop
            factory = uvloop.new_event_loop
        try:
            with contextlib.suppress(BaseException), asyncio.Runner(loop_factory=factory) as runner:
                runner.run(main())
        finally:
            if not started.done():
                started.set_exception(RuntimeError("the ingress thread ended before it started"))

    thread = threading.Thread(target=thread_main, name="ingress", daemon=True)
    thread.start()
    loop, tasks = await asyncio.wrap_future(started)
    if not tasks:
        await asyncio.to_thread(thread.join)
        return []

    async def supervise() -> None:
        try:
            await asyncio.to_thread(thread.join)
        finally:
            for t in tasks:
                loop.call_soon_threadsafe(t.cancel)
            await asyncio.to_thread(thread.join, 15)

    return [asyncio.get_running_loop().create_task(supervise(), name="ingress-controller")]


async def _start_here(*, url: str, pki: pki_mod.Pki, host: str, http_port: int | None, https_port: int | None,
                      clock: clock_mod.Clock | None) -> list[asyncio.Task[Any]]:
    """The ingress on the running loop: the proxy listening, then the controller feeding it."""
    px = proxy.Proxy()
    try:
        got_http, got_https = await px.start(host=host, http_ports=ports(http_port, DEFAULT_HTTP_PORTS),
                                             https_ports=ports(https_port, DEFAULT_HTTPS_PORTS))
    except OSError as e:
        await px.close()
        log.error("%s; the ingress controller is not started", e)
        return []
    log.info("ingress: serving HTTP on %s:%d and HTTPS on %s:%d", host, got_http, host, got_https)
    client = await client_for(url, pki)
    address = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
    ctl = IngressController(client, px, address=address, clock=clock)

    async def run() -> None:
        delay = 1.0
        try:
            while True:
                try:
                    await ctl.run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("ingress controller crashed; restarting in %.0fs", delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60.0)
        finally:
            await px.close()
            await client.close()

    return [asyncio.get_running_loop().create_task(run(), name="ingress-controller")]
