"""NodeRestriction admission: what a kubelet may write, with kube-apiserver's exact messages."""

from __future__ import annotations

import types
from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.apiserver import admission_noderestriction as nr
from pocketkube.apiserver import context

N1 = context.User("system:node:n1", ("system:nodes", "system:authenticated"))


class _Objects:
    def __init__(self, objs: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objs = objs

    async def get_or_none(self, res: Any, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((str(res), name))


def _server(**objs: dict[str, Any]) -> Any:
    table = {(k.split("_")[0], v["metadata"]["name"]): v for k, v in objs.items()}
    return types.SimpleNamespace(registry=types.SimpleNamespace(get=lambda g, v, r: r), objects=_Objects(table))


def _call(resource: str, *, group: str = "", name: str = "", namespace: str = "", sub: str = "",
          user: context.User = N1) -> Any:
    info = types.SimpleNamespace(name=name, namespace=namespace, subresource=sub)
    return types.SimpleNamespace(res=_Res(group, resource), info=info, user=user)


class _Res:
    def __init__(self, group: str, resource: str) -> None:
        self.group, self.resource = group, resource

    def __str__(self) -> str:
        return self.resource


def _pod(name: str, node: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": f"uid-{name}", **extra},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]}}


async def _message(coro: Any) -> str:
    with pytest.raises(errors.APIError) as e:
        await coro
    return f"{e.value.code} {e.value.message}"


@pytest.mark.parametrize(("new", "old", "want"), [
    ({"kubernetes.io/hostname": "a", "kubernetes.io/os": "linux", "x": "y"}, None, []),
    ({"node-role.kubernetes.io/control-plane": ""}, None, ["node-role.kubernetes.io/control-plane"]),
    ({"node-restriction.kubernetes.io/a": "1", "foo.node-restriction.kubernetes.io/b": "2"}, None,
     ["foo.node-restriction.kubernetes.io/b", "node-restriction.kubernetes.io/a"]),
    ({"kubelet.kubernetes.io/x": "1", "a.node.kubernetes.io/y": "1", "example.com/z": "1"}, None, []),
    ({"k": "v"}, {"k": "v", "other.k8s.io/gone": "1"}, ["other.k8s.io/gone"]),
    ({"other.k8s.io/same": "1"}, {"other.k8s.io/same": "1"}, []),
])
def test_forbidden_labels(new: dict[str, str], old: dict[str, str] | None, want: list[str]) -> None:
    """Added, removed or changed kubernetes.io/k8s.io labels outside the kubelet set, and node-restriction ones."""
    assert nr.forbidden_labels(new, old) == want


@pytest.mark.parametrize(("user", "want"), [
    (N1, ("n1", True)), (context.User("system:node:n1", ("system:authenticated",)), ("", False)),
    (context.User("system:node:", ("system:nodes",)), ("", True)), (context.User("alice", ("system:nodes",)), ("", False)),
])
def test_node_identity(user: context.User, want: tuple[str, bool]) -> None:
    """A node is system:node:<name> in group system:nodes; an empty name is a node kube cannot match."""
    assert nr.node_identity(user) == want


async def test_other_users_pass() -> None:
    """Requests from users that are not nodes are never judged."""
    alice = context.User("alice", ("system:authenticated",))
    await nr.admit(_server(), _call("nodes", name="n2", user=alice), {"metadata": {"name": "n2"}}, None, "CREATE")


async def test_unknown_node_name() -> None:
    """system:node: with no name is refused for every write."""
    user = context.User("system:node:", ("system:nodes",))
    msg = await _message(nr.admit(_server(), _call("configmaps", name="c", user=user), {}, None, "UPDATE"))
    assert msg == '403 configmaps "c" is forbidden: could not determine node from user "system:node:"'


async def test_node_writes() -> None:
    """A node may write only its own Node, never taints, configSource or restricted labels."""
    server = _server()
    assert await _message(nr.admit(server, _call("nodes", name="n2"), {"metadata": {"name": "n2"}}, None, "UPDATE")) \
        == '403 nodes "n2" is forbidden: node "n1" is not allowed to modify node "n2"'
    new = {"metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}}}
    assert await _message(nr.admit(server, _call("nodes"), new, None, "CREATE")) == \
        '403 nodes "n1" is forbidden: node "n1" is not allowed to set the following labels: ' \
        "node-role.kubernetes.io/worker"
    old = {"metadata": {"name": "n1"}, "spec": {}}
    assert await _message(nr.admit(server, _call("nodes", name="n1"), new, old, "UPDATE")) == \
        '403 nodes "n1" is forbidden: is not allowed to modify labels: node-role.kubernetes.io/worker'
    tainted = {"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]}}
    assert await _message(nr.admit(server, _call("nodes", name="n1", sub="status"), tainted, old, "UPDATE")) == \
        '403 nodes "n1" is forbidden: node "n1" is not allowed to modify taints'
    await nr.admit(server, _call("nodes", name="n1", sub="status"),
                   {"metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"}}, "spec": {"taints": []}},
                   old, "UPDATE")


async def test_pods() -> None:
    """A node may not create non-mirror pods, and deletes or updates status only of pods bound to itself."""
    server = _server(pods_a=_pod("mine", "n1"), pods_b=_pod("theirs", "n2"))
    assert await _message(nr.admit(server, _call("pods", namespace="ns"), _pod("new", "n1"), None, "CREATE")) == \
        '403 pods "new" is forbidden: pod does not have "kubernetes.io/config.mirror" annotation, node "n1" can ' \
        "only create mirror pods"
    await nr.admit(server, _call("pods", name="mine", namespace="ns"), None, _pod("mine", "n1"), "DELETE")
    assert await _message(nr.admit(server, _call("pods", name="theirs", namespace="ns"), None,
                                   _pod("theirs", "n2"), "DELETE")) == \
        '403 pods "theirs" is forbidden: node "n1" can only delete pods with spec.nodeName set to itself'
    assert await _message(nr.admit(server, _call("pods", name="gone", namespace="ns"), None, {}, "DELETE")) == \
        '404 pod "gone" not found'
    call = _call("pods", name="theirs", namespace="ns", sub="status")
    assert await _message(nr.admit(server, call, _pod("theirs", "n2"), _pod("theirs", "n2"), "UPDATE")) == \
        '403 pods "theirs" is forbidden: node "n1" can only update pod status for pods with spec.nodeName set to itself'
    relabeled = _pod("mine", "n1", labels={"a": "b"})
    call = _call("pods", name="mine", namespace="ns", sub="status")
    assert await _message(nr.admit(server, call, relabeled, _pod("mine", "n1"), "UPDATE")) == \
        '403 pods "mine" is forbidden: node "n1" cannot update labels through pod status'
    await nr.admit(server, call, _pod("mine", "n1"), _pod("mine", "n1"), "UPDATE")
    call = _call("pods", name="theirs", namespace="ns", sub="eviction")
    assert await _message(nr.admit(server, call, {"metadata": {"name": "theirs"}}, None, "CREATE")) == \
        '403 pods "theirs" is forbidden: node n1 can only evict pods with spec.nodeName set to itself'
    assert await _message(nr.admit(server, _call("pods", name="mine", namespace="ns", sub="exec"), {}, None,
                                   "CREATE")) == \
        '403 pods "mine" is forbidden: unexpected pod subresource "exec", only \'status\' and \'eviction\' are allowed'


async def test_mirror_pod_rules() -> None:
    """A mirror pod must be owned by the node as controller and reference no other objects."""
    node = {"metadata": {"name": "n1", "uid": "node-uid"}}
    server = _server(nodes_n1=node)
    owner = {"apiVersion": "v1", "kind": "Node", "name": "n1", "uid": "node-uid", "controller": True}
    pod = _pod("m", "n1", annotations={nr.MIRROR_POD_ANNOTATION: "x"}, ownerReferences=[owner])
    await nr.admit(server, _call("pods", namespace="ns"), pod, None, "CREATE")
    pod["spec"]["volumes"] = [{"name": "v", "secret": {"secretName": "s"}}]
    assert (await _message(nr.admit(server, _call("pods", namespace="ns"), pod, None, "CREATE"))).endswith(
        'node "n1" can not create pods that reference secrets')
    pod["spec"]["volumes"] = []
    pod["metadata"]["ownerReferences"] = [{**owner, "uid": "other"}]
    assert (await _message(nr.admit(server, _call("pods", namespace="ns"), pod, None, "CREATE"))).endswith(
        "node n1 UID mismatch: expected other got node-uid")


async def test_leases_and_tokens() -> None:
    """Leases only in kube-node-lease under the node's name; tokens only bound to pods on the node."""
    server = _server(pods_a=_pod("mine", "n1"), pods_b=_pod("theirs", "n2"))
    lease = {"metadata": {"name": "n2"}}
    assert await _message(nr.admit(server, _call("leases", group="coordination.k8s.io", namespace="default"),
                                   lease, None, "CREATE")) == \
        '403 leases.coordination.k8s.io "n2" is forbidden: can only access leases in the "kube-node-lease" system ' \
        "namespace"
    assert await _message(nr.admit(server, _call("leases", group="coordination.k8s.io", namespace="kube-node-lease"),
                                   lease, None, "CREATE")) == \
        '403 leases.coordination.k8s.io "n2" is forbidden: can only access node lease with the same name as the ' \
        "requesting node"
    await nr.admit(server, _call("leases", group="coordination.k8s.io", name="n1", namespace="kube-node-lease"),
                   {"metadata": {"name": "n1"}}, {}, "UPDATE")

    def token(ref: dict[str, Any] | None) -> dict[str, Any]:
        return {"spec": {"boundObjectRef": ref}}

    call = _call("serviceaccounts", name="default", namespace="ns", sub="token")
    assert await _message(nr.admit(server, call, token(None), None, "CREATE")) == \
        '403 serviceaccounts "default" is forbidden: node requested token not bound to a pod'
    ref = {"apiVersion": "v1", "kind": "Pod", "name": "theirs"}
    assert (await _message(nr.admit(server, call, token(ref), None, "CREATE"))).endswith(
        "node requested token with a pod binding without a uid")
    assert (await _message(nr.admit(server, call, token({**ref, "uid": "uid-theirs"}), None, "CREATE"))).endswith(
        "node requested token bound to a pod scheduled on a different node")
    assert (await _message(nr.admit(server, call, token({**ref, "name": "mine", "uid": "x"}), None, "CREATE"))).endswith(
        "the UID in the bound object reference (x) does not match the UID in record. The object might have been "
        "deleted and then recreated")
    await nr.admit(server, call, token({**ref, "name": "mine", "uid": "uid-mine"}), None, "CREATE")


@pytest.mark.parametrize(("meta", "shown"), [({"name": "a"}, "a"), ({"generateName": "web-"}, "web-"), ({}, "Unknown")])
async def test_refusals_name_the_object_as_kube(meta: dict[str, str], shown: str) -> None:
    """A refusal names the object, else its generateName, else "Unknown" (admission.NewForbidden)."""
    pod = {"metadata": meta, "spec": {"nodeName": "n1"}}
    msg = await _message(nr.admit(_server(), _call("pods", namespace="ns"), pod, None, "CREATE"))
    assert msg.startswith(f'403 pods "{shown}" is forbidden: pod does not have')
