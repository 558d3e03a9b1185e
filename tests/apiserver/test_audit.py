"""The audit log: policy rule matching, policy validation, and the events an API request produces."""

from __future__ import annotations

import datetime
import os
from typing import Any

import orjson
import pytest
from aiohttp import test_utils, web

from pocketkube.api import conversion, resources
from pocketkube.apiserver import audit, audit_policy, context, negotiate, objects, requestinfo, server
from pocketkube.base import clock as clock_mod
from pocketkube.store import memory
from tests.apiserver import harness

ALICE = context.User("alice", ("dev", "system:authenticated"))
BOB = context.User("bob", ("ops", "system:authenticated"))


def info(method: str, path: str) -> requestinfo.RequestInfo:
    return requestinfo.parse(method, path)


def rule(**kw: Any) -> audit_policy.Rule:
    return audit_policy.Rule(level="Metadata", **kw)


GR = audit_policy.GroupResources


@pytest.mark.parametrize(("r", "user", "method", "path", "verb", "matches"), [
    (rule(), ALICE, "GET", "/api/v1/pods", "list", True),
    (rule(users=("alice",)), ALICE, "GET", "/api/v1/pods", "list", True),
    (rule(users=("alice",)), BOB, "GET", "/api/v1/pods", "list", False),
    (rule(users=("alice",)), None, "GET", "/api/v1/pods", "list", False),
    (rule(user_groups=("ops",)), BOB, "GET", "/api/v1/pods", "list", True),
    (rule(user_groups=("ops",)), ALICE, "GET", "/api/v1/pods", "list", False),
    (rule(verbs=("get", "list")), ALICE, "GET", "/api/v1/pods", "list", True),
    (rule(verbs=("create",)), ALICE, "GET", "/api/v1/pods", "list", False),
    (rule(resources=(GR("", ("secrets",)),)), ALICE, "GET", "/api/v1/namespaces/a/secrets/s", "get", True),
    (rule(resources=(GR("", ("secrets",)),)), ALICE, "GET", "/apis/apps/v1/namespaces/a/deployments", "list", False),
    (rule(resources=(GR("apps",),)), ALICE, "GET", "/apis/apps/v1/namespaces/a/deployments", "list", True),
    (rule(resources=(GR("", ("pods",)),)), ALICE, "GET", "/api/v1/namespaces/a/pods/p/log", "get", False),
    (rule(resources=(GR("", ("pods/log",)),)), ALICE, "GET", "/api/v1/namespaces/a/pods/p/log", "get", True),
    (rule(resources=(GR("", ("pods/*",)),)), ALICE, "GET", "/api/v1/namespaces/a/pods/p/status", "get", True),
    (rule(resources=(GR("", ("*/status",)),)), ALICE, "GET", "/api/v1/namespaces/a/pods/p/status", "get", True),
    (rule(resources=(GR("", ("*/status",)),)), ALICE, "GET", "/api/v1/namespaces/a/pods/p", "get", False),
    (rule(resources=(GR("", ("*",)),)), ALICE, "GET", "/api/v1/namespaces/a/pods/p/exec", "get", True),
    (rule(resources=(GR("", ("configmaps",), ("cfg",)),)), ALICE, "GET", "/api/v1/namespaces/a/configmaps/cfg", "get",
     True),
    (rule(resources=(GR("", ("configmaps",), ("cfg",)),)), ALICE, "GET", "/api/v1/namespaces/a/configmaps/x", "get",
     False),
    (rule(namespaces=("kube-system",)), ALICE, "GET", "/api/v1/namespaces/kube-system/pods", "list", True),
    (rule(namespaces=("kube-system",)), ALICE, "GET", "/api/v1/namespaces/default/pods", "list", False),
    (rule(namespaces=("",)), ALICE, "GET", "/api/v1/nodes", "list", True),
    (rule(namespaces=("kube-system",)), ALICE, "GET", "/healthz", "get", False),
    (rule(non_resource_urls=("/healthz*",)), ALICE, "GET", "/healthz/ready", "get", True),
    (rule(non_resource_urls=("/version",)), ALICE, "GET", "/version", "get", True),
    (rule(non_resource_urls=("/version",)), ALICE, "GET", "/versions", "get", False),
    (rule(non_resource_urls=("*",)), ALICE, "GET", "/api/v1/pods", "list", False),
    (rule(non_resource_urls=("*",)), ALICE, "GET", "/openapi/v2", "get", True),
])
def test_rule_matching(r: audit_policy.Rule, user: context.User | None, method: str, path: str, verb: str,
                       matches: bool) -> None:
    """Rules match users, groups, verbs, resources (with subresource and name forms), namespaces and URLs like kube's."""
    assert audit_policy.rule_matches(r, user, info(method, path), verb) is matches


def test_first_matching_rule_wins_and_stages_merge() -> None:
    """The first match sets the level; policy and rule omitStages add up; a rule's omitManagedFields overrides."""
    policy = audit_policy.Policy((audit_policy.Rule("None", users=("system:kube-proxy",)),
                           audit_policy.Rule("Metadata", resources=(GR("", ("secrets",)),), omit_stages=("ResponseStarted",),
                                      omit_managed_fields=False),
                           audit_policy.Rule("RequestResponse")), omit_stages=("RequestReceived",), omit_managed_fields=True)
    proxy = context.User("system:kube-proxy")
    assert policy.evaluate(proxy, info("GET", "/api/v1/namespaces/a/secrets"), "list").level == "None"
    secret = policy.evaluate(ALICE, info("GET", "/api/v1/namespaces/a/secrets"), "list")
    assert secret == audit_policy.Decision("Metadata", frozenset({"RequestReceived", "ResponseStarted"}), False)
    other = policy.evaluate(ALICE, info("GET", "/api/v1/namespaces/a/pods"), "list")
    assert other == audit_policy.Decision("RequestResponse", frozenset({"RequestReceived"}), True)
    assert audit_policy.Policy((audit_policy.Rule("Metadata", verbs=("create",)),)).evaluate(
        ALICE, info("GET", "/api/v1/pods"), "list") == audit_policy.NONE


def policy_yaml(rules: str, extra: str = "") -> bytes:
    return f"apiVersion: audit.k8s.io/v1\nkind: Policy\n{extra}rules:\n{rules}".encode()


@pytest.mark.parametrize(("data", "message"), [
    (policy_yaml("- level: Verbose\n"),
     'rules[0].level: Unsupported value: "Verbose": supported values: "None", "Metadata", "Request", "RequestResponse"'),
    (policy_yaml("- users: [a]\n"), "rules[0].level: Required value"),
    (policy_yaml("- level: None\n  nonResourceURLs: [healthz]\n"),
     """rules[0].nonResourceURLs[0]: Invalid value: "healthz": non-resource URL rules must begin with a '/' character"""),
    (policy_yaml("- level: None\n  nonResourceURLs: ['/a*b']\n"), "wildcards '*' must be the final character"),
    (policy_yaml("- level: None\n  nonResourceURLs: ['/x']\n  namespaces: [a]\n"),
     "rules cannot apply to both regular resources and non-resource URLs"),
    (policy_yaml("- level: None\n  resources: [{group: Apps}]\n"), 'rules[0].resources.group: Invalid value: "Apps"'),
    (policy_yaml("- level: None\n  resources: [{resourceNames: [x]}]\n"),
     "using resourceNames requires at least one resource"),
    (policy_yaml("- level: None\n  omitStages: [Done]\n"),
     'rules[0].omitStages[0]: Invalid value: "Done": allowed stages are '
     "RequestReceived,ResponseStarted,ResponseComplete,Panic"),
    (policy_yaml("- level: None\n  users: alice\n"), "failed decoding: rules[0].users: expected a list"),
    (b"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n", "loaded illegal policy with 0 rules"),
    (b"apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules: []\n", 'no kind "Policy" is registered for version'),
    (b"kind: Policy\nrules: []\n", "Object 'apiVersion' is missing"),
    (b"rules: [\n", "failed decoding:"),
])
def test_bad_policies_are_refused(data: bytes, message: str) -> None:
    """Policies kube-apiserver refuses fail to load here with its messages and field paths."""
    with pytest.raises(audit_policy.PolicyError) as exc:
        audit_policy.parse_policy(data)
    assert message in str(exc.value)


def test_unknown_policy_fields_only_warn(caplog: pytest.LogCaptureFixture) -> None:
    """Like kube's lenient fallback, an unknown field is a warning and the rest of the policy loads."""
    policy = audit_policy.parse_policy(policy_yaml("- level: Metadata\n  verb: [get]\n"))
    assert policy.rules[0].level == "Metadata"
    assert 'unknown field "rules[0].verb"' in caplog.text


def test_load_policy_names_the_file(tmp_path: os.PathLike) -> None:
    """Errors from a file end with `: from file PATH`, as kube's loader says."""
    path = os.path.join(tmp_path, "policy.yaml")
    with open(path, "wb") as f:
        f.write(policy_yaml("- level: Loud\n"))
    with pytest.raises(audit_policy.PolicyError, match=f"from file {path}$"):
        audit_policy.load_policy(path)


@pytest.mark.parametrize(("at", "text"), [
    (datetime.datetime(2026, 1, 2, 3, 4, 5, 60, tzinfo=datetime.UTC), "2026-01-02T03:04:05.000060Z"),
    (datetime.datetime(2026, 1, 2, 4, 4, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=1))),
     "2026-01-02T03:04:05.000000Z"),
])
def test_micro_time(at: datetime.datetime, text: str) -> None:
    """Timestamps are metav1.MicroTime: UTC with six fractional digits."""
    assert audit.micro_time(at) == text


def test_log_rotation_keeps_max_backups(tmp_path: os.PathLike) -> None:
    """Past max size the log is renamed with a timestamp and only the newest backups stay."""
    clock = clock_mod.FakeClock()
    path = os.path.join(tmp_path, "audit.log")
    sink = audit.LogSink(path, max_size_mb=1, max_backups=2, clock=clock)
    big = {"x": "y" * 700_000}
    for _ in range(5):
        sink.write([big])
        clock.advance(1)
    sink.close()
    rotated = sorted(f for f in os.listdir(tmp_path) if f.startswith("audit-"))
    assert len(rotated) == 2 and rotated[0].endswith(".log")
    assert os.path.getsize(path) < 1024 * 1024


@pytest.fixture(autouse=True)
def body_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """negotiate.read_body keeps the body under BODY_KEY for the audit log; stand in for it if it does not yet."""
    if hasattr(negotiate, "BODY_KEY"):
        return
    key = web.RequestKey("pocketkube.body", bytes)
    original = negotiate.read_body

    async def read_body(request: web.Request) -> bytes:
        body = await original(request)
        request[key] = body
        return body

    monkeypatch.setattr(negotiate, "BODY_KEY", key, raising=False)
    monkeypatch.setattr(negotiate, "read_body", read_body)


class ListSink:
    path = "memory"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def write(self, events: list[dict[str, Any]]) -> None:
        self.events += events

    def close(self) -> None:
        pass


async def annotate(server_: context.Server, call: context.Call, obj: dict[str, Any], old: Any, op: str) -> None:
    call.audit_annotations["pod-security.kubernetes.io/enforce-policy"] = "privileged:latest"


async def serve(policy_text: bytes, calls: list[tuple[str, str, Any]], *,
                user: context.User = ALICE, admission: list[Any] | None = None) -> list[dict[str, Any]]:
    """Run requests through the real server app (memory store, no authorizer) and return the audit events."""
    store = memory.MemoryStore()
    await store.start()
    api = context.Server(registry=resources.Registry.builtin(), objects=objects.Objects(store, conversion.convert),
                         store=store, clock=clock_mod.Clock())
    api.admission = [annotate] if admission is None else admission
    sink = ListSink()
    auditor = audit.Auditor(audit_policy.parse_policy(policy_text), sink, clock=api.clock)  # type: ignore[arg-type]
    app = server.make_app(api, auditor=auditor)

    app.middlewares.insert(0, harness.as_user(user))
    async with test_utils.TestClient(test_utils.TestServer(app)) as client:
        for method, path, body in calls:
            data = orjson.dumps(body) if body is not None else None
            resp = await client.request(method, path, data=data, headers={"Content-Type": "application/json",
                                                                          "User-Agent": "kubectl/v1.32.0"})
            await resp.read()
    auditor.close()
    await store.close()
    return sink.events


CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"k": "v"}}
SECRET = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s1"}, "data": {"p": "aHVudGVyMg=="}}


async def test_request_response_level_create() -> None:
    """A create at RequestResponse writes RequestReceived then ResponseComplete with both bodies, in kube's shape."""
    events = await serve(policy_yaml("- level: RequestResponse\n"),
                         [("POST", "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create", CM)])
    assert [e["stage"] for e in events] == ["RequestReceived", "ResponseComplete"]
    received, done = events
    assert list(done) == ["kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "user",
                          "sourceIPs", "userAgent", "objectRef", "responseStatus", "requestObject", "responseObject",
                          "requestReceivedTimestamp", "stageTimestamp", "annotations"]
    assert done["requestURI"] == "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create"
    assert done["verb"] == "create" and done["auditID"] == received["auditID"]
    assert done["user"] == {"username": "alice", "groups": ["dev", "system:authenticated"]}
    assert done["objectRef"] == {"resource": "configmaps", "namespace": "default", "name": "c1", "apiVersion": "v1"}
    assert received["objectRef"] == {"resource": "configmaps", "namespace": "default", "apiVersion": "v1"}
    assert done["responseStatus"] == {"metadata": {}, "code": 201}
    assert done["requestObject"]["data"] == {"k": "v"}
    assert done["responseObject"]["metadata"]["uid"]
    assert "responseStatus" not in received and "requestObject" not in received
    assert received["requestReceivedTimestamp"] == done["requestReceivedTimestamp"] == received["stageTimestamp"]


async def test_secret_at_metadata_level_has_no_bodies() -> None:
    """At Metadata level a Secret's data never reaches the log; the name still comes from the body."""
    events = await serve(policy_yaml("- level: Metadata\n  resources: [{group: '', resources: [secrets]}]\n"
                                     "- level: RequestResponse\n"),
                         [("POST", "/api/v1/namespaces/default/secrets", SECRET)])
    done = events[-1]
    assert done["level"] == "Metadata"
    assert "requestObject" not in done and "responseObject" not in done
    assert done["objectRef"]["name"] == "s1"
    assert b"aHVudGVyMg" not in orjson.dumps(events)


async def test_errors_carry_the_status_and_none_level_is_silent() -> None:
    """A failed request logs the Status fields; requests at level None log nothing."""
    events = await serve(policy_yaml("- level: None\n  verbs: [list]\n- level: Request\n  omitStages: [RequestReceived]\n"),
                         [("GET", "/api/v1/namespaces/default/configmaps/missing", None),
                          ("GET", "/api/v1/namespaces/default/configmaps", None)])
    assert [e["stage"] for e in events] == ["ResponseComplete"]
    assert events[0]["responseStatus"] == {
        "metadata": {}, "status": "Failure", "message": 'configmaps "missing" not found', "reason": "NotFound",
        "details": {"name": "missing", "kind": "configmaps"}, "code": 404}


async def test_watch_logs_response_started() -> None:
    """A watch is long-running: ResponseStarted when headers go out, ResponseComplete when it ends."""
    events = await serve(policy_yaml("- level: Metadata\n"),
                         [("GET", "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1", None)])
    assert [(e["stage"], e["verb"]) for e in events] == [
        ("RequestReceived", "watch"), ("ResponseStarted", "watch"), ("ResponseComplete", "watch")]
    assert events[1]["responseStatus"] == {"metadata": {}, "code": 200}


async def test_admission_annotations_and_managed_fields() -> None:
    """Annotations admission plugins put on Call.audit_annotations are logged; omitManagedFields strips managedFields."""
    events = await serve(policy_yaml("- level: RequestResponse\n  omitManagedFields: true\n"),
                         [("POST", "/api/v1/namespaces/default/configmaps?fieldManager=kubectl-create", CM)])
    done = events[-1]
    assert "managedFields" not in done["responseObject"]["metadata"]
    assert done["annotations"] == {"pod-security.kubernetes.io/enforce-policy": "privileged:latest"}
    assert "annotations" not in events[0]


async def test_non_resource_requests_use_the_http_method_as_verb() -> None:
    """Non-resource URLs are audited with the lower-case HTTP method and no objectRef."""
    events = await serve(policy_yaml("- level: Metadata\n  nonResourceURLs: ['/version']\n"),
                         [("GET", "/version", None), ("GET", "/healthz", None)])
    assert [(e["stage"], e["verb"], e["requestURI"]) for e in events] == [
        ("RequestReceived", "get", "/version"), ("ResponseComplete", "get", "/version")]
    assert "objectRef" not in events[0]


async def test_internal_errors_log_the_panic_stage(caplog: pytest.LogCaptureFixture) -> None:
    """A bug answering 500 logs a Panic event instead of ResponseComplete, as kube's panic recovery does."""
    async def boom(*args: Any) -> None:
        raise RuntimeError("plugin exploded")

    events = await serve(policy_yaml("- level: Metadata\n  omitStages: [RequestReceived]\n"),
                         [("POST", "/api/v1/namespaces/default/configmaps", CM)], admission=[boom])
    assert [e["stage"] for e in events] == ["Panic"]
    assert events[0]["responseStatus"] == {"metadata": {}, "status": "Failure",
                                           "message": "APIServer panic'd: plugin exploded", "reason": "InternalError",
                                           "code": 500}
