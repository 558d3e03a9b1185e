"""CSR signing and cleaning: which requests each kube signer accepts, lifetimes, issued certificates, deadlines."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pocketkube.base import pki
from pocketkube.controllers import csrcleaner, csrsigning
from tests.api.test_validation_certificates import make_csr_pem

NOW = datetime.datetime(2030, 6, 1, 12, 0, tzinfo=datetime.UTC)
H = datetime.timedelta(hours=1)


def request(cn: str = "system:node:n1", orgs: tuple[str, ...] = ("system:nodes",), *, dns: tuple[str, ...] = (),
            emails: tuple[str, ...] = ()) -> x509.CertificateSigningRequest:
    key = ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    builder = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs))
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns] + [x509.RFC822Name(e) for e in emails]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(key, hashes.SHA256())


CLIENT, KUBELET, SERVING = csrsigning.SIGNERS


@pytest.mark.parametrize(("signer", "req", "usages", "problem"), [
    (CLIENT, request("bob", ("dev",)), ["client auth"], ""),
    (CLIENT, request("bob", ("dev",)), ["digital signature", "key encipherment", "client auth"], ""),
    (CLIENT, request("bob", ("dev",)), ["server auth", "client auth"], "invalid usage for client certificate: server auth"),
    (CLIENT, request("bob", ("dev",)), ["digital signature"], "missing required usage for client certificate: client auth"),
    (KUBELET, request(), ["digital signature", "client auth"], ""),
    (KUBELET, request(orgs=("dev",)), ["digital signature", "client auth"], "subject organization is not system:nodes"),
    (KUBELET, request(dns=("n1",)), ["digital signature", "client auth"], "DNS subjectAltNames are not allowed"),
    (KUBELET, request("n1"), ["digital signature", "client auth"], "subject common name does not begin with system:node:"),
    (KUBELET, request(), ["client auth"], "usages did not match [client auth digital signature key encipherment]"),
    (SERVING, request(dns=("n1.local",)), ["digital signature", "key encipherment", "server auth"], ""),
    (SERVING, request(), ["digital signature", "server auth"], "DNS or IP subjectAltName is required"),
    (SERVING, request(dns=("n1",), emails=("a@b.c",)), ["digital signature", "server auth"],
     "Email subjectAltNames are not allowed"),
    (SERVING, request(dns=("n1",)), ["server auth"], "usages did not match [digital signature key encipherment server auth]"),
])
def test_signer_rules(signer: str, req: x509.CertificateSigningRequest, usages: list[str], problem: str) -> None:
    """Each kubernetes.io signer accepts exactly what kube's signer controller accepts, with its messages."""
    assert csrsigning.signer_error(signer, req, usages) == problem


@pytest.mark.parametrize(("seconds", "want"), [
    (None, datetime.timedelta(days=365)),
    (86400, datetime.timedelta(days=1)),
    (60, datetime.timedelta(minutes=10)),
    (10 ** 9, datetime.timedelta(days=365)),
])
def test_duration(seconds: int | None, want: datetime.timedelta) -> None:
    """expirationSeconds is honoured between 10 minutes and the signer's maximum."""
    assert csrsigning.duration(seconds) == want


@pytest.mark.parametrize(("ttl", "ca_left", "want_before", "want_after"), [
    (H, 1000 * H, NOW - 5 * datetime.timedelta(minutes=1), NOW + H),
    (24 * H, 1000 * H, NOW - datetime.timedelta(minutes=5), NOW + 24 * H - datetime.timedelta(minutes=5)),
    (24 * H, 2 * H, NOW - datetime.timedelta(minutes=5), NOW + 2 * H),
])
def test_validity(ttl: datetime.timedelta, ca_left: datetime.timedelta, want_before: datetime.datetime,
                  want_after: datetime.datetime) -> None:
    """Certificates are backdated 5 minutes, short ones keep their full TTL, and none outlives the CA."""
    assert csrsigning.validity(NOW, ttl, NOW + ca_left) == (want_before, want_after)


def test_expired_ca_refuses() -> None:
    """An expired CA signs nothing."""
    with pytest.raises(ValueError, match="the signer has expired"):
        csrsigning.validity(NOW, H, NOW - H)


def test_sign_issues_a_client_certificate(tmp_path: Any) -> None:
    """The issued certificate carries the request's subject and key, the requested usages, and chains to the CA."""
    keys = pki.ensure_pki(str(tmp_path))
    ca = csrsigning.CA.load(keys.ca_cert_path, keys.ca_key_path)
    req = x509.load_pem_x509_csr(make_csr_pem("bob", ("dev", "ops")))
    now = datetime.datetime.now(datetime.UTC)
    cert = x509.load_pem_x509_certificate(csrsigning.sign(ca, req, ["digital signature", "client auth"],
                                                          ttl=datetime.timedelta(days=1), now=now))
    assert cert.subject == req.subject and cert.public_key() == req.public_key()
    cert.verify_directly_issued_by(ca.cert)
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=1)


def csr(signer: str = CLIENT, usages: tuple[str, ...] = ("client auth",), **status: Any) -> dict[str, Any]:
    pem = make_csr_pem("bob", ("dev",))
    return {"metadata": {"name": "c", "creationTimestamp": "2030-06-01T00:00:00Z"},
            "spec": {"request": base64.b64encode(pem).decode(), "signerName": signer, "usages": list(usages)},
            "status": status}


def approved(t: str = "2030-06-01T10:00:00Z", ctype: str = "Approved") -> list[dict[str, Any]]:
    return [{"type": ctype, "status": "True", "lastUpdateTime": t}]


@pytest.mark.parametrize(("obj", "kind", "message"), [
    (csr(), "skip", ""),
    (csr(conditions=approved()), "sign", ""),
    (csr(conditions=approved(ctype="Denied")), "skip", ""),
    (csr(conditions=approved(), certificate="Q0VSVA=="), "skip", ""),
    (csr(conditions=approved() + approved(ctype="Failed")), "skip", ""),
    (csr("example.com/other", conditions=approved()), "skip", ""),
    (csr(usages=("server auth",), conditions=approved()), "fail", "invalid usage for client certificate: server auth"),
])
def test_plan(obj: dict[str, Any], kind: str, message: str) -> None:
    """Only approved, unsigned, unfailed requests to our signers are signed; ones the rules refuse fail."""
    assert csrsigning.plan(obj) == csrsigning.Action(kind, message)


@pytest.mark.parametrize(("obj", "want"), [
    (csr(), "2030-06-02T00:00:00+00:00"),
    (csr(conditions=approved()), None),
    (csr(conditions=approved(), certificate="Q0VSVA=="), "2030-06-01T11:00:00+00:00"),
    (csr(conditions=approved(ctype="Denied")), "2030-06-01T11:00:00+00:00"),
    (csr(conditions=approved() + approved("2030-06-01T10:30:00Z", "Failed")), "2030-06-01T11:30:00+00:00"),
])
def test_cleaner_deadline(obj: dict[str, Any], want: str | None) -> None:
    """Pending CSRs go after a day; issued, denied and failed ones an hour after that happened."""
    got = csrcleaner.deadline(obj)
    assert (got.isoformat() if got else None) == want
