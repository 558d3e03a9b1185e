"""End to end: mutating and validating admission webhooks called over HTTPS, as a real v1.32 server calls them."""

from __future__ import annotations

import base64
import collections.abc
import datetime
import http.server
import ipaddress
import json
import os
import socket
import ssl
import tempfile
import threading
import time
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import cluster as cluster_mod

_SERVICE_HOST = "hooks.webhooks.svc"


def _pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _certificates() -> tuple[bytes, bytes, bytes]:
    """A fresh CA and a serving certificate for 127.0.0.1 and the webhook Service's name: (ca, cert, key)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook-test-ca")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName(_SERVICE_HOST)]), critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    return (ca.public_bytes(serialization.Encoding.PEM), cert.public_bytes(serialization.Encoding.PEM), _pem(key))


class _Handler(http.server.BaseHTTPRequestHandler):
    """Webhook endpoints by path; every AdmissionReview received is recorded on the server."""

    server: _WebhookServer

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        request = body["request"]
        self.server.reviews.append((self.path, body))
        path = self.path.split("?", 1)[0]
        obj = request.get("object") or {}
        labels = (obj.get("metadata") or {}).get("labels") or {}
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if path == "/deny-labelled" and labels.get("deny") == "true":
            response = {"uid": request["uid"], "allowed": False,
                        "status": {"code": 403, "message": "pods labelled deny=true are not welcome here"}}
        elif path == "/deny-all":
            response = {"uid": request["uid"], "allowed": False, "status": {"message": "nothing passes"}}
        elif path == "/add-label":
            if labels:
                ops = [{"op": "add", "path": "/metadata/labels/mutated", "value": "yes"}]
            else:
                ops = [{"op": "add", "path": "/metadata/labels", "value": {"mutated": "yes"}}]
            response.update(patchType="JSONPatch", patch=base64.b64encode(json.dumps(ops).encode()).decode(),
                            auditAnnotations={"touched": "true"})
        elif path == "/warn":
            response["warnings"] = ["the image tag latest is discouraged"]
        elif path == "/slow":
            time.sleep(2.5)
        out = json.dumps({"apiVersion": body["apiVersion"], "kind": "AdmissionReview", "response": response}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)


class _WebhookServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, cert: bytes, key: bytes) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.reviews: list[tuple[str, dict[str, Any]]] = []
        d = tempfile.mkdtemp()
        cert_path, key_path = os.path.join(d, "tls.crt"), os.path.join(d, "tls.key")
        with open(cert_path, "wb") as f:
            f.write(cert)
        with open(key_path, "wb") as f:
            f.write(key)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
        self.socket = ctx.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])


@pytest.fixture(scope="module")
def hooks() -> collections.abc.Iterator[tuple[_WebhookServer, str]]:
    """A running HTTPS webhook server and the caBundle that trusts it."""
    ca, cert, key = _certificates()
    server = _WebhookServer(cert, key)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, base64.b64encode(ca).decode()
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(kind: str, name: str, namespace: str, client_config: dict[str, Any], **extra: Any) -> str:
    """A one-webhook configuration for pods in one namespace (so tests sharing the cluster never meet)."""
    hook: dict[str, Any] = {
        "name": f"{name}.example.com", "clientConfig": client_config,
        "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["pods"]}],
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
        "sideEffects": "None", "admissionReviewVersions": ["v1"], **extra}
    return json.dumps({"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                       "metadata": {"name": name}, "webhooks": [hook]})


def _url(hooks: tuple[_WebhookServer, str], path: str) -> dict[str, Any]:
    server, ca = hooks
    return {"url": f"https://127.0.0.1:{server.port}{path}", "caBundle": ca}


def _setup(cluster: cluster_mod.Cluster, namespace: str, *configs: str) -> None:
    cluster.kubectl("create", "namespace", namespace)
    for config in configs:
        cluster.kubectl("apply", "-f", "-", input=config)


def test_validating_webhook_denies_labelled_pod(cluster: cluster_mod.Cluster,
                                                hooks: tuple[_WebhookServer, str]) -> None:
    """A validating webhook's refusal reaches kubectl as `admission webhook "x" denied the request` with its code."""
    _setup(cluster, "vw", _config("ValidatingWebhookConfiguration", "deny-labelled", "vw",
                                  _url(hooks, "/deny-labelled")))
    cp = cluster.kubectl("-n", "vw", "run", "bad", "--image=busybox", "--labels=deny=true", check=False)
    assert cp.returncode == 1
    # The webhook gave a code but no reason, so kubectl names no reason either.
    assert cp.stderr == ('Error from server: admission webhook "deny-labelled.example.com" denied the '
                         "request: pods labelled deny=true are not welcome here\n")
    cp = cluster.kubectl("-n", "vw", "run", "good", "--image=busybox")
    assert cp.stdout == "pod/good created\n"
    path, review = hooks[0].reviews[-1]
    assert path == "/deny-labelled?timeout=10s"
    req = review["request"]
    assert review["apiVersion"] == "admission.k8s.io/v1"
    assert req["kind"] == {"group": "", "version": "v1", "kind": "Pod"}
    assert req["resource"] == {"group": "", "version": "v1", "resource": "pods"}
    assert req["requestKind"] == req["kind"] and req["requestResource"] == req["resource"]
    assert (req["name"], req["namespace"], req["operation"], req["dryRun"]) == ("good", "vw", "CREATE", False)
    assert req["userInfo"]["username"] == "pocketkube-admin"
    assert "system:authenticated" in req["userInfo"]["groups"]
    assert req["object"]["metadata"]["name"] == "good" and req["oldObject"] is None
    assert req["options"]["kind"] == "CreateOptions" and req["options"]["fieldManager"] == "kubectl-run"


def test_denial_without_reason_is_a_400(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """A refusal without a code is a 400 with no reason, which kubectl prints as a bare `Error from server`."""
    _setup(cluster, "deny", _config("ValidatingWebhookConfiguration", "deny-all", "deny", _url(hooks, "/deny-all")))
    cp = cluster.kubectl("-n", "deny", "create", "configmap", "c", check=False)
    assert cp.returncode == 0, "the rule names pods only"
    cp = cluster.kubectl("-n", "deny", "run", "p", "--image=busybox", check=False)
    assert cp.stderr == ('Error from server: admission webhook "deny-all.example.com" denied the request: '
                         "nothing passes\n")


def test_mutating_webhook_adds_label(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """A JSONPatch from a mutating webhook is applied before the pod is stored."""
    _setup(cluster, "mw", _config("MutatingWebhookConfiguration", "add-label", "mw", _url(hooks, "/add-label")))
    cluster.kubectl("-n", "mw", "run", "plain", "--image=busybox", "--labels=app=web")
    pod = cluster.json("-n", "mw", "get", "pod", "plain")
    assert pod["metadata"]["labels"] == {"app": "web", "mutated": "yes"}
    cluster.kubectl("-n", "mw", "apply", "-f", "-", input=json.dumps(
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bare"},
         "spec": {"containers": [{"name": "c", "image": "busybox"}]}}))
    assert cluster.json("-n", "mw", "get", "pod", "bare")["metadata"]["labels"] == {"mutated": "yes"}


def test_service_reference_is_resolved_to_endpoints(cluster: cluster_mod.Cluster,
                                                    hooks: tuple[_WebhookServer, str]) -> None:
    """clientConfig.service is dialed through the Service's endpoints and verified as <name>.<namespace>.svc."""
    server, ca = hooks
    cluster.kubectl("create", "namespace", "webhooks")
    cluster.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "hooks", "namespace": "webhooks"},
         "spec": {"ports": [{"name": "https", "port": 443, "targetPort": server.port}]}},
        {"apiVersion": "v1", "kind": "Endpoints", "metadata": {"name": "hooks", "namespace": "webhooks"},
         "subsets": [{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": server.port}]}]}]}))
    service = {"service": {"namespace": "webhooks", "name": "hooks", "path": "/deny-labelled"}, "caBundle": ca}
    _setup(cluster, "svc", _config("ValidatingWebhookConfiguration", "via-service", "svc", service))
    cp = cluster.kubectl("-n", "svc", "run", "bad", "--image=busybox", "--labels=deny=true", check=False)
    assert 'admission webhook "via-service.example.com" denied the request' in cp.stderr
    missing = {"service": {"namespace": "webhooks", "name": "gone", "path": "/x"}, "caBundle": ca}
    cluster.kubectl("apply", "-f", "-", input=_config("ValidatingWebhookConfiguration", "via-service", "svc", missing))
    cp = cluster.kubectl("-n", "svc", "run", "p", "--image=busybox", check=False)
    assert cp.stderr == ('Error from server (InternalError): Internal error occurred: failed calling webhook '
                         '"via-service.example.com": failed to call webhook: Post '
                         '"https://gone.webhooks.svc:443/x?timeout=10s": service "gone" not found\n')


def test_failure_policy_with_the_server_down(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """With nothing listening, failurePolicy Fail refuses with kube's InternalError and Ignore lets the pod in."""
    port = _free_port()
    down = {"url": f"https://127.0.0.1:{port}/validate", "caBundle": hooks[1]}
    _setup(cluster, "down", _config("ValidatingWebhookConfiguration", "down", "down", down))
    cp = cluster.kubectl("-n", "down", "run", "p", "--image=busybox", check=False)
    assert cp.stderr == ('Error from server (InternalError): Internal error occurred: failed calling webhook '
                         f'"down.example.com": failed to call webhook: Post "https://127.0.0.1:{port}/validate'
                         f'?timeout=10s": dial tcp 127.0.0.1:{port}: connect: connection refused\n')
    cluster.kubectl("apply", "-f", "-", input=_config("ValidatingWebhookConfiguration", "down", "down", down,
                                                      failurePolicy="Ignore"))
    cp = cluster.kubectl("-n", "down", "run", "p", "--image=busybox")
    assert cp.stdout == "pod/p created\n"


def test_untrusted_certificate_fails_the_call(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """Without the right caBundle the TLS handshake fails and so does the request."""
    server, _ = hooks
    untrusted = {"url": f"https://127.0.0.1:{server.port}/deny-all"}
    _setup(cluster, "tls", _config("ValidatingWebhookConfiguration", "untrusted", "tls", untrusted))
    cp = cluster.kubectl("-n", "tls", "run", "p", "--image=busybox", check=False)
    assert cp.stderr.endswith("tls: failed to verify certificate: x509: certificate signed by unknown authority\n")


def test_timeout(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """A webhook slower than timeoutSeconds fails the call (context deadline exceeded), or is skipped with Ignore."""
    _setup(cluster, "slow", _config("ValidatingWebhookConfiguration", "slow", "slow", _url(hooks, "/slow"),
                                    timeoutSeconds=1))
    started = time.monotonic()
    cp = cluster.kubectl("-n", "slow", "run", "p", "--image=busybox", check=False)
    assert time.monotonic() - started < 2.4
    assert cp.stderr == ('Error from server (InternalError): Internal error occurred: failed calling webhook '
                         f'"slow.example.com": failed to call webhook: Post "https://127.0.0.1:{hooks[0].port}'
                         '/slow?timeout=1s": context deadline exceeded\n')
    cluster.kubectl("apply", "-f", "-", input=_config("ValidatingWebhookConfiguration", "slow", "slow",
                                                      _url(hooks, "/slow"), timeoutSeconds=1, failurePolicy="Ignore"))
    assert cluster.kubectl("-n", "slow", "run", "p", "--image=busybox").stdout == "pod/p created\n"


def test_namespace_selector(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """namespaceSelector picks namespaces by their labels; other namespaces never reach the webhook."""
    config = json.loads(_config("ValidatingWebhookConfiguration", "guard", "unused", _url(hooks, "/deny-all")))
    config["webhooks"][0]["namespaceSelector"] = {"matchLabels": {"guard": "on"}}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    cluster.kubectl("create", "namespace", "guarded")
    cluster.kubectl("label", "namespace", "guarded", "guard=on")
    cluster.kubectl("create", "namespace", "unguarded")
    cp = cluster.kubectl("-n", "guarded", "run", "p", "--image=busybox", check=False)
    assert "nothing passes" in cp.stderr
    assert cluster.kubectl("-n", "unguarded", "run", "p", "--image=busybox").stdout == "pod/p created\n"
    cluster.kubectl("delete", "validatingwebhookconfiguration", "guard")


def test_dry_run_reaches_side_effect_free_webhooks(cluster: cluster_mod.Cluster,
                                                   hooks: tuple[_WebhookServer, str]) -> None:
    """A server-side dry run calls sideEffects None webhooks with dryRun true, and their refusal still counts."""
    _setup(cluster, "dry", _config("ValidatingWebhookConfiguration", "dry", "dry", _url(hooks, "/deny-labelled")))
    cp = cluster.kubectl("-n", "dry", "run", "p", "--image=busybox", "--labels=deny=true", "--dry-run=server",
                         check=False)
    assert "pods labelled deny=true are not welcome here" in cp.stderr
    _, review = hooks[0].reviews[-1]
    assert review["request"]["dryRun"] is True
    assert review["request"]["options"]["dryRun"] == ["All"]


def test_warnings_are_shown_by_kubectl(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """Warnings in a webhook's response come back as Warning headers that kubectl prints."""
    _setup(cluster, "warn", _config("ValidatingWebhookConfiguration", "warn", "warn", _url(hooks, "/warn")))
    cp = cluster.kubectl("-n", "warn", "run", "p", "--image=busybox")
    assert cp.stdout == "pod/p created\n"
    assert cp.stderr == "Warning: the image tag latest is discouraged\n"


def test_webhook_configurations_are_exempt(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """A webhook matching everything never sees webhook configurations, so a broken one can always be removed."""
    config = json.loads(_config("ValidatingWebhookConfiguration", "everything", "unused", _url(hooks, "/deny-all")))
    hook = config["webhooks"][0]
    hook["rules"] = [{"operations": ["*"], "apiGroups": ["admissionregistration.k8s.io"], "apiVersions": ["*"],
                      "resources": ["*"]}]
    hook["namespaceSelector"] = {}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    hook["timeoutSeconds"] = 5
    cluster.kubectl("apply", "-f", "-", input=json.dumps(config))
    cluster.kubectl("delete", "validatingwebhookconfiguration", "everything")


def test_match_conditions_and_object_selector(cluster: cluster_mod.Cluster,
                                              hooks: tuple[_WebhookServer, str]) -> None:
    """matchConditions (CEL) and objectSelector both keep a webhook away from requests they do not select."""
    _setup(cluster, "cond",
           _config("MutatingWebhookConfiguration", "cond", "cond", _url(hooks, "/add-label"),
                   matchConditions=[{"name": "not-skipped", "expression": "object.metadata.name != 'skip'"}]),
           _config("ValidatingWebhookConfiguration", "picky", "cond", _url(hooks, "/deny-all"),
                   objectSelector={"matchLabels": {"check": "yes"}}))
    cluster.kubectl("-n", "cond", "run", "skip", "--image=busybox")
    cluster.kubectl("-n", "cond", "run", "other", "--image=busybox")
    assert cluster.json("-n", "cond", "get", "pod", "skip")["metadata"]["labels"] == {"run": "skip"}
    assert cluster.json("-n", "cond", "get", "pod", "other")["metadata"]["labels"] == {"run": "other", "mutated": "yes"}
    cp = cluster.kubectl("-n", "cond", "run", "checked", "--image=busybox", "--labels=check=yes", check=False)
    assert "nothing passes" in cp.stderr


def test_match_conditions_see_the_authorizer(cluster: cluster_mod.Cluster,
                                            hooks: tuple[_WebhookServer, str]) -> None:
    """A matchCondition asking `authorizer` skips the webhook for users RBAC lets delete nodes, not for others."""
    condition = "!authorizer.group('').resource('nodes').check('delete').allowed()"
    _setup(cluster, "authz", _config("ValidatingWebhookConfiguration", "authz", "authz", _url(hooks, "/deny-all"),
                                     matchConditions=[{"name": "not-admins", "expression": condition}]))
    cluster.kubectl("-n", "authz", "create", "rolebinding", "sa-edit", "--clusterrole=edit",
                    "--serviceaccount=authz:default")
    assert cluster.kubectl("-n", "authz", "run", "admin", "--image=busybox").stdout == "pod/admin created\n"
    cp = cluster.kubectl("-n", "authz", "--as=system:serviceaccount:authz:default", "run", "user", "--image=busybox",
                         check=False)
    assert "nothing passes" in cp.stderr


def test_reinvocation_if_needed(cluster: cluster_mod.Cluster, hooks: tuple[_WebhookServer, str]) -> None:
    """A reinvocationPolicy IfNeeded webhook is called again once a later webhook changed the object."""
    _setup(cluster, "again",
           _config("MutatingWebhookConfiguration", "a-first", "again", _url(hooks, "/first"),
                   reinvocationPolicy="IfNeeded"),
           _config("MutatingWebhookConfiguration", "b-second", "again", _url(hooks, "/add-label")))
    cluster.kubectl("-n", "again", "run", "p", "--image=busybox")
    calls = [r["request"] for path, r in hooks[0].reviews
             if path.startswith("/first") and r["request"].get("namespace") == "again"]
    assert len(calls) == 2
    assert calls[0]["object"]["metadata"]["labels"] == {"run": "p"}
    assert calls[1]["object"]["metadata"]["labels"] == {"run": "p", "mutated": "yes"}
