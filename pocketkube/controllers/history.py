"""ControllerRevision history shared by StatefulSets and DaemonSets: template patches, hashes, numbering, cleanup."""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterable
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.client import rest
from pocketkube.controllers import ownerrefs, podutil

CONTROLLER_REVISIONS = rest.GVR("apps", "v1", "controllerrevisions")
# apps.ControllerRevisionHashLabelKey: on revisions (the hash) and on the pods made from them.
HASH_LABEL = "controller-revision-hash"
# rand.SafeEncodeString's alphabet: no vowels (no words) and no look-alikes (0/o, 1/l).
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# ControllerRevisionName keeps the prefix short enough for a 253-character object name.
_MAX_PREFIX = 223
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193
_GO_HTML_ESCAPES = (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                    ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


meta = podutil.meta


# --- hashing ----------------------------------------------------------------------------


def fnv32(data: bytes) -> int:
    """hash/fnv New32 (FNV-1): multiply, then xor."""
    h = _FNV_OFFSET
    for b in data:
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
        h ^= b
    return h


def fnv32a(data: bytes) -> int:
    """hash/fnv New32a (FNV-1a): xor, then multiply."""
    h = _FNV_OFFSET
    for b in data:
        h ^= b
        h = (h * _FNV_PRIME) & 0xFFFFFFFF
    return h


def safe_encode(s: str) -> str:
    """rand.SafeEncodeString: each byte mapped onto an alphabet that cannot spell words."""
    return "".join(SAFE_ALPHABET[b % len(SAFE_ALPHABET)] for b in s.encode())


def go_json(value: Any) -> bytes:
    """json.Marshal of a decoded map: sorted keys, no spaces, HTML-safe escapes as Go writes them."""
    text = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    for raw, esc in _GO_HTML_ESCAPES:
        text = text.replace(raw, esc)
    return text.encode()


def _go_encoded_template(template: dict[str, Any]) -> dict[str, Any]:
    # The Go types always write these struct fields, so a patch made by kube carries them.
    out = copy.deepcopy(template)
    tmeta = out.setdefault("metadata", {})
    if isinstance(tmeta, dict):
        tmeta.setdefault("creationTimestamp", None)
    spec = out.get("spec")
    if isinstance(spec, dict):
        for key in ("initContainers", "containers"):
            for c in spec.get(key) or []:
                if isinstance(c, dict):
                    c.setdefault("resources", {})
    return out


def template_patch(obj: dict[str, Any]) -> dict[str, Any]:
    """getPatch: a strategic merge patch that replaces spec.template with the owner's current one."""
    template = _go_encoded_template((obj.get("spec") or {}).get("template") or {})
    template["$patch"] = "replace"
    return {"spec": {"template": template}}


def hash_revision(data: dict[str, Any], collision_count: int | None) -> str:
    """history.HashControllerRevision: FNV-1 of the patch bytes and the collision count, safe-encoded."""
    raw = go_json(data)
    if collision_count is not None:
        raw += str(collision_count).encode()
    return safe_encode(str(fnv32(raw)))


def compute_hash(template: dict[str, Any], collision_count: int | None) -> str:
    """controller.ComputeHash: FNV-1a of the pod template and the collision count, safe-encoded.

    kube hashes the Go struct's printed form; we hash its JSON, so values differ from a real
    cluster's while keeping every property that matters (stable, collision count perturbs it).
    """
    raw = go_json(template)
    if collision_count is not None:
        raw += str(collision_count).encode()
    return safe_encode(str(fnv32a(raw)))


def revision_name(prefix: str, hash_: str) -> str:
    """ControllerRevisionName: "<parent>-<hash>" with the parent name cut to fit."""
    return f"{prefix[:_MAX_PREFIX]}-{hash_}"


# --- revisions --------------------------------------------------------------------------


controller_ref = ownerrefs.controller_ref


def new_revision(parent: dict[str, Any], data: dict[str, Any], revision: int, *,
                 collision_count: int | None, hash_: str | None = None) -> dict[str, Any]:
    """A ControllerRevision body: template labels plus the hash label, the parent's annotations, owner ref."""
    spec = parent.get("spec") or {}
    labels = dict(((spec.get("template") or {}).get("metadata") or {}).get("labels") or {})
    h = hash_ if hash_ is not None else hash_revision(data, collision_count)
    labels[HASH_LABEL] = h
    body: dict[str, Any] = {
        "apiVersion": "apps/v1", "kind": "ControllerRevision",
        "metadata": {"name": revision_name(meta(parent).get("name") or "", h),
                     "namespace": meta(parent).get("namespace") or "",
                     "labels": labels, "ownerReferences": [controller_ref(parent)]},
        "data": data, "revision": int(revision)}
    annotations = meta(parent).get("annotations")
    if annotations:
        body["metadata"]["annotations"] = dict(annotations)
    return body


def revision_number(rev: dict[str, Any]) -> int:
    try:
        return int(rev.get("revision") or 0)
    except (TypeError, ValueError):
        return 0


def _cmp(a: dict[str, Any], b: dict[str, Any]) -> int:
    ra, rb = revision_number(a), revision_number(b)
    if ra != rb:
        return -1 if ra < rb else 1
    ta, tb = meta(a).get("creationTimestamp") or "", meta(b).get("creationTimestamp") or ""
    if ta != tb:
        return -1 if ta < tb else 1
    na, nb = meta(a).get("name") or "", meta(b).get("name") or ""
    return (na > nb) - (na < nb)


def sort_revisions(revisions: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """SortControllerRevisions: by revision number, then creation time, then name."""
    return sorted(revisions, key=functools.cmp_to_key(_cmp))


def next_revision(revisions: list[dict[str, Any]]) -> int:
    """One more than the highest revision number (1 for an empty history)."""
    return max((revision_number(r) for r in revisions), default=0) + 1


def equal_revision(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    """EqualRevision: the same stored patch."""
    if a is None or b is None:
        return a is b
    return (a.get("data") or {}) == (b.get("data") or {})


def find_equal(revisions: list[dict[str, Any]], needle: dict[str, Any]) -> list[dict[str, Any]]:
    """FindEqualRevisions: every revision whose patch equals needle's, in the given order."""
    return [r for r in revisions if equal_revision(r, needle)]


def owned_by(revisions: Iterable[dict[str, Any]], uid: str) -> list[dict[str, Any]]:
    return [r for r in revisions
            if any(isinstance(ref, dict) and ref.get("controller") and ref.get("uid") == uid
                   for ref in meta(r).get("ownerReferences") or [])]


def stale_by_limit(history: list[dict[str, Any]], live: set[str], limit: int) -> list[dict[str, Any]]:
    """StatefulSet truncateHistory: the oldest non-live revisions past the history limit (by name)."""
    dead = [r for r in sort_revisions(history) if meta(r).get("name") not in live]
    excess = len(dead) - max(0, limit)
    return dead[:excess] if excess > 0 else []


def stale_by_hash(old: list[dict[str, Any]], live_hashes: set[str], limit: int) -> list[dict[str, Any]]:
    """DaemonSet cleanupHistory: oldest old revisions past the limit whose hash no pod carries."""
    to_kill = len(old) - max(0, limit)
    out: list[dict[str, Any]] = []
    for rev in sort_revisions(old):
        if to_kill <= 0:
            break
        if (meta(rev).get("labels") or {}).get(HASH_LABEL) in live_hashes:
            continue
        out.append(rev)
        to_kill -= 1
    return out


# --- writing ----------------------------------------------------------------------------


async def create_revision(client: rest.Client, parent: dict[str, Any], revision: dict[str, Any],
                          collision_count: int) -> tuple[dict[str, Any], int]:
    """CreateControllerRevision: create, bumping the collision count while a different patch holds the name.

    Returns the stored revision and the collision count that was finally used.
    """
    ns = meta(parent).get("namespace") or ""
    count = collision_count
    for _ in range(100):
        body = copy.deepcopy(revision)
        body["metadata"]["name"] = revision_name(meta(parent).get("name") or "",
                                                 hash_revision(revision.get("data") or {}, count))
        try:
            return await client.create(CONTROLLER_REVISIONS, body, namespace=ns), count
        except errors.AlreadyExists:
            existing = await client.get(CONTROLLER_REVISIONS.path(ns, body["metadata"]["name"]))
            if (existing.get("data") or {}) == (body.get("data") or {}):
                return existing, count
            count += 1
    raise errors.Conflict(f"could not find a free revision name for {meta(parent).get('name')}")


async def set_revision_number(client: rest.Client, rev: dict[str, Any], number: int) -> dict[str, Any]:
    """UpdateControllerRevision: renumber a revision (a rollback to an older template)."""
    if revision_number(rev) == number:
        return rev
    body = copy.deepcopy(rev)
    body["revision"] = int(number)
    return await client.update(CONTROLLER_REVISIONS, body)


async def delete_revision(client: rest.Client, rev: dict[str, Any]) -> None:
    m = meta(rev)
    try:
        await client.delete(CONTROLLER_REVISIONS.path(m.get("namespace") or "", m.get("name") or ""))
    except errors.NotFound:
        pass


# --- rollout arithmetic shared by both controllers ---------------------------------------


def scaled_value(value: Any, total: int, *, round_up: bool) -> int:
    """intstr.GetScaledValueFromIntOrPercent: an int as is, "N%" of total rounded as asked."""
    if isinstance(value, bool):
        raise ValueError(f"invalid value for IntOrString: {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.endswith("%"):
        try:
            pct = int(value[:-1])
        except ValueError:
            raise ValueError(f"invalid value for IntOrString: invalid value {value!r}") from None
        num = pct * total
        return -(-num // 100) if round_up else num // 100
    raise ValueError(f"invalid value for IntOrString: invalid type: string is not a percentage: {value!r}")
