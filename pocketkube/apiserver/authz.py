"""Authorization until RBAC lands: authenticated users may do anything; anonymous only health and version."""

from __future__ import annotations

from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import context, requestinfo

# What kube's system:public-info-viewer role grants to everyone.
_PUBLIC = {"/healthz", "/livez", "/readyz", "/version", "/version/"}


async def authorize(server: context.Server, user: context.User, info: requestinfo.RequestInfo,
                    request: web.Request) -> None:
    if "system:authenticated" in user.groups:
        return
    if not info.is_resource_request:
        path = info.path.rstrip("/") or "/"
        if info.path in _PUBLIC or path in _PUBLIC or path.startswith(("/healthz/", "/livez/", "/readyz/")):
            return
        raise errors.Forbidden(f'forbidden: User "{user.name}" cannot {info.verb} path "{info.path}"', details={})
    raise errors.Forbidden.for_resource(user=user.name, verb=info.verb, resource=info.resource, group=info.group,
                                        name=info.name, namespace=info.namespace)
