"""Per-resource type behaviour, built-in or CRD: schema, defaulting, validation, unknown fields."""

from __future__ import annotations

from typing import Any

import orjson

from pocketkube.api import (
    defaults,
    errors,
    fieldcheck,
    gotypes,
    names,
    omitempty,
    resources,
    schemas,
    validation,
)
from pocketkube.apiserver import context, crds, csr


def schema_for(server: context.Server, res: resources.Resource) -> tuple[dict[str, Any] | None, Any]:
    """The object's schema and a $ref resolver, for patching and field ownership."""
    if res.crd and server.crds is not None:
        return server.crds.schema(res), _identity
    name = schemas.definition_name(res.group, res.version, res.kind)
    return (schemas.definitions().get(name) if name else None), schemas.resolve


def _identity(node: dict[str, Any] | None) -> dict[str, Any] | None:
    return node


_CRD_KIND = ("apiextensions.k8s.io", "CustomResourceDefinition")


def apply_defaults(server: context.Server, res: resources.Resource, obj: dict[str, Any],
                   old: dict[str, Any] | None = None) -> None:
    if (res.group, res.kind) == _CRD_KIND:
        defaults.apply_defaults(obj, res.group, res.version, res.kind)
        crds.default_crd(obj, old)
        return
    if res.crd:
        if server.crds is not None:
            server.crds.apply_defaults(res, obj)
        return
    defaults.apply_defaults(obj, res.group, res.version, res.kind)
    # kube-apiserver stores what its Go structs encode to: emptied omitempty fields disappear.
    omitempty.prune(obj)


def unknown_fields(server: context.Server, res: resources.Resource, obj: dict[str, Any]) -> list[str]:
    if res.crd:
        return server.crds.unknown_fields(res, obj) if server.crds is not None else []
    return fieldcheck.unknown_fields(obj, res.group, res.version, res.kind)


def validate(server: context.Server, res: resources.Resource, obj: dict[str, Any],
             old: dict[str, Any] | None, *, subresource: str = "") -> None:
    """Raise errors.Invalid (422) listing every field error, as kube-apiserver does."""
    if (res.group, res.kind) == _CRD_KIND:
        causes = crds.validate_crd(obj, old)
    elif res.crd:
        causes = validation.validate_metadata(obj.get("metadata") or {}, namespaced=res.namespaced,
                                              name_validator=names.name_is_dns_subdomain)
        if server.crds is not None:
            causes = list(causes) + server.crds.validate(res, obj, old)
    elif old is None:
        causes = validation.validate_create(obj, res.group, res.version, res.kind, namespaced=res.namespaced)
    else:
        causes = validation.validate_update(obj, old, res.group, res.version, res.kind, namespaced=res.namespaced)
        if subresource == "status" and csr.is_csr(res.group, res.kind):
            # kube's CSR status strategy validates both at once: one 422 names every cause.
            causes = list(causes) + csr.status_update_errors(obj, old)
    if causes:
        raise errors.Invalid(kind=res.kind, group=res.group, name=(obj.get("metadata") or {}).get("name", ""),
                             causes=causes)


def check_fields(server: context.Server, call: context.Call, obj: dict[str, Any], *, patched: bool = False) -> None:
    """A patched object's Go type errors (422), then fieldValidation=Strict rejects unknown fields and Warn
    (the default) reports them as warnings."""
    mode = call.param("fieldValidation", "Warn")
    if mode not in ("Strict", "Warn", "Ignore"):
        raise errors.BadRequest(f"fieldValidation parameter unsupported: {mode}. Must be one of: Ignore, Warn, Strict")
    res = call.res
    # Request bodies get Go's type errors in writes.check_type; a patched object that does not decode into
    # the Go struct is kube's 422 on the field "patch", holding the patched JSON.
    if patched and not res.crd and (problem := gotypes.type_error(obj, res.group, res.version, res.kind)):
        text = orjson.dumps(obj).decode()
        raise errors.Invalid(kind="", group="", name="", causes=[errors.invalid("patch", text, problem)])
    if mode == "Ignore":
        return
    unknown = unknown_fields(server, call.res, obj)
    if not unknown:
        return
    if mode == "Strict":
        raise errors.BadRequest(fieldcheck.strict_error_message(call.res.kind, call.res.version, unknown))
    call.warnings.extend(unknown)
