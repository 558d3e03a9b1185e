"""NetworkPolicy enforcer: Node annotations that never pretend, the br_netfilter check, table names."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from pocketkube.network import podnet
from pocketkube.node import netpolicy
from tests.node import fakes


def node(name: str, network: str | None) -> dict[str, Any]:
    notes = {podnet.ANNOTATION: network} if network is not None else {}
    return {"metadata": {"name": name, "annotations": notes}}


@pytest.mark.parametrize(("network", "problem", "want"), [
    ("bridge pkb1 10.1.0.1/24", "", "nftables table ip pknp_x"),
    ("bridge pkb1 10.1.0.1/24", "nftables rules need root", "not enforced: nftables rules need root"),
    ("host network: pod network namespaces need root", "", "not enforced: pods share the host network"),
    ("not started", "", "not enforced: pods share the host network"),
])
def test_node_state_says_whether_policies_hold(network: str, problem: str, want: str) -> None:
    """A node's annotation names the enforcing table only when its pods are on a bridge and nft works."""
    assert netpolicy.node_state(node("n", network), problem=problem, table="pknp_x") == want


@pytest.mark.parametrize(("content", "want_content"), [("1\n", "1\n"), ("0\n", "1")])
def test_bridge_problem_turns_br_netfilter_on(tmp_path: Any, content: str, want_content: str) -> None:
    """Bridged traffic must pass the ip hooks: an off switch is turned on (as kubeadm requires)."""
    path = os.path.join(str(tmp_path), "bridge-nf-call-iptables")
    with open(path, "w") as f:
        f.write(content)
    assert netpolicy.bridge_problem(path) == ""
    with open(path) as f:
        assert f.read() == want_content


def test_bridge_problem_reports_a_missing_switch(tmp_path: Any) -> None:
    """Without the br_netfilter switch enforcement is refused with the reason, never assumed."""
    problem = netpolicy.bridge_problem(os.path.join(str(tmp_path), "missing", "bridge-nf-call-iptables"))
    assert problem.startswith("bridged traffic does not reach nftables (br_netfilter")


def test_table_name_is_per_cluster() -> None:
    """Two data dirs get two tables, each a valid short nft identifier."""
    a, b = netpolicy.table_name("/tmp/a"), netpolicy.table_name("/tmp/b")
    assert a != b and a.startswith("pknp_") and len(a) == 15


def test_sync_without_nftables_annotates_process_nodes_only() -> None:
    """With no kernel data path, process nodes say policies are not enforced; virtual nodes are left alone."""
    client = fakes.FakeClient()
    nodes = [node("proc", "bridge pkb1 10.1.0.1/24"), node("virtual", None)]
    for n in nodes:
        client.objects[netpolicy.NODES.path("", n["metadata"]["name"])] = n
    enforcer = netpolicy.Enforcer(client, table="pknp_x", dns_ip="10.96.0.10", use_nft=False)  # type: ignore[arg-type]
    enforcer.nodes._replace(nodes)
    asyncio.run(enforcer.sync())
    assert client.calls == [("patch:strategic", "/api/v1/nodes/proc", {"metadata": {"annotations": {
        netpolicy.ANNOTATION: "not enforced: nftables turned off"}}})]
    assert "ip saddr vmap" not in enforcer.script()
