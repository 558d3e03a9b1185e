"""Real kubectl against pocketkube: node-selected pod lists and the bookmark sent just before a watch's deadline."""

from __future__ import annotations

import json

from tests.e2e import cluster as cluster_mod


def _pod(name: str, node: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
                       "spec": {"nodeName": node, "containers": [{"name": "c", "image": "busybox"}]}})


def test_field_selected_list_and_pre_deadline_bookmark(cluster: cluster_mod.Cluster) -> None:
    """kubectl lists only the node's pods, and a bookmarking watch ends with a bookmark at a fresh revision."""
    cluster.kubectl("apply", "-f", "-", input=_pod("h12-on-ghost", "ghost-node"))
    cluster.kubectl("apply", "-f", "-", input=_pod("h12-on-other", "other-node"))
    out = cluster.kubectl("get", "pods", "--field-selector", "spec.nodeName=ghost-node", "-o", "name").stdout
    assert out.split() == ["pod/h12-on-ghost"]
    listed = json.loads(cluster.kubectl(
        "get", "--raw", "/api/v1/namespaces/default/pods?fieldSelector=spec.nodeName%3Dghost-node").stdout)
    assert [p["metadata"]["name"] for p in listed["items"]] == ["h12-on-ghost"]
    rv = int(listed["metadata"]["resourceVersion"])
    cluster.kubectl("create", "configmap", "h12-moves-the-revision")
    cm = cluster.json("get", "configmap", "h12-moves-the-revision")
    raw = cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/pods?watch=true&allowWatchBookmarks=true"
                          f"&timeoutSeconds=4&resourceVersion={rv}&fieldSelector=spec.nodeName%3Dghost-node").stdout
    lines = [json.loads(line) for line in raw.splitlines() if line.strip()]
    assert [ev["type"] for ev in lines] == ["BOOKMARK"]
    assert lines[0]["object"]["kind"] == "Pod"
    assert int(lines[0]["object"]["metadata"]["resourceVersion"]) >= int(cm["metadata"]["resourceVersion"])
    cluster.kubectl("delete", "pod", "h12-on-ghost", "h12-on-other", "--grace-period=0", "--force", check=False)
    cluster.kubectl("delete", "configmap", "h12-moves-the-revision", check=False)
