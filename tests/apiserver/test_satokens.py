"""ServiceAccount JWTs: signing and signature checks, claims shape, times and names."""

from __future__ import annotations

import base64
import datetime

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from pocketkube.apiserver import satokens

NOW = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
SA = {"metadata": {"name": "app", "namespace": "prod", "uid": "sa-uid"}}
POD = {"metadata": {"name": "web-1", "namespace": "prod", "uid": "pod-uid"}}


def _pem(key: object) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,  # type: ignore[attr-defined]
                             serialization.NoEncryption())


@pytest.fixture(scope="module")
def signer() -> satokens.Signer:
    return satokens.Signer(_pem(ec.generate_private_key(ec.SECP256R1())))


def _claims(token: str) -> dict:  # type: ignore[type-arg]
    body = token.split(".")[1]
    return dict(orjson.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def test_sign_and_verify_round_trip(signer: satokens.Signer) -> None:
    """A signed token verifies with the signer's public key and yields the claims it was signed with."""
    claims = satokens.bound_claims(SA, audiences=["a"], expiration_seconds=600, now=NOW, jti="j1")
    token = signer.sign(claims)
    assert satokens.verify_signature(token, [signer.public_key]) == claims
    header = satokens.unverified(token)
    assert header is not None and header[0] == {"alg": "ES256", "kid": signer.kid}


def test_rsa_keys_sign_rs256() -> None:
    """An RSA signing key produces RS256 tokens that verify."""
    s = satokens.Signer(_pem(rsa.generate_private_key(public_exponent=65537, key_size=2048)))
    token = s.sign({"sub": "x"})
    assert satokens.unverified(token)[0]["alg"] == "RS256"  # type: ignore[index]
    assert satokens.verify_signature(token, [s.public_key]) == {"sub": "x"}


def test_other_key_is_a_bad_signature(signer: satokens.Signer) -> None:
    """A token signed by another key fails with go-jose's cryptographic-primitive error."""
    other = satokens.Signer(_pem(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(satokens.TokenError, match="error in cryptographic primitive"):
        satokens.verify_signature(other.sign({"sub": "x"}), [signer.public_key])


def test_tampered_payload_fails(signer: satokens.Signer) -> None:
    """Changing the claims after signing breaks the signature."""
    head, _, sig = signer.sign({"sub": "a"}).split(".")
    forged = base64.urlsafe_b64encode(b'{"sub":"b"}').rstrip(b"=").decode()
    with pytest.raises(satokens.TokenError):
        satokens.verify_signature(f"{head}.{forged}.{sig}", [signer.public_key])


@pytest.mark.parametrize("token", ["", "a.b", "not a jwt", "x.y.z", "....", "e30.e30.!!!"])
def test_malformed_tokens_are_not_jwts(token: str, signer: satokens.Signer) -> None:
    """Anything that is not a compact JWS is refused with a TokenError, never an exception of another kind."""
    with pytest.raises(satokens.TokenError):
        satokens.verify_signature(token, [signer.public_key])


def test_bound_claims_shape_like_kube() -> None:
    """Pod-bound claims name the account, the pod, the node, and carry iss/sub/aud/exp/iat/nbf/jti and warnafter."""
    claims = satokens.bound_claims(SA, audiences=[satokens.ISSUER], expiration_seconds=3600, now=NOW, pod=POD,
                                   node={"metadata": {"name": "n1"}}, warn_after=3607, jti="j")
    t = int(NOW.timestamp())
    assert claims == {
        "aud": [satokens.ISSUER], "exp": t + 3600, "iat": t, "iss": satokens.ISSUER, "jti": "j", "nbf": t,
        "sub": "system:serviceaccount:prod:app",
        "kubernetes.io": {"namespace": "prod", "serviceaccount": {"name": "app", "uid": "sa-uid"},
                          "pod": {"name": "web-1", "uid": "pod-uid"}, "node": {"name": "n1"},
                          "warnafter": t + 3607}}


def test_signed_payload_has_sorted_keys(signer: satokens.Signer) -> None:
    """The payload's JSON keys come out sorted at every level, as go-jose writes them."""
    token = signer.sign(satokens.bound_claims(SA, audiences=["a"], expiration_seconds=600, now=NOW, pod=POD))
    body = token.split(".")[1]
    text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode()
    assert text.index('"aud"') < text.index('"exp"') < text.index('"kubernetes.io"') < text.index('"sub"')
    assert text.index('"namespace"') < text.index('"pod"') < text.index('"serviceaccount"')
    assert _claims(token)["sub"] == "system:serviceaccount:prod:app"


@pytest.mark.parametrize(("offset", "error"), [
    (0, None),
    (3600 + 59, None),                       # within the minute of leeway
    (3600 + 61, "service account token has expired"),
    (-61, "service account token is not valid yet"),
    (-59, None),
])
def test_times_with_leeway(offset: int, error: str | None) -> None:
    """exp and nbf are checked against now with one minute of leeway."""
    claims = satokens.bound_claims(SA, audiences=["a"], expiration_seconds=3600, now=NOW)
    now = NOW + datetime.timedelta(seconds=offset)
    if error is None:
        satokens.check_times(claims, now)
    else:
        with pytest.raises(satokens.TokenError, match=error):
            satokens.check_times(claims, now)


@pytest.mark.parametrize(("name", "want"), [
    ("system:serviceaccount:ns:app", ("ns", "app")),
    ("system:serviceaccount:ns", None),
    ("system:serviceaccount::app", None),
    ("system:serviceaccount:a:b:c", None),
    ("alice", None),
])
def test_split_username(name: str, want: tuple[str, str] | None) -> None:
    """Only system:serviceaccount:NS:NAME names split into namespace and name."""
    assert satokens.split_username(name) == want


def test_legacy_claims_round_trip() -> None:
    """Legacy claims carry the kubernetes.io/serviceaccount/* fields and read back as (ns, secret, sa, uid)."""
    claims = satokens.legacy_claims(SA, "app-token")
    assert claims["iss"] == satokens.LEGACY_ISSUER and "exp" not in claims
    assert satokens.legacy_fields(claims) == ("prod", "app-token", "app", "sa-uid")


@pytest.mark.parametrize(("drop", "error"), [
    ("sub", "sub claim is missing"),
    ("kubernetes.io/serviceaccount/secret.name", "secretName claim is missing"),
    ("kubernetes.io/serviceaccount/service-account.uid", "serviceAccountUID claim is missing"),
])
def test_legacy_claims_missing_fields(drop: str, error: str) -> None:
    """A legacy token without one of its claims is refused with kube's message naming it."""
    claims = satokens.legacy_claims(SA, "t")
    del claims[drop]
    with pytest.raises(satokens.TokenError, match=error):
        satokens.legacy_fields(claims)
