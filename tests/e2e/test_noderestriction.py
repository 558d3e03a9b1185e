"""End to end: NodeRestriction limits what a kubelet identity writes, while the real node agents keep working."""

from __future__ import annotations

import json

from tests.e2e import cluster as cluster_mod
from tests.e2e import http

AS_NODE = ("--as=system:node:nr-1", "--as-group=system:nodes")


def _node(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})


def test_a_node_writes_only_itself(cluster: cluster_mod.Cluster) -> None:
    """A kubelet may register and relabel itself with kubelet labels only, never another Node."""
    cluster.kubectl(*AS_NODE, "create", "-f", "-", input=_node("nr-1"))
    cluster.kubectl("create", "-f", "-", input=_node("nr-2"))
    other = cluster.kubectl(*AS_NODE, "label", "node", "nr-2", "a=b", check=False)
    assert other.stderr == 'Error from server (Forbidden): nodes "nr-2" is forbidden: node "nr-1" is not allowed to ' \
                           'modify node "nr-2"\n'
    role = cluster.kubectl(*AS_NODE, "label", "node", "nr-1", "node-role.kubernetes.io/control-plane=", check=False)
    assert role.stderr == 'Error from server (Forbidden): nodes "nr-1" is forbidden: is not allowed to modify labels: ' \
                          "node-role.kubernetes.io/control-plane\n"
    assert cluster.kubectl(*AS_NODE, "label", "node", "nr-1", "example.com/rack=r1", "node.kubernetes.io/x=y").stdout \
        == "node/nr-1 labeled\n"
    taint = cluster.kubectl(*AS_NODE, "taint", "node", "nr-1", "k=v:NoSchedule", check=False)
    assert taint.stderr == 'Error from server (Forbidden): nodes "nr-1" is forbidden: node "nr-1" is not allowed to ' \
                           "modify taints\n"
    pool = cluster.kubectl(*AS_NODE, "label", "node", "nr-1", "node-restriction.kubernetes.io/pool=a", check=False)
    assert pool.stderr == 'Error from server (Forbidden): nodes "nr-1" is forbidden: is not allowed to modify labels: ' \
                          "node-restriction.kubernetes.io/pool\n"


def test_a_node_cannot_create_pods_or_foreign_leases(cluster: cluster_mod.Cluster) -> None:
    """Pods other than mirror pods and leases outside kube-node-lease or under another name are refused."""
    pod = cluster.kubectl(*AS_NODE, "run", "sneaky", "--image=busybox", check=False)
    assert pod.stderr == 'Error from server (Forbidden): pods "sneaky" is forbidden: pod does not have ' \
                         '"kubernetes.io/config.mirror" annotation, node "nr-1" can only create mirror pods\n'
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "nr-2", "namespace": "kube-node-lease"}}
    other = cluster.kubectl(*AS_NODE, "create", "-f", "-", input=json.dumps(lease), check=False)
    assert other.stderr == 'Error from server (Forbidden): error when creating "STDIN": leases.coordination.k8s.io ' \
                           '"nr-2" is forbidden: can only access node lease with the same name as the requesting node\n'
    lease["metadata"]["name"] = "nr-1"
    assert cluster.kubectl(*AS_NODE, "create", "-f", "-", input=json.dumps(lease)).stdout == \
        "lease.coordination.k8s.io/nr-1 created\n"


def test_real_node_agents_keep_working(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A real kubelet (system:node:<name>) registers, renews its lease, mounts tokens, runs and deletes pods."""
    cluster.kubectl("delete", "node", "nr-1", "nr-2")  # no agent behind them: keep pods off them
    node = cluster_mod.PROCESS_NODE
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "nrpod"},
           "spec": {"containers": [{"name": "main", "image": "busybox",
                                    "command": ["sh", "-c", "cat /var/run/secrets/kubernetes.io/serviceaccount/token "
                                                "| wc -c; exec sleep 3600"]}]}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    cluster_mod.eventually(lambda: cluster.json("get", "pod", "nrpod")["status"].get("phase") == "Running",
                           timeout=30, what="pod running")
    got = cluster.json("get", "node", node)
    assert any(c["type"] == "Ready" and c["status"] == "True" for c in got["status"]["conditions"])
    assert cluster.json("get", "lease", node, "-n", "kube-node-lease")["spec"]["holderIdentity"] == node
    assert int(cluster_mod.eventually(lambda: cluster.kubectl("logs", "nrpod").stdout.strip(), what="logs")) > 100
    cluster.kubectl("delete", "pod", "nrpod", "--wait=true", timeout=60)
    with open(f"{cluster.data_dir}/agent.log") as f:
        assert "forbidden" not in f.read().lower()


def test_impersonating_groups_without_a_user(cluster: cluster_mod.Cluster) -> None:
    """Impersonate-Group without Impersonate-User is kube's plain-text 500 naming the request."""
    raw = http.Raw(cluster.kubeconfig)
    status, headers, body = raw.request("GET", "/api/v1/namespaces", headers={"Impersonate-Group": "system:masters"})
    assert status == 500
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert headers["x-content-type-options"] == "nosniff"
    assert body.decode() == 'Internal Server Error: "/api/v1/namespaces": requested [{Group  system:masters    }] without ' \
                   "impersonating a user\n"


def test_a_node_evicts_and_mints_tokens_only_for_its_own_pods(cluster: cluster_mod.Cluster) -> None:
    """Evictions and TokenRequests by a kubelet for a pod bound to another node are refused before they act."""
    for name in ("nr-3", "nr-4"):
        cluster.kubectl("create", "-f", "-", input=_node(name))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere"},
           "spec": {"nodeName": "nr-4", "containers": [{"name": "main", "image": "busybox"}]}}
    cluster.kubectl("create", "-f", "-", input=json.dumps(pod))
    uid = cluster.json("get", "pod", "elsewhere")["metadata"]["uid"]
    as_node = ("--as=system:node:nr-3", "--as-group=system:nodes")
    eviction = {"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "elsewhere"}}
    evicted = cluster.kubectl(*as_node, "create", "--raw", "/api/v1/namespaces/default/pods/elsewhere/eviction",
                              "-f", "-", input=json.dumps(eviction), check=False)
    assert "node nr-3 can only evict pods with spec.nodeName set to itself" in evicted.stderr
    assert cluster.json("get", "pod", "elsewhere")["metadata"]["uid"] == uid
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
               "spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "elsewhere", "uid": uid}}}
    token = cluster.kubectl(*as_node, "create", "--raw", "/api/v1/namespaces/default/serviceaccounts/default/token",
                            "-f", "-", input=json.dumps(request), check=False)
    assert "node requested token bound to a pod scheduled on a different node" in token.stderr
    unbound = cluster.kubectl(*as_node, "create", "token", "default", check=False)
    assert "node requested token not bound to a pod" in unbound.stderr
    cluster.kubectl("delete", "pod", "elsewhere", "--grace-period=0", "--force")
    cluster.kubectl("delete", "node", "nr-3", "nr-4")
