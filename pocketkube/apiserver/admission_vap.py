"""The ValidatingAdmissionPolicy admission plugin: stored policies and bindings, kept compiled, judge every write."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from pocketkube.api import bootstrappolicy, cel, cel_policy, cel_validator, errors, resources
from pocketkube.api import validation_meta as vm
from pocketkube.apiserver import context, objects, rbac
from pocketkube.base import clock as clock_mod
from pocketkube.store import base as store_base

log = logging.getLogger("pocketkube.apiserver.admission_vap")

GROUP = cel_policy.GROUP
PREFIX = f"/registry/{GROUP}/"
_POLICIES = PREFIX + "validatingadmissionpolicies/"
_BINDINGS = PREFIX + "validatingadmissionpolicybindings/"
FAILURE_ANNOTATION = "validation.policy.admission.k8s.io/validation_failure"
_CODES = {"Forbidden": 403, "Unauthorized": 401, "RequestEntityTooLarge": 413, "Invalid": 422}
_STATUS_MANAGER = "validatingadmissionpolicy-status-controller"


class _Cache:
    """Compiled policies and bindings of one server, listed once and then kept current by a store watch."""

    def __init__(self, server: context.Server) -> None:
        self.store = server.store
        self.policies: dict[str, cel_validator.Policy] = {}
        self.bindings: dict[str, dict[str, Any]] = {}
        self.by_policy: dict[str, list[dict[str, Any]]] = {}
        self.loaded = False
        self._loading: asyncio.Lock = asyncio.Lock()
        self._follower: asyncio.Task[None] | None = None
        self._status_tasks: set[asyncio.Task[None]] = set()

    async def ensure(self, server: context.Server) -> None:
        if self.loaded and self._follower is not None and not self._follower.done():
            return
        async with self._loading:
            if self.loaded and self._follower is not None and not self._follower.done():
                return
            listed = await server.store.list(PREFIX)
            self.policies.clear()
            self.bindings.clear()
            for e in listed.entries:
                self._put(server, e.key, objects.decode(e.value, e.mod_revision))
            self._index()
            watcher = server.store.watch(PREFIX, after_revision=listed.revision)
            self._follower = asyncio.get_running_loop().create_task(self._follow(server, watcher), name="vap-cache")
            self.loaded = True

    def _put(self, server: context.Server, key: str, obj: dict[str, Any]) -> None:
        if key.startswith(_POLICIES):
            self.policies[key[len(_POLICIES):]] = cel_validator.compile_policy(obj)
            self._maybe_write_status(server, obj)
        elif key.startswith(_BINDINGS):
            self.bindings[key[len(_BINDINGS):]] = obj

    def _drop(self, key: str) -> None:
        if key.startswith(_POLICIES):
            self.policies.pop(key[len(_POLICIES):], None)
        elif key.startswith(_BINDINGS):
            self.bindings.pop(key[len(_BINDINGS):], None)

    def _index(self) -> None:
        by_policy: dict[str, list[dict[str, Any]]] = {}
        for name in sorted(self.bindings):
            binding = self.bindings[name]
            by_policy.setdefault(str(vm.as_dict(binding.get("spec")).get("policyName") or ""), []).append(binding)
        self.by_policy = by_policy

    async def _follow(self, server: context.Server, watcher: store_base.Watcher) -> None:
        try:
            async for batch in watcher:
                for ev in batch:
                    if ev.type == "DELETE":
                        self._drop(ev.key)
                    else:
                        self._put(server, ev.key, objects.decode(ev.value, ev.revision))
                self._index()
        except store_base.StoreError as exc:  # overflow or a closed store: the next request lists again
            log.info("ValidatingAdmissionPolicy watch ended (%s); it is reloaded on the next request", exc)
        finally:
            watcher.close()

    # -- status: what kube-controller-manager's validatingadmissionpolicy-status-controller writes --

    def _maybe_write_status(self, server: context.Server, obj: dict[str, Any]) -> None:
        meta = vm.as_dict(obj.get("metadata"))
        generation = int(meta.get("generation") or 0)
        if generation <= int(vm.as_dict(obj.get("status")).get("observedGeneration") or 0) or server.shutting_down:
            return
        task = asyncio.get_running_loop().create_task(self._write_status(server, str(meta.get("name") or "")))
        self._status_tasks.add(task)
        task.add_done_callback(self._status_tasks.discard)

    async def _write_status(self, server: context.Server, name: str) -> None:
        res = server.registry.get(GROUP, "v1", "validatingadmissionpolicies")
        if res is None:
            return
        for _ in range(5):
            try:
                cur = await server.objects.get_or_none(res, "", name)
                if cur is None:
                    return
                generation = int(cur["metadata"].get("generation") or 0)
                status = vm.as_dict(cur.get("status"))
                if generation <= int(status.get("observedGeneration") or 0):
                    return
                new = objects.clone(cur)
                new["status"] = {**status, "observedGeneration": generation, "typeChecking": {}}
                _own_status(server, res, cur, new)
                await server.objects.update(res, new, expected_revision=int(cur["metadata"]["resourceVersion"]))
                return
            except errors.Conflict:
                continue
            except (store_base.StoreError, asyncio.CancelledError):
                return
            except Exception:  # status is informative: never let it break admission
                log.exception("writing the status of ValidatingAdmissionPolicy %s failed", name)
                return


def _own_status(server: context.Server, res: resources.Resource, old: dict[str, Any], new: dict[str, Any]) -> None:
    from pocketkube.api import managedfields
    from pocketkube.apiserver import typeinfo
    schema, resolve = typeinfo.schema_for(server, res)
    try:
        mf = managedfields.update(old, new, manager=_STATUS_MANAGER, api_version=res.api_version,
                                  now=clock_mod.rfc3339(server.clock.now()), subresource="status",
                                  schema=schema, resolve=resolve)
    except Exception:  # field tracking of our own status write is best effort
        return
    if mf:
        new["metadata"]["managedFields"] = mf


_caches: dict[int, _Cache] = {}


async def _cache(server: context.Server) -> _Cache:
    cache = _caches.get(id(server))
    if cache is None or cache.store is not server.store:
        cache = _caches[id(server)] = _Cache(server)
    await cache.ensure(server)
    return cache


# --- one request ---------------------------------------------------------------------------------------------

class _Request:
    """Per-request lookups done at most once: the namespace, equivalent resources, the RBAC index."""

    def __init__(self, server: context.Server, call: context.Call, attrs: cel_policy.Attributes,
                 activation: dict[str, Any]) -> None:
        self.server, self.call, self.attrs, self.activation = server, call, attrs, activation
        self._namespace: dict[str, Any] | None = None
        self._namespace_done = False

    async def namespace(self) -> dict[str, Any] | None:
        if not self._namespace_done:
            self._namespace_done = True
            name = self.attrs.namespace
            ns_res = self.server.registry.get("", "v1", "namespaces")
            if name and ns_res is not None:
                self._namespace = await self.server.objects.get_or_none(ns_res, "", name)
        return self._namespace

    async def matches(self, mr: dict[str, Any] | None) -> bool:
        ns = None
        if mr is not None and not vm.selector_is_empty(mr.get("namespaceSelector")) and self.attrs.namespace:
            ns = await self.namespace()
        try:
            return cel_policy.match(mr, self.attrs, ns) is not None
        except cel_policy.NamespaceMissing:
            return False


_equivalent_cache: dict[tuple[int, int, resources.Resource], tuple[tuple[str, str, str], ...]] = {}


def _equivalents(registry: resources.Registry, res: resources.Resource) -> tuple[tuple[str, str, str], ...]:
    """Other group/versions serving res's objects (kube's EquivalentResourcesFor), cached per registry generation."""
    key = (id(registry), registry.generation, res)
    hit = _equivalent_cache.get(key)
    if hit is None:
        if len(_equivalent_cache) > 1024:
            _equivalent_cache.clear()
        hit = _equivalent_cache[key] = tuple(
            (r.group, r.version, r.resource) for r in registry.all()
            if r.storage_key == res.storage_key and (r.group, r.version) != (res.group, res.version))
    return hit


def _attributes(server: context.Server, call: context.Call, obj: dict[str, Any] | None,
                old: dict[str, Any] | None, operation: str) -> tuple[cel_policy.Attributes, dict[str, Any]]:
    res, sub = call.res, call.info.subresource
    kind_group, kind_version, kind = res.group, res.version, res.kind
    if sub == "scale":
        from pocketkube.apiserver import scale
        obj = scale.to_scale(server, call, obj) if obj is not None else None
        old = scale.to_scale(server, call, old) if old is not None else None
        kind_group, kind_version, kind = "autoscaling", "v1", "Scale"
    meta = vm.as_dict((obj or old or {}).get("metadata"))
    name = call.info.name or str(meta.get("name") or "")
    equivalents = _equivalents(server.registry, res)
    attrs = cel_policy.Attributes(operation=operation, group=res.group, version=res.version, resource=res.resource,
                                  subresource=sub, kind=kind, namespace=call.namespace, name=name, obj=obj, old=old,
                                  equivalents=equivalents)
    user = call.user
    user_info: dict[str, Any] = {"username": user.name} if user.name else {}
    if user.uid:
        user_info["uid"] = user.uid
    if user.groups:
        user_info["groups"] = list(user.groups)
    if user.extra:
        user_info["extra"] = {k: list(v) for k, v in user.extra.items()}
    gvk = {"group": kind_group, "version": kind_version, "kind": kind}
    gvr = {"group": res.group, "version": res.version, "resource": res.resource}
    # AdmissionRequest as CEL sees it: omitempty fields are absent when empty.
    request: dict[str, Any] = {"kind": gvk, "resource": gvr, "subResource": sub, "requestKind": gvk,
                               "requestResource": gvr, "requestSubResource": sub, "name": name,
                               "namespace": call.namespace}
    request = {k: v for k, v in request.items() if v != ""}
    request.update({"operation": operation, "userInfo": user_info, "dryRun": bool(call.query.get("dryRun"))})
    activation = {"object": obj, "oldObject": old, "request": request}
    return attrs, activation


def _authorizer(server: context.Server, call: context.Call, index: Any, attrs: cel_policy.Attributes) -> cel.Authorizer:
    def check(a: Any) -> tuple[bool, str]:
        who = a.get("user") or {"name": call.user.name, "groups": list(call.user.groups)}
        name, groups = str(who["name"]), tuple(who.get("groups") or ())
        if bootstrappolicy.MASTERS in groups or index is None:
            return True, ""
        ra = rbac.Attributes(str(a.get("verb") or ""), "path" not in a, str(a.get("group") or ""),
                             str(a.get("resource") or ""), str(a.get("subresource") or ""),
                             str(a.get("namespace") or ""), str(a.get("name") or ""), str(a.get("path") or ""))
        if rbac.node_allows(name, groups, ra):
            return True, ""
        allowed, reason = index.decide(name, groups, ra)
        return bool(allowed), str(reason)

    return cel.Authorizer(check, request_resource={
        "group": attrs.group, "resource": attrs.resource, "subresource": attrs.subresource,
        "namespace": attrs.namespace, "name": attrs.name})


async def authorizer_for(server: context.Server, call: context.Call, *, name: str = "") -> cel.Authorizer:
    """The `authorizer` CEL variable for this request, backed by RBAC (webhook matchConditions use it too)."""
    index = None
    if isinstance(server.authorizer, rbac.Authorizer):
        index = await server.authorizer.index(server)
    info, res = call.info, call.res
    attrs = cel_policy.Attributes("", res.group, res.version, res.resource, info.subresource, res.kind,
                                  call.namespace, name or info.name, None, None)
    return _authorizer(server, call, index, attrs)


def _namespace_object(ns: dict[str, Any] | None) -> dict[str, Any] | None:
    if ns is None:
        return None
    meta = vm.as_dict(ns.get("metadata"))
    keep = ("name", "generateName", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
            "deletionTimestamp", "deletionGracePeriodSeconds", "labels", "annotations")
    out: dict[str, Any] = {"metadata": {k: meta[k] for k in keep if k in meta}}
    for k in ("spec", "status"):
        if k in ns:
            out[k] = ns[k]
    return out


class _ConfigError(Exception):
    pass


async def _params(server: context.Server, policy: cel_validator.Policy, binding: dict[str, Any],
                  namespace: str) -> list[dict[str, Any] | None]:
    """The param objects a binding selects (kube's CollectParams); [None] when the policy takes none."""
    ref = vm.as_dict(binding.get("spec")).get("paramRef")
    if policy.param_kind is None or not isinstance(ref, dict):
        return [None]
    api_version, kind = str(policy.param_kind.get("apiVersion") or ""), str(policy.param_kind.get("kind") or "")
    group, _, version = api_version.rpartition("/")
    res = server.registry.by_kind(group, version, kind)
    if res is None:
        raise _ConfigError(f"failed to find resource referenced by paramKind: '{group}/{version}, Kind={kind}'")
    ns = ""
    if res.namespaced:
        ns = str(ref.get("namespace") or "") or namespace
        if not ns:
            raise _ConfigError("cannot use namespaced paramRef in policy binding that matches cluster-scoped resources")
    elif ref.get("namespace"):
        raise _ConfigError("paramRef.namespace must not be provided for a cluster-scoped `paramKind`")
    found: list[dict[str, Any] | None]
    if ref.get("name"):
        param = await server.objects.get_or_none(res, ns, str(ref["name"]))
        found = [] if param is None else [param]
    else:
        listed = await server.store.list(objects.list_prefix(res, ns))
        found = [server.objects.from_storage(res, o) for o in (objects.decode(e.value, e.mod_revision)
                                                                for e in listed.entries)
                 if vm.selector_matches(ref.get("selector") or {}, vm.as_dict(o.get("metadata")).get("labels"))]
    if not found and ref.get("parameterNotFoundAction") == "Deny":
        raise _ConfigError("no params found for policy binding with `Deny` parameterNotFoundAction")
    return found


def _denial(call: context.Call, attrs: cel_policy.Attributes, policy: str, binding: str,
            decision: cel_validator.Decision) -> errors.APIError:
    message = f"ValidatingAdmissionPolicy '{policy}' with binding '{binding}' denied request: {decision.message}"
    meta = vm.as_dict((attrs.obj or {}).get("metadata"))
    name = str(meta.get("name") or meta.get("generateName") or "") or "Unknown"
    res = call.res
    err = errors.APIError(f'{errors.qualified(res.resource, res.group)} "{name}" is forbidden: {message}',
                          details={"name": name, **({"group": res.group} if res.group else {}), "kind": res.resource,
                                   "causes": [{"message": message}]})
    err.reason = decision.reason or "Invalid"
    err.code = _CODES.get(err.reason, 422)
    return err


def _check_policy_object(call: context.Call, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
    """Defaults and validation of the policy kinds themselves, CEL compilation included."""
    kind = call.res.kind
    if kind == cel_policy.POLICY:
        cel_policy.default_policy(obj)
        errs = cel_policy.validate_policy(obj, old)
    elif kind == cel_policy.BINDING:
        cel_policy.default_binding(obj)
        errs = cel_policy.validate_binding(obj)
    else:
        return
    if errs:
        raise errors.Invalid(kind=kind, group=GROUP, name=str(vm.as_dict(obj.get("metadata")).get("name") or ""),
                             causes=errs)


async def validating_admission_policy(server: context.Server, call: context.Call, obj: dict[str, Any],
                                      old: dict[str, Any] | None, operation: str) -> None:
    """Run every bound policy that matches the request: deny, warn or audit as each binding says."""
    if call.res.group == GROUP:
        # Admission configuration itself is exempt from policies (IsExemptAdmissionConfigurationResource).
        if not call.info.subresource and isinstance(obj, dict):
            _check_policy_object(call, obj, old)
        return
    cache = await _cache(server)
    if not cache.by_policy:
        return
    attrs, activation = _attributes(server, call, obj, old, operation)
    req = _Request(server, call, attrs, activation)
    denials: list[errors.APIError] = []
    failures: list[dict[str, Any]] = []
    for policy_name in sorted(cache.by_policy):
        policy = cache.policies.get(policy_name)
        if policy is None or not await req.matches(policy.match_constraints):
            continue
        annotations: dict[str, str] = {}
        for binding in cache.by_policy[policy_name]:
            spec = vm.as_dict(binding.get("spec"))
            if not await req.matches(spec.get("matchResources")):
                continue
            binding_name = str(vm.as_dict(binding.get("metadata")).get("name") or "")
            actions = [str(a) for a in vm.as_list(spec.get("validationActions"))]
            try:
                params = await _params(server, policy, binding, attrs.namespace)
            except _ConfigError as e:
                if policy.fail:
                    denials.append(_denial(call, attrs, policy_name, binding_name, cel_validator.Decision(
                        f"failed to configure binding: {e}")))
                continue
            for param in params:
                result = cel_validator.evaluate(policy, await _activation(req, policy, param))
                annotations.update(result.annotations)
                for d in result.decisions:
                    if "Deny" in actions:
                        denials.append(_denial(call, attrs, policy_name, binding_name, d))
                    if "Warn" in actions:
                        call.warnings.append(f"Validation failed for ValidatingAdmissionPolicy '{policy_name}' "
                                             f"with binding '{binding_name}': {d.message}")
                    if "Audit" in actions:
                        failures.append({"expressionIndex": d.index, "message": d.message,
                                         "validationActions": actions, "binding": binding_name,
                                         "policy": policy_name})
        for key, value in annotations.items():
            call.audit_annotations[f"{policy_name}/{key}"] = value
    if failures:
        call.audit_annotations[FAILURE_ANNOTATION] = orjson.dumps(failures).decode()
    if denials:
        raise denials[0]


async def _activation(req: _Request, policy: cel_validator.Policy, param: dict[str, Any] | None) -> dict[str, Any]:
    act = dict(req.activation)
    act["params"] = param
    act["namespaceObject"] = _namespace_object(await req.namespace()) if req.attrs.namespace else None
    if "authorizer" not in act:
        index = None
        authz = req.server.authorizer
        if isinstance(authz, rbac.Authorizer):
            index = await authz.index(req.server)
        act["authorizer"] = _authorizer(req.server, req.call, index, req.attrs)
        req.activation["authorizer"] = act["authorizer"]
    return act
