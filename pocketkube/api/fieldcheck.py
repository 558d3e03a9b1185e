"""Unknown-field detection for fieldValidation=Strict|Warn, worded like Kubernetes' strict decoding errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from pocketkube.api import schemas

Resolver = Callable[[str], "dict[str, Any] | None"]

# Like sigs.k8s.io/json, report at most this many problems per object.
MAX_ERRORS = 100
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
# Go types with their own JSON decoding: whatever they hold is accepted as is.
_OPAQUE = frozenset({
    "io.k8s.apimachinery.pkg.runtime.RawExtension",
    "io.k8s.apimachinery.pkg.apis.meta.v1.FieldsV1",
    "io.k8s.apimachinery.pkg.apis.meta.v1.Patch",
    "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
    "io.k8s.apimachinery.pkg.api.resource.Quantity",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSON",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrArray",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrBool",
    "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaPropsOrStringArray",
})
_MISSING = object()


class Node:
    """A schema compiled for walking: the known fields of an object, a map's values or a list's items.

    A child of None means "accept anything here" (scalars, opaque and preserved values).
    """

    __slots__ = ("props", "values", "items", "open")

    def __init__(self) -> None:
        self.props: dict[str, Node | None] | None = None
        self.values: Node | None = None
        self.items: Node | None = None
        self.open = False


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    if ref is None:
        all_of = schema.get("allOf")
        if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
            ref = all_of[0].get("$ref")
    return ref.rsplit("/", 1)[-1] if isinstance(ref, str) else None


def _builtin_resolver(name: str) -> dict[str, Any] | None:
    return schemas.definitions().get(name)


class _Compiler:
    def __init__(self, resolve: Resolver, cache: dict[str, Node | None]) -> None:
        self.resolve = resolve
        self.cache = cache

    def named(self, name: str) -> Node | None:
        if name in self.cache:
            return self.cache[name]
        if name in _OPAQUE:
            self.cache[name] = None
            return None
        target = self.resolve(name)
        if target is None or not _is_structured(target):
            self.cache[name] = None
            return None
        # Register before filling in so recursive types (JSONSchemaProps) refer to themselves.
        node = self.cache[name] = Node()
        self.fill(node, target)
        return node

    def node(self, schema: Any) -> Node | None:
        if not isinstance(schema, dict):
            return None
        name = _ref_name(schema)
        if name is not None:
            return self.named(name)
        if not _is_structured(schema):
            return None
        node = Node()
        self.fill(node, schema)
        return node

    def fill(self, node: Node, schema: dict[str, Any]) -> None:
        preserve = schema.get("x-kubernetes-preserve-unknown-fields") is True
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        items = schema.get("items")
        if isinstance(items, dict):
            node.items = self.node(items)
        if isinstance(extra, dict):
            node.values = self.node(extra)
            node.open = True
        elif extra is True or preserve:
            node.open = True
        if isinstance(props, dict) or (schema.get("type") == "object" and not isinstance(extra, dict)):
            node.props = {k: self.node(v) for k, v in (props or {}).items()}
        if schema.get("x-kubernetes-embedded-resource") is True:
            self.embed(node)

    def embed(self, node: Node) -> None:
        """Give an object the TypeMeta and ObjectMeta fields every resource has."""
        if node.props is None:
            node.props = {}
        node.props.setdefault("apiVersion", None)
        node.props.setdefault("kind", None)
        node.props["metadata"] = self.named(_OBJECT_META)


def _is_structured(schema: dict[str, Any]) -> bool:
    if schema.get("x-kubernetes-int-or-string") is True:
        return False
    if "properties" in schema or "items" in schema or isinstance(schema.get("additionalProperties"), dict):
        return True
    if schema.get("x-kubernetes-preserve-unknown-fields") is True:
        return schema.get("x-kubernetes-embedded-resource") is True
    # An object type without fields is an empty Go struct: anything inside it is unknown.
    return schema.get("type") == "object" and schema.get("additionalProperties") is not True


_BUILTIN: dict[str, Node | None] = {}


def compile_definition(name: str) -> Node | None:
    """The compiled form of a built-in definition (cached for the life of the process)."""
    return _Compiler(_builtin_resolver, _BUILTIN).named(name)


def compile_schema(schema_root: dict[str, Any], resolver: Resolver | None = None, *,
                   resource_root: bool = True) -> Node | None:
    """Compile a structural schema (a CRD's openAPIV3Schema); keep the result per CRD generation.

    `resolver` maps a definition name (the tail of a `$ref`) to its schema; names it does not
    know are looked up among the built-in definitions (ObjectMeta for `metadata`). At a resource root apiVersion, kind and metadata are always known.
    """
    if resolver is None:
        compiler = _Compiler(_builtin_resolver, _BUILTIN)
    else:
        custom = resolver
        compiler = _Compiler(lambda name: custom(name) or _builtin_resolver(name), {})
    node = compiler.node(schema_root)
    if resource_root:
        root = Node()
        if node is None:
            root.open = True
        else:
            # A copy, so that embedding never alters a cached definition.
            root.props = dict(node.props) if node.props is not None else None
            root.values, root.items, root.open = node.values, node.items, node.open
        compiler.embed(root)
        node = root
    return node


def _walk(node: Node, value: Any, path: str, out: list[str]) -> None:
    if type(value) is dict:
        props = node.props
        if props is None:
            values = node.values
            if values is not None:
                for k, v in value.items():
                    if type(v) is dict or type(v) is list:
                        _walk(values, v, f"{path}.{k}" if path else k, out)
            return
        for k, v in value.items():
            child = props.get(k, _MISSING)
            if child is _MISSING:
                if node.values is not None:
                    child = node.values
                elif node.open:
                    continue
                else:
                    if len(out) < MAX_ERRORS:
                        out.append(f"{path}.{k}" if path else k)
                    continue
            if child is not None and (type(v) is dict or type(v) is list):
                _walk(child, v, f"{path}.{k}" if path else k, out)  # type: ignore[arg-type]
    elif type(value) is list:
        items = node.items
        if items is not None:
            for i, v in enumerate(value):
                if type(v) is dict or type(v) is list:
                    _walk(items, v, f"{path}[{i}]", out)


def check(obj: Any, node: Node | None) -> list[str]:
    """Unknown-field messages for `obj` against a compiled schema, in document order, deduplicated."""
    if node is None:
        return []
    paths: list[str] = []
    _walk(node, obj, "", paths)
    return [f"unknown field {_go_quote(p)}" for p in dict.fromkeys(paths)]


def unknown_fields(obj: dict[str, Any], group: str, version: str, kind: str) -> list[str]:
    """Unknown-field messages for a built-in kind, e.g. `unknown field "spec.template.spec.containers[0].bogus"`.

    A kind without a built-in schema yields no messages.
    """
    name = schemas.definition_name(group, version, kind)
    if name is None:
        return []
    return check(obj, compile_definition(name))


def unknown_fields_schema(obj: dict[str, Any], schema_root: dict[str, Any],
                          resolver: Resolver | None = None) -> list[str]:
    """Unknown-field messages for a custom resource against its structural schema (compiled each call)."""
    return check(obj, compile_schema(schema_root, resolver))


def strict_error_message(kind: str, version: str, problems: list[str]) -> str:
    """The BadRequest message of fieldValidation=Strict, e.g.
    `ConfigMap in version "v1" cannot be handled as a ConfigMap: strict decoding error: unknown field "bogus"`."""
    return (f"{kind} in version {_go_quote(version)} cannot be handled as a {kind}: "
            f"strict decoding error: {', '.join(problems)}")


def warning_header(problem: str) -> str:
    """One `Warning` header value of fieldValidation=Warn: `299 - "unknown field \\"bogus\\""`."""
    return f"299 - {_go_quote(problem)}"


def _go_quote(s: str) -> str:
    # Go's %q: a double-quoted string with backslash escapes; JSON escaping agrees for printable text.
    return json.dumps(s, ensure_ascii=False)
