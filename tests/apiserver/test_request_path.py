"""The per-request steps every call meets: request IDs, path parsing, body reading and depth checks, impersonation headers."""

from __future__ import annotations

import random
import uuid
from typing import Any

import pytest
from aiohttp import streams, test_utils
from multidict import CIMultiDict

from pocketkube.api import errors
from pocketkube.apiserver import impersonation, negotiate, requestinfo, server


@pytest.mark.parametrize("seed", [0, 1, 7, 12345])
def test_audit_id_is_a_random_uuid4_text(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A request ID is exactly what str(uuid.UUID(int=..., version=4)) gives for the same random bits."""
    monkeypatch.setattr(server, "_random", random.Random(seed))
    got = [server.audit_id() for _ in range(50)]
    ref = random.Random(seed)
    assert got == [str(uuid.UUID(int=ref.getrandbits(128), version=4)) for _ in range(50)]


@pytest.mark.parametrize(("method", "path", "watch", "want"), [
    ("GET", "/api/v1/namespaces/default/pods/p1", False,
     ("get", True, "", "v1", "default", "pods", "", "p1", ())),
    ("GET", "/api/v1/pods", True, ("watch", True, "", "v1", "", "pods", "", "", ())),
    ("GET", "/api/v1/pods", False, ("list", True, "", "v1", "", "pods", "", "", ())),
    ("POST", "/api/v1/namespaces/ns/pods/p1/binding", False,
     ("create", True, "", "v1", "ns", "pods", "binding", "p1", ())),
    ("DELETE", "/apis/apps/v1/namespaces/ns/deployments", False,
     ("deletecollection", True, "apps", "v1", "ns", "deployments", "", "", ())),
    ("PUT", "/api/v1/namespaces/ns/status", False, ("update", True, "", "v1", "ns", "namespaces", "status", "ns", ())),
    ("GET", "/api/v1/watch/namespaces/ns/pods/p", False, ("watch", True, "", "v1", "ns", "pods", "", "p", ())),
    ("GET", "/api/v1/namespaces/ns/pods/p/proxy/a/b", False,
     ("get", True, "", "v1", "ns", "pods", "proxy", "p", ("a", "b"))),
    ("PATCH", "//api//v1/nodes/n1/", False, ("patch", True, "", "v1", "", "nodes", "", "n1", ())),
    ("OPTIONS", "/api/v1/nodes", False, ("options", True, "", "v1", "", "nodes", "", "", ())),
    ("GET", "/healthz", False, ("get", False, "", "", "", "", "", "", ())),
    ("GET", "/apis/apps", False, ("get", False, "", "", "", "", "", "", ())),
    ("GET", "/", False, ("get", False, "", "", "", "", "", "", ())),
])
def test_parse_request_paths(method: str, path: str, watch: bool, want: tuple[Any, ...]) -> None:
    """Paths give kube's request attributes (verb from method and shape, empty segments ignored)."""
    info = requestinfo.parse(method, path, watch_param=watch)
    assert (info.verb, info.is_resource_request, info.group, info.version, info.namespace, info.resource,
            info.subresource, info.name, info.parts) == want
    assert info.path == path


def _depth_reference(value: Any, limit: int) -> bool:
    # The plain definition: every value, containers or not, at its depth.
    stack = [(value, 1)]
    while stack:
        v, d = stack.pop()
        if d > limit:
            return False
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return True


def _nest(depth: int, leaf: Any) -> Any:
    v = leaf
    for i in range(depth):
        v = {"k": v} if i % 2 else [v]
    return v


@pytest.mark.parametrize("value", [
    1, "s", None, {}, [], {"a": 1}, [1, [2, [3]]], {"a": {"b": {}}}, {"a": [], "b": {"c": [1]}},
    _nest(3, 1), _nest(3, {}), _nest(4, []), _nest(99, 1), _nest(99, {}), _nest(100, 1), _nest(100, []),
    _nest(101, 1), [_nest(99, "x"), _nest(5, 1)],
])
@pytest.mark.parametrize("limit", [0, 1, 2, 3, 4, 5, 100])
def test_depth_check_matches_its_definition(value: Any, limit: int) -> None:
    """The depth check agrees with checking every value's depth, scalars included."""
    assert negotiate._depth_ok(value, limit) == _depth_reference(value, limit)


def _request_with_body(chunks: list[bytes], *, length: int | None = None) -> Any:
    protocol = test_utils.make_mocked_request("POST", "/").protocol
    payload = streams.StreamReader(protocol, 2**16, loop=protocol._loop)
    for c in chunks:
        payload.feed_data(c)
    payload.feed_eof()
    headers = {"Content-Length": str(length)} if length is not None else {}
    return test_utils.make_mocked_request("POST", "/", headers=headers, payload=payload)


async def test_read_body_joins_parts_and_enforces_the_limit() -> None:
    """A body arriving in parts is read whole (and kept for the audit log); one past 3 MiB is 413."""
    request = _request_with_body([b'{"a":', b"1}"])
    assert await negotiate.read_body(request) == b'{"a":1}'
    assert request[negotiate.BODY_KEY] == b'{"a":1}'
    big = _request_with_body([b"x" * negotiate.MAX_BODY, b"y"])
    with pytest.raises(errors.RequestEntityTooLarge, match="limit is 3145728"):
        await negotiate.read_body(big)
    declared = _request_with_body([b"{}"], length=negotiate.MAX_BODY + 1)
    with pytest.raises(errors.RequestEntityTooLarge):
        await negotiate.read_body(declared)


@pytest.mark.parametrize(("headers", "want"), [
    ([("Host", "x"), ("User-Agent", "kubectl/v1.32.0"), ("Content-Length", "2"), ("Accept", "*/*")], []),
    ([("impersonate-user", "bob")], [impersonation.Target("User", "bob")]),
    ([("IMPERSONATE-USER", "system:serviceaccount:ns:sa"), ("Impersonate-Group", "g1"),
      ("Impersonate-Group", "g2")],
     [impersonation.Target("ServiceAccount", "sa", "ns"), impersonation.Target("Group", "g1"),
      impersonation.Target("Group", "g2")]),
    ([("Impersonate-User", "u"), ("Impersonate-Extra-Scopes", "a"), ("Impersonate-Uid", "1")],
     [impersonation.Target("User", "u"), impersonation.Target("UserExtra", "a", extra_key="scopes"),
      impersonation.Target("UID", "1")]),
    ([("Impersonatex-User", "u"), ("X-Impersonate-User", "u")], []),
])
def test_impersonation_headers(headers: list[tuple[str, str]], want: list[impersonation.Target]) -> None:
    """Impersonate-* headers are found whatever their case; requests without any ask for nothing."""
    assert impersonation.requests(CIMultiDict(headers)) == want


def test_impersonation_without_a_user_is_refused() -> None:
    """Groups, extras or a uid without Impersonate-User are refused, as kube refuses them."""
    with pytest.raises(impersonation.WithoutUser):
        impersonation.requests(CIMultiDict([("Impersonate-Extra-Foo", "x")]))
