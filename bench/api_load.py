"""API load benchmark: creates, gets, merge-patches, lists, deletes and watch latency against any kubeconfig.

Usage: python bench/api_load.py [--kubeconfig PATH] [--clients 32] [--objects 2000] [--namespace bench]
Prints figures and, where a reference exists, the ratio to the real kube-apiserver 1.32 + etcd figures
measured on a 2-core machine (see bench/README.md). Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import ssl
import statistics
import tempfile
import time

import aiohttp
import orjson
import yaml

REFERENCE = {"create": 1224, "get": 2591, "patch": 1076, "delete": 1433, "list_ms": 55}
TARGET = {"create": 1800, "get": 2600, "patch": 1600, "delete": None, "list_ms": 30}


def _load_kubeconfig(path: str) -> tuple[str, ssl.SSLContext]:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    ctx_name = cfg["current-context"]
    ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in cfg["users"] if u["name"] == ctx["user"])
    tmp = tempfile.mkdtemp()
    ssl_ctx = ssl.create_default_context()
    if "certificate-authority-data" in cluster:
        ssl_ctx.load_verify_locations(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    cert = os.path.join(tmp, "c.pem")
    key = os.path.join(tmp, "k.pem")
    with open(cert, "wb") as f:
        f.write(base64.b64decode(user["client-certificate-data"]))
    with open(key, "wb") as f:
        f.write(base64.b64decode(user["client-key-data"]))
    ssl_ctx.load_cert_chain(cert, key)
    return cluster["server"].rstrip("/"), ssl_ctx


def _cpu_seconds(pid: int | None) -> float:
    """User+system CPU seconds of the server's main thread (its event loop; Linux /proc), 0 without --server-pid.

    The main thread alone: the store's writer thread spends more or less per write depending on how many
    writes each group commit happens to batch, which is timing noise, not request-path cost.
    """
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/task/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


SERVER_PID: int | None = None


async def _run_phase(name: str, n: int, clients: int, op) -> float:  # type: ignore[no-untyped-def]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(n):
        queue.put_nowait(i)
    errors: dict[int, int] = {}

    async def worker() -> None:
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            status = await op(i)
            if status >= 300:
                errors[status] = errors.get(status, 0) + 1

    cpu0 = _cpu_seconds(SERVER_PID)
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - start
    cpu = _cpu_seconds(SERVER_PID) - cpu0
    rate = n / elapsed
    failed = ", ".join(f"{count} x {status}" for status, count in sorted(errors.items())) or "0"
    # Server CPU per request does not depend on what else the machine runs, unlike the rate.
    per = f", server {cpu / n * 1e6:.0f} us CPU each" if SERVER_PID else ""
    print(f"{name:8s} {rate:8.0f}/s  ({n} in {elapsed:.2f}s, {failed} errors{per})")
    return rate


def _ratio(name: str, value: float, *, lower_is_better: bool = False) -> str:
    ref = REFERENCE.get(name)
    if not ref:
        return ""
    r = ref / value if lower_is_better else value / ref
    tgt = TARGET.get(name)
    return f"  {r:.2f}x kube-apiserver" + (f" (target {tgt})" if tgt else "")


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", os.path.expanduser("~/.kube/config")))
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--objects", type=int, default=2000)
    ap.add_argument("--namespace", default="bench")
    ap.add_argument("--server-pid", type=int, default=None,
                    help="also report the server process's CPU time per request (same machine, Linux)")
    args = ap.parse_args()
    global SERVER_PID
    SERVER_PID = args.server_pid
    base, ssl_ctx = _load_kubeconfig(args.kubeconfig)
    conn = aiohttp.TCPConnector(ssl=ssl_ctx, limit=args.clients * 2)
    ns = args.namespace
    cm_url = f"{base}/api/v1/namespaces/{ns}/configmaps"
    async with aiohttp.ClientSession(connector=conn) as s:
        async with s.post(f"{base}/api/v1/namespaces", data=orjson.dumps(
                {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
                headers={"Content-Type": "application/json"}) as r:
            await r.read()
            # A namespace that was already there (or that this user may not create) is left in place.
            created_namespace = r.status == 201
        hdr = {"Content-Type": "application/json", "Accept": "application/json"}

        async def create(i: int) -> int:
            body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm-{i}"}, "data": {"k": "v" * 64}}
            async with s.post(cm_url, data=orjson.dumps(body), headers=hdr) as r:
                await r.read()
                return r.status

        async def get(i: int) -> int:
            async with s.get(f"{cm_url}/cm-{i % args.objects}", headers=hdr) as r:
                await r.read()
                return r.status

        async def patch(i: int) -> int:
            async with s.patch(f"{cm_url}/cm-{i}", data=orjson.dumps({"data": {"p": str(i)}}),
                               headers={"Content-Type": "application/merge-patch+json"}) as r:
                await r.read()
                return r.status

        async def delete(i: int) -> int:
            async with s.delete(f"{cm_url}/cm-{i}", headers=hdr) as r:
                await r.read()
                return r.status

        results = {}
        results["create"] = await _run_phase("create", args.objects, args.clients, create)
        results["get"] = await _run_phase("get", args.objects * 2, args.clients, get)
        results["patch"] = await _run_phase("patch", args.objects, args.clients, patch)
        times = []
        for _ in range(10):
            t0 = time.perf_counter()
            async with s.get(cm_url, headers=hdr) as r:
                body = await r.read()
            times.append((time.perf_counter() - t0) * 1000)
        n_items = len(orjson.loads(body)["items"])
        list_ms = statistics.median(times)
        print(f"list     {list_ms:8.1f} ms median for {n_items} objects")

        # watch latency: time from a write's response to the event's arrival
        lat: list[float] = []
        async with s.get(f"{cm_url}?watch=1&resourceVersion=0&fieldSelector=metadata.name%3Dwatched", headers=hdr,
                         timeout=aiohttp.ClientTimeout(total=None)) as w:
            await asyncio.sleep(0.2)
            for j in range(20):
                watched = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "watched"}, "data": {"j": str(j)}}
                t0 = time.perf_counter()
                if j == 0:
                    async with s.post(cm_url, data=orjson.dumps(watched), headers=hdr) as r:
                        await r.read()
                else:
                    async with s.put(f"{cm_url}/watched", data=orjson.dumps(watched), headers=hdr) as r:
                        await r.read()
                if r.status >= 300:
                    raise SystemExit(f"write for the watch test failed: {r.status} {(await r.text())[:200]}")
                line = await w.content.readline()
                lat.append((time.perf_counter() - t0) * 1000)
                assert line
        print(f"watch    {statistics.median(lat):8.1f} ms median write-to-event (p max {max(lat):.1f} ms)")
        results["delete"] = await _run_phase("delete", args.objects, args.clients, delete)
        async with s.delete(f"{cm_url}/watched") as r:
            await r.read()
        if created_namespace:
            async with s.delete(f"{base}/api/v1/namespaces/{ns}") as r:
                await r.read()
    print()
    for k in ("create", "get", "patch", "delete"):
        print(f"{k:8s} {results[k]:8.0f}/s{_ratio(k, results[k])}")
    print(f"list     {list_ms:8.1f} ms{_ratio('list_ms', list_ms, lower_is_better=True)}")


if __name__ == "__main__":
    asyncio.run(main())
