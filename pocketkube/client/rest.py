"""Async Kubernetes REST client: CRUD, watch, discovery, errors as APIError; over aiohttp, or in memory to a server
of this process registered in client/loopback.py."""

from __future__ import annotations

import dataclasses
import ssl
import urllib.parse
from collections.abc import AsyncIterator, Mapping
from typing import Any, NamedTuple

import aiohttp
import orjson

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import loopback

DEFAULT_USER_AGENT = "pocketkube/v0.1.0"
JSON = "application/json"
AGGREGATED_DISCOVERY = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
METADATA = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"
METADATA_LIST = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
PATCH_TYPES = {
    "json": "application/json-patch+json",
    "merge": "application/merge-patch+json",
    "strategic": "application/strategic-merge-patch+json",
    "apply": "application/apply-patch+yaml",
}
_REQUEST_TIMEOUT = 60.0
# How long an idle pooled connection is kept for the next request. aiohttp's 15 s default closed a node
# agent's spare connections between its 10 s lease beats and pod bursts, so each burst paid new TLS
# handshakes. client-go keeps idle connections 90 s, but the API server here closes them after 32 s
# idle (server.py), so stay clear of that: a reused connection the server just closed fails the request.
KEEPALIVE_SECONDS = 28.0
# Connections one client opens for ordinary requests (0: no bound); further requests wait for one of
# them. client-go multiplexes a client's requests over one HTTP/2 connection, but over HTTP/1.1 each request
# in flight holds its own, so a client that bursts against a busy server opens a new TLS connection per
# request it queues there. Watches have their own unbounded pool: each holds its connection while it runs.
MAX_CONNECTIONS = 0
# client-go's rest.Request: up to 10 retries of a 429 or 5xx answer that carries Retry-After, whatever the verb.
MAX_RETRIES = 10

_BY_REASON: dict[str, type[errors.APIError]] = {
    "BadRequest": errors.BadRequest,
    "Unauthorized": errors.Unauthorized,
    "Forbidden": errors.Forbidden,
    "NotFound": errors.NotFound,
    "MethodNotAllowed": errors.MethodNotAllowed,
    "NotAcceptable": errors.NotAcceptable,
    "AlreadyExists": errors.AlreadyExists,
    "Conflict": errors.Conflict,
    "Expired": errors.Gone,
    "Gone": errors.Gone,
    "RequestEntityTooLarge": errors.RequestEntityTooLarge,
    "UnsupportedMediaType": errors.UnsupportedMediaType,
    "Invalid": errors.Invalid,
    "TooManyRequests": errors.TooManyRequests,
    "InternalError": errors.InternalError,
    "ServiceUnavailable": errors.ServiceUnavailable,
    "Timeout": errors.Timeout,
    "ServerTimeout": errors.Timeout,
}
_BY_CODE: dict[int, type[errors.APIError]] = {
    400: errors.BadRequest, 401: errors.Unauthorized, 403: errors.Forbidden, 404: errors.NotFound,
    405: errors.MethodNotAllowed, 406: errors.NotAcceptable, 409: errors.Conflict, 410: errors.Gone,
    413: errors.RequestEntityTooLarge, 415: errors.UnsupportedMediaType, 422: errors.Invalid,
    429: errors.TooManyRequests, 500: errors.InternalError, 503: errors.ServiceUnavailable,
    504: errors.Timeout,
}


class GVR(NamedTuple):
    """A resource type: API group ("" for core), version and plural resource name."""

    group: str
    version: str
    resource: str

    def path(self, namespace: str = "", name: str = "", *, subresource: str = "") -> str:
        """The URL path of the collection, or of one object (and its subresource) when name is given."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        parts = [base]
        if namespace:
            parts.append(f"namespaces/{_q(namespace)}")
        parts.append(self.resource)
        if name:
            parts.append(_q(name))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)

    def __str__(self) -> str:
        # The way client-go prints a GroupVersionResource in messages.
        gv = f"{self.group}/{self.version}" if self.group else f"/{self.version}"
        return f"{gv}, Resource={self.resource}"


def retry_after(status: int, headers: Mapping[str, str]) -> int | None:
    """client-go's checkWait: the seconds to wait before retrying a 429 or 5xx answer, None if not to retry.

    Only a Retry-After of whole seconds counts (an HTTP date or a missing header means no retry).
    """
    if status != 429 and status < 500:
        return None
    value = headers.get("Retry-After", "").strip()
    digits = value[1:] if value[:1] in ("+", "-") else value
    if not digits.isascii() or not digits.isdigit():
        return None
    # Go's strconv.Atoi takes a sign too; a negative wait retries at once.
    return max(0, int(value))


def _q(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


def error_from_status(code: int, body: Any, *, text: str = "") -> errors.APIError:
    """The APIError for an HTTP error answer, keeping the server's reason, message and details."""
    reason = ""
    message = text.strip() or f"the server responded with HTTP {code}"
    details = None
    if isinstance(body, Mapping) and body.get("kind") == "Status":
        reason = str(body.get("reason") or "")
        message = str(body.get("message") or message)
        details = body.get("details")
        code = int(body.get("code") or code)
    cls = _BY_REASON.get(reason) or _BY_CODE.get(code) or errors.APIError
    # Subclasses such as Invalid have their own constructors; bypass them and keep the server's words.
    err = cls.__new__(cls)
    errors.APIError.__init__(err, message, details=details if isinstance(details, dict) else None)
    if cls is errors.Invalid:
        err.causes = []  # type: ignore[attr-defined]
    if cls is errors.APIError or (reason and reason not in _BY_REASON):
        # Unknown reasons still round-trip through status().
        err.code = code
        err.reason = reason or err.reason
    return err


@dataclasses.dataclass(frozen=True)
class APIResource:
    """One resource type from discovery."""

    group: str
    version: str
    resource: str
    kind: str
    namespaced: bool
    verbs: frozenset[str]
    preferred: bool

    @property
    def gvr(self) -> GVR:
        return GVR(self.group, self.version, self.resource)


@dataclasses.dataclass
class Discovery:
    """Every resource type the server offers, plus the group versions that failed to answer."""

    resources: list[APIResource]
    failed: dict[str, str] = dataclasses.field(default_factory=dict)

    def preferred(self, *, verbs: tuple[str, ...] = (), namespaced: bool | None = None) -> list[APIResource]:
        """Top-level resources of each group's preferred version that support every verb given."""
        return [r for r in self.resources
                if r.preferred and set(verbs) <= r.verbs
                and (namespaced is None or r.namespaced == namespaced)]

    def for_kind(self, group: str, kind: str) -> APIResource | None:
        """The resource serving a kind, preferring the group's preferred version."""
        found = None
        for r in self.resources:
            if r.group == group and r.kind == kind:
                if r.preferred:
                    return r
                found = found or r
        return found


def parse_aggregated(doc: Mapping[str, Any]) -> Discovery:
    """Resources from an apidiscovery.k8s.io/v2 APIGroupDiscoveryList (subresources left out)."""
    out: list[APIResource] = []
    failed: dict[str, str] = {}
    for item in doc.get("items") or []:
        group = (item.get("metadata") or {}).get("name") or ""
        for i, ver in enumerate(item.get("versions") or []):
            version = ver.get("version") or ""
            gv = f"{group}/{version}" if group else version
            if ver.get("freshness") == "Stale":
                failed[gv] = "stale GroupVersion discovery: " + gv
            for r in ver.get("resources") or []:
                kind = (r.get("responseKind") or {}).get("kind") or ""
                out.append(APIResource(group=group, version=version, resource=r.get("resource") or "",
                                       kind=kind, namespaced=r.get("scope") == "Namespaced",
                                       verbs=frozenset(r.get("verbs") or ()), preferred=i == 0))
    return Discovery(out, failed)


class Client:
    """An async client for one API server; objects are plain dicts.

    cert_pem is the client certificate ssl_context presents: a server of this process reached in memory
    (client/loopback.py) authenticates the client by it, as the TLS handshake would.
    """

    def __init__(self, base_url: str, *, ssl_context: ssl.SSLContext | bool | None = None,
                 token: str = "", user_agent: str = DEFAULT_USER_AGENT, field_manager: str = "",
                 max_retries: int = MAX_RETRIES, clock: clock_mod.Clock | None = None,
                 max_connections: int = MAX_CONNECTIONS, cert_pem: bytes | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        split = urllib.parse.urlsplit(self.base_url)
        self._netloc = split.netloc
        self._base_path = split.path
        self._cert_pem = cert_pem
        self.max_retries = max_retries
        self._clock = clock or clock_mod.Clock()
        self._ssl = ssl_context
        self._token = token
        self.user_agent = user_agent
        self.field_manager = field_manager
        self.max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._watch_session: aiohttp.ClientSession | None = None

    def _new_session(self, limit: int) -> aiohttp.ClientSession:
        headers = {"User-Agent": self.user_agent}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True, limit=limit,
                                         keepalive_timeout=KEEPALIVE_SECONDS)
        return aiohttp.ClientSession(headers=headers, connector=connector)

    def _sess(self) -> aiohttp.ClientSession:
        # Created lazily so the session binds to the loop that uses it.
        if self._session is None or self._session.closed:
            self._session = self._new_session(max(0, self.max_connections))
        return self._session

    def _watch_sess(self) -> aiohttp.ClientSession:
        if self._watch_session is None or self._watch_session.closed:
            self._watch_session = self._new_session(0)
        return self._watch_session

    async def close(self) -> None:
        for session in (self._session, self._watch_session):
            if session is not None:
                await session.close()
        self._session = self._watch_session = None

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _loopback_request(self, path: str, params: Mapping[str, str] | None, headers: Mapping[str, str],
                          data: bytes | None) -> tuple[str, dict[str, str]]:
        """The request target and headers aiohttp would send, for the in-memory transport."""
        query = _clean(params)
        path_qs = self._base_path + path
        if query:
            path_qs += "?" + urllib.parse.urlencode(query, quote_via=urllib.parse.quote)
        out = {"Host": self._netloc, "User-Agent": self.user_agent}
        if self._token:
            out["Authorization"] = f"Bearer {self._token}"
        out.update(headers)
        if data is not None:
            out["Content-Length"] = str(len(data))
        return path_qs, out

    async def _round_trip(self, method: str, path: str, params: Mapping[str, str] | None,
                          headers: Mapping[str, str], data: bytes | None) -> tuple[int, Mapping[str, str], bytes]:
        """One exchange, in memory when this process serves base_url, else over HTTP: status, headers, body."""
        server = loopback.lookup(self.base_url)
        if server is not None:
            path_qs, sent = self._loopback_request(path, params, headers, data)
            return await server.round_trip(method, path_qs, sent, data, peer_cert_pem=self._cert_pem,
                                           timeout=_REQUEST_TIMEOUT)
        timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT)
        async with self._sess().request(method, self.base_url + path, params=_clean(params), data=data,
                                        headers=headers, timeout=timeout) as resp:
            return resp.status, resp.headers, await resp.read()

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = JSON, accept: str = JSON) -> Any:
        """Send one request; the decoded JSON answer, or the APIError the server's Status names."""
        data = None if body is None else orjson.dumps(body)
        headers = {"Accept": accept}
        if data is not None:
            headers["Content-Type"] = content_type
        attempt = 0
        while True:
            status, resp_headers, raw = await self._round_trip(method, path, params, headers, data)
            decoded = _decode(raw)
            if status < 400:
                return decoded
            wait = retry_after(status, resp_headers) if attempt < self.max_retries else None
            if wait is None:
                raise error_from_status(status, decoded, text=raw.decode("utf-8", "replace"))
            attempt += 1
            await self._clock.sleep(wait)

    async def _object(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """request() for endpoints that answer with one JSON object."""
        out = await self.request(method, path, **kw)
        if not isinstance(out, dict):
            raise errors.InternalError(f"expected a JSON object from {method} {path}, got {type(out).__name__}")
        return out

    def _write_params(self, params: dict[str, str] | None = None) -> dict[str, str]:
        p = dict(params or {})
        if self.field_manager:
            p.setdefault("fieldManager", self.field_manager)
        return p

    async def get(self, path: str, *, metadata_only: bool = False) -> dict[str, Any]:
        """GET one object (or any JSON document) by path."""
        accept = f"{METADATA},{JSON}" if metadata_only else JSON
        return await self._object("GET", path, accept=accept)

    async def list(self, gvr: GVR, namespace: str = "", *, label_selector: str = "",
                   field_selector: str = "", limit: int = 0, continue_: str = "",
                   resource_version: str = "", metadata_only: bool = False) -> dict[str, Any]:
        """One page of a list (all namespaces when namespace is empty)."""
        params = {"labelSelector": label_selector, "fieldSelector": field_selector,
                  "limit": str(limit) if limit else "", "continue": continue_,
                  "resourceVersion": resource_version}
        accept = f"{METADATA_LIST},{JSON}" if metadata_only else JSON
        return await self._object("GET", gvr.path(namespace), params=params, accept=accept)

    async def watch(self, gvr: GVR, namespace: str = "", *, resource_version: str = "",
                    label_selector: str = "", field_selector: str = "", allow_bookmarks: bool = True,
                    timeout_seconds: int = 0, metadata_only: bool = False
                    ) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """Stream (type, object) watch events; an ERROR event is raised as its APIError."""
        params = {"watch": "1", "resourceVersion": resource_version, "labelSelector": label_selector,
                  "fieldSelector": field_selector,
                  "allowWatchBookmarks": "true" if allow_bookmarks else "",
                  "timeoutSeconds": str(timeout_seconds) if timeout_seconds else ""}
        accept = f"{METADATA},{JSON}" if metadata_only else JSON
        # The server ends the stream after timeoutSeconds; give it slack before calling the connection dead.
        read = (timeout_seconds + 30) if timeout_seconds else None
        attempt = 0
        while True:
            stream = await self._open_stream(gvr.path(namespace), params, {"Accept": accept}, read_timeout=read)
            if stream.status < 400:
                break
            try:
                raw = await _read_all(stream)
            finally:
                await stream.aclose()
            wait = retry_after(stream.status, stream.headers) if attempt < self.max_retries else None
            if wait is None:
                raise error_from_status(stream.status, _decode(raw), text=raw.decode("utf-8", "replace"))
            attempt += 1
            await self._clock.sleep(wait)
        try:
            buf = b""
            while chunk := await stream.read():
                buf += chunk
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    event = _event(line)
                    if event is not None:
                        yield event
            event = _event(buf)
            if event is not None:
                yield event
        finally:
            await stream.aclose()

    async def _open_stream(self, path: str, params: Mapping[str, str] | None, headers: Mapping[str, str], *,
                           read_timeout: float | None) -> loopback.Stream:
        """GET a streaming answer (a watch), in memory when this process serves base_url, else over HTTP."""
        server = loopback.lookup(self.base_url)
        if server is not None:
            path_qs, sent = self._loopback_request(path, params, headers, None)
            return await server.open_stream("GET", path_qs, sent, None, peer_cert_pem=self._cert_pem,
                                            read_timeout=read_timeout)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=read_timeout)
        resp = await self._watch_sess().get(self.base_url + path, params=_clean(params), headers=headers,
                                            timeout=timeout)
        return _HTTPStream(resp)

    async def create(self, gvr: GVR, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        """POST a new object; the namespace defaults to the object's own."""
        ns = namespace or (body.get("metadata") or {}).get("namespace") or ""
        return await self._object("POST", gvr.path(ns), body=body, params=self._write_params())

    async def update(self, gvr: GVR, body: dict[str, Any], *, subresource: str = "") -> dict[str, Any]:
        """PUT the whole object (optimistic concurrency through metadata.resourceVersion)."""
        meta = body.get("metadata") or {}
        path = gvr.path(meta.get("namespace") or "", meta.get("name") or "", subresource=subresource)
        return await self._object("PUT", path, body=body, params=self._write_params())

    async def update_status(self, gvr: GVR, body: dict[str, Any]) -> dict[str, Any]:
        """PUT the object's status subresource."""
        return await self.update(gvr, body, subresource="status")

    async def patch(self, path: str, body: Any, *, patch_type: str = "merge",
                    metadata_only: bool = False) -> dict[str, Any]:
        """PATCH an object: patch_type is json, merge, strategic or apply."""
        if patch_type not in PATCH_TYPES:
            raise ValueError(f"unknown patch type {patch_type!r}; use one of {sorted(PATCH_TYPES)}")
        accept = f"{METADATA},{JSON}" if metadata_only else JSON
        return await self._object("PATCH", path, body=body, content_type=PATCH_TYPES[patch_type],
                                  accept=accept, params=self._write_params())

    async def delete(self, path: str, *, propagation_policy: str = "",
                     preconditions: Mapping[str, str] | None = None,
                     grace_period_seconds: int | None = None) -> dict[str, Any]:
        """DELETE one object; returns what the server answers (the object or a Status)."""
        return await self._object("DELETE", path, body=_delete_options(
            propagation_policy, preconditions, grace_period_seconds))

    async def delete_collection(self, gvr: GVR, namespace: str = "", *, label_selector: str = "",
                                field_selector: str = "", propagation_policy: str = "",
                                metadata_only: bool = False) -> dict[str, Any]:
        """DELETE a collection (deletecollection verb); metadata_only answers with a PartialObjectMetadataList,
        as kube's metadata client asks (the namespace controller's deletes answer with every object deleted)."""
        params = {"labelSelector": label_selector, "fieldSelector": field_selector}
        accept = f"{METADATA_LIST},{JSON}" if metadata_only else JSON
        return await self._object("DELETE", gvr.path(namespace), params=params, accept=accept,
                                  body=_delete_options(propagation_policy, None, None))

    async def discover(self) -> Discovery:
        """Every resource the server serves, through aggregated discovery (legacy fallback)."""
        core = await self._discover_root("/api")
        groups = await self._discover_root("/apis")
        return Discovery(core.resources + groups.resources, {**core.failed, **groups.failed})

    async def _discover_root(self, root: str) -> Discovery:
        doc = await self.request("GET", root, accept=f"{AGGREGATED_DISCOVERY},{JSON}")
        if isinstance(doc, dict) and doc.get("kind") == "APIGroupDiscoveryList":
            return parse_aggregated(doc)
        return await self._discover_legacy(root, doc if isinstance(doc, dict) else {})

    async def _discover_legacy(self, root: str, doc: Mapping[str, Any]) -> Discovery:
        # Servers without aggregated discovery: walk every group version document.
        gvs: list[tuple[str, str, bool]] = []
        if root == "/api":
            gvs = [("", v, i == 0) for i, v in enumerate(doc.get("versions") or [])]
        else:
            for g in doc.get("groups") or []:
                pref = (g.get("preferredVersion") or {}).get("version")
                for v in g.get("versions") or []:
                    gvs.append((g.get("name") or "", v.get("version") or "", v.get("version") == pref))
        out: list[APIResource] = []
        failed: dict[str, str] = {}
        for group, version, preferred in gvs:
            gv = f"{group}/{version}" if group else version
            try:
                rl = await self.request("GET", f"{root}/{gv}")
            except (errors.APIError, aiohttp.ClientError, OSError) as e:
                failed[gv] = str(e)
                continue
            for r in rl.get("resources") or []:
                if "/" in (r.get("name") or ""):
                    continue
                out.append(APIResource(group=group, version=version, resource=r["name"],
                                       kind=r.get("kind") or "", namespaced=bool(r.get("namespaced")),
                                       verbs=frozenset(r.get("verbs") or ()), preferred=preferred))
        return Discovery(out, failed)


class _HTTPStream:
    """An aiohttp response read as a loopback.Stream."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    async def read(self) -> bytes:
        return await self._resp.content.readany()

    async def aclose(self) -> None:
        # What leaving `async with resp` does: a response not read to its end closes its connection.
        self._resp.release()
        await self._resp.wait_for_close()


async def _read_all(stream: loopback.Stream) -> bytes:
    parts = []
    while chunk := await stream.read():
        parts.append(chunk)
    return b"".join(parts)


def _delete_options(policy: str, preconditions: Mapping[str, str] | None,
                    grace: int | None) -> dict[str, Any]:
    opts: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1"}
    if policy:
        opts["propagationPolicy"] = policy
    if preconditions:
        opts["preconditions"] = dict(preconditions)
    if grace is not None:
        opts["gracePeriodSeconds"] = grace
    return opts


def _clean(params: Mapping[str, str] | None) -> dict[str, str]:
    return {k: v for k, v in (params or {}).items() if v}


def _decode(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None


def _event(line: bytes) -> tuple[str, dict[str, Any]] | None:
    line = line.strip()
    if not line:
        return None
    ev = orjson.loads(line)
    etype, obj = ev.get("type"), ev.get("object") or {}
    if etype == "ERROR":
        raise error_from_status(int(obj.get("code") or 500), obj)
    return etype, obj
