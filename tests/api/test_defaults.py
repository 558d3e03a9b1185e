"""Defaulting of built-in kinds as kube-apiserver 1.32 applies it."""

import copy
import json
import pathlib

import pytest

from pocketkube.api import defaults, errors

REF = pathlib.Path("/work/shared/reference/responses")


def _defaulted(obj, group, version, kind):
    obj = copy.deepcopy(obj)
    defaults.apply_defaults(obj, group, version, kind)
    return obj


def test_deployment_matches_reference_spec():
    """What `kubectl create deployment web --image=nginx:1.25 --replicas=2` sends defaults to the real spec."""
    sent = {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ref", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25",
                                                           "resources": {}}]}},
                     "strategy": {}}}
    ref = json.loads((REF / "get-deployment.body").read_text())
    assert _defaulted(sent, "apps", "v1", "Deployment")["spec"] == ref["spec"]


def test_service_matches_reference_spec():
    """What `kubectl expose` sends defaults to the real spec, apart from the allocated cluster IP."""
    sent = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "ref"},
            "spec": {"ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}], "selector": {"app": "web"}}}
    ref = json.loads((REF / "get-service.body").read_text())
    got = _defaulted(sent, "", "v1", "Service")
    want = {k: v for k, v in ref["spec"].items() if k not in ("clusterIP", "clusterIPs")}
    assert got["spec"] == want
    assert got["status"] == ref["status"]


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"), ("nginx:latest", "Always"), ("nginx:1.25", "IfNotPresent"),
    ("localhost:5000/app", "Always"), ("localhost:5000/app:v1", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"), ("", "IfNotPresent"),
])
def test_image_pull_policy(image, policy):
    """imagePullPolicy is Always for :latest or untagged images, IfNotPresent otherwise."""
    pod = {"spec": {"containers": [{"name": "c", "image": image}]}}
    assert _defaulted(pod, "", "v1", "Pod")["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_pod_defaults():
    """Pods get pod-spec, container, probe, port, env and volume defaults, and requests from limits."""
    pod = {"spec": {"containers": [{
        "name": "c", "image": "x:1", "ports": [{"containerPort": 80}],
        "livenessProbe": {"httpGet": {"port": 80}},
        "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "resources": {"limits": {"cpu": "0.5", "memory": "1024Mi"}}}],
        "volumes": [{"name": "a"}, {"name": "b", "configMap": {"name": "cm"}}, {"name": "h", "hostPath": {"path": "/x"}}]}}
    spec = _defaulted(pod, "", "v1", "Pod")["spec"]
    c = spec["containers"][0]
    assert spec["restartPolicy"] == "Always" and spec["dnsPolicy"] == "ClusterFirst"
    assert spec["schedulerName"] == "default-scheduler" and spec["terminationGracePeriodSeconds"] == 30
    assert spec["securityContext"] == {} and spec["enableServiceLinks"] is True
    assert "serviceAccountName" not in spec and "priority" not in spec and "tolerations" not in spec
    assert c["terminationMessagePath"] == "/dev/termination-log" and c["terminationMessagePolicy"] == "File"
    assert c["ports"][0]["protocol"] == "TCP"
    assert c["livenessProbe"] == {"httpGet": {"port": 80, "path": "/", "scheme": "HTTP"}, "timeoutSeconds": 1,
                                  "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"] == "v1"
    assert c["resources"] == {"limits": {"cpu": "500m", "memory": "1Gi"}, "requests": {"cpu": "500m", "memory": "1Gi"}}
    assert spec["volumes"][0]["emptyDir"] == {}
    assert spec["volumes"][1]["configMap"]["defaultMode"] == 420
    assert spec["volumes"][2]["hostPath"]["type"] == ""


def test_templates_do_not_default_requests_or_service_links():
    """Requests-from-limits and enableServiceLinks are Pod-only defaults, not template ones."""
    rs = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x",
                                                         "resources": {"limits": {"cpu": "1"}}}]}}}}
    tmpl = _defaulted(rs, "apps", "v1", "ReplicaSet")["spec"]["template"]
    assert "requests" not in tmpl["spec"]["containers"][0]["resources"]
    assert "enableServiceLinks" not in tmpl["spec"]
    assert tmpl["metadata"]["creationTimestamp"] is None


@pytest.mark.parametrize("group,kind,obj,path,value", [
    ("apps", "StatefulSet", {"spec": {}}, ("spec", "podManagementPolicy"), "OrderedReady"),
    ("apps", "StatefulSet", {"spec": {}}, ("spec", "updateStrategy"),
     {"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}),
    ("apps", "StatefulSet", {"spec": {}}, ("spec", "persistentVolumeClaimRetentionPolicy"),
     {"whenDeleted": "Retain", "whenScaled": "Retain"}),
    ("apps", "StatefulSet", {"spec": {}}, ("spec", "revisionHistoryLimit"), 10),
    ("apps", "DaemonSet", {"spec": {}}, ("spec", "updateStrategy"),
     {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
    ("apps", "Deployment", {"spec": {"strategy": {"type": "Recreate"}}}, ("spec", "strategy"), {"type": "Recreate"}),
    ("batch", "Job", {"spec": {}}, ("spec", "completions"), 1),
    ("batch", "Job", {"spec": {"completions": 5}}, ("spec", "parallelism"), 1),
    ("batch", "Job", {"spec": {}}, ("spec", "backoffLimit"), 6),
    ("batch", "Job", {"spec": {}}, ("spec", "completionMode"), "NonIndexed"),
    ("batch", "Job", {"spec": {}}, ("spec", "suspend"), False),
    ("batch", "Job", {"spec": {}}, ("spec", "podReplacementPolicy"), "TerminatingOrFailed"),
    ("batch", "CronJob", {"spec": {}}, ("spec", "concurrencyPolicy"), "Allow"),
    ("batch", "CronJob", {"spec": {}}, ("spec", "successfulJobsHistoryLimit"), 3),
    ("batch", "CronJob", {"spec": {}}, ("spec", "failedJobsHistoryLimit"), 1),
    ("", "Service", {"spec": {"type": "NodePort", "ports": [{"port": 80}]}}, ("spec", "externalTrafficPolicy"),
     "Cluster"),
    ("", "Service", {"spec": {"ports": [{"port": 80}]}}, ("spec", "ports"),
     [{"port": 80, "protocol": "TCP", "targetPort": 80}]),
    ("", "Secret", {}, ("type",), "Opaque"),
    ("", "Namespace", {"metadata": {"name": "dev"}}, ("metadata", "labels"), {"kubernetes.io/metadata.name": "dev"}),
    ("", "Namespace", {"metadata": {"name": "dev"}}, ("status", "phase"), "Active"),
    ("", "PersistentVolumeClaim", {"spec": {}}, ("spec", "volumeMode"), "Filesystem"),
    ("", "PersistentVolume", {"spec": {}}, ("spec", "persistentVolumeReclaimPolicy"), "Retain"),
    ("", "ReplicationController", {"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}},
     ("spec", "selector"), {"a": "b"}),
    ("networking.k8s.io", "NetworkPolicy", {"spec": {"egress": [{}]}}, ("spec", "policyTypes"),
     ["Ingress", "Egress"]),
    ("rbac.authorization.k8s.io", "RoleBinding", {"roleRef": {"kind": "Role", "name": "r"},
                                                  "subjects": [{"kind": "User", "name": "u"}]},
     ("subjects",), [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}]),
    ("scheduling.k8s.io", "PriorityClass", {"value": 5}, ("preemptionPolicy",), "PreemptLowerPriority"),
    ("storage.k8s.io", "StorageClass", {}, ("reclaimPolicy",), "Delete"),
    ("storage.k8s.io", "StorageClass", {}, ("volumeBindingMode",), "Immediate"),
    ("autoscaling", "HorizontalPodAutoscaler", {"spec": {"behavior": {}}}, ("spec", "behavior", "scaleUp"),
     {"stabilizationWindowSeconds": 0, "selectPolicy": "Max",
      "policies": [{"type": "Pods", "value": 4, "periodSeconds": 15},
                   {"type": "Percent", "value": 100, "periodSeconds": 15}]}),
    ("autoscaling", "HorizontalPodAutoscaler", {"spec": {}}, ("spec", "metrics"),
     [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
])
def test_kind_defaults(group, kind, obj, path, value):
    """Each kind gets the default its v1 defaults.go sets."""
    got = _defaulted(obj, group, "v2" if kind == "HorizontalPodAutoscaler" else "v1", kind)
    for p in path:
        got = got[p]
    assert got == value


def test_job_prepare_create_generates_selector_and_labels():
    """On create the Job strategy adds controller-uid and job-name labels and selects on the uid."""
    job = _defaulted({"metadata": {"name": "pi"}, "spec": {"template": {"spec": {
        "restartPolicy": "Never", "containers": [{"name": "c", "image": "perl"}]}}}}, "batch", "v1", "Job")
    defaults.job_prepare_create(job, "u-1")
    assert job["spec"]["selector"] == {"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}}
    assert job["spec"]["template"]["metadata"]["labels"] == {
        "batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "pi",
        "controller-uid": "u-1", "job-name": "pi"}
    assert job["metadata"]["labels"] == job["spec"]["template"]["metadata"]["labels"]


def test_secret_string_data_merges_and_bad_base64_is_400():
    """stringData is folded into data; undecodable data fails like a decode error (400)."""
    s = _defaulted({"stringData": {"a": "hi"}, "data": {"b": "eA=="}}, "", "v1", "Secret")
    assert s["data"] == {"b": "eA==", "a": "aGk="} and "stringData" not in s
    with pytest.raises(errors.BadRequest) as e:
        _defaulted({"data": {"b": "!!"}}, "", "v1", "Secret")
    assert "illegal base64 data at input byte 0" in e.value.message


@pytest.mark.parametrize(("value", "stored"), [
    ("aGVs\nbG8=", "aGVsbG8="),      # wrapped as kustomize's secretGenerator and `base64` do
    ("aGVs\r\nbG8=\n", "aGVsbG8="),
    ("aGVsbG8=", "aGVsbG8="),
])
def test_secret_data_wrapped_in_lines_is_accepted_and_stored_unwrapped(value: str, stored: str) -> None:
    """Secret data with CR/LF inside decodes as Go's base64 does and reads back without them."""
    assert _defaulted({"data": {"k": value}}, "", "v1", "Secret")["data"] == {"k": stored}


def test_secret_bad_base64_offset_counts_line_breaks() -> None:
    """The offset of a bad byte after a line break counts the break, as Go's CorruptInputError does."""
    with pytest.raises(errors.BadRequest) as e:
        _defaulted({"data": {"k": "aGVs\nbG!="}}, "", "v1", "Secret")
    assert "illegal base64 data at input byte 7" in e.value.message


def test_unknown_kinds_untouched():
    """Custom resources are not defaulted here."""
    obj = {"spec": {"x": 1}}
    assert _defaulted(obj, "example.com", "v1", "Widget") == obj
