"""Container log files: a container's output copied into its log with a time and stream index, rotated as the kubelet does."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
from collections.abc import Mapping
from typing import IO

from pocketkube.api import quantity
from pocketkube.base import clock as clock_mod
from pocketkube.node import containerio

# The kubelet's containerLogMaxSize and containerLogMaxFiles defaults.
DEFAULT_MAX_SIZE = 10 * 1024 * 1024
DEFAULT_MAX_FILES = 5
MAX_SIZE_ENV = "POCKETKUBE_CONTAINER_LOG_MAX_SIZE"
MAX_FILES_ENV = "POCKETKUBE_CONTAINER_LOG_MAX_FILES"
# Rotated files are named <log>.<time>, with the time in this (Go: 20060102-150405) format.
STAMP_FORMAT = "%Y%m%d-%H%M%S"
CHUNK = 65536
# containerd's max_container_log_line_size: a line still unended at this length goes to the log in pieces this
# long, as CRI partial lines do (another stream's lines may then come between them).
MAX_LINE = 16384


@dataclasses.dataclass(frozen=True)
class Policy:
    """containerLogMaxSize (bytes) and containerLogMaxFiles (the current file counts as one)."""

    max_size: int = DEFAULT_MAX_SIZE
    max_files: int = DEFAULT_MAX_FILES

    def __post_init__(self) -> None:
        if self.max_size <= 0:
            raise ValueError(f"containerLogMaxSize must be a positive size, got {self.max_size}")
        if self.max_files < 2:
            raise ValueError(f"containerLogMaxFiles must be greater than 1, got {self.max_files}")


def policy_from_env(env: Mapping[str, str] | None = None) -> Policy:
    """The rotation policy, with POCKETKUBE_CONTAINER_LOG_MAX_SIZE (a quantity, e.g. 10Mi) and _MAX_FILES."""
    env = os.environ if env is None else env
    size, files = DEFAULT_MAX_SIZE, DEFAULT_MAX_FILES
    raw = env.get(MAX_SIZE_ENV, "").strip()
    if raw:
        try:
            size = int(quantity.parse(raw).value)
        except ValueError as e:
            raise ValueError(f"{MAX_SIZE_ENV}={raw!r}: {e}") from None
    raw = env.get(MAX_FILES_ENV, "").strip()
    if raw:
        try:
            files = int(raw)
        except ValueError:
            raise ValueError(f"{MAX_FILES_ENV}={raw!r}: not a whole number") from None
    return Policy(max_size=size, max_files=files)


def ts_path(log_path: str) -> str:
    """The index beside a container log: one "<RFC 3339 time> <stream>" per line of it, the stream stdout or stderr.

    The log itself holds the output unchanged (both streams, a line at a time), which is what `kubectl logs`
    shows: the index gives each line its time and stream, as the CRI log format's prefix does."""
    return log_path.removesuffix(".log") + ".ts" if log_path.endswith(".log") else log_path + ".ts"


def rotated(log_path: str) -> list[str]:
    """The rotated files of a log, oldest first."""
    d, base = os.path.split(log_path)
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    paths = [os.path.join(d, n) for n in names if n.startswith(base + ".") and not n.endswith(".ts")]

    def mtime(p: str) -> float:
        try:
            return os.stat(p).st_mtime_ns
        except FileNotFoundError:
            return 0

    return sorted(paths, key=lambda p: (mtime(p), p))


def rotate(log_path: str, *, now: datetime.datetime, policy: Policy) -> str:
    """Move the log (and its index) aside as <log>.<time>, dropping the oldest beyond maxFiles; the new name."""
    stamp = now.astimezone(datetime.UTC).strftime(STAMP_FORMAT)
    target, n = f"{log_path}.{stamp}", 1
    while os.path.lexists(target):
        n += 1
        target = f"{log_path}.{stamp}-{n}"
    # The index first: a reader that sees the new log beside it must find a new (or no) index.
    with contextlib.suppress(FileNotFoundError):
        os.rename(ts_path(log_path), ts_path(target))
    os.rename(log_path, target)
    old = rotated(log_path)
    for p in old[:max(0, len(old) - (policy.max_files - 1))]:
        for q in (p, ts_path(p)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(q)
    return target


class Writer:
    """Appends a container's output to its log and index, rotating when the log passes maxSize."""

    def __init__(self, path: str, *, clock: clock_mod.Clock, policy: Policy | None = None) -> None:
        self.path = path
        self.clock = clock
        self.policy = policy or Policy()
        self.at_start = True
        self._log: IO[bytes] | None = None
        self._ts: IO[str] | None = None
        self._size = 0

    def open(self) -> tuple[IO[bytes], IO[str]]:
        if self._log is None or self._ts is None:
            self._ts = open(ts_path(self.path), "a", encoding="ascii")  # noqa: SIM115 - kept open between writes
            self._log = open(self.path, "ab")  # noqa: SIM115
            self._size = self._log.seek(0, os.SEEK_END)
        return self._log, self._ts

    def write(self, chunk: bytes, *, stream: str = containerio.STDOUT) -> None:
        """Append one stream's output, rotating at the last line end that crosses maxSize."""
        while chunk:
            self.open()
            room = self.policy.max_size - self._size
            if len(chunk) <= room:
                self._append(chunk, stream)
                return
            # Cut at a line end so a file holds whole lines; only a line longer than maxSize is split.
            cut = chunk.rfind(b"\n", 0, max(room, 0)) + 1
            if cut == 0 and self._size == 0:
                cut = room
            if cut:
                self._append(chunk[:cut], stream)
                chunk = chunk[cut:]
            self.close()
            rotate(self.path, now=self.clock.now(), policy=self.policy)
            self.at_start = True

    def _append(self, chunk: bytes, stream: str) -> None:
        log, ts = self.open()
        starts = chunk.count(b"\n") - chunk.endswith(b"\n") + self.at_start
        self.at_start = chunk.endswith(b"\n")
        # The index first: a reader may then find a time for a line not written yet, never a line without one.
        ts.write(f"{clock_mod.rfc3339_micro(self.clock.now())} {stream}\n" * starts)
        ts.flush()
        log.write(chunk)
        log.flush()
        self._size += len(chunk)

    def close(self) -> None:
        for f in (self._log, self._ts):
            if f is not None:
                f.close()
        self._log = self._ts = None


class Lines:
    """One stream's output on its way to the log, a line at a time, as containerd's CRI logger takes each stream.

    Lines of stdout and stderr never mix in the log: a stream's unended line waits for its end (or MAX_LINE,
    or the stream's end). A CR LF line end is logged as LF: the CRI log format keeps no CR there."""

    def __init__(self, writer: Writer, stream: str) -> None:
        self.writer = writer
        self.stream = stream
        self._pending = b""

    def feed(self, chunk: bytes) -> None:
        data = self._pending + chunk if self._pending else chunk
        cut = data.rfind(b"\n") + 1
        if cut:
            self._write(data[:cut] if cut < len(data) else data)
            data = data[cut:]
        while len(data) >= MAX_LINE:
            # A "\r" waits with the rest: a "\n" after it makes it a line end.
            piece = MAX_LINE - 1 if data[MAX_LINE - 1] == 13 else MAX_LINE
            self._write(data[:piece])
            data = data[piece:]
        self._pending = data

    def flush(self) -> None:
        """The stream has ended: its unended last line goes to the log as it is."""
        if self._pending:
            data, self._pending = self._pending, b""
            self._write(data)

    def _write(self, data: bytes) -> None:
        if b"\r" in data:  # a one-byte search is a memchr: some 40x cheaper than looking for b"\r\n"
            data = data.replace(b"\r\n", b"\n")
        self.writer.write(data, stream=self.stream)


async def pump(reader: asyncio.StreamReader, *, path: str, clock: clock_mod.Clock,
               policy: Policy | None = None, live: containerio.Outputs | None = None,
               stderr: asyncio.StreamReader | None = None) -> None:
    """Copy a container's output (reader: its stdout or terminal; stderr, if apart) into its log until it ends.

    The log rotates per policy. Each chunk also goes, as it is read and tagged with its stream, to the attach
    sessions listening to the container (in `live`, the agent's by default), which never wait for them."""
    writer = Writer(path, clock=clock, policy=policy)
    output = (containerio.LIVE if live is None else live).publisher(os.path.dirname(path))
    errors: asyncio.Task[None] | None = None
    try:
        writer.open()  # every run has a log, even one that never writes
        if stderr is not None:
            errors = asyncio.get_running_loop().create_task(
                _copy(stderr, Lines(writer, containerio.STDERR), output), name="log-stderr")
        await _copy(reader, Lines(writer, containerio.STDOUT), output)
        if errors is not None:
            await errors
    finally:
        if errors is not None and not errors.done():
            errors.cancel()
            await asyncio.gather(errors, return_exceptions=True)
        output.close()
        writer.close()


async def _copy(reader: asyncio.StreamReader, lines: Lines, output: containerio.Output) -> None:
    """Copy one stream to the live output and the log until it ends (or the copy is cancelled)."""
    try:
        while chunk := await reader.read(CHUNK):
            output.publish(chunk, lines.stream)
            lines.feed(chunk)
    finally:
        lines.flush()
