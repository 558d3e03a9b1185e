"""Specification of the pod workers: run bound pods, write their status once, finish their deletion."""

from __future__ import annotations

import asyncio

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import events as events_mod
from pocketkube.node import podworkers, runtime
from pocketkube.runtime import controller
from tests.node import fakes

NODE = "pocketkube-node-1"
PATH = "/api/v1/namespaces/default/pods/web"


def make_pod(**spec_extra):
    pod = {"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": "web", "namespace": "default", "uid": "u1", "resourceVersion": "5"},
           "spec": {"nodeName": NODE, "restartPolicy": "Always",
                    "containers": [{"name": "c", "image": "nginx:1.25"}], **spec_extra},
           "status": {"phase": "Pending", "qosClass": "BestEffort"}}
    return pod


@pytest.fixture
def clk():
    return clock_mod.FakeClock()


def _workers(clk, rt):
    """Pod workers over a fake client and rt, reading pods from the returned cache dict."""
    client = fakes.FakeClient()
    rec = events_mod.Recorder(client, host=NODE, clock=clk)
    workers = podworkers.PodWorkers(client, node=NODE, host_ip="127.0.0.1", rt=rt, recorder=rec, clock=clk)
    cache: dict[str, dict] = {}
    workers.informer.get = cache.get  # type: ignore[method-assign]
    return client, workers, cache, rec


@pytest.fixture
def setup(clk):
    return _workers(clk, runtime.VirtualRuntime(pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clk))


def put(client, cache, pod):
    client.objects[PATH] = pod
    cache["default/web"] = pod


async def test_bound_pod_is_run_and_reported_once(setup):
    """A pod bound here is started, its status written through /status once, and its events recorded."""
    client, workers, cache, rec = setup
    put(client, cache, make_pod())
    assert await workers.reconcile("default/web") == controller.DONE
    await rec.close()
    writes = [c for c in client.calls if c[0] == "update/status"]
    assert len(writes) == 1
    status = writes[0][2]["status"]
    assert status["phase"] == "Running" and status["podIP"] == "10.244.0.2"
    reasons = [c[2]["reason"] for c in client.calls if c[0] == "create"]
    assert reasons == ["Pulled", "Created", "Started"]
    ev = next(c[2] for c in client.calls if c[0] == "create")
    assert ev["involvedObject"]["fieldPath"] == "spec.containers{c}"
    assert ev["source"] == {"component": "kubelet", "host": NODE}
    # The watch brings our own write back: nothing more to do.
    cache["default/web"] = client.objects[PATH]
    client.calls.clear()
    await workers.reconcile("default/web")
    assert client.verbs() == []


async def test_pods_of_other_nodes_are_left_alone(setup):
    """A pod bound elsewhere is not touched."""
    client, workers, cache, _ = setup
    pod = make_pod()
    pod["spec"]["nodeName"] = "other"
    put(client, cache, pod)
    await workers.reconcile("default/web")
    assert client.verbs() == []


async def test_deleted_pod_is_stopped_and_removed(setup):
    """A terminating pod is stopped, reported terminal, then deleted with grace 0 and a uid precondition."""
    client, workers, cache, rec = setup
    put(client, cache, make_pod())
    await workers.reconcile("default/web")
    await rec.close()
    pod = client.objects[PATH]
    pod["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:30Z"
    pod["metadata"]["deletionGracePeriodSeconds"] = 30
    put(client, cache, pod)
    client.calls.clear()
    assert await workers.reconcile("default/web") == controller.DONE
    await workers.settled()
    await rec.close()
    status_write = next(c for c in client.calls if c[0] == "update/status")
    assert status_write[2]["status"]["phase"] == "Succeeded"
    assert ("delete", PATH, {"grace_period_seconds": 0, "preconditions": {"uid": "u1"}}) in client.calls
    assert [c[2]["reason"] for c in client.calls if c[0] == "create"] == ["Killing"]
    await workers.settled()
    assert PATH not in client.objects and workers.runtime.pod_status("u1") is None


async def test_pod_gone_from_the_cache_is_forgotten(setup):
    """When the pod disappears, the runtime forgets it and its IP is free again."""
    client, workers, cache, _ = setup
    put(client, cache, make_pod())
    await workers.reconcile("default/web")
    cache.clear()
    await workers.reconcile("default/web")
    await workers.settled()
    assert workers.runtime.pod_status("u1") is None


async def test_virtual_exit_requeues_until_the_run_ends(setup, clk):
    """A pod set to exit after N seconds asks to be looked at again then, and completes."""
    client, workers, cache, _ = setup
    pod = make_pod(restartPolicy="Never")
    pod["metadata"]["annotations"] = {runtime.EXIT_CODE_ANNOTATION: "0", runtime.RUN_SECONDS_ANNOTATION: "3"}
    put(client, cache, pod)
    assert await workers.reconcile("default/web") == controller.requeue_after(3)
    put(client, cache, client.objects[PATH])
    clk.advance(3)
    assert await workers.reconcile("default/web") == controller.DONE
    assert client.objects[PATH]["status"]["phase"] == "Succeeded"


async def test_active_deadline(setup, clk):
    """A pod past spec.activeDeadlineSeconds is stopped and Failed with DeadlineExceeded."""
    client, workers, cache, _ = setup
    put(client, cache, make_pod(activeDeadlineSeconds=5))
    assert await workers.reconcile("default/web") == controller.requeue_after(5)
    put(client, cache, client.objects[PATH])
    clk.advance(5)
    await workers.reconcile("default/web")
    st = client.objects[PATH]["status"]
    assert (st["phase"], st["reason"]) == ("Failed", "DeadlineExceeded")
    assert st["message"] == "Pod was active on the node longer than the specified deadline"


async def test_conflicting_status_write_is_retried_on_a_fresh_read(setup):
    """A 409 on the status write re-reads the pod and writes on top of the newer version."""
    from pocketkube.api import errors

    client, workers, cache, _ = setup
    put(client, cache, make_pod())
    client.fail_next["update"] = errors.Conflict("the object has been modified")
    await workers.reconcile("default/web")
    assert client.verbs().count("update/status") == 2 and "get" in client.verbs()
    assert client.objects[PATH]["status"]["phase"] == "Running"


def test_deadline_left(clk):
    """The time left before activeDeadlineSeconds counts from status.startTime."""
    pod = make_pod(activeDeadlineSeconds=60)
    assert podworkers.deadline_left(pod, clk.now()) is None
    pod["status"]["startTime"] = "2025-12-31T23:59:30Z"
    assert podworkers.deadline_left(pod, clk.now()) == 30
    assert asyncio.iscoroutinefunction(podworkers.PodWorkers.reconcile)


def test_pods_informer_caches_pods_without_managed_fields(clk):
    """The kubelet's pod cache drops managedFields (it never reads them) and keeps the rest of the pod."""
    inf = podworkers.pods_informer(fakes.FakeClient(), NODE, clock=clk)  # type: ignore[arg-type]
    assert inf.field_selector == f"spec.nodeName={NODE}"
    pod = make_pod()
    pod["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1"}]
    assert inf.transform is not None
    cached = inf.transform(pod)
    assert "managedFields" not in cached["metadata"]
    assert cached["metadata"]["uid"] == "u1" and cached["spec"]["nodeName"] == NODE


class SlowRemoval(runtime.VirtualRuntime):
    """A runtime whose pod removals wait until released, counting how many run at once."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.release = asyncio.Event()
        self.running = self.most = 0

    async def remove_pod(self, uid: str) -> None:
        self.running += 1
        self.most = max(self.most, self.running)
        await self.release.wait()
        self.running -= 1
        await super().remove_pod(uid)


async def test_teardowns_run_in_the_background_a_few_at_a_time(clk):
    """Pods that went away are torn down in the background, TEARDOWNS at once, while a new pod starts meanwhile."""
    rt = SlowRemoval(pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clk)
    client, workers, cache, _ = _workers(clk, rt)
    for i in range(10):
        pod = make_pod()
        pod["metadata"].update(name=f"old-{i}", uid=f"old-{i}")
        cache[f"default/old-{i}"] = pod
        client.objects[f"/api/v1/namespaces/default/pods/old-{i}"] = pod
        await workers.reconcile(f"default/old-{i}")
    cache.clear()
    for i in range(10):
        assert await asyncio.wait_for(workers.reconcile(f"default/old-{i}"), 1) == controller.DONE
    put(client, cache, make_pod())
    assert await asyncio.wait_for(workers.reconcile("default/web"), 1) == controller.DONE
    assert rt.pod_status("u1") is not None and rt.pod_status("old-0") is not None
    rt.release.set()
    await workers.settled()
    assert rt.most == podworkers.TEARDOWNS
    assert all(rt.pod_status(f"old-{i}") is None for i in range(10))


async def test_a_pod_created_again_under_its_name_starts_once_the_old_one_is_torn_down(clk):
    """A pod deleted and created again under the same name (new uid) starts only after the old one is gone."""
    rt = SlowRemoval(pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clk)
    client, workers, cache, _ = _workers(clk, rt)
    put(client, cache, make_pod())
    await workers.reconcile("default/web")
    again = make_pod()
    again["metadata"]["uid"] = "u2"
    put(client, cache, again)
    sync = asyncio.create_task(workers.reconcile("default/web"))
    await asyncio.sleep(0.01)
    assert not sync.done() and rt.pod_status("u2") is None
    rt.release.set()
    assert await asyncio.wait_for(sync, 1) == controller.DONE
    assert rt.pod_status("u1") is None and rt.pod_status("u2") is not None


class SlowKill(runtime.VirtualRuntime):
    """A runtime whose pod kills wait out the grace period they are given (on the real loop clock)."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.kills: list[int] = []
        self.fail_once = False

    async def kill_pod(self, pod, *, grace_seconds):
        self.kills.append(grace_seconds)
        if self.fail_once:
            self.fail_once = False
            raise OSError("cannot signal the container")
        await asyncio.sleep(grace_seconds / 100)  # a hundredth, so a 30 s grace is 0.3 s here
        return await super().kill_pod(pod, grace_seconds=0)


def _deleted(client, cache, name: str, uid: str, grace: int) -> None:
    pod = make_pod()
    pod["metadata"].update(name=name, uid=uid, deletionTimestamp="2026-01-01T00:00:30Z",
                           deletionGracePeriodSeconds=grace)
    cache[f"default/{name}"] = pod
    client.objects[f"/api/v1/namespaces/default/pods/{name}"] = pod


async def test_a_pod_in_its_grace_period_holds_up_no_other_pod(clk):
    """Deleted pods wait out their grace periods in the background: the worker is free at once, a new pod
    starts meanwhile, and the deleted pods are removed once stopped."""
    rt = SlowKill(pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clk)
    client, workers, cache, _ = _workers(clk, rt)
    for i in range(podworkers.WORKERS + 2):
        pod = make_pod()
        pod["metadata"].update(name=f"old-{i}", uid=f"old-{i}")
        cache[f"default/old-{i}"] = pod
        client.objects[f"/api/v1/namespaces/default/pods/old-{i}"] = pod
        await workers.reconcile(f"default/old-{i}")
        _deleted(client, cache, f"old-{i}", f"old-{i}", grace=30)
        assert await asyncio.wait_for(workers.reconcile(f"default/old-{i}"), 0.1) == controller.DONE
    # Each further event of a pod that is stopping changes nothing.
    assert await asyncio.wait_for(workers.reconcile("default/old-0"), 0.1) == controller.DONE
    assert rt.kills.count(30) == podworkers.WORKERS + 2
    put(client, cache, make_pod())
    assert await asyncio.wait_for(workers.reconcile("default/web"), 0.1) == controller.DONE
    assert rt.pod_status("u1") is not None
    await asyncio.wait_for(workers.settled(), 5)
    assert not any(p.startswith("/api/v1/namespaces/default/pods/old-") for p in client.objects)


async def test_a_shorter_grace_period_kills_at_once(clk):
    """A forced deletion during a long grace period kills the pod without waiting the first period out."""
    rt = SlowKill(pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clk)
    client, workers, cache, _ = _workers(clk, rt)
    put(client, cache, make_pod())
    await workers.reconcile("default/web")
    _deleted(client, cache, "web", "u1", grace=3000)  # 30 s here
    await workers.reconcile("default/web")
    await asyncio.sleep(0)
    _deleted(client, cache, "web", "u1", grace=0)
    await workers.reconcile("default/web")
    await asyncio.sleep(0)
    assert rt.kills == [3000, 0]
    for _ in range(100):
        if PATH not in client.objects:
            break
        await asyncio.sleep(0.01)
    assert PATH not in client.objects


async def test_a_failed_termination_is_retried(clk):
    """A termination that fails puts the pod back on the queue, and the next try stops and removes it."""
    rt = SlowKill(pod_cidr="10.244.0.0/24", host_ip="127.0.0.1", clock=clk)
    client, workers, cache, _ = _workers(clk, rt)
    put(client, cache, make_pod())
    await workers.reconcile("default/web")
    rt.fail_once = True
    _deleted(client, cache, "web", "u1", grace=0)
    await workers.reconcile("default/web")
    await workers.settled()
    assert PATH in client.objects
    assert len(workers.controller.queue) == 1 or workers.controller.queue.backoff("default/web") > 0
    await workers.reconcile("default/web")
    await workers.settled()
    assert PATH not in client.objects and rt.kills == [0, 0]
