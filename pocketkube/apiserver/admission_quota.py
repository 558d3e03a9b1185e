"""ResourceQuota admission: refuse what exceeds a quota, and charge the rest to status.used with compare-and-swap."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from pocketkube.api import errors, quota
from pocketkube.apiserver import context, objects, writes

# kube's quota evaluator retries a conflicting status update three times against fresh quotas.
RETRIES = 3
# The manager name kube-apiserver's loopback client writes quota status under.
FIELD_MANAGER = "kube-apiserver"

# One charge at a time per namespace in this server, as kube's evaluator queues work by namespace;
# the compare-and-swap still guards against the quota controller writing in between.
_locks: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Lock]] = {}


def _lock(namespace: str) -> asyncio.Lock:
    loop = asyncio.get_running_loop()
    held = _locks.get(namespace)
    if held is None or held[0] is not loop:
        held = _locks[namespace] = (loop, asyncio.Lock())
    return held[1]


def forbidden(call: context.Call, obj: dict[str, Any], message: str) -> errors.Forbidden:
    """admission.NewForbidden: `<resource> "<name>" is forbidden: <message>`."""
    res = call.res
    name = call.info.name or (obj.get("metadata") or {}).get("name") or ""
    details: dict[str, Any] = {"name": name} if name else {}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.resource
    what = errors.qualified(res.resource, res.group)
    subject = f'{what} "{name}"' if name else what
    return errors.Forbidden(f"{subject} is forbidden: {message}", details=details)


async def resource_quota(server: context.Server, call: context.Call, obj: dict[str, Any],
                         old: dict[str, Any] | None, operation: str) -> None:
    """Check the request against every quota in its namespace and charge the ones it uses (not on dry run)."""
    res = call.res
    if call.info.subresource or not res.namespaced or operation not in ("CREATE", "UPDATE"):
        return
    ev = quota.evaluator_for(res.group, res.resource)
    quota_res = server.registry.get("", "v1", "resourcequotas")
    if ev is None or quota_res is None or not ev.handles(operation):
        return
    namespace = call.info.namespace
    if not namespace or await server.store.count(objects.list_prefix(quota_res, namespace)) == 0:
        return
    async with _lock(namespace):
        await _charge(server, call, quota_res=quota_res, ev=ev, obj=obj, old=old, operation=operation)


async def _charge(server: context.Server, call: context.Call, *, quota_res: Any, ev: quota.Evaluator,
                  obj: dict[str, Any], old: dict[str, Any] | None, operation: str) -> None:
    only: set[str] | None = None
    conflict: errors.APIError | None = None
    for _ in range(RETRIES + 1):
        quotas = await _quotas(server, quota_res, call.info.namespace)
        if only is not None:
            # Quotas already charged stay charged; only those whose write lost a race are checked again.
            quotas = [q for q in quotas if q["metadata"]["name"] in only]
        if not quotas:
            return
        try:
            charges = quota.check_request(quotas, ev, obj=obj, old=old, operation=operation, now=server.clock.now())
        except quota.Rejected as e:
            raise forbidden(call, obj, str(e)) from None
        if not charges or call.dry_run:
            return
        if operation == "CREATE" and await _exists(server, call, obj):
            # The create will fail with AlreadyExists: charging for it would only leak usage.
            return
        failed: set[str] = set()
        for q in quotas:
            name = q["metadata"]["name"]
            if name not in charges:
                continue
            try:
                await _write_used(server, call, quota_res=quota_res, old=q, used=charges[name])
            except errors.Conflict as e:
                failed.add(name)
                conflict = e
            except errors.NotFound:
                continue
        if not failed:
            return
        only = failed
    assert conflict is not None
    raise conflict


async def _quotas(server: context.Server, quota_res: Any, namespace: str) -> list[dict[str, Any]]:
    listed = await server.store.list(objects.list_prefix(quota_res, namespace))
    return [objects.decode(e.value, e.mod_revision) for e in listed.entries]


async def _exists(server: context.Server, call: context.Call, obj: dict[str, Any]) -> bool:
    name = (obj.get("metadata") or {}).get("name") or ""
    return await server.store.get(objects.key(call.res, call.info.namespace, name)) is not None


async def _write_used(server: context.Server, call: context.Call, *, quota_res: Any, old: dict[str, Any],
                      used: quota.ResourceList) -> None:
    new = objects.clone(old)
    new.setdefault("status", {})["used"] = quota.to_json(used)
    # Recorded as kube-apiserver's status update of the quota, like the loopback client's write.
    quota_call = dataclasses.replace(call, res=quota_res, query={"fieldManager": FIELD_MANAGER}, warnings=[])
    writes.update_managed_fields(server, quota_call, old, new, subresource="status")
    await server.objects.update(quota_res, new, expected_revision=writes.revision_of(old))
