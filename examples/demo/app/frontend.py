"""The demo frontend: serves the page and forwards /api/ requests to the API Service."""

from __future__ import annotations

import os
import signal
import threading
import time
import urllib.error
import urllib.request
from http import server
from typing import Any

ENV = os.environ
PORT = int(ENV.get("PORT", "8080"))
API_URL = ENV.get("API_URL", "http://api:8080").rstrip("/")
PAGE_PATH = ENV.get("PAGE_PATH", os.path.join(os.path.dirname(os.path.abspath(__file__)), "index.html"))
# Headers that describe one hop and must not be forwarded (RFC 9110 section 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-authorization", "proxy-authenticate", "content-length"}


class Handler(server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-frontend/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/api/"):
            self.forward()
        elif self.path == "/healthz":
            self.send(200, b"ok\n", "text/plain")
        elif self.path.split("?", 1)[0] in ("/", "/index.html"):
            with open(PAGE_PATH, "rb") as f:
                page = f.read().replace(b"{{GREETING}}", ENV.get("GREETING", "").encode())
            self.send(200, page, "text/html; charset=utf-8")
        else:
            self.send(404, b"not found\n", "text/plain")

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.startswith("/api/"):
            self.forward()
        else:
            self.send(404, b"not found\n", "text/plain")

    def forward(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(size) if size else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP | {"host"}}
        req = urllib.request.Request(API_URL + self.path, data=body, method=self.command, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                self.send(r.status, r.read(), r.headers.get("Content-Type", "application/json"))
        except urllib.error.HTTPError as e:
            self.send(e.code, e.read(), e.headers.get("Content-Type", "application/json"))
        except (OSError, ValueError) as e:
            self.send(502, f'{{"error": "the API is unreachable: {type(e).__name__}"}}'.encode(), "application/json")

    def send(self, status: int, data: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        if ENV.get("ACCESS_LOG") == "1":
            super().log_message(format, *args)


def main() -> None:
    httpd = server.ThreadingHTTPServer(("", PORT), Handler)
    httpd.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=httpd.shutdown, daemon=True).start())
    print(f"demo frontend listening on :{PORT}, API at {API_URL}", flush=True)
    httpd.serve_forever()
    # shutdown() stops accepting; give requests already in flight a moment before the process exits.
    time.sleep(1)


if __name__ == "__main__":
    main()
