"""Table printers of the core/v1 kinds, as kube-apiserver 1.32 prints them."""

from __future__ import annotations

import datetime
from typing import Any

from pocketkube.api import tables_docs as docs
from pocketkube.api import tables_fmt as fmt
from pocketkube.api.tables_fmt import AGE, NAME, NONE, Printer, col

Obj = dict[str, Any]
Now = datetime.datetime

# --- Pod ------------------------------------------------------------------------------------

_POD_SUCCEEDED = [{"type": "Completed", "status": "True", "reason": "Succeeded",
                   "message": "The pod has completed successfully."}]
_POD_FAILED = [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]


def _finished_at(status: Obj) -> datetime.datetime | None:
    return fmt.parse_time(fmt.dig(status, "lastState", "terminated", "finishedAt"))


def _terminated_reason(term: Obj, prefix: str) -> str:
    if term.get("reason"):
        return prefix + term["reason"]
    if fmt.as_int(term.get("signal")):
        return f"{prefix}Signal:{fmt.as_int(term.get('signal'))}"
    return f"{prefix}ExitCode:{fmt.as_int(term.get('exitCode'))}"


def pod_cells(pod: Obj, now: Now) -> list[Any]:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    conditions = status.get("conditions") or []
    containers = spec.get("containers") or []
    total = len(containers)
    ready = 0
    restarts = 0
    restartable_restarts = 0
    last_restart: datetime.datetime | None = None
    last_restartable: datetime.datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for c in conditions:
        if c.get("type") == "PodScheduled" and c.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    restartable = set()
    init_specs = spec.get("initContainers") or []
    for ic in init_specs:
        if ic.get("restartPolicy") == "Always":
            restartable.add(ic.get("name"))
            total += 1

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        count = fmt.as_int(cs.get("restartCount"))
        restarts += count
        finished = _finished_at(cs)
        if finished is not None and (last_restart is None or finished > last_restart):
            last_restart = finished
        is_sidecar = cs.get("name") in restartable
        if is_sidecar:
            restartable_restarts += count
            if finished is not None and (last_restartable is None or finished > last_restartable):
                last_restartable = finished
        state = cs.get("state") or {}
        term = state.get("terminated")
        waiting = state.get("waiting")
        if term is not None and fmt.as_int(term.get("exitCode")) == 0:
            continue
        if is_sidecar and cs.get("started") is True:
            if cs.get("ready"):
                ready += 1
            continue
        if term is not None:
            reason = _terminated_reason(term, "Init:")
        elif waiting is not None and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break

    if not initializing or fmt.condition_true(conditions, "Initialized"):
        restarts = restartable_restarts
        last_restart = last_restartable
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += fmt.as_int(cs.get("restartCount"))
            finished = _finished_at(cs)
            if finished is not None and (last_restart is None or finished > last_restart):
                last_restart = finished
            state = cs.get("state") or {}
            waiting = state.get("waiting")
            term = state.get("terminated")
            if waiting is not None and waiting.get("reason"):
                reason = waiting["reason"]
            elif term is not None:
                reason = _terminated_reason(term, "")
            elif cs.get("ready") and state.get("running") is not None:
                has_running = True
                ready += 1
        # A pod whose last container completed while another still runs is not Completed.
        if reason == "Completed" and has_running:
            reason = "Running" if fmt.condition_true(conditions, "Ready") else "NotReady"

    if meta.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif meta.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_cell = str(restarts)
    if restarts and last_restart is not None and last_restart.year != 1:
        restarts_cell = f"{restarts} ({fmt.human_duration(fmt.span_us(now, last_restart))} ago)"

    ips = status.get("podIPs") or []
    # Conversion from v1 fills podIPs from podIP when only the latter is set.
    pod_ip = (ips[0].get("ip") if ips and isinstance(ips[0], dict) else status.get("podIP")) or NONE
    gates = spec.get("readinessGates") or []
    gates_cell = NONE
    if gates:
        true_count = 0
        for g in gates:
            for c in conditions:
                if c.get("type") == g.get("conditionType"):
                    if c.get("status") == "True":
                        true_count += 1
                    break
        gates_cell = f"{true_count}/{len(gates)}"
    return [meta.get("name") or "", f"{ready}/{total}", reason, restarts_cell, fmt.age(pod, now),
            pod_ip, spec.get("nodeName") or NONE, status.get("nominatedNodeName") or NONE, gates_cell]


def pod_conditions(pod: Obj) -> list[dict[str, str]] | None:
    phase = (pod.get("status") or {}).get("phase")
    if phase == "Succeeded":
        return _POD_SUCCEEDED
    if phase == "Failed":
        return _POD_FAILED
    return None


POD = Printer([
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    col("IP", "string", docs.POD_IP, priority=1),
    col("Node", "string", docs.POD_NODE, priority=1),
    col("Nominated Node", "string", docs.POD_NOMINATED, priority=1),
    col("Readiness Gates", "string", docs.POD_GATES, priority=1),
], pod_cells, pod_conditions)


def _pod_template_cells(obj: Obj, now: Now) -> list[Any]:
    template = obj.get("template") or {}
    names, images = fmt.containers_cells(template.get("spec"))
    return [fmt.name(obj), names, images, fmt.format_labels(fmt.dig(template, "metadata", "labels"))]


POD_TEMPLATE = Printer([
    NAME,
    col("Containers", "string", fmt.CONTAINERS),
    col("Images", "string", fmt.IMAGES),
    col("Pod Labels", "string", "The labels for the pod template."),
], _pod_template_cells)


def _rc_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    names, images = fmt.containers_cells(fmt.dig(spec, "template", "spec"))
    return [fmt.name(obj), fmt.as_int(spec.get("replicas"), 1), fmt.as_int(status.get("replicas")),
            fmt.as_int(status.get("readyReplicas")), fmt.age(obj, now), names, images,
            fmt.format_labels(spec.get("selector"))]


REPLICATION_CONTROLLER = Printer([
    NAME,
    col("Desired", "integer", docs.RC_REPLICAS),
    col("Current", "integer", docs.RC_STATUS_REPLICAS),
    col("Ready", "integer", docs.RC_READY),
    AGE, fmt.CONTAINERS_WIDE, fmt.IMAGES_WIDE,
    col("Selector", "string", docs.RC_SELECTOR, priority=1),
], _rc_cells)

# --- Service / Endpoints --------------------------------------------------------------------


def _lb_ingress(status: Any) -> str:
    seen = set()
    for ing in fmt.dig(status, "loadBalancer", "ingress") or []:
        if ing.get("ip"):
            seen.add(ing["ip"])
        elif ing.get("hostname"):
            seen.add(ing["hostname"])
    # Server-side tables are always wide, so the 16-character clipping never applies.
    return ",".join(sorted(seen))


def _service_external_ip(svc: Obj) -> str:
    spec = svc.get("spec") or {}
    external = spec.get("externalIPs") or []
    svc_type = spec.get("type")
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else NONE
    if svc_type == "LoadBalancer":
        lb = _lb_ingress(svc.get("status"))
        if external:
            return ",".join(([*lb.split(",")] if lb else []) + list(external))
        return lb or "<pending>"
    if svc_type == "ExternalName":
        return spec.get("externalName") or ""
    return fmt.UNKNOWN


def _service_cells(svc: Obj, now: Now) -> list[Any]:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    pieces = []
    for p in spec.get("ports") or []:
        port, proto = fmt.as_int(p.get("port")), p.get("protocol") or ""
        node_port = fmt.as_int(p.get("nodePort"))
        pieces.append(f"{port}:{node_port}/{proto}" if node_port > 0 else f"{port}/{proto}")
    return [fmt.name(svc), spec.get("type") or "", ips[0] if ips else NONE, _service_external_ip(svc),
            ",".join(pieces) or NONE, fmt.age(svc, now), fmt.format_labels(spec.get("selector"))]


SERVICE = Printer([
    NAME,
    col("Type", "string", docs.SVC_TYPE),
    col("Cluster-IP", "string", docs.SVC_CLUSTER_IP),
    col("External-IP", "string", docs.SVC_EXTERNAL_IPS),
    col("Port(s)", "string", docs.SVC_PORTS),
    AGE,
    col("Selector", "string", docs.SVC_SELECTOR, priority=1),
], _service_cells)


def _join_host_port(ip: str, port: int) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def format_endpoints(obj: Obj) -> str:
    subsets = obj.get("subsets") or []
    if not subsets:
        return NONE
    out: list[str] = []
    limit, more, count = 3, False, 0
    for ss in subsets:
        addresses = ss.get("addresses") or []
        ports = ss.get("ports") or []
        if not ports:
            # Headless services may publish addresses without ports.
            count += len(addresses)
            for a in addresses:
                if len(out) == limit:
                    more = True
                    break
                out.append(a.get("ip", ""))
            continue
        for port in ports:
            count += len(addresses)
            for a in addresses:
                if len(out) == limit:
                    more = True
                    break
                out.append(_join_host_port(a.get("ip", ""), fmt.as_int(port.get("port"))))
    ret = ",".join(out)
    return f"{ret} + {count - limit} more..." if more else ret


ENDPOINTS = Printer([NAME, col("Endpoints", "string", docs.EP_SUBSETS), AGE],
                    lambda o, now: [fmt.name(o), format_endpoints(o), fmt.age(o, now)])

# --- Node / Namespace ------------------------------------------------------------------------


def _node_cells(node: Obj, now: Now) -> list[Any]:
    status = node.get("status") or {}
    state = []
    for c in status.get("conditions") or []:
        if c.get("type") == "Ready":
            state = ["Ready" if c.get("status") == "True" else "NotReady"]
    if not state:
        state = ["Unknown"]
    if fmt.dig(node, "spec", "unschedulable"):
        state.append("SchedulingDisabled")
    roles = set()
    for k, v in (fmt.dig(node, "metadata", "labels") or {}).items():
        if k.startswith("node-role.kubernetes.io/"):
            role = k[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    info = status.get("nodeInfo") or {}

    def address(kind: str) -> str:
        for a in status.get("addresses") or []:
            if a.get("type") == kind:
                return a.get("address", "")
        return NONE

    return [fmt.name(node), ",".join(state), ",".join(sorted(roles)) or NONE, fmt.age(node, now),
            info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
            info.get("osImage") or fmt.UNKNOWN, info.get("kernelVersion") or fmt.UNKNOWN,
            info.get("containerRuntimeVersion") or fmt.UNKNOWN]


NODE = Printer([
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", docs.NODE_KUBELET),
    col("Internal-IP", "string", docs.NODE_ADDRESSES, priority=1),
    col("External-IP", "string", docs.NODE_ADDRESSES, priority=1),
    col("OS-Image", "string", docs.NODE_OS_IMAGE, priority=1),
    col("Kernel-Version", "string", docs.NODE_KERNEL, priority=1),
    col("Container-Runtime", "string", docs.NODE_RUNTIME, priority=1),
], _node_cells)

NAMESPACE = Printer([NAME, col("Status", "string", "The status of the namespace"), AGE],
                    lambda o, now: [fmt.name(o), fmt.dig(o, "status", "phase") or "", fmt.age(o, now)])

# --- Event -----------------------------------------------------------------------------------


def event_cells(ev: Obj, now: Now) -> list[Any]:
    first = fmt.since(ev.get("firstTimestamp"), now)
    if fmt.parse_time(ev.get("firstTimestamp")) is None:
        first = fmt.since(ev.get("eventTime"), now)
    last = first if fmt.parse_time(ev.get("lastTimestamp")) is None else fmt.since(ev.get("lastTimestamp"), now)
    count = fmt.as_int(ev.get("count"))
    series = ev.get("series")
    if isinstance(series, dict):
        last = fmt.since(series.get("lastObservedTime"), now)
        count = fmt.as_int(series.get("count"))
    elif count == 0:
        # Singleton events of the events.k8s.io API carry no count.
        count = 1
    involved = ev.get("involvedObject") or {}
    kind = (involved.get("kind") or "").lower()
    target = f"{kind}/{involved['name']}" if involved.get("name") else kind
    source = ev.get("source") or {}
    component = source.get("component") or ev.get("reportingComponent") or ""
    host = source.get("host") or ev.get("reportingInstance") or ""
    return [last, ev.get("type") or "", ev.get("reason") or "", target, involved.get("fieldPath") or "",
            f"{component}, {host}" if host else component, (ev.get("message") or "").strip(), first, count,
            fmt.name(ev)]


def events_v1_to_core(ev: Obj) -> Obj:
    """The core/v1 view of an events.k8s.io/v1 Event, as the server converts it before printing."""
    out = {"metadata": ev.get("metadata") or {}, "involvedObject": ev.get("regarding") or {},
           "reason": ev.get("reason"), "message": ev.get("note"), "type": ev.get("type"),
           "source": ev.get("deprecatedSource") or {}, "firstTimestamp": ev.get("deprecatedFirstTimestamp"),
           "lastTimestamp": ev.get("deprecatedLastTimestamp"), "count": ev.get("deprecatedCount"),
           "eventTime": ev.get("eventTime"), "series": ev.get("series"),
           "reportingComponent": ev.get("reportingController"), "reportingInstance": ev.get("reportingInstance")}
    return out


EVENT = Printer([
    col("Last Seen", "string", docs.EV_LAST),
    col("Type", "string", docs.EV_TYPE),
    col("Reason", "string", docs.EV_REASON),
    col("Object", "string", docs.EV_OBJECT),
    col("Subobject", "string", docs.EV_FIELD_PATH, priority=1),
    col("Source", "string", docs.EV_SOURCE, priority=1),
    col("Message", "string", docs.EV_MESSAGE),
    col("First Seen", "string", docs.EV_FIRST, priority=1),
    col("Count", "string", docs.EV_COUNT, priority=1),
    col("Name", "string", docs.META_NAME, format_="name", priority=1),
], event_cells)

EVENT_V1 = Printer(EVENT.columns, lambda o, now: event_cells(events_v1_to_core(o), now))

# --- Config and storage ----------------------------------------------------------------------

SECRET = Printer([NAME, col("Type", "string", docs.SECRET_TYPE), col("Data", "string", docs.SECRET_DATA), AGE],
                 lambda o, now: [fmt.name(o), o.get("type") or "", len(o.get("data") or {}), fmt.age(o, now)])

SERVICE_ACCOUNT = Printer([NAME, col("Secrets", "string", docs.SA_SECRETS), AGE],
                          lambda o, now: [fmt.name(o), len(o.get("secrets") or []), fmt.age(o, now)])

CONFIG_MAP = Printer(
    [NAME, col("Data", "string", docs.CM_DATA), AGE],
    lambda o, now: [fmt.name(o), len(o.get("data") or {}) + len(o.get("binaryData") or {}), fmt.age(o, now)])


def _access_modes(modes: Any) -> str:
    have = set(modes or [])
    return ",".join(short for long_, short in (("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"),
                                                ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP"))
                    if long_ in have)


_CLASS_ANNOTATION = "volume.beta.kubernetes.io/storage-class"


def _phase(obj: Obj) -> str:
    if fmt.dig(obj, "metadata", "deletionTimestamp"):
        return "Terminating"
    return fmt.dig(obj, "status", "phase") or ""


def _pv_cells(pv: Obj, now: Now) -> list[Any]:
    spec = pv.get("spec") or {}
    claim = spec.get("claimRef")
    claim_cell = f"{claim.get('namespace', '')}/{claim.get('name', '')}" if isinstance(claim, dict) else ""
    annotations = fmt.dig(pv, "metadata", "annotations") or {}
    storage_class = annotations[_CLASS_ANNOTATION] if _CLASS_ANNOTATION in annotations else spec.get("storageClassName") or ""
    return [fmt.name(pv), fmt.quantity((spec.get("capacity") or {}).get("storage")), _access_modes(spec.get("accessModes")),
            spec.get("persistentVolumeReclaimPolicy") or "", _phase(pv), claim_cell, storage_class,
            spec.get("volumeAttributesClassName") or fmt.UNSET, fmt.dig(pv, "status", "reason") or "",
            fmt.age(pv, now), spec.get("volumeMode") or fmt.UNSET]


PERSISTENT_VOLUME = Printer([
    NAME,
    col("Capacity", "string", docs.PV_CAPACITY),
    col("Access Modes", "string", docs.PV_MODES),
    col("Reclaim Policy", "string", docs.PV_RECLAIM),
    col("Status", "string", docs.PV_PHASE),
    col("Claim", "string", docs.PV_CLAIM),
    col("StorageClass", "string", "StorageClass of the pv"),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    col("Reason", "string", docs.PV_REASON),
    AGE,
    col("VolumeMode", "string", docs.PV_VOLUME_MODE, priority=1),
], _pv_cells)


def _pvc_cells(pvc: Obj, now: Now) -> list[Any]:
    spec = pvc.get("spec") or {}
    status = pvc.get("status") or {}
    capacity = modes = ""
    if spec.get("volumeName"):
        modes = _access_modes(status.get("accessModes"))
        capacity = fmt.quantity((status.get("capacity") or {}).get("storage"))
    annotations = fmt.dig(pvc, "metadata", "annotations") or {}
    storage_class = annotations[_CLASS_ANNOTATION] if _CLASS_ANNOTATION in annotations else spec.get("storageClassName") or ""
    return [fmt.name(pvc), _phase(pvc), spec.get("volumeName") or "", capacity, modes, storage_class,
            spec.get("volumeAttributesClassName") or fmt.UNSET, fmt.age(pvc, now), spec.get("volumeMode") or fmt.UNSET]


PERSISTENT_VOLUME_CLAIM = Printer([
    NAME,
    col("Status", "string", docs.PVC_PHASE),
    col("Volume", "string", docs.PVC_VOLUME),
    col("Capacity", "string", docs.PVC_CAPACITY),
    col("Access Modes", "string", docs.PVC_MODES),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pvc"),
    AGE,
    col("VolumeMode", "string", docs.PVC_VOLUME_MODE, priority=1),
], _pvc_cells)


def _component_status_cells(obj: Obj, now: Now) -> list[Any]:
    status, message, error = "Unknown", "", ""
    for c in obj.get("conditions") or []:
        if c.get("type") == "Healthy":
            status = "Healthy" if c.get("status") == "True" else "Unhealthy"
            message, error = c.get("message") or "", c.get("error") or ""
            break
    return [fmt.name(obj), status, message, error]


COMPONENT_STATUS = Printer([
    NAME,
    col("Status", "string", "Status of the component conditions"),
    col("Message", "string", "Message of the component conditions"),
    col("Error", "string", "Error of the component conditions"),
], _component_status_cells)


def _quota_cells(obj: Obj, now: Now) -> list[Any]:
    hard = fmt.dig(obj, "status", "hard") or {}
    used = fmt.dig(obj, "status", "used") or {}
    requests: list[str] = []
    limits: list[str] = []
    for resource in sorted(hard):
        target = limits if resource.split(".", 1)[0] == "limits" and "." in resource else requests
        target.append(f"{resource}: {fmt.quantity(used.get(resource))}/{fmt.quantity(hard[resource])}")
    # 1.32 still prints Age second; 1.33 moved it to the end.
    return [fmt.name(obj), fmt.age(obj, now), ", ".join(requests), ", ".join(limits)]


RESOURCE_QUOTA = Printer([
    NAME,
    AGE,
    col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
], _quota_cells)

PRINTERS: dict[tuple[str, str], Printer] = {
    ("", "Pod"): POD,
    ("", "PodTemplate"): POD_TEMPLATE,
    ("", "ReplicationController"): REPLICATION_CONTROLLER,
    ("", "Service"): SERVICE,
    ("", "Endpoints"): ENDPOINTS,
    ("", "Node"): NODE,
    ("", "Namespace"): NAMESPACE,
    ("", "Event"): EVENT,
    ("events.k8s.io", "Event"): EVENT_V1,
    ("", "Secret"): SECRET,
    ("", "ServiceAccount"): SERVICE_ACCOUNT,
    ("", "ConfigMap"): CONFIG_MAP,
    ("", "PersistentVolume"): PERSISTENT_VOLUME,
    ("", "PersistentVolumeClaim"): PERSISTENT_VOLUME_CLAIM,
    ("", "ComponentStatus"): COMPONENT_STATUS,
    ("", "ResourceQuota"): RESOURCE_QUOTA,
}
