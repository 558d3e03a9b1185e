"""End to end: an audit policy decides levels; kubectl's requests show up in the log as kube-apiserver writes them."""

from __future__ import annotations

import collections.abc
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest

from pocketkube.apiserver import negotiate
from tests.e2e import cluster as cluster_mod

POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/openapi*", "/api", "/apis", "/api/*", "/apis/*"]
  - level: None
    userGroups: ["system:nodes", "system:serviceaccounts"]
  - level: None
    users: ["system:kube-controller-manager", "system:kube-scheduler", "system:pocketkube-ingress",
            "system:kube-proxy", "system:pocketkube-network-policy", "system:pocketkube-hostports"]
  - level: Metadata
    resources: [{group: "", resources: [secrets]}]
  - level: RequestResponse
    resources: [{group: "", resources: [configmaps]}]
    omitManagedFields: true
  - level: Request
    verbs: [watch]
  - level: Metadata
"""
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}"
MICRO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    data = str(tmp_path_factory.mktemp("audit"))
    policy = os.path.join(data, "policy.yaml")
    with open(policy, "w") as f:
        f.write(POLICY)
    c = cluster_mod.Cluster(data).start(args=["--audit-policy-file", policy,
                                              "--audit-log-path", os.path.join(data, "audit", "audit.log")])
    try:
        yield c
    finally:
        c.stop()


def events(c: cluster_mod.Cluster) -> list[dict[str, Any]]:
    with open(os.path.join(c.data_dir, "audit", "audit.log")) as f:
        return [json.loads(line) for line in f if line.strip()]


def find(c: cluster_mod.Cluster, **match: Any) -> list[dict[str, Any]]:
    """Events whose top-level fields (and objectRef fields, given as ref_*) equal the given values, once logged."""
    def check() -> list[dict[str, Any]]:
        found = []
        for e in events(c):
            ref = e.get("objectRef") or {}
            if all((ref.get(k[4:]) if k.startswith("ref_") else e.get(k)) == v for k, v in match.items()):
                found.append(e)
        return found
    return cluster_mod.eventually(check, what=f"audit events {match}")


def test_secret_create_is_metadata_only(audited: cluster_mod.Cluster) -> None:
    """kubectl create secret logs one Metadata event: who, what, status and decision, never the data."""
    audited.kubectl("create", "secret", "generic", "api-key", "--from-literal=key=s3cr3t-v4lue")
    [ev] = find(audited, verb="create", ref_resource="secrets", ref_name="api-key")
    assert ev["kind"] == "Event" and ev["apiVersion"] == "audit.k8s.io/v1"
    assert ev["level"] == "Metadata" and ev["stage"] == "ResponseComplete"
    assert re.fullmatch(UUID, ev["auditID"])
    assert ev["requestURI"].startswith("/api/v1/namespaces/default/secrets?fieldManager=kubectl-create")
    assert ev["user"] == {"username": "pocketkube-admin", "groups": ["system:masters", "system:authenticated"]}
    assert ev["sourceIPs"] == ["127.0.0.1"] and ev["userAgent"].startswith("kubectl/")
    assert ev["objectRef"] == {"resource": "secrets", "namespace": "default", "name": "api-key", "apiVersion": "v1"}
    assert ev["responseStatus"] == {"metadata": {}, "code": 201}
    assert "requestObject" not in ev and "responseObject" not in ev
    assert re.fullmatch(MICRO, ev["requestReceivedTimestamp"]) and re.fullmatch(MICRO, ev["stageTimestamp"])
    assert ev["annotations"] == {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""}
    with open(os.path.join(audited.data_dir, "audit", "audit.log")) as f:
        assert "s3cr3t" not in f.read() and "czNjcjN0" not in f.read()


def test_configmap_at_request_response(audited: cluster_mod.Cluster) -> None:
    """A ConfigMap create and get carry the response body (without managedFields); the Audit-Id header matches."""
    audited.kubectl("create", "configmap", "settings", "--from-literal=mode=fast")
    [created] = find(audited, verb="create", ref_resource="configmaps", ref_name="settings")
    assert created["level"] == "RequestResponse"
    assert created["responseObject"]["data"] == {"mode": "fast"}
    assert "managedFields" not in created["responseObject"]["metadata"]
    if hasattr(negotiate, "BODY_KEY"):
        assert created["requestObject"]["data"] == {"mode": "fast"}
    got = audited.kubectl("get", "configmap", "settings", "-v=8")
    audit_ids = re.findall(r"Audit-Id: (" + UUID + ")", got.stderr)
    assert audit_ids
    [ev] = find(audited, auditID=audit_ids[-1])
    # kubectl asks for a Table: that is the response body kube logs too
    assert ev["verb"] == "get" and ev["responseObject"]["kind"] == "Table"


def test_errors_and_denials(audited: cluster_mod.Cluster) -> None:
    """A 404 logs the Status; an impersonated user without rights logs impersonatedUser and a forbid decision."""
    audited.kubectl("get", "secret", "nope", check=False)
    [missing] = find(audited, verb="get", ref_resource="secrets", ref_name="nope")
    assert missing["responseStatus"] == {"metadata": {}, "status": "Failure",
                                         "message": 'secrets "nope" not found', "reason": "NotFound",
                                         "details": {"name": "nope", "kind": "secrets"}, "code": 404}
    denied = audited.kubectl("get", "secrets", "-n", "kube-system", "--as=eve", check=False)
    assert denied.returncode != 0
    [ev] = find(audited, verb="list", ref_namespace="kube-system", ref_resource="secrets")
    assert ev["impersonatedUser"] == {"username": "eve", "groups": ["system:authenticated"]}
    assert ev["responseStatus"]["code"] == 403 and ev["responseStatus"]["reason"] == "Forbidden"
    assert ev["annotations"]["authorization.k8s.io/decision"] == "forbid"


def test_watch_logs_response_started(audited: cluster_mod.Cluster) -> None:
    """A watch is long-running: ResponseStarted when it begins, ResponseComplete when it ends (RequestReceived omitted)."""
    audited.kubectl("get", "--raw", "/api/v1/pods?watch=true&timeoutSeconds=1")

    def both() -> list[dict[str, Any]]:
        found = find(audited, verb="watch", ref_resource="pods")
        return found if len(found) >= 2 else []
    found = cluster_mod.eventually(both, what="both watch stages")
    assert [e["stage"] for e in found] == ["ResponseStarted", "ResponseComplete"]
    assert found[0]["auditID"] == found[1]["auditID"] and {e["level"] for e in found} == {"Request"}
    assert found[0]["responseStatus"] == {"metadata": {}, "code": 200}


def test_bad_policy_stops_up(tmp_path: str) -> None:
    """An invalid policy fails `pocketkube up` with kube's message naming the field and the file."""
    policy = os.path.join(tmp_path, "policy.yaml")
    with open(policy, "w") as f:
        f.write("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Everything\n")
    cp = subprocess.run([sys.executable, "-m", "pocketkube", "up", "--data-dir", os.path.join(tmp_path, "d"),
                         "--port", "0", "--audit-policy-file", policy, "--audit-log-path", "-"],
                        cwd=cluster_mod.ROOT, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 1
    assert ('rules[0].level: Unsupported value: "Everything": supported values: "None", "Metadata", "Request", '
            f'"RequestResponse": from file {policy}') in cp.stderr
