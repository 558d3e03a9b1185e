"""Parse a request path and method into the Kubernetes request attributes (verb, resource, name...)."""

from __future__ import annotations

import dataclasses

_SPECIAL_VERBS = {"proxy", "watch"}


@dataclasses.dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a request is about, as kube-apiserver's RequestInfoFactory derives it."""

    is_resource_request: bool
    path: str
    verb: str
    api_prefix: str = ""       # "api" or "apis"
    group: str = ""
    version: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    name: str = ""
    parts: tuple[str, ...] = ()


_METHOD_VERBS = {"POST": "create", "GET": "get", "HEAD": "get", "PUT": "update", "PATCH": "patch",
                 "DELETE": "delete"}


def parse(method: str, path: str, *, watch_param: bool = False) -> RequestInfo:
    """Split /api/v1/namespaces/ns/pods/name/status style paths; non-resource paths pass through."""
    segments = [s for s in path.split("/") if s]
    verb = _METHOD_VERBS.get(method) or method.lower()
    if not segments or segments[0] not in ("api", "apis"):
        return RequestInfo(False, path, verb)
    prefix = segments[0]
    rest = segments[1:]
    if prefix == "api":
        if not rest:
            return RequestInfo(False, path, verb)
        group, version, rest = "", rest[0], rest[1:]
    else:
        if len(rest) < 2:
            return RequestInfo(False, path, verb)
        group, version, rest = rest[0], rest[1], rest[2:]
    if not rest:
        return RequestInfo(False, path, verb)

    explicit_watch = False
    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            return RequestInfo(False, path, verb)
        if rest[0] == "watch":
            explicit_watch = True
            verb = "watch"
        else:
            verb = "proxy"
        rest = rest[1:]

    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        # /namespaces/{name}[/status|/finalize] is the Namespace object itself (its namespace
        # attribute is its own name, as in kube-apiserver); anything else is a namespaced resource.
        if len(rest) > 2 and rest[2] not in ("status", "finalize"):
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""

    if not explicit_watch and verb != "proxy":
        if not name and verb == "get":
            verb = "watch" if watch_param else "list"
        elif not name and verb == "delete":
            verb = "deletecollection"
    return RequestInfo(True, path, verb, prefix, group, version, namespace, resource, subresource,
                       name, tuple(rest[3:]))
