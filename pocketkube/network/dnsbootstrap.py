"""Starts cluster DNS: its client identity, its server and informers, and the kube-dns Service pointing at it."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
from collections.abc import Sequence
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, rest
from pocketkube.network import dnsrecords, dnsserver, resolvconf

log = logging.getLogger("pocketkube.dns")

# kubeadm runs CoreDNS as this ServiceAccount, bound to ClusterRole system:coredns; we present it in a client cert.
USER = "system:serviceaccount:kube-system:coredns"
GROUPS = ("system:serviceaccounts", "system:serviceaccounts:kube-system")
USER_AGENT = "coredns/1.11.3 (linux/amd64) pocketkube"
# The bootstrap writes kube-system objects with the admin identity, as kubeadm applies its addons.
FIELD_MANAGER = "kubeadm"
CERT_DAYS = 365
NAMESPACE, NAME = "kube-system", "kube-dns"
SERVICE_CIDR = "10.96.0.0/12"
RECHECK_SECONDS = 10.0
LABELS = {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true", "kubernetes.io/name": "CoreDNS"}
MANAGED_BY = "dns.pocketkube.io"
SERVICE_ACCOUNTS = rest.GVR("", "v1", "serviceaccounts")
ENDPOINTS = rest.GVR("", "v1", "endpoints")


def cluster_dns_ip(service_cidr: str = SERVICE_CIDR) -> str:
    """The 10th address of the service range (10.96.0.10 for 10.96.0.0/12), as kubeadm picks it."""
    return str(ipaddress.ip_network(service_cidr, strict=False)[10])


def service(cluster_ip: str) -> dict[str, Any]:
    """The kube-dns Service as kubeadm creates it, without a selector: its endpoints are ours."""
    ports = [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
             {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
             {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153}]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": dict(LABELS),
                         "annotations": {"prometheus.io/port": "9153", "prometheus.io/scrape": "true"}},
            "spec": {"clusterIP": cluster_ip, "clusterIPs": [cluster_ip], "ports": ports, "type": "ClusterIP"}}


def _ports(port: int) -> list[dict[str, Any]]:
    return [{"name": "dns", "port": port, "protocol": "UDP"}, {"name": "dns-tcp", "port": port, "protocol": "TCP"}]


def endpoint_slice(ip: str, port: int) -> dict[str, Any]:
    """The hand-managed slice of a selectorless Service: the DNS server's real address and port."""
    family = "IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {**LABELS, dnsrecords.SERVICE_NAME_LABEL: NAME,
                                    "endpointslice.kubernetes.io/managed-by": MANAGED_BY}},
            "addressType": family,
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}}],
            "ports": _ports(port)}


def endpoints(ip: str, port: int) -> dict[str, Any]:
    """The legacy Endpoints; skip-mirror keeps the mirroring controller from making a second slice."""
    return {"apiVersion": "v1", "kind": "Endpoints",
            "metadata": {"name": NAME, "namespace": NAMESPACE,
                         "labels": {**LABELS, "endpointslice.kubernetes.io/skip-mirror": "true"}},
            "subsets": [{"addresses": [{"ip": ip}], "ports": _ports(port)}]}


async def _ensure(client: rest.Client, gvr: rest.GVR, want: dict[str, Any], fields: Sequence[str]) -> None:
    """Create want, or bring fields (and labels) of the existing object back to it."""
    try:
        current = await client.get(gvr.path(NAMESPACE, want["metadata"]["name"]))
    except errors.NotFound:
        await client.create(gvr, want, namespace=NAMESPACE)
        return
    labels = dict((current.get("metadata") or {}).get("labels") or {})
    if all(current.get(f) == want.get(f) for f in fields) and labels.items() >= want["metadata"]["labels"].items():
        return
    updated = {**current, **{f: want[f] for f in fields if f in want}}
    updated["metadata"] = {**current["metadata"], "labels": {**labels, **want["metadata"]["labels"]}}
    await client.update(gvr, updated)


async def ensure_objects(client: rest.Client, *, ip: str, port: int, cluster_ip: str) -> None:
    """The coredns ServiceAccount, the kube-dns Service, its EndpointSlice and Endpoints."""
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": NAMESPACE}}
    try:
        await client.create(SERVICE_ACCOUNTS, sa, namespace=NAMESPACE)
    except errors.AlreadyExists:
        pass
    try:
        await client.get(dnsserver.SERVICES.path(NAMESPACE, NAME))
    except errors.NotFound:
        await client.create(dnsserver.SERVICES, service(cluster_ip), namespace=NAMESPACE)
    await _ensure(client, dnsserver.ENDPOINT_SLICES, endpoint_slice(ip, port), ("addressType", "endpoints", "ports"))
    await _ensure(client, ENDPOINTS, endpoints(ip, port), ("subsets",))


@dataclasses.dataclass
class Settings:
    """Where the DNS server listens and whom it forwards to (None: the nameservers of /etc/resolv.conf)."""

    host: str = "127.0.0.1"
    port: int = 0
    upstreams: list[str] | None = None
    resolv_conf: str = "/etc/resolv.conf"
    service_cidr: str = SERVICE_CIDR
    ttl: int = dnsrecords.TTL

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"dns port must be between 0 and 65535, not {self.port}")
        for u in self.upstreams or []:
            dnsserver.parse_upstream(u)

    def upstream_addresses(self) -> list[tuple[str, int]]:
        names = self.upstreams if self.upstreams is not None else list(
            resolvconf.read_host(self.resolv_conf).nameservers)
        out = []
        for n in names:
            try:
                out.append(dnsserver.parse_upstream(n))
            except ValueError:
                log.warning("ignoring upstream nameserver %r", n)
        return out


class ClusterDNS:
    """A bound DNS server; run() feeds it from the API and keeps kube-dns pointing at it."""

    def __init__(self, settings: Settings, *, url: str, pki: pki_mod.Pki,
                 clock: clock_mod.Clock | None = None) -> None:
        self.settings = settings
        self.url = url
        self.pki = pki
        self.clock = clock or clock_mod.Clock()
        self.cluster_ip = cluster_dns_ip(settings.service_cidr)
        self.records = dnsrecords.Records(ttl=settings.ttl, ns_addresses=[self.cluster_ip])
        self.server = dnsserver.Server(self.records, upstreams=settings.upstream_addresses())

    @property
    def address(self) -> str:
        return f"[{self.server.host}]:{self.server.port}" if ":" in self.server.host else \
            f"{self.server.host}:{self.server.port}"

    async def listen(self) -> int:
        """Bind the sockets now, so the port is known before the API clients start."""
        return await self.server.listen(self.settings.host, self.settings.port)

    async def run(self) -> None:
        """Follow the API and keep the kube-dns objects current until cancelled; then close the sockets."""
        cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, self.pki, USER, groups=GROUPS, days=CERT_DAYS)
        client = config.from_pem(self.url, ca_pem=self.pki.ca_cert_pem, cert_pem=cert, key_pem=key,
                                 user_agent=USER_AGENT)
        admin = config.from_pem(self.url, ca_pem=self.pki.ca_cert_pem, cert_pem=self.pki.admin_cert_pem,
                                key_pem=self.pki.admin_key_pem, field_manager=FIELD_MANAGER)
        informers = dnsserver.follow(self.records, client, clock=self.clock)
        feed = asyncio.get_running_loop().create_task(dnsserver.run_informers(self.records, informers),
                                                      name="dns-informers")
        try:
            await self._keep_objects(admin)
        finally:
            feed.cancel()
            await asyncio.gather(feed, return_exceptions=True)
            await self.server.close()
            await client.close()
            await admin.close()

    async def _keep_objects(self, admin: rest.Client) -> None:
        host = self.server.host
        ip = "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)
        delay = 0.2
        while True:
            try:
                await ensure_objects(admin, ip=ip, port=self.server.port, cluster_ip=self.cluster_ip)
                delay = RECHECK_SECONDS
            except (errors.APIError, OSError, ValueError) as e:
                log.warning("cannot set up the kube-dns Service yet: %s", e)
                delay = min(RECHECK_SECONDS, delay * 2)
            except Exception:  # noqa: BLE001 - e.g. aiohttp errors while the API starts; retried
                log.exception("setting up the kube-dns Service failed")
                delay = RECHECK_SECONDS
            await self.clock.sleep(delay)
