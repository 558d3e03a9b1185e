"""Which admission webhooks a request calls, and the AdmissionReview exchanged with them, as pure functions."""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from pocketkube.api import errors, selectors

# kube-apiserver never sends its own admission configuration objects to webhooks, so a broken
# webhook cannot lock the configuration that would fix it.
EXEMPT_KINDS = frozenset({
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicyBinding"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicy"),
    ("admissionregistration.k8s.io", "MutatingAdmissionPolicyBinding"),
})

REVIEW_VERSIONS = ("v1", "v1beta1")
DEFAULT_TIMEOUT = 10
MAX_TIMEOUT = 30

PATCH_PREFIX = "patch.webhook.admission.k8s.io/"
MUTATION_PREFIX = "mutation.webhook.admission.k8s.io/"
FAILED_OPEN_MUTATING = "failed-open." + MUTATION_PREFIX
FAILED_OPEN_VALIDATING = "failed-open.validating.webhook.admission.k8s.io/"


@dataclasses.dataclass(frozen=True)
class GVRK:
    """A resource at one version with the kind it carries (for a subresource: the subresource's kind)."""

    group: str
    version: str
    resource: str
    kind_group: str
    kind_version: str
    kind: str


@dataclasses.dataclass(frozen=True)
class Attributes:
    """What admission knows about one request, in the version the client used."""

    operation: str               # CREATE, UPDATE, DELETE or CONNECT
    request: GVRK
    subresource: str
    namespace: str
    name: str
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    dry_run: bool = False
    user: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # authentication.k8s.io UserInfo
    options: dict[str, Any] | None = None

    @property
    def is_namespace(self) -> bool:
        return (self.request.group, self.request.resource) == ("", "namespaces")


@dataclasses.dataclass(frozen=True)
class Hook:
    """One webhook of a configuration, defaults applied and selectors parsed."""

    name: str
    configuration: str
    index: int                   # position among all webhooks of its phase, for audit keys
    mutating: bool
    rules: tuple[Mapping[str, Any], ...]
    namespace_selector: selectors.Selector | None   # None: the selector is invalid (see selector_error)
    object_selector: selectors.Selector | None
    selector_error: str
    match_policy: str
    failure_policy: str
    side_effects: str | None
    timeout_seconds: int
    review_versions: tuple[str, ...]
    client_config: Mapping[str, Any]
    reinvocation_policy: str
    match_conditions: tuple[tuple[str, str], ...]

    @property
    def uid(self) -> str:
        return f"{self.configuration}/{self.name}/{self.index}"

    @property
    def ignores_failures(self) -> bool:
        return self.failure_policy == "Ignore"


@dataclasses.dataclass(frozen=True)
class Invocation:
    """A hook that applies, and the resource/kind (perhaps an equivalent one) the request is sent as."""

    hook: Hook
    resource: GVRK
    subresource: str


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _selector(value: Any) -> tuple[selectors.Selector | None, str]:
    # v1 defaulting turns a missing selector into {}, which selects everything.
    try:
        return selectors.from_label_selector(value, nil_matches_everything=True), ""
    except errors.APIError as e:
        return None, e.message


def compile_configuration(config: Mapping[str, Any], *, mutating: bool, first_index: int = 0) -> list[Hook]:
    """The hooks of one Mutating/ValidatingWebhookConfiguration, with kube's v1 defaults filled in."""
    name = str(_dict(config.get("metadata")).get("name") or "")
    hooks = []
    for i, raw in enumerate(_list(config.get("webhooks"))):
        w = _dict(raw)
        ns_sel, ns_err = _selector(w.get("namespaceSelector"))
        obj_sel, obj_err = _selector(w.get("objectSelector"))
        timeout = w.get("timeoutSeconds")
        conditions = tuple((str(_dict(c).get("name") or ""), str(_dict(c).get("expression") or ""))
                           for c in _list(w.get("matchConditions")))
        hooks.append(Hook(
            name=str(w.get("name") or ""), configuration=name, index=first_index + i, mutating=mutating,
            rules=tuple(_dict(r) for r in _list(w.get("rules"))),
            namespace_selector=ns_sel, object_selector=obj_sel, selector_error=ns_err or obj_err,
            match_policy=str(w.get("matchPolicy") or "Equivalent"),
            failure_policy=str(w.get("failurePolicy") or "Fail"),
            side_effects=w.get("sideEffects") if isinstance(w.get("sideEffects"), str) else None,
            timeout_seconds=timeout if isinstance(timeout, int) and 0 < timeout <= MAX_TIMEOUT else DEFAULT_TIMEOUT,
            review_versions=tuple(str(v) for v in _list(w.get("admissionReviewVersions"))),
            client_config=_dict(w.get("clientConfig")),
            reinvocation_policy=str(w.get("reinvocationPolicy") or "Never"),
            match_conditions=conditions))
    return hooks


# --- rules -----------------------------------------------------------------------------------

def _listed(items: Any, requested: str) -> bool:
    return any(item in ("*", requested) for item in _list(items))


def scope_matches(scope: Any, attrs: Attributes) -> bool:
    """A rule's scope: a Namespace object itself counts as cluster-scoped."""
    if scope in (None, "", "*"):
        return True
    if scope == "Namespaced":
        return not attrs.is_namespace and attrs.namespace != ""
    if scope == "Cluster":
        return attrs.is_namespace or attrs.namespace == ""
    return False


def _resource_listed(items: Any, resource: str, subresource: str) -> bool:
    for item in _list(items):
        if not isinstance(item, str):
            continue
        res, _, sub = item.partition("/")
        if res in ("*", resource) and sub in ("*", subresource):
            return True
    return False


def rule_matches(rule: Mapping[str, Any], attrs: Attributes, resource: GVRK) -> bool:
    """One RuleWithOperations against the request, with resource standing for the requested one."""
    return (scope_matches(rule.get("scope"), attrs)
            and _listed(rule.get("operations"), attrs.operation)
            and _listed(rule.get("apiGroups"), resource.group)
            and _listed(rule.get("apiVersions"), resource.version)
            and _resource_listed(rule.get("resources"), resource.resource, attrs.subresource))


def find_invocation(hook: Hook, attrs: Attributes, equivalents: Sequence[GVRK] = ()) -> Invocation | None:
    """The invocation when a rule matches the request, or (matchPolicy Equivalent) an equivalent resource."""
    for rule in hook.rules:
        if rule_matches(rule, attrs, attrs.request):
            return Invocation(hook, attrs.request, attrs.subresource)
    if hook.match_policy != "Equivalent":
        return None
    # Earlier rules win, as in kube: each rule is tried against every equivalent before the next rule.
    for rule in hook.rules:
        for eq in equivalents:
            if eq != attrs.request and rule_matches(rule, attrs, eq):
                return Invocation(hook, eq, attrs.subresource)
    return None


# --- selectors -------------------------------------------------------------------------------

def namespace_selector_needed(hook: Hook, attrs: Attributes) -> bool:
    """Whether the namespace's labels decide: cluster-scoped objects other than Namespaces always match."""
    if hook.namespace_selector is None or hook.namespace_selector.empty:
        return False
    return attrs.namespace != "" or attrs.is_namespace


def own_namespace_labels(attrs: Attributes) -> Mapping[str, str] | None:
    """A Namespace being created or updated is matched on its own (new) labels; None: read the namespace."""
    if attrs.is_namespace and not attrs.subresource and attrs.operation in ("CREATE", "UPDATE"):
        return _labels(attrs.object)
    return None


def _labels(obj: Mapping[str, Any] | None) -> dict[str, str]:
    labels = _dict(_dict((obj or {}).get("metadata")).get("labels"))
    return {k: v for k, v in labels.items() if isinstance(v, str)}


def object_selector_matches(hook: Hook, attrs: Attributes) -> bool:
    """The objectSelector matches the new or the old object's labels (a missing object never matches)."""
    sel = hook.object_selector
    if sel is None or sel.empty:
        return True
    return any(obj is not None and sel.matches(_labels(obj)) for obj in (attrs.object, attrs.old_object))


# --- dry run ---------------------------------------------------------------------------------

def dry_run_refusal(hook: Hook) -> str | None:
    """Why this hook may not see a dry-run request ('' for a call failure), or None when it may."""
    if hook.side_effects is None:
        return ""
    if hook.side_effects in ("None", "NoneOnDryRun"):
        return None
    return f'admission webhook "{hook.name}" does not support dry run'


# --- the AdmissionReview ---------------------------------------------------------------------

def review_version(hook: Hook) -> str | None:
    """The first AdmissionReview version the hook accepts that this server speaks."""
    for v in hook.review_versions:
        if v in REVIEW_VERSIONS:
            return v
    return None


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _gvr(group: str, version: str, resource: str) -> dict[str, str]:
    return {"group": group, "version": version, "resource": resource}


def admission_request(invocation: Invocation, attrs: Attributes, *, uid: str, obj: dict[str, Any] | None,
                      old: dict[str, Any] | None) -> dict[str, Any]:
    """The AdmissionRequest: obj/old already converted to the invocation's version."""
    res, req = invocation.resource, attrs.request
    request: dict[str, Any] = {
        "uid": uid,
        "kind": _gvk(res.kind_group, res.kind_version, res.kind),
        "resource": _gvr(res.group, res.version, res.resource),
    }
    if invocation.subresource:
        request["subResource"] = invocation.subresource
    request["requestKind"] = _gvk(req.kind_group, req.kind_version, req.kind)
    request["requestResource"] = _gvr(req.group, req.version, req.resource)
    if attrs.subresource:
        request["requestSubResource"] = attrs.subresource
    if attrs.name:
        request["name"] = attrs.name
    if attrs.namespace:
        request["namespace"] = attrs.namespace
    request["operation"] = attrs.operation
    request["userInfo"] = dict(attrs.user)
    request["object"] = obj
    request["oldObject"] = old
    request["dryRun"] = attrs.dry_run
    request["options"] = attrs.options
    return request


def review(version: str, request: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "AdmissionReview", "apiVersion": f"admission.k8s.io/{version}", "request": request}


@dataclasses.dataclass(frozen=True)
class Response:
    """A verified AdmissionResponse."""

    allowed: bool
    result: dict[str, Any] | None
    patch: bytes
    patch_type: str
    warnings: tuple[str, ...]
    audit_annotations: dict[str, str]


class ResponseError(Exception):
    """The webhook's answer is not a usable AdmissionReview (kube: a call failure)."""


def verify_response(body: bytes, *, uid: str, version: str, mutating: bool) -> Response:
    """Decode and check the webhook's AdmissionReview as kube's VerifyAdmissionResponse does."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise ResponseError(f"failed to call webhook: invalid character in response body: {e}") from None
    if not isinstance(doc, dict):
        raise ResponseError("failed to call webhook: the response body is not a JSON object")
    resp = doc.get("response")
    if not isinstance(resp, dict):
        raise ResponseError("received invalid webhook response: webhook response was absent")
    if version == "v1":
        if resp.get("uid") != uid:
            raise ResponseError(f'received invalid webhook response: expected response.uid="{uid}", '
                                f'got "{resp.get("uid") or ""}"')
        group, _, ver = str(doc.get("apiVersion") or "").rpartition("/")
        if (group, ver, doc.get("kind")) != ("admission.k8s.io", "v1", "AdmissionReview"):
            raise ResponseError("received invalid webhook response: expected webhook response of "
                                "admission.k8s.io/v1, Kind=AdmissionReview, got "
                                f"{group + '/' if group else ''}{ver}, Kind={doc.get('kind') or ''}")
    raw_patch = resp.get("patch") or ""
    patch_type = resp.get("patchType") or ""
    try:
        patch = base64.b64decode(raw_patch, validate=True) if isinstance(raw_patch, str) else b""
    except (binascii.Error, ValueError):
        raise ResponseError("failed to call webhook: illegal base64 data in response.patch") from None
    if patch and not patch_type and version == "v1":
        raise ResponseError("received invalid webhook response: webhook returned response.patch but not "
                            "response.patchType")
    if patch_type and not patch and version == "v1":
        raise ResponseError("received invalid webhook response: webhook returned response.patchType but not "
                            "response.patch")
    if not mutating and patch:
        raise ResponseError("received invalid webhook response: validating webhook may not return response.patch")
    if not mutating and patch_type:
        raise ResponseError("received invalid webhook response: validating webhook may not return "
                            "response.patchType")
    annotations = {str(k): str(v) for k, v in _dict(resp.get("auditAnnotations")).items()}
    warnings = tuple(str(w) for w in _list(resp.get("warnings")) if isinstance(w, str) and w)
    result = resp.get("status") if isinstance(resp.get("status"), dict) else None
    return Response(allowed=resp.get("allowed") is True, result=result, patch=patch, patch_type=str(patch_type),
                    warnings=warnings, audit_annotations=annotations)


def denial_status(hook_name: str, result: Mapping[str, Any] | None) -> dict[str, Any]:
    """kube's ToStatusErr: the webhook's Status, at least a 400 Failure, with the message prefixed."""
    status = dict(result or {})
    denied = f'admission webhook "{hook_name}" denied the request'
    code = status.get("code")
    if not isinstance(code, int) or code < 400:
        code = 400
    message, reason = status.get("message"), status.get("reason")
    if isinstance(message, str) and message:
        text = f"{denied}: {message}"
    elif isinstance(reason, str) and reason:
        text = f"{denied}: {reason}"
    else:
        text = f"{denied} without explanation"
    out: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": _dict(status.get("metadata")),
                           "status": "Failure", "message": text}
    if isinstance(reason, str) and reason:
        out["reason"] = reason
    if isinstance(status.get("details"), dict):
        out["details"] = status["details"]
    out["code"] = code
    return out


def mutation_annotation(hook: Hook, *, mutated: bool) -> str:
    return orjson.dumps({"configuration": hook.configuration, "webhook": hook.name, "mutated": mutated}).decode()


def patch_annotation(hook: Hook, patch: Any) -> str:
    return orjson.dumps({"configuration": hook.configuration, "webhook": hook.name, "patch": patch,
                         "patchType": "JSONPatch"}).decode()


def audit_key(prefix: str, *, round_: int, index: int) -> str:
    return f"{prefix}round_{round_}_index_{index}"


def go_duration(seconds: int) -> str:
    """The `timeout` query parameter as Go formats a whole number of seconds."""
    if seconds < 60:
        return f"{seconds}s"
    return f"{seconds // 60}m{seconds % 60}s"


def timeout_query(seconds: int) -> str:
    return f"timeout={go_duration(seconds)}"
