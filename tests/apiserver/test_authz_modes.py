"""--authorization-mode: kube's validation of the mode list and the union of Node, RBAC, AlwaysAllow and AlwaysDeny."""

from __future__ import annotations

import pytest

from pocketkube.api import errors
from pocketkube.apiserver import authz, context, rbac, requestinfo
from pocketkube.store import memory
from tests.apiserver import test_rbac

NODE = context.User("system:node:n1", ("system:nodes", "system:authenticated"))
ALICE = context.User("alice", ("system:authenticated",))
MASTER = context.User("root", ("system:masters",))
NODE_READ = requestinfo.parse("GET", "/api/v1/nodes/n1")
LIST_PODS = requestinfo.parse("GET", "/api/v1/namespaces/default/pods")


@pytest.mark.parametrize(("text", "modes"), [
    ("Node,RBAC", ("Node", "RBAC")), ("AlwaysAllow", ("AlwaysAllow",)), (" RBAC , Node ", ("RBAC", "Node")),
    ("RBAC,AlwaysDeny", ("RBAC", "AlwaysDeny")),
])
def test_parse_modes_accepts_kube_modes(text: str, modes: tuple[str, ...]) -> None:
    """Comma-separated kube mode names are accepted in the order given."""
    assert authz.parse_modes(text) == modes


@pytest.mark.parametrize(("text", "message"), [
    ("", "at least one authorization-mode must be passed"),
    ("rbac", 'authorization-mode "rbac" is not a valid mode'),
    ("Node,Node", 'authorization-mode "Node" has mode specified more than once'),
    ("ABAC", "authorization-mode ABAC is not supported by pocketkube (use Node, RBAC, AlwaysAllow or AlwaysDeny)"),
])
def test_parse_modes_rejects_with_kube_messages(text: str, message: str) -> None:
    """Unknown, repeated, missing or unsupported modes are refused with kube-apiserver's wording."""
    with pytest.raises(ValueError) as info:
        authz.parse_modes(text)
    assert str(info.value) == message


@pytest.mark.parametrize(("modes", "node", "use_rbac"), [
    (("Node", "RBAC"), True, True), (("RBAC",), False, True), (("Node",), True, False),
    (("AlwaysDeny",), False, False), (("Node", "AlwaysDeny", "RBAC"), True, False),
])
def test_new_builds_the_union(modes: tuple[str, ...], node: bool, use_rbac: bool) -> None:
    """Node and RBAC are asked in order; an AlwaysDeny ends the chain (later modes are never asked)."""
    a = authz.new(modes)
    assert isinstance(a, rbac.Authorizer)
    assert (a.node, a.rbac) == (node, use_rbac)


@pytest.mark.parametrize("modes", [("AlwaysAllow",), ("Node", "RBAC", "AlwaysAllow"), ("RBAC", "AlwaysAllow", "AlwaysDeny")])
def test_always_allow_before_any_deny_means_no_authorizer(modes: tuple[str, ...]) -> None:
    """Once AlwaysAllow is reached every request is allowed, which the server knows as no authorizer at all."""
    assert authz.new(modes) is None


async def _check(modes: tuple[str, ...], user: context.User, info: requestinfo.RequestInfo) -> str:
    a = authz.new(modes)
    assert a is not None
    store = memory.MemoryStore()
    await store.start()
    try:
        await a(test_rbac._server(store), user, info, None)
        return "allowed"
    except errors.Forbidden as err:
        return err.message
    finally:
        a.close()
        await store.close()


async def test_rbac_only_mode_does_not_run_the_node_authorizer() -> None:
    """With --authorization-mode=RBAC a kubelet without bindings may not read its Node object."""
    assert await _check(("Node", "RBAC"), NODE, NODE_READ) == "allowed"
    message = await _check(("RBAC",), NODE, NODE_READ)
    assert message.startswith('nodes "n1" is forbidden: User "system:node:n1" cannot get resource "nodes"')


async def test_always_deny_forbids_everyone_but_masters() -> None:
    """AlwaysDeny refuses with kube's "Everything is forbidden." reason; system:masters still passes."""
    message = await _check(("AlwaysDeny",), ALICE, LIST_PODS)
    assert message == ('pods is forbidden: User "alice" cannot list resource "pods" in API group "" in the '
                       'namespace "default": Everything is forbidden.')
    assert await _check(("AlwaysDeny",), MASTER, LIST_PODS) == "allowed"
