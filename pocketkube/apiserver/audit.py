"""The audit log: each request's audit.k8s.io/v1 Events, batched out as kube-apiserver's log backend writes them."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import logging
import os
import sys
from typing import Any, BinaryIO

import orjson
from aiohttp import web

from pocketkube.apiserver import audit_policy, context, negotiate, rbac, requestinfo
from pocketkube.base import clock as clock_mod

log = logging.getLogger("pocketkube.apiserver.audit")

_RANK = {level: i for i, level in enumerate(audit_policy.LEVELS)}
_LONG_RUNNING_VERBS = frozenset({"watch", "proxy"})
_LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})


# --- the log backend -----------------------------------------------------------------------------

class LogSink:
    """JSON lines to a file (or stdout for "-"), rotated past max_size_mb keeping max_backups old files."""

    def __init__(self, path: str, *, max_size_mb: int = 0, max_backups: int = 0,
                 clock: clock_mod.Clock | None = None) -> None:
        self.path = path
        self._max_bytes = max_size_mb * 1024 * 1024
        self._max_backups = max_backups
        self._clock = clock or clock_mod.Clock()
        self._file: BinaryIO = sys.stdout.buffer if path == "-" else self._open()

    def _open(self) -> BinaryIO:
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        return open(self.path, "ab")  # noqa: SIM115 - kept open for the sink's life

    def write(self, events: list[dict[str, Any]]) -> None:
        data = b"".join(orjson.dumps(e) + b"\n" for e in events)
        if self._max_bytes and self.path != "-" and self._file.tell() + len(data) > self._max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()

    def _rotate(self) -> None:
        # lumberjack's naming, as kube-apiserver: audit-2006-01-02T15-04-05.000.log beside audit.log
        self._file.close()
        stem, ext = os.path.splitext(self.path)
        stamp = self._clock.now().strftime("%Y-%m-%dT%H-%M-%S.%f")[:-3]
        os.replace(self.path, f"{stem}-{stamp}{ext}")
        if self._max_backups:
            directory = os.path.dirname(os.path.abspath(self.path))
            base = os.path.basename(stem) + "-"
            old = sorted(f for f in os.listdir(directory) if f.startswith(base) and f.endswith(ext))
            for name in old[:-self._max_backups]:
                os.remove(os.path.join(directory, name))
        self._file = self._open()

    def close(self) -> None:
        if self.path != "-":
            self._file.close()


# --- request hooks (called by server.py's middleware and dispatcher) ------------------------------

@dataclasses.dataclass
class _Record:
    """One audited request: what every stage's event repeats, and what later stages add."""

    audit_id: str
    received: datetime.datetime
    decision: audit_policy.Decision = audit_policy.NONE
    info: requestinfo.RequestInfo | None = None
    verb: str = ""
    user: dict[str, Any] = dataclasses.field(default_factory=dict)
    authenticated: context.User | None = None
    impersonated: dict[str, Any] | None = None
    object_ref: dict[str, str] | None = None
    annotations: dict[str, str] = dataclasses.field(default_factory=dict)
    call: context.Call | None = None
    panic: str = ""
    started: bool = False
    done: bool = False
    head: dict[str, Any] | None = None  # requestURI..userAgent, the same at every stage


_RECORD: web.RequestKey[_Record] = web.RequestKey("pocketkube.audit", _Record)


class Auditor:
    """Evaluates the policy per request and writes events in batches off the request path."""

    def __init__(self, policy: audit_policy.Policy, sink: LogSink, *, clock: clock_mod.Clock | None = None,
                 flush_delay: float = 0.05) -> None:
        self.policy = policy
        self.sink = sink
        self.clock = clock or clock_mod.Clock()
        self._delay = flush_delay
        self._pending: list[dict[str, Any]] = []
        self._timer: asyncio.TimerHandle | None = None

    # Batching: events wait at most flush_delay, then one write takes them all.
    def emit(self, event: dict[str, Any]) -> None:
        self._pending.append(event)
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay, self.flush)

    def flush(self) -> None:
        self._timer = None
        events, self._pending = self._pending, []
        if events:
            try:
                self.sink.write(events)
            except OSError:
                log.exception("writing %d audit events to %s failed", len(events), self.sink.path)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.flush()
        self.sink.close()

    def begin(self, request: web.Request, audit_id: str) -> None:
        """Middleware, first thing: the request's ID and arrival time."""
        request[_RECORD] = _Record(audit_id, self.clock.now())

    def received(self, request: web.Request, user: context.User) -> None:
        """After authentication: evaluate the policy; RequestReceived unless the level is None."""
        rec: _Record | None = request.get(_RECORD)
        if rec is None:
            return
        info = requestinfo.parse(request.method, request.path,
                                 watch_param=request.query.get("watch", "") in ("true", "1", "True"))
        rec.info = info
        rec.verb = info.verb if info.is_resource_request else request.method.lower()
        rec.decision = self.policy.evaluate(user, info, rec.verb)
        if rec.decision.level == "None":
            return
        rec.authenticated = user
        rec.user = user.info()
        if info.is_resource_request:
            rec.object_ref = _ref(info)
        if "RequestReceived" not in rec.decision.omit_stages:
            self.emit(self._event(request, rec, "RequestReceived", rec.received))

    async def authorizing(self, request: web.Request, server: context.Server, user: context.User,
                          info: requestinfo.RequestInfo) -> None:
        """After impersonation, before the authorizer: the impersonated user and the decision annotations."""
        rec: _Record | None = request.get(_RECORD)
        if rec is None or rec.decision.level == "None":
            return
        if user is not rec.authenticated:
            rec.impersonated = user.info()
        decide = getattr(server.authorizer, "decide", None)
        if decide is not None:
            allowed, reason = await decide(server, user, rbac.attributes_of(info))
            rec.annotations["authorization.k8s.io/decision"] = "allow" if allowed else "forbid"
            rec.annotations["authorization.k8s.io/reason"] = reason

    def bind(self, request: web.Request, call: context.Call) -> None:
        """The resource call, whose audit_annotations admission plugins fill."""
        rec: _Record | None = request.get(_RECORD)
        if rec is not None:
            rec.call = call

    def panic(self, request: web.Request, exc: BaseException) -> None:
        rec: _Record | None = request.get(_RECORD)
        if rec is not None:
            rec.panic = f"APIServer panic'd: {exc}"

    async def on_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """aiohttp's on_response_prepare: ResponseStarted for long-running requests (watch, exec, logs)."""
        rec: _Record | None = request.get(_RECORD)
        if rec is None:
            return
        response.headers.setdefault("Audit-Id", rec.audit_id)
        if rec.done or rec.started or rec.decision.level == "None" or not _long_running(rec.info):
            return
        rec.started = True
        if "ResponseStarted" not in rec.decision.omit_stages:
            self.emit(self._event(request, rec, "ResponseStarted", self.clock.now(),
                                  status={"metadata": {}, "code": response.status}))

    async def complete(self, request: web.Request, response: web.StreamResponse) -> None:
        """Middleware, last thing: ResponseComplete (or Panic) with status and, by level, the bodies."""
        rec: _Record | None = request.get(_RECORD)
        if rec is None or rec.done:
            return
        rec.done = True
        if rec.info is None:
            if response.status == 401:
                self._failed_authentication(request, rec, response)
            return
        decision = rec.decision
        stage = "Panic" if rec.panic else "ResponseComplete"
        if decision.level == "None" or stage in decision.omit_stages:
            return
        if rec.panic:
            status: dict[str, Any] = {"metadata": {}, "status": "Failure", "message": rec.panic,
                                      "reason": "InternalError", "code": 500}
        else:
            status = _response_status(response)
        request_object = response_object = None
        if rec.verb in ("create", "update", "patch", "delete", "deletecollection"):
            request_object = _request_object(request, rec)
            if rec.verb in ("create", "update") and rec.object_ref is not None:
                if isinstance(request_object, dict):
                    _complete_ref(rec.object_ref, request_object)
                elif isinstance(response, web.Response) and 200 <= response.status < 300:
                    # body not kept by the handler: the object's own name and namespace are the next best
                    created = _json_body(response) or {}
                    _complete_ref(rec.object_ref, {"metadata": {k: v for k, v in (created.get("metadata") or {}).items()
                                                                if k in ("name", "namespace")}})
        if _RANK[decision.level] < _RANK["Request"]:
            request_object = None
        elif request_object is not None and decision.omit_managed_fields:
            request_object = _without_managed_fields(request_object)
        if _RANK[decision.level] >= _RANK["RequestResponse"] and isinstance(response, web.Response):
            response_object = _json_body(response)
            if response_object is not None and decision.omit_managed_fields:
                response_object = _without_managed_fields(response_object)
        self.emit(self._event(request, rec, stage, self.clock.now(), status=status,
                              request_object=request_object, response_object=response_object))

    def _failed_authentication(self, request: web.Request, rec: _Record, response: web.StreamResponse) -> None:
        """WithFailedAuthenticationAudit: one ResponseStarted event, evaluated without a user."""
        info = requestinfo.parse(request.method, request.path)
        rec.info = info
        rec.verb = info.verb if info.is_resource_request else request.method.lower()
        rec.decision = self.policy.evaluate(None, info, rec.verb)
        if rec.decision.level == "None" or "ResponseStarted" in rec.decision.omit_stages:
            return
        if info.is_resource_request:
            rec.object_ref = _ref(info)
        status = {"metadata": {}, "message": _auth_methods(request), "code": response.status}
        self.emit(self._event(request, rec, "ResponseStarted", self.clock.now(), status=status))

    def _event(self, request: web.Request, rec: _Record, stage: str, at: datetime.datetime, *,
               status: dict[str, Any] | None = None, request_object: Any = None,
               response_object: Any = None) -> dict[str, Any]:
        # Keys in the order of kube's Event struct, empty ones left out as its omitempty tags do.
        ev: dict[str, Any] = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": rec.decision.level,
                              "auditID": rec.audit_id, "stage": stage}
        if rec.head is None:
            rec.head = {"requestURI": request.raw_path, "verb": rec.verb, "user": rec.user,
                        "sourceIPs": source_ips(request), "userAgent": request.headers.get("User-Agent", "")}
        ev.update(rec.head)
        if rec.impersonated is not None:
            # impersonatedUser sits between user and sourceIPs in kube's Event
            ips, agent = ev.pop("sourceIPs"), ev.pop("userAgent")
            ev["impersonatedUser"] = rec.impersonated
            ev["sourceIPs"], ev["userAgent"] = ips, agent
        if not ev["userAgent"]:
            del ev["userAgent"]
        if rec.object_ref is not None:
            ev["objectRef"] = {k: rec.object_ref[k] for k in _REF_ORDER if rec.object_ref.get(k)}
        if status is not None:
            ev["responseStatus"] = status
        if request_object is not None:
            ev["requestObject"] = request_object
        if response_object is not None:
            ev["responseObject"] = response_object
        ev["requestReceivedTimestamp"] = micro_time(rec.received)
        ev["stageTimestamp"] = micro_time(at)
        annotations = dict(rec.annotations) if stage != "RequestReceived" else {}
        if rec.call is not None and rec.call.audit_annotations:
            annotations.update(rec.call.audit_annotations)
        if annotations:
            ev["annotations"] = dict(sorted(annotations.items()))
        return ev


_REF_ORDER = ("resource", "namespace", "name", "uid", "apiGroup", "apiVersion", "resourceVersion", "subresource")


def _ref(info: requestinfo.RequestInfo) -> dict[str, str]:
    return {"resource": info.resource, "namespace": info.namespace, "name": info.name, "apiGroup": info.group,
            "apiVersion": info.version, "subresource": info.subresource}


def _complete_ref(ref: dict[str, str], obj: dict[str, Any]) -> None:
    """audit.LogRequestObject: fill what the URL did not say from the request body's metadata."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict):
        return
    for field, key in (("namespace", "namespace"), ("name", "name"), ("uid", "uid"),
                       ("resourceVersion", "resourceVersion")):
        if not ref.get(field) and isinstance(meta.get(key), str):
            ref[field] = meta[key]


def _long_running(info: requestinfo.RequestInfo | None) -> bool:
    return info is not None and (info.verb in _LONG_RUNNING_VERBS or info.subresource in _LONG_RUNNING_SUBRESOURCES)


def micro_time(at: datetime.datetime) -> str:
    """metav1.MicroTime: RFC 3339 in UTC with exactly six fractional digits."""
    if at.utcoffset():
        at = at.astimezone(datetime.UTC)
    return at.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # isoformat beats strftime 5x


def source_ips(request: web.Request) -> list[str]:
    """utilnet.SourceIPs: X-Forwarded-For, then X-Real-Ip, then the peer unless it already ends the chain."""
    ips: list[str] = []
    headers = request.headers
    if "X-Forwarded-For" in headers:
        ips = [p.strip() for p in headers["X-Forwarded-For"].split(",") if _is_ip(p.strip())]
    if "X-Real-Ip" in headers:
        real = headers["X-Real-Ip"].strip()
        if _is_ip(real) and real not in ips:
            ips.append(real)
    remote = request.remote or ""
    if remote and (not ips or ips[-1] != remote):
        ips.append(remote)
    return ips


def _is_ip(text: str) -> bool:
    if not text:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _auth_methods(request: web.Request) -> str:
    methods = []
    auth = request.headers.get("Authorization", "").strip()
    scheme = auth.split(" ", 1)[0].lower() if " " in auth else ""
    if scheme == "basic":
        methods.append("basic")
    if scheme == "bearer":
        methods.append("bearer")
    if request.query.get("access_token", "").strip():
        methods.append("access_token")
    if request.transport is not None and request.transport.get_extra_info("peercert"):
        methods.append("x509")
    if methods:
        return "Authentication failed, attempted: " + ", ".join(methods)
    return "Authentication failed, no credentials provided"


def _response_status(response: web.StreamResponse) -> dict[str, Any]:
    """The response's code, plus a Status body's status/message/reason/details (kube copies those)."""
    status: dict[str, Any] = {"metadata": {}}
    body = response.body if isinstance(response, web.Response) else None
    if isinstance(body, bytes) and body.startswith(b'{"kind":"Status"'):
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = {}
        for key in ("status", "message", "reason", "details"):
            if parsed.get(key):
                status[key] = parsed[key]
    status["code"] = response.status
    return status


def _request_object(request: web.Request, rec: _Record) -> Any:
    """The body the handler read (negotiate.read_body keeps it under BODY_KEY), decoded as kube logs it."""
    key = getattr(negotiate, "BODY_KEY", None)
    raw = request.get(key) if key is not None else None
    if not raw:
        return None
    try:
        if rec.verb == "patch":
            ctype = negotiate.media_type(request.headers.get("Content-Type"))
            return negotiate.parse_yaml(raw) if ctype == "application/apply-patch+yaml" else negotiate.parse_json(raw)
        return negotiate.decode_object(raw, request.headers.get("Content-Type"), what="")
    except Exception:  # noqa: BLE001 - a body the handler refused is simply not logged
        return None


def _json_body(response: web.Response) -> Any:
    body = response.body
    if not isinstance(body, bytes) or not body or response.content_type != "application/json":
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


def _without_managed_fields(obj: Any) -> Any:
    """omitManagedFields: the bodies without metadata.managedFields (list items included)."""
    if not isinstance(obj, dict):
        return obj
    out = dict(obj)
    meta = out.get("metadata")
    if isinstance(meta, dict) and "managedFields" in meta:
        out["metadata"] = {k: v for k, v in meta.items() if k != "managedFields"}
    items = out.get("items")
    if isinstance(items, list):
        out["items"] = [_without_managed_fields(i) for i in items]
    return out
