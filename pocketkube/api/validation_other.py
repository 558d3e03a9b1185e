"""Validation of RBAC, networking, scheduling, coordination and storage kinds."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

from pocketkube.api import errors, names
from pocketkube.api import validation_meta as vm

FE = errors.FieldError
RBAC_GROUP = "rbac.authorization.k8s.io"


def _meta(obj: dict[str, Any], *, namespaced: bool, name_fn: names.NameFunc = names.name_is_dns_subdomain) -> list[FE]:
    return vm.validate_metadata(obj.get("metadata"), namespaced=namespaced, name_validator=name_fn)


# --- RBAC ---------------------------------------------------------------------------------

def _policy_rule(rule: dict[str, Any], field: str, *, namespaced: bool) -> list[FE]:
    out: list[FE] = []
    if not rule.get("verbs"):
        out.append(errors.required(f"{field}.verbs", "verbs must contain at least one value"))
    urls = vm.as_list(rule.get("nonResourceURLs"))
    if urls:
        if namespaced:
            out.append(errors.invalid(f"{field}.nonResourceURLs", vm.go_string_list(urls),
                                      "namespaced rules cannot apply to non-resource URLs"))
        if rule.get("apiGroups") or rule.get("resources") or rule.get("resourceNames"):
            out.append(errors.invalid(f"{field}.nonResourceURLs", vm.go_string_list(urls),
                                      "rules cannot apply to both regular resources and non-resource URLs"))
        return out
    if not rule.get("apiGroups"):
        out.append(errors.required(f"{field}.apiGroups", "resource rules must supply at least one api group"))
    if not rule.get("resources"):
        out.append(errors.required(f"{field}.resources", "resource rules must supply at least one resource"))
    return out


def validate_role(obj: dict[str, Any], *, namespaced: bool) -> list[FE]:
    out = _meta(obj, namespaced=namespaced, name_fn=names.name_is_path_segment)
    for i, rule in enumerate(vm.dicts(obj.get("rules"))):
        out.extend(_policy_rule(rule, f"rules[{i}]", namespaced=namespaced))
    agg = obj.get("aggregationRule")
    if not namespaced and isinstance(agg, dict):
        sels = vm.as_list(agg.get("clusterRoleSelectors"))
        if not sels:
            out.append(errors.required("aggregationRule.clusterRoleSelectors",
                                       "at least one clusterRoleSelector required if aggregationRule is non-nil"))
        for i, sel in enumerate(sels):
            out.extend(vm.validate_label_selector(sel, f"aggregationRule.clusterRoleSelectors[{i}]"))
    return out


def _subject(s: dict[str, Any], field: str, *, namespaced: bool) -> list[FE]:
    out: list[FE] = []
    name = str(s.get("name") or "")
    if not name:
        out.append(errors.required(f"{field}.name"))
    kind = s.get("kind") or ""
    group = s.get("apiGroup") or ""
    if kind == "ServiceAccount":
        if name:
            out.extend(errors.invalid(f"{field}.name", name, m) for m in names.name_is_dns_subdomain(name))
        if group:
            out.append(errors.unsupported(f"{field}.apiGroup", group, [""]))
        if not namespaced and not s.get("namespace"):
            out.append(errors.required(f"{field}.namespace"))
    elif kind in ("User", "Group"):
        if group != RBAC_GROUP:
            out.append(errors.unsupported(f"{field}.apiGroup", group, [RBAC_GROUP]))
    else:
        out.append(errors.unsupported(f"{field}.kind", kind, ["ServiceAccount", "User", "Group"]))
    return out


def validate_binding(obj: dict[str, Any], *, namespaced: bool) -> list[FE]:
    out = _meta(obj, namespaced=namespaced, name_fn=names.name_is_path_segment)
    ref = vm.as_dict(obj.get("roleRef"))
    if (ref.get("apiGroup") or "") != RBAC_GROUP:
        out.append(errors.unsupported("roleRef.apiGroup", ref.get("apiGroup") or "", [RBAC_GROUP]))
    kinds = ["Role", "ClusterRole"] if namespaced else ["ClusterRole"]
    if (ref.get("kind") or "") not in kinds:
        out.append(errors.unsupported("roleRef.kind", ref.get("kind") or "", kinds))
    rname = str(ref.get("name") or "")
    if not rname:
        out.append(errors.required("roleRef.name"))
    else:
        out.extend(errors.invalid("roleRef.name", rname, m) for m in names.is_path_segment_name(rname))
    for i, s in enumerate(vm.dicts(obj.get("subjects"))):
        out.extend(_subject(s, f"subjects[{i}]", namespaced=namespaced))
    return out


def binding_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    nr, orr = vm.as_dict(new.get("roleRef")), vm.as_dict(old.get("roleRef"))
    if nr == orr:
        return []
    value = (f"raw:rbac.RoleRef{{APIGroup:{json.dumps(nr.get('apiGroup') or '')}, "
             f"Kind:{json.dumps(nr.get('kind') or '')}, Name:{json.dumps(nr.get('name') or '')}}}")
    return [errors.invalid("roleRef", value, "cannot change roleRef")]


# --- networking ---------------------------------------------------------------------------

def _ingress_backend(b: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    svc, res = b.get("service"), b.get("resource")
    if svc is not None and res is not None:
        return [errors.invalid(field, "", "cannot set both resource and service backends")]
    if isinstance(res, dict):
        if not res.get("kind"):
            out.append(errors.required(f"{field}.resource.kind"))
        if not res.get("name"):
            out.append(errors.required(f"{field}.resource.name"))
        return out
    if not isinstance(svc, dict):
        return [errors.invalid(field, "", "resource or service backend is required")]
    name = str(svc.get("name") or "")
    if not name:
        out.append(errors.required(f"{field}.service.name"))
    else:
        out.extend(errors.invalid(f"{field}.service.name", name, m) for m in names.name_is_dns1035_label(name))
    port = vm.as_dict(svc.get("port"))
    pname, pnum = str(port.get("name") or ""), vm.num(port.get("number"))
    if pname and pnum:
        out.append(errors.invalid(field, "", "cannot set both port name & port number"))
    elif pname:
        out.extend(errors.invalid(f"{field}.service.port.name", pname, m) for m in names.is_valid_port_name(pname))
    elif pnum:
        out.extend(errors.invalid(f"{field}.service.port.number", pnum, m) for m in names.is_valid_port_num(pnum))
    else:
        out.append(errors.required(field, "port name or number is required"))
    return out


def validate_ingress(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True)
    spec = vm.as_dict(obj.get("spec"))
    rules = vm.dicts(spec.get("rules"))
    if not rules and spec.get("defaultBackend") is None:
        out.append(errors.invalid("spec", "raw:[]networking.IngressRule(nil)",
                                  "either `defaultBackend` or `rules` must be specified"))
    if isinstance(spec.get("defaultBackend"), dict):
        out.extend(_ingress_backend(spec["defaultBackend"], "spec.defaultBackend"))
    for i, rule in enumerate(rules):
        p = f"spec.rules[{i}]"
        host = str(rule.get("host") or "")
        if host:
            if not names.is_valid_ip(host):
                out.append(errors.invalid(f"{p}.host", host, "must be a DNS name, not an IP address"))
            checker = names.is_wildcard_dns1123_subdomain if "*" in host else names.is_dns1123_subdomain
            out.extend(errors.invalid(f"{p}.host", host, m) for m in checker(host))
        http = rule.get("http")
        if http is None:
            continue
        paths = vm.dicts(vm.as_dict(http).get("paths"))
        if not paths:
            out.append(errors.required(f"{p}.http.paths"))
        for j, path in enumerate(paths):
            pp = f"{p}.http.paths[{j}]"
            pt = path.get("pathType")
            pv = str(path.get("path") or "")
            if pt is None:
                out.append(errors.required(f"{pp}.pathType", "pathType must be specified"))
            elif pt not in ("Exact", "Prefix", "ImplementationSpecific"):
                out.append(errors.unsupported(f"{pp}.pathType", pt, ["Exact", "ImplementationSpecific", "Prefix"]))
            if pt in ("Exact", "Prefix"):
                if not pv.startswith("/"):
                    out.append(errors.invalid(f"{pp}.path", pv, "must be an absolute path"))
                elif "//" in pv:
                    out.append(errors.invalid(f"{pp}.path", pv, "must not contain '//'"))
            elif pt == "ImplementationSpecific" and pv and not pv.startswith("/"):
                out.append(errors.invalid(f"{pp}.path", pv, "must be an absolute path"))
            out.extend(_ingress_backend(vm.as_dict(path.get("backend")), f"{pp}.backend"))
    for i, tls in enumerate(vm.dicts(spec.get("tls"))):
        for j, host in enumerate(vm.as_list(tls.get("hosts"))):
            h = str(host)
            checker = names.is_wildcard_dns1123_subdomain if "*" in h else names.is_dns1123_subdomain
            out.extend(errors.invalid(f"spec.tls[{i}].hosts[{j}]", h, m) for m in checker(h))
    icn = spec.get("ingressClassName")
    if icn is not None:
        out.extend(errors.invalid("spec.ingressClassName", icn, m) for m in names.name_is_dns_subdomain(str(icn)))
    return out


def validate_ingress_class(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=False)
    spec = vm.as_dict(obj.get("spec"))
    ctrl = str(spec.get("controller") or "")
    if not ctrl:
        out.append(errors.required("spec.controller"))
    elif len(ctrl) > 250:
        out.append(errors.too_long("spec.controller", 250))
    else:
        out.extend(errors.invalid("spec.controller", ctrl, m) for m in _domain_prefixed_path(ctrl))
    return out


def _domain_prefixed_path(value: str) -> list[str]:
    host, _, path = value.partition("/")
    if not host or not path:
        return ['must be a domain-prefixed path (such as "acme.io/foo")']
    return names.is_dns1123_subdomain(host)


def _np_port(port: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    proto = port.get("protocol")
    if proto is not None and proto not in ("TCP", "UDP", "SCTP"):
        out.append(errors.unsupported(f"{field}.protocol", proto, ["SCTP", "TCP", "UDP"]))
    p = port.get("port")
    if p is None:
        if port.get("endPort") is not None:
            out.append(errors.required(f"{field}.port", "must specify port when endPort is specified"))
        return out
    if isinstance(p, str):
        out.extend(errors.invalid(f"{field}.port", p, m) for m in names.is_valid_port_name(p))
        if port.get("endPort") is not None:
            out.append(errors.invalid(f"{field}.endPort", port["endPort"], "may not be specified when `port` is "
                                                                           "non-numeric"))
    else:
        n = vm.num(p)
        out.extend(errors.invalid(f"{field}.port", n, m) for m in names.is_valid_port_num(n))
        end = port.get("endPort")
        if vm.is_int(end):
            if end < n:
                out.append(errors.invalid(f"{field}.endPort", end, "must be greater than or equal to `port`"))
            out.extend(errors.invalid(f"{field}.endPort", end, m) for m in names.is_valid_port_num(end))
    return out


def _np_peer(peer: dict[str, Any], field: str) -> list[FE]:
    out: list[FE] = []
    kinds = [k for k in ("podSelector", "namespaceSelector", "ipBlock") if peer.get(k) is not None]
    if not kinds:
        out.append(errors.required(field, "must specify a peer"))
    elif len(kinds) > 1 and "ipBlock" in kinds:
        out.append(errors.forbidden(field, "may not specify both ipBlock and another peer"))
    for key in ("podSelector", "namespaceSelector"):
        out.extend(vm.validate_label_selector(peer.get(key), f"{field}.{key}"))
    block = peer.get("ipBlock")
    if isinstance(block, dict):
        out.extend(_ip_block(block, f"{field}.ipBlock"))
    return out


def _ip_block(block: dict[str, Any], field: str) -> list[FE]:
    """kube's ValidateIPBlock: a valid cidr, and each except a valid CIDR strictly inside it."""
    cidr = str(block.get("cidr") or "")
    if not cidr:
        return [errors.required(f"{field}.cidr")]
    out = [errors.invalid(f"{field}.cidr", cidr, m) for m in names.is_valid_cidr(cidr)]
    if out:
        return out
    outer = ipaddress.ip_network(cidr, strict=False)
    for i, ex in enumerate(vm.as_list(block.get("except"))):
        bad = [errors.invalid(f"{field}.except[{i}]", str(ex), m) for m in names.is_valid_cidr(str(ex))]
        if not bad:
            inner = ipaddress.ip_network(str(ex), strict=False)
            if inner.version != outer.version or inner.network_address not in outer \
                    or outer.prefixlen >= inner.prefixlen:
                bad.append(errors.invalid(f"{field}.except[{i}]", str(ex), "must be a strict subset of `cidr`"))
        out.extend(bad)
    return out


def validate_network_policy(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True)
    spec = vm.as_dict(obj.get("spec"))
    out.extend(vm.validate_label_selector(spec.get("podSelector"), "spec.podSelector"))
    for direction, peers in (("ingress", "from"), ("egress", "to")):
        for i, rule in enumerate(vm.dicts(spec.get(direction))):
            p = f"spec.{direction}[{i}]"
            for j, port in enumerate(vm.dicts(rule.get("ports"))):
                out.extend(_np_port(port, f"{p}.ports[{j}]"))
            for j, peer in enumerate(vm.dicts(rule.get(peers))):
                out.extend(_np_peer(peer, f"{p}.{peers}[{j}]"))
    types = vm.as_list(spec.get("policyTypes"))
    if len(types) > 2:
        out.append(errors.invalid("spec.policyTypes", "raw:" + json.dumps(types), "may not specify more than two "
                                                                                  "policyTypes"))
        return out
    for i, t in enumerate(types):
        if t not in ("Ingress", "Egress"):
            out.append(errors.unsupported(f"spec.policyTypes[{i}]", t, ["Ingress", "Egress"]))
    return out


# --- scheduling / coordination / storage -------------------------------------------------

_SYSTEM_CLASSES = {"system-cluster-critical": 2000000000, "system-node-critical": 2000001000}


def validate_priority_class(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=False)
    name = str(vm.as_dict(obj.get("metadata")).get("name") or "")
    value = vm.num(obj.get("value"))
    if name.startswith("system-"):
        err = ""
        if name not in _SYSTEM_CLASSES:
            err = f"{name} is not a known system priority class"
        elif value != _SYSTEM_CLASSES[name]:
            err = f"value of {name} PriorityClass must be {_SYSTEM_CLASSES[name]}"
        elif obj.get("globalDefault"):
            err = f"globalDefault of {name} PriorityClass must be false"
        if err:
            out.append(errors.forbidden("metadata.name", "priority class names with 'system-' prefix are reserved "
                                                         f"for system use only. error: {err}"))
    elif value > 1000000000:
        out.append(errors.forbidden("value", "maximum allowed value of a user defined priority is 1000000000"))
    pp = obj.get("preemptionPolicy")
    if pp is not None and pp not in ("PreemptLowerPriority", "Never"):
        out.append(errors.unsupported("preemptionPolicy", pp, ["PreemptLowerPriority", "Never"]))
    return out


def priority_class_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    out = vm.immutable(new.get("value"), old.get("value"), "value")
    return out + vm.immutable(new.get("preemptionPolicy"), old.get("preemptionPolicy"), "preemptionPolicy")


def validate_lease(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True)
    spec = vm.as_dict(obj.get("spec"))
    lds = spec.get("leaseDurationSeconds")
    if vm.is_int(lds) and lds <= 0:
        out.append(errors.invalid("spec.leaseDurationSeconds", lds, "must be greater than 0"))
    out.extend(names.validate_nonnegative(spec.get("leaseTransitions"), "spec.leaseTransitions"))
    strategy = spec.get("strategy")
    if strategy is not None and strategy != "OldestEmulationVersion":
        out.append(errors.unsupported("spec.strategy", strategy, ["OldestEmulationVersion"]))
    return out


def validate_storage_class(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=False)
    prov = str(obj.get("provisioner") or "")
    if not prov:
        out.append(errors.required("provisioner"))
    elif len(prov) > 63:
        out.append(errors.too_long("provisioner", 63))
    else:
        out.extend(errors.invalid("provisioner", prov, m) for m in names.is_qualified_name(prov.lower()))
    rp = obj.get("reclaimPolicy")
    if rp is not None and rp not in ("Delete", "Retain"):
        out.append(errors.unsupported("reclaimPolicy", rp, ["Delete", "Retain"]))
    vbm = obj.get("volumeBindingMode")
    if vbm is not None and vbm not in ("Immediate", "WaitForFirstConsumer"):
        out.append(errors.unsupported("volumeBindingMode", vbm, ["Immediate", "WaitForFirstConsumer"]))
    return out


def storage_class_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    out: list[FE] = []
    for key in ("parameters", "provisioner", "reclaimPolicy"):
        if new.get(key) != old.get(key):
            out.append(errors.forbidden(key, f"updates to {key} are forbidden."))
    return out + vm.immutable(new.get("volumeBindingMode"), old.get("volumeBindingMode"), "volumeBindingMode")


def validate_endpoint_slice(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True)
    at = obj.get("addressType") or ""
    if at not in ("IPv4", "IPv6", "FQDN"):
        out.append(errors.unsupported("addressType", at, ["FQDN", "IPv4", "IPv6"]))
    for i, p in enumerate(vm.dicts(obj.get("ports"))):
        if p.get("port") is not None:
            n = vm.num(p.get("port"))
            out.extend(errors.invalid(f"ports[{i}].port", n, m) for m in names.is_valid_port_num(n))
    return out


def validate_endpoints(obj: dict[str, Any]) -> list[FE]:
    out = _meta(obj, namespaced=True)
    for i, subset in enumerate(vm.dicts(obj.get("subsets"))):
        for j, a in enumerate(vm.dicts(subset.get("addresses"))):
            ip = str(a.get("ip") or "")
            out.extend(errors.invalid(f"subsets[{i}].addresses[{j}].ip", ip, m) for m in names.is_valid_ip(ip))
        for j, p in enumerate(vm.dicts(subset.get("ports"))):
            n = vm.num(p.get("port"))
            out.extend(errors.invalid(f"subsets[{i}].ports[{j}].port", n, m) for m in names.is_valid_port_num(n))
    return out

