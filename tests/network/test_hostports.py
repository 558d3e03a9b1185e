"""hostPort mappings: which pods get forwarded, conflicts between nodes sharing a host, the script (golden file)."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pytest

from pocketkube.network import hostports

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "hostports.nft")
CIDRS = {"n1": "10.1.0.0/24", "n2": "10.1.1.0/24"}
ANNOTATION = "pocketkube.io/pod-network"


def pod(name: str, ip: str, ports: list[dict[str, Any]], *, node: str = "n1", phase: str = "Running",
        created: str = "2026-01-01T00:00:00Z", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name, "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports}], **spec},
            "status": {"phase": phase, "podIP": ip}}


def hp(host_port: int, port: int = 8080, **extra: Any) -> dict[str, Any]:
    return {"containerPort": port, "hostPort": host_port, **extra}


@pytest.mark.parametrize(("body", "want"), [
    (pod("a", "10.1.0.2", [hp(18080)]), [("tcp", "", 18080, "10.1.0.2", 8080)]),
    (pod("a", "10.1.0.2", [hp(5353, 53, protocol="UDP", hostIP="192.0.2.1")]),
     [("udp", "192.0.2.1", 5353, "10.1.0.2", 53)]),
    (pod("a", "10.1.0.2", [hp(9000, 9000, protocol="SCTP", hostIP="0.0.0.0")]),
     [("sctp", "", 9000, "10.1.0.2", 9000)]),
    (pod("a", "10.1.0.2", [{"containerPort": 8080}]), []),  # no hostPort: nothing to forward
    (pod("a", "10.1.0.2", [hp(18080)], phase="Pending"), []),
    (pod("a", "10.1.0.2", [hp(18080)], phase="Succeeded"), []),
    (pod("a", "10.1.0.2", [hp(18080)], hostNetwork=True), []),  # it listens on the host itself
    (pod("a", "", [hp(18080)]), []),
    (pod("a", "10.9.0.2", [hp(18080)]), []),  # not on its node's bridge
    (pod("a", "10.1.0.2", [hp(18080)], node="elsewhere"), []),  # a node not served on this host
    (pod("a", "10.1.0.2", [hp(18080, hostIP="fd00::1")]), []),  # the table is IPv4 only
    (pod("a", "10.1.0.2", [hp(70000), hp(18080, protocol="ICMP"), hp("x")]), []),  # type: ignore[arg-type]
])
def test_plan_forwards_running_pods_on_local_bridges(body: dict[str, Any],
                                                     want: list[tuple[str, str, int, str, int]]) -> None:
    """Only running, non-hostNetwork pods with an IP on their node's local bridge get valid hostPorts mapped."""
    mappings, conflicts = hostports.plan([body], cidrs=CIDRS)
    assert [(m.protocol, m.host_ip, m.host_port, m.pod_ip, m.container_port) for m in mappings] == want
    assert conflicts == []


@pytest.mark.parametrize(("first", "second", "clash"), [
    (hp(18080), hp(18080), True),
    (hp(18080), hp(18080, hostIP="192.0.2.1"), True),  # "every address" includes that one
    (hp(18080, hostIP="192.0.2.1"), hp(18080, hostIP="192.0.2.2"), False),
    (hp(18080), hp(18080, protocol="UDP"), False),
    (hp(18080), hp(18081), False),
])
def test_the_oldest_pod_keeps_a_shared_hostport(first: dict[str, Any], second: dict[str, Any], clash: bool) -> None:
    """Two nodes of one host handing out one hostPort: the older pod keeps it, the newer one is reported."""
    old = pod("old", "10.1.0.2", [first], created="2026-01-01T00:00:00Z")
    new = pod("new", "10.1.1.2", [second], node="n2", created="2026-01-01T00:00:05Z")
    mappings, conflicts = hostports.plan([new, old], cidrs=CIDRS)
    assert [m.pod for m in mappings] == (["old"] if clash else ["old", "new"])
    assert [(c.pod, c.uid, c.node) for c in conflicts] == ([("new", "uid-new", "n2")] if clash else [])
    if clash:
        assert "pod default/old on node n1 holds it" in conflicts[0].message


@pytest.mark.parametrize(("notes", "bridges", "want"), [
    ({ANNOTATION: "bridge pkb1 10.1.0.1/24"}, None, {"n": "10.1.0.0/24"}),
    ({ANNOTATION: "bridge pkb1 10.1.0.1/24"}, ["pkb1"], {"n": "10.1.0.0/24"}),
    ({ANNOTATION: "bridge pkb1 10.1.0.1/24"}, ["pkb2"], {}),  # that bridge is on another machine
    ({ANNOTATION: "host network: pod network namespaces need root"}, None, {}),
    ({ANNOTATION: "bridge pkb1 nonsense"}, None, {}),
    ({}, None, {}),
])
def test_node_cidrs_come_from_local_bridge_annotations(notes: dict[str, str], bridges: list[str] | None,
                                                      want: dict[str, str]) -> None:
    """A node counts only with a parseable bridge annotation whose bridge (when checked) exists here."""
    nodes = [{"metadata": {"name": "n", "annotations": notes}}]
    assert hostports.node_cidrs(nodes, annotation=ANNOTATION, bridges=bridges) == want


def render_sample() -> str:
    pods = [pod("web", "10.1.0.2", [hp(18080), hp(18053, 53, protocol="UDP")]),
            pod("pinned", "10.1.1.3", [hp(9443, 443, hostIP="192.0.2.10"), hp(9000, 9000, protocol="SCTP")],
                node="n2")]
    mappings, _ = hostports.plan(pods, cidrs=CIDRS)
    return hostports.render(mappings, table="pkhp_test")


def test_render_matches_golden_file() -> None:
    """DNAT in prerouting and output for local addresses, hostIP matches, hairpin and localhost masquerade."""
    got = render_sample()
    if os.environ.get("UPDATE_GOLDEN"):
        with open(GOLDEN, "w") as f:
            f.write(got)
    with open(GOLDEN) as f:
        assert got == f.read()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("nft") is None, reason="nft -c needs root and nftables")
def test_golden_script_is_valid_nftables() -> None:
    """The kernel's parser accepts the golden script (checked with nft -c, nothing applied)."""
    cp = subprocess.run(["nft", "-c", "-f", GOLDEN], capture_output=True, text=True, check=False)
    assert cp.returncode == 0, cp.stderr


def test_empty_plan_still_replaces_the_table() -> None:
    """With no hostPorts the script still recreates the (empty) table, dropping stale rules atomically."""
    script = hostports.render([], table="pkhp_x")
    assert script.startswith("table ip pkhp_x\ndelete table ip pkhp_x\n")
    assert "dnat" not in script


def test_cleanup_script_deletes_only_the_table() -> None:
    """Cleanup names just this table, created first so deleting never fails."""
    assert hostports.cleanup_script("pkhp_x") == "table ip pkhp_x\ndelete table ip pkhp_x\n"
