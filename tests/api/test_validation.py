"""Create and update validation with Kubernetes' exact error wording."""

import copy
import json
import pathlib

import pytest

from pocketkube.api import defaults, errors, validation

REF = pathlib.Path("/work/shared/reference/responses")
GVK = {"Pod": ("", "v1"), "Service": ("", "v1"), "ConfigMap": ("", "v1"), "Secret": ("", "v1"),
       "Namespace": ("", "v1"), "PersistentVolumeClaim": ("", "v1"), "Deployment": ("apps", "v1"),
       "StatefulSet": ("apps", "v1"), "DaemonSet": ("apps", "v1"), "ReplicaSet": ("apps", "v1"),
       "Job": ("batch", "v1"), "CronJob": ("batch", "v1"), "HorizontalPodAutoscaler": ("autoscaling", "v2"),
       "PodDisruptionBudget": ("policy", "v1"), "Role": ("rbac.authorization.k8s.io", "v1"),
       "RoleBinding": ("rbac.authorization.k8s.io", "v1"), "Ingress": ("networking.k8s.io", "v1"),
       "NetworkPolicy": ("networking.k8s.io", "v1"), "PriorityClass": ("scheduling.k8s.io", "v1"),
       "Lease": ("coordination.k8s.io", "v1"), "StorageClass": ("storage.k8s.io", "v1"),
       "Widget": ("example.com", "v1")}
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "StorageClass"}


def _container(**kw):
    return {"name": "c", "image": "nginx:1.25", **kw}


def _pod_spec(**kw):
    return {"containers": [_container()], **kw}


def _template(labels=None, **spec):
    return {"metadata": {"labels": labels if labels is not None else {"app": "a"}}, "spec": _pod_spec(**spec)}


def _obj(kind, name="x", **body):
    meta = {"name": name}
    if kind not in CLUSTER_SCOPED:
        meta["namespace"] = "default"
    return {"kind": kind, "metadata": meta, **body}


def _errors(obj, kind=None):
    kind = kind or obj["kind"]
    group, version = GVK[kind]
    obj = copy.deepcopy(obj)
    defaults.apply_defaults(obj, group, version, kind)
    if kind == "Job":
        obj["metadata"].setdefault("uid", "u1")
        defaults.job_prepare_create(obj, obj["metadata"]["uid"])
    return [e.text() for e in validation.validate_create(obj, group, version, kind,
                                                          namespaced=kind not in CLUSTER_SCOPED)]


def _update_errors(old, new, kind=None):
    kind = kind or old["kind"]
    group, version = GVK[kind]
    old, new = copy.deepcopy(old), copy.deepcopy(new)
    for o in (old, new):
        defaults.apply_defaults(o, group, version, kind)
        o["metadata"].setdefault("resourceVersion", "1")
    return [e.text() for e in validation.validate_update(new, old, group, version, kind,
                                                          namespaced=kind not in CLUSTER_SCOPED)]


def test_reference_422_exactly():
    """The reference Deployment produces the byte-identical Status a real apiserver sent."""
    obj = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "Bad_Name", "namespace": "ref"},
           "spec": {"replicas": -1, "template": {"spec": {"containers": [{"name": "nginx"}]}}}}
    defaults.apply_defaults(obj, "apps", "v1", "Deployment")
    causes = validation.validate_create(obj, "apps", "v1", "Deployment", namespaced=True)
    err = errors.Invalid(kind="Deployment", group="apps", name="Bad_Name", causes=causes)
    assert err.status() == json.loads((REF / "status-422-invalid.body").read_text())


VALID = [
    _obj("Pod", spec=_pod_spec()),
    _obj("Service", spec={"ports": [{"port": 80}], "selector": {"app": "a"}}),
    _obj("Service", spec={"clusterIP": "None", "selector": {"app": "a"}}),
    _obj("Service", spec={"type": "ExternalName", "externalName": "example.com"}),
    _obj("ConfigMap", data={"a.txt": "x"}),
    _obj("Secret", data={"k": "dg=="}),
    _obj("Namespace", name="dev"),
    _obj("Deployment", spec={"selector": {"matchLabels": {"app": "a"}}, "template": _template()}),
    _obj("StatefulSet", spec={"selector": {"matchLabels": {"app": "a"}}, "template": _template(),
                              "serviceName": "s"}),
    _obj("DaemonSet", spec={"selector": {"matchLabels": {"app": "a"}}, "template": _template()}),
    _obj("Job", spec={"template": _template(restartPolicy="Never")}),
    _obj("CronJob", spec={"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": _template(
        restartPolicy="OnFailure")}}}),
    _obj("HorizontalPodAutoscaler", spec={"scaleTargetRef": {"kind": "Deployment", "name": "d"}, "maxReplicas": 3}),
    _obj("PodDisruptionBudget", spec={"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}),
    _obj("Role", rules=[{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    _obj("RoleBinding", roleRef={"kind": "Role", "name": "r"}, subjects=[{"kind": "ServiceAccount", "name": "d"}]),
    _obj("Ingress", spec={"rules": [{"host": "a.example.com", "http": {"paths": [{
        "path": "/", "pathType": "Prefix", "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}),
    _obj("NetworkPolicy", spec={"podSelector": {}}),
    _obj("PriorityClass", value=100),
    _obj("Lease", spec={"holderIdentity": "me", "leaseDurationSeconds": 15}),
    _obj("StorageClass", provisioner="kubernetes.io/no-provisioner"),
    _obj("Widget", spec={"anything": True}),
]


@pytest.mark.parametrize("obj", VALID, ids=lambda o: o["kind"])
def test_valid_objects(obj):
    """Ordinary, defaulted objects of each kind validate cleanly."""
    assert _errors(obj) == []


CASES = [
    ("service port out of range", _obj("Service", spec={"ports": [{"port": 70000}]}),
     "spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("service ports required", _obj("Service", spec={}), "spec.ports: Required value"),
    ("service name is DNS-1035", _obj("Service", name="1web", spec={"ports": [{"port": 80}]}),
     "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters "
     "or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or "
     "'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"),
    ("service port names required", _obj("Service", spec={"ports": [{"port": 80}, {"port": 81}]}),
     "spec.ports[0].name: Required value"),
    ("service duplicate port names", _obj("Service", spec={"ports": [{"name": "a", "port": 80},
                                                                     {"name": "a", "port": 81}]}),
     'spec.ports[1].name: Duplicate value: "a"'),
    ("service duplicate port", _obj("Service", spec={"ports": [{"name": "a", "port": 80}, {"name": "b", "port": 80}]}),
     'spec.ports[1]: Duplicate value: core.ServicePort{Name:"", Protocol:"TCP", AppProtocol:(*string)(nil), '
     'Port:80, TargetPort:intstr.IntOrString{Type:0, IntVal:0, StrVal:""}, NodePort:0}'),
    ("service bad type", _obj("Service", spec={"type": "Foo", "ports": [{"port": 80}]}),
     'spec.type: Unsupported value: "Foo": supported values: "ClusterIP", "ExternalName", "LoadBalancer", '
     '"NodePort"'),
    ("service nodePort on ClusterIP", _obj("Service", spec={"ports": [{"port": 80, "nodePort": 30001}]}),
     "spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"),
    ("service bad clusterIP", _obj("Service", spec={"clusterIP": "10.0.0", "ports": [{"port": 80}]}),
     'spec.clusterIPs[0]: Invalid value: "10.0.0": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)'),
    ("pod containers required", _obj("Pod", spec={"containers": []}), "spec.containers: Required value"),
    ("pod duplicate container", _obj("Pod", spec={"containers": [_container(), _container()]}),
     'spec.containers[1].name: Duplicate value: "c"'),
    ("pod container name", _obj("Pod", spec={"containers": [_container(name="C_1")]}),
     "spec.containers[0].name: Invalid value: \"C_1\": a lowercase RFC 1123 label must consist of lower case "
     "alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
     "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
    ("pod container port", _obj("Pod", spec={"containers": [_container(ports=[{"containerPort": 70000}])]}),
     "spec.containers[0].ports[0].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("pod requests above limits", _obj("Pod", spec={"containers": [_container(
        resources={"limits": {"cpu": "1"}, "requests": {"cpu": "2"}})]}),
     'spec.containers[0].resources.requests: Invalid value: "2": must be less than or equal to cpu limit of 1'),
    ("pod negative quantity", _obj("Pod", spec={"containers": [_container(resources={"requests": {"memory": "-1"}})]}),
     'spec.containers[0].resources.requests[memory]: Invalid value: "-1": must be greater than or equal to 0'),
    ("pod bad resource name", _obj("Pod", spec={"containers": [_container(resources={"limits": {"gpu": "1"}})]}),
     'spec.containers[0].resources.limits[gpu]: Invalid value: "gpu": must be a standard resource for containers'),
    ("pod restartPolicy", _obj("Pod", spec=_pod_spec(restartPolicy="Sometimes")),
     'spec.restartPolicy: Unsupported value: "Sometimes": supported values: "Always", "OnFailure", "Never"'),
    ("pod probe", _obj("Pod", spec={"containers": [_container(livenessProbe={"exec": {"command": ["x"]},
                                                                             "successThreshold": 2})]}),
     "spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"),
    ("pod probe negative", _obj("Pod", spec={"containers": [_container(readinessProbe={
        "tcpSocket": {"port": 80}, "initialDelaySeconds": -1})]}),
     "spec.containers[0].readinessProbe.initialDelaySeconds: Invalid value: -1: must be greater than or equal to 0"),
    ("pod duplicate volume", _obj("Pod", spec=_pod_spec(volumes=[{"name": "v"}, {"name": "v"}])),
     'spec.volumes[1].name: Duplicate value: "v"'),
    ("pod two volume sources", _obj("Pod", spec=_pod_spec(volumes=[{"name": "v", "emptyDir": {},
                                                                    "hostPath": {"path": "/x"}}])),
     "spec.volumes[0].hostPath: Forbidden: may not specify more than 1 volume type"),
    ("pod mount of missing volume", _obj("Pod", spec={"containers": [_container(volumeMounts=[
        {"name": "nope", "mountPath": "/x"}])]}),
     'spec.containers[0].volumeMounts[0].name: Not found: "nope"'),
    ("pod env name", _obj("Pod", spec={"containers": [_container(env=[{"name": "A=B"}])]}),
     "spec.containers[0].env[0].name: Invalid value: \"A=B\": a valid environment variable name must consist only "
     "of printable ASCII characters other than '='"),
    ("pod image whitespace", _obj("Pod", spec={"containers": [_container(image=" nginx")]}),
     'spec.containers[0].image: Invalid value: " nginx": must not have leading or trailing whitespace'),
    ("namespace required", {"kind": "Pod", "metadata": {"name": "p"}, "spec": _pod_spec()},
     "metadata.namespace: Required value"),
    ("name required", {"kind": "ConfigMap", "metadata": {"namespace": "d"}},
     "metadata.name: Required value: name or generateName is required"),
    ("namespace name is a label", _obj("Namespace", name="a.b"),
     'metadata.name: Invalid value: "a.b": must not contain dots'),
    ("configmap key", _obj("ConfigMap", data={"bad key": "x"}),
     "data[bad key]: Invalid value: \"bad key\": a valid config key must consist of alphanumeric characters, '-', "
     "'_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')"),
    ("configmap too big", _obj("ConfigMap", data={"a": "x" * (1024 * 1024 + 1)}),
     ": Too long: must have at most 1048576 bytes"),
    ("tls secret keys", _obj("Secret", type="kubernetes.io/tls", data={}), "data[tls.crt]: Required value"),
    ("deployment maxSurge and maxUnavailable 0", _obj("Deployment", spec={
        "selector": {"matchLabels": {"app": "a"}}, "template": _template(),
        "strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}}),
     'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:0, IntVal:0, StrVal:""}: '
     "may not be 0 when `maxSurge` is 0"),
    ("deployment maxUnavailable above 100%", _obj("Deployment", spec={
        "selector": {"matchLabels": {"app": "a"}}, "template": _template(),
        "strategy": {"rollingUpdate": {"maxUnavailable": "200%"}}}),
     'spec.strategy.rollingUpdate.maxUnavailable: Invalid value: intstr.IntOrString{Type:1, IntVal:0, '
     'StrVal:"200%"}: must not be greater than 100%'),
    ("deployment selector mismatch", _obj("Deployment", spec={"selector": {"matchLabels": {"app": "b"}},
                                                              "template": _template()}),
     'spec.template.metadata.labels: Invalid value: map[string]string{"app":"a"}: `selector` does not match '
     "template `labels`"),
    ("deployment empty selector", _obj("Deployment", spec={"selector": {}, "template": _template()}),
     "spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string(nil), "
     "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: empty selector is invalid for deployment"),
    ("deployment restartPolicy", _obj("Deployment", spec={"selector": {"matchLabels": {"app": "a"}},
                                                          "template": _template(restartPolicy="Never")}),
     'spec.template.spec.restartPolicy: Unsupported value: "Never": supported values: "Always"'),
    ("deployment template labels path", _obj("Deployment", spec={"selector": {"matchLabels": {"app": "a"}},
                                                                 "template": _template(labels={"app": "a", "x": "-"})}),
     'spec.template.labels: Invalid value: "-": a valid label must be an empty string or consist of alphanumeric '
     "characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or "
     "'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"),
    ("statefulset podManagementPolicy", _obj("StatefulSet", spec={
        "selector": {"matchLabels": {"app": "a"}}, "template": _template(), "podManagementPolicy": "Fast"}),
     "spec.podManagementPolicy: Invalid value: \"Fast\": must be 'OrderedReady' or 'Parallel'"),
    ("daemonset surge and unavailable", _obj("DaemonSet", spec={
        "selector": {"matchLabels": {"app": "a"}}, "template": _template(),
        "updateStrategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 1}}}),
     "spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: intstr.IntOrString{Type:0, IntVal:1, StrVal:\"\"}: "
     "may not be set when maxUnavailable is non-zero"),
    ("job restartPolicy Always", _obj("Job", spec={"template": _template()}),
     'spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never"'),
    ("job negative backoff", _obj("Job", spec={"backoffLimit": -1, "template": _template(restartPolicy="Never")}),
     "spec.backoffLimit: Invalid value: -1: must be greater than or equal to 0"),
    ("cronjob schedule fields", _obj("CronJob", spec={"schedule": "* * * *", "jobTemplate": {"spec": {
        "template": _template(restartPolicy="Never")}}}),
     'spec.schedule: Invalid value: "* * * *": expected exactly 5 fields, found 4: [* * * *]'),
    ("cronjob schedule range", _obj("CronJob", spec={"schedule": "61 * * * *", "jobTemplate": {"spec": {
        "template": _template(restartPolicy="Never")}}}),
     'spec.schedule: Invalid value: "61 * * * *": end of range (61) above maximum (59): 61'),
    ("cronjob name length", _obj("CronJob", name="a" * 53, spec={"schedule": "@hourly", "jobTemplate": {"spec": {
        "template": _template(restartPolicy="Never")}}}),
     f'metadata.name: Invalid value: "{"a" * 53}": must be no more than 52 characters'),
    ("hpa maxReplicas", _obj("HorizontalPodAutoscaler", spec={"scaleTargetRef": {"kind": "D", "name": "d"},
                                                              "minReplicas": 3, "maxReplicas": 2}),
     "spec.maxReplicas: Invalid value: 2: must be greater than or equal to `minReplicas`"),
    ("role rule verbs", _obj("Role", rules=[{"apiGroups": [""], "resources": ["pods"]}]),
     "rules[0].verbs: Required value: verbs must contain at least one value"),
    ("role path segment name", _obj("Role", name="a/b", rules=[]),
     "metadata.name: Invalid value: \"a/b\": may not contain '/'"),
    ("rolebinding kind", _obj("RoleBinding", roleRef={"kind": "Nope", "name": "r"}),
     'roleRef.kind: Unsupported value: "Nope": supported values: "Role", "ClusterRole"'),
    ("ingress pathType", _obj("Ingress", spec={"rules": [{"http": {"paths": [{
        "path": "/", "backend": {"service": {"name": "s", "port": {"number": 80}}}}]}}]}),
     "spec.rules[0].http.paths[0].pathType: Required value: pathType must be specified"),
    ("networkpolicy type", _obj("NetworkPolicy", spec={"podSelector": {}, "policyTypes": ["Sideways"]}),
     'spec.policyTypes[0]: Unsupported value: "Sideways": supported values: "Ingress", "Egress"'),
    ("networkpolicy except outside cidr", _obj("NetworkPolicy", spec={"podSelector": {}, "ingress": [{"from": [
        {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["192.168.0.0/16"]}}]}]}),
     'spec.ingress[0].from[0].ipBlock.except[0]: Invalid value: "192.168.0.0/16": must be a strict subset of `cidr`'),
    ("networkpolicy except equal to cidr", _obj("NetworkPolicy", spec={"podSelector": {}, "egress": [{"to": [
        {"ipBlock": {"cidr": "10.1.0.0/16", "except": ["10.1.0.0/16"]}}]}]}),
     'spec.egress[0].to[0].ipBlock.except[0]: Invalid value: "10.1.0.0/16": must be a strict subset of `cidr`'),
    ("priorityclass too high", _obj("PriorityClass", value=2000000000),
     "value: Forbidden: maximum allowed value of a user defined priority is 1000000000"),
    ("lease duration", _obj("Lease", spec={"leaseDurationSeconds": 0}),
     "spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"),
    ("storageclass provisioner", _obj("StorageClass"), "provisioner: Required value"),
    ("finalizer not qualified", _obj("ConfigMap", metadata={"name": "x", "namespace": "d", "finalizers": ["mine"]}),
     'metadata.finalizers[0]: Invalid value: "mine": name is neither a standard finalizer name nor is it fully '
     "qualified"),
    ("cluster-scoped namespace", {"kind": "Namespace", "metadata": {"name": "n", "namespace": "d"}},
     "metadata.namespace: Forbidden: not allowed on this type"),
    ("crd metadata only", _obj("Widget", name="Bad Name", spec={}),
     'metadata.name: Invalid value: "Bad Name": a lowercase RFC 1123 subdomain must consist of lower case '
     "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. "
     "'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"),
]


@pytest.mark.parametrize("obj,message", [(o, m) for _, o, m in CASES], ids=[c[0] for c in CASES])
def test_create_errors(obj, message):
    """Each invalid object yields the error Kubernetes words this way."""
    assert message in _errors(obj)


def test_bad_quantity_is_bad_request():
    """An unparsable quantity is a 400 decode error, not a 422."""
    pod = _obj("Pod", spec={"containers": [_container(resources={"limits": {"cpu": "lots"}})]})
    with pytest.raises(errors.BadRequest) as e:
        _errors(pod)
    assert e.value.message == ('Pod in version "v1" cannot be handled as a Pod: quantities must match the regular '
                               "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")


DEPLOY = _obj("Deployment", spec={"selector": {"matchLabels": {"app": "a"}}, "template": _template()})


def _with(obj, path, value):
    obj = copy.deepcopy(obj)
    d = obj
    for p in path[:-1]:
        d = d.setdefault(p, {})
    d[path[-1]] = value
    return obj


UPDATES = [
    ("deployment selector", DEPLOY, _with(_with(DEPLOY, ("spec", "selector"), {"matchLabels": {"app": "b"}}),
                                          ("spec", "template", "metadata", "labels"), {"app": "b"}),
     'spec.selector: Invalid value: v1.LabelSelector{MatchLabels:map[string]string{"app":"b"}, '
     "MatchExpressions:[]v1.LabelSelectorRequirement(nil)}: field is immutable"),
    ("metadata name", DEPLOY, _with(DEPLOY, ("metadata", "name"), "y"),
     'metadata.name: Invalid value: "y": field is immutable'),
    ("metadata uid", _with(DEPLOY, ("metadata", "uid"), "a"), _with(DEPLOY, ("metadata", "uid"), "b"),
     'metadata.uid: Invalid value: "b": field is immutable'),
    ("resourceVersion", DEPLOY, _with(DEPLOY, ("metadata", "resourceVersion"), ""),
     'metadata.resourceVersion: Invalid value: "": must be specified for an update'),
    ("service clusterIP", _obj("Service", spec={"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}),
     _obj("Service", spec={"clusterIP": "10.96.0.11", "ports": [{"port": 80}]}),
     'spec.clusterIP: Invalid value: "10.96.0.11": field is immutable'),
    ("immutable configmap", _obj("ConfigMap", data={"a": "1"}, immutable=True),
     _obj("ConfigMap", data={"a": "2"}, immutable=True),
     "data: Forbidden: field is immutable when `immutable` is set"),
    ("immutable flag", _obj("Secret", data={"a": "MQ=="}, immutable=True), _obj("Secret", data={"a": "MQ=="}),
     "immutable: Forbidden: field is immutable when `immutable` is set"),
    ("secret type", _obj("Secret"), _obj("Secret", type="kubernetes.io/basic-auth", data={"username": "dQ=="}),
     'type: Invalid value: "kubernetes.io/basic-auth": field is immutable'),
    ("statefulset serviceName", _obj("StatefulSet", spec={"selector": {"matchLabels": {"app": "a"}},
                                                          "template": _template(), "serviceName": "a"}),
     _obj("StatefulSet", spec={"selector": {"matchLabels": {"app": "a"}}, "template": _template(),
                               "serviceName": "b"}),
     "spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', "
     "'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are "
     "forbidden"),
    ("pvc spec", _obj("PersistentVolumeClaim", spec={"accessModes": ["ReadWriteOnce"],
                                                     "resources": {"requests": {"storage": "1Gi"}}}),
     _obj("PersistentVolumeClaim", spec={"accessModes": ["ReadWriteMany"],
                                         "resources": {"requests": {"storage": "1Gi"}}}),
     "spec: Forbidden: spec is immutable after creation except resources.requests and volumeAttributesClassName "
     "for bound claims"),
    ("rolebinding roleRef", _obj("RoleBinding", roleRef={"kind": "Role", "name": "a"}),
     _obj("RoleBinding", roleRef={"kind": "Role", "name": "b"}),
     'roleRef: Invalid value: rbac.RoleRef{APIGroup:"rbac.authorization.k8s.io", Kind:"Role", Name:"b"}: cannot '
     "change roleRef"),
    ("priorityclass value", _obj("PriorityClass", value=1), _obj("PriorityClass", value=2),
     "value: Invalid value: 2: field is immutable"),
]


@pytest.mark.parametrize("old,new,message", [(o, n, m) for _, o, n, m in UPDATES], ids=[u[0] for u in UPDATES])
def test_update_errors(old, new, message):
    """Updates that change immutable fields are refused with Kubernetes' wording."""
    assert message in _update_errors(old, new)


def test_job_template_immutable_and_unchanged_update_ok():
    """A Job's pod template cannot change; an unchanged Job updates cleanly."""
    job = _obj("Job", spec={"template": _template(restartPolicy="Never")})
    job["metadata"]["uid"] = "u1"
    defaults.apply_defaults(job, "batch", "v1", "Job")
    defaults.job_prepare_create(job, "u1")
    assert _update_errors(job, copy.deepcopy(job)) == []
    changed = _with(job, ("spec", "template", "spec", "containers"), [_container(image="other")])
    assert any(m.startswith("spec.template: Invalid value:") and m.endswith("field is immutable")
               for m in _update_errors(job, changed))


def test_pod_update_only_image_may_change():
    """Changing a container image is allowed; changing anything else in the pod spec is forbidden."""
    pod = _obj("Pod", spec=_pod_spec())
    assert _update_errors(pod, _with(pod, ("spec", "containers"), [_container(image="nginx:2")])) == []
    errs = _update_errors(pod, _with(pod, ("spec", "restartPolicy"), "Never"))
    assert any(m.startswith("spec: Forbidden: pod updates may not change fields other than") for m in errs)


def test_validate_metadata_direct():
    """validate_metadata checks name, generateName and labels with the given name function."""
    from pocketkube.api import names
    errs = validation.validate_metadata({"generateName": "web-", "labels": {"a": "b"}}, namespaced=False,
                                        name_validator=names.name_is_dns_subdomain)
    assert [e.text() for e in errs] == ["metadata.name: Required value: name or generateName is required"]
