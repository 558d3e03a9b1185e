"""The type registry: every served resource with its group, version, kind, scope, verbs and names."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import re
import threading
from collections.abc import Iterable
from typing import Any

# Verb sets as Kubernetes reports them in discovery.
CRUD = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
CRUD_NO_COLLECTION = ("create", "delete", "get", "list", "patch", "update", "watch")
CREATE = ("create",)
GET_PATCH_UPDATE = ("get", "patch", "update")
PROXY_VERBS = ("create", "delete", "get", "patch", "update")

# kube-apiserver's CRD registration gives every CRD group/version these APIService priorities.
CRD_GROUP_PRIORITY = 1000
CRD_VERSION_PRIORITY = 100


@dataclasses.dataclass(frozen=True)
class Subresource:
    """A subresource such as `status`, `scale` or `log`, with the kind it takes and returns."""

    name: str
    kind: str
    verbs: tuple[str, ...]
    group: str = ""      # of the kind, when it differs from the parent's (scale: autoscaling/v1)
    version: str = ""


@dataclasses.dataclass(frozen=True)
class Resource:
    """One resource at one group/version, as discovery describes it."""

    group: str
    version: str
    resource: str               # plural, lower case: "deployments"
    kind: str
    namespaced: bool
    singular: str = ""
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = CRUD
    subresources: tuple[Subresource, ...] = ()
    # The resource whose storage this version shares, e.g. events.k8s.io/v1 events are stored
    # as core/v1 events; (group, resource, version) of the storage representation.
    storage_group: str | None = None
    storage_resource: str | None = None
    storage_version: str | None = None
    crd: bool = False
    # APIService priorities that order groups and versions in discovery; 0 means "CRD default"
    # (1000/100, as kube-apiserver's CRD registration uses) for CRDs.
    group_priority: int = 0
    version_priority: int = 0
    # False for virtual resources that never persist objects (reviews, bindings,
    # componentstatuses): discovery then reports no storageVersionHash.
    stored: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    @property
    def storage_key(self) -> tuple[str, str]:
        """(group, resource) naming where objects of this resource live in the store."""
        return (self.storage_group if self.storage_group is not None else self.group,
                self.storage_resource or self.resource)

    @property
    def singular_name(self) -> str:
        return self.singular or self.kind.lower()

    @property
    def scope(self) -> str:
        """"Namespaced" or "Cluster", as aggregated discovery spells it."""
        return "Namespaced" if self.namespaced else "Cluster"

    @property
    def qualified_name(self) -> str:
        """`deployments.apps`; core resources stay bare."""
        return f"{self.resource}.{self.group}" if self.group else self.resource

    @property
    def storage_version_hash(self) -> str:
        """The discovery storageVersionHash: base64 of the first 8 bytes of sha256("group/version/kind")
        of the storage representation; empty for resources that store nothing."""
        if not self.stored:
            return ""
        group = self.storage_group if self.storage_group is not None else self.group
        gvk = f"{group}/{self.storage_version or self.version}/{self.kind}"
        return base64.b64encode(hashlib.sha256(gvk.encode()).digest()[:8]).decode()

    @property
    def priorities(self) -> tuple[int, int]:
        """(group priority, version priority) used to order discovery."""
        if self.crd and not (self.group_priority or self.version_priority):
            return (CRD_GROUP_PRIORITY, CRD_VERSION_PRIORITY)
        return (self.group_priority, self.version_priority)

    def subresource(self, name: str) -> Subresource | None:
        for s in self.subresources:
            if s.name == name:
                return s
        return None

    def names(self) -> tuple[str, ...]:
        """Every lower-case name a client may use for this resource: plural, singular, short names, kind."""
        return (self.resource, self.singular_name, *self.short_names, self.kind.lower())


# --- Built-in resources of a stock kube-apiserver 1.32 -------------------------------------------

# APIService priorities kube-apiserver gives each built-in group/version: (group, version priority).
PRIORITIES: dict[tuple[str, str], tuple[int, int]] = {
    ("", "v1"): (18000, 1),
    ("apiregistration.k8s.io", "v1"): (18000, 15),
    ("apps", "v1"): (17800, 15),
    ("events.k8s.io", "v1"): (17750, 15),
    ("authentication.k8s.io", "v1"): (17700, 15),
    ("authorization.k8s.io", "v1"): (17600, 15),
    ("autoscaling", "v2"): (17500, 30),
    ("autoscaling", "v1"): (17500, 15),
    ("batch", "v1"): (17400, 15),
    ("certificates.k8s.io", "v1"): (17300, 15),
    ("networking.k8s.io", "v1"): (17200, 15),
    ("policy", "v1"): (17100, 15),
    ("rbac.authorization.k8s.io", "v1"): (17000, 15),
    ("storage.k8s.io", "v1"): (16800, 15),
    ("admissionregistration.k8s.io", "v1"): (16700, 15),
    ("apiextensions.k8s.io", "v1"): (16700, 15),
    ("scheduling.k8s.io", "v1"): (16600, 15),
    ("coordination.k8s.io", "v1"): (16500, 15),
    ("node.k8s.io", "v1"): (16300, 15),
    ("discovery.k8s.io", "v1"): (16200, 15),
    ("flowcontrol.apiserver.k8s.io", "v1"): (16100, 21),
}

NS, CLUSTER = True, False


def _sub(name: str, parent_kind: str) -> Subresource:
    # The kind each well-known subresource takes and returns, as discovery reports it.
    if name == "status" or name == "approval" or name == "ephemeralcontainers":
        return Subresource(name, parent_kind, GET_PATCH_UPDATE)
    if name == "scale":
        return Subresource(name, "Scale", GET_PATCH_UPDATE, "autoscaling", "v1")
    if name == "finalize":
        return Subresource(name, parent_kind, ("update",))
    if name == "log":
        return Subresource(name, parent_kind, ("get",))
    if name in ("attach", "exec", "portforward"):
        kind = {"attach": "PodAttachOptions", "exec": "PodExecOptions",
                "portforward": "PodPortForwardOptions"}[name]
        return Subresource(name, kind, ("create", "get"))
    if name == "proxy":
        return Subresource(name, parent_kind + "ProxyOptions", PROXY_VERBS)
    if name == "binding":
        return Subresource(name, "Binding", CREATE)
    if name == "eviction":
        return Subresource(name, "Eviction", CREATE, "policy", "v1")
    if name == "token":
        return Subresource(name, "TokenRequest", CREATE, "authentication.k8s.io", "v1")
    raise ValueError(f"unknown built-in subresource {name!r}")


def _r(group: str, version: str, resource: str, kind: str, namespaced: bool, *, singular: str = "",
       short: str = "", cat: str = "", verbs: tuple[str, ...] = CRUD, subs: str = "", stored: bool = True,
       storage: tuple[str, str, str] | None = None) -> Resource:
    gp, vp = PRIORITIES[(group, version)]
    return Resource(
        group, version, resource, kind, namespaced, singular=singular or kind.lower(),
        short_names=tuple(short.split()), categories=tuple(cat.split()), verbs=verbs,
        subresources=tuple(_sub(s, kind) for s in subs.split()),
        storage_group=storage[0] if storage else None, storage_resource=storage[1] if storage else None,
        storage_version=storage[2] if storage else None,
        group_priority=gp, version_priority=vp, stored=stored)


# One line per resource, in the order the real server's discovery lists them.
BUILTIN: tuple[Resource, ...] = (
    _r("", "v1", "bindings", "Binding", NS, verbs=CREATE, stored=False),
    _r("", "v1", "componentstatuses", "ComponentStatus", CLUSTER, short="cs", verbs=("get", "list"), stored=False),
    _r("", "v1", "configmaps", "ConfigMap", NS, short="cm"),
    _r("", "v1", "endpoints", "Endpoints", NS, short="ep"),
    _r("", "v1", "events", "Event", NS, short="ev"),
    _r("", "v1", "limitranges", "LimitRange", NS, short="limits"),
    _r("", "v1", "namespaces", "Namespace", CLUSTER, short="ns", verbs=CRUD_NO_COLLECTION, subs="finalize status"),
    _r("", "v1", "nodes", "Node", CLUSTER, short="no", subs="proxy status"),
    _r("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", NS, short="pvc", subs="status"),
    _r("", "v1", "persistentvolumes", "PersistentVolume", CLUSTER, short="pv", subs="status"),
    _r("", "v1", "pods", "Pod", NS, short="po", cat="all", subs="attach binding ephemeralcontainers eviction exec log portforward proxy status"),
    _r("", "v1", "podtemplates", "PodTemplate", NS),
    _r("", "v1", "replicationcontrollers", "ReplicationController", NS, short="rc", cat="all", subs="scale status"),
    _r("", "v1", "resourcequotas", "ResourceQuota", NS, short="quota", subs="status"),
    _r("", "v1", "secrets", "Secret", NS),
    _r("", "v1", "serviceaccounts", "ServiceAccount", NS, short="sa", subs="token"),
    _r("", "v1", "services", "Service", NS, short="svc", cat="all", subs="proxy status"),
    _r("apiregistration.k8s.io", "v1", "apiservices", "APIService", CLUSTER, cat="api-extensions", subs="status"),
    _r("apps", "v1", "controllerrevisions", "ControllerRevision", NS),
    _r("apps", "v1", "daemonsets", "DaemonSet", NS, short="ds", cat="all", subs="status"),
    _r("apps", "v1", "deployments", "Deployment", NS, short="deploy", cat="all", subs="scale status"),
    _r("apps", "v1", "replicasets", "ReplicaSet", NS, short="rs", cat="all", subs="scale status"),
    _r("apps", "v1", "statefulsets", "StatefulSet", NS, short="sts", cat="all", subs="scale status"),
    _r("events.k8s.io", "v1", "events", "Event", NS, short="ev", storage=("", "events", "v1")),
    _r("authentication.k8s.io", "v1", "selfsubjectreviews", "SelfSubjectReview", CLUSTER, verbs=CREATE, stored=False),
    _r("authentication.k8s.io", "v1", "tokenreviews", "TokenReview", CLUSTER, verbs=CREATE, stored=False),
    _r("authorization.k8s.io", "v1", "localsubjectaccessreviews", "LocalSubjectAccessReview", NS, verbs=CREATE, stored=False),
    _r("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", CLUSTER, verbs=CREATE, stored=False),
    _r("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", CLUSTER, verbs=CREATE, stored=False),
    _r("authorization.k8s.io", "v1", "subjectaccessreviews", "SubjectAccessReview", CLUSTER, verbs=CREATE, stored=False),
    _r("autoscaling", "v2", "horizontalpodautoscalers", "HorizontalPodAutoscaler", NS, short="hpa", cat="all", subs="status", storage=("autoscaling", "horizontalpodautoscalers", "v2")),
    _r("autoscaling", "v1", "horizontalpodautoscalers", "HorizontalPodAutoscaler", NS, short="hpa", cat="all", subs="status", storage=("autoscaling", "horizontalpodautoscalers", "v2")),
    _r("batch", "v1", "cronjobs", "CronJob", NS, short="cj", cat="all", subs="status"),
    _r("batch", "v1", "jobs", "Job", NS, cat="all", subs="status"),
    _r("certificates.k8s.io", "v1", "certificatesigningrequests", "CertificateSigningRequest", CLUSTER, short="csr", subs="approval status"),
    _r("networking.k8s.io", "v1", "ingressclasses", "IngressClass", CLUSTER),
    _r("networking.k8s.io", "v1", "ingresses", "Ingress", NS, short="ing", subs="status"),
    _r("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", NS, short="netpol"),
    _r("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", NS, short="pdb", subs="status"),
    _r("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", CLUSTER),
    _r("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", CLUSTER),
    _r("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", NS),
    _r("rbac.authorization.k8s.io", "v1", "roles", "Role", NS),
    _r("storage.k8s.io", "v1", "csidrivers", "CSIDriver", CLUSTER),
    _r("storage.k8s.io", "v1", "csinodes", "CSINode", CLUSTER),
    _r("storage.k8s.io", "v1", "csistoragecapacities", "CSIStorageCapacity", NS),
    _r("storage.k8s.io", "v1", "storageclasses", "StorageClass", CLUSTER, short="sc"),
    _r("storage.k8s.io", "v1", "volumeattachments", "VolumeAttachment", CLUSTER, subs="status"),
    _r("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", "MutatingWebhookConfiguration", CLUSTER, cat="api-extensions"),
    _r("admissionregistration.k8s.io", "v1", "validatingadmissionpolicies", "ValidatingAdmissionPolicy", CLUSTER, cat="api-extensions", subs="status"),
    _r("admissionregistration.k8s.io", "v1", "validatingadmissionpolicybindings", "ValidatingAdmissionPolicyBinding", CLUSTER, cat="api-extensions"),
    _r("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", "ValidatingWebhookConfiguration", CLUSTER, cat="api-extensions"),
    _r("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", CLUSTER, short="crd crds", cat="api-extensions", subs="status"),
    _r("scheduling.k8s.io", "v1", "priorityclasses", "PriorityClass", CLUSTER, short="pc"),
    _r("coordination.k8s.io", "v1", "leases", "Lease", NS),
    _r("node.k8s.io", "v1", "runtimeclasses", "RuntimeClass", CLUSTER),
    _r("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", NS),
    _r("flowcontrol.apiserver.k8s.io", "v1", "flowschemas", "FlowSchema", CLUSTER, subs="status"),
    _r("flowcontrol.apiserver.k8s.io", "v1", "prioritylevelconfigurations", "PriorityLevelConfiguration", CLUSTER, subs="status"),
)


# --- Version ordering ------------------------------------------------------------------------------

_KUBE_VERSION = re.compile(r"^v([1-9][0-9]*)(?:(alpha|beta)([1-9][0-9]*))?$")
_STABILITY = {None: 0, "beta": 1, "alpha": 2}


def version_sort_key(version: str) -> tuple[int, int, int, int, str]:
    """Sort key for Kubernetes version priority: GA before beta before alpha, higher numbers first,
    then non-Kubernetes-like versions alphabetically (v2 < v1 < v1beta2 < v1beta1 < v1alpha1 < foo)."""
    m = _KUBE_VERSION.match(version)
    if not m:
        return (1, 0, 0, 0, version)
    return (0, _STABILITY[m.group(2)], -int(m.group(1)), -int(m.group(3) or 0), "")


# --- Registry --------------------------------------------------------------------------------------

class Registry:
    """Every served resource keyed by group/version/resource, with discovery ordering and name lookup.

    Mutations hold a lock and bump `generation`, so the HTTP layer can cache discovery documents by
    generation; readers get snapshots (lists), never live views.
    """

    def __init__(self, resources: Iterable[Resource] = ()) -> None:
        self._lock = threading.RLock()
        self._by_gv: dict[tuple[str, str], dict[str, Resource]] = {}
        self._order: list[tuple[str, list[str]]] | None = None
        self.generation = 0
        for r in resources:
            self.add(r)

    @classmethod
    def builtin(cls) -> Registry:
        """A registry holding exactly the built-in resources of kube-apiserver 1.32."""
        return cls(BUILTIN)

    def add(self, resource: Resource) -> None:
        """Add or replace the resource at its group/version."""
        with self._lock:
            self._by_gv.setdefault((resource.group, resource.version), {})[resource.resource] = resource
            self._order = None
            self.generation += 1

    def remove(self, group: str, version: str, resource: str) -> Resource | None:
        """Remove a resource; returns it, or None when it was not there."""
        with self._lock:
            gv = self._by_gv.get((group, version))
            if gv is None or resource not in gv:
                return None
            removed = gv.pop(resource)
            if not gv:
                del self._by_gv[(group, version)]
            self._order = None
            self.generation += 1
            return removed

    def get(self, group: str, version: str, resource: str) -> Resource | None:
        return self._by_gv.get((group, version), {}).get(resource)

    def by_kind(self, group: str, version: str, kind: str) -> Resource | None:
        """The top-level resource serving `kind` at group/version (subresource kinds are not resources)."""
        for r in self._by_gv.get((group, version), {}).values():
            if r.kind == kind:
                return r
        return None

    def resources(self, group: str, version: str) -> list[Resource]:
        """Resources of one group/version sorted by name, as discovery lists them."""
        return sorted(self._by_gv.get((group, version), {}).values(), key=lambda r: r.resource)

    def has_version(self, group: str, version: str) -> bool:
        return (group, version) in self._by_gv

    def priorities(self, group: str, version: str = "") -> tuple[int, int]:
        """(group priority, version priority): the highest any resource of the group (or group/version)
        declares; a group's priority is that of its most important APIService, as the aggregator does."""
        gp = vp = 0
        for (g, v), rs in list(self._by_gv.items()):
            if g != group:
                continue
            for r in rs.values():
                p = r.priorities
                gp = max(gp, p[0])
                if v == version:
                    vp = max(vp, p[1])
        return gp, vp

    def groups(self) -> list[tuple[str, list[str]]]:
        """Named groups (core excluded) in discovery order, versions preferred first."""
        with self._lock:
            if self._order is None:
                self._order = self._compute_order()
            return [(g, list(vs)) for g, vs in self._order]

    def _compute_order(self) -> list[tuple[str, list[str]]]:
        versions: dict[str, list[str]] = {}
        for g, v in self._by_gv:
            if g:
                versions.setdefault(g, []).append(v)
        group_prio = {g: self.priorities(g)[0] for g in versions}
        out = []
        for g in sorted(versions, key=lambda g: (-group_prio[g], g)):
            version_prio = {v: self.priorities(g, v)[1] for v in versions[g]}
            out.append((g, sorted(versions[g], key=lambda v: (-version_prio[v], version_sort_key(v)))))
        return out

    def group_versions(self) -> list[tuple[str, str]]:
        """Every (group, version) in discovery order, core v1 first."""
        out = [("", v) for v in sorted((v for g, v in self._by_gv if not g), key=version_sort_key)]
        for g, vs in self.groups():
            out.extend((g, v) for v in vs)
        return out

    def preferred_version(self, group: str) -> str | None:
        """The version clients should use for a group; None when the group is not served."""
        if not group:
            core = [v for g, v in self._by_gv if not g]
            return sorted(core, key=version_sort_key)[0] if core else None
        for g, vs in self.groups():
            if g == group:
                return vs[0]
        return None

    def all(self) -> list[Resource]:
        """Every resource in discovery order: core first, then groups and versions by priority."""
        with self._lock:
            return [r for g, v in self.group_versions() for r in self.resources(g, v)]

    def find(self, name: str) -> list[Resource]:
        """Resources a client's name means: plural, singular, short name or kind (case-insensitive),
        optionally qualified as `NAME.GROUP` or `NAME.VERSION.GROUP`. Ordered like kubectl's choice:
        core first, then groups by priority, preferred version first."""
        name = name.strip().lower()
        if not name:
            return []
        head, _, qualifier = name.partition(".")
        out = []
        for r in self.all():
            if head not in r.names():
                continue
            if qualifier and qualifier not in (r.group.lower(), f"{r.version}.{r.group}".lower()):
                continue
            out.append(r)
        return out


# --- APIService objects ----------------------------------------------------------------------------

AUTOMANAGED_LABEL = "kube-aggregator.kubernetes.io/automanaged"


def apiservice(group: str, version: str, *, group_priority: int, version_priority: int,
               automanaged: str = "onstart", now: str | None = None) -> dict[str, Any]:
    """A local APIService as kube-apiserver's auto-registration writes it ("onstart" for built-in
    groups, "true" for CRD groups), Available because local services always are."""
    spec: dict[str, Any] = {}
    if group:
        spec["group"] = group
    spec["version"] = version
    spec["groupPriorityMinimum"] = group_priority
    spec["versionPriority"] = version_priority
    condition: dict[str, Any] = {"type": "Available", "status": "True"}
    if now is not None:
        condition["lastTransitionTime"] = now
    condition["reason"] = "Local"
    condition["message"] = "Local APIServices are always available"
    return {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": f"{version}.{group}", "labels": {AUTOMANAGED_LABEL: automanaged}},
        "spec": spec,
        "status": {"conditions": [condition]},
    }


def builtin_apiservices(registry: Registry, *, now: str | None = None) -> list[dict[str, Any]]:
    """APIService objects for every built-in group/version (v1., v1.apps, v2.autoscaling, ...)."""
    out = []
    for group, version in registry.group_versions():
        rs = registry.resources(group, version)
        if not rs or any(r.crd for r in rs):
            continue
        gp, vp = registry.priorities(group, version)
        out.append(apiservice(group, version, group_priority=gp, version_priority=vp, now=now))
    return out
