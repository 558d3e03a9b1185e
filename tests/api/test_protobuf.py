"""Specification of the Kubernetes protobuf body decoder (application/vnd.kubernetes.protobuf)."""

from __future__ import annotations

import json
import random
import struct
from pathlib import Path

import kubernetes_validate
import pytest

from pocketkube.api import errors, protobuf

GOLDEN = Path(__file__).parent / "golden" / "protobuf"
FIXTURES = sorted(p.name[:-3] for p in GOLDEN.glob("*.pb"))


# --- A tiny protobuf writer for hand-made messages ------------------------------------------------------

def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def vi(num: int, n: int) -> bytes:
    """A varint field."""
    return varint(num << 3) + varint(n)


def ld(num: int, data: bytes | str) -> bytes:
    """A length-delimited field."""
    if isinstance(data, str):
        data = data.encode()
    return varint(num << 3 | 2) + varint(len(data)) + data


def f64(num: int, v: float) -> bytes:
    return varint(num << 3 | 1) + struct.pack("<d", v)


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return b"k8s\x00" + ld(1, ld(1, api_version) + ld(2, kind)) + ld(2, raw)


def entry(key: str, value: bytes) -> bytes:
    return ld(1, key) + value


# --- Golden fixtures recorded from real kubectl -----------------------------------------------------------

@pytest.mark.parametrize("name", FIXTURES)
def test_kubectl_protobuf_body_decodes_to_the_json_kubectl_sends(name: str) -> None:
    """The protobuf body of a kubectl 1.32/1.33 command decodes to exactly the JSON body kubectl 1.31 sends."""
    body = (GOLDEN / f"{name}.pb").read_bytes()
    expected = json.loads((GOLDEN / f"{name}.json").read_text())
    assert protobuf.decode(body) == expected


def test_fixtures_cover_the_typed_kubectl_commands() -> None:
    """The recorded fixtures include every kind the brief lists, so none silently goes missing."""
    kinds = {json.loads((GOLDEN / f"{n}.json").read_text())["kind"] for n in FIXTURES}
    assert {"ConfigMap", "Secret", "Namespace", "Deployment", "Service", "Job", "CronJob", "Role", "ClusterRole",
            "RoleBinding", "ClusterRoleBinding", "ServiceAccount", "ResourceQuota", "PriorityClass",
            "PodDisruptionBudget", "Ingress", "TokenRequest", "HorizontalPodAutoscaler",
            "SelfSubjectAccessReview", "SelfSubjectRulesReview", "SelfSubjectReview",
            "CertificateSigningRequest", "DeleteOptions"} <= kinds


# --- Go struct to JSON rules ------------------------------------------------------------------------------

DEPLOY_SPEC = "apps/v1.DeploymentSpec"


@pytest.mark.parametrize(("message", "data", "expected"), [
    # A pointer field keeps its zero value; a non-pointer omitempty zero disappears.
    ("apps/v1.DeploymentSpec", vi(1, 0) + vi(5, 0) + vi(7, 0),
     {"replicas": 0, "selector": None,
      "template": {"metadata": {"creationTimestamp": None}, "spec": {"containers": None}},
      "strategy": {}}),
    # Non-pointer fields without omitempty appear with their zero value even when absent from the wire.
    ("rbac/v1.ClusterRole", b"", {"metadata": {"creationTimestamp": None}, "rules": None}),
    ("core/v1.PodSpec", vi(21, 0) + vi(37, 1),
     {"containers": None, "automountServiceAccountToken": False, "hostUsers": True}),
    # Negative numbers travel as ten-byte two's complement varints.
    ("meta/v1.ObjectMeta", vi(7, -5) + vi(10, -1),
     {"generation": -5, "deletionGracePeriodSeconds": -1, "creationTimestamp": None}),
    # Unknown field numbers, of any wire type, are skipped.
    ("core/v1.ObjectReference", ld(2, "ns") + vi(99, 7) + ld(98, b"\x01\x02") + f64(97, 1.5),
     {"namespace": "ns"}),
    # A singular string seen twice keeps the last value, as protobuf says.
    ("core/v1.ObjectReference", ld(3, "a") + ld(3, "b"), {"name": "b"}),
    # Two chunks of one singular message merge.
    ("core/v1.Container", ld(1, "c") + ld(8, ld(1, entry("cpu", ld(2, ld(1, "1")))))
     + ld(8, ld(2, entry("memory", ld(2, ld(1, "1Gi"))))),
     {"name": "c", "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}}),
    # Invalid UTF-8 is replaced like encoding/json does.
    ("core/v1.ObjectReference", ld(3, b"a\xffb"), {"name": "a\ufffdb"}),
])
def test_go_json_field_rules(message: str, data: bytes, expected: dict) -> None:
    """Fields follow encoding/json: pointers keep zero values, omitempty drops zero scalars, nil slices are null."""
    got = protobuf.decode_message(message, data)
    if message in ("core/v1.PodSpec", "core/v1.Container"):
        got = {k: v for k, v in got.items() if k in expected}
    assert got == expected


@pytest.mark.parametrize(("data", "expected"), [
    (ld(3, varint(1) + varint(2) + varint(300)), [1, 2, 300]),  # packed
    (vi(3, 1) + vi(3, 2) + vi(3, 300), [1, 2, 300]),  # unpacked
    (vi(3, 1) + ld(3, varint(2) + varint(3)), [1, 2, 3]),  # both at once
    (vi(3, -1), [-1]),
])
def test_repeated_scalars_packed_or_not(data: bytes, expected: list[int]) -> None:
    """Repeated int32 fields accept packed and unpacked encodings, mixed."""
    got = protobuf.decode_message("batch/v1.PodFailurePolicyOnExitCodesRequirement", ld(2, "In") + data)
    assert got == {"operator": "In", "values": expected}


def test_maps_are_sorted_and_byte_values_are_base64() -> None:
    """map[string]string and map[string][]byte decode to sorted dicts, bytes as standard base64."""
    data = (ld(1, ld(1, "s1")) + ld(2, entry("b", ld(2, "2"))) + ld(2, entry("a", ld(2, "1")))
            + ld(3, entry("bin", ld(2, b"\x00\xff\x10"))) + ld(3, entry("empty", b"")))
    got = protobuf.decode_message("core/v1.ConfigMap", data)
    assert got == {"metadata": {"name": "s1", "creationTimestamp": None}, "data": {"a": "1", "b": "2"},
                   "binaryData": {"bin": "AP8Q", "empty": ""}}
    assert list(got["data"]) == ["a", "b"]


def test_named_slices_in_maps_and_verbs() -> None:
    """ExtraValue (map value) and metav1.Verbs travel as {1: items} messages and decode to plain lists."""
    user = protobuf.decode_message("authentication/v1.UserInfo",
                                   ld(1, "bob") + ld(4, entry("scopes", ld(2, ld(1, "x") + ld(1, "y")))))
    assert user == {"username": "bob", "extra": {"scopes": ["x", "y"]}}
    res = protobuf.decode_message("meta/v1.APIResource", ld(1, "pods") + ld(4, ld(1, "get") + ld(1, "list")))
    assert res["verbs"] == ["get", "list"] and res["namespaced"] is False and res["singularName"] == ""


def ts(seconds: int, nanos: int = 0) -> bytes:
    return vi(1, seconds) + (vi(2, nanos) if nanos else b"")


@pytest.mark.parametrize(("data", "expected"), [
    (ld(8, b""), None),  # the zero time is an empty message
    (ld(8, ts(1700000000, 999_999_999)), "2023-11-14T22:13:20Z"),  # Time drops sub-second precision
    (ld(8, ts(0)), "1970-01-01T00:00:00Z"),  # an explicit epoch is not Go's zero time
    (ld(8, ts(-86400)), "1969-12-31T00:00:00Z"),
    (ld(8, ts(253402300799)), "9999-12-31T23:59:59Z"),
])
def test_time(data: bytes, expected: str | None) -> None:
    """metav1.Time decodes to RFC3339 in UTC with whole seconds, and the zero time to null."""
    assert protobuf.decode_message("meta/v1.ObjectMeta", data)["creationTimestamp"] == expected


@pytest.mark.parametrize(("data", "expected"), [
    (ts(1700000000, 123_456_789), "2023-11-14T22:13:20.123456Z"),
    (ts(1700000000), "2023-11-14T22:13:20.000000Z"),
])
def test_micro_time(data: bytes, expected: str) -> None:
    """metav1.MicroTime decodes to RFC3339 with exactly six fractional digits."""
    got = protobuf.decode_message("coordination/v1.LeaseSpec", ld(4, data))
    assert got == {"renewTime": expected}


@pytest.mark.parametrize(("ns", "text"), [
    (0, "0s"), (1, "1ns"), (1500, "1.5µs"), (1_500_000, "1.5ms"), (1_000_000_000, "1s"),
    (60_000_000_000, "1m0s"), (3_600_000_000_000, "1h0m0s"), (5_400_500_000_000, "1h30m0.5s"), (-2_000_000_000, "-2s"),
])
def test_go_duration_strings(ns: int, text: str) -> None:
    """metav1.Duration prints like Go's time.Duration.String()."""
    assert protobuf._go_duration(ns) == text


def test_quantities_int_or_string_and_raw_extension() -> None:
    """Quantity is its canonical string, IntOrString an int or a string, RawExtension the embedded JSON."""
    spec = protobuf.decode_message("core/v1.ResourceRequirements",
                                   ld(1, entry("cpu", ld(2, ld(1, "1000m")))) + ld(2, entry("memory", ld(2, b""))))
    assert spec == {"limits": {"cpu": "1"}, "requests": {"memory": "0"}}
    ru = protobuf.decode_message("apps/v1.RollingUpdateDeployment",
                                 ld(1, vi(1, 1) + ld(3, "25%")) + ld(2, vi(1, 0) + vi(2, 3)))
    assert ru == {"maxUnavailable": "25%", "maxSurge": 3}
    rev = protobuf.decode_message("apps/v1.ControllerRevision", ld(2, ld(1, b'{"a":[1,true]}')) + vi(3, 2))
    assert rev["data"] == {"a": [1, True]} and rev["revision"] == 2


def test_raw_extension_may_hold_a_protobuf_object() -> None:
    """A RawExtension holding a k8s protobuf envelope decodes to that object's JSON."""
    inner = envelope("v1", "ConfigMap", ld(1, ld(1, "x")))
    rev = protobuf.decode_message("apps/v1.ControllerRevision", ld(2, ld(1, inner)))
    assert rev["data"] == {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "x", "creationTimestamp": None}}


def test_managed_fields_keep_fields_v1_json() -> None:
    """ManagedFieldsEntry.fieldsV1 is the raw JSON object; its time is RFC3339."""
    mf = ld(1, "kubectl") + ld(2, "Update") + ld(3, "v1") + ld(4, ts(1700000000)) + ld(6, "FieldsV1") \
        + ld(7, ld(1, b'{"f:data":{".":{}}}'))
    meta = protobuf.decode_message("meta/v1.ObjectMeta", ld(1, "x") + ld(17, mf))
    assert meta["managedFields"] == [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                                      "time": "2023-11-14T22:13:20Z", "fieldsType": "FieldsV1",
                                      "fieldsV1": {"f:data": {".": {}}}}]


def test_json_schema_props() -> None:
    """CRD schemas: doubles, JSON defaults, or-bool, or-array and or-string-array take their JSON forms."""
    leaf = ld(5, "integer") + f64(9, 10.0) + f64(11, 0.5)
    schema = (ld(5, "object") + ld(8, ld(1, b'{"a":1}')) + ld(20, ld(1, b'"x"'))
              + ld(29, entry("n", ld(2, leaf))) + ld(30, vi(1, 0))
              + ld(24, ld(2, ld(5, "string")) + ld(2, ld(5, "integer")))
              + ld(32, entry("d", ld(2, ld(2, "p") + ld(2, "q")))) + ld(33, ld(2, ld(5, "string")))
              + ld(44, ld(1, "self > 0")))
    got = protobuf.decode_message("apiextensions/v1.JSONSchemaProps", schema)
    assert got == {
        "type": "object", "default": {"a": 1}, "enum": ["x"],
        "items": [{"type": "string"}, {"type": "integer"}],
        "properties": {"n": {"type": "integer", "maximum": 10, "minimum": 0.5}},
        "additionalProperties": False, "dependencies": {"d": ["p", "q"]},
        "additionalItems": {"type": "string"}, "x-kubernetes-validations": [{"rule": "self > 0"}],
    }


def test_envelope_resolves_group_versions_and_meta_kinds() -> None:
    """The envelope's apiVersion and kind pick the message; options kinds resolve under any group version."""
    assert protobuf.decode(envelope("apps/v1", "DeleteOptions", vi(1, 0))) == \
        {"kind": "DeleteOptions", "apiVersion": "apps/v1", "gracePeriodSeconds": 0}
    crd = protobuf.decode(envelope("apiextensions.k8s.io/v1", "CustomResourceDefinition",
                                   ld(2, ld(1, "example.com") + ld(4, "Namespaced"))))
    assert crd["spec"]["group"] == "example.com" and crd["spec"]["names"]["plural"] == ""
    svc = protobuf.decode(envelope("apiregistration.k8s.io/v1", "APIService", ld(2, vi(7, 100))))
    assert svc["spec"] == {"service": None, "groupPriorityMinimum": 100, "versionPriority": 0}
    assert protobuf.message_for("v1", "Pod") == "core/v1.Pod"
    assert protobuf.message_for("rbac.authorization.k8s.io/v1", "Role") == "rbac/v1.Role"
    assert protobuf.message_for("example.com/v1", "Widget") is None


# --- Malformed input --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("body", "message"), [
    (b"", "does not appear to be a protobuf message"),
    (b'{"kind":"ConfigMap"}', "does not appear to be a protobuf message"),
    (b"k8s\x00" + ld(1, ld(1, "v1")), "Object 'Kind' is missing"),
    (b"k8s\x00" + ld(1, ld(2, "ConfigMap")), "Object 'apiVersion' is missing"),
    (envelope("example.com/v1", "Widget", b""), 'no kind "Widget" is registered for version "example.com/v1"'),
    (envelope("v1", "Pod", b"\x0a\x05ab"), "unexpected EOF"),
    (envelope("v1", "Pod", b"\x08" + b"\xff" * 11), "integer overflow"),
    (envelope("v1", "Pod", b"\x0b"), "illegal wireType 3"),
    (envelope("v1", "Pod", b"\x0f"), "illegal wireType 7"),
    (envelope("v1", "Pod", b"\x00"), "illegal tag 0"),
    (envelope("v1", "Pod", vi(1, 5)), "wrong wireType 0"),
    (envelope("v1", "ConfigMap", ld(4, "x")), "wrong wireType 2"),
    (envelope("apps/v1", "ControllerRevision", ld(2, ld(1, b"{nope"))), "invalid JSON"),
    (envelope("v1", "Pod", ld(2, ld(2, ld(1, "c") + ld(8, ld(1, entry("cpu", ld(2, ld(1, "1x")))))))),
     "quantities must match"),
    (envelope("apps/v1", "RollingUpdateDeployment", b""), 'no kind "RollingUpdateDeployment"'),
    (envelope("apps/v1", "Deployment", ld(2, ld(4, ld(2, ld(1, vi(1, 7)))))), "impossible IntOrString.Type"),
    (b"k8s\x00" + ld(1, ld(1, "v1") + ld(2, "Pod")) + ld(3, "gzip"), "unsupported content encoding"),
])
def test_malformed_bodies_are_bad_requests(body: bytes, message: str) -> None:
    """Every malformed body raises BadRequest naming the problem."""
    with pytest.raises(errors.BadRequest) as info:
        protobuf.decode(body)
    assert message in info.value.message
    assert info.value.status()["code"] == 400


def test_deep_nesting_is_refused() -> None:
    """Recursively nested schemas past the depth limit raise BadRequest instead of exhausting the stack."""
    data = b""
    for _ in range(protobuf.MAX_DEPTH + 5):
        data = ld(28, data)
    with pytest.raises(errors.BadRequest, match="max depth"):
        protobuf.decode_message("apiextensions/v1.JSONSchemaProps", data)


def test_unknown_message_name_is_a_bad_request() -> None:
    """decode_message with a name not in the table raises BadRequest."""
    with pytest.raises(errors.BadRequest):
        protobuf.decode_message("apps/v1.Nope", b"")


def test_fuzz_random_and_mutated_bodies_never_crash() -> None:
    """Random bytes and corrupted kubectl bodies either decode to a dict or raise BadRequest, nothing else."""
    rng = random.Random(1234)
    seeds = [(GOLDEN / f"{n}.pb").read_bytes() for n in FIXTURES]
    for i in range(1500):
        if i % 3 == 0:
            body = b"k8s\x00" + rng.randbytes(rng.randrange(0, 200))
        else:
            body = bytearray(rng.choice(seeds))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                pos = rng.randrange(4, len(body))
                if op == 0:
                    body[pos] = rng.randrange(256)
                elif op == 1:
                    del body[pos:pos + rng.randrange(1, 8)]
                else:
                    body[pos:pos] = rng.randbytes(rng.randrange(1, 8))
            body = bytes(body)
        try:
            assert isinstance(protobuf.decode(body), dict)
        except errors.BadRequest:
            pass


# --- The generated table against the Kubernetes 1.32 OpenAPI definitions ----------------------------------

def _json_names(messages: dict, name: str) -> set[str]:
    names: set[str] = set()
    for js, _kind, type_, flags in messages[name].values():
        names |= _json_names(messages, type_) if "i" in flags else {js}
    return names


def test_table_field_names_match_the_openapi_definitions() -> None:
    """Every message with a 1.32 OpenAPI definition carries exactly that definition's property names."""
    path = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema/v1.32.0-local/_definitions.json"
    defs = json.loads(path.read_text())["$defs"]
    table = protobuf._table()
    kinds = set(table["kinds"])
    prefixes = {"core/v1": "io.k8s.api.core.v1", "meta/v1": "io.k8s.apimachinery.pkg.apis.meta.v1",
                "apiextensions/v1": "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1",
                "apiregistration/v1": "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1"}
    checked, mismatched = 0, []
    for name in table["messages"]:
        pkg, kind = name.split(".")
        schema = defs.get(f"{prefixes.get(pkg, 'io.k8s.api.' + pkg.replace('/', '.'))}.{kind}")
        if schema is None:
            continue
        props = set(schema.get("properties", {}))
        if name in kinds:
            props -= {"kind", "apiVersion"}
        checked += 1
        if props != _json_names(table["messages"], name):
            mismatched.append(name)
    assert checked > 450
    assert mismatched == []
