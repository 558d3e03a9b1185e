"""Defaulting of built-in kinds as kube-apiserver 1.32 applies it on decode (pkg/apis/*/v1/defaults.go).

Left to admission, not done here: serviceAccountName "default" and the token volume (ServiceAccount
plugin), priority from priorityClassName (Priority plugin), the not-ready/unreachable tolerations
(DefaultTolerationSeconds plugin), LimitRanger requests. ClusterIP/NodePort allocation is the apiserver's.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pocketkube.api import defaults_core as core
from pocketkube.api import quantity, webhookconfig

Defaulter = Callable[[dict[str, Any]], None]

_dict = core._dict
_dicts = core._dicts
_setdefault = core._setdefault


def _replicas(spec: dict[str, Any]) -> None:
    if spec.get("replicas") is None:
        spec["replicas"] = 1


def _revision_history(spec: dict[str, Any]) -> None:
    if spec.get("revisionHistoryLimit") is None:
        spec["revisionHistoryLimit"] = 10


def deployment(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    _replicas(spec)
    strategy = _dict(spec, "strategy")
    _setdefault(strategy, "type", "RollingUpdate")
    if strategy["type"] == "RollingUpdate":
        ru = _dict(strategy, "rollingUpdate")
        if ru.get("maxUnavailable") is None:
            ru["maxUnavailable"] = "25%"
        if ru.get("maxSurge") is None:
            ru["maxSurge"] = "25%"
    _revision_history(spec)
    if spec.get("progressDeadlineSeconds") is None:
        spec["progressDeadlineSeconds"] = 600
    core.pod_template(spec.get("template"))


def replica_set(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    _replicas(spec)
    core.pod_template(spec.get("template"))


def stateful_set(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "podManagementPolicy", "OrderedReady")
    us = _dict(spec, "updateStrategy")
    if not us.get("type"):
        us["type"] = "RollingUpdate"
        us.setdefault("rollingUpdate", {})
    if us["type"] == "RollingUpdate" and isinstance(us.get("rollingUpdate"), dict):
        if us["rollingUpdate"].get("partition") is None:
            us["rollingUpdate"]["partition"] = 0
    # StatefulSetAutoDeletePVC is GA in 1.32.
    policy = _dict(spec, "persistentVolumeClaimRetentionPolicy")
    _setdefault(policy, "whenDeleted", "Retain")
    _setdefault(policy, "whenScaled", "Retain")
    _replicas(spec)
    _revision_history(spec)
    core.pod_template(spec.get("template"))
    for pvc in _dicts(spec.get("volumeClaimTemplates")):
        # Each claim template is defaulted as a whole PVC, status included (SetObjectDefaults_StatefulSet).
        core.persistent_volume_claim(pvc)
        _dict(pvc, "metadata").setdefault("creationTimestamp", None)


def daemon_set(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    us = _dict(spec, "updateStrategy")
    _setdefault(us, "type", "RollingUpdate")
    if us["type"] == "RollingUpdate":
        ru = _dict(us, "rollingUpdate")
        if ru.get("maxUnavailable") is None:
            ru["maxUnavailable"] = 1
        if ru.get("maxSurge") is None:
            ru["maxSurge"] = 0
    _revision_history(spec)
    core.pod_template(spec.get("template"))


def _job_spec(spec: dict[str, Any]) -> None:
    if spec.get("completions") is None and spec.get("parallelism") is None:
        spec["completions"] = 1
        spec["parallelism"] = 1
    if spec.get("parallelism") is None:
        spec["parallelism"] = 1
    if spec.get("backoffLimit") is None:
        spec["backoffLimit"] = 2147483647 if spec.get("backoffLimitPerIndex") is not None else 6
    _setdefault(spec, "completionMode", "NonIndexed")
    if spec.get("suspend") is None:
        spec["suspend"] = False
    pfp = spec.get("podFailurePolicy")
    if isinstance(pfp, dict):
        for rule in _dicts(pfp.get("rules")):
            for pattern in _dicts(rule.get("onPodConditions")):
                _setdefault(pattern, "status", "True")
    if spec.get("podReplacementPolicy") is None:
        spec["podReplacementPolicy"] = "Failed" if isinstance(pfp, dict) else "TerminatingOrFailed"


def job(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    _job_spec(spec)
    tmpl = spec.get("template")
    labels = tmpl.get("metadata", {}).get("labels") if isinstance(tmpl, dict) else None
    meta = _dict(obj, "metadata")
    if isinstance(labels, dict) and labels and not meta.get("labels"):
        meta["labels"] = dict(labels)
    core.pod_template(tmpl)


def job_prepare_create(obj: dict[str, Any], uid: str) -> None:
    """The Job registry strategy on create: generate the controller-uid selector and pod labels.

    Call after apply_defaults with the uid the apiserver assigned; validation then checks them.
    Also copies the (now labelled) template labels to metadata.labels when empty, which is what the
    client sees because Kubernetes re-runs defaulting when it reads the object back from storage.
    """
    spec = _dict(obj, "spec")
    meta = _dict(obj, "metadata")
    name = meta.get("name") or ""
    if spec.get("manualSelector") is not True:
        tmpl = _dict(spec, "template")
        tmeta = _dict(tmpl, "metadata")
        labels = _dict(tmeta, "labels")
        for key, value in (("batch.kubernetes.io/controller-uid", uid), ("batch.kubernetes.io/job-name", name),
                           ("controller-uid", uid), ("job-name", name)):
            labels.setdefault(key, value)
        sel = _dict(spec, "selector")
        ml = _dict(sel, "matchLabels")
        ml.setdefault("batch.kubernetes.io/controller-uid", uid)
    tlabels = (spec.get("template") or {}).get("metadata", {}).get("labels")
    if isinstance(tlabels, dict) and tlabels and not meta.get("labels"):
        meta["labels"] = dict(tlabels)


def cron_job(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "concurrencyPolicy", "Allow")
    if spec.get("suspend") is None:
        spec["suspend"] = False
    if spec.get("successfulJobsHistoryLimit") is None:
        spec["successfulJobsHistoryLimit"] = 3
    if spec.get("failedJobsHistoryLimit") is None:
        spec["failedJobsHistoryLimit"] = 1
    # Only the pod template inside jobTemplate is defaulted, not the Job spec fields around it.
    jt = _dict(spec, "jobTemplate")
    _dict(jt, "metadata").setdefault("creationTimestamp", None)
    core.pod_template(_dict(_dict(jt, "spec"), "template"))


def _scale_up_default() -> dict[str, Any]:
    return {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
            "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                         {"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _scale_down_default() -> dict[str, Any]:
    return {"stabilizationWindowSeconds": 300, "selectPolicy": "Max",
            "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}]}


def _scaling_rules(rules: Any, default: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(rules, dict):
        return default
    if not rules.get("policies"):
        rules["policies"] = default["policies"]
    if rules.get("selectPolicy") is None:
        rules["selectPolicy"] = "Max"
    if rules.get("stabilizationWindowSeconds") is None:
        rules["stabilizationWindowSeconds"] = default["stabilizationWindowSeconds"]
    return rules


def hpa_v2(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1
    if not spec.get("metrics"):
        spec["metrics"] = [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]
    behavior = spec.get("behavior")
    if isinstance(behavior, dict):
        behavior["scaleUp"] = _scaling_rules(behavior.get("scaleUp"), _scale_up_default())
        behavior["scaleDown"] = _scaling_rules(behavior.get("scaleDown"), _scale_down_default())
    for m in _dicts(spec.get("metrics")):
        for key in ("object", "pods", "resource", "containerResource", "external"):
            src = m.get(key)
            if isinstance(src, dict) and isinstance(src.get("target"), dict):
                for qkey in ("value", "averageValue"):
                    if src["target"].get(qkey) is not None:
                        try:
                            src["target"][qkey] = quantity.canonical(src["target"][qkey])
                        except quantity.QuantityError:
                            pass


def hpa_v1(obj: dict[str, Any]) -> None:
    # The 80% CPU default for v1 is applied during conversion, where the metrics annotation is visible.
    spec = _dict(obj, "spec")
    if spec.get("minReplicas") is None:
        spec["minReplicas"] = 1


def network_policy(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    for direction in ("ingress", "egress"):
        for rule in _dicts(spec.get(direction)):
            for port in _dicts(rule.get("ports")):
                _setdefault(port, "protocol", "TCP")
    if not spec.get("policyTypes"):
        spec["policyTypes"] = ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def ingress_class(obj: dict[str, Any]) -> None:
    params = _dict(obj, "spec").get("parameters")
    if isinstance(params, dict) and params.get("scope") is None:
        params["scope"] = "Cluster"


def ingress(obj: dict[str, Any]) -> None:
    # Go always prints the empty load-balancer status struct.
    _dict(_dict(obj, "status"), "loadBalancer")


def _role_ref_and_subjects(obj: dict[str, Any]) -> None:
    rr = obj.get("roleRef")
    if isinstance(rr, dict):
        _setdefault(rr, "apiGroup", "rbac.authorization.k8s.io")
    for s in _dicts(obj.get("subjects")):
        if not s.get("apiGroup") and s.get("kind") in ("User", "Group"):
            s["apiGroup"] = "rbac.authorization.k8s.io"


def priority_class(obj: dict[str, Any]) -> None:
    _setdefault(obj, "preemptionPolicy", "PreemptLowerPriority")


def storage_class(obj: dict[str, Any]) -> None:
    _setdefault(obj, "reclaimPolicy", "Delete")
    _setdefault(obj, "volumeBindingMode", "Immediate")


def csi_driver(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    for key, value in (("attachRequired", True), ("podInfoOnMount", False), ("storageCapacity", False),
                       ("requiresRepublish", False), ("seLinuxMount", False)):
        if spec.get(key) is None:
            spec[key] = value
    _setdefault(spec, "fsGroupPolicy", "ReadWriteOnceWithFSType")
    if not spec.get("volumeLifecycleModes"):
        spec["volumeLifecycleModes"] = ["Persistent"]


def events_v1_event(obj: dict[str, Any]) -> None:
    # events.k8s.io/v1 prints the zero eventTime as null and the deprecated source struct as {}.
    obj.setdefault("eventTime", None)


def endpoint_slice(obj: dict[str, Any]) -> None:
    for p in _dicts(obj.get("ports")):
        _setdefault(p, "protocol", "TCP")
        if p.get("name") is None:
            p["name"] = ""


_BY_GROUP_KIND: dict[tuple[str, str], Defaulter] = {
    **{("", k): f for k, f in core.CORE.items()},
    ("apps", "Deployment"): deployment,
    ("apps", "ReplicaSet"): replica_set,
    ("apps", "StatefulSet"): stateful_set,
    ("apps", "DaemonSet"): daemon_set,
    ("batch", "Job"): job,
    ("batch", "CronJob"): cron_job,
    ("networking.k8s.io", "NetworkPolicy"): network_policy,
    ("networking.k8s.io", "IngressClass"): ingress_class,
    ("networking.k8s.io", "Ingress"): ingress,
    ("rbac.authorization.k8s.io", "RoleBinding"): _role_ref_and_subjects,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): _role_ref_and_subjects,
    ("scheduling.k8s.io", "PriorityClass"): priority_class,
    ("storage.k8s.io", "StorageClass"): storage_class,
    ("storage.k8s.io", "CSIDriver"): csi_driver,
    ("events.k8s.io", "Event"): events_v1_event,
    ("discovery.k8s.io", "EndpointSlice"): endpoint_slice,
    ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"):
        lambda o: webhookconfig.apply_defaults(o, mutating=True),
    ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"):
        lambda o: webhookconfig.apply_defaults(o, mutating=False),
}


def apply_defaults(obj: dict[str, Any], group: str, version: str, kind: str) -> None:
    """Fill in Kubernetes' defaults in place; unknown kinds and CRDs are left untouched."""
    if not isinstance(obj, dict):
        return
    if group == "autoscaling" and kind == "HorizontalPodAutoscaler":
        (hpa_v1 if version == "v1" else hpa_v2)(obj)
        return
    fn = _BY_GROUP_KIND.get((group, kind))
    if fn is not None:
        fn(obj)
