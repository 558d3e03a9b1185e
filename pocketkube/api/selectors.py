"""Label selectors: parse, format and match them exactly as k8s.io/apimachinery/pkg/labels does."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors, names

EQUALS = "="
DOUBLE_EQUALS = "=="
NOT_EQUALS = "!="
IN = "in"
NOT_IN = "notin"
EXISTS = "exists"
DOES_NOT_EXIST = "!"
GREATER_THAN = "gt"
LESS_THAN = "lt"

# The order kube prints in "expected: ..." when an operator is missing.
_BINARY_OPERATORS = (IN, NOT_IN, EQUALS, DOUBLE_EQUALS, NOT_EQUALS, GREATER_THAN, LESS_THAN)

# --- Go-style rendering used in kube's messages -----------------------------------------

_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v", "\\": "\\\\", '"': '\\"'}


def go_quote(s: str) -> str:
    """Go's %q (strconv.Quote) of a string."""
    out = ['"']
    for ch in s:
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif ord(ch) < 0x80:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) <= 0xFFFF:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


def _go_string_slice(values: list[str] | None) -> str:
    # %#v of a []string, as field.Invalid prints non-scalar bad values.
    if values is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(go_quote(v) for v in values) + "}"


def _aggregate(messages: list[str]) -> str:
    # utilerrors.Aggregate: duplicates dropped, several wrapped in brackets.
    seen: list[str] = []
    for m in messages:
        if m not in seen:
            seen.append(m)
    return seen[0] if len(seen) == 1 else "[" + ", ".join(seen) + "]"


def _parse_int64(s: str) -> int | None:
    # strconv.ParseInt(s, 10, 64)
    if not re.fullmatch(r"[+-]?[0-9]+", s, re.ASCII):
        return None
    v = int(s)
    return v if -(1 << 63) <= v < (1 << 63) else None


# --- requirements and selectors -----------------------------------------------------


class Requirement:
    """One `key op values` term of a label selector (labels.Requirement)."""

    __slots__ = ("key", "operator", "values")

    def __init__(self, key: str, operator: str, values: tuple[str, ...]) -> None:
        self.key = key
        self.operator = operator
        self.values = values

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Whether the label set satisfies this requirement."""
        op = self.operator
        has = self.key in labels
        if op in (IN, EQUALS, DOUBLE_EQUALS):
            return has and labels[self.key] in self.values
        if op in (NOT_IN, NOT_EQUALS):
            return not has or labels[self.key] not in self.values
        if op == EXISTS:
            return has
        if op == DOES_NOT_EXIST:
            return not has
        if op in (GREATER_THAN, LESS_THAN):
            if not has or len(self.values) != 1:
                return False
            actual = _parse_int64(str(labels[self.key]))
            wanted = _parse_int64(self.values[0])
            if actual is None or wanted is None:
                return False
            return actual > wanted if op == GREATER_THAN else actual < wanted
        return False

    def __str__(self) -> str:
        op = self.operator
        if op == EXISTS:
            return self.key
        if op == DOES_NOT_EXIST:
            return "!" + self.key
        sep = {EQUALS: "=", DOUBLE_EQUALS: "==", NOT_EQUALS: "!=", IN: " in ", NOT_IN: " notin ",
               GREATER_THAN: ">", LESS_THAN: "<"}[op]
        vals = self.values[0] if len(self.values) == 1 else ",".join(sorted(self.values))
        if op in (IN, NOT_IN):
            vals = "(" + vals + ")"
        return self.key + sep + vals

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Requirement) and self.key == other.key
                and self.operator == other.operator and self.values == other.values)

    def __hash__(self) -> int:
        return hash((self.key, self.operator, self.values))

    def __repr__(self) -> str:
        return f"Requirement({self.key!r}, {self.operator!r}, {self.values!r})"


class Selector:
    """A conjunction of requirements; the empty selector matches everything."""

    __slots__ = ("requirements", "_nothing")

    def __init__(self, requirements: tuple[Requirement, ...] = (), *, nothing: bool = False) -> None:
        self.requirements = requirements
        self._nothing = nothing

    @property
    def empty(self) -> bool:
        """True for the selector that matches everything (labels.Selector.Empty)."""
        return not self._nothing and not self.requirements

    @property
    def matches_nothing(self) -> bool:
        """True for labels.Nothing(), what a nil metav1.LabelSelector becomes."""
        return self._nothing

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        """Whether an object with these labels is selected."""
        if self._nothing:
            return False
        ls = labels or {}
        return all(r.matches(ls) for r in self.requirements)

    def requires_exact_match(self, key: str) -> str | None:
        """The single value `key` must have, if an = / == / one-value `in` pins it."""
        for r in self.requirements:
            if r.key == key and r.operator in (EQUALS, DOUBLE_EQUALS, IN) and len(r.values) == 1:
                return r.values[0]
        return None

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Selector) and self._nothing == other._nothing
                and self.requirements == other.requirements)

    def __hash__(self) -> int:
        return hash((self._nothing, self.requirements))

    def __repr__(self) -> str:
        return "Selector(<nothing>)" if self._nothing else f"Selector({str(self)!r})"


EVERYTHING = Selector()
NOTHING = Selector(nothing=True)


def new_requirement(key: str, operator: str, values: list[str] | None, *, path: str = "") -> Requirement:
    """labels.NewRequirement: validate and build one requirement, raising kube's message.

    `path` prefixes the field names in messages ("" gives kube's nil-path form `key`, `values[0]`).
    """
    def child(name: str) -> str:
        return f"{path}.{name}" if path else name

    msgs: list[str] = []
    vals = list(values) if values is not None else None
    n = len(vals or ())
    if bad := names.is_qualified_name(key):
        msgs.append(f"{child('key')}: Invalid value: {go_quote(key)}: {'; '.join(bad)}")
    values_path = child("values")
    if operator in (IN, NOT_IN):
        if n == 0:
            msgs.append(f"{values_path}: Invalid value: {_go_string_slice(vals)}: "
                        "for 'in', 'notin' operators, values set can't be empty")
    elif operator in (EQUALS, DOUBLE_EQUALS, NOT_EQUALS):
        if n != 1:
            msgs.append(f"{values_path}: Invalid value: {_go_string_slice(vals)}: "
                        "exact-match compatibility requires one single value")
    elif operator in (EXISTS, DOES_NOT_EXIST):
        if n != 0:
            msgs.append(f"{values_path}: Invalid value: {_go_string_slice(vals)}: "
                        "values set must be empty for exists and does not exist")
    elif operator in (GREATER_THAN, LESS_THAN):
        if n != 1:
            msgs.append(f"{values_path}: Invalid value: {_go_string_slice(vals)}: "
                        "for 'Gt', 'Lt' operators, exactly one value is required")
        for i, v in enumerate(vals or ()):
            if _parse_int64(v) is None:
                msgs.append(f"{values_path}[{i}]: Invalid value: {go_quote(v)}: "
                            "for 'Gt', 'Lt' operators, the value must be an integer")
    else:
        valid = ", ".join(go_quote(o) for o in (*_BINARY_OPERATORS, EXISTS, DOES_NOT_EXIST))
        msgs.append(f"{child('operator')}: Unsupported value: {go_quote(operator)}: supported values: {valid}")
    for i, v in enumerate(vals or ()):
        if bad := names.is_label_value(v):
            msgs.append(f"{values_path}[{i}][{key}]: Invalid value: {go_quote(v)}: {'; '.join(bad)}")
    if msgs:
        raise errors.BadRequest(_aggregate(msgs))
    return Requirement(key, operator, tuple(vals or ()))


# --- the string parser (a port of labels.Parser's lexer and recursive descent) ----------

_ERROR, _EOS, _CLOSED_PAR, _COMMA, _NOT, _DOUBLE_EQ, _EQ, _GT, _IDENT, _IN, _LT, _NE, _NOTIN, _OPEN_PAR = range(14)
_STRING_TOKENS = {")": _CLOSED_PAR, ",": _COMMA, "!": _NOT, "==": _DOUBLE_EQ, "=": _EQ, ">": _GT,
                  "in": _IN, "<": _LT, "!=": _NE, "notin": _NOTIN, "(": _OPEN_PAR}
_WHITESPACE = " \t\r\n"
_SPECIAL = "=!(),><"


def _lex(s: str) -> list[tuple[int, str]]:
    items: list[tuple[int, str]] = []
    pos, n = 0, len(s)

    def read() -> str:
        nonlocal pos
        if pos < n:
            ch = s[pos]
            pos += 1
            return ch
        return "\x00"

    while True:
        ch = read()
        while ch in _WHITESPACE and ch != "\x00":
            ch = read()
        if ch == "\x00":
            items.append((_EOS, ""))
            return items
        pos -= 1
        if ch in _SPECIAL:
            buf, last = "", None
            while True:
                c = read()
                if c == "\x00":
                    break
                if c in _SPECIAL:
                    buf += c
                    if buf in _STRING_TOKENS:
                        last = (_STRING_TOKENS[buf], buf)
                    elif last is not None:
                        pos -= 1
                        break
                else:
                    pos -= 1
                    break
            items.append(last if last is not None else (_ERROR, f"error expected: keyword found '{buf}'"))
        else:
            start = pos
            while True:
                c = read()
                if c == "\x00":
                    break
                if c in _SPECIAL or c in _WHITESPACE:
                    pos -= 1
                    break
            word = s[start:pos]
            tok = _STRING_TOKENS.get(word)
            items.append((tok, word) if tok is not None else (_IDENT, word))
        if items[-1][0] == _ERROR:
            # kube keeps scanning, but the parser stops at the first error token anyway.
            items.append((_EOS, ""))
            return items


class _ParseError(Exception):
    pass


class _Parser:
    def __init__(self, s: str) -> None:
        self.items = _lex(s)
        self.position = 0

    def lookahead(self, values: bool) -> tuple[int, str]:
        tok, lit = self.items[min(self.position, len(self.items) - 1)]
        if values and tok in (_IN, _NOTIN):
            tok = _IDENT
        return tok, lit

    def consume(self, values: bool) -> tuple[int, str]:
        tok, lit = self.lookahead(values)
        self.position += 1
        return tok, lit

    def parse(self) -> list[Requirement]:
        reqs: list[Requirement] = []
        while True:
            tok, lit = self.lookahead(True)
            if tok in (_IDENT, _NOT):
                try:
                    reqs.append(self.parse_requirement())
                except _ParseError as e:
                    raise _ParseError(f"unable to parse requirement: {e}") from None
                t, lit2 = self.consume(True)
                if t == _EOS:
                    return reqs
                if t == _COMMA:
                    t2, lit3 = self.lookahead(True)
                    if t2 not in (_IDENT, _NOT):
                        raise _ParseError(f"found '{lit3}', expected: identifier after ','")
                else:
                    raise _ParseError(f"found '{lit2}', expected: ',' or 'end of string'")
            elif tok == _EOS:
                return reqs
            else:
                raise _ParseError(f"found '{lit}', expected: !, identifier, or 'end of string'")

    def parse_requirement(self) -> Requirement:
        key, op = self.parse_key_and_infer_operator()
        if op in (EXISTS, DOES_NOT_EXIST):
            return self.requirement(key, op, [])
        op = self.parse_operator()
        if op in (IN, NOT_IN):
            values = self.parse_values()
        else:
            values = self.parse_exact_value()
        return self.requirement(key, op, sorted(values))

    @staticmethod
    def requirement(key: str, op: str, values: list[str]) -> Requirement:
        try:
            return new_requirement(key, op, values)
        except errors.BadRequest as e:
            raise _ParseError(e.message) from None

    def parse_key_and_infer_operator(self) -> tuple[str, str]:
        op = ""
        tok, lit = self.consume(True)
        if tok == _NOT:
            op = DOES_NOT_EXIST
            tok, lit = self.consume(True)
        if tok != _IDENT:
            raise _ParseError(f"found '{lit}', expected: identifier")
        if bad := names.is_qualified_name(lit):
            # The parser validates with a nil field path, which Go prints as <nil>.
            raise _ParseError(f"<nil>: Invalid value: {go_quote(lit)}: {'; '.join(bad)}")
        t, _ = self.lookahead(True)
        if t in (_EOS, _COMMA) and op != DOES_NOT_EXIST:
            op = EXISTS
        return lit, op

    def parse_operator(self) -> str:
        tok, lit = self.consume(False)
        ops = {_IN: IN, _EQ: EQUALS, _DOUBLE_EQ: DOUBLE_EQUALS, _GT: GREATER_THAN, _LT: LESS_THAN,
               _NOTIN: NOT_IN, _NE: NOT_EQUALS}
        if tok not in ops:
            raise _ParseError(f"found '{lit}', expected: {', '.join(_BINARY_OPERATORS)}")
        return ops[tok]

    def parse_values(self) -> set[str]:
        tok, lit = self.consume(True)
        if tok != _OPEN_PAR:
            raise _ParseError(f"found '{lit}' expected: '('")
        tok, lit = self.lookahead(True)
        if tok in (_IDENT, _COMMA):
            s = self.parse_identifiers_list()
            if self.consume(True)[0] != _CLOSED_PAR:
                raise _ParseError(f"found '{lit}', expected: ')'")
            return s
        if tok == _CLOSED_PAR:
            self.consume(True)
            return {""}
        raise _ParseError(f"found '{lit}', expected: ',', ')' or identifier")

    def parse_identifiers_list(self) -> set[str]:
        s: set[str] = set()
        while True:
            tok, lit = self.consume(True)
            if tok == _IDENT:
                s.add(lit)
                tok2, lit2 = self.lookahead(True)
                if tok2 == _COMMA:
                    continue
                if tok2 == _CLOSED_PAR:
                    return s
                raise _ParseError(f"found '{lit2}', expected: ',' or ')'")
            if tok == _COMMA:
                if not s:
                    s.add("")
                tok2, _ = self.lookahead(True)
                if tok2 == _CLOSED_PAR:
                    s.add("")
                    return s
                if tok2 == _COMMA:
                    self.consume(True)
                    s.add("")
            else:
                raise _ParseError(f"found '{lit}', expected: ',', or identifier")

    def parse_exact_value(self) -> set[str]:
        tok, _ = self.lookahead(True)
        if tok in (_EOS, _COMMA):
            return {""}
        tok, lit = self.consume(True)
        if tok == _IDENT:
            return {lit}
        raise _ParseError(f"found '{lit}', expected: identifier")


def parse(s: str) -> Selector:
    """labels.Parse: a selector string (`a=b,c in (d,e),!f`) or errors.BadRequest with kube's message."""
    if not isinstance(s, str):
        raise errors.BadRequest(f"label selector must be a string, not {type(s).__name__}")
    try:
        reqs = _Parser(s).parse()
    except _ParseError as e:
        raise errors.BadRequest(str(e)) from None
    return Selector(tuple(sorted(reqs, key=lambda r: r.key)))


# --- metav1.LabelSelector -------------------------------------------------------------

_EXPR_OPS = {"In": IN, "NotIn": NOT_IN, "Exists": EXISTS, "DoesNotExist": DOES_NOT_EXIST}


def from_label_selector(sel: Mapping[str, Any] | None, *, nil_matches_everything: bool = False) -> Selector:
    """metav1.LabelSelectorAsSelector: matchLabels and matchExpressions as one Selector.

    A nil selector matches nothing (kube's rule for workload selectors); pass
    nil_matches_everything=True where a missing selector means "all" instead. An empty
    selector `{}` always matches everything. Bad input raises errors.BadRequest.
    """
    if sel is None:
        return EVERYTHING if nil_matches_everything else NOTHING
    if not isinstance(sel, Mapping):
        raise errors.BadRequest(f"label selector must be an object, not {_json_type(sel)}")
    match_labels = sel.get("matchLabels") or {}
    exprs = sel.get("matchExpressions") or []
    if not isinstance(match_labels, Mapping):
        raise errors.BadRequest(f"matchLabels must be an object, not {_json_type(match_labels)}")
    if not isinstance(exprs, list):
        raise errors.BadRequest(f"matchExpressions must be an array, not {_json_type(exprs)}")
    if not match_labels and not exprs:
        return EVERYTHING
    reqs: list[Requirement] = []
    for k, v in match_labels.items():
        if not isinstance(v, str):
            raise errors.BadRequest(f"matchLabels[{k}] must be a string, not {_json_type(v)}")
        reqs.append(new_requirement(k, EQUALS, [v]))
    for expr in exprs:
        if not isinstance(expr, Mapping):
            raise errors.BadRequest(f"matchExpressions items must be objects, not {_json_type(expr)}")
        key, op, values = expr.get("key", ""), expr.get("operator", ""), expr.get("values")
        if not isinstance(key, str) or not isinstance(op, str):
            raise errors.BadRequest("matchExpressions key and operator must be strings")
        if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
            raise errors.BadRequest("matchExpressions values must be an array of strings")
        if op not in _EXPR_OPS:
            raise errors.BadRequest(f"{go_quote(op)} is not a valid label selector operator")
        reqs.append(new_requirement(key, _EXPR_OPS[op], list(values) if values else None))
    return Selector(tuple(sorted(reqs, key=lambda r: r.key)))


def format(sel: Mapping[str, Any] | None) -> str:
    """metav1.FormatLabelSelector: `app=web`, `<none>` for nil/empty, `<error>` when invalid."""
    try:
        s = str(from_label_selector(sel))
    except errors.APIError:
        return "<error>"
    return s or "<none>"


def from_set(labels: Mapping[str, str] | None) -> Selector:
    """labels.SelectorFromSet: every key must equal its value (no validation, like kube)."""
    reqs = tuple(Requirement(k, EQUALS, (v,)) for k, v in sorted((labels or {}).items()))
    return Selector(reqs)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "array"
    return "object"
