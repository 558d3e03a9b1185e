"""Specification of kubeconfig building, writing and merging."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import stat
import subprocess

import pytest
import yaml

from pocketkube.base import kubeconfig, pki

KUBECTL = shutil.which("kubectl.1.32", path="/usr/lib/google-cloud-sdk/bin") or shutil.which("kubectl")


@pytest.fixture
def certs(tmp_path):
    return pki.ensure_pki(str(tmp_path / "data"), hosts=[])


def _named(entries, name):
    return [e for e in entries if e["name"] == name]


def _other(name: str, server: str = "https://other:443") -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": {"server": server}}],
        "users": [{"name": name, "user": {"token": "t"}}],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name, "namespace": "ns1"}}],
        "current-context": name,
    }


def test_admin_kubeconfig_shape(certs):
    """Cluster, user and context are all named pocketkube and the context is current."""
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs)
    assert cfg["apiVersion"] == "v1" and cfg["kind"] == "Config"
    assert cfg["current-context"] == "pocketkube"
    assert cfg["clusters"][0]["name"] == "pocketkube"
    assert cfg["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
    assert cfg["users"][0]["name"] == "pocketkube"
    assert cfg["contexts"] == [
        {"name": "pocketkube", "context": {"cluster": "pocketkube", "user": "pocketkube"}}
    ]


def test_admin_kubeconfig_embeds_certs(certs):
    """CA, client cert and client key are embedded base64-encoded, not referenced by path."""
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs)
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    assert base64.b64decode(cluster["certificate-authority-data"]) == certs.ca_cert_pem
    assert base64.b64decode(user["client-certificate-data"]) == certs.admin_cert_pem
    assert base64.b64decode(user["client-key-data"]) == certs.admin_key_pem


def test_custom_name(certs):
    """The name argument names the cluster, user and context."""
    cfg = kubeconfig.admin_kubeconfig("https://h:1", certs, name="dev")
    assert cfg["current-context"] == "dev"
    assert {e["name"] for s in kubeconfig.NAMED_SECTIONS for e in cfg[s]} == {"dev"}


def test_dumps_round_trips(certs):
    """dumps() is YAML that loads back to the same dict, apiVersion first."""
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs)
    text = kubeconfig.dumps(cfg)
    assert text.startswith("apiVersion: v1\n")
    assert yaml.safe_load(text) == cfg


def test_write_is_owner_only(tmp_path, certs):
    """write() creates missing directories and a 0600 file."""
    path = tmp_path / "a" / "b" / "kubeconfig"
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs)
    kubeconfig.write(str(path), cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kubeconfig.load(str(path)) == cfg


def test_merge_into_creates_absent_file(tmp_path, certs):
    """Merging into a missing file creates it (0600) holding just our entries."""
    path = tmp_path / ".kube" / "config"
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs)
    kubeconfig.merge_into(str(path), cfg)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert kubeconfig.load(str(path)) == cfg


def test_merge_into_keeps_other_entries(tmp_path, certs):
    """Existing clusters, users, contexts and extra keys survive a merge; ours becomes current."""
    path = tmp_path / "config"
    existing = _other("prod")
    existing["preferences"] = {"colors": True}
    existing["extensions"] = [{"name": "x", "extension": {}}]
    path.write_text(yaml.safe_dump(existing))
    cfg = kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs)
    kubeconfig.merge_into(str(path), cfg)
    merged = kubeconfig.load(str(path))
    for section in kubeconfig.NAMED_SECTIONS:
        assert [e["name"] for e in merged[section]] == ["prod", "pocketkube"]
    assert _named(merged["contexts"], "prod")[0]["context"]["namespace"] == "ns1"
    assert merged["current-context"] == "pocketkube"
    assert merged["preferences"] == {"colors": True}
    assert merged["extensions"] == existing["extensions"]


def test_merge_into_replaces_same_named_entries(tmp_path, certs):
    """A second merge replaces the pocketkube entries in place instead of duplicating them."""
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_other("prod")))
    kubeconfig.merge_into(str(path), kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs))
    kubeconfig.merge_into(str(path), kubeconfig.admin_kubeconfig("https://127.0.0.1:7000", certs))
    merged = kubeconfig.load(str(path))
    assert [e["name"] for e in merged["clusters"]] == ["prod", "pocketkube"]
    assert _named(merged["clusters"], "pocketkube")[0]["cluster"]["server"] == "https://127.0.0.1:7000"


def test_merge_into_without_set_current(tmp_path, certs):
    """With set_current=False an existing current-context is left alone."""
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_other("prod")))
    kubeconfig.merge_into(str(path), kubeconfig.admin_kubeconfig("https://h:1", certs), set_current=False)
    assert kubeconfig.load(str(path))["current-context"] == "prod"


def test_merge_into_keeps_existing_mode(tmp_path, certs):
    """An existing file keeps the permissions its owner gave it."""
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_other("prod")))
    os.chmod(path, 0o640)
    kubeconfig.merge_into(str(path), kubeconfig.admin_kubeconfig("https://h:1", certs))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_merge_into_writes_through_symlink(tmp_path, certs):
    """A symlinked kubeconfig is updated at its target and stays a symlink."""
    target = tmp_path / "real-config"
    target.write_text(yaml.safe_dump(_other("prod")))
    link = tmp_path / "config"
    link.symlink_to(target)
    kubeconfig.merge_into(str(link), kubeconfig.admin_kubeconfig("https://h:1", certs))
    assert link.is_symlink()
    assert [e["name"] for e in kubeconfig.load(str(target))["clusters"]] == ["prod", "pocketkube"]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "apiVersion: v1\nkind: Config\nclusters: null\nusers: null\ncontexts: null\ncurrent-context: ''\n",
        "apiVersion: v1\nkind: Config\npreferences: {}\n",
    ],
)
def test_merge_into_empty_like_files(tmp_path, certs, text):
    """Empty files and configs with null sections (as kubectl writes them) merge cleanly."""
    path = tmp_path / "config"
    path.write_text(text)
    cfg = kubeconfig.admin_kubeconfig("https://h:1", certs)
    kubeconfig.merge_into(str(path), cfg)
    merged = kubeconfig.load(str(path))
    for section in kubeconfig.NAMED_SECTIONS:
        assert merged[section] == cfg[section]
    assert merged["current-context"] == "pocketkube"


@pytest.mark.parametrize(
    "text",
    ["clusters: [unclosed\n", "- a\n- b\n", "clusters: {a: 1}\n"],
)
def test_merge_into_refuses_broken_files(tmp_path, certs, text):
    """A file that is not a kubeconfig is reported with ValueError and left unchanged."""
    path = tmp_path / "config"
    path.write_text(text)
    with pytest.raises(ValueError, match=str(path)):
        kubeconfig.merge_into(str(path), kubeconfig.admin_kubeconfig("https://h:1", certs))
    assert path.read_text() == text


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"HOME": "/home/u"}, "/home/u/.kube/config"),
        ({"HOME": "/home/u", "KUBECONFIG": "/a/one:/b/two"}, "/a/one"),
        ({"HOME": "/home/u", "KUBECONFIG": ":/b/two"}, "/b/two"),
        ({"HOME": "/home/u", "KUBECONFIG": ""}, "/home/u/.kube/config"),
    ],
)
def test_default_path(env, expected):
    """The merge target is the first $KUBECONFIG entry, else ~/.kube/config."""
    assert kubeconfig.default_path(env) == expected


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
def test_real_kubectl_reads_merged_file(tmp_path, certs):
    """The real kubectl parses a merged file and sees both contexts with ours current."""
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(_other("prod")))
    kubeconfig.merge_into(str(path), kubeconfig.admin_kubeconfig("https://127.0.0.1:6443", certs))
    out = subprocess.run(
        [KUBECTL, "config", "view", "--kubeconfig", str(path), "--raw", "-o", "json"],
        capture_output=True,
        text=True,
        check=True,
        timeout=20,
    ).stdout
    view = json.loads(out)
    assert view["current-context"] == "pocketkube"
    assert {c["name"] for c in view["contexts"]} == {"prod", "pocketkube"}
    pocket = _named(view["users"], "pocketkube")[0]["user"]
    assert base64.b64decode(pocket["client-key-data"]) == certs.admin_key_pem


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed")
async def test_real_kubectl_trusts_server_and_presents_admin_cert(tmp_path, certs):
    """kubectl with the admin kubeconfig verifies our serving cert and authenticates with the admin cert."""
    from aiohttp import web

    seen = {}

    async def healthz(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        seen["subject"] = dict(item for rdn in (peer or {}).get("subject", ()) for item in rdn)
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=pki.ssl_server_context(certs))
    await site.start()
    try:
        port = runner.addresses[0][1]
        path = tmp_path / "kubeconfig"
        kubeconfig.write(str(path), kubeconfig.admin_kubeconfig(f"https://127.0.0.1:{port}", certs))
        proc = await asyncio.create_subprocess_exec(
            KUBECTL,
            "--kubeconfig",
            str(path),
            "get",
            "--raw",
            "/healthz",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        await runner.cleanup()
    assert proc.returncode == 0, err.decode()
    assert out.decode().strip() == "ok"
    assert seen["subject"] == {"commonName": "pocketkube-admin", "organizationName": "system:masters"}
