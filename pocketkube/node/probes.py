"""Container probes as the kubelet runs them: the startup/liveness/readiness state machine and the executors."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import secrets
import shutil
import signal
import ssl
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pocketkube.node import containerexec, envvars, runtime, spawn

STARTUP, LIVENESS, READINESS = "startup", "liveness", "readiness"
KINDS = (STARTUP, LIVENESS, READINESS)
FIELDS = {STARTUP: "startupProbe", LIVENESS: "livenessProbe", READINESS: "readinessProbe"}
TITLES = {STARTUP: "Startup", LIVENESS: "Liveness", READINESS: "Readiness"}
UNKNOWN, SUCCESS, FAILURE = "unknown", "success", "failure"
# What a container counts as before its first probe result (kubelet's worker initialValue).
INITIAL = {STARTUP: UNKNOWN, LIVENESS: SUCCESS, READINESS: FAILURE}
USER_AGENT = "kube-probe/1.32"
MAX_OUTPUT = 10 * 1024


@dataclasses.dataclass(frozen=True)
class Spec:
    """One probe of a container with the API defaults filled in."""

    kind: str
    handler: Mapping[str, Any]
    initial_delay: int = 0
    period: int = 10
    timeout: int = 1
    success_threshold: int = 1
    failure_threshold: int = 3
    termination_grace: int | None = None


def _int(raw: Any, default: int, minimum: int) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int):
        return default
    # The API server defaults a zero (unset) field; anything else below the minimum is clamped.
    return default if raw == 0 and default > 0 else max(minimum, raw)


def spec_of(container: Mapping[str, Any], kind: str) -> Spec | None:
    """The container's probe of this kind, or None when it has none (or no handler)."""
    raw = container.get(FIELDS[kind])
    if not isinstance(raw, Mapping):
        return None
    handler = {k: raw[k] for k in ("exec", "httpGet", "tcpSocket", "grpc") if isinstance(raw.get(k), Mapping)}
    if not handler:
        return None
    grace = raw.get("terminationGracePeriodSeconds")
    return Spec(kind=kind, handler=handler, initial_delay=_int(raw.get("initialDelaySeconds"), 0, 0),
                period=_int(raw.get("periodSeconds"), 10, 1), timeout=_int(raw.get("timeoutSeconds"), 1, 1),
                success_threshold=_int(raw.get("successThreshold"), 1, 1),
                failure_threshold=_int(raw.get("failureThreshold"), 3, 1),
                termination_grace=grace if isinstance(grace, int) and not isinstance(grace, bool) else None)


@dataclasses.dataclass
class State:
    """One probe worker's memory for one run of a container."""

    result: str
    container_id: str = ""
    last: str = UNKNOWN
    run: int = 0
    next_at: datetime.datetime | None = None
    on_hold: bool = False


def record(spec: Spec, state: State, ok: bool) -> bool:
    """Count one probe outcome; True when it commits a failure that must restart the container.

    A result is committed only after successThreshold / failureThreshold outcomes in a row; a
    committed liveness or startup failure puts the worker on hold until the container restarts."""
    res = SUCCESS if ok else FAILURE
    if state.last == res:
        state.run += 1
    else:
        state.last, state.run = res, 1
    if (not ok and state.run < spec.failure_threshold) or (ok and state.run < spec.success_threshold):
        return False
    state.result = res
    if not ok and spec.kind in (LIVENESS, STARTUP):
        state.on_hold, state.run = True, 0
        return True
    return False


def due(spec: Spec, state: State, started_at: datetime.datetime, now: datetime.datetime) -> bool:
    """Whether the probe should run at `now`: initialDelaySeconds after the start, then every periodSeconds."""
    if state.next_at is None:
        state.next_at = started_at + datetime.timedelta(seconds=spec.initial_delay)
    return now >= state.next_at


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What one probe run found: ok, the output the kubelet puts in its Unhealthy event, and an exec's exit code.

    errored means the probe could not run at all (the kubelet's probe error): it is reported but never
    counted, so it neither fails nor passes the container."""

    ok: bool
    message: str = ""
    exit_code: int | None = None
    errored: bool = False


@dataclasses.dataclass(frozen=True)
class Kill:
    """A container the probes want restarted, with the Killing message and grace period."""

    name: str
    message: str
    grace: int | None


@dataclasses.dataclass
class Verdict:
    """What one round of probing did: events to record, containers to kill, when to probe next."""

    events: list[runtime.Event] = dataclasses.field(default_factory=list)
    kills: list[Kill] = dataclasses.field(default_factory=list)
    retry_after: float | None = None


Runner = Callable[[Mapping[str, Any], Spec], Awaitable[Outcome]]


class Prober:
    """Probe workers of one runtime: runs due probes and sets each running container's started and ready."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str, str], State] = {}

    def forget(self, uid: str) -> None:
        """Drop every probe worker of a pod."""
        for key in [k for k in self._states if k[0] == uid]:
            del self._states[key]

    def _state(self, uid: str, name: str, kind: str, container_id: str) -> State:
        st = self._states.get((uid, name, kind))
        if st is None or st.container_id != container_id:
            st = State(result=INITIAL[kind], container_id=container_id)
            self._states[(uid, name, kind)] = st
        return st

    async def sync(self, pod: Mapping[str, Any], ps: runtime.PodStatus, run: Runner, *,
                   now: datetime.datetime) -> Verdict:
        """Run the probes due at `now` for the pod's running main containers and apply their results."""
        verdict = Verdict()
        wake: list[float] = []
        policy = (pod.get("spec") or {}).get("restartPolicy") or "Always"
        for c in (pod.get("spec") or {}).get("containers") or []:
            name = str(c.get("name") or "")
            cs = ps.containers.get(name)
            specs = {k: spec_of(c, k) for k in KINDS}
            if cs is None or cs.state != runtime.RUNNING or cs.started_at is None:
                for k in KINDS:
                    self._states.pop((ps.uid, name, k), None)
                continue
            for kind in KINDS:
                sp = specs[kind]
                if sp is None:
                    continue
                st = self._state(ps.uid, name, kind, cs.container_id)
                gated = kind != STARTUP and specs[STARTUP] is not None and \
                    self._state(ps.uid, name, STARTUP, cs.container_id).result != SUCCESS
                if st.on_hold or gated or (kind == STARTUP and st.result == SUCCESS):
                    continue
                if due(sp, st, cs.started_at, now):
                    out = await run(c, sp)
                    st.next_at = now + datetime.timedelta(seconds=sp.period)
                    path = f"spec.containers{{{name}}}"
                    if out.errored:
                        # The kubelet throws an errored result away: the container keeps its last result.
                        verdict.events.append(runtime.Event(
                            runtime.WARNING, "Unhealthy",
                            f"{TITLES[kind]} probe errored and resulted in unknown state: {out.message}", path))
                    elif not out.ok:
                        verdict.events.append(runtime.Event(runtime.WARNING, "Unhealthy",
                                                            f"{TITLES[kind]} probe failed: {out.message}", path))
                    if not out.errored and record(sp, st, out.ok):
                        message = f"Container {name} failed {kind} probe"
                        if policy != "Never":
                            message += ", will be restarted"
                        verdict.kills.append(Kill(name, message, sp.termination_grace))
                        continue
                if st.next_at is not None:
                    wake.append(max(0.0, (st.next_at - now).total_seconds()))
        self.apply(pod, ps)
        if wake:
            verdict.retry_after = min(wake)
        return verdict

    def apply(self, pod: Mapping[str, Any], ps: runtime.PodStatus) -> None:
        """Set started and ready of each running main container from its probe results so far."""
        for c in (pod.get("spec") or {}).get("containers") or []:
            name = str(c.get("name") or "")
            cs = ps.containers.get(name)
            if cs is None or cs.state != runtime.RUNNING:
                continue
            has_startup = spec_of(c, STARTUP) is not None
            cs.started = not has_startup or self._state(ps.uid, name, STARTUP, cs.container_id).result == SUCCESS
            cs.ready = cs.started and (spec_of(c, READINESS) is None or
                                       self._state(ps.uid, name, READINESS, cs.container_id).result == SUCCESS)


# --- executors -----------------------------------------------------------------------------------

# How long an exec probe's output may keep draining after it exits (a background child can hold its pipe open).
DRAIN_SECONDS = 0.5
GRPC_SERVING = 1
# containerd's default PATH for a container whose image and spec set none.
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a container's probes go: the pod IP, and for exec the container's main process, env and working dir.

    An exec probe joins the namespaces and cgroups of pid (read from /proc, as `kubectl exec` does); without a
    pid it runs on the node itself. nsenter is no longer read (the namespaces are), kept for old callers."""

    host: str = "127.0.0.1"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    working_dir: str = ""
    pid: int | None = None
    nsenter: bool = False


def resolve_port(container: Mapping[str, Any], port: Any) -> int | None:
    """A probe port given by number (or numeric string) or by the name of one of the container's ports."""
    if isinstance(port, int) and not isinstance(port, bool):
        return port if 0 < port < 65536 else None
    text = str(port or "")
    if text.isdigit():
        return int(text) if 0 < int(text) < 65536 else None
    for p in container.get("ports") or []:
        if p.get("name") == text and isinstance(p.get("containerPort"), int):
            return int(p["containerPort"])
    return None


def port_error(port: Any) -> str:
    """The kubelet's error for a probe port it cannot resolve (a name no container port has, or out of range)."""
    text = str(port if port is not None else "")
    if isinstance(port, int) or text.lstrip("-").isdigit():
        return f"invalid port number: {int(text)}"
    return f'strconv.Atoi: parsing {go_quote(text)}: invalid syntax'


def go_quote(text: str) -> str:
    """Go's %q for the plain strings that appear in probe messages."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def go_duration(seconds: float) -> str:
    """A whole number of seconds as Go prints a time.Duration: 1s, 1m0s, 1h2m3s."""
    total = int(seconds)
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _dial_error(e: OSError) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connect: connection refused"
    return f"connect: {(e.strerror or str(e)).lower()}"


async def execute(container: Mapping[str, Any], spec: Spec, target: Target) -> Outcome:
    """Run one probe handler against a container and say how it went, worded as the kubelet does."""
    h = spec.handler
    if "exec" in h:
        command = [str(a) for a in h["exec"].get("command") or []]
        out = await exec_probe(command, target, timeout=spec.timeout)
        if out.errored:
            # The runtime's ExecSync failed: the kubelet reports the CRI call's gRPC error.
            exec_id = secrets.token_hex(32)
            return dataclasses.replace(out, message=f"rpc error: code = Unknown desc = failed to exec in container: "
                                                    f"failed to start exec {go_quote(exec_id)}: {out.message}")
        return out
    if "httpGet" in h:
        g = h["httpGet"]
        port = resolve_port(container, g.get("port"))
        if port is None:
            return Outcome(False, port_error(g.get("port")), errored=True)
        return await http_probe(str(g.get("host") or target.host), port, path=str(g.get("path") or "/"),
                                scheme=str(g.get("scheme") or "HTTP"), headers=list(g.get("httpHeaders") or []),
                                timeout=spec.timeout)
    if "tcpSocket" in h:
        t = h["tcpSocket"]
        port = resolve_port(container, t.get("port"))
        if port is None:
            return Outcome(False, port_error(t.get("port")), errored=True)
        return await tcp_probe(str(t.get("host") or target.host), port, timeout=spec.timeout)
    if "grpc" in h:
        g = h["grpc"]
        port = g.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            return Outcome(False, port_error(port), errored=True)
        # A gRPC probe has no host field: it always goes to the pod IP.
        return await grpc_probe(target.host, port, service=str(g.get("service") or ""), timeout=spec.timeout)
    return Outcome(False, "probe has no handler", errored=True)


async def exec_probe(command: list[str], target: Target, *, timeout: float) -> Outcome:
    """Run command in the container (its namespaces, cgroups, env and working dir) as containerd's ExecSync does.

    Exit 0 is success; another exit fails with the command's output (stdout then stderr, at most 10KiB) and
    its exit code; past timeout it is killed and fails as timed out; a command that cannot start at all
    (no such program, container gone) is an errored outcome with the OCI runtime's message."""
    argv = [envvars.expand(a, target.env) for a in command]
    if not argv:
        return Outcome(False, f"{containerexec.EXEC_FAILED}exec: \"\": executable file not found in $PATH: unknown",
                       errored=True)
    pid = target.pid or 0
    if pid and not os.path.exists(f"/proc/{pid}"):
        return Outcome(False, "container is not running", errored=True)
    flags = await asyncio.to_thread(containerexec.namespace_flags, pid) if pid else []
    procs = await asyncio.to_thread(containerexec.target_cgroups, pid) if pid else []
    env = dict(target.env) if target.env or not pid else await asyncio.to_thread(
        containerexec.container_env, pid, tty=False)
    env.setdefault("PATH", DEFAULT_PATH)
    report_r, report_w = os.pipe()
    full = containerexec.argv(argv, pid=pid, flags=flags, working_dir=target.working_dir or "/", report_fd=report_w,
                              procs=procs, nsenter=shutil.which("nsenter") or "nsenter", python=sys.executable)
    try:
        proc = await spawn.start(full, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 env=env, cwd="/", pass_fds=(report_w,), start_new_session=True)
    except OSError as e:
        os.close(report_r)
        return Outcome(False, f"{containerexec.EXEC_FAILED}exec: {e}: unknown", errored=True)
    finally:
        os.close(report_w)
    assert proc.stdout is not None
    reader = asyncio.get_running_loop().create_task(_read_limited(proc.stdout, MAX_OUTPUT))
    try:
        code = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await proc.wait()
        reader.cancel()
        os.close(report_r)
        return Outcome(False, f"command {go_quote(' '.join(command))} timed out")
    done, _ = await asyncio.wait({reader}, timeout=DRAIN_SECONDS)
    if not done:
        reader.cancel()
    output = reader.result() if done and not reader.cancelled() and reader.exception() is None else b""
    start_error = containerexec.read_report(report_r)
    if start_error:
        return Outcome(False, f"{containerexec.EXEC_FAILED}{start_error}: unknown", errored=True)
    exit_code = containerexec.exit_code(code)
    return Outcome(exit_code == 0, output.decode("utf-8", errors="replace"), exit_code=exit_code)


async def _read_limited(stream: asyncio.StreamReader, limit: int) -> bytes:
    """Up to limit bytes of a stream, reading (and dropping) the rest so the writer never blocks."""
    kept = bytearray()
    while chunk := await stream.read(65536):
        if len(kept) < limit:
            kept += chunk[:limit - len(kept)]
    return bytes(kept)


async def http_probe(host: str, port: int, *, path: str = "/", scheme: str = "HTTP",
                     headers: list[Mapping[str, Any]] | None = None, timeout: float = 1.0) -> Outcome:
    """GET scheme://host:port/path (TLS unverified for HTTPS); statuses 200-399 are success."""
    if not path.startswith("/"):
        path = "/" + path
    scheme = scheme.lower()
    url = f"{scheme}://{_hostport(host, port)}{path}"
    send = {"Host": _hostport(host, port), "User-Agent": USER_AGENT, "Accept": "*/*"}
    for hd in headers or []:
        name = str(hd.get("name") or "")
        for k in [k for k in send if k.lower() == name.lower()]:
            del send[k]
        if name:
            send[name] = str(hd.get("value") or "")
    send["Connection"] = "close"
    request = f"GET {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in send.items()) + "\r\n"
    ctx: ssl.SSLContext | None = None
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE

    async def get() -> int:
        reader, writer = await asyncio.open_connection(host, port, ssl=ctx)
        try:
            writer.write(request.encode("latin-1"))
            await writer.drain()
            line = await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        parts = line.decode("latin-1").split()
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError("malformed HTTP response")
        return int(parts[1])

    try:
        code = await asyncio.wait_for(get(), timeout)
    except TimeoutError:
        return Outcome(False, f'Get "{url}": context deadline exceeded (Client.Timeout exceeded while awaiting '
                              "headers)")
    except OSError as e:
        return Outcome(False, f'Get "{url}": dial tcp {_hostport(host, port)}: {_dial_error(e)}')
    except ValueError as e:
        return Outcome(False, f'Get "{url}": {e}')
    if 200 <= code < 400:
        return Outcome(True)
    return Outcome(False, f"HTTP probe failed with statuscode: {code}")


async def tcp_probe(host: str, port: int, *, timeout: float = 1.0) -> Outcome:
    """Open a TCP connection to host:port; connecting is success."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return Outcome(False, f"dial tcp {_hostport(host, port)}: i/o timeout")
    except OSError as e:
        return Outcome(False, f"dial tcp {_hostport(host, port)}: {_dial_error(e)}")
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return Outcome(True)


def _grpc_modules() -> tuple[Any, Any, Any]:
    """grpc and the health-checking stubs, imported on first use (they are heavy and only gRPC probes need them)."""
    # The agent forks for every container and probe; gRPC's fork handlers only log noise for a client like this.
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    return grpc, health_pb2, health_pb2_grpc


def _go_code(name: str) -> str:
    """A gRPC status code as grpc-go prints it: DEADLINE_EXCEEDED -> DeadlineExceeded, CANCELLED -> Canceled."""
    return "Canceled" if name == "CANCELLED" else "".join(w.capitalize() for w in name.split("_"))


async def grpc_probe(host: str, port: int, *, service: str = "", timeout: float = 1.0) -> Outcome:
    """grpc.health.v1.Health/Check against host:port (plaintext); SERVING is success, worded as the kubelet does.

    As the kubelet's blocking dial, connecting keeps retrying until timeoutSeconds, which covers the call too."""
    try:
        grpc, health_pb2, health_pb2_grpc = _grpc_modules()
    except ImportError:
        return Outcome(False, "gRPC probes need the grpcio and grpcio-health-checking packages on this node",
                       errored=True)
    addr = _hostport(host, port)
    within = go_duration(timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    channel = grpc.aio.insecure_channel(addr, options=[("grpc.primary_user_agent", USER_AGENT),
                                                       ("grpc.enable_http_proxy", 0), ("grpc.enable_retries", 0)])
    try:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout)
        except TimeoutError:
            return Outcome(False, f"timeout: failed to connect service {go_quote(addr)} within {within}: "
                                  "context deadline exceeded")
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            resp = await stub.Check(health_pb2.HealthCheckRequest(service=service),
                                    timeout=max(0.001, deadline - loop.time()))
        except grpc.aio.AioRpcError as e:
            code = e.code()
            if code == grpc.StatusCode.UNIMPLEMENTED:
                return Outcome(False, "error: this server does not implement the grpc health protocol "
                                      f"(grpc.health.v1.Health): {e.details() or ''}")
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                return Outcome(False, f"timeout: health rpc did not complete within {within}")
            return Outcome(False, f"error: health rpc probe failed: rpc error: code = {_go_code(code.name)} "
                                  f"desc = {e.details() or ''}")
        if resp.status == GRPC_SERVING:
            return Outcome(True)
        try:
            name = health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
        except ValueError:
            name = str(resp.status)
        return Outcome(False, f"service unhealthy (responded with {go_quote(name)})")
    finally:
        await channel.close()
