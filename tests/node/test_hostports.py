"""hostPort forwarder: table names, which bridges count as local, the script it applies, conflict warnings."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from pocketkube.network import podnet
from pocketkube.node import hostports, proxy
from tests.node import fakes


def node(name: str, network: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "annotations": {podnet.ANNOTATION: network}}}


def pod(name: str, ip: str, *, node_name: str, created: str, host_port: int = 18080) -> dict[str, Any]:
    return {"metadata": {"namespace": "default", "name": name, "uid": f"uid-{name}", "creationTimestamp": created},
            "spec": {"nodeName": node_name,
                     "containers": [{"name": "c", "ports": [{"containerPort": 8080, "hostPort": host_port}]}]},
            "status": {"phase": "Running", "podIP": ip}}


@pytest.fixture
def sys_net(tmp_path: Any) -> str:
    for bridge in ("pkb1", "pkb2"):
        os.makedirs(os.path.join(str(tmp_path), bridge))
    return str(tmp_path)


def forwarder(sys_net: str, *, pods: list[dict[str, Any]]) -> tuple[hostports.Forwarder, fakes.FakeClient]:
    client = fakes.FakeClient()
    f = hostports.Forwarder(client, table="pkhp_x", use_nft=False, sys_net=sys_net)  # type: ignore[arg-type]
    f.nodes._replace([node("n1", "bridge pkb1 10.1.0.1/24"), node("n2", "bridge pkb2 10.1.1.1/24"),
                      node("remote", "bridge pkb9 10.1.9.1/24"), node("host", "host network: no root")])
    f.pods._replace(pods)
    return f, client


def test_table_name_is_per_cluster() -> None:
    """Two data dirs get two tables, each a valid short nft identifier."""
    a, b = hostports.table_name("/tmp/a"), hostports.table_name("/tmp/b")
    assert a != b and a.startswith("pkhp_") and len(a) == 15


def test_local_bridges_are_the_ones_present_here(sys_net: str) -> None:
    """A bridge named by a node of another machine is not one of this host's."""
    assert hostports.local_bridges(["pkb1", "pkb9", "pkb2"], sys_net=sys_net) == ["pkb1", "pkb2"]


def test_plan_skips_pods_of_nodes_without_a_local_bridge(sys_net: str) -> None:
    """Pods of a remote node or a host-network node get no mapping; a local node's pod does."""
    f, _ = forwarder(sys_net, pods=[pod("a", "10.1.0.2", node_name="n1", created="2026-01-01T00:00:00Z"),
                                    pod("r", "10.1.9.2", node_name="remote", created="2026-01-01T00:00:00Z",
                                        host_port=18081)])
    mappings, conflicts = f.plan()
    assert [(m.pod, m.node, m.host_port) for m in mappings] == [("a", "n1", 18080)]
    assert conflicts == []
    assert "dnat to 10.1.0.2:8080" in f.script()


def test_sync_warns_the_newer_pod_once(sys_net: str) -> None:
    """A hostPort two nodes handed out goes to the older pod; the newer gets one HostPortConflict Warning."""
    f, client = forwarder(sys_net, pods=[pod("new", "10.1.1.2", node_name="n2", created="2026-01-01T00:00:09Z"),
                                         pod("old", "10.1.0.2", node_name="n1", created="2026-01-01T00:00:00Z")])

    async def go() -> None:
        await f.sync()
        await f.sync()
        for r in f._recorders.values():
            await r.close()

    asyncio.run(go())
    events = [body for verb, _, body in client.calls if verb == "create"]
    assert len(events) == 1
    ev = events[0]
    assert (ev["type"], ev["reason"], ev["involvedObject"]["name"], ev["source"]) == (
        "Warning", "HostPortConflict", "new", {"component": "kubelet", "host": "n2"})
    assert ev["message"].startswith("hostPort 0.0.0.0:18080/TCP is not forwarded to this pod: pod default/old")
    assert "10.1.1.2" not in f.script()


def test_sync_without_nftables_applies_nothing(sys_net: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With nftables unavailable no nft script is run, and close() has nothing to remove."""
    ran: list[str] = []

    async def fake_nft(script: str) -> str:
        ran.append(script)
        return ""

    monkeypatch.setattr(proxy, "run_nft", fake_nft)
    f, _ = forwarder(sys_net, pods=[pod("a", "10.1.0.2", node_name="n1", created="2026-01-01T00:00:00Z")])
    asyncio.run(f.sync())
    asyncio.run(f.close())
    assert ran == []


def test_sync_applies_only_changed_scripts(sys_net: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The table is replaced when the plan changes, not on every event, and removed on close."""
    ran: list[str] = []

    async def fake_nft(script: str) -> str:
        ran.append(script)
        return ""

    monkeypatch.setattr(proxy, "run_nft", fake_nft)
    monkeypatch.setattr(hostports, "route_localnet", lambda bridge: None)
    f, _ = forwarder(sys_net, pods=[pod("a", "10.1.0.2", node_name="n1", created="2026-01-01T00:00:00Z")])
    f.problem = ""

    async def go() -> None:
        await f.sync()
        await f.sync()
        f.pods._replace([])
        await f.sync()
        await f.close()

    asyncio.run(go())
    assert len(ran) == 3
    assert "dnat to 10.1.0.2:8080" in ran[0] and "dnat" not in ran[1]
    assert ran[2] == "table ip pkhp_x\ndelete table ip pkhp_x\n"
