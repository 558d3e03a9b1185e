"""End to end: the workload items of issue 3 no other e2e file exercised, on a process node with the real kubectl."""

from __future__ import annotations

import json
import re
import socket
import time
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE

ENV_OBJECTS = """
apiVersion: v1
kind: ConfigMap
metadata: {name: gaps-cfg}
data: {color: blue, size: L}
---
apiVersion: v1
kind: Secret
metadata: {name: gaps-sec}
stringData: {password: s3cret, token: tkn}
"""

ENV_SCRIPT = """
pwd
echo "COLOR=$COLOR PASS=$PASS POD=$POD_NAME NS=$POD_NS NODE=$NODE MEM=$MEM CPU=$CPU"
echo "IP=$POD_IP IPS=$POD_IPS HOST=$HOST_IP"
echo "size=$size token=$token CFG_color=$CFG_color"
stat -L -c '%a %n' /etc/sec/pw /etc/sec-all/password
cat /etc/sec/pw; echo
cat /etc/dapi/labels; echo
cat /etc/dapi/name; echo
cat /etc/proj/color; echo
cat /etc/proj/podname; echo
ls /etc/proj
"""


def _pod(name: str, containers: list[dict[str, Any]], **spec: Any) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": name}},
                       "spec": {"nodeName": NODE, "containers": containers, **spec}})


def _phase(c: cluster_mod.Cluster, pod: str) -> str:
    return c.kubectl("get", "pod", pod, "-o", "jsonpath={.status.phase}").stdout


def _events(c: cluster_mod.Cluster, pod: str) -> list[tuple[str, str]]:
    out = c.json("get", "events", "--field-selector", f"involvedObject.name={pod}")["items"]
    return [(e["reason"], e["message"]) for e in out]


def test_env_sources_and_volume_files(cluster: cluster_mod.Cluster, agent: str) -> None:
    """valueFrom, envFrom, workingDir, secret items and modes, downwardAPI and projected volumes reach the process."""
    c = cluster
    c.kubectl("apply", "-f", "-", input=ENV_OBJECTS)
    container = {
        "name": "main", "image": "busybox", "workingDir": "/work/here", "command": ["sh", "-c", ENV_SCRIPT],
        "env": [
            {"name": "COLOR", "valueFrom": {"configMapKeyRef": {"name": "gaps-cfg", "key": "color"}}},
            {"name": "PASS", "valueFrom": {"secretKeyRef": {"name": "gaps-sec", "key": "password"}}},
            {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "POD_NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "POD_IPS", "valueFrom": {"fieldRef": {"fieldPath": "status.podIPs"}}},
            {"name": "HOST_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.hostIP"}}},
            {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
            {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "requests.cpu", "divisor": "1m"}}}],
        "envFrom": [{"configMapRef": {"name": "gaps-cfg"}}, {"prefix": "CFG_", "configMapRef": {"name": "gaps-cfg"}},
                    {"secretRef": {"name": "gaps-sec"}}],
        "resources": {"requests": {"cpu": "50m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
        "volumeMounts": [{"name": "sec", "mountPath": "/etc/sec"}, {"name": "sec-all", "mountPath": "/etc/sec-all"},
                         {"name": "dapi", "mountPath": "/etc/dapi"}, {"name": "proj", "mountPath": "/etc/proj"}]}
    volumes = [
        {"name": "sec", "secret": {"secretName": "gaps-sec", "items": [{"key": "password", "path": "pw", "mode": 0o400}]}},
        {"name": "sec-all", "secret": {"secretName": "gaps-sec", "defaultMode": 0o440}},
        {"name": "dapi", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                   {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}}]}},
        {"name": "proj", "projected": {"sources": [
            {"configMap": {"name": "gaps-cfg", "items": [{"key": "color", "path": "color"}]}},
            {"downwardAPI": {"items": [{"path": "podname", "fieldRef": {"fieldPath": "metadata.name"}}]}},
            {"secret": {"name": "gaps-sec", "items": [{"key": "token", "path": "tok"}]}}]}}]
    c.kubectl("apply", "-f", "-", input=_pod("envpod", [container], restartPolicy="Never", volumes=volumes))
    cluster_mod.eventually(lambda: _phase(c, "envpod") in ("Succeeded", "Failed"), timeout=20)
    pod = c.json("get", "pod", "envpod")
    ip, host = pod["status"]["podIP"], pod["status"]["hostIP"]
    assert pod["status"]["podIPs"] == [{"ip": ip}] and pod["status"]["hostIPs"] == [{"ip": host}]
    assert pod["status"]["startTime"] and pod["status"]["qosClass"] == "Burstable"
    assert _phase(c, "envpod") == "Succeeded", c.kubectl("logs", "envpod").stdout
    assert c.kubectl("logs", "envpod").stdout.splitlines() == [
        "/work/here",
        f"COLOR=blue PASS=s3cret POD=envpod NS=default NODE={NODE} MEM=64 CPU=50",
        # The first start comes before the first status write: the IPs still reach the environment.
        f"IP={ip} IPS={ip} HOST={host}",
        "size=L token=tkn CFG_color=blue",
        "400 /etc/sec/pw", "440 /etc/sec-all/password",
        "s3cret", 'app="envpod"', "envpod", "blue", "envpod",
        "color", "podname", "tok"]
    c.kubectl("delete", "pod", "envpod", "--wait=false")


def test_init_containers_run_in_order_beside_a_sidecar(cluster: cluster_mod.Cluster, agent: str) -> None:
    """Init containers run one after another, a sidecar keeps running, and the main container starts last."""
    c = cluster

    def step(name: str, line: str, **extra: Any) -> dict[str, Any]:
        return {"name": name, "image": "busybox", "command": ["sh", "-c", line],
                "volumeMounts": [{"name": "s", "mountPath": "/shared"}], **extra}
    body = json.loads(_pod("inits", [step("main", "echo main >> /shared/order; cat /shared/order; sleep 3600")],
                           terminationGracePeriodSeconds=1, volumes=[{"name": "s", "emptyDir": {}}]))
    body["spec"]["initContainers"] = [
        step("one", "echo one >> /shared/order; sleep 3"),
        step("side", "echo side >> /shared/order; sleep 3600", restartPolicy="Always"),
        # The kubelet starts "two" once the sidecar runs, which may be before the sidecar's own first write.
        step("two", "until grep -q side /shared/order; do sleep 0.05; done; echo two >> /shared/order")]
    c.kubectl("apply", "-f", "-", input=json.dumps(body))
    # While the first init container runs the pod reads Init:0/3, and its main container has no log yet.
    cluster_mod.eventually(lambda: c.kubectl("get", "pod", "inits", "--no-headers").stdout.split()[2] == "Init:0/3",
                           every=0.1)
    early = c.kubectl("logs", "inits", "-c", "main", check=False)
    assert early.stderr.strip() == ('Error from server (BadRequest): container "main" in pod "inits" is waiting to '
                                    'start: PodInitializing')
    conds = {x["type"]: x for x in c.json("get", "pod", "inits")["status"]["conditions"]}
    assert (conds["Initialized"]["status"], conds["Initialized"]["reason"]) == ("False", "ContainersNotInitialized")
    cluster_mod.eventually(lambda: c.kubectl("logs", "inits", "-c", "main", check=False).stdout == "one\nside\ntwo\nmain\n",
                           timeout=20, what="the main container's log")
    def both_ready() -> Any:
        r = c.kubectl("get", "pod", "inits", "--no-headers").stdout.split()
        return r[1] == "2/2" and r
    row = cluster_mod.eventually(both_ready)
    assert row[2] == "Running"
    pod = c.json("get", "pod", "inits")
    states = {s["name"]: (next(iter(s["state"])), s["ready"]) for s in pod["status"]["initContainerStatuses"]}
    assert states == {"one": ("terminated", True), "side": ("running", True), "two": ("terminated", True)}
    c.kubectl("delete", "pod", "inits", "--wait=false")


def test_termination_messages(cluster: cluster_mod.Cluster, agent: str) -> None:
    """The message file at terminationMessagePath (any path) and FallbackToLogsOnError's log tail land in the status."""
    c = cluster
    containers = [
        {"name": "file", "image": "busybox", "command": ["sh", "-c", "echo custom-msg > /dev/termination-log; exit 2"]},
        {"name": "logs", "image": "busybox", "terminationMessagePolicy": "FallbackToLogsOnError",
         "command": ["sh", "-c", "for i in $(seq 1 100); do echo line-$i; done; exit 5"]},
        {"name": "path", "image": "busybox", "terminationMessagePath": "/tmp/gaps-msg",
         "command": ["sh", "-c", "echo at-path > /tmp/gaps-msg"]},
        {"name": "quiet", "image": "busybox", "terminationMessagePolicy": "FallbackToLogsOnError",
         "command": ["sh", "-c", "echo fine"]}]
    c.kubectl("apply", "-f", "-", input=_pod("termmsg", containers, restartPolicy="Never"))
    cluster_mod.eventually(lambda: _phase(c, "termmsg") == "Failed", timeout=20)
    got = {s["name"]: s["state"]["terminated"] for s in c.json("get", "pod", "termmsg")["status"]["containerStatuses"]}
    assert (got["file"]["exitCode"], got["file"]["message"]) == (2, "custom-msg\n")
    # The kubelet keeps the last 80 lines of the log.
    assert got["logs"]["message"] == "".join(f"line-{i}\n" for i in range(21, 101))
    assert (got["path"]["reason"], got["path"]["message"]) == ("Completed", "at-path\n")
    assert "message" not in got["quiet"]
    c.kubectl("delete", "pod", "termmsg", "--wait=false")


def test_missing_command_is_a_start_error_in_back_off(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A command that does not exist ends as StartError (exit 128) with the Failed event, then CrashLoopBackOff."""
    c = cluster
    c.kubectl("apply", "-f", "-", input=_pod("nocmd", [{"name": "main", "image": "busybox",
                                                         "command": ["no-such-binary-here"]}]))
    cs = cluster_mod.eventually(lambda: (s := (c.json("get", "pod", "nocmd")["status"].get("containerStatuses")
                                               or [{}])[0]) and s.get("lastState", {}).get("terminated") and s,
                                timeout=20)
    last = cs["lastState"]["terminated"]
    want = ('failed to create containerd task: failed to create shim task: OCI runtime create failed: runc create '
            'failed: unable to start container process: exec: "no-such-binary-here": executable file not found in '
            '$PATH: unknown')
    assert (last["reason"], last["exitCode"], last["message"]) == ("StartError", 128, want)
    cluster_mod.eventually(lambda: "CrashLoopBackOff" in c.kubectl("get", "pod", "nocmd").stdout, timeout=20)
    assert ("Failed", f"Error: {want}") in _events(c, "nocmd")
    assert any(r == "BackOff" for r, _ in _events(c, "nocmd"))
    c.kubectl("delete", "pod", "nocmd", "--wait=false")


def test_grace_period_ends_with_sigkill(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A container ignoring SIGTERM is killed once terminationGracePeriodSeconds is over, not before."""
    c = cluster
    script = ("import signal, time\nsignal.signal(signal.SIGTERM, lambda *a: print('got TERM', flush=True))\n"
              "open('/tmp/gaps-armed', 'w').close()\nprint('up', flush=True)\ntime.sleep(3600)")
    c.kubectl("apply", "-f", "-", input=_pod("stubborn", [{"name": "main", "image": "python:3.11",
                                                            "command": ["python3", "-c", script]}],
                                             terminationGracePeriodSeconds=3))
    cluster_mod.eventually(lambda: c.kubectl("logs", "stubborn", check=False).stdout == "up\n", timeout=20)
    start = time.monotonic()
    c.kubectl("delete", "pod", "stubborn", "--wait=true", timeout=30)
    took = time.monotonic() - start
    assert 2.5 <= took < 8, took
    events = _events(c, "stubborn")
    assert ("Killing", "Stopping container main") in events
    for kubelet_event in (("Pulled", 'Container image "python:3.11" already present on machine'),
                          ("Created", "Created container: main"), ("Started", "Started container main")):
        assert kubelet_event in events


def _deploy(name: str, **spec: Any) -> str:
    return json.dumps({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name}, "spec": {
        "replicas": 2, "selector": {"matchLabels": {"app": name}}, **spec,
        "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}})


def test_min_ready_seconds_and_revision_history_limit(cluster: cluster_mod.Cluster, agent: str) -> None:
    """Ready pods count as available only after minReadySeconds; old ReplicaSets beyond the history limit go."""
    c = cluster
    c.kubectl("create", "namespace", "gaps-deploy")
    c.kubectl("-n", "gaps-deploy", "apply", "-f", "-", input=_deploy("h", minReadySeconds=3, revisionHistoryLimit=1))

    def status() -> dict[str, Any]:
        return c.json("-n", "gaps-deploy", "get", "deploy", "h").get("status") or {}
    def all_ready() -> Any:
        s = status()
        return s.get("readyReplicas") == 2 and (s, time.monotonic())
    ready = cluster_mod.eventually(all_ready, timeout=20, every=0.1)
    assert ready[0].get("availableReplicas", 0) == 0
    cluster_mod.eventually(lambda: status().get("availableReplicas") == 2, timeout=10, every=0.1)
    assert time.monotonic() - ready[1] >= 2
    for tag in ("1.35", "1.36"):
        c.kubectl("-n", "gaps-deploy", "set", "image", "deploy/h", f"c=busybox:{tag}")
        c.kubectl("-n", "gaps-deploy", "rollout", "status", "deploy/h", "--timeout=40s", timeout=60)
    def two_sets() -> Any:
        r = c.json("-n", "gaps-deploy", "get", "rs")["items"]
        return len(r) == 2 and r
    rss = cluster_mod.eventually(two_sets, what="one old ReplicaSet beside the new one")
    revisions = sorted(r["metadata"]["annotations"]["deployment.kubernetes.io/revision"] for r in rss)
    assert revisions == ["2", "3"]
    history = c.kubectl("-n", "gaps-deploy", "rollout", "history", "deploy/h").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]


def _sts(name: str, strategy: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": name}, "spec": {
        "replicas": 3, "serviceName": name, "podManagementPolicy": "Parallel", "updateStrategy": strategy,
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}]}}}})


def _images(c: cluster_mod.Cluster, ns: str, app: str) -> dict[str, str]:
    pods = c.json("-n", ns, "get", "pods", "-l", f"app={app}")["items"]
    return {p["metadata"]["name"]: p["spec"]["containers"][0]["image"] for p in pods
            if not p["metadata"].get("deletionTimestamp")}


def test_statefulset_partition_and_on_delete(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A partition updates only ordinals at or above it; OnDelete updates a pod only once it is deleted."""
    c, ns = cluster, "gaps-sts"
    c.kubectl("create", "namespace", ns)
    c.kubectl("-n", ns, "apply", "-f", "-", input=_sts("part", {"type": "RollingUpdate",
                                                                "rollingUpdate": {"partition": 2}}))
    c.kubectl("-n", ns, "apply", "-f", "-", input=_sts("ondel", {"type": "OnDelete"}))
    c.kubectl("-n", ns, "rollout", "status", "sts/part", "--timeout=40s", timeout=60)
    cluster_mod.eventually(lambda: (c.json("-n", ns, "get", "sts", "ondel").get("status") or {})
                           .get("readyReplicas") == 3, timeout=20)
    c.kubectl("-n", ns, "set", "image", "sts/part", "c=busybox:1.36")
    c.kubectl("-n", ns, "set", "image", "sts/ondel", "c=busybox:1.36")
    cluster_mod.eventually(lambda: _images(c, ns, "part") == {"part-0": "busybox", "part-1": "busybox",
                                                              "part-2": "busybox:1.36"}, timeout=20)
    out = c.kubectl("-n", ns, "rollout", "status", "sts/part", "--timeout=20s", timeout=30).stdout
    assert "partitioned roll out complete: 1 new pods have been updated..." in out
    st = c.json("-n", ns, "get", "sts", "part")["status"]
    assert (st["currentReplicas"], st["updatedReplicas"]) == (2, 1) and st["currentRevision"] != st["updateRevision"]
    time.sleep(1)
    assert set(_images(c, ns, "ondel").values()) == {"busybox"}
    c.kubectl("-n", ns, "delete", "pod", "ondel-1")
    cluster_mod.eventually(lambda: _images(c, ns, "ondel") == {"ondel-0": "busybox", "ondel-1": "busybox:1.36",
                                                               "ondel-2": "busybox"}, timeout=20)
    c.kubectl("delete", "namespace", ns, "--wait=false")


def test_cronjob_history_limits(cluster: cluster_mod.Cluster, agent: str) -> None:
    """Each finished Job is "seen completed" once; finished Jobs beyond successfulJobsHistoryLimit are deleted."""
    c, ns = cluster, "gaps-cron"
    c.kubectl("create", "namespace", ns)
    cj = {"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "hist"}, "spec": {
        "schedule": "@every 2s", "successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 1,
        "jobTemplate": {"spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox", "command": ["true"]}]}}}}}}
    c.kubectl("-n", ns, "apply", "-f", "-", input=json.dumps(cj))
    cluster_mod.eventually(lambda: (c.json("-n", ns, "get", "cronjob", "hist").get("status") or {})
                           .get("lastSuccessfulTime"), timeout=30)
    time.sleep(5)  # later ticks of the same minute find that minute's Job (named by the minute) already there
    c.kubectl("-n", ns, "patch", "cronjob", "hist", "--type=merge", "-p", '{"spec":{"suspend":true}}')
    described = c.kubectl("-n", ns, "describe", "cronjob", "hist").stdout
    seen = [line for line in described.splitlines() if "SawCompletedJob" in line]
    assert seen and len(seen) <= 2 and all(not re.search(r"\(x\d+ over", line) for line in seen), described

    def complete() -> list[str]:
        return sorted(j["metadata"]["name"] for j in c.json("-n", ns, "get", "jobs")["items"]
                      if any(x["type"] == "Complete" for x in (j.get("status") or {}).get("conditions") or []))
    c.kubectl("-n", ns, "create", "job", "--from=cronjob/hist", "manual-1")
    cluster_mod.eventually(lambda: complete() == ["manual-1"], timeout=20, what="only manual-1 kept")
    c.kubectl("-n", ns, "create", "job", "--from=cronjob/hist", "manual-2")
    cluster_mod.eventually(lambda: complete() == ["manual-2"], timeout=20, what="only manual-2 kept")
    c.kubectl("delete", "namespace", ns, "--wait=false")


def test_postgres_image_initialises_its_database(cluster: cluster_mod.Cluster, agent: str) -> None:
    """The postgres image runs its entrypoint: initdb with POSTGRES_* on an empty volume, the server as non-root."""
    with socket.socket() as s:   # the agent's pods share the host network: a port of our own
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pg"}, "spec": {
        "containers": [{"name": "pg", "image": "postgres:16", "args": ["-c", f"port={port}"],
                        "env": [{"name": "POSTGRES_PASSWORD", "value": "s3cret"},
                                {"name": "POSTGRES_DB", "value": "shop"}],
                        "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1},
                        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/postgresql/data"}]}],
        "volumes": [{"name": "data", "emptyDir": {}}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/pg", "--timeout=90s", timeout=100)
    got = cluster.kubectl("exec", "pg", "--", "env", "PGPASSWORD=s3cret", "psql", "-h", "127.0.0.1", "-p", str(port),
                          "-U", "postgres", "-d", "shop", "-tAc", "select current_user, 40 + 2")
    assert got.stdout.strip() == "postgres|42"
    bare = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pg-nopass"}, "spec": {
        "restartPolicy": "Never", "containers": [{"name": "pg", "image": "postgres:16"}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(bare))
    cluster_mod.eventually(lambda: cluster.json("get", "pod", "pg-nopass")["status"].get("phase") == "Failed",
                           timeout=60, what="pg-nopass to fail")
    assert "superuser password is not specified" in cluster.kubectl("logs", "pg-nopass").stdout
    cluster.kubectl("delete", "pod", "pg", "pg-nopass", "--wait=true", timeout=90)
