"""Strategic merge patch on built-in kinds; expected results were checked against kubectl 1.32 `patch --local`."""

import copy

import pytest

from pocketkube.api import errors, schemas, strategic

LAST_APPLIED = ('{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"annotations":{},"labels":{"app":"web"},'
                '"name":"web","namespace":"default"},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},'
                '"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"image":"nginx:1.27",'
                '"name":"c","ports":[{"containerPort":80}]}]}}}}\n')

# Deployment default/web as `kubectl get -o yaml` showed it (trace 06), plus env, volumes and tolerations.
DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default", "generation": 2, "resourceVersion": "346",
                 "labels": {"app": "web"}, "finalizers": ["a", "b", "c"],
                 "annotations": {"deployment.kubernetes.io/revision": "2",
                                 "kubectl.kubernetes.io/last-applied-configuration": LAST_APPLIED}},
    "spec": {
        "progressDeadlineSeconds": 600, "replicas": 3, "revisionHistoryLimit": 10,
        "selector": {"matchLabels": {"app": "web"}},
        "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}, "type": "RollingUpdate"},
        "template": {
            "metadata": {"creationTimestamp": None, "labels": {"app": "web"}},
            "spec": {
                "containers": [{
                    "image": "nginx:1.27", "imagePullPolicy": "IfNotPresent", "name": "c",
                    "ports": [{"containerPort": 80, "protocol": "TCP"}], "resources": {},
                    "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "volumeMounts": [{"name": "v1", "mountPath": "/a"}],
                }],
                "volumes": [{"name": "v1", "emptyDir": {}}, {"name": "v2", "configMap": {"name": "cm"}}],
                "tolerations": [{"key": "k", "operator": "Exists"}],
                "dnsPolicy": "ClusterFirst", "restartPolicy": "Always", "schedulerName": "default-scheduler",
                "securityContext": {}, "terminationGracePeriodSeconds": 30,
            },
        },
    },
}
SCHEMA = schemas.definitions()[schemas.definition_name("apps", "v1", "Deployment")]


def smp(patch, original=DEPLOY):
    return strategic.apply(original, patch, SCHEMA, resolve=schemas.resolve)


def pod_spec(d):
    return d["spec"]["template"]["spec"]


def container(d, i=0):
    return pod_spec(d)["containers"][i]


def test_kubectl_apply_patch_changes_image():
    """The patch of trace 05 (kubectl apply, changed image) updates annotation and image, keeps the rest."""
    patch = {"metadata": {"annotations": {"kubectl.kubernetes.io/last-applied-configuration": "new"}},
             "spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c"}],
                                            "containers": [{"image": "nginx:1.27", "name": "c"}]}}}}
    result = smp(patch)
    assert result["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] == "new"
    assert result["metadata"]["annotations"]["deployment.kubernetes.io/revision"] == "2"
    assert pod_spec(result)["containers"] == pod_spec(DEPLOY)["containers"]
    assert "$setElementOrder/containers" not in pod_spec(result)


def test_kubectl_set_image_patch():
    """The exact body of trace 12 (kubectl set image) swaps only the image of container c."""
    result = smp(b'{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"c"}],'
                 b'"containers":[{"image":"nginx:1.26","name":"c"}]}}}}')
    expected = copy.deepcopy(DEPLOY)
    expected["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.26"
    assert result == expected


def test_scale_style_patch_and_purity():
    """A plain map patch merges, and neither input is modified."""
    original, patch = copy.deepcopy(DEPLOY), {"spec": {"replicas": 5}}
    result = smp(patch, original)
    assert result["spec"]["replicas"] == 5
    assert original == DEPLOY and patch == {"spec": {"replicas": 5}}


@pytest.mark.parametrize("patch,get,expected", [
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "C", "value": "3"}]}]}}}},
     # kube puts items the live list lacks first (kubectl apply adds $setElementOrder to avoid it)
     lambda d: container(d)["env"], [{"name": "C", "value": "3"}, {"name": "A", "value": "1"}, {"name": "B", "value": "2"}]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "value": "9"}]}]}}}},
     lambda d: container(d)["env"], [{"name": "A", "value": "9"}, {"name": "B", "value": "2"}]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "env": [{"name": "A", "$patch": "delete"}]}]}}}},
     lambda d: container(d)["env"], [{"name": "B", "value": "2"}]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "$setElementOrder/env": [
        {"name": "B"}, {"name": "C"}, {"name": "A"}], "env": [{"name": "C", "value": "3"}]}]}}}},
     lambda d: [e["name"] for e in container(d)["env"]], ["B", "C", "A"]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "d", "image": "busybox"}]}}}},
     lambda d: [c["name"] for c in pod_spec(d)["containers"]], ["d", "c"]),
    ({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "d"}],
                                     "containers": [{"name": "d", "image": "busybox"}]}}}},
     lambda d: [c["name"] for c in pod_spec(d)["containers"]], ["c", "d"]),
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "$patch": "delete"}]}}}},
     lambda d: pod_spec(d)["containers"], []),
    ({"spec": {"template": {"spec": {"containers": [{"name": "x", "image": "i"}, {"$patch": "replace"}]}}}},
     lambda d: pod_spec(d)["containers"], [{"name": "x", "image": "i"}]),
    # ports merge on containerPort
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "ports": [
        {"containerPort": 443}, {"containerPort": 80, "name": "http"}]}]}}}},
     lambda d: container(d)["ports"],
     [{"containerPort": 443}, {"containerPort": 80, "protocol": "TCP", "name": "http"}]),
    # tolerations are atomic: replaced whole
    ({"spec": {"template": {"spec": {"tolerations": [{"key": "x", "operator": "Equal", "value": "y"}]}}}},
     lambda d: pod_spec(d)["tolerations"], [{"key": "x", "operator": "Equal", "value": "y"}]),
    # volumes merge on name; $retainKeys swaps the volume source
    ({"spec": {"template": {"spec": {"volumes": [
        {"name": "v2", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}]}}}},
     lambda d: pod_spec(d)["volumes"], [{"name": "v1", "emptyDir": {}}, {"name": "v2", "secret": {"secretName": "s"}}]),
    ({"spec": {"template": {"spec": {"volumes": [{"name": "v3", "hostPath": {"path": "/x"}}]}}}},
     lambda d: [v["name"] for v in pod_spec(d)["volumes"]], ["v3", "v1", "v2"]),
    # retainKeys on the Deployment strategy
    ({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None}}},
     lambda d: d["spec"]["strategy"], {"type": "Recreate"}),
    ({"spec": {"strategy": {"$retainKeys": ["rollingUpdate", "type"], "type": "RollingUpdate",
                            "rollingUpdate": {"maxSurge": 2}}}},
     lambda d: d["spec"]["strategy"], {"rollingUpdate": {"maxSurge": 2, "maxUnavailable": "25%"}, "type": "RollingUpdate"}),
    # null deletes a label; a new map keeps its non-null members only
    ({"metadata": {"labels": {"app": None, "new": "x"}}}, lambda d: d["metadata"]["labels"], {"new": "x"}),
    ({"spec": {"template": {"spec": {"nodeSelector": {"a": "b", "c": None}}}}},
     lambda d: pod_spec(d)["nodeSelector"], {"a": "b"}),
    # primitive lists with merge strategy are merged as sets; parallel deletion list
    ({"metadata": {"finalizers": ["d", "a"]}}, lambda d: d["metadata"]["finalizers"], ["d", "a", "b", "c"]),
    ({"metadata": {"$deleteFromPrimitiveList/finalizers": ["b"]}}, lambda d: d["metadata"]["finalizers"], ["a", "c"]),
    ({"metadata": {"$setElementOrder/finalizers": ["c", "a", "b", "d"], "finalizers": ["d"]}},
     lambda d: d["metadata"]["finalizers"], ["c", "a", "b", "d"]),
    ({"metadata": {"$deleteFromPrimitiveList/finalizers": None}}, lambda d: "finalizers" in d["metadata"], False),
    # $patch on maps
    ({"spec": {"template": {"metadata": {"$patch": "replace", "labels": {"z": "1"}}}}},
     lambda d: d["spec"]["template"]["metadata"], {"labels": {"z": "1"}}),
    ({"spec": {"template": {"spec": {"securityContext": {"$patch": "delete"}}}}},
     lambda d: pod_spec(d)["securityContext"], {}),
    # a newly added list drops items carrying directives
    ({"spec": {"template": {"spec": {"hostAliases": [{"ip": "1.1.1.1", "hostnames": ["a"]},
                                                     {"ip": "2.2.2.2", "$patch": "delete"}]}}}},
     lambda d: pod_spec(d)["hostAliases"], [{"ip": "1.1.1.1", "hostnames": ["a"]}]),
    # a type change replaces the value
    ({"spec": {"replicas": 2.5}}, lambda d: d["spec"]["replicas"], 2.5),
])
def test_patch_strategies(patch, get, expected):
    """Merge keys, patch strategies and directives behave as kube-apiserver applies them."""
    assert get(smp(patch)) == expected


def test_delete_and_readd_orders_like_kube():
    """Deleting and re-adding an item under $setElementOrder orders by kube's in-place-shifted live list."""
    original = copy.deepcopy(DEPLOY)
    pod_spec(original)["containers"].append({"name": "side", "image": "x"})
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "c"}],
        "containers": [{"name": "c", "env": [], "args": []}, {"name": "c", "$patch": "delete"}]}}}}
    result = smp(patch, original)
    assert [c["name"] for c in pod_spec(result)["containers"]] == ["side", "c"]
    assert container(result, 1) == {"name": "c", "env": [], "args": []}


@pytest.mark.parametrize("patch,status,message", [
    ({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": {"maxSurge": 1}}}},
     400, "invalid patch format of retainKeys"),
    ({"spec": {"strategy": {"$retainKeys": "type"}}}, 400, "invalid patch format of retainKeys"),
    ({"spec": {"template": {"$patch": "merge"}}}, 400, "unknown patch type: merge in map: map[$patch:merge]"),
    ({"spec": {"template": {"$patch": 1}}}, 400, "unknown patch type: %!s(int64=1) in map: map[$patch:1]"),
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "$patch": "bogus"}]}}}}, 400,
     "unknown patch type: bogus in map: map[$patch:bogus name:c]"),
    ({"spec": {"template": {"spec": {"containers": [{"name": "c", "$patch": "merge"}]}}}}, 400,
     "merging lists cannot yet be specified in the patch"),
    ({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}, 400,
     "map: map[image:x] does not contain declared merge key: name"),
    ({"metadata": {"finalizers": ["a", 1]}}, 400, "list element types are not identical: [[a b c] [a 1]]"),
    ({"spec": {"template": {"spec": {"$setElementOrder/containers": "x"}}}}, 400,
     "expected a []interface {}, but received a string"),
    ({"spec": {"template": {"spec": {"$setElementOrder/containers": [{"name": "c"}],
                                     "containers": [{"name": "zz", "image": "a"}]}}}}, 400,
     "The order in patch list:\n[map[image:a name:zz]]\n doesn't match $setElementOrder list:\n[map[name:c]]\n"),
    ({"metadata": {"$deleteFromPrimitiveListfinalizers": ["a"]}}, 400, "invalid patch format of primitive list"),
])
def test_errors(patch, status, message):
    """Bad patches fail with kube's wording: 400 for malformed directives, 422 for the two kube rejects."""
    with pytest.raises(errors.APIError) as e:
        smp(patch)
    assert e.value.code == status
    if status == 422:
        assert isinstance(e.value, errors.PatchRejected)
        assert e.value.detail == message
    else:
        assert e.value.message == message


@pytest.mark.parametrize("patch,message", [
    (b"[1]", "json: cannot unmarshal array into Go value of type map[string]interface {}"),
    ("5", "json: cannot unmarshal number into Go value of type map[string]interface {}"),
    (b'{"spec":', "unexpected end of JSON input"),
    (["a"], "json: cannot unmarshal array into Go value of type map[string]interface {}"),
])
def test_undecodable_patch_is_400(patch, message):
    """A patch body that is not a JSON object is a 400 with the decoder's message."""
    with pytest.raises(errors.BadRequest) as e:
        smp(patch)
    assert e.value.message == message


def test_list_of_lists_is_422():
    """Merging a list whose items are lists is one of the two patch errors kube answers with 422."""
    original = copy.deepcopy(DEPLOY)
    original["metadata"]["finalizers"] = []
    with pytest.raises(errors.PatchRejected) as e:
        smp({"metadata": {"finalizers": [["a"]]}}, original)
    assert e.value.detail == "lists of lists are not supported"


def test_no_schema_means_unsupported():
    """Kinds without strategic merge metadata (custom resources) are refused like kube does."""
    with pytest.raises(errors.BadRequest) as e:
        strategic.apply({"a": 1}, {"a": 2}, None, resolve=schemas.resolve)
    assert e.value.message == "strategic merge patch format is not supported"


def test_null_patch_is_a_no_op_and_bad_original():
    """A JSON null patch changes nothing; a non-object original is a BadRequest."""
    assert smp(b"null") == DEPLOY
    with pytest.raises(errors.BadRequest):
        strategic.apply([1], {}, SCHEMA, resolve=schemas.resolve)


def test_other_kinds_use_their_schema():
    """Pod ownerReferences merge on uid and Service ports on port, from their own schemas."""
    pod_schema = schemas.definitions()[schemas.definition_name("", "v1", "Pod")]
    pod = {"metadata": {"name": "p", "ownerReferences": [{"uid": "1", "name": "a"}]},
           "spec": {"containers": [{"name": "c"}]}}
    out = strategic.apply(pod, {"metadata": {"ownerReferences": [{"uid": "2", "name": "b"}]}}, pod_schema,
                          resolve=schemas.resolve)
    assert [o["uid"] for o in out["metadata"]["ownerReferences"]] == ["2", "1"]
    svc_schema = schemas.definitions()[schemas.definition_name("", "v1", "Service")]
    svc = {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}
    out = strategic.apply(svc, {"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}, svc_schema,
                          resolve=schemas.resolve)
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}]


@pytest.mark.parametrize("patch", [
    {"spec": []}, {"spec": {"template": {"spec": {"containers": {"name": "c"}}}}},
    {"spec": {"template": {"spec": {"containers": [None]}}}}, {"metadata": {"finalizers": [None, {}]}},
    {"$retainKeys": [1, {}]}, {"spec": {"$setElementOrder/x": [None]}}, {"spec": {"strategy": {"$patch": None}}},
    {"spec": {"template": {"spec": {"$setElementOrder/containers": [1], "containers": [{"name": "c"}]}}}},
    {"spec": {"template": {"spec": {"containers": [{"name": {"a": 1}}]}}}},
])
def test_garbage_never_crashes(patch):
    """Odd but well-formed JSON either applies or raises an APIError, never anything else."""
    try:
        smp(patch)
    except errors.APIError:
        pass
