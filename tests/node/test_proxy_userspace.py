"""The service proxy's userspace fallback: NodePorts on 127.0.0.1 spliced to endpoints when nftables is missing."""

from __future__ import annotations

import asyncio
import socket

from pocketkube.network import proxyrules
from pocketkube.node import proxy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port(node_port: int, backends: tuple[proxyrules.Backend, ...]) -> proxyrules.ServicePort:
    return proxyrules.ServicePort(namespace="default", name="web", port_name="", protocol="tcp",
                                  cluster_ips=("10.96.0.10",), port=80, node_port=node_port, external_ips=(),
                                  backends=backends, external_backends=backends)


async def test_node_port_reaches_an_endpoint_and_closes_when_removed() -> None:
    """A NodePort listens on 127.0.0.1 and relays bytes both ways; dropping the Service closes the listener."""
    async def echo(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.write(b"hello " + await r.readline())
        await w.drain()
        w.close()

    backend = await asyncio.start_server(echo, "127.0.0.1", 0)
    bport = backend.sockets[0].getsockname()[1]
    node_port = _free_port()
    up = proxy.UserspaceProxy()
    try:
        await up.apply([_port(node_port, (proxyrules.Backend("127.0.0.1", bport),))])
        r, w = await asyncio.open_connection("127.0.0.1", node_port)
        w.write(b"there\n")
        await w.drain()
        assert await asyncio.wait_for(r.read(), 5) == b"hello there\n"
        w.close()
        await up.apply([])
        try:
            await asyncio.open_connection("127.0.0.1", node_port)
        except OSError:
            pass
        else:
            raise AssertionError("the NodePort still listens")
    finally:
        await up.close()
        backend.close()
