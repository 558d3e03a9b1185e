"""The serviceaccounts/token subresource: TokenRequest issues a signed, expiring, optionally object-bound token."""

from __future__ import annotations

import datetime
from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import admission_noderestriction, authn, context, negotiate, satokens, writes
from pocketkube.base import clock as clock_mod

GROUP = "authentication.k8s.io"
DEFAULT_SECONDS = 3600
MIN_SECONDS = 600
MAX_SECONDS = 1 << 32
_BINDABLE = {"Pod": "pods", "Secret": "secrets", "Node": "nodes"}


def _invalid(name: str, field: str, value: Any, detail: str) -> errors.Invalid:
    return errors.Invalid(kind="TokenRequest", group=GROUP, name=name, causes=[errors.invalid(field, value, detail)])


def validate_spec(spec: dict[str, Any]) -> None:
    """ValidateTokenRequest: the expiry must lie between 10 minutes and 2^32 seconds."""
    secs = spec.get("expirationSeconds")
    if not isinstance(secs, int) or isinstance(secs, bool):
        raise errors.BadRequest("spec.expirationSeconds must be an integer")
    if secs < MIN_SECONDS:
        raise _invalid("", "spec.expirationSeconds", secs, "may not specify a duration less than 10 minutes")
    if secs > MAX_SECONDS:
        raise _invalid("", "spec.expirationSeconds", secs, "may not specify a duration larger than 2^32 seconds")


def _split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


async def _get(server: context.Server, resource: str, namespace: str, name: str) -> dict[str, Any]:
    res = server.registry.get("", "v1", resource)
    assert res is not None
    obj: dict[str, Any] = await server.objects.get(res, namespace, name)
    return obj


async def bound_objects(server: context.Server, sa_name: str, namespace: str, ref: dict[str, Any]
                        ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, dict[str, Any] | None]:
    """(pod, secret, node) a token is bound to, checked as kube does (existence, account, uid)."""
    group, version = _split_api_version(str(ref.get("apiVersion") or ""))
    kind, name = str(ref.get("kind") or ""), str(ref.get("name") or "")
    if group != "" or kind not in _BINDABLE:
        raise errors.BadRequest(f"cannot bind token to object of type {group}/{version}, Kind={kind}")
    pod = secret = node = None
    if kind == "Pod":
        pod = await _get(server, "pods", namespace, name)
        if ((pod.get("spec") or {}).get("serviceAccountName") or "") != sa_name:
            raise errors.BadRequest(f'cannot bind token for serviceaccount "{sa_name}" to pod running with '
                                    "different serviceaccount name.")
        node_name = (pod.get("spec") or {}).get("nodeName")
        if node_name:
            # The pod's node goes into the claims too; a node that is gone is still named, without a uid.
            res = server.registry.get("", "v1", "nodes")
            assert res is not None
            node = await server.objects.get_or_none(res, "", node_name) or {"metadata": {"name": node_name}}
        target = pod
    elif kind == "Secret":
        secret = target = await _get(server, "secrets", namespace, name)
    else:
        node = target = await _get(server, "nodes", "", name)
    uid = str((target.get("metadata") or {}).get("uid") or "")
    if ref.get("uid") and ref["uid"] != uid:
        raise errors.Conflict.because(kind, "", name, f"the UID in the bound object reference ({ref['uid']}) does "
                                      "not match the UID in record. The object might have been deleted and then "
                                      "recreated")
    return pod, secret, node


async def create(server: context.Server, call: context.Call) -> tuple[dict[str, Any], int]:
    """POST serviceaccounts/NAME/token."""
    raw = await negotiate.read_body(call.request)
    req = negotiate.decode_object(raw, call.request.headers.get("Content-Type"), what="TokenRequest")
    writes.check_type(server, call, req)
    namespace, name = call.info.namespace, call.info.name
    meta = req.get("metadata") or {}
    if not isinstance(meta, dict):
        raise errors.BadRequest("metadata: expected an object")
    if meta.get("name") and meta["name"] != name:
        raise _invalid(name, "metadata.name", meta["name"], "must match the service account name if specified")
    if meta.get("namespace") and meta["namespace"] != namespace:
        raise _invalid(name, "metadata.namespace", meta["namespace"],
                       "must match the service account namespace if specified")
    sa = await _get(server, "serviceaccounts", namespace, name)
    auth = authn.of(server)
    spec = req.get("spec") or {}
    if not isinstance(spec, dict):
        raise errors.BadRequest("spec: expected an object")
    spec = dict(spec)
    if not spec.get("audiences"):
        spec["audiences"] = list(auth.audiences)
    if not isinstance(spec["audiences"], list) or not all(isinstance(a, str) for a in spec["audiences"]):
        raise errors.BadRequest("spec.audiences must be a list of strings")
    if spec.get("expirationSeconds") is None:
        spec["expirationSeconds"] = DEFAULT_SECONDS
    spec.setdefault("boundObjectRef", None)
    now = server.clock.now().replace(microsecond=0)
    validate_spec(spec)
    if admission_noderestriction.admit in server.admission:  # a kubelet may only mint tokens for its own pods
        await admission_noderestriction.admit(server, call, {**req, "spec": spec}, None, "CREATE")
    ref = spec.get("boundObjectRef")
    pod = secret = node = None
    if ref is not None:
        if not isinstance(ref, dict):
            raise errors.BadRequest("spec.boundObjectRef: expected an object")
        pod, secret, node = await bound_objects(server, name, namespace, ref)
    if auth.signer is None:
        raise errors.InternalError("failed to generate token: no service account signing key is configured")
    secs = int(spec["expirationSeconds"])
    exp, warn_after = secs, 0
    if pod is not None and secs == satokens.WARN_ONLY_SECONDS and all(a in auth.audiences for a in spec["audiences"]):
        # kube's safe roll-out of bound tokens: valid for a year, but stale (audited) after the asked time.
        exp, warn_after = satokens.EXTENDED_SECONDS, secs
    claims = satokens.bound_claims(sa, audiences=spec["audiences"], expiration_seconds=exp, now=now, pod=pod,
                                   secret=secret, node=node, warn_after=warn_after)
    out_meta = {"name": name, "namespace": namespace, "creationTimestamp": clock_mod.rfc3339(now)}
    return {
        "kind": "TokenRequest", "apiVersion": f"{GROUP}/v1", "metadata": out_meta, "spec": spec,
        "status": {"token": auth.signer.sign(claims),
                   "expirationTimestamp": clock_mod.rfc3339(now + datetime.timedelta(seconds=secs))},
    }, 201
