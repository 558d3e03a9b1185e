"""`pocketkube user add`: a client certificate for a new user, issued through a CSR, and a kubeconfig for it."""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import re
import time
from collections.abc import Sequence
from typing import Any, TextIO

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from pocketkube.base import clock as clock_mod
from pocketkube.base import kubeconfig, pki

MASTERS = "system:masters"
SIGNER = "kubernetes.io/kube-apiserver-client"
USAGES = ["digital signature", "client auth"]
# X.509's upper bound for a CN or an O attribute (RFC 5280 ub-common-name, ub-organization-name).
MAX_LEN = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]*")
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]*")
WAIT_SECONDS = 30.0
APPROVE_REASON = "PocketkubeUserAdd"
APPROVE_MESSAGE = "This CSR was approved by pocketkube user add."


class Failure(Exception):
    """A problem the user can fix; reported as one line, exit code 1."""


# --- arguments -----------------------------------------------------------------------------

def user_name(value: str) -> str:
    """argparse type for NAME: the certificate's CN, which Kubernetes takes as the user name."""
    if len(value) > MAX_LEN:
        raise argparse.ArgumentTypeError(f"user name {value!r} is longer than {MAX_LEN} characters")
    if value.startswith("system:"):
        raise argparse.ArgumentTypeError(f"user name {value!r}: names starting with 'system:' are reserved for "
                                         "Kubernetes components")
    if not _NAME_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid user name {value!r}: use letters, digits and . _ @ + - "
                                         "(starting with a letter or digit), e.g. alice or alice@example.com")
    return value


def group_name(value: str) -> str:
    """argparse type for --group: one O attribute, which Kubernetes takes as a group."""
    if value == MASTERS:
        raise argparse.ArgumentTypeError(f"group {MASTERS} is not allowed: the kube-apiserver-client signer "
                                         "refuses it (use the admin kubeconfig for full access, or bind the "
                                         "cluster-admin ClusterRole to the user)")
    if len(value) > MAX_LEN:
        raise argparse.ArgumentTypeError(f"group {value!r} is longer than {MAX_LEN} characters")
    if not _GROUP_RE.fullmatch(value):
        raise argparse.ArgumentTypeError(f"invalid group {value!r}: use letters, digits and . _ : @ + - "
                                         "(starting with a letter or digit), e.g. dev")
    return value


def add_parser(sub: Any) -> None:
    """Register `user add` on the top-level subparsers."""
    user = sub.add_parser("user", help="manage users who sign in with client certificates")
    actions = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="issue a client certificate for a user and write a kubeconfig for them",
                             description="Create a key and a CertificateSigningRequest for NAME, approve it as the "
                                         "admin and write a kubeconfig with the issued certificate. When the "
                                         "cluster is not running, the certificate is signed directly with the "
                                         "cluster CA in the data dir.")
    add.add_argument("name", type=user_name, metavar="NAME", help="the user name (the certificate's CN)")
    add.add_argument("--group", "-g", dest="groups", type=group_name, action="append", default=[], metavar="G",
                     help="a group of the user (the certificate's O); repeat for more")
    add.add_argument("--data-dir", default=None,
                     help="where the cluster keeps its state (default $POCKETKUBE_DATA_DIR or ~/.pocketkube)")
    add.add_argument("--kubeconfig-out", default=None, metavar="FILE",
                     help="where to write the user's kubeconfig (default DATA_DIR/users/NAME.kubeconfig)")


# --- the key, the request and the kubeconfig -------------------------------------------------

def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def csr_pem(key: ec.EllipticCurvePrivateKey, name: str, groups: Sequence[str]) -> bytes:
    """A PKCS#10 request with CN = name and one O per group, signed by key."""
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
    req = x509.CertificateSigningRequestBuilder().subject_name(x509.Name(attrs)).sign(key, hashes.SHA256())
    return req.public_bytes(serialization.Encoding.PEM)


def csr_object(request_pem: bytes, name: str) -> dict[str, Any]:
    return {
        "apiVersion": "certificates.k8s.io/v1",
        "kind": "CertificateSigningRequest",
        "metadata": {"generateName": f"{name}-", "labels": {"pocketkube.io/user": _label_value(name)}},
        "spec": {"request": base64.b64encode(request_pem).decode("ascii"), "signerName": SIGNER,
                 "usages": list(USAGES)},
    }


def _label_value(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:63].strip("._-") or "user"


def _dns_name(name: str) -> str:
    return re.sub(r"[^a-z0-9.-]", "-", name.lower()).strip(".-")[:50] or "user"


def user_kubeconfig(admin: dict[str, Any], name: str, *, cert_pem: bytes, key: bytes) -> dict[str, Any]:
    """A kubeconfig with the admin kubeconfig's cluster, this user's certificate and a NAME@CLUSTER context."""
    current = admin.get("current-context") or ""
    ctx = next((c.get("context") or {} for c in admin.get("contexts") or []
                if isinstance(c, dict) and c.get("name") == current), {})
    cluster_name = ctx.get("cluster") or "pocketkube"
    cluster = next((c for c in admin.get("clusters") or []
                    if isinstance(c, dict) and c.get("name") == cluster_name), None)
    if cluster is None:
        raise Failure(f"the admin kubeconfig has no cluster named {cluster_name!r}")
    context_name = f"{name}@{cluster_name}"
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [cluster],
        "users": [{"name": name, "user": {"client-certificate-data": base64.b64encode(cert_pem).decode("ascii"),
                                          "client-key-data": base64.b64encode(key).decode("ascii")}}],
        "contexts": [{"name": context_name, "context": {"cluster": cluster_name, "user": name}}],
        "current-context": context_name,
        "preferences": {},
    }


# --- getting the certificate -------------------------------------------------------------------

async def _through_api(admin_path: str, request_pem: bytes, name: str, *, wait: float) -> tuple[bytes, str] | None:
    """Submit, approve and wait for the CSR as the admin; None when the cluster does not answer."""
    import aiohttp

    from pocketkube.api import errors
    from pocketkube.client import config, rest

    csrs = rest.GVR("certificates.k8s.io", "v1", "certificatesigningrequests")
    client = config.from_kubeconfig(admin_path, user_agent="pocketkube-user-add", field_manager="pocketkube")
    try:
        try:
            await client.request("GET", "/version")
        except (TimeoutError, aiohttp.ClientConnectionError, OSError):
            return None
        try:
            created = await client.create(csrs, csr_object(request_pem, name))
            csr_name = created["metadata"]["name"]
            created.setdefault("status", {})["conditions"] = [{
                "type": "Approved", "status": "True", "reason": APPROVE_REASON, "message": APPROVE_MESSAGE}]
            await client.update(csrs, created, subresource="approval")
            deadline = time.monotonic() + wait
            while True:
                current = await client.get(csrs.path("", csr_name))
                status = current.get("status") or {}
                if status.get("certificate"):
                    return base64.b64decode(status["certificate"]), csr_name
                failed = [c for c in status.get("conditions") or [] if c.get("type") == "Failed"]
                if failed:
                    raise Failure(f"the signer refused CertificateSigningRequest {csr_name}: "
                                  f"{failed[0].get('message') or failed[0].get('reason')}")
                if time.monotonic() > deadline:
                    raise Failure(f"CertificateSigningRequest {csr_name} was approved but no certificate was "
                                  f"issued within {wait:.0f}s (is the controller manager running?)")
                await asyncio.sleep(0.2)
        except errors.APIError as e:
            raise Failure(f"the API server refused the request: {e.message}") from None
    finally:
        await client.close()


def _directly(keys: pki.Pki, request_pem: bytes) -> bytes:
    """Sign with the CA on disk, exactly as the signer controller would."""
    from pocketkube.controllers import csrsigning

    ca = csrsigning.CA.load(keys.ca_cert_path, keys.ca_key_path)
    req = x509.load_pem_x509_csr(request_pem)
    return csrsigning.sign(ca, req, USAGES, ttl=csrsigning.duration(None), now=clock_mod.Clock().now())


def add(*, name: str, groups: Sequence[str], data_dir: str, out_path: str | None, out: TextIO,
        wait: float = WAIT_SECONDS) -> str:
    """Issue NAME's certificate and write their kubeconfig; returns its path."""
    admin_path = os.path.join(data_dir, "kubeconfig")
    if not os.path.isfile(admin_path):
        raise Failure(f"no cluster in {data_dir}: run `pocketkube up --data-dir {data_dir}` first")
    try:
        admin = kubeconfig.load(admin_path)
    except ValueError as e:
        raise Failure(str(e)) from None
    key = new_key()
    request_pem = csr_pem(key, name, groups)
    got = asyncio.run(_through_api(admin_path, request_pem, name, wait=wait))
    if got is not None:
        cert_pem, csr_name = got
        how = f"CertificateSigningRequest {csr_name} approved and signed by the cluster"
    else:
        try:
            keys = pki.load(data_dir)
        except FileNotFoundError:
            raise Failure(f"no cluster CA in {data_dir}/pki: run `pocketkube up --data-dir {data_dir}` first") from None
        cert_pem = _directly(keys, request_pem)
        how = f"the cluster is not running: signed directly with the cluster CA in {keys.directory}"
    path = os.path.abspath(out_path or os.path.join(data_dir, "users", f"{name}.kubeconfig"))
    cfg = user_kubeconfig(admin, name, cert_pem=cert_pem, key=key_pem(key))
    kubeconfig.write(path, cfg)
    expires = x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc.strftime("%Y-%m-%d %H:%M UTC")
    group_text = ", ".join(groups) if groups else "none besides system:authenticated"
    print(f'User "{name}" (groups: {group_text}): {how}; valid until {expires}.\n'
          f"Kubeconfig: {path} (context {cfg['current-context']})\n"
          f"\n"
          f"  kubectl --kubeconfig {path} auth whoami\n"
          f"  kubectl --kubeconfig {path} get pods\n"
          f"\n"
          f"{name} may do nothing yet; grant access with RBAC, e.g.:\n"
          f"  kubectl create rolebinding {_dns_name(name)}-edit --clusterrole=edit --user={name} "
          f"--namespace=default", file=out)
    return path


def run(args: argparse.Namespace, *, data_dir: str, out: TextIO, err: TextIO) -> int:
    """Run `pocketkube user ...`; the exit status."""
    try:
        add(name=args.name, groups=list(dict.fromkeys(args.groups)), data_dir=data_dir,
            out_path=args.kubeconfig_out, out=out)
    except Failure as e:
        print(f"pocketkube: error: {e}", file=err)
        return 1
    return 0
