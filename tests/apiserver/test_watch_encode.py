"""Watch lines encoded once per event for all watchers are byte-identical to encoding per watcher."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pocketkube.apiserver import watch
from pocketkube.store import base

OBJECTS: list[dict[str, Any]] = [
    {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": "p", "resourceVersion": ""}, "spec": {}},
    {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "c", "resourceVersion": ""},
     "data": {"k": "ünïcødé <&> \u2028 \"quoted\" \\ \n", "n": "1e400", "f": "0.1"}},
    {"kind": "Thing", "apiVersion": "x/v1", "metadata": {"name": "t"}, "spec": {"a": [1, 2.5, True, None, {}]}},
]


@pytest.mark.parametrize("obj", OBJECTS, ids=["pod", "escapes", "numbers"])
@pytest.mark.parametrize("kind", ["ADDED", "MODIFIED", "DELETED"])
def test_cached_line_equals_a_fresh_encoding(obj: dict[str, Any], kind: str) -> None:
    """The shared line equals _event's for the same decoded object, on first use and on reuse."""
    cache = watch._DecodeCache()
    ev = base.Event(type="PUT", key="/k/" + obj["metadata"]["name"], value=orjson.dumps(obj), prev_value=None,
                    revision=7, create_revision=7, created=True)
    decoded = cache.get(ev)
    first = cache.event(ev, kind, decoded)
    assert first == watch._event(kind, decoded)
    assert cache.event(ev, kind, decoded) == first


def test_another_object_is_encoded_as_is() -> None:
    """An object that is not the cached decoding of the event (say, converted) is encoded itself."""
    cache = watch._DecodeCache()
    ev = base.Event(type="PUT", key="/k/p", value=orjson.dumps(OBJECTS[0]), prev_value=None, revision=3,
                    create_revision=3, created=True)
    cache.get(ev)
    other = {"kind": "Pod", "apiVersion": "v2", "metadata": {"name": "p"}}
    assert cache.event(ev, "ADDED", other) == watch._event("ADDED", other)


def test_old_value_reuses_the_previous_events_decoding() -> None:
    """An update's old value is the object its previous event decoded, when the stored bytes are the same."""
    cache = watch._DecodeCache()
    first = orjson.dumps(OBJECTS[0])
    created = base.Event(type="PUT", key="/k/p", value=first, prev_value=None, revision=3, create_revision=3,
                         created=True)
    updated = base.Event(type="PUT", key="/k/p", value=b'{"metadata":{}}', prev_value=bytes(first), revision=5,
                         create_revision=3, created=False, prev_revision=3)
    decoded = cache.get(created)
    assert cache.get(updated, prev=True) is decoded
    other = base.Event(type="PUT", key="/k/p", value=b"{}", prev_value=b'{"metadata":{"name":"x"}}', revision=6,
                       create_revision=3, created=False, prev_revision=3)
    old = cache.get(other, prev=True)
    assert old is not decoded and old["metadata"] == {"name": "x", "resourceVersion": "6"}
