"""Specification of the Node and Lease objects a node agent reports."""

from __future__ import annotations

import datetime

import pytest

from pocketkube.node import nodes

T0 = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
T1 = T0 + datetime.timedelta(seconds=10)
MACHINE = nodes.Machine(hostname="box", cpu_millis=4000, memory_bytes=16 * 2**30, storage_bytes=100 * 2**30,
                        os_image="Debian GNU/Linux 12 (bookworm)", kernel_version="6.1.0", architecture="amd64",
                        operating_system="linux", boot_id="b", machine_id="m")


@pytest.mark.parametrize("share,cpu,memory,disk", [
    (1, "4", "16777216Ki", "104857600Ki"),
    (2, "2", "8388608Ki", "52428800Ki"),
    (3, "1333m", "5592405Ki", "34952533Ki"),
    (8, "500m", "2097152Ki", "13107200Ki"),
])
def test_capacity_is_the_machine_divided(share, cpu, memory, disk):
    """Each of `share` nodes gets an even part of the CPUs, memory and disk, plus 110 pods and no hugepages."""
    assert nodes.capacity(MACHINE, share=share) == {
        "cpu": cpu, "memory": memory, "ephemeral-storage": disk, "pods": "110",
        "hugepages-1Gi": "0", "hugepages-2Mi": "0"}


def test_capacity_needs_a_share():
    """Dividing a machine among no nodes is refused."""
    with pytest.raises(ValueError):
        nodes.capacity(MACHINE, share=0)


def test_allocatable_subtracts_eviction_thresholds():
    """Allocatable is capacity minus 100Mi of memory and 10% of disk (printed in bytes), as the kubelet does."""
    cap = nodes.capacity(MACHINE, share=1)
    alloc = nodes.allocatable(cap)
    assert alloc["memory"] == f"{16 * 2**20 - 100 * 1024}Ki"
    assert alloc["ephemeral-storage"] == str(int(100 * 2**30 * 0.9))
    assert (alloc["cpu"], alloc["pods"]) == ("4", "110")
    assert nodes.allocatable(nodes.VIRTUAL_CAPACITY) == nodes.VIRTUAL_CAPACITY


@pytest.mark.parametrize("spec,extra", [
    (nodes.NodeSpec(name="n-1"), {}),
    (nodes.NodeSpec(name="n-1", zone="a"), {"topology.kubernetes.io/zone": "a"}),
    (nodes.NodeSpec(name="n-1", virtual=True), {"type": "virtual"}),
])
def test_labels(spec, extra):
    """Nodes carry the kubelet's os/arch/hostname labels, a zone when given, and no node-role label."""
    assert nodes.labels(spec, MACHINE) == {
        "beta.kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
        "kubernetes.io/hostname": "n-1", "kubernetes.io/os": "linux", **extra}


def test_node_object():
    """The registered Node has addresses, daemon endpoints, node info, pod CIDR and Ready conditions."""
    spec = nodes.NodeSpec(name="pocketkube-node-1", pod_cidr="10.244.0.0/24")
    node = nodes.node_object(spec, MACHINE, cap=nodes.capacity(MACHINE), now=T0)
    st = node["status"]
    assert node["spec"] == {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]}
    assert st["addresses"] == [{"type": "InternalIP", "address": "127.0.0.1"},
                               {"type": "Hostname", "address": "pocketkube-node-1"}]
    assert st["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    info = st["nodeInfo"]
    assert (info["kubeletVersion"], info["containerRuntimeVersion"], info["osImage"], info["kernelVersion"],
            info["architecture"], info["operatingSystem"]) == (
        "v1.32.0", "pocketkube://0.1.0", "Debian GNU/Linux 12 (bookworm)", "6.1.0", "amd64", "linux")
    assert [(c["type"], c["status"], c["reason"]) for c in st["conditions"]] == [
        ("MemoryPressure", "False", "KubeletHasSufficientMemory"),
        ("DiskPressure", "False", "KubeletHasNoDiskPressure"),
        ("PIDPressure", "False", "KubeletHasSufficientPID"),
        ("Ready", "True", "KubeletReady")]
    assert st["conditions"][3]["message"] == "kubelet is posting ready status"


def test_conditions_move_the_heartbeat_but_keep_transitions():
    """A heartbeat refreshes lastHeartbeatTime; lastTransitionTime changes only with the status."""
    first = nodes.conditions(T0)
    second = nodes.conditions(T1, first)
    assert {c["lastHeartbeatTime"] for c in second} == {"2026-01-01T00:00:10Z"}
    assert {c["lastTransitionTime"] for c in second} == {"2026-01-01T00:00:00Z"}
    assert not nodes.conditions_changed(first, second)
    sick = nodes.conditions(T1, first, overrides={"Ready": ("False", "KubeletNotReady", "runtime down")})
    assert nodes.conditions_changed(first, sick)
    assert sick[3]["lastTransitionTime"] == "2026-01-01T00:00:10Z"


def test_reconcile_labels():
    """Only kubelet-owned labels that are missing or wrong are patched on an existing Node."""
    spec = nodes.NodeSpec(name="n-1", zone="b")
    node = {"metadata": {"labels": {**nodes.labels(spec, MACHINE), "topology.kubernetes.io/zone": "a", "x": "y"}}}
    assert nodes.reconcile_labels(node, spec, MACHINE) == {"topology.kubernetes.io/zone": "b"}
    assert nodes.reconcile_labels({"metadata": {"labels": nodes.labels(spec, MACHINE)}}, spec, MACHINE) is None


def test_lease_object():
    """The Lease is named after the node, held by it for 40 s, and owned by the Node."""
    lease = nodes.lease_object("n-1", node_uid="uid-1", now=T0)
    assert lease["metadata"] == {"name": "n-1", "namespace": "kube-node-lease", "ownerReferences": [
        {"apiVersion": "v1", "kind": "Node", "name": "n-1", "uid": "uid-1"}]}
    assert lease["spec"] == {"holderIdentity": "n-1", "leaseDurationSeconds": 40,
                             "renewTime": "2026-01-01T00:00:00.000000Z"}


@pytest.mark.parametrize("index,virtual,want", [
    (0, False, "10.244.0.0/24"), (5, False, "10.244.5.0/24"), (0, True, "10.245.0.0/24"),
    (300, True, "10.246.44.0/24"),
])
def test_pod_cidr(index, virtual, want):
    """Each node gets its own /24; nodes with processes and virtual nodes never share addresses."""
    assert nodes.pod_cidr(index, virtual=virtual) == want


@pytest.mark.parametrize("index,virtual", [(256, False), (-1, False), (11 * 256, True)])
def test_pod_cidr_runs_out(index, virtual):
    """Past the address plan's end, a node index is refused instead of overlapping another node."""
    with pytest.raises(ValueError):
        nodes.pod_cidr(index, virtual=virtual)
