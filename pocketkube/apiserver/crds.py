"""CustomResourceDefinitions: serve their kinds, keep their status conditions, validate their objects."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from collections.abc import Callable
from typing import Any

from pocketkube.api import crdvalidation, errors, managedfields, openapi, resources
from pocketkube.apiserver import context, crd_schema, objects, strategy, typeinfo
from pocketkube.base import clock as clock_mod
from pocketkube.store import base as store_base

log = logging.getLogger(__name__)

GROUP = "apiextensions.k8s.io"
CRD_RESOURCE = "customresourcedefinitions"
MANAGER = "kube-apiserver"
CLEANUP_FINALIZER = crdvalidation.CLEANUP_FINALIZER
# How long instance deletion may take before the Terminating condition says so (kube waits a minute).
DELETE_CHECK_SECONDS = 60.0
_POLL_SECONDS = 0.1
_RETRIES = 10


# --- write-time hooks for the CustomResourceDefinition kind (called from typeinfo) ---------------

def default_crd(obj: dict[str, Any], old: dict[str, Any] | None = None) -> None:
    """Defaults of a CRD on create (old=None) and update: names, conversion, status, cleanup finalizer."""
    crdvalidation.default_crd(obj, old)


def validate_crd(obj: dict[str, Any], old: dict[str, Any] | None = None) -> list[errors.FieldError]:
    """Field errors of a CRD create/update, schema defaults included (checked against their own schema)."""
    return crdvalidation.validate_crd(obj, old, check_default=_check_default)


def _check_default(value: Any, schema: dict[str, Any], path: str) -> list[errors.FieldError]:
    return crd_schema.Schema(schema).validate(value)


# --- status helpers --------------------------------------------------------------------------------

def _d(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _l(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def condition(crd: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in _l(_d(crd.get("status")).get("conditions")):
        if isinstance(c, dict) and c.get("type") == ctype:
            return c
    return None


def is_true(crd: dict[str, Any], ctype: str) -> bool:
    c = condition(crd, ctype)
    return c is not None and c.get("status") == "True"


def set_condition(crd: dict[str, Any], ctype: str, status: str, reason: str, message: str, *, now: str) -> None:
    """Add or update a condition; lastTransitionTime moves only when the status changes."""
    st = crd.setdefault("status", {})
    conds = st.get("conditions")
    if not isinstance(conds, list):
        conds = []
    new = {"type": ctype, "status": status, "lastTransitionTime": now, "reason": reason, "message": message}
    for i, c in enumerate(conds):
        if isinstance(c, dict) and c.get("type") == ctype:
            if c.get("status") == status:
                new["lastTransitionTime"] = c.get("lastTransitionTime", now)
            conds[i] = new
            break
    else:
        conds.append(new)
    st["conditions"] = conds
    crd["status"] = {k: st[k] for k in ("conditions", "acceptedNames", "storedVersions") if k in st} | {
        k: v for k, v in st.items() if k not in ("conditions", "acceptedNames", "storedVersions")}


def accepted_names(spec_names: dict[str, Any]) -> dict[str, Any]:
    """spec.names as status.acceptedNames serialises it (empty optional fields left out)."""
    kind = str(spec_names.get("kind") or "")
    out: dict[str, Any] = {"plural": spec_names.get("plural", "")}
    singular = spec_names.get("singular") or kind.lower()
    if singular:
        out["singular"] = singular
    if spec_names.get("shortNames"):
        out["shortNames"] = list(spec_names["shortNames"])
    out["kind"] = kind
    list_kind = spec_names.get("listKind") or (kind + "List" if kind else "")
    if list_kind:
        out["listKind"] = list_kind
    if spec_names.get("categories"):
        out["categories"] = list(spec_names["categories"])
    return out


def resources_for(crd: dict[str, Any], names: dict[str, Any]) -> list[resources.Resource]:
    """One Resource per served version, all sharing the storage version's storage."""
    spec = _d(crd.get("spec"))
    group = str(spec.get("group") or "")
    plural = str(names.get("plural") or "")
    kind = str(names.get("kind") or "")
    if not group or not plural or not kind:
        return []
    storage = crdvalidation.storage_version(crd)
    out = []
    for v in crdvalidation.versions(crd):
        if v.get("served") is not True or not isinstance(v.get("name"), str):
            continue
        subs = _d(v.get("subresources"))
        sub_list = []
        if "status" in subs:
            sub_list.append(resources.Subresource("status", kind, resources.GET_PATCH_UPDATE))
        if "scale" in subs:
            sub_list.append(resources.Subresource("scale", "Scale", resources.GET_PATCH_UPDATE, "autoscaling", "v1"))
        out.append(resources.Resource(
            group, v["name"], plural, kind, spec.get("scope") == "Namespaced",
            singular=str(names.get("singular") or kind.lower()),
            short_names=tuple(str(s) for s in _l(names.get("shortNames"))),
            categories=tuple(str(c) for c in _l(names.get("categories"))),
            verbs=resources.CRUD, subresources=tuple(sub_list),
            storage_group=group, storage_resource=plural, storage_version=storage or v["name"], crd=True))
    return out


# --- the controller ---------------------------------------------------------------------------------

class CRDs:
    """Keeps the registry in step with stored CRDs: names, Established status, serving, and cleanup on delete."""

    def __init__(self, server: context.Server) -> None:
        self.server = server
        self._crds: dict[str, dict[str, Any]] = {}
        self._served: dict[str, tuple[Any, list[resources.Resource]]] = {}  # name -> (served key, resources)
        self._by_resource: dict[tuple[str, str], str] = {}  # (group, plural) -> CRD name
        self._schemas: dict[tuple[str, str], tuple[Any, crd_schema.Schema]] = {}
        self._openapi: tuple[Any, dict[str, Any]] | None = None
        self._task: asyncio.Task[None] | None = None
        self._finalizers: dict[str, asyncio.Task[None]] = {}
        self._apiservices_lock = asyncio.Lock()

    # -- lifecycle --

    @property
    def _crd_res(self) -> resources.Resource:
        res = self.server.registry.get(GROUP, "v1", CRD_RESOURCE)
        if res is None:
            raise RuntimeError("the registry does not serve customresourcedefinitions")
        return res

    async def load(self) -> None:
        """Serve every stored CRD, then follow the CRD prefix of the store for writes by anyone."""
        revision = await self._relist()
        # the first watcher is registered before load returns, so no write after it can be missed
        watcher = self.server.store.watch(objects.storage_prefix(self._crd_res), after_revision=revision)
        self._task = asyncio.get_running_loop().create_task(self._watch(revision, watcher), name="crd-watch")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._finalizers.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._task = None
        self._finalizers.clear()

    async def _relist(self) -> int:
        prefix = objects.storage_prefix(self._crd_res)
        listed = await self.server.store.list(prefix)
        seen = set()
        for e in listed.entries:
            obj = objects.decode(e.value, e.mod_revision)
            name = obj["metadata"].get("name", "")
            seen.add(name)
            self._crds[name] = obj
        for name in [n for n in self._crds if n not in seen]:
            await self._on_delete(name)
        # the oldest CRD wins a name conflict, as it would have been accepted first
        for obj in sorted(self._crds.values(), key=lambda o: o["metadata"].get("creationTimestamp", "")):
            await self._safe_reconcile(obj["metadata"]["name"])
        return listed.revision

    async def _watch(self, revision: int, first: Any) -> None:
        prefix = objects.storage_prefix(self._crd_res)
        while True:
            watcher, first = first, None
            try:
                if watcher is None:
                    watcher = self.server.store.watch(prefix, after_revision=revision)
                async for batch in watcher:
                    for ev in batch:
                        revision = ev.revision
                        name = ev.key[len(prefix):]
                        if ev.type == "DELETE":
                            await self._on_delete(name)
                        else:
                            self._crds[name] = objects.decode(ev.value, ev.revision)
                            await self._safe_reconcile(name)
            except asyncio.CancelledError:
                raise
            except store_base.StoreClosed:
                return
            except (store_base.Compacted, store_base.WatchOverflow):
                revision = await self._relist()
            except Exception:  # keep serving CRDs whatever one event did
                log.exception("CRD watch failed; restarting it")
                await asyncio.sleep(0.5)
            finally:
                if watcher is not None:
                    watcher.close()
            if self.server.shutting_down:
                return

    async def _safe_reconcile(self, name: str) -> None:
        try:
            await self._reconcile(name)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("reconciling CustomResourceDefinition %s failed", name)

    # -- reconcile --

    async def _reconcile(self, name: str) -> None:
        crd = self._crds.get(name)
        if crd is None:
            return
        meta = crd["metadata"]
        if meta.get("deletionTimestamp"):
            if CLEANUP_FINALIZER in _l(meta.get("finalizers")) and name not in self._finalizers:
                self._finalizers[name] = asyncio.get_running_loop().create_task(self._finalize(name),
                                                                                 name=f"crd-finalize-{name}")
            return
        ok, _, _ = self._check_names(crd)
        names = _d(_d(crd.get("spec")).get("names"))
        if not ok:
            names = _d(_d(crd.get("status")).get("acceptedNames")) if is_true(crd, "Established") else {}
        self._serve(name, crd, names)
        await self._write_status(name, self._desired_status)
        await self._sync_apiservices()

    def _check_names(self, crd: dict[str, Any]) -> tuple[bool, str, str]:
        """The naming controller: (accepted, reason, message) against other CRDs and built-ins of the group."""
        spec = _d(crd.get("spec"))
        group = spec.get("group")
        names = _d(spec.get("names"))
        me = crd["metadata"].get("name")
        taken: set[str] = set()
        kinds: set[str] = set()
        for other in self._crds.values():
            if other["metadata"].get("name") == me or _d(other.get("spec")).get("group") != group:
                continue
            an = _d(_d(other.get("status")).get("acceptedNames"))
            taken.update(x for x in (an.get("plural"), an.get("singular"), *_l(an.get("shortNames"))) if x)
            kinds.update(x for x in (an.get("kind"), an.get("listKind")) if x)
        for r in self.server.registry.all():
            if r.group == group and not r.crd:
                taken.update((r.resource, r.singular_name, *r.short_names))
                kinds.update((r.kind, r.list_kind))
        if names.get("plural") in taken:
            return False, "PluralConflict", f'"{names.get("plural")}" is already in use'
        if names.get("singular") in taken:
            return False, "SingularConflict", f'"{names.get("singular")}" is already in use'
        for short in _l(names.get("shortNames")):
            if short in taken:
                return False, "ShortNamesConflict", f'"{short}" is already in use'
        if names.get("kind") in kinds:
            return False, "KindConflict", f'"{names.get("kind")}" is already in use'
        if names.get("listKind") in kinds:
            return False, "ListKindConflict", f'"{names.get("listKind")}" is already in use'
        return True, "NoConflicts", "no conflicts found"

    def _desired_status(self, cur: dict[str, Any]) -> None:
        now = clock_mod.rfc3339(self.server.clock.now())
        if cur["metadata"].get("deletionTimestamp"):
            return
        ok, reason, message = self._check_names(cur)
        status = cur.setdefault("status", {})
        if ok:
            status["acceptedNames"] = accepted_names(_d(_d(cur.get("spec")).get("names")))
            set_condition(cur, "NamesAccepted", "True", reason, message, now=now)
            if not is_true(cur, "Established"):
                set_condition(cur, "Established", "True", "InitialNamesAccepted",
                              "the initial names have been accepted", now=now)
        else:
            status.setdefault("acceptedNames", {"plural": "", "kind": ""})
            set_condition(cur, "NamesAccepted", "False", reason, message, now=now)
            if not is_true(cur, "Established"):
                set_condition(cur, "Established", "False", "NotAccepted", "not all names are accepted", now=now)
        stored = crdvalidation.storage_version(cur)
        status = cur["status"]
        sv = _l(status.get("storedVersions"))
        if stored and stored not in sv:
            status["storedVersions"] = [*sv, stored]

    async def _write_status(self, name: str, mutate: Callable[[dict[str, Any]], Any]) -> dict[str, Any] | None:
        """Apply mutate to the stored CRD and write it back (internal write, retried on conflicts)."""
        res = self._crd_res
        for _ in range(_RETRIES):
            cur = await self.server.objects.get_or_none(res, "", name)
            if cur is None:
                return None
            new = copy.deepcopy(cur)
            mutate(new)
            if new == cur:
                return cur
            self._managed_status(cur, new)
            try:
                stored: dict[str, Any] = await self.server.objects.update(
                    res, new, expected_revision=int(cur["metadata"]["resourceVersion"]))
            except errors.Conflict:
                continue
            self._crds[name] = stored
            return stored
        log.warning("could not update the status of CustomResourceDefinition %s: too many conflicts", name)
        return None

    def _managed_status(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        schema, resolve = typeinfo.schema_for(self.server, self._crd_res)
        try:
            mf = managedfields.update(old, new, manager=MANAGER, api_version=f"{GROUP}/v1",
                                      now=clock_mod.rfc3339(self.server.clock.now()), subresource="status",
                                      schema=schema, resolve=resolve)
        except Exception:  # field tracking is best effort for the controller's own writes
            log.debug("managedFields update of a CRD status failed", exc_info=True)
            return
        if mf:
            new["metadata"]["managedFields"] = mf

    # -- serving --

    def _serve(self, name: str, crd: dict[str, Any], names: dict[str, Any]) -> None:
        wanted = resources_for(crd, names) if names else []
        key = (crd["metadata"].get("generation"), tuple(wanted))
        prev = self._served.get(name)
        if prev is not None and prev[0] == key:
            return
        reg = self.server.registry
        old_res = prev[1] if prev is not None else []
        keep = {(r.group, r.version, r.resource) for r in wanted}
        for r in old_res:
            if (r.group, r.version, r.resource) not in keep:
                reg.remove(r.group, r.version, r.resource)
                self._by_resource.pop((r.group, r.resource), None)
        for r in wanted:
            reg.add(r)  # re-adding bumps the registry generation, so discovery and OpenAPI refresh
            self._by_resource[(r.group, r.resource)] = name
        self._served[name] = (key, wanted)
        self._openapi = None

    def _unserve(self, name: str) -> None:
        prev = self._served.pop(name, None)
        if prev is None:
            return
        for r in prev[1]:
            if self.server.registry.get(r.group, r.version, r.resource) is not None:
                self.server.registry.remove(r.group, r.version, r.resource)
            if self._by_resource.get((r.group, r.resource)) == name:
                del self._by_resource[(r.group, r.resource)]
        self._openapi = None

    async def _on_delete(self, name: str) -> None:
        crd = self._crds.pop(name, None)
        self._unserve(name)
        task = self._finalizers.pop(name, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        for key in [k for k in self._schemas if k[0] == name]:
            del self._schemas[key]
        if crd is None:
            return
        # names this CRD held may now be free for another CRD of the group
        group = _d(crd.get("spec")).get("group")
        for other_name, other in list(self._crds.items()):
            if _d(other.get("spec")).get("group") == group and not is_true(other, "NamesAccepted"):
                await self._safe_reconcile(other_name)
        await self._sync_apiservices()

    # -- deletion --

    async def _finalize(self, name: str) -> None:
        """Delete every instance, then drop the cleanup finalizer (deleting the CRD when it was the last)."""
        try:
            clock = self.server.clock

            def terminating(cur: dict[str, Any]) -> None:
                set_condition(cur, "Terminating", "True", "InstanceDeletionInProgress",
                              "CustomResource deletion is in progress", now=clock_mod.rfc3339(clock.now()))

            crd = await self._write_status(name, terminating) or self._crds.get(name)
            if crd is None:
                return
            if is_true(crd, "Established"):
                start = clock.monotonic()
                reported = False
                while await self._delete_instances(crd):
                    if not reported and clock.monotonic() - start > DELETE_CHECK_SECONDS:
                        reported = True

                        def check(cur: dict[str, Any]) -> None:
                            set_condition(cur, "Terminating", "True", "InstanceDeletionCheck",
                                          "could not confirm zero CustomResources remaining: timed out waiting for "
                                          "the condition", now=clock_mod.rfc3339(clock.now()))
                        await self._write_status(name, check)
                    await clock.sleep(_POLL_SECONDS)
                final = ("False", "InstanceDeletionCompleted", "removed all instances")
            else:
                final = ("False", "NeverEstablished", "resource was never established")
            await self._remove_finalizer(name, final)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("cleaning up CustomResourceDefinition %s failed", name)
        finally:
            if self._finalizers.get(name) is asyncio.current_task():
                del self._finalizers[name]

    async def _delete_instances(self, crd: dict[str, Any]) -> int:
        """One pass deleting the CRD's objects straight from storage; returns how many remain."""
        store = self.server.store
        prefix = objects.storage_prefix(self._storage_res(crd))
        listed = await store.list(prefix)
        now = clock_mod.rfc3339(self.server.clock.now())
        for e in listed.entries:
            obj = objects.decode(e.value, e.mod_revision)
            meta = obj.get("metadata") or {}
            try:
                if meta.get("finalizers"):
                    if not meta.get("deletionTimestamp"):
                        meta["deletionTimestamp"] = now
                        meta["deletionGracePeriodSeconds"] = 0
                        await store.update(e.key, objects.encode(obj), expected_revision=e.mod_revision)
                else:
                    await store.delete(e.key, expected_revision=e.mod_revision)
            except (store_base.RevisionMismatch, store_base.KeyNotFound):
                continue  # changed under us: looked at again on the next pass
        return await store.count(prefix)

    def _storage_res(self, crd: dict[str, Any]) -> resources.Resource:
        spec = _d(crd.get("spec"))
        names = _d(spec.get("names"))
        group = str(spec.get("group") or "")
        plural = str(names.get("plural") or "")
        v = crdvalidation.storage_version(crd) or "v1"
        return resources.Resource(group, v, plural, str(names.get("kind") or ""), spec.get("scope") == "Namespaced",
                                  storage_group=group, storage_resource=plural, storage_version=v, crd=True)

    async def _remove_finalizer(self, name: str, final: tuple[str, str, str]) -> None:
        res = self._crd_res
        for _ in range(_RETRIES):
            cur = await self.server.objects.get_or_none(res, "", name)
            if cur is None:
                return
            new = copy.deepcopy(cur)
            set_condition(new, "Terminating", *final, now=clock_mod.rfc3339(self.server.clock.now()))
            meta = new["metadata"]
            finalizers = [f for f in _l(meta.get("finalizers")) if f != CLEANUP_FINALIZER]
            if finalizers:
                meta["finalizers"] = finalizers
            else:
                meta.pop("finalizers", None)
            rev = int(cur["metadata"]["resourceVersion"])
            try:
                if not finalizers and meta.get("deletionTimestamp"):
                    await self.server.objects.delete(res, "", name, expected_revision=rev)
                else:
                    await self.server.objects.update(res, new, expected_revision=rev)
                return
            except errors.Conflict:
                continue

    # -- APIServices kube-apiserver's autoregistration keeps for CRD groups --

    async def _sync_apiservices(self) -> None:
        res = self.server.registry.get("apiregistration.k8s.io", "v1", "apiservices")
        if res is None:
            return
        wanted = {(r.group, r.version) for _, rs in self._served.values() for r in rs}
        async with self._apiservices_lock:
            try:
                listed = await self.server.store.list(objects.storage_prefix(res))
                have: dict[tuple[str, str], tuple[str, int]] = {}
                for e in listed.entries:
                    svc = objects.decode(e.value, e.mod_revision)
                    labels = _d(svc["metadata"].get("labels"))
                    spec = _d(svc.get("spec"))
                    if labels.get(resources.AUTOMANAGED_LABEL) == "true":
                        have[(spec.get("group", ""), spec.get("version", ""))] = (svc["metadata"]["name"], e.mod_revision)
                builtin = {(r.group, r.version) for r in self.server.registry.all() if not r.crd}
                for gv in sorted(wanted - set(have) - builtin):
                    svc = resources.apiservice(gv[0], gv[1], group_priority=resources.CRD_GROUP_PRIORITY,
                                               version_priority=resources.CRD_VERSION_PRIORITY, automanaged="true",
                                               now=clock_mod.rfc3339(self.server.clock.now()))
                    strategy.prepare_create(res, svc, clock=self.server.clock)
                    with contextlib.suppress(errors.AlreadyExists):
                        await self.server.objects.create(res, svc)
                for gv, (svc_name, rev) in have.items():
                    if gv not in wanted:
                        with contextlib.suppress(errors.NotFound, errors.Conflict):
                            await self.server.objects.delete(res, "", svc_name, expected_revision=rev)
            except (store_base.StoreClosed, asyncio.CancelledError):
                raise
            except Exception:
                log.exception("syncing APIServices of CRD groups failed")

    # -- what the request handlers ask --

    def _crd_of(self, res: resources.Resource) -> dict[str, Any] | None:
        name = self._by_resource.get((res.group, res.resource))
        return self._crds.get(name) if name is not None else None

    def _version(self, res: resources.Resource) -> dict[str, Any]:
        crd = self._crd_of(res)
        return (crdvalidation.version(crd, res.version) or {}) if crd is not None else {}

    def _compiled(self, res: resources.Resource) -> crd_schema.Schema | None:
        crd = self._crd_of(res)
        if crd is None:
            return None
        name = crd["metadata"]["name"]
        gen = crd["metadata"].get("generation")
        cached = self._schemas.get((name, res.version))
        if cached is not None and cached[0] == gen:
            return cached[1]
        raw = self.schema(res)
        if raw is None:
            return None
        compiled = crd_schema.Schema(raw)
        self._schemas[(name, res.version)] = (gen, compiled)
        return compiled

    def schema(self, res: resources.Resource) -> dict[str, Any] | None:
        """The structural schema (openAPIV3Schema) of res.version."""
        schema = _d(self._version(res).get("schema")).get("openAPIV3Schema")
        return schema if isinstance(schema, dict) else None

    def apply_defaults(self, res: resources.Resource, obj: dict[str, Any]) -> None:
        """Prune unknown fields (and unknown metadata), drop non-nullable nulls, apply schema defaults."""
        compiled = self._compiled(res)
        if compiled is None:
            crd_schema.prune(obj, {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
            return
        compiled.prune(obj)
        compiled.default(obj)

    def unknown_fields(self, res: resources.Resource, obj: dict[str, Any]) -> list[str]:
        """'unknown field "spec.foo"' for every field pruning would drop (fieldValidation Warn/Strict)."""
        compiled = self._compiled(res)
        probe = copy.deepcopy(obj)
        if compiled is None:
            paths = crd_schema.prune(probe, {"type": "object", "x-kubernetes-preserve-unknown-fields": True})
        else:
            paths = compiled.prune(probe)
        return [f'unknown field "{p}"' for p in paths]

    def validate(self, res: resources.Resource, obj: dict[str, Any], old: dict[str, Any] | None) -> list[errors.FieldError]:
        """Schema errors, list-type uniqueness, embedded resources and scale replicas, worded as kube does."""
        compiled = self._compiled(res)
        errs = compiled.validate(obj, old) if compiled is not None else []
        errs.extend(self._scale_errors(res, obj))
        return errs

    def _scale_errors(self, res: resources.Resource, obj: dict[str, Any]) -> list[errors.FieldError]:
        if res.subresource("scale") is None:
            return []
        spec_path, status_path, selector_path = self.scale_paths(res)
        errs: list[errors.FieldError] = []
        for path in (spec_path, status_path):
            found, value = _lookup(obj, path)
            if not found or value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                errs.append(errors.invalid(path, 0, f"{path} accessor error: {_go_v(value)} is of the type "
                                                    f"{_go_type(value)}, expected int64"))
            elif value < 0:
                errs.append(errors.invalid(path, value, "should be a non-negative integer"))
            elif value > 2147483647:
                errs.append(errors.invalid(path, value, "should be less than or equal to 2147483647"))
        if selector_path:
            found, value = _lookup(obj, selector_path)
            if found and value is not None and not isinstance(value, str):
                errs.append(errors.invalid(selector_path, "", f"{selector_path} accessor error: {_go_v(value)} is of "
                                                              f"the type {_go_type(value)}, expected string"))
        return errs

    def printer_columns(self, res: resources.Resource) -> list[dict[str, Any]] | None:
        """additionalPrinterColumns of the version ([] means the default Name and Age columns)."""
        if self._crd_of(res) is None:
            return None
        return [c for c in _l(self._version(res).get("additionalPrinterColumns")) if isinstance(c, dict)]

    def scale_paths(self, res: resources.Resource) -> tuple[str, str, str]:
        """(specReplicasPath, statusReplicasPath, labelSelectorPath) of the version's scale subresource."""
        scale = _d(_d(self._version(res).get("subresources")).get("scale"))
        return (str(scale.get("specReplicasPath") or ".spec.replicas"),
                str(scale.get("statusReplicasPath") or ".status.replicas"),
                str(scale.get("labelSelectorPath") or ""))

    def openapi_definitions(self) -> dict[str, Any]:
        """OpenAPI models of every served CRD version (for kubectl explain and client-side validation)."""
        key = tuple(sorted((n, k[0]) for n, (k, _) in self._served.items()))
        if self._openapi is not None and self._openapi[0] == key:
            return self._openapi[1]
        defs: dict[str, Any] = {}
        for name, (_, served) in sorted(self._served.items()):
            crd = self._crds.get(name)
            if crd is None:
                continue
            for r in served:
                v = crdvalidation.version(crd, r.version) or {}
                schema = _d(v.get("schema")).get("openAPIV3Schema")
                defs.update(openapi.crd_definitions(r.group, r.version, r.kind, r.list_kind,
                                                    schema if isinstance(schema, dict) else None, plural=r.resource))
        self._openapi = (key, defs)
        return defs

    def crd_for(self, res: resources.Resource) -> dict[str, Any] | None:
        """The CRD object serving res (None for built-in resources)."""
        return self._crd_of(res)

    def terminating(self, res: resources.Resource) -> bool:
        """True while res's CRD is being deleted: kube refuses creates of its instances then."""
        crd = self._crd_of(res)
        return crd is not None and bool(crd["metadata"].get("deletionTimestamp"))


def _lookup(obj: dict[str, Any], path: str) -> tuple[bool, Any]:
    cur: Any = obj
    for part in path.strip(".").split("."):
        if not isinstance(cur, dict) or part not in cur:
            return False, None
        cur = cur[part]
    return True, cur


def _go_v(v: Any) -> str:
    return v if isinstance(v, str) else crd_schema.go_repr(v)


def _go_type(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, float):
        return "float64"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "[]interface {}"
    if isinstance(v, dict):
        return "map[string]interface {}"
    return type(v).__name__
