"""Scale benchmark: many virtual nodes and pods in one process: server RSS and list latencies.

Usage: python bench/scale.py [--kubeconfig PATH] --server-pid PID [--nodes 1000] [--pods 30000] [--namespaces 30]
Against `pocketkube up --virtual-nodes 1000`: waits for the nodes, creates the pods (32 concurrent clients,
spread over --namespaces namespaces; --prebind sets spec.nodeName round-robin to leave the scheduler out),
waits until every pod is bound, then prints the server's RSS (and peak) and the median latency of
kubectl-like lists: all pods, the pods of one namespace, all nodes, each whole and in ?limit=500 chunks.
Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
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


def pod(name: str, node: str | None) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}],
                            "terminationGracePeriodSeconds": 0}
    if node:
        spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "scale-bench"}},
            "spec": spec}


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
            body = orjson.loads(await r.read())
            if r.status != 200:
                raise SystemExit(f"list {url}: {r.status} {body}")
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
        print(f"{len(nodes)} nodes after {time.perf_counter() - start:.1f}s; server RSS "
              f"{rss_mib(args.server_pid)[0]:.0f} MiB" if args.server_pid else f"{len(nodes)} nodes")
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
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        took = time.perf_counter() - start
        print(f"created {args.pods} pods in {took:.1f}s ({args.pods / took:.0f}/s, failures {failures or 0})")
        while time.perf_counter() - start < args.timeout:
            # Pending pods, selected server-side: the count falls to 0 once everything is bound.
            _, pending = await timed_list(s, f"{base}/api/v1/pods?fieldSelector=spec.nodeName%3D")
            if not pending:
                break
            await asyncio.sleep(2)
        print(f"all bound after {time.perf_counter() - start:.1f}s")
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
                    runs = [await timed_list(s, url, limit=limit, table=table) for _ in range(args.repeat)]
                    med = statistics.median(t for t, _ in runs)
                    how = ("?limit=500 chunks" if limit else "whole") + (", as Table (kubectl get)" if table else "")
                    print(f"list {label:18s} {how:42s} {runs[0][1]:6d} items  {med * 1e3:8.1f} ms median")


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
    ap.add_argument("--timeout", type=float, default=3600.0)
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
