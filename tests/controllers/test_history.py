"""Specification of ControllerRevision helpers: hashes, names, numbering, equality and history limits."""

from __future__ import annotations

import pytest

from pocketkube.controllers import history


def rev(name: str, number: int, *, data: dict | None = None, hash_: str | None = None,
        created: str = "2026-01-01T00:00:00Z") -> dict:
    labels = {history.HASH_LABEL: hash_} if hash_ else {}
    return {"metadata": {"name": name, "labels": labels, "creationTimestamp": created},
            "revision": number, "data": data or {"n": name}}


@pytest.mark.parametrize(("data", "expected"), [
    (b"", 0x811C9DC5),
    (b"a", 0x050C5D7E),
    (b"foobar", 0x31F0B262),
])
def test_fnv32_matches_go_hash_fnv_new32(data: bytes, expected: int) -> None:
    """FNV-1 (multiply, then xor) gives Go's hash/fnv New32 values."""
    assert history.fnv32(data) == expected


@pytest.mark.parametrize(("data", "expected"), [
    (b"", 0x811C9DC5),
    (b"a", 0xE40C292C),
    (b"foobar", 0xBF9CF968),
])
def test_fnv32a_matches_go_hash_fnv_new32a(data: bytes, expected: int) -> None:
    """FNV-1a (xor, then multiply) gives Go's hash/fnv New32a values."""
    assert history.fnv32a(data) == expected


@pytest.mark.parametrize(("raw", "expected"), [
    ("0", "4"), ("123", "567"), ("4294967295", "86f8fbc6f9"),
])
def test_safe_encode_maps_bytes_onto_the_wordless_alphabet(raw: str, expected: str) -> None:
    """SafeEncodeString indexes the 27-letter alphabet by each byte modulo 27."""
    assert history.safe_encode(raw) == expected


def test_go_json_sorts_keys_and_escapes_html_like_go() -> None:
    """json.Marshal of a map writes sorted keys, no spaces and \\u003c-style escapes for <, > and &."""
    assert history.go_json({"b": 1, "a": "<x&y>"}) == b'{"a":"\\u003cx\\u0026y\\u003e","b":1}'


def test_template_patch_replaces_the_template_with_go_encoded_fields() -> None:
    """The revision patch replaces spec.template and carries the fields Go always writes."""
    obj = {"spec": {"replicas": 3, "template": {"metadata": {"labels": {"a": "b"}},
                                                "spec": {"containers": [{"name": "c", "image": "i"}]}}}}
    patch = history.template_patch(obj)
    assert patch == {"spec": {"template": {
        "$patch": "replace", "metadata": {"labels": {"a": "b"}, "creationTimestamp": None},
        "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}}}}
    assert "resources" not in obj["spec"]["template"]["spec"]["containers"][0]


def test_hashes_change_with_collision_count_and_are_stable() -> None:
    """The same patch always hashes alike; a collision count moves it to a new name."""
    data = {"spec": {"template": {"$patch": "replace"}}}
    assert history.hash_revision(data, 0) == history.hash_revision(data, 0)
    assert history.hash_revision(data, 0) != history.hash_revision(data, 1)
    assert history.compute_hash({"a": 1}, None) != history.compute_hash({"a": 1}, 1)
    assert set(history.hash_revision(data, None)) <= set("bcdfghjklmnpqrstvwxz2456789")


def test_revision_name_truncates_long_parents() -> None:
    """ControllerRevisionName keeps 223 characters of the parent name."""
    assert history.revision_name("web", "abc") == "web-abc"
    assert history.revision_name("x" * 300, "h") == "x" * 223 + "-h"


def test_new_revision_labels_annotations_and_owner() -> None:
    """A revision carries the template labels plus the hash, the parent's annotations and a controller ref."""
    parent = {"apiVersion": "apps/v1", "kind": "StatefulSet",
              "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "annotations": {"k": "v"}},
              "spec": {"template": {"metadata": {"labels": {"app": "web"}}}}}
    data = history.template_patch(parent)
    body = history.new_revision(parent, data, 4, collision_count=0)
    h = history.hash_revision(data, 0)
    assert body["metadata"]["name"] == f"web-{h}"
    assert body["metadata"]["labels"] == {"app": "web", history.HASH_LABEL: h}
    assert body["metadata"]["annotations"] == {"k": "v"}
    assert body["metadata"]["ownerReferences"] == [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                                    "uid": "u1", "controller": True, "blockOwnerDeletion": True}]
    assert body["revision"] == 4 and body["data"] == data


def test_sorting_and_next_revision() -> None:
    """Revisions sort by number, then creation time, then name; the next number follows the highest."""
    revs = [rev("c", 2), rev("b", 1, created="2026-01-02T00:00:00Z"), rev("a", 1)]
    assert [r["metadata"]["name"] for r in history.sort_revisions(revs)] == ["a", "b", "c"]
    assert history.next_revision(revs) == 3
    assert history.next_revision([]) == 1


def test_equal_revisions_compare_patches() -> None:
    """Revisions are equal when their stored patches are."""
    a, b, c = rev("a", 1, data={"x": 1}), rev("b", 2, data={"x": 1}), rev("c", 3, data={"x": 2})
    assert history.equal_revision(a, b) and not history.equal_revision(a, c)
    assert history.find_equal([a, b, c], b) == [a, b]
    assert history.equal_revision(None, None) and not history.equal_revision(a, None)


@pytest.mark.parametrize(("limit", "live", "expected"), [
    (10, set(), []),
    (1, set(), ["r1", "r2"]),
    (0, {"r2"}, ["r1", "r3"]),
    (1, {"r1", "r3"}, []),
])
def test_statefulset_history_limit_keeps_live_revisions(limit: int, live: set, expected: list) -> None:
    """truncateHistory deletes the oldest revisions no pod or status uses, beyond the limit."""
    revs = [rev("r3", 3), rev("r1", 1), rev("r2", 2)]
    assert [r["metadata"]["name"] for r in history.stale_by_limit(revs, live, limit)] == expected


@pytest.mark.parametrize(("limit", "live", "expected"), [
    (2, set(), ["o1"]),
    (1, {"h1"}, ["o2", "o3"]),
    (0, {"h2"}, ["o1", "o3"]),
    (5, set(), []),
])
def test_daemonset_history_cleanup_skips_hashes_pods_carry(limit: int, live: set, expected: list) -> None:
    """cleanupHistory deletes old revisions oldest first, never one whose hash a pod still carries."""
    old = [rev("o3", 3, hash_="h3"), rev("o1", 1, hash_="h1"), rev("o2", 2, hash_="h2")]
    assert [r["metadata"]["name"] for r in history.stale_by_hash(old, live, limit)] == expected


@pytest.mark.parametrize(("value", "total", "up", "expected"), [
    (2, 10, True, 2), ("25%", 10, True, 3), ("25%", 10, False, 2), ("100%", 3, False, 3), ("0%", 5, True, 0),
])
def test_scaled_value_of_int_or_percent(value: object, total: int, up: bool, expected: int) -> None:
    """Percentages scale against the total, rounding up or down as asked; ints pass through."""
    assert history.scaled_value(value, total, round_up=up) == expected


@pytest.mark.parametrize("value", ["abc", "x%", True, None])
def test_scaled_value_rejects_garbage(value: object) -> None:
    """Anything but an int or "N%" is an error."""
    with pytest.raises(ValueError):
        history.scaled_value(value, 10, round_up=True)
