"""Tokens controller: fills kubernetes.io/service-account-token Secrets with a token, ca.crt and namespace."""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from typing import Any

from pocketkube.api import errors
from pocketkube.apiserver import satokens
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller

log = logging.getLogger("pocketkube.controllers.serviceaccounttoken")
# satokens is pure JWT code (no server state): the controller signs as kube-controller-manager does with
# pkg/serviceaccount, not through the API server.

SECRETS = rest.GVR("", "v1", "secrets")
SERVICE_ACCOUNTS = rest.GVR("", "v1", "serviceaccounts")
TOKEN_TYPE = "kubernetes.io/service-account-token"
NAME_ANNOTATION = "kubernetes.io/service-account.name"
UID_ANNOTATION = "kubernetes.io/service-account.uid"


def _b64(data: str) -> str:
    return base64.b64encode(data.encode()).decode("ascii")


def plan(secret: Mapping[str, Any], sa: Mapping[str, Any] | None, *, ca_pem: str) -> str:
    """What a token Secret needs: "delete" (its account is gone or replaced), "fill", or "" (nothing)."""
    meta = secret.get("metadata") or {}
    if secret.get("type") != TOKEN_TYPE or meta.get("deletionTimestamp"):
        return ""
    annotations = meta.get("annotations") or {}
    if sa is None:
        return "delete"
    want_uid = annotations.get(UID_ANNOTATION)
    if want_uid and want_uid != (sa.get("metadata") or {}).get("uid"):
        return "delete"
    data = secret.get("data") or {}
    if not data.get("token") or data.get("ca.crt") != _b64(ca_pem) or data.get("namespace") != _b64(
            str(meta.get("namespace") or "")) or not want_uid:
        return "fill"
    return ""


def filled(secret: Mapping[str, Any], sa: Mapping[str, Any], *, token: str, ca_pem: str) -> dict[str, Any]:
    """The Secret with its token (kept if present), the cluster CA, its namespace and the account's uid."""
    out = dict(secret)
    meta = dict(out.get("metadata") or {})
    meta["annotations"] = {**(meta.get("annotations") or {}), UID_ANNOTATION: (sa.get("metadata") or {}).get("uid", "")}
    out["metadata"] = meta
    data = dict(out.get("data") or {})
    if not data.get("token"):
        data["token"] = _b64(token)
    data["ca.crt"] = _b64(ca_pem)
    data["namespace"] = _b64(str(meta.get("namespace") or ""))
    out["data"] = data
    return out


class TokensController(controller.Reconciler):
    """Reconciles token Secrets by namespace/name; account changes re-check the Secrets naming them."""

    def __init__(self, client: rest.Client, *, signing_key_pem: bytes, ca_pem: str,
                 clock: clock_mod.Clock | None = None, workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "serviceaccount-token", workers=workers, clock=clock, informers=informers)
        self.signer = satokens.Signer(signing_key_pem)
        self.ca_pem = ca_pem
        self.secrets = self.watch(SECRETS, field_selector=f"type={TOKEN_TYPE}")
        self.accounts = self.watch(SERVICE_ACCOUNTS, self._secrets_of_account)

    def _secrets_of_account(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
        sa = new or old or {}
        meta = sa.get("metadata") or {}
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        return [f"{ns}/{s['metadata']['name']}" for s in self.secrets.list()
                if s["metadata"].get("namespace") == ns
                and (s["metadata"].get("annotations") or {}).get(NAME_ANNOTATION) == name]

    async def _account(self, namespace: str, name: str) -> dict[str, Any] | None:
        cached = self.accounts.get(f"{namespace}/{name}")
        if cached is not None:
            return cached
        # The cache may simply lag behind a just-created account: ask the API before deleting anything.
        try:
            return await self.client.get(SERVICE_ACCOUNTS.path(namespace, name))
        except errors.NotFound:
            return None

    async def reconcile(self, key: str) -> controller.Outcome:
        secret = self.secrets.get(key)
        if secret is None:
            return controller.DONE
        meta = secret["metadata"]
        ns, name = meta.get("namespace", ""), meta.get("name", "")
        sa_name = (meta.get("annotations") or {}).get(NAME_ANNOTATION, "")
        sa = await self._account(ns, sa_name) if sa_name else None
        action = plan(secret, sa, ca_pem=self.ca_pem)
        if action == "delete":
            try:
                await self.client.delete(SECRETS.path(ns, name), preconditions={"uid": meta.get("uid", "")})
            except (errors.NotFound, errors.Conflict):
                pass
        elif action == "fill" and sa is not None:
            token = self.signer.sign(satokens.legacy_claims(sa, name))
            try:
                await self.client.update(SECRETS, filled(secret, sa, token=token, ca_pem=self.ca_pem))
            except errors.Conflict:
                return controller.REQUEUE
            except errors.NotFound:
                pass
        return controller.DONE
