"""The Node and Lease objects a node agent reports: labels, capacity, conditions, addresses, node info."""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from pocketkube.base import clock as clock_mod

KUBELET_VERSION = "v1.32.0"
RUNTIME_VERSION = "pocketkube://0.1.0"
KUBELET_PORT = 10250
MAX_PODS = 110
LEASE_NAMESPACE = "kube-node-lease"
LEASE_DURATION_SECONDS = 40
INTERNAL_IP = "127.0.0.1"
# The kubelet's default hard eviction thresholds, which it subtracts from capacity.
EVICTION_MEMORY_KI = 100 * 1024
EVICTION_NODEFS_FRACTION = 0.10
# Virtual nodes run nothing, so they advertise a fixed KWOK-like size instead of a share of the
# machine: scale tests place thousands of pods with requests on them.
VIRTUAL_CAPACITY = {"cpu": "32", "memory": "256Gi", "ephemeral-storage": "1Ti", "pods": str(MAX_PODS),
                    "hugepages-1Gi": "0", "hugepages-2Mi": "0"}

ZONE_LABEL = "topology.kubernetes.io/zone"
HOSTNAME_LABEL = "kubernetes.io/hostname"
OS_LABEL = "kubernetes.io/os"
ARCH_LABEL = "kubernetes.io/arch"

# Node conditions as the kubelet words them: (type, status, reason, message) when healthy.
HEALTHY_CONDITIONS = (
    ("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
    ("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
    ("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
    ("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
)


@dataclasses.dataclass(frozen=True)
class Machine:
    """Facts about the host a node agent runs on (see node/machine.py for how they are found)."""

    hostname: str = "localhost"
    cpu_millis: int = 1000
    memory_bytes: int = 1 << 30
    storage_bytes: int = 10 << 30
    os_image: str = "Linux"
    kernel_version: str = ""
    architecture: str = "amd64"
    operating_system: str = "linux"
    boot_id: str = ""
    machine_id: str = ""
    system_uuid: str = ""


@dataclasses.dataclass(frozen=True)
class NodeSpec:
    """What makes one node distinct: its name, zone, pod CIDR and whether it runs processes."""

    name: str
    zone: str = ""
    pod_cidr: str = ""
    virtual: bool = False
    address: str = INTERNAL_IP


def node_name(prefix: str, index: int) -> str:
    """The name of the index-th node (1-based), e.g. pocketkube-node-1."""
    return f"{prefix}-{index}"


def pod_cidr(index: int, *, virtual: bool = False) -> str:
    """A /24 per node: 10.244.x.0/24 for nodes that run processes, 10.245+ for virtual ones."""
    if index < 0:
        raise ValueError(f"a node index is not negative, got {index}")
    base = 245 if virtual else 244
    second = base + index // 256
    if second > 255 or (not virtual and second > 244):
        raise ValueError(f"no pod CIDR left for node index {index}")
    return f"10.{second}.{index % 256}.0/24"


def _cpu(millis: int) -> str:
    return str(millis // 1000) if millis % 1000 == 0 else f"{millis}m"


def capacity(machine: Machine, *, share: int = 1) -> dict[str, str]:
    """The machine's resources divided evenly among `share` nodes, in the kubelet's units."""
    if share < 1:
        raise ValueError(f"a machine is shared by at least one node, got {share}")
    cpu = max(1, machine.cpu_millis // share)
    mem_ki = max(1, machine.memory_bytes // 1024 // share)
    disk_ki = max(1, machine.storage_bytes // 1024 // share)
    return {"cpu": _cpu(cpu), "ephemeral-storage": f"{disk_ki}Ki", "hugepages-1Gi": "0",
            "hugepages-2Mi": "0", "memory": f"{mem_ki}Ki", "pods": str(MAX_PODS)}


def allocatable(cap: Mapping[str, str]) -> dict[str, str]:
    """Capacity minus the kubelet's default eviction thresholds (memory 100Mi, nodefs 10%)."""
    out = dict(cap)
    mem = cap.get("memory", "")
    if mem.endswith("Ki") and mem[:-2].isdigit():
        out["memory"] = f"{max(0, int(mem[:-2]) - EVICTION_MEMORY_KI)}Ki"
    disk = cap.get("ephemeral-storage", "")
    if disk.endswith("Ki") and disk[:-2].isdigit():
        # The kubelet prints this one as a plain byte count.
        out["ephemeral-storage"] = str(int(int(disk[:-2]) * 1024 * (1 - EVICTION_NODEFS_FRACTION)))
    return out


def labels(spec: NodeSpec, machine: Machine) -> dict[str, str]:
    """The well-known labels the kubelet sets on its Node (no node-role label: ROLES shows <none>)."""
    out = {
        "beta.kubernetes.io/arch": machine.architecture,
        "beta.kubernetes.io/os": machine.operating_system,
        ARCH_LABEL: machine.architecture,
        HOSTNAME_LABEL: spec.name,
        OS_LABEL: machine.operating_system,
    }
    if spec.virtual:
        out["type"] = "virtual"
    if spec.zone:
        out[ZONE_LABEL] = spec.zone
    return out


def node_info(spec: NodeSpec, machine: Machine) -> dict[str, str]:
    """status.nodeInfo as the kubelet reports it."""
    return {
        "architecture": machine.architecture,
        "bootID": machine.boot_id,
        "containerRuntimeVersion": RUNTIME_VERSION,
        "kernelVersion": machine.kernel_version,
        "kubeProxyVersion": "",
        "kubeletVersion": KUBELET_VERSION,
        "machineID": machine.machine_id,
        "operatingSystem": machine.operating_system,
        "osImage": machine.os_image,
        "systemUUID": machine.system_uuid,
    }


def conditions(now: datetime.datetime, old: Sequence[Mapping[str, Any]] = (),
               *, overrides: Mapping[str, tuple[str, str, str]] | None = None) -> list[dict[str, Any]]:
    """The four kubelet conditions at heartbeat `now`; a transition time moves only on a status change.

    overrides maps a condition type to (status, reason, message) in place of the healthy one."""
    stamp = clock_mod.rfc3339(now)
    previous = {c.get("type"): c for c in old}
    out = []
    for ctype, status, reason, message in HEALTHY_CONDITIONS:
        if overrides and ctype in overrides:
            status, reason, message = overrides[ctype]
        prev = previous.get(ctype)
        transition = stamp
        if prev is not None and prev.get("status") == status and prev.get("lastTransitionTime"):
            transition = prev["lastTransitionTime"]
        out.append({"type": ctype, "status": status, "lastHeartbeatTime": stamp,
                    "lastTransitionTime": transition, "reason": reason, "message": message})
    return out


def condition_states(cs: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """What a condition list says, without its times: sorted (type, status, reason, message)."""
    return sorted((c.get("type"), c.get("status"), c.get("reason"), c.get("message")) for c in cs)


# The states of a healthy node's conditions, which the agent compares its last report with.
HEALTHY_STATES = condition_states([{"type": t, "status": s, "reason": r, "message": m}
                                   for t, s, r, m in HEALTHY_CONDITIONS])


def conditions_changed(old: Sequence[Mapping[str, Any]], new: Sequence[Mapping[str, Any]]) -> bool:
    """Whether anything but the heartbeat differs between two condition lists."""
    return condition_states(old) != condition_states(new)


def status(spec: NodeSpec, machine: Machine, *, cap: Mapping[str, str], now: datetime.datetime,
           old_conditions: Sequence[Mapping[str, Any]] = (), kubelet_port: int = KUBELET_PORT) -> dict[str, Any]:
    """The whole Node status: capacity, allocatable, conditions, addresses, endpoints, node info."""
    return {
        "capacity": dict(cap),
        "allocatable": allocatable(cap),
        "conditions": conditions(now, old_conditions),
        "addresses": [{"type": "InternalIP", "address": spec.address},
                      {"type": "Hostname", "address": spec.name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": node_info(spec, machine),
    }


def node_object(spec: NodeSpec, machine: Machine, *, cap: Mapping[str, str],
                now: datetime.datetime, kubelet_port: int = KUBELET_PORT) -> dict[str, Any]:
    """The Node the agent registers."""
    node: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": spec.name,
            "labels": labels(spec, machine),
            "annotations": {"volumes.kubernetes.io/controller-managed-attach-detach": "true"},
        },
        "spec": {},
        "status": status(spec, machine, cap=cap, now=now, kubelet_port=kubelet_port),
    }
    if spec.pod_cidr:
        node["spec"] = {"podCIDR": spec.pod_cidr, "podCIDRs": [spec.pod_cidr]}
    return node


def reconcile_labels(existing: Mapping[str, Any], spec: NodeSpec, machine: Machine) -> dict[str, str] | None:
    """Labels to patch onto an already-registered Node so the kubelet-owned ones are right; None if all are."""
    have = (existing.get("metadata") or {}).get("labels") or {}
    want = labels(spec, machine)
    patch = {k: v for k, v in want.items() if have.get(k) != v}
    return patch or None


def lease_object(node: str, *, node_uid: str, now: datetime.datetime) -> dict[str, Any]:
    """The node's Lease in kube-node-lease, owned by its Node so it goes when the Node does."""
    meta: dict[str, Any] = {"name": node, "namespace": LEASE_NAMESPACE}
    if node_uid:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "Node", "name": node, "uid": node_uid}]
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": node, "leaseDurationSeconds": LEASE_DURATION_SECONDS,
                 "renewTime": clock_mod.rfc3339_micro(now)},
    }
