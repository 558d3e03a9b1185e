"""Specification of the ValidatingAdmissionPolicy plugin inside the API server's create pipeline."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from aiohttp import test_utils

from pocketkube.api import cel, conversion, errors, resources
from pocketkube.apiserver import admission_vap, context, create, objects, rbac, requestinfo
from pocketkube.base import clock as clock_mod
from pocketkube.store import memory

GROUP = "admissionregistration.k8s.io"


async def make_server() -> context.Server:
    store = memory.MemoryStore()
    await store.start()
    server = context.Server(registry=resources.Registry.builtin(), objects=objects.Objects(store, conversion.convert),
                            store=store, clock=clock_mod.FakeClock())
    server.admission = [admission_vap.validating_admission_policy]
    return server


def make_call(server: context.Server, group: str, resource: str, *, namespace: str = "ns") -> context.Call:
    version = "v1"
    base = f"/apis/{group}/{version}" if group else f"/api/{version}"
    res = server.registry.get(group, version, resource)
    assert res is not None
    path = f"{base}/namespaces/{namespace}/{resource}" if res.namespaced else f"{base}/{resource}"
    request = test_utils.make_mocked_request("POST", path)
    return context.Call(request=request, info=requestinfo.parse("POST", path), res=res,
                        user=context.User("alice", ("dev",)), query={})


async def add(server: context.Server, resource: str, obj: dict[str, Any]) -> dict[str, Any]:
    return await create.create_object(server, make_call(server, GROUP, resource), obj)


def policy(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"matchConstraints": {"resourceRules": [
        {"apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"], "resources": ["configmaps"]}]}}
    base.update(spec)
    return {"apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicy", "metadata": {"name": name},
            "spec": base}


def binding(name: str, policy_name: str, actions: list[str]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/v1", "kind": "ValidatingAdmissionPolicyBinding", "metadata": {"name": name},
            "spec": {"policyName": policy_name, "validationActions": actions}}


def configmap(name: str, **data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": data}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_deny_answers_kubes_status() -> None:
    """A Deny binding refuses with the validation's reason and code, the policy and binding named in the message."""
    server = await make_server()
    await add(server, "validatingadmissionpolicies", policy("p", validations=[
        {"expression": "object.data.size() < 2", "message": "too much data", "reason": "Forbidden"}]))
    await add(server, "validatingadmissionpolicybindings", binding("b", "p", ["Deny"]))
    await settle()
    await create.create_object(server, make_call(server, "", "configmaps"), configmap("ok", a="1"))
    with pytest.raises(errors.APIError) as err:
        await create.create_object(server, make_call(server, "", "configmaps"), configmap("big", a="1", b="2"))
    message = "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: too much data"
    assert err.value.status() == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": f'configmaps "big" is forbidden: {message}', "reason": "Forbidden",
        "details": {"name": "big", "kind": "configmaps", "causes": [{"message": message}]}, "code": 403}


async def test_warn_and_audit_record_on_the_call() -> None:
    """Warn adds kube's warning, Audit the validation_failure annotation, auditAnnotations their keyed values."""
    server = await make_server()
    await add(server, "validatingadmissionpolicies", policy(
        "p", validations=[{"expression": "false"}],
        auditAnnotations=[{"key": "who", "valueExpression": "request.userInfo.username"}]))
    await add(server, "validatingadmissionpolicybindings", binding("b", "p", ["Warn", "Audit"]))
    await settle()
    call = make_call(server, "", "configmaps")
    await create.create_object(server, call, configmap("c"))
    assert call.warnings == ["Validation failed for ValidatingAdmissionPolicy 'p' with binding 'b': "
                             "failed expression: false"]
    assert call.audit_annotations["p/who"] == "alice"
    assert json.loads(call.audit_annotations[admission_vap.FAILURE_ANNOTATION]) == [
        {"expressionIndex": 0, "message": "failed expression: false", "validationActions": ["Warn", "Audit"],
         "binding": "b", "policy": "p"}]


async def test_policy_objects_are_defaulted_validated_and_get_status() -> None:
    """Policies get kube's defaults, a compile error is a 422 on the field, and status reports the generation."""
    server = await make_server()
    stored = await add(server, "validatingadmissionpolicies", policy("p", validations=[{"expression": "true"}]))
    assert stored["spec"]["failurePolicy"] == "Fail"
    with pytest.raises(errors.Invalid) as err:
        await add(server, "validatingadmissionpolicies", policy("bad", validations=[{"expression": "1 +"}]))
    assert err.value.message.startswith(
        'ValidatingAdmissionPolicy.admissionregistration.k8s.io "bad" is invalid: spec.validations[0].expression: '
        'Invalid value: "1 +": compilation failed: ERROR: <input>:1:4: Syntax error:')
    await create.create_object(server, make_call(server, "", "configmaps"), configmap("c"))  # loads the cache
    res = server.registry.get(GROUP, "v1", "validatingadmissionpolicies")
    assert res is not None
    for _ in range(50):
        got = await server.objects.get(res, "", "p")
        if got.get("status"):
            break
        await asyncio.sleep(0.01)
    assert got["status"] == {"observedGeneration": 1, "typeChecking": {}}


async def test_ignore_failure_policy_admits_on_errors() -> None:
    """With failurePolicy Ignore, an evaluation error or a missing param admits the request."""
    server = await make_server()
    await add(server, "validatingadmissionpolicies", policy(
        "p", failurePolicy="Ignore", paramKind={"apiVersion": "v1", "kind": "ConfigMap"},
        validations=[{"expression": "object.nope == 1"}]))
    b = binding("b", "p", ["Deny"])
    b["spec"]["paramRef"] = {"name": "missing", "parameterNotFoundAction": "Deny"}
    await add(server, "validatingadmissionpolicybindings", b)
    await settle()
    await create.create_object(server, make_call(server, "", "configmaps"), configmap("c"))


async def test_authorizer_for_answers_from_rbac() -> None:
    """authorizer_for gives webhooks' matchConditions the same RBAC-backed `authorizer` variable policies get."""
    server = await make_server()
    server.authorizer = rbac.Authorizer()
    rb = server.registry.get("rbac.authorization.k8s.io", "v1", "rolebindings")
    role = server.registry.get("rbac.authorization.k8s.io", "v1", "roles")
    assert rb is not None and role is not None
    await server.objects.create(role, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                                       "metadata": {"name": "r", "namespace": "ns"},
                                       "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]})
    await server.objects.create(rb, {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                                     "metadata": {"name": "r", "namespace": "ns"},
                                     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
                                     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                                                   "name": "alice"}]})
    authz = await admission_vap.authorizer_for(server, make_call(server, "", "configmaps"))
    program = cel.compile("authorizer.group('').resource('secrets').namespace('ns').check('get').allowed()",
                          variables=cel.WEBHOOK_VARIABLES)
    assert program.evaluate({"authorizer": authz}) is True
    denied = cel.compile("authorizer.group('').resource('secrets').namespace('ns').check('list').allowed()",
                         variables=cel.WEBHOOK_VARIABLES)
    assert denied.evaluate({"authorizer": authz}) is False
    server.authorizer.close()
    await server.store.close()
