"""Service environment variables (enableServiceLinks) as the kubelet writes them."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.node import envvars
from tests.node import fakes


def _svc(name: str, ip: str, ports: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"clusterIP": ip, "ports": ports, **spec}}


@pytest.mark.parametrize(("services", "want"), [
    ([_svc("redis-primary", "10.96.0.20", [{"port": 6379, "protocol": "TCP"}])], {
        "REDIS_PRIMARY_SERVICE_HOST": "10.96.0.20", "REDIS_PRIMARY_SERVICE_PORT": "6379",
        "REDIS_PRIMARY_PORT": "tcp://10.96.0.20:6379", "REDIS_PRIMARY_PORT_6379_TCP": "tcp://10.96.0.20:6379",
        "REDIS_PRIMARY_PORT_6379_TCP_PROTO": "tcp", "REDIS_PRIMARY_PORT_6379_TCP_PORT": "6379",
        "REDIS_PRIMARY_PORT_6379_TCP_ADDR": "10.96.0.20"}),
    ([_svc("dns", "10.96.0.10", [{"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                                 {"name": "dns", "port": 53, "protocol": "UDP"}])], {
        "DNS_SERVICE_HOST": "10.96.0.10", "DNS_SERVICE_PORT": "53", "DNS_SERVICE_PORT_DNS_TCP": "53",
        "DNS_SERVICE_PORT_DNS": "53", "DNS_PORT": "tcp://10.96.0.10:53",
        "DNS_PORT_53_TCP": "tcp://10.96.0.10:53", "DNS_PORT_53_TCP_PROTO": "tcp", "DNS_PORT_53_TCP_PORT": "53",
        "DNS_PORT_53_TCP_ADDR": "10.96.0.10", "DNS_PORT_53_UDP": "udp://10.96.0.10:53",
        "DNS_PORT_53_UDP_PROTO": "udp", "DNS_PORT_53_UDP_PORT": "53", "DNS_PORT_53_UDP_ADDR": "10.96.0.10"}),
    ([_svc("headless", "None", [{"port": 80}]), _svc("ext", "", [{"port": 80}], type="ExternalName")], {}),
])
def test_service_link_env(services: list[dict[str, Any]], want: dict[str, str]) -> None:
    """Each service with a ClusterIP gives _SERVICE_HOST/_PORT(_NAME) and the docker-link style _PORT_* variables."""
    assert envvars.service_link_env(services) == want


class _Lister:
    """A synced (or not yet synced) service cache."""

    def __init__(self, services: list[dict[str, Any]] | None) -> None:
        self.services = services

    def namespace(self, namespace: str) -> list[dict[str, Any]] | None:
        if self.services is None:
            return None
        return [s for s in self.services if s["metadata"].get("namespace") == namespace]

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return next((s for s in self.services or [] if s["metadata"] == {"namespace": namespace, "name": name}), None)


POD = {"metadata": {"name": "p", "namespace": "ns"}, "spec": {}}
WEB = {"metadata": {"name": "web", "namespace": "ns"}, "spec": {"clusterIP": "10.96.0.30", "ports": [{"port": 80}]}}
MASTER = {"metadata": {"name": "kubernetes", "namespace": "default"},
          "spec": {"clusterIP": "10.96.0.1", "ports": [{"name": "https", "port": 443}]}}


async def test_service_links_come_from_a_synced_cache_without_api_reads() -> None:
    """With a synced service cache, a container's service and master variables cost no API request."""
    client = fakes.FakeClient()
    env = await envvars.resolve(client, POD, {"name": "c"}, allocatable={}, in_pod_network=True,
                                services=_Lister([WEB, MASTER]))
    assert env["WEB_SERVICE_HOST"] == "10.96.0.30" and env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert client.calls == []


async def test_service_links_read_the_api_until_the_cache_is_synced() -> None:
    """Before the cache has listed once, the services are read from the API, as without a cache."""
    client = fakes.FakeClient()
    client.objects["/api/v1/namespaces/ns/services"] = {"items": [WEB]}
    client.objects["/api/v1/namespaces/default/services/kubernetes"] = MASTER
    env = await envvars.resolve(client, POD, {"name": "c"}, allocatable={}, in_pod_network=True,
                                services=_Lister(None))
    assert env["WEB_SERVICE_HOST"] == "10.96.0.30" and env["KUBERNETES_SERVICE_HOST"] == "10.96.0.1"
    assert [c[1] for c in client.calls] == ["/api/v1/namespaces/ns/services",
                                            "/api/v1/namespaces/default/services/kubernetes"]
