"""End to end: issue 5's items no other module covered (secretbox, Request level, PodSecurity audit, APF 429, nesting)."""

from __future__ import annotations

import base64
import collections.abc
import json
import os
import socket
import sqlite3
import time
from typing import Any

import pytest

from tests.e2e import cluster as cluster_mod
from tests.e2e import http

KEY = base64.b64encode(bytes(range(32))).decode()
ENCRYPTION = f"""apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - secretbox:
          keys:
            - name: box1
              secret: {KEY}
      - identity: {{}}
"""
POLICY = """apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    userGroups: ["system:nodes", "system:serviceaccounts"]
  - level: Metadata
    users: ["system:kube-controller-manager"]
    verbs: [create]
    resources: [{group: apps, resources: [replicasets]}]
  - level: Metadata
    users: ["system:kube-scheduler"]
    verbs: [create]
    resources: [{group: "", resources: [pods/binding]}]
  - level: None
    users: ["system:kube-controller-manager", "system:kube-scheduler", "system:pocketkube-ingress",
            "system:kube-proxy", "system:pocketkube-network-policy"]
  - level: None
    nonResourceURLs: ["/healthz*", "/readyz*", "/livez*", "/openapi*", "/api", "/apis", "/api/*", "/apis/*"]
  - level: Request
    resources: [{group: "", resources: [configmaps]}]
  - level: Metadata
"""
TOKENS = 'bob-token,bob,uid-bob,"devs"\n'
SECRET_VALUE = "boxed-s3cret-value"


@pytest.fixture(scope="module")
def hardened(tmp_path_factory: pytest.TempPathFactory) -> collections.abc.Iterator[cluster_mod.Cluster]:
    """secretbox at rest, an audit policy, a token user bob, a one-node virtual fleet and a tiny APF budget."""
    base = str(tmp_path_factory.mktemp("gaps"))
    files = {"enc.yaml": ENCRYPTION, "policy.yaml": POLICY, "tokens.csv": TOKENS}
    for name, text in files.items():
        with open(os.path.join(base, name), "w") as f:
            f.write(text)
    data = os.path.join(base, "data")
    c = cluster_mod.Cluster(data).start(args=[
        "--encryption-provider-config", os.path.join(base, "enc.yaml"),
        "--audit-policy-file", os.path.join(base, "policy.yaml"),
        "--audit-log-path", os.path.join(base, "audit.log"),
        "--token-auth-file", os.path.join(base, "tokens.csv"),
        "--virtual-nodes", "1",
        # one seat per priority level: a single slow request of bob's fills global-default
        "--max-requests-inflight", "1", "--max-mutating-requests-inflight", "1"])
    try:
        yield c
    finally:
        c.stop()


def _audit(c: cluster_mod.Cluster) -> list[dict[str, Any]]:
    with open(os.path.join(os.path.dirname(c.data_dir), "audit.log")) as f:
        return [json.loads(line) for line in f if line.strip()]


def _find(c: cluster_mod.Cluster, *, verb: str, resource: str, name: str = "",
          subresource: str = "") -> list[dict[str, Any]]:
    def check() -> list[dict[str, Any]]:
        out = []
        for e in _audit(c):
            ref = e.get("objectRef") or {}
            if (e["verb"], ref.get("resource"), ref.get("subresource", "")) == (verb, resource, subresource) \
                    and (not name or ref.get("name") == name):
                out.append(e)
        return out
    return cluster_mod.eventually(check, what=f"audit events for {verb} {resource}/{subresource} {name}")


def test_secretbox_keeps_secret_values_out_of_the_store(hardened: cluster_mod.Cluster) -> None:
    """With a secretbox provider first, a Secret reads back whole but is stored as k8s:enc:secretbox:v1:box1:..."""
    hardened.kubectl("create", "secret", "generic", "boxed", f"--from-literal=pw={SECRET_VALUE}")
    got = hardened.kubectl("get", "secret", "boxed", "-o", "jsonpath={.data.pw}").stdout
    assert base64.b64decode(got).decode() == SECRET_VALUE
    db = sqlite3.connect(f"file:{os.path.join(hardened.data_dir, 'state.db')}?mode=ro", uri=True)
    try:
        row = db.execute("select value from log where key = ? order by id desc limit 1",
                         ("/registry/core/secrets/default/boxed",)).fetchone()
    finally:
        db.close()
    assert bytes(row[0]).startswith(b"k8s:enc:secretbox:v1:box1:")
    for name in ("state.db", "state.db-wal"):
        path = os.path.join(hardened.data_dir, name)
        if os.path.exists(path):
            with open(path, "rb") as f:
                raw = f.read()
            assert SECRET_VALUE.encode() not in raw and base64.b64encode(SECRET_VALUE.encode()) not in raw, name


def test_request_level_logs_the_request_body_only(hardened: cluster_mod.Cluster) -> None:
    """At level Request an audit event carries requestObject but never responseObject."""
    hardened.kubectl("create", "configmap", "req-level", "--from-literal=mode=fast")
    [ev] = _find(hardened, verb="create", resource="configmaps", name="req-level")
    assert ev["level"] == "Request" and ev["stage"] == "ResponseComplete"
    assert ev["requestObject"]["data"] == {"mode": "fast"} and "responseObject" not in ev


def test_pod_security_audit_mode_annotates_the_event(hardened: cluster_mod.Cluster) -> None:
    """audit=restricted admits a root pod silently and puts kube's audit-violations annotation on its event."""
    hardened.kubectl("create", "namespace", "audited")
    hardened.kubectl("label", "namespace", "audited", "pod-security.kubernetes.io/audit=restricted")
    cp = hardened.kubectl("-n", "audited", "run", "rooty", "--image=nginx")
    assert cp.stderr == ""
    [ev] = _find(hardened, verb="create", resource="pods", name="rooty")
    assert ev["annotations"]["pod-security.kubernetes.io/enforce-policy"] == "privileged:latest"
    assert ev["annotations"]["pod-security.kubernetes.io/audit-violations"] == (
        'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container "rooty" must '
        'set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "rooty" must set '
        'securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container "rooty" must set '
        'securityContext.runAsNonRoot=true), seccompProfile (pod or container "rooty" must set '
        'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


def test_controllers_and_scheduler_act_as_themselves(hardened: cluster_mod.Cluster) -> None:
    """A Deployment's ReplicaSet is created by system:kube-controller-manager and its pod bound by system:kube-scheduler."""
    hardened.kubectl("create", "deployment", "ident", "--image=nginx")
    [rs] = _find(hardened, verb="create", resource="replicasets")
    assert rs["user"]["username"] == "system:kube-controller-manager"
    assert rs["objectRef"]["namespace"] == "default"
    bound = _find(hardened, verb="create", resource="pods", subresource="binding")
    assert {e["user"]["username"] for e in bound} == {"system:kube-scheduler"}


def _as_bob(c: cluster_mod.Cluster, method: str, path: str) -> tuple[int, dict[str, str], Any]:
    raw = http.Raw(c.kubeconfig)
    raw.ctx = raw.anon_ctx   # the bearer token alone, no client certificate
    return raw.request(method, path, headers={"Authorization": "Bearer bob-token"})


def test_a_full_priority_level_answers_429_with_retry_after(hardened: cluster_mod.Cluster) -> None:
    """While bob's slow request holds global-default's only seat, his next one waits a quarter of its timeout, then 429."""
    hardened.kubectl("create", "rolebinding", "bob-edit", "--clusterrole=edit", "--user=bob")
    cluster_mod.eventually(lambda: _as_bob(hardened, "GET", "/api/v1/namespaces/default/configmaps")[0] == 200,
                           what="bob to read configmaps")
    raw = http.Raw(hardened.kubeconfig)
    host, port = raw.url.hostname, raw.url.port
    assert host is not None and port is not None
    # a create whose body never finishes arriving keeps its seat until its own 20s deadline
    with raw.anon_ctx.wrap_socket(socket.create_connection((host, port)), server_hostname=host) as slow:
        slow.sendall(b"POST /api/v1/namespaces/default/configmaps?timeout=20s HTTP/1.1\r\nHost: x\r\n"
                     b"Authorization: Bearer bob-token\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"kind\"")
        time.sleep(0.5)
        start = time.monotonic()
        code, headers, body = _as_bob(hardened, "GET", "/api/v1/namespaces/default/configmaps?timeout=4s")
        waited = time.monotonic() - start
        # the admin (system:masters) is exempt and still served at once
        assert hardened.kubectl("get", "configmaps", "--request-timeout=3s").returncode == 0
    assert code == 429, body
    assert headers["retry-after"] == "1"
    assert "x-kubernetes-pf-flowschema-uid" in headers and "x-kubernetes-pf-prioritylevel-uid" in headers
    assert 0.8 < waited < 3.5, waited
    # kube's APF answers with http.Error's plain text, not a Status
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert body == b"Too many requests, please try again later.\n"
    # once the slow request is gone bob is served again
    cluster_mod.eventually(lambda: _as_bob(hardened, "GET", "/api/v1/namespaces/default/configmaps")[0] == 200,
                           timeout=30, what="bob to be served after the slow request ended")


NESTED_JSON = "[" * 20000 + "]" * 20000


@pytest.mark.parametrize(("method", "path", "content_type", "body"), [
    ("POST", "/api/v1/namespaces/default/configmaps", "application/json",
     '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"deep"},"x":' + NESTED_JSON + "}"),
    ("POST", "/api/v1/namespaces/default/configmaps", "application/yaml",
     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: deep}\nx: " + NESTED_JSON + "\n"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/target", "application/merge-patch+json",
     '{"x":' + '{"a":' * 20000 + "1" + "}" * 20000 + "}"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/target", "application/strategic-merge-patch+json",
     '{"x":' + '{"a":' * 20000 + "1" + "}" * 20000 + "}"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/target", "application/json-patch+json",
     '[{"op":"add","path":"/data/x","value":' + NESTED_JSON + "}]"),
    ("PATCH", "/api/v1/namespaces/default/configmaps/target?fieldManager=t", "application/apply-patch+yaml",
     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: target}\nx: " + NESTED_JSON + "\n"),
])
def test_deeply_nested_bodies_are_a_bad_request(hardened: cluster_mod.Cluster, method: str, path: str,
                                                content_type: str, body: str) -> None:
    """Bodies nested 20000 levels deep (under the size limit) are a 400 BadRequest, never a crash or a 5xx."""
    hardened.kubectl("create", "configmap", "target", check=False)
    raw = http.Raw(hardened.kubeconfig)
    code, _, status = raw.request(method, path, body, headers={"Content-Type": content_type}, timeout=30)
    assert (code, status["reason"]) == (400, "BadRequest"), status
    assert "depth" in status["message"], status["message"]
    assert raw.request("GET", "/readyz")[0] == 200


BAD_DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "typed"},
                  "spec": {"replicas": "2", "selector": {"matchLabels": {"a": "b"}},
                           "template": {"metadata": {"labels": {"a": "b"}},
                                        "spec": {"containers": [{"name": "c", "image": "nginx"}]}}}}


def test_fields_of_the_wrong_json_type_are_refused(hardened: cluster_mod.Cluster) -> None:
    """A value Go cannot decode is kube's 400 (422 on "patch" for patches), never stored to break later reads."""
    cp = hardened.kubectl("create", "-f", "-", input=json.dumps(BAD_DEPLOYMENT), check=False)
    assert cp.stderr == ('Error from server (BadRequest): error when creating "STDIN": Deployment in version "v1" '
                         'cannot be handled as a Deployment: json: cannot unmarshal string into Go struct field '
                         'DeploymentSpec.spec.replicas of type int32\n')
    # kubectl itself refuses ill-typed metadata with the same Go words, so this one goes raw
    labels = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "typed", "labels": "x"}}
    code, _, status = http.Raw(hardened.kubeconfig).request("POST", "/api/v1/namespaces/default/configmaps", labels)
    assert (code, status["reason"], status["message"]) == (
        400, "BadRequest", 'ConfigMap in version "v1" cannot be handled as a ConfigMap: json: cannot unmarshal '
                           'string into Go struct field ObjectMeta.metadata.labels of type map[string]string')
    hardened.kubectl("create", "configmap", "typed")
    cp = hardened.kubectl("patch", "configmap", "typed", "--type=merge", "-p", '{"data":{"n":1}}', check=False)
    assert cp.returncode == 1 and cp.stderr.startswith('The request is invalid: patch: Invalid value: "{')
    assert cp.stderr.endswith('": json: cannot unmarshal number into Go struct field ConfigMap.data of type string\n')
    # nothing ill-typed was stored, so label selectors and tables keep working
    assert hardened.kubectl("get", "configmaps", "-l", "a=b").returncode == 0
    assert hardened.kubectl("get", "configmap", "typed", "-o", "jsonpath={.data}").stdout == ""
