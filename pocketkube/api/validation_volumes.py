"""Validation of pod volumes and the paths, modes and field selectors they carry."""

from __future__ import annotations

from typing import Any

from pocketkube.api import errors, names, quantity
from pocketkube.api import validation_meta as vm

FE = errors.FieldError
_FILE_MODE_MSG = "must be a number between 0 and 0777 (octal), both inclusive"
_VOLUME_SOURCES = (
    "emptyDir", "hostPath", "gitRepo", "gcePersistentDisk", "awsElasticBlockStore", "secret", "nfs", "iscsi",
    "glusterfs", "flocker", "persistentVolumeClaim", "rbd", "cinder", "cephfs", "quobyte", "downwardAPI", "fc",
    "flexVolume", "configMap", "azureFile", "vsphereVolume", "photonPersistentDisk", "portworxVolume", "azureDisk",
    "storageos", "projected", "scaleIO", "csi", "ephemeral", "image",
)
_HOST_PATH_TYPES = ["", "BlockDevice", "CharDevice", "Directory", "DirectoryOrCreate", "File", "FileOrCreate",
                    "Socket"]
_VOLUME_FIELD_PATHS = ["metadata.annotations", "metadata.labels", "metadata.name", "metadata.namespace",
                       "metadata.uid"]


# --- volumes --------------------------------------------------------------------------------

def _path_no_backsteps(path: str, field: str) -> list[FE]:
    if ".." in path.replace("\\", "/").split("/"):
        return [errors.invalid(field, path, "must not contain '..'")]
    return []


def local_descending_path(path: str, field: str) -> list[FE]:
    out = []
    if path.startswith("/"):
        out.append(errors.invalid(field, path, "must be a relative path"))
    return out + _path_no_backsteps(path, field)


def _local_non_reserved_path(path: str, field: str) -> list[FE]:
    out = local_descending_path(path, field)
    if path.startswith("..") and not path.startswith("../"):
        out.append(errors.invalid(field, path, "must not start with '..'"))
    return out


def _mode(v: Any, field: str) -> list[FE]:
    if vm.is_int(v) and not 0 <= v <= 0o777:
        return [errors.invalid(field, v, _FILE_MODE_MSG)]
    return []


def _key_to_path(kp: dict[str, Any], field: str) -> list[FE]:
    out = []
    if not kp.get("key"):
        out.append(errors.required(f"{field}.key"))
    path = str(kp.get("path") or "")
    if not path:
        out.append(errors.required(f"{field}.path"))
    out.extend(_local_non_reserved_path(path, f"{field}.path"))
    return out + _mode(kp.get("mode"), f"{field}.mode")


def field_selector(fs: dict[str, Any], allowed: list[str], field: str) -> list[FE]:
    if not fs.get("apiVersion"):
        return [errors.required(f"{field}.apiVersion")]
    path = str(fs.get("fieldPath") or "")
    if not path:
        return [errors.required(f"{field}.fieldPath")]
    if path.endswith("]") and "[" in path:
        base, sub = path[:-1].split("[", 1)
        sub = sub.strip("'")
        if base == "metadata.annotations":
            return names.validate_qualified_name(sub.lower(), field)
        if base == "metadata.labels":
            return names.validate_qualified_name(sub, field)
        return [errors.invalid(field, base, "does not support subscript")]
    if path not in allowed:
        return [errors.unsupported(f"{field}.fieldPath", path, allowed)]
    return []


def _volume_source(v: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    count = 0
    for src in _VOLUME_SOURCES:
        body = v.get(src)
        if body is None:
            continue
        if count:
            out.append(errors.forbidden(f"{field}.{src}", "may not specify more than 1 volume type"))
            continue
        count += 1
        b = vm.as_dict(body)
        p = f"{field}.{src}"
        if src == "hostPath":
            path = str(b.get("path") or "")
            if not path:
                out.append(errors.required(f"{p}.path"))
            else:
                out.extend(_path_no_backsteps(path, f"{p}.path"))
                if b.get("type") is not None and b.get("type") not in _HOST_PATH_TYPES:
                    out.append(errors.unsupported(f"{p}.type", b.get("type"), _HOST_PATH_TYPES))
        elif src == "emptyDir":
            if b.get("sizeLimit") is not None and quantity.parse(b["sizeLimit"]).sign() < 0:
                out.append(errors.forbidden(f"{p}.sizeLimit", "SizeLimit field must be a valid resource quantity"))
        elif src in ("secret", "configMap"):
            name_key = "secretName" if src == "secret" else "name"
            if not b.get(name_key):
                out.append(errors.required(f"{p}.{name_key}"))
            out.extend(_mode(b.get("defaultMode"), f"{p}.defaultMode"))
            for i, kp in enumerate(vm.dicts(b.get("items"))):
                out.extend(_key_to_path(kp, f"{p}.items[{i}]"))
        elif src == "persistentVolumeClaim":
            if not b.get("claimName"):
                out.append(errors.required(f"{p}.claimName"))
        elif src == "nfs":
            path = str(b.get("path") or "")
            if not b.get("server"):
                out.append(errors.required(f"{p}.server"))
            if not path:
                out.append(errors.required(f"{p}.path"))
            if not path.startswith("/"):
                out.append(errors.invalid(f"{p}.path", path, "must be an absolute path"))
        elif src == "downwardAPI":
            out.extend(_mode(b.get("defaultMode"), f"{p}.defaultMode"))
            for item in vm.dicts(b.get("items")):
                out.extend(_downward_file(item, p))
        elif src == "projected":
            out.extend(_mode(b.get("defaultMode"), f"{p}.defaultMode"))
            out.extend(_projection_sources(b, p))
        elif src == "csi":
            driver = str(b.get("driver") or "")
            if not driver:
                out.append(errors.required(f"{p}.driver"))
            if len(driver) > 63:
                out.append(errors.too_long(f"{p}.driver", 63))
            out.extend(errors.invalid(f"{p}.driver", driver, m) for m in names.is_dns1123_subdomain(driver.lower()))
        elif src == "ephemeral":
            if not isinstance(b.get("volumeClaimTemplate"), dict):
                out.append(errors.required(f"{p}.volumeClaimTemplate"))
        elif src == "gitRepo":
            if not b.get("repository"):
                out.append(errors.required(f"{p}.repository"))
            out.extend(local_descending_path(str(b.get("directory") or ""), f"{p}.directory"))
        elif src == "image":
            if not b.get("reference"):
                out.append(errors.required(f"{p}.reference"))
    if count == 0:
        out.append(errors.required(field, "must specify a volume type"))
    return out


def _downward_file(item: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    path = str(item.get("path") or "")
    if not path:
        out.append(errors.required(f"{field}.path"))
    out.extend(_local_non_reserved_path(path, f"{field}.path"))
    if isinstance(item.get("fieldRef"), dict):
        out.extend(field_selector(item["fieldRef"], _VOLUME_FIELD_PATHS, f"{field}.fieldRef"))
        if item.get("resourceFieldRef") is not None:
            out.append(errors.invalid(field, "resource", "fieldRef and resourceFieldRef can not be specified "
                                                         "simultaneously"))
    elif isinstance(item.get("resourceFieldRef"), dict):
        rf = item["resourceFieldRef"]
        if not rf.get("containerName"):
            out.append(errors.required(f"{field}.resourceFieldRef.containerName"))
    else:
        out.append(errors.required(field, "one of fieldRef and resourceFieldRef is required"))
    return out + _mode(item.get("mode"), f"{field}.mode")


def _projection_sources(b: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    seen: set[str] = set()
    for i, src in enumerate(vm.dicts(b.get("sources"))):
        sp = f"{field}.sources[{i}]"
        kinds = [k for k in ("secret", "configMap", "downwardAPI", "serviceAccountToken", "clusterTrustBundle")
                 if src.get(k) is not None]
        for k in ("secret", "configMap"):
            s = src.get(k)
            if isinstance(s, dict):
                if not s.get("name"):
                    out.append(errors.required(f"{sp}.{k}.name"))
                for j, kp in enumerate(vm.dicts(s.get("items"))):
                    out.extend(_key_to_path(kp, f"{sp}.{k}.items[{j}]"))
                    path = kp.get("path")
                    if path:
                        if path in seen:
                            out.append(errors.invalid(field, str(s.get("name") or ""), "conflicting duplicate paths"))
                        seen.add(path)
        if isinstance(src.get("downwardAPI"), dict):
            for item in vm.dicts(src["downwardAPI"].get("items")):
                out.extend(_downward_file(item, f"{sp}.downwardAPI"))
                path = item.get("path")
                if path:
                    if path in seen:
                        out.append(errors.invalid(field, path, "conflicting duplicate paths"))
                    seen.add(path)
        sat = src.get("serviceAccountToken")
        if isinstance(sat, dict):
            exp = vm.num(sat.get("expirationSeconds"))
            if exp < 600:
                out.append(errors.invalid(f"{sp}.serviceAccountToken.expirationSeconds", exp,
                                          "may not specify a duration less than 10 minutes"))
            if exp > 1 << 32:
                out.append(errors.invalid(f"{sp}.serviceAccountToken.expirationSeconds", exp,
                                          "may not specify a duration larger than 2^32 seconds"))
            if not sat.get("path"):
                out.append(errors.required(f"{field}.path"))
            else:
                out.extend(_local_non_reserved_path(str(sat["path"]), f"{field}.path"))
        if len(kinds) > 1:
            out.append(errors.forbidden(sp, "may not specify more than 1 volume type per source"))
    return out


def validate_volumes(volumes: Any, field: str, *, pod_name: str = "") -> tuple[dict[str, dict[str, Any]], list[FE]]:
    out: list[FE] = []
    seen: dict[str, dict[str, Any]] = {}
    for i, v in enumerate(vm.dicts(volumes)):
        p = f"{field}[{i}]"
        name = str(v.get("name") or "")
        el = _volume_source(v, p)
        if not name:
            el.append(errors.required(f"{p}.name"))
        else:
            el.extend(names.validate_dns1123_label(name, f"{p}.name"))
        if name in seen:
            el.append(errors.duplicate(f"{p}.name", name))
        if not el:
            seen[name] = v
        out.extend(el)
    return seen, out
