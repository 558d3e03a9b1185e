"""Container probes as the kubelet runs them: the startup/liveness/readiness state machine and the executors."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import signal
import ssl
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from pocketkube.node import envvars, runtime

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
    """What one probe run found: ok, and the output the kubelet puts in its Unhealthy event."""

    ok: bool
    message: str = ""


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
                    if not out.ok:
                        verdict.events.append(runtime.Event(runtime.WARNING, "Unhealthy",
                                                            f"{TITLES[kind]} probe failed: {out.message}", path))
                    if record(sp, st, out.ok):
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


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a container's probes go: its host, env, working dir and (for exec) its mount namespace."""

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
        return await exec_probe(list(h["exec"].get("command") or []), target, timeout=spec.timeout)
    if "httpGet" in h:
        g = h["httpGet"]
        port = resolve_port(container, g.get("port"))
        if port is None:
            return Outcome(False, f"unable to find port {g.get('port')!r} in the container's ports")
        return await http_probe(str(g.get("host") or target.host), port, path=str(g.get("path") or "/"),
                                scheme=str(g.get("scheme") or "HTTP"), headers=list(g.get("httpHeaders") or []),
                                timeout=spec.timeout)
    if "tcpSocket" in h:
        t = h["tcpSocket"]
        port = resolve_port(container, t.get("port"))
        if port is None:
            return Outcome(False, f"unable to find port {t.get('port')!r} in the container's ports")
        return await tcp_probe(str(t.get("host") or target.host), port, timeout=spec.timeout)
    if "grpc" in h:
        return grpc_probe()
    return Outcome(False, "probe has no handler")


async def exec_probe(command: list[str], target: Target, *, timeout: float) -> Outcome:
    """Run command with the container's env and working dir (in its mount namespace); exit 0 is success."""
    argv = [envvars.expand(a, target.env) for a in command]
    if not argv:
        return Outcome(False, "exec probe has an empty command")
    if target.nsenter and target.pid:
        argv = ["nsenter", "--mount", f"--target={target.pid}", "--", *argv]
    cwd = target.working_dir if target.working_dir and os.path.isdir(target.working_dir) else "/"
    try:
        proc = await asyncio.create_subprocess_exec(*argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                    stderr=subprocess.STDOUT, env=dict(target.env), cwd=cwd,
                                                    start_new_session=True)
    except FileNotFoundError:
        return Outcome(False, "OCI runtime exec failed: exec failed: unable to start container process: "
                              f'exec: "{command[0]}": executable file not found in $PATH: unknown')
    except OSError as e:
        return Outcome(False, f"OCI runtime exec failed: exec failed: unable to start container process: {e}")
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await proc.wait()
        return Outcome(False, f'command "{" ".join(command)}" timed out')
    text = out[:MAX_OUTPUT].decode("utf-8", errors="replace")
    return Outcome(proc.returncode == 0, text)


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


def grpc_probe() -> Outcome:
    """The gRPC health check; without grpcio installed it cannot run, so it fails with a clear message."""
    # TODO: speak grpc.health.v1.Health/Check (hand-encoded request/response) once grpcio is available.
    return Outcome(False, "gRPC probes are not supported by this node: the grpcio package is not installed")
