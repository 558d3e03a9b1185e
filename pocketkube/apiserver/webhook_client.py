"""HTTPS calls to admission webhooks: where to dial (a URL or a Service), one session per CA bundle, Go's errors."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import errno
import ssl
from typing import Any

import aiohttp
import orjson
import yarl

from pocketkube.apiserver import context
from pocketkube.apiserver import webhook_match as wm

_MAX_RESPONSE = 3 * 1024 * 1024


class CallFailed(Exception):
    """kube's ErrCallingWebhook: the hook's failurePolicy decides whether the request fails."""


class _BadCABundle(Exception):
    pass


def _ssl_context(ca_bundle: str) -> ssl.SSLContext:
    if not ca_bundle:
        return ssl.create_default_context()
    try:
        pem = base64.b64decode(ca_bundle, validate=True).decode("ascii")
        return ssl.create_default_context(cadata=pem)
    except (binascii.Error, ValueError, ssl.SSLError):
        raise _BadCABundle("unable to load root certificates: unable to parse bytes as PEM block") from None


class Sessions:
    """One aiohttp client session per caBundle (empty: the system roots), shared by every call."""

    def __init__(self) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}

    def get(self, ca_bundle: str) -> aiohttp.ClientSession:
        session = self._sessions.get(ca_bundle)
        if session is None or session.closed:
            session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=_ssl_context(ca_bundle)),
                                            trust_env=False, skip_auto_headers=("User-Agent",))
            self._sessions[ca_bundle] = session
        return session

    async def close(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for s in sessions:
            await s.close()


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """Where to POST: the URL kube shows in errors, the URL to dial, and the TLS name to verify."""

    shown: str
    dial: str
    server_hostname: str | None = None   # with the Host header, for a service dialed by address
    host: str = ""


class _ResolveError(Exception):
    pass


# The Node annotation a node agent sets to say where its pods get their addresses ("bridge NAME GW/LEN" when
# they are in the pod network; network/podnet.ANNOTATION, not imported: apiserver/ sits below network/).
_POD_NETWORK_ANNOTATION = "pocketkube.io/pod-network"


async def _reachable_ip(server: context.Server, address: Any) -> str:
    """The endpoint's pod IP when its node puts pods in the pod network (the host routes to its bridge), else ""."""
    if not isinstance(address, dict) or not address.get("ip") or not address.get("nodeName"):
        return ""
    node = await server.objects.get_or_none(server.registry.get("", "v1", "nodes"), "", str(address["nodeName"]))
    annotations = ((node or {}).get("metadata") or {}).get("annotations") or {}
    if str(annotations.get(_POD_NETWORK_ANNOTATION) or "").startswith("bridge "):
        return str(address["ip"])
    return ""


async def resolve_service(server: context.Server, namespace: str, name: str, port: int) -> tuple[str, int]:
    """The address to dial for a Service port: a ready endpoint's pod IP when pods have their own network.

    kube-apiserver dials the ClusterIP; pocketkube's API server is a host process that reaches pod IPs
    through the node's bridge directly. Pods without their own network (the pod network off, or virtual
    addresses) share the host's, so their endpoint port is dialled on 127.0.0.1."""
    svc = await server.objects.get_or_none(server.registry.get("", "v1", "services"), namespace, name)
    if svc is None:
        raise _ResolveError(f'service "{name}" not found')
    spec = svc.get("spec") or {}
    if spec.get("type", "ClusterIP") not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise _ResolveError(f'unsupported service type "{spec.get("type")}"')
    if spec.get("type", "ClusterIP") == "ClusterIP" and spec.get("clusterIP") == "None":
        raise _ResolveError('cannot route to service with ClusterIP "None"')
    svc_port = next((p for p in spec.get("ports") or [] if isinstance(p, dict) and p.get("port") == port), None)
    if svc_port is None:
        raise _ResolveError(f'no service port {port} found for service "{name}"')
    eps = await server.objects.get_or_none(server.registry.get("", "v1", "endpoints"), namespace, name)
    if eps is None:
        raise _ResolveError(f'endpoints "{name}" not found')
    port_name = svc_port.get("name") or ""
    for subset in eps.get("subsets") or []:
        for p in subset.get("ports") or []:
            if (p.get("name") or "") == port_name and subset.get("addresses"):
                return await _reachable_ip(server, subset["addresses"][0]) or "127.0.0.1", int(p["port"])
    raise _ResolveError(f'no endpoints available for service "{name}"')


async def _endpoint(server: context.Server, hook: wm.Hook) -> Endpoint:
    cc = hook.client_config
    query = wm.timeout_query(hook.timeout_seconds)
    url = cc.get("url")
    if isinstance(url, str) and url:
        if not url.startswith("https://"):
            # Validation refuses such URLs; one stored before it existed is never called in plain HTTP.
            raise CallFailed("could not get REST client: 'https' is the only allowed URL scheme")
        shown = url + ("&" if "?" in url else "?") + query
        return Endpoint(shown, shown, None)
    raw_svc = cc.get("service")
    svc: dict[str, Any] = raw_svc if isinstance(raw_svc, dict) else {}
    name, namespace = str(svc.get("name") or ""), str(svc.get("namespace") or "")
    port = svc["port"] if isinstance(svc.get("port"), int) else 443
    path = str(svc.get("path") or "")
    host = f"{name}.{namespace}.svc"
    shown = f"https://{host}:{port}{path}?{query}"
    try:
        ip, dial_port = await resolve_service(server, namespace, name, port)
    except _ResolveError as e:
        raise CallFailed(f'failed to call webhook: Post "{shown}": {e}') from None
    return Endpoint(shown, f"https://{ip}:{dial_port}{path}?{query}", host, f"{host}:{port}")


def go_dial_error(exc: BaseException, url: str) -> str:
    """The text Go's HTTP client gives for a failed connection, as kube-apiserver reports it."""
    where = yarl.URL(url)
    addr = f"{where.host}:{where.port}"
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        cert = exc.certificate_error
        code = getattr(cert, "verify_code", 0)
        if code == 62:
            return f"tls: failed to verify certificate: x509: certificate is not valid for {where.host}"
        if code == 10:
            return "tls: failed to verify certificate: x509: certificate has expired or is not yet valid"
        return "tls: failed to verify certificate: x509: certificate signed by unknown authority"
    if isinstance(exc, aiohttp.ClientConnectorSSLError) or isinstance(getattr(exc, "os_error", None), ssl.SSLError):
        text = str(exc)
        if "WRONG_VERSION_NUMBER" in text or "record layer failure" in text:
            return "http: server gave HTTP response to HTTPS client"
        return "remote error: tls: handshake failure"
    if isinstance(exc, aiohttp.ClientConnectorError):
        os_err = exc.os_error
        if os_err.errno == errno.ECONNREFUSED:
            return f"dial tcp {addr}: connect: connection refused"
        return f"dial tcp {addr}: {os_err.strerror or os_err}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "EOF"
    return str(exc) or type(exc).__name__


_STATUS_TEXT = {
    400: "the server rejected our request for an unknown reason",
    401: "the server has asked for the client to provide credentials",
    403: "the server does not allow access to the requested resource",
    404: "the server could not find the requested resource",
    405: "the server does not allow this method on the requested resource",
    409: "the server reported a conflict",
    422: "the server rejected our request due to an error in our request",
    429: "the server has received too many requests and has asked us to try again later",
    503: "the server is currently unable to handle the request",
    504: "the server was unable to return a response in the time allotted, but may still be processing the request",
}


def http_error(code: int, body: bytes) -> str:
    # client-go decodes a Status body; anything else becomes a generic message for the code.
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and doc.get("kind") == "Status" and isinstance(doc.get("message"), str):
        return str(doc["message"])
    if code in _STATUS_TEXT:
        return _STATUS_TEXT[code]
    if code >= 500:
        text = body.decode("utf-8", "replace").strip()
        return f"an error on the server ({orjson.dumps(text).decode()}) has prevented the request from succeeding"
    return f"the server responded with the status code {code} but did not return more information"


async def post(server: context.Server, sessions: Sessions, hook: wm.Hook, body: bytes) -> bytes:
    """POST body to the hook within its timeout and return the 2xx answer's body; failures raise CallFailed."""
    try:
        session = sessions.get(str(hook.client_config.get("caBundle") or ""))
    except _BadCABundle as e:
        raise CallFailed(f"could not get REST client: {e}") from None
    endpoint: Endpoint | None = None
    try:
        async with asyncio.timeout(hook.timeout_seconds):
            endpoint = await _endpoint(server, hook)
            headers = {"Content-Type": "application/json", "Accept": "application/json, */*"}
            if endpoint.host:
                headers["Host"] = endpoint.host
            async with session.post(endpoint.dial, data=body, headers=headers, allow_redirects=False,
                                    server_hostname=endpoint.server_hostname) as resp:
                data = await resp.content.read(_MAX_RESPONSE)
                status = resp.status
    except TimeoutError:
        shown = endpoint.shown if endpoint is not None else str(hook.client_config.get("url") or "")
        raise CallFailed(f'failed to call webhook: Post "{shown}": context deadline exceeded') from None
    except (aiohttp.ClientError, OSError) as e:
        assert endpoint is not None
        raise CallFailed(f'failed to call webhook: Post "{endpoint.shown}": '
                         f"{go_dial_error(e, endpoint.dial)}") from None
    if not 200 <= status < 300:
        raise CallFailed(f"failed to call webhook: {http_error(status, data)}")
    return data
