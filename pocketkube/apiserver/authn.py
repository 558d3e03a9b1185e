"""Authentication: x509 client certificates (CN = user, O = groups), then bearer tokens (token file, ServiceAccount JWTs)."""

from __future__ import annotations

import base64
import csv
import dataclasses
import datetime
import logging
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web

from pocketkube.api import errors
from pocketkube.apiserver import context, satokens
from pocketkube.base import clock as clock_mod

log = logging.getLogger("pocketkube.apiserver.authn")

# Who an in-process caller (a test's app) already is, when its request carries no credentials.
USER_KEY: web.RequestKey[context.User] = web.RequestKey("pocketkube.user", context.User)

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
INVALID = "invalid bearer token"
# kube-apiserver's --token-auth-cache... defaults: successes are remembered for 10 s, failures not at all.
SUCCESS_CACHE_SECONDS = 10.0
# Bound objects deleted less than this long ago still back their tokens (jwt.DefaultLeeway in kube).
DELETION_LEEWAY = datetime.timedelta(minutes=1)
# kubectl exec/attach/port-forward over websockets carry the token in a subprotocol instead of a header.
_WS_PREFIX = "base64url.bearer.authorization.k8s.io."


def _from_peercert(cert: dict) -> context.User | None:  # type: ignore[type-arg]
    cn = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
            elif key == "organizationName":
                groups.append(value)
    if not cn:
        return None
    return context.User(cn, tuple(groups) + (AUTHENTICATED,))


# The certificate of a TLS connection never changes, so its user is worked out once per connection.
_by_connection: weakref.WeakKeyDictionary[object, context.User | None] = weakref.WeakKeyDictionary()


def _certificate_user(transport: object) -> context.User | None:
    ssl_object = transport.get_extra_info("ssl_object")  # type: ignore[attr-defined]
    if ssl_object is None:
        return None
    try:
        return _by_connection[ssl_object]
    except (KeyError, TypeError):
        pass
    user = None
    cert = ssl_object.getpeercert()
    if cert:
        user = _from_peercert(cert)
    try:
        _by_connection[ssl_object] = user
    except TypeError:  # objects without weak reference support are simply not cached
        pass
    return user


def with_authenticated(user: context.User) -> context.User:
    """kube's AuthenticatedGroupAdder: every authenticated user is also in system:authenticated."""
    if AUTHENTICATED in user.groups or user.name == "system:anonymous" or UNAUTHENTICATED in user.groups:
        return user
    return dataclasses.replace(user, groups=(*user.groups, AUTHENTICATED))


def parse_token_file(text: str, *, path: str = "") -> dict[str, context.User]:
    """kube-apiserver --token-auth-file: CSV rows token,user,uid[,"group1,group2"]; ValueError on a short row."""
    tokens: dict[str, context.User] = {}
    for record in csv.reader(text.splitlines()):
        if not record:
            continue
        if len(record) < 3:
            raise ValueError(f"token file '{path}' must have at least 3 columns (token, user name, user uid), "
                             f"found {len(record)}")
        if not record[0]:
            continue  # kube warns about and skips empty tokens
        groups = tuple(record[3].split(",")) if len(record) >= 4 else ()
        tokens[record[0]] = context.User(record[1], groups, record[2])
    return tokens


def load_token_file(path: str) -> dict[str, context.User]:
    with open(path, encoding="utf-8") as f:
        return parse_token_file(f.read(), path=path)


@dataclasses.dataclass
class TokenResult:
    """What authenticating one bearer token found: the user and audiences, or why it failed ("" = unknown)."""

    user: context.User | None = None
    audiences: list[str] = dataclasses.field(default_factory=list)
    error: str = ""

    def status_error(self) -> str:
        """The error text kube reports (TokenReview status.error, apiserver log) for a failed token."""
        return f"[{INVALID}, {self.error}]" if self.error else INVALID


class Authenticator:
    """The token authenticators of one API server: a static token file and ServiceAccount JWTs."""

    def __init__(self, *, signer: satokens.Signer | None = None, public_keys: Sequence[Any] = (),
                 tokens: Mapping[str, context.User] | None = None,
                 audiences: Sequence[str] = satokens.API_AUDIENCES) -> None:
        self.signer = signer
        keys = list(public_keys)
        if signer is not None and not keys:
            keys = [signer.public_key]
        self.public_keys = keys
        self.tokens = dict(tokens or {})
        self.audiences = list(audiences)
        self._cache: dict[tuple[str, tuple[str, ...]], tuple[float, TokenResult]] = {}

    async def authenticate_token(self, server: context.Server, token: str, *,
                                 audiences: Sequence[str] | None = None) -> TokenResult:
        """Authenticate a bearer token for the given audiences (the API server's by default)."""
        wanted = list(audiences) if audiences else self.audiences
        key = (token, tuple(wanted))
        now = server.clock.monotonic()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        result, expires = await self._authenticate(server, token, wanted)
        if result.user is not None:
            if len(self._cache) > 10000:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            ttl = SUCCESS_CACHE_SECONDS
            if expires is not None:
                ttl = min(ttl, expires - server.clock.now().timestamp())
            if ttl > 0:
                self._cache[key] = (now + ttl, result)
        return result

    async def _authenticate(self, server: context.Server, token: str,
                            wanted: list[str]) -> tuple[TokenResult, float | None]:
        static = self.tokens.get(token)
        if static is not None:
            # Audience-agnostic authenticators answer only for the API server's own audiences.
            auds = [a for a in wanted if a in self.audiences]
            if not auds:
                return TokenResult(), None
            return TokenResult(with_authenticated(static), auds), None
        parsed = satokens.unverified(token)
        if parsed is None or not self.public_keys:
            return TokenResult(), None
        issuer = parsed[1].get("iss")
        if issuer not in (satokens.ISSUER, satokens.LEGACY_ISSUER):
            return TokenResult(), None
        try:
            claims = satokens.verify_signature(token, self.public_keys)
            token_auds = satokens.audiences_of(claims) or (self.audiences if issuer == satokens.LEGACY_ISSUER else [])
            auds = [a for a in token_auds if a in wanted]
            if not auds:
                raise satokens.TokenError(f"token audiences {_go_quoted(token_auds)} is invalid for the target "
                                          f"audiences {_go_quoted(wanted)}")
            if issuer == satokens.LEGACY_ISSUER:
                user = await _validate_legacy(server, token, claims)
            else:
                user = await _validate_bound(server, claims)
        except satokens.TokenError as e:
            return TokenResult(error=str(e)), None
        exp = claims.get("exp")
        return TokenResult(with_authenticated(user), auds), float(exp) if isinstance(exp, (int, float)) else None


def _go_quoted(values: Sequence[str]) -> str:
    # Go's %q of a []string: ["a" "b"]
    return "[" + " ".join('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values) + "]"


async def _get(server: context.Server, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
    res = server.registry.get("", "v1", resource)
    if res is None or not name:
        return None
    obj = await server.objects.get_or_none(res, namespace, name)
    return obj if isinstance(obj, dict) else None


def _deleted_before(obj: Mapping[str, Any], cutoff: datetime.datetime) -> bool:
    ts = (obj.get("metadata") or {}).get("deletionTimestamp")
    return bool(ts) and clock_mod.parse_time(str(ts)) < cutoff


def _uid(obj: Mapping[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("uid") or "")


async def _validate_bound(server: context.Server, claims: Mapping[str, Any]) -> context.User:
    """kube's bound-token validator: times, then the account and every bound object still exist unchanged."""
    now = server.clock.now()
    satokens.check_times(claims, now)
    k8s = claims.get("kubernetes.io")
    if not isinstance(k8s, dict):
        raise satokens.TokenError("service account token claims could not be validated due to unexpected private claim")
    cutoff = now - DELETION_LEEWAY
    ns = str(k8s.get("namespace") or "")
    saref, podref, secref, noderef = (k8s.get(k) if isinstance(k8s.get(k), dict) else None
                                      for k in ("serviceaccount", "pod", "secret", "node"))
    sa_name, sa_uid = str((saref or {}).get("name") or ""), str((saref or {}).get("uid") or "")
    sa = await _get(server, "serviceaccounts", ns, sa_name)
    if sa is None:
        raise satokens.TokenError(f'serviceaccounts "{sa_name}" not found')
    if _deleted_before(sa, cutoff):
        raise satokens.TokenError(f"service account {ns}/{sa_name} has been deleted")
    if _uid(sa) != sa_uid:
        raise satokens.TokenError(f"service account UID ({_uid(sa)}) does not match claim ({sa_uid})")
    extra: dict[str, list[str]] = {}
    for ref, resource, word in ((secref, "secrets", "secret"), (podref, "pods", "pod")):
        if ref is None:
            continue
        obj = await _get(server, resource, ns, str(ref.get("name") or ""))
        if obj is None or _deleted_before(obj, cutoff):
            raise satokens.TokenError("service account token has been invalidated")
        if _uid(obj) != str(ref.get("uid") or ""):
            raise satokens.TokenError(f"{word} UID ({_uid(obj)}) does not match service account {word} ref claim "
                                      f"({ref.get('uid') or ''})")
        if word == "pod":
            extra[satokens.POD_NAME_KEY] = [str(ref.get("name") or "")]
            extra[satokens.POD_UID_KEY] = [str(ref.get("uid") or "")]
    if noderef is not None and podref is None and secref is None:
        # Bound to the node itself: the node must still be there (pod-bound tokens only name their node).
        node = await _get(server, "nodes", "", str(noderef.get("name") or ""))
        if node is None or _deleted_before(node, cutoff):
            raise satokens.TokenError("service account token has been invalidated")
        if _uid(node) != str(noderef.get("uid") or ""):
            raise satokens.TokenError(f"node UID ({_uid(node)}) does not match service account node ref claim "
                                      f"({noderef.get('uid') or ''})")
    if claims.get("jti"):
        extra[satokens.CREDENTIAL_ID_KEY] = [f"JTI={claims['jti']}"]
    if noderef is not None and noderef.get("name"):
        extra[satokens.NODE_NAME_KEY] = [str(noderef["name"])]
        if noderef.get("uid"):
            extra[satokens.NODE_UID_KEY] = [str(noderef["uid"])]
    return context.User(satokens.username(ns, sa_name), satokens.groups(ns), sa_uid, extra)


async def _validate_legacy(server: context.Server, token: str, claims: Mapping[str, Any]) -> context.User:
    """kube's legacy validator: the Secret still holds this very token and the account is unchanged."""
    ns, secret_name, sa_name, sa_uid = satokens.legacy_fields(claims)
    secret = await _get(server, "secrets", ns, secret_name)
    if secret is None or (secret.get("metadata") or {}).get("deletionTimestamp"):
        raise satokens.TokenError("service account token has been invalidated")
    stored = (secret.get("data") or {}).get("token") or ""
    try:
        matches = base64.b64decode(stored).decode("utf-8", "replace") == token
    except ValueError:
        matches = False
    if not matches:
        raise satokens.TokenError("service account token does not match server's copy")
    sa = await _get(server, "serviceaccounts", ns, sa_name)
    if sa is None:
        raise satokens.TokenError(f'serviceaccounts "{sa_name}" not found')
    if (sa.get("metadata") or {}).get("deletionTimestamp"):
        raise satokens.TokenError(f"service account {ns}/{sa_name} has been deleted")
    if _uid(sa) != sa_uid:
        raise satokens.TokenError(f"service account UID ({_uid(sa)}) does not match claim ({sa_uid})")
    return context.User(satokens.username(ns, sa_name), satokens.groups(ns), sa_uid)


# --- the server's authenticator -------------------------------------------------------------------

def attach(server: context.Server, authenticator: Authenticator) -> None:
    """Give a server its token authenticators."""
    server.authenticator = authenticator


def of(server: context.Server) -> Authenticator:
    """The server's token authenticators; an empty set (certificates only) if none were attached."""
    found = server.authenticator
    if not isinstance(found, Authenticator):
        found = Authenticator()
        attach(server, found)
    return found


def bearer_token(request: web.Request) -> str:
    """The token of `Authorization: Bearer T` (or of kubectl's websocket subprotocol); "" when none."""
    header = request.headers.get("Authorization", "")
    parts = header.split(" ", 2)
    if len(parts) >= 2 and parts[0].lower() == "bearer":
        return parts[1]
    for proto in request.headers.get("Sec-WebSocket-Protocol", "").split(","):
        proto = proto.strip()
        if proto.startswith(_WS_PREFIX):
            try:
                return base64.urlsafe_b64decode(proto[len(_WS_PREFIX):] + "==").decode("utf-8")
            except (ValueError, UnicodeDecodeError):
                return ""
    return ""


async def authenticate(server: context.Server, request: web.Request) -> context.User:
    """Who is calling: the verified client certificate, else a bearer token (401 when invalid), else anonymous."""
    transport = request.transport
    if transport is not None:
        user = _certificate_user(transport)
        if user is not None:
            return user
    token = bearer_token(request)
    if token:
        result = await of(server).authenticate_token(server, token)
        if result.user is not None:
            return result.user
        # A token that was presented but does not authenticate is refused, never treated as anonymous.
        log.info("Unable to authenticate the request: %s", result.status_error())
        raise errors.Unauthorized("Unauthorized")
    local = request.get(USER_KEY)
    if isinstance(local, context.User):
        return local
    return context.ANONYMOUS
