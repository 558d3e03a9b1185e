"""The remote-command protocol of exec and attach: frames, options, Status messages, the in-container runner,
and the kubelet's /exec and /attach endpoints over websockets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from pocketkube.base import clock as clock_mod
from pocketkube.node import containerexec, containerio, logrotate, remotecommand, remotespdy, streaming


@pytest.mark.parametrize(("channel", "data", "text", "frame"), [
    (1, b"hello", False, b"\x01hello"),
    (0, b"", False, b"\x00"),
    (3, b"{}", False, b"\x03{}"),
    (1, b"hello", True, "1aGVsbG8="),
    (2, b"", True, "2"),
])
def test_frames_round_trip(channel: int, data: bytes, text: bool, frame: bytes | str) -> None:
    """A message is the channel (a byte, or an ASCII digit for base64 protocols) then the data."""
    assert remotecommand.encode_frame(channel, data, text=text) == frame
    assert remotecommand.decode_frame(frame) == (channel, data)


@pytest.mark.parametrize("message", [b"", "", "1not base64!"])
def test_decode_frame_ignores_garbage(message: bytes | str) -> None:
    """Empty or undecodable client messages carry nothing."""
    assert remotecommand.decode_frame(message) is None


@pytest.mark.parametrize(("data", "want"), [
    (b'{"Width":80,"Height":24}', (80, 24)),
    (b'{"Width":120}', (120, 0)),
    (b"not json", None),
    (b"[1,2]", None),
    (b'{"Width":-1,"Height":2}', None),
])
def test_parse_resize(data: bytes, want: tuple[int, int] | None) -> None:
    """Resize messages are TerminalSize JSON; malformed ones are dropped."""
    assert remotecommand.parse_resize(data) == want


@pytest.mark.parametrize(("query", "want"), [
    ({"output": "1"}, remotecommand.Options(stdout=True)),
    ({"input": "1", "output": "1", "error": "1"}, remotecommand.Options(stdin=True, stdout=True, stderr=True)),
    ({"output": "1", "error": "1", "tty": "1"}, remotecommand.Options(stdout=True, tty=True)),
    ({"output": "true"}, "you must specify at least 1 of stdin, stdout, stderr"),
    ({"tty": "1"}, "you must specify at least 1 of stdin, stdout, stderr"),
])
def test_parse_options(query: dict[str, str], want: Any) -> None:
    """Only "1" turns a stream on; a tty drops stderr; no stream at all is the kubelet's 400."""
    if isinstance(want, str):
        with pytest.raises(remotecommand.RequestError) as e:
            remotecommand.parse_options(query)
        assert (e.value.code, e.value.message) == (400, want)
    else:
        assert remotecommand.parse_options(query) == want


EXIT_3 = remotecommand.exit_status(["sh", "-c", "exit 3"], 3)


@pytest.mark.parametrize(("status", "protocol", "want"), [
    (remotecommand.success(), remotecommand.V5, b'{"metadata":{},"status":"Success"}'),
    (remotecommand.success(), remotecommand.V1, None),
    (EXIT_3, remotecommand.V4,
     b'{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing '
     b'command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode",'
     b'"message":"3"}]}}'),
    (EXIT_3, "v2.channel.k8s.io",
     b"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3"),
    (remotecommand.internal_error("boom"), remotecommand.V5,
     b'{"metadata":{},"status":"Failure","message":"Internal error occurred: boom","reason":"InternalError",'
     b'"details":{"causes":[{"message":"boom"}]},"code":500}'),
])
def test_encode_status(status: dict[str, Any], protocol: str, want: bytes | None) -> None:
    """v4+ send the Status as JSON; older protocols only a failure's message."""
    assert remotecommand.encode_status(status, protocol) == want


async def test_session_stdin_and_resizes() -> None:
    """Stdin data queues until the client half-closes it; resizes are parsed; other channels are ignored."""
    session = remotecommand.Session(remotecommand.Options(stdin=True, tty=True), _nowhere, protocol=remotecommand.V5)
    session.feed(remotecommand.STDIN, b"a")
    session.feed(remotecommand.STDIN, b"")
    session.feed(remotecommand.RESIZE, b'{"Width":10,"Height":5}')
    session.feed(remotecommand.STDOUT, b"ignored")
    session.close_channel(remotecommand.STDIN)
    session.feed(remotecommand.STDIN, b"late")
    assert [session.stdin.get_nowait() for _ in range(2)] == [b"a", None]
    assert session.stdin.empty() and session.resizes.get_nowait() == (10, 5)


async def _nowhere(channel: int, data: bytes) -> None:
    pass


@pytest.mark.parametrize(("offered", "want"), [
    (["v4.channel.k8s.io", "v3.channel.k8s.io", "v2.channel.k8s.io", "channel.k8s.io"], "v4.channel.k8s.io"),
    (["v5.channel.k8s.io", "v4.channel.k8s.io"], "v5.channel.k8s.io"),
    (["channel.k8s.io"], None),
    (["portforward.k8s.io"], None),
])
def test_spdy_negotiation(offered: list[str], want: str | None) -> None:
    """The client's first offered protocol the kubelet accepts over SPDY wins."""
    assert remotespdy.negotiate(offered) == want


@pytest.mark.parametrize(("opts", "protocol", "want"), [
    (remotecommand.Options(stdout=True), remotecommand.V4, {"error", "stdout"}),
    (remotecommand.Options(stdin=True, stdout=True, stderr=True), remotecommand.V4,
     {"error", "stdin", "stdout", "stderr"}),
    (remotecommand.Options(stdin=True, stdout=True, tty=True), remotecommand.V5, {"error", "stdin", "stdout", "resize"}),
    (remotecommand.Options(stdout=True, tty=True), "v2.channel.k8s.io", {"error", "stdout"}),
])
def test_spdy_expected_streams(opts: remotecommand.Options, protocol: str, want: set[str]) -> None:
    """The kubelet waits for the error stream, each requested stdio stream, and resize under a tty (v3+)."""
    assert remotespdy.expected_streams(opts, protocol) == want


@pytest.mark.parametrize(("buffer", "values", "rest"), [
    (b'{"Width":1,"Height":2}\n', [{"Width": 1, "Height": 2}], b""),
    (b'{"Width":1}\n{"Wid', [{"Width": 1}], b'{"Wid'),
    (b"", [], b""),
])
def test_split_json(buffer: bytes, values: list[Any], rest: bytes) -> None:
    """A resize stream is a sequence of JSON values; an incomplete one waits for more data."""
    assert remotespdy.split_json(buffer) == (values, rest)


# --- running commands in a container ------------------------------------------------------------------------

@pytest.mark.parametrize(("raw", "want"), [
    (b"A=1\0B=x=y\0\0", {"A": "1", "B": "x=y"}),
    (b"", {}),
    (b"NOEQUALS\0C=\0", {"C": ""}),
])
def test_parse_environ(raw: bytes, want: dict[str, str]) -> None:
    """/proc/PID/environ is NUL-separated NAME=value pairs."""
    assert containerexec.parse_environ(raw) == want


def test_container_env_prefers_what_the_runtime_knows() -> None:
    """The runtime's own record of a container's env wins over /proc/PID/environ (which nginx overwrites when it
    sets its process title); a tty session adds TERM=xterm and PATH is always there."""
    env = containerexec.container_env(os.getpid(), tty=True, known={"HOSTNAME": "web-0", "PATH": "/bin"})
    assert env == {"HOSTNAME": "web-0", "PATH": "/bin", "TERM": "xterm"}
    assert containerexec.container_env(os.getpid(), tty=False)["PATH"] == os.environ["PATH"]


MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw
33 25 0:29 /agent /sys/fs/cgroup/pids rw,nosuid - cgroup cgroup rw,pids
"""


@pytest.mark.parametrize(("theirs", "ours", "want"), [
    ("4:memory:/kubepods/podu/c\n3:cpu,cpuacct:/kubepods/podu/c\n0::/kubepods/podu/c\n",
     "4:memory:/\n3:cpu,cpuacct:/\n0::/\n",
     ["/sys/fs/cgroup/memory/kubepods/podu/c/cgroup.procs", "/sys/fs/cgroup/cpu,cpuacct/kubepods/podu/c/cgroup.procs",
      "/sys/fs/cgroup/unified/kubepods/podu/c/cgroup.procs"]),
    ("4:memory:/x\n", "4:memory:/x\n", []),
    ("5:pids:/agent/c\n", "5:pids:/agent\n", ["/sys/fs/cgroup/pids/c/cgroup.procs"]),
    ("6:blkio:/c\n", "6:blkio:/\n", []),
])
def test_cgroup_procs(theirs: str, ours: str, want: list[str]) -> None:
    """An exec joins each cgroup of the container the agent is not in, where that hierarchy is mounted."""
    assert containerexec.cgroup_procs(theirs, ours, MOUNTINFO) == want


@pytest.mark.parametrize(("code", "start_error", "want"), [
    (0, "", {"metadata": {}, "status": "Success"}),
    (3, "", EXIT_3),
])
def test_result_status(code: int, start_error: str, want: dict[str, Any]) -> None:
    """Exit 0 is Success; another code is NonZeroExitCode with the code as its cause."""
    assert containerexec.result_status(["sh", "-c", "exit 3"], code, start_error) == want


def test_result_status_for_a_start_failure() -> None:
    """A command that could not start is an InternalError worded as containerd words it."""
    status = containerexec.result_status(["nope"], 126, 'exec: "nope": executable file not found in $PATH')
    assert status["reason"] == "InternalError" and status["code"] == 500
    assert status["message"].startswith("Internal error occurred: error executing command in container: failed "
                                        'to exec in container: failed to start exec "')
    assert status["message"].endswith('OCI runtime exec failed: exec failed: unable to start container process: '
                                      'exec: "nope": executable file not found in $PATH: unknown')


def test_argv_enters_only_foreign_namespaces() -> None:
    """Without namespaces of its own the container's command runs directly; with them, through nsenter."""
    plain = containerexec.argv(["ls"], pid=7, flags=[], working_dir="", report_fd=9)
    assert plain[:4] == [sys.executable, "-I", "-S", "-c"] and plain[5:] == ["9", "/", "0", "0", "ls"]
    entered = containerexec.argv(["ls"], pid=7, flags=["--mount"], working_dir="/w", report_fd=9,
                                 procs=["/cg/cgroup.procs"])
    assert entered[:4] == ["nsenter", "--target=7", "--mount", "--"]
    assert entered[9:] == ["9", "/w", "0", "1", "/cg/cgroup.procs", "ls"]


@pytest.mark.parametrize(("command", "working_dir", "report", "code"), [
    (["sh", "-c", "exit 5"], "/", "", 5),
    (["no-such-command"], "/", 'exec: "no-such-command": executable file not found in $PATH', 126),
    (["/no/such"], "/", 'exec: "/no/such": stat /no/such: no such file or directory', 126),
    (["true"], "/no/such/dir", 'chdir to cwd ("/no/such/dir") set in config.json failed: no such file or directory',
     126),
])
def test_wrapper_reports_start_failures(command: list[str], working_dir: str, report: str, code: int) -> None:
    """The wrapper tells a command that cannot start (on its report pipe) from one that ran and failed."""
    r, w = os.pipe()
    argv = containerexec.argv(command, pid=1, flags=[], working_dir=working_dir, report_fd=w)
    proc = subprocess.run(argv, pass_fds=(w,), env={"PATH": os.environ["PATH"]}, check=False)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        assert (proc.returncode, f.read().decode()) == (code, report)


def test_wrapper_hides_the_report_pipe_from_the_command() -> None:
    """The command never inherits the report pipe (it is close-on-exec)."""
    r, w = os.pipe()
    argv = containerexec.argv(["sh", "-c", f"[ -e /proc/self/fd/{w} ] && exit 1 || exit 0"], pid=1, flags=[],
                              working_dir="/", report_fd=w)
    proc = subprocess.run(argv, pass_fds=(w,), env={"PATH": os.environ["PATH"]}, check=False)
    os.close(w)
    os.close(r)
    assert proc.returncode == 0


class Recorder:
    """A session's transport that keeps what was sent per channel."""

    def __init__(self) -> None:
        self.out: dict[int, bytes] = {}

    async def send(self, channel: int, data: bytes) -> None:
        self.out[channel] = self.out.get(channel, b"") + data


def _self_target() -> containerexec.Target:
    # This test process stands in for the container: same namespaces and cgroups, so no nsenter is needed.
    return containerexec.Target(pid=os.getpid(), working_dir="/", running=lambda: True)


async def test_run_relays_streams_and_exit_code() -> None:
    """stdin reaches the command until EOF; stdout and stderr come back apart; the exit code becomes the Status."""
    rec = Recorder()
    opts = remotecommand.Options(stdin=True, stdout=True, stderr=True,
                                 command=("sh", "-c", "cat; echo oops >&2; exit 2"))
    session = remotecommand.Session(opts, rec.send, protocol=remotecommand.V5)
    session.feed(remotecommand.STDIN, b"typed\n")
    session.end_stdin()
    status = await containerexec.run(session, _self_target(), clock=clock_mod.Clock())
    assert rec.out == {remotecommand.STDOUT: b"typed\n", remotecommand.STDERR: b"oops\n"}
    assert status == remotecommand.exit_status(opts.command, 2)


async def test_run_with_a_tty_resizes_the_terminal() -> None:
    """Under a tty the command has a terminal of its own, sized by resize messages, with TERM set."""
    rec = Recorder()
    opts = remotecommand.Options(stdin=True, stdout=True, tty=True,
                                 command=("sh", "-c", "read x; tty; stty size; echo $TERM"))
    session = remotecommand.Session(opts, rec.send, protocol=remotecommand.V5)
    session.feed(remotecommand.RESIZE, b'{"Width":101,"Height":33}')
    run = asyncio.get_running_loop().create_task(containerexec.run(session, _self_target(), clock=clock_mod.Clock()))
    await asyncio.sleep(0.3)
    session.feed(remotecommand.STDIN, b"go\n")
    status = await asyncio.wait_for(run, 10)
    lines = rec.out[remotecommand.STDOUT].decode().splitlines()
    assert status == remotecommand.success()
    assert lines[1].startswith("/dev/pts/") and lines[2:] == ["33 101", os.environ.get("TERM", "xterm")]


async def test_run_stops_when_the_client_leaves() -> None:
    """A command whose client went away is stopped rather than left running."""
    opts = remotecommand.Options(stdout=True, command=("sleep", "30"))
    session = remotecommand.Session(opts, Recorder().send, protocol=remotecommand.V5)
    asyncio.get_running_loop().call_later(0.3, session.client_gone)
    status = await asyncio.wait_for(containerexec.run(session, _self_target(), clock=clock_mod.Clock()), 10)
    assert status["reason"] == "NonZeroExitCode" and status["details"]["causes"][0]["message"] == "143"


# --- the kubelet endpoints ------------------------------------------------------------------------------

class FakeRuntime:
    """A process runtime whose one running container is this test process."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.running = True
        self.stdin: containerio.Stdio | None = None

    def stdio(self, uid: str, container: str) -> containerio.Stdio | None:
        return self.stdin

    def pid(self, uid: str, container: str) -> int | None:
        return os.getpid() if self.running and (uid, container) == ("u1", "c") else None

    def env(self, uid: str, container: str) -> dict[str, str] | None:
        return None  # read from /proc/PID/environ, like a runtime that does not know it

    def pod_dir(self, uid: str) -> str:
        return os.path.join(self.data_dir, uid)

    def writing_log(self, uid: str, container: str) -> bool:
        return self.running


POD = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"},
       "spec": {"containers": [{"name": "c"}, {"name": "idle"}]}}


async def _kubelet(tmp_path: Any) -> tuple[web.AppRunner, str, FakeRuntime]:
    fake = FakeRuntime(str(tmp_path))
    app = web.Application()
    streaming.Handlers(fake, lambda ns, name: POD if (ns, name) == ("default", "p") else None,  # type: ignore[arg-type]
                       clock=clock_mod.Clock()).add_routes(app)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}", fake


async def _collect(ws: aiohttp.ClientWebSocketResponse) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    async for msg in ws:
        if msg.type == aiohttp.WSMsgType.BINARY:
            out[msg.data[0]] = out.get(msg.data[0], b"") + msg.data[1:]
    return out


async def test_websocket_exec(tmp_path: Any) -> None:
    """v5 exec: stdin half-closed by the client, output per channel, the Status last on the error channel."""
    runner, base, _ = await _kubelet(tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            params = [("command", "sh"), ("command", "-c"), ("command", "cat; exit 3"), ("input", "1"),
                      ("output", "1"), ("error", "1")]
            async with s.ws_connect(f"{base}/exec/default/p/c", params=params,
                                    protocols=[remotecommand.V5]) as ws:
                assert ws.protocol == remotecommand.V5
                await ws.send_bytes(b"\x00piped")
                await ws.send_bytes(bytes([remotecommand.CLOSE, remotecommand.STDIN]))
                out = await _collect(ws)
        assert out[remotecommand.STDOUT] == b"piped"
        status = json.loads(out[remotecommand.ERROR])
        assert (status["reason"], status["details"]["causes"][0]["message"]) == ("NonZeroExitCode", "3")
    finally:
        await runner.cleanup()


async def test_base64_protocol_and_errors_before_upgrading(tmp_path: Any) -> None:
    """base64 protocols use text frames; unknown pods, stopped containers and no streams are refused in plain text."""
    runner, base, fake = await _kubelet(tmp_path)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{base}/exec/default/p/c", params=[("command", "echo"), ("command", "hi"),
                                                                        ("output", "1")],
                                    protocols=[remotecommand.V4_BASE64]) as ws:
                texts = [m.data async for m in ws if m.type == aiohttp.WSMsgType.TEXT]
            assert "1aGkK" in texts and '3eyJtZXRhZGF0YSI6e30sInN0YXR1cyI6IlN1Y2Nlc3MifQ==' in texts
            for path, params, want in [
                ("/exec/default/nope/c", {"output": "1"}, (404, "pod does not exist")),
                ("/exec/default/p/idle", {"output": "1"}, (500, 'container not found ("idle")')),
                ("/attach/default/p/c", {"tty": "1"}, (400, "you must specify at least 1 of stdin, stdout, stderr")),
            ]:
                async with s.post(base + path, params=params) as r:
                    assert (r.status, await r.text()) == want
    finally:
        await runner.cleanup()


async def test_attach_follows_new_output_until_the_container_ends(tmp_path: Any) -> None:
    """Attach relays what the container writes after it attached, and ends with Success when its output ends."""
    runner, base, fake = await _kubelet(tmp_path)
    log = tmp_path / "u1" / "c" / "0.log"
    log.parent.mkdir(parents=True)
    output = asyncio.StreamReader()
    pump = asyncio.get_running_loop().create_task(logrotate.pump(output, path=str(log), clock=clock_mod.Clock()))
    output.feed_data(b"before\n")
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{base}/attach/default/p/c", params={"output": "1", "error": "1"},
                                    protocols=[remotecommand.V5]) as ws:
                await asyncio.sleep(0.3)
                output.feed_data(b"after\n")
                output.feed_eof()
                fake.running = False
                out = await asyncio.wait_for(_collect(ws), 10)
        await pump
        assert out[remotecommand.STDOUT] == b"after\n"
        assert log.read_bytes() == b"before\nafter\n"
        assert json.loads(out[remotecommand.ERROR]) == remotecommand.success()
    finally:
        await runner.cleanup()


async def test_attach_relays_input_to_the_containers_stdin(tmp_path: Any) -> None:
    """Attach -i writes the client's input to the container's stdin; with stdinOnce the client's end closes it."""
    runner, base, fake = await _kubelet(tmp_path)
    fake.stdin = containerio.Stdio(tty=False, stdin=True, stdin_once=True)
    child = os.dup(fake.stdin.child_stdin)
    fake.stdin.started()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{base}/attach/default/p/c", params={"input": "1", "output": "1"},
                                    protocols=[remotecommand.V5]) as ws:
                await ws.send_bytes(b"\x00typed\n")
                await ws.send_bytes(bytes([remotecommand.CLOSE, remotecommand.STDIN]))
                got = await asyncio.wait_for(asyncio.to_thread(_read_all, child), 10)
                fake.running = False
                out = await asyncio.wait_for(_collect(ws), 10)
        assert got == b"typed\n"
        assert json.loads(out[remotecommand.ERROR]) == remotecommand.success()
        assert not fake.stdin.stdin_open
    finally:
        os.close(child)
        await fake.stdin.close()
        await runner.cleanup()


def _read_all(fd: int) -> bytes:
    out = b""
    while chunk := os.read(fd, 4096):
        out += chunk
    return out
