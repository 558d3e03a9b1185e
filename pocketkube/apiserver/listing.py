"""The list verb: selectors, limit/continue pagination and resourceVersion semantics."""

from __future__ import annotations

import base64
from typing import Any

import orjson

from pocketkube.api import errors
from pocketkube.apiserver import context, filters, objects, render
from pocketkube.base import gcpolicy
from pocketkube.store import base as store_base

_CONTINUE_EXPIRED = (
    "The provided continue parameter is too old to display a consistent list result. You can start a new "
    "list without the continue parameter, or use the continue token in this response to retrieve the "
    "remainder of the results. Continuing with the provided token results in an inconsistent list - "
    "objects that were created, modified, or deleted between the time the first chunk was returned and "
    "now may show up in the list.")


# Entries a filtered page reads from the store at a time.
_FILTERED_BATCH = 5000


def encode_continue(revision: int, start: str) -> str:
    body = orjson.dumps({"v": "meta.k8s.io/v1", "rv": revision, "start": start + "\x00"})
    return base64.urlsafe_b64encode(body).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        data = orjson.loads(base64.urlsafe_b64decode(padded.encode()))
        if data.get("v") != "meta.k8s.io/v1":
            raise ValueError
        rv = int(data["rv"])
        start = str(data["start"])
    except Exception:
        raise errors.BadRequest("continue key is not valid: incorrect encoded start resourceVersion "
                                "(version meta.k8s.io/v1)") from None
    if start.endswith("\x00"):
        start = start[:-1]
    if "/" in start.strip("/") and ".." in start:
        raise errors.BadRequest("continue key is not valid: key path traversal")
    return rv, start


def parse_revision(rv: str) -> int:
    try:
        value = int(rv)
    except ValueError:
        raise errors.BadRequest(f"invalid resource version: {rv}") from None
    if value < 0:
        raise errors.BadRequest(f"invalid resource version: {rv}")
    return value


async def list_objects(server: context.Server, call: context.Call, *, limit_override: int | None = None
                       ) -> tuple[list[dict[str, Any]], int, str, int | None]:
    """Return (objects, revision, continue token, remaining count) for this call's query."""
    res = call.res
    predicate = filters.build(res, call.param("labelSelector"), call.param("fieldSelector"))
    limit = call.int_param("limit") if limit_override is None else limit_override
    if limit is not None and limit < 0:
        limit = 0
    token = call.param("continue")
    rv = call.param("resourceVersion")
    match = call.param("resourceVersionMatch")
    if match and match not in ("Exact", "NotOlderThan"):
        raise errors.BadRequest(f'resourceVersionMatch: Unsupported value: "{match}": supported values: "Exact", "NotOlderThan"')
    if match and not rv:
        raise errors.Invalid(kind="ListOptions", group="meta.k8s.io", name="", causes=[
            errors.forbidden("resourceVersionMatch", "resourceVersionMatch is forbidden unless resourceVersion is provided")])
    if token and rv and rv != "0":
        raise errors.Invalid(kind="ListOptions", group="meta.k8s.io", name="", causes=[
            errors.forbidden("resourceVersion", "specifying resource version is not allowed when using continue")])

    prefix = objects.list_prefix(res, call.namespace)
    revision = 0
    start_after = ""
    if token:
        revision, start = decode_continue(token)
        start_after = prefix + start
    elif rv and rv != "0":
        wanted = parse_revision(rv)
        current = server.store.current_revision()
        if wanted > current:
            raise errors.Timeout(f"Too large resource version: {wanted}, current: {current}")
        if match == "Exact":
            revision = wanted
    items: list[dict[str, Any]] = []
    last_key = ""
    cont = ""
    remaining = None
    # A kubelet's `spec.nodeName=NODE` list wants a few pods of thousands: skip, undecoded, every pod
    # whose stored JSON cannot name the node (kube serves these lists from its watch cache's index).
    needle = filters.node_needle(filters.pinned_node(res, call.param("fieldSelector")))
    # A page reads no more than it may return (plus one, to know whether more follow): reading everything
    # after the continue key made each of kubectl's 500-item chunks cost the whole rest of the list. Filtered
    # lists read bigger batches, as most of what they read is skipped.
    batch = 0 if not limit else limit + 1 if predicate is None and needle is None else max(limit + 1, _FILTERED_BATCH)
    while True:
        try:
            result = await server.store.list(prefix, revision=revision, start_after=start_after, limit=batch)
        except store_base.Compacted:
            if token:
                raise errors.Gone(_CONTINUE_EXPIRED) from None
            raise errors.Gone(f"too old resource version: {revision} ({server.store.compacted_revision()})") from None
        # Every further batch reads the snapshot the first one did.
        revision = result.revision
        entries = result.entries
        consumed = 0
        # Decoding makes only live, acyclic objects: no cyclic collection in between (see gcpolicy.paused).
        with gcpolicy.paused():
            for entry in entries:
                if limit and len(items) >= limit:
                    break
                consumed += 1
                if res.namespaced and not call.namespace and entry.key.count("/") != prefix.count("/") + 1:
                    continue
                if needle is not None and needle not in entry.value and entry.value.startswith(b"{"):
                    last_key = entry.key
                    continue
                obj = res_obj = objects.decode(entry.value, entry.mod_revision)
                if predicate is not None and not predicate(res_obj):
                    last_key = entry.key
                    continue
                items.append(server.objects.from_storage(res, obj))
                last_key = entry.key
        left = len(entries) - consumed + (result.remaining if result.more else 0)
        if limit and len(items) >= limit:
            if left:
                # another page exists only if something after the cut could still match
                cont = encode_continue(result.revision, last_key[len(prefix):])
                if predicate is None:
                    remaining = left
            break
        if not result.more or not entries:
            break
        start_after = entries[-1].key
    return items, revision, cont, remaining


async def handle(server: context.Server, call: context.Call) -> tuple[Any, int]:
    items, revision, cont, remaining = await list_objects(server, call)
    return render.list_body(server, call, items, resource_version=str(revision), continue_token=cont,
                            remaining=remaining), 200
