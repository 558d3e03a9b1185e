"""Built-in admission plugins run on every write: NamespaceLifecycle and Service allocation."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import context

_IMMORTAL = {"default", "kube-system", "kube-public"}


async def namespace_lifecycle(server: context.Server, call: context.Call, obj: dict[str, Any],
                              old: dict[str, Any] | None, operation: str) -> None:
    """Refuse objects in missing or terminating namespaces, and deleting the system namespaces."""
    res = call.res
    if not res.namespaced or operation != "CREATE":
        return
    ns_res = server.registry.get("", "v1", "namespaces")
    ns = await server.objects.get_or_none(ns_res, "", call.info.namespace)
    if ns is None:
        raise errors.NotFound.for_object("namespaces", "", call.info.namespace)
    if (ns.get("status") or {}).get("phase") == "Terminating" or ns["metadata"].get("deletionTimestamp"):
        if (res.group, res.kind) in (("", "Event"), ("events.k8s.io", "Event")):
            return
        raise errors.Forbidden(
            f'{res.resource}{"." + res.group if res.group else ""} "{obj["metadata"].get("name", "")}" is forbidden: '
            f"unable to create new content in namespace {call.info.namespace} because it is being terminated",
            details={"name": obj["metadata"].get("name", ""), **({"group": res.group} if res.group else {}),
                     "kind": res.resource, "causes": [{"reason": "NamespaceTerminating",
                     "message": f"namespace {call.info.namespace} is being terminated", "field": "metadata.namespace"}]})


async def service_allocation(server: context.Server, call: context.Call, obj: dict[str, Any],
                             old: dict[str, Any] | None, operation: str) -> None:
    if (call.res.group, call.res.kind) != ("", "Service") or server.allocators is None:
        return
    if call.info.subresource:
        return
    taken = server.allocators.allocate(obj, old)
    if call.dry_run:
        server.allocators.rollback(taken)


PLUGINS = [namespace_lifecycle, service_allocation]


def refuse_immortal_delete(res_kind: tuple[str, str], name: str) -> None:
    if res_kind == ("", "Namespace") and name in _IMMORTAL:
        raise errors.Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                               details={"name": name, "kind": "namespaces"})
