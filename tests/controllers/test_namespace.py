"""Specification of the namespace controller: content deletion, conditions, finalize, kube-root-ca.crt."""

from __future__ import annotations

import pytest

from pocketkube.base import clock
from pocketkube.client import rest
from pocketkube.controllers import namespace
from pocketkube.runtime import controller
from tests.controllers import fakeapi

CM = rest.GVR("", "v1", "configmaps")
NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:01:00Z"


@pytest.mark.parametrize("ns,step", [
    ({"metadata": {"name": "a"}}, "publish"),
    ({"metadata": {"name": "a", "deletionTimestamp": NOW}, "spec": {"finalizers": ["kubernetes"]}}, "cleanup"),
    ({"metadata": {"name": "a", "deletionTimestamp": NOW}, "spec": {"finalizers": ["other"]}}, "done"),
    ({"metadata": {"name": "a", "deletionTimestamp": NOW}, "spec": {}}, "done"),
])
def test_decide(ns, step):
    """Live namespaces get their root CA; terminating ones are cleaned until "kubernetes" is finalized."""
    assert namespace.decide(ns) == step


def _meta(name, *, finalizers=(), deleting=False, ns="x"):
    m = {"name": name, "namespace": ns}
    if finalizers:
        m["finalizers"] = list(finalizers)
    if deleting:
        m["deletionTimestamp"] = NOW
    return {"metadata": m}


@pytest.mark.parametrize("items,remaining,fins,terminating,problem", [
    ([], {}, {}, 0, ""),
    ([_meta("a", finalizers=["f/1"], deleting=True)], {CM: 1}, {"f/1": 1}, 0, ""),
    ([_meta("a", finalizers=["f/1", "f/2"]), _meta("b", finalizers=["f/1"])], {CM: 2}, {"f/1": 2, "f/2": 1}, 0, ""),
    ([_meta("a", deleting=True)], {CM: 1}, {}, 1, ""),
    ([_meta("a")], {CM: 1}, {}, 0, "unexpected items still remain in namespace: x for gvr: /v1, Resource=configmaps"),
])
def test_tally(items, remaining, fins, terminating, problem):
    """Leftovers are counted per resource and per finalizer; one with neither finalizer nor deletion is an error."""
    report = namespace.ContentReport()
    assert namespace.tally(report, CM, items) == problem
    assert report.remaining == remaining
    assert report.finalizers == fins
    assert report.terminating == terminating


@pytest.mark.parametrize("report,want", [
    (namespace.ContentReport(), {}),
    (namespace.ContentReport(remaining={CM: 1, rest.GVR("apps", "v1", "deployments"): 2},
                             finalizers={"example.com/hold": 1, "a/b": 2}),
     {namespace.CONTENT_REMAINING: ("SomeResourcesRemain", "Some resources are remaining: configmaps. has 1 "
                                    "resource instances, deployments.apps has 2 resource instances"),
      namespace.FINALIZERS_REMAINING: ("SomeFinalizersRemain", "Some content in the namespace has finalizers "
                                       "remaining: a/b in 2 resource instances, example.com/hold in 1 resource "
                                       "instances")}),
    (namespace.ContentReport(discovery_error="Discovery failed for some groups, 1 failing: x",
                             content_errors=["e1", "e2"]),
     {namespace.DISCOVERY_FAILURE: ("DiscoveryFailed", "Discovery failed for some groups, 1 failing: x"),
      namespace.CONTENT_FAILURE: ("ContentDeletionFailed", "[e1, e2]")}),
    (namespace.ContentReport(content_errors=["only"]),
     {namespace.CONTENT_FAILURE: ("ContentDeletionFailed", "only")}),
])
def test_failures(report, want):
    """Each problem becomes the failing condition kube's namespace deleter writes, with its wording."""
    assert namespace.failures(report) == want


def test_conditions_all_types_and_transition_times():
    """All five conditions are written; lastTransitionTime changes only when a status flips."""
    first = namespace.conditions([], {namespace.CONTENT_REMAINING: ("SomeResourcesRemain", "m")}, NOW)
    assert [c["type"] for c in first] == list(namespace.CONDITION_TYPES)
    assert {c["type"]: c["status"] for c in first}[namespace.CONTENT_REMAINING] == "True"
    assert first[0] == {"type": "NamespaceDeletionDiscoveryFailure", "status": "False", "lastTransitionTime": NOW,
                        "reason": "ResourcesDiscovered", "message": "All resources successfully discovered"}
    second = namespace.conditions(first + [{"type": "Custom", "status": "True"}], {}, LATER)
    by = {c["type"]: c for c in second}
    assert by[namespace.CONTENT_REMAINING] == {
        "type": "NamespaceContentRemaining", "status": "False", "lastTransitionTime": LATER,
        "reason": "ContentRemoved", "message": "All content successfully removed"}
    assert by[namespace.DISCOVERY_FAILURE]["lastTransitionTime"] == NOW
    assert by["Custom"] == {"type": "Custom", "status": "True"}


@pytest.mark.parametrize("existing,want_verb", [
    (None, "create"),
    ({"metadata": {"name": "kube-root-ca.crt", "namespace": "n",
                   "annotations": {namespace.DESCRIPTION_ANNOTATION: namespace.DESCRIPTION}},
      "data": {"ca.crt": "PEM"}}, None),
    ({"metadata": {"name": "kube-root-ca.crt", "namespace": "n"}, "data": {"ca.crt": "PEM"}}, "update"),
    ({"metadata": {"name": "kube-root-ca.crt", "namespace": "n", "annotations": None},
      "data": {"ca.crt": "OLD", "x": "y"}}, "update"),
])
def test_root_ca_change(existing, want_verb):
    """kube-root-ca.crt is created, or updated to exactly {ca.crt} plus the description annotation."""
    change = namespace.root_ca_change(existing, "PEM", "n")
    if want_verb is None:
        assert change is None
        return
    verb, body = change
    assert verb == want_verb
    assert body["data"] == {"ca.crt": "PEM"}
    assert body["metadata"]["annotations"][namespace.DESCRIPTION_ANNOTATION].startswith(
        "Contains a CA bundle that can be used to verify the kube-apiserver")
    assert body["metadata"]["name"] == "kube-root-ca.crt" and body["metadata"]["namespace"] == "n"


def _controller(api):
    return namespace.NamespaceController(api, ca_pem="PEM", clock=clock.FakeClock())


async def test_reconcile_publishes_root_ca():
    """A live namespace gets a kube-root-ca.crt ConfigMap with the cluster CA."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.NAMESPACES, "x")
    out = await _controller(api).reconcile("x")
    assert out == controller.DONE
    cm = api.find(fakeapi.CONFIGMAPS, "kube-root-ca.crt", "x")
    assert cm["data"] == {"ca.crt": "PEM"}


async def test_reconcile_missing_namespace_is_done():
    """A namespace that no longer exists needs nothing."""
    assert await _controller(fakeapi.FakeAPI()).reconcile("gone") == controller.DONE


async def test_terminating_namespace_waits_for_finalizers_then_finalizes():
    """Content is deleted; an object held by a finalizer keeps the namespace waiting; then it is finalized."""
    api = fakeapi.FakeAPI()
    api.add(fakeapi.NAMESPACES, "x", deletionTimestamp=NOW)
    api.objects[fakeapi.NAMESPACES.gvr.path("", "x")]["spec"] = {"finalizers": ["kubernetes"]}
    api.add(fakeapi.CONFIGMAPS, "plain", "x")
    api.add(fakeapi.CONFIGMAPS, "held", "x", finalizers=["example.com/hold"])
    api.add(fakeapi.WIDGETS, "w", "x")
    api.add(fakeapi.CONFIGMAPS, "elsewhere", "y")
    ctl = _controller(api)

    out = await ctl.reconcile("x")
    assert out == controller.requeue_after(namespace.REMAINING_REQUEUE)
    assert api.find(fakeapi.CONFIGMAPS, "plain", "x") is None
    assert api.find(fakeapi.WIDGETS, "w", "x") is None  # no deletecollection: listed and deleted one by one
    assert api.find(fakeapi.CONFIGMAPS, "elsewhere", "y") is not None
    assert api.find(fakeapi.CONFIGMAPS, "held", "x")["metadata"]["deletionTimestamp"]
    assert ("deletecollection", "/api/v1/namespaces/x/configmaps", "Background") in api.calls
    ns = api.find(fakeapi.NAMESPACES, "x")
    conds = {c["type"]: c for c in ns["status"]["conditions"]}
    assert conds["NamespaceContentRemaining"]["message"] == \
        "Some resources are remaining: configmaps. has 1 resource instances"
    assert conds["NamespaceFinalizersRemaining"]["message"] == \
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    assert ns["spec"]["finalizers"] == ["kubernetes"]

    await api.patch(fakeapi.CONFIGMAPS.gvr.path("x", "held"), {"metadata": {"finalizers": None}})
    assert await ctl.reconcile("x") == controller.DONE
    assert api.find(fakeapi.NAMESPACES, "x") is None
    finalize = [c for c in api.calls if c[0] == "update/finalize"]
    assert finalize and finalize[0][2]["spec"]["finalizers"] == []
    status = [c for c in api.calls if c[0] == "update/status"][-1][2]
    assert {c["type"]: c["status"] for c in status["status"]["conditions"]} == dict.fromkeys(
        namespace.CONDITION_TYPES, "False")


async def test_discovery_failure_is_reported_and_retried():
    """Groups failing discovery set NamespaceDeletionDiscoveryFailure and the namespace is retried."""
    api = fakeapi.FakeAPI()
    api.discovery_failed = {"metrics.k8s.io/v1beta1": "the server is currently unable to handle the request"}
    api.add(fakeapi.NAMESPACES, "x", deletionTimestamp=NOW)
    api.objects[fakeapi.NAMESPACES.gvr.path("", "x")]["spec"] = {"finalizers": ["kubernetes"]}
    with pytest.raises(RuntimeError, match="Discovery failed for some groups, 1 failing"):
        await _controller(api).reconcile("x")
    conds = {c["type"]: c for c in api.find(fakeapi.NAMESPACES, "x")["status"]["conditions"]}
    assert conds["NamespaceDeletionDiscoveryFailure"]["status"] == "True"
    assert conds["NamespaceDeletionDiscoveryFailure"]["reason"] == "DiscoveryFailed"
    assert api.find(fakeapi.NAMESPACES, "x")["spec"]["finalizers"] == ["kubernetes"]
