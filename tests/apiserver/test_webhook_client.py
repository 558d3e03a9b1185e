"""Where a webhook Service is dialled: the pod IP when pods have their own network, else the host."""

from __future__ import annotations

import types
from typing import Any

import pytest

from pocketkube.apiserver import webhook_client


class _Objects:
    def __init__(self, objs: dict[tuple[str, str], dict[str, Any]]) -> None:
        self.objs = objs

    async def get_or_none(self, res: Any, namespace: str, name: str) -> dict[str, Any] | None:
        return self.objs.get((res, name))


def _server(*, annotation: str = "", cluster_ip: str = "10.96.0.10") -> Any:
    objs = {
        ("services", "hook"): {"spec": {"type": "ClusterIP", "clusterIP": cluster_ip,
                                        "ports": [{"name": "https", "port": 443, "targetPort": 8443}]}},
        ("endpoints", "hook"): {"subsets": [{"addresses": [{"ip": "10.244.1.5", "nodeName": "n1"}],
                                             "ports": [{"name": "https", "port": 8443}]}]},
        ("nodes", "n1"): {"metadata": {"annotations": {"pocketkube.io/pod-network": annotation} if annotation else {}}},
    }
    return types.SimpleNamespace(registry=types.SimpleNamespace(get=lambda g, v, r: r), objects=_Objects(objs))


@pytest.mark.parametrize(("annotation", "want"), [
    ("bridge pk0 10.244.1.1/24", ("10.244.1.5", 8443)),
    ("", ("127.0.0.1", 8443)),
    ("host network: not root", ("127.0.0.1", 8443)),
])
async def test_resolve_service(annotation: str, want: tuple[str, int]) -> None:
    """A pod-network node's endpoint is dialled at its pod IP; otherwise the port on the host (pods share its network)."""
    assert await webhook_client.resolve_service(_server(annotation=annotation), "ns", "hook", 443) == want


async def test_headless_service_is_refused() -> None:
    """A headless Service cannot be routed to, as kube's ClusterIP resolver says."""
    with pytest.raises(Exception, match='cannot route to service with ClusterIP "None"'):
        await webhook_client.resolve_service(_server(cluster_ip="None"), "ns", "hook", 443)
