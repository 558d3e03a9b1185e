"""Authentication: the verified x509 client certificate names the user (CN) and groups (O)."""

from __future__ import annotations

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


def authenticate(request: web.Request) -> context.User:
    """Who is calling: the certificate's subject if the TLS layer verified one, else anonymous."""
    transport = request.transport
    if transport is not None:
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            cert = ssl_object.getpeercert()
            if cert:
                user = _from_peercert(cert)
                if user is not None:
                    return user
    local = request.get("pocketkube.user")
    if isinstance(local, context.User):
        return local
    return context.ANONYMOUS
