"""Typed access to the store: keys, encoding, resourceVersion, version conversion, and shared decoded objects."""

from __future__ import annotations

import collections
from typing import Any

import orjson

from pocketkube.api import errors, resources
from pocketkube.apiserver import encryption
from pocketkube.store import base as store_base

_META_ORDER = ("name", "generateName", "namespace", "selfLink", "uid", "resourceVersion", "generation",
               "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "labels",
               "annotations", "ownerReferences", "finalizers", "managedFields")
_TOP_ORDER = ("kind", "apiVersion", "metadata")
# Decoded objects kept for readers that never modify them (at most this many keys, then start again).
_SHARED_MAX = 4096


def canonical(obj: dict[str, Any]) -> dict[str, Any]:
    """Reorder top-level and metadata keys the way kube-apiserver serialises them."""
    meta = obj.get("metadata") or {}
    ordered_meta = {k: meta[k] for k in _META_ORDER if k in meta}
    for k, v in meta.items():
        if k not in ordered_meta:
            ordered_meta[k] = v
    out: dict[str, Any] = {}
    for k in _TOP_ORDER:
        if k == "metadata":
            out["metadata"] = ordered_meta
        elif k in obj:
            out[k] = obj[k]
    for k, v in obj.items():
        if k not in out:
            out[k] = v
    return out


def storage_prefix(res: resources.Resource) -> str:
    group, resource = res.storage_key
    return f"/registry/{group or 'core'}/{resource}/"


def key(res: resources.Resource, namespace: str, name: str) -> str:
    if res.namespaced:
        return f"{storage_prefix(res)}{namespace}/{name}"
    return f"{storage_prefix(res)}{name}"


def list_prefix(res: resources.Resource, namespace: str) -> str:
    if res.namespaced and namespace:
        return f"{storage_prefix(res)}{namespace}/"
    return storage_prefix(res)


def storage_api_version(res: resources.Resource) -> str:
    group, _ = res.storage_key
    version = res.storage_version or res.version
    return f"{group}/{version}" if group else version


def encode(obj: dict[str, Any]) -> bytes:
    """Serialise for the store; resourceVersion is derived from the revision, never stored."""
    meta = obj.get("metadata")
    if isinstance(meta, dict) and meta.get("resourceVersion"):
        # keep the key (with an empty value) so decode restores it at its canonical position
        meta = dict(meta)
        meta["resourceVersion"] = ""
        obj = dict(obj)
        obj["metadata"] = meta
    return orjson.dumps(obj)


def clone(obj: Any) -> Any:
    """A deep copy of a JSON value; a serialisation round trip beats copy.deepcopy several times over."""
    return orjson.loads(orjson.dumps(obj))


def decode(value: bytes, revision: int) -> dict[str, Any]:
    try:
        obj: dict[str, Any] = orjson.loads(value)
    except orjson.JSONDecodeError:
        # encrypted values read without their EncryptionConfiguration fail as kube's identity provider does
        err = encryption.unreadable(value)
        if err is None:
            raise
        raise err from None
    meta = obj.setdefault("metadata", {})
    meta["resourceVersion"] = str(revision)
    return obj


class DecodeCache:
    """Decoded store values shared by readers that never modify them: each write is decoded once, not once
    per watcher, and a create's response object is the one its watchers get.

    Watchers only read these objects (shaping builds new dicts), so sharing is safe."""

    def __init__(self, size: int = 4096) -> None:
        # Each entry is [decoded object, its watch line once a watcher sent it unchanged (or None), the
        # stored bytes]: the JSON is encoded once for all such watchers, and leaves the cache with its object.
        self._items: collections.OrderedDict[tuple[int, str, bool], list[Any]] = collections.OrderedDict()
        self._size = size

    def _add(self, key: tuple[int, str, bool], value: bytes, obj: dict[str, Any]) -> list[Any]:
        hit = [obj, None, value]
        self._items[key] = hit
        if len(self._items) > self._size:
            self._items.popitem(last=False)
        return hit

    def get(self, ev: Any, *, prev: bool = False) -> dict[str, Any]:
        """The decoded new (or, with prev, old) value of a store event."""
        key = (ev.revision, ev.key, prev)
        hit = self._items.get(key)
        value = ev.prev_value if prev else ev.value
        if hit is not None and hit[2] is not value and hit[2] != value:
            hit = None  # the same key and revision in another store of this process
        if hit is None and prev:
            # The old value is usually the new value of this key's previous event, decoded then. Only
            # selectors read old values, and none looks at metadata.resourceVersion (its revision).
            older = self._items.get((ev.prev_revision, ev.key, False))
            if older is not None and older[2] == ev.prev_value:
                hit = older
        if hit is None:
            hit = self._add(key, value, decode(value, ev.revision))
        obj: dict[str, Any] = hit[0]
        return obj

    def entry(self, entry: store_base.Entry) -> dict[str, Any]:
        """The decoded value of a store entry just written: what its watch event's get() returns."""
        key = (entry.mod_revision, entry.key, False)
        hit = self._items.get(key)
        # Revisions name one write within a store; the bytes tell two stores of one process apart.
        if hit is None or (hit[2] is not entry.value and hit[2] != entry.value):
            hit = self._add(key, entry.value, decode(entry.value, entry.mod_revision))
        obj: dict[str, Any] = hit[0]
        return obj

    def adopt(self, entry: store_base.Entry, obj: dict[str, Any]) -> None:
        """Take obj as the decoded value of an entry just written, unless a reader has decoded it already."""
        key = (entry.mod_revision, entry.key, False)
        hit = self._items.get(key)
        if hit is None or (hit[2] is not entry.value and hit[2] != entry.value):
            self._add(key, entry.value, obj)

    def event(self, ev: Any, kind: str, obj: dict[str, Any]) -> bytes:
        """The watch line of `kind` for obj, the decoded new value of ev: {"type": kind, "object": obj}."""
        hit = self._items.get((ev.revision, ev.key, False))
        if hit is None or hit[0] is not obj:
            return orjson.dumps({"type": kind, "object": obj}) + b"\n"
        head = _LINE_HEADS.get(kind) or _line_head(kind)
        line: bytes | None = hit[1]
        # The whole line is kept: the watchers of a write that see it unchanged mostly see it as the same
        # kind, and share its bytes; another kind reuses the object's JSON from it.
        if line is None:
            line = hit[1] = b"".join((head, orjson.dumps(obj), b"}\n"))
        elif not line.startswith(head):
            body = line[line.index(b'"object":') + 9:-2]
            line = hit[1] = b"".join((head, body, b"}\n"))
        return line


def _line_head(kind: str) -> bytes:
    return b'{"type":"' + kind.encode() + b'","object":'


_LINE_HEADS = {kind: _line_head(kind) for kind in ("ADDED", "MODIFIED", "DELETED")}

# The process's one cache: watchers of every store and resource share it.
DECODED = DecodeCache()


class Objects:
    """CRUD of API objects over a store.Store, in the storage version of each resource."""

    def __init__(self, store: store_base.Store, converter: Any) -> None:
        self.store = store
        # converter(obj, api_version) -> obj; versions sharing storage are converted on the way
        # in and out so every version reads and writes the same objects.
        self._convert = converter
        # key -> (revision, apiVersion, object): a key's revision names its content, so admission's
        # lookups of one namespace, ServiceAccount or PriorityClass for every pod share one decode.
        self._shared: dict[str, tuple[int, str, dict[str, Any]]] = {}

    def to_storage(self, res: resources.Resource, obj: dict[str, Any]) -> dict[str, Any]:
        target = storage_api_version(res)
        if obj.get("apiVersion") != target:
            obj = self._convert(obj, target)
        return obj

    def stale(self, res: resources.Resource, obj: dict[str, Any]) -> bool:
        """True when obj was read with an encryption provider or key other than the first: an update must
        rewrite it even when nothing changed (key rotation by `kubectl replace`)."""
        check = getattr(self.store, "is_stale", None)
        if check is None:
            return False
        meta = obj.get("metadata") or {}
        rv = meta.get("resourceVersion") or ""
        return rv.isdigit() and bool(check(key(res, meta.get("namespace", ""), meta.get("name", "")), int(rv)))

    def from_storage(self, res: resources.Resource, obj: dict[str, Any]) -> dict[str, Any]:
        if obj.get("apiVersion") != res.api_version:
            rv = obj.get("metadata", {}).get("resourceVersion")
            obj = self._convert(obj, res.api_version)
            if res.crd:
                obj["apiVersion"] = res.api_version
            if rv is not None:
                obj.setdefault("metadata", {})["resourceVersion"] = rv
        return obj

    async def get(self, res: resources.Resource, namespace: str, name: str, *,
                  revision: int = 0) -> dict[str, Any]:
        entry = await self.store.get(key(res, namespace, name), revision=revision)
        if entry is None:
            raise errors.NotFound.for_object(res.resource, res.group, name)
        return self.from_storage(res, decode(entry.value, entry.mod_revision))

    async def get_or_none(self, res: resources.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        entry = await self.store.get(key(res, namespace, name))
        if entry is None:
            return None
        return self.from_storage(res, decode(entry.value, entry.mod_revision))

    async def get_shared(self, res: resources.Resource, namespace: str, name: str) -> dict[str, Any] | None:
        """get_or_none for readers that never modify the result (it may be handed to the next reader)."""
        entry = await self.store.get(key(res, namespace, name))
        if entry is None:
            return None
        return self.shared(res, entry)

    def shared(self, res: resources.Resource, entry: store_base.Entry) -> dict[str, Any]:
        """The object of a store entry in res's version, shared between readers: never modify it."""
        hit = self._shared.get(entry.key)
        if hit is not None and hit[0] == entry.mod_revision and hit[1] == res.api_version:
            return hit[2]
        obj = self.from_storage(res, decode(entry.value, entry.mod_revision))
        if len(self._shared) >= _SHARED_MAX:
            self._shared.clear()
        self._shared[entry.key] = (entry.mod_revision, res.api_version, obj)
        return obj

    async def create(self, res: resources.Resource, obj: dict[str, Any], *, shared: bool = False) -> dict[str, Any]:
        """Store a new object; the result is the stored object as read back.

        shared=True for callers that never modify the result (a create's response): it is then the object
        its watchers are handed too (DECODED), decoded once for all of them."""
        meta = obj["metadata"]
        stored = canonical(self.to_storage(res, obj))
        try:
            entry = await self.store.create(key(res, meta.get("namespace", ""), meta["name"]), encode(stored))
        except store_base.KeyExists:
            raise errors.AlreadyExists.for_object(res.resource, res.group, meta["name"]) from None
        if shared and stored.get("apiVersion") == res.api_version:
            # Stored in the version asked for: from_storage would return the decoded object unchanged.
            return DECODED.entry(entry)
        return self.from_storage(res, decode(entry.value, entry.mod_revision))

    async def update(self, res: resources.Resource, obj: dict[str, Any], *, expected_revision: int) -> dict[str, Any]:
        entry = await self.write(res, obj, expected_revision=expected_revision)
        return self.from_storage(res, decode(entry.value, entry.mod_revision))

    async def write(self, res: resources.Resource, obj: dict[str, Any], *,
                    expected_revision: int, shared: bool = False) -> store_base.Entry:
        """update without reading the result back: for writers that only need to know it was stored.

        shared=True when obj holds only JSON values (say, a decoded object changed in place) and the caller
        never touches it again: the stored object then serves this write's watchers (DECODED) undecoded."""
        meta = obj["metadata"]
        stored = canonical(self.to_storage(res, obj))
        try:
            entry = await self.store.update(key(res, meta.get("namespace", ""), meta["name"]), encode(stored),
                                            expected_revision=expected_revision)
        except store_base.RevisionMismatch:
            raise errors.Conflict.modified(res.resource, res.group, meta["name"]) from None
        except store_base.KeyNotFound:
            raise errors.NotFound.for_object(res.resource, res.group, meta["name"]) from None
        if shared and stored.get("apiVersion") == res.api_version:
            # What decode(entry.value) would give: canonical() built new top and metadata dicts, and the
            # resourceVersion goes where decode puts it (its key's place, or last).
            stored["metadata"]["resourceVersion"] = str(entry.mod_revision)
            DECODED.adopt(entry, stored)
        return entry

    async def delete(self, res: resources.Resource, namespace: str, name: str, *,
                     expected_revision: int) -> dict[str, Any]:
        try:
            entry = await self.store.delete(key(res, namespace, name), expected_revision=expected_revision)
        except store_base.RevisionMismatch:
            raise errors.Conflict.modified(res.resource, res.group, name) from None
        except store_base.KeyNotFound:
            raise errors.NotFound.for_object(res.resource, res.group, name) from None
        return self.from_storage(res, decode(entry.value, entry.mod_revision))
