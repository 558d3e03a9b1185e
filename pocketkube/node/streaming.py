"""The kubelet's /exec and /attach endpoints: find the running container, upgrade the connection, run the session."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Mapping
from typing import Any

from aiohttp import web

from pocketkube.base import clock as clock_mod
from pocketkube.node import containerexec, process, remotecommand, remotespdy

# How often attach looks for new output of the container.
ATTACH_POLL_SECONDS = 0.1

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


def latest_log(container_dir: str) -> str | None:
    """The log file of the container's newest run."""
    try:
        runs = [int(n[:-4]) for n in os.listdir(container_dir) if n.endswith(".log") and n[:-4].isdigit()]
    except FileNotFoundError:
        return None
    return os.path.join(container_dir, f"{max(runs)}.log") if runs else None


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
                                          running=lambda: self.runtime.pid(uid, container) == pid)
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
        """Relay the container's output from now on until it exits, and the client's input to its stdin or terminal.

        A container without stdin: true has none to write to: the client's input is read and dropped, as
        containerd drops it."""
        cdir = os.path.join(self.runtime.pod_dir(uid), container)
        path = await asyncio.to_thread(latest_log, cdir)
        offset = await asyncio.to_thread(_size, path)
        # Input goes in only once the output is followed from here: nothing it makes the container say is missed.
        stdio = self.runtime.stdio(uid, container)
        feeder = None
        if session.opts.stdin or session.opts.tty:
            feeder = asyncio.get_running_loop().create_task(
                stdio.attach(session) if stdio is not None else _discard(session))
        channel = remotecommand.STDOUT if session.opts.stdout else remotecommand.STDERR
        try:
            while not session.closed.is_set():
                done = self.runtime.pid(uid, container) != pid and not self.runtime.writing_log(uid, container)
                if path is None:
                    path = await asyncio.to_thread(latest_log, cdir)
                while data := await asyncio.to_thread(_read_from, path, offset):
                    offset += len(data)
                    if session.opts.stdout or session.opts.stderr:
                        await session.send(channel, data)
                if done:
                    break
                await self.clock.sleep(ATTACH_POLL_SECONDS)
            await session.finish(remotecommand.success())
        finally:
            if feeder is not None:
                feeder.cancel()
                await asyncio.gather(feeder, return_exceptions=True)


async def _discard(session: remotecommand.Session) -> None:
    while await session.stdin.get() is not None:
        pass


def _size(path: str | None) -> int:
    if path is None:
        return 0
    with contextlib.suppress(OSError):
        return os.path.getsize(path)
    return 0


def _read_from(path: str | None, offset: int) -> bytes:
    if path is None:
        return b""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read(1 << 20)
    except OSError:
        return b""
