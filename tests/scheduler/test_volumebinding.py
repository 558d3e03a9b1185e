"""VolumeBinding: claims must exist and be usable; nodes must be able to serve every claim; PreBind binds them."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest

from pocketkube.api import storagehelpers as sh
from pocketkube.base import clock as clock_mod
from pocketkube.scheduler import framework, nodeinfo, scheduler, volumebinding
from tests.scheduler import helpers


class Listers:
    """Claims, volumes and classes held in dicts."""

    def __init__(self, claims: list[dict[str, Any]] = (), pvs: list[dict[str, Any]] = (),  # type: ignore[assignment]
                 classes: list[dict[str, Any]] = ()) -> None:  # type: ignore[assignment]
        self.claims = {f"{c['metadata']['namespace']}/{c['metadata']['name']}": c for c in claims}
        self.pvs = {v["metadata"]["name"]: v for v in pvs}
        self.classes = {c["metadata"]["name"]: c for c in classes}

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.claims.get(f"{namespace}/{name}")

    def volume(self, name: str) -> dict[str, Any] | None:
        return self.pvs.get(name)

    def volumes(self) -> list[dict[str, Any]]:
        return list(self.pvs.values())

    def storage_class(self, name: str) -> dict[str, Any] | None:
        return self.classes.get(name)


WFFC = {"metadata": {"name": "standard"}, "provisioner": "rancher.io/local-path",
        "volumeBindingMode": "WaitForFirstConsumer"}
LOCAL = {"metadata": {"name": "local"}, "provisioner": sh.NO_PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer"}
IMMEDIATE = {"metadata": {"name": "fast"}, "provisioner": "example.com/disk", "volumeBindingMode": "Immediate"}


def claim(name: str, *, cls: str = "standard", volume: str = "", bound: bool = False,
          ann: dict[str, str] | None = None, deleting: bool = False) -> dict[str, Any]:
    annotations = dict(ann or {})
    if bound:
        annotations[sh.BIND_COMPLETED] = "yes"
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}", "annotations": annotations}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                            "storageClassName": cls}
    if volume:
        spec["volumeName"] = volume
    return {"metadata": meta, "spec": spec, "status": {"phase": "Bound" if bound else "Pending"}}


def local_pv(name: str, node: str, *, cls: str = "local", ref: dict[str, Any] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "capacity": {"storage": "5Gi"}, "storageClassName": cls,
                            "local": {"path": "/mnt"}, "nodeAffinity": {"required": {"nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                                       "values": [node]}]}]}}}
    if ref:
        spec["claimRef"] = ref
    return {"metadata": {"name": name}, "spec": spec, "status": {"phase": "Available"}}


def pod_with(*claims: str) -> dict[str, Any]:
    return helpers.pod("p", volumes=[{"name": f"v{i}", "persistentVolumeClaim": {"claimName": c}}
                                     for i, c in enumerate(claims)])


def place(listers: Listers, pod: dict[str, Any], nodes: int = 2) -> str:
    c = helpers.cluster([helpers.node(f"n{i}") for i in range(1, nodes + 1)])
    fw = framework.Framework(scheduler.plugins(volumes=listers), rng=random.Random(1))
    try:
        return fw.schedule(nodeinfo.PodInfo(pod), c).node
    except framework.FitError as e:
        return str(e)


PREEMPTION = " preemption: 0/2 nodes are available: 2 Preemption is not helpful for scheduling."


@pytest.mark.parametrize("case,listers,claims,want", [
    ("missing claim", Listers(), ("data",), '0/2 nodes are available: persistentvolumeclaim "data" not found.'),
    ("claim being deleted", Listers([claim("data", deleting=True)], classes=[WFFC]), ("data",),
     '0/2 nodes are available: persistentvolumeclaim "data" is being deleted.'),
    ("unbound immediate claim", Listers([claim("data", cls="fast")], classes=[IMMEDIATE]), ("data",),
     "0/2 nodes are available: pod has unbound immediate PersistentVolumeClaims."),
    ("bound volume pinned to n2", Listers([claim("data", cls="local", volume="pv", bound=True)],
                                          [local_pv("pv", "n2")], [LOCAL]), ("data",), "n2"),
    ("bound to a missing volume", Listers([claim("data", cls="local", volume="pv", bound=True)], classes=[LOCAL]),
     ("data",), "0/2 nodes are available: 2 node(s) unavailable due to one or more pvc(s) bound to non-existent "
                "pv(s)."),
    ("static local volume on n1 only", Listers([claim("data", cls="local")], [local_pv("pv", "n1")], [LOCAL]),
     ("data",), "n1"),
    ("no static volume and no provisioner", Listers([claim("data", cls="local")], classes=[LOCAL]), ("data",),
     "0/2 nodes are available: 2 node(s) didn't find available persistent volumes to bind."),
    ("selected node wins", Listers([claim("data", ann={sh.SELECTED_NODE: "n2"})], classes=[WFFC]), ("data",), "n2"),
    ("two bound volumes on different nodes", Listers(
        [claim("a", cls="local", volume="pa", bound=True), claim("b", cls="local", volume="pb", bound=True)],
        [local_pv("pa", "n1"), local_pv("pb", "n2")], [LOCAL]), ("a", "b"),
     "0/2 nodes are available: 2 node(s) had volume node affinity conflict."),
])
def test_scheduling_with_claims(case: str, listers: Listers, claims: tuple[str, ...], want: str) -> None:
    """Where a pod with claims lands, or kube-scheduler's message when it cannot."""
    got = place(listers, pod_with(*claims))
    assert got.removesuffix(PREEMPTION) == want, case


def test_pod_without_claims_skips_the_plugin() -> None:
    """A pod without claims is not VolumeBinding's business."""
    state: framework.State = {}
    st = volumebinding.VolumeBinding(Listers()).pre_filter(state, nodeinfo.PodInfo(helpers.pod("p")), helpers.cluster([]))
    assert isinstance(st, framework.Status) and st.code == framework.SKIP


class FakeClient:
    """Records writes; a claim patch sets the annotation on the listers' copy and binds it right away."""

    def __init__(self, listers: Listers) -> None:
        self.listers = listers
        self.calls: list[tuple[str, str, Any]] = []

    async def update(self, gvr: Any, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(("update", body["metadata"]["name"], body["spec"].get("claimRef")))
        return body

    async def patch(self, path: str, body: dict[str, Any], **kw: Any) -> dict[str, Any]:
        self.calls.append(("patch", path, body["metadata"]["annotations"]))
        name = path.rsplit("/", 1)[-1]
        c = self.listers.claims[f"default/{name}"]
        c["metadata"]["annotations"].update(body["metadata"]["annotations"])
        c["spec"]["volumeName"] = "pvc-x"
        c["metadata"]["annotations"][sh.BIND_COMPLETED] = "yes"
        return c


def test_prebind_annotates_the_selected_node_and_waits_for_binding() -> None:
    """PreBind sets volume.kubernetes.io/selected-node on a WaitForFirstConsumer claim and returns once it is bound."""
    listers = Listers([claim("data")], classes=[WFFC])
    client = FakeClient(listers)
    binder = volumebinding.Binder(client, listers, clock=clock_mod.FakeClock())  # type: ignore[arg-type]
    asyncio.run(binder.pre_bind(pod_with("data"), "n1", {"kubernetes.io/hostname": "n1"}))
    assert client.calls == [("patch", "/api/v1/namespaces/default/persistentvolumeclaims/data",
                             {sh.SELECTED_NODE: "n1"})]


def test_prebind_binds_a_static_volume_and_times_out() -> None:
    """A static match gets the claimRef; a claim the PV controller never binds fails after the bind timeout."""
    listers = Listers([claim("data", cls="local")], [local_pv("pv", "n1")], [LOCAL])
    client = FakeClient(listers)
    binder = volumebinding.Binder(client, listers, clock=clock_mod.FakeClock(), timeout=0)  # type: ignore[arg-type]
    with pytest.raises(volumebinding.BindError, match="binding volumes: context deadline exceeded"):
        asyncio.run(binder.pre_bind(pod_with("data"), "n1", {"kubernetes.io/hostname": "n1"}))
    assert client.calls[0][:2] == ("update", "pv") and client.calls[0][2]["uid"] == "uid-data"
