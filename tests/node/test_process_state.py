"""Specification of where the process runtime keeps a pod's files: runtime state and memory volumes in the state
root, logs and disk volumes in the data dir; each removed with the pod, the state root with the runtime."""

from __future__ import annotations

import asyncio
import os
import pathlib

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.network import resolvconf
from pocketkube.node import process, runtime
from tests.node import fakes

MOUNTS = process.probe_mounts(process.shutil.which("unshare")) == ""


class Harness:
    """A ProcessRuntime whose state root is a directory of the test's, with cluster DNS settings."""

    def __init__(self, tmp_path: pathlib.Path, client: fakes.FakeClient | None = None) -> None:
        host = tmp_path / "host-resolv.conf"
        host.write_text("nameserver 192.0.2.53\n")
        self.data, self.root = tmp_path / "data", tmp_path / "state"
        self.rt = process.ProcessRuntime(client or fakes.FakeClient(), data_dir=str(self.data),
                                         pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clock_mod.Clock(),
                                         dns=resolvconf.Settings(cluster_dns=("10.96.0.10",), resolv_conf=str(host)),
                                         state_root=str(self.root))
        self.changed = asyncio.Event()
        self.rt.set_notify(lambda uid: self.changed.set())

    async def exit(self, timeout: float = 5.0) -> None:
        await asyncio.wait_for(self.changed.wait(), timeout)
        self.changed.clear()


@pytest.fixture
async def h(tmp_path: pathlib.Path):
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/secrets/sec"] = {"data": {"pw": "czNjcmV0"}}
    client.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"data": {"k": "v"}}
    harness = Harness(tmp_path, client)
    yield harness
    await harness.rt.close()


VOLUMES = [
    {"name": "sec", "secret": {"secretName": "sec"}},
    {"name": "proj", "projected": {"sources": [{"configMap": {"name": "cfg"}}]}},
    {"name": "mem", "emptyDir": {"medium": "Memory"}},
    {"name": "cfg", "configMap": {"name": "cfg"}},
    {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
    {"name": "scratch", "emptyDir": {}},
]


def pod(uid: str = "u1", command: list[str] | None = None, **extra: object) -> dict:
    c = {"name": "main", "image": "busybox", "command": command or ["sh", "-c", "echo hi"], **extra}
    return {"metadata": {"name": "p", "namespace": "ns", "uid": uid},
            "spec": {"restartPolicy": "Never", "containers": [c], "volumes": VOLUMES}}


async def test_state_and_memory_volumes_in_the_state_root_logs_on_disk(h: Harness) -> None:
    """resolv.conf, run markers and secret, projected and Memory emptyDir volumes are in the state root;
    logs, configMap, downwardAPI and disk emptyDir volumes stay in the data dir."""
    await h.rt.sync_pod(pod())
    await h.exit()
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.state, cs.termination.exit_code) == (runtime.TERMINATED, 0)
    run, disk = h.root / "pods" / "u1", h.data / "pods" / "u1"
    assert h.rt.run_dir("u1") == str(run) and h.rt.pod_dir("u1") == str(disk)
    assert (run / "resolv.conf").read_text().startswith("search ns.svc.cluster.local")
    assert (run / "main" / "0.started").exists()
    log = h.rt.log_path("u1", "main", 0)
    assert sorted(os.listdir(disk / "main")) == sorted(os.path.basename(f) for f in (log, process.ts_path(log)))
    assert (disk / "main" / "0.log").read_text() == "hi\n"
    assert (run / "volumes" / "sec" / "pw").read_text() == "s3cret"
    assert (run / "volumes" / "proj" / "k").read_text() == "v"
    assert sorted(os.listdir(run / "volumes")) == ["mem", "proj", "sec"]
    assert sorted(os.listdir(disk / "volumes")) == ["cfg", "info", "scratch"]
    await h.rt.remove_pod("u1")
    assert not run.exists() and not disk.exists()
    assert h.root.exists(), "the state root stays while the runtime runs"
    await h.rt.close()
    assert not h.root.exists()


@pytest.mark.skipif(not MOUNTS, reason="mount namespaces are not permitted here")
async def test_volumes_and_termination_message_reach_the_container(h: Harness) -> None:
    """The container reads its secret volume and writes its termination message through binds of the state root."""
    await h.rt.sync_pod(pod(command=["sh", "-c", "cat /etc/sec/pw > /dev/termination-log; grep -c 10.96.0.10 "
                                     "/etc/resolv.conf"],
                            volumeMounts=[{"name": "sec", "mountPath": "/etc/sec"}],
                            terminationMessagePath="/dev/termination-log"))
    await h.exit()
    cs = h.rt.pod_status("u1").containers["main"]
    assert (cs.termination.exit_code, cs.termination.message) == (0, "s3cret")
    assert (h.root / "pods" / "u1" / "main" / "0.termination-log").read_text() == "s3cret"
    assert open(h.rt.log_path("u1", "main", 0)).read() == "1\n"


async def test_first_start_removes_a_crashed_agents_state_once(h: Harness) -> None:
    """What a crashed agent left in the state root goes at the first sync; pods syncing at once all keep theirs."""
    stale = h.root / "pods" / "old" / "main"
    stale.mkdir(parents=True)
    (stale / "3.started").write_text("")
    await asyncio.gather(*(h.rt.sync_pod(pod(uid=f"u{i}", command=["sleep", "30"])) for i in range(3)))
    assert not (h.root / "pods" / "old").exists()
    for i in range(3):
        assert (h.root / "pods" / f"u{i}" / "resolv.conf").exists()
        assert (h.root / "pods" / f"u{i}" / "volumes" / "sec" / "pw").exists()


async def test_adopted_pod_gets_its_state_again(tmp_path: pathlib.Path) -> None:
    """A restarted agent (its state root gone with the last one) counts restarts from the logs on disk and
    materialises the pod's sandbox files and memory volumes again."""
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/secrets/sec"] = {"data": {"pw": "czNjcmV0"}}
    client.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"data": {"k": "v"}}
    first = Harness(tmp_path, client)
    p = pod(command=["sleep", "30"])
    await first.rt.sync_pod(p)
    await first.rt.close()
    assert not first.root.exists()
    p["status"] = {"containerStatuses": [{"name": "main", "restartCount": 0, "containerID": "pocketkube://x",
                                          "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]}
    second = Harness(tmp_path, client)
    try:
        await second.rt.sync_pod(p)
        cs = second.rt.pod_status("u1").containers["main"]
        assert (cs.state, cs.restart_count) == (runtime.RUNNING, 1)
        assert (second.root / "pods" / "u1" / "volumes" / "sec" / "pw").read_text() == "s3cret"
        assert (second.root / "pods" / "u1" / "resolv.conf").exists()
    finally:
        await second.rt.close()
