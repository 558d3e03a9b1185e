"""Container runtimes behind one interface (sync, kill, status of a pod), and the virtual runtime."""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import heapq
import ipaddress
import logging
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from pocketkube.base import clock as clock_mod

log = logging.getLogger("pocketkube.node.runtime")

WAITING, RUNNING, TERMINATED = "waiting", "running", "terminated"
NORMAL, WARNING = "Normal", "Warning"
ID_SCHEME = "pocketkube://"

EXIT_CODE_ANNOTATION = "pocketkube.dev/virtual-exit-code"
RUN_SECONDS_ANNOTATION = "pocketkube.dev/virtual-run-seconds"
# The kubelet's crash-loop back-off: the first restart is immediate, then 10 s doubling to 5 min,
# forgotten once a container has run for twice the cap.
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 2 * BACKOFF_MAX


@dataclasses.dataclass
class Termination:
    """How a container run ended."""

    exit_code: int
    reason: str
    finished_at: datetime.datetime
    started_at: datetime.datetime | None = None
    container_id: str = ""
    message: str = ""
    signal: int = 0


@dataclasses.dataclass
class ContainerStatus:
    """One container as the runtime sees it; the pod worker turns it into a v1.ContainerStatus."""

    name: str
    image: str
    image_id: str = ""
    container_id: str = ""
    state: str = WAITING
    reason: str = ""
    message: str = ""
    started_at: datetime.datetime | None = None
    termination: Termination | None = None
    last_termination: Termination | None = None
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    # when a waiting (backing-off) container may start again
    backoff_until: datetime.datetime | None = None
    backoff: float = 0.0


@dataclasses.dataclass
class PodStatus:
    """A pod's sandbox and containers in spec order; network_ready goes False once the sandbox is gone."""

    uid: str
    ips: list[str]
    network_ready: bool
    created_at: datetime.datetime
    init_containers: dict[str, ContainerStatus] = dataclasses.field(default_factory=dict)
    containers: dict[str, ContainerStatus] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Event:
    """Something to record on the pod as the kubelet would (Pulled, Created, Started, Killing, BackOff)."""

    type: str
    reason: str
    message: str
    field_path: str = ""


@dataclasses.dataclass
class SyncResult:
    """What one sync did (events to record) and when the runtime wants to be asked again."""

    events: list[Event] = dataclasses.field(default_factory=list)
    retry_after: float | None = None


class Runtime(Protocol):
    """What a pod worker needs from a container runtime; the process and OCI runtimes implement it too."""

    name: str
    version: str

    def set_notify(self, notify: Callable[[str], None]) -> None:
        """Register a callback taking a pod uid, called when that pod changes on its own (an exit)."""

    def set_recorder(self, record: Callable[[Mapping[str, Any], Event], None]) -> None:
        """Register a callback recording a pod's event at once, for events that must not wait for the end of
        what the runtime is doing (Killing, before a grace period is waited out)."""

    async def sync_pod(self, pod: Mapping[str, Any]) -> SyncResult:
        """Bring the pod's sandbox and containers to what its spec and restart policy ask for now."""

    async def kill_pod(self, pod: Mapping[str, Any], *, grace_seconds: int) -> list[Event]:
        """Stop every container of the pod (SIGTERM, SIGKILL after grace) and tear its sandbox down."""

    def pod_status(self, uid: str) -> PodStatus | None:
        """The pod as the runtime knows it, or None if it never ran here."""

    async def remove_pod(self, uid: str) -> None:
        """Forget a pod entirely (after its deletion), killing anything still left."""

    async def close(self) -> None:
        """Stop everything the runtime runs."""


# --- images --------------------------------------------------------------------------------------


def normalize_image(ref: str) -> str:
    """An image reference as containerd reports it: docker.io/library/nginx:1.25 for nginx:1.25."""
    ref = ref.strip()
    if not ref:
        return ref
    name, digest = (ref.split("@", 1) + [""])[:2]
    first, _, rest = name.partition("/")
    if not rest:
        domain, path = "docker.io", f"library/{first}"
    elif "." in first or ":" in first or first == "localhost":
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
    if domain == "index.docker.io":
        domain = "docker.io"
    tag = ""
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, tag = path.rsplit(":", 1)
    if digest:
        return f"{domain}/{path}@{digest}"
    return f"{domain}/{path}:{tag or 'latest'}"


def image_id(ref: str) -> str:
    """A stable repo@sha256 digest for an image reference (the virtual image store has every image)."""
    full = normalize_image(ref)
    if "@" in full:
        return full
    repo = full.rsplit(":", 1)[0] if ":" in full.rsplit("/", 1)[-1] else full
    return f"{repo}@sha256:{hashlib.sha256(full.encode()).hexdigest()}"


def container_id(uid: str, name: str, attempt: int) -> str:
    """A 64-hex container id that is the same for the same pod, container and attempt."""
    return ID_SCHEME + hashlib.sha256(f"{uid}/{name}/{attempt}".encode()).hexdigest()


def go_duration(seconds: float) -> str:
    """A duration printed the way Go's time.Duration does after truncation to milliseconds."""
    ms = int(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    s = ms / 1000
    if s < 60:
        return f"{s:g}s"
    m, s = divmod(s, 60)
    return f"{int(m)}m{s:g}s"


def _field_path(init: bool, name: str) -> str:
    return f"spec.{'initContainers' if init else 'containers'}{{{name}}}"


def pull_events(container: Mapping[str, Any], *, init: bool) -> list[Event]:
    """The image events for starting a container whose image is already on the machine."""
    image = str(container.get("image") or "")
    path = _field_path(init, str(container.get("name") or ""))
    if container.get("imagePullPolicy") == "Always":
        size = 1_000_000 + int(hashlib.sha256(image.encode()).hexdigest()[:8], 16) % 100_000_000
        return [Event(NORMAL, "Pulling", f'Pulling image "{image}"', path),
                Event(NORMAL, "Pulled", f'Successfully pulled image "{image}" in 0s (0s including waiting). '
                                        f"Image size: {size} bytes.", path)]
    return [Event(NORMAL, "Pulled", f'Container image "{image}" already present on machine', path)]


def start_events(container: Mapping[str, Any], *, init: bool) -> list[Event]:
    """Pull, create and start events for one container start, worded as kubelet 1.32 does."""
    name = str(container.get("name") or "")
    path = _field_path(init, name)
    return [*pull_events(container, init=init),
            Event(NORMAL, "Created", f"Created container: {name}", path),
            Event(NORMAL, "Started", f"Started container {name}", path)]


def is_sidecar(container: Mapping[str, Any]) -> bool:
    """An init container with restartPolicy Always keeps running beside the main containers."""
    return container.get("restartPolicy") == "Always"


def pod_ref(pod: Mapping[str, Any]) -> str:
    """name_namespace(uid), the way the kubelet names a pod in messages."""
    meta = pod.get("metadata") or {}
    return f"{meta.get('name', '')}_{meta.get('namespace', '')}({meta.get('uid', '')})"


# --- the virtual runtime -------------------------------------------------------------------------


class IPAllocator:
    """Pod IPs from one node's CIDR, lowest free first (the first address is the gateway)."""

    def __init__(self, cidr: str) -> None:
        self.network = ipaddress.ip_network(cidr, strict=False)
        self._used: set[str] = set()
        net, last = int(self.network.network_address), int(self.network.broadcast_address)
        # The range hosts() walks: all of a /31 or /32 (/127, /128); else without the network address and,
        # for IPv4, the broadcast one.
        self._last = last if self.network.num_addresses <= 2 or self.network.version == 6 else last - 1
        self._gateway = net + 1
        # Allocating walked the range up to _next once; what was released below it waits in a heap, so an
        # allocation costs a pop or a step instead of a walk over every address in use.
        self._next = net if self.network.num_addresses <= 2 else net + 1
        self._freed: list[int] = []
        self._address = type(self.network.network_address)

    def allocate(self) -> str:
        while self._freed:
            ip = str(self._address(heapq.heappop(self._freed)))
            if ip not in self._used:
                self._used.add(ip)
                return ip
        while self._next <= self._last:
            n, self._next = self._next, self._next + 1
            ip = str(self._address(n))
            if n != self._gateway and ip not in self._used:
                self._used.add(ip)
                return ip
        raise RuntimeError(f"no pod IPs left in {self.network}")

    def reserve(self, ip: str) -> bool:
        try:
            inside = ipaddress.ip_address(ip) in self.network
        except ValueError:
            return False
        if inside and ip not in self._used:
            self._used.add(ip)
            return True
        return False

    def release(self, ip: str) -> None:
        if ip not in self._used:
            return
        self._used.discard(ip)
        n = int(ipaddress.ip_address(ip))
        if n < self._next:
            heapq.heappush(self._freed, n)


def virtual_exit(pod: Mapping[str, Any]) -> tuple[int, float] | None:
    """(exit code, seconds) from the virtual-exit annotations, or None when the pod runs forever."""
    ann = (pod.get("metadata") or {}).get("annotations") or {}
    raw = ann.get(EXIT_CODE_ANNOTATION)
    if raw is None:
        return None
    try:
        code = int(str(raw).strip())
        seconds = float(str(ann.get(RUN_SECONDS_ANNOTATION, "0")).strip() or 0)
    except ValueError:
        log.warning("pod %s: ignoring malformed %s/%s annotations", pod_ref(pod), EXIT_CODE_ANNOTATION,
                    RUN_SECONDS_ANNOTATION)
        return None
    return code, max(0.0, seconds)


class VirtualRuntime:
    """Reports containers as started without running anything, like KWOK; exits on request by annotation."""

    name = "pocketkube"
    version = "0.1.0"

    def __init__(self, *, pod_cidr: str, host_ip: str, clock: clock_mod.Clock | None = None) -> None:
        self.clock = clock or clock_mod.Clock()
        self.host_ip = host_ip
        self.ips = IPAllocator(pod_cidr)
        self._pods: dict[str, PodStatus] = {}
        self._notify: Callable[[str], None] | None = None

    def set_notify(self, notify: Callable[[str], None]) -> None:
        self._notify = notify

    def set_recorder(self, record: Callable[[Mapping[str, Any], Event], None]) -> None:
        """Virtual pods stop at once: their Killing events come back from kill_pod."""

    def pod_status(self, uid: str) -> PodStatus | None:
        return self._pods.get(uid)

    async def close(self) -> None:
        self._pods.clear()

    async def remove_pod(self, uid: str) -> None:
        ps = self._pods.pop(uid, None)
        if ps is not None:
            for ip in ps.ips:
                self.ips.release(ip)

    async def kill_pod(self, pod: Mapping[str, Any], *, grace_seconds: int) -> list[Event]:
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        ps = self._pods.get(uid)
        if ps is None:
            return []
        now = self.clock.now()
        events = []
        # Regular containers stop first, then sidecars in reverse order, as the kubelet does.
        spec = pod.get("spec") or {}
        order = [(c, False) for c in spec.get("containers") or []]
        order += [(c, True) for c in reversed(spec.get("initContainers") or [])]
        for c, init in order:
            statuses = ps.init_containers if init else ps.containers
            cs = statuses.get(c.get("name", ""))
            if cs is None or cs.state != RUNNING:
                continue
            events.append(Event(NORMAL, "Killing", f"Stopping container {cs.name}", _field_path(init, cs.name)))
            self._terminate(cs, 0, "Completed", now)
        ps.network_ready = False
        return events

    async def sync_pod(self, pod: Mapping[str, Any]) -> SyncResult:
        meta = pod.get("metadata") or {}
        spec = pod.get("spec") or {}
        uid = str(meta.get("uid") or "")
        now = self.clock.now()
        result = SyncResult()
        ps = self._pods.get(uid)
        if ps is None:
            ps = self._adopt(pod, now) or self._create_sandbox(pod, now)
            self._pods[uid] = ps
        if not ps.network_ready:
            return result  # the sandbox is gone: the pod finished and is never restarted
        for c in spec.get("initContainers") or []:
            name = c.get("name", "")
            cs = ps.init_containers.get(name)
            if cs is None:
                cs = self._start(ps, c, init=True, now=now, result=result)
                if not is_sidecar(c):
                    # A virtual init container completes the moment it starts.
                    cs.started_at = now
                    self._terminate(cs, 0, "Completed", now)
                    cs.ready = True
                continue
            if is_sidecar(c):
                continue
            if cs.state != TERMINATED or cs.termination is None or cs.termination.exit_code != 0:
                return result  # an unfinished init container holds the rest back
        exit_plan = virtual_exit(pod)
        policy = spec.get("restartPolicy") or "Always"
        wake: list[float] = []
        for c in spec.get("containers") or []:
            name = c.get("name", "")
            cs = ps.containers.get(name)
            if cs is None:
                # A container never exits in the sync that starts it: its status is reported running first.
                self._start(ps, c, init=False, now=now, result=result)
                if exit_plan is not None:
                    wake.append(exit_plan[1])
                continue
            self._advance(pod, ps, c, cs, exit_plan=exit_plan, policy=policy, now=now, result=result, wake=wake)
        if all(cs.state == TERMINATED for cs in ps.containers.values()) and ps.containers:
            # Every main container is done for good: stop the sidecars and tear the sandbox down.
            for cs in ps.init_containers.values():
                if cs.state == RUNNING:
                    self._terminate(cs, 0, "Completed", now)
            ps.network_ready = False
        if wake:
            result.retry_after = max(0.0, min(wake))
        return result

    # --- helpers

    def _create_sandbox(self, pod: Mapping[str, Any], now: datetime.datetime) -> PodStatus:
        spec = pod.get("spec") or {}
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        ips = [self.host_ip] if spec.get("hostNetwork") else [self.ips.allocate()]
        return PodStatus(uid=uid, ips=ips, network_ready=True, created_at=now)

    def _adopt(self, pod: Mapping[str, Any], now: datetime.datetime) -> PodStatus | None:
        """Take over a pod an earlier agent reported running, keeping its IP, ids and start times."""
        status = pod.get("status") or {}
        if status.get("phase") not in ("Running", "Pending") or not status.get("containerStatuses"):
            return None
        spec = pod.get("spec") or {}
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        ip = str(status.get("podIP") or "")
        if spec.get("hostNetwork"):
            ips = [self.host_ip]
        elif ip and self.ips.reserve(ip):
            ips = [ip]
        else:
            ips = [self.ips.allocate()]
        ps = PodStatus(uid=uid, ips=ips, network_ready=True, created_at=now)
        for key, target in (("initContainerStatuses", ps.init_containers), ("containerStatuses", ps.containers)):
            for s in status.get(key) or []:
                cs = _from_api(s)
                if cs is not None:
                    target[cs.name] = cs
        return ps

    def _start(self, ps: PodStatus, c: Mapping[str, Any], *, init: bool, now: datetime.datetime,
               result: SyncResult) -> ContainerStatus:
        name = str(c.get("name") or "")
        image = str(c.get("image") or "")
        cs = ContainerStatus(name=name, image=normalize_image(image), image_id=image_id(image),
                             container_id=container_id(ps.uid, name, 0), state=RUNNING, started_at=now,
                             ready=True, started=True)
        (ps.init_containers if init else ps.containers)[name] = cs
        result.events.extend(start_events(c, init=init))
        return cs

    @staticmethod
    def _terminate(cs: ContainerStatus, code: int, reason: str, at: datetime.datetime) -> None:
        cs.termination = Termination(exit_code=code, reason=reason, finished_at=at, started_at=cs.started_at,
                                     container_id=cs.container_id)
        cs.state = TERMINATED
        cs.ready = False
        cs.started = False

    def _advance(self, pod: Mapping[str, Any], ps: PodStatus, c: Mapping[str, Any], cs: ContainerStatus, *,
                 exit_plan: tuple[int, float] | None, policy: str, now: datetime.datetime,
                 result: SyncResult, wake: list[float]) -> None:
        """Move one main container along: exit when its virtual run is over, restart as the policy says."""
        if cs.state == RUNNING and exit_plan is not None and cs.started_at is not None:
            code, seconds = exit_plan
            ends = cs.started_at + datetime.timedelta(seconds=seconds)
            if now < ends:
                wake.append((ends - now).total_seconds())
                return
            self._terminate(cs, code, "Completed" if code == 0 else "Error", ends)
        if cs.state == RUNNING:
            return
        term = cs.termination
        if cs.state == TERMINATED and term is not None:
            if not (policy == "Always" or (policy == "OnFailure" and term.exit_code != 0)):
                return
            ran = (term.finished_at - term.started_at).total_seconds() if term.started_at else 0.0
            if ran >= BACKOFF_RESET:
                cs.backoff = 0.0
            if cs.backoff > 0:
                cs.backoff_until = term.finished_at + datetime.timedelta(seconds=cs.backoff)
                cs.last_termination, cs.termination = term, None
                cs.state, cs.reason = WAITING, "CrashLoopBackOff"
                self._back_off_message(pod, cs, result)
            else:
                cs.last_termination, cs.termination = term, None
                cs.backoff_until = now
            cs.backoff = BACKOFF_INITIAL if cs.backoff == 0 else min(cs.backoff * 2, BACKOFF_MAX)
        if cs.state == WAITING or cs.backoff_until is not None:
            until = cs.backoff_until or now
            if now < until:
                wake.append((until - now).total_seconds())
                return
            self._restart(ps, c, cs, now=now, result=result)
            if exit_plan is not None:
                wake.append(exit_plan[1])

    def _back_off_message(self, pod: Mapping[str, Any], cs: ContainerStatus, result: SyncResult) -> None:
        cs.message = (f"back-off {go_duration(cs.backoff)} restarting failed container={cs.name} "
                      f"pod={pod_ref(pod)}")
        result.events.append(Event(WARNING, "BackOff",
                                   f"Back-off restarting failed container {cs.name} in pod {pod_ref(pod)}",
                                   _field_path(False, cs.name)))

    def _restart(self, ps: PodStatus, c: Mapping[str, Any], cs: ContainerStatus, *, now: datetime.datetime,
                 result: SyncResult) -> None:
        cs.restart_count += 1
        cs.container_id = container_id(ps.uid, cs.name, cs.restart_count)
        cs.state, cs.reason, cs.message = RUNNING, "", ""
        cs.started_at, cs.backoff_until = now, None
        cs.ready = cs.started = True
        result.events.extend(start_events(c, init=False))


def _time(raw: Any) -> datetime.datetime | None:
    try:
        return clock_mod.parse_time(str(raw)) if raw else None
    except ValueError:
        return None


def _from_api(s: Mapping[str, Any]) -> ContainerStatus | None:
    """A runtime container status rebuilt from a reported v1.ContainerStatus (for adoption)."""
    state = s.get("state") or {}
    cs = ContainerStatus(name=str(s.get("name") or ""), image=str(s.get("image") or ""),
                         image_id=str(s.get("imageID") or ""), container_id=str(s.get("containerID") or ""),
                         restart_count=int(s.get("restartCount") or 0), ready=bool(s.get("ready")),
                         started=bool(s.get("started")))
    if "running" in state:
        cs.state = RUNNING
        cs.started_at = _time((state["running"] or {}).get("startedAt"))
    elif "terminated" in state:
        t = state["terminated"] or {}
        finished = _time(t.get("finishedAt"))
        if finished is None:
            return None
        cs.state = TERMINATED
        cs.started_at = _time(t.get("startedAt"))
        cs.termination = Termination(exit_code=int(t.get("exitCode") or 0), reason=str(t.get("reason") or ""),
                                     finished_at=finished, started_at=cs.started_at,
                                     container_id=str(t.get("containerID") or cs.container_id))
    else:
        return None
    last = (s.get("lastState") or {}).get("terminated")
    if last and _time(last.get("finishedAt")) is not None:
        cs.last_termination = Termination(exit_code=int(last.get("exitCode") or 0),
                                          reason=str(last.get("reason") or ""),
                                          finished_at=_time(last.get("finishedAt")) or datetime.datetime.now(datetime.UTC),
                                          started_at=_time(last.get("startedAt")),
                                          container_id=str(last.get("containerID") or ""))
    return cs
