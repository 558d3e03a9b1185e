"""Starting one run of a container: its image, env, mounts and files, cgroup, process and log pump."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.client import rest
from pocketkube.node import (
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
    sandbox,
    volumes,
)

CONFIG_RETRY_SECONDS = 2.0


class Starter:
    """Starts the containers of one process runtime, each run a process under the launcher with its log pump."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock, sandboxes: sandbox.Sandboxes,
                 containers: containerwatch.Containers, reaper: reaper.Reaper, allocatable: Mapping[str, str],
                 log_policy: logrotate.Policy, services: envvars.ServiceCache | None,
                 pod_dir: Callable[[str], str], log_path: Callable[[str, str, int], str],
                 run_dir: Callable[[str], str] | None = None) -> None:
        self.client = client
        self.clock = clock
        self.sandboxes = sandboxes
        self.containers = containers
        self._reaper = reaper
        self.allocatable = allocatable
        self.log_policy = log_policy
        # The kubelet's service informer: service links come from its cache, not two API reads per container.
        self.services = services
        self.pod_dir = pod_dir
        self.log_path = log_path
        # Where a pod's per-run marker and termination message files go: its state on tmpfs (default: pod_dir).
        self.run_dir = run_dir or pod_dir
        self.unshare = shutil.which("unshare")
        self.setsid = shutil.which("setsid")
        # Set once the runtime has found the cgroup hierarchy (its first sync).
        self.cgroups: cgroups.Manager | None = None
        # Why containers cannot have bind mounts here: None until a container first needs to know.
        self.mount_problem: str | None = None

    async def start(self, pod: Mapping[str, Any], ps: runtime.PodStatus, c: Mapping[str, Any],
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
            _wait(cs, reason, message, seconds=cs.backoff, now=now)
            return
        uid = ps.uid
        try:
            in_netns = bool(self.sandboxes.netns_path(uid))
            env = await envvars.resolve(self.client, self.sandboxes.with_ips(pod, ps.ips), c,
                                        allocatable=self.allocatable, in_pod_network=in_netns, services=self.services,
                                        cluster_domain=self.sandboxes.cluster_domain())
            binds = launcher.binds(pod, c, mounts)
            if binds and (problem := await self._why_no_mounts()):
                raise volumes.ConfigError(f"the process runtime cannot mount volumes for this container: "
                                          f"{problem}")
        except volumes.ConfigError as e:
            result.events.append(runtime.Event(runtime.WARNING, "Failed", f"Error: {e}", path))
            _wait(cs, "CreateContainerConfigError", str(e), seconds=CONFIG_RETRY_SECONDS, now=now)
            return
        binds += await self._pod_file_bind(self.sandboxes.resolv_file(uid), sandbox.RESOLV_CONF, binds)
        binds += await self._pod_file_bind(self.sandboxes.hosts_file(uid), sandbox.HOSTS, binds)
        binds += await self._shm_bind(pod, uid, binds)
        argv = [envvars.expand(a, env) for a in res.argv]
        cdir = os.path.join(self.run_dir(uid), name)
        links = await self._image_links(image, cdir, binds)
        binds += [launcher.Mount(source=source, target=target, read_only=False) for target, (source, _) in links.items()]
        # A container that ran before counts a restart now that it runs again.
        attempt = cs.restart_count + (1 if cs.container_id else 0)
        error_file = os.path.join(cdir, f"{attempt}.error")
        started_file = os.path.join(cdir, f"{attempt}.started")
        message_file = await self._message_bind(c, binds, os.path.join(cdir, f"{attempt}.termination-log"))
        try:
            # One trip to a thread for the container's files and cgroup: each trip costs more than the work.
            procs, batches = await asyncio.to_thread(
                self._prepare, pod, c, cdir=cdir, stale=(error_file, started_file), message_file=message_file,
                binds=binds, fstab=os.path.join(cdir, f"{attempt}.fstab"), links=list(links.values()))
        except _CgroupError as e:
            cs.termination = runtime.Termination(
                exit_code=launcher.START_ERROR_CODE, reason="StartError", finished_at=now, started_at=now,
                message=f"{launcher.OCI_PREFIX}failed to set up the container's cgroup: {e.__cause__}")
            cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
            return
        script = launcher.launcher(batches, working_dir=str(c.get("workingDir") or ""), error_file=error_file,
                                   started_file=started_file, cgroup_procs=procs)
        cmd = ["/bin/sh", "-c", script, "launcher", *argv]
        netns = self.sandboxes.netns_path(uid)  # every container of the pod shares its network namespace
        if binds and self.unshare:
            cmd = [self.unshare, "--mount", "--propagation", "private", "--", *cmd]
        targets = [m.target for m in binds]
        launcher.claim_mount_points(targets)
        stdio: containerio.Stdio | None = None
        try:
            stdio = containerio.Stdio.for_container(c)
            proc = await launcher.spawn(cmd, env=env, stdio=stdio, setsid=self.setsid, netns=netns,
                                        hostname=self.sandboxes.hostname(pod))
        except (OSError, subprocess.SubprocessError) as e:
            launcher.release_mount_points(targets)
            if stdio is not None:
                await stdio.close()
            cs.termination = runtime.Termination(exit_code=launcher.START_ERROR_CODE, reason="StartError",
                                                 finished_at=now, started_at=now, message=launcher.OCI_PREFIX + str(e))
            cs.state, cs.ready, cs.started = runtime.TERMINATED, False, False
            return
        except BaseException:
            # Cancelled (the pod is going away) or an unexpected failure: nothing runs on these mount points.
            launcher.release_mount_points(targets)
            if stdio is not None:
                await stdio.close()
            raise
        self._reaper.tell(f"+pg {proc.pid}", *(f"+cg {procs_file}" for procs_file in procs))
        if stdio is not None:
            stdio.started()
        tty = stdio is not None and stdio.tty
        output = stdio.output() if stdio is not None and tty else proc.stdout
        assert output is not None
        pump = asyncio.get_running_loop().create_task(
            logrotate.pump(output, path=self.log_path(uid, name, attempt), clock=self.clock,
                           policy=self.log_policy, stderr=None if tty else proc.stderr), name=f"log-{name}")
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
        self.containers.runs[(uid, name)] = run
        post_start = hooks.handler(c, hooks.POST_START)
        if post_start is not None:
            # Not running (nor started) until its postStart hook is done, as the kubelet reports it.
            cs.state, cs.ready, cs.started = runtime.WAITING, False, False
            run.post_start = asyncio.get_running_loop().create_task(
                self.containers.post_start(uid, cs, run, post_start), name=f"post-start-{name}")

    async def _why_no_mounts(self) -> str:
        """Why containers cannot have bind mounts here ("" when they can), found out when first needed."""
        if self.mount_problem is None:
            self.mount_problem = await asyncio.to_thread(launcher.probe_mounts, self.unshare)
        return self.mount_problem

    async def _pod_file_bind(self, path: str | None, target: str, binds: list[launcher.Mount]) -> list[launcher.Mount]:
        """The bind of a file the sandbox formed for the pod (its resolv.conf, its hosts file; None: none) at
        target, unless the container mounts its own there or above it."""
        parent = os.path.dirname(target)
        if path is None or any(os.path.normpath(m.target) in ("/", parent, target) for m in binds):
            return []
        # Without mount namespaces the container sees the host's file (never a reason to refuse it), nor is a
        # missing or dangling one created on the host for it.
        if await self._why_no_mounts() or not os.path.exists(target):
            return []
        return [launcher.Mount(source=path, target=target, read_only=False)]

    async def _image_links(self, image: str, cdir: str,
                           binds: list[launcher.Mount]) -> dict[str, tuple[str, list[tuple[str, str]]]]:
        """The image's directories of stdio links (images.Entry.stdio_links) to bind, each target mapped to the
        directory _prepare fills with the links and to those links; none that a volume mount hides."""
        dirs = images.stdio_link_dirs(image)
        if not dirs or await self._why_no_mounts():
            return {}
        out = {}
        for target, files in dirs.items():
            if any(target == os.path.normpath(m.target) or target.startswith(os.path.normpath(m.target) + os.sep)
                   or os.path.normpath(m.target) == "/" for m in binds):
                continue  # a volume mounted there or above replaces the image's files, as in Docker
            if os.path.isdir(target):
                out[target] = (os.path.join(cdir, "image" + target), files)
        return out

    async def _shm_bind(self, pod: Mapping[str, Any], uid: str, binds: list[launcher.Mount]) -> list[launcher.Mount]:
        """The bind of the pod's own /dev/shm, unless the container mounts something there (an emptyDir of medium
        Memory, commonly) or above it."""
        path = self.sandboxes.shm_dir(pod, uid)
        if path is None or any(os.path.normpath(m.target) in ("/", "/dev") or
                               (os.path.normpath(m.target) + "/").startswith(sandbox.SHM + "/") for m in binds):
            return []
        if await self._why_no_mounts() or not os.path.isdir(sandbox.SHM) or not os.path.isdir(path):
            return []
        # Last: it covers the state root, where the other binds' sources are.
        return [launcher.Mount(source=path, target=sandbox.SHM, read_only=False, last=True)]

    def _prepare(self, pod: Mapping[str, Any], c: Mapping[str, Any], *, cdir: str, stale: tuple[str, ...],
                 message_file: str, binds: list[launcher.Mount], fstab: str,
                 links: Sequence[tuple[str, list[tuple[str, str]]]] = ()) -> tuple[list[str], list[launcher.Batch]]:
        """In a thread: the container's directory, no stale marker files, an empty termination message file,
        the image's stdio links (links: directory and its (name, target) pairs), the binds' plan and fstab files
        (fstab: the first one's path), and its cgroups (the cgroup.procs files
        to join; _CgroupError when the kernel refuses a setting)."""
        os.makedirs(cdir, exist_ok=True)
        for path in stale:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        if message_file:
            with open(message_file, "w"):
                pass
            os.chmod(message_file, 0o666)  # as the kubelet leaves it: any user of the container may write it
        for directory, files in links:
            os.makedirs(directory, exist_ok=True)
            for file_name, target in files:
                link = os.path.join(directory, file_name)
                if not os.path.islink(link):
                    os.symlink(target, link)
        batches = launcher.write_fstabs(binds, fstab=fstab)
        if self.cgroups is None:
            return [], batches
        try:
            return self.cgroups.create(pod, c), batches
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
        if await self._why_no_mounts():
            return ""
        binds.append(launcher.Mount(source=path, target=target, read_only=False))
        return path


def _wait(cs: runtime.ContainerStatus, reason: str, message: str, *, seconds: float,
          now: datetime.datetime) -> None:
    """Leave the container waiting with the kubelet's reason, to be tried again in seconds."""
    cs.state, cs.reason, cs.message = runtime.WAITING, reason, message
    cs.ready = cs.started = False
    cs.backoff_until = now + datetime.timedelta(seconds=seconds)


class _CgroupError(Exception):
    """The container's cgroup could not be set up (its cause is the OSError)."""
