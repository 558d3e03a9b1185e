"""CSR signing controller: issues certificates from the cluster CA for approved requests to kube's signers."""

from __future__ import annotations

import base64
import dataclasses
import datetime
import logging
from collections.abc import Sequence
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pocketkube.api import errors
from pocketkube.api import validation_certificates as vcert
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.csrsigning")

CSRS = rest.GVR("certificates.k8s.io", "v1", "certificatesigningrequests")
COMPONENT = "csrsigning-controller"

KUBE_APISERVER_CLIENT = "kubernetes.io/kube-apiserver-client"
KUBE_APISERVER_CLIENT_KUBELET = "kubernetes.io/kube-apiserver-client-kubelet"
KUBELET_SERVING = "kubernetes.io/kubelet-serving"
SIGNERS = (KUBE_APISERVER_CLIENT, KUBE_APISERVER_CLIENT_KUBELET, KUBELET_SERVING)

# kube-controller-manager's --cluster-signing-duration default (8760h), and the signing policy's constants.
DEFAULT_TTL = datetime.timedelta(days=365)
MIN_TTL = datetime.timedelta(minutes=10)
BACKDATE = datetime.timedelta(minutes=5)
SHORT = datetime.timedelta(hours=8)

_KEY_USAGES = {
    "signing": "digital_signature", "digital signature": "digital_signature",
    "content commitment": "content_commitment", "key encipherment": "key_encipherment",
    "key agreement": "key_agreement", "data encipherment": "data_encipherment", "cert sign": "key_cert_sign",
    "crl sign": "crl_sign", "encipher only": "encipher_only", "decipher only": "decipher_only",
}
_EXT_KEY_USAGES = {
    "any": ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE, "server auth": ExtendedKeyUsageOID.SERVER_AUTH,
    "client auth": ExtendedKeyUsageOID.CLIENT_AUTH, "code signing": ExtendedKeyUsageOID.CODE_SIGNING,
    "email protection": ExtendedKeyUsageOID.EMAIL_PROTECTION, "s/mime": ExtendedKeyUsageOID.EMAIL_PROTECTION,
    "ipsec end system": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.5"),
    "ipsec tunnel": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.6"),
    "ipsec user": x509.ObjectIdentifier("1.3.6.1.5.5.7.3.7"),
    "timestamping": ExtendedKeyUsageOID.TIME_STAMPING, "ocsp signing": ExtendedKeyUsageOID.OCSP_SIGNING,
    "microsoft sgc": x509.ObjectIdentifier("1.3.6.1.4.1.311.10.3.3"),
    "netscape sgc": x509.ObjectIdentifier("2.16.840.1.113730.4.1"),
}
# Go's x509.ExtKeyUsage enum order, which the signer sorts extended usages by.
_EKU_ORDER = ["any", "server auth", "client auth", "code signing", "email protection", "ipsec end system",
              "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]


# --- which requests a signer accepts (pkg/controller/certificates/signer) --------------------------

def _organizations(req: x509.CertificateSigningRequest) -> list[str]:
    return [str(a.value) for a in req.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]


def _common_name(req: x509.CertificateSigningRequest) -> str:
    cns = req.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else ""


def _sans(req: x509.CertificateSigningRequest) -> x509.SubjectAlternativeName | None:
    try:
        return req.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None


def _san_counts(req: x509.CertificateSigningRequest) -> dict[str, int]:
    names = list(_sans(req) or [])
    kinds: dict[str, type] = {"dns": x509.DNSName, "ip": x509.IPAddress, "email": x509.RFC822Name,
                              "uri": x509.UniformResourceIdentifier}
    return {k: sum(isinstance(n, t) for n in names) for k, t in kinds.items()}


def _client_usages_error(usages: Sequence[str]) -> str:
    has_client_auth = False
    for u in usages:
        if u == "client auth":
            has_client_auth = True
        elif u not in ("digital signature", "key encipherment"):
            return f"invalid usage for client certificate: {u}"
    return "" if has_client_auth else "missing required usage for client certificate: client auth"


def _kubelet_client_error(req: x509.CertificateSigningRequest, usages: Sequence[str]) -> str:
    if _organizations(req) != ["system:nodes"]:
        return "subject organization is not system:nodes"
    sans = _san_counts(req)
    for kind, message in (("dns", "DNS subjectAltNames are not allowed"),
                          ("email", "Email subjectAltNames are not allowed"),
                          ("ip", "IP subjectAltNames are not allowed"),
                          ("uri", "URI subjectAltNames are not allowed")):
        if sans[kind]:
            return message
    if not _common_name(req).startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    if set(usages) not in ({"digital signature", "key encipherment", "client auth"},
                           {"digital signature", "client auth"}) or len(set(usages)) != len(usages):
        return "usages did not match [client auth digital signature key encipherment]"
    return ""


def _kubelet_serving_error(req: x509.CertificateSigningRequest, usages: Sequence[str]) -> str:
    if _organizations(req) != ["system:nodes"]:
        return "subject organization is not system:nodes"
    sans = _san_counts(req)
    if not sans["dns"] and not sans["ip"]:
        return "DNS or IP subjectAltName is required"
    if sans["email"]:
        return "Email subjectAltNames are not allowed"
    if sans["uri"]:
        return "URI subjectAltNames are not allowed"
    if set(usages) not in ({"digital signature", "key encipherment", "server auth"},
                           {"digital signature", "server auth"}) or len(set(usages)) != len(usages):
        return "usages did not match [digital signature key encipherment server auth]"
    if not _common_name(req).startswith("system:node:"):
        return "subject common name does not begin with system:node:"
    return ""


def signer_error(signer: str, req: x509.CertificateSigningRequest, usages: Sequence[str]) -> str:
    """Why `signer` must refuse this request ("" when it may sign it)."""
    if signer == KUBE_APISERVER_CLIENT:
        return _client_usages_error(usages)
    if signer == KUBE_APISERVER_CLIENT_KUBELET:
        return _kubelet_client_error(req, usages)
    if signer == KUBELET_SERVING:
        return _kubelet_serving_error(req, usages)
    raise ValueError(f"unrecognized signerName: {signer!r}")


# --- signing ---------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class CA:
    """The cluster CA's certificate and private key."""

    cert: x509.Certificate
    key: Any

    @classmethod
    def load(cls, cert_path: str, key_path: str) -> CA:
        with open(cert_path, "rb") as f:
            cert = x509.load_pem_x509_certificate(f.read())
        with open(key_path, "rb") as f:
            key = serialization.load_pem_private_key(f.read(), password=None)
        return cls(cert, key)


def duration(expiration_seconds: Any, cert_ttl: datetime.timedelta = DEFAULT_TTL) -> datetime.timedelta:
    """The lifetime to issue: the requested one within [10m, the signer's maximum], else the maximum."""
    if not isinstance(expiration_seconds, int) or isinstance(expiration_seconds, bool):
        return cert_ttl
    wanted = datetime.timedelta(seconds=expiration_seconds)
    return max(MIN_TTL, min(wanted, cert_ttl))


def validity(now: datetime.datetime, ttl: datetime.timedelta, ca_not_after: datetime.datetime,
             ) -> tuple[datetime.datetime, datetime.datetime]:
    """(notBefore, notAfter) as PermissiveSigningPolicy: backdated, short certs not shortened, capped by the CA."""
    not_before = now - BACKDATE
    not_after = now + ttl if ttl < SHORT else now + ttl - BACKDATE
    if not_after >= ca_not_after:
        not_after = ca_not_after
    if not_before >= ca_not_after:
        raise ValueError(f"the signer has expired: NotAfter={ca_not_after}")
    if now >= ca_not_after:
        raise ValueError(f"refusing to sign a certificate that expired in the past: NotAfter={ca_not_after}")
    return not_before, not_after


def _key_usage(usages: Sequence[str]) -> tuple[x509.KeyUsage | None, list[x509.ObjectIdentifier]]:
    bits = {v: False for v in set(_KEY_USAGES.values())}
    ext: set[str] = set()
    unknown = []
    for u in usages:
        if u in _KEY_USAGES:
            bits[_KEY_USAGES[u]] = True
        elif u in _EXT_KEY_USAGES:
            ext.add(u)
        else:
            unknown.append(u)
    if unknown:
        raise ValueError("unrecognized usage values: [" + " ".join(f'"{u}"' for u in unknown) + "]")
    ku = x509.KeyUsage(**bits) if any(bits.values()) else None
    ordered = sorted(ext, key=_EKU_ORDER.index)
    oids: list[x509.ObjectIdentifier] = []
    for u in ordered:
        if _EXT_KEY_USAGES[u] not in oids:
            oids.append(_EXT_KEY_USAGES[u])
    return ku, oids


def sign(ca: CA, req: x509.CertificateSigningRequest, usages: Sequence[str], *, ttl: datetime.timedelta,
         now: datetime.datetime) -> bytes:
    """A PEM certificate for the request's subject, SANs and key, with exactly the requested usages."""
    not_before, not_after = validity(now, ttl, ca.cert.not_valid_after_utc)
    ku, ekus = _key_usage(usages)
    builder = (x509.CertificateBuilder()
               .subject_name(req.subject)
               .issuer_name(ca.cert.subject)
               .public_key(req.public_key())  # type: ignore[arg-type]
               .serial_number(x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
    if ku is not None:
        builder = builder.add_extension(ku, critical=True)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    try:
        ski = ca.cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        builder = builder.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski),
                                        critical=False)
    except x509.ExtensionNotFound:
        pass
    sans = _sans(req)
    if sans is not None and len(sans):
        # Go marks the SAN extension critical when the subject is empty (RFC 5280 4.2.1.6).
        builder = builder.add_extension(sans, critical=len(req.subject) == 0)
    algorithm = None if not isinstance(ca.key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)) else hashes.SHA256()
    cert = builder.sign(ca.key, algorithm)
    return cert.public_bytes(serialization.Encoding.PEM)


# --- the decision for one CSR ------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Action:
    """What to do with a CSR: nothing, mark it Failed (with a message), or sign it."""

    kind: str  # "skip" | "fail" | "sign"
    message: str = ""


SKIP = Action("skip")


def plan(csr: dict[str, Any]) -> Action:
    """Sign approved, unsigned, unfailed requests to our signers that the signer's rules allow."""
    spec = csr.get("spec") if isinstance(csr.get("spec"), dict) else {}
    assert isinstance(spec, dict)
    status = csr.get("status") if isinstance(csr.get("status"), dict) else {}
    assert isinstance(status, dict)
    if status.get("certificate"):
        return SKIP
    if not vcert.has_condition(csr, vcert.APPROVED) or vcert.has_condition(csr, vcert.DENIED):
        return SKIP
    if vcert.has_condition(csr, vcert.FAILED):
        return SKIP
    signer = str(spec.get("signerName") or "")
    if signer not in SIGNERS:
        return SKIP
    try:
        req = vcert.parse_csr(vcert.decode_bytes(spec.get("request")))
    except (vcert.CSRError, errors.APIError) as e:
        # kube logs and retries a request it cannot parse; validation makes this unreachable in practice
        log.warning("csr %s: unable to parse the request: %s", (csr.get("metadata") or {}).get("name"), e)
        return SKIP
    usages = [str(u) for u in spec.get("usages") or []]
    problem = signer_error(signer, req, usages)
    if problem:
        return Action("fail", problem)
    return Action("sign")


class CSRSigningController(controller.Reconciler):
    """Watches CSRs; writes status.certificate (or a Failed condition) through the status subresource."""

    def __init__(self, client: rest.Client, *, ca_cert_path: str, ca_key_path: str,
                 clock: clock_mod.Clock | None = None, cert_ttl: datetime.timedelta = DEFAULT_TTL,
                 workers: int = 1,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=workers, clock=clock, informers=informers)
        self.ca_cert_path, self.ca_key_path = ca_cert_path, ca_key_path
        self.cert_ttl = cert_ttl
        self.csrs = self.watch(CSRS, self._keys)

    def _keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        if new is None or plan(new).kind == "skip":
            return []
        return [informer.key_of(new)]

    async def reconcile(self, key: str) -> controller.Outcome:
        csr = self.csrs.get(key)
        if csr is None:
            return controller.DONE
        action = plan(csr)
        if action.kind == "skip":
            return controller.DONE
        updated = dict(csr)
        status = dict(csr.get("status") or {})
        now = self.clock.now()
        if action.kind == "fail":
            status["conditions"] = [*(status.get("conditions") or []), {
                "type": vcert.FAILED, "status": "True", "reason": "SignerValidationFailure",
                "message": action.message, "lastUpdateTime": clock_mod.rfc3339(now)}]
        else:
            # The CA is read per signing so a CA rotated on disk is picked up, as kube's CA provider does.
            ca = CA.load(self.ca_cert_path, self.ca_key_path)
            spec = csr.get("spec") or {}
            req = vcert.parse_csr(vcert.decode_bytes(spec.get("request")))
            pem = sign(ca, req, [str(u) for u in spec.get("usages") or []],
                       ttl=duration(spec.get("expirationSeconds"), self.cert_ttl), now=now)
            status["certificate"] = base64.b64encode(pem).decode("ascii")
        updated["status"] = status
        try:
            await self.client.update_status(CSRS, updated)
        except errors.NotFound:
            return controller.DONE
        except errors.Conflict:
            return controller.REQUEUE
        log.info("csr %s: %s", key, "signed" if action.kind == "sign" else f"failed: {action.message}")
        return controller.DONE
