"""NetworkPolicy rules: from NetworkPolicies, Pods and Namespaces, the nftables script that enforces them."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.network import nftables

NS_NAME_LABEL = "kubernetes.io/metadata.name"
PROTOCOLS = ("TCP", "UDP", "SCTP")
# After kube-proxy's filter chains (priority 0): a Service without endpoints is rejected before policy runs.
PRIORITY = 10


@dataclasses.dataclass(frozen=True)
class PodInfo:
    """What policy needs of one pod: where it is, its labels and its named container ports."""

    namespace: str
    name: str
    ip: str
    labels: tuple[tuple[str, str], ...]
    ports: tuple[tuple[str, str, int], ...]  # (name, protocol, containerPort)
    # The cluster DNS server runs in the node process, not in a pod: it stands in as a pod behind its
    # ClusterIP, so a user's "allow DNS to kube-dns" policy works as it does against CoreDNS pods.
    dns: bool = False

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclasses.dataclass(frozen=True)
class Port:
    """One entry of a rule's ports: a protocol and a number, a range, a name, or every port (None)."""

    protocol: str
    port: int | str | None = None
    end: int | None = None


@dataclasses.dataclass(frozen=True)
class Peer:
    """One entry of a rule's from/to: any address, a set of pods, or an ipBlock."""

    pods: tuple[PodInfo, ...] = ()
    cidr: str = ""
    excepts: tuple[str, ...] = ()
    anything: bool = False


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in ((obj.get("metadata") or {}).get("labels") or {}).items()}


def _ipv4(text: object) -> str:
    try:
        return str(text) if ipaddress.ip_address(str(text)).version == 4 else ""
    except ValueError:
        return ""


def pod_info(pod: Mapping[str, Any]) -> PodInfo | None:
    """The pod as policy sees it; None for pods without an own IPv4 address (host network, not started, done)."""
    meta, spec, status = pod.get("metadata") or {}, pod.get("spec") or {}, pod.get("status") or {}
    if spec.get("hostNetwork") or status.get("phase") in ("Succeeded", "Failed"):
        return None
    ips = [str(p.get("ip") or "") for p in status.get("podIPs") or [] if isinstance(p, Mapping)]
    ip = next((_ipv4(i) for i in [*ips, status.get("podIP")] if _ipv4(i)), "")
    if not ip or ip == status.get("hostIP"):
        return None  # a fallback pod shares its node's address: it cannot be told apart from the node
    ports = []
    for c in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
        for p in (c.get("ports") or []) if isinstance(c, Mapping) else []:
            if isinstance(p, Mapping) and p.get("name") and isinstance(p.get("containerPort"), int):
                ports.append((str(p["name"]), str(p.get("protocol") or "TCP"), int(p["containerPort"])))
    return PodInfo(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""), ip=ip,
                   labels=tuple(sorted(_labels(pod).items())), ports=tuple(sorted(set(ports))))


def dns_info(cluster_ip: str, *, namespace: str = "kube-system", labels: Mapping[str, str] | None = None,
             ports: Sequence[tuple[str, str, int]] = ()) -> PodInfo:
    """The stand-in pod of the cluster DNS server, judged at its ClusterIP (see PodInfo.dns)."""
    return PodInfo(namespace=namespace, name="kube-dns", ip=cluster_ip, labels=tuple(sorted((labels or {}).items())),
                   ports=tuple(sorted(ports)), dns=True)


def policy_types(spec: Mapping[str, Any]) -> set[str]:
    """spec.policyTypes, defaulted as the API server does when it is missing."""
    types = spec.get("policyTypes")
    if isinstance(types, list) and types:
        return {str(t) for t in types}
    return {"Ingress", *(["Egress"] if spec.get("egress") else [])}


def _selector(sel: Any) -> selectors.Selector:
    try:
        return selectors.from_label_selector(sel, nil_matches_everything=True)
    except errors.APIError:
        return selectors.NOTHING  # the API validates selectors; a stored bad one must not widen a policy


def peers_of(entries: Any, *, namespace: str, pods: Sequence[PodInfo],
             namespaces: Mapping[str, Mapping[str, str]]) -> list[Peer]:
    """A rule's from/to list as peers; an empty or missing list means any peer."""
    if not isinstance(entries, list) or not entries:
        return [Peer(anything=True)]
    out = []
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        block = e.get("ipBlock")
        if isinstance(block, Mapping):
            cidr = _cidr(block.get("cidr"))
            if cidr:
                excepts = tuple(c for c in (_cidr(x) for x in block.get("except") or []) if c)
                out.append(Peer(cidr=cidr, excepts=excepts))
            continue
        if "podSelector" not in e and "namespaceSelector" not in e:
            continue  # validation forbids an empty peer; it selects nothing
        pod_sel = _selector(e.get("podSelector"))
        if "namespaceSelector" in e:
            ns_sel = _selector(e.get("namespaceSelector"))
            in_ns = {n for n, labels in namespaces.items() if ns_sel.matches(labels)}
        else:
            in_ns = {namespace}
        out.append(Peer(pods=tuple(p for p in pods if p.namespace in in_ns and pod_sel.matches(dict(p.labels)))))
    return out


def _cidr(text: object) -> str:
    try:
        net = ipaddress.ip_network(str(text), strict=False)
    except ValueError:
        return ""
    return str(net) if net.version == 4 else ""


def ports_of(entries: Any) -> list[Port] | None:
    """A rule's ports; None when the rule has none (every port and protocol)."""
    if not isinstance(entries, list) or not entries:
        return None
    out = []
    for e in entries:
        if not isinstance(e, Mapping):
            continue
        proto = str(e.get("protocol") or "TCP")
        port, end = e.get("port"), e.get("endPort")
        if isinstance(port, bool) or not isinstance(port, int | str | None):
            continue
        if isinstance(port, str) and port.isdigit():
            port = int(port)  # an IntOrString written as a string of digits is still a number
        out.append(Port(protocol=proto, port=port, end=end if isinstance(end, int) and isinstance(port, int) else None))
    return out


def resolve(ports: list[Port], pod: PodInfo | None) -> dict[str, set[str]]:
    """Protocol -> nft port terms ("" = every port); named ports resolve against the pod (none without one)."""
    out: dict[str, set[str]] = {}
    for p in ports:
        if p.protocol not in PROTOCOLS:
            continue
        if p.port is None:
            out.setdefault(p.protocol, set()).add("")
        elif isinstance(p.port, int):
            out.setdefault(p.protocol, set()).add(f"{p.port}-{p.end}" if p.end and p.end > p.port else str(p.port))
        elif pod is not None:
            for name, proto, number in pod.ports:
                if name == p.port and proto == p.protocol:
                    out.setdefault(p.protocol, set()).add(str(number))
    return out


def _sort_port(term: str) -> tuple[int, str]:
    head = term.split("-")[0]
    return (int(head) if head.isdigit() else -1, term)


def _port_clauses(resolved: dict[str, set[str]], *, dport: str = "th dport") -> list[str]:
    """One match per protocol, or [""] when every protocol and port is allowed."""
    out = []
    for proto in PROTOCOLS:
        terms = resolved.get(proto)
        if not terms:
            continue
        if "" in terms:
            out.append(f"meta l4proto {proto.lower()}")
            continue
        listed = sorted(terms, key=_sort_port)
        body = listed[0] if len(listed) == 1 else "{ " + ", ".join(listed) + " }"
        out.append(f"meta l4proto {proto.lower()} {dport} {body}")
    return out


def _addr_set(ips: Iterable[str]) -> str:
    listed = sorted(set(ips), key=ipaddress.ip_address)
    return listed[0] if len(listed) == 1 else "{ " + ", ".join(listed) + " }"


def _block_match(peer: Peer, field: str) -> str:
    text = f"ip {field} {peer.cidr}"
    if peer.excepts:
        text += f" ip {field} != {_addr_set_nets(peer.excepts)}"
    return text


def _addr_set_nets(nets: Iterable[str]) -> str:
    listed = sorted(set(nets), key=lambda n: ipaddress.ip_network(n))
    return listed[0] if len(listed) == 1 else "{ " + ", ".join(listed) + " }"


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def ingress_rules(rules: list[Mapping[str, Any]], *, target: PodInfo, namespace: str, pods: Sequence[PodInfo],
                  namespaces: Mapping[str, Mapping[str, str]]) -> list[str]:
    """The accept rules of one target pod for the ingress rules of one policy (named ports are the target's)."""
    out = []
    for rule in rules:
        ports = ports_of(rule.get("ports"))
        clauses = [""] if ports is None else _port_clauses(resolve(ports, target))
        for peer in peers_of(rule.get("from"), namespace=namespace, pods=pods, namespaces=namespaces):
            if peer.anything:
                match = ""
            elif peer.cidr:
                match = _block_match(peer, "saddr")
            else:
                ips = [p.ip for p in peer.pods if not p.dns]
                if not ips:
                    continue
                match = f"ip saddr {_addr_set(ips)}"
            out += [_join(match, c, "accept") for c in clauses]
    return out


def egress_rules(rules: list[Mapping[str, Any]], *, namespace: str, pods: Sequence[PodInfo],
                 namespaces: Mapping[str, Mapping[str, str]]) -> tuple[list[str], list[str]]:
    """(forward rules, DNS rules) letting one policy's egress through; named ports are each destination's."""
    fwd: list[str] = []
    dns: list[str] = []
    for rule in rules:
        ports = ports_of(rule.get("ports"))
        for peer in peers_of(rule.get("to"), namespace=namespace, pods=pods, namespaces=namespaces):
            members = pods if peer.anything else peer.pods
            named = ports is not None and any(isinstance(p.port, str) for p in ports)
            if peer.cidr or (peer.anything and not named):
                clauses = [""] if ports is None else _port_clauses(resolve(ports, None))
                match = "" if peer.anything else _block_match(peer, "daddr")
                fwd += [_join(match, c, "return") for c in clauses]
            else:
                if peer.anything:  # numbered ports let any address through; names only pods that have them
                    fwd += [_join(c, "return") for c in _port_clauses(resolve(ports or [], None))]
                # Group destination pods by what their ports resolve to, so the script stays short.
                groups: dict[tuple[str, ...], list[str]] = {}
                for p in members:
                    if not p.dns:
                        cl = [""] if ports is None else _port_clauses(resolve(ports, p))
                        groups.setdefault(tuple(cl), []).append(p.ip)
                for cl_key, ips in sorted(groups.items(), key=lambda kv: sorted(kv[1])):
                    fwd += [_join(f"ip daddr {_addr_set(ips)}", c, "return") for c in cl_key]
            dns_pod = next((p for p in pods if p.dns), None)
            if dns_pod is not None and _reaches(peer, dns_pod, members):
                clauses = [""] if ports is None else _port_clauses(resolve(ports, dns_pod),
                                                                   dport="ct original proto-dst")
                dns += [_join(c, "accept") for c in clauses]
    return fwd, dns


def _reaches(peer: Peer, dns_pod: PodInfo, members: Sequence[PodInfo]) -> bool:
    if peer.cidr:
        ip = ipaddress.ip_address(dns_pod.ip)
        return ip in ipaddress.ip_network(peer.cidr) and not any(ip in ipaddress.ip_network(e) for e in peer.excepts)
    return dns_pod in members


def _one_per_ip(pods: Iterable[Mapping[str, Any]]) -> list[PodInfo]:
    """Policy endpoints sorted by key; when a terminating pod's IP went to a new pod, the new pod has it."""
    chosen: dict[str, tuple[bool, str, PodInfo]] = {}
    for p in pods:
        info = pod_info(p)
        if info is None:
            continue
        rank = (bool((p.get("metadata") or {}).get("deletionTimestamp")), info.key, info)
        if info.ip not in chosen or rank[:2] < chosen[info.ip][:2]:
            chosen[info.ip] = rank
    return sorted((r[2] for r in chosen.values()), key=lambda i: i.key)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _dedup(lines: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(lines))


def render(policies: Iterable[Mapping[str, Any]], pods: Iterable[Mapping[str, Any]],
           namespaces: Iterable[Mapping[str, Any]], *, table: str, bridges: Iterable[str] = (),
           dns: PodInfo | None = None) -> str:
    """An `nft -f` script that replaces the whole table at once (the kernel applies it atomically).

    A pod is isolated for a direction only when some policy of its namespace selects it with that policy
    type; then only the union of those policies' rules lets new connections through (replies always pass,
    and a pod can always reach itself). Traffic from the node reaches its pods unjudged (the output hook is
    not filtered), so kubelet probes keep working; pod to node traffic too, except the cluster DNS server,
    which stands in for kube-dns pods. A Service's traffic is judged after DNAT, against the backend pod."""
    ns_labels: dict[str, dict[str, str]] = {}
    for n in namespaces:
        name = str((n.get("metadata") or {}).get("name") or "")
        ns_labels[name] = {NS_NAME_LABEL: name, **_labels(n)}
    policies = list(policies)
    # Without policies no pod is isolated: the table has only its base chains, whatever the pods.
    infos = _one_per_ip(pods) if policies else []
    universe: list[PodInfo] = [*infos, *([dns] if dns is not None else [])]
    ingress: dict[PodInfo, list[str]] = {}
    egress: dict[PodInfo, list[str]] = {}
    egress_dns: dict[PodInfo, list[str]] = {}
    for pol in sorted(policies, key=lambda p: (str(p["metadata"].get("namespace")), str(p["metadata"].get("name")))):
        meta, spec = pol.get("metadata") or {}, pol.get("spec") or {}
        ns = str(meta.get("namespace") or "")
        types = policy_types(spec)
        sel = _selector(spec.get("podSelector") if "podSelector" in spec else {})
        chosen = [p for p in infos if p.namespace == ns and sel.matches(dict(p.labels))]
        if not chosen:
            continue
        if "Ingress" in types:
            rules = [r for r in spec.get("ingress") or [] if isinstance(r, Mapping)]
            for target in chosen:
                ingress.setdefault(target, []).extend(
                    ingress_rules(rules, target=target, namespace=ns, pods=universe, namespaces=ns_labels))
        if "Egress" in types:
            out_rules = [r for r in spec.get("egress") or [] if isinstance(r, Mapping)]
            fwd, to_dns = egress_rules(out_rules, namespace=ns, pods=universe, namespaces=ns_labels)
            for source in chosen:
                egress.setdefault(source, []).extend(fwd)
                egress_dns.setdefault(source, []).extend(to_dns)
    chains: dict[str, list[str]] = {}
    eg_map, in_map, dns_map = [], [], []
    for pod in sorted(egress, key=lambda i: ipaddress.ip_address(i.ip)):
        name = "eg_" + _digest(pod.key)
        chains[name] = [f'ip daddr {pod.ip} return comment "{pod.key}"', *_dedup(egress[pod]), "drop"]
        eg_map.append(f"{pod.ip} : jump {name}")
        if dns is not None:
            dname = "dns_" + _digest(pod.key)
            chains[dname] = [*_dedup(egress_dns[pod]), "drop"]
            dns_map.append(f"{pod.ip} : jump {dname}")
    for pod in sorted(ingress, key=lambda i: ipaddress.ip_address(i.ip)):
        name = "in_" + _digest(pod.key)
        chains[name] = [f'ip saddr {pod.ip} accept comment "{pod.key}"', *_dedup(ingress[pod]), "drop"]
        in_map.append(f"{pod.ip} : jump {name}")
    forward = ["ct state established,related accept"]
    if eg_map:
        forward.append("ip saddr vmap { " + ", ".join(eg_map) + " }")
    if in_map:
        forward.append("ip daddr vmap { " + ", ".join(in_map) + " }")
    inp = ["ct state established,related accept"]
    own = sorted(set(bridges))
    if dns is not None and dns_map and own:
        names = ", ".join(f'"{b}"' for b in own)
        inp.append(f"iifname {{ {names} }} ct original ip daddr {dns.ip} ip saddr vmap {{ {', '.join(dns_map)} }}")
    base = [("forward", f"filter hook forward priority {PRIORITY}", forward),
            ("input", f"filter hook input priority {PRIORITY}", inp)]
    return nftables.table_script(table, base=base, chains=chains)


def cleanup_script(table: str) -> str:
    """An `nft -f` script removing the table if it exists."""
    return nftables.cleanup_script(table)
