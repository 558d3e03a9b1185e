"""A pod's way to the API: projected ServiceAccount tokens (TokenRequest, rotated at 80% of their life) and its address."""

from __future__ import annotations

import dataclasses
import datetime
import random
import urllib.parse
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import rest

SERVICE_ACCOUNTS = rest.GVR("", "v1", "serviceaccounts")
DEFAULT_SECONDS = 3600
# The kubelet's token manager: refresh past 80% of the lifetime or after 24 h, with up to 10 s of jitter.
MAX_TTL = datetime.timedelta(hours=24)
MAX_JITTER_SECONDS = 10
DEFAULT_MODE = 0o644
# The kubelet's token manager drops expired tokens once a minute (gcPeriod), not on every request: a scan per
# token issued made a burst of N pod starts cost N^2/2 comparisons.
PRUNE_EVERY = datetime.timedelta(minutes=1)


class FetchError(Exception):
    """A token the API server would not issue; the kubelet's "failed to fetch token: ..." reason."""


@dataclasses.dataclass(frozen=True)
class Issued:
    token: str
    expires: datetime.datetime
    seconds: int


def requires_refresh(issued: Issued, now: datetime.datetime, *, jitter: float = 0.0) -> bool:
    """Whether the kubelet would ask for a new token now (kube's token manager rule)."""
    iat = issued.expires - datetime.timedelta(seconds=issued.seconds)
    slack = datetime.timedelta(seconds=jitter)
    if now > iat + MAX_TTL - slack:
        return True
    return now > issued.expires - datetime.timedelta(seconds=issued.seconds * 20 // 100) - slack


def request_body(pod: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """The TokenRequest the kubelet sends for a projected source: bound to the pod, the source's audience and expiry."""
    meta = pod.get("metadata") or {}
    spec: dict[str, Any] = {"expirationSeconds": int(source.get("expirationSeconds") or DEFAULT_SECONDS),
                            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta.get("name", ""),
                                               "uid": meta.get("uid", "")}}
    if source.get("audience"):
        spec["audiences"] = [str(source["audience"])]
    return {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}


class TokenManager:
    """Issued tokens by request, so every refresh of a volume reuses a token until it is due for rotation."""

    def __init__(self) -> None:
        self._issued: dict[tuple[str, ...], Issued] = {}
        self._random = random.Random()
        self._pruned_at: datetime.datetime | None = None

    async def token(self, client: rest.Client, pod: Mapping[str, Any], source: Mapping[str, Any], *,
                    now: datetime.datetime) -> str:
        meta = pod.get("metadata") or {}
        ns = str(meta.get("namespace") or "")
        sa = str((pod.get("spec") or {}).get("serviceAccountName") or "default")
        body = request_body(pod, source)
        key = (str(meta.get("uid") or ""), ns, sa, str(source.get("audience") or ""),
               str(body["spec"]["expirationSeconds"]))
        current = self._issued.get(key)
        if current is not None and not requires_refresh(current, now, jitter=self._random.random() * MAX_JITTER_SECONDS):
            return current.token
        try:
            answer = await client.request("POST", SERVICE_ACCOUNTS.path(ns, sa, subresource="token"), body=body)
        except errors.APIError as e:
            if current is not None and now < current.expires:
                return current.token  # keep serving the old token until it really expires
            raise FetchError(f"failed to fetch token: {e.message}") from e
        status = (answer or {}).get("status") or {}
        token = str(status.get("token") or "")
        if not token:
            raise FetchError("failed to fetch token: no token in server response")
        try:
            expires = clock_mod.parse_time(str(status.get("expirationTimestamp") or ""))
        except ValueError:
            expires = now + datetime.timedelta(seconds=int(body["spec"]["expirationSeconds"]))
        self._prune(now)
        self._issued[key] = Issued(token, expires, int(body["spec"]["expirationSeconds"]))
        return token

    def _prune(self, now: datetime.datetime) -> None:
        # Tokens of pods that went away are dropped once they expire; nothing else references them.
        if self._pruned_at is not None and abs(now - self._pruned_at) < PRUNE_EVERY:
            return
        self._pruned_at = now
        self._issued = {k: v for k, v in self._issued.items() if v.expires > now}


MANAGER = TokenManager()


async def files(client: rest.Client, pod: Mapping[str, Any], source: Mapping[str, Any], *, default_mode: Any,
                now: datetime.datetime) -> dict[str, tuple[bytes, int]]:
    """The file of a projected serviceAccountToken source: path -> (token, mode)."""
    mode = int(default_mode) if isinstance(default_mode, int) else DEFAULT_MODE
    token = await MANAGER.token(client, pod, source, now=now)
    return {str(source.get("path") or "token"): (token.encode(), mode)}


def api_address(client: rest.Client) -> tuple[str, int] | None:
    """Where pods reach the API server: for now its real address (the agent's own API URL).

    Pods share the host network, so the kubernetes Service's ClusterIP (10.96.0.1:443) is not routed yet;
    this is the one place to switch to it once pods get a ClusterIP route."""
    base = getattr(client, "base_url", "")
    if not base:
        return None
    parts = urllib.parse.urlsplit(base)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return host, port


def service_env(client: rest.Client) -> dict[str, str]:
    """The kubernetes Service's variables every container gets (KUBERNETES_SERVICE_HOST, _PORT, ...)."""
    address = api_address(client)
    if address is None:
        return {}
    host, port = address
    url = f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": str(port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(port), "KUBERNETES_PORT": url, f"KUBERNETES_PORT_{port}_TCP": url,
            f"KUBERNETES_PORT_{port}_TCP_PROTO": "tcp", f"KUBERNETES_PORT_{port}_TCP_PORT": str(port),
            f"KUBERNETES_PORT_{port}_TCP_ADDR": host}
