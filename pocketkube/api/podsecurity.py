"""The Pod Security Standards (baseline, restricted) at every policy version, worded as pod-security-admission words them."""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable
from typing import Any

from pocketkube.api import errors

PRIVILEGED, BASELINE, RESTRICTED = "privileged", "baseline", "restricted"
LEVELS = (PRIVILEGED, BASELINE, RESTRICTED)

# The newest policy version a 1.32 server knows: "latest" and any newer version evaluate as this one.
MAX_MINOR = 32

LABEL_PREFIX = "pod-security.kubernetes.io/"
MODES = ("enforce", "audit", "warn")

_VERSION_RE = re.compile(r"^v1\.([0-9]|[1-9][0-9]*)$")
_MAX_INT64 = 2**63 - 1


@dataclasses.dataclass(frozen=True)
class Version:
    """A policy version: v1.<minor>, or latest when minor is None."""

    minor: int | None = None

    def __str__(self) -> str:
        return "latest" if self.minor is None else f"v1.{self.minor}"


LATEST = Version()


@dataclasses.dataclass(frozen=True)
class LevelVersion:
    level: str = PRIVILEGED
    version: Version = LATEST

    def __str__(self) -> str:
        return f"{self.level}:{self.version}"


@dataclasses.dataclass(frozen=True)
class Policy:
    """The level and version each mode (enforce, audit, warn) evaluates a namespace's pods at."""

    enforce: LevelVersion = LevelVersion()
    audit: LevelVersion = LevelVersion()
    warn: LevelVersion = LevelVersion()

    def fully_privileged(self) -> bool:
        return self.enforce.level == self.audit.level == self.warn.level == PRIVILEGED


def parse_level(value: str) -> tuple[str, str]:
    """(level, error); an unknown level evaluates as restricted."""
    if value in LEVELS:
        return value, ""
    return RESTRICTED, "must be one of " + ", ".join(LEVELS)


def parse_version(value: str) -> tuple[Version, str]:
    """(version, error); an unparsable version evaluates as latest."""
    if value == "latest":
        return LATEST, ""
    m = _VERSION_RE.match(value)
    if m is None or int(m.group(1)) > _MAX_INT64:
        return LATEST, 'must be "latest" or "v1.x"'
    return Version(int(m.group(1))), ""


def policy_from_labels(labels: dict[str, Any] | None, defaults: Policy = Policy()) -> tuple[Policy, list[errors.FieldError]]:
    """The namespace's policy from its pod-security.kubernetes.io labels, and one field error per bad label.

    A bad enforce label fails closed (restricted, latest); bad audit and warn levels fail open (privileged)."""
    if not labels:
        return defaults, []
    errs: list[errors.FieldError] = []
    modes = {"enforce": defaults.enforce, "audit": defaults.audit, "warn": defaults.warn}
    for mode in MODES:
        level, version = modes[mode].level, modes[mode].version
        key = LABEL_PREFIX + mode
        if key in labels:
            raw = str(labels[key])
            level, err = parse_level(raw)
            if err:
                errs.append(errors.invalid(f"metadata.labels[{key}]", raw, err))
                if mode != "enforce":
                    level = PRIVILEGED
        key = LABEL_PREFIX + mode + "-version"
        if key in labels:
            raw = str(labels[key])
            version, err = parse_version(raw)
            if err:
                errs.append(errors.invalid(f"metadata.labels[{key}]", raw, err))
        modes[mode] = LevelVersion(level, version)
    return Policy(**modes), errs


# --- results --------------------------------------------------------------------------------------

Result = tuple[str, str]  # (forbidden reason, forbidden detail) of one failed check
CheckFn = Callable[[dict[str, Any], dict[str, Any]], "Result | None"]


def forbidden_detail(results: list[Result]) -> str:
    """`reason (detail), reason`: the text of a denial or a warning about one object."""
    return ", ".join(f"{r} ({d})" if d else r for r, d in results)


def forbidden_reason(results: list[Result]) -> str:
    """The reasons alone, as the namespace check lists them per pod."""
    return ", ".join(r for r, _ in results)


# --- field access with Go's zero values ------------------------------------------------------------

def _dict(v: Any) -> dict[str, Any]:
    return v if isinstance(v, dict) else {}


def _list(v: Any) -> list[Any]:
    return v if isinstance(v, list) else []


def _containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [c for key in ("initContainers", "containers", "ephemeralContainers")
            for c in _list(spec.get(key)) if isinstance(c, dict)]


def _name(c: dict[str, Any]) -> str:
    return str(c.get("name") or "")


def _sc(obj: dict[str, Any]) -> dict[str, Any]:
    return _dict(obj.get("securityContext"))


def _windows(spec: dict[str, Any]) -> bool:
    return _dict(spec.get("os")).get("name") == "windows"


def _join_quote(items: list[str]) -> str:
    return '"' + '", "'.join(items) + '"' if items else ""


def _plural(singular: str, plural: str, *, n: int) -> str:
    return singular if n == 1 else plural


def _go_quote(value: Any) -> str:
    # Go's %q: a double-quoted string with backslash escapes.
    return json.dumps(str(value), ensure_ascii=False)


def _named(word: str, names: list[str]) -> str:
    return f"{_plural(word, word + 's', n=len(names))} {_join_quote(names)}"


def _setters_detail(pod_bad: bool, containers: list[str]) -> str:
    setters = ["pod"] if pod_bad else []
    if containers:
        setters.append(_named("container", containers))
    return " and ".join(setters)


# --- baseline checks -------------------------------------------------------------------------------

_APPARMOR_ANNOTATION = "container.apparmor.security.beta.kubernetes.io/"


def _apparmor_type_ok(profile: dict[str, Any]) -> bool:
    return profile.get("type") in ("RuntimeDefault", "Localhost")


def app_armor_profile(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    bad_values: set[str] = set()
    profile = _sc(spec).get("appArmorProfile")
    pod_bad = profile is not None and not _apparmor_type_ok(_dict(profile))
    if pod_bad:
        bad_values.add(str(_dict(profile).get("type") or ""))
    bad: list[str] = []
    for c in _containers(spec):
        profile = _sc(c).get("appArmorProfile")
        if profile is not None and not _apparmor_type_ok(_dict(profile)):
            bad.append(_name(c))
            bad_values.add(str(_dict(profile).get("type") or ""))
    setters = [_setters_detail(pod_bad, bad)] if pod_bad or bad else []
    annotations = sorted(f"{k}={_go_quote(v)}" for k, v in _dict(meta.get("annotations")).items()
                         if k.startswith(_APPARMOR_ANNOTATION) and not _apparmor_annotation_ok(str(v)))
    values = sorted(bad_values) + annotations
    if annotations:
        setters.append(_plural("annotation", "annotations", n=len(annotations)))
    if not setters:
        return None
    return (_plural("forbidden AppArmor profile", "forbidden AppArmor profiles", n=len(values)),
            f"{' and '.join(setters)} must not set AppArmor profile type to {_join_quote(values)}")


def _apparmor_annotation_ok(value: str) -> bool:
    return value in ("", "runtime/default") or value.startswith("localhost/")


_DEFAULT_CAPABILITIES = frozenset({"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                                   "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"})


def capabilities_baseline(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    bad: list[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        added = [str(a) for a in _list(_dict(_sc(c).get("capabilities")).get("add"))]
        extra = [a for a in added if a not in _DEFAULT_CAPABILITIES]
        if extra:
            bad.append(_name(c))
            caps.update(extra)
    if not bad:
        return None
    return ("non-default capabilities",
            f"{_named('container', bad)} must not include {_join_quote(sorted(caps))} in securityContext.capabilities.add")


def host_namespaces(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    shared = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k) is True]
    return ("host namespaces", ", ".join(shared)) if shared else None


def host_path_volumes(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    names = [str(_dict(v).get("name") or "") for v in _list(spec.get("volumes")) if _dict(v).get("hostPath") is not None]
    return ("hostPath volumes", _named("volume", names)) if names else None


def host_ports(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    bad: list[str] = []
    ports: set[str] = set()
    for c in _containers(spec):
        given = [p.get("hostPort") for p in _list(c.get("ports")) if isinstance(p, dict)]
        used = [str(hp) for hp in given if isinstance(hp, int) and not isinstance(hp, bool) and hp != 0]
        if used:
            bad.append(_name(c))
            ports.update(used)
    if not bad:
        return None
    return ("hostPort", f"{_named('container', bad)} {_plural('uses', 'use', n=len(bad))} "
                        f"{_plural('hostPort', 'hostPorts', n=len(ports))} {', '.join(sorted(ports))}")


def privileged(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("privileged") is True]
    return ("privileged", f"{_named('container', bad)} must not set securityContext.privileged=true") if bad else None


def proc_mount(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    bad: list[str] = []
    types: set[str] = set()
    for c in _containers(spec):
        mount = _sc(c).get("procMount")
        if mount is not None and mount != "Default":
            bad.append(_name(c))
            types.add(str(mount))
    if not bad:
        return None
    return ("procMount", f"{_named('container', bad)} must not set securityContext.procMount to "
                         f"{_join_quote(sorted(types))}")


def _se_linux_options(allowed_types: frozenset[str]) -> CheckFn:
    def check(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
        bad_types: set[str] = set()
        set_user = set_role = False

        def ok(opts: dict[str, Any]) -> bool:
            nonlocal set_user, set_role
            valid = True
            if str(opts.get("type") or "") not in allowed_types:
                valid = False
                bad_types.add(str(opts.get("type") or ""))
            if opts.get("user"):
                set_user = True
                valid = False
            if opts.get("role"):
                set_role = True
                valid = False
            return valid

        pod_opts = _sc(spec).get("seLinuxOptions")
        pod_bad = pod_opts is not None and not ok(_dict(pod_opts))
        bad = [_name(c) for c in _containers(spec)
               if _sc(c).get("seLinuxOptions") is not None and not ok(_dict(_sc(c).get("seLinuxOptions")))]
        if not pod_bad and not bad:
            return None
        data = []
        if bad_types:
            data.append(_named("type", sorted(bad_types)))
        if set_user:
            data.append("user may not be set")
        if set_role:
            data.append("role may not be set")
        return ("seLinuxOptions", f"{_setters_detail(pod_bad, bad)} set forbidden securityContext.seLinuxOptions: "
                                  f"{'; '.join(data)}")
    return check


_SELINUX_TYPES_1_0 = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})
_SELINUX_TYPES_1_31 = _SELINUX_TYPES_1_0 | {"container_engine_t"}

_SECCOMP_POD_ANNOTATION = "seccomp.security.alpha.kubernetes.io/pod"
_SECCOMP_CONTAINER_ANNOTATION = "container.seccomp.security.alpha.kubernetes.io/"


def seccomp_baseline_1_0(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    annotations = _dict(meta.get("annotations"))
    keys = [_SECCOMP_POD_ANNOTATION] + [_SECCOMP_CONTAINER_ANNOTATION + _name(c) for c in _containers(spec)]
    bad = sorted({f"{k}={_go_quote(annotations[k])}" for k in keys
                  if k in annotations and not _seccomp_annotation_ok(str(annotations[k]))})
    if not bad:
        return None
    return ("seccompProfile", f"forbidden {_plural('annotation', 'annotations', n=len(bad))} {', '.join(bad)}")


def _seccomp_annotation_ok(value: str) -> bool:
    return value in ("runtime/default", "docker/default") or value.startswith("localhost/")


def _seccomp_type(obj: dict[str, Any]) -> str | None:
    """The seccompProfile.type a pod or container sets, None when it sets no profile."""
    profile = _sc(obj).get("seccompProfile")
    return None if profile is None else str(_dict(profile).get("type") or "")


def _seccomp_ok(t: str) -> bool:
    return t in ("RuntimeDefault", "Localhost")


def seccomp_baseline_1_19(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    values: set[str] = set()
    pod_type = _seccomp_type(spec)
    pod_bad = pod_type is not None and not _seccomp_ok(pod_type)
    if pod_bad:
        values.add(str(pod_type))
    bad: list[str] = []
    for c in _containers(spec):
        t = _seccomp_type(c)
        if t is not None and not _seccomp_ok(t):
            bad.append(_name(c))
            values.add(t)
    if not pod_bad and not bad:
        return None
    return ("seccompProfile", f"{_setters_detail(pod_bad, bad)} must not set securityContext.seccompProfile.type "
                              f"to {_join_quote(sorted(values))}")


_SYSCTLS_1_0 = frozenset({"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies",
                          "net.ipv4.ping_group_range", "net.ipv4.ip_unprivileged_port_start"})
_SYSCTLS_1_27 = _SYSCTLS_1_0 | {"net.ipv4.ip_local_reserved_ports"}
_SYSCTLS_1_29 = _SYSCTLS_1_27 | {"net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                                 "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}
_SYSCTLS_1_32 = _SYSCTLS_1_29 | {"net.ipv4.tcp_rmem", "net.ipv4.tcp_wmem"}


def _sysctls(allowed: frozenset[str]) -> CheckFn:
    def check(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
        names = [str(_dict(s).get("name") or "") for s in _list(_sc(spec).get("sysctls"))]
        bad = [n for n in names if n not in allowed]
        return ("forbidden sysctls", ", ".join(bad)) if bad else None
    return check


def windows_host_process(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    def host_process(obj: dict[str, Any]) -> bool:
        return _dict(_sc(obj).get("windowsOptions")).get("hostProcess") is True
    bad = [_name(c) for c in _containers(spec) if host_process(c)]
    pod_bad = host_process(spec)
    if not pod_bad and not bad:
        return None
    return ("hostProcess",
            f"{_setters_detail(pod_bad, bad)} must not set securityContext.windowsOptions.hostProcess=true")


# --- restricted checks -----------------------------------------------------------------------------

def allow_privilege_escalation_1_8(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    bad = [_name(c) for c in _containers(spec) if _sc(c).get("allowPrivilegeEscalation") is not False]
    if not bad:
        return None
    return ("allowPrivilegeEscalation != false",
            f"{_named('container', bad)} must set securityContext.allowPrivilegeEscalation=false")


def capabilities_restricted_1_22(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    missing_drop: list[str] = []
    adding: list[str] = []
    caps: set[str] = set()
    for c in _containers(spec):
        capabilities = _sc(c).get("capabilities")
        if capabilities is None:
            missing_drop.append(_name(c))
            continue
        if "ALL" not in [str(d) for d in _list(_dict(capabilities).get("drop"))]:
            missing_drop.append(_name(c))
        extra = [str(a) for a in _list(_dict(capabilities).get("add")) if a != "NET_BIND_SERVICE"]
        if extra:
            adding.append(_name(c))
            caps.update(extra)
    details = []
    if missing_drop:
        details.append(f'{_named("container", missing_drop)} must set securityContext.capabilities.drop=["ALL"]')
    if adding:
        details.append(f"{_named('container', adding)} must not include {_join_quote(sorted(caps))} "
                       "in securityContext.capabilities.add")
    return ("unrestricted capabilities", "; ".join(details)) if details else None


_ALLOWED_VOLUMES = ("configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                    "projected", "secret")
_RESTRICTED_VOLUMES = ("hostPath", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "nfs", "iscsi",
                       "glusterfs", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "fc", "azureFile",
                       "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "portworxVolume", "scaleIO",
                       "storageos")


def restricted_volumes(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    bad: list[str] = []
    types: set[str] = set()
    for v in _list(spec.get("volumes")):
        v = _dict(v)
        if any(v.get(k) is not None for k in _ALLOWED_VOLUMES):
            continue
        bad.append(str(v.get("name") or ""))
        # image volumes are only allowed from 1.33, so here they are of an unknown type
        types.add(next((k for k in _RESTRICTED_VOLUMES if v.get(k) is not None), "unknown"))
    if not bad:
        return None
    return ("restricted volume types",
            f"{_named('volume', bad)} {_plural('uses', 'use', n=len(bad))} "
            f"{_plural('restricted volume type', 'restricted volume types', n=len(types))} {_join_quote(sorted(types))}")


def run_as_non_root(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    pod_value = _sc(spec).get("runAsNonRoot")
    pod_bad = pod_value is False
    explicit: list[str] = []
    implicit: list[str] = []
    for c in _containers(spec):
        value = _sc(c).get("runAsNonRoot")
        if value is not None:
            if value is False:
                explicit.append(_name(c))
        elif pod_value is not True:
            implicit.append(_name(c))
    if pod_bad or explicit:
        return ("runAsNonRoot != true",
                f"{_setters_detail(pod_bad, explicit)} must not set securityContext.runAsNonRoot=false")
    if implicit:
        return ("runAsNonRoot != true",
                f"pod or {_named('container', implicit)} must set securityContext.runAsNonRoot=true")
    return None


def _is_root(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value == 0


def run_as_user_1_23(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    pod_bad = _is_root(_sc(spec).get("runAsUser"))
    bad = [_name(c) for c in _containers(spec) if _is_root(_sc(c).get("runAsUser"))]
    if not pod_bad and not bad:
        return None
    return ("runAsUser=0", f"{_setters_detail(pod_bad, bad)} must not set runAsUser=0")


def seccomp_restricted_1_19(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
    values: set[str] = set()
    pod_type = _seccomp_type(spec)
    pod_bad = pod_type is not None and not _seccomp_ok(pod_type)
    pod_ok = pod_type is not None and not pod_bad
    if pod_bad:
        values.add(str(pod_type))
    explicit: list[str] = []
    implicit: list[str] = []
    for c in _containers(spec):
        t = _seccomp_type(c)
        if t is not None:
            if not _seccomp_ok(t):
                explicit.append(_name(c))
                values.add(t)
        elif not pod_ok:
            implicit.append(_name(c))
    if pod_bad or explicit:
        return ("seccompProfile", f"{_setters_detail(pod_bad, explicit)} must not set "
                                  f"securityContext.seccompProfile.type to {_join_quote(sorted(values))}")
    if implicit:
        return ("seccompProfile", f"pod or {_named('container', implicit)} must set "
                                  'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return None


def _not_for_windows(check: CheckFn) -> CheckFn:
    # From 1.25 pods with spec.os.name=windows skip the Linux-only restricted checks.
    def wrapped(meta: dict[str, Any], spec: dict[str, Any]) -> Result | None:
        return None if _windows(spec) else check(meta, spec)
    return wrapped


# --- the registry ----------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VersionedCheck:
    minimum: int  # the first 1.<minor> policy version this revision applies to
    fn: CheckFn
    overrides: tuple[str, ...] = ()  # baseline check IDs a restricted check replaces


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    level: str
    versions: tuple[VersionedCheck, ...]


def _v(minimum: int, fn: CheckFn, *overrides: str) -> VersionedCheck:
    return VersionedCheck(minimum, fn, overrides)


CHECKS = (
    Check("appArmorProfile", BASELINE, (_v(0, app_armor_profile),)),
    Check("capabilities_baseline", BASELINE, (_v(0, capabilities_baseline),)),
    Check("hostNamespaces", BASELINE, (_v(0, host_namespaces),)),
    Check("hostPathVolumes", BASELINE, (_v(0, host_path_volumes),)),
    Check("hostPorts", BASELINE, (_v(0, host_ports),)),
    Check("privileged", BASELINE, (_v(0, privileged),)),
    Check("procMount", BASELINE, (_v(0, proc_mount),)),
    Check("seLinuxOptions", BASELINE, (_v(0, _se_linux_options(_SELINUX_TYPES_1_0)),
                                       _v(31, _se_linux_options(_SELINUX_TYPES_1_31)))),
    Check("seccompProfile_baseline", BASELINE, (_v(0, seccomp_baseline_1_0), _v(19, seccomp_baseline_1_19))),
    Check("sysctls", BASELINE, (_v(0, _sysctls(_SYSCTLS_1_0)), _v(27, _sysctls(_SYSCTLS_1_27)),
                                _v(29, _sysctls(_SYSCTLS_1_29)), _v(32, _sysctls(_SYSCTLS_1_32)))),
    Check("windowsHostProcess", BASELINE, (_v(0, windows_host_process),)),
    Check("allowPrivilegeEscalation", RESTRICTED, (_v(8, allow_privilege_escalation_1_8),
                                                   _v(25, _not_for_windows(allow_privilege_escalation_1_8)))),
    Check("capabilities_restricted", RESTRICTED, (
        _v(22, capabilities_restricted_1_22, "capabilities_baseline"),
        _v(25, _not_for_windows(capabilities_restricted_1_22), "capabilities_baseline"))),
    Check("restrictedVolumes", RESTRICTED, (_v(0, restricted_volumes, "hostPathVolumes"),)),
    Check("runAsNonRoot", RESTRICTED, (_v(0, run_as_non_root),)),
    Check("runAsUser", RESTRICTED, (_v(23, run_as_user_1_23),)),
    Check("seccompProfile_restricted", RESTRICTED, (
        _v(19, seccomp_restricted_1_19, "seccompProfile_baseline"),
        _v(25, _not_for_windows(seccomp_restricted_1_19), "seccompProfile_baseline"))),
)

# Checks relaxed for pods in a user namespace (hostUsers: false) when the server opts in.
USER_NAMESPACE_RELAXED = frozenset({"runAsNonRoot", "runAsUser", "procMount"})


def effective_minor(version: Version) -> int:
    return MAX_MINOR if version.minor is None or version.minor > MAX_MINOR else version.minor


def _revision(check: Check, minor: int) -> VersionedCheck | None:
    current = None
    for v in check.versions:
        if v.minimum <= minor:
            current = v
    return current


@functools.cache
def checks_for(level: str, minor: int) -> tuple[tuple[str, CheckFn], ...]:
    """(check ID, function) in upstream's order: baseline IDs sorted, then restricted IDs sorted."""
    baseline = {c.id: r for c in CHECKS if c.level == BASELINE and (r := _revision(c, minor)) is not None}
    if level == BASELINE:
        return tuple((i, baseline[i].fn) for i in sorted(baseline))
    restricted = {c.id: r for c in CHECKS if c.level == RESTRICTED and (r := _revision(c, minor)) is not None}
    overridden = {o for r in restricted.values() for o in r.overrides}
    kept = sorted(i for i in baseline if i not in overridden)
    return tuple([(i, baseline[i].fn) for i in kept] + [(i, restricted[i].fn) for i in sorted(restricted)])


def evaluate(lv: LevelVersion, meta: dict[str, Any] | None, spec: dict[str, Any] | None, *,
             relax_user_namespace_pods: bool = False) -> list[Result]:
    """The failed checks of a pod (or pod template) at a level and version, in upstream's order."""
    if lv.level == PRIVILEGED:
        return []
    meta, spec = _dict(meta), _dict(spec)
    relaxed = relax_user_namespace_pods and spec.get("hostUsers") is False
    out = []
    for check_id, fn in checks_for(lv.level, effective_minor(lv.version)):
        if relaxed and check_id in USER_NAMESPACE_RELAXED:
            continue
        result = fn(meta, spec)
        if result is not None:
            out.append(result)
    return out
