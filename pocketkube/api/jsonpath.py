"""The Kubernetes JSONPath dialect (client-go util/jsonpath) over plain dict objects."""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


class JSONPathError(ValueError):
    """A template that does not parse, or a lookup that fails with missing keys disallowed."""


# --- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Field:
    names: tuple[str, ...]  # more than one for a ['a','b'] union


@dataclass(frozen=True)
class Wildcard:
    pass


@dataclass(frozen=True)
class Recursive:
    pass


@dataclass(frozen=True)
class Index:
    specs: tuple[tuple[int | None, int | None, int | None, bool], ...]  # (start, end, step, is_slice)


@dataclass(frozen=True)
class Filter:
    left: tuple[Any, ...]
    op: str
    right: Any  # a path tuple, or a Literal


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass
class Action:
    path: tuple[Any, ...] | Literal


@dataclass
class Range:
    path: tuple[Any, ...]
    body: list[Any] = field(default_factory=list)


_TERMINATORS = set(" \t\n.,{}[]()|=<>!@$")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> JSONPathError:
        return JSONPathError(f"{why} at position {self.pos} in {self.text!r}")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos:self.pos + n]

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in " \t":
            self.pos += 1

    def name(self) -> str:
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                continue
            if ch in _TERMINATORS and not (ch == "@" and not out) and ch != "-":
                break
            out.append(ch)
            self.pos += 1
        return "".join(out)

    def quoted(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            if ch == "\\" and self.pos + 1 < len(self.text):
                nxt = self.text[self.pos + 1]
                out.append({"n": "\n", "t": "\t", "r": "\r"}.get(nxt, nxt))
                self.pos += 2
                continue
            if ch == quote:
                self.pos += 1
                return "".join(out)
            out.append(ch)
            self.pos += 1
        raise self.fail("unterminated quoted string")

    def path(self, stop: str) -> tuple[Any, ...]:
        """Segments up to (not including) any character in stop, at bracket depth zero."""
        segs: list[Any] = []
        self.skip_space()
        if self.peek() in ("$", "@"):
            self.pos += 1
        while self.pos < len(self.text) and self.text[self.pos] not in stop:
            ch = self.text[self.pos]
            if self.peek(2) == "..":
                self.pos += 1
                segs.append(Recursive())
                continue
            if ch == ".":
                self.pos += 1
                if self.peek() == "*":
                    self.pos += 1
                    segs.append(Wildcard())
                elif self.peek() == "[" or self.pos >= len(self.text) or self.text[self.pos] in stop:
                    continue
                else:
                    n = self.name()
                    if not n:
                        raise self.fail("empty field name")
                    segs.append(Field((n,)))
            elif ch == "[":
                segs.append(self.bracket())
            elif ch in " \t":
                self.skip_space()
                if self.pos < len(self.text) and self.text[self.pos] not in stop:
                    raise self.fail("unexpected space")
            else:
                n = self.name()
                if not n:
                    raise self.fail(f"unexpected {ch!r}")
                segs.append(Field((n,)))
        return tuple(segs)

    def bracket(self) -> Any:
        self.pos += 1
        self.skip_space()
        if self.peek() == "*":
            self.pos += 1
            self.expect("]")
            return Wildcard()
        if self.peek(2) == "?(":
            self.pos += 2
            node = self.filter()
            self.expect(")")
            self.expect("]")
            return node
        if self.peek() in ("'", '"'):
            names = [self.quoted()]
            self.skip_space()
            while self.peek() == ",":
                self.pos += 1
                self.skip_space()
                if self.peek() not in ("'", '"'):
                    raise self.fail("expected a quoted key")
                names.append(self.quoted())
                self.skip_space()
            self.expect("]")
            return Field(tuple(names))
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self.fail("unclosed [")
        body, self.pos = self.text[self.pos:end], end + 1
        specs = []
        for part in body.split(","):
            part = part.strip()
            try:
                if ":" in part:
                    bits = [b.strip() for b in part.split(":")]
                    if len(bits) > 3:
                        raise ValueError
                    nums = [int(b) if b else None for b in bits] + [None] * (3 - len(bits))
                    if nums[2] == 0:
                        raise ValueError
                    specs.append((nums[0], nums[1], nums[2], True))
                else:
                    specs.append((int(part), None, None, False))
            except ValueError:
                raise self.fail(f"invalid array index {part!r}") from None
        return Index(tuple(specs))

    def expect(self, ch: str) -> None:
        self.skip_space()
        if self.peek() != ch:
            raise self.fail(f"expected {ch!r}")
        self.pos += 1

    def operand(self) -> Any:
        self.skip_space()
        ch = self.peek()
        if ch in ("'", '"'):
            return Literal(self.quoted())
        if ch == "@" or ch == "$":
            return self.path(stop="=!<>)")
        word_end = self.pos
        while word_end < len(self.text) and self.text[word_end] not in " \t)=!<>":
            word_end += 1
        word = self.text[self.pos:word_end]
        self.pos = word_end
        if word in ("true", "false"):
            return Literal(word == "true")
        try:
            return Literal(int(word))
        except ValueError:
            pass
        try:
            return Literal(float(word))
        except ValueError:
            raise self.fail(f"unrecognized filter operand {word!r}") from None

    def filter(self) -> Filter:
        self.skip_space()
        left = self.operand()
        self.skip_space()
        op = ""
        while self.peek() in ("=", "!", "<", ">") and self.peek():
            op += self.text[self.pos]
            self.pos += 1
        if not op:
            if isinstance(left, Literal):
                raise self.fail("filter needs a path")
            return Filter(left, "exists", None)
        if op not in ("==", "!=", "<", ">", "<=", ">="):
            raise self.fail(f"unrecognized filter operator {op!r}")
        return Filter(left if isinstance(left, tuple) else (left,), op, self.operand())


def _parse_template(text: str) -> list[Any]:
    if "{" not in text:
        # Bare expressions, as custom-columns and printer columns write them.
        text = "{" + text + "}"
    root: list[Any] = []
    stack: list[list[Any]] = [root]
    p = _Parser(text)
    while p.pos < len(text):
        start = text.find("{", p.pos)
        if start < 0:
            stack[-1].append(text[p.pos:])
            break
        if start > p.pos:
            stack[-1].append(text[p.pos:start])
        p.pos = start + 1
        p.skip_space()
        if text.startswith("range", p.pos) and (len(text) == p.pos + 5 or text[p.pos + 5] in " \t"):
            p.pos += 5
            node = Range(p.path(stop="}"))
            p.expect("}")
            stack[-1].append(node)
            stack.append(node.body)
        elif text.startswith("end", p.pos) and text[p.pos + 3:].lstrip(" \t").startswith("}"):
            p.pos = text.index("}", p.pos) + 1
            if len(stack) == 1:
                raise p.fail("{end} without {range}")
            stack.pop()
        elif p.peek() in ("'", '"'):
            lit = p.quoted()
            p.expect("}")
            stack[-1].append(Action(Literal(lit)))
        else:
            path = p.path(stop="}")
            p.expect("}")
            stack[-1].append(Action(path))
    if len(stack) != 1:
        raise JSONPathError(f"unclosed {{range}} in {text!r}")
    return root


# --- evaluation ----------------------------------------------------------------------------------


class _Missing(Exception):
    pass


def _walk(values: list[Any], segs: tuple[Any, ...], strict: bool) -> list[Any]:
    for seg in segs:
        out: list[Any] = []
        if isinstance(seg, Field):
            for v in values:
                if isinstance(v, dict):
                    for name in seg.names:
                        if name in v:
                            out.append(v[name])
                        elif strict:
                            raise _Missing(f"{name} is not found")
                elif strict and v is not None:
                    raise _Missing(f"{seg.names[0]} is not found")
        elif isinstance(seg, Wildcard):
            for v in values:
                if isinstance(v, dict):
                    out.extend(v[k] for k in sorted(v))
                elif isinstance(v, list):
                    out.extend(v)
        elif isinstance(seg, Recursive):
            for v in values:
                _descend(v, out)
        elif isinstance(seg, Index):
            for v in values:
                if not isinstance(v, list):
                    continue
                n = len(v)
                for start, end, step, is_slice in seg.specs:
                    if not is_slice:
                        i = start + n if start is not None and start < 0 else start
                        if i is not None and 0 <= i < n:
                            out.append(v[i])
                        elif strict:
                            raise _Missing(f"array index out of bounds: index {start}, length {n}")
                    else:
                        out.extend(v[slice(start, end, step)])
        elif isinstance(seg, Filter):
            for v in values:
                items = v if isinstance(v, list) else []
                out.extend(item for item in items if _matches(item, seg))
        values = out
    return values


def _descend(v: Any, out: list[Any]) -> None:
    out.append(v)
    if isinstance(v, dict):
        for k in sorted(v):
            _descend(v[k], out)
    elif isinstance(v, list):
        for item in v:
            _descend(item, out)


def _operand_values(item: Any, operand: Any) -> list[Any]:
    if isinstance(operand, Literal):
        return [operand.value]
    return _walk([item], operand, False)


def _compare(a: Any, op: str, b: Any) -> bool:
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if not (isinstance(a, bool) and isinstance(b, bool)) or op not in ("==", "!="):
            return False
    elif isinstance(a, num) and isinstance(b, num):
        pass
    elif not (isinstance(a, str) and isinstance(b, str)):
        return False
    if op == "==":
        return a == b
    if op == "!=":
        return a != b
    if op == "<":
        return a < b
    if op == ">":
        return a > b
    if op == "<=":
        return a <= b
    return a >= b


def _matches(item: Any, flt: Filter) -> bool:
    lefts = _walk([item], flt.left, False)
    if flt.op == "exists":
        return bool(lefts)
    rights = _operand_values(item, flt.right)
    return any(_compare(a, flt.op, b) for a in lefts for b in rights)


@dataclass
class Template:
    """A parsed JSONPath template: text and `{...}` actions, optionally `{range}...{end}` blocks."""

    source: str
    nodes: list[Any]

    def find(self, obj: Any, *, allow_missing: bool = True) -> list[list[Any]]:
        """The values each top-level action selects, one list per action (text is skipped)."""
        results = []
        for node in self.nodes:
            if isinstance(node, Action):
                results.append(self._eval(node.path, obj, allow_missing))
            elif isinstance(node, Range):
                results.append(self._eval(node.path, obj, allow_missing))
        return results

    def render(self, obj: Any, *, allow_missing: bool = True) -> str:
        """The template's text output, as `kubectl -o jsonpath` prints it."""
        out: list[str] = []
        self._render(self.nodes, obj, allow_missing, out)
        return "".join(out)

    def _eval(self, path: Any, obj: Any, allow_missing: bool) -> list[Any]:
        if isinstance(path, Literal):
            return [path.value]
        try:
            return _walk([obj], path, not allow_missing)
        except _Missing as e:
            raise JSONPathError(str(e)) from None

    def _render(self, nodes: list[Any], obj: Any, allow_missing: bool, out: list[str]) -> None:
        for node in nodes:
            if isinstance(node, str):
                out.append(node)
            elif isinstance(node, Action):
                out.append(" ".join(to_text(v) for v in self._eval(node.path, obj, allow_missing)))
            else:
                for item in self._eval(node.path, obj, allow_missing):
                    self._render(node.body, item, allow_missing, out)


def go_float(x: float) -> str:
    """fmt.Sprint of a float64: shortest digits, exponent form below 1e-4 and from 1e21."""
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    if x == 0:
        return "0"
    d = Decimal(repr(x))
    exp = d.adjusted()
    if -4 <= exp < 21:
        s = format(d, "f")
        return s.rstrip("0").rstrip(".") if "." in s else s
    sign, digits, _ = d.normalize().as_tuple()
    mant = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mant}e{'+' if exp >= 0 else '-'}{abs(exp):02d}"


def go_json(v: Any) -> str:
    """json.Marshal: compact, map keys sorted, HTML characters escaped."""
    text = json.dumps(v, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def to_text(v: Any) -> str:
    """How client-go JSONPath prints one value: objects and lists as JSON, scalars bare."""
    if isinstance(v, (dict, list)):
        return go_json(v)
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return go_float(v)
    return str(v)


@functools.lru_cache(maxsize=1024)
def parse(template: str) -> Template:
    """Parse a JSONPath template; the `{...}` around a bare expression is optional."""
    if not isinstance(template, str) or not template.strip():
        raise JSONPathError("empty JSONPath expression")
    return Template(template, _parse_template(template))


def find(expr: str, obj: Any, *, allow_missing: bool = True) -> list[Any]:
    """Every value the expression selects, flattened across its actions."""
    return [v for group in parse(expr).find(obj, allow_missing=allow_missing) for v in group]


def first(expr: str, obj: Any, default: Any = None) -> Any:
    """The first value the expression selects, or default."""
    for group in parse(expr).find(obj):
        if group:
            return group[0]
    return default


def render(template: str, obj: Any, *, allow_missing: bool = True) -> str:
    """The text `kubectl get -o jsonpath=TEMPLATE` prints for obj."""
    return parse(template).render(obj, allow_missing=allow_missing)
