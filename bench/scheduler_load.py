"""Scheduler benchmark: create pods with requests concurrently, time until a watch shows every one bound.

Usage: python bench/scheduler_load.py [--kubeconfig PATH] [--pods 2000] [--clients 32] [--wait-nodes 100]
       python bench/scheduler_load.py --fake-nodes 100 ...   (agentless Node objects: no kubelet traffic;
       the server needs POCKETKUBE_NODE_MONITOR_GRACE_SECONDS=3600 or it marks them unreachable after 40 s)
       python bench/scheduler_load.py --in-memory [--nodes 100] [--pods 2000]   (the framework alone, no API)
Against `pocketkube up --virtual-nodes 100` (or any cluster): prints the time from the first create to the
last pod seen with spec.nodeName, the create rate, and how evenly the pods landed (min/max per node, stddev),
with the ratio to a real kube-scheduler 1.32 on a 2-core machine (6.8 s). Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import time
from typing import Any

import aiohttp
import orjson

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import api_load  # noqa: E402  (the kubeconfig loader the other benchmarks share)

REFERENCE_S = 6.8  # a real kube-scheduler 1.32, 2000 pods onto 100 nodes, 2-core machine (issue 3)
TARGET_S = 3.5
JSON = {"Content-Type": "application/json"}


def pod(name: str, *, cpu: str, memory: str) -> dict[str, Any]:
    """A bare pod requesting cpu and memory (never run: virtual nodes only report it Running)."""
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "sched-bench"}},
            "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                                     "resources": {"requests": {"cpu": cpu, "memory": memory}}}],
                     "terminationGracePeriodSeconds": 0}}


def fake_node(name: str) -> dict[str, Any]:
    """A Node object with no agent behind it (as kube's scheduler_perf uses): Ready, 32 cpu, 256Gi, 110 pods.

    Nothing posts its status, so node lifecycle taints it unreachable once the grace period is over:
    start the server with POCKETKUBE_NODE_MONITOR_GRACE_SECONDS=3600 for this mode."""
    alloc = {"cpu": "32", "memory": "256Gi", "pods": "110"}
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux"}},
            "status": {"capacity": alloc, "allocatable": alloc,
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "message": "fake node of bench/scheduler_load.py"}]}}


def spread_report(per_node: dict[str, int], nodes: int) -> str:
    """min/max pods per node (nodes that got none count as 0) and the population stddev."""
    counts = list(per_node.values()) + [0] * max(0, nodes - len(per_node))
    if not counts:
        return "no placements"
    return (f"pods per node: min {min(counts)}, max {max(counts)}, stddev {statistics.pstdev(counts):.2f} "
            f"over {len(counts)} nodes")


async def _watch_bound(s: aiohttp.ClientSession, url: str, rv: str, want: int,
                       done: asyncio.Future[float], per_node: dict[str, int]) -> None:
    bound: set[str] = set()
    params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "false"}
    async with s.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as r:
        async for line in r.content:
            ev = orjson.loads(line)
            obj = ev.get("object") or {}
            name = str((obj.get("metadata") or {}).get("name") or "")
            node = (obj.get("spec") or {}).get("nodeName")
            if ev.get("type") in ("ADDED", "MODIFIED") and node and name not in bound:
                bound.add(name)
                per_node[node] = per_node.get(node, 0) + 1
                if len(bound) >= want and not done.done():
                    done.set_result(time.perf_counter())
                    return


async def run(args: argparse.Namespace) -> None:
    base, ssl_ctx = api_load._load_kubeconfig(args.kubeconfig)
    conn = aiohttp.TCPConnector(ssl=ssl_ctx, limit=args.clients * 2)
    ns = args.namespace
    pods_url = f"{base}/api/v1/namespaces/{ns}/pods"
    async with aiohttp.ClientSession(connector=conn) as s:
        fake = [fake_node(f"{ns}-node-{i:04d}") for i in range(args.fake_nodes)]
        for n in fake:
            async with s.post(f"{base}/api/v1/nodes", data=orjson.dumps(n), headers=JSON) as r:
                if r.status not in (201, 409):
                    raise SystemExit(f"creating node {n['metadata']['name']}: {r.status} {await r.text()}")
        args.wait_nodes = max(args.wait_nodes, args.fake_nodes)
        deadline = time.monotonic() + args.timeout
        while True:
            async with s.get(f"{base}/api/v1/nodes") as r:
                nodes = [n for n in (await r.json())["items"] if not any(
                    t.get("effect") == "NoSchedule" for t in (n.get("spec") or {}).get("taints") or [])]
            # Nodes still registering would skew the spread: wait for all of them.
            if len(nodes) >= args.wait_nodes or time.monotonic() > deadline:
                break
            await asyncio.sleep(1)
        print(f"{len(nodes)} schedulable nodes")
        async with s.post(f"{base}/api/v1/namespaces", data=orjson.dumps(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}), headers=JSON) as r:
            if r.status not in (201, 409):
                raise SystemExit(f"creating namespace {ns}: {r.status} {await r.text()}")
        async with s.get(pods_url) as r:
            body = await r.json()
            if body["items"]:
                raise SystemExit(f"namespace {ns} already has pods; delete them or pick another --namespace")
            rv = body["metadata"]["resourceVersion"]
        per_node: dict[str, int] = {}
        done: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        watcher = asyncio.create_task(_watch_bound(s, pods_url, rv, args.pods, done, per_node))
        await asyncio.sleep(0.2)  # the watch is established before the clock starts
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
                body = orjson.dumps(pod(f"p{i:05d}", cpu=args.cpu, memory=args.memory))
                async with s.post(pods_url, data=body, headers=JSON) as r:
                    await r.read()
                    if r.status != 201:
                        failures[r.status] = failures.get(r.status, 0) + 1

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(args.clients)))
        created = time.perf_counter() - start
        try:
            end = await asyncio.wait_for(done, timeout=args.timeout)
        except TimeoutError:
            watcher.cancel()
            print(f"timed out: {sum(per_node.values())}/{args.pods} bound after {args.timeout}s")
            end = 0.0
        total = end - start if end else float("nan")
        print(f"created {args.pods} pods in {created:.2f}s ({args.pods / created:.0f}/s, "
              f"{sum(failures.values())} failed {failures or ''})")
        print(f"first create -> all bound: {total:.2f}s  ({REFERENCE_S / total:.2f}x kube-scheduler's "
              f"{REFERENCE_S}s, target <= {TARGET_S}s)")
        print(spread_report(per_node, len(nodes)))
        if not args.keep:
            async with s.delete(f"{base}/api/v1/namespaces/{ns}") as r:
                await r.read()
            for n in fake:
                async with s.delete(f"{base}/api/v1/nodes/{n['metadata']['name']}") as r:
                    await r.read()


def in_memory(args: argparse.Namespace) -> None:
    """The scheduling framework alone on in-memory nodes: time per pod and placement spread."""
    from pocketkube.scheduler import framework, nodeinfo, scheduler

    cache = nodeinfo.Cache()
    for i in range(args.nodes):
        cache.set_node({"metadata": {"name": f"vnode-{i}", "labels": {"kubernetes.io/hostname": f"vnode-{i}"}},
                        "spec": {}, "status": {"allocatable": {"cpu": "32", "memory": "256Gi", "pods": "110"}}})
    fw = framework.Framework(scheduler.plugins(lambda p: None, None), rng=random.Random(1))
    pods = [pod(f"p{i:05d}", cpu=args.cpu, memory=args.memory) for i in range(args.pods)]
    for i, p in enumerate(pods):
        p["metadata"].update(namespace=args.namespace, uid=str(i))

    def go() -> None:
        for p in pods:
            pi = nodeinfo.PodInfo(p)
            cache.assume(pi, fw.schedule(pi, cache, {}).node)

    start, cpu0 = time.perf_counter(), time.process_time()
    if args.profile:
        import cProfile
        import pstats
        prof = cProfile.Profile()
        prof.runcall(go)
        pstats.Stats(prof).sort_stats("tottime").print_stats(20)
    else:
        go()
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    # CPU time is the steadier figure on a shared machine; wall time includes waiting for a core.
    print(f"{args.pods} pods onto {args.nodes} nodes: {elapsed:.2f}s wall, {cpu / args.pods * 1e3:.3f} ms CPU per pod")
    print(spread_report({n.name: len(n.pods) for n in cache.nodes.values()}, args.nodes))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config")))
    ap.add_argument("--pods", type=int, default=2000)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--namespace", default="sched-bench")
    ap.add_argument("--cpu", default="100m")
    ap.add_argument("--memory", default="128Mi")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--keep", action="store_true", help="leave the pods (and namespace) in place")
    ap.add_argument("--in-memory", action="store_true", help="time the scheduling framework alone, no cluster")
    ap.add_argument("--nodes", type=int, default=100, help="node count for --in-memory")
    ap.add_argument("--fake-nodes", type=int, default=0,
                    help="first create this many agentless Node objects (the scheduler alone, as kube's scheduler_perf)")
    ap.add_argument("--wait-nodes", type=int, default=0, help="first wait until this many schedulable nodes exist")
    ap.add_argument("--profile", action="store_true", help="cProfile the --in-memory run")
    args = ap.parse_args()
    if args.in_memory:
        in_memory(args)
    else:
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
