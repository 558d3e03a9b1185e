"""Validation of Pods and PodTemplateSpecs: containers, volumes, env, ports, probes and resources."""

from __future__ import annotations

import functools
import json
from typing import Any

from pocketkube.api import errors, names, quantity
from pocketkube.api import validation_meta as vm
from pocketkube.api import validation_volumes as vv

FE = errors.FieldError
_PROTOCOLS = ["SCTP", "TCP", "UDP"]
_ENV_FIELD_PATHS = ["metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
                    "spec.serviceAccountName", "status.hostIP", "status.hostIPs", "status.podIP", "status.podIPs"]
_RESOURCE_FIELD_PATHS = ["limits.cpu", "limits.ephemeral-storage", "limits.memory", "requests.cpu",
                         "requests.ephemeral-storage", "requests.memory"]
_STANDARD_CONTAINER_RESOURCES = ("cpu", "memory", "ephemeral-storage")
_INTEGER_RESOURCES = {"pods", "quota", "services", "replicationcontrollers", "resourcequotas", "secrets",
                      "configmaps", "persistentvolumeclaims", "services.nodeports", "services.loadbalancers"}


# --- resources -------------------------------------------------------------------------------

def is_native_resource(name: str) -> bool:
    return "/" not in name or "kubernetes.io/" in name


def is_extended_resource(name: str) -> bool:
    if is_native_resource(name) or name.startswith("requests."):
        return False
    return not names.is_qualified_name("requests." + name)


@functools.lru_cache(maxsize=1024)
def _parse_str(text: str) -> quantity.Quantity:
    return quantity.parse(text)


def _parse_quantity(value: Any) -> quantity.Quantity:
    """quantity.parse, remembered for strings: the same few requests and limits recur in every pod."""
    return _parse_str(value) if type(value) is str else quantity.parse(value)


def validate_resource_quantity(name: str, value: Any, field: str) -> list[FE]:
    """ValidateResourceQuantityValue; raises QuantityError for unparsable values (a decode error upstream)."""
    q = _parse_quantity(value)
    out: list[FE] = []
    if q.sign() < 0:
        out.append(errors.invalid(field, str(q), "must be greater than or equal to 0"))
    if (name in _INTEGER_RESOURCES or is_extended_resource(name)) and q.milli_value() % 1000 != 0:
        out.append(errors.invalid(field, str(q), "must be an integer"))
    return out


def _container_resource_name(name: str, field: str) -> list[FE]:
    out = names.validate_qualified_name(name, field)
    if out:
        return out
    if "/" not in name:
        if name not in _STANDARD_CONTAINER_RESOURCES and not name.startswith("hugepages-"):
            return [errors.invalid(field, name, "must be a standard resource for containers")]
    elif not is_native_resource(name) and not is_extended_resource(name):
        return [errors.invalid(field, name, "doesn't follow extended resource name standard")]
    return out


def validate_resource_requirements(res: Any, field: str) -> list[FE]:
    r = vm.as_dict(res)
    limits, requests = vm.as_dict(r.get("limits")), vm.as_dict(r.get("requests"))
    out: list[FE] = []
    lim_cpu_mem = req_cpu_mem = lim_huge = req_huge = False
    for name, value in limits.items():
        p = f"{field}.limits[{name}]"
        out.extend(_container_resource_name(name, p))
        out.extend(validate_resource_quantity(name, value, p))
        lim_huge |= name.startswith("hugepages-")
        lim_cpu_mem |= name in ("cpu", "memory")
    for name, value in requests.items():
        p = f"{field}.requests[{name}]"
        out.extend(_container_resource_name(name, p))
        out.extend(validate_resource_quantity(name, value, p))
        overcommit = is_native_resource(name) and not name.startswith("hugepages-")
        q = _parse_quantity(value)
        if name in limits:
            lim = _parse_quantity(limits[name])
            if q.value != lim.value and not overcommit:
                out.append(errors.invalid(f"{field}.requests", str(q), f"must be equal to {name} limit of {lim}"))
            elif q.value > lim.value:
                out.append(errors.invalid(f"{field}.requests", str(q),
                                          f"must be less than or equal to {name} limit of {lim}"))
        elif not overcommit:
            out.append(errors.required(f"{field}.limits", "Limit must be set for non overcommitable resources"))
        req_huge |= name.startswith("hugepages-")
        req_cpu_mem |= name in ("cpu", "memory")
    if not lim_cpu_mem and not req_cpu_mem and (lim_huge or req_huge):
        out.append(errors.forbidden(field, "HugePages require cpu or memory"))
    return out


# --- containers -----------------------------------------------------------------------------

def _ports(ports: Any, field: str) -> list[FE]:
    out: list[FE] = []
    seen: set[str] = set()
    for i, port in enumerate(vm.dicts(ports)):
        p = f"{field}[{i}]"
        name = str(port.get("name") or "")
        if name:
            msgs = names.is_valid_port_name(name)
            if msgs:
                out.extend(errors.invalid(f"{p}.name", name, m) for m in msgs)
            elif name in seen:
                out.append(errors.duplicate(f"{p}.name", name))
            else:
                seen.add(name)
        cp = vm.num(port.get("containerPort"))
        if cp == 0:
            out.append(errors.required(f"{p}.containerPort"))
        else:
            out.extend(errors.invalid(f"{p}.containerPort", cp, m) for m in names.is_valid_port_num(cp))
        hp = vm.num(port.get("hostPort"))
        if hp:
            out.extend(errors.invalid(f"{p}.hostPort", hp, m) for m in names.is_valid_port_num(hp))
        proto = port.get("protocol") or ""
        if not proto:
            out.append(errors.required(f"{p}.protocol"))
        elif proto not in _PROTOCOLS:
            out.append(errors.unsupported(f"{p}.protocol", proto, _PROTOCOLS))
    return out


def _env(env: Any, field: str) -> list[FE]:
    out: list[FE] = []
    for i, ev in enumerate(vm.dicts(env)):
        p = f"{field}[{i}]"
        name = str(ev.get("name") or "")
        if not name:
            out.append(errors.required(f"{p}.name"))
        else:
            out.extend(errors.invalid(f"{p}.name", name, m) for m in names.is_relaxed_env_var_name(name))
        vf = ev.get("valueFrom")
        if not isinstance(vf, dict):
            continue
        vp = f"{p}.valueFrom"
        n = 0
        if isinstance(vf.get("fieldRef"), dict):
            n += 1
            out.extend(vv.field_selector(vf["fieldRef"], _ENV_FIELD_PATHS, f"{vp}.fieldRef"))
        if isinstance(vf.get("resourceFieldRef"), dict):
            n += 1
            res = str(vf["resourceFieldRef"].get("resource") or "")
            if not res:
                out.append(errors.required(f"{vp}.resourceFieldRef.resource"))
            elif res not in _RESOURCE_FIELD_PATHS and not res.startswith(("requests.hugepages-", "limits.hugepages-")):
                out.append(errors.unsupported(f"{vp}.resourceFieldRef.resource", res, _RESOURCE_FIELD_PATHS))
        for key in ("configMapKeyRef", "secretKeyRef"):
            ref = vf.get(key)
            if isinstance(ref, dict):
                n += 1
                rname = str(ref.get("name") or "")
                out.extend(errors.invalid(f"{vp}.{key}.name", rname, m) for m in names.name_is_dns_subdomain(rname))
                k = str(ref.get("key") or "")
                if not k:
                    out.append(errors.required(f"{vp}.{key}.key"))
                else:
                    out.extend(errors.invalid(f"{vp}.{key}.key", k, m) for m in names.is_config_map_key(k))
        if n == 0:
            out.append(errors.invalid(vp, "", "must specify one of: `fieldRef`, `resourceFieldRef`, "
                                              "`configMapKeyRef` or `secretKeyRef`"))
        elif ev.get("value"):
            out.append(errors.invalid(vp, "", "may not be specified when `value` is not empty"))
        elif n > 1:
            out.append(errors.invalid(vp, "", "may not have more than one field specified at a time"))
    return out


def _env_from(env_from: Any, field: str) -> list[FE]:
    out: list[FE] = []
    for i, ef in enumerate(vm.dicts(env_from)):
        p = f"{field}[{i}]"
        prefix = str(ef.get("prefix") or "")
        if prefix:
            out.extend(errors.invalid(f"{p}.prefix", prefix, m) for m in names.is_relaxed_env_var_name(prefix))
        n = 0
        for key in ("configMapRef", "secretRef"):
            ref = ef.get(key)
            if isinstance(ref, dict):
                n += 1
                rname = str(ref.get("name") or "")
                if not rname:
                    out.append(errors.required(f"{p}.{key}.name"))
                else:
                    out.extend(errors.invalid(f"{p}.{key}.name", rname, m)
                               for m in names.name_is_dns_subdomain(rname, True))
        if n == 0:
            out.append(errors.invalid(field, "", "must specify one of: `configMapRef` or `secretRef`"))
        elif n > 1:
            out.append(errors.invalid(field, "", "may not have more than one field specified at a time"))
    return out


def _volume_mounts(mounts: Any, volumes: dict[str, dict[str, Any]], field: str) -> list[FE]:
    out: list[FE] = []
    paths: set[str] = set()
    for i, m in enumerate(vm.dicts(mounts)):
        p = f"{field}[{i}]"
        name = str(m.get("name") or "")
        if not name:
            out.append(errors.required(f"{p}.name"))
        if name not in volumes:
            out.append(errors.not_found(f"{p}.name", name))
        mp = str(m.get("mountPath") or "")
        if not mp:
            out.append(errors.required(f"{p}.mountPath"))
        if mp in paths:
            out.append(errors.invalid(f"{p}.mountPath", mp, "must be unique"))
        paths.add(mp)
        if m.get("subPath"):
            out.extend(vv.local_descending_path(str(m["subPath"]), f"{field}.subPath"))
        if m.get("subPathExpr"):
            if m.get("subPath"):
                out.append(errors.invalid(f"{p}.subPathExpr", m["subPathExpr"],
                                          "subPathExpr and subPath are mutually exclusive"))
            out.extend(vv.local_descending_path(str(m["subPathExpr"]), f"{field}.subPathExpr"))
        mprop = m.get("mountPropagation")
        if mprop is not None and mprop not in ("Bidirectional", "HostToContainer", "None"):
            out.append(errors.unsupported(f"{field}.mountPropagation", mprop,
                                          ["Bidirectional", "HostToContainer", "None"]))
    return out


def _handler(h: dict[str, Any], field: str, *, lifecycle: bool) -> list[FE]:
    out: list[FE] = []
    count = 0
    kinds = ("exec", "httpGet", "tcpSocket", "sleep") if lifecycle else ("exec", "httpGet", "tcpSocket", "grpc")
    for k in kinds:
        body = h.get(k)
        if body is None:
            continue
        if count:
            out.append(errors.forbidden(f"{field}.{k}", "may not specify more than 1 handler type"))
            continue
        count += 1
        b = vm.as_dict(body)
        p = f"{field}.{k}"
        if k == "exec" and not b.get("command"):
            out.append(errors.required(f"{p}.command"))
        elif k == "httpGet":
            if not b.get("path"):
                out.append(errors.required(f"{p}.path"))
            out.extend(_port_num_or_name(b.get("port"), f"{p}.port"))
            if b.get("scheme") not in ("HTTP", "HTTPS"):
                out.append(errors.unsupported(f"{p}.scheme", b.get("scheme") or "", ["HTTP", "HTTPS"]))
            for hdr in vm.dicts(b.get("httpHeaders")):
                hn = str(hdr.get("name") or "")
                out.extend(errors.invalid(f"{p}.httpHeaders", hn, m) for m in names.is_http_header_name(hn))
        elif k in ("tcpSocket", "grpc"):
            out.extend(_port_num_or_name(b.get("port"), f"{p}.port"))
    if count == 0:
        out.append(errors.required(field, "must specify a handler type"))
    return out


def _port_num_or_name(port: Any, field: str) -> list[FE]:
    if isinstance(port, str):
        return [errors.invalid(field, port, m) for m in names.is_valid_port_name(port)]
    n = vm.num(port)
    return [errors.invalid(field, n, m) for m in names.is_valid_port_num(n)]


def _probe(probe: Any, field: str, *, which: str) -> list[FE]:
    if not isinstance(probe, dict):
        return []
    out = _handler(probe, field, lifecycle=False)
    for key in ("initialDelaySeconds", "timeoutSeconds", "periodSeconds", "successThreshold", "failureThreshold"):
        out.extend(names.validate_nonnegative(probe.get(key), f"{field}.{key}"))
    tgp = probe.get("terminationGracePeriodSeconds")
    if vm.is_int(tgp) and tgp <= 0:
        out.append(errors.invalid(f"{field}.terminationGracePeriodSeconds", tgp, "must be greater than 0"))
    if which in ("liveness", "startup") and vm.num(probe.get("successThreshold"), 1) != 1:
        out.append(errors.invalid(f"{field}.successThreshold", probe.get("successThreshold"), "must be 1"))
    if which == "readiness" and tgp is not None:
        out.append(errors.invalid(f"{field}.terminationGracePeriodSeconds", tgp, "must not be set for readinessProbes"))
    return out


def _container_common(c: dict[str, Any], volumes: dict[str, dict[str, Any]], field: str) -> list[FE]:
    out: list[FE] = []
    name = str(c.get("name") or "")
    if not name:
        out.append(errors.required(f"{field}.name"))
    else:
        out.extend(names.validate_dns1123_label(name, f"{field}.name"))
    if not c.get("image"):
        out.append(errors.required(f"{field}.image"))
    tmp = c.get("terminationMessagePolicy") or ""
    if not tmp:
        out.append(errors.required(f"{field}.terminationMessagePolicy"))
    elif tmp not in ("File", "FallbackToLogsOnError"):
        out.append(errors.unsupported(f"{field}.terminationMessagePolicy", tmp, ["File", "FallbackToLogsOnError"]))
    out.extend(_ports(c.get("ports"), f"{field}.ports"))
    out.extend(_env(c.get("env"), f"{field}.env"))
    out.extend(_env_from(c.get("envFrom"), f"{field}.envFrom"))
    out.extend(_volume_mounts(c.get("volumeMounts"), volumes, f"{field}.volumeMounts"))
    pp = c.get("imagePullPolicy") or ""
    if not pp:
        out.append(errors.required(f"{field}.imagePullPolicy"))
    elif pp not in ("Always", "IfNotPresent", "Never"):
        out.append(errors.unsupported(f"{field}.imagePullPolicy", pp, ["Always", "IfNotPresent", "Never"]))
    out.extend(validate_resource_requirements(c.get("resources"), f"{field}.resources"))
    return out


def _host_port_conflicts(containers: list[dict[str, Any]], field: str) -> list[FE]:
    out: list[FE] = []
    seen: set[str] = set()
    for ci, c in enumerate(containers):
        for pi, port in enumerate(vm.dicts(c.get("ports"))):
            hp = vm.num(port.get("hostPort"))
            if not hp:
                continue
            key = f"{port.get('protocol') or ''}/{port.get('hostIP') or ''}/{hp}"
            if key in seen:
                out.append(errors.duplicate(f"{field}[{ci}].ports[{pi}].hostPort", key))
            seen.add(key)
    return out


def _containers(containers: Any, volumes: dict[str, dict[str, Any]], field: str) -> list[FE]:
    cs = vm.dicts(containers)
    if not cs:
        return [errors.required(field)]
    out: list[FE] = []
    seen: set[str] = set()
    for i, c in enumerate(cs):
        p = f"{field}[{i}]"
        out.extend(_container_common(c, volumes, p))
        name = c.get("name") or ""
        if name in seen:
            out.append(errors.duplicate(f"{p}.name", name))
        seen.add(name)
        if isinstance(c.get("lifecycle"), dict):
            for hk in ("postStart", "preStop"):
                if isinstance(c["lifecycle"].get(hk), dict):
                    out.extend(_handler(c["lifecycle"][hk], f"{p}.lifecycle.{hk}", lifecycle=True))
        out.extend(_probe(c.get("livenessProbe"), f"{p}.livenessProbe", which="liveness"))
        out.extend(_probe(c.get("readinessProbe"), f"{p}.readinessProbe", which="readiness"))
        out.extend(_probe(c.get("startupProbe"), f"{p}.startupProbe", which="startup"))
        if c.get("restartPolicy") is not None:
            out.append(errors.forbidden(f"{p}.restartPolicy", "may not be set for non-init containers"))
    return out + _host_port_conflicts(cs, field)


def _init_containers(inits: Any, regular: Any, volumes: dict[str, dict[str, Any]], field: str) -> list[FE]:
    out: list[FE] = []
    seen = {c.get("name") for c in vm.dicts(regular)}
    for i, c in enumerate(vm.dicts(inits)):
        p = f"{field}[{i}]"
        out.extend(_container_common(c, volumes, p))
        rp = c.get("restartPolicy")
        if rp is not None and rp != "Always":
            out.append(errors.unsupported(f"{p}.restartPolicy", rp, ["Always"]))
        name = c.get("name") or ""
        if name in seen:
            out.append(errors.duplicate(f"{p}.name", name))
        elif name:
            seen.add(name)
        out.extend(_host_port_conflicts([c], field))
        if rp == "Always":
            out.extend(_probe(c.get("livenessProbe"), f"{p}.livenessProbe", which="liveness"))
            out.extend(_probe(c.get("readinessProbe"), f"{p}.readinessProbe", which="readiness"))
            out.extend(_probe(c.get("startupProbe"), f"{p}.startupProbe", which="startup"))
        else:
            for key in ("lifecycle", "livenessProbe", "readinessProbe", "startupProbe"):
                if c.get(key) is not None:
                    out.append(errors.forbidden(f"{p}.{key}",
                                                "may not be set for init containers without restartPolicy=Always"))
    return out


# --- pod spec -------------------------------------------------------------------------------

def _tolerations(tols: Any, field: str) -> list[FE]:
    out: list[FE] = []
    for i, t in enumerate(vm.dicts(tols)):
        p = f"{field}[{i}]"
        key = str(t.get("key") or "")
        op = t.get("operator") or ""
        if key:
            out.extend(names.validate_label_name(key, f"{p}.key"))
        if not key and op != "Exists":
            out.append(errors.invalid(f"{p}.operator", op, "operator must be Exists when `key` is empty, which "
                                                           'means "match all values and all keys"'))
        effect = t.get("effect") or ""
        if t.get("tolerationSeconds") is not None and effect != "NoExecute":
            out.append(errors.invalid(f"{p}.effect", effect, "effect must be 'NoExecute' when `tolerationSeconds` "
                                                             "is set"))
        value = str(t.get("value") or "")
        if op in ("Equal", ""):
            errs = names.is_label_value(value)
            if errs:
                out.append(errors.invalid(f"{p}.operator", value, ";".join(errs)))
        elif op == "Exists":
            if value:
                out.append(errors.invalid(f"{p}.operator", value, "value must be empty when `operator` is 'Exists'"))
        else:
            out.append(errors.unsupported(f"{p}.operator", op, ["Equal", "Exists"]))
        if effect and effect not in ("NoSchedule", "PreferNoSchedule", "NoExecute"):
            out.append(errors.unsupported(f"{p}.effect", effect, ["NoSchedule", "PreferNoSchedule", "NoExecute"]))
    return out


def validate_pod_spec(spec: Any, field: str) -> list[FE]:
    """ValidatePodSpec, in Kubernetes' order."""
    s = vm.as_dict(spec)
    out: list[FE] = []
    if s.get("terminationGracePeriodSeconds") is None:
        out.append(errors.required(f"{field}.terminationGracePeriodSeconds"))
    volumes, verrs = vv.validate_volumes(s.get("volumes"), f"{field}.volumes")
    out.extend(verrs)
    out.extend(_containers(s.get("containers"), volumes, f"{field}.containers"))
    out.extend(_init_containers(s.get("initContainers"), s.get("containers"), volumes, f"{field}.initContainers"))
    if s.get("hostNetwork") is True:
        for i, c in enumerate(vm.dicts(s.get("containers"))):
            for j, port in enumerate(vm.dicts(c.get("ports"))):
                hp, cp = vm.num(port.get("hostPort")), vm.num(port.get("containerPort"))
                if hp != 0 and hp != cp:
                    out.append(errors.invalid(f"{field}.containers[{i}].ports[{j}].hostPort", hp,
                                              "must match `containerPort` when `hostNetwork` is true"))
    rp = s.get("restartPolicy") or ""
    if not rp:
        out.append(errors.required(f"{field}.restartPolicy"))
    elif rp not in ("Always", "OnFailure", "Never"):
        out.append(errors.unsupported(f"{field}.restartPolicy", rp, ["Always", "OnFailure", "Never"]))
    dp = s.get("dnsPolicy") or ""
    if not dp:
        out.append(errors.required(f"{field}.dnsPolicy"))
    elif dp not in ("ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"):
        out.append(errors.unsupported(f"{field}.dnsPolicy", dp, ["ClusterFirstWithHostNet", "ClusterFirst",
                                                                 "Default", "None"]))
    out.extend(names.validate_labels(s.get("nodeSelector"), f"{field}.nodeSelector"))
    for i, ips in enumerate(vm.dicts(s.get("imagePullSecrets"))):
        if set(ips) - {"name"}:
            out.append(errors.invalid(f"{field}.imagePullSecrets[{i}]",
                                      "raw:" + json.dumps(ips, separators=(",", ":")), "only name may be set"))
    if dp == "None":
        dc = s.get("dnsConfig")
        if not isinstance(dc, dict):
            out.append(errors.required(f"{field}.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"))
        elif not dc.get("nameservers"):
            out.append(errors.required(f"{field}.dnsConfig.nameservers",
                                       "must provide at least one DNS nameserver when `dnsPolicy` is None"))
    for i, g in enumerate(vm.dicts(s.get("readinessGates"))):
        out.extend(names.validate_qualified_name(str(g.get("conditionType") or ""),
                                                 f"{field}.readinessGates[{i}].conditionType"))
    sa = str(s.get("serviceAccountName") or "")
    if sa:
        out.extend(errors.invalid(f"{field}.serviceAccountName", sa, m) for m in names.name_is_dns_subdomain(sa))
    node = str(s.get("nodeName") or "")
    if node:
        out.extend(errors.invalid(f"{field}.nodeName", node, m) for m in names.name_is_dns_subdomain(node))
    ads = s.get("activeDeadlineSeconds")
    if ads is not None and (not vm.is_int(ads) or not 1 <= ads <= 2147483647):
        out.append(errors.invalid(f"{field}.activeDeadlineSeconds", ads, names.inclusive_range_error(1, 2147483647)))
    for key in ("hostname", "subdomain"):
        if s.get(key):
            out.extend(names.validate_dns1123_label(str(s[key]), f"{field}.{key}"))
    out.extend(_tolerations(s.get("tolerations"), f"{field}.tolerations"))
    for i, ha in enumerate(vm.dicts(s.get("hostAliases"))):
        ip = str(ha.get("ip") or "")
        out.extend(errors.invalid(f"{field}.hostAliases[{i}].ip", ip, m) for m in names.is_valid_ip(ip))
        for j, hn in enumerate(vm.as_list(ha.get("hostnames"))):
            out.extend(names.validate_dns1123_subdomain(str(hn), f"{field}.hostAliases[{i}].hostnames[{j}]"))
    pcn = str(s.get("priorityClassName") or "")
    if pcn:
        out.extend(errors.invalid(f"{field}.priorityClassName", pcn, m) for m in names.name_is_dns_subdomain(pcn))
    if s.get("runtimeClassName") is not None:
        rcn = str(s["runtimeClassName"])
        out.extend(errors.invalid(f"{field}.runtimeClassName", rcn, m) for m in names.name_is_dns_subdomain(rcn))
    pp = s.get("preemptionPolicy")
    if pp is not None and pp not in ("PreemptLowerPriority", "Never"):
        out.append(errors.unsupported(f"{field}.preemptionPolicy", pp, ["PreemptLowerPriority", "Never"]))
    if isinstance(s.get("os"), dict) and s["os"].get("name") not in ("linux", "windows"):
        out.append(errors.unsupported(f"{field}.os.name", s["os"].get("name") or "", ["linux", "windows"]))
    return out


def validate_pod_template_spec(tmpl: Any, field: str) -> list[FE]:
    t = vm.as_dict(tmpl)
    meta = vm.as_dict(t.get("metadata"))
    # Kubernetes names these paths `<template>.labels`, without `metadata`.
    out = names.validate_labels(meta.get("labels"), f"{field}.labels")
    out.extend(names.validate_annotations(meta.get("annotations"), f"{field}.annotations"))
    spec = vm.as_dict(t.get("spec"))
    out.extend(validate_pod_spec(spec, f"{field}.spec"))
    if spec.get("ephemeralContainers"):
        out.append(errors.forbidden(f"{field}.spec.ephemeralContainers",
                                    "ephemeral containers not allowed in pod template"))
    return out


def validate_pod(obj: dict[str, Any]) -> list[FE]:
    meta = vm.as_dict(obj.get("metadata"))
    out = vm.validate_metadata(meta, namespaced=True, name_validator=names.name_is_dns_subdomain)
    spec = vm.as_dict(obj.get("spec"))
    out.extend(validate_pod_spec(spec, "spec"))
    if not spec.get("serviceAccountName"):
        for vi, v in enumerate(vm.dicts(spec.get("volumes"))):
            for si, src in enumerate(vm.dicts(vm.as_dict(v.get("projected")).get("sources"))):
                if src.get("serviceAccountToken") is not None:
                    out.append(errors.forbidden(
                        f"spec.volumes[{vi}].projected.sources[{si}].serviceAccountToken",
                        "must not be specified when serviceAccountName is not set"))
    for key in ("containers", "initContainers"):
        for i, c in enumerate(vm.dicts(spec.get(key))):
            image = c.get("image")
            if isinstance(image, str) and image != image.strip():
                out.append(errors.invalid(f"spec.{key}[{i}].image", image,
                                          "must not have leading or trailing whitespace"))
    return out


def validate_pod_create(obj: dict[str, Any]) -> list[FE]:
    out = validate_pod(obj)
    spec = vm.as_dict(obj.get("spec"))
    if spec.get("ephemeralContainers"):
        out.append(errors.forbidden("spec.ephemeralContainers", "cannot be set on create"))
    if spec.get("nodeName") and spec.get("schedulingGates"):
        out.append(errors.forbidden("spec.nodeName", "cannot be set until all schedulingGates have been cleared"))
    return out


_POD_UPDATE_MSG = ("pod updates may not change fields other than `spec.containers[*].image`,"
                   "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions "
                   "to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was "
                   "previously negative)")


def validate_pod_update(new: dict[str, Any], old: dict[str, Any]) -> list[FE]:
    out = vm.validate_metadata_update(new.get("metadata"), old.get("metadata"))
    out.extend(validate_pod(new))
    ns, os_ = vm.as_dict(new.get("spec")), vm.as_dict(old.get("spec"))
    ads_new, ads_old = ns.get("activeDeadlineSeconds"), os_.get("activeDeadlineSeconds")
    if ads_old is not None and (ads_new is None or (vm.is_int(ads_new) and vm.is_int(ads_old) and ads_new > ads_old)):
        out.append(errors.invalid("spec.activeDeadlineSeconds", ads_new,
                                  "must be less than or equal to previous value"))
    mutable = json.loads(json.dumps(ns))
    for key in ("containers", "initContainers"):
        olds = vm.dicts(os_.get(key))
        for i, c in enumerate(vm.dicts(mutable.get(key))):
            if i < len(olds):
                c["image"] = olds[i].get("image")
    mutable["activeDeadlineSeconds"] = os_.get("activeDeadlineSeconds")
    old_tols = vm.as_list(os_.get("tolerations"))
    new_tols = vm.as_list(ns.get("tolerations"))
    if all(t in new_tols for t in old_tols):
        mutable["tolerations"] = os_.get("tolerations")
    elif old_tols:
        out.append(errors.forbidden("spec.tolerations",
                                    "existing toleration can not be modified except its tolerationSeconds"))
        mutable["tolerations"] = os_.get("tolerations")
    mutable.pop("ephemeralContainers", None)
    compare_old = {k: v for k, v in os_.items() if k != "ephemeralContainers"}
    for key in ("activeDeadlineSeconds", "tolerations"):
        if mutable.get(key) is None:
            mutable.pop(key, None)
        if compare_old.get(key) is None:
            compare_old.pop(key, None)
    if vm.is_int(os_.get("terminationGracePeriodSeconds")) and os_["terminationGracePeriodSeconds"] < 0 \
            and ns.get("terminationGracePeriodSeconds") == 1:
        mutable["terminationGracePeriodSeconds"] = os_["terminationGracePeriodSeconds"]
    if mutable != compare_old:
        changed = sorted(k for k in set(mutable) | set(compare_old) if mutable.get(k) != compare_old.get(k))
        diff = "\n".join(f"  \t{k}: changed" for k in changed)
        out.append(errors.forbidden("spec", f"{_POD_UPDATE_MSG}\n  core.PodSpec{{\n{diff}\n  }}\n"))
    return out
