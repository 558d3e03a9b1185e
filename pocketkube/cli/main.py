"""The `pocketkube` command: parse arguments and run up, kubeconfig, user or version."""

from __future__ import annotations

import argparse
import asyncio
import errno
import ipaddress
import logging
import os
import sys
import time
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn, TextIO

import pocketkube
from pocketkube.base import kubeconfig, pki
from pocketkube.cli import users

DEFAULT_PORT = 6443
DEFAULT_HOST = "127.0.0.1"
DATA_DIR_ENV = "POCKETKUBE_DATA_DIR"
DEBUG_ENV = "POCKETKUBE_DEBUG"
PROG = "pocketkube"


class UserError(Exception):
    """A problem the user can fix; reported as one line, exit code 1."""


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point for the `pocketkube` script and `python -m pocketkube`; exits with the status."""
    sys.exit(run(argv))


def run(argv: Sequence[str] | None = None, *, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one pocketkube command and return its exit status."""
    started = time.monotonic()
    stdout = out or sys.stdout
    stderr = err or sys.stderr
    args = _parser().parse_args(argv)
    try:
        if args.command == "up":
            return _up(args, started=started, out=stdout, err=stderr)
        if args.command == "user":
            return users.run(args, data_dir=_data_dir(args), out=stdout, err=stderr)
        if args.command == "kubeconfig":
            return _kubeconfig(args, out=stdout)
        if args.command == "version":
            # Imported here: the schema package is slow to import and only `up` needs it.
            from pocketkube.api import schemas

            print(
                f"pocketkube {pocketkube.__version__} (Kubernetes API v{schemas.KUBE_VERSION})", file=stdout
            )
            return 0
    except KeyboardInterrupt:
        # Ctrl+C during startup, before the cluster's own signal handling is in place.
        print(f"{PROG}: interrupted", file=stderr)
        return 0
    except UserError as e:
        print(f"{PROG}: error: {e}", file=stderr)
        return 1
    except OSError as e:
        print(f"{PROG}: error: {_os_error_message(e, args)}", file=stderr)
        return 1
    except Exception as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"{PROG}: error: {type(e).__name__}: {e} (set {DEBUG_ENV}=1 for a traceback)", file=stderr)
        return 1
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse only allows the ones above


def default_data_dir(environ: Mapping[str, str] | None = None) -> str:
    """$POCKETKUBE_DATA_DIR, else ~/.pocketkube."""
    env = os.environ if environ is None else environ
    return env.get(DATA_DIR_ENV) or os.path.join(os.path.expanduser("~"), ".pocketkube")


def kubeconfig_path(data_dir: str) -> str:
    """Where `pocketkube up` writes the admin kubeconfig for a data dir."""
    return os.path.join(data_dir, "kubeconfig")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Kubernetes in one Python process.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="start a cluster and serve until Ctrl+C")
    _add_data_dir(up)
    up.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="API server port; 0 picks a free one (default 6443)"
    )
    up.add_argument("--host", default=DEFAULT_HOST, help="address to listen on (default 127.0.0.1)")
    up.add_argument(
        "--nodes", type=_count, default=0, metavar="N",
        help="start N nodes that run pods as local processes (default 0: pods stay Pending)",
    )
    up.add_argument(
        "--virtual-nodes", type=_count, default=0, metavar="M",
        help="add M virtual nodes whose pods are reported Running/Ready without processes (for scale tests)",
    )
    up.add_argument(
        "--zones", type=_zones, default=None, metavar="A,B,C",
        help="spread nodes over these topology.kubernetes.io/zone values",
    )
    up.add_argument(
        "--token-auth-file", default=None, metavar="FILE",
        help='accept the bearer tokens of FILE (CSV: token,user,uid,"group1,group2"), as kube-apiserver does',
    )
    up.add_argument("--encryption-provider-config", default=None, metavar="FILE",
                    help="encrypt values at rest as this EncryptionConfiguration says (aesgcm, aescbc, secretbox)")
    up.add_argument("--audit-policy-file", default=None, metavar="FILE",
                    help="audit requests as this audit.k8s.io/v1 Policy says (needs --audit-log-path)")
    up.add_argument("--audit-log-path", default=None, metavar="PATH",
                    help="write audit events here as JSON lines; - writes them to stdout")
    up.add_argument("--audit-log-maxsize", type=_count, default=0, metavar="MB",
                    help="rotate the audit log when it grows past this many megabytes (default 0: never)")
    up.add_argument("--audit-log-maxbackup", type=_count, default=0, metavar="N",
                    help="keep at most N rotated audit logs (default 0: keep all)")
    up.add_argument("--ingress-http-port", type=_port, default=None, metavar="PORT",
                    help="host port of the ingress's HTTP listener (default 80 if it can bind it, else 8080)")
    up.add_argument("--ingress-https-port", type=_port, default=None, metavar="PORT",
                    help="host port of the ingress's HTTPS listener (default 443 if it can bind it, else 8443)")
    up.add_argument("--cluster-cidr", type=_cidr, default=None, metavar="CIDR",
                    help="pod IPs: each node gets a /24 of it (default 10.244.0.0/16)")
    up.add_argument("--service-cidr", type=_cidr, default=None, metavar="CIDR",
                    help="ClusterIPs of Services (default 10.96.0.0/12)")
    up.add_argument("--pod-network", choices=("auto", "on", "off"), default="auto",
                    help="own network namespace and IP per pod where the host allows it (auto, as root), "
                         "or off: pods share the host's network")
    up.add_argument("--dns-port", type=_port, default=0, metavar="PORT",
                    help="UDP and TCP port of the cluster DNS server on --host (default 0: a free port)")
    up.add_argument("--dns-upstream", action="append", type=_upstream, default=None, metavar="IP[:PORT]",
                    help="forward names outside cluster.local here (repeatable; default: /etc/resolv.conf's nameservers)")
    up.add_argument("--authorization-mode", type=_authorization_mode, default=None, metavar="MODES",
                    help="ordered authorizers: Node, RBAC, AlwaysAllow, AlwaysDeny (default Node,RBAC)")
    up.add_argument("--enable-admission-plugins", type=_names, default=(), metavar="NAMES",
                    help="admission plugins to enable besides the default ones (kube's plugin names)")
    up.add_argument("--disable-admission-plugins", type=_names, default=(), metavar="NAMES",
                    help="default admission plugins to turn off, e.g. NamespaceLifecycle,ResourceQuota")
    up.add_argument("--max-requests-inflight", type=_inflight, default=400, metavar="N",
                    help="with --max-mutating-requests-inflight, the API server's concurrency limit (default 400)")
    up.add_argument("--max-mutating-requests-inflight", type=_inflight, default=200, metavar="N",
                    help="added to --max-requests-inflight for API Priority and Fairness (default 200)")
    up.add_argument(
        "--merge-kubeconfig",
        action="store_true",
        help="also merge the admin context into $KUBECONFIG or ~/.kube/config and make it current",
    )

    kc = sub.add_parser("kubeconfig", help="print the admin kubeconfig of a cluster")
    _add_data_dir(kc)

    sub.add_parser("version", help="print the pocketkube version")
    users.add_parser(sub)
    return parser


def _authorization_mode(value: str) -> tuple[str, ...]:
    from pocketkube.apiserver import authz

    try:
        return authz.parse_modes(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _names(value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip())


def _inflight(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {value!r}") from None


def _cidr(value: str) -> str:
    import ipaddress

    try:
        net = ipaddress.ip_network(value, strict=True)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"invalid CIDR {value!r}: {e}") from None
    if net.version != 4 or net.prefixlen > 24:
        raise argparse.ArgumentTypeError(f"expected an IPv4 CIDR of at least a /24, not {value!r}")
    return str(net)


def _upstream(value: str) -> str:
    from pocketkube.network import dnsserver

    try:
        dnsserver.parse_upstream(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid nameserver {value!r}: expected IP or IP:PORT") from None
    return value


def _count(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, not {value!r}") from None
    if not 0 <= n <= 10000:
        raise argparse.ArgumentTypeError(f"must be between 0 and 10000, not {n}")
    return n


def _zones(value: str) -> list[str]:
    zones = [z.strip() for z in value.split(",") if z.strip()]
    if not zones:
        raise argparse.ArgumentTypeError("expected a comma-separated list of zone names, e.g. a,b,c")
    return zones


def _add_data_dir(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help=f"where the cluster keeps its state (default ${DATA_DIR_ENV} or ~/.pocketkube)",
    )


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid port {text!r}: not a number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"invalid port {value}: must be between 0 and 65535")
    return value


def _data_dir(args: argparse.Namespace) -> str:
    return os.path.abspath(os.path.expanduser(args.data_dir or default_data_dir()))


def _up(args: argparse.Namespace, *, started: float, out: TextIO, err: TextIO) -> int:
    # Imported here so `version` and `kubeconfig` stay quick and work without the server rooms.
    from pocketkube import cluster

    data_dir = _data_dir(args)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    # Controllers and the API server report problems through logging; show them on stderr.
    logging.basicConfig(stream=err, level=logging.INFO if os.environ.get(DEBUG_ENV) else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    def on_ready(info: Any) -> None:
        elapsed = time.monotonic() - started
        url = _client_url(info.url, port=info.port)
        # Load rather than ensure: the running server already chose its certificates and
        # must not have its serving cert reissued under it.
        cfg = kubeconfig.admin_kubeconfig(url, pki.load(data_dir))
        path = kubeconfig_path(data_dir)
        kubeconfig.write(path, cfg)
        merged = ""
        dns = f"Cluster DNS (kube-system/kube-dns) answers on {info.dns_address} (UDP and TCP).\n" \
            if getattr(info, "dns_address", "") else ""
        if args.merge_kubeconfig:
            target = kubeconfig.default_path()
            kubeconfig.merge_into(target, cfg)
            merged = f'Merged context "pocketkube" into {target} and made it current.\n'
        print(
            f"pocketkube is up at {url} (ready in {elapsed:.2f}s)\n"
            f"\n"
            f"  export KUBECONFIG={path}\n"
            f"  kubectl get ns\n"
            f"\n"
            f"{merged}"
            f"{dns}"
            f"Data: {data_dir}. Press Ctrl+C to stop.",
            file=out,
            flush=True,
        )

    extra: dict[str, Any] = {}
    if args.token_auth_file:
        if not os.path.isfile(args.token_auth_file):
            raise UserError(f"--token-auth-file {args.token_auth_file}: no such file")
        extra["token_auth_file"] = os.path.abspath(args.token_auth_file)
    extra.update(_security_settings(args))
    extra.update(_access_settings(args))
    for key in ("cluster_cidr", "service_cidr"):
        if getattr(args, key):
            extra[key] = getattr(args, key)
    if args.pod_network != "auto":
        extra["pod_network"] = args.pod_network
    extra["dns_port"] = args.dns_port
    extra["dns_upstreams"] = args.dns_upstream
    extra["ingress_http_port"] = args.ingress_http_port
    extra["ingress_https_port"] = args.ingress_https_port
    settings = cluster.Settings(data_dir=data_dir, host=args.host, port=args.port,
                                nodes=args.nodes, virtual_nodes=args.virtual_nodes, zones=args.zones, **extra)
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(cluster.run(settings, on_ready=on_ready))
    print("pocketkube stopped", file=err, flush=True)
    return 0


def _security_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Check the encryption and audit files up front, so a bad one stops `up` with kube's message."""
    from pocketkube.apiserver import audit_policy, encryption

    extra: dict[str, Any] = {}
    if args.encryption_provider_config:
        path = os.path.abspath(args.encryption_provider_config)
        try:
            encryption.load(path)
        except encryption.ConfigError as e:
            raise UserError(f"--encryption-provider-config {args.encryption_provider_config}: {e}") from None
        extra["encryption_provider_config"] = path
    if bool(args.audit_policy_file) != bool(args.audit_log_path):
        raise UserError("--audit-policy-file and --audit-log-path go together: the policy decides what is "
                        "recorded, the path where it is written")
    if args.audit_policy_file:
        try:
            audit_policy.load_policy(os.path.abspath(args.audit_policy_file))
        except audit_policy.PolicyError as e:
            raise UserError(f"--audit-policy-file {args.audit_policy_file}: {e}") from None
        extra["audit_policy_file"] = os.path.abspath(args.audit_policy_file)
        extra["audit_log_path"] = args.audit_log_path if args.audit_log_path == "-" else os.path.abspath(args.audit_log_path)
        extra["audit_log_maxsize"] = args.audit_log_maxsize
        extra["audit_log_maxbackup"] = args.audit_log_maxbackup
    return extra


def _access_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Authorization mode, admission plugins and in-flight limits, checked up front with kube's messages."""
    from pocketkube.apiserver import admission, flowcontrol

    try:
        admission.check_plugin_flags(args.enable_admission_plugins, args.disable_admission_plugins)
        flowcontrol.check_inflight(args.max_requests_inflight, args.max_mutating_requests_inflight)
    except ValueError as e:
        raise UserError(str(e)) from None
    extra: dict[str, Any] = {
        "enable_admission_plugins": args.enable_admission_plugins,
        "disable_admission_plugins": args.disable_admission_plugins,
        "max_requests_inflight": args.max_requests_inflight,
        "max_mutating_requests_inflight": args.max_mutating_requests_inflight,
    }
    if args.authorization_mode is not None:
        extra["authorization_mode"] = args.authorization_mode
    return extra


def _loop_factory() -> Any:
    """uvloop where it is installed (it roughly halves the per-request overhead), else asyncio's loop."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _kubeconfig(args: argparse.Namespace, *, out: TextIO) -> int:
    data_dir = _data_dir(args)
    path = kubeconfig_path(data_dir)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise UserError(
            f"no cluster in {data_dir}: run `pocketkube up --data-dir {data_dir}` first"
        ) from None
    out.write(text)
    return 0


def _client_url(url: str, *, port: int) -> str:
    """The URL clients should dial: a wildcard bind address becomes loopback, the port the real one."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or DEFAULT_HOST
    try:
        if ipaddress.ip_address(host).is_unspecified:
            host = "::1" if ":" in host else DEFAULT_HOST
    except ValueError:
        pass
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return urllib.parse.urlunsplit((parts.scheme or "https", netloc, parts.path, "", ""))


def _os_error_message(e: OSError, args: argparse.Namespace) -> str:
    port = getattr(args, "port", None)
    host = getattr(args, "host", None)
    text = str(e)
    if e.errno == errno.EADDRINUSE or "address already in use" in text:
        return f"port {port} on {host} is already in use (stop whatever listens there, or pass --port 0 for a free port)"
    if e.errno == errno.EACCES and port is not None and 0 < port < 1024 and "bind" in text:
        return f"no permission to listen on port {port} (ports below 1024 need root; try --port 6443)"
    if e.errno == errno.EADDRNOTAVAIL or "Cannot assign requested address" in text:
        return f"cannot listen on {host}: no such address on this machine"
    return text
