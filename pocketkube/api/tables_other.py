"""Table printers of the networking, RBAC, storage, admission, flow-control and cluster kinds."""

from __future__ import annotations

import datetime
from typing import Any

from pocketkube.api import tables_docs as docs
from pocketkube.api import tables_fmt as fmt
from pocketkube.api.tables_fmt import AGE, NAME, NONE, UNSET, Printer, col

Obj = dict[str, Any]
Now = datetime.datetime

# --- networking.k8s.io -----------------------------------------------------------------------


def _ingress_hosts(rules: list[Obj]) -> str:
    hosts: list[str] = []
    more = False
    for rule in rules:
        if len(hosts) == 3:
            more = True
        if not more and rule.get("host"):
            hosts.append(rule["host"])
    if not hosts:
        return "*"
    return f"{','.join(hosts)} + {len(rules) - 3} more..." if more else ",".join(hosts)


def _ingress_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    seen = set()
    for ing in fmt.dig(obj, "status", "loadBalancer", "ingress") or []:
        if ing.get("ip"):
            seen.add(ing["ip"])
        elif ing.get("hostname"):
            seen.add(ing["hostname"])
    return [fmt.name(obj), spec.get("ingressClassName") or NONE, _ingress_hosts(spec.get("rules") or []),
            ",".join(sorted(seen)), "80, 443" if spec.get("tls") else "80", fmt.age(obj, now)]


INGRESS = Printer([
    NAME,
    col("Class", "string", "The name of the IngressClass resource that should be used for additional configuration"),
    col("Hosts", "string", "Hosts that incoming requests are matched against before the ingress rule"),
    col("Address", "string", "Address is a list containing ingress points for the load-balancer"),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
], _ingress_cells)


def _ingress_class_cells(obj: Obj, now: Now) -> list[Any]:
    params = fmt.dig(obj, "spec", "parameters")
    cell = NONE
    if isinstance(params, dict):
        cell = params.get("kind") or ""
        if params.get("apiGroup") is not None:
            cell += "." + params["apiGroup"]
        cell += "/" + (params.get("name") or "")
    return [fmt.name(obj), fmt.dig(obj, "spec", "controller") or "", cell, fmt.age(obj, now)]


INGRESS_CLASS = Printer([
    NAME,
    col("Controller", "string", "Controller that is responsible for handling this class"),
    col("Parameters", "string", "A reference to a resource with additional parameters"),
    AGE,
], _ingress_class_cells)

NETWORK_POLICY = Printer(
    [NAME, col("Pod-Selector", "string", docs.NETPOL_SELECTOR), AGE],
    lambda o, now: [fmt.name(o), fmt.format_selector(fmt.dig(o, "spec", "podSelector") or {}), fmt.age(o, now)])

SERVICE_CIDR = Printer(
    [NAME, col("CIDRs", "string", docs.SCIDR_CIDRS), AGE],
    lambda o, now: [fmt.name(o), ",".join(fmt.dig(o, "spec", "cidrs") or []), fmt.age(o, now)])


def _ip_address_cells(obj: Obj, now: Now) -> list[Any]:
    ref = fmt.dig(obj, "spec", "parentRef")
    cell = NONE
    if isinstance(ref, dict):
        group, resource = ref.get("group") or "", ref.get("resource") or ""
        cell = (f"{resource}.{group}" if group else resource).lower()
        if ref.get("namespace"):
            cell += "/" + ref["namespace"]
        cell += "/" + (ref.get("name") or "")
    return [fmt.name(obj), cell, fmt.age(obj, now)]


# kube-apiserver 1.32 defines two columns for IPAddress yet sends an Age cell as a third.
IP_ADDRESS = Printer([NAME, col("ParentRef", "string", docs.IPA_PARENT)], _ip_address_cells)

# --- rbac.authorization.k8s.io ----------------------------------------------------------------


def _binding_cells(obj: Obj, now: Now) -> list[Any]:
    ref = obj.get("roleRef") or {}
    users, groups, sas = [], [], []
    for s in obj.get("subjects") or []:
        kind = s.get("kind")
        if kind == "ServiceAccount":
            sas.append(f"{s.get('namespace', '')}/{s.get('name', '')}")
        elif kind == "User":
            users.append(s.get("name", ""))
        elif kind == "Group":
            groups.append(s.get("name", ""))
    return [fmt.name(obj), f"{ref.get('kind', '')}/{ref.get('name', '')}", fmt.age(obj, now),
            ", ".join(users), ", ".join(groups), ", ".join(sas)]


def _binding_printer(role_doc: str, what: str) -> Printer:
    return Printer([
        NAME,
        col("Role", "string", role_doc),
        AGE,
        col("Users", "string", f"Users in the {what}", priority=1),
        col("Groups", "string", f"Groups in the {what}", priority=1),
        col("ServiceAccounts", "string", f"ServiceAccounts in the {what}", priority=1),
    ], _binding_cells)


ROLE_BINDING = _binding_printer(docs.RB_ROLE, "roleBinding")
CLUSTER_ROLE_BINDING = _binding_printer(docs.CRB_ROLE, "clusterRoleBinding")

# --- storage.k8s.io ----------------------------------------------------------------------------


def _storage_class_cells(obj: Obj, now: Now) -> list[Any]:
    annotations = fmt.dig(obj, "metadata", "annotations") or {}
    name = fmt.name(obj)
    if "true" in (annotations.get("storageclass.kubernetes.io/is-default-class"),
                  annotations.get("storageclass.beta.kubernetes.io/is-default-class")):
        name += " (default)"
    return [name, obj.get("provisioner") or "", obj.get("reclaimPolicy") or "Delete",
            obj.get("volumeBindingMode") or "Immediate", bool(obj.get("allowVolumeExpansion")), fmt.age(obj, now)]


STORAGE_CLASS = Printer([
    NAME,
    col("Provisioner", "string", docs.SC_PROVISIONER),
    col("ReclaimPolicy", "string", docs.SC_RECLAIM),
    col("VolumeBindingMode", "string", docs.SC_BINDING),
    col("AllowVolumeExpansion", "string", docs.SC_EXPANSION),
    AGE,
], _storage_class_cells)


def _vac_cells(obj: Obj, now: Now) -> list[Any]:
    name = fmt.name(obj)
    if (fmt.dig(obj, "metadata", "annotations") or {}).get("volumeattributesclass.alpha.kubernetes.io/is-default-class") == "true":
        name += " (default)"
    return [name, obj.get("driverName") or "", fmt.age(obj, now)]


VOLUME_ATTRIBUTES_CLASS = Printer([NAME, col("DriverName", "string", docs.VAC_DRIVER), AGE], _vac_cells)


def _csi_driver_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    tokens = spec.get("tokenRequests")
    token_cell = ",".join(t.get("audience", "") for t in tokens) if tokens is not None else UNSET
    modes = ",".join(spec.get("volumeLifecycleModes") or []) or NONE
    attach = spec.get("attachRequired")
    return [fmt.name(obj), True if attach is None else bool(attach), bool(spec.get("podInfoOnMount")),
            bool(spec.get("storageCapacity")), token_cell, bool(spec.get("requiresRepublish")), modes,
            fmt.age(obj, now)]


CSI_DRIVER = Printer([
    NAME,
    col("AttachRequired", "boolean", docs.CSI_ATTACH),
    col("PodInfoOnMount", "boolean", docs.CSI_POD_INFO),
    col("StorageCapacity", "boolean", docs.CSI_CAPACITY),
    col("TokenRequests", "string", docs.CSI_TOKENS),
    col("RequiresRepublish", "boolean", docs.CSI_REPUBLISH),
    col("Modes", "string", docs.CSI_MODES),
    AGE,
], _csi_driver_cells)

CSI_NODE = Printer(
    [NAME, col("Drivers", "integer", "Drivers indicates the number of CSI drivers registered on the node"), AGE],
    lambda o, now: [fmt.name(o), len(fmt.dig(o, "spec", "drivers") or []), fmt.age(o, now)])

CSI_STORAGE_CAPACITY = Printer(
    [NAME, col("StorageClassName", "string", docs.CSC_CLASS), col("Capacity", "string", docs.CSC_CAPACITY)],
    lambda o, now: [fmt.name(o), o.get("storageClassName") or "",
                    fmt.quantity(o["capacity"]) if o.get("capacity") is not None else UNSET])


def _volume_attachment_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    return [fmt.name(obj), spec.get("attacher") or "", fmt.dig(spec, "source", "persistentVolumeName") or "",
            spec.get("nodeName") or "", bool(fmt.dig(obj, "status", "attached")), fmt.age(obj, now)]


VOLUME_ATTACHMENT = Printer([
    NAME,
    col("Attacher", "string", docs.VA_ATTACHER, format_="name"),
    col("PV", "string", docs.VA_PV),
    col("Node", "string", docs.VA_NODE),
    col("Attached", "boolean", docs.VA_ATTACHED),
    AGE,
], _volume_attachment_cells)

# --- coordination, discovery, scheduling, node -------------------------------------------------

LEASE = Printer([NAME, col("Holder", "string", docs.LEASE_HOLDER), AGE],
                lambda o, now: [fmt.name(o), fmt.dig(o, "spec", "holderIdentity") or "", fmt.age(o, now)])

LEASE_CANDIDATE = Printer([
    NAME,
    col("LeaseName", "string", docs.LC_LEASE_NAME),
    col("BinaryVersion", "string", ""),
    col("EmulationVersion", "string", ""),
    AGE,
], lambda o, now: [fmt.name(o), fmt.dig(o, "spec", "leaseName") or "", fmt.dig(o, "spec", "binaryVersion") or "",
                   fmt.dig(o, "spec", "emulationVersion") or "", fmt.age(o, now)])


def _more(items: list[str], count: int, limit: int = 3) -> str:
    """listWithMoreString: at most three items, then `+ N more...`; `<unset>` for none."""
    ret = ",".join(items[:limit])
    if count > limit:
        return f"{ret} + {count - limit} more..."
    return ret or UNSET


def _endpoint_slice_cells(obj: Obj, now: Now) -> list[Any]:
    ports = []
    for p in obj.get("ports") or []:
        if p.get("port") is not None:
            ports.append(str(p["port"]))
        elif p.get("name") is not None:
            ports.append(p["name"])
        else:
            ports.append("*")
    addresses = [a for ep in obj.get("endpoints") or [] for a in ep.get("addresses") or []]
    return [fmt.name(obj), obj.get("addressType") or "", _more(ports, len(ports)), _more(addresses, len(addresses)),
            fmt.age(obj, now)]


ENDPOINT_SLICE = Printer([
    NAME,
    col("AddressType", "string", docs.ES_ADDRESS_TYPE),
    col("Ports", "string", docs.ES_PORTS),
    col("Endpoints", "string", docs.ES_ENDPOINTS),
    AGE,
], _endpoint_slice_cells)

PRIORITY_CLASS = Printer([
    NAME,
    col("Value", "integer", docs.PC_VALUE),
    col("Global-Default", "boolean", docs.PC_GLOBAL),
    AGE,
    col("PreemptionPolicy", "string", docs.PC_PREEMPTION),
], lambda o, now: [fmt.name(o), fmt.as_int(o.get("value")), bool(o.get("globalDefault")), fmt.age(o, now),
                   o.get("preemptionPolicy") or ""])

# The 1.32 printer takes this description from ObjectMeta's docs, which have no `handler`.
RUNTIME_CLASS = Printer([NAME, col("Handler", "string", ""), AGE],
                        lambda o, now: [fmt.name(o), o.get("handler") or "", fmt.age(o, now)])

# --- certificates.k8s.io -----------------------------------------------------------------------


def _csr_condition(obj: Obj) -> str:
    kinds = {c.get("type") for c in fmt.dig(obj, "status", "conditions") or []}
    status = "Denied" if "Denied" in kinds else "Approved" if "Approved" in kinds else "Pending"
    if "Failed" in kinds:
        status += ",Failed"
    if fmt.dig(obj, "status", "certificate"):
        status += ",Issued"
    return status


def _csr_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    expiration = spec.get("expirationSeconds")
    duration = fmt.human_duration(fmt.as_int(expiration) * 1_000_000) if expiration is not None else NONE
    return [fmt.name(obj), fmt.age(obj, now), spec.get("signerName") or NONE, spec.get("username") or "",
            duration, _csr_condition(obj)]


CERTIFICATE_SIGNING_REQUEST = Printer([
    NAME,
    AGE,
    col("SignerName", "string", docs.CSR_SIGNER),
    col("Requestor", "string", docs.CSR_REQUEST),
    col("RequestedDuration", "string", docs.CSR_EXPIRATION),
    col("Condition", "string", docs.CSR_CONDITIONS),
], _csr_cells)

CLUSTER_TRUST_BUNDLE = Printer([NAME, col("SignerName", "string", docs.CTB_SIGNER)],
                               lambda o, now: [fmt.name(o), fmt.dig(o, "spec", "signerName") or NONE])

# --- admissionregistration.k8s.io ---------------------------------------------------------------

_WEBHOOKS = col("Webhooks", "integer", "Webhooks indicates the number of webhooks registered in this configuration")
WEBHOOK_CONFIGURATION = Printer([NAME, _WEBHOOKS, AGE],
                                lambda o, now: [fmt.name(o), len(o.get("webhooks") or []), fmt.age(o, now)])


def _param_kind(obj: Obj) -> str:
    pk = fmt.dig(obj, "spec", "paramKind")
    return f"{pk.get('apiVersion', '')}/{pk.get('kind', '')}" if isinstance(pk, dict) else UNSET


def _go_label_selector(sel: Obj) -> str:
    # The binding prints the selector with Go's generated String(), struct syntax and all.
    labels = sel.get("matchLabels") or {}
    exprs = "".join(
        f"LabelSelectorRequirement{{Key:{e.get('key', '')},Operator:{e.get('operator', '')},"
        f"Values:[{' '.join(e.get('values') or [])}],}},"
        for e in sel.get("matchExpressions") or [])
    pairs = "".join(f"{k}: {labels[k]}," for k in sorted(labels))
    return f"&LabelSelector{{MatchLabels:map[string]string{{{pairs}}},MatchExpressions:[]LabelSelectorRequirement{{{exprs}}},}}"


def _binding_param(obj: Obj) -> str:
    ref = fmt.dig(obj, "spec", "paramRef")
    if not isinstance(ref, dict):
        return UNSET
    if ref.get("name"):
        # A name without namespace may be cluster-scoped or not; Kubernetes shows `*/name`.
        return f"{ref['namespace']}/{ref['name']}" if ref.get("namespace") else f"*/{ref['name']}"
    if isinstance(ref.get("selector"), dict):
        return _go_label_selector(ref["selector"])
    return UNSET


_PARAM_KIND = col("ParamKind", "string", "ParamKind specifies the kind of resources used to parameterize this policy")
VALIDATING_ADMISSION_POLICY = Printer([
    NAME,
    col("Validations", "integer", "Validations indicates the number of validation rules defined in this configuration"),
    _PARAM_KIND, AGE,
], lambda o, now: [fmt.name(o), len(fmt.dig(o, "spec", "validations") or []), _param_kind(o), fmt.age(o, now)])

MUTATING_ADMISSION_POLICY = Printer([
    NAME,
    col("Mutations", "integer", "Mutation indicates the number of mutations rules defined in this configuration"),
    _PARAM_KIND, AGE,
], lambda o, now: [fmt.name(o), len(fmt.dig(o, "spec", "mutations") or []), _param_kind(o), fmt.age(o, now)])

ADMISSION_POLICY_BINDING = Printer([
    NAME,
    col("PolicyName", "string", "PolicyName indicates the policy definition which the policy binding binded to"),
    col("ParamRef", "string", "ParamRef indicates the param resource which sets the configration param"),
    AGE,
], lambda o, now: [fmt.name(o), fmt.dig(o, "spec", "policyName") or "", _binding_param(o), fmt.age(o, now)])

# --- flowcontrol.apiserver.k8s.io ---------------------------------------------------------------


def _flow_schema_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    method = fmt.dig(spec, "distinguisherMethod", "type") if isinstance(spec.get("distinguisherMethod"), dict) else None
    missing = "?"
    for c in fmt.dig(obj, "status", "conditions") or []:
        if c.get("type") == "Dangling":
            missing = c.get("status") or ""
            break
    return [fmt.name(obj), fmt.dig(spec, "priorityLevelConfiguration", "name") or "",
            fmt.as_int(spec.get("matchingPrecedence")), method if method is not None else NONE,
            fmt.age(obj, now), missing]


FLOW_SCHEMA = Printer([
    NAME,
    col("PriorityLevel", "string", docs.FS_PL),
    col("MatchingPrecedence", "string", docs.FS_PRECEDENCE),
    col("DistinguisherMethod", "string", docs.FS_DISTINGUISHER),
    AGE,
    col("MissingPL", "string", "references a broken or non-existent PriorityLevelConfiguration"),
], _flow_schema_cells)


def flow_schema_order(obj: Obj) -> tuple[int, str]:
    """FlowSchemaSequence: lists print by matching precedence, then name."""
    return fmt.as_int(fmt.dig(obj, "spec", "matchingPrecedence")), fmt.name(obj)


def _priority_level_cells(obj: Obj, now: Now) -> list[Any]:
    spec = obj.get("spec") or {}
    ncs: Any = NONE
    queues: Any = NONE
    hand: Any = NONE
    qll: Any = NONE
    limited = spec.get("limited")
    if isinstance(limited, dict):
        ncs = fmt.as_int(limited.get("nominalConcurrencyShares"))
        queuing = fmt.dig(limited, "limitResponse", "queuing")
        if isinstance(queuing, dict):
            queues = fmt.as_int(queuing.get("queues"))
            hand = fmt.as_int(queuing.get("handSize"))
            qll = fmt.as_int(queuing.get("queueLengthLimit"))
    return [fmt.name(obj), spec.get("type") or "", ncs, queues, hand, qll, fmt.age(obj, now)]


PRIORITY_LEVEL_CONFIGURATION = Printer([
    NAME,
    col("Type", "string", docs.PL_TYPE),
    col("NominalConcurrencyShares", "string", docs.PL_NCS),
    col("Queues", "string", docs.PL_QUEUES),
    col("HandSize", "string", docs.PL_HAND),
    col("QueueLengthLimit", "string", docs.PL_QLL),
    AGE,
], _priority_level_cells)

# --- internal, migration, DRA, aggregation ------------------------------------------------------


def _storage_version_cells(obj: Obj, now: Now) -> list[Any]:
    status = obj.get("status") or {}
    versions = [f"{v.get('apiServerID', '')}={v.get('encodingVersion', '')}" for v in status.get("storageVersions") or []]
    return [fmt.name(obj), status.get("commonEncodingVersion") or UNSET, _more(versions, len(versions)), fmt.age(obj, now)]


STORAGE_VERSION = Printer([
    NAME,
    col("CommonEncodingVersion", "string", docs.SV_COMMON),
    col("StorageVersions", "string", docs.SV_VERSIONS),
    AGE,
], _storage_version_cells)

STORAGE_VERSION_MIGRATION = Printer([
    col("Name", "string", docs.META_NAME),
    col("Resource", "string", "Fully qualified resource to migrate"),
], lambda o, now: [fmt.name(o), "{resource}.{version}.{group}".format(
    resource=fmt.dig(o, "spec", "resource", "resource") or "", version=fmt.dig(o, "spec", "resource", "version") or "",
    group=fmt.dig(o, "spec", "resource", "group") or "")])

NAME_AGE = Printer([NAME, AGE], lambda o, now: [fmt.name(o), fmt.age(o, now)])


def _claim_state(obj: Obj) -> str:
    states = []
    deleted = bool(fmt.dig(obj, "metadata", "deletionTimestamp"))
    if deleted:
        states.append("deleted")
    if fmt.dig(obj, "status", "allocation") is None:
        if not deleted:
            states.append("pending")
    else:
        states.append("allocated")
        if fmt.dig(obj, "status", "reservedFor"):
            states.append("reserved")
    return ",".join(states)


RESOURCE_CLAIM = Printer([
    NAME,
    col("State", "string", "A summary of the current state (allocated, pending, reserved, etc.)."),
    AGE,
], lambda o, now: [fmt.name(o), _claim_state(o), fmt.age(o, now)])

RESOURCE_SLICE = Printer([
    NAME,
    col("Node", "string", docs.RSL_NODE),
    col("Driver", "string", docs.RSL_DRIVER),
    col("Pool", "string", docs.RSL_POOL),
    AGE,
], lambda o, now: [fmt.name(o), fmt.dig(o, "spec", "nodeName") or "", fmt.dig(o, "spec", "driver") or "",
                   fmt.dig(o, "spec", "pool", "name") or "", fmt.age(o, now)])


def _api_service_cells(obj: Obj, now: Now) -> list[Any]:
    svc = fmt.dig(obj, "spec", "service")
    service = f"{svc.get('namespace', '')}/{svc.get('name', '')}" if isinstance(svc, dict) else "Local"
    available = "Unknown"
    for c in fmt.dig(obj, "status", "conditions") or []:
        if c.get("type") == "Available":
            status = c.get("status") or ""
            available = f"{status} ({c['reason']})" if status != "True" and c.get("reason") else status
            break
    return [fmt.name(obj), service, available, fmt.age(obj, now)]


# kube-aggregator's own table convertor, not pkg/printers.
API_SERVICE = Printer([
    NAME,
    col("Service", "string", "The reference to the service that hosts this API endpoint."),
    col("Available", "string", "Whether this service is available."),
    AGE,
], _api_service_cells)

_ADMISSION = "admissionregistration.k8s.io"
PRINTERS: dict[tuple[str, str], Printer] = {
    ("networking.k8s.io", "Ingress"): INGRESS,
    ("networking.k8s.io", "IngressClass"): INGRESS_CLASS,
    ("networking.k8s.io", "NetworkPolicy"): NETWORK_POLICY,
    ("networking.k8s.io", "ServiceCIDR"): SERVICE_CIDR,
    ("networking.k8s.io", "IPAddress"): IP_ADDRESS,
    ("rbac.authorization.k8s.io", "RoleBinding"): ROLE_BINDING,
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"): CLUSTER_ROLE_BINDING,
    ("storage.k8s.io", "StorageClass"): STORAGE_CLASS,
    ("storage.k8s.io", "VolumeAttributesClass"): VOLUME_ATTRIBUTES_CLASS,
    ("storage.k8s.io", "CSIDriver"): CSI_DRIVER,
    ("storage.k8s.io", "CSINode"): CSI_NODE,
    ("storage.k8s.io", "CSIStorageCapacity"): CSI_STORAGE_CAPACITY,
    ("storage.k8s.io", "VolumeAttachment"): VOLUME_ATTACHMENT,
    ("coordination.k8s.io", "Lease"): LEASE,
    ("coordination.k8s.io", "LeaseCandidate"): LEASE_CANDIDATE,
    ("discovery.k8s.io", "EndpointSlice"): ENDPOINT_SLICE,
    ("scheduling.k8s.io", "PriorityClass"): PRIORITY_CLASS,
    ("node.k8s.io", "RuntimeClass"): RUNTIME_CLASS,
    ("certificates.k8s.io", "CertificateSigningRequest"): CERTIFICATE_SIGNING_REQUEST,
    ("certificates.k8s.io", "ClusterTrustBundle"): CLUSTER_TRUST_BUNDLE,
    (_ADMISSION, "MutatingWebhookConfiguration"): WEBHOOK_CONFIGURATION,
    (_ADMISSION, "ValidatingWebhookConfiguration"): WEBHOOK_CONFIGURATION,
    (_ADMISSION, "ValidatingAdmissionPolicy"): VALIDATING_ADMISSION_POLICY,
    (_ADMISSION, "ValidatingAdmissionPolicyBinding"): ADMISSION_POLICY_BINDING,
    (_ADMISSION, "MutatingAdmissionPolicy"): MUTATING_ADMISSION_POLICY,
    (_ADMISSION, "MutatingAdmissionPolicyBinding"): ADMISSION_POLICY_BINDING,
    ("flowcontrol.apiserver.k8s.io", "FlowSchema"): FLOW_SCHEMA,
    ("flowcontrol.apiserver.k8s.io", "PriorityLevelConfiguration"): PRIORITY_LEVEL_CONFIGURATION,
    ("internal.apiserver.k8s.io", "StorageVersion"): STORAGE_VERSION,
    ("storagemigration.k8s.io", "StorageVersionMigration"): STORAGE_VERSION_MIGRATION,
    ("resource.k8s.io", "DeviceClass"): NAME_AGE,
    ("resource.k8s.io", "ResourceClaim"): RESOURCE_CLAIM,
    ("resource.k8s.io", "ResourceClaimTemplate"): NAME_AGE,
    ("resource.k8s.io", "ResourceSlice"): RESOURCE_SLICE,
    ("apiregistration.k8s.io", "APIService"): API_SERVICE,
}

SORT_KEYS = {("flowcontrol.apiserver.k8s.io", "FlowSchema"): flow_schema_order}
