"""FieldsV1 field sets and the schema walker that extracts, compares and marks them.

Hand-written: no Python library implements Kubernetes' structured-merge-diff (the Go library
behind server-side apply), so this module re-implements its field-path sets (`fieldpath.Set`),
the FieldsV1 `f:`/`k:`/`v:`/`i:` JSON trie, and the typed walks kube-apiserver 1.32 runs over
objects (ToFieldSet, Compare, EnsureNamedFieldsAreMembers). Schemas are OpenAPI nodes (built-in
v2 definitions with `$ref`, or a CRD's openAPIV3Schema) read through a `resolve` function.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

# A path element is (rank, payload): the ranks order elements like structured-merge-diff does
# (field names < keys < values < indexes) and the tuples hash, so sets of them are plain sets.
FIELD, KEY, VALUE, INDEX = 0, 1, 2, 3

PathElement = tuple[int, Any]
Path = tuple[PathElement, ...]
Resolve = Callable[[dict[str, Any] | None], dict[str, Any] | None]


class FieldSetError(ValueError):
    """An object or a FieldsV1 document that cannot be turned into a field set."""


# --- values inside path elements ---------------------------------------------------------

def freeze(v: Any) -> tuple[int, Any]:
    """A hashable, ordered form of a JSON value (numbers < strings < bools < lists < maps < null)."""
    if v is None:
        return (5, None)
    if isinstance(v, bool):
        return (2, v)
    if isinstance(v, (int, float)):
        return (0, v)
    if isinstance(v, str):
        return (1, v)
    if isinstance(v, list):
        return (3, tuple(freeze(x) for x in v))
    if isinstance(v, dict):
        return (4, tuple(sorted((k, freeze(x)) for k, x in v.items())))
    raise FieldSetError(f"unsupported value {v!r}")


def thaw(f: tuple[int, Any]) -> Any:
    """The JSON value a frozen value stands for."""
    rank, payload = f
    if rank == 3:
        return [thaw(x) for x in payload]
    if rank == 4:
        return {k: thaw(x) for k, x in payload}
    return payload


# json.dumps with options builds a new encoder on every call, which costs several times the encoding.
_GO_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_GO_ENCODER_SORTED = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), sort_keys=True)


def go_json(v: Any, *, sort_keys: bool = False) -> str:
    """JSON the way Go's encoding/json writes it: compact, HTML characters escaped."""
    s = (_GO_ENCODER_SORTED if sort_keys else _GO_ENCODER).encode(v)
    if "<" in s or ">" in s or "&" in s or "\u2028" in s or "\u2029" in s:
        s = (s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
             .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))
    return s


def field(name: str) -> PathElement:
    return (FIELD, name)


def key(**fields: Any) -> PathElement:
    return (KEY, tuple(sorted((k, freeze(v)) for k, v in fields.items())))


def value(v: Any) -> PathElement:
    return (VALUE, freeze(v))


def index(i: int) -> PathElement:
    return (INDEX, i)


# Key and value elements recur (every container is k:{"name":...}, every port the same few), and
# their JSON encoding is the slow part of writing FieldsV1: remember the strings. Keyed by repr,
# which tells 1 from 1.0 (equal as dict keys, but "1" and "1.0" in FieldsV1).
_PE_STRINGS: dict[str, str] = {}


def pe_to_string(pe: PathElement) -> str:
    """The FieldsV1 key of a path element: `f:name`, `k:{...}`, `v:...` or `i:N`."""
    kind, payload = pe
    if kind == KEY or kind == VALUE:
        key = repr(payload) if kind == KEY else "v" + repr(payload)
        hit = _PE_STRINGS.get(key)
        if hit is None:
            hit = _pe_to_string(pe)
            if len(_PE_STRINGS) >= 4096:
                _PE_STRINGS.clear()
            _PE_STRINGS[key] = hit
        return hit
    return _pe_to_string(pe)


def _pe_to_string(pe: PathElement) -> str:
    kind, payload = pe
    if kind == FIELD:
        return "f:" + payload
    if kind == KEY:
        return "k:{" + ",".join(go_json(n) + ":" + go_json(thaw(v)) for n, v in payload) + "}"
    if kind == VALUE:
        return "v:" + go_json(thaw(payload))
    return f"i:{payload}"


def pe_from_string(s: str) -> PathElement:
    """Parse a FieldsV1 key back into a path element."""
    prefix, body = s[:2], s[2:]
    try:
        if prefix == "f:":
            return (FIELD, body)
        if prefix == "k:":
            fields = json.loads(body)
            if not isinstance(fields, dict) or not fields:
                raise FieldSetError(f"key path element must be a non-empty object: {s!r}")
            return (KEY, tuple(sorted((k, freeze(v)) for k, v in fields.items())))
        if prefix == "v:":
            return (VALUE, freeze(json.loads(body)))
        if prefix == "i:":
            return (INDEX, int(body))
    except (ValueError, TypeError) as e:
        if isinstance(e, FieldSetError):
            raise
        raise FieldSetError(f"parsing JSON: {s!r}: {e}") from None
    raise FieldSetError(f"found unexpected prefix in path element {s!r}")


def pe_display(pe: PathElement) -> str:
    """A path element as structured-merge-diff prints it in paths: `.f`, `[k=v]`, `[=v]`, `[i]`."""
    kind, payload = pe
    if kind == FIELD:
        return "." + payload
    if kind == KEY:
        return "[" + ",".join(f"{n}={go_json(thaw(v))}" for n, v in payload) + "]"
    if kind == VALUE:
        return "[=" + go_json(thaw(payload)) + "]"
    return f"[{payload}]"


def path_string(path: Path) -> str:
    """A whole path as kube prints it in conflicts, e.g. `.spec.containers[name="c"].image`."""
    return "".join(pe_display(pe) for pe in path)


# --- the set --------------------------------------------------------------------------------

class FieldSet:
    """A set of field paths stored as a trie: members at this level, children by path element.

    Treat a set as immutable once built: operations return new sets and share subtrees.
    """

    __slots__ = ("members", "children")

    def __init__(self, members: set[PathElement] | None = None,
                 children: dict[PathElement, FieldSet] | None = None) -> None:
        self.members = set() if members is None else members
        self.children = {} if children is None else children

    @classmethod
    def of(cls, *paths: Path) -> FieldSet:
        """A set holding exactly the given paths."""
        s = cls()
        for p in paths:
            s.insert(p)
        return s

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FieldSet) and self.members == other.members
                and self.children == other.children)

    def __repr__(self) -> str:
        return f"FieldSet({json.dumps(self.to_json())})"

    def empty(self) -> bool:
        return not self.members and not self.children

    def insert(self, path: Path) -> None:
        """Add a path (only while building the set)."""
        if not path:
            return
        self.below(path[:-1]).members.add(path[-1])

    def below(self, prefix: Path) -> FieldSet:
        """The child set at prefix, made along the way where missing (only while building the set)."""
        node = self
        for pe in prefix:
            nxt = node.children.get(pe)
            if nxt is None:
                nxt = node.children[pe] = FieldSet()
            node = nxt
        return node

    def has(self, path: Path) -> bool:
        node = self
        for pe in path[:-1]:
            nxt = node.children.get(pe)
            if nxt is None:
                return False
            node = nxt
        return bool(path) and path[-1] in node.members

    def union(self, other: FieldSet) -> FieldSet:
        if other.empty():
            return self
        if self.empty():
            return other
        children = dict(self.children)
        for pe, c in other.children.items():
            mine = children.get(pe)
            children[pe] = c if mine is None else mine.union(c)
        return FieldSet(self.members | other.members, children)

    def difference(self, other: FieldSet) -> FieldSet:
        """Paths of self that are not in other (a member removes only itself, not its children)."""
        if other.empty() or self.empty():
            return self
        children = {}
        for pe, c in self.children.items():
            oc = other.children.get(pe)
            d = c if oc is None else c.difference(oc)
            if not d.empty():
                children[pe] = d
        return FieldSet(self.members - other.members, children)

    def intersection(self, other: FieldSet) -> FieldSet:
        children = {}
        small, big = (self.children, other.children) if len(self.children) <= len(other.children) \
            else (other.children, self.children)
        for pe, c in small.items():
            oc = big.get(pe)
            if oc is not None:
                i = c.intersection(oc)
                if not i.empty():
                    children[pe] = i
        return FieldSet(self.members & other.members, children)

    def recursive_difference(self, other: FieldSet) -> FieldSet:
        """Paths of self that are neither in other nor below one of its members (an exclude filter)."""
        if other.empty() or self.empty():
            return self
        children = {}
        for pe, c in self.children.items():
            if pe in other.members:
                continue
            oc = other.children.get(pe)
            d = c if oc is None else c.recursive_difference(oc)
            if not d.empty():
                children[pe] = d
        return FieldSet(self.members - other.members, children)

    def with_prefix(self, pe: PathElement) -> FieldSet:
        return self.children.get(pe) or EMPTY

    def paths(self, prefix: Path = ()) -> Iterator[Path]:
        """Every path, in structured-merge-diff's order (this level's members, then children)."""
        for pe in sorted(self.members):
            yield prefix + (pe,)
        for pe in sorted(self.children):
            yield from self.children[pe].paths(prefix + (pe,))

    def to_json(self) -> dict[str, Any]:
        """The FieldsV1 document (`{"f:spec": {"f:replicas": {}}}`), keys in kube's order."""
        out: dict[str, Any] = {}
        members, children = self.members, self.children
        for pe in sorted(members.union(children) if children else members):
            name = "f:" + pe[1] if pe[0] == FIELD else pe_to_string(pe)
            c = children.get(pe)
            if c is None:
                out[name] = {}
            else:
                d: dict[str, Any] = {".": {}} if pe in members else {}
                d.update(c.to_json())
                out[name] = d
        return out

    @classmethod
    def from_json(cls, doc: Any) -> FieldSet:
        """Parse a FieldsV1 document; raises FieldSetError when it is malformed."""
        if not isinstance(doc, dict):
            raise FieldSetError("FieldsV1 must be a JSON object")
        s = cls()
        for k, v in doc.items():
            if k == ".":
                continue
            if not isinstance(k, str):
                raise FieldSetError(f"invalid path element {k!r}")
            pe = pe_from_string(k)
            if not isinstance(v, dict):
                raise FieldSetError(f"expected an object for {k!r}")
            if not v or "." in v:
                s.members.add(pe)
            if len(v) > ("." in v):
                c = cls.from_json(v)
                if not c.empty():
                    s.children[pe] = c
        return s


EMPTY = FieldSet()


# --- schema types ---------------------------------------------------------------------------

SCALAR, MAP, LIST, DEDUCED = "scalar", "map", "list", "deduced"
_SCALAR_TYPES = frozenset(("string", "integer", "number", "boolean"))
_OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"

# List-map key fields with a +default in the Go types: kube-openapi publishes these defaults
# and structured-merge-diff uses them when an item omits the key (ports without protocol).
_KEY_DEFAULTS = {
    ("io.k8s.api.core.v1.ContainerPort", "protocol"): "TCP",
    ("io.k8s.api.core.v1.ServicePort", "protocol"): "TCP",
    ("io.k8s.api.core.v1.EndpointPort", "protocol"): "TCP",
    ("io.k8s.api.discovery.v1.EndpointPort", "protocol"): "TCP",
}

# Go value-typed (non-pointer) struct fields: kube compares against a Go zero object, where they
# exist even when unset, so adding them is not a new node (no "." in FieldsV1). Fields named
# metadata/spec/status/template/jobTemplate and required fields are covered by rule.
_VALUE_STRUCTS = {
    "io.k8s.api.apps.v1.DeploymentSpec": ("strategy",),
    "io.k8s.api.apps.v1.StatefulSetSpec": ("updateStrategy",),
    "io.k8s.api.apps.v1.DaemonSetSpec": ("updateStrategy",),
    "io.k8s.api.core.v1.Container": ("resources",),
    "io.k8s.api.core.v1.EphemeralContainer": ("resources",),
    "io.k8s.api.core.v1.PersistentVolumeClaimSpec": ("resources",),
    "io.k8s.api.core.v1.ServiceStatus": ("loadBalancer",),
    "io.k8s.api.networking.v1.IngressStatus": ("loadBalancer",),
    "io.k8s.api.core.v1.NodeStatus": ("daemonEndpoints", "nodeInfo"),
    "io.k8s.api.core.v1.NodeDaemonEndpoints": ("kubeletEndpoint",),
    "io.k8s.api.core.v1.Event": ("source",),
    "io.k8s.api.autoscaling.v1.HorizontalPodAutoscalerSpec": ("scaleTargetRef",),
    "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec": ("scaleTargetRef",),
}
_VALUE_STRUCT_NAMES = frozenset(("metadata", "spec", "status", "template", "jobTemplate"))


class Type:
    """One compiled schema node: scalar, map (struct or granular map), list, or deduced."""

    __slots__ = ("kind", "atomic", "props", "elem", "items", "list_type", "keys", "key_defaults",
                 "present", "resolve", "_kids")

    def __init__(self, kind: str, *, atomic: bool = False, props: dict[str, Any] | None = None,
                 elem: Any = None, items: Any = None, list_type: str = "atomic",
                 keys: tuple[str, ...] = (), key_defaults: dict[str, Any] | None = None,
                 present: frozenset[str] = frozenset(), resolve: Resolve | None = None) -> None:
        self.kind = kind
        self.atomic = atomic
        self.props = props or {}
        self.elem = elem          # map element schema: a node, True (untyped) or None (none allowed)
        self.items = items
        self.list_type = list_type
        self.keys = keys
        self.key_defaults = key_defaults or {}
        self.present = present
        self.resolve = resolve
        self._kids: dict[str, Type] = {}

    def declared(self, name: str) -> bool:
        return name in self.props

    def child(self, name: str) -> Type | None:
        """The type of a map entry; None when the schema does not allow the field."""
        if self.kind == DEDUCED:
            return DEDUCED_TYPE
        t = self._kids.get(name)
        if t is not None:
            return t
        node = self.props.get(name)
        if node is None:
            if self.elem is None:
                return None
            node = self.elem
        t = DEDUCED_TYPE if node is True else compile_type(node, self.resolve)
        self._kids[name] = t
        return t

    def item(self) -> Type:
        if self.items is None:
            return DEDUCED_TYPE
        t = self._kids.get("[]")
        if t is None:
            t = self._kids["[]"] = compile_type(self.items, self.resolve)
        return t


DEDUCED_TYPE = Type(DEDUCED)
_CACHE: dict[int, tuple[Any, Type]] = {}


def _ref_name(node: dict[str, Any]) -> str | None:
    ref = node.get("$ref")
    if isinstance(ref, str):
        return ref.rsplit("/", 1)[-1]
    all_of = node.get("allOf")
    if isinstance(all_of, list) and len(all_of) == 1 and isinstance(all_of[0], dict):
        return _ref_name(all_of[0])
    return None


def compile_type(node: Any, resolve: Resolve | None) -> Type:
    """The compiled type of a schema node (cached per node)."""
    if not isinstance(node, dict):
        return DEDUCED_TYPE
    hit = _CACHE.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    t = _build(node, resolve)
    if len(_CACHE) > 100_000:
        _CACHE.clear()
    _CACHE[id(node)] = (node, t)
    return t


def _build(node: dict[str, Any], resolve: Resolve | None) -> Type:
    name = _ref_name(node)
    r = resolve(node) if resolve is not None else node
    if not isinstance(r, dict):
        return DEDUCED_TYPE

    def ext(k: str) -> Any:
        v = node.get(k)
        return r.get(k) if v is None else v

    if ext("x-kubernetes-int-or-string"):
        return Type(SCALAR)
    typ = r.get("type")
    if typ == "array" or (typ is None and "items" in r):
        return _build_list(r, ext, resolve)
    props = r.get("properties")
    addl = r.get("additionalProperties")
    preserve = bool(ext("x-kubernetes-preserve-unknown-fields"))
    if typ == "object" or props or (addl is not None and addl is not False):
        atomic = ext("x-kubernetes-map-type") == "atomic"
        if not props and (addl is None or addl is False):
            return Type(MAP, atomic=True) if atomic else DEDUCED_TYPE
        if addl is True or (isinstance(addl, dict) and not addl):
            elem: Any = True
        elif isinstance(addl, dict):
            elem = addl
        else:
            elem = True if preserve else None
        builtin = name is not None or "x-kubernetes-group-version-kind" in r
        present: frozenset[str] = frozenset()
        if builtin and props:
            required = r.get("required") or ()
            extra = _VALUE_STRUCTS.get(name or "", ())
            present = frozenset(k for k in props if k in required or k in extra or k in _VALUE_STRUCT_NAMES)
        return Type(MAP, atomic=atomic, props=props if isinstance(props, dict) else {}, elem=elem,
                    present=present, resolve=resolve)
    if typ in _SCALAR_TYPES:
        return Type(SCALAR)
    return DEDUCED_TYPE


def _build_list(r: dict[str, Any], ext: Callable[[str], Any], resolve: Resolve | None) -> Type:
    list_type = ext("x-kubernetes-list-type")
    keys: tuple[str, ...] = tuple(ext("x-kubernetes-list-map-keys") or ())
    if list_type not in ("atomic", "set", "map"):
        # Built-in lists without a list-type follow their strategic-merge settings, as kube's
        # schema conversion does: merge by key is a map list, merge without key a set.
        strategy = ext("x-kubernetes-patch-strategy") or ""
        merge_key = ext("x-kubernetes-patch-merge-key")
        if merge_key:
            list_type, keys = "map", (merge_key,)
        elif "merge" in str(strategy).split(","):
            list_type = "set"
        else:
            list_type = "atomic"
    if list_type == "map" and not keys:
        list_type = "atomic"
    items = r.get("items")
    defaults: dict[str, Any] = {}
    if list_type == "map" and isinstance(items, dict):
        item_name = _ref_name(items)
        ri = resolve(items) if resolve is not None else items
        item_props = ri.get("properties") if isinstance(ri, dict) else None
        for k in keys:
            p = item_props.get(k) if isinstance(item_props, dict) else None
            if isinstance(p, dict) and "default" in p:
                defaults[k] = p["default"]
            elif (item_name or "", k) in _KEY_DEFAULTS:
                defaults[k] = _KEY_DEFAULTS[(item_name or "", k)]
    return Type(LIST, items=items if isinstance(items, dict) else None, list_type=list_type,
                keys=keys, key_defaults=defaults, resolve=resolve)


_ROOTS: dict[int, tuple[Any, Type]] = {}


def root_type(schema: dict[str, Any] | None, resolve: Resolve | None) -> Type:
    """The type of a whole object; metadata is always ObjectMeta, as kube gives CRDs too."""
    hit = _ROOTS.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    from pocketkube.api import schemas

    base = compile_type(schema, resolve) if schema is not None else DEDUCED_TYPE
    meta = schemas.definitions()[_OBJECT_META]
    if base.kind == MAP and isinstance(base.props.get("metadata"), dict) and \
            _ref_name(base.props["metadata"]) == _OBJECT_META:
        t = base
    else:
        props = dict(base.props) if base.kind == MAP else {}
        props["metadata"] = meta
        props.setdefault("apiVersion", {"type": "string"})
        props.setdefault("kind", {"type": "string"})
        t = Type(MAP, props=props, elem=base.elem if base.kind == MAP else True,
                 present=base.present, resolve=resolve)
        t._kids["metadata"] = compile_type(meta, schemas.resolve)
    if len(_ROOTS) > 10_000:
        _ROOTS.clear()
    _ROOTS[id(schema)] = (schema, t)
    return t


# --- walking objects ------------------------------------------------------------------------

LEAF = "leaf"


def shape(t: Type, v: Any) -> str:
    """How a value is walked: LEAF (scalars, atomic values), MAP (granular) or LIST (set/map list)."""
    k = t.kind
    if k == MAP:
        return MAP if not t.atomic and isinstance(v, dict) else LEAF
    if k == LIST:
        return LIST if t.list_type != "atomic" and isinstance(v, list) else LEAF
    if k == DEDUCED:
        return MAP if isinstance(v, dict) else LEAF
    return LEAF


def item_pe(t: Type, item: Any, i: int, path: Path) -> PathElement:
    """The path element naming a set/map list item (keys filled from defaults)."""
    if t.list_type == "set":
        return (VALUE, freeze(item))
    if item is None:
        raise FieldSetError(f"{path_string(path)}: element {i}: associative list with keys may not have a null element")
    if not isinstance(item, dict):
        raise FieldSetError(f"{path_string(path)}: element {i}: associative list with keys may not have non-map elements")
    fields = []
    for k in t.keys:
        if k in item:
            fields.append((k, freeze(item[k])))
        elif k in t.key_defaults:
            fields.append((k, freeze(t.key_defaults[k])))
        else:
            raise FieldSetError(
                f'{path_string(path)}: element {i}: associative list with keys has an element that omits '
                f'key field "{k}" (and doesn\'t have default value)')
    fields.sort()
    return (KEY, tuple(fields))


def from_object(obj: Any, t: Type, *, strict: bool = False) -> FieldSet:
    """The fields an object sets (ToFieldSet): leaves, list items, empty maps, atomic values.

    strict (for applied configurations) rejects undeclared fields and duplicate list keys.
    """
    out = FieldSet()
    _fill(out, obj, t, (), strict)
    return out


def _fill(node: FieldSet, v: Any, t: Type, path: Path, strict: bool) -> None:
    s = shape(t, v)
    if s == MAP:
        for k, cv in v.items():
            ct = t.child(k)
            pe = (FIELD, k)
            if ct is None:
                if strict:
                    raise FieldSetError(f"{path_string(path + (pe,))}: field not declared in schema")
                ct = DEDUCED_TYPE
            cs = LEAF if cv is None else shape(ct, cv)
            if cs != LEAF:
                child = FieldSet()
                _fill(child, cv, ct, path + (pe,), strict)
                if not child.empty():
                    node.children[pe] = child
            if cs == LEAF or (cs == MAP and not cv) or not t.declared(k):
                node.members.add(pe)
    elif s == LIST:
        it = t.item()
        for i, item in enumerate(v):
            pe = item_pe(t, item, i, path)
            if pe in node.members:
                if strict:
                    raise FieldSetError(f"{path_string(path)}: duplicate entries for key {pe_display(pe)}")
                continue
            node.members.add(pe)
            if shape(it, item) != LEAF:
                child = FieldSet()
                _fill(child, item, it, path + (pe,), strict)
                if not child.empty():
                    node.children[pe] = child


def equal(a: Any, b: Any) -> bool:
    """JSON equality that, unlike ==, tells true from 1."""
    if a is b:
        return True
    ta, tb = type(a), type(b)
    if ta is dict:
        return tb is dict and len(a) == len(b) and all(k in b and equal(x, b[k]) for k, x in a.items())
    if ta is list:
        return tb is list and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b, strict=True))
    if ta is bool or tb is bool:
        return ta is tb and a == b
    if tb is dict or tb is list:
        return False
    return bool(a == b)


class Comparison:
    """The fields added, modified and removed between two versions of an object."""

    __slots__ = ("added", "modified", "removed")

    def __init__(self) -> None:
        self.added = FieldSet()
        self.modified = FieldSet()
        self.removed = FieldSet()

    def changed(self) -> FieldSet:
        """Added or modified: what a write takes ownership of."""
        return self.added.union(self.modified)


def compare(old: Any, new: Any, t: Type) -> Comparison:
    """Compare two objects field by field; a null counts as absent, as in Go objects."""
    c = Comparison()
    _cmp(old if old is not None else {}, new if new is not None else {}, t, (), c)
    return c


def _cmp(o: Any, n: Any, t: Type, path: Path, c: Comparison) -> None:
    if o is None and n is not None and path:
        _graft_added(c.added, path, _added_below(n, t, path))
        return
    so = None if o is None else shape(t, o)
    sn = None if n is None else shape(t, n)
    s = sn or so
    if so is not None and sn is not None and so != sn:
        s = LEAF
    if s == LEAF or (not o and not n):
        if o is None:
            if n is not None:
                c.added.insert(path)
        elif n is None:
            c.removed.insert(path)
        elif not equal(o, n):
            c.modified.insert(path)
        return
    if s == MAP:
        od = o if isinstance(o, dict) else {}
        nd = n if isinstance(n, dict) else {}
        for k in od.keys() | nd.keys():
            ov, nv = od.get(k), nd.get(k)
            if ov is None and nv is None:
                continue
            ct = t.child(k) or DEDUCED_TYPE
            if ov is None and o is not None and k in t.present:
                cs = shape(ct, nv)
                if cs == MAP:
                    ov = {}
                elif cs == LIST:
                    ov = []
            _cmp(ov, nv, ct, path + ((FIELD, k),), c)
    else:
        _cmp_list(o or [], n or [], t, path, c)
    if path:
        if o is None:
            c.added.insert(path)
        elif n is None:
            c.removed.insert(path)


def _added_below(n: Any, t: Type, path: Path) -> FieldSet | None:
    """What _cmp(None, n, ...) adds below path (path itself is always added), built in one pass.

    A create walks the whole object on this path, so it builds the trie directly instead of
    inserting every path from the root."""
    s = shape(t, n)
    if s == LEAF or not n:
        return None
    node = FieldSet()
    if s == MAP:
        for k, nv in n.items():
            if nv is None:
                continue
            pe: PathElement = (FIELD, k)
            sub = _added_below(nv, t.child(k) or DEDUCED_TYPE, path + (pe,))
            node.members.add(pe)
            if sub is not None:
                node.children[pe] = sub
    else:
        order, by = _index(n, t, path)
        it = t.item()
        for pe in order:
            items = by[pe]
            if len(items) > 1:
                node.members.add(pe)
                continue
            if items[0] is None:
                continue
            sub = _added_below(items[0], it, path + (pe,))
            node.members.add(pe)
            if sub is not None:
                node.children[pe] = sub
    return node if node.members or node.children else None


def _graft_added(added: FieldSet, path: Path, below: FieldSet | None) -> None:
    node = added.below(path[:-1])
    last = path[-1]
    node.members.add(last)
    if below is not None:
        prev = node.children.get(last)
        node.children[last] = below if prev is None else prev.union(below)


def _index(items: list[Any], t: Type, path: Path) -> tuple[list[PathElement], dict[PathElement, list[Any]]]:
    order: list[PathElement] = []
    by: dict[PathElement, list[Any]] = {}
    for i, item in enumerate(items):
        pe = item_pe(t, item, i, path)
        hit = by.get(pe)
        if hit is None:
            by[pe] = [item]
            order.append(pe)
        else:
            hit.append(item)
    return order, by


# --- a create's fields, straight to FieldsV1 ---------------------------------------------------

class _Unexpected(Exception):
    """A shape the direct walk does not mirror; the caller takes the general walk instead."""


def created_json(obj: Any, t: Type) -> dict[str, Any] | None:
    """compare(None, obj, t).added.to_json() in one walk that builds the document itself.

    A create owns every field of its object, so there is no trie to build, union and walk again.
    None when obj has a shape only the general walk handles. Raises FieldSetError where compare does
    (its message names no path: a create's caller drops managedFields on any error, as kube does)."""
    try:
        return _over_empty({}, obj, t) or {}
    except _Unexpected:
        return None


def _first(item: tuple[PathElement, Any]) -> PathElement:
    return item[0]


def _new_json(n: Any, t: Type) -> dict[str, Any] | None:
    """_added_below(n, t, path).to_json(): every path below is a member; None when there is none.

    shape() is spelled out here: this runs once per map or list of every created object."""
    if not n:
        return None
    kind = t.kind
    if isinstance(n, dict):
        if kind != DEDUCED and (kind != MAP or t.atomic):
            return None
        # Field names sort as their path elements do; only maps and lists have anything below them.
        out: dict[str, Any] = {}
        kids, child = t._kids, t.child
        for k in sorted(n):
            nv = n[k]
            if nv is None:
                continue
            if nv and isinstance(nv, (dict, list)):
                sub = _new_json(nv, kids.get(k) or child(k) or DEDUCED_TYPE)
                out["f:" + k] = {".": {}, **sub} if sub else {}
            else:
                out["f:" + k] = {}
        return out or None
    if kind == LIST and t.list_type != "atomic" and isinstance(n, list):
        return _items_json(n, t)
    return None


def _items_json(n: list[Any], t: Type) -> dict[str, Any] | None:
    """The FieldsV1 of a set or map list's items, all new (duplicated keys are owned as one item)."""
    found: list[tuple[PathElement, Any]] = []
    order, by = _index(n, t, ())
    it = t.item()
    for pe in order:
        items = by[pe]
        if len(items) > 1:
            found.append((pe, {}))
        elif items[0] is not None:
            sub = _new_json(items[0], it)
            found.append((pe, {".": {}, **sub} if sub else {}))
    if not found:
        return None
    found.sort(key=_first)
    return {pe_to_string(pe): v for pe, v in found}


def _over_empty(o: Any, n: Any, t: Type) -> dict[str, Any] | None:
    """What _cmp(o, n, t, path) adds below path when o is an empty map or list standing in for a value
    struct the old object lacks (so path itself is not added): None when nothing."""
    s = shape(t, n)
    if s != shape(t, o) or s == LEAF:
        raise _Unexpected
    if not n:
        return None
    if s == LIST:
        return _items_json(n, t)
    out: dict[str, Any] = {}
    present = t.present
    for k in sorted(n):
        nv = n[k]
        if nv is None:
            continue
        ct = t.child(k) or DEDUCED_TYPE
        if k in present:
            cs = shape(ct, nv)
            if cs == MAP or cs == LIST:
                sub = _over_empty({} if cs == MAP else [], nv, ct)
                if sub:
                    out["f:" + k] = sub
                continue
        sub = _new_json(nv, ct) if isinstance(nv, (dict, list)) else None
        out["f:" + k] = {".": {}, **sub} if sub else {}
    return out or None


def json_difference(doc: dict[str, Any], other: FieldSet, *, recursive: bool = False) -> None:
    """Remove other's paths from a FieldsV1 document in place, as FieldSet.difference (a member removes
    only itself) or, recursive, FieldSet.recursive_difference (a member removes all below it)."""
    for pe in other.members:
        name = "f:" + pe[1] if pe[0] == FIELD else pe_to_string(pe)
        v = doc.get(name)
        if v is None:
            continue
        if recursive or not v:
            del doc[name]
        elif "." in v:
            del v["."]
    for pe, c in other.children.items():
        name = "f:" + pe[1] if pe[0] == FIELD else pe_to_string(pe)
        v = doc.get(name)
        if not v:
            continue
        json_difference(v, c, recursive=recursive)
        if not v:
            del doc[name]
        elif len(v) == 1 and "." in v:
            doc[name] = {}


def _cmp_list(o: list[Any], n: list[Any], t: Type, path: Path, c: Comparison) -> None:
    o_order, o_by = _index(o, t, path)
    n_order, n_by = _index(n, t, path)
    it = t.item()
    for pe in o_order + [pe for pe in n_order if pe not in o_by]:
        lo, ln = o_by.get(pe), n_by.get(pe)
        p = path + (pe,)
        if (lo is not None and len(lo) > 1) or (ln is not None and len(ln) > 1):
            # Duplicated keys (allowed in stored objects) are owned as one opaque item.
            if lo is None:
                c.added.insert(p)
            elif ln is None:
                c.removed.insert(p)
            elif not equal(lo, ln):
                c.modified.insert(p)
            continue
        _cmp(lo[0] if lo else None, ln[0] if ln else None, it, p, c)


def ensure_named_fields_are_members(s: FieldSet, t: Type) -> FieldSet:
    """s plus every declared struct field on the way to its paths (not map keys or list items)."""
    if not s.children:
        return s
    members = set(s.members)
    children = {}
    for pe, c in s.children.items():
        if pe[0] == FIELD:
            if t.kind == MAP and t.declared(pe[1]):
                members.add(pe)
            ct = t.child(pe[1]) or DEDUCED_TYPE
        else:
            ct = t.item() if t.kind == LIST else DEDUCED_TYPE
        children[pe] = ensure_named_fields_are_members(c, ct)
    return FieldSet(members, children)


def prefixes(*paths: tuple[str, ...]) -> FieldSet:
    """A set of field-name paths, e.g. prefixes(("status",)) to filter out a reset subtree."""
    return FieldSet.of(*(tuple((FIELD, p) for p in path) for path in paths))
