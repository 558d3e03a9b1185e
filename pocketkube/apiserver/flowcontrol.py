"""API Priority and Fairness: classify requests by FlowSchema, queue them fairly per flow, 429 when full, deadlines."""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import context, flowcontrol_defaults, requestinfo

# kube-apiserver's defaults: with APF on, the two in-flight limits add up to the server's concurrency limit.
MAX_REQUESTS_INFLIGHT = 400
MAX_MUTATING_REQUESTS_INFLIGHT = 200
REQUEST_TIMEOUT = 60.0        # --request-timeout, for requests that are not long-running
HEADER_TIMEOUT = 32.0         # kube-apiserver's http.Server ReadHeaderTimeout (slow-loris guard)
RETRY_AFTER = 1

FLOW_SCHEMA_UID = "X-Kubernetes-Pf-Flowschema-Uid"
PRIORITY_LEVEL_UID = "X-Kubernetes-Pf-Prioritylevel-Uid"

# kube's LongRunningRequestCheck: these neither hold a seat nor get a deadline (watches queue, then let go).
_LONG_RUNNING_SUBRESOURCES = frozenset({"attach", "exec", "proxy", "log", "portforward"})
_UID_REFRESH = 30.0
_CACHE_MAX = 10000
_SWEEP = 0.25                 # how often deadlines are checked: a request may run this much past its own


# --- Go durations (the `timeout` query parameter) ----------------------------------------------------

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def _go_quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_duration(text: str) -> float:
    """Seconds in a Go duration ("32s", "1m30s", "-1.5h", "0"), or ValueError with Go's message."""
    s = text
    neg = False
    if s and s[0] in "+-":
        neg = s[0] == "-"
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"time: invalid duration {_go_quote(text)}")
    total = 0.0
    while s:
        i = 0
        while i < len(s) and (s[i].isdigit() or s[i] == "."):
            i += 1
        number = s[:i]
        if not number or number == "." or number.count(".") > 1:
            raise ValueError(f"time: invalid duration {_go_quote(text)}")
        s = s[i:]
        j = 0
        while j < len(s) and not (s[j].isdigit() or s[j] == "."):
            j += 1
        unit = s[:j]
        s = s[j:]
        if not unit:
            raise ValueError(f"time: missing unit in duration {_go_quote(text)}")
        if unit not in _UNITS:
            raise ValueError(f"time: unknown unit {_go_quote(unit)} in duration {_go_quote(text)}")
        total += float(number) * _UNITS[unit]
    return -total if neg else total


def request_timeout(query_value: str | None, *, default: float = REQUEST_TIMEOUT) -> float:
    """The deadline of a non-long-running request: `timeout` if given and positive, capped at the default."""
    if not query_value:
        return default
    try:
        seconds = parse_duration(query_value)
    except ValueError as err:
        raise errors.BadRequest(f"invalid timeout specified in the request URL - {err}") from None
    if seconds <= 0 or seconds > default:
        return default
    return seconds


def check_inflight(max_requests_inflight: int, max_mutating_requests_inflight: int) -> None:
    """kube-apiserver's checks of --max-requests-inflight and --max-mutating-requests-inflight with APF on."""
    if max_requests_inflight < 0:
        raise ValueError("--max-requests-inflight can not be negative value")
    if max_mutating_requests_inflight < 0:
        raise ValueError("--max-mutating-requests-inflight can not be negative value")
    if max_requests_inflight + max_mutating_requests_inflight <= 0:
        raise ValueError(f"invalid configuration: MaxRequestsInFlight={max_requests_inflight} and "
                         f"MaxMutatingRequestsInFlight={max_mutating_requests_inflight}; they must add up to "
                         "something positive")


# --- classification -----------------------------------------------------------------------------------


def _subject_matches(subject: dict[str, Any], user: context.User) -> bool:
    kind = subject.get("kind")
    if kind == "Group":
        name = (subject.get("group") or {}).get("name", "")
        return name == "*" or name in user.groups
    if kind == "User":
        name = (subject.get("user") or {}).get("name", "")
        return name in ("*", user.name)
    if kind == "ServiceAccount":
        sa = subject.get("serviceAccount") or {}
        prefix = f"system:serviceaccount:{sa.get('namespace', '')}:"
        if not user.name.startswith(prefix):
            return False
        return sa.get("name") == "*" or user.name[len(prefix):] == sa.get("name")
    return False


def _resource_rule_matches(rule: dict[str, Any], info: requestinfo.RequestInfo) -> bool:
    verbs = rule.get("verbs") or ()
    if "*" not in verbs and info.verb not in verbs:
        return False
    groups = rule.get("apiGroups") or ()
    if "*" not in groups and info.group not in groups:
        return False
    resource = info.resource + "/" + info.subresource if info.subresource else info.resource
    resources = rule.get("resources") or ()
    if "*" not in resources and resource not in resources:
        return False
    if not info.namespace:
        return bool(rule.get("clusterScope"))
    namespaces = rule.get("namespaces") or ()
    return "*" in namespaces or info.namespace in namespaces


def _non_resource_rule_matches(rule: dict[str, Any], info: requestinfo.RequestInfo) -> bool:
    verbs = rule.get("verbs") or ()
    if "*" not in verbs and info.verb not in verbs:
        return False
    for url in rule.get("nonResourceURLs") or ():
        if url == "*" or url == info.path or (url.endswith("/*") and info.path.startswith(url[:-1])):
            return True
    return False


def schema_matches(schema: dict[str, Any], user: context.User, info: requestinfo.RequestInfo) -> bool:
    """Whether one of the FlowSchema's rules names this user and this request."""
    for rule in (schema.get("spec") or {}).get("rules") or ():
        if not any(_subject_matches(s, user) for s in rule.get("subjects") or ()):
            continue
        if info.is_resource_request:
            if any(_resource_rule_matches(r, info) for r in rule.get("resourceRules") or ()):
                return True
        elif any(_non_resource_rule_matches(r, info) for r in rule.get("nonResourceRules") or ()):
            return True
    return False


# --- priority levels: seats, fair queues, rejection -------------------------------------------------------


# Flows whose hands a level remembers (distinguishers are users or namespaces: few in practice).
_HANDS_MAX = 4096

class Level:
    """One priority level: a concurrency limit and, for Queue levels, shuffle-sharded queues of waiters."""

    def __init__(self, name: str, *, limit: int, exempt: bool = False, queues: int = 0, hand_size: int = 0,
                 queue_length_limit: int = 0) -> None:
        self.name = name
        self.limit = limit
        self.exempt = exempt
        self.queues: list[collections.deque[asyncio.Future[None]]] = [collections.deque() for _ in range(queues)]
        self.hand_size = max(1, min(hand_size, queues)) if queues else 0
        self.queue_length_limit = queue_length_limit
        self.executing = 0
        self.waiting = 0
        self._next = 0
        # flow -> its hand: dealing one seeds a Random (~20 us), and a busy level deals for every queued request
        self._hands: dict[tuple[str, str], list[int]] = {}

    def try_acquire(self) -> bool:
        """Take a seat at once if one is free and nobody waits ahead."""
        if self.executing < self.limit and self.waiting == 0:
            self.executing += 1
            return True
        return False

    def hand(self, flow: tuple[str, str]) -> list[int]:
        """Shuffle sharding: the queues a flow may join, always the same for one flow."""
        hand = self._hands.get(flow)
        if hand is None:
            if len(self._hands) >= _HANDS_MAX:
                self._hands.clear()
            hand = self._hands[flow] = random.Random(hash(flow)).sample(range(len(self.queues)), self.hand_size)
        return hand

    def _pick_queue(self, flow: tuple[str, str]) -> collections.deque[asyncio.Future[None]] | None:
        if not self.queues:
            return None
        # A flow joins the shortest queue of its hand.
        best = min((self.queues[i] for i in self.hand(flow)), key=len)
        return best if len(best) < self.queue_length_limit else None

    async def acquire(self, flow: tuple[str, str], *, wait: float) -> None:
        """Wait in the flow's queue for a seat; TooManyRequests when the queue is full or the wait too long."""
        if self.try_acquire():
            return
        queue = self._pick_queue(flow)
        if queue is None:
            raise too_many_requests()
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(fut)
        self.waiting += 1
        try:
            async with asyncio.timeout(wait):
                await fut
        except BaseException as err:
            if fut.done() and not fut.cancelled():
                self.release()   # a seat was handed over just as we gave up: pass it on
            else:
                fut.cancel()
                try:
                    queue.remove(fut)
                    self.waiting -= 1
                except ValueError:
                    pass
            if isinstance(err, TimeoutError):
                raise too_many_requests() from None
            raise

    def release(self) -> None:
        """Free a seat, handing it to the next waiter in round-robin order across the queues."""
        self.executing -= 1
        n = len(self.queues)
        while self.waiting > 0 and self.executing < self.limit:
            for k in range(n):
                queue = self.queues[(self._next + k) % n]
                if queue:
                    self._next = (self._next + k + 1) % n
                    fut = queue.popleft()
                    self.waiting -= 1
                    if not fut.done():
                        self.executing += 1
                        fut.set_result(None)
                    break
            else:
                return


class Rejected(errors.TooManyRequests):
    """kube's APF rejection, which is not a Status: http.Error's plain text 429 with Retry-After."""

    def body(self) -> str:
        return self.message + "\n"


def too_many_requests() -> Rejected:
    """kube's APF rejection: a plain-text 429 with Retry-After (kubectl then words it from the code)."""
    return Rejected("Too many requests, please try again later.",
                    headers={"Retry-After": str(RETRY_AFTER), "X-Content-Type-Options": "nosniff"})


def levels_from(configs: list[dict[str, Any]], *, server_limit: int) -> dict[str, Level]:
    """Levels from PriorityLevelConfigurations: limited ones share the server limit by nominal shares."""
    shares = {c["metadata"]["name"]: ((c.get("spec") or {}).get("limited") or {}).get("nominalConcurrencyShares", 30)
              for c in configs if (c.get("spec") or {}).get("type") == "Limited"}
    total = sum(shares.values()) or 1
    out: dict[str, Level] = {}
    for c in configs:
        name = c["metadata"]["name"]
        spec = c.get("spec") or {}
        if spec.get("type") != "Limited":
            out[name] = Level(name, limit=0, exempt=True)
            continue
        limit = max(1, math.ceil(server_limit * shares[name] / total))
        response = (spec.get("limited") or {}).get("limitResponse") or {}
        q = response.get("queuing") or {} if response.get("type") == "Queue" else {}
        out[name] = Level(name, limit=limit, queues=q.get("queues", 0), hand_size=q.get("handSize", 0),
                          queue_length_limit=q.get("queueLengthLimit", 0))
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Match:
    """Where a request landed: its FlowSchema, priority level and how its flow is told apart."""

    schema: str
    level: Level
    distinguisher: str   # "", "ByUser" or "ByNamespace"


class Limiter:
    """The server's APF filter, configured from FlowSchemas and PriorityLevelConfigurations (kube's defaults).

    A fixed policy mirroring the default objects, not driven by the stored ones (edits to them are served but
    not obeyed); every request takes one seat (no list work estimates); levels do not lend or borrow seats; and
    queues are served round-robin instead of kube's virtual-time fair queuing. Shuffle sharding, queue length
    limits, Reject levels, the exempt level and the response headers follow kube.
    """

    def __init__(self, *, max_requests_inflight: int = MAX_REQUESTS_INFLIGHT,
                 max_mutating_requests_inflight: int = MAX_MUTATING_REQUESTS_INFLIGHT,
                 schemas: list[dict[str, Any]] | None = None, levels: list[dict[str, Any]] | None = None) -> None:
        check_inflight(max_requests_inflight, max_mutating_requests_inflight)
        self.server_limit = max_requests_inflight + max_mutating_requests_inflight
        self.schemas = sorted(schemas if schemas is not None else flowcontrol_defaults.flow_schemas(),
                              key=lambda s: (s["spec"].get("matchingPrecedence", 1000), s["metadata"]["name"]))
        self.levels = levels_from(levels if levels is not None else flowcontrol_defaults.priority_levels(),
                                  server_limit=self.server_limit)
        self._cache: dict[tuple[Any, ...], Match | None] = {}
        self.uids: dict[tuple[str, str], str] = {}
        self._uids_at = -math.inf
        self._loading = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deadlines: set[_Deadline] = set()
        self._sweeper: asyncio.TimerHandle | None = None

    def classify(self, user: context.User, info: requestinfo.RequestInfo) -> Match | None:
        """The first FlowSchema by precedence that matches, with its level (cached per request shape)."""
        key = (user.name, user.groups, info.is_resource_request, info.verb, info.group, info.resource,
               info.subresource, info.namespace, "" if info.is_resource_request else info.path)
        try:
            return self._cache[key]
        except KeyError:
            pass
        found: Match | None = None
        for schema in self.schemas:
            spec = schema["spec"]
            level = self.levels.get((spec.get("priorityLevelConfiguration") or {}).get("name", ""))
            if level is not None and schema_matches(schema, user, info):
                method = (spec.get("distinguisherMethod") or {}).get("type", "")
                found = Match(schema["metadata"]["name"], level, method)
                break
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[key] = found
        return found

    def headers(self, match: Match) -> tuple[str, str] | None:
        fs = self.uids.get(("fs", match.schema))
        pl = self.uids.get(("pl", match.level.name))
        return (fs, pl) if fs and pl else None

    async def load_uids(self, server: context.Server) -> None:
        """Learn the stored objects' UIDs for the response headers (objects may be recreated, so refresh)."""
        self._loading = True
        try:
            reg = server.registry
            fs_res = reg.get("flowcontrol.apiserver.k8s.io", "v1", "flowschemas")
            pl_res = reg.get("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations")
            uids: dict[tuple[str, str], str] = {}
            for kind, res, names in (("fs", fs_res, [s["metadata"]["name"] for s in self.schemas]),
                                     ("pl", pl_res, list(self.levels))):
                if res is None:
                    continue
                for name in names:
                    obj = await server.objects.get_or_none(res, "", name)
                    if obj is not None:
                        uids[(kind, name)] = obj["metadata"].get("uid", "")
            self.uids = uids
        finally:
            self._loading = False

    def _maybe_refresh(self, server: context.Server) -> None:
        now = time.monotonic()
        if now - self._uids_at >= _UID_REFRESH and not self._loading:
            self._uids_at = now if self.uids else now - _UID_REFRESH + 1.0
            task = asyncio.get_running_loop().create_task(self.load_uids(server))
            task.add_done_callback(_ignore_result)

    def _track(self, deadline: _Deadline, seconds: float) -> None:
        loop = asyncio.get_running_loop() if self._loop is None else self._loop
        self._loop = loop
        deadline.at = loop.time() + seconds
        deadline.owner = self._deadlines
        self._deadlines.add(deadline)
        if self._sweeper is None:
            self._sweeper = loop.call_later(_SWEEP, self._sweep)

    def _sweep(self) -> None:
        self._sweeper = None
        assert self._loop is not None
        now = self._loop.time()
        for d in [d for d in self._deadlines if d.at <= now]:
            self._deadlines.discard(d)
            d.fire()
        if self._deadlines:
            self._sweeper = self._loop.call_later(_SWEEP, self._sweep)

    async def admit(self, server: context.Server, request: web.Request, user: context.User,
                    info: requestinfo.RequestInfo) -> None:
        """Classify, set the deadline and take (or wait for) a seat; raises TooManyRequests when full."""
        long_running = info.verb in ("watch", "proxy") or info.subresource in _LONG_RUNNING_SUBRESOURCES
        if long_running and info.verb != "watch":
            return  # exec, attach, port-forward, logs, proxy: not limited, as in kube
        self._maybe_refresh(server)
        timeout = REQUEST_TIMEOUT
        if not long_running:
            timeout = request_timeout(request.query.get("timeout"))
            deadline: _Deadline | None = request.get(_DEADLINE)
            if deadline is not None:
                self._track(deadline, timeout)
        match = self.classify(user, info)
        if match is None:
            return
        request[_CLASS] = match
        level = match.level
        if level.exempt:
            return
        if not level.try_acquire():  # a free seat is taken at once, without starting a coroutine
            if match.distinguisher == "ByUser":
                flow = (match.schema, user.name)
            elif match.distinguisher == "ByNamespace":
                flow = (match.schema, info.namespace)
            else:
                flow = (match.schema, "")
            # Queued requests give up after a quarter of their deadline, as kube's APF filter does.
            await level.acquire(flow, wait=timeout / 4)
        if long_running:
            level.release()   # a watch only queues for its start
        else:
            request[_SEAT] = level


_KEY: web.AppKey[Limiter] = web.AppKey("flowcontrol", Limiter)
_CLASS: web.RequestKey[Match] = web.RequestKey("flowcontrol.match", Match)
_SEAT: web.RequestKey[Level] = web.RequestKey("flowcontrol.seat", Level)


def _ignore_result(task: asyncio.Task[None]) -> None:
    if not task.cancelled():
        task.exception()


# --- the request hooks --------------------------------------------------------------------------------


def install(app: web.Application, **settings: Any) -> Limiter:
    """Attach a Limiter to the app and set the flow-control headers on every response."""
    limiter = Limiter(**settings)
    app[_KEY] = limiter
    app.on_response_prepare.append(_on_prepare)
    return limiter


async def admit(server: context.Server, request: web.Request, user: context.User,
                info: requestinfo.RequestInfo) -> None:
    """The APF filter for one request: after authentication and impersonation, before authorization."""
    limiter = request.app.get(_KEY)
    if limiter is not None:
        await limiter.admit(server, request, user, info)


class _Deadline:
    """A request's deadline; the Limiter's sweep cancels the task once it passes (cheaper than a timer each)."""

    __slots__ = ("task", "at", "expired", "owner")

    def __init__(self, task: asyncio.Task[Any] | None) -> None:
        self.task = task
        self.at = 0.0
        self.expired = False
        self.owner: set[_Deadline] | None = None

    def fire(self) -> None:
        self.expired = True
        if self.task is not None:
            self.task.cancel()


_DEADLINE: web.RequestKey[_Deadline] = web.RequestKey("flowcontrol.deadline", _Deadline)


async def serve(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]],
                ) -> web.StreamResponse:
    """Run the handler under the deadline admit() sets, answering 504 past it, and free the seat after."""
    deadline = _Deadline(request.task)
    request[_DEADLINE] = deadline
    try:
        return await handler(request)
    except asyncio.CancelledError:
        if deadline.expired and deadline.task is not None and deadline.task.uncancel() == 0:
            raise errors.Timeout("Timeout: request did not complete within requested timeout - "
                                 "context deadline exceeded", details={}) from None
        raise
    finally:
        if deadline.owner is not None:
            deadline.owner.discard(deadline)
        level: Level | None = request.get(_SEAT)
        if level is not None:
            del request[_SEAT]
            level.release()


async def _on_prepare(request: web.BaseRequest, response: web.StreamResponse) -> None:
    match: Match | None = request.get(_CLASS)
    if match is None:
        return
    limiter = request.app.get(_KEY) if isinstance(request, web.Request) else None
    if limiter is None:
        return
    uids = limiter.headers(match)
    if uids is not None:
        response.headers[FLOW_SCHEMA_UID] = uids[0]
        response.headers[PRIORITY_LEVEL_UID] = uids[1]
