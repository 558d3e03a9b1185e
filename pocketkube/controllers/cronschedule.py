"""Cron schedules as robfig/cron's ParseStandard reads them, and their next activation times in a time zone."""

from __future__ import annotations

import dataclasses
import datetime
import os
import re
import zoneinfo

UTC = datetime.UTC
# A field written as "*" or "?" (not "*/n"): for day-of-month/day-of-week it changes how the two combine.
STAR_BIT = 1 << 63
_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
# (low, high, names) of minute, hour, day of month, month, day of week.
_BOUNDS = ((0, 59, None), (0, 23, None), (1, 31, None), (1, 12, _MONTHS), (0, 6, _DAYS))
# robfig gives up when no activation exists within five years (e.g. "0 0 30 2 *").
YEAR_LIMIT = 5
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class ScheduleError(ValueError):
    """A schedule robfig/cron refuses; the message is robfig's."""


def _bits(lo: int, hi: int, step: int = 1) -> int:
    return sum(1 << i for i in range(lo, hi + 1, step))


def _all(lo: int, hi: int) -> int:
    return _bits(lo, hi) | STAR_BIT


@dataclasses.dataclass(frozen=True)
class SpecSchedule:
    """A bit set per field (second, minute, hour, day of month, month, day of week) and a time zone."""

    second: int
    minute: int
    hour: int
    dom: int
    month: int
    dow: int
    zone: datetime.tzinfo

    def next(self, t: datetime.datetime) -> datetime.datetime | None:
        """The first activation strictly after t (None when there is none within five years)."""
        orig = t.tzinfo or UTC
        t = t.astimezone(self.zone)
        # Start at the upcoming whole second.
        t = _add(t.replace(microsecond=0), 1)
        added = False
        year_limit = t.year + YEAR_LIMIT
        while True:
            if t.year > year_limit:
                return None
            wrapped = False
            while not (1 << t.month) & self.month:
                if not added:
                    added = True
                    t = _date(t.year, t.month, 1, 0, 0, 0, self.zone)
                t = _add_months(t, 1, self.zone)
                if t.month == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not self._day_matches(t):
                if not added:
                    added = True
                    t = _date(t.year, t.month, t.day, 0, 0, 0, self.zone)
                t = _add_days(t, 1, self.zone)
                # A daylight saving shift can move midnight: put the time back on it.
                if t.hour != 0:
                    t = _add(t, (24 - t.hour) * 3600 if t.hour > 12 else -t.hour * 3600)
                if t.day == 1:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << t.hour) & self.hour:
                if not added:
                    added = True
                    t = _date(t.year, t.month, t.day, t.hour, 0, 0, self.zone)
                t = _add(t, 3600)
                if t.hour == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << t.minute) & self.minute:
                if not added:
                    added = True
                    t = _add(t, -(t.second + 0))
                t = _add(t, 60)
                if t.minute == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            while not (1 << t.second) & self.second:
                if not added:
                    added = True
                t = _add(t, 1)
                if t.second == 0:
                    wrapped = True
                    break
            if wrapped:
                continue
            return t.astimezone(orig)

    def _day_matches(self, t: datetime.datetime) -> bool:
        dom = bool((1 << t.day) & self.dom)
        dow = bool((1 << _weekday(t)) & self.dow)
        if self.dom & STAR_BIT or self.dow & STAR_BIT:
            return dom and dow
        return dom or dow


@dataclasses.dataclass(frozen=True)
class EverySchedule:
    """"@every <duration>": activations a fixed number of whole seconds apart."""

    seconds: int

    def next(self, t: datetime.datetime) -> datetime.datetime | None:
        return _add(t.replace(microsecond=0), self.seconds)


Schedule = SpecSchedule | EverySchedule


def _weekday(t: datetime.datetime) -> int:
    # Go's Weekday: Sunday is 0.
    return (t.weekday() + 1) % 7


def _add(t: datetime.datetime, seconds: float) -> datetime.datetime:
    """Absolute-time addition (Go's Time.Add): Python's aware arithmetic would keep the wall clock instead."""
    zone = t.tzinfo
    return (t.astimezone(UTC) + datetime.timedelta(seconds=seconds)).astimezone(zone)


def _date(year: int, month: int, day: int, hour: int, minute: int, second: int,
          zone: datetime.tzinfo) -> datetime.datetime:
    """Go's time.Date: a wall-clock time, normalised (a time in a DST gap moves forward)."""
    return datetime.datetime(year, month, day, hour, minute, second, tzinfo=zone).astimezone(UTC).astimezone(zone)


def _add_months(t: datetime.datetime, months: int, zone: datetime.tzinfo) -> datetime.datetime:
    m = t.month - 1 + months
    year, month = t.year + m // 12, m % 12 + 1
    # Go's AddDate normalises overflowing days (Jan 31 + 1 month = Mar 3); callers only add to day 1.
    first = datetime.datetime(year, month, 1, t.hour, t.minute, t.second, tzinfo=zone)
    return _normalise(first + datetime.timedelta(days=t.day - 1), zone)


def _add_days(t: datetime.datetime, days: int, zone: datetime.tzinfo) -> datetime.datetime:
    return _normalise(t.replace(tzinfo=zone) + datetime.timedelta(days=days), zone)


def _normalise(t: datetime.datetime, zone: datetime.tzinfo) -> datetime.datetime:
    return t.replace(fold=0).astimezone(UTC).astimezone(zone)


# --- parsing ---------------------------------------------------------------------------


def load_zone(name: str) -> datetime.tzinfo:
    """Go's time.LoadLocation: "" and "UTC" are UTC, "Local" is this process's zone; ScheduleError otherwise."""
    if name in ("", "UTC"):
        return UTC
    if name == "Local":
        return local_zone()
    try:
        if name.startswith("/") or ".." in name or "\\" in name:
            raise ValueError(name)
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as e:
        raise ScheduleError(f"unknown time zone {name}") from e


def local_zone() -> datetime.tzinfo:
    """The zone of this process (TZ, then /etc/localtime), as the kube-controller-manager's time.Local."""
    tz = os.environ.get("TZ", "")
    if tz:
        try:
            return zoneinfo.ZoneInfo(tz.lstrip(":"))
        except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
            return UTC
    try:
        target = os.path.realpath("/etc/localtime")
        marker = "zoneinfo/"
        if marker in target:
            return zoneinfo.ZoneInfo(target.split(marker, 1)[1])
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        pass
    return UTC


def has_tz_prefix(spec: str) -> bool:
    """Whether a schedule names its own zone ("TZ=" or "CRON_TZ="), which the CronJob API refuses."""
    return "TZ" in spec


def parse(spec: str, *, zone: datetime.tzinfo | None = None) -> Schedule:
    """Parse a standard five-field schedule or descriptor; a "TZ=zone " prefix overrides `zone`."""
    loc: datetime.tzinfo = zone if zone is not None else local_zone()
    spec = spec.strip()
    if not spec:
        raise ScheduleError("empty spec string")
    if spec.startswith(("TZ=", "CRON_TZ=")):
        space = spec.find(" ")
        name = spec[spec.index("=") + 1:space if space >= 0 else len(spec)]
        try:
            loc = load_zone(name)
        except ScheduleError as e:
            raise ScheduleError(f"provided bad location {name}: {e}") from e
        spec = spec[space:].strip() if space >= 0 else ""
        if not spec:
            raise ScheduleError("empty spec string")
    if spec.startswith("@"):
        return _descriptor(spec, loc)
    fields = spec.split()
    if len(fields) != 5:
        raise ScheduleError(f"expected exactly 5 fields, found {len(fields)}: [{' '.join(fields)}]")
    values = [_field(text, lo, hi, names) for text, (lo, hi, names) in zip(fields, _BOUNDS, strict=True)]
    return SpecSchedule(second=1, minute=values[0], hour=values[1], dom=values[2], month=values[3],
                        dow=values[4], zone=loc)


def _descriptor(spec: str, loc: datetime.tzinfo) -> Schedule:
    every_day = _all(1, 31)
    every_month = _all(1, 12)
    every_dow = _all(0, 6)
    table = {
        "@yearly": (1, 1, 1, 1 << 1, 1 << 1, every_dow),
        "@monthly": (1, 1, 1, 1 << 1, every_month, every_dow),
        "@weekly": (1, 1, 1, every_day, every_month, 1 << 0),
        "@daily": (1, 1, 1, every_day, every_month, every_dow),
        "@hourly": (1, 1, _all(0, 23), every_day, every_month, every_dow),
    }
    table["@annually"] = table["@yearly"]
    table["@midnight"] = table["@daily"]
    if spec in table:
        s, m, h, dom, month, dow = table[spec]
        return SpecSchedule(second=s, minute=m, hour=h, dom=dom, month=month, dow=dow, zone=loc)
    every = "@every "
    if spec.startswith(every):
        text = spec[len(every):]
        try:
            seconds = parse_go_duration(text)
        except ValueError as e:
            raise ScheduleError(f"failed to parse duration {spec}: {e}") from e
        return EverySchedule(max(1, int(seconds)))
    raise ScheduleError(f"unrecognized descriptor: {spec}")


def parse_go_duration(text: str) -> float:
    """Go's time.ParseDuration, in seconds ("1h30m", "90s", "1.5h")."""
    orig = text
    sign = -1.0 if text.startswith("-") else 1.0
    text = text[1:] if text[:1] in ("+", "-") else text
    if text == "0":
        return 0.0
    terms = re.findall(r"([0-9]*\.?[0-9]*)([^0-9.]*)", text)
    if not text or "".join(a + b for a, b in terms) != text:
        raise ValueError(f'time: invalid duration "{orig}"')
    total = 0.0
    for num, unit in terms:
        if not num and not unit:
            continue
        if num in ("", "."):
            raise ValueError(f'time: invalid duration "{orig}"')
        if not unit:
            raise ValueError(f'time: missing unit in duration "{orig}"')
        if unit not in _GO_UNITS:
            raise ValueError(f'time: unknown unit "{unit}" in duration "{orig}"')
        total += float(num) * _GO_UNITS[unit]
    return sign * total


def _int(expr: str) -> int:
    if not re.fullmatch(r"[+-]?[0-9]+", expr):
        raise ScheduleError(f'failed to parse int from {expr}: strconv.Atoi: parsing "{expr}": invalid syntax')
    n = int(expr)
    if n < 0:
        raise ScheduleError(f"negative number ({n}) not allowed: {expr}")
    return n


def _value(expr: str, lo: int, names: list[str] | None) -> int:
    if names and expr.lower() in names:
        return names.index(expr.lower()) + lo
    return _int(expr)


def _field(field: str, lo: int, hi: int, names: list[str] | None) -> int:
    bits = 0
    for expr in field.split(","):
        bits |= _range(expr, lo, hi, names)
    return bits


def _range(expr: str, lo: int, hi: int, names: list[str] | None) -> int:
    """One comma-separated term: "*", "?", "n", "a-b", any of these with "/step"."""
    range_step = expr.split("/")
    low_high = range_step[0].split("-")
    single = len(low_high) == 1
    extra = 0
    if low_high[0] in ("*", "?"):
        start, end = lo, hi
        extra = STAR_BIT
    else:
        start = _value(low_high[0], lo, names)
        if len(low_high) == 1:
            end = start
        elif len(low_high) == 2:
            end = _value(low_high[1], lo, names)
        else:
            raise ScheduleError(f"too many hyphens: {expr}")
    if len(range_step) == 1:
        step = 1
    elif len(range_step) == 2:
        step = _int(range_step[1])
        # "n/step" means "n-max/step".
        if single:
            end = hi
        if step > 1:
            extra = 0
    else:
        raise ScheduleError(f"too many slashes: {expr}")
    if start < lo:
        raise ScheduleError(f"beginning of range ({start}) below minimum ({lo}): {expr}")
    if end > hi:
        raise ScheduleError(f"end of range ({end}) above maximum ({hi}): {expr}")
    if start > end:
        raise ScheduleError(f"beginning of range ({start}) beyond end of range ({end}): {expr}")
    if step == 0:
        raise ScheduleError(f"step of range should be a positive number: {expr}")
    return _bits(start, end, step) | extra
