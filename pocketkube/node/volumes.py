"""Pod volumes on disk: emptyDir, configMap, secret, downwardAPI and projected, written atomically."""

from __future__ import annotations

import base64
import datetime
import math
import os
import shutil
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors, quantity
from pocketkube.client import rest

CONFIGMAPS = rest.GVR("", "v1", "configmaps")
SECRETS = rest.GVR("", "v1", "secrets")
DEFAULT_MODE = 0o644
DATA_LINK = "..data"

Files = dict[str, tuple[bytes, int]]


class VolumeError(Exception):
    """A volume that cannot be set up now; the message is the kubelet's reason after "MountVolume.SetUp failed"."""


class ConfigError(Exception):
    """A container whose configuration (env) cannot be built; reported as CreateContainerConfigError."""


# --- downward API values --------------------------------------------------------------------------


def _labels_text(values: Mapping[str, Any]) -> str:
    # The kubelet's FormatMap: key="value" lines, sorted, values quoted as Go's %q does.
    return "\n".join(f"{k}={_go_quote(str(values[k]))}" for k in sorted(values))


def _go_quote(s: str) -> str:
    out = s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{out}"'


def field_value(pod: Mapping[str, Any], path: str, *, for_file: bool = False) -> str:
    """A pod field as the downward API exposes it (metadata.name, metadata.labels['x'], status.podIP, ...)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    for prefix, key in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((meta.get(key) or {}).get(path[len(prefix) + 2:-2], ""))
        if path == prefix and for_file:
            return _labels_text(meta.get(key) or {})
    simple = {
        "metadata.name": meta.get("name"), "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"), "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"), "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
        "status.podIPs": ",".join(p.get("ip", "") for p in status.get("podIPs") or []),
        "status.hostIPs": ",".join(p.get("ip", "") for p in status.get("hostIPs") or []),
    }
    if path not in simple:
        raise ConfigError(f"unsupported fieldPath: {path}")
    return str(simple[path] or "")


def resource_value(pod: Mapping[str, Any], container_name: str, ref: Mapping[str, Any], *,
                   allocatable: Mapping[str, str]) -> str:
    """A container's request or limit in units of the divisor (rounded up), limits defaulting to the node's."""
    resource = str(ref.get("resource") or "")
    kind, _, name = resource.partition(".")
    spec = pod.get("spec") or {}
    containers = [*(spec.get("containers") or []), *(spec.get("initContainers") or [])]
    c = next((c for c in containers if c.get("name") == container_name), None)
    if c is None or kind not in ("limits", "requests") or name not in ("cpu", "memory", "ephemeral-storage"):
        raise ConfigError(f"unsupported container resource: {resource}")
    res = c.get("resources") or {}
    raw = (res.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (res.get("limits") or {}).get(name)
    if raw is None:
        raw = allocatable.get(name, "0") if kind == "limits" else "0"
    try:
        value = quantity.parse(raw).value
        divisor = quantity.parse(ref.get("divisor") or "1").value
    except quantity.QuantityError as e:
        raise ConfigError(str(e)) from e
    if divisor <= 0:
        divisor = quantity.parse("1").value
    return str(math.ceil(value / divisor))


# --- file sets ------------------------------------------------------------------------------------


def _mode(item: Mapping[str, Any], default: Any) -> int:
    mode = item.get("mode")
    return int(mode) if isinstance(mode, int) else int(default if isinstance(default, int) else DEFAULT_MODE)


def key_files(kind: str, name: str, data: Mapping[str, bytes], source: Mapping[str, Any], *,
              default_mode: Any = None) -> Files:
    """The files of a configMap or secret source: every key, or just its items (path and mode each)."""
    mode = default_mode if default_mode is not None else source.get("defaultMode")
    items = source.get("items")
    if not items:
        return {k: (v, _mode({}, mode)) for k, v in data.items()}
    out: Files = {}
    for item in items:
        key = str(item.get("key") or "")
        if key not in data:
            if source.get("optional"):
                continue
            raise VolumeError(f"{kind} references non-existent config key: {key}")
        out[str(item.get("path") or key)] = (data[key], _mode(item, mode))
    return out


def configmap_data(cm: Mapping[str, Any]) -> dict[str, bytes]:
    """A ConfigMap's data and binaryData as bytes."""
    out = {k: str(v).encode() for k, v in (cm.get("data") or {}).items()}
    out.update({k: base64.b64decode(v) for k, v in (cm.get("binaryData") or {}).items()})
    return out


def secret_data(secret: Mapping[str, Any]) -> dict[str, bytes]:
    """A Secret's data decoded (stringData never reaches a stored Secret)."""
    return {k: base64.b64decode(v) for k, v in (secret.get("data") or {}).items()}


def downward_files(pod: Mapping[str, Any], source: Mapping[str, Any], *, allocatable: Mapping[str, str],
                   default_mode: Any = None) -> Files:
    """The files of a downwardAPI source: one per item, from a field or a container resource."""
    mode = default_mode if default_mode is not None else source.get("defaultMode")
    out: Files = {}
    for item in source.get("items") or []:
        if item.get("fieldRef"):
            text = field_value(pod, str(item["fieldRef"].get("fieldPath") or ""), for_file=True)
        elif item.get("resourceFieldRef"):
            ref = item["resourceFieldRef"]
            text = resource_value(pod, str(ref.get("containerName") or ""), ref, allocatable=allocatable)
        else:
            continue
        out[str(item.get("path") or "")] = (text.encode(), _mode(item, mode))
    return out


# --- writing --------------------------------------------------------------------------------------


def _current(target: str) -> Files | None:
    link = os.path.join(target, DATA_LINK)
    if not os.path.islink(link):
        return None
    base = os.path.join(target, os.readlink(link))
    out: Files = {}
    for root, _, names in os.walk(base):
        for n in names:
            p = os.path.join(root, n)
            with open(p, "rb") as f:
                out[os.path.relpath(p, base)] = (f.read(), os.stat(p).st_mode & 0o7777)
    return out


def write_atomic(target: str, files: Files, *, now: datetime.datetime) -> bool:
    """Publish files under target the kubelet's way (a ..<time> dir, a ..data link, one link per top entry).

    Readers never see a half-written set: the ..data link is swapped in one rename. True if anything changed."""
    os.makedirs(target, exist_ok=True)
    if _current(target) == files:
        return False
    for path in files:
        parts = os.path.normpath(path).split(os.sep)
        if os.path.isabs(path) or ".." in parts or parts[0].startswith(".."):
            raise VolumeError(f"invalid path {path!r}: must be relative and may not contain '..'")
    stamp = ".." + now.strftime("%Y_%m_%d_%H_%M_%S.%f")
    fresh = os.path.join(target, stamp)
    os.makedirs(fresh, exist_ok=True)
    for path, (data, mode) in files.items():
        p = os.path.join(fresh, path)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
    link = os.path.join(target, DATA_LINK)
    old = os.readlink(link) if os.path.islink(link) else ""
    tmp = os.path.join(target, "..data_tmp")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(stamp, tmp)
    os.rename(tmp, link)
    tops = {os.path.normpath(p).split(os.sep)[0] for p in files}
    for entry in os.listdir(target):
        if entry.startswith(".."):
            continue
        if entry not in tops:
            os.unlink(os.path.join(target, entry))
    for top in tops:
        p = os.path.join(target, top)
        if not os.path.lexists(p):
            os.symlink(os.path.join(DATA_LINK, top), p)
    if old and old != stamp:
        shutil.rmtree(os.path.join(target, old), ignore_errors=True)
    return True


# --- a pod's volumes ------------------------------------------------------------------------------


def volume_dir(data_dir: str, uid: str, name: str) -> str:
    """Where a pod's volume lives on this host: DATA_DIR/pods/<uid>/volumes/<name>."""
    return os.path.join(data_dir, "pods", uid, "volumes", name)


async def _fetch(client: rest.Client, gvr: rest.GVR, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return await client.get(gvr.path(namespace, name))
    except errors.NotFound:
        return None


async def _source_files(client: rest.Client, pod: Mapping[str, Any], kind: str, source: Mapping[str, Any], *,
                        allocatable: Mapping[str, str], default_mode: Any = None) -> Files:
    ns = str((pod.get("metadata") or {}).get("namespace") or "")
    if kind == "downwardAPI":
        return downward_files(pod, source, allocatable=allocatable, default_mode=default_mode)
    if kind in ("configMap", "secret"):
        name = str(source.get("name") or source.get("secretName") or "")
        gvr, word = (CONFIGMAPS, "configmap") if kind == "configMap" else (SECRETS, "secret")
        obj = await _fetch(client, gvr, ns, name)
        if obj is None:
            if source.get("optional"):
                return {}
            raise VolumeError(f'{word} "{name}" not found')
        data = configmap_data(obj) if kind == "configMap" else secret_data(obj)
        return key_files(word, name, data, source, default_mode=default_mode)
    raise VolumeError(f"{kind} volumes are not supported by the process runtime")


async def materialise(client: rest.Client, pod: Mapping[str, Any], *, data_dir: str,
                      allocatable: Mapping[str, str], now: datetime.datetime) -> dict[str, str]:
    """Create or refresh every volume of pod on disk; volume name -> host directory.

    Raises VolumeError naming the volume for the first one that cannot be set up."""
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    out: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name") or "")
        target = volume_dir(data_dir, uid, name)
        try:
            if "emptyDir" in vol:
                os.makedirs(target, exist_ok=True)
            elif "projected" in vol:
                proj = vol["projected"] or {}
                files: Files = {}
                for src in proj.get("sources") or []:
                    for kind, source in src.items():
                        files.update(await _source_files(client, pod, kind, source or {}, allocatable=allocatable,
                                                         default_mode=proj.get("defaultMode")))
                write_atomic(target, files, now=now)
            else:
                kind = next((k for k in ("configMap", "secret", "downwardAPI") if k in vol), "")
                if not kind:
                    other = next((k for k in vol if k != "name"), "unknown")
                    raise VolumeError(f"{other} volumes are not supported by the process runtime")
                write_atomic(target, await _source_files(client, pod, kind, vol[kind] or {}, allocatable=allocatable),
                             now=now)
        except (VolumeError, ConfigError) as e:
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from e
        out[name] = target
    return out


def has_refreshable(pod: Mapping[str, Any]) -> bool:
    """Whether any volume follows objects or fields that can change (so the runtime re-reads it)."""
    return any(k in vol for vol in (pod.get("spec") or {}).get("volumes") or []
               for k in ("configMap", "secret", "downwardAPI", "projected"))
