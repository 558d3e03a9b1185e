"""Read the host's facts (CPUs, memory, disk, OS, kernel, ids) for the Nodes the agents report."""

from __future__ import annotations

import os
import platform
import shutil
import socket

from pocketkube.node import nodes

# Go's GOARCH names, which Kubernetes uses in labels and nodeInfo.
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "arm",
         "ppc64le": "ppc64le", "s390x": "s390x", "riscv64": "riscv64", "i686": "386", "i386": "386"}


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def _os_image() -> str:
    for line in _read("/etc/os-release").splitlines():
        if line.startswith("PRETTY_NAME="):
            return line.split("=", 1)[1].strip().strip('"')
    return f"{platform.system()} {platform.release()}".strip()


def _cpu_millis() -> int:
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    return max(1, count) * 1000


def _memory_bytes() -> int:
    for line in _read("/proc/meminfo").splitlines():
        if line.startswith("MemTotal:"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1]) * 1024
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 1 << 30


def _storage_bytes(path: str) -> int:
    try:
        return shutil.disk_usage(path).total
    except OSError:
        return 10 << 30


def detect(data_dir: str = "/") -> nodes.Machine:
    """The machine this process runs on; disk capacity is that of the filesystem holding data_dir."""
    return nodes.Machine(
        hostname=socket.gethostname() or "localhost",
        cpu_millis=_cpu_millis(),
        memory_bytes=_memory_bytes(),
        storage_bytes=_storage_bytes(data_dir if os.path.isdir(data_dir) else "/"),
        os_image=_os_image(),
        kernel_version=platform.release(),
        architecture=_ARCH.get(platform.machine().lower(), platform.machine().lower() or "amd64"),
        operating_system=platform.system().lower() or "linux",
        boot_id=_read("/proc/sys/kernel/random/boot_id"),
        machine_id=_read("/etc/machine-id"),
        system_uuid=_read("/sys/class/dmi/id/product_uuid"),
    )
