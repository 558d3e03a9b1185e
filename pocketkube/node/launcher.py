"""How a container process is set up: its bind mounts, the launcher shell, mount point bookkeeping, parent-death signal."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import functools
import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from typing import Any

from pocketkube.node import containerio, mountclaims, volumes
from pocketkube.node import spawn as spawn_mod

START_ERROR_CODE = 128
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
    """Note targets as in use (here and host-wide), remembering the directories the launcher will create."""
    with mountclaims.locked() as d:
        made = mountclaims.made(d)
        for t in targets:
            top = missing_top(t)
            if top is not None:
                _MADE.add(top)
                made.add(top)
            _IN_USE[os.path.normpath(t)] += 1
        mountclaims.publish(d, _IN_USE)
        mountclaims.set_made(d, made)


def release_mount_points(targets: list[str]) -> None:
    """Forget targets; remove created mount points that no process mounts any more (only empty ones)."""
    for t in targets:
        t = os.path.normpath(t)
        _IN_USE[t] -= 1
        if _IN_USE[t] <= 0:
            del _IN_USE[t]
    _remove_unclaimed()


def release_all_mount_points() -> None:
    """Remove every mount point this process made that no other process uses (only empty ones), at shutdown.

    Synchronous so no cancellation of the shutdown skips it; the containers' own mounts are in their
    namespaces and go with them."""
    _IN_USE.clear()
    _remove_unclaimed()


def _remove_unclaimed() -> None:
    with mountclaims.locked() as d:
        mountclaims.publish(d, _IN_USE)
        made = mountclaims.made(d)
        # Ours and those another process made and left to whoever releases last.
        for top in sorted(_MADE | made):
            if any(t == top or t.startswith(top + os.sep) for t in _IN_USE):
                continue
            if mountclaims.claimed_by_others(d, top):
                continue  # another pocketkube's containers still mount it
            _MADE.discard(top)
            made.discard(top)
            _remove_empty(top)
        mountclaims.set_made(d, made)


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


def binds(pod: Mapping[str, Any], c: Mapping[str, Any], mounts: Mapping[str, str]) -> list[Mount]:
    """The container's volumeMounts as bind mounts of the materialised volumes (read-only where kube forces it)."""
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


def die_with_agent(cmd: list[str]) -> list[str]:
    """cmd under `setpriv --pdeathsig KILL`: the container gets SIGKILL when the agent ends, however it ends.

    A preexec function would do it without a program, but it forces fork over vfork, and a fork of the
    agent's big process stalls its event loop. The watchdog covers the instant before setpriv runs."""
    setpriv = _setpriv()
    return [setpriv, "--pdeathsig", "KILL", *cmd] if setpriv else cmd


@functools.cache
def _setpriv() -> str | None:
    return shutil.which("setpriv")


def _must_exist(program: str, env: Mapping[str, str]) -> None:
    """Popen's error for a program not found (on the child's PATH), which setpriv would report as exit 127."""
    if shutil.which(program, path=os.pathsep.join(os.get_exec_path(dict(env)))) is None:
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), program)


async def spawn(cmd: list[str], *, env: Mapping[str, str], stdio: containerio.Stdio | None,
                setsid: str | None) -> spawn_mod.Process:
    """Start a container's process in a session of its own, its stdin /dev/null, a pipe or its terminal.

    Without a terminal its stdout and stderr are two pipes, kept apart in its log and for attach, as kube does."""
    _must_exist(cmd[0], env)
    if stdio is None or not stdio.tty:
        stdin = subprocess.DEVNULL if stdio is None else stdio.child_stdin
        return await spawn_mod.start(die_with_agent(cmd), stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd="/", start_new_session=True)
    # setsid makes the pty on its stdin the new session's controlling terminal (job control, ^C), as runc does.
    tty = stdio.child_stdin
    if setsid:
        cmd = [setsid, "--ctty", *cmd]
    return await spawn_mod.start(die_with_agent(cmd), stdin=tty, stdout=tty, stderr=tty, env=env, cwd="/",
                                 start_new_session=not setsid)
