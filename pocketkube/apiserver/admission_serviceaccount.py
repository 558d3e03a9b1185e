"""ServiceAccount admission: default a pod's account, require it to exist, mount its API token volume."""

from __future__ import annotations

import random
from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import context

DEFAULT_NAME = "default"
VOLUME_PREFIX = "kube-api-access-"
MOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_SECONDS = 3607  # satokens.WARN_ONLY_SECONDS: the admission plugin's marker expiry
MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
# kube waits for the controller to create a namespace's default account (it retries, ~1s apart).
DEFAULT_ATTEMPTS = 10
RETRY_SECONDS = 0.5
_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
# kube draws the suffix from math/rand; a private generator (seeded from the OS) makes it one call, not
# five system calls, and nobody else's random.seed() can make suffixes repeat.
_RNG = random.Random()


def token_volume_source() -> dict[str, Any]:
    """The projected source of kube-api-access-*: token, the cluster CA and the namespace (TokenVolumeSource)."""
    return {"sources": [
        {"serviceAccountToken": {"expirationSeconds": TOKEN_SECONDS, "path": "token"}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace",
                                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
    ], "defaultMode": 420}


def should_automount(sa: dict[str, Any], spec: dict[str, Any]) -> bool:
    """The pod's automountServiceAccountToken wins, then the account's; true when neither says."""
    if isinstance(spec.get("automountServiceAccountToken"), bool):
        return bool(spec["automountServiceAccountToken"])
    if isinstance(sa.get("automountServiceAccountToken"), bool):
        return bool(sa["automountServiceAccountToken"])
    return True


def mount_token(spec: dict[str, Any], *, suffix: str = "") -> None:
    """Mount the API token volume read-only at MOUNT_PATH in every (init) container not mounting something there."""
    volumes: list[Any] = spec["volumes"] if isinstance(spec.get("volumes"), list) else []
    existing = next((v.get("name") for v in volumes if isinstance(v, dict)
                     and str(v.get("name") or "").startswith(VOLUME_PREFIX)), None)
    name = existing or VOLUME_PREFIX + (suffix or "".join(_RNG.choices(_ALPHABET, k=5)))
    needs_volume = False
    for key in ("initContainers", "containers"):
        for c in spec.get(key) or []:
            if not isinstance(c, dict):
                continue
            mounts: list[Any] = c["volumeMounts"] if isinstance(c.get("volumeMounts"), list) else []
            if any(isinstance(m, dict) and m.get("mountPath") == MOUNT_PATH for m in mounts):
                continue
            c["volumeMounts"] = [*mounts, {"name": name, "readOnly": True, "mountPath": MOUNT_PATH}]
            needs_volume = True
    if existing is None and needs_volume:
        spec["volumes"] = [*volumes, {"name": name, "projected": token_volume_source()}]


async def _account(server: context.Server, namespace: str, name: str) -> dict[str, Any] | None:
    res = server.registry.get("", "v1", "serviceaccounts")
    if res is None:
        return None
    attempts = DEFAULT_ATTEMPTS if name == DEFAULT_NAME else 1
    for i in range(attempts):
        if i:
            await server.clock.sleep(RETRY_SECONDS)
        sa = await server.objects.get_shared(res, namespace, name)
        if sa is not None:
            return dict(sa)
    return None


async def admit(server: context.Server, call: context.Call, obj: dict[str, Any],
                old: dict[str, Any] | None, operation: str) -> None:
    """The ServiceAccount plugin for pod creation (mirror pods are left as they are)."""
    if operation != "CREATE" or (call.res.group, call.res.kind) != ("", "Pod") or call.info.subresource:
        return
    spec = obj.get("spec")
    meta = obj.get("metadata") or {}
    if not isinstance(spec, dict) or MIRROR_ANNOTATION in (meta.get("annotations") or {}):
        return
    # spec.serviceAccount is the deprecated spelling: it fills an empty serviceAccountName and mirrors it.
    name = spec.get("serviceAccountName") or spec.get("serviceAccount") or DEFAULT_NAME
    spec["serviceAccountName"] = name
    spec["serviceAccount"] = name
    namespace = call.info.namespace
    sa = await _account(server, namespace, str(name))
    if sa is None:
        pod = str(meta.get("name") or "")
        raise errors.Forbidden(f'pods "{pod}" is forbidden: error looking up service account {namespace}/{name}: '
                               f'serviceaccount "{name}" not found', details={"name": pod, "kind": "pods"})
    if should_automount(sa, spec):
        mount_token(spec)
    if not spec.get("imagePullSecrets") and sa.get("imagePullSecrets"):
        spec["imagePullSecrets"] = [{"name": s.get("name", "")} for s in sa["imagePullSecrets"] if isinstance(s, dict)]
