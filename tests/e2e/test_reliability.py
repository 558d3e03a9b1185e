"""End to end: acknowledged writes survive SIGKILL, restarts keep every object, watches resume."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import ssl
import tempfile

import aiohttp
import orjson
import yaml

from tests.e2e import cluster as cluster_mod


def _session_args(kubeconfig: str) -> tuple[str, ssl.SSLContext]:
    with open(kubeconfig) as f:
        cfg = yaml.safe_load(f)
    cluster = cfg["clusters"][0]["cluster"]
    user = cfg["users"][0]["user"]
    ctx = ssl.create_default_context(cadata=base64.b64decode(cluster["certificate-authority-data"]).decode())
    d = tempfile.mkdtemp()
    cert, key = os.path.join(d, "c"), os.path.join(d, "k")
    with open(cert, "wb") as f:
        f.write(base64.b64decode(user["client-certificate-data"]))
    with open(key, "wb") as f:
        f.write(base64.b64decode(user["client-key-data"]))
    ctx.load_cert_chain(cert, key)
    return cluster["server"], ctx


async def _write_until_killed(c: cluster_mod.Cluster) -> list[tuple[str, str]]:
    base, ctx = _session_args(c.kubeconfig)
    acked: list[tuple[str, str]] = []
    url = f"{base}/api/v1/namespaces/default/configmaps"

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
        async def writer(w: int) -> None:
            for i in range(10_000):
                body = orjson.dumps({"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": f"w{w}-{i}"}, "data": {"i": str(i)}})
                try:
                    async with s.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
                        if r.status == 201:
                            obj = await r.json()
                            acked.append((obj["metadata"]["name"], obj["metadata"]["resourceVersion"]))
                except (aiohttp.ClientError, OSError):
                    return

        async def killer() -> None:
            while len(acked) < 300:
                await asyncio.sleep(0.01)
            assert c.proc is not None
            c.proc.send_signal(signal.SIGKILL)

        await asyncio.gather(killer(), *(writer(w) for w in range(8)))
    return acked


def test_sigkill_during_writes_loses_no_acknowledged_write(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Every write acknowledged before a SIGKILL is present after a restart on the same data dir."""
    c = cluster_mod.Cluster(str(tmp_path)).start()
    try:
        acked = asyncio.run(_write_until_killed(c))
        c.stop()
        c.start()
        stored = {o["metadata"]["name"]: o["metadata"]["resourceVersion"]
                  for o in c.json("get", "cm")["items"]}
        missing = [name for name, _ in acked if name not in stored]
        assert len(acked) >= 300 and not missing
        assert all(stored[name] == rv for name, rv in acked)
        # the cluster keeps working and a watch resumes from the last acknowledged revision
        last = max(int(rv) for _, rv in acked)
        c.kubectl("create", "configmap", "after-restart", "--from-literal=a=b")
        base, ctx = _session_args(c.kubeconfig)

        async def resume() -> bytes:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as s:
                async with s.get(f"{base}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion={last}"
                                 "&timeoutSeconds=2") as r:
                    return await r.read()

        events = [orjson.loads(line) for line in asyncio.run(resume()).splitlines() if line]
        assert any(e["object"]["metadata"]["name"] == "after-restart" for e in events)
    finally:
        c.stop()


def test_restart_keeps_objects(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Stopping with SIGTERM and starting again on the same data dir keeps every object and the port choice works."""
    c = cluster_mod.Cluster(str(tmp_path)).start()
    try:
        c.kubectl("create", "namespace", "keep")
        c.kubectl("-n", "keep", "create", "configmap", "kept", "--from-literal=a=b")
        assert c.stop() == 0
        c.start()
        assert c.json("-n", "keep", "get", "cm", "kept")["data"] == {"a": "b"}
    finally:
        c.stop()
