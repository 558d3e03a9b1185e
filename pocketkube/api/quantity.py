"""resource.Quantity: parse, compare and print in Kubernetes' canonical form ("0.5" -> "500m", "1024Mi" -> "1Gi")."""

from __future__ import annotations

import dataclasses
import math
import re
from fractions import Fraction
from typing import Any

FORMAT_ERROR = "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
SUFFIX_ERROR = "unable to parse quantity's suffix"
NUMERIC_ERROR = "unable to parse numeric part of quantity"

DECIMAL_SI = "DecimalSI"
BINARY_SI = "BinarySI"
DECIMAL_EXPONENT = "DecimalExponent"

_SHAPE = re.compile(r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$")
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)$")
_DEC_SUFFIX = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_BIN_SUFFIX = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DEC_BY_EXP = {v: k for k, v in _DEC_SUFFIX.items()}
_BIN_BY_EXP = {v: k for k, v in _BIN_SUFFIX.items()}
_NANO = Fraction(1, 10**9)


class QuantityError(ValueError):
    """A string that is not a resource.Quantity; the message is the one the Go parser gives."""


@dataclasses.dataclass(frozen=True)
class Quantity:
    """An exact value and the format it was written in (which decides how it prints)."""

    value: Fraction
    format: str = DECIMAL_SI

    def __str__(self) -> str:
        return _canonical(self.value, self.format)

    def sign(self) -> int:
        return (self.value > 0) - (self.value < 0)

    def milli_value(self) -> int:
        return math.ceil(self.value * 1000)


def _round_nano(v: Fraction) -> Fraction:
    # Quantities keep nano precision; anything finer rounds away from zero like inf.Dec RoundUp.
    scaled = v / _NANO
    if scaled.denominator == 1:
        return v
    n = math.ceil(abs(scaled))
    return Fraction(n if v > 0 else -n) * _NANO


def parse(text: Any) -> Quantity:
    """Parse a quantity given as a JSON string or number; raises QuantityError with Go's wording."""
    if isinstance(text, bool) or text is None:
        raise QuantityError(FORMAT_ERROR)
    if isinstance(text, int):
        text = str(text)
    elif isinstance(text, float):
        if not math.isfinite(text):
            raise QuantityError(FORMAT_ERROR)
        text = repr(text)
    if not isinstance(text, str) or not text:
        raise QuantityError(FORMAT_ERROR)
    m = _SHAPE.match(text)
    if not m or "\n" in text:
        raise QuantityError(FORMAT_ERROR)
    num, suffix = m.group(1), m.group(2)
    if not _NUMBER.match(num):
        raise QuantityError(NUMERIC_ERROR)
    value = Fraction(num)
    if suffix in _DEC_SUFFIX:
        fmt = DECIMAL_SI
        value *= Fraction(10) ** _DEC_SUFFIX[suffix]
    elif suffix in _BIN_SUFFIX:
        fmt = BINARY_SI
        value *= 2 ** _BIN_SUFFIX[suffix]
    elif suffix[:1] in ("e", "E") and re.fullmatch(r"[eE][-+]?[0-9]+", suffix):
        fmt = DECIMAL_EXPONENT
        value *= Fraction(10) ** int(suffix[1:])
    else:
        raise QuantityError(SUFFIX_ERROR)
    return Quantity(_round_nano(value), fmt)


def is_valid(text: Any) -> bool:
    try:
        parse(text)
    except QuantityError:
        return False
    return True


def canonical(text: Any) -> str:
    """The string the apiserver would serialize this quantity as."""
    return str(parse(text))


def compare(a: Any, b: Any) -> int:
    """-1, 0 or 1 as a is less than, equal to or greater than b."""
    va, vb = parse(a).value, parse(b).value
    return (va > vb) - (va < vb)


def _decimal_parts(v: Fraction) -> tuple[int, int]:
    """v as mantissa * 10**exp with exp a multiple of 3 and no removable groups of zeros."""
    exp = 0
    while v.denominator != 1:
        v *= 10
        exp -= 1
    m = int(v)
    while m != 0 and m % 10 == 0:
        m //= 10
        exp += 1
    shift = exp % 3
    return m * 10**shift, exp - shift


def _canonical(v: Fraction, fmt: str) -> str:
    if v == 0:
        return "0"
    if fmt == BINARY_SI and (abs(v) < 1024 or v.denominator != 1):
        fmt = DECIMAL_SI  # small or fractional binary values print as decimal to avoid rounding
    if fmt == BINARY_SI:
        m, exp = int(v), 0
        while m % 1024 == 0 and exp < 60:
            m //= 1024
            exp += 10
        return f"{m}{_BIN_BY_EXP.get(exp, '')}"
    m, exp = _decimal_parts(v)
    if fmt == DECIMAL_EXPONENT:
        return f"{m}" if exp == 0 else f"{m}e{exp}"
    if exp in _DEC_BY_EXP:
        return f"{m}{_DEC_BY_EXP[exp]}"
    return f"{m}e{exp}"
