"""Specification of server-side tables (as=Table): columns, cells and row objects per kind."""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import time

import pytest

from pocketkube.api import errors, tables
from pocketkube.api import tables_fmt as fmt

GOLDEN = pathlib.Path(__file__).parent / "golden" / "tables"
UPDATE = os.environ.get("UPDATE_GOLDEN") == "1"
NOW = datetime.datetime(2026, 11, 22, 12, 0, 0, tzinfo=datetime.UTC)


def go_json(value: object) -> str:
    """The body kube-apiserver writes for a curl client: two-space indent, <>& escaped."""
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render(case: dict) -> dict:
    return tables.table(case["kind"], case["group"], case["objects"],
                        now=datetime.datetime.fromisoformat(case["now"]),
                        resource_version=case.get("resourceVersion", ""),
                        printer_columns=case.get("printerColumns"))


REFERENCE = sorted((GOLDEN / "reference").glob("*.input.json"))


@pytest.mark.parametrize("path", REFERENCE, ids=lambda p: p.name.split(".")[0])
def test_matches_real_kube_apiserver_byte_for_byte(path: pathlib.Path) -> None:
    """The table of the objects a real 1.32 server printed equals its response body, key order included."""
    got = render(json.loads(path.read_text()))
    expected = path.with_name(path.name.replace(".input.json", ".table.json")).read_text()
    assert got == json.loads(expected)
    assert go_json(got) == expected.rstrip("\n")


KINDS = sorted((GOLDEN / "kinds").glob("*.input.json"))


@pytest.mark.parametrize("path", KINDS, ids=lambda p: p.name.split(".")[0])
def test_kind_golden(path: pathlib.Path) -> None:
    """Every kind prints the columns and cells recorded in its golden table."""
    got = render(json.loads(path.read_text()))
    golden = path.with_name(path.name.replace(".input.json", ".table.json"))
    if UPDATE:
        golden.write_text(go_json(got) + "\n")
    assert got == json.loads(golden.read_text())


@pytest.mark.parametrize("seconds,expected", [
    (-5, "<invalid>"), (-1.5, "0s"), (0, "0s"), (5, "5s"), (119, "119s"), (120, "2m"), (184, "3m4s"),
    (599, "9m59s"), (600, "10m"), (179 * 60 + 59, "179m"), (3 * 3600, "3h"), (3 * 3600 + 60 * 7, "3h7m"),
    (8 * 3600, "8h"), (47 * 3600 + 59 * 60, "47h"), (48 * 3600, "2d"), (51 * 3600, "2d3h"),
    (8 * 86400 - 1, "7d23h"), (8 * 86400, "8d"), (400 * 86400, "400d"), (730 * 86400, "2y"),
    (731 * 86400, "2y1d"), (8 * 365 * 86400, "8y"), (20 * 365 * 86400, "20y"),
])
def test_human_duration(seconds: float, expected: str) -> None:
    """Ages read exactly like apimachinery's duration.HumanDuration."""
    assert tables.human_duration(datetime.timedelta(seconds=seconds)) == expected


@pytest.mark.parametrize("value,expected", [
    ("1000m", "1"), ("1500m", "1500m"), ("0.5", "500m"), ("2000", "2k"), ("1Gi", "1Gi"), ("1024Mi", "1Gi"),
    ("1536Mi", "1536Mi"), ("0.5Ki", "512"), ("1e3", "1e3"), ("10G", "10G"), ("0", "0"), ("100Mi", "100Mi"),
    (None, "0"), (3, "3"), ("1.5Gi", "1536Mi"), ("12m", "12m"),
])
def test_quantity_canonical_form(value: object, expected: str) -> None:
    """Quantities in cells are printed in resource.Quantity's canonical form."""
    assert fmt.quantity(value) == expected


@pytest.mark.parametrize("selector,expected", [
    (None, "<none>"), ({}, "<none>"), ({"matchLabels": {"b": "2", "a": "1"}}, "a=1,b=2"),
    ({"matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["y", "x"]}]}, "t notin (x,y)"),
    ({"matchExpressions": [{"key": "t", "operator": "Exists"}]}, "t"),
    ({"matchExpressions": [{"key": "t", "operator": "Bogus"}]}, "<error>"),
])
def test_format_label_selector(selector: object, expected: str) -> None:
    """Selectors print as labels.Selector strings, sorted by key."""
    assert fmt.format_selector(selector) == expected


def _pod(**status: object) -> dict:
    return {"metadata": {"name": "p", "creationTimestamp": "2026-11-22T11:00:00Z"},
            "spec": {"containers": [{"name": "c"}]}, "status": status}


@pytest.mark.parametrize("pod,ready,reason,restarts", [
    (_pod(phase="Pending"), "0/1", "Pending", "0"),
    (_pod(phase="Running", containerStatuses=[{"name": "c", "ready": True, "restartCount": 2,
                                                "state": {"running": {}},
                                                "lastState": {"terminated": {"finishedAt": "2026-11-22T11:57:00Z"}}}]),
     "1/1", "Running", "2 (3m ago)"),
    (_pod(phase="Running", containerStatuses=[{"name": "c", "restartCount": 1, "state": {"waiting": {"reason": "ImagePullBackOff"}}}]),
     "0/1", "ImagePullBackOff", "1"),
    (_pod(phase="Running", containerStatuses=[{"name": "c", "state": {"terminated": {"exitCode": 2}}}]), "0/1", "ExitCode:2", "0"),
    (_pod(phase="Failed", reason="DeadlineExceeded"), "0/1", "DeadlineExceeded", "0"),
])
def test_pod_status_cells(pod: dict, ready: str, reason: str, restarts: str) -> None:
    """The READY, STATUS and RESTARTS cells follow kubectl's pod status logic."""
    cells = tables.table("Pod", "", [pod], now=NOW)["rows"][0]["cells"]
    assert cells[1:4] == [ready, reason, restarts]


def test_completed_pod_rows_carry_a_condition() -> None:
    """Succeeded and Failed pods get the Completed row condition between cells and object."""
    row = tables.table("Pod", "", [_pod(phase="Succeeded")], now=NOW)["rows"][0]
    assert list(row) == ["cells", "conditions", "object"]
    assert row["conditions"] == [{"type": "Completed", "status": "True", "reason": "Succeeded",
                                  "message": "The pod has completed successfully."}]


def test_include_object_variants() -> None:
    """includeObject=None nulls the row object, Object embeds it whole, Metadata trims it."""
    cm = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "a", "labels": {}, "generation": 0}, "data": {}}
    assert tables.table("ConfigMap", "", [cm], now=NOW, include_object="None")["rows"][0]["object"] is None
    assert tables.table("ConfigMap", "", [cm], now=NOW, include_object="Object")["rows"][0]["object"] is cm
    partial = tables.table("ConfigMap", "", [cm], now=NOW)["rows"][0]["object"]
    assert partial == {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                       "metadata": {"name": "a", "creationTimestamp": None}}


def test_unknown_include_object_is_a_bad_request() -> None:
    """An unrecognized includeObject value is refused like kube-apiserver does."""
    with pytest.raises(errors.BadRequest, match='unrecognized includeObject value: "All"'):
        tables.table("ConfigMap", "", [], now=NOW, include_object="All")


def test_malformed_object_is_an_internal_error() -> None:
    """An object whose fields have the wrong shape yields a 500 Status, not an unhandled crash."""
    with pytest.raises(errors.InternalError, match='unable to print Pod "p"'):
        tables.table("Pod", "", [{"metadata": {"name": "p"}, "spec": ["not", "a", "map"]}], now=NOW)


def test_list_metadata() -> None:
    """The table metadata carries the list's resourceVersion, continue token and remaining count."""
    t = tables.table("Namespace", "", [], now=NOW, resource_version="7", continue_token="abc", remaining=5)
    assert t["metadata"] == {"resourceVersion": "7", "continue": "abc", "remainingItemCount": 5}
    assert t["rows"] == []
    assert tables.table("Role", "rbac.authorization.k8s.io", [], now=NOW)["rows"] is None


def test_column_definitions_are_copies() -> None:
    """Callers may change returned column definitions without affecting later tables."""
    cols = tables.column_definitions("Pod", "")
    cols[0]["name"] = "X"
    assert tables.column_definitions("Pod", "")[0]["name"] == "Name"
    assert [c["name"] for c in tables.column_definitions("Role", "rbac.authorization.k8s.io")] == ["Name", "Created At"]
    assert [c["name"] for c in tables.column_definitions("Thing", "example.com", [])] == ["Name", "Age"]


def test_two_thousand_config_maps_are_fast() -> None:
    """A table of 2000 ConfigMaps takes a few milliseconds."""
    cms = [{"kind": "ConfigMap", "apiVersion": "v1",
            "metadata": {"name": f"cm-{i}", "namespace": "default", "uid": f"u{i}", "resourceVersion": str(i),
                         "creationTimestamp": "2026-11-22T11:00:00Z", "labels": {"app": "x"}},
            "data": {"a": "1", "b": "2"}} for i in range(2000)]
    tables.table("ConfigMap", "", cms, now=NOW)
    best = min(_timed(lambda: tables.table("ConfigMap", "", cms, now=NOW)) for _ in range(3))
    assert best < 0.5, best  # 10x headroom: not a benchmark (see bench/)


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start
