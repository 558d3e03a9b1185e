"""Tokens controller: which token Secrets to fill or delete, and what a filled Secret holds."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from pocketkube.controllers import serviceaccounttoken as tokens

CA = "-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n"
SA = {"metadata": {"name": "app", "namespace": "ns", "uid": "sa-uid"}}


def _b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def _secret(annotations: dict[str, str] | None = None, data: dict[str, str] | None = None,
            type_: str = tokens.TOKEN_TYPE) -> dict[str, Any]:
    return {"metadata": {"name": "t", "namespace": "ns", "uid": "s1",
                         "annotations": {tokens.NAME_ANNOTATION: "app", **(annotations or {})}},
            "type": type_, "data": data or {}}


FULL = {"token": _b64("jwt"), "ca.crt": _b64(CA), "namespace": _b64("ns")}


@pytest.mark.parametrize(("secret", "sa", "want"), [
    (_secret(), SA, "fill"),
    (_secret({tokens.UID_ANNOTATION: "sa-uid"}, FULL), SA, ""),
    (_secret({tokens.UID_ANNOTATION: "sa-uid"}, {**FULL, "ca.crt": _b64("old")}), SA, "fill"),
    (_secret({tokens.UID_ANNOTATION: "sa-uid"}, FULL), None, "delete"),
    (_secret({tokens.UID_ANNOTATION: "other"}, FULL), SA, "delete"),
    (_secret(type_="Opaque"), SA, ""),
])
def test_plan(secret: dict[str, Any], sa: dict[str, Any] | None, want: str) -> None:
    """Token Secrets are filled until complete and deleted when their account is gone or replaced."""
    assert tokens.plan(secret, sa, ca_pem=CA) == want


def test_filled_keeps_an_existing_token() -> None:
    """Filling sets ca.crt, namespace and the uid annotation, and never replaces a token already there."""
    out = tokens.filled(_secret(data={"token": _b64("keep")}), SA, token="new", ca_pem=CA)
    assert out["data"] == {"token": _b64("keep"), "ca.crt": _b64(CA), "namespace": _b64("ns")}
    assert out["metadata"]["annotations"][tokens.UID_ANNOTATION] == "sa-uid"
    assert tokens.filled(_secret(), SA, token="new", ca_pem=CA)["data"]["token"] == _b64("new")
