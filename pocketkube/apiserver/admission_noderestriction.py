"""The NodeRestriction admission plugin: a kubelet may write only its own Node, Lease, bound pods and their tokens."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from pocketkube.api import bootstrappolicy, errors
from pocketkube.apiserver import context

MIRROR_POD_ANNOTATION = "kubernetes.io/config.mirror"
NODE_LEASE_NAMESPACE = "kube-node-lease"
_RESTRICTION_NAMESPACE = "node-restriction.kubernetes.io"

# kubeletapis.IsKubeletLabel: the kubernetes.io / k8s.io labels a kubelet may set on its own Node.
_KUBELET_LABELS = frozenset({
    "kubernetes.io/hostname", "topology.kubernetes.io/zone", "topology.kubernetes.io/region",
    "failure-domain.beta.kubernetes.io/zone", "failure-domain.beta.kubernetes.io/region",
    "beta.kubernetes.io/instance-type", "node.kubernetes.io/instance-type", "kubernetes.io/os", "kubernetes.io/arch",
    "beta.kubernetes.io/os", "beta.kubernetes.io/arch",
})
_KUBELET_LABEL_NAMESPACES = ("kubelet.kubernetes.io", "node.kubernetes.io")


def node_identity(user: context.User) -> tuple[str, bool]:
    """(node name, is a node) as kube's default NodeIdentifier: system:node:<name> in group system:nodes."""
    if not user.name.startswith(bootstrappolicy.NODE_PREFIX) or bootstrappolicy.NODES_GROUP not in user.groups:
        return "", False
    return user.name[len(bootstrappolicy.NODE_PREFIX):], True


def _in_namespace(namespace: str, domain: str) -> bool:
    return namespace == domain or namespace.endswith("." + domain)


def _label_namespace(key: str) -> str:
    prefix, sep, _ = key.partition("/")
    return prefix if sep else ""


def is_kubelet_label(key: str) -> bool:
    ns = _label_namespace(key)
    return key in _KUBELET_LABELS or any(_in_namespace(ns, allowed) for allowed in _KUBELET_LABEL_NAMESPACES)


def forbidden_labels(new: Mapping[str, str] | None, old: Mapping[str, str] | None) -> list[str]:
    """The added, removed or changed label keys a node may not touch, sorted as Go's sets.String.List()."""
    new, old = new or {}, old or {}
    modified = {k for k in {*new, *old} if k not in new or k not in old or new[k] != old[k]}
    out = set()
    for key in modified:
        ns = _label_namespace(key)
        if _in_namespace(ns, _RESTRICTION_NAMESPACE):
            out.add(key)
        if (_in_namespace(ns, "kubernetes.io") or _in_namespace(ns, "k8s.io")) and not is_kubelet_label(key):
            out.add(key)
    return sorted(out)


def _forbidden(call: context.Call, obj: Mapping[str, Any] | None, why: str) -> errors.Forbidden:
    """admission.NewForbidden: the resource (never the subresource) and the request's name, else the object's
    name or generateName, else "Unknown"."""
    name = call.info.name or str(_meta(obj).get("name") or _meta(obj).get("generateName") or "Unknown")
    res = call.res
    qualified = errors.qualified(res.resource, res.group)
    details: dict[str, Any] = {"name": name}
    if res.group:
        details["group"] = res.group
    details["kind"] = res.resource
    return errors.Forbidden(f'{qualified} "{name}" is forbidden: {why}', details=details)


def _pod_not_found(name: str) -> errors.NotFound:
    # The plugin reads pods from an informer's lister, whose NotFound names the singular resource.
    return errors.NotFound(f'pod "{name}" not found', details={"name": name, "kind": "pod"})


def _meta(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    meta = (obj or {}).get("metadata")
    return meta if isinstance(meta, dict) else {}


def _spec(obj: Mapping[str, Any] | None) -> Mapping[str, Any]:
    spec = (obj or {}).get("spec")
    return spec if isinstance(spec, dict) else {}


def _dicts(value: Any) -> Iterator[Mapping[str, Any]]:
    if isinstance(value, list):
        yield from (v for v in value if isinstance(v, dict))


def _containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from _dicts(spec.get(key))


def references(pod: Mapping[str, Any], kind: str) -> bool:
    """Whether the pod names any Secret (kind "secret") or ConfigMap ("configMap"), as podutil.VisitPod*Names."""
    spec = _spec(pod)
    ref_key, env_key = ("secretKeyRef", "secretRef") if kind == "secret" else ("configMapKeyRef", "configMapRef")
    if kind == "secret" and any(_dicts(spec.get("imagePullSecrets"))):
        return True
    for c in _containers(spec):
        if any(isinstance(e.get(env_key), dict) for e in _dicts(c.get("envFrom"))):
            return True
        if any(isinstance((e.get("valueFrom") or {}).get(ref_key), dict) for e in _dicts(c.get("env"))):
            return True
    for vol in _dicts(spec.get("volumes")):
        if isinstance(vol.get(kind), dict):
            return True
        for src in _dicts((vol.get("projected") or {}).get("sources")):
            if isinstance(src.get(kind), dict):
                return True
        if kind == "secret" and any(isinstance(v, dict) and any(k.endswith("ecretRef") for k in v)
                                    for v in vol.values()):
            return True  # csi, cephfs, rbd, flexVolume, azureFile, iscsi, scaleIO, storageos secret references
    return False


async def _pod(server: context.Server, call: context.Call, name: str) -> Mapping[str, Any]:
    pod = await server.objects.get_or_none(call.res if call.res.resource == "pods" else
                                           server.registry.get("", "v1", "pods"), call.info.namespace, name)
    if pod is None:
        raise _pod_not_found(name)
    return pod


async def admit(server: context.Server, call: context.Call, obj: dict[str, Any] | None,
                old: dict[str, Any] | None, operation: str) -> None:
    """Limit what a kubelet (system:node:<name>) may write; everyone else passes untouched."""
    node, is_node = node_identity(call.user)
    if not is_node:
        return
    name = call.info.name or str(_meta(obj).get("name") or "")
    if not node:
        raise _forbidden(call, obj, f'could not determine node from user "{call.user.name}"')
    group, resource, sub = call.res.group, call.res.resource, call.info.subresource
    if (group, resource) == ("", "pods"):
        if sub == "":
            await _admit_pod(server, call, node, name=name, obj=obj, operation=operation)
        elif sub == "status":
            _admit_pod_status(call, node, name=name, obj=obj, old=old, operation=operation)
        elif sub == "eviction":
            await _admit_eviction(server, call, node, name=name, obj=obj, operation=operation)
        else:
            raise _forbidden(call, obj, f'unexpected pod subresource "{sub}", only \'status\' and \'eviction\' are allowed')
    elif (group, resource) == ("", "nodes"):
        _admit_node(call, node, name=name, obj=obj, old=old, operation=operation)
    elif (group, resource) == ("", "persistentvolumeclaims"):
        if sub != "status":
            raise _forbidden(call, obj, "may only update PVC status")
        _admit_pvc_status(call, node, name=name, obj=obj, old=old, operation=operation)
    elif (group, resource) == ("", "serviceaccounts"):
        if operation == "CREATE" and sub == "token":
            await _admit_token(server, call, node, name=name, obj=obj)
    elif (group, resource) == ("coordination.k8s.io", "leases"):
        _admit_lease(call, node, name=name, obj=obj)
    elif (group, resource) == ("storage.k8s.io", "csinodes"):
        if name != node:
            raise _forbidden(call, obj, "can only access CSINode with the same name as the requesting node")


async def _admit_pod(server: context.Server, call: context.Call, node: str, *, name: str,
                     obj: dict[str, Any] | None, operation: str) -> None:
    if operation == "DELETE":
        existing = await _pod(server, call, name)
        if _spec(existing).get("nodeName") != node:
            raise _forbidden(call, obj, f'node "{node}" can only delete pods with spec.nodeName set to itself')
        return
    if operation != "CREATE":
        raise _forbidden(call, obj, f'unexpected operation "{operation}", node "{node}" can only create and delete '
                                     "mirror pods")
    pod = obj or {}
    annotations = _meta(pod).get("annotations")
    if not isinstance(annotations, dict) or MIRROR_POD_ANNOTATION not in annotations:
        raise _forbidden(call, obj, f'pod does not have "{MIRROR_POD_ANNOTATION}" annotation, node "{node}" can only '
                                     "create mirror pods")
    if _spec(pod).get("nodeName") != node:
        raise _forbidden(call, obj, f'node "{node}" can only create pods with spec.nodeName set to itself')
    owners = list(_dicts(_meta(pod).get("ownerReferences")))
    if len(owners) > 1:
        raise _forbidden(call, obj, f'node "{node}" can only create pods with a single owner reference set to itself')
    if not owners:
        raise _forbidden(call, obj, f'node "{node}" can only create pods with an owner reference set to itself')
    owner = owners[0]
    if owner.get("apiVersion") != "v1" or owner.get("kind") != "Node" or owner.get("name") != node:
        raise _forbidden(call, obj, f'node "{node}" can only create pods with an owner reference set to itself')
    if owner.get("controller") is not True:
        raise _forbidden(call, obj, f'node "{node}" can only create pods with a controller owner reference set to '
                                     "itself")
    if owner.get("blockOwnerDeletion") is True:
        raise _forbidden(call, obj, f'node "{node}" must not set blockOwnerDeletion on an owner reference')
    node_obj = await server.objects.get_or_none(server.registry.get("", "v1", "nodes"), "", node)
    if node_obj is None:
        raise errors.NotFound(f'node "{node}" not found', details={"name": node, "kind": "node"})
    uid = str(_meta(node_obj).get("uid") or "")
    if owner.get("uid") != uid:
        raise _forbidden(call, obj, f"node {node} UID mismatch: expected {owner.get('uid') or ''} got {uid}")
    spec = _spec(pod)
    if spec.get("serviceAccountName"):
        raise _forbidden(call, obj, f'node "{node}" can not create pods that reference a service account')
    if references(pod, "secret"):
        raise _forbidden(call, obj, f'node "{node}" can not create pods that reference secrets')
    if references(pod, "configMap"):
        raise _forbidden(call, obj, f'node "{node}" can not create pods that reference configmaps')
    for vol in _dicts(spec.get("volumes")):
        if any(isinstance(src.get("clusterTrustBundle"), dict)
               for src in _dicts((vol.get("projected") or {}).get("sources"))):
            raise _forbidden(call, obj, f'node "{node}" can not create pods that reference clustertrustbundles')
    if any(isinstance(vol.get("persistentVolumeClaim"), dict) for vol in _dicts(spec.get("volumes"))):
        raise _forbidden(call, obj, f'node "{node}" can not create pods that reference persistentvolumeclaims')


def _admit_pod_status(call: context.Call, node: str, *, name: str, obj: dict[str, Any] | None,
                      old: dict[str, Any] | None, operation: str) -> None:
    if operation != "UPDATE":
        raise _forbidden(call, obj, f'unexpected operation "{operation}"')
    if _spec(old).get("nodeName") != node:
        raise _forbidden(call, obj, f'node "{node}" can only update pod status for pods with spec.nodeName set to '
                                     "itself")
    if (_meta(obj).get("labels") or {}) != (_meta(old).get("labels") or {}):
        raise _forbidden(call, obj, f'node "{node}" cannot update labels through pod status')
    claims = [(c.get("name"), c.get("resourceClaimName"))
              for c in _dicts(((obj or {}).get("status") or {}).get("resourceClaimStatuses"))]
    old_claims = [(c.get("name"), c.get("resourceClaimName"))
                  for c in _dicts(((old or {}).get("status") or {}).get("resourceClaimStatuses"))]
    if claims != old_claims:
        raise _forbidden(call, obj, f'node "{node}" cannot update resource claim statues')


async def _admit_eviction(server: context.Server, call: context.Call, node: str, *, name: str,
                          obj: dict[str, Any] | None, operation: str) -> None:
    # Eviction deletes the pod from inside the eviction request: that DELETE is judged like the CREATE.
    if operation not in ("CREATE", "DELETE"):
        raise _forbidden(call, obj, f"unexpected operation {operation}")
    if not name:
        raise _forbidden(call, obj, "could not determine pod from request data")
    existing = await _pod(server, call, name)
    if _spec(existing).get("nodeName") != node:
        raise _forbidden(call, obj, f"node {node} can only evict pods with spec.nodeName set to itself")


def _pvc_comparable(pvc: Mapping[str, Any] | None) -> dict[str, Any]:
    out = dict(pvc or {})
    meta = dict(_meta(pvc))
    meta.pop("resourceVersion", None)
    meta.pop("managedFields", None)
    out["metadata"] = meta
    status = dict(out.get("status") or {})
    for key in ("capacity", "conditions", "allocatedResourceStatuses", "allocatedResources"):
        status.pop(key, None)
    out["status"] = status
    return out


def _admit_pvc_status(call: context.Call, node: str, *, name: str, obj: dict[str, Any] | None,
                      old: dict[str, Any] | None, operation: str) -> None:
    if operation != "UPDATE":
        raise _forbidden(call, obj, f'unexpected operation "{operation}"')
    if _pvc_comparable(obj) != _pvc_comparable(old):
        # kube appends a go-cmp diff of the two objects; its exact text is not reproducible.
        raise _forbidden(call, obj, f'node "{node}" is not allowed to update fields other than status.quantity and '
                                     "status.conditions")


def _admit_node(call: context.Call, node: str, *, name: str, obj: dict[str, Any] | None,
                old: dict[str, Any] | None, operation: str) -> None:
    if name != node:
        raise _forbidden(call, obj, f'node "{node}" is not allowed to modify node "{name}"')
    spec, labels = _spec(obj), _meta(obj).get("labels")
    if operation == "CREATE":
        if spec.get("configSource") is not None:
            raise _forbidden(call, obj, f'node "{node}" is not allowed to create pods with a non-nil configSource')
        bad = forbidden_labels(labels, None)
        if bad:
            raise _forbidden(call, obj, f'node "{node}" is not allowed to set the following labels: {", ".join(bad)}')
    elif operation == "UPDATE":
        old_spec = _spec(old)
        if spec.get("configSource") is not None and spec.get("configSource") != old_spec.get("configSource"):
            raise _forbidden(call, obj, f'node "{node}" is not allowed to update configSource to a new non-nil '
                                         "configSource")
        # Semantic.DeepEqual: a missing and an empty taint list are the same.
        if (spec.get("taints") or []) != (old_spec.get("taints") or []):
            raise _forbidden(call, obj, f'node "{node}" is not allowed to modify taints')
        bad = forbidden_labels(labels, _meta(old).get("labels"))
        if bad:
            raise _forbidden(call, obj, f'is not allowed to modify labels: {", ".join(bad)}')


async def _admit_token(server: context.Server, call: context.Call, node: str, *, name: str,
                       obj: dict[str, Any] | None) -> None:
    ref = _spec(obj).get("boundObjectRef")
    if not isinstance(ref, dict) or ref.get("apiVersion") != "v1" or ref.get("kind") != "Pod" or not ref.get("name"):
        raise _forbidden(call, obj, "node requested token not bound to a pod")
    if not ref.get("uid"):
        raise _forbidden(call, obj, "node requested token with a pod binding without a uid")
    pod = await _pod(server, call, str(ref["name"]))
    if ref["uid"] != _meta(pod).get("uid"):
        raise _forbidden(call, obj, f"the UID in the bound object reference ({ref['uid']}) does not match the UID in "
                                     "record. The object might have been deleted and then recreated")
    if _spec(pod).get("nodeName") != node:
        raise _forbidden(call, obj, "node requested token bound to a pod scheduled on a different node")


def _admit_lease(call: context.Call, node: str, *, name: str, obj: dict[str, Any] | None) -> None:
    if call.info.namespace != NODE_LEASE_NAMESPACE:
        raise _forbidden(call, obj, f'can only access leases in the "{NODE_LEASE_NAMESPACE}" system namespace')
    if name != node:
        raise _forbidden(call, obj, "can only access node lease with the same name as the requesting node")
