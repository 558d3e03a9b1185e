"""CertificateSigningRequest validation: request parsing and signature, usages, signer names, conditions."""

from __future__ import annotations

import base64
import copy
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from pocketkube.api import validation
from pocketkube.api import validation_certificates as vcert

GROUP, KIND = "certificates.k8s.io", "CertificateSigningRequest"


def make_csr_pem(cn: str = "bob", orgs: tuple[str, ...] = ("dev",), *, key: Any = None) -> bytes:
    """A PEM CSR for CN/O signed with key (a fresh P-256 key by default)."""
    key = key or ec.generate_private_key(ec.SECP256R1())
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.PEM)


def tampered_pem() -> bytes:
    """A CSR whose signature no longer matches its content (one subject byte flipped)."""
    req = x509.load_pem_x509_csr(make_csr_pem("bob"))
    der = bytearray(req.public_bytes(serialization.Encoding.DER))
    der[der.index(b"bob")] = ord("c")
    body = base64.encodebytes(bytes(der)).decode()
    return f"-----BEGIN CERTIFICATE REQUEST-----\n{body}-----END CERTIFICATE REQUEST-----\n".encode()


GOOD_PEM = make_csr_pem()


def csr(**spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": f"{GROUP}/v1", "kind": KIND, "metadata": {"name": "c"},
                           "spec": {"request": base64.b64encode(GOOD_PEM).decode(),
                                    "signerName": "kubernetes.io/kube-apiserver-client", "usages": ["client auth"]}}
    obj["spec"].update(spec)
    return obj


def texts(obj: dict[str, Any]) -> list[str]:
    return [e.text() for e in validation.validate_create(obj, GROUP, "v1", KIND, namespaced=False)]


@pytest.mark.parametrize(("spec", "want"), [
    ({}, []),
    ({"usages": []}, ["spec.usages: Required value"]),
    ({"usages": ["client auth", "bogus"]},
     ['spec.usages[1]: Unsupported value: "bogus": supported values: ' + ", ".join(f'"{u}"' for u in vcert.VALID_USAGES)]),
    ({"usages": ["client auth", "client auth"]}, ['spec.usages[1]: Duplicate value: "client auth"']),
    ({"signerName": ""}, ["spec.signerName: Required value"]),
    ({"signerName": "nodomain"},
     ["spec.signerName: Invalid value: \"nodomain\": must be a fully qualified domain and path of the form "
      "'example.com/signer-name'"]),
    ({"signerName": "example/x"},
     ['spec.signerName: Invalid value: "example": should be a domain with at least two segments separated by dots']),
    ({"signerName": "kubernetes.io/legacy-unknown"},
     ['spec.signerName: Invalid value: "kubernetes.io/legacy-unknown": the legacy signerName is not allowed via '
      "this API version"]),
    ({"expirationSeconds": 599},
     ["spec.expirationSeconds: Invalid value: 599: may not specify a duration less than 600 seconds (10 minutes)"]),
    ({"expirationSeconds": 600}, []),
    ({"request": base64.b64encode(b"hi").decode()},
     ["spec.request: Invalid value: []byte{0x68, 0x69}: PEM block type must be CERTIFICATE REQUEST"]),
])
def test_create_rules(spec: dict[str, Any], want: list[str]) -> None:
    """Each spec problem yields kube's field error text."""
    assert texts(csr(**spec)) == want


def test_request_signature_and_parse_errors() -> None:
    """A tampered request fails the signature check; garbage DER inside the PEM is malformed."""
    assert vcert.request_problem(tampered_pem()) == "x509: ECDSA verification failure"
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert vcert.request_problem(make_csr_pem(key=rsa_key)) == ""
    junk = b"-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
    assert vcert.request_problem(junk) == "x509: malformed certificate request"
    assert vcert.request_problem(b"") == "PEM block type must be CERTIFICATE REQUEST"


def test_bad_base64_is_a_bad_request() -> None:
    """A request that is not base64 fails decoding with a 400, as the Go JSON decoder does."""
    from pocketkube.api import errors
    with pytest.raises(errors.BadRequest, match="illegal base64 data at input byte 0"):
        texts(csr(request="!!!"))


@pytest.mark.parametrize(("conditions", "want"), [
    ([{"type": "Approved", "status": "True"}], []),
    ([{"type": "Approved", "status": "False"}],
     ['status.conditions[0].status: Unsupported value: "False": supported values: "True"']),
    ([{"type": "Custom", "status": "Maybe"}],
     ['status.conditions[0].status: Unsupported value: "Maybe": supported values: "False", "True", "Unknown"']),
    ([{"type": "", "status": "True"}], ["status.conditions[0].type: Required value"]),
    ([{"type": "Approved", "status": "True"}, {"type": "Denied", "status": "True"}],
     ['status.conditions[1].type: Invalid value: "Denied": Approved and Denied conditions are mutually exclusive']),
    ([{"type": "Failed", "status": "True"}, {"type": "Failed", "status": "True"}],
     ['status.conditions[1].type: Duplicate value: "Failed"']),
])
def test_condition_rules(conditions: list[dict[str, Any]], want: list[str]) -> None:
    """Condition types and statuses follow kube's rules (Approved/Denied/Failed only True, never both)."""
    obj = csr()
    obj["status"] = {"conditions": conditions}
    assert texts(obj) == want


def test_update_may_not_remove_conditions_or_replace_certificate() -> None:
    """Updates keep Approved/Denied/Failed conditions and an issued certificate."""
    old = csr()
    old["metadata"]["resourceVersion"] = "5"
    old["status"] = {"conditions": [{"type": "Approved", "status": "True"}],
                     "certificate": base64.b64encode(_self_signed_pem()).decode()}
    new = copy.deepcopy(old)
    new["status"] = {"certificate": base64.b64encode(_self_signed_pem()).decode()}
    got = [e.text() for e in validation.validate_update(new, old, GROUP, "v1", KIND, namespaced=False)]
    assert got == ['status.conditions: Forbidden: updates may not remove a condition of type "Approved"',
                   "status.certificate: Forbidden: updates may not modify existing certificate content"]


@pytest.mark.parametrize(("pem", "want"), [
    (b"", ""),
    (b"junk", "must contain at least one CERTIFICATE PEM block"),
    (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
     'only CERTIFICATE PEM blocks are allowed, found "PRIVATE KEY"'),
    (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", "x509: malformed certificate"),
])
def test_certificate_problem(pem: bytes, want: str) -> None:
    """status.certificate must be CERTIFICATE PEM blocks holding certificates."""
    assert vcert.certificate_problem(pem) == want


def _self_signed_pem() -> bytes:
    import datetime
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    now = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM)
