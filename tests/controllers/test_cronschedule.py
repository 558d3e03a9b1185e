"""Cron schedule parsing and next activation times, as robfig/cron's ParseStandard computes them."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from pocketkube.controllers import cronschedule

UTC = datetime.UTC
NY = zoneinfo.ZoneInfo("America/New_York")


def at(text: str, zone: datetime.tzinfo = UTC) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=zone)


@pytest.mark.parametrize(("spec", "after", "expected"), [
    ("*/5 * * * *", "2026-01-01T10:03:20", "2026-01-01T10:05:00"),
    ("*/5 * * * *", "2026-01-01T10:05:00", "2026-01-01T10:10:00"),
    ("0 * * * *", "2026-01-01T10:03:00", "2026-01-01T11:00:00"),
    ("15,45 9-17 * * *", "2026-01-01T17:50:00", "2026-01-02T09:15:00"),
    ("0 0 1 * *", "2026-01-15T00:00:00", "2026-02-01T00:00:00"),
    ("0 0 29 2 *", "2026-01-01T00:00:00", "2028-02-29T00:00:00"),
    ("30 6-16/4 * * 1-5", "2026-01-02T15:00:00", "2026-01-05T06:30:00"),
    ("0 9 * JAN-MAR MON", "2026-01-01T00:00:00", "2026-01-05T09:00:00"),
    ("0 9 * * sun", "2026-01-01T00:00:00", "2026-01-04T09:00:00"),
    ("0 0 1,15 * 5", "2026-01-01T00:00:00", "2026-01-02T00:00:00"),  # day of month OR Friday
    ("0 0 * * 5", "2026-01-01T00:00:00", "2026-01-02T00:00:00"),
    ("0 0 13 * */7", "2026-01-01T00:00:00", "2026-01-04T00:00:00"),  # */7 is not a star: OR applies
    ("5 4 ? * ?", "2026-01-01T00:00:00", "2026-01-01T04:05:00"),
    ("@hourly", "2026-01-01T10:00:00", "2026-01-01T11:00:00"),
    ("@daily", "2026-01-01T10:00:00", "2026-01-02T00:00:00"),
    ("@midnight", "2026-01-01T10:00:00", "2026-01-02T00:00:00"),
    ("@weekly", "2026-01-01T10:00:00", "2026-01-04T00:00:00"),
    ("@monthly", "2026-01-01T10:00:00", "2026-02-01T00:00:00"),
    ("@yearly", "2026-01-01T10:00:00", "2027-01-01T00:00:00"),
    ("@annually", "2026-06-01T10:00:00", "2027-01-01T00:00:00"),
    ("@every 90s", "2026-01-01T10:00:00.500000", "2026-01-01T10:01:30"),
    ("@every 1h30m", "2026-01-01T10:00:00", "2026-01-01T11:30:00"),
])
def test_next_activation_in_utc(spec: str, after: str, expected: str) -> None:
    """Next() returns the first activation strictly after the given time."""
    assert cronschedule.parse(spec, zone=UTC).next(at(after)) == at(expected)


def test_impossible_schedule_has_no_next() -> None:
    """A day that never exists (February 30th) yields no activation within five years."""
    assert cronschedule.parse("0 0 30 2 *", zone=UTC).next(at("2026-01-01T00:00:00")) is None


@pytest.mark.parametrize(("spec", "after_utc", "expected_utc"), [
    # 09:00 in New York is 14:00 UTC in winter and 13:00 UTC in summer.
    ("0 9 * * *", "2026-01-10T15:00:00", "2026-01-11T14:00:00"),
    ("0 9 * * *", "2026-07-10T15:00:00", "2026-07-11T13:00:00"),
    # 02:30 does not exist on 2026-03-08 (spring forward): robfig skips that day.
    ("30 2 * * *", "2026-03-07T12:00:00", "2026-03-09T06:30:00"),
    # 01:30 happens twice on 2026-11-01: the first one is taken.
    ("30 1 * * *", "2026-10-31T12:00:00", "2026-11-01T05:30:00"),
])
def test_next_activation_in_a_zone(spec: str, after_utc: str, expected_utc: str) -> None:
    """Schedules are read in their zone's wall clock, across daylight saving changes."""
    assert cronschedule.parse(spec, zone=NY).next(at(after_utc)) == at(expected_utc)


def test_tz_prefix_overrides_zone() -> None:
    """A "TZ=" (or "CRON_TZ=") prefix names the zone, as robfig allows."""
    sched = cronschedule.parse("TZ=Europe/Paris 0 9 * * *", zone=UTC)
    assert sched.next(at("2026-01-01T10:00:00")) == at("2026-01-02T08:00:00")
    assert cronschedule.parse("CRON_TZ=Asia/Tokyo 0 9 * * *").next(at("2026-01-01T10:00:00")) == \
        at("2026-01-02T00:00:00")
    assert cronschedule.has_tz_prefix("TZ=UTC * * * * *")
    assert not cronschedule.has_tz_prefix("* * * * *")


@pytest.mark.parametrize(("spec", "message"), [
    ("", "empty spec string"),
    ("* * * *", "expected exactly 5 fields, found 4: [* * * *]"),
    ("* * * * * *", "expected exactly 5 fields, found 6: [* * * * * *]"),
    ("61 * * * *", "end of range (61) above maximum (59): 61"),
    ("* * 0 * *", "beginning of range (0) below minimum (1): 0"),
    ("5-1 * * * *", "beginning of range (5) beyond end of range (1): 5-1"),
    ("*/0 * * * *", "step of range should be a positive number: */0"),
    ("1-2-3 * * * *", "too many hyphens: 1-2-3"),
    ("1/2/3 * * * *", "too many slashes: 1/2/3"),
    ("x * * * *", 'failed to parse int from x: strconv.Atoi: parsing "x": invalid syntax'),
    ("* * * * 7", "end of range (7) above maximum (6): 7"),
    ("@fortnightly", "unrecognized descriptor: @fortnightly"),
    ("TZ=Nowhere/Town * * * * *", "provided bad location Nowhere/Town: unknown time zone Nowhere/Town"),
])
def test_parse_errors_carry_robfig_messages(spec: str, message: str) -> None:
    """Invalid schedules are refused with robfig/cron's wording."""
    with pytest.raises(cronschedule.ScheduleError) as err:
        cronschedule.parse(spec, zone=UTC)
    assert str(err.value) == message


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90.0), ("1h30m", 5400.0), ("1.5h", 5400.0), ("500ms", 0.5), ("0", 0.0), ("-2m", -120.0),
])
def test_go_durations(text: str, seconds: float) -> None:
    """@every takes Go duration syntax."""
    assert cronschedule.parse_go_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5x", "h", "1h 2m"])
def test_bad_go_durations(text: str) -> None:
    """Malformed durations are refused."""
    with pytest.raises(ValueError):
        cronschedule.parse_go_duration(text)


def test_every_is_at_least_one_second() -> None:
    """@every rounds below one second up to one second, as robfig does."""
    assert cronschedule.parse("@every 200ms").next(at("2026-01-01T00:00:00")) == at("2026-01-01T00:00:01")


def test_load_zone() -> None:
    """Zone names resolve like Go's LoadLocation; unknown names are refused."""
    assert cronschedule.load_zone("") is UTC
    assert cronschedule.load_zone("UTC") is UTC
    assert str(cronschedule.load_zone("Europe/Berlin")) == "Europe/Berlin"
    for bad in ("Mars/Base", "../etc/passwd"):
        with pytest.raises(cronschedule.ScheduleError):
            cronschedule.load_zone(bad)
