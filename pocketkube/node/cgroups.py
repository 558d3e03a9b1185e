"""Container resource limits with Linux cgroups (v1 or v2): pod and container cgroups, OOM kills, usage."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from pocketkube.api import quantity

log = logging.getLogger("pocketkube.node.cgroups")

V1, V2 = "v1", "v2"
# The v1 controllers a container joins: limits (memory, cpu, pids) and CPU accounting (cpuacct).
V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids")
V2_CONTROLLERS = ("memory", "cpu", "pids")
# The kubelet's conversions (pkg/kubelet/cm/helpers_linux.go).
MIN_SHARES, MAX_SHARES = 2, 262144
SHARES_PER_CPU = 1024
QUOTA_PERIOD = 100_000
MIN_QUOTA = 1000
GUARANTEED, BURSTABLE, BEST_EFFORT = "Guaranteed", "Burstable", "BestEffort"
KUBEPODS = "kubepods"


@dataclasses.dataclass(frozen=True)
class Limits:
    """What one cgroup gets: memory bytes, CFS quota per period (None: unlimited), shares, pids."""

    memory: int | None = None
    cpu_quota: int | None = None
    cpu_period: int = QUOTA_PERIOD
    cpu_shares: int = MIN_SHARES
    pids: int | None = None


def _milli(resources: Mapping[str, Any], kind: str, name: str) -> int:
    raw = (resources.get(kind) or {}).get(name)
    if raw is None:
        return 0
    try:
        return max(0, quantity.parse(raw).milli_value())
    except ValueError:
        return 0


def milli_to_shares(milli: int) -> int:
    """cpu.shares for a CPU request in millicores (2 when there is none), as the kubelet computes them."""
    if milli == 0:
        return MIN_SHARES
    return max(MIN_SHARES, min(MAX_SHARES, milli * SHARES_PER_CPU // 1000))


def milli_to_quota(milli: int, period: int = QUOTA_PERIOD) -> int | None:
    """The CFS quota (µs per period) for a CPU limit in millicores; None when there is no limit."""
    if milli == 0:
        return None
    return max(MIN_QUOTA, milli * period // 1000)


def shares_to_weight(shares: int) -> int:
    """cgroup v2 cpu.weight for v1 cpu.shares (the mapping runc and the kubelet use)."""
    return 1 + ((max(MIN_SHARES, shares) - 2) * 9999) // 262142


def container_limits(container: Mapping[str, Any], *, pids: int | None = None) -> Limits:
    """A container's cgroup settings from resources.limits and requests (a lone CPU limit is the request too)."""
    res = container.get("resources") or {}
    mem = _milli(res, "limits", "memory") // 1000
    cpu_limit = _milli(res, "limits", "cpu")
    cpu_request = _milli(res, "requests", "cpu") or cpu_limit
    return Limits(memory=mem or None, cpu_quota=milli_to_quota(cpu_limit), cpu_shares=milli_to_shares(cpu_request),
                  pids=pids)


def pod_limits(pod: Mapping[str, Any], *, pids: int | None = None) -> Limits:
    """The pod cgroup: the sum of its containers' limits when every one has that limit, requests summed."""
    spec = pod.get("spec") or {}
    regular = list(spec.get("containers") or []) + [c for c in spec.get("initContainers") or []
                                                    if c.get("restartPolicy") == "Always"]
    init = [c for c in spec.get("initContainers") or [] if c.get("restartPolicy") != "Always"]
    each = [container_limits(c) for c in regular]
    firsts = [container_limits(c) for c in init]
    memory = cpu = None
    if each and all(lim.memory for lim in each + firsts):
        memory = max([sum(lim.memory or 0 for lim in each), *(lim.memory or 0 for lim in firsts)])
    if each and all(lim.cpu_quota for lim in each + firsts):
        cpu = max([sum(lim.cpu_quota or 0 for lim in each), *(lim.cpu_quota or 0 for lim in firsts)])
    requested = sum(_milli(c.get("resources") or {}, "requests", "cpu") or
                    _milli(c.get("resources") or {}, "limits", "cpu") for c in regular)
    return Limits(memory=memory, cpu_quota=cpu, cpu_shares=milli_to_shares(requested), pids=pids)


def qos_class(pod: Mapping[str, Any]) -> str:
    """status.qosClass as the API server set it, or computed the same way when missing."""
    reported = (pod.get("status") or {}).get("qosClass")
    if reported in (GUARANTEED, BURSTABLE, BEST_EFFORT):
        return str(reported)
    spec = pod.get("spec") or {}
    containers = list(spec.get("containers") or []) + list(spec.get("initContainers") or [])
    seen, guaranteed = False, bool(containers)
    for c in containers:
        res = c.get("resources") or {}
        limits, requests = res.get("limits") or {}, res.get("requests") or {}
        if limits or requests:
            seen = True
        for name in ("cpu", "memory"):
            lim, req = limits.get(name), requests.get(name, limits.get(name))
            if lim is None or req is None or quantity.compare(lim, req) != 0:
                guaranteed = False
    if not seen:
        return BEST_EFFORT
    return GUARANTEED if guaranteed else BURSTABLE


def pod_relpath(qos: str, uid: str) -> str:
    """Where a pod's cgroup sits under the runtime's root: kubepods[/burstable|/besteffort]/pod<uid>."""
    tier = {BURSTABLE: "burstable", BEST_EFFORT: "besteffort"}.get(qos, "")
    return os.path.join(KUBEPODS, tier, f"pod{uid}") if tier else os.path.join(KUBEPODS, f"pod{uid}")


# --- finding the hierarchy ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where this runtime makes cgroups: per controller (v1) or one directory (v2, key ""); or why it cannot."""

    version: str
    roots: Mapping[str, str]
    problem: str = ""


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def parse_mountinfo(text: str) -> list[tuple[str, str, str, set[str]]]:
    """Cgroup mounts from /proc/self/mountinfo: (mount point, mounted root, fs type, super options)."""
    out = []
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        if not sep:
            continue
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        out.append((_unescape(fields[4]), _unescape(fields[3]), tail[0], set(tail[2].split(","))))
    return out


def parse_self(text: str) -> dict[str, str]:
    """This process's cgroup per v1 controller, and its v2 cgroup under the key ""."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            out[ctrl.removeprefix("name=")] = parts[2]
    return out


def _inside(mount: str, root: str, path: str) -> str:
    rel = os.path.relpath(path, root) if path.startswith(root) else ""
    return os.path.normpath(os.path.join(mount, "" if rel == "." else rel))


def detect(name: str, *, mountinfo: str | None = None, self_cgroup: str | None = None,
           writable: bool | None = None) -> Layout:
    """Pick the cgroup hierarchy: v1 controllers where mounted (nested in our own cgroups), else v2.

    v1 cgroups go under the agent's own cgroup in each hierarchy, so whatever limits the agent sits in
    also bound its pods; v2 ones go under the hierarchy's root, the only place a process-holding parent
    may hand controllers down to children."""
    if mountinfo is None:
        mountinfo = _read("/proc/self/mountinfo")
    if self_cgroup is None:
        self_cgroup = _read("/proc/self/cgroup")
    mounts = parse_mountinfo(mountinfo)
    own = parse_self(self_cgroup)
    v1: dict[str, str] = {}
    for mount, root, fstype, opts in mounts:
        if fstype != "cgroup":
            continue
        for ctrl in V1_CONTROLLERS:
            if ctrl in opts and ctrl not in v1:
                v1[ctrl] = os.path.join(_inside(mount, root, own.get(ctrl, root)), name)
    if "memory" in v1 and "cpu" in v1:
        layout = Layout(V1, v1)
    else:
        unified = next((m for m in mounts if m[2] == "cgroup2"), None)
        available = set(_read(os.path.join(unified[0], "cgroup.controllers")).split()) if unified else set()
        if unified is None or not {"memory", "cpu"} <= available:
            return Layout("", {}, "no memory and cpu cgroup controllers are mounted (neither cgroup v1 nor v2)")
        layout = Layout(V2, {"": os.path.join(unified[0], name)})
    ok = writable if writable is not None else all(os.access(os.path.dirname(d), os.W_OK)
                                                   for d in layout.roots.values())
    if not ok:
        return Layout(layout.version, layout.roots,
                      f"the cgroup {layout.version} hierarchy is not writable by this user (uid {os.getuid()})")
    return layout


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return ""


def _write(path: str, value: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(value)


def _stat(text: str) -> dict[str, int]:
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        with contextlib.suppress(ValueError):
            out[key] = int(value)
    return out


# --- the manager -------------------------------------------------------------------------------


class Manager:
    """Creates, limits, reads and removes the pod and container cgroups of one runtime."""

    def __init__(self, layout: Layout, *, pids_limit: int | None = None) -> None:
        self.layout = layout
        self.pids_limit = pids_limit
        self._pods: dict[str, str] = {}  # uid -> the pod's relative path
        self._ready = False

    @property
    def problem(self) -> str:
        return self.layout.problem

    @property
    def enforced(self) -> bool:
        return not self.layout.problem and bool(self.layout.roots)

    def _dirs(self, rel: str) -> dict[str, str]:
        return {ctrl: os.path.join(root, rel) if rel else root for ctrl, root in self.layout.roots.items()}

    def setup(self) -> None:
        """Make the runtime's root; on v2, hand the controllers down to it. Leaves a problem when it fails."""
        if not self.enforced or self._ready:
            return
        try:
            if self.layout.version == V2:
                root = self.layout.roots[""]
                _write(os.path.join(os.path.dirname(root), "cgroup.subtree_control"),
                       " ".join(f"+{c}" for c in V2_CONTROLLERS))
            for d in self._dirs("").values():
                os.makedirs(d, exist_ok=True)
        except OSError as e:
            self.layout = dataclasses.replace(self.layout, problem=f"cannot set up cgroups: {e}")
            log.warning("pod resource limits will not be enforced: %s", self.layout.problem)
            return
        self._ready = True

    def _mkdirs(self, rel: str) -> None:
        for root in self.layout.roots.values():
            path = root
            for part in rel.split(os.sep):
                if self.layout.version == V2:
                    with contextlib.suppress(OSError):
                        _write(os.path.join(path, "cgroup.subtree_control"),
                               " ".join(f"+{c}" for c in V2_CONTROLLERS))
                path = os.path.join(path, part)
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)

    def _apply(self, dirs: Mapping[str, str], lim: Limits) -> None:
        if self.layout.version == V2:
            d = dirs[""]
            _write(os.path.join(d, "memory.max"), str(lim.memory) if lim.memory else "max")
            quota = str(lim.cpu_quota) if lim.cpu_quota else "max"
            _write(os.path.join(d, "cpu.max"), f"{quota} {lim.cpu_period}")
            _write(os.path.join(d, "cpu.weight"), str(shares_to_weight(lim.cpu_shares)))
            if "pids" in _read(os.path.join(os.path.dirname(d), "cgroup.subtree_control")).split() or lim.pids:
                with contextlib.suppress(OSError):
                    _write(os.path.join(d, "pids.max"), str(lim.pids) if lim.pids else "max")
            return
        if "memory" in dirs:
            # Swap would let a container past its limit instead of being OOM-killed; the kubelet runs without it.
            with contextlib.suppress(OSError):
                _write(os.path.join(dirs["memory"], "memory.swappiness"), "0")
            _write(os.path.join(dirs["memory"], "memory.limit_in_bytes"), str(lim.memory) if lim.memory else "-1")
        if "cpu" in dirs:
            _write(os.path.join(dirs["cpu"], "cpu.cfs_period_us"), str(lim.cpu_period))
            _write(os.path.join(dirs["cpu"], "cpu.cfs_quota_us"), str(lim.cpu_quota) if lim.cpu_quota else "-1")
            _write(os.path.join(dirs["cpu"], "cpu.shares"), str(lim.cpu_shares))
        if "pids" in dirs:
            _write(os.path.join(dirs["pids"], "pids.max"), str(lim.pids) if lim.pids else "max")

    def create(self, pod: Mapping[str, Any], container: Mapping[str, Any]) -> list[str]:
        """Make (fresh) the pod's and this container's cgroups with their limits; the cgroup.procs to join.

        Raises OSError when the kernel refuses a setting (e.g. a memory limit below current usage)."""
        if not self.enforced:
            return []
        self.setup()
        if not self.enforced:
            return []
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        name = str(container.get("name") or "")
        prel = self._pods.get(uid) or pod_relpath(qos_class(pod), uid)
        if uid not in self._pods:
            self._mkdirs(prel)
            self._pods[uid] = prel
        # A pod's limits are fixed at creation (resizing is not supported), but setting them again is harmless.
        self._apply(self._dirs(prel), pod_limits(pod, pids=self.pids_limit))
        crel = os.path.join(prel, name)
        self._remove(crel)  # a previous run's cgroup: counters (OOM kills) start again from zero
        self._mkdirs(crel)
        self._apply(self._dirs(crel), container_limits(container, pids=self.pids_limit))
        return sorted({os.path.join(d, "cgroup.procs") for d in self._dirs(crel).values()})

    def container_dirs(self, uid: str, name: str) -> dict[str, str]:
        prel = self._pods.get(uid)
        return self._dirs(os.path.join(prel, name)) if prel and self.enforced else {}

    def oom_killed(self, uid: str, name: str) -> bool:
        """Whether the kernel OOM-killed a process of this container's current cgroup."""
        dirs = self.container_dirs(uid, name)
        if self.layout.version == V2 and "" in dirs:
            return _stat(_read(os.path.join(dirs[""], "memory.events"))).get("oom_kill", 0) > 0
        if "memory" in dirs:
            ctl = _stat(_read(os.path.join(dirs["memory"], "memory.oom_control")))
            return ctl.get("oom_kill", 0) > 0 or ctl.get("under_oom", 0) > 0
        return False

    def remove_container(self, uid: str, name: str) -> None:
        prel = self._pods.get(uid)
        if prel:
            self._remove(os.path.join(prel, name))

    def remove_pod(self, uid: str) -> None:
        """Kill whatever is left in the pod's cgroups and remove them."""
        prel = self._pods.pop(uid, None)
        if prel:
            self._remove(prel)

    def clean(self, *, keep_root: bool = True) -> None:
        """Remove every cgroup this runtime made (or a previous agent made), killing what is left in them."""
        if self.enforced:
            self._remove("", keep_root=keep_root)
            self._pods.clear()
            if not keep_root:
                self._ready = False

    def pids(self, rel: str) -> set[int]:
        out: set[int] = set()
        for d in self._dirs(rel).values():
            for root, _, _ in os.walk(d):
                out.update(int(p) for p in _read(os.path.join(root, "cgroup.procs")).split() if p.isdigit())
        return out

    def _remove(self, rel: str, *, keep_root: bool = False) -> None:
        for _ in range(20):
            left = self.pids(rel)
            for pid in left:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not left:
                break
            time.sleep(0.01)  # a SIGKILLed process leaves its cgroup only once it is reaped
        for d in self._dirs(rel).values():
            for root, dirs, _ in os.walk(d, topdown=False):
                for sub in dirs:
                    _rmdir(os.path.join(root, sub))
            if not keep_root:
                _rmdir(d)

    # --- usage

    def _usage(self, dirs: Mapping[str, str]) -> dict[str, int]:
        if self.layout.version == V2:
            d = dirs.get("", "")
            cpu = _stat(_read(os.path.join(d, "cpu.stat"))).get("usage_usec", 0) * 1000
            mem = _int(_read(os.path.join(d, "memory.current")))
            inactive = _stat(_read(os.path.join(d, "memory.stat"))).get("inactive_file", 0)
        else:
            cpu = _int(_read(os.path.join(dirs.get("cpuacct", ""), "cpuacct.usage")))
            mem = _int(_read(os.path.join(dirs.get("memory", ""), "memory.usage_in_bytes")))
            inactive = _stat(_read(os.path.join(dirs.get("memory", ""), "memory.stat"))).get("total_inactive_file", 0)
        return {"cpuUsageNanoSeconds": cpu, "memoryWorkingSetBytes": max(0, mem - inactive),
                "memoryUsageBytes": mem}

    def usage(self, uid: str, containers: list[str]) -> dict[str, Any]:
        """CPU (cumulative ns) and memory (working set) of a pod and each of its containers."""
        prel = self._pods.get(uid)
        if not prel or not self.enforced:
            return {}
        return {"pod": self._usage(self._dirs(prel)),
                "containers": {n: self._usage(self._dirs(os.path.join(prel, n))) for n in containers
                               if all(os.path.isdir(d) for d in self._dirs(os.path.join(prel, n)).values())}}


def _int(text: str) -> int:
    try:
        return int(text.strip() or 0)
    except ValueError:
        return 0


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno not in (errno.ENOTEMPTY, errno.EBUSY):
            log.debug("cannot remove cgroup %s: %s", path, e)
