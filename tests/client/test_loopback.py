"""The client's in-memory transport seam: registration per loop, requests, retries and watches through a server."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
import pytest

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.client import loopback, rest

URL = "https://127.0.0.1:6443"
CM = rest.GVR("", "v1", "configmaps")


class FakeStream:
    """A scripted streaming answer."""

    def __init__(self, status: int, chunks: list[bytes], headers: Mapping[str, str] | None = None) -> None:
        self.status = status
        self.headers = dict(headers or {})
        self.chunks = list(chunks)
        self.closed = False

    async def read(self) -> bytes:
        return self.chunks.pop(0) if self.chunks else b""

    async def aclose(self) -> None:
        self.closed = True


class FakeServer:
    """A ServerTransport answering from a script and recording what it was sent."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.answers: list[tuple[int, dict[str, str], Any]] = []
        self.streams: list[FakeStream] = []
        self.timeouts: list[float | None] = []

    def _record(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None,
                cert: bytes | None) -> None:
        self.sent.append({"method": method, "path_qs": path_qs, "headers": dict(headers), "body": body,
                          "cert": cert})

    async def round_trip(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, *,
                         peer_cert_pem: bytes | None, timeout: float | None = None,
                         ) -> tuple[int, Mapping[str, str], bytes]:
        self._record(method, path_qs, headers, body, peer_cert_pem)
        self.timeouts.append(timeout)
        status, answer_headers, doc = self.answers.pop(0)
        return status, answer_headers, orjson.dumps(doc)

    async def open_stream(self, method: str, path_qs: str, headers: Mapping[str, str], body: bytes | None, *,
                          peer_cert_pem: bytes | None, read_timeout: float | None = None) -> FakeStream:
        self._record(method, path_qs, headers, body, peer_cert_pem)
        self.timeouts.append(read_timeout)
        return self.streams.pop(0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeServer]:
    server = FakeServer()
    loopback.register(URL + "/", server)
    yield server
    loopback.unregister(URL)


def _status(code: int, reason: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
            "message": f"{reason} happened"}


async def test_lookup_is_per_url_and_loop(fake: FakeServer) -> None:
    """A server is found for its URL on its own loop only; other loops and URLs use the network."""
    assert loopback.lookup(URL) is fake
    assert loopback.lookup(URL + "/") is fake
    assert loopback.lookup("https://localhost:6443") is None
    seen: list[object] = []

    def other_thread() -> None:
        async def look() -> None:
            seen.append(loopback.lookup(URL))
        asyncio.run(look())

    thread = threading.Thread(target=other_thread)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert seen == [None]
    loopback.unregister(URL)
    assert loopback.lookup(URL) is None


async def test_request_sends_what_aiohttp_would(fake: FakeServer) -> None:
    """A request carries the target, headers, body and client certificate the network path would present."""
    fake.answers.append((201, {}, {"kind": "ConfigMap", "metadata": {"name": "a"}}))
    client = rest.Client(URL, token="t0k", user_agent="ua/1", field_manager="fm", cert_pem=b"PEM")
    out = await client.create(CM, {"metadata": {"name": "a b", "namespace": "default"}})
    assert out["metadata"]["name"] == "a"
    sent = fake.sent[0]
    body = orjson.dumps({"metadata": {"name": "a b", "namespace": "default"}})
    assert sent == {"method": "POST", "path_qs": "/api/v1/namespaces/default/configmaps?fieldManager=fm",
                    "headers": {"Host": "127.0.0.1:6443", "User-Agent": "ua/1", "Authorization": "Bearer t0k",
                                "Accept": "application/json", "Content-Type": "application/json",
                                "Content-Length": str(len(body))},
                    "body": body, "cert": b"PEM"}


async def test_query_is_encoded_and_empty_params_dropped(fake: FakeServer) -> None:
    """Selectors are percent-encoded (spaces too) and empty parameters are left out, as with aiohttp."""
    fake.answers.append((200, {}, {"kind": "ConfigMapList", "items": []}))
    await rest.Client(URL).list(CM, "default", label_selector="a in (x, y),b=c")
    assert fake.sent[0]["path_qs"] == "/api/v1/namespaces/default/configmaps?labelSelector=a%20in%20%28x%2C%20y%29%2Cb%3Dc"


async def test_error_status_becomes_its_api_error(fake: FakeServer) -> None:
    """An error answer raises the APIError its Status names."""
    fake.answers.append((404, {}, _status(404, "NotFound")))
    with pytest.raises(errors.NotFound, match="NotFound happened"):
        await rest.Client(URL).get(CM.path("default", "x"))


async def test_429_is_retried_after_its_wait(fake: FakeServer) -> None:
    """429 with Retry-After is retried after the wait it names, as over the network."""
    fake.answers += [(429, {"Retry-After": "2"}, _status(429, "TooManyRequests")),
                     (200, {}, {"kind": "ConfigMap", "metadata": {"name": "x"}})]
    fake_clock = clock.FakeClock()
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    fake_clock.sleep = sleep  # type: ignore[method-assign]
    out = await rest.Client(URL, clock=fake_clock).get(CM.path("default", "x"))
    assert out["metadata"]["name"] == "x" and waits == [2] and len(fake.sent) == 2


async def test_watch_splits_lines_across_chunks_and_closes(fake: FakeServer) -> None:
    """Watch events split over chunks are joined into lines, and the stream is closed when iteration ends."""
    stream = FakeStream(200, [b'{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n{"type":"MOD',
                              b'IFIED","object":{"metadata":{"name":"a"}}}\n', b'{"type":"DELETED","object":{}}'])
    fake.streams.append(stream)
    got = [etype async for etype, _ in rest.Client(URL).watch(CM, "default", resource_version="5")]
    assert got == ["ADDED", "MODIFIED", "DELETED"]
    assert stream.closed
    assert fake.sent[0]["path_qs"].startswith("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=5")


async def test_watch_error_status_and_error_event(fake: FakeServer) -> None:
    """A refused watch raises its Status error; an ERROR event raises its error; both close the stream."""
    refused = FakeStream(403, [orjson.dumps(_status(403, "Forbidden"))])
    gone = FakeStream(200, [orjson.dumps({"type": "ERROR", "object": _status(410, "Expired")}) + b"\n"])
    fake.streams += [refused, gone]
    with pytest.raises(errors.Forbidden):
        async for _ in rest.Client(URL).watch(CM):
            pass
    with pytest.raises(errors.Gone):
        async for _ in rest.Client(URL).watch(CM):
            pass
    assert refused.closed and gone.closed


async def test_time_limits_are_handed_to_the_server(fake: FakeServer) -> None:
    """Requests ask the server for the network path's total timeout, watches for its read timeout (or none)."""
    fake.answers.append((200, {}, {"kind": "ConfigMap", "metadata": {"name": "x"}}))
    await rest.Client(URL).get(CM.path("default", "x"))
    fake.streams += [FakeStream(200, []), FakeStream(200, [])]
    async for _ in rest.Client(URL).watch(CM, timeout_seconds=300):
        pass
    async for _ in rest.Client(URL).watch(CM):
        pass
    assert fake.timeouts == [60.0, 330, None]
