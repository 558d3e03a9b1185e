"""Specification of the clocks (real and fake) and the Kubernetes time formats."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from pocketkube.base import clock

START = datetime.datetime(2026, 3, 1, 12, 0, 0, tzinfo=datetime.UTC)


def test_fake_clock_default_start():
    """A FakeClock without a start time begins at 2026-01-01T00:00:00Z."""
    assert clock.FakeClock().now() == datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)


def test_fake_clock_stands_still_until_advanced():
    """Fake time does not move by itself; advance() moves wall and monotonic time together."""
    c = clock.FakeClock(START)
    mono = c.monotonic()
    assert c.now() == START and c.monotonic() == mono
    c.advance(90.5)
    assert c.now() == START + datetime.timedelta(seconds=90.5)
    assert c.monotonic() == mono + 90.5


async def test_sleeper_wakes_only_at_its_deadline():
    """A sleeper stays asleep until fake time reaches its deadline."""
    c = clock.FakeClock(START)
    task = asyncio.create_task(c.sleep(10))
    await asyncio.sleep(0)
    c.advance(9.9)
    await asyncio.sleep(0)
    assert not task.done()
    c.advance(0.1)
    await asyncio.sleep(0)
    assert task.done()


async def test_sleepers_wake_in_deadline_order():
    """One large advance wakes every due sleeper in deadline order, ties in arrival order."""
    c = clock.FakeClock(START)
    woke: list[str] = []

    async def sleeper(name: str, seconds: float) -> None:
        await c.sleep(seconds)
        woke.append(name)

    tasks = [
        asyncio.create_task(sleeper(n, s))
        for n, s in [("c", 30), ("a", 10), ("b1", 20), ("b2", 20), ("late", 99)]
    ]
    await asyncio.sleep(0)
    c.advance(50)
    await asyncio.gather(*tasks[:4])
    assert woke == ["a", "b1", "b2", "c"]
    assert not tasks[4].done()
    tasks[4].cancel()


@pytest.mark.parametrize("seconds", [0, -5])
async def test_zero_or_negative_sleep_wakes_on_next_advance(seconds):
    """A sleep of zero or less is due immediately and wakes on advance(0)."""
    c = clock.FakeClock(START)
    task = asyncio.create_task(c.sleep(seconds))
    await asyncio.sleep(0)
    c.advance(0)
    await asyncio.wait_for(task, 1)


async def test_cancelled_sleeper_does_not_break_advance():
    """Cancelling a sleeping task leaves the clock usable for the others."""
    c = clock.FakeClock(START)
    gone = asyncio.create_task(c.sleep(5))
    kept = asyncio.create_task(c.sleep(5))
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    c.advance(5)
    await asyncio.wait_for(kept, 1)
    assert gone.cancelled()


async def test_real_clock():
    """The real clock gives aware UTC time, non-decreasing monotonic time, and really sleeps."""
    c = clock.Clock()
    assert c.now().tzinfo is not None and c.now().utcoffset() == datetime.timedelta(0)
    m1 = c.monotonic()
    await c.sleep(0.01)
    await c.sleep(-1)
    assert c.monotonic() - m1 >= 0.009


@pytest.mark.parametrize(
    ("dt", "seconds", "micro"),
    [
        (START, "2026-03-01T12:00:00Z", "2026-03-01T12:00:00.000000Z"),
        (
            datetime.datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=datetime.UTC),
            "2026-03-01T12:00:00Z",
            "2026-03-01T12:00:00.123456Z",
        ),
        (
            datetime.datetime(2026, 3, 1, 14, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
            "2026-03-01T12:00:00Z",
            "2026-03-01T12:00:00.000000Z",
        ),
        (
            datetime.datetime(2027, 1, 1, 0, 59, 9, 7, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
            "2026-12-31T23:59:09Z",
            "2026-12-31T23:59:09.000007Z",
        ),
        (
            datetime.datetime(1999, 12, 9, 8, 7, 6, 999999, tzinfo=datetime.UTC),
            "1999-12-09T08:07:06Z",
            "1999-12-09T08:07:06.999999Z",
        ),
        (
            datetime.datetime(9999, 12, 31, 23, 59, 59, tzinfo=datetime.UTC),
            "9999-12-31T23:59:59Z",
            "9999-12-31T23:59:59.000000Z",
        ),
    ],
)
def test_kubernetes_time_formats(dt, seconds, micro):
    """metav1.Time is second precision and MicroTime microsecond precision, both UTC with Z."""
    assert clock.rfc3339(dt) == seconds
    assert clock.rfc3339_micro(dt) == micro


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", START),
        ("2026-03-01T12:00:00.500000Z", START + datetime.timedelta(microseconds=500000)),
        ("2026-03-01T13:00:00+01:00", START),
    ],
)
def test_parse_time(text, expected):
    """Timestamps as Kubernetes writes them parse back to aware datetimes."""
    assert clock.parse_time(text) == expected


def test_format_parse_round_trip():
    """rfc3339 then parse_time gives back the same instant at second precision."""
    assert clock.parse_time(clock.rfc3339(START)) == START


def test_time_formats_match_strftime():
    """The formats agree with strftime for any instant and zone (the fast path changes no output)."""
    zones = [datetime.UTC, datetime.timezone(datetime.timedelta(hours=-7, minutes=-30))]
    for i in range(2000):
        dt = datetime.datetime(1000 + i * 4, 1 + i % 12, 1 + i % 28, i % 24, i % 60, (i * 7) % 60, i * 389,
                               tzinfo=zones[i % 2])
        utc = dt.astimezone(datetime.UTC)
        assert clock.rfc3339(dt) == utc.strftime("%Y-%m-%dT%H:%M:%SZ")
        assert clock.rfc3339_micro(dt) == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
