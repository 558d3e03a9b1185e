"""The process runtime: each container a local process group in its own mount namespace and cgroup."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hashlib
import logging
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.client import rest
from pocketkube.network import podnet, resolvconf
from pocketkube.node import (
    adoption,
    cgroups,
    containerio,
    containerwatch,
    envvars,
    hooks,
    images,
    launcher,
    logrotate,
    probes,
    reaper,
    runtime,
    volumes,
)

log = logging.getLogger("pocketkube.node.process")

CONFIG_RETRY_SECONDS = 2.0
REFRESH_SECONDS = 60.0
RESOLV_CONF = "/etc/resolv.conf"

# Names older callers and tests know this module by; the code lives in the modules named.
START_ERROR_CODE = launcher.START_ERROR_CODE
OCI_PREFIX = launcher.OCI_PREFIX
REAPER = reaper.REAPER
probe_mounts = launcher.probe_mounts
past_attempts = adoption.past_attempts
ts_path = logrotate.ts_path
pump_log = logrotate.pump


def cgroup_name(data_dir: str) -> str:
    """The runtime's own cgroup subtree, one per data dir, so agents on one machine never touch each other's."""
    return "pocketkube-" + hashlib.sha256(os.path.abspath(data_dir).encode()).hexdigest()[:12]


class ProcessRuntime:
    """Runs each container as a process group on this host; restarts per restartPolicy with back-off."""

    name = "pocketkube"
    version = "0.1.0"

    def __init__(self, client: rest.Client, *, data_dir: str, pod_cidr: str, host_ip: str,
                 allocatable: Mapping[str, str] | None = None, clock: clock_mod.Clock | None = None,
                 log_policy: logrotate.Policy | None = None, cgroup_layout: cgroups.Layout | None = None,
                 pids_limit: int | None = None, network: podnet.PodNetwork | None = None,
                 dns: resolvconf.Settings | None = None) -> None:
        self.client = client
        # The node's pod network: each pod in its own namespace on the bridge (None: pods share the host's).
        self.network = network
        # The kubelet's cluster DNS settings, for each pod's /etc/resolv.conf (None: pods see the host's file).
        self.dns = dns
        self.data_dir = data_dir
        self.host_ip = host_ip
        self.allocatable = dict(allocatable or {})
        self.clock = clock or clock_mod.Clock()
        self.ips = runtime.IPAllocator(pod_cidr)
        self.unshare = shutil.which("unshare")
        self.setsid = shutil.which("setsid")
        self.log_policy = log_policy or logrotate.policy_from_env()
        self._layout = cgroup_layout
        self._pids_limit = pids_limit
        self.cgroups: cgroups.Manager | None = None
        self._mount_problem: str | None = None
        self._pods: dict[str, runtime.PodStatus] = {}
        self._reaper = reaper.Reaper()
        self.containers = containerwatch.Containers(clock=self.clock, reaper=self._reaper)
        self._runs = self.containers.runs
        # Per pod: its resolv.conf, when the runtime formed one.
        self._resolv: dict[str, str] = {}
        self.prober = probes.Prober()
        # The kubelet's service informer: service links come from its cache, not two API reads per container.
        self.services = envvars.ServiceCache(client, clock=self.clock) if isinstance(client, rest.Client) else None
        # Per pod: when its volumes were last set up and the metadata the downward API wrote (see _volumes).
        self._mounted: dict[str, tuple[float, str, dict[str, str]]] = {}

    def set_notify(self, notify: Callable[[str], None]) -> None:
        self.containers.notify = notify

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

    def stdio(self, uid: str, container: str) -> containerio.Stdio | None:
        """The stdin or terminal of a running container that has one (stdin: true or tty: true)."""
        run = self._runs.get((uid, container))
        return run.stdio if run is not None and run.proc.returncode is None else None

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
            self.containers.cgroups = manager
        if self.network is not None and not self.network.started:
            await self.network.setup()
        if self.services is not None:
            self.services.start()
        if await self._reaper.start() and self.cgroups.enforced:
            for root in self.cgroups.layout.roots.values():
                self._reaper.tell(f"+rt {root}")

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
        vols: asyncio.Task[dict[str, str]] | None = None
        ps = self._pods.get(uid)
        if ps is None:
            ip = str((pod.get("status") or {}).get("podIP") or "")
            ips = [self.host_ip] if spec.get("hostNetwork") or (self.network and not self.network.enabled) else \
                [ip if ip and self.ips.reserve(ip) else self.ips.allocate()]
            own_netns = self.network is not None and self.network.enabled and not spec.get("hostNetwork")
            # The volumes' API reads overlap the sandbox's set-up (namespace, veth, resolv.conf) in a thread.
            vols = asyncio.get_running_loop().create_task(self._volumes(self._with_ips(pod, ips), uid, now=now),
                                                          name=f"volumes-{uid}")
            try:
                resolv_events = await asyncio.to_thread(self._sandbox, pod, uid, ips[0] if own_netns else "")
            except podnet.NetworkError as e:
                await _drop(vols)
                self.ips.release(ips[0])
                result.events.append(runtime.Event(runtime.WARNING, "FailedCreatePodSandBox",
                                                   f"Failed to create pod sandbox: {e}"))
                result.retry_after = CONFIG_RETRY_SECONDS
                return result
            except BaseException:
                await _drop(vols)
                raise
            ps = runtime.PodStatus(uid=uid, ips=ips, network_ready=True, created_at=now)
            self._pods[uid] = ps
            result.events.extend(resolv_events)
            await adoption.adopt(pod, ps, pod_dir=self.pod_dir(uid), now=now, result=result)
            if self.cgroups is not None and self.cgroups.problem and _has_limits(pod):
                result.events.append(runtime.Event(runtime.WARNING, "LimitsNotEnforced",
                                                   f"Resource limits are not enforced on this node: "
                                                   f"{self.cgroups.problem}"))
        result.events.extend(self.containers.take_events(uid))
        if not ps.network_ready:
            await _drop(vols)
            return result
        try:
            mounts = await (vols if vols is not None else self._volumes(self._with_ips(pod, ps.ips), uid, now=now))
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
                await self.containers.stop_all(pod, ps, grace=0, containers=False)
                ps.network_ready = False
                wake.clear()
        _wake(result, wake)
        return result

    async def kill_pod(self, pod: Mapping[str, Any], *, grace_seconds: int) -> list[runtime.Event]:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        ps = self._pods.get(uid)
        if ps is None:
            return []
        events = await self.containers.stop_all(pod, ps, grace=grace_seconds, containers=True)
        events.extend(self.containers.take_events(uid))
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
                await self.containers.stop(run, grace=0, pre_stop=False)
        self.prober.forget(uid)
        self.containers.forget(uid)
        self._resolv.pop(uid, None)
        self._mounted.pop(uid, None)
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
        # First and synchronous (a second cancellation of the shutdown cannot skip it): the mount points made
        # on the host for containers (/dev/termination-log, /var/run/secrets/...) go with the agent.
        launcher.release_all_mount_points()
        await asyncio.gather(*(self.containers.stop(run, grace=2, pre_stop=False) for run in list(self._runs.values())),
                             return_exceptions=True)
        self._runs.clear()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.clean, keep_root=False)
        if self.network is not None:
            self.network.close()
        if self.services is not None:
            await self.services.close()
        await self._reaper.close()

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
                    f"{runtime.pod_ref(pod)}", containerwatch.field_path(init, name)))
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
        path = containerwatch.field_path(init, name)
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
            in_netns = bool(self.network is not None and self.network.netns_path(uid))
            env = await envvars.resolve(self.client, self._with_ips(pod, ps.ips), c, allocatable=self.allocatable,
                                        in_pod_network=in_netns, services=self.services)
            binds = launcher.binds(pod, c, mounts)
            if binds and self._mount_problem is None:
                self._mount_problem = await asyncio.to_thread(probe_mounts, self.unshare)
            if binds and self._mount_problem:
                raise volumes.ConfigError(f"the process runtime cannot mount volumes for this container: "
                                          f"{self._mount_problem}")
        except volumes.ConfigError as e:
            result.events.append(runtime.Event(runtime.WARNING, "Failed", f"Error: {e}", path))
            self._wait(cs, "CreateContainerConfigError", str(e), seconds=CONFIG_RETRY_SECONDS, now=now)
            return
        binds += await self._resolv_bind(uid, binds)
        argv = [envvars.expand(a, env) for a in res.argv]
        cdir = os.path.join(self.pod_dir(uid), name)
        # A container that ran before counts a restart now that it runs again.
        attempt = cs.restart_count + (1 if cs.container_id else 0)
        error_file = os.path.join(cdir, f"{attempt}.error")
        started_file = os.path.join(cdir, f"{attempt}.started")
        message_file = await self._message_bind(c, binds, os.path.join(cdir, f"{attempt}.termination-log"))
        try:
            # One trip to a thread for the container's files and cgroup: each trip costs more than the work.
            procs = await asyncio.to_thread(self._prepare, pod, c, cdir=cdir, stale=(error_file, started_file),
                                            message_file=message_file)
        except _CgroupError as e:
            cs.termination = runtime.Termination(
                exit_code=launcher.START_ERROR_CODE, reason="StartError", finished_at=now, started_at=now,
                message=f"{launcher.OCI_PREFIX}failed to set up the container's cgroup: {e.__cause__}")
            cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
            return
        script = launcher.launcher(binds, working_dir=str(c.get("workingDir") or ""), error_file=error_file,
                                   started_file=started_file, cgroup_procs=procs)
        cmd = ["/bin/sh", "-c", script, "launcher", *argv]
        netns = self.network.netns_path(uid) if self.network is not None else None
        if netns:
            cmd = ["nsenter", f"--net={netns}", "--", *cmd]  # every container of the pod shares its namespace
        if binds and self.unshare:
            cmd = [self.unshare, "--mount", "--propagation", "private", "--", *cmd]
        targets = [m.target for m in binds]
        launcher.claim_mount_points(targets)
        stdio: containerio.Stdio | None = None
        try:
            stdio = containerio.Stdio.for_container(c)
            proc = await launcher.spawn(cmd, env=env, stdio=stdio, setsid=self.setsid)
        except (OSError, subprocess.SubprocessError) as e:
            launcher.release_mount_points(targets)
            if stdio is not None:
                await stdio.close()
            cs.termination = runtime.Termination(exit_code=launcher.START_ERROR_CODE, reason="StartError",
                                                 finished_at=now, started_at=now, message=launcher.OCI_PREFIX + str(e))
            cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
            return
        self._reaper.tell(f"+pg {proc.pid}", *(f"+cg {procs_file}" for procs_file in procs))
        if stdio is not None:
            stdio.started()
        output = stdio.output() if stdio is not None and stdio.tty else proc.stdout
        assert output is not None
        pump = asyncio.get_running_loop().create_task(
            logrotate.pump(output, path=self.log_path(uid, name, attempt), clock=self.clock,
                           policy=self.log_policy), name=f"log-{name}")
        cs.restart_count = attempt
        cs.container_id = runtime.container_id(uid, name, attempt)
        cs.state, cs.reason, cs.message = runtime.RUNNING, "", ""
        cs.started_at, cs.backoff_until = now, None
        cs.ready = cs.started = True
        result.events.extend(runtime.start_events(c, init=init))
        waiter = asyncio.get_running_loop().create_task(
            self.containers.watch(uid, cs, proc, started_file=started_file, error_file=error_file, targets=targets,
                                  pump=pump, message_file=message_file, fallback_log=self.log_path(uid, name, attempt)
                                  if c.get("terminationMessagePolicy") == "FallbackToLogsOnError" else ""),
            name=f"container-{name}")
        run = containerwatch.Run(proc=proc, waiter=waiter, targets=targets, probe_target=probes.Target(
            env=env, working_dir=str(c.get("workingDir") or ""), pid=proc.pid, nsenter=cmd[0] == self.unshare,
            host=ps.ips[0] if netns else "127.0.0.1"),
            pod=pod, container=c, init=init, cgroup_procs=procs, stdio=stdio)
        self._runs[(uid, name)] = run
        post_start = hooks.handler(c, hooks.POST_START)
        if post_start is not None:
            # Not running (nor started) until its postStart hook is done, as the kubelet reports it.
            cs.state, cs.ready, cs.started = runtime.WAITING, False, False
            run.post_start = asyncio.get_running_loop().create_task(
                self.containers.post_start(uid, cs, run, post_start), name=f"post-start-{name}")

    async def _volumes(self, pod: Mapping[str, Any], uid: str, *, now: datetime.datetime) -> dict[str, str]:
        """The pod's volumes, set up on its first sync and refreshed every REFRESH_SECONDS after.

        Between refreshes a sync (woken by the pod's own status write, an exit, a probe) reuses them, as the
        kubelet's volume manager does; labels and annotations changing rewrite the downward API files at once."""
        meta = pod.get("metadata") or {}
        fingerprint = repr((meta.get("labels"), meta.get("annotations")))
        last = self._mounted.get(uid)
        at = self.clock.monotonic()
        if last is not None and at - last[0] < REFRESH_SECONDS and last[1] == fingerprint:
            return last[2]
        mounts = await volumes.materialise(self.client, pod, data_dir=self.data_dir, allocatable=self.allocatable,
                                           now=now)
        self._mounted[uid] = (at, fingerprint, mounts)
        return mounts

    def _sandbox(self, pod: Mapping[str, Any], uid: str, ip: str) -> list[runtime.Event]:
        """In a thread: the pod's network namespace with ip (none when ip is ""; NetworkError when it fails) and
        its resolv.conf; the events the resolv.conf warrants."""
        if ip and self.network is not None:
            self.network.add(uid, ip)
        return self._write_resolv(pod, uid)

    def _write_resolv(self, pod: Mapping[str, Any], uid: str) -> list[runtime.Event]:
        """Form the pod's resolv.conf in its directory, as the kubelet does per dnsPolicy; the events it warrants."""
        if self.dns is None or resolvconf.uses_host_file(pod):
            return []
        try:
            formed, path = resolvconf.pod_file(pod, self.dns, self.pod_dir(uid))
        except OSError as e:
            log.warning("cannot write the resolv.conf of %s: %s", runtime.pod_ref(pod), e)
            return []
        self._resolv[uid] = path
        return [runtime.Event(runtime.WARNING, reason, message) for reason, message in formed.events]

    async def _resolv_bind(self, uid: str, binds: list[launcher.Mount]) -> list[launcher.Mount]:
        """The bind of the pod's resolv.conf at /etc/resolv.conf, unless the container mounts its own there."""
        path = self._resolv.get(uid)
        if path is None or any(os.path.normpath(m.target) in ("/", "/etc", RESOLV_CONF) for m in binds):
            return []
        if self._mount_problem is None:
            self._mount_problem = await asyncio.to_thread(probe_mounts, self.unshare)
        # Without mount namespaces the container sees the host's file (never a reason to refuse it), nor is a
        # missing or dangling /etc/resolv.conf created on the host for it.
        if self._mount_problem or not os.path.exists(RESOLV_CONF):
            return []
        return [launcher.Mount(source=path, target=RESOLV_CONF, read_only=False)]

    def _with_ips(self, pod: Mapping[str, Any], ips: list[str]) -> Mapping[str, Any]:
        """The pod with the IPs its status will report: the first start comes before the first status write,
        and the kubelet takes the downward API's status.podIP/hostIP from the sandbox and the node."""
        status = {**(pod.get("status") or {}), "hostIP": self.host_ip, "hostIPs": [{"ip": self.host_ip}]}
        if ips:
            status["podIP"], status["podIPs"] = ips[0], [{"ip": ip} for ip in ips]
        return {**pod, "status": status}

    def _prepare(self, pod: Mapping[str, Any], c: Mapping[str, Any], *, cdir: str, stale: tuple[str, ...],
                 message_file: str) -> list[str]:
        """In a thread: the container's directory, no stale marker files, an empty termination message file,
        and its cgroups (the cgroup.procs files to join; _CgroupError when the kernel refuses a setting)."""
        os.makedirs(cdir, exist_ok=True)
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if message_file:
            with open(message_file, "w"):
                pass
            os.chmod(message_file, 0o666)  # as the kubelet leaves it: any user of the container may write it
        if self.cgroups is None:
            return []
        try:
            return self.cgroups.create(pod, c)
        except OSError as e:
            raise _CgroupError() from e

    async def _message_bind(self, c: Mapping[str, Any], binds: list[launcher.Mount], path: str) -> str:
        """Add the bind of a file at the container's terminationMessagePath; the file ("" when none), which
        _prepare creates empty.

        Without mount namespaces the container has no such file (its message stays empty) rather than
        a refusal to run: the message is a report, not part of the workload."""
        target = str(c.get("terminationMessagePath") or "")
        if not target or not self.unshare or any(os.path.normpath(m.target) == os.path.normpath(target)
                                                 for m in binds):
            return ""
        if self._mount_problem is None:
            self._mount_problem = await asyncio.to_thread(probe_mounts, self.unshare)
        if self._mount_problem:
            return ""
        binds.append(launcher.Mount(source=path, target=target, read_only=False))
        return path

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
                                               containerwatch.field_path(False, kill.name)))
            grace = kill.grace if kill.grace is not None else pod_grace if isinstance(pod_grace, int) else 30
            await self.containers.stop(r, grace=grace)
        if verdict.retry_after is not None:
            wake.append(verdict.retry_after)
        return {k.name for k in verdict.kills}

async def _drop(task: asyncio.Task[Any] | None) -> None:
    """Cancel a helper task whose result is no longer wanted and wait for it to end."""
    if task is not None:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class _CgroupError(Exception):
    """The container's cgroup could not be set up (its cause is the OSError)."""


def _has_limits(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any((c.get("resources") or {}).get("limits") for key in ("containers", "initContainers")
               for c in spec.get(key) or [])


def _wake(result: runtime.SyncResult, wake: list[float]) -> None:
    if wake:
        result.retry_after = max(0.0, min(wake))
