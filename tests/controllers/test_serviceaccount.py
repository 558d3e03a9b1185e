"""Specification of the ServiceAccount controller: a "default" account in every active namespace."""

from __future__ import annotations

from typing import Any

import pytest

from pocketkube.api import errors
from pocketkube.base import clock
from pocketkube.controllers import serviceaccount as sa
from pocketkube.runtime import controller

ACTIVE = {"metadata": {"name": "team"}, "status": {"phase": "Active"}}
TERMINATING = {"metadata": {"name": "team", "deletionTimestamp": "2026-01-01T00:00:00Z"},
               "status": {"phase": "Terminating"}}


@pytest.mark.parametrize("ns,existing,want", [
    (ACTIVE, set(), ["default"]),
    (ACTIVE, {"default"}, []),
    ({"metadata": {"name": "team"}}, set(), ["default"]),
    (TERMINATING, set(), []),
    (None, set(), []),
])
def test_missing(ns, existing, want):
    """Accounts are created only in Active namespaces, and only those not there yet."""
    assert sa.missing(ns, existing) == want


def test_account_body():
    """The account created is bare: a name in a namespace, as kube-controller-manager creates it."""
    assert sa.account("team", "default") == {"apiVersion": "v1", "kind": "ServiceAccount",
                                             "metadata": {"name": "default", "namespace": "team"}}


class FakeClient:
    def __init__(self, fail: errors.APIError | None = None) -> None:
        self.created: list[dict[str, Any]] = []
        self.fail = fail

    async def create(self, gvr: Any, body: dict[str, Any], *, namespace: str = "") -> dict[str, Any]:
        if self.fail is not None:
            raise self.fail
        self.created.append(body)
        return body


async def test_reconcile_creates_and_recreates():
    """A namespace without its account gets one; a deleted account is made again."""
    client = FakeClient()
    ctl = sa.ServiceAccountController(client, clock=clock.FakeClock())  # type: ignore[arg-type]
    ctl.namespaces._replace([ACTIVE])
    assert await ctl.reconcile("team") == controller.DONE
    assert client.created == [sa.account("team", "default")]
    ctl.accounts._replace([{"metadata": {"name": "default", "namespace": "team", "resourceVersion": "1"}}])
    client.created.clear()
    assert await ctl.reconcile("team") == controller.DONE
    assert client.created == []
    assert sa._deleted_account_key("DELETED", {"metadata": {"name": "default", "namespace": "team"}}, None) == ["team"]
    assert sa._deleted_account_key("ADDED", None, {"metadata": {"name": "default", "namespace": "team"}}) == []


@pytest.mark.parametrize("err", [
    errors.AlreadyExists.for_object("serviceaccounts", "", "default"),
    errors.Forbidden('serviceaccounts "default" is forbidden: unable to create new content in namespace team '
                     "because it is being terminated",
                     details={"causes": [{"reason": "NamespaceTerminating"}]}),
])
async def test_reconcile_tolerates_races(err):
    """An account that already exists or a namespace that began terminating is not an error."""
    ctl = sa.ServiceAccountController(FakeClient(err), clock=clock.FakeClock())  # type: ignore[arg-type]
    ctl.namespaces._replace([ACTIVE])
    assert await ctl.reconcile("team") == controller.DONE
