"""End to end: API Priority and Fairness objects and headers, the timeout parameter and slow clients."""

from __future__ import annotations

import re
import socket
import time

from tests.e2e import cluster as cluster_mod
from tests.e2e import http

FLOW_SCHEMAS = ["exempt", "probes", "system-leader-election", "endpoint-controller", "workload-leader-election",
                "system-node-high", "system-nodes", "kube-controller-manager", "kube-scheduler",
                "kube-system-service-accounts", "service-accounts", "global-default", "catch-all"]


def test_default_flow_schemas_and_priority_levels(cluster: cluster_mod.Cluster) -> None:
    """kubectl lists kube's default FlowSchemas by precedence and its priority levels, none dangling."""
    out = cluster.kubectl("get", "flowschemas").stdout.splitlines()
    assert re.split(r"\s{2,}", out[0]) == ["NAME", "PRIORITYLEVEL", "MATCHINGPRECEDENCE", "DISTINGUISHERMETHOD",
                                           "AGE", "MISSINGPL"]
    rows = [line.split() for line in out[1:]]
    assert [r[0] for r in rows] == FLOW_SCHEMAS
    assert rows[0][1:4] == ["exempt", "1", "<none>"] and rows[-1][1:4] == ["catch-all", "10000", "ByUser"]
    assert {r[-1] for r in rows} == {"False"}
    levels = cluster.kubectl("get", "prioritylevelconfigurations").stdout.splitlines()
    assert levels[0].split() == ["NAME", "TYPE", "NOMINALCONCURRENCYSHARES", "QUEUES", "HANDSIZE",
                                 "QUEUELENGTHLIMIT", "AGE"]
    by_name = {line.split()[0]: line.split()[1:6] for line in levels[1:]}
    assert by_name["global-default"] == ["Limited", "20", "128", "6", "50"]
    assert by_name["exempt"] == ["Exempt", "<none>", "<none>", "<none>", "<none>"]
    assert by_name["catch-all"] == ["Limited", "5", "<none>", "<none>", "<none>"]
    assert len(by_name) == 8


def _pf_headers(cluster: cluster_mod.Cluster, *args: str) -> tuple[str, str]:
    trace = cluster.kubectl(*args, "-v=8", check=False).stderr
    fs = re.findall(r"X-Kubernetes-Pf-Flowschema-Uid: (\S+)", trace)
    pl = re.findall(r"X-Kubernetes-Pf-Prioritylevel-Uid: (\S+)", trace)
    assert fs and pl, trace[-2000:]
    return fs[-1], pl[-1]


def test_responses_name_the_flow_schema_and_priority_level(cluster: cluster_mod.Cluster) -> None:
    """Each response carries the UIDs of the FlowSchema and level it was classified to, even a 403."""
    uid = lambda kind, name: cluster.kubectl("get", kind, name, "-o", "jsonpath={.metadata.uid}").stdout  # noqa: E731

    def classified() -> bool:
        return _pf_headers(cluster, "get", "ns", "default") == (uid("flowschema", "exempt"),
                                                                 uid("prioritylevelconfiguration", "exempt"))
    cluster_mod.eventually(classified, what="admin requests classified as exempt")
    assert _pf_headers(cluster, "get", "configmaps", "--as=alice") == (
        uid("flowschema", "global-default"), uid("prioritylevelconfiguration", "global-default"))


def test_timeout_parameter(cluster: cluster_mod.Cluster) -> None:
    """A malformed timeout is a 400 with kube's message; a valid one is accepted."""
    raw = http.Raw(cluster.kubeconfig)
    code, _, body = raw.request("GET", "/api/v1/namespaces/default/configmaps?timeout=soon")
    assert (code, body["reason"]) == (400, "BadRequest")
    assert body["message"] == 'invalid timeout specified in the request URL - time: invalid duration "soon"'
    code, _, _ = raw.request("GET", "/api/v1/namespaces/default/configmaps?timeout=5s")
    assert code == 200
    assert cluster.kubectl("get", "configmaps", "--request-timeout=20s").returncode == 0


def test_trickling_body_is_cut_off_with_504(cluster: cluster_mod.Cluster) -> None:
    """A body that never finishes arriving ends in kube's 504 once the request's deadline passes."""
    raw = http.Raw(cluster.kubeconfig)
    host, port = raw.url.hostname, raw.url.port
    assert host is not None and port is not None
    with raw.ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host) as s:
        start = time.monotonic()
        s.sendall(b"POST /api/v1/namespaces/default/configmaps?timeout=1s HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"kind\"")
        s.settimeout(10)
        data = b""
        while b'"code":504}' not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"HTTP/1.1 504"), data
    assert time.monotonic() - start < 5
    assert (b'"message":"Timeout: request did not complete within requested timeout - context deadline exceeded",'
            b'"reason":"Timeout","details":{},"code":504}') in data
