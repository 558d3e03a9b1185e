"""MutatingAdmissionWebhook and ValidatingAdmissionWebhook: call the configured HTTPS webhooks on every write."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import uuid
from collections.abc import Mapping
from typing import Any

import orjson

from pocketkube.api import cel, errors, jsonpatch
from pocketkube.apiserver import admission_vap, context, objects, storemirror, typeinfo, webhook_client
from pocketkube.apiserver import webhook_match as wm

log = logging.getLogger("pocketkube.apiserver.webhooks")

_GROUP_PREFIX = "/registry/admissionregistration.k8s.io/"
_MUTATING_PREFIX = _GROUP_PREFIX + "mutatingwebhookconfigurations/"
_VALIDATING_PREFIX = _GROUP_PREFIX + "validatingwebhookconfigurations/"
_STATE_ATTR = "_pk_webhooks"


# --- configurations, cached from the store ---------------------------------------------------

class Webhooks:
    """The webhook configurations (list + watch of the store) and one HTTPS client session per CA bundle."""

    def __init__(self) -> None:
        self._configs = storemirror.Mirror(_GROUP_PREFIX, name="webhook configurations", keep=_is_config)
        self._hooks: tuple[list[wm.Hook], list[wm.Hook]] = ([], [])
        self._built = -1  # the mirror generation the compiled hooks come from
        self.sessions = webhook_client.Sessions()
        self._equivalents: dict[tuple[Any, ...], list[wm.GVRK]] = {}

    async def hooks(self, server: context.Server) -> tuple[list[wm.Hook], list[wm.Hook]]:
        """(mutating, validating) hooks: configurations sorted by name, webhooks in their listed order."""
        await self._configs.sync(server.store)
        if self._built != self._configs.generation:
            self._built = self._configs.generation
            self._hooks = (self._compile(_MUTATING_PREFIX, mutating=True),
                           self._compile(_VALIDATING_PREFIX, mutating=False))
        return self._hooks

    def _compile(self, prefix: str, *, mutating: bool) -> list[wm.Hook]:
        out: list[wm.Hook] = []
        configs = self._configs.objects
        for key in sorted(k for k in configs if k.startswith(prefix)):
            out.extend(wm.compile_configuration(configs[key], mutating=mutating, first_index=len(out)))
        return out

    def equivalents(self, server: context.Server, res: Any, subresource: str) -> list[wm.GVRK]:
        """Every served version of the same stored resource (kube's equivalent resources), in discovery order."""
        key = (server.registry.generation, res.group, res.version, res.resource, subresource)
        found = self._equivalents.get(key)
        if found is None:
            found = [gvrk(r, subresource) for r in server.registry.all()
                     if r.storage_key == res.storage_key and r.stored
                     and (not subresource or r.subresource(subresource) is not None)]
            if len(self._equivalents) > 512:
                self._equivalents.clear()
            self._equivalents[key] = found
        return found

    async def close(self) -> None:
        self._configs.close()
        await self.sessions.close()


def _is_config(key: str) -> bool:
    return key.startswith((_MUTATING_PREFIX, _VALIDATING_PREFIX))


def state(server: context.Server) -> Webhooks:
    """The webhook state kept on this server."""
    found = vars(server).get(_STATE_ATTR)
    if found is None:
        found = Webhooks()
        setattr(server, _STATE_ATTR, found)
    return found


async def close(server: context.Server) -> None:
    """Stop following configurations and close the client sessions (server shutdown)."""
    found = vars(server).get(_STATE_ATTR)
    if found is not None:
        await found.close()


# --- the request's attributes ----------------------------------------------------------------

def gvrk(res: Any, subresource: str) -> wm.GVRK:
    """The resource and the kind a request to it carries (a subresource may carry its own kind)."""
    sub = res.subresource(subresource) if subresource else None
    kind, kind_group, kind_version = res.kind, res.group, res.version
    if sub is not None and subresource != "status" and sub.kind:
        kind = sub.kind
        if sub.version:
            kind_group, kind_version = sub.group, sub.version
    return wm.GVRK(res.group, res.version, res.resource, kind_group, kind_version, kind)


_OPTIONS_KIND = {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions", "DELETE": "DeleteOptions"}


def _options(call: context.Call, operation: str) -> dict[str, Any] | None:
    kind = _OPTIONS_KIND.get(operation)
    if kind is None:
        return None
    out: dict[str, Any] = {"kind": kind, "apiVersion": "meta.k8s.io/v1"}
    dry_run = call.request.query.getall("dryRun", [])
    if dry_run:
        out["dryRun"] = list(dry_run)
    if operation != "DELETE":
        for param in ("fieldManager", "fieldValidation"):
            if call.param(param):
                out[param] = call.param(param)
    return out


def attributes(call: context.Call, obj: dict[str, Any] | None, old: dict[str, Any] | None,
               operation: str) -> wm.Attributes:
    """The admission attributes of this call."""
    name = call.info.name or str(((obj or {}).get("metadata") or {}).get("name") or "")
    return wm.Attributes(operation=operation, request=gvrk(call.res, call.info.subresource),
                         subresource=call.info.subresource, namespace=call.info.namespace, name=name,
                         object=obj, old_object=old, dry_run=call.dry_run, user=call.user.info(),
                         options=_options(call, operation))


# --- deciding whether to call ----------------------------------------------------------------

@dataclasses.dataclass
class _Dispatch:
    server: context.Server
    call: context.Call
    hooks: Webhooks
    phase: list[wm.Hook]
    attrs: wm.Attributes
    namespace_labels: Mapping[str, str] | None = None

    async def labels_of_namespace(self) -> Mapping[str, str]:
        own = wm.own_namespace_labels(self.attrs)
        if own is not None:
            return own
        if self.namespace_labels is None:
            ns_res = self.server.registry.get("", "v1", "namespaces")
            ns = await self.server.objects.get_or_none(ns_res, "", self.attrs.namespace)
            if ns is None:
                raise errors.NotFound.for_object("namespaces", "", self.attrs.namespace)
            self.namespace_labels = (ns.get("metadata") or {}).get("labels") or {}
        return self.namespace_labels

    async def invocation(self, hook: wm.Hook) -> wm.Invocation | None:
        """kube's ShouldCallHook: selectors, rules (or an equivalent resource), then matchConditions."""
        attrs = self.attrs
        if hook.namespace_selector is not None and wm.namespace_selector_needed(hook, attrs):
            if not hook.namespace_selector.matches(await self.labels_of_namespace()):
                return None
        if hook.object_selector is not None and not wm.object_selector_matches(hook, attrs):
            return None
        equivalents: list[wm.GVRK] = []
        if hook.match_policy == "Equivalent":
            equivalents = self.hooks.equivalents(self.server, self.call.res, attrs.subresource)
        invocation = wm.find_invocation(hook, attrs, equivalents)
        if invocation is None:
            return None
        if hook.selector_error:
            raise errors.InternalError(f"Internal error occurred: {hook.selector_error}",
                                       details={"causes": [{"message": hook.selector_error}]})
        if hook.match_conditions and not await self._conditions_match(hook, invocation):
            return None
        return invocation

    async def _conditions_match(self, hook: wm.Hook, invocation: wm.Invocation) -> bool:
        obj, old = self.versioned(invocation)
        request = wm.admission_request(invocation, self.attrs, uid="", obj=None, old=None)
        activation: dict[str, Any] = {"object": obj, "oldObject": old, "request": request}
        if any("authorizer" in expression for _name, expression in hook.match_conditions):
            activation["authorizer"] = await admission_vap.authorizer_for(self.server, self.call)
        failures: list[str] = []
        for _name, expression in hook.match_conditions:
            try:
                value = _evaluate_condition(expression, activation)
            except Exception as e:  # noqa: BLE001 - any evaluation failure is the webhook's failure policy's call
                failures.append(f"expression '{expression}' resulted in error: {e}")
                continue
            if value is False:
                return False
            if value is not True:
                failures.append(f"expression '{expression}' resulted in error: no such overload")
        if not failures:
            return True
        if hook.ignores_failures:
            return False
        message = failures[0] if len(failures) == 1 else "[" + ", ".join(failures) + "]"
        resource = errors.qualified(self.attrs.request.resource, self.attrs.request.group)
        raise errors.Forbidden(f'{resource} "{self.attrs.name}" is forbidden: {message}',
                               details={"name": self.attrs.name, **({"group": self.attrs.request.group}
                                        if self.attrs.request.group else {}), "kind": self.attrs.request.resource})

    def _target(self, invocation: wm.Invocation) -> Any:
        r = invocation.resource
        return self.server.registry.get(r.group, r.version, r.resource)

    def versioned(self, invocation: wm.Invocation) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The object and old object in the version the invocation names (matchPolicy Equivalent)."""
        attrs = self.attrs
        if invocation.resource == attrs.request:
            return attrs.object, attrs.old_object
        target = self._target(invocation)
        return self._convert(attrs.object, target), self._convert(attrs.old_object, target)

    def _convert(self, obj: dict[str, Any] | None, target: Any) -> dict[str, Any] | None:
        if obj is None or target is None or obj.get("apiVersion") != self.call.res.api_version:
            return obj
        converted: dict[str, Any] = self.server.objects.from_storage(target, objects.clone(obj))
        return converted

    def unconvert(self, obj: dict[str, Any], invocation: wm.Invocation) -> dict[str, Any]:
        if invocation.resource == self.attrs.request or obj.get("apiVersion") == self.call.res.api_version:
            return obj
        back: dict[str, Any] = self.server.objects.from_storage(self.call.res, obj)
        return back


# --- matchConditions: the one seam to CEL ----------------------------------------------------

def _evaluate_condition(expression: str, activation: dict[str, Any]) -> Any:
    """Evaluate one matchCondition with api/cel.py (it caches compiled programs); raises on failure."""
    try:
        program = cel.compile(expression, variables=cel.WEBHOOK_VARIABLES, returns=("bool",))
    except cel.CompileError as e:
        raise RuntimeError(e.detail) from None
    return program.evaluate(activation)


async def _send(d: _Dispatch, invocation: wm.Invocation, obj: dict[str, Any] | None,
                old: dict[str, Any] | None) -> wm.Response:
    """POST the AdmissionReview to the hook and verify its answer; failures raise CallFailed."""
    hook = invocation.hook
    version = wm.review_version(hook)
    if version is None:
        raise webhook_client.CallFailed("could not create admission objects: webhook does not accept known "
                                        "AdmissionReview versions (v1, v1beta1)")
    uid = str(uuid.uuid4())
    body = orjson.dumps(wm.review(version, wm.admission_request(invocation, d.attrs, uid=uid, obj=obj, old=old)))
    data = await webhook_client.post(d.server, d.hooks.sessions, hook, body)
    try:
        return wm.verify_response(data, uid=uid, version=version, mutating=hook.mutating)
    except wm.ResponseError as e:
        raise webhook_client.CallFailed(str(e)) from None

class WebhookDenied(errors.APIError):
    """A webhook's refusal: its own Status (code, reason, details) with kube's message prefix."""

    def __init__(self, status: dict[str, Any]) -> None:
        super().__init__(status["message"], details=status.get("details"))
        self.code = status["code"]
        self.reason = status.get("reason", "")
        self._status = status

    def status(self) -> dict[str, Any]:
        return dict(self._status)


def _internal(message: str) -> errors.InternalError:
    return errors.InternalError(f"Internal error occurred: {message}", details={"causes": [{"message": message}]})


def _record(call: context.Call, response: wm.Response, hook: wm.Hook) -> None:
    for k, v in response.audit_annotations.items():
        call.audit_annotations.setdefault(f"{hook.name}/{k}", v)
    call.warnings.extend(response.warnings)


def _check_dry_run(d: _Dispatch, hook: wm.Hook) -> None:
    if not d.attrs.dry_run:
        return
    refusal = wm.dry_run_refusal(hook)
    if refusal == "":
        raise webhook_client.CallFailed("Webhook SideEffects is nil")
    if refusal is not None:
        raise errors.BadRequest(refusal)


# --- the two admission plugins ---------------------------------------------------------------

async def _dispatch(server: context.Server, call: context.Call, obj: dict[str, Any] | None,
                    old: dict[str, Any] | None, operation: str, *, mutating: bool) -> _Dispatch | None:
    if (call.res.group, call.res.kind) in wm.EXEMPT_KINDS:
        return None
    hooks = state(server)
    mutating_hooks, validating_hooks = await hooks.hooks(server)
    phase = mutating_hooks if mutating else validating_hooks
    if not phase:
        return None
    return _Dispatch(server, call, hooks, phase, attributes(call, obj, old, operation))


async def mutate(server: context.Server, call: context.Call, obj: dict[str, Any] | None,
                 old: dict[str, Any] | None, operation: str) -> None:
    """MutatingAdmissionWebhook: each matching hook in order may patch obj; IfNeeded hooks run again once.

    obj is None for DELETE (hooks see oldObject and may refuse, but not patch)."""
    d = await _dispatch(server, call, obj, old, operation, mutating=True)
    if d is None:
        return
    current: dict[str, Any] | None = obj
    invoked: set[str] = set()      # reinvocable hooks called so far
    reinvoke: set[str] = set()     # those a later mutation requires calling again
    for round_ in (0, 1):
        if round_ == 1 and not reinvoke:
            break
        for hook in d.phase:
            if round_ == 1 and hook.uid not in reinvoke:
                continue
            d.attrs = dataclasses.replace(d.attrs, object=current)
            invocation = await d.invocation(hook)
            if invocation is None:
                continue
            changed, current = await _mutate_one(d, invocation, current, round_=round_)
            if changed and round_ == 0:
                reinvoke |= invoked
            if hook.reinvocation_policy == "IfNeeded":
                invoked.add(hook.uid)
    if obj is not None and current is not None and current is not obj:
        obj.clear()
        obj.update(current)
        # A patched object is validated again, as kube validates after the whole mutating phase.
        typeinfo.validate(server, call.res, obj, old)


async def _mutate_one(d: _Dispatch, invocation: wm.Invocation, current: dict[str, Any] | None, *,
                      round_: int) -> tuple[bool, dict[str, Any] | None]:
    hook = invocation.hook
    call = d.call
    mutated = False
    try:
        _check_dry_run(d, hook)
        versioned, versioned_old = d.versioned(invocation)
        response = await _send(d, invocation, versioned, versioned_old)
        _record(call, response, hook)
        if not response.allowed:
            raise WebhookDenied(wm.denial_status(hook.name, response.result))
        if not response.patch:
            return False, current
        try:
            ops = jsonpatch.decode_patch(response.patch)
        except errors.APIError as e:
            raise webhook_client.CallFailed(f"received undecodable patch in webhook response: {e.message}") from None
        if not ops:
            return False, current
        if versioned is None:
            raise _internal(f'admission webhook "{hook.name}" attempted to modify the object, which is not '
                            "supported for this operation")
        if response.patch_type != "JSONPatch":
            raise webhook_client.CallFailed(f'unsupported patch type "{response.patch_type}"')
        try:
            patched = jsonpatch.apply(versioned, ops)
        except errors.APIError as e:
            raise _internal(getattr(e, "detail", "") or e.message) from None
        patched = d.unconvert(patched, invocation)
        typeinfo.apply_defaults(d.server, call.res, patched, d.attrs.old_object)
        mutated = patched != current
        call.audit_annotations[wm.audit_key(wm.PATCH_PREFIX, round_=round_, index=hook.index)] = \
            wm.patch_annotation(hook, ops)
        return mutated, patched
    except webhook_client.CallFailed as e:
        if not hook.ignores_failures:
            raise _internal(f'failed calling webhook "{hook.name}": {e}') from None
        log.warning("Failed calling webhook, failing open %s: %s", hook.name, e)
        call.audit_annotations[wm.audit_key(wm.FAILED_OPEN_MUTATING, round_=round_, index=hook.index)] = hook.name
        return False, current
    finally:
        call.audit_annotations[wm.audit_key(wm.MUTATION_PREFIX, round_=round_, index=hook.index)] = \
            wm.mutation_annotation(hook, mutated=mutated)


async def validate(server: context.Server, call: context.Call, obj: dict[str, Any] | None,
                   old: dict[str, Any] | None, operation: str) -> None:
    """ValidatingAdmissionWebhook: every matching hook is called at once; the first refusal fails the request."""
    d = await _dispatch(server, call, obj, old, operation, mutating=False)
    if d is None:
        return
    invocations = [inv for inv in [await d.invocation(h) for h in d.phase] if inv is not None]
    if not invocations:
        return
    results = await asyncio.gather(*(_validate_one(d, inv) for inv in invocations), return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result


async def _validate_one(d: _Dispatch, invocation: wm.Invocation) -> None:
    hook = invocation.hook
    try:
        _check_dry_run(d, hook)
        versioned, versioned_old = d.versioned(invocation)
        response = await _send(d, invocation, versioned, versioned_old)
    except webhook_client.CallFailed as e:
        if not hook.ignores_failures:
            raise _internal(f'failed calling webhook "{hook.name}": {e}') from None
        log.warning("Failed calling webhook, failing open %s: %s", hook.name, e)
        d.call.audit_annotations[wm.audit_key(wm.FAILED_OPEN_VALIDATING, round_=0, index=hook.index)] = hook.name
        return
    _record(d.call, response, hook)
    if not response.allowed:
        raise WebhookDenied(wm.denial_status(hook.name, response.result))

