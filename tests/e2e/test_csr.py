"""CertificateSigningRequests end to end with the real kubectl: create, approve, deny, sign, use, `pocketkube user add`."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import subprocess
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pocketkube.base import kubeconfig
from tests.e2e import cluster as cluster_mod

HEADER = ["NAME", "AGE", "SIGNERNAME", "REQUESTOR", "REQUESTEDDURATION", "CONDITION"]
CLIENT_SIGNER = "kubernetes.io/kube-apiserver-client"


def _key_and_request(cn: str, orgs: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return key_pem, req.public_bytes(serialization.Encoding.PEM)


def _csr(name: str, request: bytes, *, usages: tuple[str, ...] = ("client auth",), signer: str = CLIENT_SIGNER,
         **spec: Any) -> str:
    return json.dumps({"apiVersion": "certificates.k8s.io/v1", "kind": "CertificateSigningRequest",
                       "metadata": {"name": name},
                       "spec": {"request": base64.b64encode(request).decode(), "signerName": signer,
                                "usages": list(usages), **spec}})


def _row(cluster: cluster_mod.Cluster, name: str) -> list[str]:
    lines = cluster.kubectl("get", "csr", name).stdout.splitlines()
    assert lines[0].split() == HEADER
    return lines[1].split()


def _condition(cluster: cluster_mod.Cluster, name: str, want: str) -> list[str]:
    def check() -> list[str]:
        row = _row(cluster, name)
        return row if row[-1] == want else []
    return cluster_mod.eventually(check, what=f"csr {name} to be {want}")


def _user_kubeconfig(cluster: cluster_mod.Cluster, name: str, cert_pem: bytes, key_pem: bytes) -> str:
    """A kubeconfig for the cluster whose user presents cert/key files, as a user would set it up."""
    cert_path = os.path.join(cluster.data_dir, f"{name}.crt")
    key_path = os.path.join(cluster.data_dir, f"{name}.key")
    for path, data in ((cert_path, cert_pem), (key_path, key_pem)):
        with open(path, "wb") as f:
            f.write(data)
    cfg = kubeconfig.load(cluster.kubeconfig)
    cfg["users"] = [{"name": name, "user": {"client-certificate": cert_path, "client-key": key_path}}]
    cfg["contexts"][0]["context"]["user"] = name
    path = os.path.join(cluster.data_dir, f"{name}.kubeconfig")
    kubeconfig.write(path, cfg)
    return path


def test_approve_issues_a_usable_client_certificate(cluster: cluster_mod.Cluster) -> None:
    """A CSR made with a local key shows as Pending, `certificate approve` gets it issued, and the cert signs in."""
    key_pem, request = _key_and_request("bob", ("dev", "qa"))
    assert cluster.kubectl("create", "-f", "-", input=_csr("bob", request, expirationSeconds=86400)).stdout == \
        "certificatesigningrequest.certificates.k8s.io/bob created\n"
    row = _row(cluster, "bob")
    assert row[0] == "bob" and row[2:] == [CLIENT_SIGNER, "pocketkube-admin", "24h", "Pending"]
    spec = cluster.json("get", "csr", "bob")["spec"]
    assert spec["username"] == "pocketkube-admin" and "system:masters" in spec["groups"]
    assert cluster.kubectl("certificate", "approve", "bob").stdout == \
        "certificatesigningrequest.certificates.k8s.io/bob approved\n"
    _condition(cluster, "bob", "Approved,Issued")
    obj = cluster.json("get", "csr", "bob")
    approved = obj["status"]["conditions"][0]
    assert (approved["type"], approved["reason"], approved["message"]) == (
        "Approved", "KubectlApprove", "This CSR was approved by kubectl certificate approve.")
    assert approved["lastTransitionTime"]
    cert_pem = base64.b64decode(obj["status"]["certificate"])
    cert = x509.load_pem_x509_certificate(cert_pem)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=1)
    path = _user_kubeconfig(cluster, "bob", cert_pem, key_pem)
    whoami = cluster.kubectl("--kubeconfig", path, "auth", "whoami").stdout
    assert re.search(r"Username\s+bob\n", whoami) and re.search(r"Groups\s+\[dev qa system:authenticated\]", whoami)
    # approving again changes nothing and still reports success, as kubectl does
    assert cluster.kubectl("certificate", "approve", "bob").returncode == 0


def test_deny_and_its_rules(cluster: cluster_mod.Cluster) -> None:
    """A denied CSR is never signed, cannot then be approved, and its Denied condition cannot be removed."""
    _, request = _key_and_request("eve")
    cluster.kubectl("create", "-f", "-", input=_csr("eve", request))
    assert cluster.kubectl("certificate", "deny", "eve").stdout == \
        "certificatesigningrequest.certificates.k8s.io/eve denied\n"
    assert _row(cluster, "eve")[-1] == "Denied"
    again = cluster.kubectl("certificate", "approve", "eve", check=False)
    assert again.returncode == 1 and again.stderr == 'error: certificate signing request "eve" is already Denied\n'
    obj = cluster.json("get", "csr", "eve")
    obj["status"]["conditions"].append({"type": "Approved", "status": "True", "reason": "Sneaky"})
    both = cluster.kubectl("replace", "--raw", "/apis/certificates.k8s.io/v1/certificatesigningrequests/eve/approval",
                           "-f", "-", input=json.dumps(obj), check=False)
    assert 'status.conditions[1].type: Invalid value: "Approved": Approved and Denied conditions are mutually ' \
           "exclusive" in both.stderr
    obj["status"]["conditions"] = []
    removed = cluster.kubectl("replace", "--raw", "/apis/certificates.k8s.io/v1/certificatesigningrequests/eve/approval",
                              "-f", "-", input=json.dumps(obj), check=False)
    assert removed.stderr.endswith('status.conditions: Forbidden: updates may not remove a condition of type "Denied"\n')
    assert "certificate" not in cluster.json("get", "csr", "eve")["status"]


def test_invalid_requests_are_refused_with_kube_messages(cluster: cluster_mod.Cluster) -> None:
    """Bad PEM, short durations, missing signers and system:masters client certs get kube's errors."""
    bad = cluster.kubectl("create", "-f", "-", check=False,
                          input=_csr("bad", b"hi", signer="", expirationSeconds=599))
    assert bad.returncode == 1
    assert bad.stderr == ('The CertificateSigningRequest "bad" is invalid: \n'
                          "* spec.request: Invalid value: []byte{0x68, 0x69}: PEM block type must be CERTIFICATE "
                          "REQUEST\n* spec.signerName: Required value\n* spec.expirationSeconds: Invalid value: 599: "
                          "may not specify a duration less than 600 seconds (10 minutes)\n")
    _, request = _key_and_request("root", ("system:masters",))
    masters = cluster.kubectl("create", "-f", "-", input=_csr("root", request), check=False)
    assert masters.stderr == ('Error from server (Forbidden): error when creating "STDIN": '
                              'certificatesigningrequests.certificates.k8s.io "root" is forbidden: use of '
                              "kubernetes.io/kube-apiserver-client signer with system:masters group is not allowed\n")


def test_signer_refuses_wrong_usages(cluster: cluster_mod.Cluster) -> None:
    """An approved request the signer may not honour is marked Failed with the signer's reason."""
    _, request = _key_and_request("srv")
    cluster.kubectl("create", "-f", "-", input=_csr("srv", request, usages=("server auth",)))
    cluster.kubectl("certificate", "approve", "srv")
    _condition(cluster, "srv", "Approved,Failed")
    failed = cluster.json("get", "csr", "srv")["status"]["conditions"][-1]
    assert (failed["reason"], failed["message"]) == ("SignerValidationFailure",
                                                     "invalid usage for client certificate: server auth")


def test_approving_needs_the_approve_verb_on_the_signer(cluster: cluster_mod.Cluster) -> None:
    """A user who may update csr/approval still needs `approve` on signers to approve."""
    key_pem, request = _key_and_request("approver")
    cluster.kubectl("create", "-f", "-", input=_csr("approver", request))
    cluster.kubectl("certificate", "approve", "approver")
    _condition(cluster, "approver", "Approved,Issued")
    cert_pem = base64.b64decode(cluster.json("get", "csr", "approver")["status"]["certificate"])
    path = _user_kubeconfig(cluster, "approver", cert_pem, key_pem)
    cluster.kubectl("create", "clusterrole", "csr-approver", "--verb=get,list,update",
                    "--resource=certificatesigningrequests,certificatesigningrequests/approval")
    cluster.kubectl("create", "clusterrolebinding", "csr-approver", "--clusterrole=csr-approver", "--user=approver")
    _, request = _key_and_request("target")
    cluster.kubectl("create", "-f", "-", input=_csr("target", request))
    denied = cluster.kubectl("--kubeconfig", path, "certificate", "approve", "target", check=False)
    assert denied.stderr == ('Error from server (Forbidden): certificatesigningrequests.certificates.k8s.io "target" '
                             'is forbidden: user not permitted to approve requests with signerName '
                             '"kubernetes.io/kube-apiserver-client"\n')
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "signer-approver"},
            "rules": [{"apiGroups": ["certificates.k8s.io"], "resources": ["signers"],
                       "resourceNames": ["kubernetes.io/*"], "verbs": ["approve"]}]}
    cluster.kubectl("apply", "-f", "-", input=json.dumps(role))
    cluster.kubectl("create", "clusterrolebinding", "signer-approver", "--clusterrole=signer-approver",
                    "--user=approver")
    cluster_mod.eventually(lambda: cluster.kubectl("--kubeconfig", path, "certificate", "approve", "target",
                                                   check=False).returncode == 0, what="approval as approver")
    _condition(cluster, "target", "Approved,Issued")


def test_pocketkube_user_add(cluster: cluster_mod.Cluster) -> None:
    """`pocketkube user add alice --group dev` goes through a CSR and writes a kubeconfig that signs in as alice."""
    out_path = os.path.join(cluster.data_dir, "alice.kubeconfig")
    cp = subprocess.run([sys.executable, "-m", "pocketkube", "user", "add", "alice", "--group", "dev",
                         "--data-dir", cluster.data_dir, "--kubeconfig-out", out_path],
                        cwd=cluster_mod.ROOT, capture_output=True, text=True, timeout=60)
    assert cp.returncode == 0, cp.stderr
    assert "approved and signed by the cluster" in cp.stdout and f"kubectl --kubeconfig {out_path} get pods" in cp.stdout
    whoami = cluster.kubectl("--kubeconfig", out_path, "auth", "whoami").stdout
    assert re.search(r"Username\s+alice\n", whoami) and re.search(r"Groups\s+\[dev system:authenticated\]", whoami)
    assert cluster.kubectl("--kubeconfig", out_path, "config", "current-context").stdout == "alice@pocketkube\n"
    csrs = [line.split() for line in cluster.kubectl("get", "csr").stdout.splitlines()[1:]]
    assert any(r[0].startswith("alice-") and r[-1] == "Approved,Issued" for r in csrs)
    bad = subprocess.run([sys.executable, "-m", "pocketkube", "user", "add", "not valid", "--data-dir",
                          cluster.data_dir], cwd=cluster_mod.ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "invalid user name 'not valid'" in bad.stderr


def test_status_may_not_add_approval_conditions(cluster: cluster_mod.Cluster) -> None:
    """Adding Approved through /status to a denied request names both problems in one 422, as kube does."""
    _, request = _key_and_request("both")
    cluster.kubectl("create", "-f", "-", input=_csr("both", request))
    cluster.kubectl("certificate", "deny", "both")
    denied = cluster.json("get", "csr", "both")["status"]["conditions"]
    patch = {"status": {"conditions": [*denied, {"type": "Approved", "status": "True", "reason": "X"}]}}
    got = cluster.kubectl("patch", "csr", "both", "--subresource=status", "--type=merge", "-p", json.dumps(patch),
                          check=False)
    assert got.stderr == ('The CertificateSigningRequest "both" is invalid: \n'
                          '* status.conditions[1].type: Invalid value: "Approved": Approved and Denied conditions are '
                          'mutually exclusive\n* status.conditions: Forbidden: updates may not add a condition of '
                          'type "Approved"\n')
