"""The demo API: messages stored in PostgreSQL, cached in Redis, a visit counter, health endpoints."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time
from http import server
from typing import Any

import pgwire
import resp

ENV = os.environ
PORT = int(ENV.get("PORT", "8080"))
CACHE_KEY = "demo:messages"
MAX_TEXT = 500


def db() -> pgwire.Connection:
    return pgwire.Connection(ENV.get("DB_HOST", "db"), int(ENV.get("DB_PORT", "5432")),
                             user=ENV.get("POSTGRES_USER", "demo"), password=ENV.get("POSTGRES_PASSWORD", ""),
                             database=ENV.get("POSTGRES_DB", "demo"))


def cache() -> resp.Connection:
    return resp.Connection(ENV.get("CACHE_HOST", "cache"), int(ENV.get("CACHE_PORT", "6379")),
                           password=ENV.get("REDIS_PASSWORD", ""))


_schema = threading.Event()


def ensure_schema() -> None:
    """Create the table once per process (the first ready check after the database answers does it)."""
    if _schema.is_set():
        return
    with db() as conn:
        conn.query("CREATE TABLE IF NOT EXISTS messages ("
                   "id serial PRIMARY KEY, text text NOT NULL, created timestamptz NOT NULL DEFAULT now())")
    _schema.set()


def list_messages() -> dict[str, Any]:
    """The messages, newest first: from the cache when it has them, else from PostgreSQL (then cached)."""
    with cache() as r:
        cached = r.call("GET", CACHE_KEY)
        if isinstance(cached, bytes):
            return {"messages": json.loads(cached), "source": "cache"}
        with db() as conn:
            rows = conn.query("SELECT id, text, created FROM messages ORDER BY id DESC LIMIT 50")
        messages = [{"id": int(str(i)), "text": t, "created": c} for i, t, c in rows]
        r.call("SET", CACHE_KEY, json.dumps(messages), "EX", ENV.get("CACHE_TTL_SECONDS", "60"))
        return {"messages": messages, "source": "database"}


def add_message(text: str) -> dict[str, Any]:
    with db() as conn:
        rows = conn.query(f"INSERT INTO messages (text) VALUES ({pgwire.literal(text)}) RETURNING id, created")
    with cache() as r:
        r.call("DEL", CACHE_KEY)
    return {"id": int(str(rows[0][0])), "text": text, "created": rows[0][1]}


_last_problem = ["starting"]


def ready() -> str:
    """Empty when both stores answer, else what is wrong (the readiness probe's failure message)."""
    try:
        ensure_schema()
        with db() as conn:
            conn.query("SELECT 1")
        with cache() as r:
            r.call("PING")
        problem = ""
    except (OSError, pgwire.Error, resp.Error) as e:
        problem = f"{type(e).__name__}: {e}"
    if problem != _last_problem[0]:
        # Log changes only, so `kubectl logs` says why the pod is not ready without repeating it every probe.
        print(f"not ready: {problem}" if problem else "ready", file=sys.stderr, flush=True)
        _last_problem[0] = problem
    return problem


class Handler(server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "demo-api/1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            self.reply(200, {"status": "ok"})
        elif path == "/readyz":
            problem = ready()
            self.reply(503 if problem else 200, {"status": problem or "ready"})
        elif path == "/api/info":
            self.reply(200, {"pod": ENV.get("POD_NAME") or socket.gethostname(), "version": ENV.get("APP_VERSION", ""),
                             "python": sys.version.split()[0], "greeting": ENV.get("GREETING", "")})
        elif path == "/api/messages":
            self.guarded(list_messages)
        elif path == "/api/visits":
            self.guarded(lambda: {"visits": self.incr()})
        else:
            self.reply(404, {"error": f"no route for {path}"})

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        if self.path.split("?", 1)[0] != "/api/messages":
            self.reply(404, {"error": f"no route for {self.path}"})
            return
        try:
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(size) or b"{}")
            text = str(body.get("text", "")).strip()
        except (ValueError, AttributeError):
            self.reply(400, {"error": 'expected a JSON object like {"text": "hello"}'})
            return
        if not text or len(text) > MAX_TEXT or "\0" in text:
            self.reply(400, {"error": f"text must be 1 to {MAX_TEXT} characters"})
            return
        self.guarded(lambda: add_message(text), status=201)

    def incr(self) -> int:
        with cache() as r:
            n = r.call("INCR", "demo:visits")
        return int(n) if isinstance(n, int) else 0

    def guarded(self, work: Any, *, status: int = 200) -> None:
        try:
            self.reply(status, work())
        except (OSError, pgwire.Error, resp.Error) as e:
            self.reply(503, {"error": f"{type(e).__name__}: {e}"})

    def reply(self, status: int, doc: Any) -> None:
        data = json.dumps(doc).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (a probe past its timeoutSeconds): nothing left to answer.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
        if ENV.get("ACCESS_LOG") == "1":
            super().log_message(format, *args)


def main() -> None:
    # Serve at once: the first successful readiness check creates the table once the database answers.
    httpd = server.ThreadingHTTPServer(("", PORT), Handler)
    httpd.daemon_threads = True

    def stop(*_: object) -> None:
        # Finish the requests in flight (the preStop sleep already took the pod out of the endpoints).
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    print(f"demo api listening on :{PORT}", flush=True)
    httpd.serve_forever()
    # shutdown() stops accepting; give requests already in flight a moment before the process exits.
    time.sleep(1)


if __name__ == "__main__":
    main()
