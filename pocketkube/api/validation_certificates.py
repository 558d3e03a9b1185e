"""CertificateSigningRequest (certificates.k8s.io/v1) parsing and validation, worded as kube-apiserver 1.32."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from cryptography import exceptions as crypto_exceptions
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from pocketkube.api import errors, names
from pocketkube.api import validation_meta as vm

FE = errors.FieldError
GROUP = "certificates.k8s.io"
KIND = "CertificateSigningRequest"
APPROVED, DENIED, FAILED = "Approved", "Denied", "Failed"
LEGACY_UNKNOWN_SIGNER = "kubernetes.io/legacy-unknown"
MIN_EXPIRATION_SECONDS = 600

# Every KeyUsage value of the v1 API, sorted as sets.String.List() prints them.
VALID_USAGES = sorted([
    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any", "server auth",
    "client auth", "code signing", "email protection", "s/mime", "ipsec end system", "ipsec tunnel",
    "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc",
])
_TRUE_ONLY = (APPROVED, DENIED, FAILED)
_ALL_STATUSES = ["False", "True", "Unknown"]
_DNS1123_SUBDOMAIN_MAX = 253
_DNS1123_LABEL_MAX = 63


class CSRError(ValueError):
    """A request that is not a well-formed, correctly signed PKCS#10 CSR; the text is Go's error."""


# --- the request bytes ---------------------------------------------------------------------

def decode_bytes(value: Any, *, kind: str = KIND) -> bytes:
    """A JSON []byte field (standard base64) as bytes; bad base64 fails decoding, a 400 in kube."""
    if value is None:
        return b""
    if not isinstance(value, str):
        raise errors.BadRequest(f'{kind} in version "v1" cannot be handled as a {kind}: json: cannot unmarshal '
                                f"{_json_type(value)} into Go struct field of type []uint8")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise errors.BadRequest(f'{kind} in version "v1" cannot be handled as a {kind}: '
                                f"illegal base64 data at input byte {_bad_base64_offset(value)}") from None


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return "object" if isinstance(value, dict) else "array"


def _bad_base64_offset(text: str) -> int:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    for i, ch in enumerate(text):
        if ch == "=":
            return i
        if ch not in alphabet:
            return i
    return len(text)


def parse_csr(pem_bytes: bytes) -> x509.CertificateSigningRequest:
    """The first PEM block as a CSR, as certificates.ParseCSR: CSRError with Go's wording otherwise."""
    blocks = _pem_blocks(pem_bytes)
    if not blocks or blocks[0][0] != "CERTIFICATE REQUEST":
        raise CSRError("PEM block type must be CERTIFICATE REQUEST")
    try:
        return x509.load_der_x509_csr(blocks[0][2])
    except ValueError:
        raise CSRError("x509: malformed certificate request") from None


def check_signature(csr: x509.CertificateSigningRequest) -> None:
    """csr.CheckSignature(): the request is signed by the key it carries."""
    key = csr.public_key()
    try:
        algo = csr.signature_hash_algorithm
        if isinstance(key, rsa.RSAPublicKey):
            assert algo is not None
            pad = csr.signature_algorithm_parameters
            key.verify(csr.signature, csr.tbs_certrequest_bytes,
                       pad if isinstance(pad, padding.AsymmetricPadding) else padding.PKCS1v15(), algo)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            assert algo is not None
            key.verify(csr.signature, csr.tbs_certrequest_bytes, ec.ECDSA(algo))
        elif isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(csr.signature, csr.tbs_certrequest_bytes)
        elif not csr.is_signature_valid:
            raise CSRError("x509: signature algorithm not supported")
    except crypto_exceptions.InvalidSignature:
        raise CSRError(_verify_failure(key)) from None
    except crypto_exceptions.UnsupportedAlgorithm:
        raise CSRError("x509: cannot verify signature: algorithm unimplemented") from None


def _verify_failure(key: Any) -> str:
    if isinstance(key, rsa.RSAPublicKey):
        return "crypto/rsa: verification error"
    if isinstance(key, ec.EllipticCurvePublicKey):
        return "x509: ECDSA verification failure"
    return "x509: Ed25519 verification failure"


def _pem_blocks(data: bytes) -> list[tuple[str, bool, bytes]]:
    """Each (type, has headers, DER) that encoding/pem.Decode finds, in order; malformed blocks are skipped."""
    text = data.decode("latin-1")
    out: list[tuple[str, bool, bytes]] = []
    for m in _PEM_RE.finditer(text):
        lines = [line.strip() for line in m.group(2).splitlines()]
        has_headers = any(":" in line for line in lines)
        body = "".join(line for line in lines if line and ":" not in line)
        try:
            out.append((m.group(1), has_headers, base64.b64decode(body, validate=True)))
        except (binascii.Error, ValueError):
            continue
    return out


_PEM_RE = re.compile(r"-----BEGIN ([^\n-]*)-----\r?\n(.*?)-----END \1-----", re.S)


def request_problem(request: bytes) -> str:
    """Why spec.request is unacceptable (parse or signature), or "" when it is a good CSR."""
    try:
        check_signature(parse_csr(request))
    except CSRError as e:
        return str(e)
    return ""


def go_bytes(data: bytes | None) -> str:
    """A []byte printed with %#v, the way kube shows spec.request in its field errors."""
    if data is None:
        return "raw:[]byte(nil)"
    return "raw:[]byte{" + ", ".join(f"0x{b:x}" for b in data) + "}"


# --- field validation ----------------------------------------------------------------------

def validate_signer_name(signer: str, field: str) -> list[FE]:
    """ValidateSignerName: a DNS domain with at least two labels, a slash, then dot-separated subdomains."""
    if not signer:
        return [errors.required(field)]
    segments = signer.split("/")
    if len(segments) != 2:
        return [errors.invalid(field, signer, "must be a fully qualified domain and path of the form "
                                              "'example.com/signer-name'")]
    domain, path = segments
    out: list[FE] = []
    if len(domain) > _DNS1123_SUBDOMAIN_MAX:
        out.append(errors.too_long(field, _DNS1123_SUBDOMAIN_MAX))
    labels = domain.split(".")
    for label in labels:
        problems = names.is_dns1123_label(label)
        if problems:
            out.extend(errors.invalid(field, domain, f'validating label "{label}": {p}') for p in problems)
            break
    if len(labels) < 2:
        out.append(errors.invalid(field, domain, "should be a domain with at least two segments separated by dots"))
    for part in path.split("."):
        problems = names.is_dns1123_subdomain(part)
        if problems:
            out.extend(errors.invalid(field, path, f'validating component "{part}": {p}') for p in problems)
            break
    max_len = _DNS1123_SUBDOMAIN_MAX + (_DNS1123_SUBDOMAIN_MAX + _DNS1123_LABEL_MAX + 1) + 1
    if len(signer) > max_len:
        out.append(errors.too_long(field, max_len))
    return out


def conditions(obj: dict[str, Any]) -> list[dict[str, Any]]:
    return vm.dicts(vm.as_dict(obj.get("status")).get("conditions"))


def find_conditions(obj: dict[str, Any], ctype: str) -> list[dict[str, Any]]:
    return [c for c in conditions(obj) if c.get("type") == ctype]


def has_condition(obj: dict[str, Any], ctype: str) -> bool:
    return any(c.get("type") == ctype and c.get("status", "True") == "True" for c in conditions(obj))


def _validate_conditions(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FE]:
    field = "status.conditions"
    out: list[FE] = []
    old_conds = conditions(old) if old is not None else []
    old_types = [c.get("type") or "" for c in old_conds]
    allow_empty = "" in old_types
    allow_dupes = len(set(old_types)) != len(old_types)
    allow_both = APPROVED in old_types and DENIED in old_types
    seen: set[str] = set()
    approved = denied = False
    for i, c in enumerate(conditions(obj)):
        ctype = str(c.get("type") or "")
        status = str(c.get("status") or "")
        if not ctype and not allow_empty:
            out.append(errors.required(f"{field}[{i}].type"))
        allowed = ["True"] if ctype in _TRUE_ONLY else _ALL_STATUSES
        if not status:
            out.append(errors.required(f"{field}[{i}].status"))
        elif status not in allowed:
            out.append(errors.unsupported(f"{field}[{i}].status", status, allowed))
        if not allow_both and ctype in (APPROVED, DENIED):
            if ctype == APPROVED:
                approved = True
            else:
                denied = True
            if approved and denied:
                out.append(errors.invalid(f"{field}[{i}].type", ctype,
                                          "Approved and Denied conditions are mutually exclusive"))
        if not allow_dupes:
            if ctype in seen:
                out.append(errors.duplicate(f"{field}[{i}].type", ctype))
            seen.add(ctype)
    return out


def certificate_problem(pem_data: bytes) -> str:
    """Why status.certificate is not one or more CERTIFICATE PEM blocks, or "" when it is (or is empty)."""
    if not pem_data:
        return ""
    blocks = _pem_blocks(pem_data)
    for label, has_headers, der in blocks:
        if label != "CERTIFICATE":
            return f'only CERTIFICATE PEM blocks are allowed, found "{label}"'
        if has_headers:
            return "no PEM block headers are permitted"
        try:
            x509.load_der_x509_certificate(der)
        except ValueError:
            return "x509: malformed certificate"
    if not blocks:
        return "must contain at least one CERTIFICATE PEM block"
    return ""


def _validate(obj: dict[str, Any], old: dict[str, Any] | None) -> list[FE]:
    spec = vm.as_dict(obj.get("spec"))
    status = vm.as_dict(obj.get("status"))
    out = vm.validate_metadata(obj.get("metadata"), namespaced=False, name_validator=names.name_is_path_segment)
    raw = spec.get("request")
    request = decode_bytes(raw)
    problem = request_problem(request)
    if problem:
        out.append(errors.invalid("spec.request", go_bytes(None if raw is None else request), problem))
    old_spec = vm.as_dict(old.get("spec")) if old is not None else {}
    old_usages = [str(u) for u in vm.as_list(old_spec.get("usages"))]
    usages = [str(u) for u in vm.as_list(spec.get("usages"))]
    if not usages:
        out.append(errors.required("spec.usages"))
    if not any(u not in VALID_USAGES for u in old_usages):
        out.extend(errors.unsupported(f"spec.usages[{i}]", u, VALID_USAGES)
                   for i, u in enumerate(usages) if u not in VALID_USAGES)
    if len(set(old_usages)) == len(old_usages):
        seen: set[str] = set()
        for i, u in enumerate(usages):
            if u in seen:
                out.append(errors.duplicate(f"spec.usages[{i}]", u))
            seen.add(u)
    signer = str(spec.get("signerName") or "")
    if signer == LEGACY_UNKNOWN_SIGNER and old_spec.get("signerName") != LEGACY_UNKNOWN_SIGNER:
        out.append(errors.invalid("spec.signerName", signer, "the legacy signerName is not allowed via this API version"))
    elif signer != LEGACY_UNKNOWN_SIGNER:
        out.extend(validate_signer_name(signer, "spec.signerName"))
    exp = spec.get("expirationSeconds")
    if vm.is_int(exp) and exp < MIN_EXPIRATION_SECONDS:
        out.append(errors.invalid("spec.expirationSeconds", exp,
                                  "may not specify a duration less than 600 seconds (10 minutes)"))
    out.extend(_validate_conditions(obj, old))
    cert = decode_bytes(status.get("certificate"))
    old_cert = decode_bytes(vm.as_dict(old.get("status")).get("certificate")) if old is not None else b""
    arbitrary_ok = old is not None and (cert == old_cert or bool(certificate_problem(old_cert)))
    if not arbitrary_ok:
        problem = certificate_problem(cert)
        if problem:
            out.append(errors.invalid("status.certificate", "<certificate data>", problem))
    return out


def validate_create(obj: dict[str, Any]) -> list[FE]:
    """ValidateCertificateSigningRequestCreate."""
    return _validate(obj, None)


def validate_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    """ValidateCertificateSigningRequestUpdate, less the subresource-only rules (see apiserver/csr.py).

    The status and approval subresources each allow one more change (the certificate, the
    Approved/Denied conditions); the API server checks those per subresource before this runs.
    """
    out = _validate(new, old)
    for ctype in (APPROVED, DENIED, FAILED):
        if len(find_conditions(new, ctype)) < len(find_conditions(old, ctype)):
            out.append(errors.forbidden("status.conditions", f'updates may not remove a condition of type "{ctype}"'))
    cert = decode_bytes(vm.as_dict(new.get("status")).get("certificate"))
    old_cert = decode_bytes(vm.as_dict(old.get("status")).get("certificate"))
    if cert != old_cert and old_cert:
        out.append(errors.forbidden("status.certificate", "updates may not modify existing certificate content"))
    out.extend(vm.validate_metadata_update(new.get("metadata"), old.get("metadata")))
    return out
