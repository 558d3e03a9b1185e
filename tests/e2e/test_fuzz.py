"""End to end fuzzing of the API: schemathesis from our OpenAPI, then malformed bodies and queries; never a 5xx."""

from __future__ import annotations

import base64
import collections.abc
import json
import os
import tempfile
import time
import urllib.parse
from typing import Any

import pytest
import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.e2e import cluster as cluster_mod
from tests.e2e import http

# Examples per operation and generation mode; raise it (PK_FUZZ_EXAMPLES=50) for a deeper run by hand.
EXAMPLES = int(os.environ.get("PK_FUZZ_EXAMPLES", "3"))
# Pod and Deployment bodies are costly to generate (huge schemas): fewer of them keep the file under 90 s.
HEAVY_EXAMPLES = max(1, EXAMPLES // 2)
NS = "fuzz"
RAW_NS = "fuzz-raw"

OPERATIONS = {
    "/openapi/v3/api/v1": ["CoreV1NamespacedConfigMap", "CoreV1NamespacedPod", "CoreV1NamespacedService"],
    "/openapi/v3/apis/apps/v1": ["AppsV1NamespacedDeployment"],
}
VERBS = ("create", "read", "replace", "patch", "delete", "list", "deleteCollection")


def _operation_id(verb: str, kind: str) -> str:
    if verb == "deleteCollection":   # kube's ids read deleteCoreV1CollectionNamespacedPod
        group, rest = kind.split("V1", 1)
        return f"delete{group}V1Collection{rest}"
    return verb + kind


class _Session:
    """A requests session with the cluster's client certificate, plus its base URL."""

    def __init__(self, kubeconfig: str) -> None:
        with open(kubeconfig) as f:
            cfg = yaml.safe_load(f)
        user = cfg["users"][0]["user"]
        d = tempfile.mkdtemp()
        files = {"c": user["client-certificate-data"], "k": user["client-key-data"],
                 "ca": cfg["clusters"][0]["cluster"]["certificate-authority-data"]}
        for name, data in files.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(base64.b64decode(data))
        self.base = cfg["clusters"][0]["cluster"]["server"].rstrip("/")
        self.cert = (os.path.join(d, "c"), os.path.join(d, "k"))
        self.verify = os.path.join(d, "ca")
        self.session = requests.Session()


@pytest.fixture(scope="module")
def raw(cluster: cluster_mod.Cluster) -> collections.abc.Iterator[http.Raw]:
    r = http.Raw(cluster.kubeconfig)
    for ns in (NS, RAW_NS):
        r.request("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    yield r


def _kube_answers_5xx_too(code: int, answer: Any) -> bool:
    """The 5xx a real 1.32 server gives as well: they mirror kube, they are not our bugs."""
    message = answer.get("message", "") if isinstance(answer, dict) else ""
    # A read at a revision from the future, after waiting for it.
    if code == 504 and message.startswith("Too large resource version"):
        return True
    # Server-side apply of an undeclared field without strict validation (kubernetes/kubernetes#122480).
    return code == 500 and message.startswith("failed to create typed patch object")


def _alive(raw: http.Raw) -> None:
    code, _, _ = raw.request("GET", "/readyz")
    assert code == 200, "the API server stopped answering"


def _json(resp: requests.Response) -> Any:
    try:
        return resp.json()
    except ValueError:
        return None


def test_schemathesis_finds_no_server_errors(cluster: cluster_mod.Cluster, raw: http.Raw) -> None:
    """Generated valid and invalid requests for CRUD and patch of four kinds never get a 5xx."""
    s = _Session(cluster.kubeconfig)
    failures: list[str] = []
    for doc_path, kinds in OPERATIONS.items():
        code, _, doc = raw.request("GET", doc_path)
        assert code == 200
        ids = [_operation_id(v, k) for k in kinds for v in VERBS]
        schema = schemathesis.openapi.from_dict(doc).include(operation_id=ids)
        ops = [r.ok() for r in schema.get_all_operations()]  # type: ignore[union-attr]
        assert len(ops) == len(ids)
        for op in ops:
            op_id = op.definition.raw["operationId"]
            heavy = op_id.startswith(("create", "replace")) and ("Pod" in op_id or "Deployment" in op_id)
            # A watch would stream until its timeout; list without it.
            query = {"watch": "false"} if op_id.startswith("list") else None
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                strategy = op.as_strategy(generation_mode=mode, path_parameters={"namespace": NS}, query=query)

                @settings(max_examples=HEAVY_EXAMPLES if heavy else EXAMPLES, deadline=None, database=None,
                          suppress_health_check=list(HealthCheck), phases=[Phase.generate])
                @given(strategy)
                def run(case: Any) -> None:
                    resp = case.call(base_url=s.base, session=s.session, timeout=30, verify=s.verify, cert=s.cert)
                    if resp.status_code >= 500 and not _kube_answers_5xx_too(resp.status_code, _json(resp)):
                        failures.append(f"{case.method} {case.formatted_path} -> {resp.status_code}: "
                                        f"{resp.text[:200]}\n  body: {str(case.body)[:300]}")
                run()
    _alive(raw)
    assert not failures, "\n".join(failures[:10])


# --- malformed bodies and queries ---------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2 ** 70), max_value=2 ** 70) | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
FIELDS = st.sampled_from(["metadata", "spec", "data", "kind", "apiVersion", "status", "name", "labels",
                          "annotations", "finalizers", "ownerReferences", "managedFields", "resourceVersion",
                          "replicas", "selector", "template", "containers", "$patch", "$retainKeys",
                          "$setElementOrder/containers", "$deleteFromPrimitiveList/finalizers", "binaryData"])
SHAPED = st.recursive(JSON_VALUES, lambda inner: st.dictionaries(FIELDS, inner, max_size=4), max_leaves=16)
JSON_PATCH = st.lists(st.fixed_dictionaries(
    {"op": st.sampled_from(["add", "remove", "replace", "move", "copy", "test", "bogus"])},
    optional={"path": st.sampled_from(["", "/", "/metadata", "/metadata/labels/a", "/data/x", "/spec/replicas",
                                        "/spec/template/spec/containers/0", "/spec/template/spec/containers/-",
                                        "/metadata/finalizers/99", "/~2", "/a~1b", "data"]) | st.text(max_size=8),
              "from": st.sampled_from(["/data", "/metadata/name", "/nope", ""]),
              "value": SHAPED}), max_size=4)
BODIES = st.one_of(
    st.binary(max_size=64),
    SHAPED.map(lambda v: json.dumps(v).encode()),
    SHAPED.map(lambda v: json.dumps(v).encode()[: max(1, len(json.dumps(v)) // 2)]),
    JSON_PATCH.map(lambda v: json.dumps(v).encode()),
    SHAPED.map(lambda v: yaml.safe_dump(v).encode()),
    st.text(max_size=40).map(str.encode),
    st.binary(max_size=48).map(lambda b: b"k8s\x00" + b),   # the protobuf envelope's magic, then noise
    st.sampled_from([b"", b"null", b"[]", b"{}", b"\"x\"", b"1e999", b"{\"a\":" * 200, b"- - - -", b"!!binary x",
                     b"&a [*a, *a]", b"{\"kind\":\"ConfigMap\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":1}}"]))
CONTENT_TYPES = st.sampled_from([
    "application/json", "application/yaml", "application/vnd.kubernetes.protobuf", "application/json-patch+json",
    "application/merge-patch+json", "application/strategic-merge-patch+json", "application/apply-patch+yaml",
    "application/apply-patch+cbor", "application/cbor", "text/plain", "", "application/json; charset=utf-16",
    "multipart/form-data; boundary=x"])
QUERY = st.dictionaries(
    st.sampled_from(["fieldManager", "fieldValidation", "dryRun", "force", "resourceVersion", "resourceVersionMatch",
                     "labelSelector", "fieldSelector", "limit", "continue", "propagationPolicy", "gracePeriodSeconds",
                     "pretty", "timeout", "orphanDependents", "allowWatchBookmarks", "sendInitialEvents", "x"]),
    st.text(max_size=10) | st.sampled_from(["true", "All", "-1", "Strict", "Foreground", "0", "9" * 30]),
    max_size=4)
TARGETS = st.sampled_from([
    ("POST", f"/api/v1/namespaces/{RAW_NS}/configmaps"),
    ("PUT", f"/api/v1/namespaces/{RAW_NS}/configmaps/cm"),
    ("PATCH", f"/api/v1/namespaces/{RAW_NS}/configmaps/cm"),
    ("PATCH", f"/api/v1/namespaces/{RAW_NS}/configmaps/new"),
    ("PATCH", f"/apis/apps/v1/namespaces/{RAW_NS}/deployments/web"),
    ("PUT", f"/apis/apps/v1/namespaces/{RAW_NS}/deployments/web"),
    ("PATCH", f"/apis/apps/v1/namespaces/{RAW_NS}/deployments/web/scale"),
    ("PATCH", f"/apis/apps/v1/namespaces/{RAW_NS}/deployments/web/status"),
    ("POST", f"/api/v1/namespaces/{RAW_NS}/pods"),
    ("DELETE", f"/api/v1/namespaces/{RAW_NS}/configmaps/gone"),
    ("GET", f"/api/v1/namespaces/{RAW_NS}/configmaps"),
])

DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
              "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                       "template": {"metadata": {"labels": {"app": "web"}},
                                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}


def _seed(raw: http.Raw) -> None:
    raw.request("POST", f"/api/v1/namespaces/{RAW_NS}/configmaps",
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "labels": {"a": "b"}},
                 "data": {"x": "y"}})
    raw.request("POST", f"/apis/apps/v1/namespaces/{RAW_NS}/deployments", DEPLOYMENT)


def test_malformed_bodies_and_queries_get_4xx(raw: http.Raw) -> None:
    """Garbage JSON, YAML, protobuf and patch bodies with odd content types and queries never get a 5xx."""
    _seed(raw)
    failures: list[str] = []

    @settings(max_examples=EXAMPLES * 150, deadline=None, database=None, suppress_health_check=list(HealthCheck),
              phases=[Phase.generate])
    @given(TARGETS, BODIES, CONTENT_TYPES, QUERY)
    def run(target: tuple[str, str], body: bytes, content_type: str, query: dict[str, str]) -> None:
        method, path = target
        qs = urllib.parse.urlencode(query)
        headers = {"Content-Type": content_type} if content_type else {}
        code, _, answer = raw.request(method, path + ("?" + qs if qs else ""), body, headers=headers)
        if code >= 500 and not _kube_answers_5xx_too(code, answer):
            failures.append(f"{method} {path}?{qs} [{content_type}] {body[:2000]!r} -> {code} {str(answer)[:200]}")

    start = time.monotonic()
    run()
    _alive(raw)
    assert not failures, "\n".join(failures[:10])
    assert time.monotonic() - start < 60


@pytest.mark.parametrize("query", ["watch=false&labelSelector=%ZZ", "limit=-5", "continue=%00%01",
                                   "fieldSelector=metadata.name%3D%3D%3Dx", "resourceVersion=%F0%9F%92%A5",
                                   "timeout=1e9h", "timeoutSeconds=99999999999999999999"])
def test_weird_list_queries_get_4xx_or_200(raw: http.Raw, query: str) -> None:
    """Odd list parameters are answered with a Status or a list, never a server error."""
    code, _, _ = raw.request("GET", f"/api/v1/namespaces/{RAW_NS}/configmaps?{query}")
    assert code < 500


def test_yaml_integers_past_64_bits_are_not_a_server_error(raw: http.Raw) -> None:
    """Regression: a YAML body with an integer past 64 bits once crashed the error message (500)."""
    _seed(raw)
    body = b"apiVersion: v1\nkind: ''\ndata:\n  x: y\nextra: 123456789012345678901234567890\n"
    code, _, answer = raw.request("PUT", f"/api/v1/namespaces/{RAW_NS}/configmaps/cm", body,
                                  headers={"Content-Type": "application/yaml"})
    assert (code, answer["reason"]) == (400, "BadRequest")
    assert answer["message"].startswith("Object 'Kind' is missing in '{")


def test_warnings_with_control_characters_are_dropped(raw: http.Raw) -> None:
    """Regression: an unknown field named with a newline made a Warning header aiohttp refused (connection reset)."""
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ctl"}, "bad\nfield": 1, "odd": 2}
    code, headers, _ = raw.request("POST", f"/api/v1/namespaces/{RAW_NS}/configmaps?fieldValidation=Warn", body)
    assert code == 201
    assert headers.get("warning") == '299 - "unknown field \\"odd\\""'


@pytest.mark.parametrize(("metadata", "code"), [([], 400), ("x", 400), (7, 400), (None, 200)])
def test_metadata_of_the_wrong_type_is_a_bad_request(raw: http.Raw, metadata: Any, code: int) -> None:
    """Regression: a PUT body whose metadata is not an object was a 500; null metadata reads as empty."""
    _seed(raw)
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": {"k": "v"}}
    got, _, answer = raw.request("PUT", f"/api/v1/namespaces/{RAW_NS}/configmaps/cm", body)
    assert got == code, answer
    if code == 400:
        assert answer["message"].startswith('ConfigMap in version "v1" cannot be handled as a ConfigMap: json: '
                                            "cannot unmarshal ")


@pytest.mark.parametrize(("path", "options", "message"), [
    (f"/api/v1/namespaces/{RAW_NS}/configmaps", {"preconditions": True},
     "json: cannot unmarshal bool into Go struct field DeleteOptions.preconditions of type v1.Preconditions"),
    (f"/api/v1/namespaces/{RAW_NS}/configmaps/cm", {"gracePeriodSeconds": "5"},
     "json: cannot unmarshal string into Go struct field DeleteOptions.gracePeriodSeconds of type int64"),
    (f"/api/v1/namespaces/{RAW_NS}/configmaps/cm", {"dryRun": "All"},
     "json: cannot unmarshal string into Go struct field DeleteOptions.dryRun of type []string"),
])
def test_delete_options_of_the_wrong_type_are_a_bad_request(raw: http.Raw, path: str, options: Any,
                                                            message: str) -> None:
    """Regression: a (collection) delete whose DeleteOptions held preconditions: true was a 500; now a 400."""
    _seed(raw)
    code, _, answer = raw.request("DELETE", path, options)
    assert (code, answer["reason"], answer["message"]) == (400, "BadRequest", message)
    assert raw.request("GET", f"/api/v1/namespaces/{RAW_NS}/configmaps/cm")[0] == 200
