"""Compiles networking.k8s.io/v1 Ingresses of one class into an immutable route table, and matches requests on it."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

EXACT, PREFIX, IMPLEMENTATION_SPECIFIC = "Exact", "Prefix", "ImplementationSpecific"
DEFAULT_CLASS_ANNOTATION = "ingressclass.kubernetes.io/is-default-class"
# The legacy annotation still honoured by ingress-nginx when spec.ingressClassName is unset.
CLASS_ANNOTATION = "kubernetes.io/ingress.class"


@dataclasses.dataclass(frozen=True)
class Backend:
    """A Service port in a namespace; weight is for Gateway API traffic splits (Ingress always uses 1)."""

    namespace: str
    service: str
    port: int | str
    weight: int = 1


@dataclasses.dataclass(frozen=True)
class HeaderMatch:
    """A request header condition (Gateway API HTTPHeaderMatch); Ingress routes carry none."""

    name: str
    value: str
    type: str = "Exact"


@dataclasses.dataclass(frozen=True)
class Route:
    """One host+path rule: where it came from, how it matches and where matching requests go."""

    host: str
    path: str
    path_type: str
    backends: tuple[Backend, ...]
    source: str
    headers: tuple[HeaderMatch, ...] = ()
    timeout: float | None = None
    retries: int = 0
    tls: bool = False

    def matches_path(self, path: str) -> bool:
        if self.path_type == EXACT:
            return path == self.path
        return prefix_matches(self.path, path)

    def matches_headers(self, headers: Mapping[str, str]) -> bool:
        return all(headers.get(h.name) == h.value for h in self.headers)


@dataclasses.dataclass(frozen=True)
class TLSHost:
    """The Secret that holds the certificate of a host, as an Ingress tls entry names it."""

    host: str
    namespace: str
    secret: str
    source: str


@dataclasses.dataclass(frozen=True)
class Problem:
    """Something an Ingress asks for that the table cannot do: becomes a Warning event on the Ingress."""

    source: str
    reason: str
    message: str


@dataclasses.dataclass(frozen=True)
class Table:
    """Routes grouped by host ("" is the catch-all server), TLS hosts and the default backend."""

    hosts: Mapping[str, tuple[Route, ...]]
    tls: Mapping[str, TLSHost]
    default_backend: Backend | None = None
    default_source: str = ""
    problems: tuple[Problem, ...] = ()

    def match(self, host: str, path: str, headers: Mapping[str, str] | None = None) -> Route | None:
        """The route serving host+path, or None (the default backend answers)."""
        routes = self.hosts.get(server_name(self, host))
        if routes is None:
            return None
        hdrs = headers or {}
        for route in routes:
            if route.matches_path(path) and route.matches_headers(hdrs):
                return route
        return None

    def backends(self) -> set[Backend]:
        """Every backend referenced, the default one included."""
        out = {b for routes in self.hosts.values() for r in routes for b in r.backends}
        if self.default_backend is not None:
            out.add(self.default_backend)
        return out


EMPTY = Table(hosts={}, tls={})


def normalize_host(host: str) -> str:
    """The request's host without port or trailing dot, lower case (IPv6 literals keep their brackets)."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0].rstrip(".") if ":" in host else host.rstrip(".")


def wildcard_of(host: str) -> str:
    """The `*.suffix` pattern a host matches: one label replaced, as the Ingress spec says."""
    _, dot, rest = host.partition(".")
    return f"*.{rest}" if dot and rest else ""


def server_name(table: Table, host: str) -> str:
    """Which server block of the table a request host lands on: exact, then wildcard, then the catch-all ""."""
    h = normalize_host(host)
    if h in table.hosts:
        return h
    wild = wildcard_of(h)
    if wild and wild in table.hosts:
        return wild
    return ""


def tls_host(table: Table, host: str) -> TLSHost | None:
    """The TLS entry for an SNI name or Host header: exact name first, then its wildcard."""
    h = normalize_host(host)
    return table.tls.get(h) or table.tls.get(wildcard_of(h))


def _elements(path: str) -> list[str]:
    return [e for e in path.split("/") if e]


def prefix_matches(prefix: str, path: str) -> bool:
    """Element-wise prefix match: /foo matches /foo, /foo/ and /foo/bar but not /foobar."""
    want = _elements(prefix)
    got = _elements(path.split("?", 1)[0])
    return got[: len(want)] == want


def _order(route: Route) -> tuple[int, int]:
    # Longest path first; for equal paths, Exact before Prefix (the Ingress spec's precedence).
    return (-len(route.path.rstrip("/") or "/"), 0 if route.path_type == EXACT else 1)


def _created(ing: Mapping[str, Any]) -> tuple[str, str, str]:
    meta = ing.get("metadata") or {}
    return (str(meta.get("creationTimestamp") or ""), str(meta.get("namespace") or ""), str(meta.get("name") or ""))


def ingress_class(ing: Mapping[str, Any]) -> str:
    """The class an Ingress asks for: spec.ingressClassName, else the legacy annotation, else ""."""
    spec = ing.get("spec") or {}
    name = spec.get("ingressClassName")
    if name:
        return str(name)
    ann = (ing.get("metadata") or {}).get("annotations") or {}
    return str(ann.get(CLASS_ANNOTATION) or "")


def _backend(ns: str, source: str, raw: Any, problems: list[Problem]) -> Backend | None:
    if not isinstance(raw, Mapping):
        return None
    if raw.get("resource"):
        res = raw["resource"] or {}
        kind = f"{res.get('apiGroup') or ''}/{res.get('kind') or ''}".lstrip("/")
        problems.append(Problem(source, "UnsupportedBackend",
                                f'resource backend {kind} "{res.get("name") or ""}" is not supported by '
                                "IngressClass controller pocketkube.io/ingress; use a service backend"))
        return None
    svc = raw.get("service") or {}
    name = svc.get("name") or ""
    port = svc.get("port") or {}
    value: int | str = port.get("number") or port.get("name") or ""
    if not name or value == "":
        problems.append(Problem(source, "InvalidBackend", f"backend of ingress {source} names no service port"))
        return None
    return Backend(namespace=ns, service=str(name), port=value)


def compile_ingresses(ingresses: Iterable[Mapping[str, Any]], *, class_name: str, is_default: bool = False) -> Table:
    """The route table for every Ingress of class_name (and classless ones when it is the default class).

    Conflicts go to the oldest Ingress, as ingress-nginx resolves them: the same host+path+type
    and the defaultBackend are taken by the first Ingress by creation time.
    """
    hosts: dict[str, list[Route]] = {}
    seen: set[tuple[str, str, str]] = set()
    tls: dict[str, TLSHost] = {}
    problems: list[Problem] = []
    default: Backend | None = None
    default_source = ""
    for ing in sorted(ingresses, key=_created):
        cls = ingress_class(ing)
        if cls != class_name and not (cls == "" and is_default):
            continue
        meta = ing.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        ns = str(meta.get("namespace") or "default")
        source = f"{ns}/{meta.get('name') or ''}"
        spec = ing.get("spec") or {}
        tls_names: set[str] = set()
        for entry in spec.get("tls") or []:
            for h in (entry or {}).get("hosts") or []:
                name = str(h).lower()
                tls_names.add(name)
                # An entry without secretName still serves TLS, with the default certificate.
                if name not in tls or (not tls[name].secret and entry.get("secretName")):
                    tls[name] = TLSHost(name, ns, str(entry.get("secretName") or ""), source)
        if spec.get("defaultBackend") is not None:
            b = _backend(ns, source, spec["defaultBackend"], problems)
            if b is not None and default is None:
                default, default_source = b, source
        for rule in spec.get("rules") or []:
            host = str((rule or {}).get("host") or "").lower()
            hosts.setdefault(host, [])
            for p in ((rule or {}).get("http") or {}).get("paths") or []:
                path = str(p.get("path") or "/")
                ptype = str(p.get("pathType") or IMPLEMENTATION_SPECIFIC)
                if ptype == IMPLEMENTATION_SPECIFIC:
                    ptype = PREFIX
                b = _backend(ns, source, p.get("backend"), problems)
                if b is None or (host, path, ptype) in seen:
                    continue
                seen.add((host, path, ptype))
                hosts[host].append(Route(host=host, path=path, path_type=ptype, backends=(b,), source=source,
                                         tls=bool(host) and host in tls_names))
    ordered = {h: tuple(sorted(rs, key=_order)) for h, rs in sorted(hosts.items())}
    return Table(hosts=ordered, tls=dict(sorted(tls.items())), default_backend=default,
                 default_source=default_source, problems=tuple(problems))


def _backend_json(b: Backend) -> dict[str, Any]:
    return {"namespace": b.namespace, "service": b.service, "port": b.port, "weight": b.weight}


def to_json(table: Table) -> dict[str, Any]:
    """A stable JSON form of the table (golden files, debugging)."""
    return {
        "hosts": {h: [{"path": r.path, "pathType": r.path_type, "backends": [_backend_json(b) for b in r.backends],
                       "source": r.source, "headers": [dataclasses.asdict(m) for m in r.headers],
                       "timeout": r.timeout, "retries": r.retries, "tls": r.tls} for r in routes]
                  for h, routes in table.hosts.items()},
        "tls": {h: {"namespace": t.namespace, "secret": t.secret, "source": t.source} for h, t in table.tls.items()},
        "defaultBackend": _backend_json(table.default_backend) if table.default_backend else None,
        "problems": [dataclasses.asdict(p) for p in table.problems],
    }


def secrets_needed(table: Table) -> Sequence[tuple[str, str]]:
    """(namespace, name) of every TLS Secret the table refers to."""
    return sorted({(t.namespace, t.secret) for t in table.tls.values() if t.secret})
