"""Container probes: the kubelet's startup/liveness/readiness state machine and the probe executors."""

from __future__ import annotations

import asyncio
import datetime
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import probes, runtime

EXEC = {"exec": {"command": ["true"]}}


@pytest.mark.parametrize(("raw", "want"), [
    (None, None),
    ({"periodSeconds": 5}, None),
    (EXEC, probes.Spec(kind="liveness", handler=EXEC)),
    ({**EXEC, "initialDelaySeconds": 3, "periodSeconds": 2, "timeoutSeconds": 4, "successThreshold": 2,
      "failureThreshold": 5, "terminationGracePeriodSeconds": 7},
     probes.Spec(kind="liveness", handler=EXEC, initial_delay=3, period=2, timeout=4, success_threshold=2,
                 failure_threshold=5, termination_grace=7)),
    ({**EXEC, "periodSeconds": 0, "timeoutSeconds": True}, probes.Spec(kind="liveness", handler=EXEC)),
])
def test_spec_of(raw: Any, want: probes.Spec | None) -> None:
    """A probe takes the API defaults (period 10, timeout 1, thresholds 1/3) for fields it leaves out."""
    c = {"name": "c", "livenessProbe": raw} if raw is not None else {"name": "c"}
    assert probes.spec_of(c, probes.LIVENESS) == want


@pytest.mark.parametrize(("kind", "success", "failure", "outcomes", "results", "kills"), [
    ("readiness", 1, 3, [True], ["success"], []),
    ("readiness", 1, 3, [True, False, False, False], ["success", "success", "success", "failure"], []),
    ("readiness", 2, 1, [True, True, False, True], ["failure", "success", "failure", "failure"], []),
    ("liveness", 1, 3, [False, False, True, False], ["success"] * 4, []),
    ("liveness", 1, 2, [False, False], ["success", "failure"], [1]),
    ("startup", 1, 1, [False], ["failure"], [0]),
    ("startup", 1, 3, [False, True], ["unknown", "success"], []),
])
def test_record(kind: str, success: int, failure: int, outcomes: list[bool], results: list[str],
                kills: list[int]) -> None:
    """A result commits only after its threshold of outcomes in a row; a committed liveness/startup failure kills."""
    spec = probes.Spec(kind=kind, handler=EXEC, success_threshold=success, failure_threshold=failure)
    st = probes.State(result=probes.INITIAL[kind])
    got, killed = [], []
    for i, ok in enumerate(outcomes):
        if probes.record(spec, st, ok):
            killed.append(i)
        got.append(st.result)
    assert (got, killed) == (results, kills)


def _pod(policy: str = "Always", **probe_fields: Any) -> dict[str, Any]:
    c = {"name": "c", "image": "busybox", **probe_fields}
    return {"metadata": {"uid": "u1", "name": "p", "namespace": "default"},
            "spec": {"containers": [c], "restartPolicy": policy}}


def _status(clock: clock_mod.Clock, container_id: str = "cid-0") -> runtime.PodStatus:
    ps = runtime.PodStatus(uid="u1", ips=["10.0.0.2"], network_ready=True, created_at=clock.now())
    ps.containers["c"] = runtime.ContainerStatus(name="c", image="busybox", container_id=container_id,
                                                 state=runtime.RUNNING, started_at=clock.now(), ready=True,
                                                 started=True)
    return ps


class Script:
    """A probe runner answering from a per-kind script of outcomes and recording each call."""

    def __init__(self, **answers: list[bool]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, c: Mapping[str, Any], spec: probes.Spec) -> probes.Outcome:
        self.calls.append(spec.kind)
        seq = self.answers.get(spec.kind) or [True]
        ok = seq.pop(0) if len(seq) > 1 else seq[0]
        return probes.Outcome(ok, "" if ok else "HTTP probe failed with statuscode: 500")


async def _rounds(pod: dict[str, Any], script: Script, steps: list[float]) -> list[tuple[bool, bool, list[str],
                                                                                     float | None]]:
    """(started, ready, event messages, retry_after) after each probe round, advancing the fake clock between."""
    clock = clock_mod.FakeClock()
    ps = _status(clock)
    prober = probes.Prober()
    out = []
    for step in steps:
        clock.advance(step)
        v = await prober.sync(pod, ps, script, now=clock.now())
        cs = ps.containers["c"]
        out.append((cs.started, cs.ready, [e.message for e in v.events + [runtime.Event("", "", k.message)
                                                                             for k in v.kills]], v.retry_after))
    return out


async def test_readiness_waits_for_initial_delay_then_follows_the_probe() -> None:
    """Readiness is False until the first success after initialDelaySeconds; a failure shows kube's Unhealthy text."""
    pod = _pod(readinessProbe={**EXEC, "initialDelaySeconds": 5, "periodSeconds": 2, "failureThreshold": 1})
    script = Script(readiness=[True, False, True])
    got = await _rounds(pod, script, [0, 5, 2, 2])
    assert got == [
        (True, False, [], 5.0),
        (True, True, [], 2.0),
        (True, False, ["Readiness probe failed: HTTP probe failed with statuscode: 500"], 2.0),
        (True, True, [], 2.0),
    ]


async def test_period_is_respected_between_rounds() -> None:
    """A sync between periods runs no probe and says how long until the next one."""
    pod = _pod(readinessProbe={**EXEC, "periodSeconds": 10})
    script = Script()
    got = await _rounds(pod, script, [0, 3, 7])
    assert script.calls == ["readiness", "readiness"]
    assert [g[3] for g in got] == [10.0, 7.0, 10.0]


async def test_startup_probe_gates_liveness_and_readiness() -> None:
    """Until the startup probe succeeds the container is not started and the other probes do not run."""
    pod = _pod(startupProbe={**EXEC, "periodSeconds": 1, "failureThreshold": 5},
               readinessProbe={**EXEC, "periodSeconds": 1}, livenessProbe={**EXEC, "periodSeconds": 1})
    script = Script(startup=[False, True])
    got = await _rounds(pod, script, [0, 1, 1])
    assert script.calls == ["startup", "startup", "liveness", "readiness", "liveness", "readiness"]
    assert [(g[0], g[1]) for g in got] == [(False, False), (True, True), (True, True)]
    assert got[0][2] == ["Startup probe failed: HTTP probe failed with statuscode: 500"]


@pytest.mark.parametrize(("policy", "message"), [
    ("Always", "Container c failed liveness probe, will be restarted"),
    ("Never", "Container c failed liveness probe"),
])
async def test_liveness_failure_kills_after_threshold(policy: str, message: str) -> None:
    """failureThreshold failures in a row kill the container once, with the probe's grace period; then it holds."""
    pod = _pod(policy, livenessProbe={**EXEC, "periodSeconds": 1, "failureThreshold": 2,
                                      "terminationGracePeriodSeconds": 4})
    clock = clock_mod.FakeClock()
    ps = _status(clock)
    prober = probes.Prober()
    script = Script(liveness=[False])
    kills = []
    for _ in range(4):
        v = await prober.sync(pod, ps, script, now=clock.now())
        kills += v.kills
        clock.advance(1)
    assert kills == [probes.Kill("c", message, 4)]
    assert script.calls == ["liveness", "liveness"]
    # A new run of the container (new id) starts over with fresh probe state.
    ps.containers["c"].container_id = "cid-1"
    v = await prober.sync(pod, ps, script, now=clock.now())
    assert script.calls == ["liveness"] * 3 and not v.kills


async def test_startup_failure_kills() -> None:
    """A startup probe failing failureThreshold times restarts the container like liveness does."""
    pod = _pod(startupProbe={**EXEC, "failureThreshold": 1})
    got = await _rounds(pod, Script(startup=[False]), [0])
    assert got[0][2] == ["Startup probe failed: HTTP probe failed with statuscode: 500",
                         "Container c failed startup probe, will be restarted"]


async def test_stopped_container_is_not_probed() -> None:
    """Only running containers are probed; their probe state is dropped when they stop."""
    pod = _pod(readinessProbe=EXEC)
    clock = clock_mod.FakeClock()
    ps = _status(clock)
    ps.containers["c"].state = runtime.TERMINATED
    script = Script()
    v = await probes.Prober().sync(pod, ps, script, now=clock.now())
    assert script.calls == [] and v.retry_after is None


# --- executors


@pytest.mark.parametrize(("port", "want"), [(8080, 8080), ("8080", 8080), ("http", 80), ("nope", None), (0, None),
                                            (True, None)])
def test_resolve_port(port: Any, want: int | None) -> None:
    """A probe port is a number or the name of a container port."""
    assert probes.resolve_port({"ports": [{"name": "http", "containerPort": 80}]}, port) == want


@pytest.fixture
async def http_server() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A tiny HTTP server: /code/<n> answers n; it records every request head."""
    seen: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        seen.append(head)
        path = head.split()[1].decode()
        code = int(path.rsplit("/", 1)[1]) if path.startswith("/code/") else 200
        if path == "/slow":
            await asyncio.sleep(3)
        writer.write(f"HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield port, seen
    server.close()


def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return int(port)


@pytest.mark.parametrize(("path", "ok", "message"), [
    ("/code/200", True, ""),
    ("/code/302", True, ""),
    ("/code/399", True, ""),
    ("/code/404", False, "HTTP probe failed with statuscode: 404"),
    ("/code/500", False, "HTTP probe failed with statuscode: 500"),
    ("code/204", True, ""),
])
async def test_http_probe_status(http_server: tuple[int, list[bytes]], path: str, ok: bool, message: str) -> None:
    """Statuses 200-399 succeed; others fail with the kubelet's message."""
    port, _ = http_server
    assert await probes.http_probe("127.0.0.1", port, path=path) == probes.Outcome(ok, message)


async def test_http_probe_sends_headers(http_server: tuple[int, list[bytes]]) -> None:
    """The request carries kube-probe's User-Agent and the probe's httpHeaders, which override defaults."""
    port, seen = http_server
    await probes.http_probe("127.0.0.1", port, path="/x",
                            headers=[{"name": "X-Custom", "value": "yes"}, {"name": "user-agent", "value": "mine"}])
    head = seen[0].decode()
    assert head.startswith("GET /x HTTP/1.1\r\n")
    assert "X-Custom: yes\r\n" in head and "user-agent: mine\r\n" in head and "kube-probe" not in head


async def test_http_probe_refused_and_timeout(http_server: tuple[int, list[bytes]]) -> None:
    """A closed port and a server slower than timeoutSeconds fail with Go's wording."""
    port, _ = http_server
    free = _free_port()
    assert await probes.http_probe("127.0.0.1", free, path="/healthz") == probes.Outcome(
        False, f'Get "http://127.0.0.1:{free}/healthz": dial tcp 127.0.0.1:{free}: connect: connection refused')
    assert await probes.http_probe("127.0.0.1", port, path="/slow", timeout=0.2) == probes.Outcome(
        False, f'Get "http://127.0.0.1:{port}/slow": context deadline exceeded (Client.Timeout exceeded while '
               "awaiting headers)")


async def test_execute_http_by_port_name(http_server: tuple[int, list[bytes]]) -> None:
    """execute() resolves a named port and connects to 127.0.0.1 when the probe sets no host."""
    port, _ = http_server
    c = {"name": "c", "ports": [{"name": "web", "containerPort": port}]}
    spec = probes.Spec(kind="readiness", handler={"httpGet": {"path": "/code/500", "port": "web"}})
    assert await probes.execute(c, spec, probes.Target()) == probes.Outcome(
        False, "HTTP probe failed with statuscode: 500")


async def test_tcp_probe(http_server: tuple[int, list[bytes]]) -> None:
    """A listening port succeeds; a closed one fails as Go's dialer reports it."""
    port, _ = http_server
    free = _free_port()
    assert await probes.tcp_probe("127.0.0.1", port) == probes.Outcome(True)
    assert await probes.tcp_probe("127.0.0.1", free) == probes.Outcome(
        False, f"dial tcp 127.0.0.1:{free}: connect: connection refused")


MISSING = ("OCI runtime exec failed: exec failed: unable to start container process: "
           'exec: "no-such-binary-xyz": executable file not found in $PATH: unknown')


@pytest.mark.parametrize(("command", "want"), [
    (["true"], probes.Outcome(True, "", exit_code=0)),
    (["sh", "-c", "echo $GREETING from $(pwd); echo err >&2; exit 3"],
     probes.Outcome(False, "hi from /tmp\nerr\n", exit_code=3)),
    (["sh", "-c", "kill -9 $$$$"], probes.Outcome(False, "", exit_code=137)),  # $$ is an escaped $
    (["sh", "-c", "sleep 5"], probes.Outcome(False, 'command "sh -c sleep 5" timed out')),
    (["no-such-binary-xyz"], probes.Outcome(False, MISSING, errored=True)),
])
async def test_exec_probe(command: list[str], want: probes.Outcome) -> None:
    """An exec probe runs with the container's env and working dir; exit 0 is success, else its output and code."""
    target = probes.Target(env={"GREETING": "hi", "PATH": "/usr/bin:/bin"}, working_dir="/tmp")
    assert await probes.exec_probe(command, target, timeout=0.5) == want


async def test_exec_probe_output_is_capped() -> None:
    """At most 10KiB of a probe's output is kept, and a chatty command still finishes."""
    out = await probes.exec_probe(["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; exit 1"],
                                  probes.Target(env={"PATH": "/usr/bin:/bin"}), timeout=2)
    assert (out.ok, out.exit_code, len(out.message)) == (False, 1, probes.MAX_OUTPUT)


async def test_execute_reports_a_command_that_cannot_start_as_errored() -> None:
    """A missing program is the CRI call's error, as the kubelet shows it after "probe errored"."""
    spec = probes.Spec(kind="liveness", handler={"exec": {"command": ["no-such-binary-xyz"]}})
    out = await probes.execute({}, spec, probes.Target(env={"PATH": "/usr/bin:/bin"}))
    assert out.errored and not out.ok
    assert out.message.startswith('rpc error: code = Unknown desc = failed to exec in container: failed to start exec "')
    assert out.message.endswith(f'": {MISSING}')


@pytest.fixture
def namespaced_process() -> Iterator[tuple[int, str]]:
    """A process in its own mount and network namespaces that mounted a tmpfs holding a marker file."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare")
    d = tempfile.mkdtemp(prefix="pk-probe-ns-")
    proc = subprocess.Popen(["unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c",
                             f"mount -t tmpfs none {d} && echo hi > {d}/marker && exec sleep 60"])
    try:
        yield proc.pid, d
    finally:
        proc.kill()
        proc.wait()
        os.rmdir(d)


async def test_exec_probe_runs_in_the_container_namespaces(namespaced_process: tuple[int, str]) -> None:
    """An exec probe joins the target's mount and network namespaces: it sees its mounts and shares its netns."""
    pid, d = namespaced_process
    target = probes.Target(env={"PATH": "/usr/bin:/bin"}, pid=pid)
    for _ in range(50):
        out = await probes.exec_probe(["cat", f"{d}/marker"], target, timeout=2)
        if out.ok:
            break
        await asyncio.sleep(0.05)
    assert out == probes.Outcome(True, "hi\n", exit_code=0)
    assert not os.path.exists(f"{d}/marker")  # the node itself does not see the container's mount
    out = await probes.exec_probe(["readlink", "/proc/self/ns/net"], target, timeout=2)
    assert out.message.strip() == os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")


async def test_exec_probe_joins_the_container_cgroup() -> None:
    """An exec probe's process is put in the container's cgroups, so the container's limits cover it."""
    base = "/sys/fs/cgroup/pids"
    if os.geteuid() != 0 or not os.access(base, os.W_OK):
        pytest.skip("needs root and the cgroup v1 pids controller")
    group = os.path.join(base, f"pk-probe-test-{os.getpid()}")
    os.makedirs(group, exist_ok=True)
    proc = subprocess.Popen(["sleep", "60"])
    try:
        with open(os.path.join(group, "cgroup.procs"), "w") as f:
            f.write(str(proc.pid))
        out = await probes.exec_probe(["cat", "/proc/self/cgroup"], probes.Target(env={"PATH": "/usr/bin:/bin"},
                                                                                   pid=proc.pid), timeout=2)
        assert f":pids:/pk-probe-test-{os.getpid()}\n" in out.message
    finally:
        proc.kill()
        proc.wait()
        os.rmdir(group)


async def test_exec_probe_on_a_gone_container_is_errored() -> None:
    """A probe of a container whose process is gone cannot run: an errored outcome, never a host command."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    out = await probes.exec_probe(["true"], probes.Target(pid=proc.pid), timeout=1)
    assert out.errored and not out.ok


@pytest.mark.parametrize(("seconds", "text"), [(1, "1s"), (59, "59s"), (60, "1m0s"), (90, "1m30s"),
                                               (3600, "1h0m0s"), (3723, "1h2m3s")])
def test_go_duration(seconds: int, text: str) -> None:
    """Timeouts print as Go prints a time.Duration."""
    assert probes.go_duration(seconds) == text


@pytest.mark.parametrize(("port", "text"), [("http", 'strconv.Atoi: parsing "http": invalid syntax'),
                                            (0, "invalid port number: 0"), ("70000", "invalid port number: 70000")])
def test_port_error(port: Any, text: str) -> None:
    """A port the kubelet cannot resolve errors as ResolveContainerPort words it."""
    assert probes.port_error(port) == text


async def test_unresolvable_port_is_errored() -> None:
    """An httpGet probe naming no container port errors (and so never kills the container)."""
    spec = probes.Spec(kind="liveness", handler={"httpGet": {"port": "web"}})
    assert await probes.execute({}, spec, probes.Target()) == probes.Outcome(
        False, 'strconv.Atoi: parsing "web": invalid syntax', errored=True)


async def test_errored_outcomes_are_reported_but_never_counted() -> None:
    """An errored liveness probe records "probe errored" events but never kills, however often it happens."""
    async def errored(c: Mapping[str, Any], spec: probes.Spec) -> probes.Outcome:
        return probes.Outcome(False, "boom", errored=True)

    clock = clock_mod.FakeClock()
    ps = _status(clock)
    prober = probes.Prober()
    pod = _pod(livenessProbe={**EXEC, "periodSeconds": 1, "failureThreshold": 1},
               readinessProbe={**EXEC, "periodSeconds": 1})
    for _ in range(3):
        v = await prober.sync(pod, ps, errored, now=clock.now())
        clock.advance(1)
        assert v.kills == [] and v.retry_after == 1.0
        assert [e.message for e in v.events] == ["Liveness probe errored and resulted in unknown state: boom",
                                                 "Readiness probe errored and resulted in unknown state: boom"]
    assert ps.containers["c"].ready is False


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[int, Any]]:
    """An in-process grpc.health.v1 server on a free port; yields the port and its servicer."""
    grpc = pytest.importorskip("grpc")
    health = pytest.importorskip("grpc_health.v1.health")
    from grpc_health.v1 import health_pb2_grpc
    server = grpc.aio.server()
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield port, servicer
    await server.stop(None)


async def test_grpc_probe_serving_status(health_server: tuple[int, Any]) -> None:
    """SERVING passes; NOT_SERVING fails with the kubelet's text; an unknown service fails with its status."""
    from grpc_health.v1 import health_pb2
    port, servicer = health_server
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    await servicer.set("db", health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await probes.grpc_probe("127.0.0.1", port) == probes.Outcome(True)
    assert await probes.grpc_probe("127.0.0.1", port, service="db") == probes.Outcome(
        False, 'service unhealthy (responded with "NOT_SERVING")')
    out = await probes.grpc_probe("127.0.0.1", port, service="nope")
    assert out.message.startswith("error: health rpc probe failed: rpc error: code = NotFound desc = ")


async def test_grpc_probe_without_a_health_service() -> None:
    """A gRPC server without grpc.health.v1.Health fails as not implementing the protocol."""
    grpc = pytest.importorskip("grpc")
    server = grpc.aio.server()
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        out = await probes.grpc_probe("127.0.0.1", port)
    finally:
        await server.stop(None)
    assert out.message.startswith("error: this server does not implement the grpc health protocol "
                                  "(grpc.health.v1.Health): ")


async def test_grpc_probe_unreachable_times_out_like_a_blocking_dial() -> None:
    """Nothing listening: the probe keeps dialing until timeoutSeconds and fails with the kubelet's timeout text."""
    pytest.importorskip("grpc")
    free = _free_port()
    execute_spec = probes.Spec(kind="liveness", handler={"grpc": {"port": free}}, timeout=1)
    assert await probes.execute({}, execute_spec, probes.Target()) == probes.Outcome(
        False, f'timeout: failed to connect service "127.0.0.1:{free}" within 1s: context deadline exceeded')


@pytest.mark.parametrize(("name", "go"), [("NOT_FOUND", "NotFound"), ("DEADLINE_EXCEEDED", "DeadlineExceeded"),
                                          ("CANCELLED", "Canceled"), ("UNAVAILABLE", "Unavailable")])
def test_go_code(name: str, go: str) -> None:
    """gRPC status codes print as grpc-go names them."""
    assert probes._go_code(name) == go


def test_due_uses_initial_delay() -> None:
    """The first probe is due initialDelaySeconds after the container started."""
    start = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    spec = probes.Spec(kind="readiness", handler=EXEC, initial_delay=4)
    st = probes.State(result=probes.FAILURE)
    assert not probes.due(spec, st, start, start + datetime.timedelta(seconds=3))
    assert probes.due(spec, st, start, start + datetime.timedelta(seconds=4))
