"""The default RBAC policy of a v1.32 cluster: bootstrap ClusterRoles, ClusterRoleBindings, kube-system Roles."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

GROUP = "rbac.authorization.k8s.io"
API_VERSION = f"{GROUP}/v1"
LABELS = {"kubernetes.io/bootstrapping": "rbac-defaults"}
AUTOUPDATE = "rbac.authorization.kubernetes.io/autoupdate"
AGGREGATE_TO = "rbac.authorization.k8s.io/aggregate-to-"

CONTROLLER_MANAGER = "system:kube-controller-manager"
SCHEDULER = "system:kube-scheduler"
NODES_GROUP = "system:nodes"
NODE_PREFIX = "system:node:"
MASTERS = "system:masters"
CONTROLLER_PREFIX = "system:controller:"
RESOURCES = {"ClusterRole": "clusterroles", "ClusterRoleBinding": "clusterrolebindings", "Role": "roles",
             "RoleBinding": "rolebindings"}

# pocketkube runs every controller in one process under one identity (system:kube-controller-manager),
# like kube-controller-manager without --use-service-account-credentials. Rather than handing that
# identity a broad role, the system:controller:<name> ClusterRoleBinding of each controller we run
# gets it as a second subject, next to the controller's kube-system ServiceAccount. The controller
# manager so holds exactly the union of its controllers' default roles, and a controller added to
# controllers/manager.py adds its role name here.
CONTROLLER_MANAGER_ROLES = (
    "certificate-controller", "clusterrole-aggregation-controller", "cronjob-controller", "daemon-set-controller", "deployment-controller",
    "disruption-controller", "endpoint-controller", "endpointslice-controller", "endpointslicemirroring-controller",
    "generic-garbage-collector", "horizontal-pod-autoscaler", "job-controller", "namespace-controller",
    "node-controller", "persistent-volume-binder", "pod-garbage-collector", "pv-protection-controller",
    "pvc-protection-controller", "replicaset-controller", "replication-controller", "resourcequota-controller",
    "root-ca-cert-publisher", "service-account-controller", "service-controller", "statefulset-controller",
    "ttl-after-finished-controller",
)

Rule = dict[str, Any]
_EVENT_GROUPS = ["", "events.k8s.io"]
_READ = "get list watch"
_WRITE = "create delete deletecollection patch update"
_RW = "create delete deletecollection get list patch update watch"


def _rule(verbs: str, groups: Iterable[str], resources: str, names: str = "") -> Rule:
    """A resource rule with kube's field order and sorted lists (as rbacv1helpers builds them)."""
    rule: Rule = {"verbs": sorted(verbs.split()), "apiGroups": sorted(set(groups)), "resources": sorted(resources.split())}
    if names:
        rule["resourceNames"] = sorted(names.split())
    return rule


def _urls(verbs: str, urls: str) -> Rule:
    return {"verbs": sorted(verbs.split()), "nonResourceURLs": sorted(urls.split())}


def _events() -> Rule:
    return _rule("create patch update", _EVENT_GROUPS, "events")


def _meta(name: str, *, namespace: str = "", labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = {**LABELS, **(labels or {})}
    meta["annotations"] = {AUTOUPDATE: "true"}
    return meta


def _cluster_role(name: str, rules: list[Rule] | None, *, labels: dict[str, str] | None = None,
                  aggregate_from: str = "") -> dict[str, Any]:
    role: dict[str, Any] = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": _meta(name, labels=labels)}
    if aggregate_from:
        role["aggregationRule"] = {"clusterRoleSelectors": [{"matchLabels": {AGGREGATE_TO + aggregate_from: "true"}}]}
    role["rules"] = rules
    return role


def _subject(kind: str, name: str, namespace: str = "") -> dict[str, Any]:
    if kind == "ServiceAccount":
        return {"kind": kind, "name": name, "namespace": namespace}
    return {"kind": kind, "apiGroup": GROUP, "name": name}


def _binding(kind: str, name: str, role: str, subjects: list[dict[str, Any]], *, namespace: str = "") -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": API_VERSION, "kind": kind, "metadata": _meta(name, namespace=namespace),
                           "roleRef": {"apiGroup": GROUP, "kind": "Role" if kind == "RoleBinding" else "ClusterRole",
                                       "name": role}}
    if subjects:
        obj["subjects"] = subjects
    return obj


def _aggregate_to_view() -> list[Rule]:
    return [
        _rule(_READ, [""], "configmaps endpoints persistentvolumeclaims persistentvolumeclaims/status pods "
                           "replicationcontrollers replicationcontrollers/scale serviceaccounts services services/status"),
        _rule(_READ, [""], "bindings events limitranges namespaces/status pods/log pods/status "
                           "replicationcontrollers/status resourcequotas resourcequotas/status"),
        _rule(_READ, [""], "namespaces"),
        _rule(_READ, ["discovery.k8s.io"], "endpointslices"),
        _rule(_READ, ["apps"], "controllerrevisions daemonsets daemonsets/status deployments deployments/scale "
                               "deployments/status replicasets replicasets/scale replicasets/status statefulsets "
                               "statefulsets/scale statefulsets/status"),
        _rule(_READ, ["autoscaling"], "horizontalpodautoscalers horizontalpodautoscalers/status"),
        _rule(_READ, ["batch"], "cronjobs cronjobs/status jobs jobs/status"),
        _rule(_READ, ["extensions"], "daemonsets daemonsets/status deployments deployments/scale deployments/status "
                                     "ingresses ingresses/status networkpolicies replicasets replicasets/scale "
                                     "replicasets/status replicationcontrollers/scale"),
        _rule(_READ, ["policy"], "poddisruptionbudgets poddisruptionbudgets/status"),
        _rule(_READ, ["networking.k8s.io"], "ingresses ingresses/status networkpolicies"),
    ]


def _aggregate_to_edit() -> list[Rule]:
    return [
        _rule(_READ, [""], "pods/attach pods/exec pods/portforward pods/proxy secrets services/proxy"),
        _rule("impersonate", [""], "serviceaccounts"),
        _rule(_WRITE, [""], "pods pods/attach pods/exec pods/portforward pods/proxy"),
        _rule("create", [""], "pods/eviction"),
        _rule(_WRITE, [""], "configmaps events persistentvolumeclaims replicationcontrollers "
                            "replicationcontrollers/scale secrets serviceaccounts services services/proxy"),
        _rule("create", [""], "serviceaccounts/token"),
        _rule(_WRITE, ["apps"], "daemonsets deployments deployments/rollback deployments/scale replicasets "
                                "replicasets/scale statefulsets statefulsets/scale"),
        _rule(_WRITE, ["autoscaling"], "horizontalpodautoscalers"),
        _rule(_WRITE, ["batch"], "cronjobs jobs"),
        _rule(_WRITE, ["extensions"], "daemonsets deployments deployments/rollback deployments/scale ingresses "
                                      "networkpolicies replicasets replicasets/scale replicationcontrollers/scale"),
        _rule(_WRITE, ["policy"], "poddisruptionbudgets"),
        _rule(_WRITE, ["networking.k8s.io"], "ingresses networkpolicies"),
        _rule(_RW, ["coordination.k8s.io"], "leases"),
    ]


def node_rules() -> list[Rule]:
    """What the Node authorizer lets a kubelet (system:node:NAME in system:nodes) do; also the system:node role."""
    return [
        _rule("create", ["authentication.k8s.io"], "tokenreviews"),
        _rule("create", ["authorization.k8s.io"], "localsubjectaccessreviews subjectaccessreviews"),
        _rule(_READ, [""], "services"),
        _rule("create get list watch", [""], "nodes"),
        _rule("patch update", [""], "nodes/status"),
        _rule("patch update", [""], "nodes"),
        _rule("create patch update", [""], "events"),
        _rule(_READ, [""], "pods"),
        _rule("create delete", [""], "pods"),
        _rule("patch update", [""], "pods/status"),
        _rule("create", [""], "pods/eviction"),
        _rule(_READ, [""], "configmaps secrets"),
        _rule("get", [""], "persistentvolumeclaims persistentvolumes"),
        _rule("get", [""], "endpoints"),
        _rule("create get list watch", ["certificates.k8s.io"], "certificatesigningrequests"),
        _rule("create delete get patch update", ["coordination.k8s.io"], "leases"),
        _rule("get", ["storage.k8s.io"], "volumeattachments"),
        _rule("create", [""], "serviceaccounts/token"),
        _rule("get patch update", [""], "persistentvolumeclaims/status"),
        _rule(_READ, ["storage.k8s.io"], "csidrivers"),
        _rule("create delete get patch update", ["storage.k8s.io"], "csinodes"),
        _rule(_READ, ["node.k8s.io"], "runtimeclasses"),
    ]


def _leader_lock(component: str) -> list[Rule]:
    return [_rule("create", ["coordination.k8s.io"], "leases"),
            _rule("get update", ["coordination.k8s.io"], "leases", component)]


def _approver(signer: str) -> list[Rule]:
    return [_rule("approve", ["certificates.k8s.io"], "signers", f"kubernetes.io/{signer}")]


def _system_roles() -> dict[str, list[Rule]]:
    reviews = [_rule("create", ["authentication.k8s.io"], "tokenreviews"),
               _rule("create", ["authorization.k8s.io"], "subjectaccessreviews")]
    return {
        "system:auth-delegator": reviews,
        "system:basic-user": [_rule("create", ["authorization.k8s.io"], "selfsubjectaccessreviews selfsubjectrulesreviews"),
                              _rule("create", ["authentication.k8s.io"], "selfsubjectreviews")],
        "system:certificates.k8s.io:certificatesigningrequests:nodeclient": [
            _rule("create", ["certificates.k8s.io"], "certificatesigningrequests/nodeclient")],
        "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient": [
            _rule("create", ["certificates.k8s.io"], "certificatesigningrequests/selfnodeclient")],
        "system:certificates.k8s.io:kube-apiserver-client-approver": _approver("kube-apiserver-client"),
        "system:certificates.k8s.io:kube-apiserver-client-kubelet-approver": _approver("kube-apiserver-client-kubelet"),
        "system:certificates.k8s.io:kubelet-serving-approver": _approver("kubelet-serving"),
        "system:certificates.k8s.io:legacy-unknown-approver": _approver("legacy-unknown"),
        "system:discovery": [_urls("get", "/api /api/* /apis /apis/* /healthz /livez /openapi /openapi/* /readyz "
                                          "/version /version/")],
        "system:heapster": [_rule(_READ, [""], "events namespaces nodes pods"),
                            _rule(_READ, ["extensions"], "deployments")],
        "system:kube-aggregator": [_rule(_READ, [""], "endpoints services")],
        "system:kube-controller-manager": [
            _events(), *_leader_lock("kube-controller-manager"),
            _rule("create", [""], "secrets serviceaccounts"),
            _rule("delete", [""], "secrets"),
            _rule("get", [""], "configmaps namespaces secrets serviceaccounts"),
            _rule("update", [""], "secrets serviceaccounts"),
            *reviews,
            _rule("list watch", ["*"], "*"),
            _rule("create", [""], "serviceaccounts/token"),
        ],
        "system:kube-dns": [_rule("list watch", [""], "endpoints services")],
        "system:kube-scheduler": [
            _events(), *_leader_lock("kube-scheduler"),
            _rule(_READ, [""], "nodes"),
            _rule("delete get list watch", [""], "pods"),
            _rule("create", [""], "bindings pods/binding"),
            _rule("patch update", [""], "pods/status"),
            _rule(_READ, [""], "replicationcontrollers services"),
            _rule(_READ, ["apps", "extensions"], "replicasets"),
            _rule(_READ, ["apps"], "statefulsets"),
            _rule(_READ, ["policy"], "poddisruptionbudgets"),
            _rule(_READ, [""], "persistentvolumeclaims persistentvolumes"),
            *reviews,
            _rule(_READ, ["storage.k8s.io"], "csinodes"),
            _rule(_READ, [""], "namespaces"),
            _rule(_READ, ["storage.k8s.io"], "csidrivers"),
            _rule(_READ, ["storage.k8s.io"], "csistoragecapacities"),
        ],
        "system:kubelet-api-admin": [_rule(_READ, [""], "nodes"), _rule("proxy", [""], "nodes"),
                                     _rule("*", [""], "nodes/log nodes/metrics nodes/proxy nodes/stats")],
        "system:monitoring": [_urls("get", "/healthz /healthz/* /livez /livez/* /metrics /metrics/slis /readyz /readyz/*")],
        "system:node": node_rules(),
        "system:node-bootstrapper": [_rule("create get list watch", ["certificates.k8s.io"], "certificatesigningrequests")],
        "system:node-problem-detector": [_rule("get", [""], "nodes"), _rule("patch", [""], "nodes/status"), _events()],
        "system:node-proxier": [_rule("list watch", [""], "endpoints services"), _rule(_READ, [""], "nodes"), _events(),
                                _rule("list watch", ["discovery.k8s.io"], "endpointslices")],
        "system:persistent-volume-provisioner": [
            _rule("create delete get list watch", [""], "persistentvolumes"),
            _rule("get list update watch", [""], "persistentvolumeclaims"),
            _rule(_READ, ["storage.k8s.io"], "storageclasses"),
            _rule("watch", [""], "events"), _events()],
        "system:public-info-viewer": [_urls("get", "/healthz /livez /readyz /version /version/")],
        "system:service-account-issuer-discovery": [_urls("get", "/.well-known/openid-configuration /openid/v1/jwks")],
        "system:volume-scheduler": [_rule("get list patch update watch", [""], "persistentvolumes"),
                                    _rule(_READ, ["storage.k8s.io"], "storageclasses"),
                                    _rule("get list patch update watch", [""], "persistentvolumeclaims")],
    }


def _controller_roles() -> dict[str, list[Rule]]:
    """system:controller:<name> roles of kube-controller-manager's controllers in v1.32 (feature gates at default)."""
    apps_ext = ["apps", "extensions"]
    return {
        "attachdetach-controller": [
            _rule("list watch", [""], "persistentvolumeclaims persistentvolumes"), _rule(_READ, [""], "nodes"),
            _rule("patch update", [""], "nodes/status"), _rule("list watch", [""], "pods"), _events(),
            _rule("create delete get list watch", ["storage.k8s.io"], "volumeattachments"),
            _rule(_READ, ["storage.k8s.io"], "csidrivers"), _rule(_READ, ["storage.k8s.io"], "csinodes")],
        "certificate-controller": [
            _rule("delete get list watch", ["certificates.k8s.io"], "certificatesigningrequests"),
            _rule("update", ["certificates.k8s.io"], "certificatesigningrequests/approval certificatesigningrequests/status"),
            _rule("approve", ["certificates.k8s.io"], "signers", "kubernetes.io/kube-apiserver-client-kubelet"),
            _rule("sign", ["certificates.k8s.io"], "signers", "kubernetes.io/kube-apiserver-client "
                  "kubernetes.io/kube-apiserver-client-kubelet kubernetes.io/kubelet-serving kubernetes.io/legacy-unknown"),
            _rule("create", ["authorization.k8s.io"], "subjectaccessreviews"), _events()],
        "clusterrole-aggregation-controller": [
            _rule("escalate get list patch update watch", [GROUP], "clusterroles")],
        "cronjob-controller": [
            _rule("get list update watch", ["batch"], "cronjobs"),
            _rule("create delete get list patch update watch", ["batch"], "jobs"),
            _rule("update", ["batch"], "cronjobs/status"), _rule("update", ["batch"], "cronjobs/finalizers"),
            _rule("delete list watch", [""], "pods"), _events()],
        "daemon-set-controller": [
            _rule(_READ, apps_ext, "daemonsets"), _rule("update", apps_ext, "daemonsets/status"),
            _rule("update", apps_ext, "daemonsets/finalizers"), _rule("list watch", [""], "nodes"),
            _rule("create delete list patch watch", [""], "pods"), _rule("create", [""], "pods/binding"),
            _rule("create delete get list patch update watch", ["apps"], "controllerrevisions"), _events()],
        "deployment-controller": [
            _rule("get list update watch", apps_ext, "deployments"), _rule("update", apps_ext, "deployments/status"),
            _rule("update", apps_ext, "deployments/finalizers"),
            _rule("create delete get list patch update watch", apps_ext, "replicasets"),
            _rule("get list update watch", [""], "pods"), _events()],
        "disruption-controller": [
            _rule(_READ, apps_ext, "deployments"), _rule(_READ, apps_ext, "replicasets"),
            _rule(_READ, [""], "replicationcontrollers"), _rule(_READ, ["policy"], "poddisruptionbudgets"),
            _rule(_READ, ["apps"], "statefulsets"), _rule("update", ["policy"], "poddisruptionbudgets/status"),
            _rule("patch update", [""], "pods/status"), _rule("get", ["*"], "*/scale"), _events()],
        "endpoint-controller": [
            _rule(_READ, [""], "pods services"), _rule("create delete get list update watch", [""], "endpoints"),
            _rule("create", [""], "endpoints/restricted"), _events()],
        "endpointslice-controller": [
            _rule(_READ, [""], "nodes pods services"), _rule("update", [""], "services/finalizers"),
            _rule("create delete get list update watch", ["discovery.k8s.io"], "endpointslices"), _events()],
        "endpointslicemirroring-controller": [
            _rule(_READ, [""], "endpoints services"), _rule("update", [""], "services/finalizers"),
            _rule("update", [""], "endpoints/finalizers"),
            _rule("create delete get list update watch", ["discovery.k8s.io"], "endpointslices"), _events()],
        "ephemeral-volume-controller": [
            _rule(_READ, [""], "pods"), _rule("update", [""], "pods/finalizers"),
            _rule("create get list watch", [""], "persistentvolumeclaims"), _events()],
        "expand-controller": [
            _rule("get list patch update watch", [""], "persistentvolumes"),
            _rule("patch update", [""], "persistentvolumeclaims/status"),
            _rule(_READ, [""], "persistentvolumeclaims"), _events()],
        "generic-garbage-collector": [_rule("delete get list patch update watch", ["*"], "*"), _events()],
        "horizontal-pod-autoscaler": [
            _rule(_READ, ["autoscaling"], "horizontalpodautoscalers"),
            _rule("update", ["autoscaling"], "horizontalpodautoscalers/status"),
            _rule("get update", ["*"], "*/scale"), _rule("list watch", [""], "pods"),
            _rule("list watch", ["metrics.k8s.io"], "pods"), _rule(_READ, ["custom.metrics.k8s.io"], "*"),
            _rule(_READ, ["external.metrics.k8s.io"], "*"), _events()],
        "job-controller": [
            _rule("get list patch update watch", ["batch"], "jobs"), _rule("update", ["batch"], "jobs/status"),
            _rule("update", ["batch"], "jobs/finalizers"), _rule("create delete list patch watch", [""], "pods"),
            _events()],
        "legacy-service-account-token-cleaner": [
            _rule("get", [""], "configmaps", "kube-apiserver-legacy-service-account-token-tracking"),
            _rule("delete patch", [""], "secrets")],
        "namespace-controller": [
            _rule("delete get list watch", [""], "namespaces"),
            _rule("update", [""], "namespaces/finalize namespaces/status"),
            _rule("delete deletecollection get list watch", ["*"], "*")],
        "node-controller": [
            _rule("delete get list patch update watch", [""], "nodes"), _rule("patch update", [""], "nodes/status"),
            _rule("patch update", [""], "pods/status"), _rule("delete get list watch", [""], "pods"), _events()],
        "persistent-volume-binder": [
            _rule("create delete get list update watch", [""], "persistentvolumes"),
            _rule("update", [""], "persistentvolumes/status"),
            _rule("get list update watch", [""], "persistentvolumeclaims"),
            _rule("update", [""], "persistentvolumeclaims/status"),
            _rule("create delete get list watch", [""], "pods"), _rule(_READ, ["storage.k8s.io"], "storageclasses"),
            _rule("list watch", [""], "nodes"), _events(), _rule("watch", [""], "events")],
        "pod-garbage-collector": [
            _rule("delete list watch", [""], "pods"), _rule(_READ, [""], "nodes"), _rule("patch", [""], "pods/status")],
        "pv-protection-controller": [_rule("get list update watch", [""], "persistentvolumes"), _events()],
        "pvc-protection-controller": [
            _rule("get list update watch", [""], "persistentvolumeclaims"),
            _rule("update", [""], "persistentvolumeclaims/status"), _rule(_READ, [""], "pods"), _events()],
        "replicaset-controller": [
            _rule("get list update watch", apps_ext, "replicasets"), _rule("update", apps_ext, "replicasets/status"),
            _rule("update", apps_ext, "replicasets/finalizers"),
            _rule("create delete list patch watch", [""], "pods"), _events()],
        "replication-controller": [
            _rule("get list update watch", [""], "replicationcontrollers"),
            _rule("update", [""], "replicationcontrollers/status"),
            _rule("update", [""], "replicationcontrollers/finalizers"),
            _rule("create delete list patch watch", [""], "pods"), _events()],
        "resourcequota-controller": [
            _rule("list watch", ["*"], "*"), _rule("update", [""], "resourcequotas/status"), _events()],
        "root-ca-cert-publisher": [_rule("create update", [""], "configmaps"), _events()],
        "route-controller": [_rule("list watch", [""], "nodes"), _rule("patch", [""], "nodes/status"), _events()],
        "service-account-controller": [_rule("create", [""], "serviceaccounts"), _events()],
        "service-controller": [
            _rule(_READ, [""], "services"), _rule("patch update", [""], "services/status"),
            _rule("list watch", [""], "nodes"), _events()],
        "statefulset-controller": [
            _rule("list watch", [""], "pods"), _rule(_READ, ["apps"], "statefulsets"),
            _rule("update", ["apps"], "statefulsets/status"), _rule("update", ["apps"], "statefulsets/finalizers"),
            _rule("create delete get patch update", [""], "pods"),
            _rule("create delete get list patch update watch", ["apps"], "controllerrevisions"),
            _rule("create get list watch", [""], "persistentvolumeclaims"),
            _rule("delete update", [""], "persistentvolumeclaims"), _rule("update", [""], "pods/finalizers"),
            _events()],
        "ttl-after-finished-controller": [_rule("delete get list watch", ["batch"], "jobs"), _events()],
        "ttl-controller": [_rule("list patch update watch", [""], "nodes"), _events()],
        "validatingadmissionpolicy-status-controller": [
            _rule(_READ, ["admissionregistration.k8s.io"], "validatingadmissionpolicies"),
            _rule("get patch update", ["admissionregistration.k8s.io"], "validatingadmissionpolicies/status"),
            _events()],
    }


def cluster_roles() -> list[dict[str, Any]]:
    """Every default ClusterRole, sorted by name as `kubectl get clusterroles` lists them."""
    roles = [
        _cluster_role("cluster-admin", [_rule("*", ["*"], "*"), _urls("*", "*")]),
        _cluster_role("admin", None, aggregate_from="admin"),
        _cluster_role("edit", None, aggregate_from="edit", labels={AGGREGATE_TO + "admin": "true"}),
        _cluster_role("view", None, aggregate_from="view", labels={AGGREGATE_TO + "edit": "true"}),
        _cluster_role("system:aggregate-to-admin", [
            _rule("create", ["authorization.k8s.io"], "localsubjectaccessreviews"),
            _rule(_RW, [GROUP], "rolebindings roles")], labels={AGGREGATE_TO + "admin": "true"}),
        _cluster_role("system:aggregate-to-edit", _aggregate_to_edit(), labels={AGGREGATE_TO + "edit": "true"}),
        _cluster_role("system:aggregate-to-view", _aggregate_to_view(), labels={AGGREGATE_TO + "view": "true"}),
    ]
    roles += [_cluster_role(name, rules) for name, rules in _system_roles().items()]
    roles += [_cluster_role(CONTROLLER_PREFIX + name, rules) for name, rules in _controller_roles().items()]
    return sorted(roles, key=lambda r: r["metadata"]["name"])


def cluster_role_bindings() -> list[dict[str, Any]]:
    """Every default ClusterRoleBinding, controller bindings included (see CONTROLLER_MANAGER_ROLES)."""
    authenticated = _subject("Group", "system:authenticated")
    crb = "ClusterRoleBinding"
    bindings = [
        _binding(crb, "cluster-admin", "cluster-admin", [_subject("Group", MASTERS)]),
        _binding(crb, "system:basic-user", "system:basic-user", [authenticated]),
        _binding(crb, "system:discovery", "system:discovery", [authenticated]),
        _binding(crb, "system:kube-controller-manager", "system:kube-controller-manager",
                 [_subject("User", CONTROLLER_MANAGER)]),
        _binding(crb, "system:kube-dns", "system:kube-dns", [_subject("ServiceAccount", "kube-dns", "kube-system")]),
        _binding(crb, "system:kube-scheduler", "system:kube-scheduler", [_subject("User", SCHEDULER)]),
        _binding(crb, "system:monitoring", "system:monitoring", [_subject("Group", "system:monitoring")]),
        # Bound to nobody, as in Kubernetes: kubelets are authorized by the Node authorizer.
        _binding(crb, "system:node", "system:node", []),
        _binding(crb, "system:node-proxier", "system:node-proxier", [_subject("User", "system:kube-proxy")]),
        _binding(crb, "system:public-info-viewer", "system:public-info-viewer",
                 [authenticated, _subject("Group", "system:unauthenticated")]),
        _binding(crb, "system:service-account-issuer-discovery", "system:service-account-issuer-discovery",
                 [_subject("Group", "system:serviceaccounts")]),
        _binding(crb, "system:volume-scheduler", "system:volume-scheduler", [_subject("User", SCHEDULER)]),
    ]
    for name in _controller_roles():
        subjects = [_subject("ServiceAccount", name, "kube-system")]
        if name in CONTROLLER_MANAGER_ROLES:
            subjects.append(_subject("User", CONTROLLER_MANAGER))
        bindings.append(_binding(crb, CONTROLLER_PREFIX + name, CONTROLLER_PREFIX + name, subjects))
    return sorted(bindings, key=lambda b: b["metadata"]["name"])


def namespace_roles() -> list[dict[str, Any]]:
    """The Roles Kubernetes creates in kube-system and kube-public."""
    def role(ns: str, name: str, rules: list[Rule]) -> dict[str, Any]:
        return {"apiVersion": API_VERSION, "kind": "Role", "metadata": _meta(name, namespace=ns), "rules": rules}

    lock = [_rule("create get list update watch", ["coordination.k8s.io"], "leases")]
    return [
        role("kube-public", CONTROLLER_PREFIX + "bootstrap-signer", [
            _rule(_READ, [""], "configmaps"), _rule("update", [""], "configmaps", "cluster-info"), _events()]),
        role("kube-system", "extension-apiserver-authentication-reader", [
            _rule(_READ, [""], "configmaps", "extension-apiserver-authentication")]),
        role("kube-system", "system::leader-locking-kube-controller-manager", lock),
        role("kube-system", "system::leader-locking-kube-scheduler", lock),
        role("kube-system", CONTROLLER_PREFIX + "bootstrap-signer", [_rule(_READ, [""], "secrets")]),
        role("kube-system", CONTROLLER_PREFIX + "cloud-provider", [_rule("create get list watch", [""], "configmaps")]),
        role("kube-system", CONTROLLER_PREFIX + "token-cleaner", [
            _rule("delete get list watch", [""], "secrets"), _events()]),
    ]


def namespace_role_bindings() -> list[dict[str, Any]]:
    """The RoleBindings Kubernetes creates in kube-system and kube-public."""
    rb = "RoleBinding"

    def sa(name: str) -> dict[str, Any]:
        return _subject("ServiceAccount", name, "kube-system")

    return [
        _binding(rb, CONTROLLER_PREFIX + "bootstrap-signer", CONTROLLER_PREFIX + "bootstrap-signer",
                 [sa("bootstrap-signer")], namespace="kube-public"),
        _binding(rb, "system::extension-apiserver-authentication-reader", "extension-apiserver-authentication-reader",
                 [_subject("User", CONTROLLER_MANAGER), _subject("User", SCHEDULER)], namespace="kube-system"),
        _binding(rb, "system::leader-locking-kube-controller-manager", "system::leader-locking-kube-controller-manager",
                 [_subject("User", CONTROLLER_MANAGER), sa("kube-controller-manager"), sa("leader-election-controller")],
                 namespace="kube-system"),
        _binding(rb, "system::leader-locking-kube-scheduler", "system::leader-locking-kube-scheduler",
                 [_subject("User", SCHEDULER), sa("kube-scheduler")], namespace="kube-system"),
        _binding(rb, CONTROLLER_PREFIX + "bootstrap-signer", CONTROLLER_PREFIX + "bootstrap-signer",
                 [sa("bootstrap-signer")], namespace="kube-system"),
        _binding(rb, CONTROLLER_PREFIX + "cloud-provider", CONTROLLER_PREFIX + "cloud-provider",
                 [sa("cloud-provider")], namespace="kube-system"),
        _binding(rb, CONTROLLER_PREFIX + "token-cleaner", CONTROLLER_PREFIX + "token-cleaner",
                 [sa("token-cleaner")], namespace="kube-system"),
    ]


LOCAL_PATH_PROVISIONER = "system:local-path-provisioner"


def addon_objects() -> list[dict[str, Any]]:
    """RBAC of the add-ons pocketkube ships, as kind ships them (no bootstrapping label).

    kind's local-path-provisioner runs as a ServiceAccount; ours runs beside the node agents with a
    client certificate, so the same role is bound to its user instead.
    """
    role = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": {"name": "local-path-provisioner-role"},
            "rules": [_rule(_READ, [""], "configmaps nodes persistentvolumeclaims pods pods/log"),
                      _rule("create delete get list patch update watch", [""], "persistentvolumes"),
                      _rule("create patch", [""], "events"),
                      _rule(_READ, ["storage.k8s.io"], "storageclasses")]}
    binding = {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding", "metadata": {"name": "local-path-provisioner-bind"},
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "local-path-provisioner-role"},
               "subjects": [_subject("User", LOCAL_PATH_PROVISIONER)]}
    return [role, binding, *_ingress_controller(), *_coredns(), *_network_policy(), *_hostports()]


INGRESS_CONTROLLER = "system:pocketkube-ingress"


def _ingress_controller() -> list[dict[str, Any]]:
    """The built-in ingress controller's role, as ingress-nginx's chart grants it (plus creating its IngressClass)."""
    role = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": {"name": "pocketkube-ingress"},
            "rules": [_rule("list watch", [""], "configmaps endpoints nodes pods secrets namespaces"),
                      _rule("get", [""], "nodes"),
                      _rule(_READ, [""], "services secrets"),
                      _rule(_READ, ["networking.k8s.io"], "ingresses"),
                      _rule("update", ["networking.k8s.io"], "ingresses/status"),
                      _rule("create get list watch", ["networking.k8s.io"], "ingressclasses"),
                      _rule("list watch get", ["discovery.k8s.io"], "endpointslices"),
                      _rule("create patch", ["", "events.k8s.io"], "events")]}
    binding = {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding", "metadata": {"name": "pocketkube-ingress"},
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "pocketkube-ingress"},
               "subjects": [_subject("User", INGRESS_CONTROLLER)]}
    return [role, binding]


def _coredns() -> list[dict[str, Any]]:
    """kubeadm's CoreDNS RBAC; the cluster DNS server presents the coredns ServiceAccount in its certificate."""
    role = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
            "rules": [_rule("list watch", [""], "endpoints services pods namespaces"),
                      _rule("list watch", ["discovery.k8s.io"], "endpointslices")]}
    binding = {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding", "metadata": {"name": "system:coredns"},
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "system:coredns"},
               "subjects": [_subject("ServiceAccount", "coredns", "kube-system")]}
    return [role, binding]


NETWORK_POLICY = "system:pocketkube-network-policy"


def _network_policy() -> list[dict[str, Any]]:
    """The NetworkPolicy enforcer's role, as network plugins grant their node agents (calico-node, cilium)."""
    role = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": {"name": "pocketkube-network-policy"},
            "rules": [_rule("get list watch", [""], "namespaces nodes pods"),
                      _rule("patch", [""], "nodes"),
                      _rule("get list watch", ["networking.k8s.io"], "networkpolicies")]}
    binding = {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding",
               "metadata": {"name": "pocketkube-network-policy"},
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "pocketkube-network-policy"},
               "subjects": [_subject("User", NETWORK_POLICY)]}
    return [role, binding]


HOSTPORTS = "system:pocketkube-hostports"


def _hostports() -> list[dict[str, Any]]:
    """The hostPort forwarder's role: it reads pods and nodes, and warns a pod whose hostPort another one holds."""
    role = {"apiVersion": API_VERSION, "kind": "ClusterRole", "metadata": {"name": "pocketkube-hostports"},
            "rules": [_rule("get list watch", [""], "nodes pods"),
                      _rule("create patch", ["", "events.k8s.io"], "events")]}
    binding = {"apiVersion": API_VERSION, "kind": "ClusterRoleBinding", "metadata": {"name": "pocketkube-hostports"},
               "roleRef": {"apiGroup": GROUP, "kind": "ClusterRole", "name": "pocketkube-hostports"},
               "subjects": [_subject("User", HOSTPORTS)]}
    return [role, binding]


def all_objects() -> list[dict[str, Any]]:
    """Everything to create at bootstrap, roles before the bindings that reference them."""
    return cluster_roles() + namespace_roles() + cluster_role_bindings() + namespace_role_bindings() + addon_objects()
