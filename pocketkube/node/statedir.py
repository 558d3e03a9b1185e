"""Where a node agent keeps its pods' runtime state: a private directory on tmpfs, else one in its data dir."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import time

from pocketkube.network import podnet

log = logging.getLogger("pocketkube.node.statedir")

SHM = "/dev/shm"
MOUNTS = "/proc/mounts"
PREFIX = "pocketkube-"
# Inside a root on tmpfs: the data dir it belongs to, so a later agent can tell a dead cluster's leftover.
OWNER = ".data-dir"
# How old a root without its owner file must be to count as left over (see StateDir._sweep).
ORPHAN_SECONDS = 60.0


def _unescape(field: str) -> str:
    """A /proc/mounts field with its octal escapes (\\040 for a space) decoded."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mount_of(path: str, *, mounts: str = MOUNTS) -> tuple[str, set[str]]:
    """The file system type and mount options of the mount holding path (("", set()) when unknown)."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "", set()
    path = os.path.realpath(path)
    best, fstype, options = -1, "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        point = _unescape(fields[1])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        # The longest mount point holding path wins; of equal ones the last, which is mounted over the others.
        if inside and len(point) >= best:
            best, fstype, options = len(point), fields[2], fields[3]
    return fstype, set(options.split(",")) if options else set()


def usable(shm: str, *, mounts: str = MOUNTS) -> bool:
    """Whether shm is a directory this process may create in, on a tmpfs that allows executables.

    A /dev/shm that is a plain directory on disk saves nothing and would leave state outside the data
    dir; one mounted noexec (as in most containers) would make the scripts people keep in secret volumes
    unrunnable, which the kubelet's own tmpfs allows."""
    if not os.path.isdir(shm) or not os.access(shm, os.W_OK | os.X_OK):
        return False
    fstype, options = mount_of(shm, mounts=mounts)
    return fstype == "tmpfs" and "noexec" not in options


def choose(data_dir: str, *, shm: str = SHM, mounts: str = MOUNTS) -> str:
    """<shm>/pocketkube-<node id> when shm is usable, else <data_dir>/run."""
    if usable(shm, mounts=mounts):
        return os.path.join(shm, PREFIX + podnet.node_id(data_dir))
    return fallback(data_dir)


def fallback(data_dir: str) -> str:
    return os.path.join(data_dir, "run")


class StateDir:
    """One node's state root, like containerd's under /run: pods' resolv.conf, container marker files and
    memory-backed volumes. Nothing in it outlives the agent: its containers die with it."""

    def __init__(self, data_dir: str, *, root: str | None = None, shm: str = SHM, mounts: str = MOUNTS) -> None:
        self.data_dir = os.path.abspath(data_dir)
        self.shm = shm
        self.root = root if root is not None else choose(self.data_dir, shm=shm, mounts=mounts)
        self.mounts = mounts
        self.created = False
        # Whether the root is on tmpfs (known once reset): then it can hold the pods' own /dev/shm too.
        self.in_memory = False

    def pod(self, uid: str) -> str:
        """<root>/pods/<uid>: one pod's runtime state."""
        return os.path.join(self.root, "pods", uid)

    def reset(self) -> None:
        """In a thread, at the agent's first start: an empty root, 0700, without what a crashed agent left.

        Leftovers of clusters whose data dir is gone go too; when the root cannot be made (someone else's
        directory or link in the way), the data dir's fallback is used instead."""
        on_shm = os.path.dirname(self.root) == self.shm
        if on_shm:
            self._sweep()
        try:
            _make_private(self.root)
            if on_shm:
                with open(os.path.join(self.root, OWNER), "w", encoding="utf-8") as f:
                    f.write(self.data_dir)
        except OSError as e:
            log.warning("cannot use %s for the node's runtime state (%s); using the data dir", self.root, e)
            self.root = fallback(self.data_dir)
            _make_private(self.root)
        self.created = True
        self.in_memory = mount_of(self.root, mounts=self.mounts)[0] == "tmpfs"

    def remove_pod(self, uid: str) -> None:
        shutil.rmtree(self.pod(uid), ignore_errors=True)

    def remove(self) -> None:
        """Remove the whole root (the agent stops: its containers are gone)."""
        if self.created:
            shutil.rmtree(self.root, ignore_errors=True)
            self.created = False

    def _sweep(self) -> None:
        """Remove the roots on shm of agents whose data dir no longer exists (they crashed, then were deleted)."""
        try:
            names = [n for n in os.listdir(self.shm) if n.startswith(PREFIX)]
        except OSError:
            return
        for name in names:
            path = os.path.join(self.shm, name)
            try:
                with open(os.path.join(path, OWNER), encoding="utf-8") as f:
                    owner = f.read()
            except FileNotFoundError:
                # One being made gets its owner file at once; one without it for a minute was made again by work
                # still finishing in a thread as its agent stopped and removed it.
                with contextlib.suppress(OSError):
                    if time.time() - os.lstat(path).st_mtime > ORPHAN_SECONDS and not os.path.islink(path):
                        shutil.rmtree(path, ignore_errors=True)
                continue
            except OSError:
                continue  # not one of ours
            if owner and not os.path.exists(owner) and path != self.root:
                shutil.rmtree(path, ignore_errors=True)


def _make_private(root: str) -> None:
    """root as a new empty directory only its owner can enter (OSError when that cannot be)."""
    if os.path.islink(root):
        raise FileExistsError(f"{root} is a symbolic link")
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(os.path.dirname(root), exist_ok=True)
    os.mkdir(root, 0o700)
    os.chmod(root, 0o700)  # whatever the umask
