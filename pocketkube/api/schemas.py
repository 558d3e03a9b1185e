"""The real Kubernetes 1.32 type schemas (from kubernetes-validate), as OpenAPI v2 definitions."""

from __future__ import annotations

import functools
import importlib.util
import os
from typing import Any

import orjson

KUBE_VERSION = "1.32.0"
REF_PREFIX = "#/definitions/"
_INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
_QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"


def _source_path() -> str:
    # Only the package's data is needed; importing it would pull in jsonschema (~0.2 s of start-up).
    spec = importlib.util.find_spec("kubernetes_validate")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("kubernetes-validate is not installed: run scripts/setup")
    base = list(spec.submodule_search_locations)[0]
    return os.path.join(base, "kubernetes-json-schema", f"v{KUBE_VERSION}-local", "_definitions.json")


def _normalise(node: Any) -> Any:
    # kubernetes-validate rewrote the OpenAPI schemas as JSON Schema: nullable type lists,
    # `$defs` references and enums pinning apiVersion/kind. Undo that to get back the
    # OpenAPI shape that kube-apiserver publishes.
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "$ref" and isinstance(v, str):
            out[k] = REF_PREFIX + v.rsplit("/", 1)[-1]
        elif k == "type" and isinstance(v, list):
            types = [t for t in v if t != "null"]
            out[k] = types[0] if len(types) == 1 else types
        else:
            out[k] = _normalise(v)
    props = out.get("properties")
    if isinstance(props, dict):
        for meta in ("apiVersion", "kind"):
            if isinstance(props.get(meta), dict):
                props[meta].pop("enum", None)
    return out


@functools.cache
def definitions() -> dict[str, dict[str, Any]]:
    """Every Kubernetes 1.32 definition by its OpenAPI name, refs as `#/definitions/NAME`."""
    with open(_source_path(), "rb") as f:
        raw = orjson.loads(f.read())["$defs"]
    defs = {name: _normalise(schema) for name, schema in raw.items()}
    defs[_INT_OR_STRING] = {"type": "string", "format": "int-or-string"}
    defs[_QUANTITY] = {
        "description": defs.get(_QUANTITY, {}).get("description", "Quantity is a fixed-point representation of a number."),
        "type": "string",
        "format": "quantity",
    }
    return defs


@functools.cache
def _by_gvk() -> dict[tuple[str, str, str], str]:
    index: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind", ()):
            key = (gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))
            # meta types (DeleteOptions, WatchEvent) carry many GVKs; the first owner wins.
            index.setdefault(key, name)
    return index


def definition_name(group: str, version: str, kind: str) -> str | None:
    """The definition name of a built-in kind, e.g. apps/v1 Deployment -> io.k8s.api.apps.v1.Deployment."""
    return _by_gvk().get((group, version, kind))


def resolve(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """Follow a `$ref` (built-in definitions only) to the schema it names."""
    if schema is None:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(REF_PREFIX):
        return definitions().get(ref[len(REF_PREFIX):])
    all_of = schema.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        return resolve(all_of[0])
    return schema
