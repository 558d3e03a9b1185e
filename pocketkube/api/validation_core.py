"""Validation of core/v1 kinds other than Pod: Service, ConfigMap, Secret, Namespace, Node, PV/PVC, Event, ..."""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from typing import Any

from pocketkube.api import errors, names, quantity
from pocketkube.api import validation_meta as vm
from pocketkube.api import validation_pod as vp

FE = errors.FieldError
MAX_SECRET_SIZE = 1024 * 1024
_IMMUTABLE_SET = "field is immutable when `immutable` is set"
_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_SERVICE_TYPES = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"]
_ACCESS_MODES = ["ReadOnlyMany", "ReadWriteMany", "ReadWriteOnce", "ReadWriteOncePod"]


def _meta(obj: dict[str, Any], *, namespaced: bool, name_fn: names.NameFunc) -> list[FE]:
    return vm.validate_metadata(obj.get("metadata"), namespaced=namespaced, name_validator=name_fn)


# --- Service ----------------------------------------------------------------------------------

def _go_service_port(port: dict[str, Any]) -> str:
    proto = json.dumps(str(port.get("protocol") or ""))
    return (f'raw:core.ServicePort{{Name:"", Protocol:{proto}, AppProtocol:(*string)(nil), '
            f'Port:{vm.num(port.get("port"))}, TargetPort:intstr.IntOrString{{Type:0, IntVal:0, StrVal:""}}, '
            f"NodePort:0}}")


def _service_port(sp: dict[str, Any], field: str, *, require_name: bool, seen: set[str]) -> list[FE]:
    out: list[FE] = []
    name = str(sp.get("name") or "")
    if require_name and not name:
        out.append(errors.required(f"{field}.name"))
    elif name:
        out.extend(names.validate_dns1123_label(name, f"{field}.name"))
        if name in seen:
            out.append(errors.duplicate(f"{field}.name", name))
        seen.add(name)
    port = vm.num(sp.get("port"))
    out.extend(errors.invalid(f"{field}.port", port, m) for m in names.is_valid_port_num(port))
    proto = sp.get("protocol") or ""
    if not proto:
        out.append(errors.required(f"{field}.protocol"))
    elif proto not in _PROTOCOLS:
        out.append(errors.unsupported(f"{field}.protocol", proto, _PROTOCOLS))
    out.extend(vp._port_num_or_name(sp.get("targetPort"), f"{field}.targetPort"))
    app = sp.get("appProtocol")
    if app is not None:
        out.extend(names.validate_qualified_name(str(app), f"{field}.appProtocol"))
    return out


def _cluster_ips(spec: dict[str, Any]) -> list[FE]:
    if spec.get("type") == "ExternalName":
        return []
    out: list[FE] = []
    cip = str(spec.get("clusterIP") or "")
    cips = [str(x) for x in vm.as_list(spec.get("clusterIPs"))]
    if cip:
        if not cips:
            out.append(errors.required("spec.clusterIPs"))
        elif cips[0] != cip:
            out.append(errors.invalid("spec.clusterIPs", vm.go_string_list(cips), "first value must match `clusterIP`"))
    elif cips:
        out.append(errors.invalid("spec.clusterIPs", vm.go_string_list(cips),
                                  "must be empty when `clusterIP` is not specified"))
    seen: set[str] = set()
    for i, fam in enumerate(vm.as_list(spec.get("ipFamilies"))):
        if fam not in ("IPv4", "IPv6"):
            out.append(errors.unsupported(f"spec.ipFamilies[{i}]", fam, ["IPv4", "IPv6"]))
        if fam in seen:
            out.append(errors.duplicate(f"spec.ipFamilies[{i}]", fam))
        seen.add(fam)
    pol = spec.get("ipFamilyPolicy")
    if pol is not None and pol not in ("PreferDualStack", "RequireDualStack", "SingleStack"):
        out.append(errors.unsupported("spec.ipFamilyPolicy", pol, ["PreferDualStack", "RequireDualStack",
                                                                   "SingleStack"]))
    bad = False
    for i, ip in enumerate(cips):
        if i == 0 and ip == "None":
            if len(cips) > 1:
                bad = True
                out.append(errors.invalid("spec.clusterIPs", vm.go_string_list(cips),
                                          "'None' must be the first and only value"))
            continue
        msgs = names.is_valid_ip(ip)
        bad = bad or bool(msgs)
        out.extend(errors.invalid(f"spec.clusterIPs[{i}]", ip, m) for m in msgs)
    if len(cips) > 2:
        out.append(errors.invalid("spec.clusterIPs", vm.go_string_list(cips), "may only hold up to 2 values"))
    if bad:
        return out
    if len(cips) > 1 and len({ipaddress.ip_address(ip).version for ip in cips}) != len(cips):
        out.append(errors.invalid("spec.clusterIPs", vm.go_string_list(cips),
                                  "may specify no more than one IP for each IP family"))
    fams = vm.as_list(spec.get("ipFamilies"))
    if cip != "None":
        for i, ip in enumerate(cips[:len(fams)]):
            v6 = ipaddress.ip_address(ip).version == 6
            if fams[i] == "IPv4" and v6:
                out.append(errors.invalid(f"spec.clusterIPs[{i}]", ip,
                                          f"expected an IPv4 value as indicated by `ipFamilies[{i}]`"))
            if fams[i] == "IPv6" and not v6:
                out.append(errors.invalid(f"spec.clusterIPs[{i}]", ip,
                                          f"expected an IPv6 value as indicated by `ipFamilies[{i}]`"))
    return out


def validate_service(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True, name_fn=names.name_is_dns1035_label)
    spec = vm.as_dict(obj.get("spec"))
    ports = vm.dicts(spec.get("ports"))
    typ = spec.get("type") or ""
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and typ != "ExternalName":
        out.append(errors.required("spec.ports"))
    if typ in ("LoadBalancer", "NodePort") and headless:
        out.append(errors.invalid("spec.clusterIPs[0]", "None", f"may not be set to 'None' for {typ} services"))
    if typ == "ExternalName":
        if spec.get("clusterIPs"):
            out.append(errors.forbidden("spec.clusterIPs", "may not be set for ExternalName services"))
        if spec.get("ipFamilies"):
            out.append(errors.forbidden("spec.ipFamilies", "may not be set for ExternalName services"))
        if spec.get("ipFamilyPolicy") is not None:
            out.append(errors.forbidden("spec.ipFamilyPolicy", "may not be set for ExternalName services"))
        cname = str(spec.get("externalName") or "").removesuffix(".")
        if cname:
            out.extend(names.validate_dns1123_subdomain(cname, "spec.externalName"))
        else:
            out.append(errors.required("spec.externalName"))
    seen: set[str] = set()
    for i, sp in enumerate(ports):
        out.extend(_service_port(sp, f"spec.ports[{i}]", require_name=len(ports) > 1, seen=seen))
    if spec.get("selector") is not None:
        out.extend(names.validate_labels(spec.get("selector"), "spec.selector"))
    aff = spec.get("sessionAffinity") or ""
    if not aff:
        out.append(errors.required("spec.sessionAffinity"))
    elif aff not in ("ClientIP", "None"):
        out.append(errors.unsupported("spec.sessionAffinity", aff, ["ClientIP", "None"]))
    if aff == "ClientIP":
        timeout = vm.as_dict(vm.as_dict(spec.get("sessionAffinityConfig")).get("clientIP")).get("timeoutSeconds")
        if vm.is_int(timeout) and not 0 < timeout <= 86400:
            out.append(errors.invalid("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout,
                                      "must be greater than 0 and less than 86400"))
    elif aff == "None" and spec.get("sessionAffinityConfig") is not None:
        out.append(errors.forbidden("spec.sessionAffinityConfig", "must not be set when session affinity is None"))
    out.extend(_cluster_ips(spec))
    for i, ip in enumerate(vm.as_list(spec.get("externalIPs"))):
        out.extend(errors.invalid(f"spec.externalIPs[{i}]", str(ip), m) for m in names.is_valid_ip(str(ip)))
    if not typ:
        out.append(errors.required("spec.type"))
    elif typ not in _SERVICE_TYPES:
        out.append(errors.unsupported("spec.type", typ, _SERVICE_TYPES))
    if typ == "ClusterIP":
        for i, sp in enumerate(ports):
            if vm.num(sp.get("nodePort")):
                out.append(errors.forbidden(f"spec.ports[{i}].nodePort", "may not be used when `type` is 'ClusterIP'"))
    node_ports: set[tuple[str, int]] = set()
    for i, sp in enumerate(ports):
        np = vm.num(sp.get("nodePort"))
        if not np:
            continue
        key = (str(sp.get("protocol") or ""), np)
        if key in node_ports:
            out.append(errors.duplicate(f"spec.ports[{i}].nodePort", np))
        node_ports.add(key)
    port_keys: set[tuple[str, int]] = set()
    for i, sp in enumerate(ports):
        key = (str(sp.get("protocol") or ""), vm.num(sp.get("port")))
        if key in port_keys:
            out.append(errors.duplicate(f"spec.ports[{i}]", _go_service_port(sp)))
        port_keys.add(key)
    etp = spec.get("externalTrafficPolicy") or ""
    if etp and typ not in ("NodePort", "LoadBalancer") and not (typ == "ClusterIP" and spec.get("externalIPs")):
        out.append(errors.invalid("spec.externalTrafficPolicy", etp,
                                  "may only be set for externally-accessible services"))
    elif etp and etp not in ("Cluster", "Local"):
        out.append(errors.unsupported("spec.externalTrafficPolicy", etp, ["Cluster", "Local"]))
    itp = spec.get("internalTrafficPolicy")
    if itp is not None and itp not in ("Cluster", "Local"):
        out.append(errors.unsupported("spec.internalTrafficPolicy", itp, ["Cluster", "Local"]))
    out.extend(_health_check_node_port(spec))
    return out


def _health_check_node_port(spec: dict[str, Any]) -> list[FE]:
    # Unset is fine here: the apiserver's allocator fills it in after validation (kube allocates first).
    hc = vm.num(spec.get("healthCheckNodePort"))
    if not hc:
        return []
    if spec.get("type") != "LoadBalancer" or spec.get("externalTrafficPolicy") != "Local":
        return [errors.invalid("spec.healthCheckNodePort", hc,
                               "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")]
    return [errors.invalid("spec.healthCheckNodePort", hc, m) for m in names.is_valid_port_num(hc)]


def node_port_out_of_range(field: str, port: int, lo: int = 30000, hi: int = 32767) -> FE:
    """The allocator's error for a nodePort outside the service-node-port range (for the apiserver to raise)."""
    return errors.invalid(field, port, f"provided port is not in the valid range. The range of valid ports is {lo}-{hi}")


def validate_service_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    out = vm.validate_metadata_update(new.get("metadata"), old.get("metadata"))
    ns, os_ = vm.as_dict(new.get("spec")), vm.as_dict(old.get("spec"))
    if ns.get("type") != "ExternalName" and os_.get("type") != "ExternalName" and os_.get("clusterIP"):
        out.extend(vm.immutable(ns.get("clusterIP") or "", os_.get("clusterIP") or "", "spec.clusterIP"))
    local = ("LoadBalancer", "Local")
    if (ns.get("type"), ns.get("externalTrafficPolicy")) == local == (os_.get("type"), os_.get("externalTrafficPolicy")) \
            and vm.num(ns.get("healthCheckNodePort")) not in (0, vm.num(os_.get("healthCheckNodePort"))):
        out.append(errors.forbidden("spec.healthCheckNodePort", "field is immutable"))
    return out + validate_service(new)


# --- ConfigMap / Secret --------------------------------------------------------------------

def validate_config_map(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain)
    total = 0
    data, binary = vm.as_dict(obj.get("data")), vm.as_dict(obj.get("binaryData"))
    for k, v in data.items():
        out.extend(errors.invalid(f"data[{k}]", k, m) for m in names.is_config_map_key(k))
        if k in binary:
            out.append(errors.invalid(f"data[{k}]", k, "duplicate of key present in binaryData"))
        total += len(str(v if v is not None else "").encode())
    for k, v in binary.items():
        out.extend(errors.invalid(f"binaryData[{k}]", k, m) for m in names.is_config_map_key(k))
        total += _decoded_len(v)
    if total > MAX_SECRET_SIZE:
        out.append(errors.too_long("", MAX_SECRET_SIZE))
    return out


def _decoded_len(v: Any) -> int:
    try:
        return len(base64.b64decode(str(v or ""), validate=True))
    except (binascii.Error, ValueError):
        return len(str(v or ""))


def _immutable_data(new: dict[str, Any], old: dict[str, Any], keys: tuple[str, ...]) -> list[FE]:
    out: list[FE] = []
    if old.get("immutable") is True:
        if new.get("immutable") is not True:
            out.append(errors.forbidden("immutable", _IMMUTABLE_SET))
        for key in keys:
            if (new.get(key) or None) != (old.get(key) or None):
                out.append(errors.forbidden(key, _IMMUTABLE_SET))
    return out


def validate_config_map_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    out = vm.validate_metadata_update(new.get("metadata"), old.get("metadata"))
    out.extend(_immutable_data(new, old, ("data", "binaryData")))
    return out + validate_config_map(new)


def validate_secret(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain)
    data = vm.as_dict(obj.get("data"))
    total = 0
    for k, v in data.items():
        out.extend(errors.invalid(f"data[{k}]", k, m) for m in names.is_config_map_key(k))
        total += _decoded_len(v)
    if total > MAX_SECRET_SIZE:
        out.append(errors.too_long("data", MAX_SECRET_SIZE))
    typ = obj.get("type") or ""
    annotations = vm.as_dict(vm.as_dict(obj.get("metadata")).get("annotations"))
    if typ == "kubernetes.io/service-account-token":
        if not annotations.get("kubernetes.io/service-account.name"):
            out.append(errors.required("metadata.annotations[kubernetes.io/service-account.name]"))
    elif typ in ("kubernetes.io/dockercfg", "kubernetes.io/dockerconfigjson"):
        key = ".dockercfg" if typ == "kubernetes.io/dockercfg" else ".dockerconfigjson"
        if key not in data:
            out.append(errors.required(f"data[{key}]"))
        else:
            try:
                parsed = json.loads(base64.b64decode(str(data[key] or "")))
                if not isinstance(parsed, dict):
                    raise ValueError("json: cannot unmarshal into Go value of type map[string]interface {}")
            except (ValueError, binascii.Error) as e:
                out.append(errors.invalid(f"data[{key}]", "<secret contents redacted>", str(e)))
    elif typ == "kubernetes.io/basic-auth":
        if "username" not in data and "password" not in data:
            out.append(errors.required("data[username]"))
            out.append(errors.required("data[password]"))
    elif typ == "kubernetes.io/ssh-auth":
        if not data.get("ssh-privatekey"):
            out.append(errors.required("data[ssh-privatekey]"))
    elif typ == "kubernetes.io/tls":
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                out.append(errors.required(f"data[{key}]"))
    return out


def validate_secret_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    out = vm.validate_metadata_update(new.get("metadata"), old.get("metadata"))
    out.extend(vm.immutable(new.get("type") or "", old.get("type") or "", "type"))
    out.extend(_immutable_data(new, old, ("data",)))
    return out + validate_secret(new)


# --- Namespace / Node / ServiceAccount ---------------------------------------------------

def validate_namespace(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=False, name_fn=names.name_is_dns_label)
    for f in vm.as_list(vm.as_dict(obj.get("spec")).get("finalizers")):
        f = str(f)
        out.extend(errors.invalid("spec.finalizers", f, m) for m in names.is_qualified_name(f))
        if "/" not in f and f != "kubernetes":
            out.append(errors.invalid("spec.finalizers", f,
                                      "name is neither a standard finalizer name nor is it fully qualified"))
    return out


def validate_node(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=False, name_fn=names.name_is_dns_subdomain)
    spec = vm.as_dict(obj.get("spec"))
    for i, t in enumerate(vm.dicts(spec.get("taints"))):
        p = f"spec.taints[{i}]"
        out.extend(names.validate_label_name(str(t.get("key") or ""), f"{p}.key"))
        if t.get("value"):
            out.extend(errors.invalid(f"{p}.value", str(t["value"]), m) for m in names.is_label_value(str(t["value"])))
        effect = t.get("effect") or ""
        if not effect:
            out.append(errors.required(f"{p}.effect"))
        elif effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append(errors.unsupported(f"{p}.effect", effect, ["NoSchedule", "PreferNoSchedule", "NoExecute"]))
    cidrs = vm.as_list(spec.get("podCIDRs")) or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    for i, c in enumerate(cidrs):
        out.extend(errors.invalid(f"spec.podCIDRs[{i}]", str(c), m) for m in names.is_valid_cidr(str(c)))
    return out


def validate_service_account(obj: dict[str, Any]) -> list[FE]:
    return _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain)


# --- storage ---------------------------------------------------------------------------------

def _access_modes(modes: Any, field: str, *, pvc: bool) -> list[FE]:
    out: list[FE] = []
    ms = vm.as_list(modes)
    if not ms:
        out.append(errors.required(field, "at least 1 access mode is required" if pvc else ""))
    rwop = other = False
    for m in ms:
        if m not in _ACCESS_MODES:
            out.append(errors.unsupported(field, m, _ACCESS_MODES))
        elif m == "ReadWriteOncePod":
            rwop = True
        else:
            other = True
    if rwop and other:
        out.append(errors.forbidden(field, "may not use ReadWriteOncePod with other access modes"))
    return out


def validate_pvc_spec(spec: Any, field: str) -> list[FE]:
    s = vm.as_dict(spec)
    out = _access_modes(s.get("accessModes"), f"{field}.accessModes", pvc=True)
    if s.get("selector") is not None:
        out.extend(vm.validate_label_selector(s.get("selector"), f"{field}.selector"))
    requests = vm.as_dict(vm.as_dict(s.get("resources")).get("requests"))
    rp = f"{field}.resources[storage]"
    if "storage" not in requests:
        out.append(errors.required(rp))
    else:
        q = quantity.parse(requests["storage"])
        if q.sign() <= 0:
            out.append(errors.invalid(rp, str(q), "must be greater than zero"))
    scn = s.get("storageClassName")
    if scn:
        out.extend(errors.invalid(f"{field}.storageClassName", scn, m) for m in names.name_is_dns_subdomain(str(scn)))
    mode = s.get("volumeMode")
    if mode is not None and mode not in ("Block", "Filesystem"):
        out.append(errors.unsupported(f"{field}.volumeMode", mode, ["Block", "Filesystem"]))
    return out


def validate_pvc(obj: dict[str, Any]) -> list[FE]:
    return _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain) + validate_pvc_spec(obj.get("spec"), "spec")


def validate_pvc_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    out = vm.validate_metadata_update(new.get("metadata"), old.get("metadata"))
    out.extend(validate_pvc(new))
    ns, os_ = json.loads(json.dumps(vm.as_dict(new.get("spec")))), vm.as_dict(old.get("spec"))
    if not os_.get("volumeName"):
        ns["volumeName"] = os_.get("volumeName")
        if ns["volumeName"] is None:
            ns.pop("volumeName")
    bound = vm.as_dict(new.get("status")).get("phase") == "Bound"
    if bound and isinstance(vm.as_dict(ns.get("resources")).get("requests"), dict):
        old_storage = vm.as_dict(vm.as_dict(os_.get("resources")).get("requests")).get("storage")
        ns["resources"]["requests"]["storage"] = old_storage
    if bound and "volumeAttributesClassName" in ns:
        ns["volumeAttributesClassName"] = os_.get("volumeAttributesClassName")
    if ns != os_:
        out.append(errors.forbidden("spec", "spec is immutable after creation except resources.requests and "
                                            "volumeAttributesClassName for bound claims"))
    new_req = vm.as_dict(vm.as_dict(vm.as_dict(new.get("spec")).get("resources")).get("requests")).get("storage")
    old_req = vm.as_dict(vm.as_dict(os_.get("resources")).get("requests")).get("storage")
    if new_req is not None and old_req is not None and quantity.compare(new_req, old_req) < 0:
        out.append(errors.forbidden("spec.resources.requests.storage", "field can not be less than previous value"))
    return out


def validate_pv(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=False, name_fn=names.name_is_dns_subdomain)
    spec = vm.as_dict(obj.get("spec"))
    out.extend(_access_modes(spec.get("accessModes"), "spec.accessModes", pvc=False))
    cap = vm.as_dict(spec.get("capacity"))
    if not cap:
        out.append(errors.required("spec.capacity"))
    if "storage" not in cap or len(cap) > 1:
        out.append(errors.unsupported("spec.capacity", vm.go_map(cap), ["storage"]))
    for r, q in cap.items():
        if quantity.parse(q).sign() <= 0:
            out.append(errors.invalid(f"spec.capacity[{r}]", str(quantity.parse(q)), "must be greater than zero"))
    rp = spec.get("persistentVolumeReclaimPolicy")
    if rp and rp not in ("Delete", "Recycle", "Retain"):
        out.append(errors.unsupported("spec.persistentVolumeReclaimPolicy", rp, ["Delete", "Recycle", "Retain"]))
    return out


# --- Event (legacy core/v1 rules; events.k8s.io/v1 adds the strict ones) -----------------

def validate_event(obj: dict[str, Any], *, strict: bool) -> list[FE]:
    out: list[FE] = []
    meta = vm.as_dict(obj.get("metadata"))
    ns = str(meta.get("namespace") or "")
    involved = vm.as_dict(obj.get("regarding" if strict else "involvedObject"))
    inv_ns = str(involved.get("namespace") or "")
    inv_field = "involvedObject.namespace"
    if not obj.get("eventTime"):
        if not inv_ns:
            if ns not in ("", "default"):
                out.append(errors.invalid(inv_field, inv_ns, "does not match event.namespace"))
        elif ns != inv_ns:
            out.append(errors.invalid(inv_field, inv_ns, "does not match event.namespace"))
    else:
        if not inv_ns and ns not in ("default", "kube-system"):
            out.append(errors.invalid(inv_field, inv_ns, "does not match event.namespace"))
        rc_field = "reportingController" if strict else "reportingComponent"
        rc = str(obj.get(rc_field) or "")
        if not rc:
            out.append(errors.required(rc_field))
        out.extend(names.validate_qualified_name(rc, rc_field))
        out.extend(_event_limits(obj, strict=strict))
    out.extend(errors.invalid("namespace", ns, m) for m in names.is_dns1123_subdomain(ns))
    if not strict:
        return out
    out.extend(_meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain))
    if not obj.get("eventTime"):
        out.append(errors.required("eventTime"))
    if obj.get("type") not in ("Normal", "Warning"):
        out.append(errors.invalid("type", "", f"has invalid value: {obj.get('type') or ''}"))
    for key in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp"):
        if obj.get(key):
            out.append(errors.invalid(key, "", "needs to be unset"))
    if obj.get("deprecatedCount"):
        out.append(errors.invalid("deprecatedCount", "", "needs to be unset"))
    if vm.as_dict(obj.get("deprecatedSource")):
        out.append(errors.invalid("deprecatedSource", "", "needs to be unset"))
    return out


def _event_limits(obj: dict[str, Any], *, strict: bool) -> list[FE]:
    out: list[FE] = []
    for key, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
        value = str(obj.get(key) or "")
        if not value:
            out.append(errors.required(key))
        if len(value) > limit:
            out.append(errors.invalid(key, "", f"can have at most {limit} characters"))
    note_key = "note" if strict else "message"
    if len(str(obj.get(note_key) or "")) > 1024:
        out.append(errors.invalid(note_key, "", "can have at most 1024 characters"))
    return out


def validate_replication_controller(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain)
    spec = vm.as_dict(obj.get("spec"))
    out.extend(names.validate_nonnegative(spec.get("minReadySeconds"), "spec.minReadySeconds"))
    selector = vm.as_dict(spec.get("selector"))
    if not selector:
        out.append(errors.required("spec.selector"))
    out.extend(names.validate_nonnegative(spec.get("replicas"), "spec.replicas"))
    tmpl = spec.get("template")
    if not isinstance(tmpl, dict):
        out.append(errors.required("spec.template"))
        return out
    labels = vm.as_dict(tmpl.get("metadata")).get("labels")
    if selector and not vm.selector_matches({"matchLabels": selector}, labels):
        out.append(errors.invalid("spec.template.metadata.labels", vm.go_map(labels),
                                  "`selector` does not match template `labels`"))
    out.extend(vp.validate_pod_template_spec(tmpl, "spec.template"))
    rp = vm.as_dict(tmpl.get("spec")).get("restartPolicy") or ""
    if rp != "Always":
        out.append(errors.unsupported("spec.template.spec.restartPolicy", rp, ["Always"]))
    if vm.as_dict(tmpl.get("spec")).get("activeDeadlineSeconds") is not None:
        out.append(errors.forbidden("spec.template.spec.activeDeadlineSeconds",
                                    "activeDeadlineSeconds in ReplicationController is not Supported"))
    return out


def validate_pod_template(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain)
    return out + vp.validate_pod_template_spec(obj.get("template"), "template")


def validate_resource_quota(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain)
    for k, v in vm.as_dict(vm.as_dict(obj.get("spec")).get("hard")).items():
        out.extend(vp.validate_resource_quantity(k, v, f"spec.hard[{k}]"))
    return out


def validate_limit_range(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True, name_fn=names.name_is_dns_subdomain)
    for i, item in enumerate(vm.dicts(vm.as_dict(obj.get("spec")).get("limits"))):
        for key in ("max", "min", "default", "defaultRequest", "maxLimitRequestRatio"):
            for k, v in vm.as_dict(item.get(key)).items():
                out.extend(vp.validate_resource_quantity(k, v, f"spec.limits[{i}].{key}[{k}]"))
    return out
