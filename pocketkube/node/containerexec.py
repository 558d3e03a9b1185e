"""Run a command inside a running process-runtime container (its namespaces, env, working dir) for one session."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
import secrets
import shutil
import signal
import struct
import subprocess
import sys
import termios
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.node import cgroups, remotecommand, spawn

EXEC_FAILED = "OCI runtime exec failed: exec failed: unable to start container process: "
START_FAILED_CODE = 126
READ_SIZE = 65536
# How long output may keep draining after the command exits (a background child can hold its pipes open).
DRAIN_SECONDS = 1.0
# Between SIGHUP/SIGTERM and SIGKILL when the client leaves or the container stops under a running command.
KILL_GRACE_SECONDS = 1.0
# How often a running command checks that its container still runs (containerd ends execs with their task).
WATCH_SECONDS = 0.5

# The namespaces an exec joins when the container's differ from the agent's, with nsenter's flag for each.
_NAMESPACES = (("mnt", "--mount"), ("uts", "--uts"), ("ipc", "--ipc"), ("net", "--net"), ("pid", "--pid"))


@dataclasses.dataclass(frozen=True)
class Target:
    """The container a command runs in: its main process and working dir, and a check that it still runs."""

    pid: int
    working_dir: str
    running: Callable[[], bool]
    # The environment the runtime gave the container, when it knows it (else read from /proc/PID/environ).
    env: Mapping[str, str] | None = None


def namespace_flags(pid: int, *, proc: str = "/proc") -> list[str]:
    """nsenter flags for each namespace of pid that is not the agent's own."""
    flags = []
    for ns, flag in _NAMESPACES:
        try:
            theirs = os.readlink(f"{proc}/{pid}/ns/{ns}")
            ours = os.readlink(f"{proc}/self/ns/{ns}")
        except OSError:
            continue
        if theirs != ours:
            flags.append(flag)
    return flags


def parse_environ(raw: bytes) -> dict[str, str]:
    """A /proc/PID/environ block (NUL-separated NAME=value) as a dict."""
    env = {}
    for item in raw.split(b"\0"):
        name, sep, value = item.partition(b"=")
        if sep and name:
            env[name.decode(errors="replace")] = value.decode(errors="replace")
    return env


def container_env(pid: int, *, tty: bool, known: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment the container's process started with (known: as the runtime gave it, which a program that
    rewrites its process title, as nginx does, leaves no trace of in /proc/PID/environ); a tty session also gets
    TERM=xterm, as containerd sets."""
    if known is not None:
        env = dict(known)
    else:
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = parse_environ(f.read())
        except OSError:
            env = {}
    env.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    if tty:
        env.setdefault("TERM", "xterm")
    return env


def _cgroup_lines(text: str) -> dict[str, str]:
    """/proc/PID/cgroup as {controllers field: path} ("" for the v2 hierarchy)."""
    out = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            out[parts[1]] = parts[2]
    return out


def cgroup_procs(theirs: str, ours: str, mountinfo: str) -> list[str]:
    """The cgroup.procs files of the container's cgroups that the agent is not in itself (an exec joins them)."""
    mounts = cgroups.parse_mountinfo(mountinfo)
    mine = _cgroup_lines(ours)
    out = []
    for ctrls, path in _cgroup_lines(theirs).items():
        if mine.get(ctrls) == path:
            continue
        names = set(ctrls.split(",")) if ctrls else set()
        for mount, root, fstype, opts in mounts:
            if fstype != ("cgroup" if ctrls else "cgroup2") or not names <= opts:
                continue
            if root != "/" and not (path == root or path.startswith(root.rstrip("/") + "/")):
                continue
            rel = os.path.relpath(path, root).removeprefix(".")
            out.append(os.path.join(mount, rel.lstrip("/"), "cgroup.procs"))
            break
    return out


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def target_cgroups(pid: int) -> list[str]:
    return cgroup_procs(_read(f"/proc/{pid}/cgroup"), _read("/proc/self/cgroup"), _read("/proc/self/mountinfo"))


# Run inside the container's namespaces, before the command: join its cgroups, enter the working dir, find the
# command. A failure is written to the report pipe and ends it with 126, so it is told apart from the command's
# own exit; the pipe is close-on-exec, so the command never sees it. With a tty it first starts a session whose
# controlling terminal is the pty on its stdin (here rather than in a preexec function, which uvloop runs too early).
# argv: REPORT_FD WORKING_DIR TTY(0|1) N CGROUP_PROCS_FILE*N COMMAND...
WRAPPER = """
import os, sys
a = sys.argv[1:]
fd, wd, tty, n = int(a[0]), a[1], a[2] == "1", int(a[3])
procs, argv = a[4:4 + n], a[4 + n:]
os.set_inheritable(fd, False)
if tty:
    import fcntl, termios
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
def fail(msg):
    os.write(fd, msg.encode())
    os._exit(CODE)
for p in procs:
    try:
        with open(p, "w") as f:
            f.write(str(os.getpid()))
    except OSError:
        pass
try:
    os.chdir(wd)
except OSError:
    fail('chdir to cwd ("%s") set in config.json failed: no such file or directory' % wd)
cmd = argv[0] if argv else ""
path = None
if "/" in cmd:
    if not os.path.exists(cmd):
        fail('exec: "%s": stat %s: no such file or directory' % (cmd, cmd))
    path = cmd
else:
    for d in os.environ.get("PATH", "").split(":") if cmd else ():
        c = os.path.join(d or ".", cmd)
        if os.path.isfile(c) and os.access(c, os.X_OK):
            path = c
            break
    if path is None:
        fail('exec: "%s": executable file not found in $PATH' % cmd)
try:
    os.execv(path, argv)
except OSError as e:
    fail('exec: "%s": %s' % (cmd, e.strerror.lower() if e.strerror else e))
""".replace("CODE", str(START_FAILED_CODE))


def argv(command: Sequence[str], *, pid: int, flags: Sequence[str], working_dir: str, report_fd: int,
         procs: Sequence[str] = (), tty: bool = False, nsenter: str = "nsenter",
         python: str = sys.executable) -> list[str]:
    """The full argv: nsenter into the container's namespaces (when it has its own), then the wrapper."""
    inner = [python, "-I", "-S", "-c", WRAPPER, str(report_fd), working_dir or "/", "1" if tty else "0",
             str(len(procs)), *procs, *command]
    if not flags:
        return inner
    return [nsenter, f"--target={pid}", *flags, "--", *inner]


def exec_error(reason: str) -> str:
    """The kubelet's message for a command that could not start, as containerd words it."""
    exec_id = secrets.token_hex(32)
    return (f'error executing command in container: failed to exec in container: failed to start exec "{exec_id}": '
            f"{EXEC_FAILED}{reason}: unknown")


def result_status(command: Sequence[str], code: int, start_error: str) -> dict[str, Any]:
    """The Status a finished command reports: success, a start failure, or its non-zero exit code."""
    if start_error:
        return remotecommand.internal_error(exec_error(start_error))
    if code == 0:
        return remotecommand.success()
    return remotecommand.exit_status(command, code)


def exit_code(returncode: int) -> int:
    """A signal death reads as 128+signal, as a shell and the container runtimes report it."""
    return 128 - returncode if returncode < 0 else returncode


def set_window(fd: int, width: int, height: int) -> None:
    """TIOCSWINSZ: the terminal's size in columns and rows."""
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", height, width, 0, 0))


async def run(session: remotecommand.Session, target: Target, *, clock: clock_mod.Clock) -> dict[str, Any]:
    """Run the session's command in the target container, relaying its streams; returns the Status to report."""
    opts = session.opts
    command = list(opts.command)
    env = await asyncio.to_thread(container_env, target.pid, tty=opts.tty, known=target.env)
    flags = await asyncio.to_thread(namespace_flags, target.pid)
    procs = await asyncio.to_thread(target_cgroups, target.pid)
    report_r, report_w = os.pipe()
    full = argv(command, pid=target.pid, flags=flags, working_dir=target.working_dir, report_fd=report_w,
                procs=procs, tty=opts.tty, nsenter=shutil.which("nsenter") or "nsenter")
    master = slave = -1
    try:
        if opts.tty:
            master, slave = os.openpty()
            proc = await spawn.start(full, stdin=slave, stdout=slave, stderr=slave, env=env, cwd="/",
                                     pass_fds=(report_w,))
        else:
            pipe, null = subprocess.PIPE, subprocess.DEVNULL
            proc = await spawn.start(
                full, stdin=pipe if opts.stdin else null, stdout=pipe if opts.stdout else null,
                stderr=pipe if opts.stderr else null, env=env, cwd="/", pass_fds=(report_w,),
                start_new_session=True)
    except OSError as e:
        for fd in (report_r, report_w, master, slave):
            if fd >= 0:
                os.close(fd)
        return remotecommand.internal_error(exec_error(f"exec: {e}"))
    os.close(report_w)
    if slave >= 0:
        os.close(slave)
    outputs, inputs = _pumps(session, proc, master)
    tasks = outputs + inputs
    try:
        code = await _wait(session, proc, target, clock=clock, tty=opts.tty)
        if outputs:  # what the command wrote goes out before the status does
            await asyncio.wait(outputs, timeout=DRAIN_SECONDS)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if master >= 0:
            os.close(master)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # nothing the command started outlives the session
        start_error = read_report(report_r)
    return result_status(command, code, start_error)


def read_report(fd: int) -> str:
    """What the exec wrapper reported on its report pipe (why the command could not start), and close it."""
    os.set_blocking(fd, False)
    try:
        return os.read(fd, 4096).decode(errors="replace").strip()
    except OSError:
        return ""
    finally:
        os.close(fd)


Tasks = list[asyncio.Task[None]]


def _pumps(session: remotecommand.Session, proc: spawn.Process, master: int) -> tuple[Tasks, Tasks]:
    """The tasks relaying the command's output to the session, and those feeding it input and resizes."""
    loop = asyncio.get_running_loop()
    outputs: Tasks = []
    inputs: Tasks = []
    if master >= 0:
        outputs.append(loop.create_task(_relay(_read_fd(master), session, remotecommand.STDOUT)))
        if session.opts.stdin:
            inputs.append(loop.create_task(_stdin_to_fd(session, master)))
        inputs.append(loop.create_task(_resizes(session, master)))
        return outputs, inputs
    if proc.stdout is not None:
        outputs.append(loop.create_task(_relay(_read_stream(proc.stdout), session, remotecommand.STDOUT)))
    if proc.stderr is not None:
        outputs.append(loop.create_task(_relay(_read_stream(proc.stderr), session, remotecommand.STDERR)))
    if proc.stdin is not None:
        inputs.append(loop.create_task(_stdin_to_pipe(session, proc.stdin)))
    return outputs, inputs


async def _wait(session: remotecommand.Session, proc: spawn.Process, target: Target, *,
                clock: clock_mod.Clock, tty: bool) -> int:
    """The command's exit code; it is stopped when the client goes away or the container stops running."""
    waiter = asyncio.get_running_loop().create_task(proc.wait())
    gone = asyncio.get_running_loop().create_task(session.closed.wait())
    try:
        while not waiter.done():
            await asyncio.wait({waiter, gone}, timeout=WATCH_SECONDS, return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                break
            if gone.done() or not target.running():
                await _stop(proc, waiter, hangup=tty, clock=clock)
                break
        return exit_code(await waiter)
    finally:
        gone.cancel()
        waiter.cancel()


async def _stop(proc: spawn.Process, waiter: asyncio.Task[int], *, hangup: bool,
                clock: clock_mod.Clock) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGHUP if hangup else signal.SIGTERM)
    sleeper = asyncio.get_running_loop().create_task(clock.sleep(KILL_GRACE_SECONDS))
    await asyncio.wait({waiter, sleeper}, return_when=asyncio.FIRST_COMPLETED)
    sleeper.cancel()
    if not waiter.done():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)


async def _relay(chunks: AsyncIterator[bytes], session: remotecommand.Session, channel: int) -> None:
    async for chunk in chunks:
        await session.send(channel, chunk)


async def _read_stream(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    while chunk := await reader.read(READ_SIZE):
        yield chunk


async def _read_fd(fd: int) -> AsyncIterator[bytes]:
    """A pty master's output until the terminal's last holder closes it (EIO)."""
    loop = asyncio.get_running_loop()
    os.set_blocking(fd, False)
    while True:
        try:
            data = os.read(fd, READ_SIZE)
        except BlockingIOError:
            await _ready(loop.add_reader, loop.remove_reader, fd)
            continue
        except OSError:
            return
        if not data:
            return
        yield data


async def _ready(add: Any, remove: Any, fd: int) -> None:
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake() -> None:
        if not fut.done():
            fut.set_result(None)

    add(fd, wake)
    try:
        await fut
    finally:
        remove(fd)


async def _stdin_to_fd(session: remotecommand.Session, fd: int) -> None:
    loop = asyncio.get_running_loop()
    while (data := await session.stdin.get()) is not None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view):]
            except BlockingIOError:
                await _ready(loop.add_writer, loop.remove_writer, fd)
            except OSError:
                return


async def _stdin_to_pipe(session: remotecommand.Session, stdin: asyncio.StreamWriter) -> None:
    try:
        while (data := await session.stdin.get()) is not None:
            stdin.write(data)
            await stdin.drain()
    except (ConnectionError, BrokenPipeError):
        return
    finally:
        stdin.close()


async def _resizes(session: remotecommand.Session, fd: int) -> None:
    while True:
        width, height = await session.resizes.get()
        set_window(fd, width, height)
