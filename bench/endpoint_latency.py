"""Endpoint latency benchmark: from a new endpoint in the EndpointSlice to it answering via ClusterIP and Ingress.

Usage: sudo python bench/endpoint_latency.py [--rounds 5]
Needs root, iproute2 and nft. Starts `pocketkube up` (one process node, ingress on free ports), a Deployment of
the small backend at 0 replicas behind a ClusterIP Service and an Ingress, and a watch on its EndpointSlices.
Each round scales to 1 replica while probes hit the ClusterIP (a new connection each time: DNAT picks the
endpoint per connection) and the Ingress every 2 ms, then records when the watch saw the endpoint become ready
and when each path first answered 200. The data-path figure is answer time minus slice time (issue target
< 100 ms); scale-to-ready (scheduling, process start, readiness probe) is printed for context. Not pass/fail.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from typing import Any

import clusterip_load

sys.path.insert(0, clusterip_load.ROOT)

from pocketkube.client import config, rest  # noqa: E402 - the repository root is only known at run time

SLICES = rest.GVR("discovery.k8s.io", "v1", "endpointslices")
HOST = "lat.local"
PROBE_EVERY = 0.002


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _get(host: str, port: int, *, host_header: str) -> int:
    """Status of one GET on a new connection (0 when it cannot connect or gets no answer in time)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, TimeoutError):
        return 0
    try:
        writer.write(f"GET / HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), 1.0)
        parts = line.split()
        return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else 0
    except (OSError, TimeoutError, asyncio.IncompleteReadError):
        return 0
    finally:
        writer.close()


async def _first_200(host: str, port: int, *, host_header: str) -> float:
    while await _get(host, port, host_header=host_header) != 200:
        await asyncio.sleep(PROBE_EVERY)
    return time.perf_counter()


def _ready_addresses(sl: dict[str, Any]) -> set[str]:
    return {a for ep in sl.get("endpoints") or [] if (ep.get("conditions") or {}).get("ready") is not False
            for a in ep.get("addresses") or []}


async def _watch(client: rest.Client, events: asyncio.Queue[tuple[float, set[str]]]) -> None:
    """Put (receipt time, ready addresses of the service) on events for every EndpointSlice change."""
    selector = "kubernetes.io/service-name=lat"
    slices: dict[str, set[str]] = {}
    while True:
        listed = await client.list(SLICES, "default", label_selector=selector)
        slices = {s["metadata"]["name"]: _ready_addresses(s) for s in listed.get("items") or []}
        rv = listed["metadata"]["resourceVersion"]
        with contextlib.suppress(Exception):
            async for etype, obj in client.watch(SLICES, "default", resource_version=rv, label_selector=selector):
                if etype == "BOOKMARK":
                    continue
                name = obj["metadata"]["name"]
                if etype == "DELETED":
                    slices.pop(name, None)
                else:
                    slices[name] = _ready_addresses(obj)
                events.put_nowait((time.perf_counter(), set().union(*slices.values()) if slices else set()))


async def _until(events: asyncio.Queue[tuple[float, set[str]]], want_ready: bool) -> float:
    while True:
        t, ready = await events.get()
        if bool(ready) == want_ready:
            return t


async def _scale(c: clusterip_load.Cluster, n: int) -> None:
    await asyncio.to_thread(c.kubectl, "scale", "deployment/lat", f"--replicas={n}")


async def measure(c: clusterip_load.Cluster, *, rounds: int, ingress_port: int) -> list[tuple[float, float, float]]:
    """Per round: (scale → slice ready, slice → ClusterIP answers, slice → Ingress answers), in ms."""
    cluster_ip = c.json("get", "service", "lat")["spec"]["clusterIP"]
    client = config.from_kubeconfig(c.kubeconfig)
    events: asyncio.Queue[tuple[float, set[str]]] = asyncio.Queue()
    watcher = asyncio.get_running_loop().create_task(_watch(client, events))
    out = []
    try:
        # The Ingress is routed once it answers 503 (a known backend without endpoints) instead of 404.
        deadline = time.monotonic() + 60
        while await _get("127.0.0.1", ingress_port, host_header=HOST) != 503:
            if time.monotonic() > deadline:
                raise RuntimeError("the Ingress never routed lat.local")
            await asyncio.sleep(0.1)
        for i in range(rounds):
            while not events.empty():
                events.get_nowait()
            t0 = time.perf_counter()
            cip = asyncio.ensure_future(_first_200(cluster_ip, 80, host_header=HOST))
            ing = asyncio.ensure_future(_first_200("127.0.0.1", ingress_port, host_header=HOST))
            await _scale(c, 1)
            t_slice = await asyncio.wait_for(_until(events, True), 90)
            t_cip, t_ing = await asyncio.wait_for(asyncio.gather(cip, ing), 30)
            row = ((t_slice - t0) * 1000, (t_cip - t_slice) * 1000, (t_ing - t_slice) * 1000)
            out.append(row)
            print(f"round {i + 1}: scale→slice ready {row[0]:7.0f} ms   slice→ClusterIP answers {row[1]:6.1f} ms   "
                  f"slice→Ingress answers {row[2]:6.1f} ms")
            await _scale(c, 0)
            await asyncio.wait_for(_until(events, False), 60)
            while await _get("127.0.0.1", ingress_port, host_header=HOST) != 503:
                await asyncio.sleep(0.05)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        await client.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    clusterip_load.require_root_network()
    tmp = tempfile.mkdtemp(prefix="pk-latency-bench-")
    c = clusterip_load.Cluster(tmp)
    ingress_port = _free_port()
    try:
        c.start("--ingress-http-port", str(ingress_port), "--ingress-https-port", str(_free_port()))
        c.apply(*clusterip_load.backend_objects("lat", replicas=0, host=HOST))
        rows = asyncio.run(measure(c, rounds=args.rounds, ingress_port=ingress_port))
        for idx, label in ((1, "slice → ClusterIP answers"), (2, "slice → Ingress answers"),
                           (0, "scale → slice ready (context)")):
            vals = [r[idx] for r in rows]
            print(f"{label:30s} median {statistics.median(vals):7.1f} ms   max {max(vals):7.1f} ms"
                  + ("   (target < 100 ms)" if idx else ""))
    finally:
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
