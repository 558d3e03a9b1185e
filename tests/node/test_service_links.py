"""Service environment variables (enableServiceLinks) as the kubelet writes them."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.node import envvars


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
