"""End to end: issue 3's user story, command for command: a python Deployment served, scaled, rolled and healed."""

from __future__ import annotations

import collections.abc
import functools

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import netutil


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """`pocketkube up --nodes 2` with pod networking, so replicas on one node may all listen on 8080."""
    netutil.require_root_network()
    c, _, _ = netutil.start(str(tmp_path_factory.mktemp("pk-users")), nodes=2)
    try:
        yield c
    finally:
        c.stop()


def _pods(c: cluster_mod.Cluster) -> dict[str, dict]:
    return {p["metadata"]["name"]: p for p in c.json("get", "pods", "-l", "app=web")["items"]
            if not p["metadata"].get("deletionTimestamp")}


def _images(c: cluster_mod.Cluster) -> set[str]:
    return {p["spec"]["containers"][0]["image"] for p in _pods(c).values()}


def test_create_scale_serve_roll_undo_and_heal(cluster: cluster_mod.Cluster) -> None:
    """create deployment, scale, rollout status, HTTP on every pod, set image, rollout undo, a deleted pod comes back."""
    c = cluster
    out = c.kubectl("create", "deployment", "web", "--image=python:3.12", "--", "python", "-m", "http.server", "8080")
    assert out.stdout == "deployment.apps/web created\n"
    assert c.kubectl("scale", "deployment", "web", "--replicas=3").stdout == "deployment.apps/web scaled\n"
    status = c.kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90).stdout
    assert status.endswith('deployment "web" successfully rolled out\n')
    pods = _pods(c)
    assert len(pods) == 3
    for ip in [p["status"]["podIP"] for p in pods.values()]:
        # http.server lists the container's working directory: the pod answers from its own IP.
        page = cluster_mod.eventually(functools.partial(_fetch, f"http://{ip}:8080/"), timeout=10)
        assert "Directory listing for /" in page
    c.kubectl("set", "image", "deployment/web", "python=python:3.13")
    c.kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    cluster_mod.eventually(lambda: _images(c) == {"python:3.13"}, timeout=20)
    assert c.kubectl("rollout", "undo", "deployment/web").stdout == "deployment.apps/web rolled back\n"
    c.kubectl("rollout", "status", "deployment/web", "--timeout=60s", timeout=90)
    cluster_mod.eventually(lambda: _images(c) == {"python:3.12"}, timeout=20)
    history = c.kubectl("rollout", "history", "deployment/web").stdout
    assert [line.split()[0] for line in history.splitlines()[2:] if line.strip()] == ["2", "3"]
    victim = next(iter(_pods(c)))
    c.kubectl("delete", "pod", victim)
    healed = cluster_mod.eventually(lambda: (p := _pods(c)) and len(p) == 3 and victim not in p and all(
        any(x["type"] == "Ready" and x["status"] == "True" for x in q["status"].get("conditions") or [])
        for q in p.values()), timeout=30, what="a replacement pod, Ready")
    assert healed
    row = c.kubectl("get", "deployment", "web", "--no-headers").stdout.split()
    assert row[1:4] == ["3/3", "3", "3"]


def _fetch(url: str) -> str:
    try:
        return netutil.get(url)
    except OSError:
        return ""
