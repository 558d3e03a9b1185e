"""A pod's /etc/resolv.conf from its dnsPolicy and dnsConfig, formed as the kubelet does (pure)."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

CLUSTER_DOMAIN = "cluster.local"
DEFAULT_OPTIONS = ("ndots:5",)
# Limits of k8s.io/kubernetes/pkg/apis/core/validation: MaxDNSNameservers, MaxDNSSearchPathsExpanded,
# MaxDNSSearchListCharsExpanded; a search domain longer than a DNS-1123 subdomain breaks glibc.
MAX_NAMESERVERS = 3
MAX_SEARCH_PATHS = 32
MAX_SEARCH_CHARS = 2048
MAX_DOMAIN_LENGTH = 253
EVENT_REASON = "DNSConfigForming"
MISSING_CLUSTER_DNS = "MissingClusterDNS"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The kubelet's --cluster-dns, --cluster-domain and --resolv-conf: what every pod's resolver starts from."""

    cluster_dns: tuple[str, ...] = ()
    cluster_domain: str = CLUSTER_DOMAIN
    resolv_conf: str = "/etc/resolv.conf"

    def __post_init__(self) -> None:
        for ip in self.cluster_dns:
            try:
                ipaddress.ip_address(ip)
            except ValueError:
                raise ValueError(f"cluster DNS address {ip!r} is not an IP address") from None


@dataclasses.dataclass(frozen=True)
class HostConfig:
    """What a resolv.conf file says: nameservers, search domains and options."""

    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


@dataclasses.dataclass
class PodDNS:
    """The formed configuration, its file text, and the Warning events (reason, message) to record on the pod."""

    nameservers: list[str]
    searches: list[str]
    options: list[str]
    events: list[tuple[str, str]]

    def render(self) -> str:
        """The file as containerd writes it: search, then one nameserver line each, then options."""
        out = ""
        if self.searches:
            out += "search " + " ".join(self.searches) + "\n"
        out += "".join(f"nameserver {ns}\n" for ns in self.nameservers)
        if self.options:
            out += "options " + " ".join(self.options) + "\n"
        return out


def _merge_options(options: Iterable[str], more: Iterable[str]) -> list[str]:
    """Options keyed by their name (before ":"): a later one replaces an earlier one in place."""
    merged: dict[str, str] = {}
    for opt in [*options, *more]:
        merged[opt.split(":", 1)[0]] = opt
    return list(merged.values())


def parse(text: str) -> HostConfig:
    """Parse resolv.conf text as the kubelet does: the last search line wins, trailing dots and "." dropped."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].split(";", 1)[0]
        fields = line.split()
        if not fields:
            continue
        if fields[0] == "nameserver" and len(fields) > 1:
            nameservers.append(fields[1])
        elif fields[0] == "search":
            searches = [s.removesuffix(".") for s in fields[1:] if s != "."]
        elif fields[0] == "options":
            options = _merge_options(options, fields[1:])
    return HostConfig(tuple(nameservers), tuple(searches), tuple(options))


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))


def dns_type(pod: Mapping[str, Any]) -> str:
    """"cluster", "host" or "none": which base the pod's dnsPolicy starts from."""
    spec = pod.get("spec") or {}
    policy = spec.get("dnsPolicy") or "ClusterFirst"
    if policy == "None":
        return "none"
    if policy == "ClusterFirstWithHostNet":
        return "cluster"
    if policy == "ClusterFirst" and not spec.get("hostNetwork"):
        return "cluster"
    # Default, and ClusterFirst on the host network, which falls back to the node's resolver.
    return "host"


def form(pod: Mapping[str, Any], *, host: HostConfig, cluster_dns: Sequence[str],
         cluster_domain: str = CLUSTER_DOMAIN) -> PodDNS:
    """The resolver configuration the kubelet gives a pod (GetPodDNS then formDNSConfigFitsLimits)."""
    ns = (pod.get("metadata") or {}).get("namespace") or "default"
    events: list[tuple[str, str]] = []
    servers, searches, options = list(host.nameservers), list(host.searches), list(host.options)
    kind = dns_type(pod)
    if kind == "none":
        servers, searches, options = [], [], []
    elif kind == "cluster" and cluster_dns:
        servers = list(cluster_dns)
        if cluster_domain:
            searches = _unique([f"{ns}.svc.{cluster_domain}", f"svc.{cluster_domain}", cluster_domain, *searches])
        options = list(DEFAULT_OPTIONS)
    elif kind == "cluster":
        events.append((MISSING_CLUSTER_DNS, f'pod: "{_pod_ref(pod)}". kubelet does not have ClusterDNS IP '
                       'configured and cannot create Pod using "ClusterFirst" policy. Falling back to "Default" policy.'))
    config = (pod.get("spec") or {}).get("dnsConfig")
    if config:
        servers = _unique([*servers, *(config.get("nameservers") or [])])
        searches = _unique([*searches, *(config.get("searches") or [])])
        extra = [o["name"] + (":" + str(o["value"]) if o.get("value") else "")
                 for o in config.get("options") or [] if o.get("name")]
        options = _merge_options(options, extra)
    searches = _fit_searches(searches, events)
    if len(servers) > MAX_NAMESERVERS:
        servers = servers[:MAX_NAMESERVERS]
        events.append((EVENT_REASON, "Nameserver limits were exceeded, some nameservers have been omitted, "
                       f"the applied nameserver line is: {' '.join(servers)}"))
    return PodDNS(servers, searches, options, events)


def _fit_searches(searches: list[str], events: list[tuple[str, str]]) -> list[str]:
    exceeded = len(searches) > MAX_SEARCH_PATHS
    kept = [s for s in searches[:MAX_SEARCH_PATHS] if len(s) <= MAX_DOMAIN_LENGTH]
    exceeded = exceeded or len(kept) < min(len(searches), MAX_SEARCH_PATHS)
    line = len(" ".join(kept))
    if line > MAX_SEARCH_CHARS:
        # Drop domains from the end until the line fits.
        cut = 0
        while kept and line - cut > MAX_SEARCH_CHARS:
            cut += len(kept.pop()) + 1
        exceeded = True
    if exceeded:
        events.append((EVENT_REASON, "Search Line limits were exceeded, some search paths have been omitted, "
                       f"the applied search line is: {' '.join(kept)}"))
    return kept


def _pod_ref(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace', '')}({meta.get('uid', '')})"


def read_host(path: str = "/etc/resolv.conf") -> HostConfig:
    """The node's resolver configuration; an unreadable file counts as empty."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse(f.read(10 << 20))
    except OSError:
        return HostConfig()


def write(pod_dir: str, pod_dns: PodDNS) -> str:
    """Materialise the pod's resolv.conf as <pod_dir>/resolv.conf (atomically) and return its path."""
    path = os.path.join(pod_dir, "resolv.conf")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(pod_dns.render())
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def uses_host_file(pod: Mapping[str, Any]) -> bool:
    """A host-network pod whose resolver is the node's own, unchanged: it needs no file of its own."""
    spec = pod.get("spec") or {}
    return bool(spec.get("hostNetwork")) and dns_type(pod) == "host" and not spec.get("dnsConfig")


def pod_file(pod: Mapping[str, Any], settings: Settings, pod_dir: str) -> tuple[PodDNS, str]:
    """Form the pod's resolver configuration from the node's file and settings, and write it into pod_dir."""
    formed = form(pod, host=read_host(settings.resolv_conf), cluster_dns=settings.cluster_dns,
                  cluster_domain=settings.cluster_domain)
    os.makedirs(pod_dir, exist_ok=True)
    return formed, write(pod_dir, formed)
