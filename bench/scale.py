"""Scale benchmark: many virtual nodes and pods in one process: server RSS and list latencies.

Usage: python bench/scale.py [--kubeconfig PATH] --server-pid PID [--nodes 1000] [--pods 30000] [--namespaces 30]
Against `pocketkube up --virtual-nodes 1000`: waits for the nodes, creates the pods (32 concurrent clients,
spread over --namespaces namespaces; --prebind sets spec.nodeName round-robin to leave the scheduler out),
waits until every pod is bound and Running, then prints the server's RSS (and peak) and the median latency of
kubectl-like lists: all pods, the pods of one namespace, all nodes, each whole and in ?limit=500 chunks.
With --server-pid it also prints the server's CPU time per phase (Linux /proc), which a busy machine
distorts less than wall-clock time. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_load  # noqa: E402  (the kubeconfig loader the other benchmarks share)

JSON = {"Content-Type": "application/json"}
# kubectl get's own Accept header: a Table, falling back to JSON.
KUBECTL_ACCEPT = "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io," \
                 "application/json"


def rss_mib(pid: int) -> tuple[float, float]:
    """(current, peak) resident set size of pid in MiB, from /proc (Linux)."""
    values = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values.get("VmRSS", 0.0), values.get("VmHWM", 0.0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of pid so far, in seconds (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def age_seconds(pid: int) -> float:
    """Seconds since pid started (Linux)."""
    with open(f"/proc/{pid}/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def pod(name: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                            "terminationGracePeriodSeconds": 0}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "scale-bench"}},
            "spec": spec}


class ListFailed(Exception):
    """A list answered with an error (say, 410 Expired for a continue token older than the store's history)."""


async def timed_list(s: aiohttp.ClientSession, url: str, *, limit: int = 0, table: bool = False) -> tuple[float, int]:
    """Seconds to list url (following continue tokens when limit is set) and the item count."""
    headers = {"Accept": KUBECTL_ACCEPT} if table else {}
    start, count, cont = time.perf_counter(), 0, ""
    while True:
        params = {}
        if limit:
            params["limit"] = str(limit)
        if cont:
            params["continue"] = cont
        async with s.get(url, params=params, headers=headers) as r:
            raw = await r.read()
            # kubectl decodes without a cyclic collector: ours would add seconds to 30,000 pods' timing.
            gc.disable()
            try:
                body = orjson.loads(raw)
            finally:
                gc.enable()
            if r.status != 200:
                raise ListFailed(f"{r.status} {body.get('reason', '')} after {count} items")
        count += len(body.get("items") or body.get("rows") or [])
        cont = (body.get("metadata") or {}).get("continue") or ""
        if not cont:
            return time.perf_counter() - start, count


async def run(args: argparse.Namespace) -> None:
    base, ssl_ctx = api_load._load_kubeconfig(args.kubeconfig)
    conn = aiohttp.TCPConnector(ssl=ssl_ctx, limit=args.clients * 2)
    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as s:
        start = time.perf_counter()
        while True:
            async with s.get(f"{base}/api/v1/nodes") as r:
                nodes = sorted(n["metadata"]["name"] for n in (await r.json())["items"])
            if len(nodes) >= args.nodes or time.perf_counter() - start > args.timeout:
                break
            await asyncio.sleep(2)
        pid = args.server_pid
        if pid:
            print(f"{len(nodes)} nodes registered {age_seconds(pid):.1f}s after the server started (server CPU "
                  f"{cpu_seconds(pid):.1f}s); {load()}")
            await asyncio.sleep(args.settle)
            before = cpu_seconds(pid)
            await asyncio.sleep(args.idle)
            print(f"idle with {len(nodes)} nodes: server RSS {rss_mib(pid)[0]:.0f} MiB, server CPU "
                  f"{(cpu_seconds(pid) - before) / args.idle * 100:.0f}% of a core over {args.idle:.0f}s; {load()}")
        else:
            print(f"{len(nodes)} nodes")
        namespaces = [f"scale-{i:02d}" for i in range(args.namespaces)]
        for ns in namespaces:
            async with s.post(f"{base}/api/v1/namespaces", data=orjson.dumps(
                    {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}), headers=JSON) as r:
                await r.read()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(args.pods):
            queue.put_nowait(i)
        failures: dict[int, int] = {}

        async def worker() -> None:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                ns = namespaces[i % len(namespaces)]
                node = nodes[i % len(nodes)] if args.prebind and nodes else None
                try:
                    async with s.post(f"{base}/api/v1/namespaces/{ns}/pods",
                                      data=orjson.dumps(pod(f"p{i:06d}", node)), headers=JSON) as r:
                        await r.read()
                        status = r.status
                except (aiohttp.ClientError, TimeoutError):
                    status = 0  # an overloaded server that did not answer, counted rather than fatal
                if status not in (201, 409):
                    failures[status] = failures.get(status, 0) + 1

        start = time.perf_counter()
        cpu_start = cpu_seconds(pid) if pid else 0.0

        async def progress() -> None:
            last = [0.0, 0.0, cpu_start]
            while True:
                await asyncio.sleep(30)
                done = args.pods - queue.qsize()
                took = time.perf_counter() - start
                # The rate and CPU of the last interval: a falling rate shows there, not in the average.
                cpu = cpu_seconds(pid) if pid else 0.0
                recent = (done - last[0]) / (took - last[1])
                per_pod = f", {(cpu - last[2]) / (done - last[0]) * 1e3:.1f} ms server CPU/pod" if pid and done > last[0] \
                    else ""
                print(f"  {took:6.0f}s: {done} pods sent ({done / took:.0f}/s, last {recent:.0f}/s{per_pod}), "
                      f"failures {failures or 0}" + (f", server RSS {rss_mib(pid)[0]:.0f} MiB" if pid else "")
                      + f"; {load()}", flush=True)
                last[:] = [done, took, cpu]

        reporter = asyncio.ensure_future(progress())
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        took = time.perf_counter() - start
        print(f"created {args.pods} pods in {took:.1f}s ({args.pods / took:.0f}/s, failures {failures or 0})"
              + (f", server CPU {cpu_seconds(pid) - cpu_start:.0f}s" if pid else "") + f"; {load()}")
        for label, selector in (("bound", "spec.nodeName%3D"), ("Running", "status.phase%21%3DRunning")):
            left = -1
            while time.perf_counter() - start < args.timeout:
                # Selected server-side: the count falls to 0 once every pod is bound (then Running).
                _, left = await timed_list(s, f"{base}/api/v1/pods?fieldSelector={selector}")
                if not left:
                    break
                await asyncio.sleep(5)
            print(f"all {label} after {time.perf_counter() - start:.1f}s ({left} not yet)"
                  + (f", server CPU {cpu_seconds(pid) - cpu_start:.0f}s" if pid else "") + f"; {load()}",
                  flush=True)
        reporter.cancel()
        await asyncio.sleep(args.settle)
        if args.server_pid:
            cur, peak = rss_mib(args.server_pid)
            print(f"server RSS {cur:.0f} MiB (peak {peak:.0f} MiB) with {len(nodes)} nodes and {args.pods} pods")
        cases = [("all pods", f"{base}/api/v1/pods"),
                 (f"pods in {namespaces[0]}", f"{base}/api/v1/namespaces/{namespaces[0]}/pods"),
                 ("nodes", f"{base}/api/v1/nodes")]
        for label, url in cases:
            for limit in (0, 500):
                for table in (False, True):
                    how = ("?limit=500 chunks" if limit else "whole") + (", as Table (kubectl get)" if table else "")
                    try:
                        runs = [await timed_list(s, url, limit=limit, table=table) for _ in range(args.repeat)]
                    except ListFailed as e:
                        print(f"list {label:18s} {how:42s} failed: {e}; {load()}", flush=True)
                        continue
                    med = statistics.median(t for t, _ in runs)
                    print(f"list {label:18s} {how:42s} {runs[0][1]:6d} items  {med * 1e3:8.1f} ms median; {load()}",
                          flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config")))
    ap.add_argument("--server-pid", type=int, default=0, help="the pocketkube process, for its RSS (Linux)")
    ap.add_argument("--nodes", type=int, default=1000, help="wait for this many nodes")
    ap.add_argument("--pods", type=int, default=30000)
    ap.add_argument("--namespaces", type=int, default=30)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--prebind", action="store_true", help="set spec.nodeName round-robin (no scheduler)")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--settle", type=float, default=5.0, help="seconds to wait before measuring")
    ap.add_argument("--idle", type=float, default=30.0, help="seconds over which to measure the idle server's CPU")
    ap.add_argument("--timeout", type=float, default=3600.0)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
