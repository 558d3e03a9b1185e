"""DefaultIngressClass admission: which IngressClass a classless Ingress gets."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.apiserver import admission_ingress


def _ic(name: str, created: str, default: str | None) -> dict[str, Any]:
    ann = {} if default is None else {admission_ingress.DEFAULT_CLASS_ANNOTATION: default}
    return {"metadata": {"name": name, "creationTimestamp": created, "annotations": ann}}


@pytest.mark.parametrize(("classes", "want"), [
    ([], None),
    ([_ic("nginx", "2026-01-01T00:00:00Z", None)], None),
    ([_ic("nginx", "2026-01-01T00:00:00Z", "false"), _ic("pocketkube", "2026-01-01T00:00:00Z", "true")], "pocketkube"),
    ([_ic("a", "2026-01-01T00:00:00Z", "true"), _ic("b", "2026-01-02T00:00:00Z", "TRUE")], "b"),
    ([_ic("b", "2026-01-01T00:00:00Z", "true"), _ic("a", "2026-01-01T00:00:00Z", "true")], "a"),
])
def test_pick_default(classes: list[dict[str, Any]], want: str | None) -> None:
    """The default class is the one annotated true; among several, the newest, then by name."""
    got = admission_ingress.pick_default(classes)
    assert (got["metadata"]["name"] if got else None) == want
