"""Shape outgoing objects: lists, Tables and PartialObjectMetadata as the client's Accept asks."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors, tables
from pocketkube.apiserver import context, negotiate

META_V1 = "meta.k8s.io/v1"


def accept(call: context.Call) -> str:
    return call.request.headers.get("Accept", "") or ""


def _include_object(call: context.Call) -> str:
    v = call.param("includeObject", "Metadata") or "Metadata"
    if v not in ("None", "Metadata", "Object"):
        raise errors.BadRequest(f'includeObject: Unsupported value: "{v}": supported values: "Metadata", "None", "Object"')
    return v


def printer_columns(server: context.Server, call: context.Call) -> list[dict[str, Any]] | None:
    if call.res.crd and server.crds is not None:
        return server.crds.printer_columns(call.res)
    return None


def table(server: context.Server, call: context.Call, objs: list[dict[str, Any]], *,
          resource_version: str = "", continue_token: str = "", remaining: int | None = None,
          headers: bool = True) -> dict[str, Any]:
    t = tables.table(call.res.kind, call.res.group, objs, now=server.clock.now(),
                     include_object=_include_object(call), resource_version=resource_version,
                     continue_token=continue_token, remaining=remaining,
                     printer_columns=printer_columns(server, call),
                     no_headers=not headers or call.param("noHeaders") == "true",
                     api_version=f"meta.k8s.io/{_table_version(call)}")
    return t


def _table_version(call: context.Call) -> str:
    _, version = negotiate.wants_table(accept(call))
    return version or "v1"


def partial(obj: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "PartialObjectMetadata", "apiVersion": META_V1, "metadata": obj.get("metadata", {})}


def one(server: context.Server, call: context.Call, obj: dict[str, Any]) -> dict[str, Any]:
    """A single object, or a one-row Table / PartialObjectMetadata when asked for."""
    acc = accept(call)
    as_table, _ = negotiate.wants_table(acc)
    if as_table:
        return table(server, call, [obj])
    if negotiate.wants_partial_metadata(acc):
        return partial(obj)
    return obj


def list_body(server: context.Server, call: context.Call, objs: list[dict[str, Any]], *, resource_version: str,
              continue_token: str = "", remaining: int | None = None) -> dict[str, Any]:
    acc = accept(call)
    as_table, _ = negotiate.wants_table(acc)
    if as_table:
        return table(server, call, objs, resource_version=resource_version, continue_token=continue_token,
                     remaining=remaining)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if continue_token:
        meta["continue"] = continue_token
    if remaining is not None:
        meta["remainingItemCount"] = remaining
    if negotiate.wants_partial_metadata(acc):
        return {"kind": "PartialObjectMetadataList", "apiVersion": META_V1, "metadata": meta,
                "items": [partial(o) for o in objs]}
    if not call.res.crd:
        # typed lists drop the items' TypeMeta; unstructured (CRD) lists keep it
        objs = [{k: v for k, v in o.items() if k not in ("kind", "apiVersion")} for o in objs]
    return {"kind": call.res.list_kind, "apiVersion": call.res.api_version, "metadata": meta, "items": objs}
