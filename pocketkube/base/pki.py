"""The cluster's certificates: a CA, the API server's serving cert and client certs, kept on disk."""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
import socket
import ssl
from collections.abc import Iterable, Sequence

from cryptography import exceptions, x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pocketkube.base import clock as clock_mod

CA_DAYS = 3650
LEAF_DAYS = 365
# Leaf certs this close to expiry are reissued on the next start, so a long-lived data dir
# never ends up with a cluster kubectl refuses to talk to.
RENEW_BEFORE = datetime.timedelta(days=30)
# Certificates are valid from a little in the past to tolerate clock skew between processes.
BACKDATE = datetime.timedelta(minutes=5)

CA_NAME = "pocketkube-ca"
APISERVER_NAME = "kube-apiserver"
ADMIN_NAME = "pocketkube-admin"
ADMIN_GROUPS = ("system:masters",)
# The first address of the default service CIDR 10.96.0.0/12, which the `kubernetes`
# Service in `default` gets; in-cluster clients reach the API server through it.
SERVICE_IP = "10.96.0.1"
SERVICE_DNS_NAMES = (
    "kubernetes",
    "kubernetes.default",
    "kubernetes.default.svc",
    "kubernetes.default.svc.cluster.local",
)
_UNSPECIFIED = {"0.0.0.0", "::", ""}


@dataclasses.dataclass(frozen=True)
class Pki:
    """Paths of the cluster's certificate files plus the PEM bytes clients need."""

    directory: str
    ca_cert_path: str
    ca_key_path: str
    serving_cert_path: str
    serving_key_path: str
    admin_cert_path: str
    admin_key_path: str
    ca_cert_pem: bytes
    admin_cert_pem: bytes
    admin_key_pem: bytes


def _paths(data_dir: str) -> dict[str, str]:
    d = os.path.join(os.path.abspath(data_dir), "pki")
    return {
        "directory": d,
        "ca_cert_path": os.path.join(d, "ca.crt"),
        "ca_key_path": os.path.join(d, "ca.key"),
        "serving_cert_path": os.path.join(d, "apiserver.crt"),
        "serving_key_path": os.path.join(d, "apiserver.key"),
        "admin_cert_path": os.path.join(d, "admin.crt"),
        "admin_key_path": os.path.join(d, "admin.key"),
    }


def load(data_dir: str) -> Pki:
    """Read an existing PKI without creating or changing anything; FileNotFoundError if absent."""
    p = _paths(data_dir)
    return Pki(
        **p,
        ca_cert_pem=_read(p["ca_cert_path"]),
        admin_cert_pem=_read(p["admin_cert_path"]),
        admin_key_pem=_read(p["admin_key_path"]),
    )


def ensure_pki(data_dir: str, *, hosts: Sequence[str] = (), clock: clock_mod.Clock | None = None) -> Pki:
    """Create the PKI under DATA_DIR/pki once, reusing valid files and reissuing stale ones."""
    clk = clock or clock_mod.Clock()
    now = clk.now()
    p = _paths(data_dir)
    os.makedirs(p["directory"], mode=0o700, exist_ok=True)

    ca = _load_pair(p["ca_cert_path"], p["ca_key_path"])
    if ca is None or not _fresh(ca[0], now):
        ca = _new_ca(now)
        _write_pair(p["ca_cert_path"], p["ca_key_path"], ca)
        ca_changed = True
    else:
        ca_changed = False
    ca_cert, ca_key = ca

    dns, ips = subject_alt_names(hosts)
    serving = None if ca_changed else _load_pair(p["serving_cert_path"], p["serving_key_path"])
    if serving is None or not _issued_by(serving[0], ca_cert, now) or _sans(serving[0]) != (dns, ips):
        serving = _issue(
            ca_cert,
            ca_key,
            now,
            cn=APISERVER_NAME,
            groups=(),
            days=LEAF_DAYS,
            usage=ExtendedKeyUsageOID.SERVER_AUTH,
            dns=dns,
            ips=ips,
        )
        _write_pair(p["serving_cert_path"], p["serving_key_path"], serving)

    admin = None if ca_changed else _load_pair(p["admin_cert_path"], p["admin_key_path"])
    if admin is None or not _issued_by(admin[0], ca_cert, now):
        admin = _issue(
            ca_cert,
            ca_key,
            now,
            cn=ADMIN_NAME,
            groups=ADMIN_GROUPS,
            days=LEAF_DAYS,
            usage=ExtendedKeyUsageOID.CLIENT_AUTH,
        )
        _write_pair(p["admin_cert_path"], p["admin_key_path"], admin)
    ensure_service_account_key(p["directory"])
    return load(data_dir)


SA_KEY = "sa.key"
SA_PUB = "sa.pub"


def ensure_service_account_key(directory: str) -> tuple[bytes, bytes]:
    """The ServiceAccount token signing pair (sa.key, sa.pub; ES256) in directory, created once and kept.

    Unlike leaf certs it never expires or rotates: replacing it would invalidate every issued token."""
    key_path, pub_path = os.path.join(directory, SA_KEY), os.path.join(directory, SA_PUB)
    try:
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except (OSError, ValueError, TypeError):
        key = ec.generate_private_key(ec.SECP256R1())
        _write_file(key_path, _key_pem(key), mode=0o600)  # type: ignore[arg-type]
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    try:
        current = _read(pub_path)
    except OSError:
        current = b""
    if current != pub:
        _write_file(pub_path, pub, mode=0o644)
    return _read(key_path), pub


def service_account_key(pki: Pki) -> tuple[bytes, bytes]:
    """The PEM private and public ServiceAccount signing keys of a PKI (created if missing)."""
    return ensure_service_account_key(pki.directory)


def issue_client_cert(
    pki: Pki,
    cn: str,
    *,
    groups: Sequence[str] = (),
    days: int = LEAF_DAYS,
    clock: clock_mod.Clock | None = None,
) -> tuple[bytes, bytes]:
    """Sign a client cert (CN = user name, O = groups, clientAuth) and return (cert_pem, key_pem)."""
    if not cn:
        raise ValueError("a client certificate needs a non-empty common name")
    if days <= 0:
        raise ValueError(f"days must be positive, got {days}")
    pair = _load_pair(pki.ca_cert_path, pki.ca_key_path)
    if pair is None:
        raise FileNotFoundError(f"no CA at {pki.ca_cert_path}")
    now = (clock or clock_mod.Clock()).now()
    cert, key = _issue(
        pair[0], pair[1], now, cn=cn, groups=groups, days=days, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    return cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)


def ssl_server_context(pki: Pki) -> ssl.SSLContext:
    """TLS for the API server: our serving cert, client certs requested (not required) and checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki.serving_cert_path, pki.serving_key_path)
    ctx.load_verify_locations(cafile=pki.ca_cert_path)
    # CERT_OPTIONAL: clients with a cert from our CA are authenticated as x509 users, while
    # token and anonymous clients still get through the handshake to be judged by authn.
    ctx.verify_mode = ssl.CERT_OPTIONAL
    # aiohttp serves HTTP/1.1 only; advertising h2 would make kubectl pick a protocol we
    # cannot speak.
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def ssl_client_context(pki: Pki) -> ssl.SSLContext:
    """TLS for in-process clients: trust our CA and present the admin cert."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca_cert_path)
    ctx.load_cert_chain(pki.admin_cert_path, pki.admin_key_path)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


def subject_alt_names(hosts: Iterable[str]) -> tuple[frozenset[str], frozenset[str]]:
    """The serving cert's DNS names and IP addresses (normalised) for the given extra hosts."""
    dns = {"localhost", *SERVICE_DNS_NAMES}
    ips = {"127.0.0.1", "::1", SERVICE_IP}
    hostname = socket.gethostname()
    if hostname:
        dns.add(hostname.lower())
    for raw in hosts:
        host = raw.strip().strip("[]")
        if host in _UNSPECIFIED:
            # A wildcard bind address is not something a client can dial; the loopback
            # names above already cover local use.
            continue
        try:
            ips.add(str(ipaddress.ip_address(host)))
        except ValueError:
            dns.add(host.lower())
    return frozenset(dns), frozenset(ips)


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_file(path: str, data: bytes, *, mode: int) -> None:
    # Write to a temp file and rename so a crash never leaves a half-written key behind.
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _write_pair(
    cert_path: str, key_path: str, pair: tuple[x509.Certificate, ec.EllipticCurvePrivateKey]
) -> None:
    cert, key = pair
    _write_file(key_path, _key_pem(key), mode=0o600)
    _write_file(cert_path, cert.public_bytes(serialization.Encoding.PEM), mode=0o644)


def _load_pair(cert_path: str, key_path: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    """The cert and key at these paths, or None when missing, unreadable or not a matching EC pair."""
    try:
        cert = x509.load_pem_x509_certificate(_read(cert_path))
        key = serialization.load_pem_private_key(_read(key_path), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        return None
    if cert.public_key() != key.public_key():
        return None
    return cert, key


def _fresh(cert: x509.Certificate, now: datetime.datetime) -> bool:
    return cert.not_valid_before_utc <= now and now + RENEW_BEFORE < cert.not_valid_after_utc


def _issued_by(cert: x509.Certificate, ca: x509.Certificate, now: datetime.datetime) -> bool:
    if not _fresh(cert, now):
        return False
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, exceptions.InvalidSignature):
        return False
    return True


def _sans(cert: x509.Certificate) -> tuple[frozenset[str], frozenset[str]]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return frozenset(), frozenset()
    dns = frozenset(ext.get_values_for_type(x509.DNSName))
    ips = frozenset(str(ip) for ip in ext.get_values_for_type(x509.IPAddress))
    return dns, ips


def _new_ca(now: datetime.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _issue(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    now: datetime.datetime,
    *,
    cn: str,
    groups: Sequence[str],
    days: int,
    usage: x509.ObjectIdentifier,
    dns: Iterable[str] = (),
    ips: Iterable[str] = (),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    # Kubernetes x509 authn reads the user from CN and one group per O attribute.
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + datetime.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in sorted(dns)]
    names += [x509.IPAddress(ipaddress.ip_address(i)) for i in sorted(ips)]
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key
