"""The node agent's kubelet API over HTTPS: container logs of the pods its process runtime runs."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.node import containerio, logrotate, portforward, process, runtime, streaming

# A followed log is read again as soon as its pump has written a line end: the pump's live output (containerio)
# is only the wake-up, what is sent always comes from the log file (its times, rotation, since and limits). A log
# written without a pump, or a rotation the wake-up missed, is still caught within FOLLOW_FALLBACK_SECONDS.
FOLLOW_FALLBACK_SECONDS = 1.0
# The log is read at most every FOLLOW_INTERVAL_SECONDS: a line after a quiet spell goes at once, output that
# keeps coming is read (and sent) in batches, never more often than a poll at that interval would.
FOLLOW_INTERVAL_SECONDS = 0.1
# With no live output to wait on (no pump published yet, or it ended and the run is about to read as over),
# the runtime is asked this soon, then twice as long each time up to FOLLOW_INTERVAL_SECONDS.
FOLLOW_CHECK_SECONDS = 0.01

# Finds a pod this node runs by namespace and name (the pod workers' informer cache).
PodFinder = Callable[[str, str], "Mapping[str, Any] | None"]


class LogError(Exception):
    """A request the kubelet answers with a plain-text error and an HTTP status."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def rfc3339_nano(dt: datetime.datetime) -> str:
    """Go's time.RFC3339Nano in UTC: fractional seconds without trailing zeros."""
    whole = dt.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return f"{whole}.{frac}Z" if frac else f"{whole}Z"


@dataclasses.dataclass(frozen=True)
class Options:
    """The PodLogOptions the kubelet acts on."""

    follow: bool = False
    tail_lines: int | None = None
    since: datetime.datetime | None = None
    timestamps: bool = False
    previous: bool = False
    limit_bytes: int | None = None


def _bool(query: Mapping[str, str], name: str) -> bool:
    v = query.get(name, "")
    if v in ("", "false", "0", "False"):
        return False
    if v in ("true", "1", "True"):
        return True
    raise LogError(400, f'strconv.ParseBool: parsing "{v}": invalid syntax')


def _int(query: Mapping[str, str], name: str) -> int | None:
    v = query.get(name, "")
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        raise LogError(400, f'strconv.ParseInt: parsing "{v}": invalid syntax') from None


def parse_options(query: Mapping[str, str], *, now: datetime.datetime) -> Options:
    """PodLogOptions from the query string; sinceSeconds becomes an absolute time before now."""
    since = None
    seconds = _int(query, "sinceSeconds")
    if seconds is not None:
        since = now - datetime.timedelta(seconds=seconds)
    raw = query.get("sinceTime", "")
    if raw:
        try:
            since = clock_mod.parse_time(raw)
        except ValueError:
            raise LogError(400, f'parsing time "{raw}" as "2006-01-02T15:04:05Z07:00": cannot parse') from None
    return Options(follow=_bool(query, "follow"), tail_lines=_int(query, "tailLines"), since=since,
                   timestamps=_bool(query, "timestamps"), previous=_bool(query, "previous"),
                   limit_bytes=_int(query, "limitBytes"))


Entry = tuple[datetime.datetime, bytes]


class LogReader:
    """Reads one container log and its time index incrementally, yielding whole lines with their times.

    It follows the log across a rotation: once the path names a new file, it finishes the one it was
    reading (now under its rotated name) and goes on from the start of the new one."""

    def __init__(self, path: str, *, fallback: datetime.datetime) -> None:
        self.path = path
        self.fallback = fallback
        self._offset = 0
        self._ts_offset = 0
        self._times: list[datetime.datetime] = []
        self._lines = 0
        self._ino: int | None = None

    def poll(self, *, final: bool) -> list[Entry]:
        """Lines written since the last poll; a trailing partial line only when final (the writer is done)."""
        out: list[Entry] = []
        moved = self._moved()
        if moved is not None:
            out = self._read(moved, final=True, ino=self._ino)
            self._offset = self._ts_offset = self._lines = 0
            self._times, self._ino = [], None
        return out + self._read(self.path, final=final, ino=self._ino)

    def _moved(self) -> str | None:
        """Where the file being read went if the log was rotated since (None if it was not)."""
        if self._ino is None:
            return None
        try:
            if os.stat(self.path).st_ino == self._ino:
                return None
        except FileNotFoundError:
            pass
        for p in reversed(logrotate.rotated(self.path)):
            with contextlib.suppress(FileNotFoundError):
                if os.stat(p).st_ino == self._ino:
                    return p
        self._offset = self._ts_offset = self._lines = 0  # rotated and already pruned: start afresh
        self._times, self._ino = [], None
        return None

    def _read(self, path: str, *, final: bool, ino: int | None) -> list[Entry]:
        try:
            with open(path, "rb") as f:
                found = os.fstat(f.fileno()).st_ino
                if ino is not None and found != ino:
                    return []  # rotated under us: the next poll finishes the old file first
                f.seek(self._offset)
                data = f.read()
        except FileNotFoundError:
            return []
        if path == self.path:
            self._ino = found
        stamps = _read_from(logrotate.ts_path(path), self._ts_offset)
        cut = stamps.rfind(b"\n") + 1
        self._ts_offset += cut
        for raw in stamps[:cut].split(b"\n")[:-1]:
            try:
                # "<time> <stream>" (logs written before streams were tagged hold the time alone)
                self._times.append(clock_mod.parse_time(raw.partition(b" ")[0].decode("ascii")))
            except (ValueError, UnicodeDecodeError):
                self._times.append(self._times[-1] if self._times else self.fallback)
        end = len(data) if final else data.rfind(b"\n") + 1
        self._offset += end
        out = []
        for line in data[:end].splitlines(keepends=True):
            at = self._times[self._lines] if self._lines < len(self._times) else (
                self._times[-1] if self._times else self.fallback)
            out.append((at, line))
            self._lines += 1
        return out


def _read_from(path: str, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def select(entries: list[Entry], opts: Options) -> list[Entry]:
    """The kubelet's order: the last tailLines lines, then only those at or after since."""
    if opts.tail_lines is not None:
        entries = entries[max(0, len(entries) - opts.tail_lines):]
    if opts.since is not None:
        since = opts.since
        entries = [e for e in entries if e[0] >= since]
    return entries


def render(entries: list[Entry], *, timestamps: bool) -> bytes:
    """Lines as sent: each prefixed by its RFC3339Nano time and a space when timestamps are asked for."""
    if not timestamps:
        return b"".join(line for _, line in entries)
    return b"".join(rfc3339_nano(at).encode() + b" " + line for at, line in entries)


class Limit:
    """limitBytes: how much more may be sent (counting timestamp prefixes, as the kubelet does)."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit

    def take(self, data: bytes) -> bytes:
        if self.left is None:
            return data
        data = data[:max(0, self.left)]
        self.left -= len(data)
        return data

    @property
    def spent(self) -> bool:
        return self.left is not None and self.left <= 0


def attempts(container_dir: str) -> list[int]:
    """The runs of a container that have a log, oldest first."""
    try:
        names = os.listdir(container_dir)
    except FileNotFoundError:
        return []
    return sorted(int(n[:-4]) for n in names if n.endswith(".log") and n[:-4].isdigit())


def choose_run(runs: list[int], *, previous: bool, container: str, pod: str,
               status: runtime.ContainerStatus | None, pending_reason: str = "ContainerCreating") -> int:
    """Which run's log to read: the latest, or the one before it for previous; errors worded like the kubelet's."""
    if previous:
        if len(runs) < 2:
            raise LogError(400, f'previous terminated container "{container}" in pod "{pod}" not found')
        return runs[-2]
    if runs:
        return runs[-1]
    if status is not None and status.state == runtime.WAITING:
        reason = {"ErrImagePull": "image can't be pulled",
                  "ImagePullBackOff": "trying and failing to pull image"}.get(status.reason, status.reason)
        raise LogError(400, f'container "{container}" in pod "{pod}" is waiting to start: '
                            f'{reason or "ContainerCreating"}')
    raise LogError(400, f'container "{container}" in pod "{pod}" is waiting to start: {pending_reason}')


def ssl_context(pki: pki_mod.Pki) -> ssl.SSLContext:
    """TLS for the kubelet API: a serving cert from the cluster CA valid for 127.0.0.1; client certs required."""
    ctx = pki_mod.ssl_server_context(pki)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class KubeletServer:
    """Serves /containerLogs for one node's process runtime."""

    def __init__(self, rt: process.ProcessRuntime, find_pod: PodFinder, *, ssl_context: ssl.SSLContext | None,
                 clock: clock_mod.Clock | None = None) -> None:
        self.runtime = rt
        self.find_pod = find_pod
        self.ssl_context = ssl_context
        self.clock = clock or clock_mod.Clock()
        self.port = 0
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/containerLogs/{namespace}/{pod}/{container}", self._logs)
        streaming.Handlers(self.runtime, self.find_pod, clock=self.clock).add_routes(app)
        for method in ("GET", "POST"):
            app.router.add_route(method, "/portForward/{namespace}/{pod}", self._port_forward)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen on host:port (0: any free port); returns the bound port."""
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=self.ssl_context)
        await site.start()
        for addr in self._runner.addresses:
            if isinstance(addr, tuple):
                self.port = addr[1]
                break
        return self.port

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _port_forward(self, request: web.Request) -> web.StreamResponse:
        return await portforward.serve(request, self.find_pod, clock=self.clock)

    async def _logs(self, request: web.Request) -> web.StreamResponse:
        try:
            return await self.logs(request)
        except LogError as e:
            return web.Response(status=e.code, text=e.message + "\n", content_type="text/plain")

    async def logs(self, request: web.Request) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        opts = parse_options(request.query, now=self.clock.now())
        pod = self.find_pod(ns, name)
        if pod is None:
            raise LogError(404, f'pod "{ns}/{name}" does not exist')
        spec = pod.get("spec") or {}
        if not any(c.get("name") == container for key in ("containers", "initContainers")
                   for c in spec.get(key) or []):
            raise LogError(404, f'container "{container}" not found in pod "{name}"')
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        ps = self.runtime.pod_status(uid)
        status = None if ps is None else ps.containers.get(container) or ps.init_containers.get(container)
        cdir = os.path.join(self.runtime.pod_dir(uid), container)
        runs = await asyncio.to_thread(attempts, cdir)
        # Not started by the runtime yet: the reason the pod's status gives (PodInitializing behind init containers).
        reported = [*((pod.get("status") or {}).get("containerStatuses") or []),
                    *((pod.get("status") or {}).get("initContainerStatuses") or [])]
        pending = next((((s.get("state") or {}).get("waiting") or {}).get("reason") for s in reported
                        if s.get("name") == container), None)
        run = choose_run(runs, previous=opts.previous, container=container, pod=name, status=status,
                         pending_reason=str(pending or "ContainerCreating"))
        path = self.runtime.log_path(uid, container, run)

        def writing() -> bool:
            return run == runs[-1] and self.runtime.writing_log(uid, container)

        reader = LogReader(path, fallback=self.clock.now())
        limit = Limit(opts.limit_bytes)
        if not (opts.follow and writing()):
            body = limit.take(render(select(reader.poll(final=True), opts), timestamps=opts.timestamps))
            return web.Response(body=body, content_type="text/plain")
        # Listened to before the first read, so nothing the pump writes after it goes unnoticed. Only a wake-up
        # signal: it holds at most the newest chunk, looked at for a line end and never sent.
        listener = containerio.LIVE.listen(cdir, limit=0)
        try:
            first = limit.take(render(select(reader.poll(final=False), opts), timestamps=opts.timestamps))
            response = web.StreamResponse(headers={"Content-Type": "text/plain", "Transfer-Encoding": "chunked"})
            await response.prepare(request)
            await response.write(first)
            await self._follow(request, response, reader, listener, opts=opts, limit=limit, writing=writing)
            return response  # aiohttp ends it, unless the client has gone already
        finally:
            listener.end()

    async def _follow(self, request: web.Request, response: web.StreamResponse, reader: LogReader,
                      listener: containerio.Listener, *, opts: Options, limit: Limit,
                      writing: Callable[[], bool]) -> None:
        """Send what the log gains, read once the pump has written a line end, until the run's output is over.

        Also over once the client has gone: a quiet log would otherwise never fail a write to tell."""
        since_only = dataclasses.replace(opts, tail_lines=None)
        pause = FOLLOW_CHECK_SECONDS
        tick: asyncio.Task[None] | None = None
        woken = False
        try:
            while not limit.spent:
                if request.transport is None or request.transport.is_closing():
                    return
                done = not writing()
                listener.take_nowait()  # this read covers what came so far: only what comes after wakes the next
                seen = listener.dropped
                out = limit.take(render(select(reader.poll(final=done), since_only), timestamps=opts.timestamps))
                last = self.clock.monotonic()
                if out:
                    await response.write(out)
                if done:
                    return
                if listener.ended or not listener.output.published:
                    await self.clock.sleep(pause)
                    pause = min(pause * 2, FOLLOW_INTERVAL_SECONDS)
                    continue
                # Output came: one read per interval at most, what comes meanwhile is read at its end at once.
                wait = last + FOLLOW_INTERVAL_SECONDS - self.clock.monotonic()
                if woken and wait > 0:
                    await self.clock.sleep(wait)
                if tick is None or tick.done():
                    tick = asyncio.get_running_loop().create_task(self.clock.sleep(FOLLOW_FALLBACK_SECONDS))
                woken = await _line_written(listener, seen=seen, fallback=tick)
        finally:
            if tick is not None:
                tick.cancel()


async def _line_written(listener: containerio.Listener, *, seen: int, fallback: asyncio.Task[None]) -> bool:
    """Wait until the pump has written a line end or ended (True), or the fallback check is due (False).

    Output without a line end (a program writing a line in parts, a prompt) adds no line to read yet.
    seen: the listener's dropped count at the last read; more dropped since may have held a line end."""
    data = listener.take_nowait()
    while True:
        if b"\n" in data or listener.dropped != seen or listener.ended:
            return True
        if fallback.done():
            return False
        await asyncio.wait({listener.wakeup(), fallback}, return_when=asyncio.FIRST_COMPLETED)
        data = listener.take_nowait()
