"""Starts the scheduler against a cluster URL: its own client identity (system:kube-scheduler), supervised."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, rest
from pocketkube.scheduler import scheduler

log = logging.getLogger("pocketkube.scheduler")

USER = "system:kube-scheduler"
# Status patches carry the manager name kube-scheduler writes in managedFields.
FIELD_MANAGER = "kube-scheduler"
USER_AGENT = "kube-scheduler/v1.32.0 (linux/amd64) pocketkube"
CERT_DAYS = 365
MAX_RESTART_DELAY = 60.0


async def client_for(url: str, pki: pki_mod.Pki) -> rest.Client:
    """A client authenticating as system:kube-scheduler with a certificate from the cluster CA."""
    cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, pki, USER, days=CERT_DAYS)
    return config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key,
                           user_agent=USER_AGENT, field_manager=FIELD_MANAGER)


async def start(*, url: str, pki: pki_mod.Pki, clock: clock_mod.Clock | None = None) -> list[asyncio.Task[Any]]:
    """Start the default scheduler against url; cancel the returned task to stop it."""
    client = await client_for(url, pki)
    clk = clock or clock_mod.Clock()

    async def supervised() -> None:
        delay = 1.0
        try:
            while True:
                try:
                    await scheduler.Scheduler(client, clock=clk).run()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("scheduler crashed; restarting in %.0fs", delay)
                    await clk.sleep(delay)
                    delay = min(delay * 2, MAX_RESTART_DELAY)
        finally:
            await client.close()

    return [asyncio.get_running_loop().create_task(supervised(), name="scheduler")]
