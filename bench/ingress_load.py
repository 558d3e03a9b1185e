"""Ingress load benchmark: requests/s and p99 through the pocketkube ingress proxy vs the backend directly vs nginx.

Usage: python bench/ingress_load.py [--connections 32] [--seconds 5] [--runs 3] [--paths 1] [--browser-headers]
Starts a tiny keep-alive HTTP backend, the pocketkube proxy (gateway/proxy.py, one process, uvloop) with a
one-route table, and nginx (one worker, upstream keep-alive) if /usr/sbin/nginx exists; drives each with
the same raw keep-alive HTTP/1.1 client (targets interleaved, best of --runs) and prints figures and ratios,
plus the proxy's own CPU time per request (steadier than req/s on a shared machine). --paths N cycles the
requests over N distinct paths and --browser-headers sends the dozen headers a browser does, so no cost can hide
behind byte-identical heads. Not a pass/fail test.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "bench.local"

BACKEND = r'''
import asyncio, sys
try:
    import uvloop; uvloop.install()
except ImportError:
    pass
BODY = b"hello from the backend\n"
RESP = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)
class P(asyncio.Protocol):
    def connection_made(self, t): self.t, self.buf = t, b""
    def data_received(self, d):
        self.buf += d
        while b"\r\n\r\n" in self.buf:
            _, self.buf = self.buf.split(b"\r\n\r\n", 1)
            self.t.write(RESP)
async def main():
    s = await asyncio.get_running_loop().create_server(P, "127.0.0.1", int(sys.argv[1]))
    await s.serve_forever()
asyncio.run(main())
'''

PROXY = r'''
import asyncio, sys
import uvloop
from pocketkube.gateway import endpoints, proxy, routes
async def main():
    ing = {"metadata": {"name": "b", "namespace": "default"}, "spec": {"ingressClassName": "pocketkube",
           "rules": [{"host": "bench.local", "http": {"paths": [{"path": "/", "pathType": "Prefix",
           "backend": {"service": {"name": "b", "port": {"number": 80}}}}]}}]}}
    table = routes.compile_ingresses([ing], class_name="pocketkube")
    ups = {b: endpoints.Upstream(addresses=(("127.0.0.1", int(sys.argv[1])),)) for b in table.backends()}
    px = proxy.Proxy()
    px.update(proxy.State(table=table, upstreams=ups, contexts={}))
    await px.start(host="127.0.0.1", http_ports=[int(sys.argv[2])], https_ports=[0])
    await asyncio.Event().wait()
uvloop.run(main())
'''

NGINX = """
worker_processes 1;
error_log {dir}/error.log;
pid {dir}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
  access_log off; keepalive_requests 1000000;
  client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy; fastcgi_temp_path {dir}/fcgi;
  uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
  upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port};
    server_name {host};
    location / {{
      proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host; proxy_set_header X-Forwarded-For $remote_addr;
      proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Real-IP $remote_addr;
    }}
  }}
}}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a process (Linux /proc), 0 elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


BROWSER_HEADERS = ("User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0\r\n"
                   "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n"
                   "Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-US,en;q=0.9\r\n"
                   "Cache-Control: no-cache\r\nConnection: keep-alive\r\nCookie: session=4f9a1c2e7b\r\n"
                   "Referer: http://bench.local/\r\nSec-Fetch-Dest: document\r\nSec-Fetch-Mode: navigate\r\n"
                   "Sec-Fetch-Site: same-origin\r\nUpgrade-Insecure-Requests: 1\r\n")


async def load(port: int, connections: int, seconds: float, *, host: str = "127.0.0.1",
               reconnect: bool = False, paths: int = 1, headers: str = "") -> tuple[float, float, int]:
    """(requests/s, p99 ms, errors) of GETs over `connections` keep-alive connections for `seconds`.

    reconnect opens a new connection for every request instead (Connection: close), so connection set-up
    (and a ClusterIP's DNAT, done once per connection) is in every request's cost.
    """
    close = "Connection: close\r\n" if reconnect else ""
    requests = [f"GET {'/' if paths == 1 else f'/item/{i}'} HTTP/1.1\r\nHost: {HOST}\r\n{headers}{close}\r\n".encode()
                for i in range(paths)]
    latencies: list[float] = []
    errors = 0
    stop = time.monotonic() + seconds

    async def worker() -> None:
        nonlocal errors
        reader, writer = await asyncio.open_connection(host, port)
        n = random.randrange(paths)
        try:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                if reconnect:
                    # RST instead of FIN: thousands of closes a second would otherwise exhaust ports in TIME_WAIT.
                    writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                               struct.pack("ii", 1, 0))
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, port)
                n = n + 1 if n + 1 < paths else 0
                writer.write(requests[n])
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await reader.readexactly(length)
                if not head.startswith(b"HTTP/1.1 200"):
                    errors += 1
                latencies.append(time.perf_counter() - t0)
        finally:
            writer.close()

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(connections)))
    elapsed = time.monotonic() - started
    latencies.sort()
    p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000 if latencies else 0.0
    return len(latencies) / elapsed, p99, errors


def _nginx_worker(tmp: str) -> int:
    """The pid of nginx's worker process (the one doing the proxying), else its master's."""
    with open(os.path.join(tmp, "nginx.pid")) as f:
        master = int(f.read().strip())
    with contextlib.suppress(OSError):
        with open(f"/proc/{master}/task/{master}/children") as f:
            kids = f.read().split()
        if kids:
            return int(kids[0])
    return master


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--paths", type=int, default=1, help="distinct request paths to cycle over")
    ap.add_argument("--browser-headers", action="store_true", help="send a browser's request headers")
    args = ap.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    tmp = tempfile.mkdtemp(prefix="pk-ingress-bench-")
    try:
        backend = _free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", BACKEND, str(backend)]))
        _wait_port(backend)
        targets = {"direct": backend}
        pids = {"direct": procs[0].pid}
        ingress = _free_port()
        procs.append(subprocess.Popen([sys.executable, "-c", PROXY, str(backend), str(ingress)], cwd=ROOT))
        _wait_port(ingress)
        targets["pocketkube ingress"] = ingress
        pids["pocketkube ingress"] = procs[-1].pid
        nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else "")
        if nginx:
            port = _free_port()
            conf = os.path.join(tmp, "nginx.conf")
            with open(conf, "w") as f:
                f.write(NGINX.format(dir=tmp, backend=backend, port=port, host=HOST))
            procs.append(subprocess.Popen([nginx, "-c", conf, "-p", tmp, "-g", "daemon off;"]))
            _wait_port(port)
            targets["nginx"] = port
            pids["nginx"] = _nginx_worker(tmp)
        else:
            print("nginx not installed (apt-get install nginx-light): skipping the nginx comparison")
        run: Any = asyncio.run
        with contextlib.suppress(ImportError):
            import uvloop
            run = uvloop.run
        headers = BROWSER_HEADERS if args.browser_headers else ""
        results: dict[str, tuple[float, float, int]] = {}
        cpu: dict[str, float] = {}
        for port in targets.values():
            run(load(port, args.connections, 0.5, paths=args.paths, headers=headers))  # warm-up: connections, pools
        for i in range(args.runs):
            for name, port in targets.items():
                before = _cpu_seconds(pids[name])
                got = run(load(port, args.connections, args.seconds, paths=args.paths, headers=headers))
                used = (_cpu_seconds(pids[name]) - before) / max(1.0, got[0] * args.seconds) * 1e6
                print(f"run {i + 1}  {name:20s} {got[0]:9.0f} req/s   p99 {got[1]:7.2f} ms   errors {got[2]}"
                      f"   {used:5.1f} us CPU/req")
                if name not in results or got[0] > results[name][0]:
                    results[name] = got
                cpu[name] = min(cpu.get(name, used), used)
        print(f"best of {args.runs}:")
        for name, (rps, p99, _) in results.items():
            print(f"{name:20s} {rps:9.0f} req/s   p99 {p99:7.2f} ms   {cpu[name]:5.1f} us CPU/req")
        ing_rps, ing_p99, _ = results["pocketkube ingress"]
        d_rps, d_p99, _ = results["direct"]
        print(f"ingress / direct:   {ing_rps / d_rps:.2f}x req/s, p99 {ing_p99 / d_p99:.2f}x")
        if "nginx" in results:
            n_rps, n_p99, _ = results["nginx"]
            print(f"ingress / nginx:    {ing_rps / n_rps:.2f}x req/s (target >= 0.8x), p99 {ing_p99 / n_p99:.2f}x, "
                  f"CPU per request {cpu['pocketkube ingress'] / max(cpu['nginx'], 0.1):.2f}x")
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
