"""Specification of the decoded-JSON helpers shared by the patch modules."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import errors, jsonvalue


@pytest.mark.parametrize(("a", "b", "equal"), [
    (1, 1, True),
    (1, 1.0, False),
    (True, 1, False),
    (None, None, True),
    ({"a": [1, "x"]}, {"a": [1, "x"]}, True),
    ({"a": 1}, {"a": 1, "b": None}, False),
    ([1, 2], [2, 1], False),
    ([{"a": 1.0}], [{"a": 1}], False),
])
def test_go_equal(a: Any, b: Any, equal: bool) -> None:
    """Equality follows Go's == on interface{} values: the dynamic types must match too."""
    assert jsonvalue.go_equal(a, b) is equal


def test_deep_copy_shares_nothing() -> None:
    """A deep copy is equal to its source but shares no dict or list with it."""
    src = {"a": [{"b": 1}], "c": "x"}
    dup = jsonvalue.deep_copy(src)
    assert dup == src
    dup["a"][0]["b"] = 2
    assert src["a"][0]["b"] == 1


@pytest.mark.parametrize(("value", "name"), [
    ({}, "object"), ([], "array"), ("s", "string"), (True, "bool"), (1, "number"), (1.5, "number"), (None, "null"),
])
def test_json_type(value: Any, name: str) -> None:
    """Type names are the ones Go's decoder uses in "cannot unmarshal X" messages."""
    assert jsonvalue.json_type(value) == name


@pytest.mark.parametrize(("body", "message"), [
    (b"{", "unexpected end of JSON input"),
    (b'{"a":1}x', "invalid character 'x' after top-level value"),
    (b"{'a':1}", "invalid character '\\'' looking for beginning of object key string"),
    (b'{"a" 1}', "invalid character '1' after object key"),
    (b'{"a":1 "b":2}', "invalid character '\"' after object key:value pair"),
    (b"[1 2]", "invalid character '2' after array element"),
    (b"\xff", "invalid character in JSON input: not UTF-8"),
])
def test_decode_json_errors(body: bytes, message: str) -> None:
    """A malformed body is a 400 worded as Go's encoding/json words the same mistake."""
    with pytest.raises(errors.BadRequest) as e:
        jsonvalue.decode_json(body)
    assert e.value.message == message


def test_decode_json_accepts_str_and_bytes() -> None:
    """Both bytes and str bodies decode to the same value."""
    assert jsonvalue.decode_json(b'{"a":[1]}') == jsonvalue.decode_json('{"a":[1]}') == {"a": [1]}
