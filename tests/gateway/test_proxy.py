"""Ingress proxy over real sockets: routing, headers, TLS with SNI, redirects, streaming, websockets, failures."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pocketkube.gateway import endpoints, proxy, routes, tls


async def _backend(name: str) -> tuple[web.AppRunner, int]:
    async def echo(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            async for msg in ws:
                await ws.send_str(f"{name}:{msg.data}")
            return ws
        if request.path.startswith("/stream"):
            resp = web.StreamResponse()
            await resp.prepare(request)
            for i in range(3):
                await resp.write(f"chunk{i};".encode())
            await resp.write_eof()
            return resp
        body = await request.read()
        return web.json_response({"backend": name, "path": request.path_qs, "len": len(body),
                                  "headers": dict(request.headers)})

    app = web.Application(client_max_size=64 << 20)
    app.router.add_route("*", "/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


@pytest.fixture
async def world() -> AsyncIterator[dict[str, Any]]:
    """Two backends, a proxy on free ports and a table routing to them."""
    a, port_a = await _backend("a")
    b, port_b = await _backend("b")
    px = proxy.Proxy()
    http_port, https_port = await px.start(host="127.0.0.1", http_ports=[0], https_ports=[0])
    session = aiohttp.ClientSession()
    try:
        yield {"proxy": px, "a": port_a, "b": port_b, "http": http_port, "https": https_port, "session": session}
    finally:
        await session.close()
        await px.close()
        await a.cleanup()
        await b.cleanup()


def _state(w: dict[str, Any], ingresses: list[dict[str, Any]], ups: dict[str, tuple[int, ...]],
           contexts: dict[str, ssl.SSLContext] | None = None) -> proxy.State:
    table = routes.compile_ingresses(ingresses, class_name="pocketkube")
    upstreams = {bk: endpoints.Upstream(addresses=tuple(("127.0.0.1", p) for p in ups.get(bk.service, ())),
                                        error="" if ups.get(bk.service) else "none")
                 for bk in table.backends()}
    return proxy.State(table=table, upstreams=upstreams, contexts=contexts or {})


def _ing(name: str, rules: list[tuple[str, str, str, str]], *, tls_hosts: dict[str, str] | None = None,
         default: str = "") -> dict[str, Any]:
    by_host: dict[str, list[dict[str, Any]]] = {}
    for host, path, ptype, svc in rules:
        by_host.setdefault(host, []).append({"path": path, "pathType": ptype,
                                             "backend": {"service": {"name": svc, "port": {"number": 80}}}})
    spec: dict[str, Any] = {"ingressClassName": "pocketkube",
                            "rules": [{"host": h, "http": {"paths": ps}} for h, ps in by_host.items()]}
    if tls_hosts:
        spec["tls"] = [{"hosts": [h], "secretName": s} for h, s in tls_hosts.items()]
    if default:
        spec["defaultBackend"] = {"service": {"name": default, "port": {"number": 80}}}
    return {"metadata": {"name": name, "namespace": "default", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": spec}


async def _get(w: dict[str, Any], path: str, host: str, **kw: Any) -> tuple[int, Any, Any]:
    async with w["session"].get(f"http://127.0.0.1:{w['http']}{path}", headers={"Host": host},
                                allow_redirects=False, **kw) as r:
        body = await r.json() if r.content_type == "application/json" else await r.text()
        return r.status, body, r.headers


async def test_routes_by_host_and_path_with_forwarded_headers(world: dict[str, Any]) -> None:
    """Host and path pick the backend; the backend sees the original Host and X-Forwarded-* headers."""
    world["proxy"].update(_state(world, [_ing("x", [("app.test", "/", "Prefix", "a"),
                                                    ("app.test", "/api", "Prefix", "b")])],
                                 {"a": (world["a"],), "b": (world["b"],)}))
    status, body, _ = await _get(world, "/api/v1?q=1", "app.test")
    assert status == 200 and body["backend"] == "b" and body["path"] == "/api/v1?q=1"
    h = body["headers"]
    assert h["Host"] == "app.test" and h["X-Forwarded-Proto"] == "http" and h["X-Forwarded-For"] == "127.0.0.1"
    assert h["X-Forwarded-Host"] == "app.test" and h["X-Real-IP"] == "127.0.0.1"
    status, body, _ = await _get(world, "/apix", "app.test")
    assert body["backend"] == "a"


async def test_default_404_and_503_without_endpoints(world: dict[str, Any]) -> None:
    """An unknown host gets nginx's 404 page; a backend with no ready endpoints gets 503."""
    world["proxy"].update(_state(world, [_ing("x", [("app.test", "/", "Prefix", "down")])], {}))
    status, body, _ = await _get(world, "/", "nowhere.test")
    assert status == 404 and "<center><h1>404 Not Found</h1></center>" in body
    status, body, _ = await _get(world, "/", "app.test")
    assert status == 503 and "503 Service Temporarily Unavailable" in body


async def test_default_backend_serves_unmatched(world: dict[str, Any]) -> None:
    """spec.defaultBackend answers requests no rule matches."""
    world["proxy"].update(_state(world, [_ing("x", [("app.test", "/only", "Exact", "a")], default="b")],
                                 {"a": (world["a"],), "b": (world["b"],)}))
    assert (await _get(world, "/only", "app.test"))[1]["backend"] == "a"
    assert (await _get(world, "/other", "app.test"))[1]["backend"] == "b"


async def test_round_robin_and_retry_on_dead_endpoint(world: dict[str, Any]) -> None:
    """Requests alternate over ready endpoints; a refused connection moves on to the next one."""
    world["proxy"].update(_state(world, [_ing("x", [("", "/", "Prefix", "svc")])], {"svc": (world["a"], world["b"])}))
    seen = [(await _get(world, "/", "any"))[1]["backend"] for _ in range(4)]
    assert sorted(seen) == ["a", "a", "b", "b"]
    dead = await _free_port()
    world["proxy"].update(_state(world, [_ing("x", [("", "/", "Prefix", "svc")])], {"svc": (dead, world["a"])}))
    assert [(await _get(world, "/", "any"))[0] for _ in range(3)] == [200, 200, 200]
    world["proxy"].update(_state(world, [_ing("x", [("", "/", "Prefix", "svc")])], {"svc": (dead,)}))
    assert (await _get(world, "/", "any"))[0] == 502


async def test_streaming_bodies(world: dict[str, Any]) -> None:
    """A large chunked upload reaches the backend whole, and a chunked response streams back."""
    world["proxy"].update(_state(world, [_ing("x", [("", "/", "Prefix", "a")])], {"a": (world["a"],)}))

    async def gen() -> AsyncIterator[bytes]:
        for _ in range(40):
            yield b"x" * 65536

    async with world["session"].post(f"http://127.0.0.1:{world['http']}/up", data=gen()) as r:
        assert r.status == 200 and (await r.json())["len"] == 40 * 65536
    async with world["session"].get(f"http://127.0.0.1:{world['http']}/stream") as r:
        assert await r.text() == "chunk0;chunk1;chunk2;"


async def test_websocket_pass_through(world: dict[str, Any]) -> None:
    """A websocket upgrade is proxied and messages flow both ways."""
    world["proxy"].update(_state(world, [_ing("x", [("", "/", "Prefix", "b")])], {"b": (world["b"],)}))
    async with world["session"].ws_connect(f"http://127.0.0.1:{world['http']}/ws") as ws:
        await ws.send_str("hi")
        assert (await ws.receive(timeout=5)).data == "b:hi"


async def test_tls_redirect_sni_and_fake_certificate(world: dict[str, Any]) -> None:
    """TLS hosts redirect HTTP with 308; SNI picks the Secret's certificate, other names get the fake one."""
    cert, key, ca = _self_signed("secure.test")
    ctx = tls.server_context(cert, key)
    world["proxy"].update(_state(world, [_ing("x", [("secure.test", "/", "Prefix", "a")],
                                              tls_hosts={"secure.test": "s"})],
                                 {"a": (world["a"],)}, {"secure.test": ctx}))
    status, _, headers = await _get(world, "/p?x=1", "secure.test")
    assert status == 308 and headers["Location"] == f"https://secure.test:{world['https']}/p?x=1"
    client = ssl.create_default_context(cadata=ca.decode())
    reader, writer = await asyncio.open_connection("127.0.0.1", world["https"], ssl=client,
                                                   server_hostname="secure.test")
    writer.write(b"GET / HTTP/1.1\r\nHost: secure.test\r\nConnection: close\r\n\r\n")
    data = await reader.read()
    writer.close()
    assert data.startswith(b"HTTP/1.1 200") and b'"X-Forwarded-Proto": "https"' in data
    insecure = ssl.create_default_context()
    insecure.check_hostname, insecure.verify_mode = False, ssl.CERT_NONE
    reader, writer = await asyncio.open_connection("127.0.0.1", world["https"], ssl=insecure,
                                                   server_hostname="other.test")
    peer = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    from cryptography import x509
    assert tls.FAKE_CN in x509.load_der_x509_certificate(peer).subject.rfc4514_string()


def test_secret_pair_rejects_bad_secrets() -> None:
    """Secrets without usable tls.crt/tls.key are refused with a reason, never a crash."""
    contexts = tls.Contexts()
    ctx, why = contexts.for_secret({"metadata": {"name": "s", "namespace": "d", "resourceVersion": "1"}, "data": {}})
    assert ctx is None and "no tls.crt or tls.key" in why
    bad = {"tls.crt": base64.b64encode(b"junk").decode(), "tls.key": base64.b64encode(b"junk").decode()}
    ctx, why = contexts.for_secret({"metadata": {"name": "s", "namespace": "d", "resourceVersion": "2"}, "data": bad})
    assert ctx is None and why


def _self_signed(host: str) -> tuple[bytes, bytes, bytes]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(host)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem, key_pem, pem


async def _free_port() -> int:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    return port
