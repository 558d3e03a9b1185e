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

    __slots__ = ("expression", "output_type", "_expr")

    def __init__(self, expression: str, expr: Any) -> None:
        self.expression = expression
        self._expr = expr
        self.output_type = _type_name(expr.return_type())

    def evaluate(self, activation: Mapping[str, Any]) -> Any:
        """The expression's value for these variables (missing ones are null); raises EvalError."""
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
        return result.plain_value()


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
