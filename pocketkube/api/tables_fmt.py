"""Cell formatting shared by the table printers: ages, labels, selectors, quantities."""

from __future__ import annotations

import datetime
from decimal import ROUND_CEILING, Decimal, InvalidOperation
from typing import Any, NamedTuple

from pocketkube.api import tables_docs as docs

NONE = "<none>"
UNSET = "<unset>"
UNKNOWN = "<unknown>"
_MISSING: Any = object()


class Printer(NamedTuple):
    """Column definitions of one kind, the function making a row's cells, and row conditions."""

    columns: list[dict[str, Any]]
    cells: Any  # Callable[[dict, datetime], list]
    conditions: Any = None  # Callable[[dict], list | None]


def col(name: str, type_: str, description: str, *, format_: str = "", priority: int = 0) -> dict[str, Any]:
    """A metav1.TableColumnDefinition, keys in the order kube-apiserver writes them."""
    return {"name": name, "type": type_, "format": format_, "description": description, "priority": priority}


NAME = col("Name", "string", docs.META_NAME, format_="name")
AGE = col("Age", "string", docs.META_CREATED)
CONTAINERS = "Names of each container in the template."
IMAGES = "Images referenced by each container in the template."
CONTAINERS_WIDE = col("Containers", "string", CONTAINERS, priority=1)
IMAGES_WIDE = col("Images", "string", IMAGES, priority=1)


def human_duration(seconds_us: int) -> str:
    """k8s.io/apimachinery duration.HumanDuration for a span given in microseconds."""
    # Go truncates toward zero; the two-second tolerance for clock skew is Kubernetes' own.
    seconds = int(seconds_us / 1_000_000) if seconds_us < 0 else seconds_us // 1_000_000
    if seconds < -1:
        return "<invalid>"
    if seconds < 0:
        return "0s"
    if seconds < 120:
        return f"{seconds}s"
    minutes = seconds // 60
    if minutes < 10:
        s = seconds % 60
        return f"{minutes}m" if s == 0 else f"{minutes}m{s}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = seconds // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def span_us(later: datetime.datetime, earlier: datetime.datetime) -> int:
    """Exact microseconds from earlier to later."""
    d = later - earlier
    return (d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds


_time_cache: dict[str, datetime.datetime | None] = {}


def parse_time(value: Any) -> datetime.datetime | None:
    """An RFC 3339 timestamp as an aware datetime; None for missing or unparsable values."""
    if not isinstance(value, str) or not value:
        return None
    hit = _time_cache.get(value, _MISSING)
    if hit is not _MISSING:
        return hit
    try:
        t = datetime.datetime.fromisoformat(value)
        if t.tzinfo is None:
            t = t.replace(tzinfo=datetime.UTC)
    except ValueError:
        t = None
    if len(_time_cache) > 50_000:
        _time_cache.clear()
    _time_cache[value] = t
    return t


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_US = datetime.timedelta(microseconds=1)
_epoch_cache: dict[str, int | None] = {}
_since_now: list[Any] = [None, 0]
_since_cache: dict[Any, str] = {}


def epoch_us(value: Any) -> int | None:
    """Microseconds since the Unix epoch of an RFC 3339 timestamp; None when unset or broken."""
    hit = _epoch_cache.get(value, _MISSING) if isinstance(value, str) else None
    if hit is not _MISSING:
        return hit
    t = parse_time(value)
    us = None if t is None or t.year == 1 else (t - _EPOCH) // _US
    if len(_epoch_cache) > 100_000:
        _epoch_cache.clear()
    _epoch_cache[value] = us
    return us


def since(value: Any, now: datetime.datetime) -> str:
    """translateTimestampSince: the age of a timestamp, `<unknown>` when it is unset."""
    if not isinstance(value, str):
        return UNKNOWN
    # Memoised per `now`: a table's rows share one clock reading and often timestamps too.
    if _since_now[0] is not now:
        _since_now[0] = now
        _since_now[1] = (now - _EPOCH) // _US
        _since_cache.clear()
    hit = _since_cache.get(value)
    if hit is not None:
        return hit
    us = epoch_us(value)
    # Go's zero time means the field was unset.
    out = UNKNOWN if us is None else human_duration(_since_now[1] - us)
    _since_cache[value] = out
    return out


def age(obj: dict[str, Any], now: datetime.datetime) -> str:
    """The Age cell of an object."""
    md = obj.get("metadata")
    return since(md.get("creationTimestamp") if md else None, now)


def name(obj: dict[str, Any]) -> str:
    md = obj.get("metadata")
    return (md.get("name") or "") if md else ""


def dig(obj: Any, *path: str) -> Any:
    """obj[path0][path1]... with None for anything missing or not a mapping."""
    for p in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(p)
    return obj


def as_int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    return default


def condition_true(conditions: Any, type_: str) -> bool:
    """Whether the first condition of type_ in a status.conditions list has status True."""
    for c in conditions or []:
        if c.get("type") == type_:
            return c.get("status") == "True"
    return False


def format_labels(labels: Any) -> str:
    """labels.FormatLabels: sorted k=v pairs, `<none>` when empty."""
    if not isinstance(labels, dict) or not labels:
        return NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


class SelectorError(ValueError):
    """A LabelSelector that LabelSelectorAsSelector rejects."""


def selector_string(selector: Any) -> str:
    """labels.Selector.String() of metav1.LabelSelectorAsSelector(selector); '' selects all or nothing."""
    if not isinstance(selector, dict):
        return ""
    reqs: list[tuple[str, str]] = []
    for k, v in (selector.get("matchLabels") or {}).items():
        reqs.append((k, f"{k}={v}"))
    for expr in selector.get("matchExpressions") or []:
        key = expr.get("key", "")
        op = expr.get("operator")
        values = sorted(set(expr.get("values") or []))
        if op == "In":
            reqs.append((key, f"{key} in ({','.join(values)})"))
        elif op == "NotIn":
            reqs.append((key, f"{key} notin ({','.join(values)})"))
        elif op == "Exists":
            reqs.append((key, key))
        elif op == "DoesNotExist":
            reqs.append((key, f"!{key}"))
        else:
            raise SelectorError(f"{op!r} is not a valid label selector operator")
    reqs.sort(key=lambda r: r[0])
    return ",".join(r[1] for r in reqs)


def format_selector(selector: Any) -> str:
    """metav1.FormatLabelSelector: `<none>` for an empty selector, `<error>` for a broken one."""
    try:
        s = selector_string(selector)
    except SelectorError:
        return "<error>"
    return s or NONE


def containers_cells(pod_spec: Any) -> tuple[str, str]:
    """layoutContainerCells: comma-joined container names and images."""
    containers = (pod_spec or {}).get("containers") or [] if isinstance(pod_spec, dict) else []
    return (",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers))


def int_or_string(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def go_bool(value: Any) -> str:
    """printBoolPtr: True/False, `<unset>` for nil."""
    if value is None:
        return UNSET
    return "True" if value else "False"


# --- resource.Quantity canonical form -------------------------------------------------------

_BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DEC_SUFFIX = {v: k for k, v in _DECIMAL.items()}
_BIN_SUFFIX = {0: "", 1: "Ki", 2: "Mi", 3: "Gi", 4: "Ti", 5: "Pi", 6: "Ei"}
_NANO = Decimal("1e-9")


def _split_quantity(s: str) -> tuple[str, str]:
    i = len(s)
    while i > 0 and not (s[i - 1].isdigit() or s[i - 1] == "."):
        i -= 1
    num, suffix = s[:i], s[i:]
    if "e" in num.lower().lstrip("+-") and suffix == "":
        return num, ""
    return num, suffix


def quantity(value: Any) -> str:
    """resource.Quantity.String(): the canonical form Kubernetes prints (`1000m` -> `1`, `2048Ki` -> `2Mi`)."""
    if value is None:
        return "0"
    s = str(value).strip()
    try:
        num, suffix = _split_quantity(s)
        fmt = "decimal"
        if suffix in _BINARY:
            amount = Decimal(num) * (Decimal(2) ** _BINARY[suffix])
            fmt = "binary"
        elif suffix in _DECIMAL:
            amount = Decimal(num) * (Decimal(10) ** _DECIMAL[suffix])
            if "e" in num.lower():
                fmt = "exponent"
        elif suffix[:1] in ("e", "E"):
            amount = Decimal(num) * (Decimal(10) ** int(suffix[1:]))
            fmt = "exponent"
        else:
            return s
    except (InvalidOperation, ValueError):
        return s
    # Kubernetes keeps nano precision, rounding anything finer up.
    amount = amount.quantize(_NANO, rounding=ROUND_CEILING) if amount != amount.to_integral_value() else amount
    if amount == 0:
        return "0"
    sign = "-" if amount < 0 else ""
    mag = -amount if amount < 0 else amount
    if fmt == "binary" and mag >= 1024 and mag == mag.to_integral_value():
        n, exp = int(mag), 0
        while n % 1024 == 0 and exp < 6:
            n //= 1024
            exp += 1
        return f"{sign}{n}{_BIN_SUFFIX[exp]}"
    # Decimal canonical form: integer mantissa with an exponent that is a multiple of three.
    mantissa, exp10 = int((mag / _NANO).to_integral_value()), -9
    while mantissa % 10 == 0 and mantissa:
        mantissa //= 10
        exp10 += 1
    while exp10 % 3:
        mantissa *= 10
        exp10 -= 1
    if fmt == "exponent":
        return f"{sign}{mantissa}" + (f"e{exp10}" if exp10 else "")
    if exp10 in _DEC_SUFFIX:
        return f"{sign}{mantissa}{_DEC_SUFFIX[exp10]}"
    return f"{sign}{mantissa}e{exp10}"
