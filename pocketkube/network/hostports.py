"""Pod hostPorts as the CNI portmap plugin forwards them: which ports map where, and the nftables script for it."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from pocketkube.network import nftables

# portmap's default masquerade bit (markMasqBit 13), so kube-proxy's 0x4000 keeps its own meaning.
MASQ_MARK = "0x2000"
PROTOCOLS = ("TCP", "UDP", "SCTP")
REASON_CONFLICT = "HostPortConflict"


@dataclasses.dataclass(frozen=True)
class PortMapping:
    """One hostPort of one running pod: traffic to host_ip:host_port goes to pod_ip:container_port."""

    namespace: str
    pod: str
    node: str
    protocol: str  # tcp | udp | sctp
    host_ip: str  # "" = every address of the host
    host_port: int
    pod_ip: str
    container_port: int

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.pod}:{self.protocol}/{self.host_ip}:{self.host_port}"

    @property
    def chain(self) -> str:
        return "hp_" + hashlib.sha256(self.key.encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class Conflict:
    """A pod whose hostPort another pod on a node of this host already holds (the host's addresses are shared)."""

    namespace: str
    pod: str
    uid: str
    node: str
    message: str


def _ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def node_cidrs(nodes: Iterable[Mapping[str, Any]], *, annotation: str,
               bridges: Iterable[str] | None = None) -> dict[str, str]:
    """Node name -> its pod CIDR, for nodes whose pods sit on a bridge ("bridge NAME GW/PREFIX") of this host.

    bridges, when given, are the bridge interfaces present here: a node of another machine has none."""
    present = None if bridges is None else set(bridges)
    out = {}
    for n in nodes:
        meta = n.get("metadata") or {}
        words = str((meta.get("annotations") or {}).get(annotation) or "").split()
        if len(words) < 3 or words[0] != "bridge" or (present is not None and words[1] not in present):
            continue
        try:
            out[str(meta.get("name") or "")] = str(ipaddress.ip_network(words[2], strict=False))
        except ValueError:
            continue
    return out


def _asks_host_port(pod: Mapping[str, Any]) -> bool:
    """Whether any container of the pod names a hostPort (the rare pod: planning skips the others at once)."""
    spec = pod.get("spec") or {}
    return any(p.get("hostPort") for key in ("initContainers", "containers") for c in spec.get(key) or []
               for p in c.get("ports") or [])


def _candidates(pod: Mapping[str, Any], cidrs: Mapping[str, str]) -> list[PortMapping]:
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    node = str(spec.get("nodeName") or "")
    pod_ip = str(status.get("podIP") or "")
    # Pods on the host network listen on the host's ports themselves; finished pods hold none.
    if spec.get("hostNetwork") or status.get("phase") != "Running" or node not in cidrs or not _ipv4(pod_ip):
        return []
    if ipaddress.ip_address(pod_ip) not in ipaddress.ip_network(cidrs[node]):
        return []
    out = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in c.get("ports") or []:
            host_port, port = p.get("hostPort"), p.get("containerPort")
            proto = str(p.get("protocol") or "TCP")
            if not isinstance(host_port, int) or not isinstance(port, int) or proto not in PROTOCOLS:
                continue
            if not (0 < host_port < 65536 and 0 < port < 65536):
                continue
            host_ip = str(p.get("hostIP") or "")
            if host_ip in ("0.0.0.0", "::"):
                host_ip = ""  # the scheduler's NodePorts plugin reads both as "every address"
            elif host_ip and not _ipv4(host_ip):
                continue  # this table is IPv4 only
            out.append(PortMapping(namespace=str(meta.get("namespace") or ""), pod=str(meta.get("name") or ""),
                                   node=node, protocol=proto.lower(), host_ip=host_ip, host_port=host_port,
                                   pod_ip=pod_ip, container_port=port))
    return out


def _clash(a: PortMapping, b: PortMapping) -> bool:
    return (a.protocol == b.protocol and a.host_port == b.host_port
            and (not a.host_ip or not b.host_ip or a.host_ip == b.host_ip))


def plan(pods: Iterable[Mapping[str, Any]], *, cidrs: Mapping[str, str]) -> tuple[list[PortMapping], list[Conflict]]:
    """The mappings to install and the pods left out because an older pod of another node holds their port.

    The process nodes of one host share its addresses (all report InternalIP 127.0.0.1), so the scheduler,
    which only compares pods of one node, can place the same hostPort twice; the oldest pod keeps it."""
    def age(p: Mapping[str, Any]) -> tuple[str, str, str]:
        meta = p.get("metadata") or {}
        return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""))

    kept: list[PortMapping] = []
    conflicts: list[Conflict] = []
    for pod in sorted((p for p in pods if _asks_host_port(p)), key=age):
        meta = pod.get("metadata") or {}
        for m in _candidates(pod, cidrs):
            holder = next((k for k in kept if _clash(k, m) and (k.namespace, k.pod) != (m.namespace, m.pod)), None)
            if holder is None:
                if m not in kept:
                    kept.append(m)
                continue
            where = f"{m.host_ip or '0.0.0.0'}:{m.host_port}/{m.protocol.upper()}"
            conflicts.append(Conflict(
                namespace=m.namespace, pod=m.pod, uid=str(meta.get("uid") or ""), node=m.node,
                message=f"hostPort {where} is not forwarded to this pod: pod {holder.namespace}/{holder.pod} on "
                        f"node {holder.node} holds it, and the nodes share this host's addresses"))
    return sorted(kept, key=lambda m: (m.host_port, m.protocol, m.host_ip, m.key)), conflicts


def render(mappings: Iterable[PortMapping], *, table: str) -> str:
    """An `nft -f` script replacing the whole table at once (portmap's CNI-HOSTPORT-DNAT and -MASQ chains).

    DNAT happens in prerouting (traffic from outside and from pods) and output (the host itself, even from
    127.0.0.1); localhost-sourced and hairpin traffic is masqueraded so the pod's reply comes back through
    the host. Sending 127.0.0.1-sourced packets out of the bridge needs route_localnet on it."""
    dispatch: list[str] = []
    chains: dict[str, list[str]] = {}
    for m in mappings:
        dst = f"ip daddr {m.host_ip} " if m.host_ip else ""
        dispatch.append(f'{dst}{m.protocol} dport {m.host_port} goto {m.chain} comment "{m.namespace}/{m.pod}"')
        chains[m.chain] = [f"ip saddr {m.pod_ip} meta mark set meta mark | {MASQ_MARK}",
                           f"ip saddr 127.0.0.0/8 meta mark set meta mark | {MASQ_MARK}",
                           f"meta l4proto {m.protocol} dnat to {m.pod_ip}:{m.container_port}"]
    # After kube-proxy's -100: like portmap's chains, which come after KUBE-SERVICES.
    base = (("prerouting", "nat hook prerouting priority -99", ["fib daddr type local jump hostports"]),
            ("output", "nat hook output priority -99", ["fib daddr type local jump hostports"]),
            ("postrouting", "nat hook postrouting priority 99",
             [f"meta mark & {MASQ_MARK} == {MASQ_MARK} masquerade"]),
            ("hostports", "", dispatch))
    return nftables.table_script(table, base=base, chains=chains)


def cleanup_script(table: str) -> str:
    """An `nft -f` script removing the table if it exists."""
    return nftables.cleanup_script(table)
