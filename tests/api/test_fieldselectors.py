"""Field selector parsing, per-kind support and matching as kube-apiserver 1.32 does them."""

import pytest

from pocketkube.api import errors, fieldselectors

POD = {
    "apiVersion": "v1", "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "prod"},
    "spec": {"nodeName": "node-a", "restartPolicy": "Always", "schedulerName": "default-scheduler",
             "serviceAccountName": "default"},
    "status": {"phase": "Running", "podIP": "10.0.0.5", "podIPs": [{"ip": "10.0.0.5"}, {"ip": "fd00::5"}]},
}
EVENT = {
    "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "prod"},
    "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "prod", "uid": "u1", "apiVersion": "v1"},
    "reason": "Scheduled", "type": "Normal", "source": {"component": "default-scheduler"},
    "reportingComponent": "default-scheduler",
}
EVENT_V1 = {
    "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e1", "namespace": "prod"},
    "regarding": {"kind": "Pod", "name": "web-1", "namespace": "prod", "uid": "u1", "apiVersion": "v1"},
    "reason": "Scheduled", "type": "Normal", "reportingController": "default-scheduler", "note": "x",
}


@pytest.mark.parametrize("text,canonical", [
    ("", ""),
    ("metadata.name=a", "metadata.name=a"),
    ("metadata.name==a", "metadata.name=a"),
    ("status.phase!=Running", "status.phase!=Running"),
    ("b=1,a=2", "a=2,b=1"),
    ("a=x\\,y", "a=x\\,y"),
    ("a=x\\=y\\\\z", "a=x\\=y\\\\z"),
    ("a=", "a="),
    ("a=1,", "a=1"),
])
def test_parse_and_string(text, canonical):
    """Terms are sorted like kube's, `==` reads as `=`, and values are re-escaped on output."""
    assert str(fieldselectors.parse(text)) == canonical


def test_unescaping():
    """Escaped commas and equals signs belong to the value."""
    sel = fieldselectors.parse("a=x\\,y")
    assert sel.terms[0].value == "x,y"
    assert sel.requires_exact_match("a") == "x,y"


@pytest.mark.parametrize("text,message", [
    ("a", "invalid selector: 'a'; can't understand 'a'"),
    ("b=1,zzz", "invalid selector: 'b=1,zzz'; can't understand 'zzz'"),
    ("a=b\\c", "invalid field selector: invalid escape sequence: \\c"),
    ("a=b\\", "invalid field selector: invalid escape sequence: \\"),
    ("a==b=c", "invalid field selector: unescaped character in value: 61"),
])
def test_parse_errors(text, message):
    """Malformed selectors are BadRequest with the fields package's wording."""
    with pytest.raises(errors.BadRequest) as e:
        fieldselectors.parse(text)
    assert e.value.message == message


@pytest.mark.parametrize("group,kind,expected", [
    ("", "Pod", {"metadata.name", "metadata.namespace", "spec.nodeName", "spec.restartPolicy",
                 "spec.schedulerName", "spec.serviceAccountName", "spec.hostNetwork", "status.phase",
                 "status.podIP", "status.podIPs", "status.nominatedNodeName", "spec.host"}),
    ("", "Node", {"metadata.name", "spec.unschedulable"}),
    ("", "Namespace", {"metadata.name", "status.phase"}),
    ("", "Secret", {"metadata.name", "metadata.namespace", "type"}),
    ("", "Service", {"metadata.name", "metadata.namespace", "spec.clusterIP", "spec.type"}),
    ("", "ReplicationController", {"metadata.name", "metadata.namespace", "status.replicas"}),
    ("batch", "Job", {"metadata.name", "metadata.namespace", "status.successful"}),
    ("certificates.k8s.io", "CertificateSigningRequest", {"metadata.name", "spec.signerName"}),
    ("apps", "ReplicaSet", {"metadata.name", "metadata.namespace"}),
    ("", "ConfigMap", {"metadata.name", "metadata.namespace"}),
])
def test_supported_fields(group, kind, expected):
    """Each kind accepts the field labels its kube 1.32 conversion function accepts."""
    assert fieldselectors.supported_fields(group, kind) == expected


def test_event_field_sets():
    """core Events select on involvedObject.*, events.k8s.io Events on regarding.* and reportingController."""
    core = fieldselectors.supported_fields("", "Event")
    assert {"involvedObject.kind", "involvedObject.fieldPath", "reason", "reportingComponent", "source",
            "type"} <= core
    new = fieldselectors.supported_fields("events.k8s.io", "Event")
    assert {"regarding.kind", "regarding.name", "reportingController", "reason", "type"} <= new
    assert "involvedObject.kind" not in new


@pytest.mark.parametrize("group,kind,text,message", [
    ("", "Pod", "foo=bar", "field label not supported: foo"),
    ("", "Node", "metadata.namespace=x", "field label not supported: metadata.namespace"),
    ("apps", "ReplicaSet", "status.replicas=0",
     '"status.replicas" is not a known field selector: only "metadata.name", "metadata.namespace"'),
    ("batch", "Job", "status.succeeded=1", 'field label "status.succeeded" not supported for batchv1.Job'),
    ("events.k8s.io", "Event", "involvedObject.kind=Pod", "field label not supported: involvedObject.kind"),
    ("resource.k8s.io", "ResourceSlice", "x=1",
     "field label not supported for resource.k8s.io/v1beta1, Kind=ResourceSlice: x"),
])
def test_validate_rejects_unsupported_fields(group, kind, text, message):
    """An unsupported field label is a 400 worded as kube-apiserver words it."""
    with pytest.raises(errors.BadRequest) as e:
        fieldselectors.validate(text, group, kind)
    assert e.value.message == message


def test_convert_maps_legacy_and_events_names():
    """spec.host reads as spec.nodeName; regarding.* reads as the stored involvedObject.* fields."""
    assert str(fieldselectors.convert("spec.host=n1", "", "Pod")) == "spec.nodeName=n1"
    assert str(fieldselectors.convert("regarding.kind=Pod,reportingController=x", "events.k8s.io", "Event")) == \
        "involvedObject.kind=Pod,reportingComponent=x"


@pytest.mark.parametrize("text,expected", [
    ("", True),
    ("metadata.name=web-1", True),
    ("metadata.namespace=prod,status.phase=Running", True),
    ("status.phase!=Running", False),
    ("spec.nodeName=node-a", True),
    ("spec.host=node-a", True),
    ("spec.nodeName=", False),
    ("spec.hostNetwork=false", True),
    ("status.podIP=10.0.0.5", True),
    ("status.podIPs=10.0.0.5", False),
    ("status.nominatedNodeName=", True),
])
def test_pod_matching(text, expected):
    """Pods match on their selectable fields; missing fields read as the empty string."""
    assert fieldselectors.matches(POD, text, "", "Pod") is expected


@pytest.mark.parametrize("obj,group,text,expected", [
    (EVENT, "", "involvedObject.kind=Pod,involvedObject.name=web-1", True),
    (EVENT, "", "source=default-scheduler,type=Normal", True),
    (EVENT, "", "reason!=Scheduled", False),
    (EVENT_V1, "events.k8s.io", "regarding.kind=Pod,regarding.uid=u1", True),
    (EVENT_V1, "events.k8s.io", "reportingController=default-scheduler", True),
    (EVENT_V1, "events.k8s.io", "source=default-scheduler", True),
    (EVENT_V1, "", "involvedObject.name=web-1", True),
])
def test_event_matching(obj, group, text, expected):
    """Both Event APIs match the same stored field set, whichever shape the object has."""
    assert fieldselectors.matches(obj, text, group, "Event") is expected


@pytest.mark.parametrize("obj,group,kind,text,expected", [
    ({"metadata": {"name": "n"}, "spec": {"unschedulable": True}}, "", "Node", "spec.unschedulable=true", True),
    ({"metadata": {"name": "n"}}, "", "Node", "spec.unschedulable=false", True),
    ({"metadata": {"name": "s", "namespace": "d"}, "type": "kubernetes.io/tls"}, "", "Secret",
     "type=kubernetes.io/tls", True),
    ({"metadata": {"name": "ns"}, "status": {"phase": "Terminating"}}, "", "Namespace", "status.phase=Active", False),
    ({"metadata": {"name": "j", "namespace": "d"}, "status": {"succeeded": 1}}, "batch", "Job",
     "status.successful=1", True),
    ({"metadata": {"name": "j", "namespace": "d"}}, "batch", "Job", "status.successful=0", True),
    ({"metadata": {"name": "r", "namespace": "d"}, "status": {"replicas": 3}}, "", "ReplicationController",
     "status.replicas=3", True),
    ({"metadata": {"name": "s", "namespace": "d"}, "spec": {"type": "ClusterIP", "clusterIP": "None"}}, "",
     "Service", "spec.clusterIP=None,spec.type=ClusterIP", True),
    ({"metadata": {"name": "c"}, "spec": {"signerName": "kubernetes.io/kubelet-serving"}},
     "certificates.k8s.io", "CertificateSigningRequest", "spec.signerName=kubernetes.io/kubelet-serving", True),
    ({"metadata": {"name": "cm", "namespace": "d"}}, "", "ConfigMap", "metadata.namespace!=d", False),
])
def test_other_kinds_matching(obj, group, kind, text, expected):
    """Every kind with extra selectable fields exposes them the way its registry's GetAttrs does."""
    assert fieldselectors.matches(obj, text, group, kind) is expected


def test_custom_resource_selectable_fields():
    """Custom resources select on their CRD's selectableFields plus metadata.name/namespace."""
    obj = {"metadata": {"name": "x", "namespace": "d"}, "spec": {"color": "red", "size": 3}}
    custom = {"spec.color": "spec.color", "spec.size": "spec.size"}
    assert fieldselectors.matches(obj, "spec.color=red,spec.size=3", "example.com", "Widget", custom_fields=custom)
    with pytest.raises(errors.BadRequest) as e:
        fieldselectors.matches(obj, "spec.shape=x", "example.com", "Widget", custom_fields=custom)
    assert e.value.message == "field label not supported: spec.shape"


@pytest.mark.parametrize("value", [None, 3, ["a=b"]])
def test_parse_rejects_non_strings(value):
    """Only strings parse; anything else is a BadRequest."""
    with pytest.raises(errors.BadRequest):
        fieldselectors.parse(value)


def test_matching_tolerates_odd_objects():
    """Objects with wrong-typed parts still evaluate instead of crashing."""
    odd = {"metadata": [], "spec": "x", "status": {"podIPs": "nope"}}
    assert fieldselectors.matches(odd, "metadata.name=", "", "Pod")
    assert not fieldselectors.matches(odd, "status.podIP=1", "", "Pod")


_PODS = [
    {"metadata": {"name": "a", "namespace": "ns"}, "spec": {"nodeName": "n1", "restartPolicy": "Always",
                                                         "hostNetwork": True, "schedulerName": "default-scheduler"},
     "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "nominatedNodeName": "n2"}},
    {"metadata": {"name": "b", "namespace": "other"}, "spec": {"serviceAccountName": "sa"},
     "status": {"phase": "Succeeded", "podIPs": []}},
    {"metadata": {"name": "c"}, "spec": {}, "status": {}},
    {"metadata": {"name": "d", "namespace": "ns"}, "spec": {"hostNetwork": "yes"}, "status": {"phase": 3}},
]


@pytest.mark.parametrize("selector", [
    "status.phase!=Succeeded,status.phase!=Failed",
    "status.phase=Running",
    "status.phase=",
    "spec.hostNetwork=true",
    "spec.hostNetwork=false,metadata.namespace=ns",
    "status.podIP=10.0.0.5",
    "status.podIP=",
    "metadata.name=b,spec.serviceAccountName=sa",
    "spec.nodeName=n1,status.phase=Running",
    "status.nominatedNodeName!=n2",
    "spec.restartPolicy=Always,spec.schedulerName=default-scheduler",
])
def test_pod_matcher_reads_only_named_fields_with_the_same_result(selector: str) -> None:
    """A pod matcher that reads only the selector's fields agrees with matching the whole field set."""
    match = fieldselectors.matcher(selector, "", "Pod")
    for pod in _PODS:
        assert match(pod) == fieldselectors.matches(pod, selector, "", "Pod"), (selector, pod)
        assert match(pod) == fieldselectors.parse(selector).matches(fieldselectors.fields_of(pod, "", "Pod"))
