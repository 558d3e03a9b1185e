"""Container log files: a container's output copied into its log with a time index, rotated as the kubelet does."""

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
    """The index beside a container log: the time each of its lines began, one RFC 3339 time a line."""
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

    def write(self, chunk: bytes) -> None:
        """Append output, rotating at the last line end that crosses maxSize."""
        while chunk:
            self.open()
            room = self.policy.max_size - self._size
            if len(chunk) <= room:
                self._append(chunk)
                return
            # Cut at a line end so a file holds whole lines; only a line longer than maxSize is split.
            cut = chunk.rfind(b"\n", 0, max(room, 0)) + 1
            if cut == 0 and self._size == 0:
                cut = room
            if cut:
                self._append(chunk[:cut])
                chunk = chunk[cut:]
            self.close()
            rotate(self.path, now=self.clock.now(), policy=self.policy)
            self.at_start = True

    def _append(self, chunk: bytes) -> None:
        log, ts = self.open()
        starts = chunk.count(b"\n") - chunk.endswith(b"\n") + self.at_start
        self.at_start = chunk.endswith(b"\n")
        # The index first: a reader may then find a time for a line not written yet, never a line without one.
        ts.write((clock_mod.rfc3339_micro(self.clock.now()) + "\n") * starts)
        ts.flush()
        log.write(chunk)
        log.flush()
        self._size += len(chunk)

    def close(self) -> None:
        for f in (self._log, self._ts):
            if f is not None:
                f.close()
        self._log = self._ts = None


async def pump(reader: asyncio.StreamReader, *, path: str, clock: clock_mod.Clock,
               policy: Policy | None = None, live: containerio.Outputs | None = None) -> None:
    """Copy a container's output into its log unchanged until it ends, rotating per policy.

    Each chunk also goes, as it is read, to the attach sessions listening to the container (in `live`,
    the agent's by default), which never wait for them."""
    writer = Writer(path, clock=clock, policy=policy)
    output = (containerio.LIVE if live is None else live).publisher(os.path.dirname(path))
    try:
        writer.open()  # every run has a log, even one that never writes
        while True:
            chunk = await reader.read(CHUNK)
            if not chunk:
                return
            output.publish(chunk)
            writer.write(chunk)
    finally:
        output.close()
        writer.close()
