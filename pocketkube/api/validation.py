"""Create and update validation of every built-in kind, dispatching to the per-group validators.

Call after defaulting, as kube-apiserver does: validation sees defaulted objects. An empty list means
valid; otherwise raise errors.Invalid(kind=..., group=..., name=..., causes=the list).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pocketkube.api import errors, names, quantity, webhookconfig
from pocketkube.api import validation_apps as va
from pocketkube.api import validation_certificates as vcert
from pocketkube.api import validation_core as vc
from pocketkube.api import validation_meta as vm
from pocketkube.api import validation_other as vo
from pocketkube.api import validation_pod as vp

FE = errors.FieldError
Validator = Callable[[dict[str, Any]], list[FE]]
UpdateRule = Callable[[dict[str, Any], dict[str, Any]], list[FE]]

_CREATE: dict[tuple[str, str], Validator] = {
    ("", "Pod"): vp.validate_pod_create,
    ("", "PodTemplate"): vc.validate_pod_template,
    ("", "ReplicationController"): vc.validate_replication_controller,
    ("", "Service"): vc.validate_service,
    ("", "ConfigMap"): vc.validate_config_map,
    ("", "Secret"): vc.validate_secret,
    ("", "Namespace"): vc.validate_namespace,
    ("", "Node"): vc.validate_node,
    ("", "ServiceAccount"): vc.validate_service_account,
    ("", "PersistentVolumeClaim"): vc.validate_pvc,
    ("", "PersistentVolume"): vc.validate_pv,
    ("", "Event"): lambda o: vc.validate_event(o, strict=False),
    ("", "Endpoints"): vo.validate_endpoints,
    ("", "ResourceQuota"): vc.validate_resource_quota,
    ("", "LimitRange"): vc.validate_limit_range,
    ("events.k8s.io", "Event"): lambda o: vc.validate_event(o, strict=True),
    ("apps", "Deployment"): va.validate_deployment,
    ("apps", "ReplicaSet"): va.validate_replica_set,
    ("apps", "StatefulSet"): va.validate_stateful_set,
    ("apps", "DaemonSet"): va.validate_daemon_set,
    ("batch", "Job"): va.validate_job,
    ("batch", "CronJob"): va.validate_cron_job,
    ("autoscaling", "HorizontalPodAutoscaler"): va.validate_hpa,
    ("policy", "PodDisruptionBudget"): va.validate_pdb,
    ("rbac.authorization.k8s.io", "Role"): lambda o: vo.validate_role(o, namespaced=True),
    ("rbac.authorization.k8s.io", "ClusterRole"): lambda o: vo.validate_role(o, namespaced=False),
    ("rbac.authorization.k8s.io", "RoleBinding"): lambda o: vo.validate_binding(o, namespaced=True),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): lambda o: vo.validate_binding(o, namespaced=False),
    ("networking.k8s.io", "Ingress"): vo.validate_ingress,
    ("networking.k8s.io", "IngressClass"): vo.validate_ingress_class,
    ("networking.k8s.io", "NetworkPolicy"): vo.validate_network_policy,
    ("scheduling.k8s.io", "PriorityClass"): vo.validate_priority_class,
    ("coordination.k8s.io", "Lease"): vo.validate_lease,
    ("storage.k8s.io", "StorageClass"): vo.validate_storage_class,
    ("discovery.k8s.io", "EndpointSlice"): vo.validate_endpoint_slice,
    ("certificates.k8s.io", "CertificateSigningRequest"): vcert.validate_create,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"): lambda o: webhookconfig.validate(o, mutating=True),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"):
        lambda o: webhookconfig.validate(o, mutating=False),
}

# Update validators that replace "metadata update + create rules" entirely.
_UPDATE: dict[tuple[str, str], UpdateRule] = {
    ("", "Pod"): vp.validate_pod_update,
    ("", "Service"): vc.validate_service_update,
    ("", "ConfigMap"): vc.validate_config_map_update,
    ("", "Secret"): vc.validate_secret_update,
    ("", "PersistentVolumeClaim"): vc.validate_pvc_update,
    ("certificates.k8s.io", "CertificateSigningRequest"): vcert.validate_update,
    ("batch", "CronJob"): lambda n, o: (vm.validate_metadata_update(n.get("metadata"), o.get("metadata"))
                                        + va.validate_cron_job(n, o)),
}

# Extra immutability rules appended after "metadata update + create rules".
_IMMUTABLE: dict[tuple[str, str], UpdateRule] = {
    ("apps", "Deployment"): va.selector_immutable,
    ("apps", "ReplicaSet"): va.selector_immutable,
    ("apps", "DaemonSet"): va.selector_immutable,
    ("apps", "StatefulSet"): va.stateful_set_update,
    ("batch", "Job"): va.job_update,
    ("rbac.authorization.k8s.io", "RoleBinding"): vo.binding_update,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): vo.binding_update,
    ("scheduling.k8s.io", "PriorityClass"): vo.priority_class_update,
    ("storage.k8s.io", "StorageClass"): vo.storage_class_update,
}


def validate_metadata(meta: Any, *, namespaced: bool, name_validator: names.NameFunc) -> list[FE]:
    """ObjectMeta rules on create: name/generateName, namespace, labels, annotations (256KiB), owners, finalizers."""
    return vm.validate_metadata(meta, namespaced=namespaced, name_validator=name_validator, kube_finalizers=False)


def _guard(fn: Callable[[], list[FE]], kind: str, version: str) -> list[FE]:
    try:
        return fn()
    except quantity.QuantityError as e:
        # A malformed quantity never reaches validation in Kubernetes: decoding the body fails first.
        raise errors.BadRequest(f'{kind} in version "{version}" cannot be handled as a {kind}: {e}') from e


def _generic(obj: dict[str, Any], namespaced: bool) -> list[FE]:
    return vm.validate_metadata(obj.get("metadata"), namespaced=namespaced,
                                name_validator=names.name_is_dns_subdomain, kube_finalizers=False)


def validate_create(obj: dict[str, Any], group: str, version: str, kind: str, *, namespaced: bool) -> list[FE]:
    """All field errors for creating obj; unknown kinds and custom resources get metadata checks only."""
    fn = _CREATE.get((group, kind))
    if fn is None:
        return _generic(obj, namespaced)
    return _guard(lambda: fn(obj), kind, version)


def validate_update(new: dict[str, Any], old: dict[str, Any], group: str, version: str, kind: str, *,
                    namespaced: bool) -> list[FE]:
    """All field errors for replacing old with new, immutability rules included."""
    key = (group, kind)

    def run() -> list[FE]:
        if key in _UPDATE:
            return _UPDATE[key](new, old)
        known = key in _CREATE
        out = vm.validate_metadata_update(new.get("metadata"), old.get("metadata"), kube_finalizers=known)
        if not known:
            return out
        out.extend(e for e in _CREATE[key](new) if not _is_create_only(e, key))
        if key in _IMMUTABLE:
            out.extend(_IMMUTABLE[key](new, old))
        return out

    return _guard(run, kind, version)


def _is_create_only(err: FE, key: tuple[str, str]) -> bool:
    # Name rules are create-time only: ValidateObjectMetaUpdate checks that the name did not change instead.
    return err.field in ("metadata.name", "metadata.generateName") or (
        key == ("batch", "CronJob") and err.field == "metadata.name")


def invalid_error(obj: dict[str, Any], group: str, kind: str, causes: list[FE]) -> errors.Invalid:
    """The 422 for these causes, named like Kubernetes names it."""
    name = str((obj.get("metadata") or {}).get("name") or "") if isinstance(obj, dict) else ""
    return errors.Invalid(kind=kind, group=group, name=name, causes=causes)
