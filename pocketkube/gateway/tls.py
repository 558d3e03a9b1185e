"""TLS for the ingress: SSL contexts from kubernetes.io/tls Secrets and ingress-nginx's default fake certificate."""

from __future__ import annotations

import base64
import datetime
import functools
import os
import ssl
import tempfile
from collections.abc import Mapping
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

FAKE_CN = "Kubernetes Ingress Controller Fake Certificate"


@functools.cache
def fake_certificate() -> tuple[bytes, bytes]:
    """(cert, key) PEM of a self-signed certificate like the one ingress-nginx serves when no Secret matches."""
    # ingress-nginx's is RSA 2048; P-256 serves the same purpose and takes microseconds instead of ~100 ms of
    # start-up (the ingress starts with every `pocketkube up`).
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme Co"),
                      x509.NameAttribute(NameOID.COMMON_NAME, FAKE_CN)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("ingress.local")]), critical=False)
            .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """A TLS server context (HTTP/1.1 over ALPN) holding one certificate chain."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    # load_cert_chain reads files only; the key lives in a private temporary file for the call.
    fd, path = tempfile.mkstemp(prefix="pk-ingress-", suffix=".pem")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(cert_pem.rstrip(b"\n") + b"\n" + key_pem)
        ctx.load_cert_chain(path)
    finally:
        os.unlink(path)
    return ctx


def secret_pair(secret: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(tls.crt, tls.key) of a Secret; ValueError names what is missing or malformed."""
    data = secret.get("data") or {}
    try:
        cert = base64.b64decode(data.get("tls.crt") or "", validate=True)
        key = base64.b64decode(data.get("tls.key") or "", validate=True)
    except (ValueError, TypeError) as e:
        raise ValueError(f"invalid base64 in tls.crt or tls.key: {e}") from e
    if not cert or not key:
        raise ValueError("secret has no tls.crt or tls.key")
    return cert, key


class Contexts:
    """SSL contexts per Secret, rebuilt only when the Secret's resourceVersion changes."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[str, ssl.SSLContext | None, str]] = {}
        self.default = server_context(*fake_certificate())

    def for_secret(self, secret: Mapping[str, Any]) -> tuple[ssl.SSLContext | None, str]:
        """(context, "") for a usable Secret, else (None, why)."""
        meta = secret.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        rv = str(meta.get("resourceVersion") or "")
        hit = self._cache.get(key)
        if hit is not None and hit[0] == rv and rv:
            return hit[1], hit[2]
        try:
            ctx: ssl.SSLContext | None = server_context(*secret_pair(secret))
            why = ""
        except (ValueError, ssl.SSLError) as e:
            ctx, why = None, str(e)
        self._cache[key] = (rv, ctx, why)
        return ctx, why

    def forget_except(self, keys: set[str]) -> None:
        for k in list(self._cache):
            if k not in keys:
                del self._cache[k]
