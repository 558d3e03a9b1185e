"""ServiceAccount controller: every active namespace has its "default" ServiceAccount, recreated if deleted."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.serviceaccount")

NAMESPACES = rest.GVR("", "v1", "namespaces")
SERVICE_ACCOUNTS = rest.GVR("", "v1", "serviceaccounts")
# kube-controller-manager's --service-account-names default: just "default".
DEFAULT_NAMES = ("default",)
NAMESPACE_TERMINATING_CAUSE = "NamespaceTerminating"


def missing(namespace: Mapping[str, Any] | None, existing: set[str], names: tuple[str, ...] = DEFAULT_NAMES) -> list[str]:
    """The accounts to create in a namespace: none unless it is Active, else those not there yet."""
    if namespace is None:
        return []
    if ((namespace.get("status") or {}).get("phase") or "Active") != "Active":
        return []
    if (namespace.get("metadata") or {}).get("deletionTimestamp"):
        return []
    return [n for n in names if n not in existing]


def account(namespace: str, name: str) -> dict[str, Any]:
    """The ServiceAccount the controller creates: just a name in a namespace."""
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}


class ServiceAccountController(controller.Reconciler):
    """Reconciles namespaces by name: creates their missing service accounts."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None,
                 names: tuple[str, ...] = DEFAULT_NAMES, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "serviceaccount", workers=workers, clock=clock, informers=informers)
        self.names = names
        self.namespaces = self.watch(NAMESPACES, _namespace_key)
        self.accounts = self.watch(SERVICE_ACCOUNTS, _deleted_account_key)

    async def reconcile(self, name: str) -> controller.Outcome:
        existing = {n for n in self.names if self.accounts.get(f"{name}/{n}") is not None}
        for sa in missing(self.namespaces.get(name), existing, self.names):
            try:
                await self.client.create(SERVICE_ACCOUNTS, account(name, sa))
            except errors.AlreadyExists:
                continue
            except (errors.Forbidden, errors.NotFound) as e:
                # The namespace started terminating (or went) after our cache saw it: nothing to do.
                if _has_cause(e, NAMESPACE_TERMINATING_CAUSE) or isinstance(e, errors.NotFound) \
                        or "being terminated" in e.message:
                    return controller.DONE
                raise
        return controller.DONE


def _namespace_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    if new is None:
        return []
    return [str((new.get("metadata") or {}).get("name") or "")]


def _deleted_account_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    # Only a deletion can leave a namespace without its account.
    if etype != informer.DELETED or old is None:
        return []
    return [str((old.get("metadata") or {}).get("namespace") or "")]


def _has_cause(e: errors.APIError, reason: str) -> bool:
    return any(c.get("reason") == reason for c in (e.details or {}).get("causes") or [])
