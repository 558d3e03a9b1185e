"""Bearer token authentication: token file, bound and legacy ServiceAccount tokens, errors and caching."""

from __future__ import annotations

import base64
import datetime
import types
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from pocketkube.apiserver import authn, context, satokens
from pocketkube.base import clock as clock_mod

SA = {"metadata": {"name": "app", "namespace": "prod", "uid": "sa-uid"}}
POD = {"metadata": {"name": "web", "namespace": "prod", "uid": "pod-uid"}, "spec": {"serviceAccountName": "app"}}


class FakeObjects:
    """Objects by (resource, namespace, name)."""

    def __init__(self) -> None:
        self.items: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.reads = 0

    def put(self, resource: str, obj: dict[str, Any]) -> None:
        meta = obj["metadata"]
        self.items[(resource, meta.get("namespace", ""), meta["name"])] = obj

    async def get_or_none(self, res: str, namespace: str, name: str) -> dict[str, Any] | None:
        self.reads += 1
        return self.items.get((res, namespace, name))


def _server() -> Any:
    objs = FakeObjects()
    objs.put("serviceaccounts", SA)
    objs.put("pods", POD)
    registry = types.SimpleNamespace(get=lambda group, version, resource: resource)
    return types.SimpleNamespace(clock=clock_mod.FakeClock(), registry=registry, objects=objs)


@pytest.fixture(scope="module")
def signer() -> satokens.Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    return satokens.Signer(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()))


def _token(signer: satokens.Signer, server: Any, *, seconds: int = 3600, audiences: list[str] | None = None,
           pod: dict[str, Any] | None = None) -> str:
    return signer.sign(satokens.bound_claims(SA, audiences=audiences or list(satokens.API_AUDIENCES),
                                             expiration_seconds=seconds, now=server.clock.now(), pod=pod, jti="j1"))


async def test_bound_token_names_the_service_account(signer: satokens.Signer) -> None:
    """A valid pod-bound token authenticates as the account with kube's groups and pod/credential extras."""
    server = _server()
    auth = authn.Authenticator(signer=signer)
    result = await auth.authenticate_token(server, _token(signer, server, pod=POD))
    assert result.user == context.User(
        "system:serviceaccount:prod:app",
        ("system:serviceaccounts", "system:serviceaccounts:prod", "system:authenticated"), "sa-uid",
        {"authentication.kubernetes.io/pod-name": ["web"], "authentication.kubernetes.io/pod-uid": ["pod-uid"],
         "authentication.kubernetes.io/credential-id": ["JTI=j1"]})
    assert result.audiences == list(satokens.API_AUDIENCES)


async def test_expired_token_fails_with_fake_clock(signer: satokens.Signer) -> None:
    """Once exp plus the minute of leeway has passed, the token no longer authenticates."""
    server = _server()
    auth = authn.Authenticator(signer=signer)
    token = _token(signer, server, seconds=600)
    server.clock.advance(600 + 30)
    assert (await auth.authenticate_token(server, token)).user is not None
    server.clock.advance(60)
    result = await auth.authenticate_token(server, token)
    assert result.user is None
    assert result.status_error() == "[invalid bearer token, service account token has expired]"


async def test_wrong_audience_is_refused(signer: satokens.Signer) -> None:
    """A token for another audience is refused with kube's audience message."""
    server = _server()
    result = await authn.Authenticator(signer=signer).authenticate_token(server, _token(signer, server,
                                                                                        audiences=["vault"]))
    assert result.user is None
    assert result.error == ('token audiences ["vault"] is invalid for the target audiences '
                            '["https://kubernetes.default.svc.cluster.local"]')


async def test_bad_signature_is_refused(signer: satokens.Signer) -> None:
    """A token from another signing key with our issuer fails on its signature."""
    server = _server()
    other = satokens.Signer(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    result = await authn.Authenticator(signer=signer).authenticate_token(server, _token(other, server))
    assert result.user is None and "cryptographic primitive" in result.error


@pytest.mark.parametrize(("change", "error"), [
    (lambda o: o.items.pop(("serviceaccounts", "prod", "app")), 'serviceaccounts "app" not found'),
    (lambda o: o.put("serviceaccounts", {"metadata": {**SA["metadata"], "uid": "new"}}),
     "service account UID (new) does not match claim (sa-uid)"),
    (lambda o: o.items.pop(("pods", "prod", "web")), "service account token has been invalidated"),
    (lambda o: o.put("pods", {"metadata": {**POD["metadata"], "uid": "other"}}),
     "pod UID (other) does not match service account pod ref claim (pod-uid)"),
    (lambda o: o.put("pods", {"metadata": {**POD["metadata"], "deletionTimestamp": "2025-12-31T23:00:00Z"}}),
     "service account token has been invalidated"),
])
async def test_bound_objects_must_still_exist(signer: satokens.Signer, change: Any, error: str) -> None:
    """Deleting or replacing the account or the bound pod invalidates its tokens."""
    server = _server()
    token = _token(signer, server, pod=POD)
    change(server.objects)
    result = await authn.Authenticator(signer=signer).authenticate_token(server, token)
    assert result.user is None and result.error == error


async def test_recently_deleted_pod_still_backs_its_token(signer: satokens.Signer) -> None:
    """A pod deleted less than a minute ago still backs its token (kube's leeway)."""
    server = _server()
    token = _token(signer, server, pod=POD)
    server.objects.put("pods", {"metadata": {**POD["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}})
    assert (await authn.Authenticator(signer=signer).authenticate_token(server, token)).user is not None


async def test_successes_are_cached_for_ten_seconds(signer: satokens.Signer) -> None:
    """A token that authenticated is not re-validated against the objects for 10 s."""
    server = _server()
    auth = authn.Authenticator(signer=signer)
    token = _token(signer, server)
    await auth.authenticate_token(server, token)
    reads = server.objects.reads
    await auth.authenticate_token(server, token)
    assert server.objects.reads == reads
    server.clock.advance(11)
    await auth.authenticate_token(server, token)
    assert server.objects.reads > reads


async def test_legacy_secret_token(signer: satokens.Signer) -> None:
    """A legacy token authenticates while its Secret holds it, and not once the Secret is gone."""
    server = _server()
    token = signer.sign(satokens.legacy_claims(SA, "app-token"))
    server.objects.put("secrets", {"metadata": {"name": "app-token", "namespace": "prod"},
                                   "data": {"token": base64.b64encode(token.encode()).decode()}})
    result = await authn.Authenticator(signer=signer).authenticate_token(server, token)
    assert result.user is not None and result.user.name == "system:serviceaccount:prod:app"
    assert result.user.extra == {}
    server.objects.items.pop(("secrets", "prod", "app-token"))
    result = await authn.Authenticator(signer=signer).authenticate_token(server, token)
    assert result.user is None and result.error == "service account token has been invalidated"


async def test_unknown_tokens_are_just_invalid(signer: satokens.Signer) -> None:
    """A token no authenticator recognises fails with the plain "invalid bearer token"."""
    server = _server()
    result = await authn.Authenticator(signer=signer).authenticate_token(server, "garbage")
    assert result.user is None and result.status_error() == "invalid bearer token"


async def test_static_token_users() -> None:
    """Token file users get their groups plus system:authenticated, for the API audiences only."""
    server = _server()
    auth = authn.Authenticator(tokens=authn.parse_token_file('t1,alice,u1,"dev,ops"\n'))
    result = await auth.authenticate_token(server, "t1")
    assert result.user == context.User("alice", ("dev", "ops", "system:authenticated"), "u1")
    assert (await auth.authenticate_token(server, "t1", audiences=["other"])).user is None


@pytest.mark.parametrize(("text", "want"), [
    ("t,bob,u\n", {"t": context.User("bob", (), "u")}),
    ('t,bob,u,"a,b"\n', {"t": context.User("bob", ("a", "b"), "u")}),
    (",skipped,u\nt2,carol,u2\n", {"t2": context.User("carol", (), "u2")}),
    ("t,one,u\nt,two,u\n", {"t": context.User("two", (), "u")}),
    ("", {}),
])
def test_parse_token_file(text: str, want: dict[str, context.User]) -> None:
    """The CSV format of --token-auth-file: token,user,uid[,groups]; empty tokens skipped, later rows win."""
    assert authn.parse_token_file(text) == want


def test_short_token_file_rows_are_refused() -> None:
    """A row with fewer than 3 columns is an error naming the file, as kube-apiserver reports it."""
    with pytest.raises(ValueError, match=r"token file 'f.csv' must have at least 3 columns .*found 2"):
        authn.parse_token_file("t,bob\n", path="f.csv")


def test_deleted_before_uses_the_deletion_timestamp() -> None:
    """Only objects whose deletion started before the cutoff count as gone."""
    obj = {"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}
    cutoff = datetime.datetime(2026, 1, 1, 0, 0, 30, tzinfo=datetime.UTC)
    assert authn._deleted_before(obj, cutoff)
    assert not authn._deleted_before(obj, cutoff - datetime.timedelta(minutes=1))
