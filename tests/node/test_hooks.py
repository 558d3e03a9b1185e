"""Specification of lifecycle hook handlers: exec, httpGet, sleep and tcpSocket, worded as kubelet 1.32 words them."""

from __future__ import annotations

import asyncio
import datetime

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import hooks, probes

POD = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}}
CLOCK = clock_mod.Clock()


def ctr(**lifecycle):
    return {"name": "main", "ports": [{"name": "http", "containerPort": 1}], "lifecycle": lifecycle}


async def run(handler, *, timeout=None, clock=CLOCK):
    return await hooks.run(POD, ctr(), handler, probes.Target(), clock=clock, timeout=timeout)


@pytest.mark.parametrize(("container", "hook", "found"), [
    ({}, hooks.POST_START, False),
    ({"lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}, hooks.PRE_STOP, True),
    ({"lifecycle": {"preStop": {"exec": {"command": ["true"]}}}}, hooks.POST_START, False),
    ({"lifecycle": "junk"}, hooks.PRE_STOP, False),
])
def test_handler_lookup(container, hook, found):
    """A container's handler for one hook is found only where it is set."""
    assert (hooks.handler(container, hook) is not None) == found


@pytest.mark.parametrize(("grace", "spent", "left"), [(30, 0.4, 30), (30, 10.9, 20), (5, 4, 2), (5, 60, 2)])
def test_grace_left(grace, spent, left):
    """A preStop's whole seconds come off the grace period, leaving at least two for SIGTERM."""
    assert hooks.grace_left(grace, spent) == left


async def test_exec_success_and_failure():
    """An exec hook succeeds on exit 0; a failure reports the command, container, pod and output."""
    assert (await run({"exec": {"command": ["sh", "-c", "exit 0"]}})).ok
    out = await run({"exec": {"command": ["sh", "-c", "echo nope; exit 3"]}})
    assert not out.ok
    assert out.message.startswith('Exec lifecycle hook ([sh -c echo nope; exit 3]) for Container "main" in Pod '
                                  '"web_ns(u1)" failed - error: command \'sh -c echo nope; exit 3\' exited with ')
    assert out.message.endswith(', message: "nope\\n"')


async def test_exec_missing_program():
    """An exec hook whose program does not exist fails with the runtime's exec error."""
    out = await run({"exec": {"command": ["/no/such/program"]}})
    assert not out.ok and "no such file or directory" in out.message


async def test_http_any_response_is_success_and_refused_fails():
    """An httpGet hook succeeds on any HTTP status; a refused connection fails with Go's error text."""
    async def serve(reader, writer):
        await reader.readline()
        writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        assert (await run({"httpGet": {"path": "/hook", "port": port}})).ok
    out = await run({"httpGet": {"path": "/hook", "port": port}})
    assert not out.ok
    assert out.message == (f'HTTP lifecycle hook (/hook) for Container "main" in Pod "web_ns(u1)" failed - error: '
                           f'Get "http://127.0.0.1:{port}/hook": dial tcp 127.0.0.1:{port}: connect: connection refused')


async def test_sleep_uses_the_clock_and_is_bounded():
    """A sleep hook waits its seconds on the runtime's clock, never longer than the timeout."""
    fake = clock_mod.FakeClock(datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC))
    task = asyncio.create_task(run({"sleep": {"seconds": 5}}, clock=fake))
    await asyncio.sleep(0.01)
    assert not task.done()
    fake.advance(5)
    assert (await asyncio.wait_for(task, 1)).ok
    task = asyncio.create_task(run({"sleep": {"seconds": 500}}, clock=fake, timeout=2))
    await asyncio.sleep(0.01)
    fake.advance(2)
    assert (await asyncio.wait_for(task, 1)).ok


async def test_tcp_socket_is_accepted_but_fails_when_run():
    """tcpSocket is kept for compatibility only: running it fails as an invalid handler, as in Kubernetes."""
    out = await run({"tcpSocket": {"port": 8080}})
    assert not out.ok
    assert out.message == ("Cannot run handler: invalid handler: &LifecycleHandler{Exec:nil,HTTPGet:nil,"
                           "TCPSocket:&TCPSocketAction{Port:{0 8080 },Host:,},Sleep:nil,}")
