"""Kubeconfig files: build the admin one, write or print it, merge it into an existing file."""

from __future__ import annotations

import base64
import os
from collections.abc import Mapping
from typing import Any

import yaml

from pocketkube.base import pki as pki_mod

# The sections kubectl keys by `name`; merging replaces same-named entries in each.
NAMED_SECTIONS = ("clusters", "users", "contexts")


def admin_kubeconfig(server_url: str, pki: pki_mod.Pki, *, name: str = "pocketkube") -> dict[str, Any]:
    """A self-contained kubeconfig (certs embedded) for the admin user against server_url."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": name,
                "cluster": {
                    "server": server_url,
                    "certificate-authority-data": _b64(pki.ca_cert_pem),
                },
            }
        ],
        "users": [
            {
                "name": name,
                "user": {
                    "client-certificate-data": _b64(pki.admin_cert_pem),
                    "client-key-data": _b64(pki.admin_key_pem),
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": name}}],
        "current-context": name,
        "preferences": {},
    }


def dumps(cfg: dict[str, Any]) -> str:
    """The kubeconfig as YAML, keys in the order kubectl writes them."""
    return yaml.safe_dump(cfg, sort_keys=False, default_flow_style=False)


def write(path: str, cfg: dict[str, Any]) -> None:
    """Write the kubeconfig atomically, readable only by its owner (it holds a private key)."""
    _write_text(path, dumps(cfg))


def load(path: str) -> dict[str, Any]:
    """Read a kubeconfig; an absent or empty file is an empty config, anything else not a mapping is an error."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ValueError(f"{path} is not valid YAML: {_first_line(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a kubeconfig: expected a mapping, got {type(data).__name__}")
    for section in NAMED_SECTIONS:
        entries = data.get(section)
        if entries is not None and not isinstance(entries, list):
            raise ValueError(f"{path} is not a kubeconfig: {section!r} must be a list")
    return data


def merge(base: dict[str, Any], cfg: dict[str, Any], *, set_current: bool = True) -> dict[str, Any]:
    """base with cfg's clusters, users and contexts added; same-named entries replaced in place."""
    out = dict(base)
    out.setdefault("apiVersion", "v1")
    out.setdefault("kind", "Config")
    for section in NAMED_SECTIONS:
        entries = [e for e in out.get(section) or [] if isinstance(e, dict)]
        for new in cfg.get(section) or []:
            for i, old in enumerate(entries):
                if old.get("name") == new.get("name"):
                    entries[i] = new
                    break
            else:
                entries.append(new)
        out[section] = entries
    if set_current or not out.get("current-context"):
        out["current-context"] = cfg.get("current-context", "")
    if "preferences" not in out or out["preferences"] is None:
        out["preferences"] = {}
    return out


def merge_into(path: str, cfg: dict[str, Any], *, set_current: bool = True) -> None:
    """Merge cfg into the kubeconfig at path (created if absent), keeping everything else in it."""
    merged = merge(load(path), cfg, set_current=set_current)
    _write_text(path, dumps(merged), keep_mode=True)


def default_path(environ: Mapping[str, str] | None = None) -> str:
    """Where kubectl would write: the first file in $KUBECONFIG, else ~/.kube/config."""
    env = os.environ if environ is None else environ
    for entry in env.get("KUBECONFIG", "").split(os.pathsep):
        if entry:
            return os.path.expanduser(entry)
    home = env.get("HOME") or os.path.expanduser("~")
    return os.path.join(home, ".kube", "config")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _first_line(e: Exception) -> str:
    return " ".join(str(e).split())


def _write_text(path: str, text: str, *, keep_mode: bool = False) -> None:
    # Write through a symlinked kubeconfig (dotfile managers do this) instead of replacing the link.
    path = os.path.realpath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    mode = 0o600
    if keep_mode:
        try:
            # An existing file keeps its owner's chosen permissions.
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            pass
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
