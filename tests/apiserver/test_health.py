"""The health endpoints: kube's named checks, ?verbose, ?exclude, single checks and the shutdown failure."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request

from pocketkube.api import errors
from pocketkube.apiserver import health


@dataclasses.dataclass
class _Server:
    shutting_down: bool = False


def _get(path: str, *, shutting_down: bool = False) -> tuple[int, str]:
    request = make_mocked_request("GET", path)
    response = health.respond(_Server(shutting_down), request, request.path)  # type: ignore[arg-type]
    body: Any = response.text
    return response.status, body


@pytest.mark.parametrize(("path", "status", "first", "last"), [
    ("/readyz", 200, "ok", "ok"),
    ("/readyz?verbose", 200, "[+]ping ok", "readyz check passed"),
    ("/livez?verbose", 200, "[+]ping ok", "livez check passed"),
    ("/healthz?verbose=true", 200, "[+]ping ok", "healthz check passed"),
    ("/readyz/etcd", 200, "ok", "ok"),
    ("/readyz?verbose&exclude=etcd", 200, "[+]ping ok", "readyz check passed"),
])
def test_health_answers(path: str, status: int, first: str, last: str) -> None:
    """Each endpoint answers ok, or its check list with kube's closing line when verbose."""
    code, body = _get(path)
    lines = body.strip().splitlines()
    assert (code, lines[0], lines[-1]) == (status, first, last)


def test_exclusions_are_marked_and_unknown_ones_warned() -> None:
    """An excluded check reads `excluded: ok`; an unknown exclusion gets kube's warning line."""
    _, body = _get("/readyz?verbose&exclude=etcd&exclude=nope")
    assert "[+]etcd excluded: ok" in body.splitlines()
    assert 'warn: some health checks cannot be excluded: no matches for "nope"' in body


def test_shutting_down_fails_readyz_only() -> None:
    """While shutting down, readyz lists the failed shutdown check with a 500; livez stays ok."""
    code, body = _get("/readyz", shutting_down=True)
    assert code == 500 and "[-]shutdown failed: reason withheld" in body and body.endswith("readyz check failed\n")
    assert _get("/livez", shutting_down=True) == (200, "ok")


def test_unknown_check_is_not_found() -> None:
    """A check that does not exist is a 404."""
    with pytest.raises(errors.NotFound):
        _get("/readyz/bogus")
