"""Encryption at rest: kube's EncryptionConfiguration providers applied to values on their way to and from the store."""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl import exceptions as nacl_exceptions
from nacl import secret as nacl_secret

from pocketkube.api import errors
from pocketkube.store import base as store_base

ENCRYPTED = b"k8s:enc:"
_AESGCM_PREFIX = b"k8s:enc:aesgcm:v1:"
_AESCBC_PREFIX = b"k8s:enc:aescbc:v1:"
_SECRETBOX_PREFIX = b"k8s:enc:secretbox:v1:"
_AES_KEY_SIZES = (16, 24, 32)
_SECRETBOX_KEY_SIZES = (32,)
_SHORT = "the stored data was shorter than the required size"


class ConfigError(Exception):
    """An EncryptionConfiguration kube-apiserver would refuse to start with; the message names the field."""


class TransformError(Exception):
    """A stored value no configured provider can read (kube's transformer errors, word for word)."""


class UnreadableValue(errors.InternalError, store_base.StoreError):
    """A 500 for the client and a store error for store followers (watch turns it into an ERROR event)."""


def aggregate(messages: Sequence[str]) -> str:
    """utilerrors.NewAggregate(...).Error(): one message bare, several deduplicated inside brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


# --- providers ----------------------------------------------------------------------------------------

class _AESGCM:
    """AES-GCM with a random 12-byte nonce in front; the storage key is the authenticated data."""

    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)

    def encrypt(self, data: bytes, ad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, data, ad)

    def decrypt(self, data: bytes, ad: bytes) -> tuple[bytes, bool]:
        if len(data) < 12:
            raise TransformError(_SHORT)
        try:
            return self._aead.decrypt(data[:12], data[12:], ad), False
        except InvalidTag:
            raise TransformError("cipher: message authentication failed") from None


class _AESCBC:
    """AES-CBC with a random IV in front and PKCS#7 padding; no authenticated data, as kube's."""

    def __init__(self, key: bytes) -> None:
        self._algorithm = algorithms.AES(key)

    def encrypt(self, data: bytes, ad: bytes) -> bytes:
        pad = 16 - len(data) % 16
        iv = os.urandom(16)
        enc = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return iv + enc.update(data + bytes([pad]) * pad) + enc.finalize()

    def decrypt(self, data: bytes, ad: bytes) -> tuple[bytes, bool]:
        if len(data) < 16:
            raise TransformError(_SHORT)
        body = data[16:]
        if len(body) % 16:
            raise TransformError("the stored data is not a multiple of the block size")
        dec = Cipher(self._algorithm, modes.CBC(data[:16])).decryptor()
        plain = dec.update(body) + dec.finalize()
        pad = plain[-1] if plain else 0
        if pad == 0 or pad > len(plain):
            raise TransformError("invalid PKCS7 data (empty or not padded)")
        if plain[-pad:] != bytes([pad]) * pad:
            raise TransformError("invalid padding on input")
        return plain[:-pad], False


class _Secretbox:
    """NaCl secretbox (XSalsa20-Poly1305) with a random 24-byte nonce in front."""

    def __init__(self, key: bytes) -> None:
        self._box = nacl_secret.SecretBox(key)

    def encrypt(self, data: bytes, ad: bytes) -> bytes:
        return bytes(self._box.encrypt(data, os.urandom(24)))

    def decrypt(self, data: bytes, ad: bytes) -> tuple[bytes, bool]:
        if len(data) < 24 + 16:
            raise TransformError(_SHORT)
        try:
            return self._box.decrypt(data[24:], data[:24]), False
        except nacl_exceptions.CryptoError:
            # kube's secretbox reports any failed Open with this (odd) message
            raise TransformError("output array was not large enough for encryption") from None


class _Identity:
    """Plain values; refuses to hand out data that some other provider encrypted."""

    def encrypt(self, data: bytes, ad: bytes) -> bytes:
        return data

    def decrypt(self, data: bytes, ad: bytes) -> tuple[bytes, bool]:
        if data.startswith(ENCRYPTED):
            raise TransformError("identity transformer tried to read encrypted data")
        return data, False


class Chain:
    """value.NewPrefixTransformers: the first entry writes; reads try every entry whose prefix matches."""

    def __init__(self, items: list[tuple[bytes, Any]], *, error: str) -> None:
        self.items = items
        self.error = error

    def encrypt(self, data: bytes, ad: bytes) -> bytes:
        prefix, first = self.items[0]
        return prefix + first.encrypt(data, ad)

    def decrypt(self, data: bytes, ad: bytes) -> tuple[bytes, bool]:
        """(plaintext, stale): stale when a provider or key other than the first one read it."""
        failures: list[str] = []
        for i, (prefix, transformer) in enumerate(self.items):
            if not data.startswith(prefix):
                continue
            try:
                plain, stale = transformer.decrypt(data[len(prefix):], ad)
            except TransformError as exc:
                # identity refusing encrypted data only means a later provider should try
                if prefix:
                    failures.append(str(exc))
                continue
            return plain, stale or i != 0
        raise TransformError(aggregate(failures) if failures else self.error)


IDENTITY = Chain([(b"", _Identity())], error="no matching prefix found")


# --- the configuration file ----------------------------------------------------------------------

@dataclasses.dataclass
class Config:
    """Parsed EncryptionConfiguration: one chain per group/resource, wildcards as kube spells them."""

    chains: dict[tuple[str, str], Chain]

    def chain_for(self, group: str, resource: str) -> Chain | None:
        """transformerFromOverrides: exact resource, then `*.group`, then `*.*`; None = plain identity."""
        for gr in ((group, resource), (group, "*"), ("*", "*")):
            chain = self.chains.get(gr)
            if chain is not None:
                return chain
        return None


def parse_group_resource(text: str) -> tuple[str, str]:
    """schema.ParseGroupResource: `deployments.apps` -> ("apps", "deployments"); `secrets` -> ("", "secrets")."""
    resource, dot, group = text.partition(".")
    return (group, resource) if dot else ("", text)


def _gr_text(group: str, resource: str) -> str:
    if group == "" and resource == "*":
        return "*."
    return f"{resource}.{group}" if group else resource


def load(path: str) -> Config:
    """Read and validate an EncryptionConfiguration file, refusing it with kube's messages."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f'error while parsing file: error opening encryption provider configuration file '
                          f'"{path}": {exc.strerror or exc}') from None
    if not data.strip():
        raise ConfigError(f'error while parsing file: encryption provider configuration file "{path}" is empty')
    try:
        doc = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ConfigError(f"error while parsing file: {str(exc).splitlines()[0]}") from None
    return parse(doc)


def parse(doc: Any) -> Config:
    """Validate a decoded EncryptionConfiguration document and build its chains."""
    if not isinstance(doc, Mapping):
        raise ConfigError("error while parsing file: expected an EncryptionConfiguration object")
    api_version, kind = doc.get("apiVersion"), doc.get("kind")
    if (api_version, kind) != ("apiserver.config.k8s.io/v1", "EncryptionConfiguration"):
        raise ConfigError(f'error while parsing file: expected kind "EncryptionConfiguration" of apiVersion '
                          f'"apiserver.config.k8s.io/v1", got kind {kind!r} of apiVersion {api_version!r}')
    problems = [f'unknown field "{k}"' for k in doc if k not in ("apiVersion", "kind", "resources")]
    problems += _validate(doc.get("resources"))
    if problems:
        raise ConfigError("error while parsing file: " + aggregate(problems))
    return _build(doc["resources"])


def _strings(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _validate(resources: Any) -> list[str]:
    if resources is None or resources == []:
        return [errors.required("resources", "at least one resources is required").text()]
    if not isinstance(resources, list):
        return [errors.invalid("resources", "raw:" + type(resources).__name__, "must be a list").text()]
    problems: list[str] = []
    for i, entry in enumerate(resources):
        base = f"resources[{i}]"
        if not isinstance(entry, Mapping):
            problems.append(errors.invalid(base, "raw:" + type(entry).__name__, "must be an object").text())
            continue
        problems += [f'unknown field "{base}.{k}"' for k in entry if k not in ("resources", "providers")]
        names = entry.get("resources") or []
        if not _strings(names):
            problems.append(errors.invalid(f"{base}.resources", names, "must be a list of strings").text())
            names = []
        if not names:
            problems.append(errors.required(f"{base}.resources", f"at least one {base}.resources is required").text())
        problems += _validate_names(names, f"{base}.resources")
        providers = entry.get("providers") or []
        if not isinstance(providers, list) or not providers:
            problems.append(errors.required(f"{base}.providers", f"at least one {base}.providers is required").text())
            continue
        for j, provider in enumerate(providers):
            problems += _validate_provider(provider, f"{base}.providers[{j}]")
    return problems


_EVENTS = "'*.events.k8s.io' objects are stored using the 'events' API group in etcd. Use 'events' instead in the config file"
_NON_REST = ("apiserveripinfo", "serviceipallocations", "servicenodeportallocations")


def _validate_names(names: list[str], path: str) -> list[str]:
    problems: list[str] = []
    grs = [parse_group_resource(n) for n in names]
    duplicate = len(set(grs)) != len(grs)
    overlap = len(grs) > 1 and any(
        gr == ("*", "*") or (gr[0] == other[0] and "*" in (gr[1], other[1]))
        for i, gr in enumerate(grs) for j, other in enumerate(grs) if i != j and gr != other)
    listed = "raw:[]string{" + ", ".join(errors.go_value(n) for n in names) + "}"
    if duplicate:
        problems.append(errors.invalid(path, listed, "the same resource cannot be specified multiple times").text())
    if overlap:
        problems.append(errors.invalid(path, listed, "using overlapping resources such as 'secrets' and '*.' in the "
                                                    "same resource list is not allowed as they will be masked").text())
    for j, name in enumerate(names):
        group, resource = parse_group_resource(name)
        detail = ""
        if name.lower() != name:
            detail = "resource name should not contain capital letters"
        elif name == "*":
            detail = "use '*.' to encrypt all the resources from core API group or *.* to encrypt all resources"
        elif name in _NON_REST:
            detail = "resources which do not have REST API/s cannot be encrypted"
        elif group == "events.k8s.io":
            detail = _EVENTS
        elif group == "extensions":
            detail = "'extensions' group has been removed and cannot be used for encryption"
        elif group == "*" and resource != "*":
            detail = "encrypting the same resource across groups is not supported"
        if detail:
            problems.append(errors.invalid(f"{path}[{j}]", name, detail).text())
    return problems


_KINDS = ("kms", "aesgcm", "aescbc", "secretbox", "identity")


def _validate_provider(provider: Any, path: str) -> list[str]:
    if not isinstance(provider, Mapping):
        return [errors.invalid(path, "raw:" + type(provider).__name__, "must be an object").text()]
    unknown = [f'unknown field "{path}.{k}"' for k in provider if k not in _KINDS]
    present = [k for k in _KINDS if provider.get(k) is not None]
    if not present:
        return unknown + [errors.invalid(path, "raw:{}", "provider does not contain any of the expected providers: "
                                                        "KMS, AESGCM, AESCBC, Secretbox, Identity").text()]
    if len(present) > 1:
        return unknown + [errors.invalid(path, "raw:{...}", "more than one provider specified in a single element, "
                                                             "should split into different list elements").text()]
    kind = present[0]
    body = provider[kind]
    if kind == "kms":
        return unknown + [errors.forbidden(f"{path}.kms", "KMS providers need an external KMS plugin, which pocketkube "
                                                          "does not run; use aesgcm, aescbc or secretbox").text()]
    if not isinstance(body, Mapping):
        return unknown + [errors.invalid(f"{path}.{kind}", "raw:" + type(body).__name__, "must be an object").text()]
    if kind == "identity":
        return unknown + [f'unknown field "{path}.identity.{k}"' for k in body]
    unknown += [f'unknown field "{path}.{kind}.{k}"' for k in body if k != "keys"]
    keys = body.get("keys") or []
    if not isinstance(keys, list) or not keys:
        return unknown + [errors.required(f"{path}.{kind}.keys", "at least one keys is required").text()]
    sizes = _SECRETBOX_KEY_SIZES if kind == "secretbox" else _AES_KEY_SIZES
    for k, key in enumerate(keys):
        unknown += _validate_key(key, f"{path}.{kind}.keys[{k}]", sizes)
    return unknown


def _validate_key(key: Any, path: str, sizes: tuple[int, ...]) -> list[str]:
    if not isinstance(key, Mapping):
        return [errors.invalid(path, "raw:" + type(key).__name__, "must be an object").text()]
    problems = [f'unknown field "{path}.{k}"' for k in key if k not in ("name", "secret")]
    if not key.get("name"):
        problems.append(errors.required(f"{path}.name", "name is a mandatory field for a key").text())
    secret = key.get("secret")
    if not secret:
        problems.append(errors.required(f"{path}.secret", "secret is a mandatory field for a key").text())
        return problems
    raw = _b64(secret)
    if raw is None:
        problems.append(errors.invalid(f"{path}.secret", "REDACTED", "secrets must be base64 encoded").text())
    elif len(raw) not in sizes:
        expected = "[" + " ".join(str(s) for s in sizes) + "]"
        problems.append(errors.invalid(f"{path}.secret", "REDACTED", f"secret is not of the expected length, got "
                                                                      f"{len(raw)}, expected one of {expected}").text())
    return problems


_B64 = re.compile(rb"^[A-Za-z0-9+/]*={0,2}$")


def _b64(text: Any) -> bytes | None:
    """Go's base64.StdEncoding: padded, standard alphabet, nothing else."""
    if not isinstance(text, str) or not _B64.match(text.encode()) or len(text) % 4:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _build(resources: list[Mapping[str, Any]]) -> Config:
    chains: dict[tuple[str, str], list[tuple[bytes, Any]]] = {}
    for entry in resources:
        items = [_provider(p) for p in entry["providers"]]
        for name in entry["resources"]:
            group, resource = parse_group_resource(name)
            for earlier in ((group, "*"), ("*", "*")):
                if earlier in chains:
                    raise ConfigError(f'resource "{_gr_text(group, resource)}" is masked by earlier rule '
                                      f'"{_gr_text(*earlier)}"')
            chains.setdefault((group, resource), []).extend(items)
    return Config({gr: Chain(items, error="no matching prefix found") for gr, items in chains.items()})


def _provider(provider: Mapping[str, Any]) -> tuple[bytes, Any]:
    if provider.get("identity") is not None:
        return b"", _Identity()
    for kind, prefix, cls, what in (("aesgcm", _AESGCM_PREFIX, _AESGCM, "AES"),
                                    ("aescbc", _AESCBC_PREFIX, _AESCBC, "AES"),
                                    ("secretbox", _SECRETBOX_PREFIX, _Secretbox, "Secretbox")):
        if provider.get(kind) is not None:
            keys = provider[kind]["keys"]
            items: list[tuple[bytes, Any]] = []
            for k in keys:
                raw = _b64(k["secret"])
                assert raw is not None  # validated
                items.append((str(k["name"]).encode() + b":", cls(raw)))
            return prefix, Chain(items, error=f"no matching key was found for the provided {what} transformer")
    raise ConfigError("provider does not contain any of the expected providers: KMS, AESGCM, AESCBC, Secretbox, Identity")


# --- the store wrapper ---------------------------------------------------------------------------

class EncryptedStore:
    """A store.Store that encrypts configured resources' values on write and decrypts them on every read."""

    def __init__(self, inner: Any, config: Config) -> None:
        self.inner = inner
        self.config = config
        self._by_head: dict[str, Chain | None] = {}
        # (key -> revision) of values read with a provider or key other than the first: rewriting them
        # with unchanged content must still reach the store (kube's "stale" transformation result).
        self._stale: dict[str, int] = {}
        # key -> (revision, plaintext) of the latest value seen: repeated gets and lists skip the cipher,
        # as kube's watch cache serves decrypted objects; bounded so "*.*" cannot double memory without limit.
        self._plain: dict[str, tuple[int, bytes]] = {}

    _PLAIN_LIMIT = 50_000

    def _remember(self, key: str, revision: int, plain: bytes) -> None:
        if len(self._plain) >= self._PLAIN_LIMIT:
            self._plain.clear()
        self._plain[key] = (revision, plain)

    # Pass-throughs: nothing about these depends on the values.
    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def current_revision(self) -> int:
        return int(self.inner.current_revision())

    def compacted_revision(self) -> int:
        return int(self.inner.compacted_revision())

    async def count(self, prefix: str) -> int:
        return int(await self.inner.count(prefix))

    async def compact(self, revision: int) -> None:
        await self.inner.compact(revision)

    def is_stale(self, key: str, revision: int) -> bool:
        """True when the value read at this revision was not written by the first provider and key."""
        return self._stale.get(key) == revision

    def _chain(self, key: str) -> Chain | None:
        # /registry/<group|core>/<resource>/...: everything up to the resource names the chain
        end = key.find("/", key.find("/", 10) + 1)
        head = key[:end + 1] if end > 0 else key
        try:
            return self._by_head[head]
        except KeyError:
            parts = head.split("/")
            group = "" if len(parts) < 3 or parts[2] == "core" else parts[2]
            chain = self.config.chain_for(group, parts[3] if len(parts) > 3 else "")
            self._by_head[head] = chain
            return chain

    def _decrypt(self, key: str, value: bytes, revision: int, *, listing: bool = False) -> bytes:
        chain = self._chain(key)
        if chain is None:
            if not value.startswith(ENCRYPTED):
                return value
            chain = IDENTITY
        hit = self._plain.get(key)
        if hit is not None and revision and hit[0] == revision:
            return hit[1]
        try:
            plain, stale = chain.decrypt(value, key.encode())
        except TransformError as exc:
            message = f'unable to transform key "{key}": {exc}' if listing else str(exc)
            raise UnreadableValue(f"Internal error occurred: {message}",
                                  details={"causes": [{"message": message}]}) from None
        if revision:
            if stale:
                self._stale[key] = revision
            self._remember(key, revision, plain)
        return plain

    def _entry(self, e: store_base.Entry, *, listing: bool = False) -> store_base.Entry:
        value = self._decrypt(e.key, e.value, e.mod_revision, listing=listing)
        if value is e.value:
            return e
        return store_base.Entry(e.key, value, e.create_revision, e.mod_revision)

    def _encrypt(self, key: str, value: bytes) -> bytes:
        self._stale.pop(key, None)
        chain = self._chain(key)
        return value if chain is None else chain.encrypt(value, key.encode())

    async def get(self, key: str, *, revision: int = 0) -> store_base.Entry | None:
        e = await self.inner.get(key, revision=revision)
        return None if e is None else self._entry(e)

    async def list(self, prefix: str, *, revision: int = 0, start_after: str = "",
                   limit: int = 0) -> store_base.ListResult:
        r = await self.inner.list(prefix, revision=revision, start_after=start_after, limit=limit)
        entries = [self._entry(e, listing=True) for e in r.entries]
        return store_base.ListResult(entries=entries, revision=r.revision, more=r.more, remaining=r.remaining)

    async def create(self, key: str, value: bytes) -> store_base.Entry:
        e = await self.inner.create(key, self._encrypt(key, value))
        self._remember(key, e.mod_revision, value)
        return store_base.Entry(e.key, value, e.create_revision, e.mod_revision)

    async def update(self, key: str, value: bytes, *, expected_revision: int = 0) -> store_base.Entry:
        e = await self.inner.update(key, self._encrypt(key, value), expected_revision=expected_revision)
        self._remember(key, e.mod_revision, value)
        return store_base.Entry(e.key, value, e.create_revision, e.mod_revision)

    async def delete(self, key: str, *, expected_revision: int = 0) -> store_base.Entry:
        e = await self.inner.delete(key, expected_revision=expected_revision)
        entry = self._entry(e)
        self._stale.pop(key, None)
        self._plain.pop(key, None)
        return entry

    def watch(self, prefix: str, *, after_revision: int) -> Any:
        """A watcher like store.base.Watcher whose batches come out decrypted."""
        return _Watcher(self, self.inner.watch(prefix, after_revision=after_revision))

    def event(self, ev: store_base.Event) -> store_base.Event:
        """The event with its values decrypted (the same object when nothing needed it)."""
        value = self._decrypt(ev.key, ev.value, ev.revision)
        prev = ev.prev_value
        if prev is not None:
            prev = self._decrypt(ev.key, prev, 0)
        if value is ev.value and prev is ev.prev_value:
            return ev
        return dataclasses.replace(ev, value=value, prev_value=prev)


class _Watcher:
    """A store watcher whose batches come out decrypted."""

    def __init__(self, store: EncryptedStore, inner: Any) -> None:
        self._store = store
        self._inner = inner
        self.prefix = inner.prefix
        self._error: UnreadableValue | None = None

    @property
    def closed(self) -> bool:
        return bool(self._inner.closed)

    def close(self) -> None:
        self._inner.close()

    def fail(self, error: BaseException) -> None:
        self._inner.fail(error)

    def __aiter__(self) -> _Watcher:
        return self

    async def __anext__(self) -> list[store_base.Event]:
        if self._error is not None:
            raise self._error
        batch = await self._inner.__anext__()
        out: list[store_base.Event] = []
        for ev in batch:
            try:
                out.append(self._store.event(ev))
            except UnreadableValue as exc:
                if not out:
                    raise
                # The events before the unreadable one still reach the watcher, as kube's watch sends them first.
                self._error = exc
                break
        return out


def wrap(store: Any, config: Config | None) -> Any:
    """The store the API server should use: the store itself when nothing is configured (no per-value cost)."""
    return store if config is None else EncryptedStore(store, config)


def unreadable(value: bytes) -> errors.APIError | None:
    """For a value that is not JSON: kube's identity error when it is encrypted data (no config given)."""
    if value.startswith(ENCRYPTED):
        message = "identity transformer tried to read encrypted data"
        return errors.InternalError(f"Internal error occurred: {message}", details={"causes": [{"message": message}]})
    return None
