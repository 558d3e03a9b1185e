"""Encryption at rest: providers, the EncryptionConfiguration file, and the encrypting store wrapper."""

from __future__ import annotations

import base64
import os

import orjson
import pytest

from pocketkube.api import errors, resources
from pocketkube.apiserver import encryption, objects
from pocketkube.store import memory

KEY16 = bytes(range(16))
KEY32 = bytes(range(32))
PLAIN = b'{"kind":"Secret","data":{"password":"aHVudGVyMg=="}}'
AD = b"/registry/core/secrets/default/s1"
# Known answers built with `cryptography` and PyNaCl directly (all-zero nonce/IV), independent of the code under test.
GCM_VECTOR = bytes.fromhex(
    "000000000000000000000000759edeb7db48a1872afbcc566a49e5bbfe6132325ce04215fbbcc3e2b68c2a393c3bc4860893f05046"
    "a736a3b8830e7394253c9b14759d93033a6a199952a77397f79da9")
CBC_VECTOR = bytes.fromhex(
    "000000000000000000000000000000005ac91630fe30ad0b98f923e6ce9c154ff1f1259caa24855840e60c67ddefc2ed098f87ec82"
    "0c9fa69039ef7e4d9b677acdb4f967ff33005a933cc925a25ec3e0")
BOX_VECTOR = bytes.fromhex(
    "000000000000000000000000000000000000000000000000ae8e5aa084a40e9abf02a882958f95e2312c9b28f6ce9d097e07176c57"
    "23caf0c816109133870a7610213bec4fbaa85da760f137b409e74ef706a6451094b502f0c09de4")


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def config(*providers: dict, resources_: list[str] | None = None) -> encryption.Config:
    return encryption.parse({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                             "resources": [{"resources": resources_ or ["secrets"], "providers": list(providers)}]})


def aes(kind: str, name: str = "key1", key: bytes = KEY32) -> dict:
    return {kind: {"keys": [{"name": name, "secret": b64(key)}]}}


def secrets_chain(cfg: encryption.Config) -> encryption.Chain:
    chain = cfg.chain_for("", "secrets")
    assert chain is not None
    return chain


@pytest.mark.parametrize(("provider", "prefix", "stored"), [
    (aes("aesgcm", key=KEY32), b"k8s:enc:aesgcm:v1:key1:", GCM_VECTOR),
    (aes("aescbc", key=KEY16), b"k8s:enc:aescbc:v1:key1:", CBC_VECTOR),
    (aes("secretbox", key=KEY32), b"k8s:enc:secretbox:v1:key1:", BOX_VECTOR),
])
def test_known_answer_vectors_decrypt(provider: dict, prefix: bytes, stored: bytes) -> None:
    """Each provider reads a value built with an independent implementation of kube's wire format."""
    plain, stale = secrets_chain(config(provider)).decrypt(prefix + stored, AD)
    assert (plain, stale) == (PLAIN, False)


@pytest.mark.parametrize(("provider", "prefix"), [
    (aes("aesgcm", key=KEY16), b"k8s:enc:aesgcm:v1:key1:"),
    (aes("aescbc", key=KEY32), b"k8s:enc:aescbc:v1:key1:"),
    (aes("secretbox"), b"k8s:enc:secretbox:v1:key1:"),
    ({"identity": {}}, b"{"),
])
def test_round_trip_and_prefix(provider: dict, prefix: bytes) -> None:
    """Writes carry kube's `k8s:enc:<provider>:v1:<key>:` prefix, never the plaintext, and read back."""
    chain = secrets_chain(config(provider))
    stored = chain.encrypt(PLAIN, AD)
    assert stored.startswith(prefix)
    if prefix != b"{":
        assert b"aHVudGVyMg" not in stored
        assert chain.encrypt(PLAIN, AD) != stored  # a fresh nonce / IV every time
    assert chain.decrypt(stored, AD) == (PLAIN, False)


@pytest.mark.parametrize(("writer", "reader", "message"), [
    (aes("aesgcm"), aes("aesgcm", key=bytes(32)), "cipher: message authentication failed"),
    (aes("aesgcm"), aes("aesgcm", name="key2"), "no matching key was found for the provided AES transformer"),
    (aes("secretbox"), aes("secretbox", key=bytes(32)), "output array was not large enough for encryption"),
    (aes("secretbox"), aes("secretbox", name="other"), "no matching key was found for the provided Secretbox transformer"),
    (aes("aescbc"), aes("aesgcm"), "no matching prefix found"),
    (aes("aesgcm"), {"identity": {}}, "no matching prefix found"),
])
def test_wrong_key_errors(writer: dict, reader: dict, message: str) -> None:
    """A value the configured keys cannot read fails with kube's transformer error."""
    stored = secrets_chain(config(writer)).encrypt(PLAIN, AD)
    with pytest.raises(encryption.TransformError) as exc:
        secrets_chain(config(reader)).decrypt(stored, AD)
    assert str(exc.value) == message


@pytest.mark.parametrize(("key", "message"), [
    (bytes(16), "invalid padding on input"),
    (bytes(32), "invalid PKCS7 data (empty or not padded)"),
])
def test_aescbc_wrong_key_breaks_the_padding(key: bytes, message: str) -> None:
    """aescbc has no authentication: a wrong key shows up as bad PKCS#7 padding (fixed vector, no flakiness)."""
    with pytest.raises(encryption.TransformError) as exc:
        secrets_chain(config(aes("aescbc", key=key))).decrypt(b"k8s:enc:aescbc:v1:key1:" + CBC_VECTOR, AD)
    assert str(exc.value) == message


def test_aesgcm_binds_the_storage_key() -> None:
    """An aesgcm value copied under another key does not decrypt: the key is the authenticated data."""
    chain = secrets_chain(config(aes("aesgcm")))
    stored = chain.encrypt(PLAIN, AD)
    with pytest.raises(encryption.TransformError, match="message authentication failed"):
        chain.decrypt(stored, b"/registry/core/secrets/default/other")


@pytest.mark.parametrize(("data", "message"), [
    (b"k8s:enc:aesgcm:v1:key1:short", "the stored data was shorter than the required size"),
    (b"k8s:enc:aescbc:v1:key1:" + bytes(20), "the stored data is not a multiple of the block size"),
    (b"k8s:enc:aescbc:v1:key1:" + bytes(16), "invalid PKCS7 data (empty or not padded)"),
    (b"k8s:enc:secretbox:v1:key1:" + bytes(30), "the stored data was shorter than the required size"),
])
def test_truncated_values(data: bytes, message: str) -> None:
    """Damaged values fail with the same errors kube's providers give."""
    provider = data.split(b":")[2].decode()
    with pytest.raises(encryption.TransformError) as exc:
        secrets_chain(config(aes(provider, key=KEY16 if provider == "aescbc" else KEY32))).decrypt(data, AD)
    assert str(exc.value) == message


def test_rotation_reads_old_key_and_marks_stale() -> None:
    """With a new key first and the old one second, old values read (stale) and new writes use the new key."""
    old = secrets_chain(config(aes("aescbc", "key1")))
    stored = old.encrypt(PLAIN, AD)
    rotated = secrets_chain(config({"aescbc": {"keys": [{"name": "key2", "secret": b64(os.urandom(32))},
                                                          {"name": "key1", "secret": b64(KEY32)}]}}))
    assert rotated.decrypt(stored, AD) == (PLAIN, True)
    assert rotated.encrypt(PLAIN, AD).startswith(b"k8s:enc:aescbc:v1:key2:")


def test_identity_first_reads_plain_and_encrypted() -> None:
    """Decrypting away from encryption: identity writes, the old provider still reads (stale)."""
    stored = secrets_chain(config(aes("secretbox"))).encrypt(PLAIN, AD)
    chain = secrets_chain(config({"identity": {}}, aes("secretbox")))
    assert chain.decrypt(stored, AD) == (PLAIN, True)
    assert chain.decrypt(PLAIN, AD) == (PLAIN, False)
    assert chain.encrypt(PLAIN, AD) == PLAIN


def test_wildcards_resolve_like_kube() -> None:
    """Exact resources win over `*.group`, which wins over `*.*`; `*.` means the core group."""
    cfg = encryption.parse({"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration",
                            "resources": [{"resources": ["secrets", "deployments.apps"], "providers": [aes("aesgcm")]},
                                          {"resources": ["*.apps"], "providers": [aes("aescbc")]},
                                          {"resources": ["*."], "providers": [aes("secretbox")]},
                                          {"resources": ["*.*"], "providers": [{"identity": {}}]}]})
    prefix = {g: cfg.chain_for(*g).encrypt(b"{}", b"k")[:18] for g in  # type: ignore[union-attr]
              [("", "secrets"), ("apps", "deployments"), ("apps", "statefulsets"), ("", "configmaps"),
               ("example.com", "widgets")]}
    assert prefix == {("", "secrets"): b"k8s:enc:aesgcm:v1:", ("apps", "deployments"): b"k8s:enc:aesgcm:v1:",
                      ("apps", "statefulsets"): b"k8s:enc:aescbc:v1:", ("", "configmaps"): b"k8s:enc:secretbox:",
                      ("example.com", "widgets"): b"{}"}


def doc(resources_: object) -> dict:
    return {"apiVersion": "apiserver.config.k8s.io/v1", "kind": "EncryptionConfiguration", "resources": resources_}


@pytest.mark.parametrize(("document", "message"), [
    (doc([]), "resources: Required value: at least one resources is required"),
    (doc([{"resources": ["secrets"]}]),
     "resources[0].providers: Required value: at least one resources[0].providers is required"),
    (doc([{"resources": [], "providers": [{"identity": {}}]}]),
     "resources[0].resources: Required value: at least one resources[0].resources is required"),
    (doc([{"resources": ["secrets"], "providers": [{"aescbc": {"keys": [{"name": "k", "secret": "not base64!"}]}}]}]),
     'resources[0].providers[0].aescbc.keys[0].secret: Invalid value: "REDACTED": secrets must be base64 encoded'),
    (doc([{"resources": ["secrets"], "providers": [{"aesgcm": {"keys": [{"name": "k", "secret": b64(bytes(10))}]}}]}]),
     'resources[0].providers[0].aesgcm.keys[0].secret: Invalid value: "REDACTED": secret is not of the expected '
     'length, got 10, expected one of [16 24 32]'),
    (doc([{"resources": ["secrets"], "providers": [{"secretbox": {"keys": [{"name": "k", "secret": b64(KEY16)}]}}]}]),
     "expected one of [32]"),
    (doc([{"resources": ["secrets"], "providers": [{"aesgcm": {"keys": [{"secret": b64(KEY16)}]}}]}]),
     "resources[0].providers[0].aesgcm.keys[0].name: Required value: name is a mandatory field for a key"),
    (doc([{"resources": ["secrets"], "providers": [{"aesgcm": {"keys": []}}]}]),
     "resources[0].providers[0].aesgcm.keys: Required value: at least one keys is required"),
    (doc([{"resources": ["secrets"], "providers": [{"kms": {"name": "x", "endpoint": "unix:///kms.sock"}}]}]),
     "resources[0].providers[0].kms: Forbidden: KMS providers need an external KMS plugin"),
    (doc([{"resources": ["secrets"], "providers": [{}]}]),
     "provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity"),
    (doc([{"resources": ["secrets"], "providers": [{"identity": {}, "aescbc": {"keys": []}}]}]),
     "more than one provider specified in a single element"),
    (doc([{"resources": ["Secrets"], "providers": [{"identity": {}}]}]),
     'resources[0].resources[0]: Invalid value: "Secrets": resource name should not contain capital letters'),
    (doc([{"resources": ["*"], "providers": [{"identity": {}}]}]), "use '*.' to encrypt all the resources"),
    (doc([{"resources": ["events.events.k8s.io"], "providers": [{"identity": {}}]}]), "Use 'events' instead"),
    (doc([{"resources": ["secrets", "*."], "providers": [{"identity": {}}]}]),
     'resources[0].resources: Invalid value: []string{"secrets", "*."}: using overlapping resources'),
    (doc([{"resources": ["secrets", "secrets"], "providers": [{"identity": {}}]}]),
     "the same resource cannot be specified multiple times"),
    (doc([{"resources": ["secrets"], "providers": [{"identity": {}}], "provider": []}]),
     'unknown field "resources[0].provider"'),
    (doc([{"resources": ["*.*"], "providers": [{"identity": {}}]}, {"resources": ["secrets"], "providers": [{"identity": {}}]}]),
     'resource "secrets" is masked by earlier rule "*.*"'),
    ({"apiVersion": "v1", "kind": "ConfigMap"}, 'expected kind "EncryptionConfiguration"'),
])
def test_bad_configs_name_the_field(document: dict, message: str) -> None:
    """Configurations kube-apiserver refuses are refused here with its field paths and messages."""
    with pytest.raises(encryption.ConfigError) as exc:
        encryption.parse(document)
    assert message in str(exc.value)


def test_load_reports_missing_and_empty_files(tmp_path: os.PathLike) -> None:
    """A missing or empty file fails with kube's wording and the path."""
    with pytest.raises(encryption.ConfigError, match="error opening encryption provider configuration file"):
        encryption.load(os.path.join(tmp_path, "nope.yaml"))
    empty = os.path.join(tmp_path, "empty.yaml")
    open(empty, "w").close()
    with pytest.raises(encryption.ConfigError, match="is empty"):
        encryption.load(empty)


SECRET_RES = resources.Registry.builtin().get("", "v1", "secrets")
CM_KEY = "/registry/core/configmaps/default/c1"


async def wrapped(cfg: encryption.Config) -> tuple[memory.MemoryStore, encryption.EncryptedStore]:
    inner = memory.MemoryStore()
    await inner.start()
    return inner, encryption.EncryptedStore(inner, cfg)


async def test_store_encrypts_configured_keys_only() -> None:
    """Secrets are stored encrypted and read back plain through get, list and the write results."""
    inner, store = await wrapped(config(aes("aesgcm")))
    created = await store.create(AD.decode(), PLAIN)
    assert created.value == PLAIN
    await store.create(CM_KEY, b'{"data":{}}')
    assert (await inner.get(AD.decode())).value.startswith(b"k8s:enc:aesgcm:v1:key1:")  # type: ignore[union-attr]
    assert (await inner.get(CM_KEY)).value == b'{"data":{}}'  # type: ignore[union-attr]
    assert (await store.get(AD.decode())).value == PLAIN  # type: ignore[union-attr]
    listed = await store.list("/registry/core/")
    assert [e.value for e in listed.entries] == [b'{"data":{}}', PLAIN]
    updated = await store.update(AD.decode(), PLAIN + b" ", expected_revision=created.mod_revision)
    assert updated.value == PLAIN + b" "
    deleted = await store.delete(AD.decode())
    assert deleted.value == PLAIN + b" "
    await inner.close()


async def test_store_watch_decrypts_events() -> None:
    """Watch events carry plaintext values and previous values."""
    inner, store = await wrapped(config(aes("secretbox")))
    watcher = store.watch("/registry/core/secrets/", after_revision=0)
    e = await store.create(AD.decode(), PLAIN)
    await store.update(AD.decode(), b"{}", expected_revision=e.mod_revision)
    events: list = []
    while len(events) < 2:
        events += await watcher.__anext__()
    assert [(ev.value, ev.prev_value) for ev in events] == [(PLAIN, None), (b"{}", PLAIN)]
    watcher.close()
    await inner.close()


async def test_unreadable_values_are_500s_with_kube_messages() -> None:
    """A value under a removed key: get and list answer 500 InternalError naming the problem."""
    inner, old = await wrapped(config(aes("aesgcm", "key1")))
    await old.create(AD.decode(), PLAIN)
    store = encryption.EncryptedStore(inner, config(aes("aesgcm", "key2", key=os.urandom(32))))
    with pytest.raises(encryption.UnreadableValue) as exc:
        await store.get(AD.decode())
    assert exc.value.code == 500
    assert exc.value.status()["message"] == \
        "Internal error occurred: no matching key was found for the provided AES transformer"
    with pytest.raises(errors.InternalError) as listed:
        await store.list("/registry/core/secrets/")
    assert listed.value.message == ('Internal error occurred: unable to transform key "/registry/core/secrets/default/s1": '
                                    'no matching key was found for the provided AES transformer')
    await inner.close()


async def test_stale_reads_are_reported_to_objects() -> None:
    """Objects.stale is true for an object read with an old key, until it is rewritten."""
    inner, old = await wrapped(config(aes("aescbc", "key1")))
    await old.create(AD.decode(), orjson.dumps({"metadata": {"name": "s1", "namespace": "default"}}))
    rotated = encryption.EncryptedStore(inner, config({"aescbc": {"keys": [
        {"name": "key2", "secret": b64(os.urandom(32))}, {"name": "key1", "secret": b64(KEY32)}]}}))
    objs = objects.Objects(rotated, lambda o, v: o)
    assert SECRET_RES is not None
    obj = await objs.get(SECRET_RES, "default", "s1")
    assert objs.stale(SECRET_RES, obj)
    stored = await objs.update(SECRET_RES, obj, expected_revision=int(obj["metadata"]["resourceVersion"]))
    assert not objs.stale(SECRET_RES, stored)
    assert (await inner.get(AD.decode())).value.startswith(b"k8s:enc:aescbc:v1:key2:")  # type: ignore[union-attr]
    assert not objects.Objects(inner, lambda o, v: o).stale(SECRET_RES, stored)
    await inner.close()


def test_encrypted_value_without_config_is_a_clear_error() -> None:
    """Started without the config, encrypted data fails like kube's identity provider, not with a JSON error."""
    with pytest.raises(errors.InternalError, match="identity transformer tried to read encrypted data"):
        objects.decode(b"k8s:enc:aesgcm:v1:key1:xxxx", 5)


def test_no_config_means_no_wrapper() -> None:
    """Without a configuration the store is used as is: no per-value work."""
    inner = memory.MemoryStore()
    assert encryption.wrap(inner, None) is inner


async def test_watch_delivers_readable_events_then_fails_with_internal_error() -> None:
    """Events before an undecryptable one still arrive; the next read raises the 500 InternalError that ends a watch."""
    inner, store = await wrapped(config(aes("aesgcm", "key1")))
    other = encryption.EncryptedStore(inner, config(aes("aesgcm", "key2", key=os.urandom(32))))
    watcher = store.watch("/registry/core/secrets/", after_revision=0)
    await store.create(AD.decode(), PLAIN)
    await other.create(AD.decode() + "x", PLAIN)
    events: list = []
    with pytest.raises(encryption.UnreadableValue) as exc:
        while True:
            events += await watcher.__anext__()
    assert [ev.value for ev in events] == [PLAIN]
    assert exc.value.status()["reason"] == "InternalError"
    assert exc.value.status()["message"] == \
        "Internal error occurred: no matching key was found for the provided AES transformer"
    watcher.close()
    await inner.close()
