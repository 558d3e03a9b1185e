"""The /healthz, /livez and /readyz endpoints: kube-apiserver's named checks, ?verbose, ?exclude and /<check>."""

from __future__ import annotations

from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import context

# The checks a kube-apiserver 1.32 reports that have a counterpart here. "etcd" names the store check as kube
# does (scripts and probes ask for /readyz/etcd); our store is SQLite. Post-start hooks are listed only where
# pocketkube runs the same step (RBAC and priority-class bootstrap, APF).
_COMMON = ("ping", "log", "etcd", "poststarthook/start-apiserver-admission-initializer",
           "poststarthook/generic-apiserver-start-informers", "poststarthook/priority-and-fairness-filter",
           "poststarthook/rbac/bootstrap-roles", "poststarthook/scheduling/bootstrap-system-priority-classes",
           "poststarthook/bootstrap-controller")
CHECKS = {
    "healthz": _COMMON,
    "livez": _COMMON,
    "readyz": ("ping", "log", "etcd", "etcd-readiness", "informer-sync", *_COMMON[3:], "shutdown"),
}
_HEADERS = {"Cache-Control": "no-cache, private", "X-Content-Type-Options": "nosniff"}


def _failing(server: context.Server, endpoint: str) -> set[str]:
    return {"shutdown"} if endpoint == "readyz" and server.shutting_down else set()


def respond(server: context.Server, request: web.Request, path: str) -> web.Response:
    """Answer GET /<endpoint>[/<check>] as kube-apiserver's healthz handlers do."""
    endpoint, _, check = path.strip("/").partition("/")
    names = CHECKS[endpoint]
    failing = _failing(server, endpoint)
    if check:
        if check not in names:
            raise errors.NotFound("the server could not find the requested resource", details={})
        if check in failing:
            return web.Response(text="internal server error: reason withheld\n", status=500, content_type="text/plain",
                                headers=_HEADERS)
        return web.Response(text="ok", content_type="text/plain", headers=_HEADERS)
    excluded = {e for value in request.query.getall("exclude", []) for e in value.split(",") if e}
    lines = []
    failed = False
    for name in names:
        if name in excluded:
            lines.append(f"[+]{name} excluded: ok")
        elif name in failing:
            failed = True
            lines.append(f"[-]{name} failed: reason withheld")
        else:
            lines.append(f"[+]{name} ok")
    unknown = sorted(excluded - set(names))
    if unknown:
        lines.append("warn: some health checks cannot be excluded: no matches for " +
                     ",".join(f'"{u}"' for u in unknown))
    if failed:
        return web.Response(text="\n".join(lines) + f"\n{endpoint} check failed\n", status=500,
                            content_type="text/plain", headers=_HEADERS)
    if "verbose" in request.query:
        return web.Response(text="\n".join(lines) + f"\n{endpoint} check passed\n", content_type="text/plain",
                            headers=_HEADERS)
    return web.Response(text="ok", content_type="text/plain", headers=_HEADERS)
