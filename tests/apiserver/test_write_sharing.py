"""Writes whose result is only read hand one decoded object to the response and to every watcher of the write."""

from __future__ import annotations

import os
import uuid
from typing import Any

import orjson
import pytest

from pocketkube.api import conversion, errors, resources
from pocketkube.apiserver import negotiate, objects, strategy, watch

REG = resources.Registry.builtin()


def _res(group: str, version: str, resource: str) -> resources.Resource:
    res = REG.get(group, version, resource)
    assert res is not None
    return res


def _pod(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "ns", "labels": {"app": "a"}, "uid": "u1"},
            "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}],
                     "priority": 0, "tolerations": []},
            "status": {"phase": "Pending", "qosClass": "BestEffort"}}


async def test_shared_create_is_the_watchers_object(store: Any) -> None:
    """A shared create returns what an unshared one does, and its watch event hands out that same object."""
    objs = objects.Objects(store, conversion.convert)
    pods = _res("", "v1", "pods")
    watcher = store.watch(objects.list_prefix(pods, "ns"), after_revision=store.current_revision())
    shared = await objs.create(pods, _pod("a"), shared=True)
    plain = await objs.create(pods, _pod("b"))
    assert orjson.dumps(shared) == orjson.dumps(plain).replace(b'"b"', b'"a"').replace(
        plain["metadata"]["resourceVersion"].encode(), shared["metadata"]["resourceVersion"].encode())
    batch = await watcher.__anext__()
    watcher.close()
    assert watch._decoded.get(batch[0]) is shared
    assert watch._decoded.event(batch[0], "ADDED", shared) == watch._event("ADDED", objects.decode(
        batch[0].value, batch[0].revision))


async def test_shared_create_of_a_converted_version_is_decoded_apart(store: Any) -> None:
    """A create stored in another version (events.k8s.io Events are core Events) is converted, not shared."""
    objs = objects.Objects(store, conversion.convert)
    new = _res("events.k8s.io", "v1", "events")
    created = await objs.create(new, {"apiVersion": "events.k8s.io/v1", "kind": "Event",
                                      "metadata": {"name": "e", "namespace": "ns"}, "note": "hi",
                                      "regarding": {"kind": "Pod", "name": "p", "namespace": "ns"}}, shared=True)
    assert created["apiVersion"] == "events.k8s.io/v1" and created["note"] == "hi"
    entry = await store.get(objects.key(new, "ns", "e"))
    assert objects.DECODED.entry(entry) is not created


@pytest.mark.parametrize("rv_in_object", [True, False], ids=["with-resourceVersion", "without"])
async def test_shared_write_adopts_exactly_what_decoding_gives(store: Any, rv_in_object: bool) -> None:
    """A shared write's adopted object has the decoded object's keys, order and bytes, resourceVersion included."""
    objs = objects.Objects(store, conversion.convert)
    pods = _res("", "v1", "pods")
    created = await objs.create(pods, _pod("w"))
    pod = objects.clone(created)
    if not rv_in_object:
        del pod["metadata"]["resourceVersion"]
    pod["spec"]["nodeName"] = "n1"
    watcher = store.watch(objects.list_prefix(pods, "ns"), after_revision=store.current_revision())
    entry = await objs.write(pods, pod, expected_revision=int(created["metadata"]["resourceVersion"]), shared=True)
    batch = await watcher.__anext__()
    watcher.close()
    adopted = watch._decoded.get(batch[0])
    decoded = objects.decode(entry.value, entry.mod_revision)
    assert orjson.dumps(adopted) == orjson.dumps(decoded)
    assert list(adopted["metadata"]) == list(decoded["metadata"])
    assert adopted["metadata"]["resourceVersion"] == str(entry.mod_revision)


async def test_unshared_write_leaves_decoding_to_the_watchers(store: Any) -> None:
    """Without shared, a write adopts nothing: its watchers decode the stored bytes themselves."""
    objs = objects.Objects(store, conversion.convert)
    pods = _res("", "v1", "pods")
    created = await objs.create(pods, _pod("u"))
    pod = objects.clone(created)
    entry = await objs.write(pods, pod, expected_revision=int(created["metadata"]["resourceVersion"]))
    assert objects.DECODED.entry(entry) is not pod
    with pytest.raises(errors.Conflict):
        await objs.write(pods, pod, expected_revision=1, shared=True)


def test_lines_of_other_kinds_reuse_the_encoding() -> None:
    """Asking for one write's line as ADDED, MODIFIED, DELETED and back gives each kind's exact line."""
    cache = objects.DecodeCache()
    value = orjson.dumps(_pod("k"))
    ev = watch.store_base.Event(type="PUT", key="/k/k", value=value, prev_value=None, revision=9,
                                create_revision=9, created=True)
    obj = cache.get(ev)
    for kind in ("ADDED", "MODIFIED", "DELETED", "ADDED", "BOOKMARK", "MODIFIED"):
        assert cache.event(ev, kind, obj) == watch._event(kind, obj)


@pytest.mark.parametrize("raw", [b"\x00" * 16, b"\xff" * 16, bytes(range(16)), bytes(range(240, 256))])
def test_new_uid_is_uuid4_text_of_the_same_bytes(raw: bytes, monkeypatch: pytest.MonkeyPatch) -> None:
    """new_uid formats 16 OS random bytes exactly as str(uuid.UUID(bytes=..., version=4)) does."""
    monkeypatch.setattr(os, "urandom", lambda n: raw[:n])
    assert strategy.new_uid() == str(uuid.UUID(bytes=raw, version=4))


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b"1" + b"}" * (depth - 1)


@pytest.mark.parametrize(("raw", "ok"), [
    (_nested(negotiate.MAX_DEPTH), True),
    (_nested(negotiate.MAX_DEPTH + 1), False),
    (b"[" * 100 + b"]" * 100, True),
    (b"[" * 101 + b"]" * 101, False),
    (b'{"s":"' + b"{[" * 200 + b'"}', True),          # brackets inside strings are no nesting
    (b'{"l":[' + b"{}," * 300 + b"{}]}", True),        # many shallow containers
])
def test_depth_limit_with_and_without_the_walk(raw: bytes, ok: bool) -> None:
    """Bodies nested past MAX_DEPTH are refused whatever their bracket count; shallow ones pass."""
    if ok:
        assert negotiate.parse_json(raw) == orjson.loads(raw)
    else:
        with pytest.raises(errors.BadRequest, match="max depth exceeded"):
            negotiate.parse_json(raw)
