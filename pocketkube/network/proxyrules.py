"""Service proxy rules: from Services and EndpointSlices, each frontend (ip:port) and its backends, as nftables text."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping
from typing import Any

from pocketkube.network import nftables

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MASQ_MARK = "0x4000"
# sessionAffinityConfig.clientIP.timeoutSeconds' default (3 hours).
DEFAULT_AFFINITY_SECONDS = 10800


@dataclasses.dataclass(frozen=True)
class Backend:
    """One endpoint address and port a service port sends to."""

    ip: str
    port: int
    node: str = ""


@dataclasses.dataclass(frozen=True)
class ServicePort:
    """One port of one Service, its frontends and the endpoints behind them."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # tcp | udp
    cluster_ips: tuple[str, ...]
    port: int
    node_port: int
    external_ips: tuple[str, ...]  # spec.externalIPs and status.loadBalancer.ingress IPs
    backends: tuple[Backend, ...]  # for traffic to the ClusterIP
    external_backends: tuple[Backend, ...]  # for NodePort/LoadBalancer/externalIPs traffic
    affinity_seconds: int = 0
    # internalTrafficPolicy Local: a pod's traffic to the ClusterIP only goes to endpoints on its own node.
    node_local: bool = False
    # externalTrafficPolicy Local: outside traffic keeps its source address and only reaches this machine's endpoints.
    external_local: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}:{self.port_name}"

    @property
    def chain(self) -> str:
        return "svc_" + _digest(self.key + "/" + self.protocol)

    @property
    def ext_chain(self) -> str:
        return "ext_" + _digest(self.key + "/" + self.protocol)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _ready(ep: Mapping[str, Any]) -> bool:
    cond = ep.get("conditions") or {}
    return cond.get("ready") is not False  # nil means ready


def _serving_terminating(ep: Mapping[str, Any]) -> bool:
    cond = ep.get("conditions") or {}
    return cond.get("serving") is not False and cond.get("terminating") is True


def _is_ipv4(text: str) -> bool:
    try:
        return ipaddress.ip_address(text).version == 4
    except ValueError:
        return False


def endpoints_for(port: Mapping[str, Any], slices: Iterable[Mapping[str, Any]], *,
                  local_nodes: frozenset[str] | None = None) -> tuple[Backend, ...]:
    """The endpoints kube-proxy uses for one service port: ready ones, else serving-terminating ones (sorted)."""
    name, proto = str(port.get("name") or ""), str(port.get("protocol") or "TCP")
    ready: set[Backend] = set()
    fallback: set[Backend] = set()
    for sl in slices:
        if sl.get("addressType", "IPv4") != "IPv4":
            continue
        number = next((p.get("port") for p in sl.get("ports") or []
                       if str(p.get("name") or "") == name and str(p.get("protocol") or "TCP") == proto), None)
        if not isinstance(number, int) or not 0 < number < 65536:
            continue
        for ep in sl.get("endpoints") or []:
            node = str(ep.get("nodeName") or "")
            if local_nodes is not None and node not in local_nodes:
                continue
            for addr in (ep.get("addresses") or [])[:1]:
                if not _is_ipv4(str(addr)):
                    continue
                b = Backend(ip=str(addr), port=number, node=node)
                if _ready(ep):
                    ready.add(b)
                elif _serving_terminating(ep):
                    fallback.add(b)
    chosen = ready or fallback
    return tuple(sorted(chosen, key=lambda b: (ipaddress.ip_address(b.ip), b.port)))


def service_ports(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]], *,
                  local_nodes: frozenset[str] = frozenset()) -> list[ServicePort]:
    """Every proxied port of the given Services (ExternalName and headless ones have none), sorted by key."""
    by_service: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        owner = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if owner:
            by_service.setdefault((str(meta.get("namespace") or ""), str(owner)), []).append(sl)
    out = []
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
        kind = spec.get("type") or "ClusterIP"
        ips = tuple(ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and _is_ipv4(str(ip)))
        if kind == "ExternalName" or not ips:
            continue
        external = [str(ip) for ip in spec.get("externalIPs") or [] if _is_ipv4(str(ip))]
        if kind == "LoadBalancer":
            external += [str(i["ip"]) for i in ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
                         if i.get("ip") and _is_ipv4(str(i["ip"]))]
        affinity = 0
        if spec.get("sessionAffinity") == "ClientIP":
            cfg = ((spec.get("sessionAffinityConfig") or {}).get("clientIP") or {}).get("timeoutSeconds")
            affinity = cfg if isinstance(cfg, int) and cfg > 0 else DEFAULT_AFFINITY_SECONDS
        own = by_service.get((ns, name), [])
        for p in spec.get("ports") or []:
            proto = str(p.get("protocol") or "TCP")
            if proto not in ("TCP", "UDP") or not isinstance(p.get("port"), int):
                continue  # SCTP is not proxied here
            backends = endpoints_for(p, own, local_nodes=local_nodes
                                     if spec.get("internalTrafficPolicy") == "Local" else None)
            ext = endpoints_for(p, own, local_nodes=local_nodes
                                if spec.get("externalTrafficPolicy") == "Local" else None)
            node_port = p.get("nodePort") if kind in ("NodePort", "LoadBalancer") else 0
            out.append(ServicePort(namespace=ns, name=name, port_name=str(p.get("name") or ""),
                                   protocol=proto.lower(), cluster_ips=ips, port=int(p["port"]),
                                   node_port=node_port if isinstance(node_port, int) else 0,
                                   external_ips=tuple(sorted(set(external))), backends=backends,
                                   external_backends=ext, affinity_seconds=affinity,
                                   node_local=spec.get("internalTrafficPolicy") == "Local",
                                   external_local=spec.get("externalTrafficPolicy") == "Local"))
    return sorted(out, key=lambda s: (s.key, s.protocol))


@dataclasses.dataclass(frozen=True)
class HealthCheck:
    """A LoadBalancer Service with externalTrafficPolicy Local: its healthCheckNodePort and local ready endpoints."""

    namespace: str
    name: str
    port: int
    local_endpoints: int


def health_checks(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]], *,
                  local_nodes: frozenset[str]) -> list[HealthCheck]:
    """The health checks kube-proxy serves, counting distinct ready ip:port endpoints on this machine's nodes."""
    ports: dict[tuple[str, str], int] = {}
    for svc in services:
        meta, spec = svc.get("metadata") or {}, svc.get("spec") or {}
        port = spec.get("healthCheckNodePort")
        if spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local" \
                and isinstance(port, int) and 0 < port < 65536:
            ports[(str(meta.get("namespace") or ""), str(meta.get("name") or ""))] = port
    counted: dict[tuple[str, str], set[tuple[str, int]]] = {key: set() for key in ports}
    for sl in slices if ports else ():  # most clusters have none: skip the walk over every slice
        meta = sl.get("metadata") or {}
        found = counted.get((str(meta.get("namespace") or ""),
                             str((meta.get("labels") or {}).get(SERVICE_NAME_LABEL) or "")))
        if found is None or sl.get("addressType", "IPv4") != "IPv4":
            continue
        numbers = [n for n in (p.get("port") for p in sl.get("ports") or []) if isinstance(n, int) and 0 < n < 65536]
        for ep in sl.get("endpoints") or []:
            if str(ep.get("nodeName") or "") in local_nodes and _ready(ep):
                found.update((str(addr), n) for addr in (ep.get("addresses") or [])[:1] for n in numbers)
    return [HealthCheck(namespace=key[0], name=key[1], port=port, local_endpoints=len(counted[key]))
            for key, port in sorted(ports.items())]


def _ep_chain(sp: ServicePort, b: Backend) -> str:
    return "ep_" + _digest(f"{sp.key}/{sp.protocol}/{b.ip}:{b.port}")


def _dispatch(sp: ServicePort, backends: tuple[Backend, ...]) -> list[str]:
    """Rules of a service chain: sticky clients first, then a random endpoint (or reject when there is none)."""
    if not backends:
        return []  # the filter chains reject it (reject is not allowed in nat chains)
    lines = []
    if sp.affinity_seconds:
        lines += [f"ip saddr @aff_{_ep_chain(sp, b)[3:]} goto {_ep_chain(sp, b)}" for b in backends]
    if len(backends) == 1:
        lines.append(f"goto {_ep_chain(sp, backends[0])}")
    else:
        choices = ", ".join(f"{i} : goto {_ep_chain(sp, b)}" for i, b in enumerate(backends))
        lines.append(f"numgen random mod {len(backends)} vmap {{ {choices} }}")
    return lines


def _external(sp: ServicePort, *, cluster_cidr: str) -> list[str]:
    """Rules of a NodePort/LoadBalancer/externalIP chain, as kube-proxy's external chain.

    Cluster policy masquerades everything (the reply must come back through this node). Local policy sends
    pods and the host to the ClusterIP's chain (the host masqueraded: its source is one of the node's own
    addresses) and everything else, unmasqueraded so the pod sees the client's address, to a local endpoint;
    with none, that traffic falls through un-DNATed to the filter chain's drop."""
    if not sp.external_local or not sp.backends:
        return [f"meta mark set meta mark | {MASQ_MARK}", *_dispatch(sp, sp.external_backends)]
    return [f"ip saddr {cluster_cidr} goto {sp.chain}",
            f"fib saddr type local meta mark set meta mark | {MASQ_MARK}",
            f"fib saddr type local goto {sp.chain}",
            *_dispatch(sp, sp.external_backends)]


def _node_chain(sp: ServicePort, node: str) -> str:
    return "loc_" + _digest(f"{sp.key}/{sp.protocol}/{node}")


def render(ports: list[ServicePort], *, table: str, cluster_cidr: str, bridges: Iterable[str] = (),
           node_bridges: Mapping[str, str] | None = None) -> str:
    """An `nft -f` script that replaces the whole table at once (the kernel applies it atomically).

    bridges are this cluster's pod bridges: traffic from another cluster's pods on this machine (another
    pkb* bridge) is left to that cluster's table, so clusters with overlapping Service CIDRs stay apart.
    node_bridges (node name -> its bridge) tell which node a pod's traffic comes from, for
    internalTrafficPolicy Local; the host itself counts as every node."""
    chains: dict[str, list[str]] = {}
    sets: list[str] = []
    services: list[str] = []
    nodeports: list[str] = []
    rejects: list[str] = []
    done: set[str] = set()
    for sp in ports:
        for node, bridge in sorted((node_bridges or {}).items()) if sp.node_local and sp.backends else ():
            # As kube-proxy: a pod's node without a ready endpoint drops the traffic rather than send it away.
            mine = tuple(b for b in sp.backends if b.node == node)
            for ip in sp.cluster_ips:
                match = f'iifname "{bridge}" ip daddr {ip} {sp.protocol} dport {sp.port}'
                if mine:
                    services.append(f"{match} goto {_node_chain(sp, node)}")
                else:  # left un-DNATed for the filter chains to drop
                    services.append(f"{match} return")
                    rejects.append(f'{match} drop comment "{sp.key} has no local endpoints"')
            if mine:
                chains[_node_chain(sp, node)] = _dispatch(sp, mine)
        for ip in sp.cluster_ips:
            if sp.backends:
                services.append(f"ip daddr {ip} {sp.protocol} dport {sp.port} goto {sp.chain}")
            else:
                rejects.append(f'ip daddr {ip} {sp.protocol} dport {sp.port} reject comment "{sp.key} has no endpoints"')
        # Local policy: pods and the host itself still reach every endpoint, so only outside traffic can be dropped.
        short_circuit = sp.external_local and bool(sp.backends)
        if not sp.external_backends:
            verdict, why = ("drop", "has no local endpoints") if short_circuit else ("reject", "has no endpoints")
            rejects += [f'ip daddr {ip} {sp.protocol} dport {sp.port} {verdict} comment "{sp.key} {why}"'
                        for ip in sp.external_ips]
            if sp.node_port:
                rejects.append(f'fib daddr type local {sp.protocol} dport {sp.node_port} {verdict} '
                               f'comment "{sp.key} {why}"')
        if sp.backends:
            chains[sp.chain] = [f"ip saddr != {cluster_cidr} meta mark set meta mark | {MASQ_MARK}",
                                *_dispatch(sp, sp.backends)]
        if (sp.node_port or sp.external_ips) and (sp.external_backends or short_circuit):
            for ip in sp.external_ips:
                services.append(f"ip daddr {ip} {sp.protocol} dport {sp.port} goto {sp.ext_chain}")
            if sp.node_port:
                nodeports.append(f"{sp.protocol} dport {sp.node_port} goto {sp.ext_chain}")
            chains[sp.ext_chain] = _external(sp, cluster_cidr=cluster_cidr)
        for b in sorted(set(sp.backends) | set(sp.external_backends), key=lambda b: (b.ip, b.port)):
            name = _ep_chain(sp, b)
            if name in done:
                continue
            done.add(name)
            rules = [f"ip saddr {b.ip} meta mark set meta mark | {MASQ_MARK}"]  # hairpin: a pod reaching itself
            if sp.affinity_seconds:
                sets.append(f"set aff_{name[3:]} {{ type ipv4_addr; flags dynamic,timeout; "
                            f"timeout {sp.affinity_seconds}s; }}")
                rules.append(f"update @aff_{name[3:]} {{ ip saddr }}")
            rules.append(f"meta l4proto {sp.protocol} dnat to {b.ip}:{b.port}")
            chains[name] = rules
    own = sorted(set(bridges))
    names = ", ".join(f'"{b}"' for b in own)
    foreign = f'iifname "pkb*" iifname != {{ {names} }} return' if own else 'iifname "pkb*" return'
    base = (("prerouting", "nat hook prerouting priority -100", [foreign, "jump services"]),
            ("output", "nat hook output priority -100", ["jump services"]),
            ("postrouting", "nat hook postrouting priority 100",
             [f"meta mark & {MASQ_MARK} == {MASQ_MARK} masquerade"]),
            ("services", "", [*services, "fib daddr type local jump nodeports"]),
            ("nodeports", "", nodeports),
            ("filter_input", "filter hook input priority 0", ["jump no_endpoints"]),
            ("filter_forward", "filter hook forward priority 0", [foreign, "jump no_endpoints"]),
            ("filter_output", "filter hook output priority 0", ["jump no_endpoints"]),
            ("no_endpoints", "", rejects))
    return nftables.table_script(table, base=base, chains=chains, sets=sets)


def cleanup_script(table: str) -> str:
    """An `nft -f` script removing the table if it exists."""
    return nftables.cleanup_script(table)
