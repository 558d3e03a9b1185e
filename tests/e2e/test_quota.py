"""End to end: ResourceQuota admission and controller, and LimitRanger, driven by the real kubectl."""

from __future__ import annotations

import concurrent.futures
import json

from tests.e2e import cluster as cluster_mod
from tests.e2e import http


def _namespace_with_quota(cluster: cluster_mod.Cluster, ns: str, hard: str, name: str = "q") -> None:
    cluster.kubectl("create", "namespace", ns)
    cluster.kubectl("-n", ns, "create", "quota", name, f"--hard={hard}")
    # Admission enforces a quota once the controller has counted it, as in kube.
    cluster_mod.eventually(lambda: (cluster.json("-n", ns, "get", "quota", name).get("status") or {}).get("used"),
                           what=f"quota {ns}/{name} to be counted")


def _pods(n: int, *, start: int = 0) -> str:
    items = [{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"p{i}"},
              "spec": {"containers": [{"name": "c", "image": "nginx"}]}} for i in range(start, start + n)]
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": items})


def test_quota_blocks_the_eleventh_pod_and_frees_a_slot(cluster: cluster_mod.Cluster) -> None:
    """pods=10 admits ten pods, refuses the eleventh with kube's message, and admits it again after a delete."""
    _namespace_with_quota(cluster, "quota-a", "pods=10")
    cluster.kubectl("-n", "quota-a", "create", "-f", "-", input=_pods(10))
    cp = cluster.kubectl("-n", "quota-a", "run", "p10", "--image=nginx", check=False)
    assert cp.returncode == 1
    assert cp.stderr.strip() == ('Error from server (Forbidden): pods "p10" is forbidden: exceeded quota: q, '
                                 "requested: pods=1, used: pods=10, limited: pods=10")
    table = cluster.kubectl("-n", "quota-a", "get", "quota").stdout.splitlines()
    assert table[0].split() == ["NAME", "AGE", "REQUEST", "LIMIT"]
    assert table[1].split()[0] == "q" and table[1].split()[2:] == ["pods:", "10/10"]
    described = cluster.kubectl("-n", "quota-a", "describe", "quota", "q").stdout.splitlines()
    assert described[2].split() == ["Resource", "Used", "Hard"] and described[4].split() == ["pods", "10", "10"]
    cluster.kubectl("-n", "quota-a", "delete", "pod", "p0", "--wait=false")
    cluster_mod.eventually(lambda: cluster.json("-n", "quota-a", "get", "quota", "q")["status"]["used"] == {"pods": "9"},
                           what="the deleted pod's slot to be released")
    cluster.kubectl("-n", "quota-a", "run", "p10", "--image=nginx")


def test_concurrent_creates_admit_exactly_the_quota(cluster: cluster_mod.Cluster) -> None:
    """Twenty pods created at once against pods=10: exactly ten 201s, ten 403s, and status.used says 10."""
    _namespace_with_quota(cluster, "quota-b", "pods=10")
    raw = http.Raw(cluster.kubeconfig)

    def create(i: int) -> tuple[int, object]:
        body = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"c{i}"},
                "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
        code, _, out = raw.request("POST", "/api/v1/namespaces/quota-b/pods", body, timeout=30)
        return code, out

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = list(pool.map(create, range(20)))
    codes = sorted(code for code, _ in results)
    assert codes == [201] * 10 + [403] * 10
    refused = [out for code, out in results if code == 403]
    assert all(isinstance(o, dict) and o["reason"] == "Forbidden" and "exceeded quota: q" in o["message"] for o in refused)
    assert cluster.json("-n", "quota-b", "get", "quota", "q")["status"]["used"] == {"pods": "10"}
    assert len(cluster.json("-n", "quota-b", "get", "pods")["items"]) == 10


def test_compute_quota_requires_requests_and_counts_them(cluster: cluster_mod.Cluster) -> None:
    """A requests.cpu/limits.memory quota refuses containers without them, then counts what pods ask for."""
    _namespace_with_quota(cluster, "quota-c", "requests.cpu=1,limits.memory=1Gi", name="compute")
    cp = cluster.kubectl("-n", "quota-c", "run", "x", "--image=nginx", check=False)
    assert cp.stderr.strip() == ('Error from server (Forbidden): pods "x" is forbidden: failed quota: compute: '
                                 "must specify limits.memory for: x; requests.cpu for: x")
    overrides = {"spec": {"containers": [{"name": "y", "image": "nginx",
                                          "resources": {"requests": {"cpu": "600m"}, "limits": {"memory": "512Mi"}}}]}}
    cluster.kubectl("-n", "quota-c", "run", "y", "--image=nginx", f"--overrides={json.dumps(overrides)}")
    assert cluster.json("-n", "quota-c", "get", "quota", "compute")["status"]["used"] == \
        {"limits.memory": "512Mi", "requests.cpu": "600m"}
    overrides["spec"]["containers"][0]["name"] = "z"
    cp = cluster.kubectl("-n", "quota-c", "run", "z", "--image=nginx", f"--overrides={json.dumps(overrides)}", check=False)
    assert "exceeded quota: compute, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1" \
        in cp.stderr
    row = cluster.kubectl("-n", "quota-c", "get", "quota", "--no-headers").stdout.split()
    assert row[2:] == ["requests.cpu:", "600m/1", "limits.memory:", "512Mi/1Gi"]
    # A dry run is checked but not charged.
    cluster.kubectl("-n", "quota-c", "delete", "pod", "y", "--wait=false")
    cluster_mod.eventually(lambda: cluster.json("-n", "quota-c", "get", "quota", "compute")["status"]["used"]
                           == {"limits.memory": "0", "requests.cpu": "0"}, what="the usage to be released")
    cluster.kubectl("-n", "quota-c", "run", "z", "--image=nginx", f"--overrides={json.dumps(overrides)}",
                    "--dry-run=server")
    assert cluster.json("-n", "quota-c", "get", "quota", "compute")["status"]["used"]["requests.cpu"] == "0"


def test_finished_pods_release_their_usage(cluster: cluster_mod.Cluster) -> None:
    """A pod that reaches Succeeded stops counting against "pods" but still counts as an object."""
    _namespace_with_quota(cluster, "quota-d", "pods=1,count/pods=5")
    cluster.kubectl("-n", "quota-d", "run", "done", "--image=nginx", "--restart=Never")
    cluster.kubectl("-n", "quota-d", "patch", "pod", "done", "--subresource=status", "--type=merge",
                    "-p", '{"status":{"phase":"Succeeded"}}')
    cluster_mod.eventually(lambda: cluster.json("-n", "quota-d", "get", "quota", "q")["status"]["used"]
                           == {"count/pods": "1", "pods": "0"}, what="the finished pod to be released")
    cluster.kubectl("-n", "quota-d", "run", "next", "--image=nginx")


def test_limit_range_defaults_and_bounds(cluster: cluster_mod.Cluster) -> None:
    """A LimitRange fills in container requests/limits (annotated) and refuses pods and claims out of bounds."""
    cluster.kubectl("create", "namespace", "limits")
    lr = {"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "lr"},
          "spec": {"limits": [{"type": "Container", "default": {"cpu": "500m", "memory": "256Mi"},
                               "defaultRequest": {"cpu": "250m", "memory": "128Mi"},
                               "max": {"cpu": "1"}, "min": {"memory": "100Mi"}},
                              {"type": "PersistentVolumeClaim", "max": {"storage": "2Gi"}}]}}
    cluster.kubectl("-n", "limits", "create", "-f", "-", input=json.dumps(lr))
    cluster.kubectl("-n", "limits", "run", "a", "--image=nginx")
    a = cluster.json("-n", "limits", "get", "pod", "a")
    assert a["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "500m", "memory": "256Mi"},
                                                       "requests": {"cpu": "250m", "memory": "128Mi"}}
    assert a["metadata"]["annotations"]["kubernetes.io/limit-ranger"] == \
        "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a"
    assert a["status"]["qosClass"] == "Burstable"
    big = {"spec": {"containers": [{"name": "b", "image": "nginx", "resources": {"limits": {"cpu": "2"}}}]}}
    cp = cluster.kubectl("-n", "limits", "run", "b", "--image=nginx", f"--overrides={json.dumps(big)}", check=False)
    assert cp.stderr.strip() == ('Error from server (Forbidden): pods "b" is forbidden: '
                                 "maximum cpu usage per Container is 1, but limit is 2")
    small = {"spec": {"containers": [{"name": "c", "image": "nginx", "resources": {"requests": {"memory": "50Mi"}}}]}}
    cp = cluster.kubectl("-n", "limits", "run", "c", "--image=nginx", f"--overrides={json.dumps(small)}", check=False)
    assert cp.stderr.strip() == ('Error from server (Forbidden): pods "c" is forbidden: '
                                 "minimum memory usage per Container is 100Mi, but request is 50Mi")
    claim = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "big"},
             "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "5Gi"}}}}
    cp = cluster.kubectl("-n", "limits", "create", "-f", "-", input=json.dumps(claim), check=False)
    assert 'persistentvolumeclaims "big" is forbidden: maximum storage usage per PersistentVolumeClaim is 2Gi, ' \
           "but request is 5Gi" in cp.stderr
    described = cluster.kubectl("-n", "limits", "describe", "limitrange", "lr").stdout
    assert "Container              cpu       -      1    250m             500m           -" in described
