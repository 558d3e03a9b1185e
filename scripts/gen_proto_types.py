"""Generate pocketkube/api/protodata/types.json, the Kubernetes protobuf wire table, from Go type definitions.

The table maps each Go message (``core/v1.PodSpec``) to its protobuf fields:
``{"<number>": [json_name, kind, type, flags]}`` in Go declaration order, which is all the decoder in
pocketkube/api/protobuf.py needs to turn a protobuf body into the JSON a Go client would have sent.

Two sources give the same model (struct fields with their Go type, json tag and protobuf tag):

* ``--kubectl BIN``: the Go runtime type metadata (``.typelink`` and the struct descriptors it reaches)
  inside a kubectl 1.32 binary. kubectl links every k8s.io/api and apimachinery type, with the exact
  struct tags of the release it was built from, so this is the 1.32 wire interface itself.
* ``--types-go PKG=FILE``: ``types.go`` text of packages kubectl does not link (apiextensions,
  apiregistration), parsed for ``type X struct {...}`` and ``type X Y`` declarations.

Usage::

    python scripts/gen_proto_types.py --kubectl /usr/lib/google-cloud-sdk/bin/kubectl.1.32 \\
        --types-go k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1=/tmp/apiextensions_v1_types.go ...
"""

from __future__ import annotations

import argparse
import json
import re
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

# A Go type expression: ("scalar", "string") | ("named", "pkg/path.Name") | ("ptr", T) | ("slice", T)
# | ("map", K, V) | ("array", T) | ("struct",) | ("other", "...").
TypeExpr = tuple

OUT = Path(__file__).resolve().parent.parent / "pocketkube" / "api" / "protodata" / "types.json"

API = "k8s.io/api/"
META = "k8s.io/apimachinery/pkg/apis/meta/v1"
EXT = "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
AGG = "k8s.io/kube-aggregator/pkg/apis/apiregistration/v1"

# API group -> package prefix of its Go types (k8s.io/api/<prefix>/<version>).
GROUPS = {
    "": "core", "apps": "apps", "batch": "batch", "autoscaling": "autoscaling", "policy": "policy",
    "networking.k8s.io": "networking", "rbac.authorization.k8s.io": "rbac", "storage.k8s.io": "storage",
    "coordination.k8s.io": "coordination", "discovery.k8s.io": "discovery", "events.k8s.io": "events",
    "scheduling.k8s.io": "scheduling", "node.k8s.io": "node", "certificates.k8s.io": "certificates",
    "admissionregistration.k8s.io": "admissionregistration", "authentication.k8s.io": "authentication",
    "authorization.k8s.io": "authorization", "flowcontrol.apiserver.k8s.io": "flowcontrol",
    "apiregistration.k8s.io": "apiregistration", "apiextensions.k8s.io": "apiextensions",
    "admission.k8s.io": "admission", "resource.k8s.io": "resource", "storagemigration.k8s.io": "storagemigration",
    "internal.apiserver.k8s.io": "apiserverinternal", "imagepolicy.k8s.io": "imagepolicy",
}

# Group versions whose types go into the table (what pocketkube serves, plus admission reviews).
SERVED = [
    "core/v1", "apps/v1", "batch/v1", "autoscaling/v1", "autoscaling/v2", "policy/v1", "networking/v1",
    "rbac/v1", "storage/v1", "coordination/v1", "discovery/v1", "events/v1", "scheduling/v1", "node/v1",
    "certificates/v1", "admissionregistration/v1", "authentication/v1", "authorization/v1", "flowcontrol/v1",
    "apiregistration/v1", "apiextensions/v1", "admission/v1", "meta/v1",
]

# Go types whose JSON form is not their struct: the decoder handles each by this kind.
SPECIAL = {
    f"{META}.Time": "time", f"{META}.MicroTime": "microtime", f"{META}.Duration": "duration",
    f"{META}.FieldsV1": "fieldsv1",
    "k8s.io/apimachinery/pkg/api/resource.Quantity": "quantity",
    "k8s.io/apimachinery/pkg/util/intstr.IntOrString": "intorstring",
    "k8s.io/apimachinery/pkg/runtime.RawExtension": "rawextension",
    f"{EXT}.JSON": "json", f"{EXT}.JSONSchemaPropsOrArray": "orarray", f"{EXT}.JSONSchemaPropsOrBool": "orbool",
    f"{EXT}.JSONSchemaPropsOrStringArray": "orstringarray",
}
# The special kinds that wrap another message, and which one.
SPECIAL_INNER = {"orarray": f"{EXT}.JSONSchemaProps", "orbool": f"{EXT}.JSONSchemaProps",
                 "orstringarray": f"{EXT}.JSONSchemaProps"}

SCALARS = {"string", "bool", "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32",
           "uint64", "float32", "float64", "byte"}


@dataclass
class Field:
    name: str
    type: TypeExpr
    tag: str
    embedded: bool


@dataclass
class Model:
    structs: dict[str, list[Field]]
    named: dict[str, TypeExpr]  # non-struct named types -> underlying expression


def short(qual: str) -> str:
    """`k8s.io/api/apps/v1.Deployment` -> `apps/v1.Deployment` (the table's message names)."""
    pkg, _, name = qual.rpartition(".")
    if pkg.startswith(API):
        p = pkg[len(API):]
    elif pkg == META:
        p = "meta/v1"
    elif pkg == EXT:
        p = "apiextensions/v1"
    elif pkg == AGG:
        p = "apiregistration/v1"
    else:
        p = pkg.rsplit("/", 1)[-1]
    return f"{p}.{name}"


# --- Source 1: Go runtime type metadata in a kubectl binary (go1.20+ ABI, amd64, non-PIE) -------------

KIND_NAMES = {1: "bool", 2: "int", 3: "int8", 4: "int16", 5: "int32", 6: "int64", 7: "uint", 8: "uint8",
              9: "uint16", 10: "uint32", 11: "uint64", 12: "uintptr", 13: "float32", 14: "float64",
              24: "string"}
# Size of the kind-specific part after the 48-byte abi.Type header, to find the uncommon type (go1.20-1.23).
KIND_EXTRA = {17: 24, 18: 16, 19: 8, 20: 32, 21: 40, 22: 8, 23: 8, 25: 32}
TFLAG_UNCOMMON, TFLAG_EXTRA_STAR, TFLAG_NAMED = 1, 2, 4


class GoBinary:
    """Reads struct definitions out of a stripped Go ELF through its type links."""

    def __init__(self, path: str) -> None:
        self.b = Path(path).read_bytes()
        self.sections = self._sections()
        addr, off, size = self.sections[".go.buildinfo"]
        m = re.search(rb"go1\.(\d+)", self.b[off:off + size])
        # go1.24 swiss maps made abi.MapType longer, which moves the uncommon type of named maps.
        self.kind_extra = {**KIND_EXTRA, **({21: 64} if m and int(m.group(1)) >= 24 else {})}
        self.types_base = self.sections[".rodata"][0]
        self.model = Model({}, {})
        self._seen: dict[int, TypeExpr] = {}

    def _sections(self) -> dict[str, tuple[int, int, int]]:
        b = self.b
        shoff, = struct.unpack_from("<Q", b, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", b, 0x3A)
        raw = [struct.unpack_from("<IIQQQQ", b, shoff + i * shentsize) for i in range(shnum)]
        stroff = raw[shstrndx][4]
        out = {}
        for name, _typ, _flags, addr, off, size in raw:
            n = b[stroff + name:b.index(b"\0", stroff + name)].decode()
            out[n] = (addr, off, size)
        return out

    def off(self, addr: int) -> int:
        for a, o, size in self.sections.values():
            if a and a <= addr < a + size:
                return o + addr - a
        raise ValueError(f"address {addr:#x} outside the image")

    def u64(self, addr: int) -> int:
        return struct.unpack_from("<Q", self.b, self.off(addr))[0]

    def name(self, addr: int) -> tuple[int, str, str]:
        """(flags, name, tag) of an abi.Name."""
        o = self.off(addr)
        flags = self.b[o]
        o += 1
        n, o = self._uvarint(o)
        text = self.b[o:o + n].decode()
        o += n
        tag = ""
        if flags & 2:
            t, o = self._uvarint(o)
            tag = self.b[o:o + t].decode()
        return flags, text, tag

    def _uvarint(self, o: int) -> tuple[int, int]:
        v = shift = 0
        while True:
            c = self.b[o]
            o += 1
            v |= (c & 0x7F) << shift
            shift += 7
            if c < 0x80:
                return v, o

    def load(self) -> Model:
        addr, off, size = self.sections[".typelink"]
        for rel in struct.unpack_from(f"<{size // 4}i", self.b, off):
            self.type(self.types_base + rel)
        return self.model

    def type(self, addr: int) -> TypeExpr:
        if addr in self._seen:
            return self._seen[addr]
        o = self.off(addr)
        _size, _ptr, _hash, tflag, _al, _fal, kind, _eq, _gc, str_off, _ptt = struct.unpack_from(
            "<QQIBBBBQQii", self.b, o)
        kind &= 0x1F
        text = self.name(self.types_base + str_off)[1]
        if tflag & TFLAG_EXTRA_STAR:
            text = text[1:]
        pkg = ""
        if tflag & TFLAG_UNCOMMON:
            pkg_off, = struct.unpack_from("<i", self.b, o + 48 + self.kind_extra.get(kind, 0))
            if pkg_off:
                pkg = self.name(self.types_base + pkg_off)[1]
        if tflag & TFLAG_NAMED and pkg:
            qual = f"{pkg}.{text.rsplit('.', 1)[-1]}"
            expr: TypeExpr = ("named", qual)
            self._seen[addr] = expr
            if kind == 25:
                if qual not in self.model.structs:
                    self.model.structs[qual] = []  # reserve against recursion
                    self.model.structs[qual] = self._struct_fields(addr)
            else:
                self.model.named[qual] = self._unnamed(addr, kind)
            return expr
        expr = self._unnamed(addr, kind)
        self._seen[addr] = expr
        return expr

    def _unnamed(self, addr: int, kind: int) -> TypeExpr:
        h = addr + 48
        if kind in KIND_NAMES:
            return ("scalar", KIND_NAMES[kind])
        if kind == 22:
            return ("ptr", self.type(self.u64(h)))
        if kind == 23:
            return ("slice", self.type(self.u64(h)))
        if kind == 17:
            return ("array", self.type(self.u64(h)))
        if kind == 21:
            return ("map", self.type(self.u64(h)), self.type(self.u64(h + 8)))
        if kind == 25:
            return ("struct",)
        return ("other", str(kind))

    def _struct_fields(self, addr: int) -> list[Field]:
        fptr, flen = self.u64(addr + 56), self.u64(addr + 64)
        fields = []
        for i in range(flen):
            f = fptr + i * 24
            flags, name, tag = self.name(self.u64(f))
            fields.append(Field(name, self.type(self.u64(f + 8)), tag, bool(flags & 8)))
        return fields


# --- Source 2: types.go text ---------------------------------------------------------------------------

_TYPE_DECL = re.compile(r"^type\s+(\w+)\s+(struct\s*\{\s*\}|struct\s*\{|.+)$")
_FIELD = re.compile(r"^(?:(\w+)\s+)?([\w.*\[\]]+(?:\[[\w.*\[\]]+\][\w.*\[\]]+)?)\s*(`[^`]*`)?\s*(?://.*)?$")
_IMPORT = re.compile(r'^\s*(?:(\w+)\s+)?"([^"]+)"')


def parse_types_go(pkg: str, text: str, model: Model) -> None:
    """Add the struct and named type declarations of one Go file (package path `pkg`) to `model`."""
    imports: dict[str, str] = {}
    lines = [ln.strip() for ln in text.splitlines()]
    in_import = False
    for ln in lines:
        if ln.startswith("import ("):
            in_import = True
            continue
        if in_import and ln == ")":
            in_import = False
        if in_import or ln.startswith("import "):
            m = _IMPORT.match(ln.removeprefix("import "))
            if m:
                imports[m.group(1) or m.group(2).rsplit("/", 1)[-1]] = m.group(2)

    def resolve(expr: str) -> TypeExpr:
        if expr.startswith("*"):
            return ("ptr", resolve(expr[1:]))
        if expr.startswith("[]"):
            return ("slice", resolve(expr[2:]))
        if expr.startswith("map["):
            depth, i = 0, 3
            for i in range(3, len(expr)):
                depth += {"[": 1, "]": -1}.get(expr[i], 0)
                if depth == 0:
                    break
            return ("map", resolve(expr[4:i]), resolve(expr[i + 1:]))
        if expr in SCALARS:
            return ("scalar", "uint8" if expr == "byte" else expr)
        if "." in expr:
            alias, name = expr.split(".", 1)
            return ("named", f"{imports[alias]}.{name}")
        return ("named", f"{pkg}.{expr}")

    current: list[Field] | None = None
    for ln in lines:
        if current is not None:
            if ln.startswith("}"):
                current = None
                continue
            if not ln or ln.startswith("//"):
                continue
            m = _FIELD.match(ln)
            if not m:
                raise ValueError(f"cannot parse field line: {ln!r}")
            name, typ, tag = m.group(1), m.group(2), (m.group(3) or "``")[1:-1]
            embedded = name is None
            current.append(Field(name or typ.rsplit(".", 1)[-1].lstrip("*"), resolve(typ), tag, embedded))
            continue
        m = _TYPE_DECL.match(ln)
        if not m:
            continue
        qual = f"{pkg}.{m.group(1)}"
        body = m.group(2).strip()
        if body.startswith("struct"):
            model.structs[qual] = []
            if not body.endswith("}"):
                current = model.structs[qual]
        else:
            model.named[qual] = resolve(body.split("//")[0].strip())


# --- Emitting the table --------------------------------------------------------------------------------

def tag_value(tag: str, key: str) -> str | None:
    m = re.search(rf'(?:^|\s){key}:"([^"]*)"', tag)
    return m.group(1) if m else None


class Emitter:
    """Turns the Go model into the compact table, pulling in every message the served types reach."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.messages: dict[str, dict[str, list]] = {}
        self.lists: dict[str, list] = {}
        self.untagged: list[str] = []
        self.kinds: list[str] = []  # messages that embed TypeMeta: what an envelope may name
        self._todo: list[str] = []

    def underlying(self, t: TypeExpr) -> TypeExpr:
        while t[0] == "named" and t[1] in self.model.named:
            t = self.model.named[t[1]]
        return t

    def elem(self, t: TypeExpr, *, where: str) -> tuple[str, str]:
        """(kind, type) of a value of Go type `t` (pointers already stripped)."""
        if t[0] == "named":
            qual = t[1]
            if qual in SPECIAL:
                kind = SPECIAL[qual]
                if kind in SPECIAL_INNER:
                    self.want(SPECIAL_INNER[kind])
                return kind, ""
            if qual in self.model.structs:
                self.want(qual)
                return "msg", short(qual)
            u = self.underlying(t)
            if u[0] == "slice" and u[1] != ("scalar", "uint8"):
                # A named slice outside a repeated field is a message whose field 1 holds the items.
                name = short(qual)
                if name not in self.lists:
                    self.lists[name] = []
                    self.lists[name] = list(self.elem(self.strip(u[1]), where=f"{where}[]"))
                return "list", name
            if u[0] == "named":
                raise ValueError(f"{where}: unknown Go type {qual}")
            return self.elem(u, where=where)
        if t[0] == "scalar":
            return {"int": "int64", "uint": "uint64", "uint8": "uint32", "uint16": "uint32", "int8": "int32",
                    "int16": "int32", "float32": "float", "float64": "double"}.get(t[1], t[1]), ""
        if t[0] == "slice" and t[1] == ("scalar", "uint8"):
            return "bytes", ""
        raise ValueError(f"{where}: unsupported Go type {t}")

    @staticmethod
    def strip(t: TypeExpr) -> TypeExpr:
        return t[1] if t[0] == "ptr" else t

    def want(self, qual: str) -> None:
        if short(qual) not in self.messages and qual not in self._todo:
            self._todo.append(qual)

    def run(self, roots: list[str]) -> None:
        for r in roots:
            self.want(r)
        while self._todo:
            qual = self._todo.pop(0)
            if short(qual) in self.messages:
                continue
            self.messages[short(qual)] = {}
            self.messages[short(qual)] = self.message(qual)

    def message(self, qual: str) -> dict[str, list]:
        out: dict[str, list] = {}
        for f in self.model.structs[qual]:
            where = f"{short(qual)}.{f.name}"
            pb = tag_value(f.tag, "protobuf")
            js = tag_value(f.tag, "json")
            if not pb or pb == "-":
                if f.embedded and f.type == ("named", f"{META}.TypeMeta"):
                    self.kinds.append(short(qual))
                    continue
                if js != "-" and f.name[:1].isupper():
                    self.untagged.append(where)
                continue
            parts = pb.split(",")
            number, opt = parts[1], parts[2] if len(parts) > 2 else "opt"
            js_name, *js_opts = (js if js is not None else f.name).split(",")
            flags = ""
            t = f.type
            if t[0] == "ptr":
                flags += "p"
                t = t[1]
            if "omitempty" in js_opts:
                flags += "o"
            if js_opts and "inline" in js_opts or (f.embedded and js is not None and js_name == ""):
                flags += "i"
            u = self.underlying(t)
            if u[0] == "map":
                kk, _ = self.elem(u[1], where=where)
                vk, vt = self.elem(self.strip(u[2]), where=where)
                out[number] = [js_name, "map", [kk, vk, vt], flags]
                continue
            if u[0] == "slice" and u[1] != ("scalar", "uint8") and (t[0] != "named" or opt == "rep"):
                flags += "r"
                k, ty = self.elem(self.strip(u[1]), where=where)
            else:
                k, ty = self.elem(t, where=where)
            out[number] = [js_name, k, ty, flags]
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kubectl", default="/usr/lib/google-cloud-sdk/bin/kubectl.1.32")
    ap.add_argument("--types-go", action="append", default=[], metavar="PKG=FILE")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)
    model = GoBinary(args.kubectl).load()
    for spec in args.types_go:
        pkg, _, path = spec.partition("=")
        parse_types_go(pkg, Path(path).read_text(), model)
    roots = []
    for qual in model.structs:
        s = short(qual)
        if s.split(".")[0] in SERVED and qual not in SPECIAL:
            pkg = qual.rpartition(".")[0]
            if pkg.startswith(API) or pkg in (META, EXT, AGG):
                roots.append(qual)
    em = Emitter(model)
    em.run(sorted(roots))
    table = {
        "source": "kubectl 1.32 type metadata + apiextensions/apiregistration types.go",
        "groups": GROUPS,
        "messages": dict(sorted(em.messages.items())),
        "lists": dict(sorted(em.lists.items())),
        "kinds": sorted(em.kinds),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    # One message per line keeps regenerations reviewable as diffs.
    lines = [f"{json.dumps(k)}:{json.dumps(v, separators=(',', ':'))}" for k, v in table["messages"].items()]
    head = {k: v for k, v in table.items() if k != "messages"}
    text = json.dumps(head, separators=(",", ":"))[:-1] + ',\n"messages":{\n' + ",\n".join(lines) + "\n}}\n"
    json.loads(text)
    Path(args.out).write_text(text)
    print(f"{len(em.messages)} messages, {len(em.lists)} list wrappers -> {args.out}", file=sys.stderr)
    if em.untagged:
        print("fields without a protobuf tag (JSON only):", ", ".join(em.untagged), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
