"""End to end: Deployments, ReplicaSets and ReplicationControllers driven by the real kubectl.

Pods here carry a nodeSelector no node has, so neither a scheduler nor a node agent ever runs
them; where a test needs ready pods it marks them Ready itself through the status subresource.
"""

from __future__ import annotations

import json
import time
from typing import Any

from tests.e2e import cluster as cluster_mod

NOWHERE = {"pocketkube.test/nowhere": "true"}


def _deploy(name: str, *, replicas: int = 3, image: str = "nginx:1.25", strategy: dict | None = None,
            extra: dict | None = None) -> str:
    spec: dict[str, Any] = {
        "replicas": replicas, "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}},
                     "spec": {"nodeSelector": NOWHERE, "containers": [{"name": "c", "image": image}]}}}
    if strategy:
        spec["strategy"] = strategy
    spec.update(extra or {})
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": spec})


def _rss(c: cluster_mod.Cluster, ns: str, app: str) -> dict[str, dict]:
    return {rs["metadata"]["name"]: rs for rs in c.json("-n", ns, "get", "rs", "-l", f"app={app}")["items"]}


def _pods(c: cluster_mod.Cluster, ns: str, app: str) -> list[dict]:
    return c.json("-n", ns, "get", "pods", "-l", f"app={app}")["items"]


def _sizes(c: cluster_mod.Cluster, ns: str, app: str) -> dict[str, int]:
    return {n: rs["spec"]["replicas"] for n, rs in _rss(c, ns, app).items()}


def _make_ready(c: cluster_mod.Cluster, ns: str, app: str) -> None:
    """Play the kubelet: mark every not-yet-ready pod Running and Ready."""
    for p in _pods(c, ns, app):
        conds = (p.get("status") or {}).get("conditions") or []
        if any(x["type"] == "Ready" and x["status"] == "True" for x in conds) or p["metadata"].get("deletionTimestamp"):
            continue
        c.kubectl("-n", ns, "patch", "pod", p["metadata"]["name"], "--subresource=status", "--type=merge", "-p",
                  '{"status":{"phase":"Running","conditions":[{"type":"Ready","status":"True"}]}}', check=False)


def _condition(d: dict, ctype: str) -> dict:
    return next((x for x in (d.get("status") or {}).get("conditions") or [] if x["type"] == ctype), {})


def test_deployment_creates_replicaset_and_pods(cluster: cluster_mod.Cluster) -> None:
    """A Deployment gets a "<name>-<hash>" ReplicaSet whose pods carry its labels and controller refs."""
    c, ns = cluster, "wl-basic"
    c.kubectl("create", "namespace", ns)
    assert c.kubectl("-n", ns, "apply", "-f", "-", input=_deploy("web")).stdout == "deployment.apps/web created\n"
    pods = cluster_mod.eventually(lambda: (p := _pods(c, ns, "web")) and len(p) == 3 and p)
    (name, rs), = _rss(c, ns, "web").items()
    h = rs["metadata"]["labels"]["pod-template-hash"]
    assert name == f"web-{h}"
    assert rs["spec"]["selector"]["matchLabels"] == {"app": "web", "pod-template-hash": h}
    assert rs["metadata"]["annotations"] == {"deployment.kubernetes.io/desired-replicas": "3",
                                             "deployment.kubernetes.io/max-replicas": "4",
                                             "deployment.kubernetes.io/revision": "1"}
    owner = rs["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["controller"], owner["blockOwnerDeletion"]) == (
        "Deployment", "web", True, True)
    for p in pods:
        assert p["metadata"]["name"].startswith(f"{name}-")
        assert p["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
        assert p["metadata"]["ownerReferences"][0]["name"] == name
    d = cluster_mod.eventually(lambda: (d := c.json("-n", ns, "get", "deploy", "web"))
                               and (d.get("status") or {}).get("replicas") == 3 and d)
    assert d["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "1"
    assert d["status"]["unavailableReplicas"] == 3 and d["status"]["observedGeneration"] == 1
    assert _condition(d, "Available")["reason"] == "MinimumReplicasUnavailable"
    assert _condition(d, "Progressing")["status"] == "True"
    described = c.kubectl("-n", ns, "describe", "deploy", "web").stdout
    assert f"Scaled up replica set {name} from 0 to 3" in described
    assert f"NewReplicaSet:   {name} (3/3 replicas created)" in described
    # Scaling changes the pod count, both ways.
    c.kubectl("-n", ns, "scale", "deploy", "web", "--replicas=5")
    cluster_mod.eventually(lambda: len(_pods(c, ns, "web")) == 5)
    c.kubectl("-n", ns, "scale", "deploy", "web", "--replicas=1")
    cluster_mod.eventually(lambda: len(_pods(c, ns, "web")) == 1)
    # Deleting the Deployment takes its ReplicaSet and pods with it (garbage collector).
    c.kubectl("-n", ns, "delete", "deploy", "web")
    cluster_mod.eventually(lambda: not _rss(c, ns, "web") and not _pods(c, ns, "web"), timeout=15)


def test_rolling_update_history_and_undo(cluster: cluster_mod.Cluster) -> None:
    """RollingUpdate respects maxSurge/maxUnavailable with unready pods, completes once pods are ready,
    and rollout history/undo work."""
    c, ns = cluster, "wl-roll"
    c.kubectl("create", "namespace", ns)
    strategy = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}
    c.kubectl("-n", ns, "apply", "-f", "-", input=_deploy("web", replicas=4, strategy=strategy))
    cluster_mod.eventually(lambda: len(_pods(c, ns, "web")) == 4)
    first = next(iter(_rss(c, ns, "web")))
    # One write for both, so the change-cause lands on the new revision only.
    c.kubectl("-n", ns, "patch", "deploy", "web", "-p", json.dumps({
        "metadata": {"annotations": {"kubernetes.io/change-cause": "image 1.27"}},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}}}}))
    # Never-ready pods: surge one, drop one unhealthy old pod, grow new to 2, then stop (3 must stay up).
    sizes = cluster_mod.eventually(lambda: (s := _sizes(c, ns, "web")) and len(s) == 2 and s[first] == 3 and s)
    second = next(n for n in sizes if n != first)
    time.sleep(0.5)
    assert _sizes(c, ns, "web") == {first: 3, second: 2}
    # Once pods turn ready the rollout goes all the way.
    def rolled() -> bool:
        _make_ready(c, ns, "web")
        return _sizes(c, ns, "web") == {first: 0, second: 4} and len(_pods(c, ns, "web")) == 4
    cluster_mod.eventually(rolled, timeout=15)
    _make_ready(c, ns, "web")
    out = c.kubectl("-n", ns, "rollout", "status", "deploy/web", "--timeout=10s").stdout
    assert out.endswith('deployment "web" successfully rolled out\n')
    c.kubectl("-n", ns, "wait", "--for=condition=Available", "deploy/web", "--timeout=10s")
    d = c.json("-n", ns, "get", "deploy", "web")
    assert _condition(d, "Progressing")["reason"] == "NewReplicaSetAvailable"
    assert _condition(d, "Progressing")["message"] == f'ReplicaSet "{second}" has successfully progressed.'
    assert {k: d["status"].get(k) for k in ("replicas", "updatedReplicas", "readyReplicas", "availableReplicas")} \
        == {"replicas": 4, "updatedReplicas": 4, "readyReplicas": 4, "availableReplicas": 4}
    history = c.kubectl("-n", ns, "rollout", "history", "deploy/web").stdout
    assert history.split("\n")[1:4] == ["REVISION  CHANGE-CAUSE", "1         <none>", "2         image 1.27"]
    events = c.kubectl("-n", ns, "describe", "deploy", "web").stdout
    assert f"Scaled down replica set {first} from 3 to 2" in events
    # Undo brings the first template back as revision 3.
    assert c.kubectl("-n", ns, "rollout", "undo", "deploy/web").stdout == "deployment.apps/web rolled back\n"

    def undone() -> bool:
        _make_ready(c, ns, "web")
        return _sizes(c, ns, "web") == {first: 4, second: 0}
    cluster_mod.eventually(undone, timeout=15)
    rs = _rss(c, ns, "web")[first]
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "3"
    assert rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"] == "1"
    assert c.json("-n", ns, "get", "deploy", "web")["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "nginx:1.25"
    history = c.kubectl("-n", ns, "rollout", "history", "deploy/web").stdout
    assert [line.split()[0] for line in history.split("\n")[2:] if line.strip()] == ["2", "3"]


def test_pause_resume_and_restart(cluster: cluster_mod.Cluster) -> None:
    """A paused Deployment holds template changes (Progressing DeploymentPaused) until resumed; restart rolls."""
    c, ns = cluster, "wl-pause"
    c.kubectl("create", "namespace", ns)
    c.kubectl("-n", ns, "apply", "-f", "-", input=_deploy("web", replicas=2))
    cluster_mod.eventually(lambda: len(_rss(c, ns, "web")) == 1)
    c.kubectl("-n", ns, "rollout", "pause", "deploy/web")
    c.kubectl("-n", ns, "set", "image", "deploy/web", "c=nginx:1.27")
    d = cluster_mod.eventually(lambda: (d := c.json("-n", ns, "get", "deploy", "web"))
                               and _condition(d, "Progressing").get("reason") == "DeploymentPaused" and d)
    assert _condition(d, "Progressing")["status"] == "Unknown"
    time.sleep(0.3)
    assert len(_rss(c, ns, "web")) == 1
    c.kubectl("-n", ns, "rollout", "resume", "deploy/web")
    cluster_mod.eventually(lambda: len(_rss(c, ns, "web")) == 2)
    c.kubectl("-n", ns, "rollout", "restart", "deploy/web")
    cluster_mod.eventually(lambda: len(_rss(c, ns, "web")) == 3)


def test_recreate_and_progress_deadline(cluster: cluster_mod.Cluster) -> None:
    """Recreate scales the old ReplicaSet to zero first; a rollout without progress exceeds its deadline."""
    c, ns = cluster, "wl-recreate"
    c.kubectl("create", "namespace", ns)
    c.kubectl("-n", ns, "apply", "-f", "-", input=_deploy("rec", replicas=2, strategy={"type": "Recreate"},
                                                        extra={"progressDeadlineSeconds": 1}))
    cluster_mod.eventually(lambda: len(_pods(c, ns, "rec")) == 2)
    old = next(iter(_rss(c, ns, "rec")))
    c.kubectl("-n", ns, "set", "image", "deploy/rec", "c=nginx:1.27")
    sizes = cluster_mod.eventually(lambda: (s := _sizes(c, ns, "rec")) and len(s) == 2 and s[old] == 0
                                   and sum(s.values()) == 2 and s)
    new = next(n for n in sizes if n != old)
    events = c.kubectl("-n", ns, "describe", "deploy", "rec").stdout
    assert events.index(f"Scaled down replica set {old} from 2 to 0") < events.index(
        f"Scaled up replica set {new} from 0 to 2")
    d = cluster_mod.eventually(lambda: (d := c.json("-n", ns, "get", "deploy", "rec"))
                               and _condition(d, "Progressing").get("reason") == "ProgressDeadlineExceeded" and d, timeout=8)
    assert _condition(d, "Progressing")["message"] == f'ReplicaSet "{new}" has timed out progressing.'
    cp = c.kubectl("-n", ns, "rollout", "status", "deploy/rec", "--timeout=5s", check=False)
    assert cp.returncode == 1 and 'deployment "rec" exceeded its progress deadline' in cp.stderr


def test_replicaset_adopts_and_releases_and_rc_works(cluster: cluster_mod.Cluster) -> None:
    """A ReplicaSet adopts matching orphan pods, releases relabelled ones; a ReplicationController keeps its count."""
    c, ns = cluster, "wl-rs"
    c.kubectl("create", "namespace", ns)
    orphan = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "orphan", "labels": {"app": "solo"}},
              "spec": {"nodeSelector": NOWHERE, "containers": [{"name": "c", "image": "busybox"}]}}
    c.kubectl("-n", ns, "create", "-f", "-", input=json.dumps(orphan))
    rs = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "solo"},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "solo"}},
                   "template": {"metadata": {"labels": {"app": "solo"}},
                                "spec": {"nodeSelector": NOWHERE, "containers": [{"name": "c", "image": "busybox"}]}}}}
    c.kubectl("-n", ns, "create", "-f", "-", input=json.dumps(rs))
    cluster_mod.eventually(lambda: len(_pods(c, ns, "solo")) == 2
                           and all(p["metadata"].get("ownerReferences") for p in _pods(c, ns, "solo")))
    pod = c.json("-n", ns, "get", "pod", "orphan")
    assert pod["metadata"]["ownerReferences"][0]["name"] == "solo"
    c.kubectl("-n", ns, "label", "pod", "orphan", "app=gone", "--overwrite")
    cluster_mod.eventually(lambda: not c.json("-n", ns, "get", "pod", "orphan")["metadata"].get("ownerReferences"))
    cluster_mod.eventually(lambda: len(_pods(c, ns, "solo")) == 2)
    st = cluster_mod.eventually(lambda: (r := c.json("-n", ns, "get", "rs", "solo")) and r["status"].get("replicas") == 2
                                and r["status"].get("observedGeneration") == 1 and r["status"])
    assert st["fullyLabeledReplicas"] == 2
    assert "SuccessfulCreate" in c.kubectl("-n", ns, "describe", "rs", "solo").stdout
    rc = {"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "rc"},
          "spec": {"replicas": 2, "selector": {"app": "rc"},
                   "template": {"metadata": {"labels": {"app": "rc"}},
                                "spec": {"nodeSelector": NOWHERE, "containers": [{"name": "c", "image": "busybox"}]}}}}
    c.kubectl("-n", ns, "create", "-f", "-", input=json.dumps(rc))
    cluster_mod.eventually(lambda: len(_pods(c, ns, "rc")) == 2)
    victim = _pods(c, ns, "rc")[0]["metadata"]["name"]
    c.kubectl("-n", ns, "delete", "pod", victim, "--wait=false")
    cluster_mod.eventually(lambda: (names := [p["metadata"]["name"] for p in _pods(c, ns, "rc")])
                           and len(names) == 2 and victim not in names)
    assert "replication-controller" in c.kubectl("-n", ns, "describe", "rc", "rc").stdout
