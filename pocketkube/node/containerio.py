"""A container's stdin (a pipe) or terminal (a pty) and its live output: what attach sessions connect to."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import operator
import os
from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.node import containerexec, remotecommand

READ_SIZE = 65536
# What the line discipline reads as end of input (VEOF): how a terminal's input is "closed" without a hangup.
EOF_CHAR = b"\x04"
# How far an attach session may fall behind the container's output: past it, its oldest unsent output is
# dropped, so a slow or stalled client costs bounded memory and never holds up the container or its log.
BACKLOG_LIMIT = 4 << 20
# A container's output streams, named as the CRI log format tags them: a non-tty container's stdout and stderr
# are separate pipes; a terminal's output is all stdout.
STDOUT, STDERR = "stdout", "stderr"
# Output as it came: which stream, what it said.
Part = tuple[str, bytes]


def wants_stdio(container: Mapping[str, Any]) -> bool:
    """Whether the container asks for a stdin or a terminal (otherwise its stdin is /dev/null)."""
    return bool(container.get("stdin") or container.get("tty"))


class Stdio:
    """The agent's end of one container run's stdin: a pipe's write end, or a pty's master (which also reads output).

    Made before the process starts (child_fds are what it gets as stdin/stdout/stderr), then kept for the
    run's life. With stdinOnce, the first attach session that brings stdin closes the container's stdin when
    it ends, as containerd does."""

    def __init__(self, *, tty: bool, stdin: bool, stdin_once: bool) -> None:
        self.tty = tty
        self.stdin = stdin
        self.stdin_once = stdin_once
        self._write_fd = -1
        self._child: list[int] = []
        self._stdin_closed = not stdin
        self._lock = asyncio.Lock()
        self._feed: asyncio.Task[None] | None = None
        if tty:
            master, slave = os.openpty()
            os.set_blocking(master, False)
            self._write_fd, self._child = master, [slave]
        else:
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._write_fd, self._child = w, [r]

    @classmethod
    def for_container(cls, container: Mapping[str, Any]) -> Stdio | None:
        if not wants_stdio(container):
            return None
        return cls(tty=bool(container.get("tty")), stdin=bool(container.get("stdin")),
                   stdin_once=bool(container.get("stdinOnce")))

    @property
    def child_stdin(self) -> int:
        return self._child[0] if self._child else -1

    def started(self) -> None:
        """The process has its copies: drop the agent's child ends, so the container sees EOF/hangup properly."""
        for fd in self._child:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._child = []

    @property
    def stdin_open(self) -> bool:
        return not self._stdin_closed and self._write_fd >= 0

    async def write(self, data: bytes) -> bool:
        """Write to the container's stdin; False once it is closed or the container has gone."""
        async with self._lock:
            view = memoryview(data)
            while view:
                if not self.stdin_open:
                    return False
                try:
                    view = view[os.write(self._write_fd, view):]
                except BlockingIOError:
                    await _writable(self._write_fd)
                except OSError:
                    return False
            return True

    async def close_stdin(self) -> None:
        """End the container's input: close the pipe, or send end-of-file through the terminal."""
        if self._stdin_closed:
            return
        if self.tty:
            await self.write(EOF_CHAR)
            self._stdin_closed = True
            return
        self._stdin_closed = True
        fd, self._write_fd = self._write_fd, -1
        with contextlib.suppress(OSError):
            os.close(fd)

    def resize(self, width: int, height: int) -> None:
        if self.tty and self._write_fd >= 0:
            containerexec.set_window(self._write_fd, width, height)

    def output(self) -> asyncio.StreamReader:
        """The terminal's output (the container's stdout and stderr), ending once its last holder closes it."""
        reader, self._feed = pty_reader(self._write_fd)
        return reader

    async def close(self) -> None:
        """The run is over: stop reading the terminal and release every descriptor still held."""
        if self._feed is not None:
            self._feed.cancel()
            await asyncio.gather(self._feed, return_exceptions=True)
        self.started()
        self._stdin_closed = True
        fd, self._write_fd = self._write_fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def attach(self, session: remotecommand.Session) -> None:
        """Relay an attach session's stdin and terminal resizes to the container until the session's input ends."""
        loop = asyncio.get_running_loop()
        resizes = loop.create_task(self._resizes(session)) if self.tty and session.opts.tty else None
        brings_stdin = session.opts.stdin and self.stdin_open
        try:
            while (data := await session.stdin.get()) is not None:
                if brings_stdin:
                    await self.write(data)
            if brings_stdin and self.stdin_once:
                await self.close_stdin()
        finally:
            if resizes is not None:
                resizes.cancel()
                await asyncio.gather(resizes, return_exceptions=True)

    async def _resizes(self, session: remotecommand.Session) -> None:
        while True:
            width, height = await session.resizes.get()
            self.resize(width, height)


def pty_reader(master: int) -> tuple[asyncio.StreamReader, asyncio.Task[None]]:
    """A stream of a pty master's output (ending when the terminal's last holder closes it), and the task feeding it."""
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()

    async def feed() -> None:
        try:
            while True:
                try:
                    data = os.read(master, READ_SIZE)
                except BlockingIOError:
                    await _readable(master)
                    continue
                except OSError:  # EIO: every slave end is closed
                    return
                if not data:
                    return
                reader.feed_data(data)
        finally:
            reader.feed_eof()

    return reader, loop.create_task(feed(), name="pty-output")


async def _readable(fd: int) -> None:
    await _ready(fd, write=False)


async def _writable(fd: int) -> None:
    await _ready(fd, write=True)


async def _ready(fd: int, *, write: bool) -> None:
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    (loop.add_writer if write else loop.add_reader)(fd, wake)
    try:
        await fut
    finally:
        (loop.remove_writer if write else loop.remove_reader)(fd)


class Listener:
    """One attach session's share of a container's live output: a bounded backlog, taken in order."""

    def __init__(self, output: Output, *, limit: int) -> None:
        self.output = output
        self.limit = limit
        self.dropped = 0
        self.ended = False
        self._chunks: collections.deque[Part] = collections.deque()
        self._size = 0
        self._waiter: asyncio.Future[None] | None = None

    def put(self, data: bytes, stream: str = STDOUT) -> None:
        """Queue output without ever waiting: a backlog past the limit loses its oldest chunks."""
        if self.ended:
            return
        self._chunks.append((stream, data))
        self._size += len(data)
        while self._size > self.limit and len(self._chunks) > 1:
            _, old = self._chunks.popleft()
            self._size -= len(old)
            self.dropped += len(old)
        self._wake()

    def end(self) -> None:
        """No more output comes: take() returns what is queued, then b""."""
        if not self.ended:
            self.ended = True
            self.output.unlisten(self)
            self._wake()

    async def take(self) -> bytes:
        """Everything queued so far, waiting for some if there is none; b"" once ended and drained."""
        await self._queued()
        return self.take_nowait()

    def take_nowait(self) -> bytes:
        """Everything queued so far, whichever stream said it (b"" if nothing is)."""
        data = b"".join(chunk for _, chunk in self._chunks)
        self._chunks.clear()
        self._size = 0
        return data

    async def take_parts(self) -> list[Part]:
        """Everything queued so far by stream, waiting for some if there is none; [] once ended and drained."""
        await self._queued()
        return self.take_parts_nowait()

    def take_parts_nowait(self) -> list[Part]:
        """Everything queued so far in order, each stream's consecutive output as one part ([] if nothing is)."""
        parts = [(stream, b"".join(chunk for _, chunk in run))
                 for stream, run in itertools.groupby(self._chunks, key=operator.itemgetter(0))]
        self._chunks.clear()
        self._size = 0
        return parts

    async def _queued(self) -> None:
        while not self._chunks and not self.ended:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def wakeup(self) -> asyncio.Future[None]:
        """Done once output is queued or the end comes (at once if either is): for who only needs to know.

        Cheaper than a task awaiting take() for each wait; not for use while a take() waits."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._chunks or self.ended:
            fut.set_result(None)
        else:
            self._waiter = fut
        return fut

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class Output:
    """A container run's live output as its log pump reads it, copied to each listener from when it listens on.

    Output before a listener came is not replayed (kubectl attach shows only what is new)."""

    def __init__(self, forget: Callable[[Output], None]) -> None:
        self.published = False
        self.closed = False
        self._listeners: set[Listener] = set()
        self._forget = forget

    def listen(self, *, limit: int = BACKLOG_LIMIT) -> Listener:
        listener = Listener(self, limit=limit)
        if self.closed:
            listener.end()
        else:
            self._listeners.add(listener)
        return listener

    @property
    def listeners(self) -> int:
        """How many listen now (attach sessions, log follows)."""
        return len(self._listeners)

    def unlisten(self, listener: Listener) -> None:
        self._listeners.discard(listener)
        if not self.published and not self._listeners:
            self._forget(self)  # listened to, but no pump ever came: nothing should keep it

    def publish(self, data: bytes, stream: str = STDOUT) -> None:
        for listener in self._listeners:
            listener.put(data, stream)

    def close(self) -> None:
        """The output has ended: every listener gets what is queued, then the end."""
        self.closed = True
        for listener in list(self._listeners):
            listener.end()
        self._forget(self)


class Outputs:
    """Live outputs by container directory (the one its run's log is in): one pump publishes, attaches listen.

    An attach may come before the new run's pump has started: it waits on the same Output the pump then takes."""

    def __init__(self) -> None:
        self._by_dir: dict[str, Output] = {}

    def _get(self, container_dir: str, *, fresh_if_published: bool = False) -> Output:
        key = os.path.normpath(container_dir)
        out = self._by_dir.get(key)
        if out is None or out.closed or (fresh_if_published and out.published):
            out = self._by_dir[key] = Output(lambda o: self._drop(key, o))
        return out

    def _drop(self, key: str, out: Output) -> None:
        if self._by_dir.get(key) is out:
            del self._by_dir[key]

    def publisher(self, container_dir: str) -> Output:
        """The Output a log pump publishes into (close() it when the output ends).

        A new run's pump replaces a previous run's that is still draining: attaches listen to the newest."""
        out = self._get(container_dir, fresh_if_published=True)
        out.published = True
        return out

    def listen(self, container_dir: str, *, limit: int = BACKLOG_LIMIT) -> Listener:
        return self._get(container_dir).listen(limit=limit)

    def __len__(self) -> int:
        return len(self._by_dir)


# The agent's live outputs: the log pump (logrotate) publishes each run's output here, attach (streaming) listens,
# and a log follow (kubeletserver) is woken by it.
LIVE = Outputs()
