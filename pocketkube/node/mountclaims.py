"""Mount points shared by every pocketkube process on the host: who uses which, so none is removed under another."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Iterable, Iterator

# A mount point on the host filesystem backs bind mounts in the containers of every pocketkube process (test
# clusters run side by side): unlinking it detaches those mounts in all of them. Each process publishes the
# targets its containers mount; a mount point is removed only when no live process claims anything under it.


def claims_dir() -> str:
    """Where the claims live: /run/pocketkube/mountpoints as root, else under the temporary directory."""
    base = "/run/pocketkube" if os.geteuid() == 0 and os.path.isdir("/run") else \
        os.path.join(tempfile.gettempdir(), f"pocketkube-{os.geteuid()}")
    return os.path.join(base, "mountpoints")


@contextlib.contextmanager
def locked(directory: str | None = None) -> Iterator[str]:
    """Hold the host-wide claims lock; yields the claims directory."""
    d = directory or claims_dir()
    os.makedirs(d, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(d, ".lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield d
    finally:
        os.close(fd)


def publish(directory: str, targets: Iterable[str], *, pid: int | None = None) -> None:
    """Record (replace) the targets this process mounts; call with the lock held."""
    pid = pid or os.getpid()
    path = os.path.join(directory, str(pid))
    wanted = sorted(set(targets))
    if not wanted:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("\n".join(wanted) + "\n")
    os.replace(tmp, path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def claimed_by_others(directory: str, top: str, *, pid: int | None = None) -> bool:
    """Whether a live process other than this one mounts top or something under it; call with the lock held.

    Claims of dead processes are removed on the way."""
    me = pid or os.getpid()
    top = os.path.normpath(top)
    for name in os.listdir(directory):
        if not name.isdigit() or int(name) == me:
            continue
        path = os.path.join(directory, name)
        if not _alive(int(name)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        try:
            with open(path) as f:
                targets = f.read().split("\n")
        except FileNotFoundError:
            continue
        if any(t == top or t.startswith(top + os.sep) for t in targets if t):
            return True
    return False


def _made_path(directory: str) -> str:
    return os.path.join(directory, "made")


def made(directory: str) -> set[str]:
    """The mount points some pocketkube process created on the host; call with the lock held."""
    try:
        with open(_made_path(directory)) as f:
            return {line for line in f.read().split("\n") if line}
    except FileNotFoundError:
        return set()


def set_made(directory: str, tops: Iterable[str]) -> None:
    """Replace the list of created mount points (whoever releases last removes them); call with the lock held."""
    path = _made_path(directory)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write("".join(f"{t}\n" for t in sorted(set(tops))))
    os.replace(tmp, path)
