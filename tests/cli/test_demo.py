"""scripts/up's demo mode: flag split, readiness summaries, URLs, missing programs, and the demo app's clients."""

from __future__ import annotations

import os
import socket
import sys
import threading
from typing import Any

import pytest

from pocketkube.cli import demo

APP_DIR = os.path.join(demo.ROOT, "examples", "demo", "app")


def _pod(name: str, *, ready: bool, phase: str = "Running", waiting: str = "", deleting: bool = False) -> dict[str, Any]:
    status: dict[str, Any] = {"phase": phase, "conditions": [{"type": "Ready", "status": str(ready)}]}
    if waiting:
        status["containerStatuses"] = [{"state": {"waiting": {"reason": waiting}}}]
    meta: dict[str, Any] = {"name": name}
    if deleting:
        meta["deletionTimestamp"] = "2024-01-01T00:00:00Z"
    return {"metadata": meta, "status": status}


@pytest.mark.parametrize(("pods", "expected"), [
    ([], (0, 0, [])),
    ([_pod("a", ready=True), _pod("b", ready=False)], (1, 2, ["b (Running)"])),
    ([_pod("c", ready=False, phase="Pending", waiting="ContainerCreating")], (0, 1, ["c (ContainerCreating)"])),
    ([_pod("old", ready=False, deleting=True), _pod("new", ready=True)], (1, 1, [])),
])
def test_pod_progress(pods: list[dict[str, Any]], expected: tuple[int, int, list[str]]) -> None:
    """Ready and total pods skip terminating ones and name each pod still waiting with its reason."""
    assert demo.pod_progress({"items": pods}) == expected


def _workload(replicas: int, *, ready: int, updated: int, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas},
            "status": {"observedGeneration": observed, "readyReplicas": ready, "updatedReplicas": updated}}


@pytest.mark.parametrize(("items", "expected"), [
    ([], False),
    ([_workload(2, ready=2, updated=2)], True),
    ([_workload(2, ready=2, updated=1)], False),
    ([_workload(2, ready=1, updated=2)], False),
    ([_workload(1, ready=1, updated=1, generation=2, observed=1)], False),
    ([_workload(1, ready=1, updated=1), _workload(2, ready=0, updated=0)], False),
])
def test_workloads_ready(items: list[dict[str, Any]], expected: bool) -> None:
    """Every Deployment and StatefulSet must have observed its spec and have all replicas updated and ready."""
    assert demo.workloads_ready({"items": items}) is expected


@pytest.mark.parametrize(("http_port", "https_port", "expected"), [
    (80, 443, ["https://demo.localhost/", "http://demo.localhost/"]),
    (8080, 8443, ["https://demo.localhost:8443/", "http://demo.localhost:8080/"]),
])
def test_urls(http_port: int, https_port: int, expected: list[str]) -> None:
    """Standard ports are left out of the printed URLs."""
    assert demo.urls(http_port=http_port, https_port=https_port) == expected


def test_parse_passes_other_flags_through() -> None:
    """The demo's flags are taken out; pocketkube up's own flags stay in order for the child process."""
    opts, rest = demo.parse(["--detach", "--port", "0", "--data-dir", "/tmp/x", "--nodes", "2"])
    assert opts.detach is True
    assert opts.data_dir == "/tmp/x"
    assert rest == ["--port", "0", "--nodes", "2"]


def test_missing_programs_names_packages(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nothing on PATH, each missing program is reported with the package that provides it."""
    monkeypatch.setattr(demo.glob, "glob", lambda pattern: [])
    assert demo.missing_programs(str(tmp_path)) == [
        "redis-server (apt-get install redis-server)", "postgres (apt-get install postgresql)",
        "initdb (apt-get install postgresql)"]


def test_free_port_skips_taken_ports() -> None:
    """A port something already listens on is passed over for the next candidate."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        assert demo.free_port("127.0.0.1", (taken,)) == 0


def _fake_redis(replies: list[bytes]) -> tuple[int, list[bytes]]:
    """A one-connection server that records what it receives and answers with the given raw replies."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    got: list[bytes] = []

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            for reply in replies:
                got.append(conn.recv(4096))
                conn.sendall(reply)
        srv.close()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1], got


def test_resp_client_round_trip() -> None:
    """The demo API's Redis client encodes commands as RESP arrays and decodes each reply type."""
    sys.path.insert(0, APP_DIR)
    try:
        import resp
    finally:
        sys.path.remove(APP_DIR)
    port, got = _fake_redis([b"+OK\r\n", b":7\r\n", b"$5\r\nhello\r\n", b"$-1\r\n", b"*2\r\n:1\r\n$1\r\nx\r\n",
                             b"-ERR nope\r\n"])
    with resp.Connection("127.0.0.1", port, password="pw") as r:
        assert r.call("INCR", "k") == 7
        assert r.call("GET", "k") == b"hello"
        assert r.call("GET", "missing") is None
        assert r.call("X") == [1, b"x"]
        with pytest.raises(resp.Error, match="ERR nope"):
            r.call("BAD")
    assert got[0] == b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n"


@pytest.mark.parametrize(("text", "expected"), [
    ("plain", "'plain'"),
    ("it's", "'it''s'"),
    ("back\\slash", "'back\\slash'"),
])
def test_pg_literal(text: str, expected: str) -> None:
    """SQL literals double single quotes and leave backslashes alone (standard_conforming_strings)."""
    sys.path.insert(0, APP_DIR)
    try:
        import pgwire
    finally:
        sys.path.remove(APP_DIR)
    assert pgwire.literal(text) == expected


def test_scram_sha256_rfc7677_vector() -> None:
    """The demo API's SCRAM-SHA-256 client produces RFC 7677's proof and accepts its server signature."""
    sys.path.insert(0, APP_DIR)
    try:
        import pgwire
    finally:
        sys.path.remove(APP_DIR)
    scram = pgwire._Scram("pencil", nonce="rOprNGfwEbeRWgbNEkqO", user="user")
    assert scram.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    final = scram.client_final(b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                               b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    assert final == (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                     b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
    scram.verify(b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
    with pytest.raises(pgwire.Error, match="signature"):
        scram.verify(b"v=AAAA")
