"""The in-memory transport's server side: the same answers as over HTTP, streams with back-pressure, identities."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from pocketkube import cluster as cluster_mod
from pocketkube.api import errors
from pocketkube.apiserver import loopback
from pocketkube.base import clock as clock_mod
from pocketkube.base import pki
from pocketkube.client import config, rest
from pocketkube.client import loopback as client_loopback

CM = rest.GVR("", "v1", "configmaps")
PEER = ("127.0.0.1", 0)
SOCK = ("127.0.0.1", 6443)


class Handlers:
    """A small aiohttp application: echoes requests, fails, and streams lines on request."""

    def __init__(self) -> None:
        self.stream_started = asyncio.Event()
        self.stream_cancelled = asyncio.Event()
        self.written = 0

    async def echo(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        return web.json_response({"method": request.method, "path": request.path, "query": dict(request.query),
                                  "body": body.decode(), "remote": request.remote, "host": request.host,
                                  "content_type": request.headers.get("Content-Type", "")},
                                 headers={"X-Seen": "yes"})

    async def boom(self, request: web.Request) -> web.StreamResponse:
        raise RuntimeError("a bug")

    async def lines(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        self.stream_started.set()
        try:
            for i in range(int(request.query.get("n", "3"))):
                await resp.write(b'{"n":%d}\n' % i)
            if request.query.get("hang"):
                await asyncio.sleep(3600)
        except asyncio.CancelledError:
            self.stream_cancelled.set()
            raise
        return resp

    async def slow(self, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(float(request.query.get("s", "0")))
        return web.json_response({"slept": True})

    async def flood(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(64):
            await resp.write(b"x" * 65536)
            self.written += 65536
        return resp

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/echo", self.echo)
        app.router.add_get("/boom", self.boom)
        app.router.add_get("/lines", self.lines)
        app.router.add_get("/flood", self.flood)
        app.router.add_get("/slow", self.slow)
        return app


@pytest.fixture
async def served() -> AsyncIterator[tuple[Handlers, loopback.Server, web.AppRunner]]:
    handlers = Handlers()
    runner = web.AppRunner(handlers.app())
    await runner.setup()
    server = loopback.Server(runner.app, ca_pem=None, peername=PEER, sockname=SOCK)
    yield handlers, server, runner
    server.close()
    await runner.cleanup()


async def _read_all(stream: client_loopback.Stream) -> bytes:
    out = b""
    while chunk := await stream.read():
        out += chunk
    return out


async def test_answer_matches_the_network(served: tuple[Handlers, loopback.Server, web.AppRunner]) -> None:
    """A request gives the same status, headers and body in memory as the same app gives over HTTP."""
    handlers, server, _ = served
    headers = {"Host": "127.0.0.1:6443", "Content-Type": "application/json", "Content-Length": "7"}
    status, got, body = await server.round_trip("POST", "/echo?a=1&sel=x%3Dy%2Cz", headers, b'{"x":1}',
                                                peer_cert_pem=None)
    net = TestServer(handlers.app())
    await net.start_server()
    try:
        async with aiohttp.ClientSession() as session, session.post(
                net.make_url("/echo?a=1&sel=x%3Dy%2Cz"), data=b'{"x":1}',
                headers={"Content-Type": "application/json", "Host": "127.0.0.1:6443"}) as resp:
            want_body, want_status, want_headers = await resp.read(), resp.status, resp.headers
    finally:
        await net.close()
    assert status == want_status == 200
    assert json.loads(body) == json.loads(want_body) == {
        "method": "POST", "path": "/echo", "query": {"a": "1", "sel": "x=y,z"}, "body": '{"x":1}',
        "remote": "127.0.0.1", "host": "127.0.0.1:6443", "content_type": "application/json"}
    assert {k: v for k, v in got.items() if k != "Date"} == {k: v for k, v in want_headers.items() if k != "Date"}


async def test_handler_bug_is_aiohttps_500(served: tuple[Handlers, loopback.Server, web.AppRunner]) -> None:
    """An exception escaping the handler chain answers 500 with aiohttp's text, as the network path does."""
    _, server, _ = served
    status, _, body = await server.round_trip("GET", "/boom", {"Host": "x"}, None, peer_cert_pem=None)
    assert status == 500
    assert body.startswith(b"500 Internal Server Error")


async def test_upgrade_is_refused(served: tuple[Handlers, loopback.Server, web.AppRunner]) -> None:
    """Protocol upgrades (exec, attach, port-forward) need a real connection and are refused clearly."""
    _, server, _ = served
    with pytest.raises(ValueError, match="upgrades"):
        await server.round_trip("GET", "/echo", {"Connection": "Upgrade", "Upgrade": "websocket"}, None,
                                peer_cert_pem=None)


async def test_stream_reads_lines_then_ends(served: tuple[Handlers, loopback.Server, web.AppRunner]) -> None:
    """A streamed answer arrives as written and ends with b"" once the handler is done."""
    _, server, _ = served
    stream = await server.open_stream("GET", "/lines?n=3", {"Host": "x"}, None, peer_cert_pem=None)
    assert stream.status == 200
    assert stream.headers["Content-Type"] == "application/json"
    assert await _read_all(stream) == b'{"n":0}\n{"n":1}\n{"n":2}\n'
    await stream.aclose()


async def test_closing_the_stream_cancels_the_handler(
        served: tuple[Handlers, loopback.Server, web.AppRunner]) -> None:
    """A client that closes its stream ends the handler at once, as a dropped connection would."""
    handlers, server, _ = served
    stream = await server.open_stream("GET", "/lines?n=1&hang=1", {"Host": "x"}, None, peer_cert_pem=None)
    assert await stream.read() == b'{"n":0}\n'
    await stream.aclose()
    await asyncio.wait_for(handlers.stream_cancelled.wait(), 5)


async def test_slow_reader_holds_the_writer_back(served: tuple[Handlers, loopback.Server, web.AppRunner]) -> None:
    """A handler writing faster than its client reads waits once about STREAM_BUFFER bytes are unread."""
    handlers, server, _ = served
    stream = await server.open_stream("GET", "/flood", {"Host": "x"}, None, peer_cert_pem=None)
    for _ in range(20):
        await asyncio.sleep(0)
    assert 0 < handlers.written <= loopback.STREAM_BUFFER + 65536
    assert len(await _read_all(stream)) == 64 * 65536
    await stream.aclose()


async def test_answer_past_its_timeout_raises(served: tuple[Handlers, loopback.Server, web.AppRunner],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A round trip gives up with TimeoutError past its timeout (as aiohttp's total timeout), not before."""
    _, server, _ = served
    monkeypatch.setattr(loopback, "SWEEP", 0.01)
    with pytest.raises(TimeoutError):
        await server.round_trip("GET", "/slow?s=3600", {"Host": "x"}, None, peer_cert_pem=None, timeout=0.05)
    status, _, body = await server.round_trip("GET", "/slow?s=0.05", {"Host": "x"}, None, peer_cert_pem=None,
                                              timeout=5)
    assert status == 200 and json.loads(body) == {"slept": True}
    await asyncio.sleep(0.05)
    assert not server._timed and server._sweeper is None  # nothing is left to check


async def test_silent_stream_read_times_out(served: tuple[Handlers, loopback.Server, web.AppRunner],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream read waiting longer than read_timeout raises TimeoutError (aiohttp's sock_read); parts that
    keep coming in time do not."""
    _, server, _ = served
    monkeypatch.setattr(loopback, "SWEEP", 0.01)
    stream = await server.open_stream("GET", "/lines?n=2&hang=1", {"Host": "x"}, None, peer_cert_pem=None,
                                      read_timeout=0.1)
    assert await stream.read() == b'{"n":0}\n{"n":1}\n'
    with pytest.raises(TimeoutError):
        await stream.read()
    await stream.aclose()
    assert not server._timed


# --- a real API server: identities and audit ---------------------------------------------------------------

POLICY = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n"


@pytest.fixture
async def running(tmp_path: Any) -> AsyncIterator[cluster_mod.Cluster]:
    policy = os.path.join(tmp_path, "policy.yaml")
    with open(policy, "w") as f:
        f.write(POLICY)
    c = cluster_mod.Cluster(cluster_mod.Settings(data_dir=str(tmp_path), port=0, controllers=False, dns=False,
                                                 audit_policy_file=policy,
                                                 audit_log_path=os.path.join(tmp_path, "audit.log")))
    await c.start()
    yield c
    await c.stop()
    assert client_loopback.lookup(c.url) is None  # stopping sends clients back to the network


def _node_client(c: cluster_mod.Cluster, url: str, name: str = "n1") -> rest.Client:
    assert c.pki is not None
    cert, key = pki.issue_client_cert(c.pki, f"system:node:{name}", groups=("system:nodes",))
    return config.from_pem(url, ca_pem=c.pki.ca_cert_pem, cert_pem=cert, key_pem=key)


async def _whoami(client: rest.Client) -> dict[str, Any]:
    review = await client.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                                  body={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    return dict(review["status"]["userInfo"])


async def test_certificate_identity_is_the_same_as_over_tls(running: cluster_mod.Cluster) -> None:
    """A client certificate presented in memory authenticates as the same user (and groups) as over TLS."""
    assert client_loopback.lookup(running.url) is not None
    async with _node_client(running, running.url) as mem, \
            _node_client(running, running.url.replace("127.0.0.1", "localhost")) as net:
        assert client_loopback.lookup(net.base_url) is None
        assert await _whoami(mem) == await _whoami(net) == {
            "username": "system:node:n1", "groups": ["system:nodes", "system:authenticated"]}


async def test_errors_and_watches_in_memory(running: cluster_mod.Cluster) -> None:
    """Status errors keep their reason, and a watch streams events and ends its store watcher when closed."""
    assert running.pki is not None
    async with config.from_pem(running.url, ca_pem=running.pki.ca_cert_pem, cert_pem=running.pki.admin_cert_pem,
                               key_pem=running.pki.admin_key_pem) as admin:
        with pytest.raises(errors.NotFound):
            await admin.get(CM.path("default", "missing"))
        await admin.create(CM, {"metadata": {"name": "a", "namespace": "default"}})
        watchers = running._store._broadcaster  # type: ignore[union-attr]
        before = len(watchers)
        events = admin.watch(CM, "default")
        etype, obj = await asyncio.wait_for(events.__anext__(), 5)
        assert (etype, obj["metadata"]["name"]) == ("ADDED", "a")
        assert len(watchers) == before + 1
        await events.aclose()  # type: ignore[attr-defined]
        for _ in range(100):  # the server's watch sees the client leave and drops its store watcher
            if len(watchers) == before:
                break
            await asyncio.sleep(0.01)
        assert len(watchers) == before


async def test_audit_event_names_source_ip_and_user(running: cluster_mod.Cluster) -> None:
    """An in-memory request is audited with the client's address and user, as a network one is."""
    async with _node_client(running, running.url, name="audited") as mem:
        await _whoami(mem)
    path = os.path.join(running.settings.data_dir, "audit.log")
    for _ in range(100):
        with open(path) as f:
            found = [e for e in map(json.loads, f) if e["user"]["username"] == "system:node:audited"
                     and e["stage"] == "ResponseComplete"]
        if found:
            break
        await asyncio.sleep(0.05)
    assert found and found[0]["sourceIPs"] == ["127.0.0.1"]
    assert found[0]["responseStatus"]["code"] == 201


async def test_foreign_and_expired_certificates_are_refused(tmp_path: Any) -> None:
    """Certificates of another CA, or out of their validity, are refused as the TLS handshake would."""
    ours = pki.ensure_pki(str(tmp_path / "ours"), hosts=["127.0.0.1"])
    theirs = pki.ensure_pki(str(tmp_path / "theirs"), hosts=["127.0.0.1"])
    runner = web.AppRunner(Handlers().app())
    await runner.setup()
    clock = clock_mod.FakeClock(datetime.datetime.now(datetime.UTC))
    server = loopback.Server(runner.app, ca_pem=ours.ca_cert_pem, peername=PEER, sockname=SOCK, clock=clock)
    try:
        status, _, _ = await server.round_trip("GET", "/echo", {}, None, peer_cert_pem=ours.admin_cert_pem)
        assert status == 200
        with pytest.raises(aiohttp.ClientConnectionResetError, match="unable to get local issuer"):
            await server.round_trip("GET", "/echo", {}, None, peer_cert_pem=theirs.admin_cert_pem)
        clock.advance(3650 * 86400 * 3)
        with pytest.raises(aiohttp.ClientConnectionResetError, match="expired"):
            await server.round_trip("GET", "/echo", {}, None, peer_cert_pem=ours.admin_cert_pem)
    finally:
        await runner.cleanup()


async def test_env_switch_keeps_clients_on_the_network(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With POCKETKUBE_LOOPBACK=0 the cluster registers no in-memory transport, and clients still work."""
    monkeypatch.setenv(client_loopback.ENV, "0")
    c = cluster_mod.Cluster(cluster_mod.Settings(data_dir=str(tmp_path), port=0, controllers=False, dns=False))
    await c.start()
    try:
        assert client_loopback.lookup(c.url) is None
        async with _node_client(c, c.url) as net:
            assert (await _whoami(net))["username"] == "system:node:n1"
    finally:
        await c.stop()
    assert client_loopback.lookup(c.url) is None
