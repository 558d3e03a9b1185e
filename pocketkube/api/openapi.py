"""The OpenAPI documents the API server serves: /openapi/v2, the /openapi/v3 index and its per-path documents."""

from __future__ import annotations

import copy
import functools
import hashlib
from collections.abc import Iterable
from typing import Any

import orjson

from pocketkube.api import openapi_v3, schemas
from pocketkube.api import resources as resources_mod

TITLE = "Kubernetes"
# kube-apiserver 1.31+ reports its emulation version (major.minor) as the OpenAPI info version.
INFO_VERSION = "1.32"
META = openapi_v3.META
_OBJECT_META = META + "ObjectMeta"
_LIST_META = META + "ListMeta"
_TYPE_META_DOCS = {
    "apiVersion": "APIVersion defines the versioned schema of this representation of an object. Servers should convert recognized schemas to the latest internal value, and may reject unrecognized values. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#resources",
    "kind": "Kind is a string value representing the REST resource this object represents. Servers may infer this from the endpoint the client submits requests to. Cannot be updated. In CamelCase. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds",
}
_OBJECT_META_DOC = "Standard object's metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata"
_LIST_META_DOC = "Standard list metadata. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#types-kinds"
_SECURITY = {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication",
                             "name": "authorization", "in": "header"}}

_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
_INT_OR_STRING_DOC = "IntOrString is a type that can hold an int32 or a string.  When used in JSON or YAML marshalling and unmarshalling, it produces or consumes the inner type.  This allows you to have, for example, a JSON field that can accept a name or number."

Definitions = dict[str, dict[str, Any]]


# ---- serialisation --------------------------------------------------------------------------------

def serialize(doc: dict[str, Any]) -> bytes:
    """The bytes served for a document; hash and cache these per registry generation."""
    return orjson.dumps(doc)


def document_hash(doc: dict[str, Any] | bytes) -> str:
    """Uppercase hex SHA-512 of the serialised document, as /openapi/v3 advertises in `?hash=`.

    The server answers a request whose `hash` matches with `Cache-Control: public, immutable`
    (and an `Expires` a year ahead); a stale or missing hash gets `no-cache, private`.
    """
    data = doc if isinstance(doc, bytes) else serialize(doc)
    return hashlib.sha512(data).hexdigest().upper()


# ---- names ----------------------------------------------------------------------------------------

def crd_definition_name(group: str, version: str, kind: str) -> str:
    """The model name kube-apiserver gives a custom kind: example.com/v1 Widget -> com.example.v1.Widget."""
    return ".".join([*reversed(group.split(".")), version, kind])


def _gvk_index(extra: Definitions | None) -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in (extra or {}).items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            index.setdefault((gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", "")), name)
    return index


def _type_name(r: resources_mod.Resource, extra_index: dict[tuple[str, str, str], str]) -> str | None:
    key = (r.group, r.version, r.kind)
    if key in extra_index:
        return extra_index[key]
    if r.crd:
        return None
    return schemas.definition_name(r.group, r.version, r.kind)


def _resource_paths(rs: Iterable[resources_mod.Resource],
                    extra_index: dict[tuple[str, str, str], str]) -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for r in rs:
        name = _type_name(r, extra_index)
        if name is not None:
            paths.update(openapi_v3.resource_paths(r, name))
    return paths


def _group_versions(rs: Iterable[resources_mod.Resource]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for r in rs:
        seen.setdefault((r.group, r.version), None)
    return list(seen)


# ---- v2 ---------------------------------------------------------------------------------------------

def v2_document(resources: list[resources_mod.Resource], *,
                extra_definitions: Definitions | None = None) -> dict[str, Any]:
    """The Swagger 2.0 document of /openapi/v2: every definition plus the paths of every resource."""
    extra_index = _gvk_index(extra_definitions)
    paths: dict[str, Any] = {}
    for item in _discovery_paths(resources).values():
        paths.update(item)
    for group, version in _group_versions(resources):
        paths.update(_gv_root(group, version))
    paths.update(_resource_paths(resources, extra_index))
    definitions: Definitions = dict(schemas.definitions())
    definitions[_INT_OR_STRING] = {"description": _INT_OR_STRING_DOC, **definitions[_INT_OR_STRING]}
    for name, schema in (extra_definitions or {}).items():
        definitions[name] = _v2_structural(schema)
    return {
        "swagger": "2.0",
        "info": {"title": TITLE, "version": INFO_VERSION},
        "paths": {p: openapi_v3.v2_path_item(paths[p]) for p in sorted(paths)},
        "definitions": definitions,
        "securityDefinitions": _SECURITY,
        "security": [{"BearerToken": []}],
    }


def _v2_structural(node: Any) -> Any:
    # What kube-apiserver strips from CRD schemas for v2 clients (kubectl's old validator would
    # otherwise reject valid objects): value validations it cannot express, nullable, and the
    # properties of objects that preserve unknown fields.
    if isinstance(node, list):
        return [_v2_structural(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k in ("oneOf", "anyOf", "allOf", "not", "nullable", "x-kubernetes-validations"):
            continue
        if k == "properties" and isinstance(v, dict):
            out[k] = {pk: _v2_structural(pv) for pk, pv in v.items()}
        elif k in ("items", "additionalProperties") and isinstance(v, dict):
            out[k] = _v2_structural(v)
        else:
            out[k] = v
    if node.get("nullable") is True and "$ref" not in node:
        out.pop("type", None)
        out.pop("items", None)
        out.pop("properties", None)
    if node.get("x-kubernetes-preserve-unknown-fields") is True and not node.get("x-kubernetes-group-version-kind"):
        out.pop("properties", None)
        out.pop("items", None)
    if node.get("x-kubernetes-int-or-string") is True:
        out.pop("type", None)
    return out


# ---- v3 ---------------------------------------------------------------------------------------------

@functools.cache
def _builtin_v3(name: str) -> dict[str, Any]:
    # v3 spells the two union scalars as oneOf without a type, which is also what makes
    # kubectl explain print <IntOrString> and <Quantity> instead of <string>.
    if name == _INT_OR_STRING:
        return {"description": _INT_OR_STRING_DOC, "format": "int-or-string",
                "oneOf": [{"type": "integer"}, {"type": "string"}]}
    if name == _QUANTITY:
        return {"description": schemas.definitions()[name].get("description", ""),
                "oneOf": [{"type": "string"}, {"type": "number"}]}
    return openapi_v3.to_v3_schema(schemas.definitions()[name])


@functools.cache
def _builtin_refs(name: str) -> frozenset[str]:
    return frozenset(openapi_v3.refs(schemas.definitions()[name], set()))


def _components(roots: set[str], extra: Definitions | None) -> dict[str, Any]:
    builtin = schemas.definitions()
    extra = extra or {}
    todo = list(roots)
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name in extra:
            seen.add(name)
            todo.extend(openapi_v3.refs(extra[name], set()))
        elif name in builtin:
            seen.add(name)
            todo.extend(_builtin_refs(name))
    out: dict[str, Any] = {}
    for name in sorted(seen):
        out[name] = openapi_v3.to_v3_schema(extra[name]) if name in extra else _builtin_v3(name)
    return out


def _v3(paths: dict[str, Any], extra: Definitions | None) -> dict[str, Any]:
    ordered = {p: paths[p] for p in sorted(paths)}
    components = _components(openapi_v3.refs(ordered, set()), extra)
    return {
        "openapi": "3.0.0",
        "info": {"title": TITLE, "version": INFO_VERSION},
        "paths": ordered,
        "components": {"schemas": components, "securitySchemes": _SECURITY},
    }


def v3_document(resources_of_one_group_version: list[resources_mod.Resource], group: str, version: str, *,
                extra_schemas: Definitions | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document of /openapi/v3/apis/GROUP/VERSION (or api/v1) with every schema it reaches.

    The returned document shares cached sub-objects with other documents: treat it as read-only.
    """
    rs = [r for r in resources_of_one_group_version if r.group == group and r.version == version]
    paths = _gv_root(group, version)
    paths.update(_resource_paths(rs, _gvk_index(extra_schemas)))
    return _v3(paths, extra_schemas)


def _gv_root(group: str, version: str) -> dict[str, Any]:
    gvn = openapi_v3.friendly_group(group) + version[:1].upper() + version[1:]
    return openapi_v3.getter_path(
        f"{openapi_v3.gv_prefix(group, version)}/", op_id=f"get{gvn}APIResources", desc="get available resources",
        schema=META + "APIResourceList", tags=[openapi_v3.tag(group, version)])


def _discovery_paths(resources: list[resources_mod.Resource]) -> dict[str, dict[str, Any]]:
    """Index key -> the paths of the small documents beside the group-versions."""
    out: dict[str, dict[str, Any]] = {
        ".well-known/openid-configuration": openapi_v3.getter_path(
            "/.well-known/openid-configuration/", op_id="getServiceAccountIssuerOpenIDConfiguration",
            desc="get service account issuer OpenID configuration, also known as the 'OIDC discovery doc'",
            schema=None, tags=["WellKnown"], types=("application/json",)),
        "api": openapi_v3.getter_path("/api/", op_id="getCoreAPIVersions", desc="get available API versions",
                                      schema=META + "APIVersions", tags=["core"]),
        "apis": openapi_v3.getter_path("/apis/", op_id="getAPIVersions", desc="get available API versions",
                                       schema=META + "APIGroupList", tags=["apis"]),
        "openid/v1/jwks": openapi_v3.getter_path(
            "/openid/v1/jwks/", op_id="getServiceAccountIssuerOpenIDKeyset",
            desc="get service account issuer OpenID JSON Web Key Set (contains public token verification keys)",
            schema=None, tags=["openid"], types=("application/jwk-set+json",)),
        "version": openapi_v3.getter_path("/version/", op_id="getCodeVersion", desc="get the code version",
                                          schema="io.k8s.apimachinery.pkg.version.Info", tags=["version"],
                                          types=("application/json",)),
    }
    for group in dict.fromkeys(r.group for r in resources if r.group):
        friendly = openapi_v3.friendly_group(group)
        out[f"apis/{group}"] = openapi_v3.getter_path(
            f"/apis/{group}/", op_id=f"get{friendly}APIGroup", desc="get information of a group",
            schema=META + "APIGroup", tags=[friendly[:1].lower() + friendly[1:]])
    return out


def v3_documents(resources: list[resources_mod.Resource], *,
                 extra_schemas: Definitions | None = None) -> dict[str, dict[str, Any]]:
    """Every document of the /openapi/v3 index, keyed like the index (`api/v1`, `apis/apps`, `version`)."""
    docs: dict[str, dict[str, Any]] = {}
    for key, paths in _discovery_paths(resources).items():
        docs[key] = _v3(paths, None)
    for group, version in _group_versions(resources):
        key = f"apis/{group}/{version}" if group else f"api/{version}"
        docs[key] = v3_document(resources, group, version, extra_schemas=extra_schemas)
    return {k: docs[k] for k in sorted(docs)}


def v3_index_of(serialized: dict[str, bytes]) -> dict[str, Any]:
    """The /openapi/v3 index for already serialised documents (key -> bytes)."""
    return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={document_hash(serialized[key])}"}
                      for key in sorted(serialized)}}


def v3_serialized(resources: list[resources_mod.Resource], *,
                  extra_schemas: Definitions | None = None) -> dict[str, bytes]:
    """Every /openapi/v3 document serialised, keyed like the index: what the HTTP layer caches."""
    return {k: serialize(d) for k, d in v3_documents(resources, extra_schemas=extra_schemas).items()}


def v3_index(resources: list[resources_mod.Resource], *,
             extra_schemas: Definitions | None = None) -> dict[str, Any]:
    """The /openapi/v3 discovery document: each path's `serverRelativeURL` with the hash of its document."""
    return v3_index_of(v3_serialized(resources, extra_schemas=extra_schemas))


# ---- CRDs -------------------------------------------------------------------------------------------

def crd_definitions(group: str, version: str, kind: str, list_kind: str, schema: dict[str, Any] | None, *,
                    plural: str | None = None, preserve_unknown_fields: bool = False) -> Definitions:
    """The models of one CRD version built from its `openAPIV3Schema`, named and shaped as kube-apiserver does.

    Refs use `#/definitions/` like the built-in definitions; v3 documents rewrite them.
    """
    name = crd_definition_name(group, version, kind)
    gvk = [{"group": group, "kind": kind, "version": version}]
    if schema is None or preserve_unknown_fields:
        obj: dict[str, Any] = {"type": "object"}
        if schema and schema.get("description"):
            obj["description"] = schema["description"]
        if schema and schema.get("x-kubernetes-preserve-unknown-fields"):
            obj["x-kubernetes-preserve-unknown-fields"] = True
    else:
        obj = _embed(copy.deepcopy(schema))
        props = obj.setdefault("properties", {})
        props["metadata"] = {"$ref": schemas.REF_PREFIX + _OBJECT_META, "description": _OBJECT_META_DOC}
        for field in ("apiVersion", "kind"):
            props[field] = {"description": _TYPE_META_DOCS[field], "type": "string"}
        obj["properties"] = {k: props[k] for k in sorted(props)}
        obj.setdefault("type", "object")
    obj["x-kubernetes-group-version-kind"] = gvk
    plural = plural or kind.lower() + "s"
    list_schema: dict[str, Any] = {
        "description": f"{list_kind} is a list of {kind}",
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"description": _TYPE_META_DOCS["apiVersion"], "type": "string"},
            "items": {
                "description": f"List of {plural}. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md",
                "type": "array",
                "items": {"$ref": schemas.REF_PREFIX + name},
            },
            "kind": {"description": _TYPE_META_DOCS["kind"], "type": "string"},
            "metadata": {"$ref": schemas.REF_PREFIX + _LIST_META, "description": _LIST_META_DOC},
        },
        "x-kubernetes-group-version-kind": [{"group": group, "kind": list_kind, "version": version}],
    }
    return {name: obj, crd_definition_name(group, version, list_kind): list_schema}


def _embed(node: Any) -> Any:
    # Embedded resources (x-kubernetes-embedded-resource) implicitly carry TypeMeta and ObjectMeta.
    if not isinstance(node, dict):
        return node
    for key in ("properties",):
        if isinstance(node.get(key), dict):
            for v in node[key].values():
                _embed(v)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            _embed(node[key])
    if node.get("x-kubernetes-embedded-resource") is True:
        props = node.setdefault("properties", {})
        for field in ("apiVersion", "kind"):
            props.setdefault(field, {"description": _TYPE_META_DOCS[field], "type": "string"})
        props["metadata"] = {"$ref": schemas.REF_PREFIX + _OBJECT_META, "description": _OBJECT_META_DOC}
    return node
