"""End to end: namespace termination and garbage collection behave as in Kubernetes."""

from __future__ import annotations

import json

from tests.e2e import cluster as cluster_mod


def _cm(name: str, ns: str, *, owner: dict | None = None, finalizers: list[str] | None = None) -> str:
    meta: dict = {"name": name, "namespace": ns}
    if owner:
        meta["ownerReferences"] = [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner["metadata"]["name"],
                                    "uid": owner["metadata"]["uid"]}]
    if finalizers:
        meta["finalizers"] = finalizers
    return json.dumps({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}})


def test_namespace_deletion_empties_and_removes_it(cluster: cluster_mod.Cluster) -> None:
    """Deleting a namespace deletes its content, then the namespace itself; kube-root-ca.crt is published."""
    cluster.kubectl("create", "namespace", "doomed")
    cluster_mod.eventually(lambda: cluster.kubectl("-n", "doomed", "get", "cm", "kube-root-ca.crt", check=False).returncode == 0)
    cluster.kubectl("-n", "doomed", "create", "configmap", "a", "--from-literal=x=y")
    cluster.kubectl("delete", "namespace", "doomed", "--timeout=30s")
    assert cluster.kubectl("get", "ns", "doomed", check=False).returncode == 1


def test_terminating_namespace_refuses_new_objects_and_waits_for_finalizers(cluster: cluster_mod.Cluster) -> None:
    """A Terminating namespace refuses creates and stays until finalizers of its content are removed."""
    cluster.kubectl("create", "namespace", "held")
    cluster.kubectl("create", "-f", "-", input=_cm("pinned", "held", finalizers=["example.com/hold"]))
    cluster.kubectl("delete", "namespace", "held", "--wait=false")
    cluster_mod.eventually(lambda: cluster.json("get", "ns", "held")["status"]["phase"] == "Terminating")
    cp = cluster.kubectl("-n", "held", "create", "configmap", "late", check=False)
    assert cp.returncode == 1 and "because it is being terminated" in cp.stderr
    cluster_mod.eventually(lambda: any(c["type"] == "NamespaceFinalizersRemaining" and c["status"] == "True"
                                       for c in cluster.json("get", "ns", "held")["status"].get("conditions", [])))
    cluster.kubectl("-n", "held", "patch", "cm", "pinned", "--type=merge", "-p", '{"metadata":{"finalizers":null}}')
    cluster_mod.eventually(lambda: cluster.kubectl("get", "ns", "held", check=False).returncode == 1)


def test_garbage_collector_background_foreground_and_orphan(cluster: cluster_mod.Cluster) -> None:
    """Dependents go with their owner (background and foreground) or lose the reference (orphan)."""
    cluster.kubectl("create", "namespace", "gc")
    for policy in ("background", "foreground", "orphan"):
        cluster.kubectl("-n", "gc", "create", "configmap", f"owner-{policy}")
        owner = cluster.json("-n", "gc", "get", "cm", f"owner-{policy}")
        cluster.kubectl("create", "-f", "-", input=_cm(f"child-{policy}", "gc", owner=owner))
        cluster.kubectl("-n", "gc", "delete", "cm", f"owner-{policy}", f"--cascade={policy}", "--timeout=30s")
    cluster_mod.eventually(lambda: cluster.kubectl("-n", "gc", "get", "cm", "child-background", check=False).returncode == 1)
    assert cluster.kubectl("-n", "gc", "get", "cm", "child-foreground", check=False).returncode == 1
    orphan = cluster.json("-n", "gc", "get", "cm", "child-orphan")
    assert not orphan["metadata"].get("ownerReferences")


def test_system_namespaces_cannot_be_deleted(cluster: cluster_mod.Cluster) -> None:
    """default, kube-system and kube-public refuse deletion with Kubernetes' Forbidden message."""
    for name in ("default", "kube-system", "kube-public"):
        cp = cluster.kubectl("delete", "namespace", name, check=False)
        assert cp.returncode == 1
        assert f'namespaces "{name}" is forbidden: this namespace may not be deleted' in cp.stderr
