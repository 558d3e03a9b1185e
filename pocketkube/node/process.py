"""The process runtime: each container a local process group in its own mount namespace and cgroup."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import dataclasses
import datetime
import hashlib
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.client import rest
from pocketkube.network import podnet
from pocketkube.node import cgroups, envvars, hooks, images, logrotate, probes, runtime, volumes

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


def launcher(mounts: list[Mount], *, working_dir: str, error_file: str, started_file: str,
             cgroup_procs: list[str] | None = None) -> str:
    """The shell that sets a container up (cgroups, mounts, working dir, command lookup) and execs its argv ("$@").

    It joins the container's cgroups first, so everything it becomes or starts is limited and counted.
    Anything failing before the exec is written to error_file and ends the launcher with 128, so a
    container never runs without its volumes or limits; started_file marks that the exec happened."""
    q = shlex.quote
    lines = [f"fail() {{ printf '%s\\n' \"$1\" > {q(error_file)}; exit {START_ERROR_CODE}; }}"]
    for procs in cgroup_procs or []:
        msg = f"failed to join cgroup: cannot write {procs}"
        lines.append(f"echo $$ > {q(procs)} || fail {q(OCI_PREFIX + msg)}")
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


# The log file helpers live in logrotate; these names stay for the kubelet server and older callers.
ts_path = logrotate.ts_path
pump_log = logrotate.pump

PR_SET_PDEATHSIG = 1
# The watchdog beside the runtime: it reads "+pg N"/"-pg N" (process groups) and "+cg F"/"-cg F"
# (cgroup.procs files) from the agent; when its input ends because the agent died, even by SIGKILL, it kills
# every container process left, including the ones a container's main process started.
REAPER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
groups, files, roots = set(), set(), set()
for line in sys.stdin:
    op, _, arg = line.strip().partition(" ")
    box = {"pg": groups, "cg": files, "rt": roots}.get(op[1:], set())
    value = int(arg) if box is groups else arg
    (box.add if op[:1] == "+" else box.discard)(value)
for attempt in range(50):
    if attempt:
        time.sleep(0.02)
    for pg in groups:
        try:
            os.killpg(pg, signal.SIGKILL)
        except OSError:
            pass
    for f in files:
        try:
            pids = open(f).read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
    # The runtime's cgroups go too, once the processes killed above have left them.
    for root in roots:
        for d, subs, _ in os.walk(root, topdown=False):
            for sub in subs:
                try:
                    os.rmdir(os.path.join(d, sub))
                except OSError:
                    pass
        try:
            os.rmdir(root)
        except OSError:
            pass
    if not any(os.path.isdir(r) for r in roots):
        break
"""


def _die_with(parent: int) -> Callable[[], None]:
    """A preexec function: the child gets SIGKILL when the agent process ends, however it ends."""
    libc = ctypes.CDLL(None, use_errno=True)

    def preexec() -> None:
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the agent died before the line above took effect
            os._exit(START_ERROR_CODE)

    return preexec


@dataclasses.dataclass
class _Run:
    """One running container process, the task waiting for its exit, and what its hooks need."""

    proc: asyncio.subprocess.Process
    waiter: asyncio.Task[None]
    targets: list[str]
    probe_target: probes.Target = dataclasses.field(default_factory=probes.Target)
    pod: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    container: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init: bool = False
    cgroup_procs: list[str] = dataclasses.field(default_factory=list)
    post_start: asyncio.Task[None] | None = None
    stopping: bool = False


def cgroup_name(data_dir: str) -> str:
    """The runtime's own cgroup subtree, one per data dir, so agents on one machine never touch each other's."""
    return "pocketkube-" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:12]


def past_attempts(container_dir: str) -> int:
    """How many runs of a container have a log on disk (its next attempt number), rotated files included."""
    try:
        names = os.listdir(container_dir)
    except FileNotFoundError:
        return 0
    runs = [int(m.group(1)) for n in names if (m := re.fullmatch(r"(\d+)\.log(\..*)?", n))]
    return max(runs) + 1 if runs else 0


class ProcessRuntime:
    """Runs each container as a process group on this host; restarts per restartPolicy with back-off."""

    name = "pocketkube"
    version = "0.1.0"

    def __init__(self, client: rest.Client, *, data_dir: str, pod_cidr: str, host_ip: str,
                 allocatable: Mapping[str, str] | None = None, clock: clock_mod.Clock | None = None,
                 log_policy: logrotate.Policy | None = None, cgroup_layout: cgroups.Layout | None = None,
                 pids_limit: int | None = None, network: podnet.PodNetwork | None = None) -> None:
        self.client = client
        # The node's pod network: each pod in its own namespace on the bridge (None: pods share the host's).
        self.network = network
        self.data_dir = data_dir
        self.host_ip = host_ip
        self.allocatable = dict(allocatable or {})
        self.clock = clock or clock_mod.Clock()
        self.ips = runtime.IPAllocator(pod_cidr)
        self.unshare = shutil.which("unshare")
        self.log_policy = log_policy or logrotate.policy_from_env()
        self._layout = cgroup_layout
        self._pids_limit = pids_limit
        self.cgroups: cgroups.Manager | None = None
        self._mount_problem: str | None = None
        self._pods: dict[str, runtime.PodStatus] = {}
        self._runs: dict[tuple[str, str], _Run] = {}
        self._notify: Callable[[str], None] | None = None
        self._events: dict[str, list[runtime.Event]] = {}
        self._reaper: asyncio.subprocess.Process | None = None
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

    @property
    def limits_problem(self) -> str:
        """Why pod resource limits are not enforced on this node ("" when they are, or before the first pod)."""
        return self.cgroups.problem if self.cgroups is not None else ""

    def usage(self, uid: str) -> dict[str, Any]:
        """CPU (cumulative ns) and memory (working set bytes) of a pod and its running containers; {} if unknown."""
        ps = self._pods.get(uid)
        if ps is None or self.cgroups is None:
            return {}
        names = [n for (u, n), r in self._runs.items() if u == uid and r.proc.returncode is None]
        got = self.cgroups.usage(uid, names)
        if got:
            got["timestamp"] = clock_mod.rfc3339(self.clock.now())
        return got

    def _event(self, uid: str, event: runtime.Event) -> None:
        """Keep an event that happened outside a sync (a hook's outcome) for the pod's next sync or kill."""
        self._events.setdefault(uid, []).append(event)

    def _take_events(self, uid: str) -> list[runtime.Event]:
        return self._events.pop(uid, [])

    async def _ensure_started(self) -> None:
        """On first use: find the cgroup hierarchy, remove a previous agent's leftovers, start the watchdog."""
        if self.cgroups is None:
            layout = self._layout
            if layout is None:
                layout = await asyncio.to_thread(cgroups.detect, cgroup_name(self.data_dir))
            manager = cgroups.Manager(layout, pids_limit=self._pids_limit)
            await asyncio.to_thread(manager.setup)
            await asyncio.to_thread(manager.clean)
            if manager.problem:
                log.warning("pod resource limits are not enforced: %s", manager.problem)
            self.cgroups = manager
        if self.network is not None and not self.network.started:
            await self.network.setup()
        if self._reaper is None or self._reaper.returncode is not None:
            try:
                self._reaper = await asyncio.create_subprocess_exec(
                    sys.executable, "-I", "-S", "-c", REAPER, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL, start_new_session=True)
            except OSError as e:
                log.warning("cannot start the container watchdog (%s): processes may outlive a crashed agent", e)
            if self.cgroups.enforced:
                for root in self.cgroups.layout.roots.values():
                    self._tell_reaper(f"+rt {root}")

    def _tell_reaper(self, line: str) -> None:
        r = self._reaper
        if r is not None and r.stdin is not None and r.returncode is None:
            with contextlib.suppress(OSError, RuntimeError):
                r.stdin.write((line + "\n").encode())

    def summary(self) -> dict[str, Any]:
        """Per-node usage for a metrics API: every pod's usage and the node's totals over them."""
        pods = {uid: u for uid in list(self._pods) if (u := self.usage(uid))}
        return {"pods": pods, "node": {
            "cpuUsageNanoSeconds": sum(p["pod"]["cpuUsageNanoSeconds"] for p in pods.values()),
            "memoryWorkingSetBytes": sum(p["pod"]["memoryWorkingSetBytes"] for p in pods.values())},
            "limitsEnforced": self.cgroups is not None and self.cgroups.enforced}

    # --- the Runtime protocol

    async def sync_pod(self, pod: Mapping[str, Any]) -> runtime.SyncResult:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        uid = str(meta.get("uid") or "")
        now = self.clock.now()
        result = runtime.SyncResult()
        await self._ensure_started()
        ps = self._pods.get(uid)
        if ps is None:
            ip = str((pod.get("status") or {}).get("podIP") or "")
            ips = [self.host_ip] if spec.get("hostNetwork") or (self.network and not self.network.enabled) else \
                [ip if ip and self.ips.reserve(ip) else self.ips.allocate()]
            if self.network is not None and self.network.enabled and not spec.get("hostNetwork"):
                try:
                    await self.network.add_pod(uid, ips[0])
                except podnet.NetworkError as e:
                    self.ips.release(ips[0])
                    result.events.append(runtime.Event(runtime.WARNING, "FailedCreatePodSandBox",
                                                       f"Failed to create pod sandbox: {e}"))
                    result.retry_after = CONFIG_RETRY_SECONDS
                    return result
            ps = runtime.PodStatus(uid=uid, ips=ips, network_ready=True, created_at=now)
            self._pods[uid] = ps
            await self._adopt(pod, ps, now=now, result=result)
            if self.cgroups is not None and self.cgroups.problem and _has_limits(pod):
                result.events.append(runtime.Event(runtime.WARNING, "LimitsNotEnforced",
                                                   f"Resource limits are not enforced on this node: "
                                                   f"{self.cgroups.problem}"))
        result.events.extend(self._take_events(uid))
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
                run = self._runs.get((uid, str(c.get("name") or "")))
                if run is not None and run.post_start is not None and not run.post_start.done():
                    break  # as the kubelet does, the next container starts once this one's postStart is done
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
        events.extend(self._take_events(uid))
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
                await self._stop(run, grace=0, pre_stop=False)
        self.prober.forget(uid)
        self._events.pop(uid, None)
        ps = self._pods.pop(uid, None)
        if ps is not None:
            for ip in ps.ips:
                self.ips.release(ip)
        if self.network is not None:
            await self.network.remove_pod(uid)
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove_pod, uid)
        await asyncio.to_thread(shutil.rmtree, self.pod_dir(uid), True)

    async def close(self) -> None:
        # Container processes live in their own sessions: without this they would outlive the agent.
        await asyncio.gather(*(self._stop(run, grace=2, pre_stop=False) for run in list(self._runs.values())),
                             return_exceptions=True)
        self._runs.clear()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.clean, keep_root=False)
        if self.network is not None:
            self.network.close()
        reaper, self._reaper = self._reaper, None
        if reaper is not None and reaper.stdin is not None:
            reaper.stdin.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(reaper.wait(), 5)

    async def _adopt(self, pod: Mapping[str, Any], ps: runtime.PodStatus, *, now: datetime.datetime,
                     result: runtime.SyncResult) -> None:
        """Take over a pod an earlier agent ran here: its containers died with that agent, so, as the kubelet
        does after its restart, make a new sandbox and run them again, counting the restarts from the logs."""
        status = pod.get("status") or {}
        spec = pod.get("spec") or {}
        adopted = False
        for key, field, statuses in (("initContainerStatuses", "initContainers", ps.init_containers),
                                     ("containerStatuses", "containers", ps.containers)):
            specs = {str(c.get("name") or ""): c for c in spec.get(field) or []}
            for s in status.get(key) or []:
                name = str(s.get("name") or "")
                c = specs.get(name)
                ran = await asyncio.to_thread(past_attempts, os.path.join(self.pod_dir(ps.uid), name))
                if c is None or not (s.get("containerID") or ran):
                    continue
                adopted = True
                image = str(c.get("image") or "")
                count = max(int(s.get("restartCount") or 0), ran - 1)
                cs = runtime.ContainerStatus(name=name, image=runtime.normalize_image(image),
                                             image_id=runtime.image_id(image), restart_count=count,
                                             container_id=str(s.get("containerID") or runtime.container_id(
                                                 ps.uid, name, count)))
                state, last = s.get("state") or {}, (s.get("lastState") or {}).get("terminated")
                ended = _termination(state.get("terminated"))
                if ended is not None and field == "containers":
                    cs.state, cs.termination = runtime.TERMINATED, ended  # the restart policy decides
                    cs.last_termination = _termination(last)
                else:
                    if "running" in state:
                        started = _time(state["running"].get("startedAt"))
                        # It was killed with the agent that ran it.
                        ended = runtime.Termination(exit_code=137, reason="Error", finished_at=now,
                                                    started_at=started, container_id=cs.container_id)
                    cs.last_termination = ended or _termination(last)
                    cs.state, cs.backoff_until = runtime.WAITING, now
                statuses[name] = cs
        if adopted:
            result.events.append(runtime.Event(runtime.NORMAL, "SandboxChanged",
                                               "Pod sandbox changed, it will be killed and re-created."))

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
            env = await envvars.resolve(self.client, pod, c, allocatable=self.allocatable, in_pod_network=bool(
                self.network is not None and self.network.netns_path(uid)))
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
        procs: list[str] = []
        if self.cgroups is not None:
            try:
                procs = await asyncio.to_thread(self.cgroups.create, pod, c)
            except OSError as e:
                cs.termination = runtime.Termination(exit_code=START_ERROR_CODE, reason="StartError",
                                                     finished_at=now, started_at=now,
                                                     message=f"{OCI_PREFIX}failed to set up the container's cgroup: {e}")
                cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
                return
        script = launcher(binds, working_dir=str(c.get("workingDir") or ""), error_file=error_file,
                          started_file=started_file, cgroup_procs=procs)
        cmd = ["/bin/sh", "-c", script, "launcher", *argv]
        netns = self.network.netns_path(uid) if self.network is not None else None
        if netns:
            cmd = ["nsenter", f"--net={netns}", "--", *cmd]  # every container of the pod shares its namespace
        if binds and self.unshare:
            cmd = [self.unshare, "--mount", "--propagation", "private", "--", *cmd]
        targets = [m.target for m in binds]
        claim_mount_points(targets)
        try:
            proc = await asyncio.create_subprocess_exec(*cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                        stderr=subprocess.STDOUT, env=env, cwd="/",
                                                        start_new_session=True, preexec_fn=_die_with(os.getpid()))
        except (OSError, subprocess.SubprocessError) as e:
            release_mount_points(targets)
            cs.termination = runtime.Termination(exit_code=START_ERROR_CODE, reason="StartError", finished_at=now,
                                                 started_at=now, message=OCI_PREFIX + str(e))
            cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
            return
        self._tell_reaper(f"+pg {proc.pid}")
        for procs_file in procs:
            self._tell_reaper(f"+cg {procs_file}")
        assert proc.stdout is not None
        pump = asyncio.get_running_loop().create_task(
            logrotate.pump(proc.stdout, path=self.log_path(uid, name, attempt), clock=self.clock,
                           policy=self.log_policy), name=f"log-{name}")
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
        run = _Run(proc=proc, waiter=waiter, targets=targets, probe_target=probes.Target(
            env=env, working_dir=str(c.get("workingDir") or ""), pid=proc.pid, nsenter=cmd[0] == self.unshare,
            host=ps.ips[0] if netns else "127.0.0.1"),
            pod=pod, container=c, init=init, cgroup_procs=procs)
        self._runs[(uid, name)] = run
        post_start = hooks.handler(c, hooks.POST_START)
        if post_start is not None:
            # Not running (nor started) until its postStart hook is done, as the kubelet reports it.
            cs.state, cs.ready, cs.started = runtime.WAITING, False, False
            run.post_start = asyncio.get_running_loop().create_task(
                self._post_start(uid, cs, run, post_start), name=f"post-start-{name}")

    async def _post_start(self, uid: str, cs: runtime.ContainerStatus, run: _Run, handler: Mapping[str, Any]) -> None:
        """Run a container's postStart hook; on success it runs, on failure it is killed (preStop and all)."""
        out = await hooks.run(run.pod, run.container, handler, run.probe_target, clock=self.clock)
        if run.stopping or run.proc.returncode is not None:
            return
        name = cs.name
        if out.ok:
            cs.state, cs.ready, cs.started = runtime.RUNNING, True, True
        else:
            log.info("postStart hook of %s in %s failed: %s", name, runtime.pod_ref(run.pod), out.message)
            path = _field_path(run.init, name)
            self._event(uid, runtime.Event(runtime.WARNING, hooks.FAILED_POST_START, "PostStartHook failed", path))
            self._event(uid, runtime.Event(runtime.NORMAL, "Killing", hooks.FAILED_POST_START, path))
            cs.reason, cs.message = hooks.POST_START_ERROR, out.message
            if self._notify is not None:
                self._notify(uid)
            grace = (run.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
            await self._stop(run, grace=grace if isinstance(grace, int) else 30)
            return
        if self._notify is not None:
            self._notify(uid)

    def _binds(self, pod: Mapping[str, Any], c: Mapping[str, Any], mounts: dict[str, str]) -> list[Mount]:
        kinds = {v.get("name"): next((k for k in v if k != "name"), "")
                 for v in (pod.get("spec") or {}).get("volumes") or []}
        forced = {v.get("name") for v in (pod.get("spec") or {}).get("volumes") or [] if volumes.forces_read_only(v)}
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
                             read_only=bool(m.get("readOnly")) or kinds.get(vol) in READ_ONLY_KINDS or vol in forced))
        return out

    async def _watch(self, uid: str, cs: runtime.ContainerStatus, proc: asyncio.subprocess.Process, *,
                     started_file: str, error_file: str, targets: list[str],
                     pump: asyncio.Task[None] | None = None) -> None:
        """Wait for a container's exit and record how it ended; then tell the pod worker."""
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The container is its whole process group: nothing outlives its main process.
            os.killpg(proc.pid, signal.SIGKILL)
        run = self._runs.get((uid, cs.name))
        if run is not None and run.post_start is not None and not run.post_start.done() and not run.stopping:
            run.post_start.cancel()
        oom = False
        if self.cgroups is not None and self.cgroups.enforced:
            oom = await asyncio.to_thread(self.cgroups.oom_killed, uid, cs.name)
            # Nor does anything that left the process group: the container is its whole cgroup too.
            await asyncio.to_thread(self.cgroups.remove_container, uid, cs.name)
        self._tell_reaper(f"-pg {proc.pid}")
        for procs_file in run.cgroup_procs if run is not None else []:
            self._tell_reaper(f"-cg {procs_file}")
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
            if oom:
                reason = "OOMKilled"
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

    async def _stop(self, run: _Run, *, grace: float, pre_stop: bool = True) -> None:
        """Run the preStop hook, SIGTERM the container's process group, SIGKILL it once the grace period is over.

        As in the kubelet, the preStop hook's time counts against the grace period, and whatever is left
        (at least two seconds) is the time between SIGTERM and SIGKILL."""
        run.stopping = True
        if run.post_start is not None and not run.post_start.done() and run.post_start is not asyncio.current_task():
            run.post_start.cancel()
        handler = hooks.handler(run.container, hooks.PRE_STOP) if pre_stop else None
        if run.proc.returncode is None and handler is not None and grace > 0:
            began = self.clock.monotonic()
            hook = asyncio.get_running_loop().create_task(
                hooks.run(run.pod, run.container, handler, run.probe_target, clock=self.clock, timeout=grace))
            await asyncio.wait({hook, run.waiter}, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            if hook.done() and not hook.cancelled() and hook.exception() is None and not hook.result().ok:
                uid = str((run.pod.get("metadata") or {}).get("uid") or "")
                log.info("preStop hook of %s failed: %s", runtime.pod_ref(run.pod), hook.result().message)
                self._event(uid, runtime.Event(runtime.WARNING, hooks.FAILED_PRE_STOP, "PreStopHook failed",
                                               _field_path(run.init, str(run.container.get("name") or ""))))
            if not hook.done():
                hook.cancel()
            grace = hooks.grace_left(int(grace), self.clock.monotonic() - began)
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
                # A container still in its postStart hook (waiting, not yet running) is stopped too.
                if run is None or cs is None or run.proc.returncode is not None:
                    continue
                events.append(runtime.Event(runtime.NORMAL, "Killing", f"Stopping container {name}",
                                            _field_path(init, name)))
                runs.append(self._stop(run, grace=grace))
            await asyncio.gather(*runs)
        return events


def _has_limits(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any((c.get("resources") or {}).get("limits") for key in ("containers", "initContainers")
               for c in spec.get(key) or [])


def _time(raw: Any) -> datetime.datetime | None:
    try:
        return clock_mod.parse_time(str(raw)) if raw else None
    except ValueError:
        return None


def _termination(t: Any) -> runtime.Termination | None:
    """A reported v1.ContainerStateTerminated as the runtime's Termination (None if absent or unreadable)."""
    if not isinstance(t, Mapping):
        return None
    finished = _time(t.get("finishedAt"))
    if finished is None:
        return None
    return runtime.Termination(exit_code=int(t.get("exitCode") or 0), reason=str(t.get("reason") or ""),
                               finished_at=finished, started_at=_time(t.get("startedAt")),
                               container_id=str(t.get("containerID") or ""), message=str(t.get("message") or ""))


def _field_path(init: bool, name: str) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"


def _wake(result: runtime.SyncResult, wake: list[float]) -> None:
    if wake:
        result.retry_after = max(0.0, min(wake))
