"""How a container process is set up: its bind mounts, the launcher shell, mount point bookkeeping, parent-death signal."""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import functools
import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Collection, Mapping
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
    # Bound after every other mount: it covers the sources of others (the pod's /dev/shm covers the state root).
    last: bool = False


@dataclasses.dataclass(frozen=True)
class Batch:
    """Binds whose mount points can all be made before any of them is mounted: none lies in another's target.

    The ones in table are bound by one `mount -a -T fstab` (write_fstabs writes it), the rest one by one."""

    mounts: tuple[Mount, ...]
    fstab: str = ""
    table: tuple[Mount, ...] = ()


def plan(mounts: list[Mount], *, fstab: str, mounted: Collection[str] = ()) -> list[Batch]:
    """The binds in batches by depth, so a mount inside another one's target lands on top of it.

    fstab is the path of the first batch's fstab file ("" for none: every bind its own mount). libmount's
    `mount -a` skips an entry whose target already has the same source mounted, whatever its options (a
    read-only bind would stay writable), so mounted (the targets it would take for mounted already) are bound one by one."""
    batches: list[list[Mount]] = []
    level: dict[str, int] = {}
    for m in sorted((m for m in mounts if not m.last), key=lambda m: os.path.normpath(m.target).count("/")):
        # The batch after the last one mounting a target that encloses m's (those come first, being shallower).
        n = max((lv + 1 for t, lv in level.items() if _within(m.target, t)), default=0)
        level[m.target] = n
        if n == len(batches):
            batches.append([])
        batches[n].append(m)
    if any(m.last for m in mounts):
        if not batches:
            batches.append([])
        batches[-1] += [m for m in mounts if m.last]
    out = []
    for i, batch in enumerate(batches):
        table = [m for m in batch if m.target not in mounted] if fstab else []
        # One plain bind is one process either way: the file only pays when it saves processes.
        if len(table) == 1 and not table[0].read_only:
            table = []
        out.append(Batch(mounts=tuple(batch), fstab=(fstab if i == 0 else f"{fstab}.{i}") if table else "",
                         table=tuple(table)))
    return out


def _within(path: str, top: str) -> bool:
    path, top = os.path.normpath(path), os.path.normpath(top)
    return path == top or path.startswith(top.rstrip("/") + "/")


def fstab_line(m: Mount) -> str:
    """m as a line of fstab(5), its paths escaped as libmount reads them back."""
    return f"{_fstab_escape(m.source)} {_fstab_escape(m.target)} none {'bind,ro' if m.read_only else 'bind'} 0 0\n"


def _fstab_escape(path: str) -> str:
    # Backslash first, so the escapes added after it stay as they are. libmount splits fields at any
    # isspace() character, and '#' would start a comment.
    for ch in "\\ \t\n\r\v\f#":
        path = path.replace(ch, f"\\{ord(ch):03o}")
    return path


def mount_table(text: str) -> dict[str, tuple[str, str]]:
    """A mountinfo text as mount point -> (device, root within its file system) of the mount on top there."""
    table = {}
    for line in text.splitlines():
        fields = line.split(" ", 5)
        if len(fields) > 4:
            root, point = (_OCTAL.sub(lambda o: chr(int(o.group(1), 8)), p) if "\\" in p else p for p in fields[3:5])
            table[point] = (fields[2], root)  # later lines are mounted over earlier ones
    return table


def mount_points() -> dict[str, tuple[str, str]]:
    """The mount table of this process's mount namespace (a container's starts as a copy of it)."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        return mount_table(f.read())


def fs_root(path: str, table: dict[str, tuple[str, str]]) -> tuple[str, str]:
    """The (device, path within its file system) of a resolved path, from the mount holding it."""
    point = path
    while point not in table:
        parent = os.path.dirname(point)
        if parent == point:
            return "", path
        point = parent
    dev, root = table[point]
    rest = os.path.relpath(path, point)
    return dev, os.path.normpath(os.path.join(root, rest)) if rest != "." else root


def skipped_by_mount_all(m: Mount, table: dict[str, tuple[str, str]]) -> bool:
    """Whether `mount -a` would take m's target for mounted already: the same file system and root (m's source)
    mounted there, which libmount checks whatever the options are."""
    target = os.path.realpath(m.target)
    return target in table and table[target] == fs_root(os.path.realpath(m.source), table)


_OCTAL = re.compile(r"\\([0-7]{3})")


def write_fstabs(mounts: list[Mount], *, fstab: str) -> list[Batch]:
    """Plan the binds and write the plan's fstab files (a regular file: `mount -T` cannot parse a pipe).

    In a thread: it reads the mount table and resolves the targets' symlinks as mount(8) does."""
    if not mounts:
        return []
    try:
        table = mount_points()
    except OSError:
        fstab = ""  # without the mount table no entry is known not to be skipped: bind each on its own
        table = {}
    mounted = {m.target for m in mounts if skipped_by_mount_all(m, table)}
    batches = plan(mounts, fstab=fstab, mounted=mounted)
    for b in batches:
        if b.fstab:
            with open(b.fstab, "w", encoding="utf-8", errors="surrogateescape") as f:
                f.write("".join(fstab_line(m) for m in b.table))
    return batches


def launcher(batches: list[Batch], *, working_dir: str, error_file: str, started_file: str,
             cgroup_procs: list[str] | None = None) -> str:
    """The shell that sets a container up (cgroups, mounts, working dir, command lookup) and execs its argv ("$@").

    It joins the container's cgroups first, so everything it becomes or starts is limited and counted.
    Anything failing before the exec is written to error_file and ends the launcher with 128, so a
    container never runs without its volumes or limits; started_file marks that the exec happened.
    Only builtins run when mount points exist: each program started costs more than the container's start.
    The two files are reached through a descriptor of their directory (fd 9, closed for the command), which a
    mount over it (the pod's /dev/shm over the state root) does not hide."""
    q = shlex.quote
    marks = "/proc/self/fd/9/"
    error_at, started_at = q(marks + os.path.basename(error_file)), q(marks + os.path.basename(started_file))
    lines = [f"exec 9< {q(os.path.dirname(error_file) or '.')} || exit {START_ERROR_CODE}",
             f"fail() {{ printf '%s\\n' \"$1\" > {error_at}; exit {START_ERROR_CODE}; }}"]
    for procs in cgroup_procs or []:
        msg = f"failed to join cgroup: cannot write {procs}"
        lines.append(f"echo $$ > {q(procs)} || fail {q(OCI_PREFIX + msg)}")
    for b in batches:
        lines += [_mount_point(m) for m in b.mounts]
        if b.table:
            # Any failure (32: none mounted, 64: some) binds them again one by one for the precise error;
            # binding again the ones that were mounted only stacks the same source.
            fallback = "; ".join(_bind(m) for m in b.table)
            lines.append(f"mount -a -n -T {q(b.fstab)} 2>/dev/null || {{ {fallback}; }}")
        lines += [_bind(m) for m in b.mounts if m not in b.table]
    if working_dir:
        msg = f'chdir to cwd ("{working_dir}") set in config.json failed: no such file or directory'
        wd = q(working_dir)
        lines.append(f"{{ [ -d {wd} ] || mkdir -p {wd}; }} && cd {wd} || fail {q(OCI_PREFIX + msg)}")
    lines.append('command -v "$1" >/dev/null 2>&1 || fail "' + OCI_PREFIX.replace('"', '\\"')
                 + 'exec: \\"$1\\": executable file not found in \\$PATH: unknown"')
    lines.append(f": > {started_at}")
    lines.append('exec "$@" 9<&-')
    return "\n".join(lines) + "\n"


def _mount_point(m: Mount) -> str:
    """The shell making m's mount point: a directory for a directory, else an empty file (and its parents)."""
    q = shlex.quote
    src, dst = q(m.source), q(m.target)
    parent = q(os.path.dirname(os.path.normpath(m.target)) or ".")
    return (f"if [ -d {src} ]; then [ -d {dst} ] || mkdir -p {dst}; "
            f"else [ -e {dst} ] || {{ {{ [ -d {parent} ] || mkdir -p {parent}; }} && : > {dst}; }}; fi "
            f"|| fail {q(f'error mounting {m.source!r} to rootfs at {m.target!r}: cannot create mount point')}")


def _bind(m: Mount) -> str:
    """The shell binding m with mount(8), read-only with a second call, failing with runc's message."""
    q = shlex.quote
    src, dst = q(m.source), q(m.target)
    line = f"mount --bind {src} {dst} || fail {q(f'error mounting {m.source!r} to rootfs at {m.target!r}: bind mount failed')}"
    if m.read_only:
        line += f"; mount -o remount,bind,ro {dst} || fail {q(f'error mounting {m.target!r} read-only: remount failed')}"
    return line


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
                setsid: str | None, netns: str | None = None, hostname: str | None = None) -> spawn_mod.Process:
    """Start a container's process in a session of its own, its stdin /dev/null, a pipe or its terminal, in the
    pod's network namespace at path netns and a UTS namespace named hostname when given.

    Without a terminal its stdout and stderr are two pipes, kept apart in its log and for attach, as kube does."""
    _must_exist(cmd[0], env)
    if stdio is None or not stdio.tty:
        stdin = subprocess.DEVNULL if stdio is None else stdio.child_stdin
        return await spawn_mod.start(die_with_agent(cmd), stdin=stdin, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env, cwd="/", start_new_session=True, netns=netns,
                                     hostname=hostname)
    # setsid makes the pty on its stdin the new session's controlling terminal (job control, ^C), as runc does.
    tty = stdio.child_stdin
    if setsid:
        cmd = [setsid, "--ctty", *cmd]
    return await spawn_mod.start(die_with_agent(cmd), stdin=tty, stdout=tty, stderr=tty, env=env, cwd="/",
                                 start_new_session=not setsid, netns=netns, hostname=hostname)
