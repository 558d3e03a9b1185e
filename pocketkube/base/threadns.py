"""The calling thread in a pod's network namespace or a new UTS namespace for a while, then back home."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger("pocketkube.base.threadns")

CLONE_NEWNET = 0x40000000
CLONE_NEWUTS = 0x04000000
FLAGS = {"net": CLONE_NEWNET, "uts": CLONE_NEWUTS}

# Threads that could not return to the process's own namespaces (see go_home).
_stranded: set[int] = set()
# Whether a UTS namespace was refused once (not root): then containers keep the host's name, said once.
_uts_refused: list[str] = []


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(fd: int, nstype: int) -> None:
    """Move the calling thread into the namespace open at fd (os.setns arrived in Python 3.12)."""
    native = getattr(os, "setns", None)
    if native is not None:
        native(fd, nstype)
    else:
        _check(_libc().setns(fd, nstype), "setns")


def unshare(flags: int) -> None:
    """Give the calling thread new namespaces of the kinds in flags (os.unshare arrived in Python 3.12)."""
    native = getattr(os, "unshare", None)
    if native is not None:
        native(flags)
    else:
        _check(_libc().unshare(flags), "unshare")


@functools.cache
def own(kind: str) -> int:
    """A descriptor of the process's own namespace of kind ("net", "uts"), which threads go back to."""
    return os.open(f"/proc/self/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)


def go_home(kinds: tuple[str, ...] = ("net", "uts")) -> None:
    """Return the calling thread to the process's own namespaces of kinds.

    A thread left in a pod's namespace would do its next work there, so one that could not go back is
    remembered, and ensure_home raises on it until it is back."""
    tid = threading.get_ident()
    try:
        for kind in kinds:
            setns(own(kind), FLAGS[kind])
    except OSError as e:
        _stranded.add(tid)
        log.error("a thread could not return to the agent's own %s namespace: %s", kind, e)
        raise
    _stranded.discard(tid)


def ensure_home() -> None:
    """Raise OSError if the calling thread is still stranded in another namespace (after trying once more)."""
    if threading.get_ident() in _stranded:
        go_home()


@contextlib.contextmanager
def entered(*, netns: str | None = None, hostname: str | None = None) -> Iterator[None]:
    """The calling thread in the network namespace at path netns and in a UTS namespace of its own named
    hostname (each when given) for the block, then back in the process's own.

    Both are per thread (a mount namespace is not), and a child started meanwhile keeps them: that is how a
    container starts in its pod's namespaces without an nsenter process. Without the right to make a UTS
    namespace (not root) the hostname is skipped, once said, as pods then share the host's name."""
    ensure_home()
    kinds: list[str] = []
    try:
        if netns:
            own("net")  # opened while the thread is still home
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                setns(fd, CLONE_NEWNET)
            finally:
                os.close(fd)
            kinds.append("net")
        if hostname:
            own("uts")
            try:
                unshare(CLONE_NEWUTS)
            except PermissionError as e:
                if not _uts_refused:
                    _uts_refused.append(str(e))
                    log.warning("containers keep the host's hostname: a UTS namespace was refused (%s)", e)
            else:
                kinds.append("uts")
                socket.sethostname(hostname)
        yield
    finally:
        if kinds:
            # A child started in the block is where it should be; a thread that cannot go back is remembered.
            with contextlib.suppress(OSError):
                go_home(tuple(kinds))
