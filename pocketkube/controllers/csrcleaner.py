"""CSR cleaner: deletes CSRs an hour after they are issued, denied or failed, a day after they are left pending,
and once their certificate has expired (kube-controller-manager's csrcleaner)."""

from __future__ import annotations

import base64
import binascii
import datetime
import logging
from typing import Any

from cryptography import x509

from pocketkube.api import errors
from pocketkube.api import validation_certificates as vcert
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.csrcleaner")

CSRS = rest.GVR("certificates.k8s.io", "v1", "certificatesigningrequests")
COMPONENT = "csrcleaner"
APPROVED_EXPIRATION = datetime.timedelta(hours=1)
DENIED_EXPIRATION = datetime.timedelta(hours=1)
FAILED_EXPIRATION = datetime.timedelta(hours=1)
PENDING_EXPIRATION = datetime.timedelta(hours=24)


def _time(value: Any) -> datetime.datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _not_after(csr: dict[str, Any]) -> datetime.datetime | None:
    raw = (csr.get("status") or {}).get("certificate")
    if not raw:
        return None
    try:
        return x509.load_pem_x509_certificate(base64.b64decode(raw)).not_valid_after_utc
    except (ValueError, binascii.Error):
        return None


def deadline(csr: dict[str, Any]) -> datetime.datetime | None:
    """When the cleaner removes this CSR (the earliest rule that applies), or None if never."""
    conds = vcert.conditions(csr)
    issued = bool((csr.get("status") or {}).get("certificate"))
    times: list[datetime.datetime] = []
    for c in conds:
        updated = _time(c.get("lastUpdateTime"))
        ctype = c.get("type")
        if ctype == vcert.APPROVED and issued:
            not_after = _not_after(csr)
            if not_after is not None:
                times.append(not_after)
            if updated is not None:
                times.append(updated + APPROVED_EXPIRATION)
        elif ctype == vcert.DENIED and updated is not None:
            times.append(updated + DENIED_EXPIRATION)
        elif ctype == vcert.FAILED and updated is not None:
            times.append(updated + FAILED_EXPIRATION)
    if not conds:
        created = _time((csr.get("metadata") or {}).get("creationTimestamp"))
        if created is not None:
            times.append(created + PENDING_EXPIRATION)
    return min(times) if times else None


class CSRCleanerController(controller.Reconciler):
    """Watches CSRs and deletes each when its deadline passes (requeued until then)."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, COMPONENT, workers=1, clock=clock, informers=informers)
        self.csrs = self.watch(CSRS, self._keys)

    def _keys(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        return [] if new is None else [informer.key_of(new)]

    async def reconcile(self, key: str) -> controller.Outcome:
        csr = self.csrs.get(key)
        if csr is None:
            return controller.DONE
        when = deadline(csr)
        if when is None:
            return controller.DONE
        left = (when - self.clock.now()).total_seconds()
        if left > 0:
            return controller.requeue_after(left)
        meta = csr.get("metadata") or {}
        try:
            await self.client.delete(CSRS.path("", str(meta.get("name") or "")),
                                     preconditions={"uid": str(meta.get("uid") or "")})
        except (errors.NotFound, errors.Conflict):
            return controller.DONE
        log.info("cleaned up csr %s", key)
        return controller.DONE
