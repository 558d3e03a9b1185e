"""Pod volumes on disk: emptyDir, configMap, secret, downwardAPI and projected, written atomically."""

from __future__ import annotations

import asyncio
import base64
import datetime
import math
import os
import shutil
import stat
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors, quantity
from pocketkube.client import rest
from pocketkube.node import satoken

CONFIGMAPS = rest.GVR("", "v1", "configmaps")
SECRETS = rest.GVR("", "v1", "secrets")
PVCS = rest.GVR("", "v1", "persistentvolumeclaims")
PVS = rest.GVR("", "v1", "persistentvolumes")
DEFAULT_MODE = 0o644
DATA_LINK = "..data"

Files = dict[str, tuple[bytes, int]]


class VolumeError(Exception):
    """A volume that cannot be set up now; the message is the kubelet's reason after "MountVolume.SetUp failed"."""


class MountError(VolumeError):
    """A volume error already worded as the kubelet's whole FailedMount message (never wrapped again)."""


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


def volume_dir(data_dir: str, uid: str, name: str, *, run_dir: str = "") -> str:
    """Where a pod's volume lives on this host: <run_dir>/volumes/<name> for one in memory (run_dir: the pod's
    directory in the node's state root), else DATA_DIR/pods/<uid>/volumes/<name>."""
    if run_dir:
        return os.path.join(run_dir, "volumes", name)
    return os.path.join(data_dir, "pods", uid, "volumes", name)


def in_memory(vol: Mapping[str, Any]) -> bool:
    """Whether the kubelet backs a volume with tmpfs: secret and projected ones (its wrapper emptyDir has medium
    Memory: a secret never reaches the node's disk) and emptyDirs of medium Memory; configMap and downwardAPI
    volumes are on disk."""
    if "secret" in vol or "projected" in vol:
        return True
    return "emptyDir" in vol and (vol.get("emptyDir") or {}).get("medium") == "Memory"


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


# --- hostPath and persistentVolumeClaim: host paths bind-mounted as they are ----------------------

_TYPE_CHECKS = {
    "Socket": (stat.S_ISSOCK, "is not a socket file"),
    "CharDevice": (stat.S_ISCHR, "is not a character device"),
    "BlockDevice": (stat.S_ISBLK, "is not a block device"),
}


def check_host_path(path: str, path_type: str) -> None:
    """The kubelet's hostPath type check, creating the path for the *OrCreate types (and, as CRI does, for "")."""
    exists = os.path.exists(path)
    if path_type in ("", "DirectoryOrCreate") and not exists:
        try:
            os.makedirs(path, mode=0o755, exist_ok=True)
        except OSError as e:
            raise VolumeError(f"mkdir {path}: {(e.strerror or str(e)).lower()}") from e
        return
    if path_type == "FileOrCreate" and not exists:
        try:
            os.close(os.open(path, os.O_CREAT | os.O_RDONLY, 0o644))
        except OSError as e:
            raise VolumeError(f"open {path}: {(e.strerror or str(e)).lower()}") from e
        return
    if path_type in ("Directory", "DirectoryOrCreate", "File", "FileOrCreate"):
        if not exists:
            raise VolumeError(f"hostPath type check failed: {path} does not exist")
        want_dir = path_type.startswith("Directory")
        if os.path.isdir(path) != want_dir:
            raise VolumeError(f"hostPath type check failed: {path} is not a {'directory' if want_dir else 'file'}")
    elif path_type in _TYPE_CHECKS:
        test, words = _TYPE_CHECKS[path_type]
        try:
            ok = test(os.stat(path).st_mode)
        except OSError:
            ok = False
        if not ok:
            raise VolumeError(f"hostPath type check failed: {path} {words}")
    elif path_type:
        raise VolumeError(f"{path_type} is an invalid volume type")


def _unprocessable(vol: str, why: str) -> MountError:
    return MountError(f"Unable to attach or mount volumes: unmounted volumes=[{vol}], unattached volumes=[], "
                      f"failed to process volumes=[{vol}]: {why}")


async def claimed_volume(client: rest.Client, pod: Mapping[str, Any], vol: str, claim_name: str) -> dict[str, Any]:
    """The PersistentVolume bound to a pod's claim, or the kubelet's reason why the pod must wait for it."""
    ns = str((pod.get("metadata") or {}).get("namespace") or "")
    where = f"error processing PVC {ns}/{claim_name}"
    try:
        claim = await client.get(PVCS.path(ns, claim_name))
    except errors.APIError as e:
        raise _unprocessable(vol, f"{where}: failed to fetch PVC from API server: {e}") from e
    if (claim.get("metadata") or {}).get("deletionTimestamp"):
        raise _unprocessable(vol, f"{where}: PVC is being deleted")
    if (claim.get("status") or {}).get("phase") != "Bound":
        raise _unprocessable(vol, f"{where}: PVC is not bound")
    pv_name = str((claim.get("spec") or {}).get("volumeName") or "")
    if not pv_name:
        raise _unprocessable(vol, f"{where}: PVC has empty pvc.Spec.VolumeName")
    try:
        pv = await client.get(PVS.path("", pv_name))
    except errors.APIError as e:
        raise _unprocessable(vol, f"{where}: failed to fetch PV {pv_name} from API server: {e}") from e
    ref = (pv.get("spec") or {}).get("claimRef")
    uid = (claim.get("metadata") or {}).get("uid")
    if not ref:
        raise _unprocessable(vol, f"{where}: found PV object {pv_name} but it has a nil pv.Spec.ClaimRef "
                                  "indicating it is not yet bound to the claim")
    if ref.get("uid") != uid:
        raise _unprocessable(vol, f"{where}: found PV object {pv_name} but its pv.Spec.ClaimRef.UID "
                                  f"({ref.get('uid', '')}) does not point to claim.UID ({uid})")
    return pv


async def host_path_of(client: rest.Client, pod: Mapping[str, Any], vol: Mapping[str, Any]) -> str:
    """The host path a hostPath or persistentVolumeClaim volume mounts, checked (and created) as the kubelet does."""
    name = str(vol.get("name") or "")
    if "hostPath" in vol:
        hp = vol.get("hostPath") or {}
        path = str(hp.get("path") or "")
        try:
            await asyncio.to_thread(check_host_path, path, str(hp.get("type") or ""))
        except VolumeError as e:
            raise MountError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from e
        return path
    claim_name = str((vol.get("persistentVolumeClaim") or {}).get("claimName") or "")
    pv = await claimed_volume(client, pod, name, claim_name)
    spec = pv.get("spec") or {}
    pv_name = str((pv.get("metadata") or {}).get("name") or "")
    if isinstance(spec.get("hostPath"), Mapping):
        path, path_type = str(spec["hostPath"].get("path") or ""), str(spec["hostPath"].get("type") or "")
    elif isinstance(spec.get("local"), Mapping):
        path = str(spec["local"].get("path") or "")
        if not os.path.exists(path):
            raise MountError(f'MountVolume.NewMounter initialization failed for volume "{pv_name}" : '
                             f'path "{path}" does not exist')
        return path
    else:
        other = next((k for k in spec if k not in _PV_FIELDS), "unknown")
        raise MountError(f'MountVolume.SetUp failed for volume "{pv_name}" : {other} volumes are not supported '
                         "by the process runtime")
    try:
        await asyncio.to_thread(check_host_path, path, path_type)
    except VolumeError as e:
        raise MountError(f'MountVolume.SetUp failed for volume "{pv_name}" : {e}') from e
    return path


_PV_FIELDS = {"accessModes", "capacity", "claimRef", "mountOptions", "nodeAffinity", "persistentVolumeReclaimPolicy",
              "storageClassName", "volumeMode", "volumeAttributesClassName"}


def forces_read_only(vol: Mapping[str, Any]) -> bool:
    """Whether a volume source itself asks to be mounted read-only (persistentVolumeClaim.readOnly)."""
    return bool((vol.get("persistentVolumeClaim") or {}).get("readOnly"))


async def materialise(client: rest.Client, pod: Mapping[str, Any], *, data_dir: str,
                      allocatable: Mapping[str, str], now: datetime.datetime, run_dir: str = "") -> dict[str, str]:
    """Create or refresh every volume of pod on disk, or in run_dir (the pod's directory on the node's tmpfs)
    for those in memory; volume name -> host directory.

    Raises VolumeError naming the volume for the first one that cannot be set up."""
    uid = str((pod.get("metadata") or {}).get("uid") or "")
    out: dict[str, str] = {}
    for vol in (pod.get("spec") or {}).get("volumes") or []:
        name = str(vol.get("name") or "")
        target = volume_dir(data_dir, uid, name, run_dir=run_dir if in_memory(vol) else "")
        try:
            if "emptyDir" in vol:
                os.makedirs(target, exist_ok=True)
            elif "hostPath" in vol or "persistentVolumeClaim" in vol:
                out[name] = await host_path_of(client, pod, vol)
                continue
            elif "projected" in vol:
                proj = vol["projected"] or {}
                files: Files = {}
                for src in proj.get("sources") or []:
                    for kind, source in src.items():
                        if kind == "serviceAccountToken":
                            try:
                                files.update(await satoken.files(client, pod, source or {}, now=now,
                                                                 default_mode=proj.get("defaultMode")))
                            except satoken.FetchError as e:
                                raise VolumeError(str(e)) from e
                            continue
                        files.update(await _source_files(client, pod, kind, source or {}, allocatable=allocatable,
                                                         default_mode=proj.get("defaultMode")))
                await _publish(target, files, now=now)
            else:
                kind = next((k for k in ("configMap", "secret", "downwardAPI") if k in vol), "")
                if not kind:
                    other = next((k for k in vol if k != "name"), "unknown")
                    raise VolumeError(f"{other} volumes are not supported by the process runtime")
                await _publish(target, await _source_files(client, pod, kind, vol[kind] or {}, allocatable=allocatable),
                               now=now)
        except MountError:
            raise
        except (VolumeError, ConfigError) as e:
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : {e}') from e
        out[name] = target
    return out


async def _publish(target: str, files: Files, *, now: datetime.datetime) -> bool:
    """write_atomic off the event loop: a pod's volumes are a dozen file system calls each (directories, files,
    modes, links, a rename), which held every request of the process while a Deployment started."""
    return await asyncio.to_thread(write_atomic, target, files, now=now)


def has_refreshable(pod: Mapping[str, Any]) -> bool:
    """Whether any volume follows objects or fields that can change (so the runtime re-reads it)."""
    return any(k in vol for vol in (pod.get("spec") or {}).get("volumes") or []
               for k in ("configMap", "secret", "downwardAPI", "projected"))
