"""Impersonation: Impersonate-User/Group/Uid/Extra-* headers, each allowed by the authorizer's `impersonate` verb."""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from pocketkube.api import errors, selectors
from pocketkube.apiserver import context, requestinfo, satokens

USER_HEADER = "Impersonate-User"
GROUP_HEADER = "Impersonate-Group"
UID_HEADER = "Impersonate-Uid"
EXTRA_PREFIX = "Impersonate-Extra-"
AUTH_GROUP = "authentication.k8s.io"


@dataclasses.dataclass(frozen=True)
class Target:
    """One thing the caller asks to act as: kube's impersonation request (an ObjectReference)."""

    kind: str              # User, ServiceAccount, Group, UserExtra, UID
    name: str
    namespace: str = ""
    extra_key: str = ""

    @property
    def group(self) -> str:
        return AUTH_GROUP if self.kind in ("UserExtra", "UID") else ""

    @property
    def resource(self) -> str:
        return {"User": "users", "ServiceAccount": "serviceaccounts", "Group": "groups", "UserExtra": "userextras",
                "UID": "uids"}[self.kind]

    def go_text(self) -> str:
        # Go's %v of a v1.ObjectReference: {Kind Namespace Name UID APIVersion ResourceVersion FieldPath}
        api_version = f"{AUTH_GROUP}/v1" if self.group else ""
        return "{" + " ".join((self.kind, self.namespace, self.name, "", api_version, "", self.extra_key)) + "}"


def _asks(headers: Mapping[str, str] | Any) -> bool:
    # Whether any header is an Impersonate-* one: most requests have none, and one pass over the names (the
    # length and dash test rule out nearly every other header at once) is cheaper than the lookups below.
    return any(len(k) > 12 and k[11] == "-" and k[:11].lower() == "impersonate" for k in headers)


def requests(headers: Mapping[str, str] | Any) -> list[Target]:
    """The impersonation requests in headers, in kube's order; WithoutUser when only groups/uid/extra are asked."""
    if not _asks(headers):
        return []
    out: list[Target] = []
    user = headers.get(USER_HEADER, "")
    if user:
        sa = satokens.split_username(user)
        out.append(Target("ServiceAccount", sa[1], sa[0]) if sa else Target("User", user))
    groups = headers.getall(GROUP_HEADER, []) if hasattr(headers, "getall") else []
    out += [Target("Group", g) for g in groups]
    extras = [(k, v) for k, v in headers.items() if k.lower().startswith(EXTRA_PREFIX.lower())]
    for k, v in extras:
        key = urllib.parse.unquote(k[len(EXTRA_PREFIX):].lower())
        out.append(Target("UserExtra", v, extra_key=key))
    uid = headers.get(UID_HEADER, "")
    if uid:
        out.append(Target("UID", uid))
    if (groups or extras or uid) and not user:
        raise WithoutUser(f"requested [{' '.join(t.go_text() for t in out)}] without impersonating a user")
    return out


class WithoutUser(ValueError):
    """Groups, a uid or extras asked for without Impersonate-User (buildImpersonationRequests' error)."""


# responsewriters' sanitizer: nothing in an error page may look like HTML.
_SANITIZE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"})


def internal_error(request_uri: str, err: Exception) -> web.HTTPInternalServerError:
    """responsewriters.InternalError: kube's filters answer a plain-text 500 (http.Error), not a Status."""
    text = f"Internal Server Error: {selectors.go_quote(request_uri)}: {err}".translate(_SANITIZE) + "\n"
    return web.HTTPInternalServerError(text=text, headers={"X-Content-Type-Options": "nosniff"},
                                       content_type="text/plain")  # aiohttp adds charset=utf-8


def forbidden(user: context.User, target: Target) -> errors.Forbidden:
    """responsewriters.Forbidden for an impersonate check: `users "bob" is forbidden: User "x" cannot impersonate ...`."""
    resource = target.resource + (f"/{target.extra_key}" if target.extra_key else "")
    scope = f' in the namespace "{target.namespace}"' if target.namespace else " at the cluster scope"
    what = f"{target.resource}.{target.group}" if target.group else target.resource
    msg = (f'{what} "{target.name}" is forbidden: User "{user.name}" cannot impersonate resource "{resource}" '
           f'in API group "{target.group}"{scope}')
    details: dict[str, Any] = {"name": target.name} if target.name else {}
    if target.group:
        details["group"] = target.group
    details["kind"] = target.resource
    return errors.Forbidden(msg, details=details)


def impersonated_user(targets: list[Target], *, groups_given: bool) -> context.User:
    """The user the request acts as once every target was allowed."""
    name, uid = "", ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    for t in targets:
        if t.kind == "ServiceAccount":
            name = satokens.username(t.namespace, t.name)
            if not groups_given:
                groups = list(satokens.groups(t.namespace))
        elif t.kind == "User":
            name = t.name
        elif t.kind == "Group":
            groups.append(t.name)
        elif t.kind == "UserExtra":
            extra.setdefault(t.extra_key, []).append(t.name)
        elif t.kind == "UID":
            uid = t.name
    if name != "system:anonymous":
        if not any(g in ("system:authenticated", "system:unauthenticated") for g in groups):
            groups.append("system:authenticated")
    elif "system:unauthenticated" not in groups:
        groups.append("system:unauthenticated")
    return context.User(name, tuple(groups), uid, extra)


async def apply(server: context.Server, user: context.User, request: web.Request) -> context.User:
    """The user a request acts as: the authenticated one, or whom it impersonates if allowed to."""
    try:
        targets = requests(request.headers)
    except WithoutUser as e:
        raise internal_error(request.raw_path, e) from None
    if not targets:
        return user
    if server.authorizer is not None:
        for t in targets:
            info = requestinfo.RequestInfo(True, "", "impersonate", "apis" if t.group else "api", t.group,
                                           "v1" if t.group else "", t.namespace, t.resource, t.extra_key, t.name)
            try:
                await server.authorizer(server, user, info, None)
            except errors.Forbidden:
                raise forbidden(user, t) from None
    return impersonated_user(targets, groups_given=bool(request.headers.getall(GROUP_HEADER, [])))
