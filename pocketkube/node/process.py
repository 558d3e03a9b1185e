"""The process runtime: each container a local process group in its own mount namespace and cgroup."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.client import rest
from pocketkube.network import podnet, resolvconf
from pocketkube.node import (
    adoption,
    cgroups,
    containerio,
    containerstart,
    containerwatch,
    envvars,
    launcher,
    logrotate,
    podvolumes,
    probes,
    reaper,
    runtime,
    sandbox,
    statedir,
    volumes,
)

log = logging.getLogger("pocketkube.node.process")

# Names older callers and tests know this module by; the code lives in the modules named.
CONFIG_RETRY_SECONDS = containerstart.CONFIG_RETRY_SECONDS
REFRESH_SECONDS = podvolumes.REFRESH_SECONDS
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
                 dns: resolvconf.Settings | None = None, state_root: str | None = None) -> None:
        self.client = client
        self.data_dir = data_dir
        # Pods' sandbox files, container markers and memory-backed volumes: on tmpfs, as containerd's /run.
        self.state = statedir.StateDir(data_dir, root=state_root)
        self._state_ready: asyncio.Future[None] | None = None
        self.host_ip = host_ip
        self.allocatable = dict(allocatable or {})
        self.clock = clock or clock_mod.Clock()
        self.log_policy = log_policy or logrotate.policy_from_env()
        self._layout = cgroup_layout
        self._pids_limit = pids_limit
        self.cgroups: cgroups.Manager | None = None
        self._pods: dict[str, runtime.PodStatus] = {}
        self._reaper = reaper.Reaper()
        self.containers = containerwatch.Containers(clock=self.clock, reaper=self._reaper)
        self._runs = self.containers.runs
        self.sandboxes = sandbox.Sandboxes(pod_cidr=pod_cidr, host_ip=host_ip, run_dir=self.run_dir,
                                           network=network, dns=dns)
        self.volumes = podvolumes.PodVolumes(client, data_dir=data_dir, run_dir=self.run_dir,
                                             allocatable=self.allocatable, clock=self.clock)
        self.prober = probes.Prober()
        # The kubelet's service informer: service links come from its cache, not two API reads per container.
        self.services = envvars.ServiceCache(client, clock=self.clock) if isinstance(client, rest.Client) else None
        self.starter = containerstart.Starter(
            client, clock=self.clock, sandboxes=self.sandboxes, containers=self.containers, reaper=self._reaper,
            allocatable=self.allocatable, log_policy=self.log_policy, services=self.services, pod_dir=self.pod_dir,
            log_path=self.log_path, run_dir=self.run_dir)

    @property
    def network(self) -> podnet.PodNetwork | None:
        """The node's pod network, which the agent sets up and describes on its Node (None: pods share the host's)."""
        return self.sandboxes.network

    def set_notify(self, notify: Callable[[str], None]) -> None:
        self.containers.notify = notify

    def set_recorder(self, record: Callable[[Mapping[str, Any], runtime.Event], None]) -> None:
        self.containers.record = record

    def pod_status(self, uid: str) -> runtime.PodStatus | None:
        return self._pods.get(uid)

    def pod_dir(self, uid: str) -> str:
        """DATA_DIR/pods/<uid>: the pod's container logs and its volumes kept on disk."""
        return os.path.join(self.data_dir, "pods", uid)

    def run_dir(self, uid: str) -> str:
        """<state root>/pods/<uid>: the pod's resolv.conf, its containers' marker and termination message files
        and its memory-backed volumes (secret, projected, emptyDir of medium Memory)."""
        return self.state.pod(uid)

    def log_path(self, uid: str, container: str, restart: int) -> str:
        """Where one run of a container writes its stdout and stderr."""
        return os.path.join(self.pod_dir(uid), container, f"{restart}.log")

    def writing_log(self, uid: str, container: str) -> bool:
        """Whether the container's current run may still add to its log (it runs, or its output still drains)."""
        return (uid, container) in self._runs

    def env(self, uid: str, container: str) -> Mapping[str, str] | None:
        """The environment a running container was started with (None when it does not run)."""
        run = self._runs.get((uid, container))
        return run.probe_target.env if run is not None and run.proc.returncode is None else None

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
        if self._state_ready is None:
            # One reset however many pods sync at once: a second would empty the root under the first's pods.
            self._state_ready = asyncio.ensure_future(asyncio.to_thread(self.state.reset))
        await asyncio.shield(self._state_ready)
        self.sandboxes.private_shm = self.state.in_memory
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
            self.starter.cgroups = manager
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
            ips = self.sandboxes.ips_for(pod)
            own_netns = self.sandboxes.own_netns(pod)
            # The volumes' API reads overlap the sandbox's set-up (namespace, veth, resolv.conf) in a thread.
            vols = asyncio.get_running_loop().create_task(
                self.volumes.mounts(self.sandboxes.with_ips(pod, ips), uid, now=now), name=f"volumes-{uid}")
            try:
                resolv_events = await asyncio.to_thread(self._create_sandbox, pod, uid, ips[0] if own_netns else "",
                                                        ips)
            except podnet.NetworkError as e:
                await _drop(vols)
                self.sandboxes.ips.release(ips[0])
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
            mounts = await (vols if vols is not None else
                            self.volumes.mounts(self.sandboxes.with_ips(pod, ps.ips), uid, now=now))
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
            if killed:
                # The kill waited out a grace period: the restarted container starts (and its probes' initial
                # delay counts) from now, not from when this sync began.
                now = self.clock.now()
            for c in spec.get("containers") or []:
                if c.get("name") in killed:  # restart (or settle) what a failed probe killed, as for an exit
                    await self._step(pod, ps, c, init=False, policy=policy, mounts=mounts, now=now, result=result,
                                     wake=wake)
            self.prober.apply(pod, ps)
            if ps.containers and all(cs.state == runtime.TERMINATED and not _restarts(policy, cs)
                                     for cs in ps.containers.values()):
                # Every main container is done for good: stop the sidecars and tear the sandbox down. (One
                # that failed to start under restartPolicy Always is not: it restarts after back-off.)
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
        self.sandboxes.forget(uid)
        self.volumes.forget(uid)
        ps = self._pods.pop(uid, None)
        await self.sandboxes.remove(uid, ps.ips if ps is not None else [])
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.remove_pod, uid)
        await asyncio.to_thread(self._remove_dirs, uid)

    async def close(self) -> None:
        # Container processes live in their own sessions: without this they would outlive the agent.
        # First and synchronous (a second cancellation of the shutdown cannot skip it): the mount points made
        # on the host for containers (/dev/termination-log, /var/run/secrets/...) go with the agent.
        launcher.release_all_mount_points()
        await asyncio.gather(*(self.containers.stop(run, grace=2, pre_stop=False) for run in list(self._runs.values())),
                             return_exceptions=True)
        self._runs.clear()
        # Nothing in it is needed by the next start (restarts are counted from the logs, which stay on disk).
        self.state.remove()
        if self.cgroups is not None:
            await asyncio.to_thread(self.cgroups.clean, keep_root=False)
        if self.network is not None:
            self.network.close()
        if self.services is not None:
            await self.services.close()
        await self._reaper.close()

    def _create_sandbox(self, pod: Mapping[str, Any], uid: str, ip: str, ips: list[str]) -> list[runtime.Event]:
        """In a thread: the sandbox (Sandboxes.create) and the on-disk log directory of each container."""
        spec = pod.get("spec") or {}
        for key in ("initContainers", "containers"):
            for c in spec.get(key) or []:
                os.makedirs(os.path.join(self.pod_dir(uid), str(c.get("name") or "")), exist_ok=True)
        return self.sandboxes.create(pod, uid, ip, ips=ips)

    def _remove_dirs(self, uid: str) -> None:
        """In a thread: the pod's directory on disk (its logs, volumes) and in the state root."""
        shutil.rmtree(self.pod_dir(uid), ignore_errors=True)
        self.state.remove_pod(uid)

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
            try:
                await self.starter.start(pod, ps, c, cs, init=init, mounts=mounts, now=now, result=result)
            except BaseException:
                # Not a container's error (start() reports those) but ours: the reconcile's retry must start
                # it afresh, not find a status waiting for a start that nothing will make.
                if statuses.get(name) is cs:
                    del statuses[name]
                raise
        elif cs.state == runtime.TERMINATED and cs.termination is not None:
            term = cs.termination
            if not _restarts(policy, cs):
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
            await self.starter.start(pod, ps, c, cs, init=init, mounts=mounts, now=now, result=result)
        if cs.state == runtime.WAITING and cs.backoff_until is not None:
            wake.append(max(0.0, (cs.backoff_until - now).total_seconds()))
        elif cs.state == runtime.TERMINATED and _restarts(policy, cs):
            wake.append(0.0)  # it failed to start (StartError): the next sync restarts it, after back-off
        return cs

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
            self.containers.announce(pod, runtime.Event(runtime.NORMAL, "Killing", kill.message,
                                                        containerwatch.field_path(False, kill.name)), result.events)
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


def _has_limits(pod: Mapping[str, Any]) -> bool:
    spec = pod.get("spec") or {}
    return any((c.get("resources") or {}).get("limits") for key in ("containers", "initContainers")
               for c in spec.get(key) or [])


def _restarts(policy: str, cs: runtime.ContainerStatus) -> bool:
    """Whether the restart policy runs a terminated container again."""
    term = cs.termination
    return term is not None and (policy == "Always" or (policy == "OnFailure" and term.exit_code != 0))


def _wake(result: runtime.SyncResult, wake: list[float]) -> None:
    if wake:
        result.retry_after = max(0.0, min(wake))
