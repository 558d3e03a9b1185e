"""The process runtime's image catalogue: which local program stands in for an image reference."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from collections.abc import Callable, Mapping
from typing import Any

Which = Callable[[str], "str | None"]

# The pause image sleeps until it is signalled, like the real one.
PAUSE_ARGV = ("sleep", "infinity")


@dataclasses.dataclass(frozen=True)
class Entry:
    """An image family: its repository names, the program it needs and its default entrypoint and cmd."""

    repos: tuple[str, ...]
    program: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...] = ()
    # The image's entrypoint script puts the program in front of args that start with "-".
    dash_args: bool = False
    # Where the program lives when it is not on PATH (Debian keeps PostgreSQL's in versioned directories).
    search: tuple[str, ...] = ()
    # Files of the image that are symlinks to the container's stdout or stderr (path, /dev/stdout|/dev/stderr),
    # as official images point their log files there so that the logs reach `kubectl logs`.
    stdio_links: tuple[tuple[str, str], ...] = ()


# Entrypoint scripts shipped with pocketkube for images whose official entrypoint does real work.
ENTRYPOINTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "entrypoints")


# Entrypoints and cmds as the official images define them, mapped to programs on this host.
CATALOGUE = (
    Entry(("docker.io/library/python",), "python3", (), ("python3",)),
    Entry(("docker.io/library/busybox", "registry.k8s.io/busybox", "registry.k8s.io/e2e-test-images/busybox"),
          "busybox", ("busybox",), ("sh",)),
    Entry(("docker.io/library/nginx",), "nginx", (), ("nginx", "-g", "daemon off;"),
          stdio_links=(("/var/log/nginx/access.log", "/dev/stdout"), ("/var/log/nginx/error.log", "/dev/stderr"))),
    Entry(("docker.io/library/redis",), "redis-server", (), ("redis-server",), dash_args=True),
    # docker-entrypoint.sh postgres: initdb on an empty PGDATA, then the server as the postgres user.
    Entry(("docker.io/library/postgres",), "postgres", ("sh", os.path.join(ENTRYPOINTS, "postgres.sh")),
          ("postgres",), search=("/usr/lib/postgresql/*/bin",)),
    Entry(("registry.k8s.io/pause", "k8s.gcr.io/pause"), "sleep", PAUSE_ARGV, ()),
)


@dataclasses.dataclass(frozen=True)
class Resolution:
    """The argv to run for a container, or why its image cannot be used here (error non-empty)."""

    argv: tuple[str, ...] = ()
    error: str = ""


def repository(ref: str) -> str:
    """The repository of an image reference without tag or digest: nginx:1.25 -> docker.io/library/nginx."""
    name = ref.strip().split("@", 1)[0]
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{first}"
    elif not ("." in first or ":" in first or first == "localhost"):
        name = f"docker.io/{name}"
    elif first == "index.docker.io":
        name = f"docker.io/{rest}"
    last = name.rsplit("/", 1)
    if ":" in last[-1]:
        name = name.rsplit(":", 1)[0]
    return name


def lookup(ref: str) -> Entry | None:
    """The catalogue entry for an image reference, or None for an image this host cannot stand in for."""
    repo = repository(ref)
    for entry in CATALOGUE:
        if repo in entry.repos:
            return entry
    return None


def unavailable(ref: str, program: str = "") -> str:
    """The pull-failure message for an image with no local stand-in: how to make it available."""
    if program:
        how = f"install {program!r} on this host (it must be on PATH), or set the container's command"
    else:
        how = "set the container's command to a program installed on this host"
    return (f'image "{ref}" is not available: the process runtime runs images as local programs; '
            f"to make it available, {how}")


def resolve(container: Mapping[str, Any], *, which: Which | None = None) -> Resolution:
    """The argv of a container as the runtime would exec it: command+args, else the image's entrypoint+cmd.

    As in Docker, args replace the image's cmd and a command replaces both entrypoint and cmd."""
    find = which or shutil.which
    image = str(container.get("image") or "")
    command = [str(a) for a in container.get("command") or []]
    args = [str(a) for a in container.get("args") or []]
    if command:
        return Resolution(argv=tuple(command + args))
    entry = lookup(image)
    if entry is None:
        return Resolution(error=unavailable(image))
    if find(entry.program) is None and not _found_in(entry):
        return Resolution(error=unavailable(image, entry.program))
    if args and entry.dash_args and args[0].startswith("-"):
        args = [entry.program, *args]
    return Resolution(argv=(*entry.entrypoint, *(args or entry.cmd)))


def _found_in(entry: Entry) -> bool:
    return any(os.access(os.path.join(d, entry.program), os.X_OK) for pattern in entry.search
               for d in glob.glob(pattern))


def stdio_link_dirs(ref: str) -> dict[str, list[tuple[str, str]]]:
    """The image's directories holding stdio links, each with its (file name, link target) pairs."""
    entry = lookup(ref)
    dirs: dict[str, list[tuple[str, str]]] = {}
    for path, target in entry.stdio_links if entry is not None else ():
        dirs.setdefault(os.path.dirname(path), []).append((os.path.basename(path), target))
    return dirs
