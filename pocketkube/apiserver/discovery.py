"""Discovery documents (/api, /apis, /apis/GROUP, /api/v1, /apis/GROUP/VERSION, aggregated) as dicts.

What the real kube-apiserver 1.32 sends, for the HTTP layer to copy:

- Legacy documents (/api, /apis, /apis/G, /api/v1, /apis/G/V): `Content-Type: application/json`,
  `Cache-Control: no-cache, private` (LEGACY_HEADERS).
- Aggregated discovery, served on /api and /apis when the Accept header's first acceptable clause
  asks for `application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList` (or v2beta1, as
  kubectl 1.27/1.28 do; see `negotiate`): `Content-Type` set to the requested variant
  (AGGREGATED_CONTENT_TYPE / AGGREGATED_CONTENT_TYPE_V2BETA1), `Cache-Control: public`,
  `Vary: Accept`, `ETag: "<128 upper-case hex digits>"` (`etag`), and `X-Varied-Accept` echoing the
  request's Accept header verbatim. A request with a matching `If-None-Match` gets 304.
- The real server pretty-prints JSON (2-space indent) only for curl-like user agents; kubectl gets
  compact JSON.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pocketkube.api import errors, resources

AGGREGATED_GROUP = "apidiscovery.k8s.io"
AGGREGATED_KIND = "APIGroupDiscoveryList"
AGGREGATED_VERSIONS = ("v2", "v2beta1")
AGGREGATED_CONTENT_TYPE = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
AGGREGATED_CONTENT_TYPE_V2BETA1 = "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
AGGREGATED_HEADERS = {"Cache-Control": "public", "Vary": "Accept"}
LEGACY_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-cache, private"}


def aggregated_content_type(version: str = "v2") -> str:
    """The Content-Type of an aggregated discovery document of `version`."""
    return AGGREGATED_CONTENT_TYPE if version == "v2" else AGGREGATED_CONTENT_TYPE_V2BETA1


def negotiate(accept: str | None) -> str | None:
    """Which aggregated discovery version an Accept header asks for ("v2", "v2beta1"), or None for the
    legacy documents. Clauses are taken by quality, then in order, like the real server."""
    clauses = []
    for i, raw in enumerate((accept or "").split(",")):
        parts = [p.strip() for p in raw.split(";")]
        media = parts[0].lower()
        if not media:
            continue
        params: dict[str, str] = {}
        for p in parts[1:]:
            k, _, v = p.partition("=")
            params[k.strip().lower()] = v.strip().strip('"')
        try:
            q = float(params.pop("q", "1"))
        except ValueError:
            q = 1.0
        if q > 0:
            clauses.append((-q, i, media, params))
    for _, _, media, params in sorted(clauses):
        if "as" in params:
            if (media == "application/json" and params.get("as") == AGGREGATED_KIND
                    and params.get("g") == AGGREGATED_GROUP and params.get("v") in AGGREGATED_VERSIONS):
                return params["v"]
            continue  # a conversion we do not offer (protobuf, Table, ...): try the next clause
        if media in ("application/json", "application/*", "*/*"):
            return None
    return None


def etag(doc_bytes: bytes) -> str:
    """The quoted ETag of a serialised aggregated document: upper-case hex SHA-512, as the real server."""
    return '"' + hashlib.sha512(doc_bytes).hexdigest().upper() + '"'


def api_versions(server_address: str) -> dict[str, Any]:
    """/api: the legacy core APIVersions."""
    return {
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": server_address}],
    }


def _group_version(group: str, version: str) -> dict[str, str]:
    return {"groupVersion": f"{group}/{version}", "version": version}


def _api_group(group: str, versions: list[str]) -> dict[str, Any]:
    return {
        "name": group,
        "versions": [_group_version(group, v) for v in versions],
        "preferredVersion": _group_version(group, versions[0]),
    }


def api_group_list(registry: resources.Registry) -> dict[str, Any]:
    """/apis: every named group with its versions, preferred first."""
    return {"kind": "APIGroupList", "apiVersion": "v1",
            "groups": [_api_group(g, vs) for g, vs in registry.groups()]}


def api_group(registry: resources.Registry, group: str) -> dict[str, Any]:
    """/apis/GROUP; NotFound for a group the server does not serve."""
    for g, vs in registry.groups():
        if g == group:
            return {"kind": "APIGroup", "apiVersion": "v1", **_api_group(g, vs)}
    raise errors.NotFound.resource()


def _api_resource(r: resources.Resource) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": r.resource, "singularName": r.singular_name,
                             "namespaced": r.namespaced, "kind": r.kind, "verbs": list(r.verbs)}
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.storage_version_hash:
        entry["storageVersionHash"] = r.storage_version_hash
    return entry


def _api_subresource(r: resources.Resource, s: resources.Subresource) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"{r.resource}/{s.name}", "singularName": "", "namespaced": r.namespaced}
    if s.group or s.version:
        entry["group"] = s.group
        entry["version"] = s.version
    entry["kind"] = s.kind
    entry["verbs"] = list(s.verbs)
    return entry


def resource_list(registry: resources.Registry, group: str, version: str) -> dict[str, Any]:
    """/api/v1 or /apis/GROUP/VERSION: the APIResourceList, subresources as "pods/log" entries."""
    if not registry.has_version(group, version):
        raise errors.NotFound.resource()
    out: list[dict[str, Any]] = []
    for r in registry.resources(group, version):
        out.append(_api_resource(r))
        out.extend(_api_subresource(r, s) for s in sorted(r.subresources, key=lambda s: s.name))
    doc: dict[str, Any] = {"kind": "APIResourceList"}
    if group:
        doc["apiVersion"] = "v1"
    doc["groupVersion"] = f"{group}/{version}" if group else version
    doc["resources"] = out
    return doc


def _gvk(group: str, version: str, kind: str) -> dict[str, str]:
    return {"group": group, "version": version, "kind": kind}


def _discovery_resource(r: resources.Resource) -> dict[str, Any]:
    # Built-in kinds report an empty group/version in responseKind (same as the resource's);
    # CRDs spell theirs out, as the apiextensions discovery controller does.
    own = (r.group, r.version) if r.crd else ("", "")
    entry: dict[str, Any] = {"resource": r.resource, "responseKind": _gvk(*own, r.kind), "scope": r.scope,
                             "singularResource": r.singular_name, "verbs": list(r.verbs)}
    if r.short_names:
        entry["shortNames"] = list(r.short_names)
    if r.categories:
        entry["categories"] = list(r.categories)
    if r.subresources:
        entry["subresources"] = [
            {"subresource": s.name,
             "responseKind": _gvk(s.group, s.version, s.kind) if (s.group or s.version) else _gvk(*own, s.kind),
             "verbs": list(s.verbs)}
            for s in sorted(r.subresources, key=lambda s: s.name)]
    return entry


def _discovery_version(registry: resources.Registry, group: str, version: str) -> dict[str, Any]:
    return {"version": version,
            "resources": [_discovery_resource(r) for r in registry.resources(group, version)],
            "freshness": "Current"}


def aggregated(registry: resources.Registry, *, legacy: bool, version: str = "v2") -> dict[str, Any]:
    """APIGroupDiscoveryList for /api (legacy=True: the core group) or /apis (every named group)."""
    if version not in AGGREGATED_VERSIONS:
        raise errors.NotAcceptable(f"unsupported aggregated discovery version {version!r}")
    items: list[dict[str, Any]] = []
    if legacy:
        core = [v for g, v in registry.group_versions() if not g]
        if core:
            items.append({"metadata": {"creationTimestamp": None},
                          "versions": [_discovery_version(registry, "", v) for v in core]})
    else:
        for g, vs in registry.groups():
            items.append({"metadata": {"name": g, "creationTimestamp": None},
                          "versions": [_discovery_version(registry, g, v) for v in vs]})
    return {"kind": AGGREGATED_KIND, "apiVersion": f"{AGGREGATED_GROUP}/{version}", "metadata": {},
            "items": items}
