"""Authentication: the verified x509 client certificate names the user (CN) and groups (O)."""

from __future__ import annotations

import weakref

from aiohttp import web

from pocketkube.apiserver import context


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
    return context.User(cn, tuple(groups) + ("system:authenticated",))


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


def authenticate(request: web.Request) -> context.User:
    """Who is calling: the certificate's subject if the TLS layer verified one, else anonymous."""
    transport = request.transport
    if transport is not None:
        user = _certificate_user(transport)
        if user is not None:
            return user
    local = request.get("pocketkube.user")
    if isinstance(local, context.User):
        return local
    return context.ANONYMOUS
