"""Child processes started off the event loop (vfork in a worker thread) and watched through a pidfd."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import subprocess
import threading
from collections.abc import Mapping, Sequence
from typing import IO, Any

from pocketkube.base import threadns

log = logging.getLogger("pocketkube.node.spawn")

# A fork of a big process copies its page tables with the GIL held, stalling the whole event loop
# (API server, proxies) for a tenth of a second per child; Popen without a preexec_fn uses vfork,
# which copies nothing, and a worker thread keeps even that off the loop.
#
# PR_SET_PDEATHSIG fires when the *thread* that started a child ends, so children must be started by
# threads that live as long as the process: a pool of its own that nothing shuts down (the default
# executor goes away with each event loop). Four threads once made tests/node/test_spawn.py fail with EBADF
# in Popen's descriptor clean-up, very likely uvloop's double close that _for_transport now prevents; four
# gave no gain over two in pod_start runs since, so two it stays.
_POOL_SIZE = 2
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()

Stdio = int | IO[Any] | None


def _executor() -> concurrent.futures.ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(max_workers=_POOL_SIZE, thread_name_prefix="pk-spawn")
        return _pool


class _WritePipeProtocol(asyncio.streams.FlowControlMixin, asyncio.Protocol):
    """Flow control for a child's stdin, so StreamWriter.drain() and wait_closed() work."""

    def __init__(self) -> None:
        super().__init__()
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        if not self._closed.done():
            self._closed.set_result(None)

    def _get_close_waiter(self, stream: asyncio.StreamWriter) -> asyncio.Future[None]:
        return self._closed


class Process:
    """A running child: what callers use of asyncio.subprocess.Process (pid, returncode, wait, streams, signals)."""

    def __init__(self, popen: subprocess.Popen[bytes], *, loop: asyncio.AbstractEventLoop) -> None:
        self._popen = popen
        self._loop = loop
        self.pid = popen.pid
        self.stdin: asyncio.StreamWriter | None = None
        self.stdout: asyncio.StreamReader | None = None
        self.stderr: asyncio.StreamReader | None = None
        self._exited: asyncio.Future[int] = loop.create_future()
        self._pidfd = -1
        self._transports: list[asyncio.BaseTransport] = []

    @property
    def returncode(self) -> int | None:
        """None while it runs; the exit status, or -N when signal N ended it (set once the exit is seen)."""
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        """Wait for the child to exit (its zombie is reaped); its returncode."""
        return await asyncio.shield(self._exited)

    def send_signal(self, sig: int) -> None:
        """Signal the child, unless it has been reaped already (its pid may belong to another process by then)."""
        if self._popen.returncode is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    async def communicate(self, input: bytes | None = None) -> tuple[bytes | None, bytes | None]:  # noqa: A002
        """Feed input to stdin (then close it), read stdout and stderr to their ends, and wait for the exit."""
        async def feed() -> None:
            if self.stdin is None:
                return
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                if input:
                    self.stdin.write(input)
                    await self.stdin.drain()
            self.stdin.close()

        async def drain(stream: asyncio.StreamReader | None) -> bytes | None:
            return None if stream is None else await stream.read()

        _, out, err = await asyncio.gather(feed(), drain(self.stdout), drain(self.stderr))
        await self.wait()
        return out, err

    async def _connect(self) -> None:
        """Wrap the child's pipes in streams and start watching for its exit.

        A pipe handed to a transport is the transport's to close: Popen's reference to it is dropped, because
        closing the descriptor under a registered transport leaves uvloop watching a number the next
        descriptor reuses, and every later pipe or socket given that number then fails with EEXIST."""
        p, loop = self._popen, self._loop
        if p.stdin is not None:
            pipe, p.stdin = _for_transport(loop, p.stdin), None
            transport, protocol = await loop.connect_write_pipe(_WritePipeProtocol, pipe)
            self._transports.append(transport)
            self.stdin = asyncio.StreamWriter(transport, protocol, None, loop)
        if p.stdout is not None:
            pipe, p.stdout = _for_transport(loop, p.stdout), None
            self.stdout = await _reader(loop, pipe, self._transports)
        if p.stderr is not None:
            pipe, p.stderr = _for_transport(loop, p.stderr), None
            self.stderr = await _reader(loop, pipe, self._transports)
        self._watch()

    def _abandon(self) -> None:
        """Close the transports made so far (a start that failed or was cancelled half way)."""
        for transport in self._transports:
            transport.close()
        self._transports.clear()

    def _watch(self) -> None:
        try:
            self._pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # not Linux >= 5.3: one waiting thread per child instead
            threading.Thread(target=self._wait_thread, name=f"wait-{self.pid}", daemon=True).start()
            return
        self._loop.add_reader(self._pidfd, self._reap)
        self._reap()  # it may have exited already

    def _reap(self) -> None:
        code = self._popen.poll()
        if code is None:
            return
        if self._pidfd >= 0:
            self._loop.remove_reader(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1
        if not self._exited.done():
            self._exited.set_result(code)

    def _wait_thread(self) -> None:
        code = self._popen.wait()
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(self._set_exit, code)

    def _set_exit(self, code: int) -> None:
        if not self._exited.done():
            self._exited.set_result(code)

    def __repr__(self) -> str:
        return f"<spawn.Process {self.pid} returncode={self.returncode}>"


def _for_transport(loop: asyncio.AbstractEventLoop, pipe: IO[bytes]) -> IO[bytes]:
    """The file object to hand a pipe transport, so that the pipe's descriptor is closed exactly once.

    uvloop's pipe transports close the descriptor themselves (in libuv), then close the file object they were
    given as well: a second close(2) of a number that another thread (Popen in the spawn pool, a teardown's
    rmtree or `ip`) may have been given meanwhile. That thread's descriptor is gone: Popen failed with EBADF,
    and a number a live transport still claimed came back from pidfd_open ("used by transport"), failing pod
    starts. So under uvloop the transport gets a duplicate wrapped in a file object that never closes it;
    asyncio's transports close only the file object, which must then own the descriptor."""
    if not type(loop).__module__.startswith("uvloop"):
        return pipe
    fd = os.dup(pipe.fileno())
    mode = pipe.mode
    pipe.close()
    return open(fd, mode, buffering=0, closefd=False)


async def _reader(loop: asyncio.AbstractEventLoop, pipe: IO[bytes],
                  transports: list[asyncio.BaseTransport]) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(loop=loop)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader, loop=loop), pipe)
    except BaseException:
        pipe.close()  # no transport took it
        raise
    transports.append(transport)
    return reader


def _discard(fut: asyncio.Future[subprocess.Popen[bytes]]) -> None:
    """A child whose starter was cancelled: kill it and reap it in the background, so no zombie stays."""
    if fut.cancelled() or fut.exception() is not None:
        return
    popen = fut.result()
    with contextlib.suppress(OSError):
        popen.kill()
    for f in (popen.stdin, popen.stdout, popen.stderr):
        if f is not None:
            with contextlib.suppress(OSError):
                f.close()
    threading.Thread(target=popen.wait, name=f"discard-{popen.pid}", daemon=True).start()


async def start(argv: Sequence[str], *, stdin: Stdio, stdout: Stdio, stderr: Stdio,
                env: Mapping[str, str] | None = None, cwd: str | None = None, start_new_session: bool = False,
                pass_fds: Sequence[int] = (), netns: str | None = None, hostname: str | None = None) -> Process:
    """Start argv without stalling the event loop; stdio as for subprocess.Popen (PIPE gives streams); in the
    network namespace at path netns and a UTS namespace named hostname when given (base/threadns.py).

    Raises OSError (FileNotFoundError for a missing program) as Popen does. Cancelling it still lets the
    child start, then kills it."""
    loop = asyncio.get_running_loop()

    def plain() -> subprocess.Popen[bytes]:
        return subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, env=env, cwd=cwd,
                                start_new_session=start_new_session, pass_fds=tuple(pass_fds), bufsize=0)

    def popen() -> subprocess.Popen[bytes]:
        with threadns.entered(netns=netns, hostname=hostname):
            return plain()

    fut = loop.run_in_executor(_executor(), popen)
    try:
        p = await asyncio.shield(fut)
    except asyncio.CancelledError:
        fut.add_done_callback(_discard)
        raise
    proc = Process(p, loop=loop)
    try:
        await proc._connect()
    except BaseException:
        proc._abandon()
        _discard(fut)
        raise
    return proc


async def run(argv: Sequence[str], *, input: bytes | None = None, env: Mapping[str, str] | None = None,  # noqa: A002
              cwd: str | None = None, timeout: float | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run a one-shot command, capturing its output; killed past timeout (TimeoutError) or when cancelled."""
    proc = await start(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd)
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        raise
    assert proc.returncode is not None
    return subprocess.CompletedProcess(list(argv), proc.returncode, out or b"", err or b"")
