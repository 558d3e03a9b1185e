"""ServiceAccount JWTs: claims, signing and signature/time checks, as kube-apiserver issues and verifies them."""

from __future__ import annotations

import base64
import binascii
import datetime
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from cryptography import exceptions
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

# kube-apiserver --service-account-issuer as kubeadm, kind and minikube set it; also the default API audience.
ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (ISSUER,)
# Tokens the legacy tokens controller stores in Secrets carry this issuer and never expire.
LEGACY_ISSUER = "kubernetes/serviceaccount"
# The expiry the ServiceAccount admission plugin asks for; pod-bound tokens asking for exactly this are
# issued for a year but say `warnafter` (kube's --service-account-extend-token-expiration, on by default).
WARN_ONLY_SECONDS = 3607
EXTENDED_SECONDS = 24 * 365 * 60 * 60
# go-jose's DefaultLeeway: exp and nbf are honoured with a minute of clock skew either way.
LEEWAY = datetime.timedelta(minutes=1)

PREFIX = "system:serviceaccount:"
GROUP_ALL = "system:serviceaccounts"
POD_NAME_KEY = "authentication.kubernetes.io/pod-name"
POD_UID_KEY = "authentication.kubernetes.io/pod-uid"
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
NODE_UID_KEY = "authentication.kubernetes.io/node-uid"
CREDENTIAL_ID_KEY = "authentication.kubernetes.io/credential-id"

_LEGACY = "kubernetes.io/serviceaccount/"


class TokenError(Exception):
    """A token this issuer signed that does not authenticate; the message is kube's reason."""


def username(namespace: str, name: str) -> str:
    return f"{PREFIX}{namespace}:{name}"


def split_username(user: str) -> tuple[str, str] | None:
    """(namespace, name) of a system:serviceaccount:NS:NAME user name, None for any other name."""
    if not user.startswith(PREFIX):
        return None
    parts = user[len(PREFIX):].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def groups(namespace: str) -> tuple[str, str]:
    return GROUP_ALL, f"{GROUP_ALL}:{namespace}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def key_id(public_key: Any) -> str:
    """kube's kid: base64url(sha256(DER SubjectPublicKeyInfo)), so verifiers can pick the key."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return _b64(hashlib.sha256(der).digest())


class Signer:
    """Signs claims with the cluster's ServiceAccount key (ES256 for EC P-256 keys, RS256 for RSA)."""

    def __init__(self, private_pem: bytes) -> None:
        key = serialization.load_pem_private_key(private_pem, password=None)
        if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
            raise ValueError("the ServiceAccount signing key must be an EC P-256 or RSA key")
        self.key = key
        self.public_key = key.public_key()
        self.alg = "ES256" if isinstance(key, ec.EllipticCurvePrivateKey) else "RS256"
        self.kid = key_id(self.public_key)

    def sign(self, claims: Mapping[str, Any]) -> str:
        header = _b64(orjson.dumps({"alg": self.alg, "kid": self.kid}, option=orjson.OPT_SORT_KEYS))
        # go-jose marshals claims through a map, so every level comes out with sorted keys.
        payload = _b64(orjson.dumps(claims, option=orjson.OPT_SORT_KEYS))
        signing_input = f"{header}.{payload}".encode("ascii")
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            r, s = utils.decode_dss_signature(self.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
            sig = r.to_bytes(32, "big") + s.to_bytes(32, "big")
        else:
            sig = self.key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
        return f"{header}.{payload}.{_b64(sig)}"


def load_public_key(pem: bytes) -> Any:
    return serialization.load_pem_public_key(pem)


def unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(header, claims) of anything shaped like a JWS compact token, without checking it; None otherwise."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        header = orjson.loads(_unb64(parts[0]))
        claims = orjson.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error, orjson.JSONDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        return None
    return header, claims


def _verify_one(public_key: Any, alg: str, signing_input: bytes, sig: bytes) -> bool:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey) and alg == "ES256" and len(sig) == 64:
            der = utils.encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
            public_key.verify(der, signing_input, ec.ECDSA(hashes.SHA256()))
            return True
        if isinstance(public_key, rsa.RSAPublicKey) and alg == "RS256":
            public_key.verify(sig, signing_input, padding.PKCS1v15(), hashes.SHA256())
            return True
    except exceptions.InvalidSignature:
        return False
    return False


def verify_signature(token: str, public_keys: Sequence[Any]) -> dict[str, Any]:
    """The claims of a token signed by one of public_keys; TokenError with go-jose's wording otherwise."""
    parsed = unverified(token)
    if parsed is None:
        raise TokenError("go-jose/go-jose: compact JWS format must have three parts")
    header, claims = parsed
    head, body, sig_text = token.split(".")
    try:
        sig = _unb64(sig_text)
    except (ValueError, binascii.Error):
        raise TokenError("illegal base64 data at input byte 0") from None
    alg = str(header.get("alg") or "")
    if alg not in ("ES256", "RS256"):
        raise TokenError(f"go-jose/go-jose: unexpected signature algorithm \"{alg}\"")
    signing_input = f"{head}.{body}".encode("ascii")
    if not any(_verify_one(k, alg, signing_input, sig) for k in public_keys):
        raise TokenError("go-jose/go-jose: error in cryptographic primitive")
    return claims


def _stamp(now: datetime.datetime) -> int:
    return int(now.timestamp())


def bound_claims(sa: Mapping[str, Any], *, audiences: Sequence[str], expiration_seconds: int, now: datetime.datetime,
                 pod: Mapping[str, Any] | None = None, secret: Mapping[str, Any] | None = None,
                 node: Mapping[str, Any] | None = None, warn_after: int = 0, jti: str = "") -> dict[str, Any]:
    """The claims of a TokenRequest token (token.Claims in kube): the account, and what it is bound to."""
    meta = sa.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    iat = _stamp(now)
    k8s: dict[str, Any] = {"namespace": ns, "serviceaccount": {"name": name, "uid": str(meta.get("uid") or "")}}
    if pod is not None:
        k8s["pod"] = _ref(pod)
    elif secret is not None:
        k8s["secret"] = _ref(secret)
    if node is not None:
        k8s["node"] = _ref(node)
    if warn_after:
        k8s["warnafter"] = iat + warn_after
    return {"aud": list(audiences), "exp": iat + expiration_seconds, "iat": iat, "iss": ISSUER,
            "jti": jti or str(uuid.uuid4()), "kubernetes.io": k8s, "nbf": iat, "sub": username(ns, name)}


def _ref(obj: Mapping[str, Any]) -> dict[str, str]:
    meta = obj.get("metadata") or {}
    out = {"name": str(meta.get("name") or "")}
    if meta.get("uid"):
        out["uid"] = str(meta["uid"])
    return out


def legacy_claims(sa: Mapping[str, Any], secret_name: str) -> dict[str, Any]:
    """The claims of a Secret-stored (legacy, non-expiring) token, as the tokens controller writes them."""
    meta = sa.get("metadata") or {}
    ns, name = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    return {"iss": LEGACY_ISSUER, _LEGACY + "namespace": ns, _LEGACY + "secret.name": secret_name,
            _LEGACY + "service-account.name": name, _LEGACY + "service-account.uid": str(meta.get("uid") or ""),
            "sub": username(ns, name)}


def check_times(claims: Mapping[str, Any], now: datetime.datetime) -> None:
    """exp and nbf against now with a minute of leeway (jwt.Expected in kube's validator)."""
    t = now.timestamp()
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if isinstance(exp, (int, float)) and t - LEEWAY.total_seconds() > exp:
        raise TokenError("service account token has expired")
    if isinstance(nbf, (int, float)) and t + LEEWAY.total_seconds() < nbf:
        raise TokenError("service account token is not valid yet")


def audiences_of(claims: Mapping[str, Any]) -> list[str]:
    aud = claims.get("aud")
    if isinstance(aud, str):
        return [aud]
    return [a for a in aud if isinstance(a, str)] if isinstance(aud, list) else []


def legacy_fields(claims: Mapping[str, Any]) -> tuple[str, str, str, str]:
    """(namespace, secret name, account name, account uid) of a legacy token; TokenError naming a missing one."""
    if not claims.get("sub"):
        raise TokenError("sub claim is missing")
    values = []
    for key, what in (("namespace", "namespace"), ("secret.name", "secretName"),
                      ("service-account.name", "serviceAccountName"), ("service-account.uid", "serviceAccountUID")):
        v = claims.get(_LEGACY + key)
        if not isinstance(v, str) or not v:
            raise TokenError(f"{what} claim is missing")
        values.append(v)
    if split_username(str(claims["sub"])) != (values[0], values[2]):
        raise TokenError("sub claim is invalid")
    return values[0], values[1], values[2], values[3]
