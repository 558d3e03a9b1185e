"""CertificateSigningRequests in the API server: kube's strategies for the object and its status and
approval subresources, and the CertificateApproval, CertificateSigning and CertificateSubjectRestriction
admission checks."""

from __future__ import annotations

import datetime
from typing import Any

from cryptography.x509.oid import NameOID

from pocketkube.api import errors
from pocketkube.api import validation_certificates as vcert
from pocketkube.apiserver import context, objects, rbac
from pocketkube.base import clock as clock_mod

KIND = (vcert.GROUP, vcert.KIND)
RESOURCE = "certificatesigningrequests"
KUBE_APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
MASTERS = "system:masters"


def is_csr(group: str, kind: str) -> bool:
    return (group, kind) == KIND


# --- strategy --------------------------------------------------------------------------------

def stamp_requester(obj: dict[str, Any], user: context.User) -> None:
    """Record who asked (spec.username/uid/groups/extra); whatever the client sent there is dropped."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        spec = obj["spec"] = {}
    for key in ("username", "uid", "groups", "extra"):
        spec.pop(key, None)
    spec["username"] = user.name
    if user.uid:
        spec["uid"] = user.uid
    if user.groups:
        spec["groups"] = list(user.groups)
    if user.extra:
        spec["extra"] = {k: list(v) for k, v in user.extra.items()}


def _status(obj: dict[str, Any]) -> dict[str, Any]:
    status = obj.get("status")
    return status if isinstance(status, dict) else {}


def _conditions(obj: dict[str, Any]) -> list[Any]:
    conds = _status(obj).get("conditions")
    return conds if isinstance(conds, list) else []


def _default_condition_status(conds: list[Any]) -> None:
    # certificates/v1 defaulting: a condition without a status is True.
    for c in conds:
        if isinstance(c, dict) and not c.get("status"):
            c["status"] = "True"


def prepare_update(new: dict[str, Any], old: dict[str, Any], *, subresource: str) -> None:
    """kube's csr strategies: spec never changes; the main resource keeps status, /status may change it but
    not existing Approved/Denied conditions, /approval changes only the conditions."""
    meta = new.setdefault("metadata", {})
    old_meta = old.get("metadata") or {}
    meta.pop("generation", None)
    if "generation" in old_meta:
        meta["generation"] = old_meta["generation"]
    if "spec" in old:
        new["spec"] = objects.clone(old["spec"])
    else:
        new.pop("spec", None)
    old_status = objects.clone(_status(old))
    if subresource == "status":
        status = _status(new)
        _default_condition_status(_conditions(new))
        for ctype in (vcert.APPROVED, vcert.DENIED):
            _preserve_instances(status, old_status, ctype)
        new["status"] = status
    elif subresource == "approval":
        conds = _conditions(new)
        _default_condition_status(conds)
        if conds:
            old_status["conditions"] = conds
        else:
            old_status.pop("conditions", None)
        new["status"] = old_status
    elif "status" in old:
        new["status"] = old_status
    else:
        new.pop("status", None)


def _preserve_instances(status: dict[str, Any], old_status: dict[str, Any], ctype: str) -> None:
    # Same number of conditions of this type: keep the stored ones; a different number fails validation.
    conds: list[Any] = status["conditions"] if isinstance(status.get("conditions"), list) else []
    old_conds: list[Any] = old_status["conditions"] if isinstance(old_status.get("conditions"), list) else []
    new_idx = [i for i, c in enumerate(conds) if isinstance(c, dict) and c.get("type") == ctype]
    old_list = [c for c in old_conds if isinstance(c, dict) and c.get("type") == ctype]
    if len(new_idx) != len(old_list):
        return
    for i, oc in zip(new_idx, old_list, strict=True):
        conds[i] = objects.clone(oc)


def populate_condition_timestamps(new: dict[str, Any], old: dict[str, Any], now: datetime.datetime) -> None:
    """Fill lastUpdateTime (now) and lastTransitionTime (kept while a condition's status is unchanged)."""
    stamp = clock_mod.rfc3339(now)
    old_conds = [c for c in _conditions(old) if isinstance(c, dict)]
    for c in _conditions(new):
        if not isinstance(c, dict):
            continue
        if not c.get("lastUpdateTime"):
            c["lastUpdateTime"] = stamp
        if not c.get("lastTransitionTime"):
            prior = next((o for o in old_conds if o.get("type") == c.get("type")), None)
            if prior is not None and prior.get("status") == c.get("status") and prior.get("lastTransitionTime"):
                c["lastTransitionTime"] = prior["lastTransitionTime"]
            else:
                c["lastTransitionTime"] = stamp


def status_update_errors(new: dict[str, Any], old: dict[str, Any]) -> list[errors.FieldError]:
    """What /status may not do that /approval may: add (or drop) Approved or Denied conditions."""
    out = []
    for ctype in (vcert.APPROVED, vcert.DENIED):
        if len(vcert.find_conditions(new, ctype)) > len(vcert.find_conditions(old, ctype)):
            out.append(errors.forbidden("status.conditions", f'updates may not add a condition of type "{ctype}"'))
    return out


# --- admission -------------------------------------------------------------------------------

def _forbidden(call: context.Call, obj: dict[str, Any], why: str) -> errors.Forbidden:
    name = str((obj.get("metadata") or {}).get("name") or call.info.name or "")
    return errors.Forbidden(f'{errors.qualified(RESOURCE, vcert.GROUP)} "{name}" is forbidden: {why}',
                            details={"name": name, "group": vcert.GROUP, "kind": RESOURCE})


async def authorized_for_signer(server: context.Server, user: context.User, verb: str, signer: str) -> bool:
    """certificates.IsAuthorizedForSignerName: `verb` on signers/<signerName>, or on signers/<domain>/*."""
    authz = server.authorizer
    if authz is None or not hasattr(authz, "decide"):
        return True
    for name in (signer, signer.split("/", 1)[0] + "/*"):
        attrs = rbac.Attributes(verb, True, vcert.GROUP, "signers", "", "", name)
        if (await authz.decide(server, user, attrs))[0]:
            return True
    return False


def _signer(obj: dict[str, Any]) -> str:
    spec = obj.get("spec")
    return str(spec.get("signerName") or "") if isinstance(spec, dict) else ""


def _masters_requested(obj: dict[str, Any]) -> bool:
    request = vcert.decode_bytes((obj.get("spec") or {}).get("request"))
    try:
        csr = vcert.parse_csr(request)
    except vcert.CSRError:
        return False
    return any(a.value == MASTERS for a in csr.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME))


async def stamp(server: context.Server, call: context.Call, obj: dict[str, Any], old: dict[str, Any] | None,
                operation: str) -> None:
    """Mutating admission step for a new CSR: the requester, as kube's strategy sets it before admission."""
    if operation == "CREATE" and not call.info.subresource and is_csr(call.res.group, call.res.kind):
        stamp_requester(obj, call.user)


async def admit(server: context.Server, call: context.Call, obj: dict[str, Any], old: dict[str, Any] | None,
                operation: str) -> None:
    """Validating admission for CSRs: subject restriction, `approve` and `sign` permission on the signer."""
    if not is_csr(call.res.group, call.res.kind):
        return
    sub = call.info.subresource
    if operation == "CREATE" and not sub:
        if _signer(obj) == KUBE_APISERVER_CLIENT and _masters_requested(obj):
            raise _forbidden(call, obj, f"use of {KUBE_APISERVER_CLIENT} signer with {MASTERS} group is not allowed")
        return
    if operation != "UPDATE" or old is None:
        return
    if sub == "approval":
        populate_condition_timestamps(obj, old, server.clock.now())
        signer = _signer(obj)
        if not await authorized_for_signer(server, call.user, "approve", signer):
            raise _forbidden(call, obj, f'user not permitted to approve requests with signerName "{signer}"')
    elif sub == "status":
        causes = status_update_errors(obj, old)
        if causes:
            raise errors.Invalid(kind=vcert.KIND, group=vcert.GROUP, name=str(obj["metadata"].get("name") or ""),
                                 causes=causes)
        populate_condition_timestamps(obj, old, server.clock.now())
        new_status, old_status = _status(obj), _status(old)
        if (new_status.get("certificate") != old_status.get("certificate")
                or new_status.get("conditions") != old_status.get("conditions")):
            signer = _signer(old)
            if not await authorized_for_signer(server, call.user, "sign", signer):
                raise _forbidden(call, obj, f'user not permitted to sign requests with signerName "{signer}"')
