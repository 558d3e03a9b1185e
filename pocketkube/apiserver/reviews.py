"""Virtual (never stored) resources: access and token reviews, SelfSubjectReview, bindings, componentstatuses."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import context, negotiate, rbac, requestinfo, tokenreview, writes
from pocketkube.base import clock as clock_mod


async def _allowed(server: context.Server, user: context.User, attrs: dict[str, Any]) -> tuple[bool, str]:
    """Ask the authorizer whether `user` may do what the review's attributes describe."""
    if server.authorizer is None:
        return True, ""
    if isinstance(server.authorizer, rbac.Authorizer):
        return await server.authorizer.decide(server, user, rbac.review_attributes(attrs))
    if "resourceAttributes" in attrs:
        ra = attrs["resourceAttributes"] or {}
        info = requestinfo.RequestInfo(True, "", ra.get("verb", ""), "apis" if ra.get("group") else "api",
                                       ra.get("group", ""), ra.get("version", ""), ra.get("namespace", ""),
                                       ra.get("resource", ""), ra.get("subresource", ""), ra.get("name", ""))
    else:
        nra = attrs.get("nonResourceAttributes") or {}
        info = requestinfo.RequestInfo(False, nra.get("path", ""), nra.get("verb", ""))
    try:
        await server.authorizer(server, user, info, None)
    except errors.Forbidden:
        return False, ""
    return True, ""


def _user_from_spec(spec: dict[str, Any]) -> context.User:
    return context.User(spec.get("user", ""), tuple(spec.get("groups") or ()), spec.get("uid", ""),
                        dict(spec.get("extra") or {}))


async def _finish(server: context.Server, call: context.Call, obj: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    obj.setdefault("metadata", {})
    meta = obj["metadata"]
    meta.setdefault("creationTimestamp", None)
    writes.update_managed_fields(server, call, None, obj)
    meta["creationTimestamp"] = None
    obj["status"] = status
    return obj


async def create(server: context.Server, call: context.Call) -> tuple[Any, int]:
    raw = await negotiate.read_body(call.request)
    obj = negotiate.decode_object(raw, call.request.headers.get("Content-Type"), what=call.res.kind)
    writes.check_type(server, call, obj)
    kind = call.res.kind
    spec = obj.get("spec") or {}
    if not isinstance(spec, dict):
        raise errors.BadRequest("spec must be an object")
    if kind == "SelfSubjectAccessReview":
        _require_one_of(call, spec)
        allowed, reason = await _allowed(server, call.user, spec)
        return await _finish(server, call, obj, _decision(allowed, reason)), 201
    if kind in ("SubjectAccessReview", "LocalSubjectAccessReview"):
        _require_one_of(call, spec)
        if not spec.get("user") and not spec.get("groups"):
            raise errors.Invalid(kind=kind, group=call.res.group, name="", causes=[
                errors.invalid("spec.user", "", "at least one of user or group must be specified")])
        if kind == "LocalSubjectAccessReview":
            ns = (spec.get("resourceAttributes") or {}).get("namespace", "")
            if ns != call.info.namespace:
                raise errors.Invalid(kind=kind, group=call.res.group, name="", causes=[errors.invalid(
                    "spec.resourceAttributes.namespace", ns, "must match metadata.namespace")])
        allowed, reason = await _allowed(server, _user_from_spec(spec), spec)
        return await _finish(server, call, obj, _decision(allowed, reason)), 201
    if kind == "SelfSubjectRulesReview":
        rules = {"resourceRules": [], "nonResourceRules": [], "incomplete": False}
        if isinstance(server.authorizer, rbac.Authorizer):
            rules = await server.authorizer.rules_review(server, call.user, str(spec.get("namespace") or ""))
        elif "system:masters" in call.user.groups:
            rules["resourceRules"] = [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
            rules["nonResourceRules"] = [{"verbs": ["*"], "nonResourceURLs": ["*"]}]
        else:
            rules["nonResourceRules"] = [{"verbs": ["get"], "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"]}]
        return await _finish(server, call, obj, rules), 201
    if kind == "SelfSubjectReview":
        info: dict[str, Any] = {"username": call.user.name, "groups": list(call.user.groups)}
        if call.user.uid:
            info["uid"] = call.user.uid
        if call.user.extra:
            info["extra"] = call.user.extra
        return await _finish(server, call, obj, {"userInfo": info}), 201
    if kind == "TokenReview":
        return await _finish(server, call, obj, await tokenreview.status(server, call, obj)), 201
    if kind == "Binding":
        return await bind(server, call, obj), 201
    raise errors.MethodNotAllowed("the server does not allow this method on the requested resource", details={})


def _decision(allowed: bool, reason: str) -> dict[str, Any]:
    status: dict[str, Any] = {"allowed": allowed}
    if reason:
        status["reason"] = reason
    return status


def _require_one_of(call: context.Call, spec: dict[str, Any]) -> None:
    has_res = spec.get("resourceAttributes") is not None
    has_non = spec.get("nonResourceAttributes") is not None
    if has_res == has_non:
        raise errors.Invalid(kind=call.res.kind, group=call.res.group, name="", causes=[
            errors.invalid("spec.resourceAttributes", "raw:nil" if not has_res else "raw:{...}",
                           "exactly one of nonResourceAttributes or resourceAttributes must be specified")])


async def bind_subresource(server: context.Server, call: context.Call) -> tuple[Any, int]:
    """POST pods/NAME/binding: the body is a Binding whose name is the pod's."""
    raw = await negotiate.read_body(call.request)
    binding = negotiate.decode_object(raw, call.request.headers.get("Content-Type"), what="Binding")
    if binding.get("kind") not in (None, "Binding"):
        raise errors.BadRequest(f"the object provided is unrecognized (must be of type Binding): {binding.get('kind')}")
    return await bind(server, call, binding), 201


async def bind(server: context.Server, call: context.Call, binding: dict[str, Any]) -> dict[str, Any]:
    """Assign a pod to a node (the scheduler's write), refusing pods that already have one."""
    pods = server.registry.get("", "v1", "pods")
    assert pods is not None
    name = call.info.name or (binding.get("metadata") or {}).get("name", "")
    target = (binding.get("target") or {})
    node = target.get("name", "")
    if not node:
        raise errors.Invalid(kind="Binding", group="", name=name, causes=[errors.required("target.name")])
    for _ in range(5):
        pod = await server.objects.get(pods, call.info.namespace, name)
        if pod["metadata"].get("deletionTimestamp"):
            raise errors.Conflict.because("pods", "", name, "pod is being deleted, cannot be assigned to a host")
        current = (pod.get("spec") or {}).get("nodeName")
        if current:
            raise errors.Conflict.because("pods", "", name, f"pod {name} is already assigned to node \"{current}\"")
        # The pod was decoded for this call alone: change it in place, and skip reading the result back.
        revision = writes.revision_of(pod)
        pod.setdefault("spec", {})["nodeName"] = node
        conds = [c for c in (pod.setdefault("status", {}).get("conditions") or []) if c.get("type") != "PodScheduled"]
        conds.append({"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                      "lastTransitionTime": clock_mod.rfc3339(server.clock.now())})
        pod["status"]["conditions"] = conds
        try:
            if not call.dry_run:
                # the pod is dropped after this write: its watchers may have it as it is, undecoded
                await server.objects.write(pods, pod, expected_revision=revision, shared=True)
        except errors.Conflict:
            continue
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    raise errors.Conflict.modified("pods", "", name)


_COMPONENTS = ("controller-manager", "scheduler", "etcd-0")


def component_statuses(server: context.Server, call: context.Call) -> tuple[Any, int]:
    items: list[dict[str, Any]] = [{"kind": "ComponentStatus", "apiVersion": "v1", "metadata": {"name": n, "creationTimestamp": None},
              "conditions": [{"type": "Healthy", "status": "True", "message": "ok"}]} for n in _COMPONENTS]
    if call.info.name:
        for item in items:
            if item["metadata"]["name"] == call.info.name:
                return item, 200
        raise errors.NotFound.for_object("componentstatuses", "", call.info.name)
    return {"kind": "ComponentStatusList", "apiVersion": "v1", "metadata": {}, "items": items}, 200



