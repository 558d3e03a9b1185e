"""API Priority and Fairness: classification, fair queues, 429 rejections, request deadlines and Go durations."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import test_utils, web

from pocketkube.api import errors
from pocketkube.apiserver import context, flowcontrol, flowcontrol_defaults, requestinfo, server


@pytest.mark.parametrize(("text", "seconds"), [
    ("32s", 32.0), ("1m30s", 90.0), ("1h", 3600.0), ("500ms", 0.5), ("1.5s", 1.5), ("-2s", -2.0), ("0", 0.0),
    ("+3m", 180.0), ("2h45m0.5s", 9900.5), ("10us", 1e-5), ("7ns", 7e-9),
])
def test_parse_duration_accepts_go_durations(text: str, seconds: float) -> None:
    """Go duration strings convert to seconds as time.ParseDuration reads them."""
    assert flowcontrol.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(("text", "message"), [
    ("abc", 'time: invalid duration "abc"'),
    ("", 'time: invalid duration ""'),
    ("5", 'time: missing unit in duration "5"'),
    ("5x", 'time: unknown unit "x" in duration "5x"'),
    ("1..2s", 'time: invalid duration "1..2s"'),
    ("-", 'time: invalid duration "-"'),
])
def test_parse_duration_rejects_with_go_messages(text: str, message: str) -> None:
    """Malformed durations fail with Go's exact error text."""
    with pytest.raises(ValueError) as info:
        flowcontrol.parse_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("value", "seconds"), [
    (None, 60.0), ("", 60.0), ("5s", 5.0), ("0s", 60.0), ("-1s", 60.0), ("2m", 60.0), ("59s", 59.0),
])
def test_request_timeout_defaults_and_caps(value: str | None, seconds: float) -> None:
    """The timeout parameter shortens the 60 s deadline but never extends it; zero or negative means default."""
    assert flowcontrol.request_timeout(value) == seconds


def test_request_timeout_rejects_bad_values_with_bad_request() -> None:
    """An unparsable timeout is a 400 naming the URL parameter, as kube's request-deadline filter answers."""
    with pytest.raises(errors.BadRequest) as info:
        flowcontrol.request_timeout("soon")
    assert info.value.message == 'invalid timeout specified in the request URL - time: invalid duration "soon"'


ADMIN = context.User("admin", ("system:masters", "system:authenticated"))
ALICE = context.User("alice", ("system:authenticated",))
NODE = context.User("system:node:n1", ("system:nodes", "system:authenticated"))
KCM = context.User("system:kube-controller-manager", ("system:authenticated",))
SCHED = context.User("system:kube-scheduler", ("system:authenticated",))
KS_SA = context.User("system:serviceaccount:kube-system:coredns",
                     ("system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"))
APP_SA = context.User("system:serviceaccount:prod:app",
                      ("system:serviceaccounts", "system:serviceaccounts:prod", "system:authenticated"))


@pytest.mark.parametrize(("user", "method", "path", "schema", "level"), [
    (ADMIN, "DELETE", "/api/v1/namespaces/default/pods/x", "exempt", "exempt"),
    (context.ANONYMOUS, "GET", "/readyz", "probes", "exempt"),
    (ALICE, "GET", "/livez", "probes", "exempt"),
    (ALICE, "POST", "/api/v1/namespaces/default/configmaps", "global-default", "global-default"),
    (context.ANONYMOUS, "GET", "/version", "global-default", "global-default"),
    (NODE, "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n1", "system-node-high", "node-high"),
    (NODE, "PATCH", "/api/v1/nodes/n1/status", "system-node-high", "node-high"),
    (NODE, "GET", "/api/v1/namespaces/default/pods", "system-nodes", "system"),
    (KCM, "PUT", "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/kcm", "system-leader-election",
     "leader-election"),
    (KCM, "PUT", "/api/v1/namespaces/default/endpoints/web", "endpoint-controller", "workload-high"),
    (KCM, "GET", "/apis/apps/v1/deployments", "kube-controller-manager", "workload-high"),
    (SCHED, "POST", "/api/v1/namespaces/default/pods/p/binding", "kube-scheduler", "workload-high"),
    (KS_SA, "GET", "/api/v1/services", "kube-system-service-accounts", "workload-high"),
    (APP_SA, "GET", "/api/v1/namespaces/prod/configmaps", "service-accounts", "workload-low"),
])
def test_default_flow_schemas_classify_like_kube(user: context.User, method: str, path: str, schema: str,
                                                 level: str) -> None:
    """Each request lands on the FlowSchema and priority level a real 1.32 server picks."""
    match = flowcontrol.Limiter().classify(user, requestinfo.parse(method, path))
    assert match is not None
    assert (match.schema, match.level.name) == (schema, level)


def test_nominal_limits_split_the_server_limit_by_shares() -> None:
    """The 600 seats (400 + 200) are shared by nominal concurrency shares; exempt levels have no limit."""
    levels = flowcontrol.Limiter().levels
    limits = {name: (lv.limit, lv.exempt) for name, lv in levels.items()}
    assert limits == {"exempt": (0, True), "catch-all": (13, False), "system": (74, False),
                      "node-high": (98, False), "leader-election": (25, False), "workload-high": (98, False),
                      "workload-low": (245, False), "global-default": (49, False)}


def test_defaults_reference_existing_levels() -> None:
    """Every default FlowSchema names a default priority level, and names are unique."""
    levels = {pl["metadata"]["name"] for pl in flowcontrol_defaults.priority_levels()}
    schemas = flowcontrol_defaults.flow_schemas()
    assert len({s["metadata"]["name"] for s in schemas}) == len(schemas) == 13
    assert all(s["spec"]["priorityLevelConfiguration"]["name"] in levels for s in schemas)


async def test_level_serves_flows_round_robin() -> None:
    """With one seat, a flow with many queued requests cannot starve another flow's single request."""
    level = flowcontrol.Level("l", limit=1, queues=8, hand_size=1, queue_length_limit=50)
    order: list[str] = []
    level.try_acquire()

    async def one(flow: str) -> None:
        await level.acquire(("s", flow), wait=5)
        order.append(flow)
        await asyncio.sleep(0)
        level.release()

    flows = ["greedy"] * 4 + ["polite"]
    tasks = [asyncio.create_task(one(f)) for f in flows]
    await asyncio.sleep(0)
    level.release()
    await asyncio.gather(*tasks)
    if level.hand(("s", "greedy")) != level.hand(("s", "polite")):  # different queues: served in turn
        assert order.index("polite") <= 1
    assert sorted(order) == sorted(flows)
    assert (level.executing, level.waiting) == (0, 0)


async def test_full_queue_rejects_with_kube_status() -> None:
    """When the flow's queue is full the request fails with kube's plain-text 429 and Retry-After."""
    level = flowcontrol.Level("l", limit=1, queues=1, hand_size=1, queue_length_limit=1)
    assert level.try_acquire()
    waiter = asyncio.create_task(level.acquire(("s", "a"), wait=5))
    await asyncio.sleep(0)
    with pytest.raises(errors.TooManyRequests) as info:
        await level.acquire(("s", "a"), wait=5)
    assert isinstance(info.value, flowcontrol.Rejected) and info.value.code == 429
    assert info.value.body() == "Too many requests, please try again later.\n"
    assert info.value.headers == {"Retry-After": "1", "X-Content-Type-Options": "nosniff"}
    level.release()
    await waiter
    level.release()
    assert (level.executing, level.waiting) == (0, 0)


async def test_reject_level_has_no_queue() -> None:
    """A Reject level (catch-all) answers 429 at once when its seats are taken."""
    level = flowcontrol.Level("catch-all", limit=1)
    assert level.try_acquire()
    with pytest.raises(errors.TooManyRequests):
        await level.acquire(("s", "a"), wait=5)


async def test_queue_wait_times_out_with_429_and_leaves_the_queue() -> None:
    """A request that waits too long in its queue is rejected and frees its place."""
    level = flowcontrol.Level("l", limit=1, queues=2, hand_size=1, queue_length_limit=5)
    level.try_acquire()
    with pytest.raises(errors.TooManyRequests):
        await level.acquire(("s", "a"), wait=0.01)
    assert level.waiting == 0 and not any(level.queues)
    level.release()
    assert level.executing == 0


async def test_cancelled_waiter_does_not_leak_a_seat() -> None:
    """A client that goes away while queued neither keeps its place nor a seat."""
    level = flowcontrol.Level("l", limit=1, queues=2, hand_size=1, queue_length_limit=5)
    level.try_acquire()
    task = asyncio.create_task(level.acquire(("s", "a"), wait=5))
    await asyncio.sleep(0)
    level.release()          # hands the seat to the waiter...
    task.cancel()            # ...which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (level.executing, level.waiting) == (0, 0)


# --- through HTTP, with the API server's middleware -------------------------------------------------------

_LEVELS = [flowcontrol_defaults.priority_levels()[0],
           {"metadata": {"name": "small"}, "spec": {"type": "Limited", "limited": {
               "nominalConcurrencyShares": 1, "limitResponse": {"type": "Queue", "queuing": {
                   "queues": 1, "handSize": 1, "queueLengthLimit": 1}}}}}]
_SCHEMAS = [flowcontrol_defaults.flow_schemas()[0],
            {"metadata": {"name": "everyone"}, "spec": {
                "priorityLevelConfiguration": {"name": "small"}, "matchingPrecedence": 9000,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": flowcontrol_defaults.flow_schemas()[-1]["spec"]["rules"]}}]


async def _app(gate: asyncio.Event) -> tuple[web.Application, flowcontrol.Limiter]:
    async def handler(request: web.Request) -> web.StreamResponse:
        user = ADMIN if request.headers.get("X-Admin") else ALICE
        info = requestinfo.parse(request.method, request.path, watch_param="watch" in request.query)
        await flowcontrol.admit(None, request, user, info)  # type: ignore[arg-type]
        if request.query.get("slow"):
            await request.read()
        if user is not ADMIN:
            await gate.wait()
        return web.json_response({"ok": True})

    app = web.Application(middlewares=[server._middleware])
    limiter = flowcontrol.install(app, max_requests_inflight=1, max_mutating_requests_inflight=0,
                                  schemas=_SCHEMAS, levels=_LEVELS)
    limiter.uids = {("fs", "everyone"): "fs-uid", ("pl", "small"): "pl-uid", ("fs", "exempt"): "x1",
                    ("pl", "exempt"): "x2"}
    limiter._uids_at = float("inf")
    app.router.add_route("*", "/{tail:.*}", handler)
    return app, limiter


async def test_http_429_when_the_level_is_full() -> None:
    """One seat, one queue place: the third concurrent request gets kube's 429 with the APF headers."""
    gate = asyncio.Event()
    app, _ = await _app(gate)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        first = asyncio.create_task(client.get("/api/v1/namespaces/default/configmaps"))
        second = asyncio.create_task(client.get("/api/v1/namespaces/default/configmaps"))
        await asyncio.sleep(0.1)
        third = await client.get("/api/v1/namespaces/default/configmaps")
        assert third.status == 429
        assert third.headers["Retry-After"] == "1"
        assert third.headers[flowcontrol.FLOW_SCHEMA_UID] == "fs-uid"
        assert third.headers[flowcontrol.PRIORITY_LEVEL_UID] == "pl-uid"
        # kube answers with http.Error, not a Status; kubectl words it from the code.
        assert third.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert third.headers["X-Content-Type-Options"] == "nosniff"
        assert await third.text() == "Too many requests, please try again later.\n"
        admin = await client.get("/api/v1/namespaces/default/configmaps", headers={"X-Admin": "1"})
        assert admin.status == 200   # exempt: never queued behind the others
        gate.set()
        assert admin.headers[flowcontrol.FLOW_SCHEMA_UID] == "x1"
        assert [(await first).status, (await second).status] == [200, 200]


async def test_watch_does_not_hold_a_seat() -> None:
    """A watch queues for its start only, so a running watch leaves the seat to other requests."""
    gate = asyncio.Event()
    app, limiter = await _app(gate)
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        watch = asyncio.create_task(client.get("/api/v1/namespaces/default/configmaps?watch=1"))
        await asyncio.sleep(0.1)
        assert limiter.levels["small"].executing == 0
        gate.set()
        assert (await client.get("/api/v1/namespaces/default/configmaps")).status == 200
        assert (await watch).status == 200


async def test_trickling_body_times_out_with_504() -> None:
    """A request past its deadline (here a body that never finishes) gets kube's 504 Timeout Status."""
    app, limiter = await _app(asyncio.Event())
    async with test_utils.TestServer(app) as srv:
        reader, writer = await asyncio.open_connection(srv.host, srv.port)
        writer.write(b"POST /api/v1/namespaces/default/configmaps?slow=1&timeout=300ms HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 50\r\n\r\n{")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 504")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = await reader.readexactly(length)
        writer.close()
    assert body == (b'{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"Timeout: request '
                    b'did not complete within requested timeout - context deadline exceeded","reason":"Timeout",'
                    b'"details":{},"code":504}')
    assert limiter.levels["small"].executing == 0


async def test_slow_header_reads_are_cut_off() -> None:
    """The API server disconnects a client trickling its request headers once the header timeout passes."""
    runner, port = await server.start(None, host="127.0.0.1", port=0, ssl_context=None,  # type: ignore[arg-type]
                                      header_timeout=0.3)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /api HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(100), 5) == b""
        writer.close()
    finally:
        await runner.cleanup()


def test_hand_is_dealt_once_per_flow_and_stays_the_same() -> None:
    """A flow's hand (shuffle sharding) is the same on every call and is remembered, not dealt again."""
    level = flowcontrol.Level("workload-low", limit=1, queues=64, hand_size=6, queue_length_limit=50)
    first = level.hand(("service-accounts", "ns1"))
    assert len(set(first)) == 6 and all(0 <= q < 64 for q in first)
    assert level.hand(("service-accounts", "ns1")) is first
    assert level.hand(("service-accounts", "ns1")) == flowcontrol.Level(
        "workload-low", limit=1, queues=64, hand_size=6, queue_length_limit=50).hand(("service-accounts", "ns1"))
