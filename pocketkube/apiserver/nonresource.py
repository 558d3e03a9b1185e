"""Non-resource paths: /version, health checks, discovery documents and OpenAPI, cached per registry change."""

from __future__ import annotations

import datetime
from typing import Any

import orjson
from aiohttp import web

from pocketkube.api import errors, openapi, openapi_v2pb
from pocketkube.apiserver import context, discovery, health, requestinfo

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0-pocketkube",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2026-11-22T00:00:00Z",
    "goVersion": "go1.23.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}

_HEALTH = ("/healthz", "/livez", "/readyz")


class _Cache:
    """Serialised documents keyed by path, dropped whenever the registry changes."""

    def __init__(self) -> None:
        self.generation = -1
        self.docs: dict[str, tuple[bytes, str]] = {}
        self.values: dict[str, Any] = {}
        self.last_modified = ""

    def _fresh(self, server: context.Server) -> None:
        gen = server.registry.generation
        if gen != self.generation:
            self.docs.clear()
            self.values.clear()
            self.generation = gen
            self.last_modified = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")

    def value(self, server: context.Server, key: str, build: Any) -> Any:
        """Any derived value (not serialised), rebuilt after registry changes."""
        self._fresh(server)
        if key not in self.values:
            self.values[key] = build()
        return self.values[key]

    def get(self, server: context.Server, key: str, build: Any) -> tuple[bytes, str]:
        self._fresh(server)
        if key not in self.docs:
            body = build()
            raw = body if isinstance(body, bytes) else orjson.dumps(body)
            self.docs[key] = (raw, discovery.etag(raw))
        return self.docs[key]


_cache = _Cache()


def _json(body: Any, *, headers: dict[str, str] | None = None, status: int = 200) -> web.Response:
    h = {"Cache-Control": "no-cache, private"}
    h.update(headers or {})
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    return web.Response(body=raw, status=status, content_type="application/json", headers=h)


async def handle(server: context.Server, request: web.Request, info: requestinfo.RequestInfo) -> web.StreamResponse:
    path = request.path.rstrip("/") or "/"
    if request.method not in ("GET", "HEAD"):
        if path in ("/api", "/apis") or path.startswith(("/openapi", "/version") + _HEALTH):
            raise errors.MethodNotAllowed("the server does not allow this method on the requested resource", details={})
        raise errors.NotFound("the server could not find the requested resource", details={})
    if path == "/version":
        return _json(VERSION)
    if path in _HEALTH or path.startswith(tuple(h + "/" for h in _HEALTH)):
        return health.respond(server, request, path)
    if path in ("/api", "/apis"):
        return _discovery_root(server, request, legacy=(path == "/api"))
    if path == "/":
        return _json({"paths": sorted(_root_paths(server))})
    parts = path.strip("/").split("/")
    if parts[0] == "apis" and len(parts) == 2:
        if not any(g == parts[1] for g, _ in server.registry.groups()):
            raise errors.NotFound.resource()
        return _json(discovery.api_group(server.registry, parts[1]))
    if parts[0] == "api" and len(parts) == 2:
        if parts[1] != "v1":
            raise errors.NotFound.resource()
        return _json(discovery.resource_list(server.registry, "", "v1"))
    if parts[0] == "apis" and len(parts) == 3:
        if not server.registry.resources(parts[1], parts[2]):
            raise errors.NotFound.resource()
        return _json(discovery.resource_list(server.registry, parts[1], parts[2]))
    if parts[0] == "openapi":
        return _openapi(server, request, parts[1:])
    raise errors.NotFound("the server could not find the requested resource", details={})


def _root_paths(server: context.Server) -> list[str]:
    paths = ["/api", "/api/v1", "/apis", "/healthz", "/livez", "/readyz", "/openapi/v2", "/openapi/v3", "/version"]
    for g, versions in server.registry.groups():
        paths.append(f"/apis/{g}")
        paths.extend(f"/apis/{g}/{v}" for v in versions)
    return paths


def _discovery_root(server: context.Server, request: web.Request, *, legacy: bool) -> web.Response:
    accept = request.headers.get("Accept", "")
    version = discovery.negotiate(accept)
    if version is None:
        body = discovery.api_versions(server.server_address) if legacy else discovery.api_group_list(server.registry)
        return _json(body)
    key = f"aggregated:{legacy}:{version}"
    raw, tag = _cache.get(server, key, lambda: discovery.aggregated(server.registry, legacy=legacy, version=version))
    headers = {"Cache-Control": "public", "Vary": "Accept", "ETag": tag, "X-Varied-Accept": accept}
    if request.headers.get("If-None-Match") == tag:
        return web.Response(status=304, headers=headers)
    return web.Response(body=raw, headers={**headers, "Content-Type": discovery.aggregated_content_type(version)})


def _crd_defs(server: context.Server) -> dict[str, Any]:
    return server.crds.openapi_definitions() if server.crds is not None else {}


def _v3_blobs(server: context.Server) -> dict[str, bytes]:
    return _cache.value(server, "openapi:v3", lambda: openapi.v3_serialized(
        server.registry.all(), extra_schemas=_crd_defs(server)))


def _openapi(server: context.Server, request: web.Request, rest: list[str]) -> web.Response:
    if rest == ["v2"]:
        if openapi_v2pb.ACCEPT_TYPE in request.headers.get("Accept", ""):
            raw, tag = _cache.get(server, "openapi:v2pb", lambda: openapi_v2pb.encode(openapi.v2_document(
                server.registry.all(), extra_definitions=_crd_defs(server))))
            ctype = openapi_v2pb.CONTENT_TYPE
        else:
            raw, tag = _cache.get(server, "openapi:v2", lambda: openapi.v2_document(
                server.registry.all(), extra_definitions=_crd_defs(server)))
            ctype = "application/json"
        return web.Response(body=raw, headers={"Content-Type": ctype, "ETag": tag,
                                               "Cache-Control": "no-cache, private", "Vary": "Accept",
                                               "Last-Modified": _cache.last_modified})
    blobs = _v3_blobs(server)
    if rest == ["v3"]:
        raw, _ = _cache.get(server, "openapi:v3:index", lambda: openapi.v3_index_of(blobs))
        return web.Response(body=raw, headers={"Content-Type": "text/plain; charset=utf-8",
                                               "Cache-Control": "no-cache, private",
                                               "Last-Modified": _cache.last_modified})
    if len(rest) >= 2 and rest[0] == "v3":
        key = "/".join(rest[1:])
        doc = blobs.get(key)
        if doc is None:
            raise errors.NotFound("the server could not find the requested resource", details={})
        tag = openapi.document_hash(doc)
        headers = {"Content-Type": "application/json", "Vary": "Accept", "ETag": f'"{tag}"',
                   "X-Varied-Accept": request.headers.get("Accept", ""), "Last-Modified": _cache.last_modified}
        wanted = request.query.get("hash")
        if wanted and wanted != tag:
            raise web.HTTPMovedPermanently(location=f"{request.path}?hash={tag}")
        if wanted:
            headers["Cache-Control"] = "public, immutable"
            headers["Expires"] = (datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=365)).strftime(
                "%a, %d %b %Y %H:%M:%S UTC")
        else:
            headers["Cache-Control"] = "no-cache, private"
        return web.Response(body=doc, headers=headers)
    raise errors.NotFound("the server could not find the requested resource", details={})
