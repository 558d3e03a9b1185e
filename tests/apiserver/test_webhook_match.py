"""Specification of webhook matching (rules, scope, selectors, matchPolicy) and of the AdmissionReview exchange."""

from __future__ import annotations

import base64
import dataclasses
import json
from typing import Any

import pytest

from pocketkube.api import resources
from pocketkube.apiserver import webhook_client, webhooks
from pocketkube.apiserver import webhook_match as wm

PODS = wm.GVRK("", "v1", "pods", "", "v1", "Pod")
DEPLOY = wm.GVRK("apps", "v1", "deployments", "apps", "v1", "Deployment")
NAMESPACES = wm.GVRK("", "v1", "namespaces", "", "v1", "Namespace")
HPA_V1 = wm.GVRK("autoscaling", "v1", "horizontalpodautoscalers", "autoscaling", "v1", "HorizontalPodAutoscaler")
HPA_V2 = wm.GVRK("autoscaling", "v2", "horizontalpodautoscalers", "autoscaling", "v2", "HorizontalPodAutoscaler")


def attrs(request: wm.GVRK = PODS, *, operation: str = "CREATE", subresource: str = "", namespace: str = "ns",
          obj: dict[str, Any] | None = None, old: dict[str, Any] | None = None, dry_run: bool = False) -> wm.Attributes:
    return wm.Attributes(operation=operation, request=request, subresource=subresource, namespace=namespace,
                         name="x", object=obj, old_object=old, dry_run=dry_run, user={"username": "alice"})


def rule(ops: tuple[str, ...] = ("*",), groups: tuple[str, ...] = ("*",), versions: tuple[str, ...] = ("*",),
         res: tuple[str, ...] = ("*",), scope: str | None = None) -> dict[str, Any]:
    r: dict[str, Any] = {"operations": list(ops), "apiGroups": list(groups), "apiVersions": list(versions),
                         "resources": list(res)}
    if scope is not None:
        r["scope"] = scope
    return r


def hook(**fields: Any) -> wm.Hook:
    webhook = {"name": "h.example.com", "clientConfig": {"url": "https://127.0.0.1/x"}, "sideEffects": "None",
               "admissionReviewVersions": ["v1"], **fields}
    return wm.compile_configuration({"metadata": {"name": "cfg"}, "webhooks": [webhook]}, mutating=False)[0]


@pytest.mark.parametrize("r,a,want", [
    (rule(), attrs(), True),
    (rule(ops=("CREATE",)), attrs(), True),
    (rule(ops=("UPDATE", "DELETE")), attrs(), False),
    (rule(groups=("",), versions=("v1",), res=("pods",)), attrs(), True),
    (rule(groups=("apps",)), attrs(), False),
    (rule(versions=("v1beta1",)), attrs(), False),
    (rule(res=("services",)), attrs(), False),
    (rule(res=("pods",)), attrs(subresource="status"), False),
    (rule(res=("pods/status",)), attrs(subresource="status"), True),
    (rule(res=("pods/*",)), attrs(subresource="binding"), True),
    (rule(res=("pods/*",)), attrs(), True),
    (rule(res=("*/status",)), attrs(subresource="status"), True),
    (rule(res=("*/status",)), attrs(), False),
    (rule(res=("*",)), attrs(subresource="status"), False),
    (rule(res=("*/*",)), attrs(subresource="status"), True),
    (rule(scope="*"), attrs(namespace=""), True),
    (rule(scope="Namespaced"), attrs(), True),
    (rule(scope="Namespaced"), attrs(namespace=""), False),
    (rule(scope="Cluster"), attrs(), False),
    (rule(scope="Cluster"), attrs(namespace=""), True),
    # A Namespace object is cluster-scoped even though its namespace attribute is its own name.
    (rule(scope="Cluster"), attrs(NAMESPACES, namespace="team"), True),
    (rule(scope="Namespaced"), attrs(NAMESPACES, namespace="team"), False),
])
def test_rule_matches(r, a, want):
    """A rule matches on operation, group, version, resource/subresource (with `*`) and scope."""
    assert wm.rule_matches(r, a, a.request) is want


@pytest.mark.parametrize("policy,rules,want", [
    ("Equivalent", [rule(groups=("autoscaling",), versions=("v1",), res=("horizontalpodautoscalers",))], HPA_V1),
    ("Exact", [rule(groups=("autoscaling",), versions=("v1",), res=("horizontalpodautoscalers",))], None),
    ("Equivalent", [rule(groups=("autoscaling",), versions=("v2",), res=("horizontalpodautoscalers",))], HPA_V2),
    ("Equivalent", [rule(groups=("apps",))], None),
])
def test_match_policy(policy, rules, want):
    """With matchPolicy Equivalent a rule for another version of the same resource matches, sent in that version."""
    inv = wm.find_invocation(hook(matchPolicy=policy, rules=rules), attrs(HPA_V2), [HPA_V2, HPA_V1])
    assert (inv.resource if inv else None) == want


def test_compile_defaults():
    """A webhook without the optional fields gets kube's v1 defaults."""
    h = wm.compile_configuration({"metadata": {"name": "c"}, "webhooks": [{"name": "a"}, {"name": "b"}]},
                                 mutating=True, first_index=3)
    assert [(x.name, x.index, x.configuration) for x in h] == [("a", 3, "c"), ("b", 4, "c")]
    a = h[0]
    assert (a.failure_policy, a.match_policy, a.timeout_seconds, a.reinvocation_policy, a.side_effects) == \
        ("Fail", "Equivalent", 10, "Never", None)
    assert a.namespace_selector is not None and a.namespace_selector.empty


@pytest.mark.parametrize("selector,obj,old,want", [
    ({}, None, None, True),
    ({"matchLabels": {"a": "1"}}, {"metadata": {"labels": {"a": "1"}}}, None, True),
    ({"matchLabels": {"a": "1"}}, {"metadata": {"labels": {"a": "2"}}}, {"metadata": {"labels": {"a": "1"}}}, True),
    ({"matchLabels": {"a": "1"}}, {"metadata": {}}, None, False),
    ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"metadata": {}}, None, True),
    ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, None, None, False),
])
def test_object_selector(selector, obj, old, want):
    """objectSelector matches the new or the old object's labels; a missing object never matches."""
    assert wm.object_selector_matches(hook(objectSelector=selector), attrs(obj=obj, old=old)) is want


@pytest.mark.parametrize("selector,a,want", [
    ({}, attrs(), False),
    ({"matchLabels": {"team": "a"}}, attrs(), True),
    ({"matchLabels": {"team": "a"}}, attrs(namespace=""), False),    # cluster-scoped: never exempted
    ({"matchLabels": {"team": "a"}}, attrs(NAMESPACES, namespace=""), True),
])
def test_namespace_selector_needed(selector, a, want):
    """The namespace's labels are read only for namespaced requests (and Namespaces) with a non-empty selector."""
    assert wm.namespace_selector_needed(hook(namespaceSelector=selector), a) is want


def test_own_namespace_labels():
    """A Namespace being created or updated is matched on its own labels; other requests read the namespace."""
    ns = {"metadata": {"name": "team", "labels": {"team": "a"}}}
    assert wm.own_namespace_labels(attrs(NAMESPACES, obj=ns)) == {"team": "a"}
    assert wm.own_namespace_labels(attrs(NAMESPACES, operation="DELETE", old=ns)) is None
    assert wm.own_namespace_labels(attrs(obj=ns)) is None


@pytest.mark.parametrize("side_effects,want", [
    (None, ""), ("None", None), ("NoneOnDryRun", None),
    ("Some", 'admission webhook "h.example.com" does not support dry run'),
    ("Unknown", 'admission webhook "h.example.com" does not support dry run'),
])
def test_dry_run_refusal(side_effects, want):
    """Only side-effect-free webhooks see dry-run requests; an unset sideEffects is a call failure."""
    h = dataclasses.replace(hook(), side_effects=side_effects)
    assert wm.dry_run_refusal(h) == want


def test_admission_request_fields():
    """The AdmissionRequest names the matched and the requested resource, user, objects, dry run and options."""
    inv = wm.Invocation(hook(), HPA_V1, "")
    a = wm.Attributes(operation="UPDATE", request=HPA_V2, subresource="", namespace="ns", name="web",
                      object={"new": 1}, old_object={"old": 1}, dry_run=True, user={"username": "bob"},
                      options={"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"})
    req = wm.admission_request(inv, a, uid="u1", obj={"v1": 1}, old={"v1old": 1})
    assert req == {
        "uid": "u1",
        "kind": {"group": "autoscaling", "version": "v1", "kind": "HorizontalPodAutoscaler"},
        "resource": {"group": "autoscaling", "version": "v1", "resource": "horizontalpodautoscalers"},
        "requestKind": {"group": "autoscaling", "version": "v2", "kind": "HorizontalPodAutoscaler"},
        "requestResource": {"group": "autoscaling", "version": "v2", "resource": "horizontalpodautoscalers"},
        "name": "web", "namespace": "ns", "operation": "UPDATE", "userInfo": {"username": "bob"},
        "object": {"v1": 1}, "oldObject": {"v1old": 1}, "dryRun": True,
        "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}}
    assert wm.review("v1beta1", req)["apiVersion"] == "admission.k8s.io/v1beta1"


def _answer(response: dict[str, Any], api_version: str = "admission.k8s.io/v1") -> bytes:
    return json.dumps({"apiVersion": api_version, "kind": "AdmissionReview", "response": response}).encode()


PATCH = base64.b64encode(b'[{"op":"add","path":"/a","value":1}]').decode()


@pytest.mark.parametrize("body,version,mutating,error", [
    (_answer({"uid": "u", "allowed": True}), "v1", False, None),
    (_answer({"uid": "other", "allowed": True}), "v1", False,
     'received invalid webhook response: expected response.uid="u", got "other"'),
    (_answer({"uid": "other", "allowed": True}, "admission.k8s.io/v1beta1"), "v1beta1", False, None),
    (_answer({"uid": "u", "allowed": True}, "admission.k8s.io/v1beta1"), "v1", False,
     "received invalid webhook response: expected webhook response of admission.k8s.io/v1, Kind=AdmissionReview, "
     "got admission.k8s.io/v1beta1, Kind=AdmissionReview"),
    (json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}).encode(), "v1", False,
     "received invalid webhook response: webhook response was absent"),
    (_answer({"uid": "u", "allowed": True, "patch": PATCH}), "v1", True,
     "received invalid webhook response: webhook returned response.patch but not response.patchType"),
    (_answer({"uid": "u", "allowed": True, "patchType": "JSONPatch"}), "v1", True,
     "received invalid webhook response: webhook returned response.patchType but not response.patch"),
    (_answer({"uid": "u", "allowed": True, "patch": PATCH, "patchType": "JSONPatch"}), "v1", False,
     "received invalid webhook response: validating webhook may not return response.patch"),
    (_answer({"uid": "u", "allowed": True, "patch": PATCH, "patchType": "JSONPatch"}), "v1", True, None),
])
def test_verify_response(body, version, mutating, error):
    """The webhook's AdmissionReview is checked as kube's VerifyAdmissionResponse checks it."""
    if error is None:
        assert wm.verify_response(body, uid="u", version=version, mutating=mutating).allowed
    else:
        with pytest.raises(wm.ResponseError) as e:
            wm.verify_response(body, uid="u", version=version, mutating=mutating)
        assert str(e.value) == error


def test_verify_response_fields():
    """Patch, warnings and audit annotations of a response are decoded."""
    got = wm.verify_response(_answer({"uid": "u", "allowed": True, "patch": PATCH, "patchType": "JSONPatch",
                                      "warnings": ["w1"], "auditAnnotations": {"k": "v"}}),
                             uid="u", version="v1", mutating=True)
    assert (got.patch, got.patch_type, got.warnings, got.audit_annotations) == \
        (b'[{"op":"add","path":"/a","value":1}]', "JSONPatch", ("w1",), {"k": "v"})


@pytest.mark.parametrize("result,want", [
    (None, {"message": 'admission webhook "h" denied the request without explanation', "code": 400}),
    ({"message": "no"}, {"message": 'admission webhook "h" denied the request: no', "code": 400}),
    ({"reason": "Forbidden", "code": 403},
     {"message": 'admission webhook "h" denied the request: Forbidden', "reason": "Forbidden", "code": 403}),
    ({"message": "m", "code": 200}, {"message": 'admission webhook "h" denied the request: m', "code": 400}),
    ({"message": "m", "code": 422, "details": {"name": "x"}},
     {"message": 'admission webhook "h" denied the request: m', "details": {"name": "x"}, "code": 422}),
])
def test_denial_status(result, want):
    """A refusal keeps the webhook's code (at least 400), reason and details, with kube's message prefix."""
    assert wm.denial_status("h", result) == {"kind": "Status", "apiVersion": "v1", "metadata": {},
                                             "status": "Failure", **want}


@pytest.mark.parametrize("seconds,want", [(1, "1s"), (10, "10s"), (30, "30s")])
def test_timeout_query(seconds, want):
    """The timeout query parameter is a Go duration."""
    assert wm.timeout_query(seconds) == f"timeout={want}"


@pytest.mark.parametrize("group,version,resource,sub,want", [
    ("", "v1", "pods", "", ("", "v1", "Pod")),
    ("", "v1", "pods", "status", ("", "v1", "Pod")),
    ("apps", "v1", "deployments", "scale", ("autoscaling", "v1", "Scale")),
])
def test_request_kind(group, version, resource, sub, want):
    """A subresource request carries the subresource's kind (Scale), except status which carries the parent's."""
    res = resources.Registry.builtin().get(group, version, resource)
    got = webhooks.gvrk(res, sub)
    assert (got.kind_group, got.kind_version, got.kind) == want


@pytest.mark.parametrize("code,body,want", [
    (500, b"boom", 'an error on the server ("boom") has prevented the request from succeeding'),
    (404, b"nope", "the server could not find the requested resource"),
    (418, b"", "the server responded with the status code 418 but did not return more information"),
    (403, b'{"kind":"Status","message":"go away"}', "go away"),
])
def test_http_error(code, body, want):
    """A non-2xx answer is worded as client-go words it."""
    assert webhook_client.http_error(code, body) == want
