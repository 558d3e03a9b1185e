"""One node agent (kubelet): registers its Node, renews its Lease, reports conditions, runs its pods."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import signal
import ssl
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, rest
from pocketkube.network import dnsbootstrap, podnet, resolvconf
from pocketkube.node import events as events_mod
from pocketkube.node import kubeletserver, nodes, podworkers, process, provisioner, runtime
from pocketkube.node import machine as machine_mod

log = logging.getLogger("pocketkube.node")

NODES = rest.GVR("", "v1", "nodes")
LEASES = rest.GVR("coordination.k8s.io", "v1", "leases")
USER_AGENT = f"kubelet/{nodes.KUBELET_VERSION} (linux/amd64) pocketkube"
FIELD_MANAGER = "kubelet"
NODE_GROUP = "system:nodes"
CERT_DAYS = 365
# The kubelet's defaults: the lease is renewed every quarter of its 40 s duration; status is
# checked every 10 s but, with leases on, only posted when it changes or every 5 minutes.
LEASE_RENEW_SECONDS = 10.0
STATUS_UPDATE_SECONDS = 10.0
STATUS_REPORT_SECONDS = 300.0
# Both loops run under wait.JitterUntil(period, 0.04) in the kubelet, so a thousand nodes started together
# drift apart instead of renewing in the same instant.
LOOP_JITTER = 0.04
# The lease controller's update attempts from the last Lease it wrote before reading it again.
LEASE_UPDATE_ATTEMPTS = 5
RETRY_SECONDS = 0.2
MAX_RETRY_SECONDS = 7.0
DEFAULT_PREFIX = "pocketkube-node"
# Connections each agent's client opens for requests (its pod watch has its own). Every pod start posts
# three Events at once next to status updates; unbounded, agents facing a busy API server opened about one
# new TLS connection per Event (1.3 per pod started on 100 nodes), where a kubelet keeps one HTTP/2 connection.
AGENT_CONNECTIONS = 6
# A virtual node's pods do no work: two connections (one free for the lease) besides its pod watch's.
VIRTUAL_AGENT_CONNECTIONS = 2
VIRTUAL_PREFIX = "pocketkube-virtual-node"

RuntimeFactory = Callable[[nodes.NodeSpec], runtime.Runtime]


def jittered(period: float, rng: random.Random, *, factor: float = LOOP_JITTER) -> float:
    """A period stretched by up to factor of itself at random (wait.Jitter)."""
    return period * (1 + factor * rng.random())


def backoff(delay: float, rng: random.Random) -> float:
    """A retry delay spread over [delay/2, 3*delay/2), so agents failing together do not retry together."""
    return delay * (0.5 + rng.random())


def report_delay(rng: random.Random) -> float:
    """The kubelet's delayAfterNodeStatusChange: after its Ready condition changes, a node moves its next
    periodic status report by up to half the report interval either way, so nodes that became Ready
    together do not all report together five minutes later."""
    return STATUS_REPORT_SECONDS * (rng.random() - 0.5)


class NodeAgent:
    """The kubelet of one node: registration, lease, node status and the pod workers."""

    def __init__(self, client: rest.Client, spec: nodes.NodeSpec, *, machine: nodes.Machine,
                 capacity: dict[str, str], rt: runtime.Runtime, clock: clock_mod.Clock | None = None,
                 workers: int = podworkers.WORKERS, kubelet_ssl: ssl.SSLContext | None = None,
                 rng: random.Random | None = None) -> None:
        self.client = client
        self.spec = spec
        self.machine = machine
        self.capacity = capacity
        self.runtime = rt
        self.clock = clock or clock_mod.Clock()
        self.recorder = events_mod.Recorder(client, host=spec.name, clock=self.clock)
        self.pods = podworkers.PodWorkers(client, node=spec.name, host_ip=spec.address, rt=rt,
                                          recorder=self.recorder, clock=self.clock, workers=workers)
        self.node_uid = ""
        self._conditions: list[dict[str, Any]] = []
        self._reported_at = -1e18
        self._report_delay = 0.0
        self._lease: dict[str, Any] | None = None
        self.rng = rng or random.Random()
        # The kubelet API (container logs) is served only for a process runtime, given TLS from the cluster CA.
        self.kubelet_ssl = kubelet_ssl
        self.kubelet_port = nodes.KUBELET_PORT

    @property
    def name(self) -> str:
        return self.spec.name

    async def run(self) -> None:
        """Register, then keep lease, status and pods going until cancelled."""
        kubelet = None
        if self.kubelet_ssl is not None and isinstance(self.runtime, process.ProcessRuntime):
            kubelet = kubeletserver.KubeletServer(self.runtime, lambda ns, name: self.pods.informer.get(f"{ns}/{name}"),
                                                  ssl_context=self.kubelet_ssl, clock=self.clock)
            self.kubelet_port = await kubelet.start(self.spec.address)
        network = getattr(self.runtime, "network", None)
        if isinstance(network, podnet.PodNetwork):
            await network.setup()
        try:
            await self._run()
        finally:
            if isinstance(network, podnet.PodNetwork):
                network.close()  # first and synchronous: a second cancellation cannot skip it
            if kubelet is not None:
                await kubelet.close()

    async def _run(self) -> None:
        await self._retry(self.register)
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._lease_loop(), name=f"{self.name}-lease"),
                 loop.create_task(self._status_loop(), name=f"{self.name}-status"),
                 loop.create_task(self.pods.run(), name=f"{self.name}-pods")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.recorder.close()
            await self.runtime.close()

    async def _retry(self, step: Callable[[], Any]) -> None:
        delay = RETRY_SECONDS
        while True:
            try:
                await step()
                return
            except (errors.APIError, aiohttp.ClientError, OSError, TimeoutError) as e:
                wait = backoff(delay, self.rng)
                log.warning("node %s: %s failed (%s); retrying in %.1fs", self.name, step.__name__, e, wait)
                await self.clock.sleep(wait)
                delay = min(delay * 2, MAX_RETRY_SECONDS)

    # --- registration and status

    async def register(self) -> None:
        """Create the Node, or take over an existing one of this name and bring its status up to date."""
        now = self.clock.now()
        body = nodes.node_object(self.spec, self.machine, cap=self.capacity, now=now, kubelet_port=self.kubelet_port)
        try:
            node = await self.client.create(NODES, body)
            self._events_at_start()
        except errors.AlreadyExists:
            node = await self.client.get(NODES.path("", self.name))
            patch = nodes.reconcile_labels(node, self.spec, self.machine)
            if patch:
                node = await self.client.patch(NODES.path("", self.name), {"metadata": {"labels": patch}},
                                               patch_type="strategic")
            old = (node.get("status") or {}).get("conditions") or []
            status = nodes.status(self.spec, self.machine, cap=self.capacity, now=now, old_conditions=old,
                                  kubelet_port=self.kubelet_port)
            node = await self.client.patch(NODES.path("", self.name, subresource="status"), {"status": status},
                                           patch_type="strategic")
            self._events_at_start()
        network = getattr(self.runtime, "network", None)
        if isinstance(network, podnet.PodNetwork) and \
                (node["metadata"].get("annotations") or {}).get(podnet.ANNOTATION) != network.describe():
            # Where pods get their addresses, or the limit they run under (they share the host's network).
            node = await self.client.patch(NODES.path("", self.name), {"metadata": {"annotations": {
                podnet.ANNOTATION: network.describe()}}}, patch_type="strategic")
        self.node_uid = str(node["metadata"].get("uid") or "")
        self._conditions = (node.get("status") or {}).get("conditions") or []
        self._reported_at = self.clock.monotonic()
        self._report_delay = report_delay(self.rng)  # the node just became Ready
        log.info("node %s registered", self.name)

    def _events_at_start(self) -> None:
        ref = events_mod.node_ref(self.name)
        self.recorder.event(ref, runtime.NORMAL, "Starting", "Starting kubelet.")
        self.recorder.event(ref, runtime.NORMAL, "NodeAllocatableEnforced", "Updated Node Allocatable limit across pods")
        # The kubelet announces each condition it reports: KubeletHasSufficientMemory -> NodeHasSufficientMemory.
        reasons = [reason.replace("Kubelet", "Node") for _, _, reason, _ in nodes.HEALTHY_CONDITIONS[:3]]
        for reason in [*reasons, "NodeReady"]:
            self.recorder.event(ref, runtime.NORMAL, reason, f"Node {self.name} status is now: {reason}")

    async def update_status(self) -> bool:
        """Post the node's conditions if they changed or the report interval passed; True if posted."""
        due = self.clock.monotonic() - self._reported_at >= STATUS_REPORT_SECONDS + self._report_delay
        # Checked every 10 s on every node: compare the states before building a heartbeat's timestamps.
        if not due and nodes.condition_states(self._conditions) == nodes.HEALTHY_STATES:
            return False
        fresh = nodes.conditions(self.clock.now(), self._conditions)
        try:
            node = await self.client.patch(NODES.path("", self.name, subresource="status"),
                                           {"status": {"conditions": fresh}}, patch_type="strategic")
        except errors.NotFound:
            # Someone deleted our Node: register it again rather than run pods for a node that is gone.
            log.warning("node %s: the Node object is gone; registering again", self.name)
            await self.register()
            self._lease = None
            return True
        old_ready, self._conditions = _ready(self._conditions), (node.get("status") or {}).get("conditions") or fresh
        self._reported_at = self.clock.monotonic()
        self._report_delay = report_delay(self.rng) if _ready(self._conditions) != old_ready else 0.0
        return True

    async def _status_loop(self) -> None:
        while True:
            await self.clock.sleep(jittered(STATUS_UPDATE_SECONDS, self.rng))
            try:
                await self.update_status()
            except (errors.APIError, aiohttp.ClientError, OSError, TimeoutError) as e:
                log.warning("node %s: status update failed: %s", self.name, e)

    # --- lease

    async def renew_lease(self) -> dict[str, Any]:
        """Create or renew the node's Lease in kube-node-lease; returns the stored Lease."""
        now = self.clock.now()
        if self._lease is None:
            try:
                self._lease = await self.client.get(LEASES.path(nodes.LEASE_NAMESPACE, self.name))
            except errors.NotFound:
                self._lease = await self.client.create(
                    LEASES, nodes.lease_object(self.name, node_uid=self.node_uid, now=now))
                return self._lease
        lease = dict(self._lease)
        fresh = nodes.lease_object(self.name, node_uid=self.node_uid, now=now)
        lease["spec"] = {**(lease.get("spec") or {}), **fresh["spec"]}
        meta = dict(lease.get("metadata") or {})
        if self.node_uid and not meta.get("ownerReferences"):
            meta["ownerReferences"] = fresh["metadata"]["ownerReferences"]
        lease["metadata"] = meta
        try:
            self._lease = await self.client.update(LEASES, lease)
        except (errors.Conflict, errors.NotFound):
            self._lease = None  # read it again (or create it) on the next try
            raise
        return self._lease

    async def sync_lease(self) -> bool:
        """One round of the kubelet's lease controller: a few updates from the Lease last written, else read
        (or create) it again, backing off; True once renewed."""
        delay = RETRY_SECONDS
        for attempt in range(LEASE_UPDATE_ATTEMPTS):
            try:
                await self.renew_lease()
                return True
            except (errors.APIError, aiohttp.ClientError, OSError, TimeoutError) as e:
                if attempt + 1 == LEASE_UPDATE_ATTEMPTS:
                    log.warning("node %s: lease renewal failed: %s; trying again in %.0fs", self.name, e,
                                LEASE_RENEW_SECONDS)
                elif not isinstance(e, (errors.Conflict, errors.NotFound)):
                    # A timeout or a busy server is not helped by asking again at once (a conflict reads first).
                    wait = backoff(delay, self.rng)
                    log.warning("node %s: lease renewal failed: %s; retrying in %.1fs", self.name, e, wait)
                    await self.clock.sleep(wait)
                    delay = min(delay * 2, MAX_RETRY_SECONDS)
        return False

    async def _lease_loop(self) -> None:
        while True:
            await self.sync_lease()
            await self.clock.sleep(jittered(LEASE_RENEW_SECONDS, self.rng))


def _ready(conditions: Sequence[dict[str, Any]]) -> str:
    return next((str(c.get("status")) for c in conditions if c.get("type") == "Ready"), "")


# --- starting agents -----------------------------------------------------------------------------


def virtual_runtime(spec: nodes.NodeSpec, *, clock: clock_mod.Clock) -> runtime.Runtime:
    """The runtime of a virtual node: pods report running without any process."""
    return runtime.VirtualRuntime(pod_cidr=spec.pod_cidr, host_ip=spec.address, clock=clock)


def plan_nodes(count: int, *, prefix: str, zones: Sequence[str] | None = None,
               virtual: bool = True, cluster_cidr: str = "") -> list[nodes.NodeSpec]:
    """Names, zones (round robin) and pod CIDRs of `count` nodes."""
    if count < 0:
        raise ValueError(f"the number of nodes is not negative, got {count}")
    zs = [z for z in (zones or []) if z]
    return [nodes.NodeSpec(name=nodes.node_name(prefix, i + 1), zone=zs[i % len(zs)] if zs else "",
                           pod_cidr=podnet.node_cidr(cluster_cidr, i) if cluster_cidr and not virtual
                           else nodes.pod_cidr(i, virtual=virtual), virtual=virtual)
            for i in range(count)]


def _capacity(spec: nodes.NodeSpec, machine: nodes.Machine, share: int) -> dict[str, str]:
    return dict(nodes.VIRTUAL_CAPACITY) if spec.virtual else nodes.capacity(machine, share=share)


def dns_settings(cluster_dns: Sequence[str] | None = None,
                 cluster_domain: str = resolvconf.CLUSTER_DOMAIN) -> resolvconf.Settings:
    """The kubelet's --cluster-dns/--cluster-domain; by default kube-dns where pocketkube up puts it (10.96.0.10)."""
    servers = [dnsbootstrap.cluster_dns_ip()] if cluster_dns is None else [ip for ip in cluster_dns if ip]
    return resolvconf.Settings(cluster_dns=tuple(servers), cluster_domain=cluster_domain)


def _runtime_for(spec: nodes.NodeSpec, clock: clock_mod.Clock, *, client: rest.Client, data_dir: str,
                 allocatable: dict[str, str], pod_network: str = "off",
                 dns: resolvconf.Settings | None = None) -> runtime.Runtime:
    if spec.virtual:
        return virtual_runtime(spec, clock=clock)
    # Each node keeps its pods apart from the other nodes' on disk.
    node_dir = os.path.join(data_dir, "nodes", spec.name)
    return process.ProcessRuntime(client, data_dir=node_dir, pod_cidr=spec.pod_cidr, host_ip=spec.address,
                                  allocatable=allocatable, clock=clock,
                                  # Also when off: the Node's annotation then says pods share the host network.
                                  network=podnet.PodNetwork(node_dir, pod_cidr=spec.pod_cidr, mode=pod_network),
                                  dns=dns or dns_settings())


async def _supervise(agent: NodeAgent, client: rest.Client) -> None:
    delay = 1.0
    try:
        while True:
            try:
                await agent.run()
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node agent %s crashed; restarting in %.0fs", agent.name, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 60.0)
    finally:
        await client.close()


async def start(*, url: str, pki: pki_mod.Pki, nodes: int = 1, zones: list[str] | None = None,
                virtual: bool = True, clock: clock_mod.Clock | None = None, name_prefix: str = "",
                workers: int = podworkers.WORKERS, runtime_factory: RuntimeFactory | None = None,
                data_dir: str = "", pod_network: str = "off", cluster_cidr: str = "",
                cluster_dns: Sequence[str] | None = None,
                cluster_domain: str = resolvconf.CLUSTER_DOMAIN) -> list[asyncio.Task[Any]]:
    """Start `nodes` node agents against url, each authenticated as system:node:<name>; cancel to stop.

    runtime_factory builds each node's container runtime (default: see _runtime_for); process nodes keep
    their pods under data_dir/nodes/<name> (default: the cluster's data dir, holding pki.directory)."""
    clk = clock or clock_mod.Clock()
    specs = plan_nodes(nodes, prefix=name_prefix or (VIRTUAL_PREFIX if virtual else DEFAULT_PREFIX),
                       zones=zones, virtual=virtual, cluster_cidr=cluster_cidr)
    machine = await asyncio.to_thread(machine_mod.detect, pki.directory)
    kubelet_ssl = None if virtual else await asyncio.to_thread(kubeletserver.ssl_context, pki)
    loop = asyncio.get_running_loop()
    tasks = []
    for spec in specs:
        # Signing the certificate and loading it into a TLS context take milliseconds each: off the event loop,
        # which serves the nodes already started meanwhile.
        client = await asyncio.to_thread(_node_client, url, pki, spec)
        cap = _capacity(spec, machine, len(specs))
        rt = runtime_factory(spec) if runtime_factory else _runtime_for(
            spec, clk, client=client, data_dir=data_dir or os.path.dirname(pki.directory), allocatable=cap,
            pod_network=pod_network, dns=dns_settings(cluster_dns, cluster_domain))
        agent = NodeAgent(client, spec, machine=machine, capacity=cap, rt=rt, clock=clk, workers=workers,
                          kubelet_ssl=kubelet_ssl)
        tasks.append(loop.create_task(_supervise(agent, client), name=f"node-{spec.name}"))
    if specs:
        cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, pki, provisioner.USER, days=CERT_DAYS)
        tasks.append(_provisioner(config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key,
                                                  user_agent=provisioner.USER_AGENT), specs,
                                  data_dir=data_dir or os.path.dirname(pki.directory), clock=clk))
    return tasks


def _node_client(url: str, pki: pki_mod.Pki, spec: nodes.NodeSpec) -> rest.Client:
    """A client authenticated as system:node:<name>, as the kubelet's bootstrap would leave it."""
    cert, key = pki_mod.issue_client_cert(pki, f"system:node:{spec.name}", groups=(NODE_GROUP,), days=CERT_DAYS)
    client = config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key,
                             user_agent=USER_AGENT, field_manager=FIELD_MANAGER)
    client.max_connections = VIRTUAL_AGENT_CONNECTIONS if spec.virtual else AGENT_CONNECTIONS
    return client


def _provisioner(client: rest.Client, specs: list[nodes.NodeSpec], *, data_dir: str,
                 clock: clock_mod.Clock) -> asyncio.Task[Any]:
    """One local-path provisioner serving every node started together, in each node's own directory."""
    dirs = {s.name: os.path.join(data_dir, "nodes", s.name) for s in specs}
    return asyncio.get_running_loop().create_task(provisioner.LocalPathProvisioner(client, dirs, clock=clock).run(),
                                                  name="local-path-provisioner")


async def start_from_kubeconfig(kubeconfig: str, *, nodes: int = 1, zones: list[str] | None = None,
                                virtual: bool = True, name_prefix: str = "",
                                clock: clock_mod.Clock | None = None, data_dir: str = "") -> list[asyncio.Task[Any]]:
    """Start node agents with the credentials of a kubeconfig (e.g. the admin one) instead of node certs."""
    clk = clock or clock_mod.Clock()
    specs = plan_nodes(nodes, prefix=name_prefix or (VIRTUAL_PREFIX if virtual else DEFAULT_PREFIX),
                       zones=zones, virtual=virtual)
    machine = await asyncio.to_thread(machine_mod.detect)
    loop = asyncio.get_running_loop()
    tasks = []
    for spec in specs:
        client = config.from_kubeconfig(kubeconfig, user_agent=USER_AGENT, field_manager=FIELD_MANAGER)
        client.max_connections = VIRTUAL_AGENT_CONNECTIONS if spec.virtual else AGENT_CONNECTIONS
        cap = _capacity(spec, machine, len(specs))
        rt = _runtime_for(spec, clk, client=client, data_dir=data_dir or os.path.dirname(os.path.abspath(kubeconfig)),
                          allocatable=cap)
        agent = NodeAgent(client, spec, machine=machine, capacity=cap, rt=rt, clock=clk)
        tasks.append(loop.create_task(_supervise(agent, client), name=f"node-{spec.name}"))
    if specs:
        tasks.append(_provisioner(config.from_kubeconfig(kubeconfig, user_agent=provisioner.USER_AGENT), specs,
                                  data_dir=data_dir or os.path.dirname(os.path.abspath(kubeconfig)), clock=clk))
    return tasks


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def _server_of(kubeconfig: str) -> str:
    client = config.from_kubeconfig(kubeconfig)
    return client.base_url


async def _main(args: argparse.Namespace) -> None:
    zones = [z.strip() for z in (args.zones or "").split(",") if z.strip()]
    if args.data_dir:
        # The cluster's own CA is at hand: authenticate each node as system:node:<name>.
        pki = pki_mod.load(args.data_dir)
        tasks = await start(url=_server_of(args.kubeconfig), pki=pki, nodes=args.nodes, zones=zones,
                            virtual=not args.process, name_prefix=args.name_prefix, data_dir=args.data_dir,
                            pod_network=args.pod_network, cluster_cidr=args.cluster_cidr,
                            cluster_dns=_split(args.cluster_dns), cluster_domain=args.cluster_domain)
    else:
        tasks = await start_from_kubeconfig(args.kubeconfig, nodes=args.nodes, zones=zones,
                                            virtual=not args.process, name_prefix=args.name_prefix)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"pocketkube node agents started: {len(tasks)}", flush=True)
    await stop.wait()
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: Sequence[str] | None = None) -> None:
    """Run node agents (virtual, or running pods as processes with --process) against a cluster until SIGINT/SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m pocketkube.node.agent", description=main.__doc__)
    parser.add_argument("--kubeconfig", required=True, help="kubeconfig of the cluster to join")
    parser.add_argument("--nodes", type=int, default=1, help="how many nodes to run (default 1)")
    parser.add_argument("--zones", default="", help="comma-separated zones, assigned round robin")
    parser.add_argument("--name-prefix", default="", help="node names are <prefix>-1, <prefix>-2, ...")
    parser.add_argument("--data-dir", default="", help="the cluster's data dir: sign node certificates with its CA")
    parser.add_argument("--process", action="store_true",
                        help="run pods as local processes (default: virtual nodes that run nothing)")
    parser.add_argument("--pod-network", choices=podnet.MODES, default="off",
                        help="own network namespace and IP per pod (auto: where the host allows; default off)")
    parser.add_argument("--cluster-cidr", default="", help="pod IPs: node i gets the i-th /24 of it")
    parser.add_argument("--cluster-dns", default=None, metavar="IP[,IP]",
                        help="nameservers of ClusterFirst pods (default: 10.96.0.10, kube-dns; \"\": none)")
    parser.add_argument("--cluster-domain", default=resolvconf.CLUSTER_DOMAIN,
                        help="the cluster's DNS domain, searched by pods (default cluster.local)")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    try:
        dns_settings(_split(args.cluster_dns), args.cluster_domain)
    except ValueError as e:
        parser.error(f"--cluster-dns: {e}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
