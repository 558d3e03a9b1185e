"""Impersonation headers: parsing, kube's Forbidden wording, the resulting user, and the authorizer checks."""

from __future__ import annotations

import types
from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from pocketkube.api import errors
from pocketkube.apiserver import context, impersonation

ALICE = context.User("alice", ("system:authenticated",))


def _headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_requests_in_kube_order() -> None:
    """User (or ServiceAccount), groups, extras and uid each become one impersonation request."""
    got = impersonation.requests(_headers(("Impersonate-User", "system:serviceaccount:ns:app"),
                                          ("Impersonate-Group", "g1"), ("Impersonate-Group", "g2"),
                                          ("Impersonate-Extra-Scopes%2Fx", "view"), ("Impersonate-Uid", "u1")))
    assert got == [impersonation.Target("ServiceAccount", "app", "ns"), impersonation.Target("Group", "g1"),
                   impersonation.Target("Group", "g2"), impersonation.Target("UserExtra", "view", extra_key="scopes/x"),
                   impersonation.Target("UID", "u1")]


def test_groups_without_a_user_are_refused() -> None:
    """Groups without Impersonate-User is kube's internal error naming the requests."""
    with pytest.raises(impersonation.WithoutUser, match=r"requested \[\{Group  g1    \}\] without impersonating a user"):
        impersonation.requests(_headers(("Impersonate-Group", "g1")))


def test_without_user_is_a_plain_text_500() -> None:
    """kube's filter answers http.Error's text/plain 500 naming the request URI, sanitized of HTML."""
    with pytest.raises(impersonation.WithoutUser) as e:
        impersonation.requests(_headers(("Impersonate-Group", "<g>"), ("Impersonate-Uid", "u1")))
    resp = impersonation.internal_error("/api/v1/pods?limit=1", e.value)
    assert resp.status == 500
    assert resp.content_type == "text/plain" and resp.charset == "utf-8"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    assert resp.text == ('Internal Server Error: "/api/v1/pods?limit=1": requested [{Group  &lt;g&gt;    } '
                         "{UID  u1  authentication.k8s.io/v1  }] without impersonating a user\n")


@pytest.mark.parametrize(("target", "message"), [
    (impersonation.Target("User", "bob"),
     'users "bob" is forbidden: User "alice" cannot impersonate resource "users" in API group "" at the cluster scope'),
    (impersonation.Target("ServiceAccount", "app", "ns"),
     'serviceaccounts "app" is forbidden: User "alice" cannot impersonate resource "serviceaccounts" in API group "" '
     'in the namespace "ns"'),
    (impersonation.Target("UserExtra", "v", extra_key="scopes"),
     'userextras.authentication.k8s.io "v" is forbidden: User "alice" cannot impersonate resource '
     '"userextras/scopes" in API group "authentication.k8s.io" at the cluster scope'),
])
def test_forbidden_wording(target: impersonation.Target, message: str) -> None:
    """The 403 names the target and the resource the caller may not impersonate, as kube words it."""
    err = impersonation.forbidden(ALICE, target)
    assert err.code == 403 and err.message == message


@pytest.mark.parametrize(("targets", "groups_given", "want"), [
    ([impersonation.Target("User", "bob")], False, context.User("bob", ("system:authenticated",))),
    ([impersonation.Target("User", "bob"), impersonation.Target("Group", "g")], True,
     context.User("bob", ("g", "system:authenticated"))),
    ([impersonation.Target("ServiceAccount", "app", "ns")], False,
     context.User("system:serviceaccount:ns:app",
                  ("system:serviceaccounts", "system:serviceaccounts:ns", "system:authenticated"))),
    ([impersonation.Target("User", "system:anonymous")], False,
     context.User("system:anonymous", ("system:unauthenticated",))),
    ([impersonation.Target("User", "bob"), impersonation.Target("Group", "system:unauthenticated")], True,
     context.User("bob", ("system:unauthenticated",))),
    ([impersonation.Target("User", "bob"), impersonation.Target("UID", "u"),
      impersonation.Target("UserExtra", "a", extra_key="k"), impersonation.Target("UserExtra", "b", extra_key="k")],
     False, context.User("bob", ("system:authenticated",), "u", {"k": ["a", "b"]})),
])
def test_impersonated_user(targets: list[impersonation.Target], groups_given: bool, want: context.User) -> None:
    """The impersonated user gets system:authenticated unless it is anonymous or a group says otherwise."""
    assert impersonation.impersonated_user(targets, groups_given=groups_given) == want


async def test_each_target_is_authorized() -> None:
    """apply() asks the authorizer for `impersonate` on every target and raises kube's 403 on the first denial."""
    seen: list[tuple[str, str, str]] = []

    async def authorizer(server: Any, user: context.User, info: Any, request: Any) -> None:
        seen.append((info.verb, info.resource, info.name))
        if info.resource == "groups":
            raise errors.Forbidden("no")

    server = types.SimpleNamespace(authorizer=authorizer)
    request = types.SimpleNamespace(headers=_headers(("Impersonate-User", "bob"), ("Impersonate-Group", "admins")))
    with pytest.raises(errors.Forbidden, match='groups "admins" is forbidden: User "alice" cannot impersonate'):
        await impersonation.apply(server, ALICE, request)  # type: ignore[arg-type]
    assert seen == [("impersonate", "users", "bob"), ("impersonate", "groups", "admins")]
    request = types.SimpleNamespace(headers=_headers())
    assert await impersonation.apply(server, ALICE, request) is ALICE  # type: ignore[arg-type]
