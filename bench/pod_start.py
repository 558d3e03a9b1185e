"""Pod start benchmark: a 100-replica Deployment from create to all Ready, then single pods' create-to-Ready.

Usage: python bench/pod_start.py [--kubeconfig PATH] [--replicas 100] [--singles 50] [--image busybox]
Against `pocketkube up --nodes 1` (pods run as local processes): prints the Deployment's create-to-all-Ready
time and the p50/p99 of sequential single pods' create-to-Ready, against the issue's targets (<= 3 s for
100 replicas, p99 <= 0.5 s for one pod). Not a pass/fail test.
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

TARGET_DEPLOYMENT_S = 3.0
TARGET_P99_S = 0.5
JSON = {"Content-Type": "application/json"}
LABEL = "pod-start-bench"


def container(image: str) -> dict[str, Any]:
    """A small long-running container: busybox sleep, or python sleeping when --image is python."""
    cmd = ["python3", "-c", "import time; time.sleep(3600)"] if image.startswith("python") \
        else ["sleep", "3600"]
    return {"name": "c", "image": image, "command": cmd,
            "resources": {"requests": {"cpu": "1m", "memory": "4Mi"}}}


def deployment(replicas: int, image: str) -> dict[str, Any]:
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": LABEL},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": LABEL}},
                     "template": {"metadata": {"labels": {"app": LABEL}},
                                  "spec": {"containers": [container(image)], "terminationGracePeriodSeconds": 0}}}}


def single(name: str, image: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"single": LABEL}},
            "spec": {"containers": [container(image)], "terminationGracePeriodSeconds": 0}}


def ready(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (pod.get("status") or {}).get("conditions") or [])


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100) of values."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


class Watcher:
    """One pod watch of a namespace: resolves a future per pod name when it first shows Ready."""

    def __init__(self) -> None:
        self.ready_at: dict[str, float] = {}
        self.seen_at: dict[str, float] = {}
        self.bound_at: dict[str, float] = {}
        self.running_at: dict[str, float] = {}
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.live: set[str] = set()  # pods the watch has seen and not yet seen deleted
        self.ended: str = ""  # why the watch stopped, when it has

    def wait(self, name: str) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        if name in self.ready_at:
            fut.set_result(self.ready_at[name])
        else:
            self.waiting[name] = fut
        return fut

    async def run(self, s: aiohttp.ClientSession, url: str, rv: str) -> None:
        try:
            await self._run(s, url, rv)
            self.ended = "the server closed the watch"
        except Exception as e:
            self.ended = f"{type(e).__name__}: {e}"
            raise

    async def _run(self, s: aiohttp.ClientSession, url: str, rv: str) -> None:
        params = {"watch": "1", "resourceVersion": rv}
        async with s.get(url, params=params, timeout=aiohttp.ClientTimeout(total=None)) as r:
            async for line in r.content:
                ev = orjson.loads(line)
                obj = ev.get("object") or {}
                name = (obj.get("metadata") or {}).get("name") or ""
                now = time.perf_counter()
                if ev.get("type") == "DELETED":
                    self.live.discard(name)
                    continue
                self.live.add(name)
                self.seen_at.setdefault(name, now)
                if name not in self.bound_at and (obj.get("spec") or {}).get("nodeName"):
                    self.bound_at[name] = now
                if name not in self.running_at and (obj.get("status") or {}).get("phase") == "Running":
                    self.running_at[name] = now
                if ev.get("type") in ("ADDED", "MODIFIED") and name not in self.ready_at and ready(obj):
                    self.ready_at[name] = time.perf_counter()
                    fut = self.waiting.pop(name, None)
                    if fut is not None and not fut.done():
                        fut.set_result(self.ready_at[name])


async def run(args: argparse.Namespace) -> None:
    base, ssl_ctx = api_load._load_kubeconfig(args.kubeconfig)
    ns = args.namespace
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_ctx)) as s:
        async with s.post(f"{base}/api/v1/namespaces", data=orjson.dumps(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}), headers=JSON) as r:
            if r.status not in (201, 409):
                raise SystemExit(f"creating namespace {ns}: {r.status} {await r.text()}")
        pods_url = f"{base}/api/v1/namespaces/{ns}/pods"
        async with s.get(pods_url) as r:
            body = await r.json()
            if body["items"]:
                raise SystemExit(f"namespace {ns} already has pods; delete them or pick another --namespace")
        w = Watcher()
        watch = asyncio.create_task(w.run(s, pods_url, body["metadata"]["resourceVersion"]))
        await asyncio.sleep(0.2)
        try:
            if args.replicas:
                await _deployment(s, base, ns, w, args)
            if args.singles:
                await _singles(s, pods_url, w, args)
        finally:
            watch.cancel()
            if not args.keep:
                async with s.delete(f"{base}/api/v1/namespaces/{ns}") as r:
                    await r.read()
                # The next run may reuse the name: wait (a while) until the namespace is gone.
                for _ in range(600):
                    async with s.get(f"{base}/api/v1/namespaces/{ns}") as r:
                        await r.read()
                        if r.status == 404:
                            break
                    await asyncio.sleep(0.1)


async def _deployment(s: aiohttp.ClientSession, base: str, ns: str, w: Watcher, args: argparse.Namespace) -> None:
    start = time.perf_counter()
    async with s.post(f"{base}/apis/apps/v1/namespaces/{ns}/deployments",
                      data=orjson.dumps(deployment(args.replicas, args.image)), headers=JSON) as r:
        if r.status != 201:
            raise SystemExit(f"creating the Deployment: {r.status} {await r.text()}")
    deadline = start + args.timeout
    while time.perf_counter() < deadline:
        if len(w.ready_at) >= args.replicas:
            break
        await asyncio.sleep(0.01)
    n = len(w.ready_at)
    end = max(w.ready_at.values(), default=start)
    if n < args.replicas:
        print(f"deployment: only {n}/{args.replicas} Ready after {args.timeout}s"
              + (f" (the watch ended: {w.ended})" if w.ended else ""))
        await _explain(s, f"{base}/api/v1/namespaces/{ns}/pods", w)
        return
    total = end - start
    print(f"deployment of {args.replicas} replicas, create -> all Ready: {total:.2f}s "
          f"(target <= {TARGET_DEPLOYMENT_S}s)")
    # When the pods got through each step, from the Deployment's create: is the controller's slow start,
    # the scheduler or the node the long pole?
    for label, stamps in (("created", w.seen_at), ("bound", w.bound_at), ("Running", w.running_at),
                          ("Ready", w.ready_at)):
        times = sorted(t - start for t in stamps.values())
        print(f"  {label:8s} first {times[0]:.2f}s, 50% {percentile(times, 50):.2f}s, "
              f"90% {percentile(times, 90):.2f}s, last {times[-1]:.2f}s")
    # The single pods are measured on a quiet node: scale the Deployment away first. (pocketkube's API server
    # may answer this patch 409 when it races the deployment controller's write; kube's retries inside.)
    for _ in range(10):
        async with s.patch(f"{base}/apis/apps/v1/namespaces/{ns}/deployments/{LABEL}/scale",
                           data=orjson.dumps({"spec": {"replicas": 0}}),
                           headers={"Content-Type": "application/merge-patch+json"}) as r:
            text = await r.text()
            if r.status == 200:
                break
            print(f"  scaling to 0: {r.status} {text[:200]}")
            await asyncio.sleep(0.1)
    # ... and wait until its pods are deleted. With terminationGracePeriodSeconds 0 they leave the API at once;
    # the node tears them down in the background after that.
    t0 = time.perf_counter()
    left = [n for n in w.live if n.startswith(f"{LABEL}-")]
    while left and not w.ended and time.perf_counter() < t0 + args.timeout:
        await asyncio.sleep(0.05)
        left = [n for n in w.live if n.startswith(f"{LABEL}-")]
    took = time.perf_counter() - t0
    if left:
        print(f"  scaled to 0: {len(left)} pods still there after {took:.2f}s"
              + (f" (the watch ended: {w.ended})" if w.ended else ""))
    else:
        print(f"  scaled to 0: all pods deleted after {took:.2f}s")
    if args.settle:
        # The node stops and removes deleted pods after they left the API (100 take it ~3 s on a busy machine).
        await asyncio.sleep(args.settle)
        print(f"  waited {args.settle:.1f}s more for the node to tear them down")


async def _explain(s: aiohttp.ClientSession, pods_url: str, w: Watcher) -> None:
    """Say which pods the API holds un-Ready, and which ones are Ready there though the watch never said so."""
    async with s.get(pods_url, params={"labelSelector": f"app={LABEL}"}) as r:
        pods = (await r.json()).get("items") or []
    for pod in pods:
        name = pod["metadata"]["name"]
        if ready(pod):
            if name not in w.ready_at:
                print(f"  {name}: Ready in the API, but the watch never showed it Ready")
            continue
        status = pod.get("status") or {}
        conds = ",".join(f"{c.get('type')}={c.get('status')}" for c in status.get("conditions") or [])
        states = ",".join(f"{c.get('name')}:{next(iter(c.get('state') or {'?': 0}))}"
                          for c in status.get("containerStatuses") or [])
        print(f"  {name} (uid {pod['metadata'].get('uid')}): node {pod['spec'].get('nodeName') or '-'}, "
              f"phase {status.get('phase')}, conditions {conds or '-'}, containers {states or '-'}, "
              f"podIP {status.get('podIP') or '-'}")


async def _singles(s: aiohttp.ClientSession, pods_url: str, w: Watcher, args: argparse.Namespace) -> None:
    took, bound, running = [], [], []
    for i in range(args.singles):
        name = f"single-{i:03d}"
        fut = w.wait(name)
        start = time.perf_counter()
        async with s.post(pods_url, data=orjson.dumps(single(name, args.image)), headers=JSON) as r:
            if r.status != 201:
                raise SystemExit(f"creating pod {name}: {r.status} {await r.text()}")
        try:
            took.append(await asyncio.wait_for(fut, timeout=args.timeout) - start)
            bound.append(w.bound_at.get(name, start) - start)
            running.append(w.running_at.get(name, start) - start)
        except TimeoutError:
            print(f"pod {name} not Ready after {args.timeout}s")
            return
        async with s.delete(f"{pods_url}/{name}") as r:
            await r.read()
    p50, p99 = statistics.median(took), percentile(took, 99)
    print(f"{len(took)} single pods, create -> Ready: p50 {p50 * 1e3:.0f} ms, p99 {p99 * 1e3:.0f} ms, "
          f"max {max(took) * 1e3:.0f} ms (target p99 <= {TARGET_P99_S * 1e3:.0f} ms)")
    # Where the time goes: the scheduler's part (create -> bound) and the node's (bound -> Ready).
    print(f"  of which create -> bound: p50 {statistics.median(bound) * 1e3:.0f} ms, "
          f"p99 {percentile(bound, 99) * 1e3:.0f} ms; create -> Running: p50 {statistics.median(running) * 1e3:.0f} ms, "
          f"p99 {percentile(running, 99) * 1e3:.0f} ms")
    slowest = sorted(range(len(took)), key=lambda i: -took[i])[:3]
    print("  slowest: " + ", ".join(f"#{i} {took[i] * 1e3:.0f} ms (bound {bound[i] * 1e3:.0f} ms)" for i in slowest))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config")))
    ap.add_argument("--replicas", type=int, default=100)
    ap.add_argument("--singles", type=int, default=50)
    ap.add_argument("--image", default="busybox", help="busybox (sleep 3600) or python:3.12 (python3 -c ...)")
    ap.add_argument("--namespace", default="pod-start-bench")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--keep", action="store_true", help="leave the namespace in place")
    ap.add_argument("--settle", type=float, default=0.0,
                    help="seconds to wait after the Deployment's pods are deleted, before the single pods")
    asyncio.run(run(ap.parse_args()))


if __name__ == "__main__":
    main()
