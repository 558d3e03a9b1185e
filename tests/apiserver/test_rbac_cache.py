"""The RBAC authorizer's decision cache: one decision serves every object name unless resourceNames are involved."""

from __future__ import annotations

import pytest

from pocketkube.api import errors
from pocketkube.apiserver import context, rbac, requestinfo
from pocketkube.store import memory
from tests.apiserver.test_rbac import ALICE, _binding, _put, _role, _server, rule

USER = context.User("alice", ("system:authenticated",))


def _get(name: str) -> requestinfo.RequestInfo:
    return requestinfo.parse("GET", f"/api/v1/namespaces/team/configmaps/{name}")


async def _setup(rules: list[dict]) -> tuple[memory.MemoryStore, context.Server, rbac.Authorizer]:
    store = memory.MemoryStore()
    await store.start()
    await _put(store, _role("Role", "cm", rules, "team"))
    await _put(store, _binding("RoleBinding", "cm", "Role", "cm", [ALICE], "team"))
    return store, _server(store), rbac.Authorizer()


async def test_a_plain_rule_is_decided_once_for_every_name() -> None:
    """A rule without resourceNames allows any name, so gets of new objects hit the cache instead of the index."""
    store, server, authz = await _setup([rule("get", [""], "configmaps")])
    await authz(server, USER, _get("a"), None)
    computed = 0
    original = authz._compute

    def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal computed
        computed += 1
        return original(*args, **kwargs)

    authz._compute = counting  # type: ignore[method-assign]
    for name in ("b", "c", "d"):
        await authz(server, USER, _get(name), None)
    assert computed == 0
    authz.close()
    await store.close()


@pytest.mark.parametrize("names", ["a", ""])
async def test_resource_names_still_limit_other_names(names: str) -> None:
    """A rule limited to resourceNames allows those objects only, even after they were read (and even for "")."""
    store, server, authz = await _setup([rule("get", [""], "configmaps", names or "x")])
    if names == "":
        # A resourceNames entry of "" must not turn into "every name".
        (await authz.index(server)).roles[("team", "cm")]["rules"][0]["resourceNames"] = [""]  # type: ignore[index]
    else:
        await authz(server, USER, _get("a"), None)
        await authz(server, USER, _get("a"), None)
    with pytest.raises(errors.Forbidden) as info:
        await authz(server, USER, _get("b"), None)
    assert info.value.message.startswith('configmaps "b" is forbidden: User "alice" cannot get resource "configmaps"')
    authz.close()
    await store.close()


async def test_allowed_reason_still_names_the_binding() -> None:
    """decide() keeps kube's reason text naming the binding, role and subject."""
    store, server, authz = await _setup([rule("get", [""], "configmaps")])
    allowed, reason = await authz.decide(server, USER, rbac.attributes_of(_get("a")))
    assert allowed
    assert reason == 'RBAC: allowed by RoleBinding "cm/team" of Role "cm" to User "alice"'
    authz.close()
    await store.close()
