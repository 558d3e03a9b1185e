"""Specification of the process runtime's image catalogue: which local program stands in for an image."""

from __future__ import annotations

import pytest

from pocketkube.node import images

ALL = {"python3", "busybox", "nginx", "redis-server", "postgres", "sleep"}
PG = ("sh", images.os.path.join(images.ENTRYPOINTS, "postgres.sh"))


def _which(installed):
    return lambda prog: f"/usr/bin/{prog}" if prog in installed else None


@pytest.mark.parametrize("ref,want", [
    ("nginx", "docker.io/library/nginx"),
    ("nginx:1.25", "docker.io/library/nginx"),
    ("python:3.11-slim", "docker.io/library/python"),
    ("library/redis:7", "docker.io/library/redis"),
    ("index.docker.io/library/busybox:1.36", "docker.io/library/busybox"),
    ("registry.k8s.io/pause:3.10", "registry.k8s.io/pause"),
    ("localhost:5000/app:1", "localhost:5000/app"),
    ("postgres@sha256:abc", "docker.io/library/postgres"),
])
def test_repository(ref, want):
    """The repository of a reference drops tag and digest and is fully qualified."""
    assert images.repository(ref) == want


@pytest.mark.parametrize("container,installed,argv", [
    ({"image": "anything:1", "command": ["sh", "-c"], "args": ["echo hi"]}, set(), ("sh", "-c", "echo hi")),
    ({"image": "python:3.11", "args": ["python3", "-c", "print(1)"]}, ALL, ("python3", "-c", "print(1)")),
    # The python image has no entrypoint: args alone are the command, exactly as on a real node.
    ({"image": "python:3.11", "args": ["-c", "print(1)"]}, ALL, ("-c", "print(1)")),
    ({"image": "python:3.11"}, ALL, ("python3",)),
    ({"image": "busybox"}, ALL, ("busybox", "sh")),
    ({"image": "busybox:1.36", "args": ["sleep", "5"]}, ALL, ("busybox", "sleep", "5")),
    ({"image": "nginx:1.25"}, ALL, ("nginx", "-g", "daemon off;")),
    ({"image": "redis:7"}, ALL, ("redis-server",)),
    ({"image": "redis:7", "args": ["--port", "7000"]}, ALL, ("redis-server", "--port", "7000")),
    # The postgres image's entrypoint script (initdb, then the server as non-root) puts "postgres" before -args.
    ({"image": "postgres:16", "args": ["-c", "fsync=off"]}, ALL, (*PG, "-c", "fsync=off")),
    ({"image": "postgres:16"}, ALL, (*PG, "postgres")),
    ({"image": "registry.k8s.io/pause:3.10"}, ALL, ("sleep", "infinity")),
])
def test_resolve(container, installed, argv):
    """A command replaces entrypoint and cmd; args replace only the cmd, as in Docker."""
    got = images.resolve(container, which=_which(installed))
    assert got.error == "" and got.argv == argv


@pytest.mark.parametrize("image,installed,needle", [
    ("busybox", set(), "install 'busybox'"),
    ("nginx:1.25", {"python3"}, "install 'nginx'"),
    ("example.com/team/app:1", ALL, "set the container's command to a program installed on this host"),
])
def test_unavailable_images(image, installed, needle):
    """An image without its program (or unknown) is refused with how to make it available."""
    got = images.resolve({"image": image}, which=_which(installed))
    assert got.argv == () and needle in got.error and f'image "{image}" is not available' in got.error


@pytest.mark.parametrize("image,want", [
    ("nginx:1.27", {"/var/log/nginx": [("access.log", "/dev/stdout"), ("error.log", "/dev/stderr")]}),
    ("docker.io/library/nginx@sha256:" + "0" * 64, {"/var/log/nginx": [("access.log", "/dev/stdout"),
                                                                        ("error.log", "/dev/stderr")]}),
    ("python:3.12", {}),
    ("example.com/unknown:1", {}),
])
def test_stdio_link_dirs(image, want):
    """Images whose official build links log files to stdout/stderr say so per directory; others have none."""
    assert images.stdio_link_dirs(image) == want
