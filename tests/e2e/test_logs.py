"""End to end: kubectl logs reads process-runtime pods through the API server and the node's kubelet API."""

from __future__ import annotations

import json
import re
from typing import Any

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z"



def _run(cluster: cluster_mod.Cluster, name: str, script: str, **spec: Any) -> None:
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
           "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", script]}],
                    **spec}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))


def _logs_once(cluster: cluster_mod.Cluster, *args: str, want: str) -> str:
    def check() -> str | None:
        got = cluster.kubectl("logs", *args, check=False)
        return got.stdout if got.returncode == 0 and want in got.stdout else None
    return cluster_mod.eventually(check, what=f"logs {args} showing {want!r}")


def test_logs_tail_timestamps_and_errors(cluster: cluster_mod.Cluster, agent: None) -> None:
    """Logs come back whole, tailed, timestamped; a wrong container or a missing previous run is a 400."""
    _run(cluster, "printer", "echo one; echo two; echo three; exec sleep 3600")
    assert _logs_once(cluster, "printer", want="three") == "one\ntwo\nthree\n"
    assert cluster.kubectl("logs", "printer", "--tail=1").stdout == "three\n"
    stamped = cluster.kubectl("logs", "printer", "--timestamps").stdout.splitlines()
    assert [re.fullmatch(STAMP + r" (\w+)", line).group(2) for line in stamped] == ["one", "two", "three"]  # type: ignore[union-attr]
    assert cluster.kubectl("logs", "printer", "--since=1h").stdout == "one\ntwo\nthree\n"
    assert cluster.kubectl("logs", "printer", "--limit-bytes=5").stdout == "one\nt"
    wrong = cluster.kubectl("logs", "printer", "-c", "wrong", check=False)
    assert wrong.returncode != 0 and "container wrong is not valid for pod printer" in wrong.stderr
    prev = cluster.kubectl("logs", "printer", "--previous", check=False)
    assert prev.returncode != 0
    assert 'previous terminated container "main" in pod "printer" not found' in prev.stderr
    port = cluster.kubectl("get", "node", NODE, "-o", "jsonpath={.status.daemonEndpoints.kubeletEndpoint.Port}").stdout
    assert port.isdigit() and port != "10250"


def test_follow_streams_until_the_container_exits(cluster: cluster_mod.Cluster, agent: None) -> None:
    """kubectl logs -f prints lines as they come and returns once the container's process has exited."""
    _run(cluster, "follower", "echo a; sleep 1; echo b; sleep 1; echo c", restartPolicy="Never")
    _logs_once(cluster, "follower", want="a")
    got = cluster.kubectl("logs", "-f", "follower", timeout=15)
    assert got.stdout == "a\nb\nc\n"


# A container that says "before" once, then a line with the time it is written every 0.25 s.
_STAMPER = ("import time\nprint('before', flush=True)\n"
            "while True:\n    print('at %.6f' % time.time(), flush=True)\n    time.sleep(0.25)\n")


def test_follow_shows_each_line_as_it_is_written(cluster: cluster_mod.Cluster, agent: None) -> None:
    """kubectl logs -f shows each line within 0.3 s of the container writing it (the log pump wakes the follow)."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stamper"},
           "spec": {"nodeName": NODE, "restartPolicy": "Never", "terminationGracePeriodSeconds": 0,
                    "containers": [{"name": "main", "image": "python:3.11",
                                    "command": ["python3", "-u", "-c", _STAMPER]}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    _logs_once(cluster, "stamper", want="before")
    try:
        out, seen = cluster.stamped_stream("logs", "-f", "stamper", stamp=rb"at (\d+\.\d+)\n")
    finally:
        cluster.kubectl("delete", "pod", "stamper", "--wait=false")
    assert len(seen) >= 8, out
    assert out.startswith(b"before\n")
    # Lines already in the log when the follow began arrive with its first read: only later ones are timed.
    first = min(seen.values())
    late = {round(at - written, 3) for written, at in seen.items() if at > first and at - written > 0.3}
    assert not late, f"lines that took over 0.3 s to arrive: {sorted(late)}"


def test_previous_after_a_restart(cluster: cluster_mod.Cluster, agent: None) -> None:
    """After a restart, --previous shows the run before the current one."""
    _run(cluster, "restarter", "echo run $$$$; exit 1")  # $$ escapes a $ in kube commands
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "restarter", "-o",
                                                   "jsonpath={.status.containerStatuses[0].restartCount}").stdout
                           not in ("", "0"), what="a restart")
    current = cluster.kubectl("logs", "restarter").stdout
    previous = cluster.kubectl("logs", "restarter", "--previous").stdout
    assert re.fullmatch(r"run \d+\n", current) and re.fullmatch(r"run \d+\n", previous)
    assert current != previous


def test_container_choice_and_unstarted_pods(cluster: cluster_mod.Cluster, agent: None) -> None:
    """The raw API wants a container for multi-container pods; a pod not yet on a node is waiting to start."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pair"},
           "spec": {"nodeName": NODE, "containers": [
               {"name": "a", "image": "busybox", "command": ["sh", "-c", "echo from-a; exec sleep 3600"]},
               {"name": "b", "image": "busybox", "command": ["sh", "-c", "echo from-b; exec sleep 3600"]}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pod))
    raw = cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/pair/log", check=False)
    assert "a container name must be specified for pod pair, choose one of: [a b]" in raw.stderr
    assert _logs_once(cluster, "pair", "-c", "b", want="from-b") == "from-b\n"
    pending = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "pending"},
               "spec": {"nodeSelector": {"no-such": "node"},
                        "containers": [{"name": "main", "image": "busybox", "command": ["true"]}]}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(pending))
    got = cluster.kubectl("logs", "pending", check=False)
    assert got.returncode != 0
    assert 'container "main" in pod "pending" is waiting to start: ContainerCreating' in got.stderr
    missing = cluster.kubectl("logs", "nosuchpod", check=False)
    assert 'pods "nosuchpod" not found' in missing.stderr
