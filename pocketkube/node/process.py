"""The process runtime: each container a local process group in its own mount namespace, volumes bind-mounted."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime
import logging
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.client import rest
from pocketkube.node import envvars, images, probes, runtime, volumes

log = logging.getLogger("pocketkube.node.process")

START_ERROR_CODE = 128
CONFIG_RETRY_SECONDS = 2.0
REFRESH_SECONDS = 60.0
LOG_DRAIN_SECONDS = 2.0
OCI_PREFIX = "failed to create containerd task: failed to create shim task: OCI runtime create failed: " \
             "runc create failed: unable to start container process: "
# Volume kinds the kubelet always mounts read-only.
READ_ONLY_KINDS = ("configMap", "secret", "downwardAPI", "projected")

# Mount points live on the host's filesystem (a mount namespace shares it): the ones the runtime had to
# create are removed once no container of this process mounts anything under them. Module-wide because
# every node of one agent shares the host.
_IN_USE: collections.Counter[str] = collections.Counter()
_MADE: set[str] = set()


def missing_top(path: str) -> str | None:
    """The outermost ancestor of path (or path itself) that does not exist yet, or None if path exists."""
    path = os.path.normpath(path)
    top = None
    while not os.path.lexists(path):
        top = path
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return top


def claim_mount_points(targets: list[str]) -> None:
    """Note targets as in use, remembering the directories the launcher is about to create for them."""
    for t in targets:
        top = missing_top(t)
        if top is not None:
            _MADE.add(top)
        _IN_USE[os.path.normpath(t)] += 1


def release_mount_points(targets: list[str]) -> None:
    """Forget targets; remove created mount points that nothing mounts any more (only empty ones)."""
    for t in targets:
        t = os.path.normpath(t)
        _IN_USE[t] -= 1
        if _IN_USE[t] <= 0:
            del _IN_USE[t]
    for top in list(_MADE):
        if any(t == top or t.startswith(top + os.sep) for t in _IN_USE):
            continue
        _MADE.discard(top)
        _remove_empty(top)


def _remove_empty(top: str) -> None:
    if os.path.isfile(top) and not os.path.islink(top):
        if os.path.getsize(top) == 0:
            with contextlib.suppress(OSError):
                os.unlink(top)
        return
    for root, dirs, files in os.walk(top, topdown=False):
        for f in files:
            p = os.path.join(root, f)
            if not os.path.islink(p) and os.path.getsize(p) == 0:
                with contextlib.suppress(OSError):
                    os.unlink(p)  # a file mount point made for a subPath
        for d in dirs:
            with contextlib.suppress(OSError):
                os.rmdir(os.path.join(root, d))
    with contextlib.suppress(OSError):
        os.rmdir(top)


def probe_mounts(unshare: str | None) -> str:
    """Why containers cannot get their own mount namespace with bind mounts here ("" when they can)."""
    if not unshare:
        return "the unshare command (util-linux) is not installed"
    with tempfile.TemporaryDirectory(prefix="pocketkube-probe-") as d:
        src, dst = os.path.join(d, "src"), os.path.join(d, "dst")
        os.makedirs(src)
        os.makedirs(dst)
        script = f"mount --bind {shlex.quote(src)} {shlex.quote(dst)}"
        try:
            cp = subprocess.run([unshare, "--mount", "--propagation", "private", "/bin/sh", "-c", script],
                                capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"unshare --mount failed: {e}"
        if cp.returncode != 0:
            return f"unshare --mount with a bind mount failed: {(cp.stderr or cp.stdout).strip()}"
    return ""


@dataclasses.dataclass(frozen=True)
class Mount:
    """One bind mount of a container: host source onto mountPath."""

    source: str
    target: str
    read_only: bool


def launcher(mounts: list[Mount], *, working_dir: str, error_file: str, started_file: str) -> str:
    """The shell that sets a container up (mounts, working dir, command lookup) and execs its argv ("$@").

    Anything failing before the exec is written to error_file and ends the launcher with 128, so a
    container never runs without its volumes; started_file marks that the exec happened."""
    q = shlex.quote
    lines = [f"fail() {{ printf '%s\\n' \"$1\" > {q(error_file)}; exit {START_ERROR_CODE}; }}"]
    for m in sorted(mounts, key=lambda m: m.target.count("/")):
        src, dst = q(m.source), q(m.target)
        lines.append(f"if [ -d {src} ]; then mkdir -p {dst}; "
                     f"else mkdir -p \"$(dirname {dst})\" && {{ [ -e {dst} ] || : > {dst}; }}; fi "
                     f"|| fail {q(f'error mounting {m.source!r} to rootfs at {m.target!r}: cannot create mount point')}")
        lines.append(f"mount --bind {src} {dst} "
                     f"|| fail {q(f'error mounting {m.source!r} to rootfs at {m.target!r}: bind mount failed')}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {dst} "
                         f"|| fail {q(f'error mounting {m.target!r} read-only: remount failed')}")
    if working_dir:
        msg = f'chdir to cwd ("{working_dir}") set in config.json failed: no such file or directory'
        lines.append(f"mkdir -p {q(working_dir)} && cd {q(working_dir)} || fail {q(OCI_PREFIX + msg)}")
    lines.append('command -v "$1" >/dev/null 2>&1 || fail "' + OCI_PREFIX.replace('"', '\\"')
                 + 'exec: \\"$1\\": executable file not found in \\$PATH: unknown"')
    lines.append(f": > {q(started_file)}")
    lines.append('exec "$@"')
    return "\n".join(lines) + "\n"


def ts_path(log_path: str) -> str:
    """The index beside a container log: the time each of its lines began, one RFC 3339 time a line."""
    return log_path.removesuffix(".log") + ".ts"


async def pump_log(reader: asyncio.StreamReader, *, path: str, clock: clock_mod.Clock) -> None:
    """Copy a container's output into its log unchanged, noting when each line began in the index beside it."""
    at_start = True
    with open(path, "ab") as logf, open(ts_path(path), "a", encoding="ascii") as tsf:
        while True:
            chunk = await reader.read(65536)
            if not chunk:
                return
            starts = chunk.count(b"\n") - chunk.endswith(b"\n") + at_start
            at_start = chunk.endswith(b"\n")
            # The index first: a reader may then find a time for a line not written yet, never a line without one.
            tsf.write((clock_mod.rfc3339_micro(clock.now()) + "\n") * starts)
            tsf.flush()
            logf.write(chunk)
            logf.flush()


@dataclasses.dataclass
class _Run:
    """One running container process and the task waiting for its exit."""

    proc: asyncio.subprocess.Process
    waiter: asyncio.Task[None]
    targets: list[str]
    probe_target: probes.Target = dataclasses.field(default_factory=probes.Target)


class ProcessRuntime:
    """Runs each container as a process group on this host; restarts per restartPolicy with back-off."""

    name = "pocketkube"
    version = "0.1.0"

    def __init__(self, client: rest.Client, *, data_dir: str, pod_cidr: str, host_ip: str,
                 allocatable: Mapping[str, str] | None = None, clock: clock_mod.Clock | None = None) -> None:
        self.client = client
        self.data_dir = data_dir
        self.host_ip = host_ip
        self.allocatable = dict(allocatable or {})
        self.clock = clock or clock_mod.Clock()
        self.ips = runtime.IPAllocator(pod_cidr)
        self.unshare = shutil.which("unshare")
        self._mount_problem: str | None = None
        self._pods: dict[str, runtime.PodStatus] = {}
        self._runs: dict[tuple[str, str], _Run] = {}
        self._notify: Callable[[str], None] | None = None
        self.prober = probes.Prober()

    def set_notify(self, notify: Callable[[str], None]) -> None:
        self._notify = notify

    def pod_status(self, uid: str) -> runtime.PodStatus | None:
        return self._pods.get(uid)

    def pod_dir(self, uid: str) -> str:
        """DATA_DIR/pods/<uid>: the pod's volumes and container logs."""
        return os.path.join(self.data_dir, "pods", uid)

    def log_path(self, uid: str, container: str, restart: int) -> str:
        """Where one run of a container writes its stdout and stderr."""
        return os.path.join(self.pod_dir(uid), container, f"{restart}.log")

    def writing_log(self, uid: str, container: str) -> bool:
        """Whether the container's current run may still add to its log (it runs, or its output still drains)."""
        return (uid, container) in self._runs

    def pid(self, uid: str, container: str) -> int | None:
        """The process id of a running container, if it runs."""
        run = self._runs.get((uid, container))
        return run.proc.pid if run is not None and run.proc.returncode is None else None

    # --- the Runtime protocol

    async def sync_pod(self, pod: Mapping[str, Any]) -> runtime.SyncResult:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        uid = str(meta.get("uid") or "")
        now = self.clock.now()
        result = runtime.SyncResult()
        ps = self._pods.get(uid)
        if ps is None:
            ips = [self.host_ip] if spec.get("hostNetwork") else [self.ips.allocate()]
            ps = runtime.PodStatus(uid=uid, ips=ips, network_ready=True, created_at=now)
            self._pods[uid] = ps
        if not ps.network_ready:
            return result
        try:
            mounts = await volumes.materialise(self.client, pod, data_dir=self.data_dir,
                                               allocatable=self.allocatable, now=now)
        except volumes.VolumeError as e:
            result.events.append(runtime.Event(runtime.WARNING, "FailedMount", str(e)))
            result.retry_after = CONFIG_RETRY_SECONDS
            return result
        wake: list[float] = [REFRESH_SECONDS] if volumes.has_refreshable(pod) else []
        policy = spec.get("restartPolicy") or "Always"
        for c in spec.get("initContainers") or []:
            sidecar = runtime.is_sidecar(c)
            cs = await self._step(pod, ps, c, init=True, policy="Always" if sidecar else
                                  ("Never" if policy == "Never" else "OnFailure"),
                                  mounts=mounts, now=now, result=result, wake=wake)
            if sidecar:
                if not cs.started:
                    break
                continue
            if cs.state != runtime.TERMINATED or cs.termination is None or cs.termination.exit_code != 0:
                _wake(result, wake)
                return result  # an unfinished init container holds the rest back
        else:
            for c in spec.get("containers") or []:
                await self._step(pod, ps, c, init=False, policy=policy, mounts=mounts, now=now, result=result,
                                 wake=wake)
            killed = await self._probe(pod, ps, now=now, result=result, wake=wake)
            for c in spec.get("containers") or []:
                if c.get("name") in killed:  # restart (or settle) what a failed probe killed, as for an exit
                    await self._step(pod, ps, c, init=False, policy=policy, mounts=mounts, now=now, result=result,
                                     wake=wake)
            self.prober.apply(pod, ps)
            if ps.containers and all(cs.state == runtime.TERMINATED for cs in ps.containers.values()):
                # Every main container is done for good: stop the sidecars and tear the sandbox down.
                await self._stop_all(pod, ps, grace=0, containers=False)
                ps.network_ready = False
                wake.clear()
        _wake(result, wake)
        return result

    async def kill_pod(self, pod: Mapping[str, Any], *, grace_seconds: int) -> list[runtime.Event]:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        ps = self._pods.get(uid)
        if ps is None:
            return []
        events = await self._stop_all(pod, ps, grace=grace_seconds, containers=True)
        for statuses in (ps.containers, ps.init_containers):
            for cs in statuses.values():
                if cs.state == runtime.WAITING:
                    # A container that never ran again stays at its last exit, or counts as not run.
                    term = cs.last_termination
                    cs.termination = term or runtime.Termination(
                        exit_code=0, reason="ContainerStatusUnknown", finished_at=self.clock.now(),
                        message="The container could not be located when the pod was terminated")
                    if term is not None:
                        cs.last_termination = None
                    cs.state = runtime.TERMINATED
        ps.network_ready = False
        return events

    async def remove_pod(self, uid: str) -> None:
        for (u, _), run in list(self._runs.items()):
            if u == uid:
                await self._stop(run, grace=0)
        self.prober.forget(uid)
        ps = self._pods.pop(uid, None)
        if ps is not None:
            for ip in ps.ips:
                self.ips.release(ip)
        await asyncio.to_thread(shutil.rmtree, self.pod_dir(uid), True)

    async def close(self) -> None:
        # Container processes live in their own sessions: without this they would outlive the agent.
        await asyncio.gather(*(self._stop(run, grace=2) for run in list(self._runs.values())),
                             return_exceptions=True)
        self._runs.clear()

    # --- containers

    async def _step(self, pod: Mapping[str, Any], ps: runtime.PodStatus, c: Mapping[str, Any], *, init: bool,
                    policy: str, mounts: dict[str, str], now: datetime.datetime, result: runtime.SyncResult,
                    wake: list[float]) -> runtime.ContainerStatus:
        """Move one container along: first start, restart per policy after back-off, retry a failed start."""
        name = str(c.get("name") or "")
        statuses = ps.init_containers if init else ps.containers
        cs = statuses.get(name)
        if cs is None:
            cs = runtime.ContainerStatus(name=name, image=runtime.normalize_image(str(c.get("image") or "")),
                                         image_id=runtime.image_id(str(c.get("image") or "")))
            statuses[name] = cs
            await self._spawn(pod, ps, c, cs, init=init, mounts=mounts, now=now, result=result)
        elif cs.state == runtime.TERMINATED and cs.termination is not None:
            term = cs.termination
            if not (policy == "Always" or (policy == "OnFailure" and term.exit_code != 0)):
                return cs
            ran = (term.finished_at - term.started_at).total_seconds() if term.started_at else 0.0
            if ran >= runtime.BACKOFF_RESET:
                cs.backoff = 0.0
            cs.last_termination, cs.termination = term, None
            if cs.backoff > 0:
                cs.backoff_until = term.finished_at + datetime.timedelta(seconds=cs.backoff)
                cs.state, cs.reason = runtime.WAITING, "CrashLoopBackOff"
                cs.message = (f"back-off {runtime.go_duration(cs.backoff)} restarting failed container={name} "
                              f"pod={runtime.pod_ref(pod)}")
                result.events.append(runtime.Event(
                    runtime.WARNING, "BackOff", f"Back-off restarting failed container {name} in pod "
                    f"{runtime.pod_ref(pod)}", _field_path(init, name)))
            else:
                cs.state, cs.backoff_until = runtime.WAITING, now
            cs.backoff = runtime.BACKOFF_INITIAL if cs.backoff == 0 else min(cs.backoff * 2, runtime.BACKOFF_MAX)
        if cs.state == runtime.WAITING and cs.backoff_until is not None:
            if now < cs.backoff_until:
                wake.append((cs.backoff_until - now).total_seconds())
                return cs
            await self._spawn(pod, ps, c, cs, init=init, mounts=mounts, now=now, result=result)
        if cs.state == runtime.WAITING and cs.backoff_until is not None:
            wake.append(max(0.0, (cs.backoff_until - now).total_seconds()))
        return cs

    def _wait(self, cs: runtime.ContainerStatus, reason: str, message: str, *, seconds: float,
              now: datetime.datetime) -> None:
        cs.state, cs.reason, cs.message = runtime.WAITING, reason, message
        cs.ready = cs.started = False
        cs.backoff_until = now + datetime.timedelta(seconds=seconds)

    async def _spawn(self, pod: Mapping[str, Any], ps: runtime.PodStatus, c: Mapping[str, Any],
                     cs: runtime.ContainerStatus, *, init: bool, mounts: dict[str, str], now: datetime.datetime,
                     result: runtime.SyncResult) -> None:
        """Start one run of a container, or leave it waiting with the kubelet's reason when it cannot start."""
        name, image = cs.name, str(c.get("image") or "")
        path = _field_path(init, name)
        res = images.resolve(c)
        if res.error:
            pulls = cs.reason in ("ErrImagePull", "ImagePullBackOff")
            result.events.append(runtime.Event(runtime.NORMAL, "Pulling", f'Pulling image "{image}"', path))
            result.events.append(runtime.Event(runtime.WARNING, "Failed",
                                               f'Failed to pull image "{image}": {res.error}', path))
            result.events.append(runtime.Event(runtime.WARNING, "Failed", "Error: ErrImagePull", path))
            if pulls:
                result.events.append(runtime.Event(runtime.NORMAL, "BackOff", f'Back-off pulling image "{image}"',
                                                   path))
                result.events.append(runtime.Event(runtime.WARNING, "Failed", "Error: ImagePullBackOff", path))
            cs.backoff = runtime.BACKOFF_INITIAL if not pulls else min(cs.backoff * 2, runtime.BACKOFF_MAX)
            # The first failure reads ErrImagePull; while backing off the kubelet reports ImagePullBackOff.
            reason = "ImagePullBackOff" if pulls else "ErrImagePull"
            message = f'Back-off pulling image "{image}": ErrImagePull: {res.error}' if pulls else res.error
            self._wait(cs, reason, message, seconds=cs.backoff, now=now)
            return
        uid = ps.uid
        try:
            env = await envvars.resolve(self.client, pod, c, allocatable=self.allocatable)
            binds = self._binds(pod, c, mounts)
            if binds and self._mount_problem is None:
                self._mount_problem = await asyncio.to_thread(probe_mounts, self.unshare)
            if binds and self._mount_problem:
                raise volumes.ConfigError(f"the process runtime cannot mount volumes for this container: "
                                          f"{self._mount_problem}")
        except volumes.ConfigError as e:
            result.events.append(runtime.Event(runtime.WARNING, "Failed", f"Error: {e}", path))
            self._wait(cs, "CreateContainerConfigError", str(e), seconds=CONFIG_RETRY_SECONDS, now=now)
            return
        argv = [envvars.expand(a, env) for a in res.argv]
        cdir = os.path.join(self.pod_dir(uid), name)
        await asyncio.to_thread(os.makedirs, cdir, exist_ok=True)
        # A container that ran before counts a restart now that it runs again.
        attempt = cs.restart_count + (1 if cs.container_id else 0)
        error_file = os.path.join(cdir, f"{attempt}.error")
        started_file = os.path.join(cdir, f"{attempt}.started")
        for stale in (error_file, started_file):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        script = launcher(binds, working_dir=str(c.get("workingDir") or ""), error_file=error_file,
                          started_file=started_file)
        cmd = ["/bin/sh", "-c", script, "launcher", *argv]
        if binds and self.unshare:
            cmd = [self.unshare, "--mount", "--propagation", "private", "--", *cmd]
        targets = [m.target for m in binds]
        claim_mount_points(targets)
        try:
            proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                        stderr=subprocess.STDOUT, env=env, cwd="/",
                                                        start_new_session=True)
        except OSError as e:
            release_mount_points(targets)
            cs.termination = runtime.Termination(exit_code=START_ERROR_CODE, reason="StartError", finished_at=now,
                                                 started_at=now, message=OCI_PREFIX + str(e))
            cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
            return
        assert proc.stdout is not None
        pump = asyncio.get_running_loop().create_task(
            pump_log(proc.stdout, path=self.log_path(uid, name, attempt), clock=self.clock), name=f"log-{name}")
        cs.restart_count = attempt
        cs.container_id = runtime.container_id(uid, name, attempt)
        cs.state, cs.reason, cs.message = runtime.RUNNING, "", ""
        cs.started_at, cs.backoff_until = now, None
        cs.ready = cs.started = True
        result.events.extend(runtime.start_events(c, init=init))
        waiter = asyncio.get_running_loop().create_task(
            self._watch(uid, cs, proc, started_file=started_file, error_file=error_file, targets=targets,
                        pump=pump),
            name=f"container-{name}")
        self._runs[(uid, name)] = _Run(proc=proc, waiter=waiter, targets=targets, probe_target=probes.Target(
            env=env, working_dir=str(c.get("workingDir") or ""), pid=proc.pid, nsenter=cmd[0] == self.unshare))

    def _binds(self, pod: Mapping[str, Any], c: Mapping[str, Any], mounts: dict[str, str]) -> list[Mount]:
        kinds = {v.get("name"): next((k for k in v if k != "name"), "")
                 for v in (pod.get("spec") or {}).get("volumes") or []}
        out = []
        for m in c.get("volumeMounts") or []:
            vol = str(m.get("name") or "")
            if vol not in mounts:
                raise volumes.ConfigError(f'cannot find volume "{vol}" to mount into container "{c.get("name")}"')
            source = mounts[vol]
            sub = str(m.get("subPath") or "")
            if sub:
                source = os.path.join(source, sub)
                if not os.path.exists(source):
                    os.makedirs(source, exist_ok=True)
            out.append(Mount(source=source, target=str(m.get("mountPath") or ""),
                             read_only=bool(m.get("readOnly")) or kinds.get(vol) in READ_ONLY_KINDS))
        return out

    async def _watch(self, uid: str, cs: runtime.ContainerStatus, proc: asyncio.subprocess.Process, *,
                     started_file: str, error_file: str, targets: list[str],
                     pump: asyncio.Task[None] | None = None) -> None:
        """Wait for a container's exit and record how it ended; then tell the pod worker."""
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The container is its whole process group: nothing outlives its main process.
            os.killpg(proc.pid, signal.SIGKILL)
        if pump is not None:
            # The log is complete before the container reads as terminated (a follower stops at that).
            done, _ = await asyncio.wait({pump}, timeout=LOG_DRAIN_SECONDS)
            if not done:
                pump.cancel()
        release_mount_points(targets)
        now = self.clock.now()
        message = ""
        if not os.path.exists(started_file) and os.path.exists(error_file):
            reason, exit_code = "StartError", START_ERROR_CODE
            with contextlib.suppress(OSError):
                with open(error_file, encoding="utf-8", errors="replace") as f:
                    message = f.read().strip()
        else:
            exit_code = 128 - code if code < 0 else code
            reason = "Completed" if exit_code == 0 else "Error"
        cs.termination = runtime.Termination(exit_code=exit_code, reason=reason, finished_at=now,
                                             started_at=cs.started_at, container_id=cs.container_id,
                                             message=message, signal=-code if code < 0 else 0)
        cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
        self._runs.pop((uid, cs.name), None)
        if self._notify is not None:
            self._notify(uid)

    async def _probe(self, pod: Mapping[str, Any], ps: runtime.PodStatus, *, now: datetime.datetime,
                     result: runtime.SyncResult, wake: list[float]) -> set[str]:
        """Run the due probes of the running containers; kill those failing liveness or startup."""
        async def run(c: Mapping[str, Any], spec: probes.Spec) -> probes.Outcome:
            r = self._runs.get((ps.uid, str(c.get("name") or "")))
            return await probes.execute(c, spec, r.probe_target if r is not None else probes.Target())

        verdict = await self.prober.sync(pod, ps, run, now=now)
        result.events.extend(verdict.events)
        pod_grace = (pod.get("spec") or {}).get("terminationGracePeriodSeconds")
        for kill in verdict.kills:
            r = self._runs.get((ps.uid, kill.name))
            if r is None:
                continue
            result.events.append(runtime.Event(runtime.NORMAL, "Killing", kill.message,
                                               _field_path(False, kill.name)))
            grace = kill.grace if kill.grace is not None else pod_grace if isinstance(pod_grace, int) else 30
            await self._stop(r, grace=grace)
        if verdict.retry_after is not None:
            wake.append(verdict.retry_after)
        return {k.name for k in verdict.kills}

    async def _stop(self, run: _Run, *, grace: float) -> None:
        """SIGTERM the container's process group, SIGKILL it once the grace period is over."""
        if run.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(run.proc.pid, signal.SIGTERM)
            done, _ = await asyncio.wait({run.waiter}, timeout=max(0.0, grace))
            if not done:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(run.proc.pid, signal.SIGKILL)
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await run.waiter

    async def _stop_all(self, pod: Mapping[str, Any], ps: runtime.PodStatus, *, grace: int,
                        containers: bool) -> list[runtime.Event]:
        """Stop main containers (when asked) in parallel, then sidecars in reverse order, as the kubelet does."""
        spec = pod.get("spec") or {}
        events: list[runtime.Event] = []
        groups = [[(c, False) for c in spec.get("containers") or []]] if containers else []
        groups += [[(c, True)] for c in reversed(spec.get("initContainers") or [])]
        for group in groups:
            runs = []
            for c, init in group:
                name = str(c.get("name") or "")
                run = self._runs.get((ps.uid, name))
                cs = (ps.init_containers if init else ps.containers).get(name)
                if run is None or cs is None or cs.state != runtime.RUNNING:
                    continue
                events.append(runtime.Event(runtime.NORMAL, "Killing", f"Stopping container {name}",
                                            _field_path(init, name)))
                runs.append(self._stop(run, grace=grace))
            await asyncio.gather(*runs)
        return events


def _field_path(init: bool, name: str) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"


def _wake(result: runtime.SyncResult, wake: list[float]) -> None:
    if wake:
        result.retry_after = max(0.0, min(wake))
