"""CEL for admission: compile expressions over Kubernetes' variables and evaluate them, with compiled programs cached.

Usage (ValidatingAdmissionPolicy, webhook matchConditions):

    program = cel.compile("object.spec.replicas <= 5", variables=cel.VAP_VARIABLES, returns=("bool",))
    result = program.evaluate({"object": obj, "oldObject": None, "request": request, ...})

`compile` raises CompileError whose `detail` is the text Kubernetes puts in the 422 after the field
(`compilation failed: ERROR: <input>:1:5: ...`); `evaluate` raises EvalError with the evaluation error as
Kubernetes words it (`no such key: foo`). Objects are plain JSON dicts; every variable is dynamically typed
(Kubernetes types them from the OpenAPI schema, which only makes more expressions fail at compile time).
The `authorizer` variable takes an Authorizer, which answers `authorizer.group(..).resource(..).check(verb)`
through a callback.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from cel_expr_python import cel as celpy
from cel_expr_python.ext import ext_bindings, ext_encoders, ext_math, ext_optional, ext_strings

from pocketkube.api import cel_library

VAP_VARIABLES = ("object", "oldObject", "request", "params", "namespaceObject", "authorizer", "variables")
WEBHOOK_VARIABLES = ("object", "oldObject", "request", "authorizer")
ALL_VARIABLES = tuple(dict.fromkeys(VAP_VARIABLES + WEBHOOK_VARIABLES))

_CACHE_LIMIT = 4096
_STATUS_PREFIX = re.compile(r"^[A-Z_]+: ")
_STATUS_SUFFIX = re.compile(r" \[[A-Z_]+\]$")
_NO_KEY = re.compile(r'^Key not found in map : "?(.*?)"?$')
_TYPE_NAMES = {"BOOL": "bool", "STRING": "string", "INT": "int", "UINT": "uint", "DOUBLE": "double",
               "BYTES": "bytes", "NULL": "null_type", "NULL_TYPE": "null_type", "DURATION": "google.protobuf.Duration",
               "TIMESTAMP": "google.protobuf.Timestamp", "DYN": "dyn"}


class CompileError(ValueError):
    """An expression that does not compile; `detail` is Kubernetes' text for the field error."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class EvalError(ValueError):
    """An expression whose evaluation failed; the message is worded as Kubernetes' CEL runtime words it."""


class Authorizer:
    """The value of the `authorizer` variable: `check(attrs)` answers (allowed, reason) for one check.

    attrs holds verb, group, resource, subresource, namespace, name or path, and `user` (None for the requester,
    or {"name", "groups"} for `authorizer.serviceAccount(ns, name)`). request_resource seeds
    `authorizer.requestResource` (group, resource, subresource, namespace, name of the request).
    """

    def __init__(self, check: Callable[[Mapping[str, Any]], tuple[bool, str]], *,
                 request_resource: Mapping[str, str] | None = None) -> None:
        self.check = check
        self.request_resource = dict(request_resource or {})


def _type_name(t: Any) -> str:
    name = str(t.name())
    return _TYPE_NAMES.get(name, name.lower())


def eval_message(raw: str) -> str:
    """The engine's error text as cel-go (and so Kubernetes) words it."""
    msg = _STATUS_SUFFIX.sub("", _STATUS_PREFIX.sub("", raw.strip()))
    if m := _NO_KEY.match(msg):
        return f"no such key: {m.group(1)}"
    if msg == "divide by zero":
        return "division by zero"
    if msg.startswith("No matching overloads found"):
        return "no such overload"
    return msg


class Program:
    """One compiled expression; evaluate it as often as needed (thread-safe, cached by compile)."""

    __slots__ = ("expression", "output_type", "_expr", "_root")

    def __init__(self, expression: str, expr: Any) -> None:
        self.expression = expression
        self._expr = expr
        self.output_type = _type_name(expr.return_type())
        self._root: Any = None  # the decoded AST for the cost walk, made on first use

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """The expression's value for these variables (missing ones are null); raises EvalError."""
        return self.evaluate_costed(activation)[0]

    def evaluate_costed(self, activation: Mapping[str, Any], *, limit: int | None = None) -> tuple[Any, int]:
        """(value, runtime cost); CostLimitExceeded past PerCallLimit (or limit, if lower) before evaluating."""
        try:
            spent = cost(self, activation, limit=PER_CALL_LIMIT if limit is None else min(PER_CALL_LIMIT, limit))
        except CostLimitExceeded:
            if limit is not None and limit < PER_CALL_LIMIT:
                raise OutOfBudget(OUT_OF_BUDGET) from None
            raise
        data: dict[str, Any] = {name: None for name in ALL_VARIABLES}
        check = None
        for name, value in activation.items():
            if isinstance(value, Authorizer):
                check = value.check
                value = cel_library.authorizer_value(request_resource=value.request_resource)
            data[name] = value
        token = cel_library.current_check.set(check)
        try:
            result = self._expr.eval(_runtime_env().Activation(data))
        except RuntimeError as e:
            raise EvalError(eval_message(str(e))) from None
        finally:
            cel_library.current_check.reset(token)
        if result.type() == celpy.Type.ERROR:
            raise EvalError(eval_message(str(result.value())))
        return result.plain_value(), spent


# --- environments and the compile cache ---------------------------------------------------------------

_lock = threading.Lock()
_envs: dict[tuple[str, ...], Any] = {}
_cache: dict[tuple[str, tuple[str, ...], tuple[str, ...]], Program | CompileError] = {}


def _extensions() -> list[Any]:
    return [ext_strings.ExtStrings(), ext_optional.ExtOptional(), ext_math.ExtMath(), ext_bindings.ExtBindings(),
            ext_encoders.ExtEncoders(), cel_library.extension()]


def _env(variables: tuple[str, ...]) -> Any:
    env = _envs.get(variables)
    if env is None:
        with _lock:
            env = _envs.get(variables)
            if env is None:
                env = celpy.NewEnv(variables={v: celpy.Type.DYN for v in variables}, extensions=_extensions())
                _envs[variables] = env
    return env


def _runtime_env() -> Any:
    return _env(ALL_VARIABLES)


def compile(expression: str, *, variables: Iterable[str] = VAP_VARIABLES,  # noqa: A001 - the documented entry point
            returns: Iterable[str] = ()) -> Program:
    """Compile (or fetch from the cache) an expression that may use only `variables`.

    returns names the result types Kubernetes accepts ("bool", "string", "null_type"); a dynamically typed
    result is always accepted. Raises CompileError.
    """
    names = tuple(sorted(set(variables)))
    want = tuple(returns)
    key = (expression, names, want)
    hit = _cache.get(key)
    if hit is None:
        hit = _compile(expression, names, want)
        if len(_cache) >= _CACHE_LIMIT:
            _cache.clear()
        _cache[key] = hit
    if isinstance(hit, CompileError):
        raise hit
    return hit


def _compile(expression: str, names: tuple[str, ...], want: tuple[str, ...]) -> Program | CompileError:
    try:
        expr = _env(names).compile(expression)
    except RuntimeError as e:
        return CompileError("compilation failed: " + _issues(str(e)))
    program = Program(expression, expr)
    if want and program.output_type != "dyn" and program.output_type not in want:
        if len(want) == 1:
            return CompileError(f"must evaluate to {want[0]}")
        return CompileError(f"must evaluate to one of [{' '.join(want)}]")
    return program


_UNDECLARED = re.compile(r"^ERROR: <input>:(\d+):(\d+): undeclared reference to '([\w]+)\.[\w.]+'")


def _issues(raw: str) -> str:
    """The engine's compile errors as cel-go prints them."""
    text = _STATUS_SUFFIX.sub("", _STATUS_PREFIX.sub("", raw.strip()))
    lines = text.split("\n")
    # cel-go names (and points at) the first undeclared identifier of a dotted name, not the whole name.
    if (m := _UNDECLARED.match(lines[0])) and len(lines) == 3:
        col = int(m.group(2)) - len(m.group(3))
        if col >= 1:
            lines[0] = (f"ERROR: <input>:{m.group(1)}:{col}: undeclared reference to '{m.group(3)}'"
                        + lines[0][m.end():])
            lines[2] = " | " + "." * (col - 1) + "^"
    return "\n".join(lines)


def is_identifier(name: str) -> bool:
    """Whether name can be a CEL variable name (kube's isCELIdentifier)."""
    return bool(re.fullmatch(r"[_a-zA-Z][_a-zA-Z0-9]*", name)) and name not in _RESERVED


_RESERVED = frozenset({"true", "false", "null", "in", "as", "break", "const", "continue", "else", "for", "function",
                       "if", "import", "let", "loop", "package", "namespace", "return", "var", "void", "while"})


# --- runtime cost (cel-go's actual cost, as kube limits it) --------------------------------------------------
#
# cel-expr-python exposes no cost tracking, so the cost is computed here over the checked AST with the
# request's real values: ranges are the real lists and maps, strings their real lengths. Where a value is
# not a plain path (a function's result), its size is bounded by what produced it. Branches that cel-go may
# skip (&&, ||, exists/all ending early) are counted in full, so this errs on the side of the higher cost.

PER_CALL_LIMIT = 1_000_000          # celconfig.PerCallLimit
RUNTIME_COST_BUDGET = 10_000_000    # celconfig.RuntimeCELCostBudget
COST_LIMIT_EXCEEDED = "operation cancelled: actual cost limit exceeded"
OUT_OF_BUDGET = "validation failed due to running out of cost budget, no further validation rules will be run"
_AUTHZ_CHECK_COST = 350_000         # kube's library cost for authorizer ...check()
_LIST_CREATE, _MAP_CREATE, _STRUCT_CREATE = 10, 30, 40
_STRING_TRAVERSAL = 0.1
_REGEX_TRAVERSAL = 0.25
# Calls whose cost is the traversal of their receiver (or first argument).
_SIZED_CALLS = frozenset({"lowerAscii", "upperAscii", "trim", "replace", "split", "join", "indexOf", "lastIndexOf",
                          "substring", "charAt", "base64.encode", "base64.decode", "string", "bytes", "quote",
                          "reverse", "format", "find", "findAll"})


class CostLimitExceeded(EvalError):
    """The expression's cost went past the limit (cel-go cancels the evaluation)."""


class OutOfBudget(EvalError):
    """The expression's cost went past what is left of the evaluation's budget (RuntimeCELCostBudget)."""


def _scan(buf: bytes) -> dict[int, list[Any]]:
    """A protobuf message's fields: number -> values (ints for varints, bytes for length-delimited)."""
    out: dict[int, list[Any]] = {}
    pos, end = 0, len(buf)

    def varint() -> int:
        nonlocal pos
        shift = value = 0
        while True:
            b = buf[pos]
            pos += 1
            value |= (b & 0x7F) << shift
            if b < 0x80:
                return value
            shift += 7

    while pos < end:
        tag = varint()
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value: Any = varint()
        elif wire == 2:
            size = varint()
            value, pos = buf[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = buf[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = buf[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out.setdefault(number, []).append(value)
    return out


def _first(fields: dict[int, list[Any]], number: int, default: Any = b"") -> Any:
    values = fields.get(number)
    return values[-1] if values else default


class _Node:
    """One node of the checked AST (cel.expr.Expr), decoded once per compiled program."""

    __slots__ = ("kind", "name", "operand", "args", "entries", "const", "loop")
    operand: _Node | None

    def __init__(self, raw: bytes) -> None:
        f = _scan(raw)
        self.name, self.operand = "", None
        self.args: list[_Node] = []
        self.entries: list[_Node] = []
        self.const: Any = None
        self.loop: tuple[Any, ...] = ()
        if 3 in f:
            self.kind = "const"
            c = _scan(_first(f, 3))
            self.const = c[6][-1].decode() if 6 in c else c[7][-1] if 7 in c else None
        elif 4 in f:
            self.kind, self.name = "ident", _first(_scan(_first(f, 4)), 1).decode()
        elif 5 in f:
            s = _scan(_first(f, 5))
            self.kind, self.operand, self.name = "select", _Node(_first(s, 1)), _first(s, 2).decode()
        elif 6 in f:
            c = _scan(_first(f, 6))
            self.kind, self.name = "call", _first(c, 2).decode()
            self.operand = _Node(c[1][-1]) if 1 in c else None
            self.args = [_Node(a) for a in c.get(3, [])]
        elif 7 in f:
            self.kind, self.args = "list", [_Node(a) for a in _scan(_first(f, 7)).get(1, [])]
        elif 8 in f:
            s = _scan(_first(f, 8))
            self.kind = "map" if not _first(s, 1) else "struct"
            for raw_entry in s.get(2, []):
                e = _scan(raw_entry)
                self.entries.extend(_Node(e[n][-1]) for n in (3, 4) if n in e)
        elif 9 in f:
            c = _scan(_first(f, 9))
            self.kind = "loop"
            self.loop = (_first(c, 1).decode(), _Node(_first(c, 2)), _first(c, 3).decode(),
                         *(_Node(_first(c, n)) for n in (4, 5, 6, 7)), _first(c, 8).decode())
        else:
            self.kind = "unknown"


class _Sized:
    """A value the cost walk cannot know, only its size bound (a list from map/filter, a function's result)."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


_UNKNOWN = _Sized(1)


def _size(value: Any) -> int:
    if isinstance(value, _Sized):
        return value.size
    if isinstance(value, (str, bytes, list, dict)):
        return len(value)
    return 1


class _CostWalk:
    """Adds up cel-go's runtime cost of one expression over one activation; stops past the limit."""

    def __init__(self, limit: int) -> None:
        self.cost = 0
        self.limit = limit
        # Loop variables in scope, and costs already known for a loop (or one iteration) given their shapes:
        # iterations over alike elements cost alike, which keeps nested loops over big lists fast.
        self.scope: list[str] = []
        self.known: dict[tuple[Any, ...], tuple[int, int]] = {}
        self.shapes: dict[int, Any] = {}

    def shape(self, value: Any) -> Any:
        """What a value's cost depends on: structure and string lengths (in cel-go's 0.1 steps), not content."""
        if isinstance(value, (str, bytes)):
            return -math.ceil(len(value) * _STRING_TRAVERSAL) - 1
        if isinstance(value, _Sized):
            return ("sized", value.size)
        if not isinstance(value, (dict, list)):
            return type(value).__name__
        hit = self.shapes.get(id(value))
        if hit is None:
            if isinstance(value, dict):
                hit = ("map", tuple(sorted((str(k), self.shape(v)) for k, v in value.items())))
            else:
                hit = ("list", tuple(self.shape(v) for v in value))
            self.shapes[id(value)] = hit
        return hit

    def _key(self, node: _Node, env: dict[str, Any]) -> tuple[Any, ...]:
        return (id(node), *(self.shape(env.get(v)) for v in self.scope))

    def add(self, n: int) -> None:
        self.cost += n
        if self.cost > self.limit:
            raise CostLimitExceeded(COST_LIMIT_EXCEEDED)

    def walk(self, node: _Node, env: dict[str, Any]) -> Any:
        kind = node.kind
        if kind == "const":
            return node.const
        if kind == "ident":
            self.add(1)
            return env.get(node.name, _UNKNOWN)
        if kind == "select":
            base = self.walk(node.operand, env) if node.operand is not None else _UNKNOWN
            self.add(1)
            return base.get(node.name, _UNKNOWN) if isinstance(base, dict) else _UNKNOWN
        if kind == "list":
            items = [self.walk(a, env) for a in node.args]
            self.add(_LIST_CREATE)
            return _Sized(len(items))
        if kind in ("map", "struct"):
            for e in node.entries:
                self.walk(e, env)
            self.add(_MAP_CREATE if kind == "map" else _STRUCT_CREATE)
            return _Sized(len(node.entries))
        if kind == "loop":
            return self._loop(node, env)
        if kind == "call":
            return self._call(node, env)
        return _UNKNOWN

    def _call(self, node: _Node, env: dict[str, Any]) -> Any:
        fn = node.name
        if fn == "_?_:_":
            cond = self.walk(node.args[0], env)
            if isinstance(cond, bool):
                return self.walk(node.args[1 if cond else 2], env)
            before = self.cost
            self.walk(node.args[1], env)
            first = self.cost - before
            self.cost = before
            self.walk(node.args[2], env)
            self.cost = before + max(first, self.cost - before)
            return _UNKNOWN
        target = self.walk(node.operand, env) if node.operand is not None else None
        args = [self.walk(a, env) for a in node.args]
        values = ([target] if node.operand is not None else []) + args
        if fn == "check" and node.operand is not None:
            self.add(_AUTHZ_CHECK_COST)
            return _UNKNOWN
        self.add(_call_cost(fn, values))
        if fn == "_[_]" and len(values) == 2:
            container, key = values
            if isinstance(container, dict) and isinstance(key, str):
                return container.get(key, _UNKNOWN)
            if isinstance(container, list) and isinstance(key, int) and not isinstance(key, bool) \
                    and 0 <= key < len(container):
                return container[key]
            return _UNKNOWN
        if fn == "_+_" and values and all(isinstance(v, (list, _Sized)) for v in values):
            return _Sized(sum(_size(v) for v in values))
        return _Sized(max((_size(v) for v in values), default=1))

    def _loop(self, node: _Node, env: dict[str, Any]) -> Any:
        iter_var, rng_node, accu_var, init, cond, step, result, iter_var2 = node.loop
        whole = self._key(node, env)
        known = self.known.get(whole)
        if known is not None:
            self.add(known[0])
            return _Sized(known[1])
        start = self.cost
        rng = self.walk(rng_node, env)
        accu = self.walk(init, env)
        if isinstance(rng, dict):
            pairs: Any = list(rng.items())
        elif isinstance(rng, list):
            pairs = list(enumerate(rng))
        else:
            pairs = [(_UNKNOWN, _UNKNOWN)] * _size(rng)
        inner = dict(env)
        inner[accu_var] = accu if not isinstance(accu, _Sized) else _Sized(len(pairs))
        names = [iter_var, iter_var2, accu_var] if iter_var2 else [iter_var, accu_var]
        self.scope.extend(names)
        try:
            for key, value in pairs:
                if iter_var2:
                    inner[iter_var], inner[iter_var2] = key, value
                else:
                    inner[iter_var] = key if isinstance(rng, dict) else value
                step_key = (id(step), *self._key(cond, inner))
                hit = self.known.get(step_key)
                if hit is not None:
                    self.add(hit[0])
                    continue
                before = self.cost
                self.walk(cond, inner)
                self.walk(step, inner)
                self.known[step_key] = (self.cost - before, 0)
            self.walk(result, inner)
        finally:
            del self.scope[-len(names):]
        self.known[whole] = (self.cost - start, len(pairs))
        return _Sized(len(pairs))


def _traversal(size: int, factor: float = _STRING_TRAVERSAL) -> int:
    return max(1, math.ceil(size * factor))


def _call_cost(fn: str, values: list[Any]) -> int:
    """cel-go's actual cost of one call from its arguments' sizes (receiver first); 1 for the O(1) ones."""
    sizes = [_size(v) for v in values]
    if fn in ("startsWith", "endsWith") and len(sizes) == 2:
        return _traversal(sizes[1])
    if fn == "contains" and len(sizes) == 2:
        return _traversal(sizes[0] * sizes[1])
    if fn == "matches" and len(sizes) == 2:
        return _traversal(sizes[0]) * _traversal(sizes[1], _REGEX_TRAVERSAL)
    if fn == "@in" and len(sizes) == 2:
        return max(1, sizes[1])
    if fn == "_+_" and values and all(isinstance(v, (str, bytes, list, _Sized)) for v in values):
        return _traversal(sum(sizes))
    if fn in ("_==_", "_!=_") and all(isinstance(v, (str, bytes, list)) for v in values):
        return _traversal(min(sizes, default=0))
    if fn in _SIZED_CALLS and values:
        return _traversal(sizes[0])
    return 1


def _ast(program: Program) -> _Node | None:
    root = getattr(program, "_root", None)
    if root is None:
        try:
            any_msg = _scan(program._expr.serialize())
            root = _Node(_first(_scan(_first(any_msg, 2)), 4))
        except (ValueError, IndexError, UnicodeDecodeError):
            root = False  # not decodable: the expression runs without a cost check
        program._root = root
    return root if isinstance(root, _Node) else None


def cost(program: Program, activation: Mapping[str, Any], *, limit: int = PER_CALL_LIMIT) -> int:
    """The expression's runtime cost over these variables; CostLimitExceeded once it passes limit."""
    root = _ast(program)
    if root is None:
        return 0
    env = {name: (None if isinstance(value, Authorizer) else value) for name, value in activation.items()}
    walk = _CostWalk(limit)
    walk.walk(root, env)
    return walk.cost
