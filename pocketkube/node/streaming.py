"""The kubelet's /exec and /attach endpoints: find the running container, upgrade the connection, run the session."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pocketkube.base import clock as clock_mod
from pocketkube.node import containerexec, containerio, process, remotecommand, remotespdy

# How often an attach listening to a run whose log pump has not published yet checks that the run still goes.
UNPUBLISHED_CHECK_SECONDS = 0.5

# Output that keeps coming is sent at most every BATCH_SECONDS, what came meanwhile in one message, the wait
# doubling up to MAX_BATCH_SECONDS while it keeps coming: a burst costs a few large messages (each a websocket
# frame and TLS records) while a lone write, a keystroke's echo or a prompt, still goes at once.
BATCH_SECONDS = 0.005
MAX_BATCH_SECONDS = 0.04

log = logging.getLogger("pocketkube.node.streaming")

PodFinder = Callable[[str, str], "Mapping[str, Any] | None"]


def container_spec(pod: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    spec = pod.get("spec") or {}
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in spec.get(key) or []:
            if c.get("name") == name:
                return c  # type: ignore[no-any-return]
    return None


def is_websocket(request: web.Request) -> bool:
    return request.headers.get("Upgrade", "").lower() == "websocket"


class Handlers:
    """Serves exec and attach for the containers one process runtime runs."""

    def __init__(self, rt: process.ProcessRuntime, find_pod: PodFinder, *, clock: clock_mod.Clock) -> None:
        self.runtime = rt
        self.find_pod = find_pod
        self.clock = clock

    def add_routes(self, app: web.Application) -> None:
        for method in ("GET", "POST"):
            app.router.add_route(method, "/exec/{namespace}/{pod}/{container}", self.exec)
            app.router.add_route(method, "/attach/{namespace}/{pod}/{container}", self.attach)

    async def exec(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, attach=False)

    async def attach(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, attach=True)

    async def _serve(self, request: web.Request, *, attach: bool) -> web.StreamResponse:
        ns, name, container = (request.match_info[k] for k in ("namespace", "pod", "container"))
        try:
            command = [] if attach else request.query.getall("command", [])
            opts = remotecommand.parse_options(request.query, command)
            uid, pid, spec = self._running(ns, name, container)
        except remotecommand.RequestError as e:
            return web.Response(status=e.code, text=e.message, content_type="text/plain")

        async def run_exec(session: remotecommand.Session) -> None:
            target = containerexec.Target(pid=pid, working_dir=str(spec.get("workingDir") or "/"),
                                          running=lambda: self.runtime.pid(uid, container) == pid,
                                          env=self.runtime.env(uid, container))
            await session.finish(await containerexec.run(session, target, clock=self.clock))

        async def run_attach(session: remotecommand.Session) -> None:
            await self._attach(session, uid, container, pid)

        run = run_attach if attach else run_exec
        if is_websocket(request):
            return await remotecommand.serve_websocket(request, opts, run)
        return await remotespdy.serve(request, opts, run, clock=self.clock)

    def _running(self, ns: str, name: str, container: str) -> tuple[str, int, Mapping[str, Any]]:
        """The pod's uid, the container's pid and spec; the kubelet's errors when it does not run."""
        pod = self.find_pod(ns, name)
        if pod is None:
            raise remotecommand.RequestError(404, "pod does not exist")
        uid = str((pod.get("metadata") or {}).get("uid") or "")
        spec = container_spec(pod, container)
        pid = self.runtime.pid(uid, container) if spec is not None else None
        if spec is None or pid is None:
            raise remotecommand.RequestError(500, f'container not found ("{container}")')
        return uid, pid, spec

    async def _attach(self, session: remotecommand.Session, uid: str, container: str, pid: int) -> None:
        """Relay the container's output from now on as it is written, and the client's input to its stdin or terminal.

        The output comes from the log pump's live copy, never from the log: it arrives as the container
        writes it, a prompt without a line end included. A container without stdin: true has none to
        write to: the client's input is read and dropped, as containerd drops it."""
        listener = containerio.LIVE.listen(os.path.join(self.runtime.pod_dir(uid), container))
        # Input goes in only once the output is listened to: nothing it makes the container say is missed.
        loop = asyncio.get_running_loop()
        stdio = self.runtime.stdio(uid, container)
        feeder = None
        if session.opts.stdin or session.opts.tty:
            feeder = loop.create_task(stdio.attach(session) if stdio is not None else _discard(session))

        def over() -> bool:
            return self.runtime.pid(uid, container) != pid and not self.runtime.writing_log(uid, container)

        ender = loop.create_task(self._end_when_over(session, listener, over))
        channels = channels_for(session.opts)
        try:
            last, window = float("-inf"), BATCH_SECONDS
            while parts := await listener.take_parts():
                wait = last + window - self.clock.monotonic()
                if wait > 0:
                    await self.clock.sleep(wait)
                    parts = join_parts(parts, listener.take_parts_nowait())
                    window = min(window * 2, MAX_BATCH_SECONDS)
                else:
                    window = BATCH_SECONDS
                for stream, data in parts:
                    channel = channels.get(stream)
                    if channel is not None:
                        await session.send(channel, data)
                last = self.clock.monotonic()
            if listener.dropped:
                log.info("attach to %s/%s fell behind: %d bytes of output dropped", uid, container, listener.dropped)
            await session.finish(remotecommand.success())
        finally:
            listener.end()
            tasks = [t for t in (feeder, ender) if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _end_when_over(self, session: remotecommand.Session, listener: containerio.Listener,
                             over: Callable[[], bool]) -> None:
        """End the listening once the client goes, or once the run is over before its log pump ever published.

        A pump ends its listeners when the output ends; the check covers an attach that came after its end."""
        loop = asyncio.get_running_loop()
        closed = loop.create_task(session.closed.wait())
        try:
            while not closed.done() and not listener.output.published:
                if over():
                    return
                tick = loop.create_task(self.clock.sleep(UNPUBLISHED_CHECK_SECONDS))
                try:
                    await asyncio.wait({closed, tick}, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    tick.cancel()
            await closed
        finally:
            closed.cancel()
            listener.end()


def channels_for(opts: remotecommand.Options) -> dict[str, int]:
    """Where an attach sends each output stream: stdout and stderr each on its channel, if the session has it.

    A stream the session did not ask for is dropped, as containerd drops it (kubectl attach -t to a container
    without a terminal asks for no stderr); a terminal's output is all stdout."""
    channels = {}
    if opts.stdout:
        channels[containerio.STDOUT] = remotecommand.STDOUT
    if opts.stderr:
        channels[containerio.STDERR] = remotecommand.STDERR
    return channels


def join_parts(parts: list[containerio.Part], more: list[containerio.Part]) -> list[containerio.Part]:
    """parts then more, the stream's output at the seam as one part (so one message)."""
    if parts and more and parts[-1][0] == more[0][0]:
        return [*parts[:-1], (more[0][0], parts[-1][1] + more[0][1]), *more[1:]]
    return parts + more


async def _discard(session: remotecommand.Session) -> None:
    while await session.stdin.get() is not None:
        pass
