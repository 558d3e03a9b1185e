"""Specification of container log rotation: sizes, kept files, the time index, and reading across a rotation."""

from __future__ import annotations

import asyncio
import datetime
import os

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import containerio, kubeletserver, logrotate

T0 = datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=datetime.UTC)


@pytest.mark.parametrize(("env", "expected"), [
    ({}, logrotate.Policy(10 * 2**20, 5)),
    ({logrotate.MAX_SIZE_ENV: "1Ki", logrotate.MAX_FILES_ENV: "2"}, logrotate.Policy(1024, 2)),
    ({logrotate.MAX_SIZE_ENV: "200"}, logrotate.Policy(200, 5)),
])
def test_policy_from_env(env, expected):
    """The policy defaults to the kubelet's 10Mi and 5 files and reads sizes as quantities."""
    assert logrotate.policy_from_env(env) == expected


@pytest.mark.parametrize("env", [{logrotate.MAX_SIZE_ENV: "ten"}, {logrotate.MAX_FILES_ENV: "1"},
                                 {logrotate.MAX_SIZE_ENV: "0"}, {logrotate.MAX_FILES_ENV: "x"}])
def test_bad_policy_is_refused(env):
    """A size that is no quantity, or fewer than two files, is refused with a clear message."""
    with pytest.raises(ValueError):
        logrotate.policy_from_env(env)


def _lines(n, width=9):
    return b"".join(f"{i:0{width - 1}d}\n".encode() for i in range(n))


def test_writer_rotates_at_line_ends_and_keeps_max_files(tmp_path):
    """Past maxSize the log moves aside as <log>.<time>; only maxFiles-1 rotated files (and indexes) stay."""
    clock = clock_mod.FakeClock(T0)
    path = str(tmp_path / "0.log")
    w = logrotate.Writer(path, clock=clock, policy=logrotate.Policy(max_size=50, max_files=3))
    for i in range(4):
        w.write(_lines(8)[i * 20:(i + 1) * 20])  # 20-byte chunks cutting lines in two
        clock.advance(1)
    w.write(_lines(30))
    w.close()
    rotated = logrotate.rotated(path)
    assert len(rotated) == 2 and all(os.path.basename(p).startswith("0.log.20240501-1200") for p in rotated)
    for p in [*rotated, path]:
        data = open(p, "rb").read()
        assert len(data) <= 50 and data.endswith(b"\n")
        assert len(open(logrotate.ts_path(p)).read().splitlines()) == data.count(b"\n")
    assert open(path, "rb").read().endswith(b"00000029\n")


def test_a_line_longer_than_max_size_is_split(tmp_path):
    """A single line longer than maxSize is cut so no file grows past it."""
    path = str(tmp_path / "0.log")
    w = logrotate.Writer(path, clock=clock_mod.FakeClock(T0), policy=logrotate.Policy(max_size=10, max_files=5))
    w.write(b"x" * 25 + b"\n")
    w.close()
    sizes = [os.path.getsize(p) for p in [*logrotate.rotated(path), path]]
    assert sizes == [10, 10, 6]


async def test_pump_creates_the_log_even_without_output(tmp_path):
    """Every run has a log file (kubectl logs finds an empty one), even when the container writes nothing."""
    reader = asyncio.StreamReader()
    reader.feed_eof()
    path = str(tmp_path / "0.log")
    await logrotate.pump(reader, path=path, clock=clock_mod.FakeClock(T0))
    assert open(path, "rb").read() == b""


def test_reader_follows_across_rotation(tmp_path):
    """A follower reading a log loses no line and repeats none when the log rotates under it."""
    clock = clock_mod.FakeClock(T0)
    path = str(tmp_path / "0.log")
    w = logrotate.Writer(path, clock=clock, policy=logrotate.Policy(max_size=40, max_files=5))
    reader = kubeletserver.LogReader(path, fallback=T0)
    seen = []
    for i in range(20):
        w.write(f"line-{i:02d}\n".encode())
        if i % 3 == 0:
            seen += reader.poll(final=False)
    w.close()
    seen += reader.poll(final=True)
    assert [line for _, line in seen] == [f"line-{i:02d}\n".encode() for i in range(20)]
    assert len(logrotate.rotated(path)) == 3


def test_reader_after_rotation_reads_only_the_current_file(tmp_path):
    """As with the kubelet, a plain read (kubectl logs, --tail) covers the current file only."""
    path = str(tmp_path / "0.log")
    w = logrotate.Writer(path, clock=clock_mod.FakeClock(T0), policy=logrotate.Policy(max_size=40, max_files=5))
    for i in range(10):
        w.write(f"line-{i:02d}\n".encode())
    w.close()
    got = kubeletserver.LogReader(path, fallback=T0).poll(final=True)
    assert [line for _, line in got] == [f"line-{i:02d}\n".encode() for i in range(5, 10)]


def _index(path):
    return [line.split(" ") for line in open(logrotate.ts_path(path)).read().splitlines()]


OUT, ERR = "stdout", "stderr"
M = logrotate.MAX_LINE


@pytest.mark.parametrize(("feeds", "log", "streams"), [
    # a stream's unended line waits for its end, while the other stream's whole lines go first
    ([(OUT, b"par"), (ERR, b"err\n"), (OUT, b"tial\n")], b"err\npartial\n", [ERR, OUT]),
    ([(OUT, b"a\nb"), (ERR, b"x"), (ERR, b"y\n"), (OUT, b"c\n")], b"a\nxy\nbc\n", [OUT, ERR, OUT]),
    # an unended last line goes as it is when its stream ends
    ([(OUT, b"done\nno end"), (ERR, b"oops")], b"done\nno endoops", [OUT, OUT]),
    # CR LF line ends are logged as LF, a CR elsewhere stays
    ([(OUT, b"a\r\nb\rc\r"), (OUT, b"\nd\n")], b"a\nb\rc\nd\n", [OUT, OUT, OUT]),
    # a line still unended at MAX_LINE goes in pieces, so the other stream's lines may come between them
    ([(OUT, b"x" * (M + 2)), (ERR, b"e\n"), (OUT, b"\n")], b"x" * M + b"e\nxx\n", [OUT, OUT]),
    # a piece never ends in the CR of a CR LF line end
    ([(OUT, b"x" * (M - 1) + b"\r"), (OUT, b"\n")], b"x" * (M - 1) + b"\n", [OUT]),
])
def test_lines_keep_each_streams_lines_whole(tmp_path, feeds, log, streams):
    """Each stream reaches the log a line at a time, tagged in the index with its stream, as containerd logs it."""
    path = str(tmp_path / "0.log")
    w = logrotate.Writer(path, clock=clock_mod.FakeClock(T0))
    lines = {s: logrotate.Lines(w, s) for s in (OUT, ERR)}
    for stream, chunk in feeds:
        lines[stream].feed(chunk)
    for each in lines.values():
        each.flush()
    w.close()
    assert open(path, "rb").read() == log
    assert [s for _, s in _index(path)] == streams


async def test_pump_copies_stdout_and_stderr_apart(tmp_path):
    """The pump logs both streams, each line tagged with its own, and publishes each chunk with its stream."""
    outputs = containerio.Outputs()
    path = str(tmp_path / "0.log")
    listener = outputs.listen(str(tmp_path))
    out, err = asyncio.StreamReader(), asyncio.StreamReader()
    pumping = asyncio.get_running_loop().create_task(
        logrotate.pump(out, path=path, clock=clock_mod.FakeClock(T0), live=outputs, stderr=err))
    out.feed_data(b"one ")
    await asyncio.sleep(0)
    err.feed_data(b"warning\n")
    await asyncio.sleep(0)
    out.feed_data(b"two\n")
    out.feed_eof()
    await asyncio.sleep(0)
    assert not pumping.done()  # stderr is still open
    err.feed_data(b"bye")
    err.feed_eof()
    await asyncio.wait_for(pumping, 5)
    assert open(path, "rb").read() == b"warning\none two\nbye"
    assert _index(path) == [["2024-05-01T12:00:00.000000Z", s] for s in (ERR, OUT, ERR)]
    assert listener.take_parts_nowait() == [(OUT, b"one "), (ERR, b"warning\n"), (OUT, b"two\n"), (ERR, b"bye")]


def test_reader_takes_times_from_a_tagged_or_untagged_index(tmp_path):
    """kubectl logs --timestamps reads each line's time from the index, with or without its stream tag."""
    path = str(tmp_path / "0.log")
    open(path, "wb").write(b"a\nb\n")
    open(logrotate.ts_path(path), "w").write("2024-05-01T12:00:01.5Z stderr\n2024-05-01T12:00:02Z\n")
    got = kubeletserver.LogReader(path, fallback=T0).poll(final=True)
    assert [(at.second, at.microsecond) for at, _ in got] == [(1, 500000), (2, 0)]
