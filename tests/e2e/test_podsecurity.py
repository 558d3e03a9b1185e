"""End to end: PodSecurity admission enforces, warns and checks namespaces exactly as a real v1.32 server does."""

from __future__ import annotations

import json

from tests.e2e import cluster as cluster_mod
from tests.e2e import http

_LABEL = "pod-security.kubernetes.io/"

_RESTRICTED_RUN = (
    'allowPrivilegeEscalation != false (container "{c}" must set securityContext.allowPrivilegeEscalation=false), '
    'unrestricted capabilities (container "{c}" must set securityContext.capabilities.drop=["ALL"]), '
    'runAsNonRoot != true (pod or container "{c}" must set securityContext.runAsNonRoot=true), ')
_SECCOMP = ('seccompProfile (pod or container "{c}" must set securityContext.seccompProfile.type to '
            '"RuntimeDefault" or "Localhost")')


def _namespace(cluster: cluster_mod.Cluster, name: str, **modes: str) -> None:
    cluster.kubectl("create", "namespace", name)
    if modes:
        cluster.kubectl("label", "namespace", name, *[f"{_LABEL}{m}={v}" for m, v in modes.items()])


def _compliant_pod(name: str) -> str:
    return json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{"name": "app", "image": "busybox", "securityContext": {
            "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}]}})


def test_production_namespace_rejects_root_pod(cluster: cluster_mod.Cluster) -> None:
    """enforce/audit/warn=restricted: a root pod is refused with kube's exact message, a hardened one runs."""
    _namespace(cluster, "production", enforce="restricted", audit="restricted", warn="restricted")
    cp = cluster.kubectl("-n", "production", "run", "root", "--image=nginx",
                         '--overrides={"spec":{"securityContext":{"runAsUser":0}}}', check=False)
    assert cp.returncode == 1
    assert cp.stderr == ('Error from server (Forbidden): pods "root" is forbidden: violates PodSecurity '
                         '"restricted:latest": ' + _RESTRICTED_RUN.format(c="root")
                         + "runAsUser=0 (pod must not set runAsUser=0), " + _SECCOMP.format(c="root") + "\n")
    cp = cluster.kubectl("-n", "production", "apply", "-f", "-", input=_compliant_pod("hardened"))
    assert cp.stdout == "pod/hardened created\n" and cp.stderr == ""


def test_enforce_denial_status(cluster: cluster_mod.Cluster) -> None:
    """The denial is a 403 Forbidden Status naming the pod, without PodSecurity warnings."""
    _namespace(cluster, "strict", enforce="restricted", warn="baseline")
    pod = json.loads(_compliant_pod("loose"))
    pod["spec"]["containers"][0]["securityContext"] = {"privileged": True}
    code, headers, body = http.Raw(cluster.kubeconfig).request("POST", "/api/v1/namespaces/strict/pods", pod)
    assert code == 403 and "warning" not in headers
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": (
        'pods "loose" is forbidden: violates PodSecurity "restricted:latest": privileged (container "app" must not '
        'set securityContext.privileged=true), allowPrivilegeEscalation != false (container "app" must set '
        'securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container "app" must set '
        'securityContext.capabilities.drop=["ALL"])'),
        "reason": "Forbidden", "details": {"name": "loose", "kind": "pods"}, "code": 403}


def test_warn_baseline_deployment(cluster: cluster_mod.Cluster) -> None:
    """warn=baseline: a privileged Deployment is created with kube's Warning line."""
    _namespace(cluster, "dev", warn="baseline")
    deploy = json.loads(cluster.kubectl("-n", "dev", "create", "deployment", "web", "--image=nginx",
                                        "--dry-run=client", "-o", "json").stdout)
    template = deploy["spec"]["template"]["spec"]
    template["hostNetwork"] = True
    template["containers"][0]["securityContext"] = {"privileged": True}
    cp = cluster.kubectl("-n", "dev", "apply", "-f", "-", input=json.dumps(deploy))
    assert cp.stdout == "deployment.apps/web created\n"
    assert cp.stderr == ('Warning: would violate PodSecurity "baseline:latest": host namespaces (hostNetwork=true), '
                         'privileged (container "nginx" must not set securityContext.privileged=true)\n')
    cp = cluster.kubectl("-n", "dev", "create", "cronjob", "tick", "--image=busybox", "--schedule=* * * * *")
    assert cp.stderr == ""


def test_label_namespace_with_violating_pods(cluster: cluster_mod.Cluster) -> None:
    """Tightening enforce on a namespace lists the existing pods that would now be refused."""
    _namespace(cluster, "legacy")
    for name, extra in (("pod-a", ()), ("pod-b", ("--privileged",)), ("pod-c", ())):
        cluster.kubectl("-n", "legacy", "run", name, "--image=nginx", *extra)
    cp = cluster.kubectl("label", "namespace", "legacy", f"{_LABEL}enforce=baseline")
    assert cp.stdout == "namespace/legacy labeled\n"
    assert cp.stderr == ('Warning: existing pods in namespace "legacy" violate the new PodSecurity enforce level '
                         '"baseline:latest"\nWarning: pod-b: privileged\n')
    cp = cluster.kubectl("label", "--overwrite", "namespace", "legacy", f"{_LABEL}enforce=restricted")
    assert cp.stderr == (
        'Warning: existing pods in namespace "legacy" violate the new PodSecurity enforce level "restricted:latest"\n'
        "Warning: pod-a (and 1 other pod): allowPrivilegeEscalation != false, unrestricted capabilities, "
        "runAsNonRoot != true, seccompProfile\n"
        "Warning: pod-b: privileged, allowPrivilegeEscalation != false, unrestricted capabilities, "
        "runAsNonRoot != true, seccompProfile\n")
    # loosening, or relabeling to the same level, checks nothing
    cp = cluster.kubectl("label", "--overwrite", "namespace", "legacy", f"{_LABEL}enforce=baseline")
    assert cp.stderr == ""


def test_existing_pod_updates(cluster: cluster_mod.Cluster) -> None:
    """In an enforcing namespace a violating pod may still be relabeled, but not given a new image."""
    _namespace(cluster, "frozen")
    cluster.kubectl("-n", "frozen", "run", "old", "--image=nginx")
    cluster.kubectl("label", "namespace", "frozen", f"{_LABEL}enforce=restricted")
    assert cluster.kubectl("-n", "frozen", "label", "pod", "old", "tier=legacy").returncode == 0
    cp = cluster.kubectl("-n", "frozen", "set", "image", "pod/old", "old=nginx:2", check=False)
    assert cp.returncode == 1
    assert 'pods "old" is forbidden: violates PodSecurity "restricted:latest": allowPrivilegeEscalation' in cp.stderr


def test_invalid_labels_rejected(cluster: cluster_mod.Cluster) -> None:
    """A bad level or version label is refused with kube's 422 on create and on update."""
    cp = cluster.kubectl("apply", "-f", "-", check=False, input=json.dumps({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "typo", "labels": {f"{_LABEL}enforce": "restricted", f"{_LABEL}enforce-version": "1.32"}}}))
    assert cp.returncode == 1
    assert cp.stderr == ('The Namespace "typo" is invalid: metadata.labels[pod-security.kubernetes.io/enforce-version]: '
                         'Invalid value: "1.32": must be "latest" or "v1.x"\n')
    _namespace(cluster, "fine")
    cp = cluster.kubectl("label", "namespace", "fine", f"{_LABEL}warn=strict", f"{_LABEL}audit=tight", check=False)
    assert cp.returncode == 1
    assert cp.stderr == (
        'The Namespace "fine" is invalid: \n'
        '* metadata.labels[pod-security.kubernetes.io/audit]: Invalid value: "tight": must be one of privileged, '
        "baseline, restricted\n"
        '* metadata.labels[pod-security.kubernetes.io/warn]: Invalid value: "strict": must be one of privileged, '
        "baseline, restricted\n")


def test_pinned_version(cluster: cluster_mod.Cluster) -> None:
    """enforce-version pins the checks: v1.22 has no runAsUser check, so only the older reasons appear."""
    _namespace(cluster, "pinned", enforce="restricted", **{"enforce-version": "v1.22"})
    cp = cluster.kubectl("-n", "pinned", "run", "p", "--image=nginx", check=False)
    assert cp.stderr == ('Error from server (Forbidden): pods "p" is forbidden: violates PodSecurity '
                         '"restricted:v1.22": ' + _RESTRICTED_RUN.format(c="p") + _SECCOMP.format(c="p") + "\n")
