"""The containers a process runtime runs: each one's exit watched and recorded, postStart run, stops with grace."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.node import cgroups, containerio, hooks, launcher, probes, runtime, spawn
from pocketkube.node import reaper as reaper_mod

log = logging.getLogger("pocketkube.node.process")

LOG_DRAIN_SECONDS = 2.0
# The kubelet's limits: the last 4 KiB of the message file; of the log, the last 80 lines within 2 KiB.
MAX_MESSAGE_BYTES = 4096
MAX_LOG_LINES = 80
MAX_LOG_BYTES = 2048


def field_path(init: bool, name: str) -> str:
    """The event fieldPath of a container: spec.containers{name} or spec.initContainers{name}."""
    return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"


def _tail_bytes(path: str, limit: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - limit))
        return f.read()


def termination_message(message_file: str, fallback_log: str) -> str:
    """What a container left in its terminationMessagePath file; else, if fallback_log is set, its log's tail."""
    data = b""
    if message_file:
        with contextlib.suppress(OSError):
            data = _tail_bytes(message_file, MAX_MESSAGE_BYTES)
    if not data and fallback_log:
        with contextlib.suppress(OSError):
            data = b"".join(_tail_bytes(fallback_log, MAX_LOG_BYTES).splitlines(keepends=True)[-MAX_LOG_LINES:])
    return data.decode("utf-8", errors="replace")


@dataclasses.dataclass
class Run:
    """One running container process, the task waiting for its exit, and what its hooks need."""

    proc: spawn.Process
    waiter: asyncio.Task[None]
    targets: list[str]
    probe_target: probes.Target = dataclasses.field(default_factory=probes.Target)
    pod: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    container: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    init: bool = False
    cgroup_procs: list[str] = dataclasses.field(default_factory=list)
    post_start: asyncio.Task[None] | None = None
    stopping: bool = False
    # The stdin or terminal the runtime keeps for attach (None: the container's stdin is /dev/null).
    stdio: containerio.Stdio | None = None


class Containers:
    """The running containers of one runtime by (pod uid, container name), and what happens when they end."""

    def __init__(self, *, clock: clock_mod.Clock, reaper: reaper_mod.Reaper) -> None:
        self.clock = clock
        self.reaper = reaper
        self.runs: dict[tuple[str, str], Run] = {}
        # Set once the runtime found its cgroup hierarchy.
        self.cgroups: cgroups.Manager | None = None
        self.notify: Callable[[str], None] | None = None
        # Records an event at once (the pod workers' recorder); without it events go back with the result.
        self.record: Callable[[Mapping[str, Any], runtime.Event], None] | None = None
        self._events: dict[str, list[runtime.Event]] = {}

    def announce(self, pod: Mapping[str, Any], event: runtime.Event, result: list[runtime.Event]) -> None:
        """Record an event that precedes a wait (Killing, before the grace period) now, as the kubelet does;
        into result when nothing records at once."""
        if self.record is not None:
            self.record(pod, event)
        else:
            result.append(event)

    def event(self, uid: str, event: runtime.Event) -> None:
        """Keep an event that happened outside a sync (a hook's outcome) for the pod's next sync or kill."""
        self._events.setdefault(uid, []).append(event)

    def take_events(self, uid: str) -> list[runtime.Event]:
        return self._events.pop(uid, [])

    def forget(self, uid: str) -> None:
        self._events.pop(uid, None)

    async def post_start(self, uid: str, cs: runtime.ContainerStatus, run: Run, handler: Mapping[str, Any]) -> None:
        """Run a container's postStart hook; on success it runs, on failure it is killed (preStop and all)."""
        out = await hooks.run(run.pod, run.container, handler, run.probe_target, clock=self.clock)
        if run.stopping or run.proc.returncode is not None:
            return
        name = cs.name
        if out.ok:
            cs.state, cs.ready, cs.started = runtime.RUNNING, True, True
        else:
            log.info("postStart hook of %s in %s failed: %s", name, runtime.pod_ref(run.pod), out.message)
            path = field_path(run.init, name)
            self.event(uid, runtime.Event(runtime.WARNING, hooks.FAILED_POST_START, "PostStartHook failed", path))
            self.event(uid, runtime.Event(runtime.NORMAL, "Killing", hooks.FAILED_POST_START, path))
            cs.reason, cs.message = hooks.POST_START_ERROR, out.message
            if self.notify is not None:
                self.notify(uid)
            grace = (run.pod.get("spec") or {}).get("terminationGracePeriodSeconds")
            await self.stop(run, grace=grace if isinstance(grace, int) else 30)
            return
        if self.notify is not None:
            self.notify(uid)

    async def watch(self, uid: str, cs: runtime.ContainerStatus, proc: spawn.Process, *,
                    started_file: str, error_file: str, targets: list[str],
                    pump: asyncio.Task[None] | None = None, message_file: str = "", fallback_log: str = "") -> None:
        """Wait for a container's exit and record how it ended; then tell the pod worker."""
        code = await proc.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            # The container is its whole process group: nothing outlives its main process.
            os.killpg(proc.pid, signal.SIGKILL)
        run = self.runs.get((uid, cs.name))
        if run is not None and run.post_start is not None and not run.post_start.done() and not run.stopping:
            run.post_start.cancel()
        oom = False
        if self.cgroups is not None and self.cgroups.enforced:
            oom = await asyncio.to_thread(self._oom_and_remove, uid, cs.name)
        self.reaper.tell(f"-pg {proc.pid}", *(f"-cg {f}" for f in (run.cgroup_procs if run is not None else [])))
        if pump is not None:
            # The log is complete before the container reads as terminated (a follower stops at that).
            done, _ = await asyncio.wait({pump}, timeout=LOG_DRAIN_SECONDS)
            if not done:
                pump.cancel()
        if run is not None and run.stdio is not None:
            await run.stdio.close()
        launcher.release_mount_points(targets)
        now = self.clock.now()
        message = ""
        if not os.path.exists(started_file) and os.path.exists(error_file):
            reason, exit_code = "StartError", launcher.START_ERROR_CODE
            with contextlib.suppress(OSError):
                with open(error_file, encoding="utf-8", errors="replace") as f:
                    message = f.read().strip()
            # The kubelet's event for a container that could not start (its command missing, say).
            self.event(uid, runtime.Event(runtime.WARNING, "Failed", f"Error: {message}",
                                          field_path(run is not None and run.init, cs.name)))
        else:
            exit_code = 128 - code if code < 0 else code
            reason = "Completed" if exit_code == 0 else "Error"
            if oom:
                reason = "OOMKilled"
            # FallbackToLogsOnError reads the log only after a failure, as the kubelet does.
            message = termination_message(message_file, fallback_log if exit_code != 0 else "")
        cs.termination = runtime.Termination(exit_code=exit_code, reason=reason, finished_at=now,
                                             started_at=cs.started_at, container_id=cs.container_id,
                                             message=message, signal=-code if code < 0 else 0)
        cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
        self.runs.pop((uid, cs.name), None)
        if self.notify is not None:
            self.notify(uid)

    def _oom_and_remove(self, uid: str, name: str) -> bool:
        """In a thread: whether the container's cgroup saw an OOM kill, then remove that cgroup (one trip, not two).

        Nothing that left the process group survives either: the container is its whole cgroup too."""
        assert self.cgroups is not None
        oom = self.cgroups.oom_killed(uid, name)
        self.cgroups.remove_container(uid, name)
        return oom

    async def stop(self, run: Run, *, grace: float, pre_stop: bool = True) -> None:
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
                self.event(uid, runtime.Event(runtime.WARNING, hooks.FAILED_PRE_STOP, "PreStopHook failed",
                                               field_path(run.init, str(run.container.get("name") or ""))))
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

    async def stop_all(self, pod: Mapping[str, Any], ps: runtime.PodStatus, *, grace: int,
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
                run = self.runs.get((ps.uid, name))
                cs = (ps.init_containers if init else ps.containers).get(name)
                # A container still in its postStart hook (waiting, not yet running) is stopped too.
                if run is None or cs is None or run.proc.returncode is not None:
                    continue
                self.announce(pod, runtime.Event(runtime.NORMAL, "Killing", f"Stopping container {name}",
                                                 field_path(init, name)), events)
                runs.append(self.stop(run, grace=grace))
            await asyncio.gather(*runs)
        return events
