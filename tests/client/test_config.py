"""Specification of client construction from kubeconfigs and PEM material."""

from __future__ import annotations

import base64
import ssl

import pytest
import yaml

from pocketkube.base import kubeconfig, pki
from pocketkube.client import config


@pytest.fixture(scope="module")
def cluster_pki(tmp_path_factory):
    return pki.ensure_pki(str(tmp_path_factory.mktemp("pki")))


def test_from_kubeconfig_dict_uses_current_context(cluster_pki):
    """The admin kubeconfig gives a client for its server with a verifying TLS context."""
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", cluster_pki)
    client = config.from_kubeconfig(cfg, user_agent="ua")
    assert client.base_url == "https://127.0.0.1:6443"
    assert isinstance(client._ssl, ssl.SSLContext)
    assert client._ssl.verify_mode == ssl.CERT_REQUIRED
    assert client.user_agent == "ua"


def test_from_kubeconfig_file_resolves_relative_paths_and_token_file(tmp_path, cluster_pki):
    """File references are relative to the kubeconfig's directory; tokenFile is read and stripped."""
    (tmp_path / "ca.crt").write_bytes(cluster_pki.ca_cert_pem)
    (tmp_path / "token").write_text("abc123\n")
    cfg = {"clusters": [{"name": "c", "cluster": {"server": "https://h:1", "certificate-authority": "ca.crt"}}],
           "users": [{"name": "u", "user": {"tokenFile": "token"}}],
           "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}], "current-context": "x"}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    client = config.from_kubeconfig(str(path))
    assert client.base_url == "https://h:1"
    assert client._token == "abc123"


@pytest.mark.parametrize("cfg,match", [
    ({}, "no current-context"),
    ({"current-context": "x", "contexts": []}, "context 'x' not found"),
    ({"current-context": "x", "contexts": [{"name": "x", "context": {"cluster": "c"}}],
      "clusters": [{"name": "c", "cluster": {}}]}, "has no server"),
])
def test_from_kubeconfig_errors(cfg, match):
    """Incomplete kubeconfigs are refused with a message naming what is missing."""
    with pytest.raises(ValueError, match=match):
        config.from_kubeconfig(cfg)


def test_ssl_context_needs_cert_and_key_together(cluster_pki):
    """A certificate without its key (or the reverse) is an error, not a silently anonymous client."""
    with pytest.raises(ValueError, match="both"):
        config.ssl_context(ca_pem=cluster_pki.ca_cert_pem, cert_pem=cluster_pki.admin_cert_pem)


def test_insecure_skip_verify(cluster_pki):
    """insecure-skip-tls-verify turns off server verification."""
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", cluster_pki)
    cfg["clusters"][0]["cluster"] = {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
    client = config.from_kubeconfig(cfg)
    assert client._ssl.verify_mode == ssl.CERT_NONE


def test_from_pem_plain_http_has_no_tls():
    """An http:// URL needs no TLS context."""
    client = config.from_pem("http://127.0.0.1:8080", token="t")
    assert client._ssl is None and client._token == "t"


def test_embedded_data_is_decoded(cluster_pki):
    """*-data fields are base64 decoded before use."""
    data = {"client-certificate-data": base64.b64encode(cluster_pki.admin_cert_pem).decode()}
    assert config._material(data, "client-certificate", "") == cluster_pki.admin_cert_pem
