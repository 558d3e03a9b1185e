"""Specification of the type registry: the built-in table, name lookup, ordering and APIServices."""

from __future__ import annotations

import pathlib

import pytest

from pocketkube.api import resources

REFERENCE = pathlib.Path(__file__).resolve().parents[3] / "shared" / "reference"


@pytest.fixture
def reg() -> resources.Registry:
    return resources.Registry.builtin()


def _crontab(version: str, **kw) -> resources.Resource:
    return resources.Resource(
        "stable.example.com", version, "crontabs", "CronTab", True, singular="crontab", short_names=("ct",),
        crd=True, subresources=(resources.Subresource("status", "CronTab", resources.GET_PATCH_UPDATE),), **kw)


def test_builtin_matches_kubectl_api_resources(reg):
    """The preferred version of every built-in resource reproduces `kubectl api-resources` of a real 1.32."""
    path = REFERENCE / "kubectl-traces" / "19-api-resources.stdout.txt"
    if not path.exists():
        pytest.skip("shared/reference not beside the repo")
    lines = path.read_text().splitlines()[1:]
    want = set()
    for line in lines:
        cols = line.split()
        short = cols[1] if len(cols) == 5 else ""
        name, api_version, namespaced, kind = cols[0], cols[-3], cols[-2], cols[-1]
        want.add((name, short, api_version, namespaced, kind))
    got = set()
    for r in reg.all():
        preferred = reg.preferred_version(r.group)
        if r.version == preferred:
            got.add((r.resource, ",".join(r.short_names), r.api_version, str(r.namespaced).lower(), r.kind))
    assert got == want


def test_builtin_counts(reg):
    """A stock 1.32 server serves 59 resources in 20 named groups plus core v1 (17 resources)."""
    assert len(reg.all()) == 59
    assert len(reg.groups()) == 19
    assert len(reg.resources("", "v1")) == 17


def test_groups_in_server_order(reg):
    """Groups come in the real server's APIService priority order; autoscaling lists v2 before v1."""
    assert reg.groups() == [
        ("apiregistration.k8s.io", ["v1"]), ("apps", ["v1"]), ("events.k8s.io", ["v1"]),
        ("authentication.k8s.io", ["v1"]), ("authorization.k8s.io", ["v1"]), ("autoscaling", ["v2", "v1"]),
        ("batch", ["v1"]), ("certificates.k8s.io", ["v1"]), ("networking.k8s.io", ["v1"]), ("policy", ["v1"]),
        ("rbac.authorization.k8s.io", ["v1"]), ("storage.k8s.io", ["v1"]),
        ("admissionregistration.k8s.io", ["v1"]), ("apiextensions.k8s.io", ["v1"]),
        ("scheduling.k8s.io", ["v1"]), ("coordination.k8s.io", ["v1"]), ("node.k8s.io", ["v1"]),
        ("discovery.k8s.io", ["v1"]), ("flowcontrol.apiserver.k8s.io", ["v1"]),
    ]


@pytest.mark.parametrize("group,want", [
    ("", "v1"), ("apps", "v1"), ("autoscaling", "v2"), ("batch", "v1"), ("nope.example.com", None),
])
def test_preferred_version(reg, group, want):
    """The preferred version is the highest-priority one, None for an unknown group."""
    assert reg.preferred_version(group) == want


@pytest.mark.parametrize("name,want", [
    ("po", ["v1/pods"]),
    ("pods", ["v1/pods"]),
    ("pod", ["v1/pods"]),
    ("Pod", ["v1/pods"]),
    ("deploy", ["apps/v1/deployments"]),
    ("Deployment", ["apps/v1/deployments"]),
    ("deployments.apps", ["apps/v1/deployments"]),
    ("deployment.v1.apps", ["apps/v1/deployments"]),
    ("ing", ["networking.k8s.io/v1/ingresses"]),
    ("ingresses.networking.k8s.io", ["networking.k8s.io/v1/ingresses"]),
    ("hpa", ["autoscaling/v2/horizontalpodautoscalers", "autoscaling/v1/horizontalpodautoscalers"]),
    ("hpa.v1.autoscaling", ["autoscaling/v1/horizontalpodautoscalers"]),
    ("ev", ["v1/events", "events.k8s.io/v1/events"]),
    ("events.events.k8s.io", ["events.k8s.io/v1/events"]),
    ("crds", ["apiextensions.k8s.io/v1/customresourcedefinitions"]),
    ("cs", ["v1/componentstatuses"]),
    ("endpoints", ["v1/endpoints"]),
    ("deployments.batch", []),
    ("nothing", []),
    ("", []),
])
def test_find(reg, name, want):
    """find() resolves every name form kubectl accepts, in kubectl's order of preference."""
    assert [f"{r.api_version}/{r.resource}" for r in reg.find(name)] == want


def test_get_and_by_kind(reg):
    """Resources are looked up by group/version/resource and by kind; subresource kinds are not resources."""
    assert reg.get("apps", "v1", "deployments").kind == "Deployment"
    assert reg.get("apps", "v1beta1", "deployments") is None
    assert reg.by_kind("", "v1", "Pod").resource == "pods"
    assert reg.by_kind("autoscaling", "v1", "HorizontalPodAutoscaler").version == "v1"
    assert reg.by_kind("", "v1", "PodExecOptions") is None
    assert [r.resource for r in reg.resources("apps", "v1")] == [
        "controllerrevisions", "daemonsets", "deployments", "replicasets", "statefulsets"]


@pytest.mark.parametrize("resource,subs", [
    ("pods", {"attach": ("PodAttachOptions", "", ("create", "get")),
              "binding": ("Binding", "", ("create",)),
              "ephemeralcontainers": ("Pod", "", ("get", "patch", "update")),
              "eviction": ("Eviction", "policy/v1", ("create",)),
              "exec": ("PodExecOptions", "", ("create", "get")),
              "log": ("Pod", "", ("get",)),
              "portforward": ("PodPortForwardOptions", "", ("create", "get")),
              "proxy": ("PodProxyOptions", "", ("create", "delete", "get", "patch", "update")),
              "status": ("Pod", "", ("get", "patch", "update"))}),
    ("namespaces", {"finalize": ("Namespace", "", ("update",)),
                    "status": ("Namespace", "", ("get", "patch", "update"))}),
    ("serviceaccounts", {"token": ("TokenRequest", "authentication.k8s.io/v1", ("create",))}),
    ("replicationcontrollers", {"scale": ("Scale", "autoscaling/v1", ("get", "patch", "update")),
                                "status": ("ReplicationController", "", ("get", "patch", "update"))}),
    ("nodes", {"proxy": ("NodeProxyOptions", "", ("create", "delete", "get", "patch", "update")),
               "status": ("Node", "", ("get", "patch", "update"))}),
    ("configmaps", {}),
])
def test_core_subresources(reg, resource, subs):
    """Core subresources carry the kind, group/version and verbs the real server reports."""
    r = reg.get("", "v1", resource)
    got = {s.name: (s.kind, f"{s.group}/{s.version}" if s.group else "", s.verbs) for s in r.subresources}
    assert got == subs


def test_group_subresources(reg):
    """Scale subresources speak autoscaling/v1 Scale; CSRs have approval; everything else matches status."""
    assert reg.get("apps", "v1", "deployments").subresource("scale").group == "autoscaling"
    assert {s.name for s in reg.get("certificates.k8s.io", "v1", "certificatesigningrequests").subresources} == {
        "approval", "status"}
    assert reg.get("apps", "v1", "deployments").subresource("log") is None


def test_shared_storage(reg):
    """events.k8s.io events live with core events; both HPA versions share autoscaling/v2 storage."""
    ev, core_ev = reg.get("events.k8s.io", "v1", "events"), reg.get("", "v1", "events")
    assert ev.storage_key == core_ev.storage_key == ("", "events")
    assert ev.storage_version_hash == core_ev.storage_version_hash == "r2yiGXH7wu8="
    v1, v2 = reg.get("autoscaling", "v1", "horizontalpodautoscalers"), reg.get("autoscaling", "v2", "horizontalpodautoscalers")
    assert v1.storage_key == v2.storage_key == ("autoscaling", "horizontalpodautoscalers")
    assert v1.storage_version == v2.storage_version == "v2"
    assert v1.storage_version_hash == v2.storage_version_hash
    assert reg.get("apps", "v1", "deployments").storage_key == ("apps", "deployments")


@pytest.mark.parametrize("group,resource,want", [
    ("", "configmaps", "qFsyl6wFWjQ="),
    ("", "pods", "xPOwRZ+Yhw8="),
    ("apps", "deployments", "8aSe+NMegvE="),
    ("", "bindings", ""),
    ("", "componentstatuses", ""),
    ("authorization.k8s.io", "subjectaccessreviews", ""),
])
def test_storage_version_hash(reg, group, resource, want):
    """storageVersionHash is the real server's value; virtual resources have none."""
    assert reg.get(group, "v1", resource).storage_version_hash == want


@pytest.mark.parametrize("versions,want", [
    (["v1", "v2"], ["v2", "v1"]),
    (["v1beta1", "v1", "v1alpha1", "v1beta2"], ["v1", "v1beta2", "v1beta1", "v1alpha1"]),
    (["v11alpha2", "v10", "v12alpha1", "v3beta1", "v2", "foo1", "v1", "v11beta2", "v10beta3", "foo10"],
     ["v10", "v2", "v1", "v11beta2", "v10beta3", "v3beta1", "v12alpha1", "v11alpha2", "foo1", "foo10"]),
])
def test_version_sort_key(versions, want):
    """Versions sort by Kubernetes version priority: GA, then beta, then alpha, then others by name."""
    assert sorted(versions, key=resources.version_sort_key) == want


def test_crd_group_appears_after_builtins(reg):
    """A CRD group sorts after built-in groups, its versions by Kubernetes version priority."""
    gen = reg.generation
    for v in ("v1beta1", "v1", "v2alpha1"):
        reg.add(_crontab(v))
    reg.add(resources.Resource("a.example.com", "v1", "widgets", "Widget", False, crd=True))
    assert reg.generation == gen + 4
    assert reg.groups()[-2:] == [("a.example.com", ["v1"]), ("stable.example.com", ["v1", "v1beta1", "v2alpha1"])]
    assert reg.preferred_version("stable.example.com") == "v1"
    assert [r.api_version for r in reg.find("ct")] == [
        "stable.example.com/v1", "stable.example.com/v1beta1", "stable.example.com/v2alpha1"]
    assert reg.priorities("stable.example.com", "v1") == (1000, 100)


def test_crd_explicit_priority(reg):
    """A group priority given explicitly orders the group among built-in ones."""
    reg.add(_crontab("v1", group_priority=17450, version_priority=15))
    names = [g for g, _ in reg.groups()]
    assert names[names.index("autoscaling") + 1:names.index("batch")] == ["stable.example.com"]


def test_remove(reg):
    """remove() drops a resource, bumps generation, and forgets an emptied group/version."""
    reg.add(_crontab("v1"))
    gen = reg.generation
    assert reg.remove("stable.example.com", "v1", "crontabs").kind == "CronTab"
    assert reg.generation == gen + 1
    assert reg.remove("stable.example.com", "v1", "crontabs") is None
    assert reg.generation == gen + 1
    assert reg.preferred_version("stable.example.com") is None
    assert "stable.example.com" not in dict(reg.groups())


def test_add_replaces(reg):
    """Adding a resource again at the same group/version/resource replaces it."""
    reg.add(_crontab("v1"))
    reg.add(_crontab("v1", categories=("all",)))
    assert reg.get("stable.example.com", "v1", "crontabs").categories == ("all",)
    assert len(reg.resources("stable.example.com", "v1")) == 1


def test_builtin_apiservices(reg):
    """Every built-in group/version has a local, Available APIService named VERSION.GROUP."""
    svcs = resources.builtin_apiservices(reg, now="2026-01-01T00:00:00Z")
    by_name = {s["metadata"]["name"]: s for s in svcs}
    assert len(svcs) == 21
    assert list(by_name)[:3] == ["v1.", "v1.apiregistration.k8s.io", "v1.apps"]
    assert by_name["v1.apps"] == {
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1.apps", "labels": {"kube-aggregator.kubernetes.io/automanaged": "onstart"}},
        "spec": {"group": "apps", "version": "v1", "groupPriorityMinimum": 17800, "versionPriority": 15},
        "status": {"conditions": [{"type": "Available", "status": "True",
                                   "lastTransitionTime": "2026-01-01T00:00:00Z", "reason": "Local",
                                   "message": "Local APIServices are always available"}]},
    }
    assert by_name["v1."]["spec"] == {"version": "v1", "groupPriorityMinimum": 18000, "versionPriority": 1}
    assert by_name["v2.autoscaling"]["spec"]["versionPriority"] == 30


def test_builtin_apiservices_skip_crds(reg):
    """CRD group/versions get no built-in APIService; apiservice() builds theirs, labelled automanaged=true."""
    reg.add(_crontab("v1"))
    assert "v1.stable.example.com" not in {s["metadata"]["name"] for s in resources.builtin_apiservices(reg)}
    svc = resources.apiservice("stable.example.com", "v1", group_priority=1000, version_priority=100,
                               automanaged="true")
    assert svc["metadata"]["labels"] == {"kube-aggregator.kubernetes.io/automanaged": "true"}
    assert "lastTransitionTime" not in svc["status"]["conditions"][0]
