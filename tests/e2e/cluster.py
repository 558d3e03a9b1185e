"""A real `pocketkube up` in a subprocess, and the real kubectl pointed at it, for end-to-end tests."""

from __future__ import annotations

import collections.abc
import contextlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any, TypeVar

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

T = TypeVar("T")


def eventually(check: Callable[[], T], *, timeout: float = 15.0, every: float = 0.2, what: str = "condition") -> T:
    """Poll check until it returns something truthy and return that; fail with its last value after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met in {timeout}s; last value: {got!r}")
        time.sleep(every)


PROCESS_NODE = "pocketkube-node-1"



def read_until(fd: int, marker: bytes, *, timeout: float) -> bytes:
    """What a terminal (pty fd) shows until marker appears, it closes, or timeout seconds pass."""
    out, deadline = b"", time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        if select.select([fd], [], [], 0.2)[0]:
            try:
                data = os.read(fd, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
    return out

@contextlib.contextmanager
def process_node(cluster: Cluster) -> collections.abc.Iterator[str]:
    """A node agent running pods as processes beside the cluster; yields the directory it keeps pods in."""
    log = open(os.path.join(cluster.data_dir, "agent.log"), "a")  # noqa: SIM115 - lives as long as the agent
    proc = subprocess.Popen([sys.executable, "-m", "pocketkube.node.agent", "--kubeconfig", cluster.kubeconfig,
                             "--data-dir", cluster.data_dir, "--nodes", "1", "--process"],
                            cwd=ROOT, stdout=log, stderr=log)
    try:
        eventually(lambda: proc.poll() is not None
                   or cluster.kubectl("get", "node", PROCESS_NODE, check=False).returncode == 0,
                   what="the process node to register")
        assert proc.poll() is None, f"the node agent exited with {proc.returncode}"
        yield os.path.join(cluster.data_dir, "nodes", PROCESS_NODE, "pods")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def kubectl_binary(minor: int | None = None) -> str:
    """The real kubectl: a given minor version from the Google Cloud SDK bundle, or the one on PATH."""
    if minor is not None:
        path = f"/usr/lib/google-cloud-sdk/bin/kubectl.1.{minor}"
        if os.path.exists(path):
            return path
    found = shutil.which("kubectl")
    if not found:
        raise RuntimeError("kubectl is not installed: the end-to-end tests need the real kubectl")
    return found


class Cluster:
    """One running server process with its own data dir and kubeconfig."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.kubeconfig = os.path.join(data_dir, "kubeconfig")
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.log_path = os.path.join(data_dir, "server.log")

    def start(self, *, port: int = 0, timeout: float = 30.0, args: collections.abc.Sequence[str] = ()) -> Cluster:
        os.makedirs(self.data_dir, exist_ok=True)
        log = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the process
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pocketkube", "up", "--data-dir", self.data_dir, "--port", str(port), *args],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"pocketkube up exited with {self.proc.returncode}: {self.log()}")
                continue
            if "is up at" in line:
                self.url = line.split("is up at", 1)[1].split()[0]
                return self
        raise RuntimeError(f"pocketkube up did not become ready in {timeout}s: {self.log()}")

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        code = self.proc.returncode
        self.proc = None
        return code

    def kubectl(self, *args: str, input: str | None = None, check: bool = True, minor: int | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run the real kubectl against this cluster; check=True fails the test on a non-zero exit."""
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, KUBECACHEDIR=os.path.join(self.data_dir, "kcache"))
        cp = subprocess.run([kubectl_binary(minor), *args], input=input, capture_output=True, text=True,
                            env=env, timeout=timeout)
        if check and cp.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} exited {cp.returncode}\nstdout: {cp.stdout}\nstderr: {cp.stderr}")
        return cp

    def json(self, *args: str) -> Any:
        return json.loads(self.kubectl(*args, "-o", "json").stdout)

    def stamped_stream(self, *args: str, stamp: bytes, want: int = 8, minor: int | None = None,
                       timeout: float = 30) -> tuple[bytes, dict[float, float]]:
        """Run a streaming kubectl (logs -f, attach) until want time stamps matching the regex stamp arrived.

        Returns everything it printed and, for each stamp (the time it was written), when it arrived here."""
        env = dict(os.environ, KUBECONFIG=self.kubeconfig, KUBECACHEDIR=os.path.join(self.data_dir, "kcache"))
        proc = subprocess.Popen([kubectl_binary(minor), *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        assert proc.stdout is not None
        out = b""
        seen: dict[float, float] = {}
        try:
            deadline = time.time() + timeout
            while len(seen) < want and time.time() < deadline:
                if select.select([proc.stdout], [], [], 0.5)[0]:
                    data = os.read(proc.stdout.fileno(), 4096)
                    if not data:
                        break
                    out += data
                    now = time.time()
                    for found in re.findall(stamp, out):
                        seen.setdefault(float(found), now)
        finally:
            proc.kill()
            proc.wait()
        return out, seen
