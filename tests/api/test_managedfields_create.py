"""A create's managedFields built straight as FieldsV1, pinned to the general compare-and-record path."""

from __future__ import annotations

import copy
import random
from typing import Any

import orjson
import pytest

from pocketkube.api import fieldset, managedfields, schemas

NOW = "2026-11-23T02:35:28Z"
STATUS = fieldset.prefixes(("status",))

POD: dict[str, Any] = {
    "kind": "Pod", "apiVersion": "v1",
    "metadata": {"name": "p1", "namespace": "default", "uid": "44ac142b", "creationTimestamp": NOW,
                 "labels": {"app": "sched-bench", "gone": None}, "annotations": {}, "finalizers": ["a", "a", "b"],
                 "ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "o", "uid": "u"}],
                 "generation": 1, "resourceVersion": "3"},
    "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"],
                             "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
                             "ports": [{"containerPort": 80}, {"containerPort": 80}, {"containerPort": 81.0}],
                             "env": [], "imagePullPolicy": "Always",
                             "volumeMounts": [{"name": "v", "readOnly": True, "mountPath": "/var/run"}]}],
             "initContainers": [], "terminationGracePeriodSeconds": 0, "dnsPolicy": "ClusterFirst",
             "securityContext": {}, "nodeSelector": {}, "schedulerName": "default-scheduler",
             "volumes": [{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}],
                                                     "defaultMode": 420}}],
             "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                             {"key": "k"}], "priority": 0},
    "status": {"phase": "Pending", "qosClass": "Burstable"},
}
DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
    "spec": {"replicas": 2, "selector": {"matchLabels": {"a": "b"}}, "strategy": {},
             "template": {"metadata": {"labels": {"a": "b"}},
                          "spec": {"containers": [{"name": "c", "image": "i", "resources": {}}]}}},
}
EVENT: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Event", "metadata": {"name": "p1.187a", "namespace": "default"},
    "involvedObject": {"kind": "Pod", "name": "p1", "namespace": "default"}, "reason": "Scheduled",
    "source": {}, "eventTime": "2026-11-23T02:40:00.123456Z", "reportingComponent": "default-scheduler",
    "type": "Normal", "series": None,
}
SERVICE: dict[str, Any] = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "managedFields": "junk"},
    "spec": {"ports": [{"port": 80}, {"port": 80.0, "protocol": "UDP"}], "externalIPs": ["1.2.3.4", None],
             "selector": {"a": "b"}},
    "status": {"loadBalancer": {}},
}


def _type(obj: dict[str, Any]) -> fieldset.Type:
    group, _, version = obj["apiVersion"].rpartition("/")
    name = schemas.definition_name(group, version, obj["kind"])
    schema = schemas.definitions()[name] if name else None
    return fieldset.root_type(schema, schemas.resolve if schema is not None else None)


def _general(obj: dict[str, Any], t: fieldset.Type, reset: fieldset.FieldSet) -> list[dict[str, Any]]:
    """The general path: compare against nothing, record the Update, encode."""
    managed: managedfields.Managed = {}
    try:
        managedfields.record_update(managed, None, obj, t, manager="bench", api_version=obj["apiVersion"],
                                    subresource="", now=NOW, reset=reset)
    except fieldset.FieldSetError:
        return []
    return managedfields.encode(managed)


def _direct(obj: dict[str, Any], t: fieldset.Type, reset: fieldset.FieldSet) -> list[dict[str, Any]] | None:
    return managedfields._created(obj, t, manager="bench", api_version=obj["apiVersion"], subresource="",
                                  now=NOW, reset=reset)


def _same(obj: dict[str, Any], t: fieldset.Type, reset: fieldset.FieldSet) -> bool:
    """Both ways give byte-identical JSON (key order included)."""
    direct = _direct(obj, t, reset)
    return direct is not None and orjson.dumps(direct) == orjson.dumps(_general(obj, t, reset))


@pytest.mark.parametrize("obj", [POD, DEPLOYMENT, EVENT, SERVICE], ids=["pod", "deployment", "event", "service"])
@pytest.mark.parametrize("reset", [fieldset.EMPTY, STATUS, fieldset.prefixes(("spec", "template"), ("metadata",))],
                         ids=["no-reset", "status", "nested"])
def test_direct_create_entry_equals_the_general_path(obj: dict[str, Any], reset: fieldset.FieldSet) -> None:
    """The one-pass FieldsV1 entry equals what compare + record_update + encode produce."""
    t = _type(obj)
    assert _same(obj, t, reset)


def test_untyped_object_equals_the_general_path() -> None:
    """A custom resource without a schema (every field deduced) gets the same entry both ways."""
    obj = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t", "labels": {"a": "b"}},
           "spec": {"list": [1, 1, {"a": None}], "m": {}, "n": None}, "status": {"x": 1}}
    t = fieldset.root_type(None, None)
    assert _same(obj, t, STATUS)


def test_bad_keyed_list_drops_managed_fields_both_ways() -> None:
    """A keyed list item without its key fails both walks, which then track nothing."""
    obj = copy.deepcopy(POD)
    obj["spec"]["containers"].append({"image": "no-name"})
    t = _type(obj)
    assert _direct(obj, t, STATUS) == _general(obj, t, STATUS) == []


def _mutate(rng: random.Random, v: Any, depth: int = 0) -> Any:
    """A random variant of a JSON value: values dropped, nulled, emptied, duplicated or replaced."""
    if isinstance(v, dict):
        out = {}
        for k, x in v.items():
            r = rng.random()
            if r < 0.08:
                continue
            out[k] = None if r < 0.14 else ({} if r < 0.18 else _mutate(rng, x, depth + 1))
        if rng.random() < 0.1:
            out["extra" + str(rng.randrange(3))] = rng.choice([1, "s", True, None, {}, [], {"z": [1, 2]}])
        return out
    if isinstance(v, list):
        out_list = [_mutate(rng, x, depth + 1) for x in v if rng.random() > 0.1]
        if out_list and rng.random() < 0.2:
            out_list.append(copy.deepcopy(out_list[0]))
        return out_list
    return v


@pytest.mark.parametrize("seed", range(40))
def test_random_variants_equal_the_general_path(seed: int) -> None:
    """Randomly thinned, nulled and duplicated objects get the same entry both ways."""
    rng = random.Random(seed)
    for base in (POD, DEPLOYMENT, EVENT, SERVICE):
        obj = _mutate(rng, base)
        obj["apiVersion"], obj["kind"] = base["apiVersion"], base["kind"]
        t = _type(obj)
        for reset in (fieldset.EMPTY, STATUS):
            assert _same(obj, t, reset), obj
