"""End to end: the default StorageClass, local-path provisioning, reclaim, protection and hostPath with a process node."""

from __future__ import annotations

import json
import os
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
# Mount points are made on the host (containers get their own mount namespace): keep ours apart.
MOUNT = "/pk-storage-e2e"


def _claim(name: str, *, cls: str | None = None, size: str = "64Mi") -> str:
    spec: dict[str, Any] = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    if cls is not None:
        spec["storageClassName"] = cls
    return json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": name}, "spec": spec})


def _pod(name: str, script: str, volume: dict[str, Any], *, never: bool = False) -> str:
    spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script],
                                            "volumeMounts": [{"name": "v", "mountPath": MOUNT}]}],
                            "volumes": [{"name": "v", **volume}], "terminationGracePeriodSeconds": 1}
    if never:
        spec["restartPolicy"] = "Never"
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})


def _phase(cluster: cluster_mod.Cluster, kind: str, name: str, ns: str = "default") -> str:
    cp = cluster.kubectl("-n", ns, "get", kind, name, "-o", "jsonpath={.status.phase}", check=False)
    return cp.stdout if cp.returncode == 0 else "<gone>"


def _events(cluster: cluster_mod.Cluster, name: str, ns: str = "default") -> str:
    return cluster.kubectl("-n", ns, "get", "events", "--field-selector", f"involvedObject.name={name}",
                           "-o", "custom-columns=R:.reason,M:.message", "--no-headers").stdout


def test_default_storage_class(cluster: cluster_mod.Cluster) -> None:
    """A fresh cluster has kind's default class: standard, rancher.io/local-path, Delete, WaitForFirstConsumer."""
    rows = cluster.kubectl("get", "sc").stdout.splitlines()
    assert rows[0].split() == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE", "ALLOWVOLUMEEXPANSION",
                               "AGE"]
    assert rows[1].split()[:6] == ["standard", "(default)", "rancher.io/local-path", "Delete", "WaitForFirstConsumer",
                                   "false"]


def test_claim_binds_for_its_first_consumer_and_data_survives_the_pod(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A claim waits Pending for a pod, is provisioned on its node, and a replacement pod reads what the first wrote."""
    cluster.kubectl("apply", "-f", "-", input=_claim("data"))
    claim = cluster.json("get", "pvc", "data")
    assert claim["spec"]["storageClassName"] == "standard"
    assert claim["metadata"]["finalizers"] == ["kubernetes.io/pvc-protection"]
    cluster_mod.eventually(lambda: "WaitForFirstConsumer" in _events(cluster, "data"))
    assert _phase(cluster, "pvc", "data") == "Pending"
    cluster.kubectl("apply", "-f", "-", input=_pod("writer", f"echo kept > {MOUNT}/f; sleep 3600",
                                                   {"persistentVolumeClaim": {"claimName": "data"}}))
    cluster_mod.eventually(lambda: _phase(cluster, "pvc", "data") == "Bound", timeout=20, what="the claim to bind")
    claim = cluster.json("get", "pvc", "data")
    pv_name = claim["spec"]["volumeName"]
    assert pv_name == f"pvc-{claim['metadata']['uid']}"
    assert claim["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"] == "yes"
    assert claim["metadata"]["annotations"]["volume.kubernetes.io/selected-node"] == NODE
    pv = cluster.json("get", "pv", pv_name)
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"] == "rancher.io/local-path"
    assert pv["spec"]["persistentVolumeReclaimPolicy"] == "Delete" and pv["status"]["phase"] == "Bound"
    path = pv["spec"]["hostPath"]["path"]
    assert path.startswith(os.path.join(os.path.dirname(agent), "local-path", f"{pv_name}_default_data"))
    cluster_mod.eventually(lambda: os.path.exists(os.path.join(path, "f")), what="the file the pod writes")
    described = cluster.kubectl("describe", "pvc", "data").stdout
    for reason in ("WaitForFirstConsumer", "ExternalProvisioning", "Provisioning", "ProvisioningSucceeded"):
        assert reason in described
    assert "Used By:       writer" in described
    table = cluster.kubectl("get", "pvc", "data").stdout.splitlines()[1].split()
    assert table[:6] == ["data", "Bound", pv_name, "64Mi", "RWO", "standard"]
    cluster.kubectl("delete", "pod", "writer", "--wait=true", timeout=30)
    cluster.kubectl("apply", "-f", "-", input=_pod("reader", f'test "$(cat {MOUNT}/f)" = kept',
                                                   {"persistentVolumeClaim": {"claimName": "data"}}, never=True))
    cluster_mod.eventually(lambda: _phase(cluster, "pod", "reader") in ("Succeeded", "Failed"), timeout=20)
    assert _phase(cluster, "pod", "reader") == "Succeeded"


def test_in_use_claim_stays_terminating_then_its_volume_is_deleted(cluster: cluster_mod.Cluster, agent: str) -> None:
    """Deleting a claim a pod uses leaves it Terminating; once the pod goes, claim, PV and directory go (Delete)."""
    cluster.kubectl("apply", "-f", "-", input=_claim("busy"))
    cluster.kubectl("apply", "-f", "-", input=_pod("holder", "sleep 3600", {"persistentVolumeClaim": {"claimName": "busy"}}))
    cluster_mod.eventually(lambda: _phase(cluster, "pod", "holder") == "Running", timeout=20)
    pv_name = cluster.json("get", "pvc", "busy")["spec"]["volumeName"]
    path = cluster.json("get", "pv", pv_name)["spec"]["hostPath"]["path"]
    cluster.kubectl("delete", "pvc", "busy", "--wait=false")
    cluster_mod.eventually(lambda: "Terminating" in cluster.kubectl("get", "pvc", "busy").stdout)
    assert _phase(cluster, "pvc", "busy") == "Bound"
    cluster.kubectl("delete", "pod", "holder", "--wait=true", timeout=30)
    cluster_mod.eventually(lambda: _phase(cluster, "pvc", "busy") == "<gone>", what="the claim to go")
    cluster_mod.eventually(lambda: _phase(cluster, "pv", pv_name) == "<gone>", what="the volume to be deleted")
    assert not os.path.exists(path)


def test_retain_class_leaves_the_volume_released(cluster: cluster_mod.Cluster, agent: str) -> None:
    """With reclaimPolicy Retain the provisioned volume stays, Released, after its claim is deleted."""
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "keep"},
        "provisioner": "rancher.io/local-path", "reclaimPolicy": "Retain", "volumeBindingMode": "WaitForFirstConsumer"}))
    cluster.kubectl("apply", "-f", "-", input=_claim("kept", cls="keep"))
    cluster.kubectl("apply", "-f", "-", input=_pod("once", f"echo x > {MOUNT}/x",
                                                   {"persistentVolumeClaim": {"claimName": "kept"}}, never=True))
    cluster_mod.eventually(lambda: _phase(cluster, "pod", "once") == "Succeeded", timeout=20)
    pv_name = cluster.json("get", "pvc", "kept")["spec"]["volumeName"]
    cluster.kubectl("delete", "pod", "once")
    cluster.kubectl("delete", "pvc", "kept", timeout=30)
    cluster_mod.eventually(lambda: _phase(cluster, "pv", pv_name) == "Released", what="the volume to be Released")
    row = cluster.kubectl("get", "pv", pv_name).stdout.splitlines()[1].split()
    assert row[3:7] == ["Retain", "Released", "default/kept", "keep"]
    assert os.path.exists(os.path.join(cluster.json("get", "pv", pv_name)["spec"]["hostPath"]["path"], "x"))
    cluster.kubectl("delete", "pv", pv_name, timeout=30)


def test_host_path_volumes(cluster: cluster_mod.Cluster, agent: str, tmp_path: Any) -> None:
    """A hostPath DirectoryOrCreate is made and written through; a failing type check is a FailedMount event."""
    host = str(tmp_path / "made")
    cluster.kubectl("apply", "-f", "-", input=_pod("hp", f"echo from-pod > {MOUNT}/out",
                                                   {"hostPath": {"path": host, "type": "DirectoryOrCreate"}}, never=True))
    cluster_mod.eventually(lambda: _phase(cluster, "pod", "hp") == "Succeeded", timeout=20)
    with open(os.path.join(host, "out")) as f:
        assert f.read() == "from-pod\n"
    file_path = str(tmp_path / "plain")
    with open(file_path, "w") as f:
        f.write("x")
    cluster.kubectl("apply", "-f", "-", input=_pod("hp-bad", "true", {"hostPath": {"path": file_path,
                                                                                   "type": "Directory"}}))
    want = f'MountVolume.SetUp failed for volume "v" : hostPath type check failed: {file_path} is not a directory'
    cluster_mod.eventually(lambda: want in _events(cluster, "hp-bad"), timeout=20)
    assert "ContainerCreating" in cluster.kubectl("get", "pod", "hp-bad").stdout
    cluster.kubectl("delete", "pod", "hp", "hp-bad", "--wait=false")


def test_unschedulable_claims(cluster: cluster_mod.Cluster, agent: str, tmp_path: Any) -> None:
    """A pod whose claim is missing, or unbound in an Immediate class, is refused with kube-scheduler's words."""
    cluster.kubectl("apply", "-f", "-", input=_pod("orphan", "true", {"persistentVolumeClaim": {"claimName": "nope"}}))
    cluster_mod.eventually(lambda: 'persistentvolumeclaim "nope" not found' in _events(cluster, "orphan"))
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "static"},
        "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate"}))
    cluster.kubectl("apply", "-f", "-", input=_claim("manual", cls="static"))
    cluster.kubectl("apply", "-f", "-", input=_pod("waits", "true", {"persistentVolumeClaim": {"claimName": "manual"}},
                                                   never=True))
    cluster_mod.eventually(lambda: "pod has unbound immediate PersistentVolumeClaims" in _events(cluster, "waits"))
    # An administrator's volume then satisfies the claim and the pod runs.
    cluster.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "manual-pv"},
        "spec": {"storageClassName": "static", "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                 "hostPath": {"path": str(tmp_path / "static")}}}))
    cluster_mod.eventually(lambda: _phase(cluster, "pvc", "manual") == "Bound", timeout=20)
    pv = cluster.json("get", "pv", "manual-pv")
    assert pv["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"] == "yes"
    assert pv["spec"]["claimRef"]["name"] == "manual" and pv["status"]["phase"] == "Bound"
    cluster_mod.eventually(lambda: _phase(cluster, "pod", "waits") == "Succeeded", timeout=30)
    cluster.kubectl("delete", "pod", "orphan", "waits", "--wait=false")


def test_statefulset_claims_bind_and_keep_data_across_pod_deletion(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A StatefulSet's claim templates end Bound, its pods Running, and pod-0's data outlives pod-0."""
    cluster.kubectl("create", "namespace", "stor")
    script = f"echo started >> {MOUNT}/starts; sleep 3600"
    cluster.kubectl("-n", "stor", "apply", "-f", "-", input=json.dumps({
        "apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 2, "selector": {"matchLabels": {"app": "db"}},
                 "template": {"metadata": {"labels": {"app": "db"}}, "spec": {
                     "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "c", "image": "busybox", "command": ["sh", "-c", script],
                                     "volumeMounts": [{"name": "data", "mountPath": MOUNT}]}]}},
                 "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                     "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "32Mi"}}}}]}}))
    cluster_mod.eventually(lambda: "2/2" in cluster.kubectl("-n", "stor", "get", "sts", "db").stdout, timeout=40,
                           what="both replicas ready")
    for i in range(2):
        assert _phase(cluster, "pvc", f"data-db-{i}", ns="stor") == "Bound"
    first = cluster.json("-n", "stor", "get", "pvc", "data-db-0")["spec"]["volumeName"]
    path = os.path.join(cluster.json("get", "pv", first)["spec"]["hostPath"]["path"], "starts")
    cluster_mod.eventually(lambda: os.path.exists(path))
    uid = cluster.json("-n", "stor", "get", "pod", "db-0")["metadata"]["uid"]
    cluster.kubectl("-n", "stor", "delete", "pod", "db-0", "--wait=true", timeout=30)
    cluster_mod.eventually(lambda: cluster.kubectl("-n", "stor", "get", "pod", "db-0", "-o",
                                                   "jsonpath={.metadata.uid} {.status.phase}", check=False).stdout
                           .split() not in ([], [uid, "Running"]) and _phase(cluster, "pod", "db-0", "stor") == "Running",
                           timeout=40, what="db-0 to come back")
    assert cluster.json("-n", "stor", "get", "pvc", "data-db-0")["spec"]["volumeName"] == first
    # The new db-0 appended to the file the old one wrote: same volume, data kept.
    cluster_mod.eventually(lambda: open(path).read() == "started\nstarted\n", what="the second start in the log")
    cluster.kubectl("delete", "namespace", "stor", "--wait=false")
