"""End to end: kubectl exec, attach and cp into process-runtime pods, through the API server and the kubelet API."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import pty
import shutil
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod

NODE = cluster_mod.PROCESS_NODE
OLD = 27  # kubectl 1.27 speaks SPDY/3.1 only; 1.30+ try websockets (v5.channel.k8s.io) first


def _apply(cluster: cluster_mod.Cluster, *objs: dict[str, Any]) -> None:
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objs)}))


def _pod(name: str, *containers: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"nodeName": NODE, "containers": list(containers), **spec}}


def _sleeper(name: str = "main", **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", "command": ["sh", "-c", "exec sleep 3600"], **extra}


def _running(cluster: cluster_mod.Cluster, name: str) -> None:
    cluster_mod.eventually(lambda: cluster.kubectl("exec", name, "--", "true", check=False).returncode == 0,
                           what=f"exec into {name}")


def test_exec_sees_the_container_and_returns_its_exit_code(cluster: cluster_mod.Cluster, agent: str) -> None:
    """exec runs in the container's mount namespace with its env and working dir; exit codes come back."""
    _apply(cluster,
           {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "exec-cfg"}, "data": {"key": "from-config"}},
           _pod("shell", _sleeper(env=[{"name": "GREETING", "value": "hi"}], workingDir="/etc/config",
                                  volumeMounts=[{"name": "cfg", "mountPath": "/etc/config"}]),
                volumes=[{"name": "cfg", "configMap": {"name": "exec-cfg"}}]))
    _running(cluster, "shell")
    assert cluster.kubectl("exec", "shell", "--", "cat", "/etc/config/key").stdout == "from-config"
    got = cluster.kubectl("exec", "shell", "--", "sh", "-c", "echo $GREETING; pwd; echo oops >&2; exit 3", check=False)
    assert (got.returncode, got.stdout) == (3, "hi\n/etc/config\n")
    assert "oops\ncommand terminated with exit code 3" in got.stderr
    piped = cluster.kubectl("exec", "-i", "shell", "--", "sh", "-c", "cat; echo end", input="line one\nline two\n")
    assert piped.stdout == "line one\nline two\nend\n"
    missing = cluster.kubectl("exec", "shell", "--", "no-such-command", check=False)
    assert missing.returncode == 1
    assert "error: Internal error occurred: error executing command in container: failed to exec in container: " \
           "failed to start exec" in missing.stderr
    assert 'exec: "no-such-command": executable file not found in $PATH: unknown' in missing.stderr


def test_container_choice_and_refusals(cluster: cluster_mod.Cluster, agent: str) -> None:
    """-c picks a container; a wrong one, an unscheduled pod or a stopped container get kube's errors."""
    _apply(cluster,
           _pod("pair", _sleeper("a"), _sleeper("b", env=[{"name": "WHO", "value": "b"}])),
           _pod("crasher", {"name": "main", "image": "busybox", "command": ["sh", "-c", "exit 1"]},
                restartPolicy="Never"),
           {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "unscheduled"},
            "spec": {"nodeSelector": {"no-such": "node"}, "containers": [_sleeper()]}})
    cluster_mod.eventually(lambda: cluster.kubectl("exec", "pair", "-c", "b", "--", "true", check=False).returncode == 0,
                           what="exec into pair")
    assert cluster.kubectl("exec", "pair", "-c", "b", "--", "sh", "-c", "echo $WHO").stdout == "b\n"
    raw = cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/pair/exec?command=true&stdout=true",
                          check=False)
    assert "a container name must be specified for pod pair, choose one of: [a b]" in raw.stderr
    wrong = cluster.kubectl("exec", "pair", "-c", "nope", "--", "true", check=False)
    assert wrong.returncode == 1 and "Error from server (BadRequest): container nope is not valid for pod pair" \
        in wrong.stderr
    pending = cluster.kubectl("exec", "unscheduled", "--", "true", check=False)
    assert "Error from server (BadRequest): pod unscheduled does not have a host assigned" in pending.stderr
    no_upgrade = cluster.kubectl("get", "--raw", "/api/v1/namespaces/default/pods/pair/exec?container=a&command=true"
                                 "&stdout=true", check=False)
    assert "Upgrade request required" in no_upgrade.stderr
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "crasher", "-o", "jsonpath={.status.phase}").stdout
                           == "Failed", what="the crasher to fail")
    # kubectl itself refuses pods that have completed.
    done = cluster.kubectl("exec", "crasher", "--", "true", check=False)
    assert "cannot exec into a container in a completed pod; current phase is Failed" in done.stderr


def test_stopped_container_is_not_found(cluster: cluster_mod.Cluster, agent: str) -> None:
    """A container in back-off has no process: the kubelet's "container not found" reaches kubectl."""
    _apply(cluster, _pod("looper", {"name": "main", "image": "busybox", "command": ["sh", "-c", "exit 1"]}))
    cluster_mod.eventually(lambda: "CrashLoopBackOff" in cluster.kubectl("get", "pod", "looper").stdout,
                           what="back-off")
    for minor in (None, OLD):
        got = cluster.kubectl("exec", "looper", "--", "true", check=False, minor=minor)
        assert got.returncode == 1
        assert 'error: unable to upgrade connection: container not found ("main")' in got.stderr


def test_attach_follows_the_output(cluster: cluster_mod.Cluster, agent: str) -> None:
    """attach relays what the container writes from then on and returns when it exits."""
    script = "sleep 2; for i in 1 2 3; do echo tick $i; sleep 0.2; done"
    _apply(cluster, _pod("ticker", {"name": "main", "image": "busybox", "command": ["sh", "-c", script]},
                         restartPolicy="Never"))
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "ticker", "-o", "jsonpath={.status.phase}").stdout
                           == "Running", what="ticker running")
    got = cluster.kubectl("attach", "ticker", timeout=30)
    assert "tick 1\ntick 2\ntick 3\n" in got.stdout


# A container that says "before" once, then every 0.25 s when it writes, with no line end after it.
_STAMPER = ("import sys, time\nprint('before', flush=True)\n"
            "while True:\n    sys.stdout.write('at %.6f ' % time.time())\n    sys.stdout.flush()\n    time.sleep(0.25)\n")


@pytest.mark.parametrize("minor", [None, OLD])
def test_attach_streams_output_as_it_is_written(cluster: cluster_mod.Cluster, agent: str, minor: int | None) -> None:
    """attach (websocket and SPDY) shows each write within 0.3 s, line end or not, and nothing written before it."""
    name = f"stamper-{minor or 'ws'}"
    _apply(cluster, _pod(name, {"name": "main", "image": "python:3.11", "command": ["python3", "-u", "-c", _STAMPER]},
                         restartPolicy="Never", terminationGracePeriodSeconds=0))
    cluster_mod.eventually(lambda: "before" in cluster.kubectl("logs", name, check=False).stdout,
                           what=f"{name} to have written")
    try:
        out, seen = cluster.stamped_stream("attach", name, stamp=rb"at (\d+\.\d+) ", minor=minor)
    finally:
        cluster.kubectl("delete", "pod", name, "--wait=false")
    assert len(seen) >= 8, out
    assert b"before" not in out
    late = {round(at - written, 3) for written, at in seen.items() if at - written > 0.3}
    assert not late, f"writes that took over 0.3 s to arrive: {sorted(late)}"


def needs_busybox(test: Callable[..., None]) -> Callable[..., None]:
    """Fail loudly (scripts/setup installs it) when the busybox image's host program is missing."""
    @functools.wraps(test)
    def checked(*args: Any, **kwargs: Any) -> None:
        assert shutil.which("busybox"), "the busybox image needs the busybox program: apt-get install busybox"
        test(*args, **kwargs)
    return checked


@needs_busybox
def test_run_interactive_with_piped_input(cluster: cluster_mod.Cluster, agent: str) -> None:
    """kubectl run -i --rm: the container reads the piped input (stdinOnce closes it), then the pod is deleted."""
    for name, minor in (("piped", None), ("piped-old", OLD)):
        got = cluster.kubectl("run", "-i", "--rm", "--restart=Never", "--image=busybox", name, "--",
                              "sh", "-c", "read x; echo got $x; cat; echo eof", input="hello\nmore\n", minor=minor,
                              timeout=60)
        assert got.stdout == f'got hello\nmore\neof\npod "{name}" deleted\n', got.stderr
        assert cluster.kubectl("get", "pod", name, check=False).returncode == 1


@needs_busybox
@pytest.mark.parametrize("minor", [None, OLD])
def test_attach_keeps_stderr_apart(cluster: cluster_mod.Cluster, agent: str, minor: int | None) -> None:
    """attach -i (websocket and SPDY) to a container without a tty: its stderr reaches kubectl's stderr, its
    stdout kubectl's stdout, and kubectl logs shows both streams in the order written."""
    name = f"split-{minor or 'ws'}"
    script = "read go; echo out 1; echo err 1 >&2; sleep 0.3; echo out 2; echo err 2 >&2"
    _apply(cluster, _pod(name, {"name": "main", "image": "busybox", "stdin": True, "command": ["sh", "-c", script]},
                         restartPolicy="Never"))
    cluster.kubectl("wait", "--for=condition=Ready", f"pod/{name}", "--timeout=30s")
    got = cluster.kubectl("attach", "-i", name, input="\n", minor=minor, timeout=30)
    assert got.stdout == "out 1\nout 2\n", got.stderr
    assert "err 1\nerr 2\n" in got.stderr and "out" not in got.stderr
    lines = cluster.kubectl("logs", name).stdout.splitlines()
    assert (sorted(lines[:2]), sorted(lines[2:])) == (["err 1", "out 1"], ["err 2", "out 2"])


@needs_busybox
def test_attach_without_stdin_keeps_stderr_apart(cluster: cluster_mod.Cluster, agent: str) -> None:
    """Plain attach (no -i) relays the container's stderr to kubectl's stderr, its stdout to kubectl's stdout."""
    script = "sleep 2; for i in 1 2 3; do echo tick $i; echo tock $i >&2; sleep 0.2; done"
    _apply(cluster, _pod("ticktock", {"name": "main", "image": "busybox", "command": ["sh", "-c", script]},
                         restartPolicy="Never"))
    cluster_mod.eventually(lambda: cluster.kubectl("get", "pod", "ticktock", "-o",
                                                   "jsonpath={.status.phase}").stdout == "Running",
                           what="ticktock running")
    got = cluster.kubectl("attach", "ticktock", timeout=30)
    assert got.stdout.endswith("tick 1\ntick 2\ntick 3\n") and "tock" not in got.stdout, got.stdout
    assert "tock 1\ntock 2\ntock 3\n" in got.stderr and "tick" not in got.stderr, got.stderr


@needs_busybox
def test_run_interactive_keeps_stderr_apart(cluster: cluster_mod.Cluster, agent: str) -> None:
    """kubectl run -i --rm: what the container writes to stderr comes out on kubectl's stderr only."""
    got = cluster.kubectl("run", "-i", "--rm", "--restart=Never", "--image=busybox", "runerr", "--",
                          "sh", "-c", "read x; echo got $x; echo warn $x >&2", input="hello\n", timeout=60)
    assert got.stdout == 'got hello\npod "runerr" deleted\n', got.stderr
    assert "warn hello\n" in got.stderr


def test_attach_stdin_to_a_running_pod(cluster: cluster_mod.Cluster, agent: str) -> None:
    """attach -i feeds a stdin: true container; without stdinOnce its stdin stays open for the next attach."""
    script = 'while read l; do echo "got $l"; [ "$l" = quit ] && exit 0; done; echo closed'
    _apply(cluster, _pod("reader", {"name": "main", "image": "busybox", "stdin": True, "command": ["sh", "-c", script]},
                         restartPolicy="Never"))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/reader", "--timeout=30s")
    env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, KUBECACHEDIR=os.path.join(cluster.data_dir, "kcache"))
    first = subprocess.Popen([cluster_mod.kubectl_binary(OLD), "attach", "-i", "reader"], env=env,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert first.stdin is not None and first.stdout is not None
        first.stdin.write(b"one\n")
        first.stdin.flush()
        assert first.stdout.readline() == b"got one\n"
    finally:
        first.kill()  # the client leaves; the container's stdin stays open
        first.wait()
    got = cluster.kubectl("attach", "-i", "reader", input="two\nquit\n", timeout=30)
    assert got.stdout == "got two\ngot quit\n"
    assert cluster.kubectl("logs", "reader").stdout == "got one\ngot two\ngot quit\n"


def test_attach_to_a_container_without_stdin(cluster: cluster_mod.Cluster, agent: str) -> None:
    """attach -it to a container without a tty gets kubectl's warning; its input goes nowhere, output still comes."""
    script = "for i in 1 2 3 4 5 6 7 8; do echo tick; sleep 0.5; done; cat; echo end"
    _apply(cluster, _pod("deaf", {"name": "main", "image": "busybox", "command": ["sh", "-c", script]},
                         restartPolicy="Never"))
    cluster.kubectl("wait", "--for=condition=Ready", "pod/deaf", "--timeout=30s")
    got = cluster.kubectl("attach", "-it", "deaf", input="ignored\n", timeout=30)
    assert "error: Unable to use a TTY - container main did not allocate one" in got.stderr
    assert "tick\n" in got.stdout and got.stdout.endswith("end\n") and "ignored" not in got.stdout


@needs_busybox
def test_run_with_a_terminal(cluster: cluster_mod.Cluster, agent: str) -> None:
    """kubectl run -it --rm gives the shell a terminal: it echoes, knows its size, and exit ends the session."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: kubectl on a terminal of 100x30
        env = dict(os.environ, KUBECONFIG=cluster.kubeconfig, KUBECACHEDIR=os.path.join(cluster.data_dir, "kcache"))
        os.execve(cluster_mod.kubectl_binary(), ["kubectl", "run", "-it", "--rm", "--restart=Never",
                                                 "--image=busybox", "term", "--", "sh"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    try:
        out = cluster_mod.read_until(fd, b"/ # ", timeout=30)
        sent = time.monotonic()
        os.write(fd, b"e")  # the terminal echoes a keystroke at once, not at the next line end
        out += cluster_mod.read_until(fd, b"e", timeout=5)  # after the prompt busybox may ask where the cursor is (ESC [6n)
        assert time.monotonic() - sent < 0.3, out
        os.write(fd, b"cho sum-$((40+2)); stty size; tty\r")
        out += cluster_mod.read_until(fd, b"/dev/pts/", timeout=10)
        os.write(fd, b"exit\r")
        out += cluster_mod.read_until(fd, b'pod "term" deleted', timeout=30)
    finally:
        os.close(fd)
        os.waitpid(pid, 0)
    text = out.decode(errors="replace")
    assert "sum-42\r\n30 100\r\n/dev/pts/" in text, text


def test_cp_both_ways(cluster: cluster_mod.Cluster, agent: str, tmp_path: Any) -> None:
    """kubectl cp copies files and directories into a container and back out (tar through exec)."""
    _apply(cluster, _pod("files", _sleeper(volumeMounts=[{"name": "scratch", "mountPath": "/scratch"}]),
                         volumes=[{"name": "scratch", "emptyDir": {}}]))
    _running(cluster, "files")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "sub").mkdir()
    (tmp_path / "in" / "a.txt").write_text("alpha\n")
    (tmp_path / "in" / "sub" / "b.txt").write_text("beta\n")
    cluster.kubectl("cp", str(tmp_path / "in" / "a.txt"), "files:/scratch/a.txt")
    cluster.kubectl("cp", str(tmp_path / "in"), "files:/scratch/dir")
    listing = cluster.kubectl("exec", "files", "--", "sh", "-c", "cd /scratch && find . -type f | sort").stdout
    assert listing == "./a.txt\n./dir/a.txt\n./dir/sub/b.txt\n"
    cluster.kubectl("cp", "files:/scratch/dir", str(tmp_path / "out"))
    assert (tmp_path / "out" / "sub" / "b.txt").read_text() == "beta\n"
    cluster.kubectl("cp", "files:/scratch/a.txt", str(tmp_path / "a-back.txt"), minor=OLD)
    assert (tmp_path / "a-back.txt").read_text() == "alpha\n"
    assert not os.path.exists("/scratch/a.txt")  # the files went into the pod's volume, not the host


def test_old_kubectl_over_spdy(cluster: cluster_mod.Cluster, agent: str) -> None:
    """kubectl 1.27 (SPDY/3.1 only) gets the same exec: output, exit codes, piped stdin, errors."""
    _apply(cluster, _pod("old", _sleeper()))
    _running(cluster, "old")
    got = cluster.kubectl("exec", "old", "--", "sh", "-c", "echo out; echo err >&2; exit 4", check=False, minor=OLD)
    assert (got.returncode, got.stdout) == (4, "out\n") and "err\ncommand terminated with exit code 4" in got.stderr
    assert cluster.kubectl("exec", "-i", "old", "--", "wc", "-l", input="a\nb\n", minor=OLD).stdout.strip() == "2"
    missing = cluster.kubectl("exec", "old", "-c", "nope", "--", "true", check=False, minor=OLD)
    assert "container nope is not valid for pod old" in missing.stderr
