"""Field selectors: parse them like k8s.io/apimachinery/pkg/fields and check/match them per kind as kube-apiserver 1.32."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.api import errors, selectors

EQUALS = "="
NOT_EQUALS = "!="

# Tried in this order at every position, so `!=` and `==` win over `=`.
_TERM_OPERATORS = ("!=", "==", "=")


class Term:
    """One `field=value` or `field!=value` term (fields.hasTerm / notHasTerm)."""

    __slots__ = ("field", "operator", "value")

    def __init__(self, field: str, operator: str, value: str) -> None:
        self.field = field
        self.operator = operator
        self.value = value

    def matches(self, fields: Mapping[str, str]) -> bool:
        """A missing field reads as "" (fields.Set.Get)."""
        actual = fields.get(self.field, "")
        return actual == self.value if self.operator == EQUALS else actual != self.value

    def __str__(self) -> str:
        return f"{self.field}{self.operator}{escape_value(self.value)}"

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Term) and self.field == other.field
                and self.operator == other.operator and self.value == other.value)

    def __hash__(self) -> int:
        return hash((self.field, self.operator, self.value))

    def __repr__(self) -> str:
        return f"Term({self.field!r}, {self.operator!r}, {self.value!r})"


class Selector:
    """A conjunction of terms; the empty selector matches everything."""

    __slots__ = ("terms",)

    def __init__(self, terms: tuple[Term, ...] = ()) -> None:
        self.terms = terms

    @property
    def empty(self) -> bool:
        return not self.terms

    def matches(self, fields: Mapping[str, str]) -> bool:
        """Whether an object with these selectable fields is selected."""
        return all(t.matches(fields) for t in self.terms)

    def requires_exact_match(self, field: str) -> str | None:
        """The value `field` must equal, if a `field=value` term pins it (e.g. spec.nodeName)."""
        for t in self.terms:
            if t.field == field and t.operator == EQUALS:
                return t.value
        return None

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and self.terms == other.terms

    def __hash__(self) -> int:
        return hash(self.terms)

    def __repr__(self) -> str:
        return f"Selector({str(self)!r})"


EVERYTHING = Selector()


# --- parsing ---------------------------------------------------------------------------


def escape_value(s: str) -> str:
    """fields.EscapeValue: backslash-escape `\\`, `,` and `=`."""
    return s.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def unescape_value(s: str) -> str:
    """fields.UnescapeValue, raising errors.BadRequest with kube's wording on a bad escape."""
    if not any(c in s for c in "\\,="):
        return s
    out: list[str] = []
    in_slash = False
    for c in s:
        if in_slash:
            if c not in "\\,=":
                raise errors.BadRequest(f"invalid field selector: invalid escape sequence: \\{c}")
            out.append(c)
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c in ",=":
            # Go prints the rune with %v, i.e. as its code point number.
            raise errors.BadRequest(f"invalid field selector: unescaped character in value: {ord(c)}")
        else:
            out.append(c)
    if in_slash:
        raise errors.BadRequest("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(s: str) -> list[str]:
    if not s:
        return []
    terms, start, in_slash = [], 0, False
    for i, c in enumerate(s):
        if in_slash:
            in_slash = False
        elif c == "\\":
            in_slash = True
        elif c == ",":
            terms.append(s[start:i])
            start = i + 1
    terms.append(s[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    for i in range(len(term)):
        for op in _TERM_OPERATORS:
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op):]
    return None


def parse(s: str) -> Selector:
    """fields.ParseSelector: `a=b,c!=d` (terms sorted like kube) or errors.BadRequest."""
    if not isinstance(s, str):
        raise errors.BadRequest(f"field selector must be a string, not {type(s).__name__}")
    terms: list[Term] = []
    # kube sorts the raw terms before parsing, which decides which error is reported first.
    for part in sorted(_split_terms(s), key=lambda p: p.encode("utf-8", "surrogatepass")):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise errors.BadRequest(f"invalid selector: '{s}'; can't understand '{part}'")
        lhs, op, rhs = split
        terms.append(Term(lhs, NOT_EQUALS if op == "!=" else EQUALS, unescape_value(rhs)))
    return Selector(tuple(terms))


def from_set(fields: Mapping[str, str]) -> Selector:
    """fields.SelectorFromSet: every field must equal its value."""
    return Selector(tuple(Term(k, EQUALS, v) for k, v in sorted(fields.items())))


# --- what kube-apiserver 1.32 lets you select, per kind ----------------------------------

_META = ("metadata.name", "metadata.namespace")
_NOT_SUPPORTED = "field label not supported: {label}"

# (group, kind) -> ({external label: stored label}, error format). Kinds missing here fall back
# to runtime.DefaultMetaV1FieldSelectorConversion (metadata.name and metadata.namespace only).
_CONVERSIONS: dict[tuple[str, str], tuple[dict[str, str], str]] = {
    ("", "Pod"): ({**{f: f for f in (
        *_META, "spec.nodeName", "spec.restartPolicy", "spec.schedulerName", "spec.serviceAccountName",
        "spec.hostNetwork", "status.phase", "status.podIP", "status.podIPs", "status.nominatedNodeName")},
        # old v1 clients still send spec.host
        "spec.host": "spec.nodeName"}, _NOT_SUPPORTED),
    ("", "Node"): ({f: f for f in ("metadata.name", "spec.unschedulable")}, _NOT_SUPPORTED),
    ("", "ReplicationController"): ({f: f for f in (*_META, "status.replicas")}, _NOT_SUPPORTED),
    ("", "Event"): ({f: f for f in (
        "involvedObject.kind", "involvedObject.namespace", "involvedObject.name", "involvedObject.uid",
        "involvedObject.apiVersion", "involvedObject.resourceVersion", "involvedObject.fieldPath",
        "reason", "reportingComponent", "source", "type", *_META)}, _NOT_SUPPORTED),
    ("", "Namespace"): ({f: f for f in ("status.phase", "metadata.name")}, _NOT_SUPPORTED),
    ("", "Secret"): ({f: f for f in ("type", *_META)}, _NOT_SUPPORTED),
    ("", "Service"): ({f: f for f in (*_META, "spec.clusterIP", "spec.type")}, _NOT_SUPPORTED),
    ("events.k8s.io", "Event"): ({
        "reason": "reason",
        "regarding.kind": "involvedObject.kind",
        "regarding.namespace": "involvedObject.namespace",
        "regarding.name": "involvedObject.name",
        "regarding.uid": "involvedObject.uid",
        "regarding.apiVersion": "involvedObject.apiVersion",
        "regarding.resourceVersion": "involvedObject.resourceVersion",
        "regarding.fieldPath": "involvedObject.fieldPath",
        "reportingController": "reportingComponent",
        "source": "source",
        "type": "type",
        "metadata.namespace": "metadata.namespace",
        "metadata.name": "metadata.name",
    }, _NOT_SUPPORTED),
    ("batch", "Job"): ({f: f for f in (*_META, "status.successful")},
                       "field label {qlabel} not supported for batchv1.Job"),
    ("certificates.k8s.io", "CertificateSigningRequest"): (
        {f: f for f in ("metadata.name", "spec.signerName")}, _NOT_SUPPORTED),
    ("certificates.k8s.io", "ClusterTrustBundle"): (
        {f: f for f in ("metadata.name", "spec.signerName")}, _NOT_SUPPORTED),
    ("resource.k8s.io", "ResourceSlice"): (
        {f: f for f in ("metadata.name", "spec.nodeName", "spec.driver")},
        "field label not supported for resource.k8s.io/{version}, Kind=ResourceSlice: {label}"),
}

_VERSIONS = {"resource.k8s.io": "v1beta1"}


def supported_fields(group: str, kind: str) -> frozenset[str]:
    """The field labels kube-apiserver 1.32 accepts in a fieldSelector for this kind."""
    conv = _CONVERSIONS.get((group, kind))
    return frozenset(conv[0]) if conv else frozenset(_META)


def convert(selector: str | Selector, group: str, kind: str, *, version: str = "",
            custom_fields: Mapping[str, str] | None = None) -> Selector:
    """Map each term to the stored field name kube matches on (`spec.host` -> `spec.nodeName`,
    `regarding.kind` -> `involvedObject.kind`), or raise errors.BadRequest as kube-apiserver does.

    custom_fields (label -> label) serves custom resources' selectableFields; metadata.name and
    metadata.namespace are always allowed for them.
    """
    sel = parse(selector) if isinstance(selector, str) else selector
    if custom_fields is not None:
        mapping, fmt = {**{f: f for f in _META}, **custom_fields}, _NOT_SUPPORTED
    else:
        conv = _CONVERSIONS.get((group, kind))
        mapping, fmt = conv if conv else ({f: f for f in _META}, "")
    out: list[Term] = []
    for t in sel.terms:
        stored = mapping.get(t.field)
        if stored is None:
            if not fmt:
                raise errors.BadRequest(f"{selectors.go_quote(t.field)} is not a known field selector: "
                                        'only "metadata.name", "metadata.namespace"')
            raise errors.BadRequest(fmt.format(label=t.field, qlabel=selectors.go_quote(t.field),
                                               version=version or _VERSIONS.get(group, "v1")))
        out.append(Term(stored, t.operator, t.value))
    return Selector(tuple(out))


def validate(selector: str | Selector, group: str, kind: str, *, version: str = "",
             custom_fields: Mapping[str, str] | None = None) -> None:
    """Raise errors.BadRequest (kube's message) unless every field in the selector is supported."""
    convert(selector, group, kind, version=version, custom_fields=custom_fields)


# --- the selectable fields of an object (each registry's GetAttrs) ------------------------


def _get(obj: Any, *path: str) -> Any:
    for p in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(p)
    return obj


def _s(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _b(v: Any) -> str:
    return "true" if v is True else "false"


def _i(v: Any) -> str:
    return str(v) if isinstance(v, int) and not isinstance(v, bool) else "0"


def fields_of(obj: Mapping[str, Any], group: str, kind: str) -> dict[str, str]:
    """The stored field set kube matches field selectors against (after `convert`)."""
    fields = {"metadata.name": _s(_get(obj, "metadata", "name")),
              "metadata.namespace": _s(_get(obj, "metadata", "namespace"))}
    if group == "" and kind == "Pod":
        fields["spec.nodeName"] = pod_node_name(obj)
        fields.update((name, read(obj)) for name, read in _POD_FIELD_READERS.items() if not name.startswith("metadata."))
    elif group == "" and kind == "Node":
        fields["spec.unschedulable"] = _b(_get(obj, "spec", "unschedulable"))
    elif group == "" and kind == "ReplicationController":
        fields["status.replicas"] = _i(_get(obj, "status", "replicas"))
    elif group == "" and kind == "Namespace":
        fields["status.phase"] = _s(_get(obj, "status", "phase"))
        fields["name"] = fields["metadata.name"]
    elif group == "" and kind == "Secret":
        fields["type"] = _s(obj.get("type"))
    elif group == "" and kind == "Service":
        fields["spec.clusterIP"] = _s(_get(obj, "spec", "clusterIP"))
        fields["spec.type"] = _s(_get(obj, "spec", "type"))
    elif kind == "Event" and group in ("", "events.k8s.io"):
        fields.update(_event_fields(obj))
    elif group == "batch" and kind == "Job":
        fields["status.successful"] = _i(_get(obj, "status", "succeeded"))
    elif group == "certificates.k8s.io" and kind in ("CertificateSigningRequest", "ClusterTrustBundle"):
        fields["spec.signerName"] = _s(_get(obj, "spec", "signerName"))
    elif group == "resource.k8s.io" and kind == "ResourceSlice":
        fields["spec.nodeName"] = _s(_get(obj, "spec", "nodeName"))
        fields["spec.driver"] = _s(_get(obj, "spec", "driver"))
    return fields


def _event_fields(obj: Mapping[str, Any]) -> dict[str, str]:
    # One storage serves core/v1 and events.k8s.io/v1 Events; accept either shape.
    if "regarding" in obj or "reportingController" in obj or "note" in obj:
        ref = obj.get("regarding")
        component = _s(_get(obj, "deprecatedSource", "component"))
        controller = _s(obj.get("reportingController"))
    else:
        ref = obj.get("involvedObject")
        component = _s(_get(obj, "source", "component"))
        controller = _s(obj.get("reportingComponent"))
    return {
        "involvedObject.kind": _s(_get(ref, "kind")),
        "involvedObject.namespace": _s(_get(ref, "namespace")),
        "involvedObject.name": _s(_get(ref, "name")),
        "involvedObject.uid": _s(_get(ref, "uid")),
        "involvedObject.apiVersion": _s(_get(ref, "apiVersion")),
        "involvedObject.resourceVersion": _s(_get(ref, "resourceVersion")),
        "involvedObject.fieldPath": _s(_get(ref, "fieldPath")),
        "reason": _s(obj.get("reason")),
        "reportingComponent": controller,
        "source": component or controller,
        "type": _s(obj.get("type")),
    }


def matches(obj: Mapping[str, Any], selector: str | Selector, group: str, kind: str, *,
            custom_fields: Mapping[str, str] | None = None) -> bool:
    """Whether obj is selected; the selector is validated and converted first (BadRequest if not)."""
    sel = convert(selector, group, kind, custom_fields=custom_fields)
    if sel.empty:
        return True
    if custom_fields is not None:
        fields = fields_of(obj, group, kind)
        for stored in custom_fields.values():
            fields[stored] = _custom_value(obj, stored)
        return sel.matches(fields)
    return sel.matches(fields_of(obj, group, kind))


def matcher(selector: str | Selector, group: str, kind: str) -> Callable[[Mapping[str, Any]], bool]:
    """`matches` for one selector, converted once: for predicates run against every watched event."""
    sel = convert(selector, group, kind)
    if sel.empty:
        return lambda obj: True
    terms = sel.terms
    if len(terms) == 1 and terms[0].field == "spec.nodeName" and group == "" and kind == "Pod":
        # The node agents' own watch: read the one field rather than build the whole field set.
        term = terms[0]
        if term.operator == EQUALS:
            return lambda obj: pod_node_name(obj) == term.value
        return lambda obj: pod_node_name(obj) != term.value
    if group == "" and kind == "Pod" and all(t.field in _POD_FIELD_READERS for t in terms):
        # Watches run this on every pod event (the scheduler's status.phase terms): read only the named fields.
        checks = tuple((_POD_FIELD_READERS[t.field], t.operator == EQUALS, t.value) for t in terms)
        return lambda obj: all((read(obj) == value) == equal for read, equal, value in checks)
    return lambda obj: sel.matches(fields_of(obj, group, kind))


def _pod_ip(obj: Mapping[str, Any]) -> str:
    ips = _get(obj, "status", "podIPs")
    return _s(_get(ips[0], "ip")) if isinstance(ips, list) and ips else ""


# One reader per field of a pod's field set, each giving what fields_of gives for it.
_POD_FIELD_READERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "metadata.name": lambda o: _s(_get(o, "metadata", "name")),
    "metadata.namespace": lambda o: _s(_get(o, "metadata", "namespace")),
    "spec.restartPolicy": lambda o: _s(_get(o, "spec", "restartPolicy")),
    "spec.schedulerName": lambda o: _s(_get(o, "spec", "schedulerName")),
    "spec.serviceAccountName": lambda o: _s(_get(o, "spec", "serviceAccountName")),
    "spec.hostNetwork": lambda o: _b(_get(o, "spec", "hostNetwork")),
    "status.phase": lambda o: _s(_get(o, "status", "phase")),
    "status.podIP": _pod_ip,
    "status.nominatedNodeName": lambda o: _s(_get(o, "status", "nominatedNodeName")),
}


def pod_node_name(obj: Mapping[str, Any]) -> str:
    """A pod's spec.nodeName as field selectors see it ("" when unscheduled)."""
    return _s(_get(obj, "spec", "nodeName"))


def _custom_value(obj: Mapping[str, Any], path: str) -> str:
    # CRD selectableFields: a dotted path to a string, integer or boolean field.
    v = _get(obj, *path.split("."))
    if isinstance(v, (Mapping, list)):
        return ""
    return _s(v)
