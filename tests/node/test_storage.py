"""hostPath type checks, persistentVolumeClaim volumes on the node, and the local-path provisioner's objects."""

from __future__ import annotations

import datetime
import os
import socket
from typing import Any

import pytest

from pocketkube.api import storagehelpers as sh
from pocketkube.node import provisioner, volumes
from tests.node import fakes

NOW = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture
def paths(tmp_path: Any) -> dict[str, str]:
    d = tmp_path / "dir"
    d.mkdir()
    f = tmp_path / "file"
    f.write_text("x")
    sock = str(tmp_path / "sock")
    s = socket.socket(socket.AF_UNIX)
    s.bind(sock)
    s.close()
    return {"dir": str(d), "file": str(f), "sock": sock, "missing": str(tmp_path / "missing"),
            "nested": str(tmp_path / "no" / "such" / "file")}


@pytest.mark.parametrize("path,kind,error", [
    ("dir", "Directory", ""),
    ("file", "Directory", "hostPath type check failed: {p} is not a directory"),
    ("missing", "Directory", "hostPath type check failed: {p} does not exist"),
    ("missing", "DirectoryOrCreate", ""),
    ("file", "DirectoryOrCreate", "hostPath type check failed: {p} is not a directory"),
    ("file", "File", ""),
    ("dir", "File", "hostPath type check failed: {p} is not a file"),
    ("missing", "File", "hostPath type check failed: {p} does not exist"),
    ("missing", "FileOrCreate", ""),
    ("nested", "FileOrCreate", "open {p}: no such file or directory"),
    ("sock", "Socket", ""),
    ("file", "Socket", "hostPath type check failed: {p} is not a socket file"),
    ("file", "CharDevice", "hostPath type check failed: {p} is not a character device"),
    ("file", "BlockDevice", "hostPath type check failed: {p} is not a block device"),
    ("missing", "", ""),
    ("dir", "Weird", "Weird is an invalid volume type"),
])
def test_check_host_path(paths: dict[str, str], path: str, kind: str, error: str) -> None:
    """Each hostPath type is checked (and the *OrCreate types created) with the kubelet's messages."""
    p = paths[path]
    if error:
        with pytest.raises(volumes.VolumeError) as e:
            volumes.check_host_path(p, kind)
        assert str(e.value) == error.format(p=p)
    else:
        volumes.check_host_path(p, kind)
        assert os.path.exists(p)


def test_check_host_path_creates_with_kube_modes(paths: dict[str, str]) -> None:
    """DirectoryOrCreate makes 0755 directories, FileOrCreate 0644 files (umask permitting)."""
    volumes.check_host_path(paths["missing"], "DirectoryOrCreate")
    assert os.path.isdir(paths["missing"])
    f = os.path.join(paths["missing"], "f")
    volumes.check_host_path(f, "FileOrCreate")
    assert os.path.isfile(f) and os.stat(f).st_mode & 0o777 == 0o644 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


POD = {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}, "spec": {"volumes": [
    {"name": "data", "persistentVolumeClaim": {"claimName": "c", "readOnly": True}}]}}


def _claim(phase: str = "Bound", volume: str = "pv1", deleting: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "c", "namespace": "ns", "uid": "uid-c"}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta, "spec": {"volumeName": volume}, "status": {"phase": phase}}


def _client(claim: dict[str, Any] | None, pv: dict[str, Any] | None) -> fakes.FakeClient:
    client = fakes.FakeClient()
    if claim is not None:
        client.objects["/api/v1/namespaces/ns/persistentvolumeclaims/c"] = claim
    if pv is not None:
        client.objects["/api/v1/persistentvolumes/pv1"] = pv
    return client


async def test_claim_volume_mounts_the_bound_volume_path(tmp_path: Any) -> None:
    """A bound claim's hostPath volume is checked, created and mounted as it is; readOnly is the source's."""
    target = str(tmp_path / "pv")
    pv = {"metadata": {"name": "pv1"}, "spec": {"claimRef": {"uid": "uid-c"},
                                                "hostPath": {"path": target, "type": "DirectoryOrCreate"}}}
    got = await volumes.materialise(_client(_claim(), pv), POD, data_dir=str(tmp_path), allocatable={}, now=NOW)
    assert got == {"data": target} and os.path.isdir(target)
    assert volumes.forces_read_only(POD["spec"]["volumes"][0])


@pytest.mark.parametrize("claim,pv,message", [
    (None, None, "error processing PVC ns/c: failed to fetch PVC from API server: "),
    (_claim(phase="Pending", volume=""), None, "error processing PVC ns/c: PVC is not bound"),
    (_claim(deleting=True), None, "error processing PVC ns/c: PVC is being deleted"),
    (_claim(), None, "error processing PVC ns/c: failed to fetch PV pv1 from API server: "),
    (_claim(), {"metadata": {"name": "pv1"}, "spec": {"claimRef": {"uid": "other"}, "hostPath": {"path": "/x"}}},
     "found PV object pv1 but its pv.Spec.ClaimRef.UID (other) does not point to claim.UID (uid-c)"),
    (_claim(), {"metadata": {"name": "pv1"}, "spec": {"claimRef": {"uid": "uid-c"}, "nfs": {"server": "s"}}},
     'MountVolume.SetUp failed for volume "pv1" : nfs volumes are not supported by the process runtime'),
    (_claim(), {"metadata": {"name": "pv1"}, "spec": {"claimRef": {"uid": "uid-c"}, "local": {"path": "/nope/x"}}},
     'MountVolume.NewMounter initialization failed for volume "pv1" : path "/nope/x" does not exist'),
])
async def test_claim_volume_waits(tmp_path: Any, claim: dict[str, Any] | None, pv: dict[str, Any] | None,
                                  message: str) -> None:
    """Until its claim is bound to a usable volume the pod waits, with the kubelet's FailedMount reason."""
    with pytest.raises(volumes.VolumeError) as e:
        await volumes.materialise(_client(claim, pv), POD, data_dir=str(tmp_path), allocatable={}, now=NOW)
    text = str(e.value)
    if message.startswith("error processing"):
        assert text.startswith("Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[], "
                               "failed to process volumes=[data]: ")
    assert message in text


CLAIM = {"metadata": {"name": "data", "namespace": "ns", "uid": "1234", "resourceVersion": "7",
                      "annotations": {sh.STORAGE_PROVISIONER: provisioner.NAME, sh.SELECTED_NODE: "n1"}},
         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "2Gi"}},
                  "storageClassName": "standard", "volumeMode": "Filesystem"}}
CLASS = {"metadata": {"name": "standard"}, "provisioner": provisioner.NAME, "reclaimPolicy": "Retain"}


def test_provisioned_volume() -> None:
    """The PV is pvc-<uid>: a DirectoryOrCreate hostPath pinned to the node, pre-bound, with the class's policy."""
    path = provisioner.volume_path("/data/local-path", CLAIM)
    assert path == "/data/local-path/pvc-1234_ns_data"
    pv = provisioner.persistent_volume(CLAIM, CLASS, node="n1", path=path)
    assert pv["metadata"] == {"name": "pvc-1234", "annotations": {sh.PROVISIONED_BY: "rancher.io/local-path",
                                                                   provisioner.SELECTED_NODE: "n1"}}
    spec = pv["spec"]
    assert spec["claimRef"] == {"kind": "PersistentVolumeClaim", "namespace": "ns", "name": "data", "uid": "1234",
                                "apiVersion": "v1", "resourceVersion": "7"}
    assert (spec["capacity"], spec["persistentVolumeReclaimPolicy"], spec["storageClassName"]) == \
        ({"storage": "2Gi"}, "Retain", "standard")
    assert spec["hostPath"] == {"path": path, "type": "DirectoryOrCreate"}
    assert spec["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"] == [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]


@pytest.mark.parametrize("case,claim,sc,want", [
    ("ours", CLAIM, CLASS, True),
    ("other provisioner's class", CLAIM, {**CLASS, "provisioner": "x"}, False),
    ("not handed over yet", {**CLAIM, "metadata": {**CLAIM["metadata"], "annotations": {}}}, CLASS, False),
    ("already bound", {**CLAIM, "spec": {**CLAIM["spec"], "volumeName": "pv"}}, CLASS, False),
    ("class gone", CLAIM, None, False),
])
def test_wants_us(case: str, claim: dict[str, Any], sc: dict[str, Any] | None, want: bool) -> None:
    """The provisioner takes unbound claims of its classes that the PV controller handed to it."""
    assert provisioner.wants_us(claim, sc) is want, case


async def test_delete_removes_only_its_own_directory(tmp_path: Any) -> None:
    """A Released Delete volume loses its directory and its PV; paths outside local-path are left alone."""
    base = tmp_path / "nodes" / "n1" / provisioner.DIR_NAME
    mine = base / "pvc-1_ns_data"
    mine.mkdir(parents=True)
    client = fakes.FakeClient()
    p = provisioner.LocalPathProvisioner(client, {"n1": str(tmp_path / "nodes" / "n1")})  # type: ignore[arg-type]
    pv = {"metadata": {"name": "pvc-1", "annotations": {sh.PROVISIONED_BY: provisioner.NAME,
                                                        provisioner.SELECTED_NODE: "n1"}},
          "spec": {"persistentVolumeReclaimPolicy": "Delete", "hostPath": {"path": str(mine)}},
          "status": {"phase": "Released"}}
    assert provisioner.to_delete(pv)
    await p.delete(pv)
    assert not mine.exists()
    outside = tmp_path / "keep"
    outside.mkdir()
    await p.delete({**pv, "spec": {**pv["spec"], "hostPath": {"path": str(outside)}}})
    assert outside.exists()
    assert [c[0] for c in client.calls].count("delete") == 2
