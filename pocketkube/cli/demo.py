"""`scripts/up`'s demo mode: start a cluster, apply examples/demo with kubectl, show progress, print the URLs."""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any, TextIO

from pocketkube.cli import main as cli_main

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_DIR = os.path.join(ROOT, "examples", "demo")
NAMESPACE = "demo"
HOST = "demo.localhost"
# Preferred ingress ports: the standard ones when this user may bind them, else unprivileged ones.
HTTP_PORTS = (80, 8080, 18080)
HTTPS_PORTS = (443, 8443, 18443)
# The host programs the demo's images stand for, and the Debian package of each.
PROGRAMS = (("redis-server", "redis-server"), ("postgres", "postgresql"), ("initdb", "postgresql"))


class DemoError(Exception):
    """Why the demo cannot start or did not become ready; printed as one message, exit code 1."""


def parse(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """The demo's own flags; everything else goes to `pocketkube up` unchanged."""
    p = argparse.ArgumentParser(prog="scripts/up", add_help=False)
    p.add_argument("--detach", action="store_true")
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--demo-dir", default=DEMO_DIR)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--host", default=cli_main.DEFAULT_HOST)
    p.add_argument("--ingress-http-port", type=int, default=None)
    p.add_argument("--ingress-https-port", type=int, default=None)
    return p.parse_known_args(list(argv))


def missing_programs(path: str | None = None) -> list[str]:
    """The programs the demo needs that are not installed, each with the package to install."""
    search = os.pathsep.join([path if path is not None else os.environ.get("PATH", ""),
                              *sorted(glob.glob("/usr/lib/postgresql/*/bin"))])
    return [f"{prog} (apt-get install {pkg})" for prog, pkg in PROGRAMS if shutil.which(prog, path=search) is None]


def free_port(host: str, candidates: Sequence[int]) -> int:
    """The first of the candidate ports this process can listen on at host (0 when none is free)."""
    for port in candidates:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    return 0


def pod_progress(doc: dict[str, Any]) -> tuple[int, int, list[str]]:
    """From `kubectl get pods -o json`: ready pods, pods, and a short word on each pod not ready yet."""
    ready, total, waiting = 0, 0, []
    for pod in doc.get("items") or []:
        meta, status = pod.get("metadata") or {}, pod.get("status") or {}
        if meta.get("deletionTimestamp"):
            continue
        total += 1
        conds = {c.get("type"): c for c in status.get("conditions") or []}
        if (conds.get("Ready") or {}).get("status") == "True":
            ready += 1
            continue
        reason = status.get("phase") or "Pending"
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            if "waiting" in state:
                reason = state["waiting"].get("reason") or reason
        waiting.append(f"{meta.get('name')} ({reason})")
    return ready, total, sorted(waiting)


def workloads_ready(doc: dict[str, Any]) -> bool:
    """Whether every Deployment and StatefulSet of `kubectl get deploy,sts -o json` has all replicas ready."""
    items = doc.get("items") or []
    if not items:
        return False
    for w in items:
        want = (w.get("spec") or {}).get("replicas", 1)
        status = w.get("status") or {}
        if status.get("observedGeneration", 0) < (w.get("metadata") or {}).get("generation", 0):
            return False
        if status.get("readyReplicas", 0) != want or status.get("updatedReplicas", 0) != want:
            return False
    return True


def urls(*, http_port: int, https_port: int) -> list[str]:
    """The demo's addresses through the Ingress (HTTP redirects to HTTPS, as ingress-nginx does with TLS)."""
    def suffix(port: int, default: int) -> str:
        return "" if port == default else f":{port}"

    return [f"https://{HOST}{suffix(https_port, 443)}/", f"http://{HOST}{suffix(http_port, 80)}/"]


class Launcher:
    """One `pocketkube up` child process and the kubectl commands run against it."""

    def __init__(self, opts: argparse.Namespace, up_args: list[str], *, out: TextIO) -> None:
        self.opts = opts
        self.up_args = up_args
        self.out = out
        self.data_dir = os.path.abspath(os.path.expanduser(opts.data_dir or cli_main.default_data_dir()))
        self.kubeconfig = cli_main.kubeconfig_path(self.data_dir)
        self.log_path = os.path.join(self.data_dir, "pocketkube.log")
        self.proc: subprocess.Popen[bytes] | None = None
        self.http_port = opts.ingress_http_port
        self.https_port = opts.ingress_https_port

    def check(self) -> None:
        if shutil.which("kubectl") is None:
            raise DemoError("kubectl is not on PATH: install it (https://kubernetes.io/docs/tasks/tools/)")
        missing = missing_programs()
        if missing:
            raise DemoError("the demo runs its images as programs of this machine; install: " + ", ".join(missing)
                            + " (or start a bare cluster with --no-demo)")
        if sys.platform != "linux" or os.geteuid() != 0:
            raise DemoError("the demo needs each pod in its own network namespace (Linux, as root): run it with "
                            "sudo, or start a bare cluster with --no-demo")

    def start(self) -> None:
        """Start `pocketkube up` with a process node and known ingress ports; return once it serves."""
        os.makedirs(self.data_dir, mode=0o700, exist_ok=True)
        if self.http_port is None:
            self.http_port = free_port(self.opts.host, HTTP_PORTS)
        if self.https_port is None:
            self.https_port = free_port(self.opts.host, HTTPS_PORTS)
        args = [sys.executable, "-m", "pocketkube", "up", "--data-dir", self.data_dir, "--host", self.opts.host,
                "--ingress-http-port", str(self.http_port), "--ingress-https-port", str(self.https_port)]
        if not any(a.split("=", 1)[0] in ("--nodes", "--virtual-nodes") for a in self.up_args):
            args += ["--nodes", "1"]
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child writes to it for as long as it runs
        # Detached: its own session, so closing this terminal does not stop the cluster.
        self.proc = subprocess.Popen([*args, *self.up_args], stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                     start_new_session=self.opts.detach)
        log.close()
        start = os.path.getsize(self.log_path)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DemoError(f"pocketkube up exited with {self.proc.returncode}:\n{self.log_tail()}")
            if "is up at" in self.log_text(start):
                first = self.log_text(start).split("is up at", 1)[1].split()[0]
                self.say(f"pocketkube is up at {first} (data: {self.data_dir}, log: {self.log_path})")
                self.say(f"  export KUBECONFIG={self.kubeconfig}")
                return
            time.sleep(0.1)
        raise DemoError(f"pocketkube up did not start in 60s:\n{self.log_tail()}")

    def kubectl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ, KUBECONFIG=self.kubeconfig)
        cp = subprocess.run(["kubectl", *args], capture_output=True, text=True, env=env, timeout=120)
        if check and cp.returncode != 0:
            raise DemoError(f"kubectl {' '.join(args)} failed:\n{cp.stderr.strip()}")
        return cp

    def apply(self) -> None:
        self.say(f"applying {self.opts.demo_dir} (kubectl apply -k)")
        self.kubectl("apply", "-k", self.opts.demo_dir)

    def wait_ready(self) -> None:
        """Show which pods are ready until every workload is, or fail with what is stuck after the timeout."""
        started = time.monotonic()
        tty = self.out.isatty()
        last = ""
        while True:
            pods = json.loads(self.kubectl("-n", NAMESPACE, "get", "pods", "-o", "json").stdout)
            work = json.loads(self.kubectl("-n", NAMESPACE, "get", "deployments,statefulsets", "-o", "json").stdout)
            ready, total, waiting = pod_progress(pods)
            done = workloads_ready(work) and ready == total
            line = f"[{time.monotonic() - started:3.0f}s] {ready}/{total} pods ready"
            if waiting:
                line += "; waiting for " + ", ".join(waiting)
            if tty:
                self.out.write("\r\033[K" + line[:200] + ("\n" if done else ""))
                self.out.flush()
            elif line.split("]", 1)[1] != last.split("]", 1)[-1] or done:
                self.say(line)
            last = line
            if done:
                return
            if time.monotonic() - started > self.opts.timeout:
                if tty:
                    self.out.write("\n")
                events = self.kubectl("-n", NAMESPACE, "get", "events", "--sort-by=.lastTimestamp",
                                      check=False).stdout.splitlines()[-15:]
                raise DemoError(f"the demo was not ready after {self.opts.timeout:.0f}s; recent events:\n"
                                + "\n".join(events))
            time.sleep(1)

    def announce(self) -> None:
        assert self.http_port is not None and self.https_port is not None
        self.say("")
        self.say("The demo is ready:")
        for url in urls(http_port=self.http_port, https_port=self.https_port):
            self.say(f"  {url}")
        self.say("(*.localhost names resolve to this machine in browsers; the certificate is self-signed: "
                 f"curl -k https://{HOST}:{self.https_port}/api/messages)")
        self.say(f"Or without the Ingress: kubectl -n {NAMESPACE} port-forward svc/frontend 8000:80, then "
                 "http://localhost:8000/")
        self.say(f"Try a rolling update: kubectl -n {NAMESPACE} set image deploy/api api=python:3.13")

    def serve(self) -> int:
        """Keep the cluster in the foreground until Ctrl+C (or leave it running when detached)."""
        assert self.proc is not None
        if self.opts.detach:
            self.say(f"Detached: pocketkube runs as pid {self.proc.pid}; stop it with: kill {self.proc.pid}")
            return 0
        self.say("Press Ctrl+C to stop the cluster.")
        try:
            return self.proc.wait()
        except KeyboardInterrupt:
            return self.stop()

    def stop(self) -> int:
        """Stop the cluster as Ctrl+C would (the terminal may already have sent it SIGINT too)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.say("pocketkube stopped")
        return 0

    def log_text(self, start: int = 0) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(start)
            return f.read().decode(errors="replace")

    def log_tail(self) -> str:
        return "\n".join(self.log_text().splitlines()[-20:])

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


def run(argv: Sequence[str], *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Start the cluster with the demo; the exit status."""
    stdout, stderr = out or sys.stdout, err or sys.stderr
    opts, up_args = parse(argv)
    launcher = Launcher(opts, up_args, out=stdout)
    try:
        launcher.check()
        launcher.start()
        launcher.apply()
        launcher.wait_ready()
        launcher.announce()
    except KeyboardInterrupt:
        launcher.stop()
        return 130
    except DemoError as e:
        print(f"scripts/up: error: {e}", file=stderr, flush=True)
        if launcher.proc is not None and launcher.proc.poll() is None and not opts.detach:
            print("The cluster keeps running so you can look (kubectl -n demo get pods,events); "
                  "Ctrl+C stops it.", file=stderr, flush=True)
            return launcher.serve() or 1
        return 1
    return launcher.serve()


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
