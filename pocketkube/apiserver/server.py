"""The aiohttp application: authentication, routing of every path, and errors as metav1.Status."""

from __future__ import annotations

import logging
import random
import ssl
import unicodedata
from typing import Any

import orjson
from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import (
    audit,
    authn,
    context,
    create,
    delete,
    eviction,
    flowcontrol,
    get,
    impersonation,
    listing,
    negotiate,
    nonresource,
    patch,
    podlogs,
    requestinfo,
    reviews,
    scale,
    streamproxy,
    tokenrequest,
    update,
    watch,
)

log = logging.getLogger("pocketkube.apiserver")

_random = random.Random()
# The bits of a random UUID's text that say "version 4, RFC 4122 variant" (what uuid.UUID(version=4) sets).
_UUID_KEEP = ~((0xF000 << 64) | (0xC000 << 48))
_UUID_SET = (0x4000 << 64) | (0x8000 << 48)
SERVER_KEY: web.AppKey[context.Server] = web.AppKey("server", context.Server)
AUDIT_KEY: web.AppKey[audit.Auditor] = web.AppKey("audit", audit.Auditor)  # present only with an audit policy


def audit_id() -> str:
    """A new random request ID, str(uuid.uuid4())'s form. IDs need uniqueness, not secrecy: a PRNG avoids a
    urandom syscall per request, and formatting the number directly skips building a UUID object."""
    x = "%032x" % ((_random.getrandbits(128) & _UUID_KEEP) | _UUID_SET)
    return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"


def _status_response(err: errors.APIError, fmt: str = "json") -> web.Response:
    headers = {"Cache-Control": "no-cache, private"}
    headers.update(err.headers)
    if isinstance(err, flowcontrol.Rejected):
        return web.Response(text=err.body(), status=err.code, content_type="text/plain", headers=headers)
    return web.Response(body=orjson.dumps(err.status()), status=err.code, content_type="application/json",
                        headers=headers)


@web.middleware
async def _middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    request_id = audit_id()
    auditor = request.app.get(AUDIT_KEY)
    if auditor is not None:
        auditor.begin(request, request_id)
    try:
        response = await flowcontrol.serve(request, handler)
    except errors.APIError as err:
        response = _status_response(err)
    except web.HTTPException:
        raise
    except Exception as exc:  # a 500 is a bug: log it with the request, answer with a Status
        log.exception("internal error serving %s %s", request.method, request.path_qs)
        if auditor is not None:
            auditor.panic(request, exc)
        response = _status_response(errors.InternalError("an error on the server has prevented the request from succeeding"))
    if not response.prepared:
        response.headers["Audit-Id"] = request_id
    if auditor is not None:
        await auditor.complete(request, response)
    return response


async def _dispatch(request: web.Request) -> web.StreamResponse:
    server = request.app[SERVER_KEY]
    user = await authn.authenticate(server, request)
    auditor = request.app.get(AUDIT_KEY)
    if auditor is not None:
        auditor.received(request, user)
    user = await impersonation.apply(server, user, request)
    watch_param = request.query.get("watch", "") in ("true", "1", "True")
    info = requestinfo.parse(request.method, request.path, watch_param=watch_param)
    await flowcontrol.admit(server, request, user, info)
    if auditor is not None:
        await auditor.authorizing(request, server, user, info)
    if server.authorizer is not None:
        await server.authorizer(server, user, info, request)
    if not info.is_resource_request:
        return await nonresource.handle(server, request, info)
    res = server.registry.get(info.group, info.version, info.resource)
    if res is None:
        raise errors.NotFound.resource()
    if info.subresource and res.subresource(info.subresource) is None:
        raise errors.NotFound.resource()
    if info.namespace and not res.namespaced and res.resource != "namespaces":
        raise errors.NotFound.resource()
    if res.namespaced and not info.namespace and info.verb not in ("list", "watch", "deletecollection"):
        raise errors.NotFound.resource()
    call = context.Call(request=request, info=info, res=res, user=user, query=dict(request.query))
    if auditor is not None:
        auditor.bind(request, call)
    try:
        result = await _verb(server, call)
    except errors.APIError as err:
        # Warnings gathered before a refusal (a warning policy, then a denying one) still reach the client.
        if call.warnings:
            err.headers["Warning"] = ", ".join(_warning(w) for w in call.warnings if _sendable(w))
        raise
    if isinstance(result, web.StreamResponse):
        return result
    body, status = result
    fmt = negotiate.response_format(request.headers.get("Accept"))
    response = negotiate.respond(body, status=status, fmt=fmt)
    for w in call.warnings:
        if _sendable(w):
            response.headers.add("Warning", _warning(w))
    return response


def _sendable(text: str) -> bool:
    # kube's NewWarningHeader refuses control characters (they could split headers): such warnings are dropped.
    return text.isprintable() or not any(unicodedata.category(c) == "Cc" for c in text)


def _warning(text: str) -> str:
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SUBRESOURCE_VERBS = {
    "status": {"get", "update", "patch"},
    "scale": {"get", "update", "patch"},
    "finalize": {"update"},
    "binding": {"create"},
    "eviction": {"create"},
    "log": {"get"},
    "token": {"create"},
    "approval": {"get", "update", "patch"},
    "exec": {"get", "create"},
    "attach": {"get", "create"},
    "portforward": {"get", "create"},
}


async def _verb(server: context.Server, call: context.Call) -> Any:
    verb = call.info.verb
    sub = call.info.subresource
    res = call.res
    if sub:
        allowed = _SUBRESOURCE_VERBS.get(sub)
        s = res.subresource(sub)
        if allowed is None:
            raise errors.MethodNotAllowed(f"the server does not allow this method on the requested resource "
                                          f"({sub} is not served by this server yet)", details={})
        if verb not in allowed or (s is not None and verb not in s.verbs):
            raise errors.MethodNotAllowed("the server does not allow this method on the requested resource",
                                          details={})
        if sub == "binding" and verb == "create":
            return await reviews.bind_subresource(server, call)
        if sub == "eviction":
            return await eviction.create(server, call)
        if sub in ("exec", "attach", "portforward"):
            return await streamproxy.handle(server, call)
        if sub == "log":
            return await podlogs.handle(server, call)
        if sub == "token":
            return await tokenrequest.create(server, call)
        if sub == "scale" and verb == "get":
            return await scale.get(server, call), 200
        if verb == "get":
            return await get.handle(server, call)
        if verb == "update":
            return await update.handle(server, call)
        return await patch.handle(server, call)
    if not res.stored:
        if verb not in res.verbs:
            raise errors.MethodNotAllowed("the server does not allow this method on the requested resource",
                                          details={})
        if res.resource == "componentstatuses":
            return reviews.component_statuses(server, call)
        return await reviews.create(server, call)
    if verb not in res.verbs and not (verb == "watch" and "watch" in res.verbs):
        raise errors.MethodNotAllowed("the server does not allow this method on the requested resource",
                                      details={})
    if verb == "get":
        return await get.handle(server, call)
    if verb == "list":
        return await listing.handle(server, call)
    if verb == "watch":
        return await watch.handle(server, call)
    if verb == "create":
        if call.info.name:
            raise errors.MethodNotAllowed("the server does not allow this method on the requested resource",
                                          details={})
        return await create.handle(server, call)
    if verb == "update":
        return await update.handle(server, call)
    if verb == "patch":
        return await patch.handle(server, call)
    if verb == "delete":
        return await delete.handle(server, call)
    if verb == "deletecollection":
        return await delete.handle_collection(server, call)
    raise errors.MethodNotAllowed("the server does not allow this method on the requested resource", details={})


def make_app(server: context.Server, *, auditor: audit.Auditor | None = None, **flow_control: Any) -> web.Application:
    app = web.Application(middlewares=[_middleware], client_max_size=negotiate.MAX_BODY + 1)
    flowcontrol.install(app, **flow_control)
    app[SERVER_KEY] = server
    if auditor is not None:
        app[AUDIT_KEY] = auditor
        app.on_response_prepare.append(auditor.on_prepare)
    app.router.add_route("*", "/{tail:.*}", _dispatch)
    return app


async def start(server: context.Server, *, host: str, port: int, ssl_context: ssl.SSLContext | None,
                header_timeout: float = flowcontrol.HEADER_TIMEOUT, auditor: audit.Auditor | None = None,
                **flow_control: Any) -> tuple[web.AppRunner, int]:
    """Serve the API on host:port (0 = any free port); returns the runner and the bound port."""
    app = make_app(server, auditor=auditor, **flow_control)
    # aiohttp's keep-alive timer also runs while a request's headers trickle in: it bounds slow-loris reads.
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0,
                           keepalive_timeout=header_timeout)
    await runner.setup()
    site = web.TCPSite(runner, host, port, ssl_context=ssl_context, backlog=1024, reuse_address=True)
    await site.start()
    bound = port
    for s in runner.addresses:
        if isinstance(s, tuple):
            bound = s[1]
            break
    return runner, bound
