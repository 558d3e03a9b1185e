"""Pod Security Standards checks: each check's reason and detail at the policy versions where it changed."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import podsecurity as ps


def _lv(level: str, version: str = "latest") -> ps.LevelVersion:
    v, err = ps.parse_version(version)
    assert not err
    return ps.LevelVersion(level, v)


def _c(name: str, **sc: Any) -> dict[str, Any]:
    return {"name": name, "image": "busybox", **({"securityContext": sc} if sc else {})}


def _compliant(name: str = "c") -> dict[str, Any]:
    return _c(name, allowPrivilegeEscalation=False, runAsNonRoot=True, capabilities={"drop": ["ALL"]},
              seccompProfile={"type": "RuntimeDefault"})


_KUBECTL_RUN_DETAIL = (
    'allowPrivilegeEscalation != false (container "x" must set securityContext.allowPrivilegeEscalation=false), '
    'unrestricted capabilities (container "x" must set securityContext.capabilities.drop=["ALL"]), '
    'runAsNonRoot != true (pod or container "x" must set securityContext.runAsNonRoot=true), '
    'seccompProfile (pod or container "x" must set securityContext.seccompProfile.type to "RuntimeDefault" '
    'or "Localhost")')

# (level:version, pod metadata, pod spec, expected (reason, detail) list); goldens from upstream's check tests.
CASES: list[tuple[str, str, dict[str, Any], dict[str, Any], list[tuple[str, str]] | None]] = [
    ("plain pod passes baseline", "baseline", {}, {"containers": [_c("x")]}, []),
    ("kubectl run pod at restricted", "restricted", {}, {"containers": [_c("x")]}, None),  # _KUBECTL_RUN_DETAIL
    ("compliant pod passes restricted", "restricted", {}, {"containers": [_compliant()]}, []),
    ("privileged at baseline", "baseline", {},
     {"containers": [_c("a", privileged=True), _c("b", privileged=False), _c("c", privileged=True)]},
     [("privileged", 'containers "a", "c" must not set securityContext.privileged=true')]),
    ("host namespaces", "baseline", {}, {"hostNetwork": True, "hostIPC": True, "hostPID": True, "containers": []},
     [("host namespaces", "hostNetwork=true, hostPID=true, hostIPC=true")]),
    ("hostPath volume at baseline", "baseline", {},
     {"containers": [], "volumes": [{"name": "a", "hostPath": {"path": "/"}}, {"name": "b", "emptyDir": {}}]},
     [("hostPath volumes", 'volume "a"')]),
    ("hostPath volume at restricted is a restricted volume type", "restricted:v1.0", {},
     {"containers": [], "volumes": [{"name": "a", "hostPath": {"path": "/"}}]},
     [("restricted volume types", 'volume "a" uses restricted volume type "hostPath"')]),
    ("host ports", "baseline", {},
     {"containers": [_c("a") | {"ports": [{"containerPort": 1, "hostPort": 20}, {"containerPort": 2, "hostPort": 10}]},
                     _c("b") | {"ports": [{"containerPort": 3}]},
                     _c("c") | {"ports": [{"containerPort": 4, "hostPort": 8080}]}]},
     [("hostPort", 'containers "a", "c" use hostPorts 10, 20, 8080')]),
    ("one host port", "baseline", {},
     {"containers": [_c("a") | {"ports": [{"containerPort": 1, "hostPort": 80}]}]},
     [("hostPort", 'container "a" uses hostPort 80')]),
    ("non-default capabilities at baseline", "baseline", {},
     {"containers": [_c("a", capabilities={"add": ["NET_RAW", "CHOWN"]}),
                     _c("b", capabilities={"add": ["SYS_ADMIN", "NET_RAW"]})]},
     [("non-default capabilities",
       'containers "a", "b" must not include "NET_RAW", "SYS_ADMIN" in securityContext.capabilities.add')]),
    ("procMount", "baseline", {}, {"containers": [_c("a", procMount="Unmasked"), _c("b", procMount="Default")]},
     [("procMount", 'container "a" must not set securityContext.procMount to "Unmasked"')]),
    ("seLinuxOptions pod and containers", "baseline", {},
     {"securityContext": {"seLinuxOptions": {"type": "foo", "user": "bar", "role": "baz"}},
      "containers": [_c("a", seLinuxOptions={"type": "container_t"}), _c("d", seLinuxOptions={"type": "bar"}),
                     _c("e", seLinuxOptions={"user": "bar"}), _c("f", seLinuxOptions={"role": "baz"})]},
     [("seLinuxOptions", 'pod and containers "d", "e", "f" set forbidden securityContext.seLinuxOptions: '
                         'types "bar", "foo"; user may not be set; role may not be set')]),
    ("seLinuxOptions user only", "baseline", {},
     {"securityContext": {"seLinuxOptions": {"user": "bad"}}, "containers": []},
     [("seLinuxOptions", "pod set forbidden securityContext.seLinuxOptions: user may not be set")]),
    ("container_engine_t before 1.31", "baseline:v1.30", {},
     {"containers": [_c("a", seLinuxOptions={"type": "container_engine_t"})]},
     [("seLinuxOptions", 'container "a" set forbidden securityContext.seLinuxOptions: type "container_engine_t"')]),
    ("container_engine_t from 1.31", "baseline:v1.31", {},
     {"containers": [_c("a", seLinuxOptions={"type": "container_engine_t"})]}, []),
    ("seccomp annotations before 1.19", "baseline:v1.18",
     {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined",
                      "container.seccomp.security.alpha.kubernetes.io/a": "runtime/default",
                      "container.seccomp.security.alpha.kubernetes.io/b": "bogus"}},
     {"containers": [_c("a"), _c("b")]},
     [("seccompProfile", 'forbidden annotations container.seccomp.security.alpha.kubernetes.io/b="bogus", '
                         'seccomp.security.alpha.kubernetes.io/pod="unconfined"')]),
    ("seccomp annotations ignored from 1.19", "baseline:v1.19",
     {"annotations": {"seccomp.security.alpha.kubernetes.io/pod": "unconfined"}}, {"containers": [_c("a")]}, []),
    ("seccomp fields at baseline", "baseline", {},
     {"securityContext": {"seccompProfile": {"type": "Unconfined"}},
      "containers": [_c("a", seccompProfile={"type": "Unconfined"}), _c("b")]},
     [("seccompProfile", 'pod and container "a" must not set securityContext.seccompProfile.type to "Unconfined"')]),
    ("sysctls keep the pod's order", "baseline", {},
     {"securityContext": {"sysctls": [{"name": "net.core.somaxconn", "value": "1"},
                                      {"name": "kernel.shm_rmid_forced", "value": "1"},
                                      {"name": "kernel.msgmax", "value": "2"}]}, "containers": []},
     [("forbidden sysctls", "net.core.somaxconn, kernel.msgmax")]),
    ("ip_local_reserved_ports before 1.27", "baseline:v1.26", {},
     {"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]}},
     [("forbidden sysctls", "net.ipv4.ip_local_reserved_ports")]),
    ("ip_local_reserved_ports from 1.27", "baseline:v1.27", {},
     {"securityContext": {"sysctls": [{"name": "net.ipv4.ip_local_reserved_ports", "value": "1"}]}}, []),
    ("tcp_keepalive_time from 1.29", "baseline:v1.29", {},
     {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_keepalive_time", "value": "1"}]}}, []),
    ("tcp_rmem before 1.32", "baseline:v1.31", {},
     {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"}]}},
     [("forbidden sysctls", "net.ipv4.tcp_rmem")]),
    ("tcp_rmem at latest", "baseline", {},
     {"securityContext": {"sysctls": [{"name": "net.ipv4.tcp_rmem", "value": "1"}]}}, []),
    ("windows hostProcess", "baseline", {},
     {"securityContext": {"windowsOptions": {"hostProcess": True}},
      "containers": [_c("a", windowsOptions={"hostProcess": True}), _c("b", windowsOptions={"hostProcess": False})]},
     [("hostProcess", 'pod and container "a" must not set securityContext.windowsOptions.hostProcess=true')]),
    ("AppArmor fields", "baseline", {},
     {"securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}, "containers": [_c("foo")],
      "initContainers": [_c("bar", appArmorProfile={"type": "Unconfined"})]},
     [("forbidden AppArmor profile", 'container "bar" must not set AppArmor profile type to "Unconfined"')]),
    ("AppArmor annotations", "baseline",
     {"annotations": {"container.apparmor.security.beta.kubernetes.io/": "bogus",
                      "container.apparmor.security.beta.kubernetes.io/a": "",
                      "container.apparmor.security.beta.kubernetes.io/b": "runtime/default",
                      "container.apparmor.security.beta.kubernetes.io/c": "localhost/",
                      "container.apparmor.security.beta.kubernetes.io/e": "unconfined",
                      "container.apparmor.security.beta.kubernetes.io/f": "unknown"}}, {},
     [("forbidden AppArmor profiles", "annotations must not set AppArmor profile type to "
       '"container.apparmor.security.beta.kubernetes.io/="bogus"", '
       '"container.apparmor.security.beta.kubernetes.io/e="unconfined"", '
       '"container.apparmor.security.beta.kubernetes.io/f="unknown""')]),
    ("allowPrivilegeEscalation not checked before 1.8", "restricted:v1.7", {},
     {"securityContext": {"runAsNonRoot": True}, "containers": [_c("a")]}, []),
    ("windows pods skip the linux checks from 1.25", "restricted:v1.25", {},
     {"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": True}, "containers": [_c("a")]}, []),
    ("windows pods checked before 1.25", "restricted:v1.24", {},
     {"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Localhost"}},
      "containers": [_c("a", capabilities={"drop": ["ALL"]})]},
     [("allowPrivilegeEscalation != false",
       'container "a" must set securityContext.allowPrivilegeEscalation=false')]),
    ("capabilities before 1.22 use the baseline check", "restricted:v1.21", {},
     {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
      "containers": [_c("a", allowPrivilegeEscalation=False, capabilities={"add": ["SYS_ADMIN"]})]},
     [("non-default capabilities", 'container "a" must not include "SYS_ADMIN" in securityContext.capabilities.add')]),
    ("capabilities from 1.22", "restricted:v1.22", {},
     {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
      "containers": [_c("a", allowPrivilegeEscalation=False, capabilities={"add": ["FOO", "BAR"]}),
                     _c("b", allowPrivilegeEscalation=False, capabilities={"add": ["BAR", "BAZ"]}),
                     _c("c", allowPrivilegeEscalation=False,
                        capabilities={"add": ["NET_BIND_SERVICE", "CHOWN"], "drop": ["ALL", "FOO"]})]},
     [("unrestricted capabilities", 'containers "a", "b" must set securityContext.capabilities.drop=["ALL"]; '
       'containers "a", "b", "c" must not include "BAR", "BAZ", "CHOWN", "FOO" in securityContext.capabilities.add')]),
    ("restricted volume types", "restricted", {},
     {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}, "containers": [],
      "volumes": [{"name": "a1", "emptyDir": {}}, {"name": "a2", "projected": {"sources": []}},
                  {"name": "b1", "hostPath": {"path": "/"}}, {"name": "b2", "nfs": {"server": "s", "path": "/"}},
                  {"name": "b3", "image": {"reference": "x"}}, {"name": "c1"}]},
     [("restricted volume types", 'volumes "b1", "b2", "b3", "c1" use restricted volume types '
                                  '"hostPath", "nfs", "unknown"')]),
    ("runAsNonRoot explicit false", "restricted", {},
     {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
      "containers": [_compliant("a"), _compliant("c") | {"securityContext": {**_compliant()["securityContext"],
                                                                              "runAsNonRoot": False}}]},
     [("runAsNonRoot != true", 'container "c" must not set securityContext.runAsNonRoot=false')]),
    ("runAsUser=0 not checked before 1.23", "restricted:v1.22", {},
     {"securityContext": {"runAsUser": 0}, "containers": [_compliant("a")]}, []),
    ("runAsUser=0 from 1.23", "restricted:v1.23", {},
     {"securityContext": {"runAsUser": 0}, "containers": [_compliant("a"), _compliant("b") | {"securityContext": {
         **_compliant()["securityContext"], "runAsUser": 0}}]},
     [("runAsUser=0", 'pod and container "b" must not set runAsUser=0')]),
    ("seccomp not required before 1.19", "restricted:v1.18", {},
     {"containers": [_c("a", runAsNonRoot=True, allowPrivilegeEscalation=False)]}, []),
    ("seccomp explicitly unconfined at restricted", "restricted", {},
     {"securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "Unconfined"}},
      "containers": [_c("a", allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]})]},
     [("seccompProfile", 'pod must not set securityContext.seccompProfile.type to "Unconfined"')]),
    ("ephemeral containers are checked", "baseline", {},
     {"containers": [_c("a")], "ephemeralContainers": [_c("debug", privileged=True)]},
     [("privileged", 'container "debug" must not set securityContext.privileged=true')]),
]


@pytest.mark.parametrize(("level", "meta", "spec", "want"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_checks(level: str, meta: dict[str, Any], spec: dict[str, Any], want: list[tuple[str, str]] | None) -> None:
    """Each pod fails exactly the expected checks, in upstream's order and wording."""
    lv = _lv(*level.split(":")) if ":" in level else _lv(level)
    got = ps.evaluate(lv, meta, spec)
    if want is None:
        assert ps.forbidden_detail(got) == _KUBECTL_RUN_DETAIL
    else:
        assert got == want


def test_restricted_order_matches_a_real_1_32_denial() -> None:
    """Baseline failures come first (sorted by check ID), then restricted ones, as a real v1.32 server words it."""
    spec = {"securityContext": {"seLinuxOptions": {"user": "system_u", "role": "object_r", "level": "s0"},
                                "sysctls": [{"name": "net.core.somaxconn", "value": "1024"},
                                            {"name": "kernel.msgmax", "value": "65536"}]},
            "containers": [{"name": "my-pod", "image": "busybox"}]}
    assert ps.forbidden_detail(ps.evaluate(_lv("restricted", "v1.32"), {}, spec)) == (
        "seLinuxOptions (pod set forbidden securityContext.seLinuxOptions: user may not be set; role may not be set), "
        "forbidden sysctls (net.core.somaxconn, kernel.msgmax), allowPrivilegeEscalation != false (container "
        '"my-pod" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container '
        '"my-pod" must set securityContext.capabilities.drop=["ALL"]), runAsNonRoot != true (pod or container '
        '"my-pod" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container "my-pod" must set '
        'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")')


@pytest.mark.parametrize("version", ["latest", "v1.32", "v1.99"])
def test_newer_versions_evaluate_as_the_newest_known(version: str) -> None:
    """latest and any version past v1.32 apply the v1.32 checks."""
    assert ps.checks_for(ps.RESTRICTED, ps.effective_minor(_lv("restricted", version).version)) == \
        ps.checks_for(ps.RESTRICTED, 32)


def test_privileged_checks_nothing() -> None:
    """The privileged level allows anything."""
    spec = {"hostNetwork": True, "containers": [_c("a", privileged=True)]}
    assert ps.evaluate(_lv("privileged"), {}, spec) == []


def test_user_namespace_pods_relaxed_only_when_opted_in() -> None:
    """hostUsers=false relaxes runAsNonRoot, runAsUser and procMount only with the opt-in setting."""
    spec = {"hostUsers": False, "securityContext": {"runAsUser": 0, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [_c("a", allowPrivilegeEscalation=False, capabilities={"drop": ["ALL"]},
                              procMount="Unmasked")]}
    reasons = [r for r, _ in ps.evaluate(_lv("restricted"), {}, spec)]
    assert reasons == ["procMount", "runAsNonRoot != true", "runAsUser=0"]
    assert ps.evaluate(_lv("restricted"), {}, spec, relax_user_namespace_pods=True) == []


@pytest.mark.parametrize(("value", "level", "error"), [
    ("privileged", "privileged", ""),
    ("baseline", "baseline", ""),
    ("restricted", "restricted", ""),
    ("Restricted", "restricted", "must be one of privileged, baseline, restricted"),
    ("", "restricted", "must be one of privileged, baseline, restricted"),
])
def test_parse_level(value: str, level: str, error: str) -> None:
    """Unknown levels evaluate as restricted, with kube's error text."""
    assert ps.parse_level(value) == (level, error)


@pytest.mark.parametrize(("value", "version", "error"), [
    ("latest", "latest", ""),
    ("v1.0", "v1.0", ""),
    ("v1.25", "v1.25", ""),
    ("v1.025", "latest", 'must be "latest" or "v1.x"'),
    ("1.25", "latest", 'must be "latest" or "v1.x"'),
    ("v2.0", "latest", 'must be "latest" or "v1.x"'),
])
def test_parse_version(value: str, version: str, error: str) -> None:
    """Unparsable versions evaluate as latest, with kube's error text."""
    got, err = ps.parse_version(value)
    assert (str(got), err) == (version, error)


def test_policy_from_labels() -> None:
    """Labels set each mode; a bad enforce level fails closed, bad audit/warn levels fail open."""
    policy, errs = ps.policy_from_labels({
        "pod-security.kubernetes.io/enforce": "bogus", "pod-security.kubernetes.io/enforce-version": "v1.28",
        "pod-security.kubernetes.io/audit": "bogus", "pod-security.kubernetes.io/warn": "baseline",
        "pod-security.kubernetes.io/warn-version": "v9"})
    assert str(policy.enforce) == "restricted:v1.28"
    assert str(policy.audit) == "privileged:latest"
    assert str(policy.warn) == "baseline:latest"
    assert [e.text() for e in errs] == [
        'metadata.labels[pod-security.kubernetes.io/enforce]: Invalid value: "bogus": '
        "must be one of privileged, baseline, restricted",
        'metadata.labels[pod-security.kubernetes.io/audit]: Invalid value: "bogus": '
        "must be one of privileged, baseline, restricted",
        'metadata.labels[pod-security.kubernetes.io/warn-version]: Invalid value: "v9": must be "latest" or "v1.x"']


def test_unlabeled_namespace_is_fully_privileged() -> None:
    """Without labels every mode is privileged:latest."""
    policy, errs = ps.policy_from_labels({"team": "a"})
    assert policy.fully_privileged() and not errs
    assert str(policy.enforce) == "privileged:latest"
