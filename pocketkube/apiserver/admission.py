"""Built-in admission plugins run on every write: NamespaceLifecycle, Priority, DefaultTolerationSeconds, Service allocation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pocketkube.api import errors, selectors
from pocketkube.apiserver import (
    admission_ingress,
    admission_limitranger,
    admission_noderestriction,
    admission_podsecurity,
    admission_quota,
    admission_serviceaccount,
    admission_storage,
    admission_vap,
    context,
    csr,
    objects,
    rbac_escalation,
    webhooks,
)

_IMMORTAL = {"default", "kube-system", "kube-public"}


async def namespace_lifecycle(server: context.Server, call: context.Call, obj: dict[str, Any],
                              old: dict[str, Any] | None, operation: str) -> None:
    """Refuse objects in missing or terminating namespaces, and deleting the system namespaces."""
    res = call.res
    if not res.namespaced or operation != "CREATE":
        return
    ns_res = server.registry.get("", "v1", "namespaces")
    ns = await server.objects.get_shared(ns_res, "", call.info.namespace)
    if ns is None:
        raise errors.NotFound.for_object("namespaces", "", call.info.namespace)
    if (ns.get("status") or {}).get("phase") == "Terminating" or ns["metadata"].get("deletionTimestamp"):
        if (res.group, res.kind) in (("", "Event"), ("events.k8s.io", "Event")):
            return
        raise errors.Forbidden(
            f'{res.resource}{"." + res.group if res.group else ""} "{obj["metadata"].get("name", "")}" is forbidden: '
            f"unable to create new content in namespace {call.info.namespace} because it is being terminated",
            details={"name": obj["metadata"].get("name", ""), **({"group": res.group} if res.group else {}),
                     "kind": res.resource, "causes": [{"reason": "NamespaceTerminating",
                     "message": f"namespace {call.info.namespace} is being terminated", "field": "metadata.namespace"}]})


async def service_allocation(server: context.Server, call: context.Call, obj: dict[str, Any],
                             old: dict[str, Any] | None, operation: str) -> None:
    if (call.res.group, call.res.kind) != ("", "Service") or server.allocators is None:
        return
    if call.info.subresource:
        return
    taken = server.allocators.allocate(obj, old)
    if call.dry_run:
        server.allocators.rollback(taken)


def _new_pod(call: context.Call, operation: str) -> bool:
    return operation == "CREATE" and (call.res.group, call.res.kind) == ("", "Pod") and not call.info.subresource


def _pod_forbidden(obj: dict[str, Any], message: str) -> errors.Forbidden:
    name = (obj.get("metadata") or {}).get("name", "")
    return errors.Forbidden(f'pods "{name}" is forbidden: {message}', details={"name": name, "kind": "pods"})


async def priority(server: context.Server, call: context.Call, obj: dict[str, Any],
                   old: dict[str, Any] | None, operation: str) -> None:
    """Resolve a new pod's priorityClassName (or the global default) into spec.priority and preemptionPolicy."""
    if not _new_pod(call, operation) or not isinstance(obj.get("spec"), dict):
        return
    spec = obj["spec"]
    pc_res = server.registry.get("scheduling.k8s.io", "v1", "priorityclasses")
    if pc_res is None:
        return
    class_name = spec.get("priorityClassName") or ""
    value, policy = 0, "PreemptLowerPriority"
    if class_name:
        pc = await server.objects.get_shared(pc_res, "", class_name)
        if pc is None:
            raise _pod_forbidden(obj, f"no PriorityClass with name {class_name} was found")
        value, policy = pc.get("value", 0), pc.get("preemptionPolicy") or policy
    else:
        listed = await server.store.list(objects.storage_prefix(pc_res))
        items = [server.objects.shared(pc_res, e) for e in listed.entries]
        default = min((pc for pc in items if pc.get("globalDefault")), default=None,
                      key=lambda pc: (pc.get("value", 0), pc["metadata"].get("creationTimestamp", "")))
        if default is not None:
            spec["priorityClassName"] = default["metadata"]["name"]
            value, policy = default.get("value", 0), default.get("preemptionPolicy") or policy
    if spec.get("priority") is not None and spec["priority"] != value:
        raise _pod_forbidden(obj, f"the integer value of priority ({spec['priority']}) must not be provided in pod "
                                  f"spec; priority admission controller computed {value} from the given PriorityClass name")
    if spec.get("preemptionPolicy") is not None and spec["preemptionPolicy"] != policy:
        raise _pod_forbidden(obj, f"the string value of PreemptionPolicy ({spec['preemptionPolicy']}) must not be "
                                  f"provided in pod spec; priority admission controller computed {policy} from the "
                                  "given PriorityClass name")
    spec["priority"] = value
    spec["preemptionPolicy"] = policy


_DEFAULT_TOLERATIONS = ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")


async def default_toleration_seconds(server: context.Server, call: context.Call, obj: dict[str, Any],
                                     old: dict[str, Any] | None, operation: str) -> None:
    """Let a new pod ride out a not-ready or unreachable node for 300s, unless it already tolerates that."""
    if not _new_pod(call, operation) or not isinstance(obj.get("spec"), dict):
        return
    tolerations = obj["spec"].get("tolerations")
    if not isinstance(tolerations, list):
        tolerations = []
    for key in _DEFAULT_TOLERATIONS:
        if any(isinstance(t, dict) and t.get("key", "") in (key, "") and t.get("effect", "") in ("NoExecute", "")
               for t in tolerations):
            continue
        tolerations.append({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300})
    if tolerations:
        obj["spec"]["tolerations"] = tolerations


PLUGINS = [namespace_lifecycle, admission_limitranger.limit_ranger, admission_serviceaccount.admit,
           # NodeRestriction follows ServiceAccount as in kube's plugin order.
           admission_noderestriction.admit, priority, default_toleration_seconds, admission_storage.default_storage_class,
           admission_storage.storage_object_in_use_protection, csr.stamp, admission_ingress.default_ingress_class,
           # Mutating webhooks end the mutating phase: validating plugins below see their patches.
           webhooks.mutate, admission_podsecurity.pod_security,
           rbac_escalation.check, csr.admit, admission_vap.validating_admission_policy, webhooks.validate,
           # ResourceQuota is the last admission check (it charges usage); allocation follows admission as in kube's registry.
           admission_quota.resource_quota, service_allocation]


# kube-apiserver's plugin names for the plugins above (csr.admit is CertificateApproval, CertificateSigning and
# CertificateSubjectRestriction in one). csr.stamp, rbac_escalation.check and service_allocation are not admission
# plugins in kube (they are the CSR strategy, the RBAC registry and the Service registry): they always run.
NAMES: dict[Any, tuple[str, ...]] = {
    namespace_lifecycle: ("NamespaceLifecycle",), admission_limitranger.limit_ranger: ("LimitRanger",),
    admission_serviceaccount.admit: ("ServiceAccount",), priority: ("Priority",),
    # Off by default in kube-apiserver but on in every kubeadm-style cluster; pocketkube's kubelets are real nodes.
    admission_noderestriction.admit: ("NodeRestriction",),
    default_toleration_seconds: ("DefaultTolerationSeconds",),
    admission_storage.default_storage_class: ("DefaultStorageClass",),
    admission_storage.storage_object_in_use_protection: ("StorageObjectInUseProtection",),
    admission_ingress.default_ingress_class: ("DefaultIngressClass",), webhooks.mutate: ("MutatingAdmissionWebhook",),
    admission_podsecurity.pod_security: ("PodSecurity",),
    csr.admit: ("CertificateApproval", "CertificateSigning", "CertificateSubjectRestriction"),
    admission_vap.validating_admission_policy: ("ValidatingAdmissionPolicy",),
    webhooks.validate: ("ValidatingAdmissionWebhook",), admission_quota.resource_quota: ("ResourceQuota",),
}
# kube-apiserver 1.32's registered plugins that pocketkube does not implement: naming one in
# --enable-admission-plugins is refused, naming one in --disable-admission-plugins is accepted (it is off anyway).
# The default-on ones among them (TaintNodesByCondition, PersistentVolumeClaimResize, RuntimeClass,
# ClusterTrustBundleAttest) only touch objects pocketkube serves without their controllers.
UNIMPLEMENTED = frozenset({
    "AlwaysAdmit", "AlwaysDeny", "AlwaysPullImages", "ClusterTrustBundleAttest", "DenyServiceExternalIPs",
    "EventRateLimit", "ExtendedResourceToleration", "ImagePolicyWebhook", "LimitPodHardAntiAffinityTopology",
    "NamespaceAutoProvision", "NamespaceExists", "OwnerReferencesPermissionEnforcement",
    "PersistentVolumeClaimResize", "PersistentVolumeLabel", "PodNodeSelector", "PodTolerationRestriction",
    "RuntimeClass", "TaintNodesByCondition", "MutatingAdmissionPolicy",
})
DEFAULT_ON = frozenset(name for names in NAMES.values() for name in names)


def check_plugin_flags(enable: Sequence[str], disable: Sequence[str]) -> None:
    """kube-apiserver's checks of --enable-admission-plugins and --disable-admission-plugins; ValueError if bad."""
    problems: list[str] = []
    for flag, names in (("enable-admission-plugins", enable), ("disable-admission-plugins", disable)):
        for name in names:
            if name not in DEFAULT_ON and name not in UNIMPLEMENTED:
                problems.append(f"{flag} plugin {selectors.go_quote(name)} is unknown")
    overlap = sorted(set(enable) & set(disable))
    if overlap:
        problems.append(f"[{' '.join(overlap)}] in enable-admission-plugins and disable-admission-plugins overlapped")
    if not problems:
        missing = sorted(set(enable) & UNIMPLEMENTED)
        if missing:
            problems.append(f"admission plugin(s) {', '.join(missing)} are not implemented by pocketkube")
    if problems:
        raise ValueError("; ".join(problems))


def chain(*, enable: Sequence[str] = (), disable: Sequence[str] = ()) -> list[Any]:
    """The server's admission chain: every plugin on by default (as in kube 1.32) minus the disabled ones."""
    check_plugin_flags(enable, disable)
    off = set(disable)
    return [p for p in PLUGINS if p not in NAMES or not set(NAMES[p]) <= off]


# The plugins that also judge DELETE requests (kube sends them the old object only).
DELETE_PLUGINS = (admission_noderestriction.admit, webhooks.mutate, admission_vap.validating_admission_policy,
                  webhooks.validate)


async def admit_delete(server: context.Server, call: context.Call, old: dict[str, Any]) -> None:
    """Run the server's delete-aware plugins on a DELETE of `old`."""
    for plugin in server.admission:
        if plugin in DELETE_PLUGINS:
            await plugin(server, call, None, old, "DELETE")


def refuse_immortal_delete(res_kind: tuple[str, str], name: str) -> None:
    if res_kind == ("", "Namespace") and name in _IMMORTAL:
        raise errors.Forbidden(f'namespaces "{name}" is forbidden: this namespace may not be deleted',
                               details={"name": name, "kind": "namespaces"})
