"""Build a Client from a kubeconfig (file or dict) or from a URL plus PEM certificates."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from typing import Any

import yaml

from pocketkube.client import rest


def ssl_context(*, ca_pem: bytes | None = None, cert_pem: bytes | None = None,
                key_pem: bytes | None = None, insecure: bool = False) -> ssl.SSLContext:
    """A TLS client context trusting ca_pem (system roots when None) and presenting cert/key if given."""
    if insecure:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca_pem:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=ca_pem.decode("ascii"))
    else:
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if cert_pem and key_pem:
        _load_chain(ctx, cert_pem, key_pem)
    elif cert_pem or key_pem:
        raise ValueError("a client certificate needs both the certificate and its key")
    # aiohttp speaks HTTP/1.1 only.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def _load_chain(ctx: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    # The ssl module loads certificate chains only from files: use a private temp dir, removed at once.
    with tempfile.TemporaryDirectory(prefix="pocketkube-client-") as d:
        cert_path, key_path = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
        for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        ctx.load_cert_chain(cert_path, key_path)


def from_pem(url: str, *, ca_pem: bytes | None = None, cert_pem: bytes | None = None,
             key_pem: bytes | None = None, token: str = "", user_agent: str = rest.DEFAULT_USER_AGENT,
             field_manager: str = "") -> rest.Client:
    """A client for url authenticating with a client certificate (or a bearer token)."""
    ctx = ssl_context(ca_pem=ca_pem, cert_pem=cert_pem, key_pem=key_pem) if url.startswith("https") else None
    return rest.Client(url, ssl_context=ctx, token=token, user_agent=user_agent, field_manager=field_manager,
                       cert_pem=cert_pem if ctx is not None else None)


def from_kubeconfig(config: str | dict[str, Any], *, context: str = "",
                    user_agent: str = rest.DEFAULT_USER_AGENT, field_manager: str = "") -> rest.Client:
    """A client for a kubeconfig's current (or named) context; config is a path or a parsed dict."""
    base_dir = ""
    if isinstance(config, str):
        base_dir = os.path.dirname(os.path.abspath(os.path.expanduser(config)))
        with open(os.path.expanduser(config), encoding="utf-8") as f:
            cfg = yaml.safe_load(f) or {}
    else:
        cfg = config
    if not isinstance(cfg, dict):
        raise ValueError("a kubeconfig must be a mapping")
    name = context or cfg.get("current-context") or ""
    if not name:
        raise ValueError("the kubeconfig has no current-context and no context was given")
    ctx = _named(cfg, "contexts", name, "context")
    cluster = _named(cfg, "clusters", ctx.get("cluster") or "", "cluster")
    user = _named(cfg, "users", ctx.get("user") or "", "user") if ctx.get("user") else {}
    server = cluster.get("server") or ""
    if not server:
        raise ValueError(f"cluster {ctx.get('cluster')!r} has no server")
    token = user.get("token") or ""
    if not token and user.get("tokenFile"):
        with open(_resolve(base_dir, user["tokenFile"]), encoding="utf-8") as f:
            token = f.read().strip()
    tls = None
    cert_pem = None
    if server.startswith("https"):
        cert_pem = _material(user, "client-certificate", base_dir)
        tls = ssl_context(
            ca_pem=_material(cluster, "certificate-authority", base_dir),
            cert_pem=cert_pem,
            key_pem=_material(user, "client-key", base_dir),
            insecure=bool(cluster.get("insecure-skip-tls-verify")),
        )
        if cluster.get("tls-server-name"):
            # Verifying against a different name than the URL's host is not supported by aiohttp's
            # connector directly; refuse rather than silently skip verification.
            raise ValueError("tls-server-name is not supported")
    return rest.Client(server, ssl_context=tls, token=token, user_agent=user_agent,
                       field_manager=field_manager, cert_pem=cert_pem)


def _named(cfg: dict[str, Any], section: str, name: str, key: str) -> dict[str, Any]:
    for entry in cfg.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(key) or {}
    raise ValueError(f"{section[:-1]} {name!r} not found in the kubeconfig")


def _material(section: dict[str, Any], field: str, base_dir: str) -> bytes | None:
    data = section.get(f"{field}-data")
    if data:
        return base64.b64decode(data)
    path = section.get(field)
    if path:
        with open(_resolve(base_dir, path), "rb") as f:
            return f.read()
    return None


def _resolve(base_dir: str, path: str) -> str:
    # kubectl resolves relative paths against the kubeconfig file's directory.
    path = os.path.expanduser(path)
    return path if os.path.isabs(path) or not base_dir else os.path.join(base_dir, path)
