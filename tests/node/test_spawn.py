"""Tests of node/spawn.py: children started off the event loop, their streams, exits, signals and reaping."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
import uvloop

from pocketkube.base import threadns
from pocketkube.node import launcher, spawn


def reaped(pid: int) -> bool:
    """Whether pid is gone entirely (no zombie left): waitpid finds no such child."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return True
    return False


async def test_streams_and_exit_code():
    """stdout and stderr come as separate streams; wait() gives the exit status and reaps the child."""
    proc = await spawn.start(["sh", "-c", "echo out; echo err >&2; exit 3"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.returncode is None or proc.returncode == 3
    assert proc.stdout is not None and proc.stderr is not None
    assert (await proc.stdout.read(), await proc.stderr.read()) == (b"out\n", b"err\n")
    assert await proc.wait() == 3 and proc.returncode == 3
    assert reaped(proc.pid)


async def test_stderr_to_stdout_and_env_cwd(tmp_path):
    """stderr=STDOUT merges the streams; env and cwd reach the child."""
    proc = await spawn.start(["/bin/sh", "-c", "echo $X; pwd >&2"], stdin=subprocess.DEVNULL,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={"X": "hello"}, cwd=str(tmp_path))
    assert proc.stdout is not None and proc.stderr is None
    assert await proc.stdout.read() == f"hello\n{tmp_path}\n".encode()
    assert await proc.wait() == 0


async def test_signal_death_is_a_negative_returncode():
    """A child ended by a signal reads as -N, as asyncio's and Popen's returncode do."""
    proc = await spawn.start(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 5) == -signal.SIGTERM
    proc.kill()  # after the reap a signal goes nowhere (its pid may be another process's by now)
    assert reaped(proc.pid)


async def test_communicate_feeds_stdin():
    """communicate() writes the input, closes stdin and collects both outputs."""
    proc = await spawn.start(["sh", "-c", "cat; echo done >&2"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    assert await proc.communicate(b"x" * 200_000) == (b"x" * 200_000, b"done\n")
    assert proc.returncode == 0


async def test_stdin_writer_drains_and_closes():
    """stdin is a StreamWriter: write, drain, close; the child sees the end of its input."""
    proc = await spawn.start(["wc", "-c"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"abc")
    await proc.stdin.drain()
    proc.stdin.close()
    await proc.stdin.wait_closed()
    assert (await proc.stdout.read()).strip() == b"3"
    assert await proc.wait() == 0


async def test_missing_program_raises_like_popen():
    """A program that does not exist fails as Popen does: FileNotFoundError naming it."""
    with pytest.raises(FileNotFoundError) as e:
        await spawn.start(["no-such-program-x"], stdin=None, stdout=None, stderr=None)
    assert e.value.filename == "no-such-program-x"


async def test_pass_fds_and_new_session():
    """pass_fds keeps a descriptor open in the child; start_new_session makes it a session leader."""
    r, w = os.pipe()
    try:
        code = f"import os; os.write({w}, str(os.getsid(0)).encode())"
        proc = await spawn.start([sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(w,),
                                 start_new_session=True)
        os.close(w)
        w = -1
        assert await proc.wait() == 0
        assert int(os.read(r, 100)) == proc.pid
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


async def test_run_one_shot():
    """run() gives a CompletedProcess with the output and status."""
    cp = await spawn.run(["sh", "-c", "cat; echo e >&2; exit 2"], input=b"in")
    assert (cp.args, cp.returncode, cp.stdout, cp.stderr) == (["sh", "-c", "cat; echo e >&2; exit 2"], 2, b"in",
                                                              b"e\n")


async def test_run_timeout_kills_the_child():
    """Past its timeout run() kills the command and raises TimeoutError; nothing is left behind."""
    t = time.monotonic()
    with pytest.raises(TimeoutError):
        await spawn.run(["sleep", "30"], timeout=0.2)
    assert time.monotonic() - t < 5


async def test_cancelled_start_leaves_no_child(monkeypatch):
    """A start cancelled while the worker thread runs Popen kills and reaps that child once it exists."""
    discarded = []
    real = spawn._discard
    monkeypatch.setattr(spawn, "_discard", lambda fut: (discarded.append(fut.result()), real(fut)))
    task = asyncio.ensure_future(spawn.start(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                             stderr=subprocess.DEVNULL))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 5
    while not (discarded and discarded[0].returncode is not None) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert discarded and discarded[0].returncode == -signal.SIGKILL


async def test_without_pidfd_a_thread_waits(monkeypatch):
    """Where pidfd_open is missing (not Linux 5.3+), a waiting thread reports the exit instead."""
    monkeypatch.delattr(os, "pidfd_open")
    proc = await spawn.start(["sh", "-c", "exit 7"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    assert await asyncio.wait_for(proc.wait(), 5) == 7
    assert reaped(proc.pid)


async def test_many_concurrent_children():
    """Many children at once: each exit is seen once, with its own status."""
    procs = await asyncio.gather(*(spawn.start(["sh", "-c", f"exit {i}"], stdin=subprocess.DEVNULL,
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                                   for i in range(30)))
    assert await asyncio.wait_for(asyncio.gather(*(p.wait() for p in procs)), 10) == list(range(30))


@pytest.mark.parametrize(("have", "cmd", "want"), [
    ("/usr/bin/setpriv", ["sh"], ["/usr/bin/setpriv", "--pdeathsig", "KILL", "sh"]),
    (None, ["sh", "-c", "x"], ["sh", "-c", "x"]),
])
def test_die_with_agent_argv(monkeypatch, have, cmd, want):
    """Containers run under setpriv --pdeathsig KILL where setpriv exists, unwrapped (watchdog only) elsewhere."""
    monkeypatch.setattr(launcher, "_setpriv", lambda: have)
    assert launcher.die_with_agent(cmd) == want


async def test_container_spawn_sets_pdeathsig_and_missing_program():
    """A container outlives no agent (setpriv's parent-death signal) and a missing program fails as Popen's error."""
    script = ("import asyncio, subprocess, sys\n"
              "from pocketkube.node import launcher\n"
              "async def main():\n"
              "    p = await launcher.spawn(['sleep', '63.5'], env={'PATH': '/usr/bin:/bin'}, stdio=None, setsid=None)\n"
              "    print(p.pid, flush=True)\n"
              "    await asyncio.sleep(60)\n"
              "asyncio.run(main())\n")
    agent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    try:
        assert agent.stdout is not None
        pid = int(agent.stdout.readline())
        assert os.path.exists(f"/proc/{pid}")
        agent.kill()
        agent.wait()
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert not os.path.exists(f"/proc/{pid}")
    finally:
        agent.kill()
    with pytest.raises(FileNotFoundError):
        await launcher.spawn(["no-such-program-x"], env={"PATH": "/usr/bin:/bin"}, stdio=None, setsid=None)


async def test_loop_keeps_running_while_children_start():
    """Starting children never blocks the loop for long (the fork happens off it, and is a vfork)."""
    worst = 0.0
    stop = False

    async def ticker():
        nonlocal worst
        while not stop:
            t = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - t)

    tick = asyncio.ensure_future(ticker())
    for _ in range(10):
        await (await spawn.start(["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL)).wait()
    stop = True
    await tick
    assert worst < 0.5  # generous: the machine is shared; the fork path stalls far longer in a big process


def test_on_uvloop():
    """The same streams, stdin writer, signals and pidfd reaping work on uvloop, which pocketkube runs."""
    async def scenario() -> None:
        await test_streams_and_exit_code()
        await test_communicate_feeds_stdin()
        await test_stdin_writer_drains_and_closes()
        await test_signal_death_is_a_negative_returncode()
        await test_run_one_shot()
        await test_run_timeout_kills_the_child()
        await test_many_concurrent_children()
        await test_loop_keeps_running_while_children_start()
        with pytest.raises(FileNotFoundError):
            await spawn.start(["no-such-program-x"], stdin=None, stdout=None, stderr=None)

    uvloop.run(scenario())


def test_failed_start_leaves_no_stale_watch_on_uvloop(monkeypatch):
    """A start that fails after its stdout got a transport closes that transport properly: later pipes that reuse
    the descriptor numbers still connect (closing it under uvloop made them fail with EEXIST)."""
    real = spawn._reader
    calls = []

    async def second_fails(loop, pipe, transports):
        calls.append(pipe)
        if len(calls) == 2:
            pipe.close()
            raise RuntimeError("interrupted")
        return await real(loop, pipe, transports)

    monkeypatch.setattr(spawn, "_reader", second_fails)

    async def scenario() -> None:
        with pytest.raises(RuntimeError):
            await spawn.start(["sleep", "30"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
        await asyncio.sleep(0.1)  # let the transport finish closing
        monkeypatch.setattr(spawn, "_reader", real)
        for _ in range(4):
            proc = await spawn.start(["sh", "-c", "echo ok"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
            out, _ = await proc.communicate()
            assert out == b"ok\n"

    uvloop.run(scenario())


def test_pipes_are_closed_once_on_uvloop(monkeypatch):
    """On uvloop a child's pipes are closed once: libuv closes the descriptor, then nothing closes the number again
    (a second close took whatever another thread had been given meanwhile and failed pod starts)."""
    import gc
    import io

    late: list[int] = []
    real_open = io.open

    class Probe(io.FileIO):
        def close(self) -> None:
            if not self.closed:
                try:
                    os.fstat(self.fileno())
                except OSError:
                    late.append(self.fileno())  # its descriptor was closed already: this close hits another's
            super().close()

    def probe_open(file, mode="r", buffering=-1, *args, **kwargs):
        if isinstance(file, int) and buffering == 0 and not args and not kwargs:
            return Probe(file, mode.replace("b", ""))
        return real_open(file, mode, buffering, *args, **kwargs)

    monkeypatch.setattr(subprocess.io, "open", probe_open)

    async def scenario() -> None:
        for _ in range(3):
            proc = await spawn.start(["sh", "-c", "cat; echo out; echo err >&2"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = await proc.communicate(b"in\n")
            assert (out, err) == (b"in\nout\n", b"err\n")
        await asyncio.sleep(0.1)  # let the transports finish closing

    uvloop.run(scenario())
    gc.collect()  # the read transports close their pipes when collected
    assert late == []


@pytest.fixture
def netns():
    """A fresh network namespace (as `ip netns add` makes it), removed afterwards; skipped without root."""
    if os.geteuid() != 0 or subprocess.run(["ip", "-V"], capture_output=True).returncode != 0:
        pytest.skip("needs root and iproute2 to make a network namespace")
    name = f"pk-spawn-test-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/run/netns/{name}"
    subprocess.run(["ip", "netns", "del", name], check=False)


def _netns_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/ns/net")


async def test_child_starts_in_the_given_network_namespace(netns):
    """A child started with netns runs in that namespace; the next child without it runs in the agent's again."""
    inside = await spawn.start(["sleep", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, netns=netns)
    outside = await spawn.start(["sleep", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        want = f"net:[{os.stat(netns).st_ino}]"
        assert _netns_of(inside.pid) == want
        assert _netns_of(outside.pid) == _netns_of(os.getpid()) != want
    finally:
        for proc in (inside, outside):
            proc.kill()
            await proc.wait()


async def test_missing_network_namespace_fails_like_a_missing_program(tmp_path):
    """A netns path that does not exist raises OSError (the container's StartError), and starts nothing."""
    with pytest.raises(FileNotFoundError):
        await spawn.start(["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          netns=str(tmp_path / "gone"))


async def test_a_thread_that_cannot_go_home_fails_its_next_start(monkeypatch, netns):
    """A spawn thread that could not return to the agent's namespace never starts a child elsewhere: its next
    start fails until it is back."""
    real = threadns.setns
    home = threadns.own("net")
    broken = {"on": True}

    def setns(fd: int, nstype: int) -> None:
        if fd == home and broken["on"]:
            raise PermissionError(1, "setns: Operation not permitted")
        real(fd, nstype)

    monkeypatch.setattr(threadns, "setns", setns)
    monkeypatch.setattr(spawn, "_pool", None)
    monkeypatch.setattr(spawn, "_POOL_SIZE", 1)  # one thread, so the next start lands on the stranded one
    first = await spawn.start(["sleep", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, netns=netns)
    try:
        with pytest.raises(PermissionError):
            await spawn.start(["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        broken["on"] = False
        later = await spawn.start(["sleep", "5"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        assert _netns_of(later.pid) == _netns_of(os.getpid())
        later.kill()
        await later.wait()
    finally:
        first.kill()
        await first.wait()
        pool = spawn._pool
        if pool is not None:
            pool.shutdown(wait=False)


async def test_child_gets_a_uts_namespace_with_the_hostname():
    """A child started with hostname runs in a UTS namespace of its own with that name; the agent's stays."""
    if os.geteuid() != 0:
        pytest.skip("needs root to make a UTS namespace")
    before = os.uname().nodename
    proc = await spawn.start(["hostname"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, hostname="web-0")
    assert proc.stdout is not None
    assert await proc.stdout.read() == b"web-0\n"
    await proc.wait()
    plain = await spawn.start(["hostname"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    assert plain.stdout is not None
    assert (await plain.stdout.read()).decode().strip() == before == os.uname().nodename
    await plain.wait()


async def test_without_the_right_to_a_uts_namespace_the_host_name_stays(monkeypatch):
    """Where a UTS namespace is refused (not root), the child still starts, with the host's name."""
    def refuse(flags: int) -> None:
        raise PermissionError(1, "unshare: Operation not permitted")

    monkeypatch.setattr(threadns, "unshare", refuse)
    proc = await spawn.start(["hostname"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, hostname="web-0")
    assert proc.stdout is not None
    assert (await proc.stdout.read()).decode().strip() == os.uname().nodename
    await proc.wait()
