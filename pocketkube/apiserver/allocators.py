"""Service ClusterIP and NodePort allocation with conflict detection, rebuilt from stored Services."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from pocketkube.api import defaults_core, errors, resources

SERVICE_CIDR = "10.96.0.0/12"
NODE_PORT_RANGE = (30000, 32767)


class Allocators:
    """In-memory bitmaps of used service IPs and node ports (the store holds the truth)."""

    def __init__(self, cidr: str = SERVICE_CIDR, node_ports: tuple[int, int] = NODE_PORT_RANGE) -> None:
        self.network = ipaddress.ip_network(cidr)
        self.node_ports = node_ports
        self.ips: set[str] = set()
        self.ports: set[tuple[str, int]] = set()   # (protocol, port)
        self._rand = random.Random()

    def first_ip(self) -> str:
        return str(self.network.network_address + 1)

    def load(self, services: list[dict[str, Any]]) -> None:
        for svc in services:
            self._mark(svc)

    def _mark(self, svc: dict[str, Any]) -> None:
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            if ip and ip != "None":
                self.ips.add(ip)
        for p in spec.get("ports") or []:
            if p.get("nodePort"):
                self.ports.add((p.get("protocol", "TCP"), int(p["nodePort"])))
        if spec.get("healthCheckNodePort"):
            self.ports.add(("TCP", int(spec["healthCheckNodePort"])))

    def release(self, res: resources.Resource, svc: dict[str, Any]) -> None:
        if (res.group, res.kind) != ("", "Service"):
            return
        spec = svc.get("spec") or {}
        for ip in spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else []):
            self.ips.discard(ip)
        for p in spec.get("ports") or []:
            if p.get("nodePort"):
                self.ports.discard((p.get("protocol", "TCP"), int(p["nodePort"])))
        if spec.get("healthCheckNodePort"):
            self.ports.discard(("TCP", int(spec["healthCheckNodePort"])))

    def _alloc_ip(self) -> str:
        size = self.network.num_addresses
        # Network and broadcast addresses are never handed out; dynamic picks prefer the upper band.
        for lo, hi in _bands(2, size - 2, static=_static_band(size, least=16, most=256, step=16)):
            for _ in range(64):
                ip = str(self.network.network_address + self._rand.randint(lo, hi))
                if ip not in self.ips:
                    return ip
            for off in range(lo, hi + 1):
                ip = str(self.network.network_address + off)
                if ip not in self.ips:
                    return ip
        raise errors.Invalid(kind="Service", group="", name="", causes=[
            errors.FieldError("Internal", "spec.clusterIPs", detail="failed to allocate a serviceIP: range is full")])

    def _alloc_port(self, protocol: str) -> int:
        first, last = self.node_ports
        for lo, hi in _bands(first, last, static=_static_band(last - first + 1, least=16, most=128, step=32)):
            for _ in range(64):
                p = self._rand.randint(lo, hi)
                if (protocol, p) not in self.ports:
                    return p
            for p in range(lo, hi + 1):
                if (protocol, p) not in self.ports:
                    return p
        raise errors.ServiceUnavailable("range is full: no node ports left")

    def allocate(self, svc: dict[str, Any], old: dict[str, Any] | None) -> list[tuple[str, Any]]:
        """Fill clusterIP(s), nodePorts and healthCheckNodePort in place, giving back what an update stopped using;
        returns what was taken and given back (for rollback)."""
        name = (svc.get("metadata") or {}).get("name", "")
        spec = svc.setdefault("spec", {})
        taken: list[tuple[str, Any]] = []
        old_spec = (old or {}).get("spec") or {}
        causes: list[errors.FieldError] = []
        stype = spec.get("type", "ClusterIP")
        if stype != "ExternalName":
            ip = spec.get("clusterIP") or ""
            if old is not None and old_spec.get("clusterIP") and not ip:
                ip = old_spec["clusterIP"]
                spec["clusterIP"] = ip
                spec["clusterIPs"] = old_spec.get("clusterIPs") or [ip]
            if not ip:
                ip = self._alloc_ip()
                self.ips.add(ip)
                taken.append(("ip", ip))
                spec["clusterIP"] = ip
                spec["clusterIPs"] = [ip]
            elif ip != "None" and (old is None or old_spec.get("clusterIP") != ip):
                try:
                    addr = ipaddress.ip_address(ip)
                except ValueError:
                    addr = None
                if addr is None or addr not in self.network:
                    causes.append(errors.invalid("spec.clusterIPs", f"raw:[]string{{\"{ip}\"}}",
                                                 f"failed to allocate IP {ip}: the provided IP ({ip}) is not in the valid range. The range of valid IPs is {self.network}"))
                elif ip in self.ips:
                    causes.append(errors.invalid("spec.clusterIPs", f"raw:[]string{{\"{ip}\"}}",
                                                 f"failed to allocate IP {ip}: provided IP is already allocated"))
                else:
                    self.ips.add(ip)
                    taken.append(("ip", ip))
                    spec["clusterIPs"] = [ip]
            elif ip == "None":
                spec["clusterIPs"] = ["None"]
        if stype in ("NodePort", "LoadBalancer") and spec.get("allocateLoadBalancerNodePorts", True) is not False or stype == "NodePort":
            old_ports = {(p.get("protocol", "TCP"), p.get("nodePort")) for p in old_spec.get("ports") or [] if p.get("nodePort")}
            for i, p in enumerate(spec.get("ports") or []):
                proto = p.get("protocol", "TCP")
                np = p.get("nodePort")
                if not np:
                    np = self._alloc_port(proto)
                    self.ports.add((proto, np))
                    taken.append(("port", (proto, np)))
                    p["nodePort"] = np
                elif (proto, np) in old_ports:
                    continue
                else:
                    lo, hi = self.node_ports
                    if not lo <= int(np) <= hi:
                        causes.append(errors.invalid(f"spec.ports[{i}].nodePort", np,
                                                     f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}"))
                    elif (proto, np) in self.ports:
                        causes.append(errors.invalid(f"spec.ports[{i}].nodePort", np, "provided port is already allocated"))
                    else:
                        self.ports.add((proto, np))
                        taken.append(("port", (proto, np)))
        elif stype in ("ClusterIP", "ExternalName"):
            for p in spec.get("ports") or []:
                p.pop("nodePort", None)
        if stype == "ExternalName":
            spec.pop("clusterIP", None)
            spec.pop("clusterIPs", None)
        if causes:
            self.rollback(taken)
            raise errors.Invalid(kind="Service", group="", name=name, causes=causes)
        if stype == "ExternalName" and old_spec.get("type") != "ExternalName":
            for ip in old_spec.get("clusterIPs") or []:
                if ip in self.ips:
                    self.ips.discard(ip)
                    taken.append(("freed-ip", ip))
        self._free_unused_node_ports(spec, old_spec, taken)
        self._health_check_node_port(svc, old, taken)
        return taken

    def _free_unused_node_ports(self, spec: dict[str, Any], old_spec: dict[str, Any],
                                taken: list[tuple[str, Any]]) -> None:
        # An update that drops a node port (a type change, a removed port) gives it back, as kube's allocator does.
        kept = {(p.get("protocol", "TCP"), p.get("nodePort")) for p in spec.get("ports") or [] if p.get("nodePort")}
        for p in old_spec.get("ports") or []:
            key = (p.get("protocol", "TCP"), p.get("nodePort"))
            if p.get("nodePort") and key not in kept and key in self.ports:
                self.ports.discard(key)
                taken.append(("freed", key))

    def _health_check_node_port(self, svc: dict[str, Any], old: dict[str, Any] | None,
                                taken: list[tuple[str, Any]]) -> None:
        """Take a healthCheckNodePort when the Service starts needing one (LoadBalancer, externalTrafficPolicy
        Local), the one asked for or any free one; give it back when it stops needing it."""
        spec = svc["spec"]
        old_port = (old or {}).get("spec", {}).get("healthCheckNodePort") \
            if old is not None and defaults_core.needs_health_check(old) else None
        if not defaults_core.needs_health_check(svc):
            if old_port and ("TCP", int(old_port)) in self.ports:
                self.ports.discard(("TCP", int(old_port)))
                taken.append(("freed", ("TCP", int(old_port))))
            return
        if old_port:
            spec.setdefault("healthCheckNodePort", old_port)  # kept (validation refuses a change)
            return
        asked = spec.get("healthCheckNodePort")
        if not asked:
            try:
                port = self._alloc_port("TCP")
            except errors.ServiceUnavailable as e:
                self.rollback(taken)
                raise _internal(f"failed to allocate a HealthCheck NodePort 0: {e}") from None
            spec["healthCheckNodePort"] = port
        else:
            lo, hi = self.node_ports
            problem = ("" if ("TCP", asked) not in self.ports else "provided port is already allocated") \
                if lo <= int(asked) <= hi else \
                f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
            if problem:
                self.rollback(taken)
                raise _internal(f"failed to allocate requested HealthCheck NodePort {asked}: {problem}")
            port = int(asked)
        self.ports.add(("TCP", port))
        taken.append(("port", ("TCP", port)))

    def rollback(self, taken: list[tuple[str, Any]]) -> None:
        for what, value in taken:
            if what == "ip":
                self.ips.discard(value)
            elif what == "freed":
                self.ports.add(value)
            elif what == "freed-ip":
                self.ips.add(value)
            else:
                self.ports.discard(value)


def _static_band(size: int, *, least: int, most: int, step: int) -> int:
    """kube's calculateRangeOffset: how many values at the bottom of a range are kept for users to ask for."""
    if size < least:
        return 0
    return max(least, min(most, size // step))


def _bands(first: int, last: int, *, static: int) -> list[tuple[int, int]]:
    """Where dynamic allocation looks, in order: above the static band, then inside it (kube's
    ServiceNodePortStaticSubrange and ServiceIPStaticSubrange), so values users pick rarely collide."""
    if static <= 0 or first + static > last:
        return [(first, last)]
    return [(first + static, last), (first, first + static - 1)]


def _internal(message: str) -> errors.InternalError:
    # kube's allocator answers these with NewInternalError (500), not a field error.
    return errors.InternalError(f"Internal error occurred: {message}", details={"causes": [{"message": message}]})
