"""A pod's hostname and domain, and the /etc/hosts file the kubelet manages for it."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from pocketkube.network import resolvconf

HEADER = "# Kubernetes-managed hosts file.\n"
HEADER_HOST_NETWORK = "# Kubernetes-managed hosts file (host network).\n"
# The hostname is what uname reports: at most 63 characters, as the kubelet truncates it.
HOSTNAME_MAX = 63
LOCAL = ("127.0.0.1\tlocalhost\n"
         "::1\tlocalhost ip6-localhost ip6-loopback\n"
         "fe00::0\tip6-localnet\n"
         "fe00::0\tip6-mcastprefix\n"
         "fe00::1\tip6-allnodes\n"
         "fe00::2\tip6-allrouters\n")


def hostname_and_domain(pod: Mapping[str, Any], *, cluster_domain: str = resolvconf.CLUSTER_DOMAIN) -> tuple[str, str]:
    """The pod's hostname (spec.hostname, else its name cut to 63 characters without a trailing - or .) and its
    domain (<subdomain>.<namespace>.svc.<cluster domain> when spec.subdomain is set, else "")."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    name = str(spec.get("hostname") or meta.get("name") or "")
    if len(name) > HOSTNAME_MAX:
        name = name[:HOSTNAME_MAX].rstrip("-.")
    subdomain = str(spec.get("subdomain") or "")
    domain = f"{subdomain}.{meta.get('namespace') or 'default'}.svc.{cluster_domain}" if subdomain else ""
    return name, domain


def uts_hostname(pod: Mapping[str, Any], *, cluster_domain: str = resolvconf.CLUSTER_DOMAIN) -> str:
    """What the pod's containers see as their hostname: the fully qualified name under setHostnameAsFQDN."""
    name, domain = hostname_and_domain(pod, cluster_domain=cluster_domain)
    if (pod.get("spec") or {}).get("setHostnameAsFQDN") and domain:
        return f"{name}.{domain}"
    return name


def _aliases(pod: Mapping[str, Any]) -> str:
    aliases = [a for a in (pod.get("spec") or {}).get("hostAliases") or [] if isinstance(a, Mapping)]
    if not aliases:
        return ""
    lines = [f"{a.get('ip') or ''}\t" + "\t".join(str(h) for h in a.get("hostnames") or []) + "\n" for a in aliases]
    return "\n# Entries added by HostAliases.\n" + "".join(lines)


def render(pod: Mapping[str, Any], ips: Sequence[str], *, cluster_domain: str = resolvconf.CLUSTER_DOMAIN,
           node_hosts: str = "") -> str:
    """The pod's /etc/hosts as the kubelet writes it: localhost entries and the pod's IPs with its names, or
    for a host-network pod the node's own file (node_hosts); then the pod's hostAliases."""
    if (pod.get("spec") or {}).get("hostNetwork"):
        body = node_hosts if not node_hosts or node_hosts.endswith("\n") else node_hosts + "\n"
        return HEADER_HOST_NETWORK + body + _aliases(pod)
    name, domain = hostname_and_domain(pod, cluster_domain=cluster_domain)
    names = f"{name}.{domain}\t{name}" if domain else name
    return HEADER + LOCAL + "".join(f"{ip}\t{names}\n" for ip in ips) + _aliases(pod)


def write(directory: str, content: str) -> str:
    """Materialise content as <directory>/hosts (atomically) and return its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "hosts")
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(content)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
