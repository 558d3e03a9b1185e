"""Specification of pod volumes on disk and of the downward API values they and env vars expose."""

from __future__ import annotations

import base64
import datetime
import os

import pytest

from pocketkube.node import volumes
from tests.node import fakes

NOW = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
POD = {
    "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "labels": {"b": "2", "a": 'x"y'},
                 "annotations": {"note": "hi"}},
    "spec": {"nodeName": "n1", "serviceAccountName": "default",
             "containers": [{"name": "main", "resources": {"requests": {"cpu": "250m", "memory": "64Mi"},
                                                           "limits": {"memory": "128Mi"}}}]},
    "status": {"podIP": "10.244.0.2", "hostIP": "127.0.0.1", "podIPs": [{"ip": "10.244.0.2"}]},
}


@pytest.mark.parametrize("path,want", [
    ("metadata.name", "web"), ("metadata.namespace", "ns"), ("metadata.uid", "u1"),
    ("metadata.labels['b']", "2"), ("metadata.annotations['note']", "hi"), ("metadata.labels['zz']", ""),
    ("spec.nodeName", "n1"), ("spec.serviceAccountName", "default"), ("status.podIP", "10.244.0.2"),
    ("status.podIPs", "10.244.0.2"), ("status.hostIP", "127.0.0.1"),
])
def test_field_value(path, want):
    """Pod fields read as the downward API exposes them."""
    assert volumes.field_value(POD, path) == want


def test_labels_file_is_sorted_and_quoted():
    """A labels file lists key="value" lines sorted by key, values quoted like Go."""
    assert volumes.field_value(POD, "metadata.labels", for_file=True) == 'a="x\\"y"\nb="2"'


def test_unknown_field_is_a_config_error():
    """A field the downward API does not expose is refused."""
    with pytest.raises(volumes.ConfigError, match="unsupported fieldPath"):
        volumes.field_value(POD, "spec.hostname")


@pytest.mark.parametrize("ref,want", [
    ({"resource": "requests.cpu"}, "1"),
    ({"resource": "requests.cpu", "divisor": "1m"}, "250"),
    ({"resource": "limits.memory", "divisor": "1Mi"}, "128"),
    ({"resource": "requests.memory"}, str(64 * 1024 * 1024)),
    ({"resource": "limits.cpu"}, "4"),
])
def test_resource_value(ref, want):
    """Requests and limits in units of the divisor, rounded up; a missing limit is the node's allocatable."""
    assert volumes.resource_value(POD, "main", ref, allocatable={"cpu": "4", "memory": "8Gi"}) == want


@pytest.mark.parametrize("source,want", [
    ({}, {"a": (b"1", 0o644), "b": (b"2", 0o644)}),
    ({"defaultMode": 0o400}, {"a": (b"1", 0o400), "b": (b"2", 0o400)}),
    ({"items": [{"key": "a", "path": "dir/x", "mode": 0o600}]}, {"dir/x": (b"1", 0o600)}),
    ({"items": [{"key": "zz", "path": "z"}], "optional": True}, {}),
])
def test_key_files(source, want):
    """All keys, or just items with their paths and modes; defaultMode applies where no mode is given."""
    assert volumes.key_files("configmap", "c", {"a": b"1", "b": b"2"}, source) == want


def test_missing_item_key_is_refused():
    """An item naming a key the object lacks is the kubelet's non-existent config key error."""
    with pytest.raises(volumes.VolumeError, match="configmap references non-existent config key: zz"):
        volumes.key_files("configmap", "c", {"a": b"1"}, {"items": [{"key": "zz", "path": "z"}]})


def test_write_atomic_publishes_and_refreshes(tmp_path):
    """Files appear through a ..data link; a change swaps the set in one step and drops removed keys."""
    target = str(tmp_path / "vol")
    assert volumes.write_atomic(target, {"a": (b"1", 0o644), "b": (b"2", 0o600)}, now=NOW)
    assert open(os.path.join(target, "a")).read() == "1"
    assert os.path.islink(os.path.join(target, "..data")) and os.readlink(os.path.join(target, "a")) == "..data/a"
    assert os.stat(os.path.join(target, "b")).st_mode & 0o777 == 0o600
    assert not volumes.write_atomic(target, {"a": (b"1", 0o644), "b": (b"2", 0o600)}, now=NOW)
    later = NOW + datetime.timedelta(seconds=1)
    assert volumes.write_atomic(target, {"a": (b"new", 0o644)}, now=later)
    assert open(os.path.join(target, "a")).read() == "new"
    assert not os.path.lexists(os.path.join(target, "b"))
    assert len([e for e in os.listdir(target) if e.startswith("..2026")]) == 1


def test_write_atomic_refuses_escaping_paths(tmp_path):
    """An item path may not leave the volume."""
    with pytest.raises(volumes.VolumeError, match="may not contain"):
        volumes.write_atomic(str(tmp_path / "v"), {"../x": (b"", 0o644)}, now=NOW)


def _pod(*vols):
    return {**POD, "spec": {**POD["spec"], "volumes": list(vols)}}


async def test_materialise_every_kind(tmp_path):
    """emptyDir, configMap, secret, downwardAPI and projected volumes land under pods/<uid>/volumes/<name>."""
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/configmaps/cfg"] = {"data": {"key": "value"}}
    client.objects["/api/v1/namespaces/ns/secrets/sec"] = {"data": {"pw": base64.b64encode(b"s3cret").decode()}}
    pod = _pod({"name": "scratch", "emptyDir": {}},
               {"name": "cfg", "configMap": {"name": "cfg"}},
               {"name": "sec", "secret": {"secretName": "sec", "defaultMode": 0o400}},
               {"name": "info", "downwardAPI": {"items": [{"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
               {"name": "all", "projected": {"sources": [
                   {"configMap": {"name": "cfg", "items": [{"key": "key", "path": "c/key"}]}},
                   {"secret": {"name": "sec"}},
                   {"downwardAPI": {"items": [{"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}}]}}]}})
    got = await volumes.materialise(client, pod, data_dir=str(tmp_path), allocatable={}, now=NOW)
    base = tmp_path / "pods" / "u1" / "volumes"
    assert got == {n: str(base / n) for n in ("scratch", "cfg", "sec", "info", "all")}
    assert os.path.isdir(base / "scratch")
    assert (base / "cfg" / "key").read_text() == "value"
    assert (base / "sec" / "pw").read_bytes() == b"s3cret"
    assert os.stat(base / "sec" / "pw").st_mode & 0o777 == 0o400
    assert (base / "info" / "name").read_text() == "web"
    assert [(base / "all" / p).read_text() for p in ("c/key", "pw", "ns")] == ["value", "s3cret", "ns"]


@pytest.mark.parametrize("vol,message", [
    ({"name": "cfg", "configMap": {"name": "nope"}}, 'MountVolume.SetUp failed for volume "cfg" : configmap "nope" not found'),
    ({"name": "s", "secret": {"secretName": "nope"}}, 'MountVolume.SetUp failed for volume "s" : secret "nope" not found'),
    ({"name": "h", "hostPath": {"path": "/", "type": "File"}},
     'MountVolume.SetUp failed for volume "h" : hostPath type check failed: / is not a file'),
])
async def test_materialise_failures(tmp_path, vol, message):
    """A volume that cannot be set up is reported with the kubelet's MountVolume.SetUp wording."""
    with pytest.raises(volumes.VolumeError) as e:
        await volumes.materialise(fakes.FakeClient(), _pod(vol), data_dir=str(tmp_path), allocatable={}, now=NOW)
    assert message in str(e.value)


async def test_optional_missing_configmap_is_an_empty_volume(tmp_path):
    """An optional source that does not exist gives an empty volume instead of an error."""
    got = await volumes.materialise(fakes.FakeClient(), _pod({"name": "c", "configMap": {"name": "x", "optional": True}}),
                                    data_dir=str(tmp_path), allocatable={}, now=NOW)
    assert [e for e in os.listdir(got["c"]) if not e.startswith("..")] == []
