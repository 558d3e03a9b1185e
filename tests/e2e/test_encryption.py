"""End to end: Secrets encrypted at rest with an EncryptionConfiguration, read back through kubectl, keys rotated."""

from __future__ import annotations

import base64
import collections.abc
import glob
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.e2e import cluster as cluster_mod

VALUE = "correct-horse-battery-staple-7731"
KEY1, KEY2, KEY3 = (base64.b64encode(os.urandom(32)).decode() for _ in range(3))


def write_config(path: str, *providers: str) -> str:
    """An EncryptionConfiguration for secrets with the given provider blocks, in order."""
    with open(path, "w") as f:
        f.write("apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n"
                "  - resources: [secrets]\n    providers:\n" + "".join(providers))
    return path


def aes(kind: str, name: str, secret: str) -> str:
    return f"      - {kind}:\n          keys:\n            - name: {name}\n              secret: {secret}\n"


IDENTITY = "      - identity: {}\n"


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    data = str(tmp_path_factory.mktemp("enc"))
    config = write_config(os.path.join(data, "enc.yaml"), aes("aesgcm", "key1", KEY1), IDENTITY)
    c = cluster_mod.Cluster(data).start(args=["--encryption-provider-config", config])
    try:
        yield c
    finally:
        c.stop()


def store_bytes(data_dir: str) -> bytes:
    """Everything in the SQLite database files (main file, WAL and shared memory)."""
    out = b""
    for path in glob.glob(os.path.join(data_dir, "state.db*")):
        with open(path, "rb") as f:
            out += f.read()
    return out


def latest_value(data_dir: str, key: str) -> bytes:
    db = sqlite3.connect(f"file:{os.path.join(data_dir, 'state.db')}?mode=ro", uri=True)
    try:
        row = db.execute("select value from log where key = ? order by id desc limit 1", (key,)).fetchone()
    finally:
        db.close()
    return bytes(row[0])


def test_secret_values_never_reach_the_store_files(encrypted: cluster_mod.Cluster) -> None:
    """A Secret created with kubectl reads back in full, and neither its value nor its base64 is in the db or WAL."""
    encrypted.kubectl("create", "secret", "generic", "db-pass", f"--from-literal=password={VALUE}")
    got = encrypted.kubectl("get", "secret", "db-pass", "-o", "jsonpath={.data.password}").stdout
    assert base64.b64decode(got).decode() == VALUE
    listed = encrypted.json("get", "secrets", "-A")
    assert any(s["metadata"]["name"] == "db-pass" for s in listed["items"])
    raw = store_bytes(encrypted.data_dir)
    assert VALUE.encode() not in raw
    assert base64.b64encode(VALUE.encode()) not in raw
    assert latest_value(encrypted.data_dir, "/registry/core/secrets/default/db-pass").startswith(
        b"k8s:enc:aesgcm:v1:key1:")
    # ConfigMaps are not in the configuration: they stay plain JSON
    encrypted.kubectl("create", "configmap", "plain", "--from-literal=k=visible-config-value")
    assert latest_value(encrypted.data_dir, "/registry/core/configmaps/default/plain").startswith(b"{")


def test_watch_and_patch_see_plaintext(encrypted: cluster_mod.Cluster) -> None:
    """A watch streams the decrypted Secret; patching an encrypted Secret works on its plaintext."""
    env = dict(os.environ, KUBECONFIG=encrypted.kubeconfig)
    proc = subprocess.Popen([cluster_mod.kubectl_binary(), "get", "secrets", "--watch-only", "-o",
                             "jsonpath={.metadata.name}={.data.token}{\"\\n\"}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        time.sleep(1.0)
        encrypted.kubectl("create", "secret", "generic", "watched", "--from-literal=token=abc123")
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "watched=" + base64.b64encode(b"abc123").decode()
    finally:
        proc.kill()
        proc.wait()
    encrypted.kubectl("patch", "secret", "watched", "-p", '{"stringData":{"extra":"more"}}')
    data = encrypted.json("get", "secret", "watched")["data"]
    assert base64.b64decode(data["extra"]) == b"more" and base64.b64decode(data["token"]) == b"abc123"


def test_bad_config_stops_up_naming_the_field(tmp_path: str) -> None:
    """An invalid configuration fails `pocketkube up` with kube's message and field path."""
    config = write_config(os.path.join(tmp_path, "bad.yaml"), aes("aescbc", "k", "not-base64!"))
    cp = subprocess.run([sys.executable, "-m", "pocketkube", "up", "--data-dir", os.path.join(tmp_path, "d"),
                         "--port", "0", "--encryption-provider-config", config],
                        cwd=cluster_mod.ROOT, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1
    assert ('resources[0].providers[0].aescbc.keys[0].secret: Invalid value: "REDACTED": secrets must be base64 '
            'encoded') in cp.stderr


def test_key_rotation(tmp_path: str) -> None:
    """New key first + restart + `get -o json | replace` rewrites Secrets; a removed key makes reads a 500."""
    data = str(tmp_path)
    key = "/registry/core/secrets/default/rotated"
    c = cluster_mod.Cluster(data).start(
        args=["--encryption-provider-config", write_config(os.path.join(data, "1.yaml"), aes("aesgcm", "key1", KEY1))])
    try:
        c.kubectl("create", "secret", "generic", "rotated", f"--from-literal=v={VALUE}")
        assert latest_value(data, key).startswith(b"k8s:enc:aesgcm:v1:key1:")
    finally:
        c.stop()

    rotated = write_config(os.path.join(data, "2.yaml"), aes("aescbc", "key2", KEY2), aes("aesgcm", "key1", KEY1))
    c = cluster_mod.Cluster(data).start(args=["--encryption-provider-config", rotated])
    try:
        assert base64.b64decode(c.json("get", "secret", "rotated")["data"]["v"]).decode() == VALUE
        everything = c.kubectl("get", "secrets", "-A", "-o", "json").stdout
        c.kubectl("replace", "-f", "-", input=everything)
        assert latest_value(data, key).startswith(b"k8s:enc:aescbc:v1:key2:"), (
            "an unchanged replace must still rewrite a Secret read with an old key: update.py should skip its "
            "no-op shortcut when server.objects.stale(call.res, old)")
    finally:
        c.stop()

    c = cluster_mod.Cluster(data).start(
        args=["--encryption-provider-config", write_config(os.path.join(data, "3.yaml"), aes("aescbc", "key3", KEY3))])
    try:
        got = c.kubectl("get", "secret", "rotated", check=False)
        assert got.returncode != 0
        assert ("Error from server (InternalError): Internal error occurred: no matching key was found for the "
                "provided AES transformer") in got.stderr
        listed = c.kubectl("get", "secrets", check=False)
        assert f'unable to transform key "{key}"' in listed.stderr
    finally:
        c.stop()
