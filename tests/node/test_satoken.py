"""Projected ServiceAccount tokens on the node: the TokenRequest sent, rotation at 80%, and the API's address."""

from __future__ import annotations

import datetime
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.node import satoken

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
POD = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}, "spec": {"serviceAccountName": "app"}}


@pytest.mark.parametrize(("seconds", "after", "want"), [
    (3600, 0, False),
    (3600, 2879, False),      # just under 80% of the lifetime
    (3600, 2881, True),       # past 80%
    (3600, 3601, True),       # expired
    (200000, 86399, False),   # long-lived tokens: 80% is far off ...
    (200000, 86401, True),    # ... but a day is the longest the kubelet keeps one
])
def test_requires_refresh(seconds: int, after: int, want: bool) -> None:
    """The kubelet renews a token past 80% of its life or once it is a day old."""
    issued = satoken.Issued("t", T0 + datetime.timedelta(seconds=seconds), seconds)
    assert satoken.requires_refresh(issued, T0 + datetime.timedelta(seconds=after)) is want


def test_request_body_binds_the_pod() -> None:
    """The TokenRequest is bound to the pod and carries the source's audience and expiry."""
    assert satoken.request_body(POD, {"audience": "vault", "expirationSeconds": 7200, "path": "t"}) == {
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"expirationSeconds": 7200, "audiences": ["vault"],
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": "web", "uid": "u1"}}}
    assert "audiences" not in satoken.request_body(POD, {"path": "token"})["spec"]


class _Client:
    base_url = "https://127.0.0.1:6443"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.fail: errors.APIError | None = None

    async def request(self, method: str, path: str, *, body: Any = None) -> dict[str, Any]:
        self.calls.append((method, path, body))
        if self.fail is not None:
            raise self.fail
        now = self.now
        secs = body["spec"]["expirationSeconds"]
        return {"status": {"token": f"tok{len(self.calls)}",
                           "expirationTimestamp": clock_mod.rfc3339(now + datetime.timedelta(seconds=secs))}}

    now = T0


async def test_tokens_are_reused_then_rotated() -> None:
    """One token serves every refresh until 80% of its life, then a new one is requested."""
    client = _Client()
    manager = satoken.TokenManager()
    source = {"path": "token", "expirationSeconds": 3600}
    assert await manager.token(client, POD, source, now=T0) == "tok1"  # type: ignore[arg-type]
    assert client.calls[0][:2] == ("POST", "/api/v1/namespaces/ns/serviceaccounts/app/token")
    assert await manager.token(client, POD, source, now=T0 + datetime.timedelta(seconds=2000)) == "tok1"  # type: ignore[arg-type]
    client.now = T0 + datetime.timedelta(seconds=2900)
    assert await manager.token(client, POD, source, now=client.now) == "tok2"  # type: ignore[arg-type]


async def test_expired_tokens_are_dropped_once_a_minute() -> None:
    """Tokens past their expiry are forgotten by a sweep at most once a minute, not on every token issued."""
    client = _Client()
    manager = satoken.TokenManager()
    short = {"path": "token", "expirationSeconds": 10}

    def pod(uid: str) -> dict[str, Any]:
        return {**POD, "metadata": {**POD["metadata"], "uid": uid}}

    await manager.token(client, pod("a"), short, now=T0)  # type: ignore[arg-type]
    client.now = T0 + datetime.timedelta(seconds=30)
    await manager.token(client, pod("b"), short, now=client.now)  # type: ignore[arg-type]
    assert len(manager._issued) == 2  # a's token expired, but the last sweep was 30 s ago
    client.now = T0 + datetime.timedelta(seconds=61)
    await manager.token(client, pod("c"), short, now=client.now)  # type: ignore[arg-type]
    assert sorted(k[0] for k in manager._issued) == ["c"]


async def test_fetch_errors() -> None:
    """A refused first request is the kubelet's "failed to fetch token"; a refused renewal keeps the old token."""
    client = _Client()
    client.fail = errors.NotFound('serviceaccounts "app" not found')
    manager = satoken.TokenManager()
    with pytest.raises(satoken.FetchError, match='failed to fetch token: serviceaccounts "app" not found'):
        await manager.token(client, POD, {"path": "token"}, now=T0)  # type: ignore[arg-type]
    client.fail = None
    assert await manager.token(client, POD, {"path": "token"}, now=T0) == "tok2"  # type: ignore[arg-type]
    client.fail = errors.Forbidden("no")
    assert await manager.token(client, POD, {"path": "token"},  # type: ignore[arg-type]
                               now=T0 + datetime.timedelta(seconds=3000)) == "tok2"


async def test_files_use_the_path_and_mode() -> None:
    """The token lands at the source's path with the projected volume's mode."""
    out = await satoken.files(_Client(), POD, {"path": "sa/token"}, default_mode=0o600, now=T0)  # type: ignore[arg-type]
    assert list(out) == ["sa/token"] and out["sa/token"][1] == 0o600


def test_service_env_points_at_the_api() -> None:
    """Containers get the kubernetes Service's variables for the API's real address."""
    env = satoken.service_env(_Client())  # type: ignore[arg-type]
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert env["KUBERNETES_PORT_6443_TCP"] == "tcp://127.0.0.1:6443"
    assert env["KUBERNETES_SERVICE_PORT_HTTPS"] == "6443"
