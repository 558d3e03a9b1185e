"""Defaulting of core/v1 objects and of the pod templates every workload embeds (pkg/apis/core/v1/defaults.go)."""

from __future__ import annotations

import base64
import binascii
import functools
import re
from typing import Any

from pocketkube.api import errors, quantity

_VOLUME_SOURCES = (
    "hostPath", "emptyDir", "gcePersistentDisk", "awsElasticBlockStore", "gitRepo", "secret", "nfs", "iscsi",
    "glusterfs", "persistentVolumeClaim", "rbd", "flexVolume", "cinder", "cephfs", "flocker", "downwardAPI", "fc",
    "azureFile", "configMap", "vsphereVolume", "quobyte", "azureDisk", "photonPersistentDisk", "projected",
    "portworxVolume", "scaleIO", "storageos", "csi", "ephemeral", "image",
)
_DEFAULT_MODE = 0o644


def _dict(parent: dict[str, Any], key: str) -> dict[str, Any]:
    """parent[key] as a dict, creating it when missing or null."""
    v = parent.get(key)
    if not isinstance(v, dict):
        v = {}
        parent[key] = v
    return v


def _as_dict(value: Any) -> dict[str, Any]:
    """value if it is a dict, else a fresh empty one (not stored anywhere)."""
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [x for x in value if isinstance(x, dict)] if isinstance(value, list) else []


def _setdefault(d: dict[str, Any], key: str, value: Any) -> None:
    if d.get(key) in (None, ""):
        d[key] = value


@functools.lru_cache(maxsize=1024)
def _canonical_str(text: str) -> str:
    return quantity.canonical(text)


def _canonical(value: Any) -> str:
    """quantity.canonical, remembered for strings: the same few quantities recur in every pod."""
    return _canonical_str(value) if type(value) is str else quantity.canonical(value)


def canonicalize_resource_list(rl: Any) -> None:
    """Rewrite each quantity in canonical form, as the apiserver re-serializes it; bad ones are left for validation."""
    if not isinstance(rl, dict):
        return
    for k, v in list(rl.items()):
        try:
            rl[k] = _canonical(v)
        except quantity.QuantityError:
            pass


def _image_tag(image: str) -> str:
    """The tag the image reference names: "latest" when it names none (ParseImageName); "" when unparsable."""
    if not image or image != image.strip() or re.search(r"[A-Z\s]", image.split("@")[0].rsplit(":", 1)[0]):
        return ""
    ref, digest = (image.split("@", 1) + [""])[:2]
    last = ref.rsplit("/", 1)[-1]
    tag = last.rsplit(":", 1)[1] if ":" in last else ""
    if not tag and not digest:
        return "latest"
    return tag


def _probe(p: Any) -> None:
    if not isinstance(p, dict):
        return
    for key, value in (("timeoutSeconds", 1), ("periodSeconds", 10), ("successThreshold", 1),
                       ("failureThreshold", 3)):
        if not p.get(key):
            p[key] = value
    _handler(p)


def _handler(h: Any) -> None:
    if not isinstance(h, dict):
        return
    http = h.get("httpGet")
    if isinstance(http, dict):
        _setdefault(http, "path", "/")
        _setdefault(http, "scheme", "HTTP")
    grpc = h.get("grpc")
    if isinstance(grpc, dict) and grpc.get("service") is None:
        grpc["service"] = ""


def container(c: dict[str, Any]) -> None:
    """SetDefaults_Container plus its ports, probes, lifecycle handlers and env field refs."""
    if not c.get("imagePullPolicy"):
        c["imagePullPolicy"] = "Always" if _image_tag(str(c.get("image") or "")) == "latest" else "IfNotPresent"
    _setdefault(c, "terminationMessagePath", "/dev/termination-log")
    _setdefault(c, "terminationMessagePolicy", "File")
    for port in _dicts(c.get("ports")):
        _setdefault(port, "protocol", "TCP")
    for key in ("livenessProbe", "readinessProbe", "startupProbe"):
        _probe(c.get(key))
    lifecycle = c.get("lifecycle")
    if isinstance(lifecycle, dict):
        _handler(lifecycle.get("postStart"))
        _handler(lifecycle.get("preStop"))
    for env in _dicts(c.get("env")):
        vf = env.get("valueFrom")
        if isinstance(vf, dict) and isinstance(vf.get("fieldRef"), dict):
            _setdefault(vf["fieldRef"], "apiVersion", "v1")
    # Go serializes the non-pointer ResourceRequirements struct even when empty.
    res = _dict(c, "resources")
    canonicalize_resource_list(res.get("limits"))
    canonicalize_resource_list(res.get("requests"))


def _downward_api(dapi: Any) -> None:
    # A downwardAPI volume and a projected downwardAPI source default their items alike.
    if isinstance(dapi, dict):
        for item in _dicts(dapi.get("items")):
            if isinstance(item.get("fieldRef"), dict):
                _setdefault(item["fieldRef"], "apiVersion", "v1")


def volume(v: dict[str, Any]) -> None:
    if not any(v.get(s) is not None for s in _VOLUME_SOURCES):
        v["emptyDir"] = {}
    for key in ("secret", "configMap", "downwardAPI", "projected"):
        src = v.get(key)
        if isinstance(src, dict) and src.get("defaultMode") is None:
            src["defaultMode"] = _DEFAULT_MODE
    hp = v.get("hostPath")
    if isinstance(hp, dict) and hp.get("type") is None:
        hp["type"] = ""
    _downward_api(v.get("downwardAPI"))
    proj = v.get("projected")
    if isinstance(proj, dict):
        for src in _dicts(proj.get("sources")):
            sat = src.get("serviceAccountToken")
            if isinstance(sat, dict) and not sat.get("expirationSeconds"):
                sat["expirationSeconds"] = 3600
            _downward_api(src.get("downwardAPI"))
    eph = v.get("ephemeral")
    if isinstance(eph, dict) and isinstance(eph.get("volumeClaimTemplate"), dict):
        tmpl = eph["volumeClaimTemplate"]
        pvc_spec(_dict(tmpl, "spec"))
    ed = v.get("emptyDir")
    if isinstance(ed, dict) and ed.get("sizeLimit") is not None:
        try:
            ed["sizeLimit"] = quantity.canonical(ed["sizeLimit"])
        except quantity.QuantityError:
            pass


def pod_spec(spec: dict[str, Any]) -> None:
    """SetDefaults_PodSpec and the per-element defaults beneath it (shared by pods and templates)."""
    _setdefault(spec, "dnsPolicy", "ClusterFirst")
    _setdefault(spec, "restartPolicy", "Always")
    if not isinstance(spec.get("securityContext"), dict):
        spec["securityContext"] = {}
    if spec.get("terminationGracePeriodSeconds") is None:
        spec["terminationGracePeriodSeconds"] = 30
    _setdefault(spec, "schedulerName", "default-scheduler")
    for key in ("containers", "initContainers", "ephemeralContainers"):
        for c in _dicts(spec.get(key)):
            container(c)
    for v in _dicts(spec.get("volumes")):
        volume(v)
    canonicalize_resource_list(spec.get("overhead"))
    for t in _dicts(spec.get("tolerations")):
        if t.get("operator") == "":
            t.pop("operator")


def pod_template(tmpl: Any) -> None:
    """A PodTemplateSpec inside a workload; Go prints the zero creationTimestamp there as null."""
    if not isinstance(tmpl, dict):
        return
    meta = _dict(tmpl, "metadata")
    meta.setdefault("creationTimestamp", None)
    pod_spec(_dict(tmpl, "spec"))


def pod(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    pod_spec(spec)
    # Requests default to limits on Pods only, never on templates (SetDefaults_Pod).
    for key in ("containers", "initContainers"):
        for c in _dicts(spec.get(key)):
            res = _dict(c, "resources")
            limits = res.get("limits")
            if isinstance(limits, dict) and limits:
                req = _dict(res, "requests")
                for k, v in limits.items():
                    req.setdefault(k, v)
    if spec.get("enableServiceLinks") is None:
        spec["enableServiceLinks"] = True
    if spec.get("hostNetwork") is True:
        for c in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
            for p in _dicts(c.get("ports")):
                if not p.get("hostPort") and p.get("containerPort"):
                    p["hostPort"] = p["containerPort"]
    status = _dict(obj, "status")
    _setdefault(status, "phase", "Pending")
    status.setdefault("qosClass", _qos_class(spec))


def _qos_class(spec: dict[str, Any]) -> str:
    """Status.qosClass, which the pod registry strategy computes on create."""
    requests: dict[str, list[bool]] = {}
    guaranteed = True
    any_set = False
    for c in _dicts(spec.get("containers")) + _dicts(spec.get("initContainers")):
        res = _as_dict(c.get("resources"))
        req = _as_dict(res.get("requests"))
        lim = _as_dict(res.get("limits"))
        for name in ("cpu", "memory"):
            r, limit = req.get(name), lim.get(name)
            if r is not None or limit is not None:
                any_set = True
            if limit is None or r is None:
                guaranteed = False
            else:
                try:
                    if quantity.compare(r, limit) != 0:
                        guaranteed = False
                except quantity.QuantityError:
                    guaranteed = False
            requests.setdefault(name, [])
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def pod_template_object(obj: dict[str, Any]) -> None:
    pod_template(obj.get("template"))


def replication_controller(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    tmpl = spec.get("template")
    labels = tmpl.get("metadata", {}).get("labels") if isinstance(tmpl, dict) else None
    if isinstance(labels, dict) and labels:
        if not spec.get("selector"):
            spec["selector"] = dict(labels)
        meta = _dict(obj, "metadata")
        if not meta.get("labels"):
            meta["labels"] = dict(labels)
    if spec.get("replicas") is None:
        spec["replicas"] = 1
    pod_template(tmpl)


def service(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "type", "ClusterIP")
    _setdefault(spec, "sessionAffinity", "None")
    if spec["sessionAffinity"] == "ClientIP":
        sac = _dict(spec, "sessionAffinityConfig")
        cip = _dict(sac, "clientIP")
        if cip.get("timeoutSeconds") is None:
            cip["timeoutSeconds"] = 10800
    for p in _dicts(spec.get("ports")):
        _setdefault(p, "protocol", "TCP")
        if p.get("targetPort") in (None, 0, ""):
            p["targetPort"] = p.get("port")
    typ = spec["type"]
    externally = typ in ("NodePort", "LoadBalancer") or (typ == "ClusterIP" and spec.get("externalIPs"))
    if externally:
        _setdefault(spec, "externalTrafficPolicy", "Cluster")
    if spec.get("internalTrafficPolicy") is None and typ in ("ClusterIP", "NodePort", "LoadBalancer"):
        spec["internalTrafficPolicy"] = "Cluster"
    if typ == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    if typ != "ExternalName":
        # clusterIP and clusterIPs mirror each other (registry strategy); the IP family fields are set by
        # the apiserver's allocator for a single-stack IPv4 cluster.
        if spec.get("clusterIP") and not spec.get("clusterIPs"):
            spec["clusterIPs"] = [spec["clusterIP"]]
        elif spec.get("clusterIPs") and not spec.get("clusterIP") and isinstance(spec["clusterIPs"], list):
            spec["clusterIP"] = spec["clusterIPs"][0]
        if spec.get("ipFamilyPolicy") is None:
            spec["ipFamilyPolicy"] = "SingleStack"
        if not spec.get("ipFamilies"):
            spec["ipFamilies"] = ["IPv4"]
    status = _dict(obj, "status")
    status.setdefault("loadBalancer", {})


def needs_health_check(svc: dict[str, Any]) -> bool:
    """kube's NeedsHealthCheck: a LoadBalancer with externalTrafficPolicy Local gets a healthCheckNodePort."""
    spec = svc.get("spec")
    return isinstance(spec, dict) and spec.get("type") == "LoadBalancer" and spec.get("externalTrafficPolicy") == "Local"


def _externally_accessible(spec: dict[str, Any]) -> bool:
    typ = spec.get("type")
    return typ in ("NodePort", "LoadBalancer") or typ == "ClusterIP" and bool(spec.get("externalIPs"))


def service_prepare_update(new: dict[str, Any], old: dict[str, Any]) -> None:
    """kube's Service update strategy (patchAllocatedValues, dropTypeDependentFields): keep an allocated
    healthCheckNodePort the client left out, and drop the fields a type change no longer uses when the client did
    not change them (a changed one is left for validation to refuse)."""
    spec, old_spec = new.get("spec"), old.get("spec")
    if not isinstance(spec, dict) or not isinstance(old_spec, dict):
        return
    ports, old_ports = _dicts(spec.get("ports")), _dicts(old_spec.get("ports"))
    node_typed = ("NodePort", "LoadBalancer")
    if spec.get("type") != "ExternalName" and old_spec.get("type") != "ExternalName":
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs"):
            spec["clusterIPs"] = list(old_spec["clusterIPs"])
    if spec.get("type") in node_typed and old_spec.get("type") in node_typed:
        # a node port the client left out stays, unless another port of the new spec took it
        used = {p.get("nodePort") for p in ports} & {p.get("nodePort") for p in old_ports}
        by_name = {str(p.get("name") or ""): p.get("nodePort") for p in old_ports}
        for p in ports:
            was = by_name.get(str(p.get("name") or ""))
            if not p.get("nodePort") and was and was not in used:
                p["nodePort"] = was
    if needs_health_check(old) and needs_health_check(new) and not spec.get("healthCheckNodePort"):
        if old_spec.get("healthCheckNodePort"):
            spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]
    if old_spec.get("type") in node_typed and spec.get("type") not in node_typed and \
            {p.get("nodePort") for p in ports} - {None, 0} == {p.get("nodePort") for p in old_ports} - {None, 0}:
        for p in ports:
            p.pop("nodePort", None)
    if old_spec.get("type") != "ExternalName" and spec.get("type") == "ExternalName":
        if spec.get("clusterIPs") == old_spec.get("clusterIPs"):
            spec.pop("clusterIP", None)  # given back by the allocator
            spec.pop("clusterIPs", None)
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if spec.get(key) == old_spec.get(key):
                spec.pop(key, None)
    if needs_health_check(old) and not needs_health_check(new) and \
            spec.get("healthCheckNodePort") == old_spec.get("healthCheckNodePort"):
        spec.pop("healthCheckNodePort", None)
    if old_spec.get("type") == "LoadBalancer" and spec.get("type") != "LoadBalancer":
        if spec.get("allocateLoadBalancerNodePorts") == old_spec.get("allocateLoadBalancerNodePorts"):
            spec.pop("allocateLoadBalancerNodePorts", None)
        if spec.get("loadBalancerClass") == old_spec.get("loadBalancerClass"):
            spec.pop("loadBalancerClass", None)
        if isinstance(new.get("status"), dict):
            new["status"]["loadBalancer"] = {}  # no load balancer serves it any more
    if _externally_accessible(old_spec) and not _externally_accessible(spec) and \
            spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
        spec.pop("externalTrafficPolicy", None)


def secret(obj: dict[str, Any]) -> None:
    _setdefault(obj, "type", "Opaque")
    data = obj.get("data")
    if isinstance(data, dict):
        for k, v in data.items():
            if v is None:
                continue
            # Go's decoder skips CR and LF (kustomize and `base64` wrap long values); kube stores the bytes, so
            # the value reads back unwrapped.
            text = str(v)
            unwrapped = text.replace("\r", "").replace("\n", "")
            try:
                base64.b64decode(unwrapped, validate=True)
            except (binascii.Error, ValueError) as e:
                pos = _bad_base64_offset(text)
                raise errors.BadRequest(f'Secret in version "v1" cannot be handled as a Secret: illegal base64 '
                                        f"data at input byte {pos}") from e
            if unwrapped != text:
                data[k] = unwrapped
    # stringData is write-only: conversion merges it into data, where it wins over the same key.
    sd = obj.pop("stringData", None)
    if isinstance(sd, dict) and sd:
        data = _dict(obj, "data")
        for k, v in sd.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def _bad_base64_offset(s: str) -> int:
    alphabet = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    for i, ch in enumerate(s):
        if ch in "\r\n":
            continue
        if ch == "=":
            return i if len(s) % 4 == 0 and i >= len(s) - 2 else i
        if ch not in alphabet:
            return i
    return len(s) - (len(s) % 4) if len(s) % 4 else len(s)


def namespace(obj: dict[str, Any]) -> None:
    meta = _dict(obj, "metadata")
    name = meta.get("name")
    if name:
        labels = _dict(meta, "labels")
        labels["kubernetes.io/metadata.name"] = name
    # spec.finalizers ["kubernetes"] is set by the registry on create only (strategy), so that
    # /finalize can empty it; defaulting runs on every write.
    _dict(obj, "spec")
    status = _dict(obj, "status")
    _setdefault(status, "phase", "Active")


def pvc_spec(spec: dict[str, Any]) -> None:
    _setdefault(spec, "volumeMode", "Filesystem")
    res = spec.get("resources")
    if isinstance(res, dict):
        canonicalize_resource_list(res.get("requests"))
        canonicalize_resource_list(res.get("limits"))


def persistent_volume_claim(obj: dict[str, Any]) -> None:
    pvc_spec(_dict(obj, "spec"))
    _setdefault(_dict(obj, "status"), "phase", "Pending")


def persistent_volume(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    _setdefault(spec, "persistentVolumeReclaimPolicy", "Retain")
    _setdefault(spec, "volumeMode", "Filesystem")
    canonicalize_resource_list(spec.get("capacity"))
    hp = spec.get("hostPath")
    if isinstance(hp, dict) and hp.get("type") is None:
        hp["type"] = ""
    _setdefault(_dict(obj, "status"), "phase", "Pending")


def endpoints(obj: dict[str, Any]) -> None:
    for subset in _dicts(obj.get("subsets")):
        for p in _dicts(subset.get("ports")):
            _setdefault(p, "protocol", "TCP")


def limit_range(obj: dict[str, Any]) -> None:
    spec = _dict(obj, "spec")
    for item in _dicts(spec.get("limits")):
        for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            canonicalize_resource_list(item.get(key))
        if item.get("type") != "Container":
            continue
        default = dict(item.get("default") or {})
        default_request = dict(item.get("defaultRequest") or {})
        for k, v in (item.get("max") or {}).items():
            default.setdefault(k, v)
        for k, v in default.items():
            default_request.setdefault(k, v)
        for k, v in (item.get("min") or {}).items():
            default_request.setdefault(k, v)
        if default:
            item["default"] = default
        if default_request:
            item["defaultRequest"] = default_request


def resource_quota(obj: dict[str, Any]) -> None:
    canonicalize_resource_list(_dict(obj, "spec").get("hard"))


def node(obj: dict[str, Any]) -> None:
    status = obj.get("status")
    if isinstance(status, dict):
        canonicalize_resource_list(status.get("capacity"))
        canonicalize_resource_list(status.get("allocatable"))
        if status.get("allocatable") is None and isinstance(status.get("capacity"), dict):
            status["allocatable"] = dict(status["capacity"])


def event(obj: dict[str, Any]) -> None:
    # Fields Go always prints for a core/v1 Event (non-omitempty strings, zero times as null).
    obj.setdefault("involvedObject", {})
    obj.setdefault("source", {})
    for key in ("firstTimestamp", "lastTimestamp", "eventTime"):
        obj.setdefault(key, None)
    obj.setdefault("reportingComponent", "")
    obj.setdefault("reportingInstance", "")


CORE = {
    "Pod": pod,
    "PodTemplate": pod_template_object,
    "ReplicationController": replication_controller,
    "Service": service,
    "Secret": secret,
    "Namespace": namespace,
    "PersistentVolumeClaim": persistent_volume_claim,
    "PersistentVolume": persistent_volume,
    "Endpoints": endpoints,
    "LimitRange": limit_range,
    "ResourceQuota": resource_quota,
    "Node": node,
    "Event": event,
}
