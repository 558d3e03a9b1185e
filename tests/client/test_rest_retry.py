"""The REST client retries 429 and 5xx answers that carry Retry-After, waiting as told, at most 10 times."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.client import rest

CM = rest.GVR("", "v1", "configmaps")


class _Clock(clock.FakeClock):
    """A fake clock that records every wait and lets it pass at once."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.advance(seconds)


class Flaky:
    """Answers the first `failures` requests with `status` (and Retry-After when given), then succeeds."""

    def __init__(self) -> None:
        self.failures = 0
        self.status = 429
        self.retry_after: list[str | None] = ["1"]
        self.bodies: list[Any] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.bodies.append(json.loads(raw) if raw else None)
        n = len(self.bodies)
        if n <= self.failures:
            after = self.retry_after[min(n - 1, len(self.retry_after) - 1)]
            headers = {"Retry-After": after} if after is not None else {}
            reason = "TooManyRequests" if self.status == 429 else "ServiceUnavailable"
            return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": self.status,
                                      "reason": reason, "message": "Too many requests, please try again later."},
                                     status=self.status, headers=headers)
        if request.query.get("watch") == "1":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            await resp.prepare(request)
            await resp.write(b'{"type":"ADDED","object":{"kind":"ConfigMap","metadata":{"name":"a"}}}\n')
            return resp
        return web.json_response(self.bodies[-1] or {"kind": "ConfigMap", "metadata": {"name": "x"}})


@pytest.fixture
async def flaky():
    fake = Flaky()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
    srv = TestServer(app)
    await srv.start_server()
    clk = _Clock()
    client = rest.Client(str(srv.make_url("")), clock=clk)
    yield fake, client, clk
    await client.close()
    await srv.close()


@pytest.mark.parametrize(("status", "header", "wait"), [
    (429, "1", 1), (429, "0", 0), (503, "2", 2), (500, "3", 3), (504, "1", 1), (429, "+4", 4), (429, "-1", 0),
    (429, None, None), (503, None, None), (429, "", None), (429, "1.5", None),
    (429, "Wed, 21 Oct 2015 07:28:00 GMT", None), (404, "1", None), (409, "1", None), (200, "1", None),
])
def test_retry_after_follows_client_go_check_wait(status: int, header: str | None, wait: int | None) -> None:
    """Only a 429 or 5xx answer with whole-second Retry-After is retried, after that many seconds."""
    headers = {"Retry-After": header} if header is not None else {}
    assert rest.retry_after(status, headers) == wait


async def test_create_is_retried_after_429_waiting_retry_after(flaky) -> None:
    """A POST (not idempotent) that gets 429 twice is sent again with the same body and then succeeds."""
    fake, client, clk = flaky
    fake.failures, fake.retry_after = 2, ["1", "3"]
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "default"}}
    out = await client.create(CM, body)
    assert out["metadata"]["name"] == "a"
    assert clk.waits == [1, 3]
    assert fake.bodies == [body, body, body]


async def test_503_with_retry_after_is_retried(flaky) -> None:
    """A 503 carrying Retry-After is retried like a 429."""
    fake, client, clk = flaky
    fake.failures, fake.status = 1, 503
    assert (await client.get(CM.path("default", "x")))["metadata"]["name"] == "x"
    assert clk.waits == [1]


async def test_gives_up_after_ten_retries(flaky) -> None:
    """After 10 retries (11 requests) the last 429 is raised as TooManyRequests."""
    fake, client, clk = flaky
    fake.failures = 100
    with pytest.raises(errors.TooManyRequests) as info:
        await client.get(CM.path("default", "x"))
    assert info.value.message == "Too many requests, please try again later."
    assert len(fake.bodies) == 11
    assert clk.waits == [1] * 10


@pytest.mark.parametrize("status", [429, 503])
async def test_no_retry_without_retry_after(flaky, status: int) -> None:
    """Without Retry-After the error is raised at once, as client-go does."""
    fake, client, clk = flaky
    fake.failures, fake.status, fake.retry_after = 1, status, [None]
    with pytest.raises(errors.APIError) as info:
        await client.get(CM.path("default", "x"))
    assert info.value.code == status
    assert len(fake.bodies) == 1 and clk.waits == []


async def test_max_retries_zero_disables_retrying(flaky) -> None:
    """A client made with max_retries=0 raises the first 429."""
    fake, client, _ = flaky
    client.max_retries = 0
    fake.failures = 1
    with pytest.raises(errors.TooManyRequests):
        await client.get(CM.path("default", "x"))
    assert len(fake.bodies) == 1


async def test_watch_start_is_retried_after_429(flaky) -> None:
    """A watch refused with 429 and Retry-After starts once the server lets it."""
    fake, client, clk = flaky
    fake.failures = 2
    events = []
    async for event in client.watch(CM, "default"):
        events.append(event)
    assert events == [("ADDED", {"kind": "ConfigMap", "metadata": {"name": "a"}})]
    assert clk.waits == [1, 1]
