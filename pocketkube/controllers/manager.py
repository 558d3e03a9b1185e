"""Controller manager: one HTTPS client for the cluster, the built-in controllers started on it."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.client import config, informer, rest
from pocketkube.controllers import (
    clusterroleaggregation,
    cronjob,
    csrcleaner,
    csrsigning,
    daemonset,
    deployment,
    disruption,
    endpoints,
    endpointslice,
    endpointslicemirroring,
    garbagecollector,
    job,
    namespace,
    nodelifecycle,
    persistentvolume,
    podgc,
    pvcprotection,
    replicaset,
    resourcequota,
    serviceaccount,
    serviceaccounttoken,
    servicelb,
    statefulset,
    tainteviction,
    ttlafterfinished,
)

log = logging.getLogger("pocketkube.controllers")

USER = "system:kube-controller-manager"
# Written as the field manager of everything we change, as kube-controller-manager does.
FIELD_MANAGER = "kube-controller-manager"
USER_AGENT = "kube-controller-manager/v1.32.0 (linux/amd64) pocketkube"
CERT_DAYS = 365


async def client_for(url: str, pki: pki_mod.Pki) -> rest.Client:
    """A client authenticating as system:kube-controller-manager with a cert from the cluster CA."""
    cert, key = await asyncio.to_thread(pki_mod.issue_client_cert, pki, USER, days=CERT_DAYS)
    return config.from_pem(url, ca_pem=pki.ca_cert_pem, cert_pem=cert, key_pem=key,
                           user_agent=USER_AGENT, field_manager=FIELD_MANAGER)


def _controllers(client: rest.Client, *, pki: pki_mod.Pki, clock: clock_mod.Clock) -> list[tuple[str, Any]]:
    """(name, object with an async run()) for every built-in controller, one line each."""
    # One list+watch per resource for all controllers (client-go's SharedInformerFactory): a pod informer
    # each used to decode every pod event a dozen times over. As kube-controller-manager, the caches drop
    # managedFields (WithTransform): kept for every object's lifetime, and read by no controller.
    shared = informer.Factory(client, clock=clock, transform=informer.trim_managed_fields)
    return [
        ("namespace", namespace.NamespaceController(client, ca_pem=pki.ca_cert_pem.decode("ascii"), clock=clock, informers=shared)),
        ("garbagecollector", garbagecollector.GarbageCollector(client, clock=clock, informers=shared)),
        ("clusterrole-aggregation", clusterroleaggregation.ClusterRoleAggregationController(client, clock=clock, informers=shared)),
        ("statefulset", statefulset.StatefulSetController(client, clock=clock, informers=shared)),
        ("daemonset", daemonset.DaemonSetController(client, clock=clock, informers=shared)),
        ("replicaset", replicaset.ReplicaSetController(client, clock=clock, informers=shared)),
        ("replicationcontroller", replicaset.ReplicaSetController(client, kind="ReplicationController", clock=clock, informers=shared)),
        ("deployment", deployment.DeploymentController(client, clock=clock, informers=shared)),
        ("serviceaccount", serviceaccount.ServiceAccountController(client, clock=clock, informers=shared)),
        ("serviceaccount-token", serviceaccounttoken.TokensController(
            client, signing_key_pem=pki_mod.service_account_key(pki)[0], ca_pem=pki.ca_cert_pem.decode("ascii"),
            clock=clock, informers=shared)),
        ("disruption", disruption.DisruptionController(client, clock=clock, informers=shared)),
        ("nodelifecycle", nodelifecycle.NodeLifecycleController(client, settings=nodelifecycle.settings_from_env(), clock=clock, informers=shared)),
        ("tainteviction", tainteviction.TaintEvictionController(client, clock=clock, informers=shared)),
        ("podgc", podgc.PodGCController(client, clock=clock, informers=shared)),
        ("job", job.JobController(client, clock=clock, informers=shared)),
        ("cronjob", cronjob.CronJobController(client, clock=clock, informers=shared)),
        ("ttlafterfinished", ttlafterfinished.TTLAfterFinishedController(client, clock=clock, informers=shared)),
        ("service-lb", servicelb.ServiceLBController(client, clock=clock, informers=shared)),
        ("resourcequota", resourcequota.ResourceQuotaController(
            client, clock=clock, resync_seconds=resourcequota.resync_from_env(), informers=shared)),
        ("persistentvolume-binder", persistentvolume.PersistentVolumeController(client, clock=clock, informers=shared)),
        ("pvc-protection", pvcprotection.PVCProtectionController(client, clock=clock, informers=shared)),
        ("endpointslice", endpointslice.EndpointSliceController(client, clock=clock, informers=shared)),
        ("endpoints", endpoints.EndpointsController(client, clock=clock, informers=shared)),
        ("endpointslicemirroring", endpointslicemirroring.EndpointSliceMirroringController(client, clock=clock, informers=shared)),
        ("csrsigning", csrsigning.CSRSigningController(client, ca_cert_path=pki.ca_cert_path, ca_key_path=pki.ca_key_path, clock=clock, informers=shared)),
        ("csrcleaner", csrcleaner.CSRCleanerController(client, clock=clock, informers=shared)),
    ]


async def start(*, url: str, pki: pki_mod.Pki, clock: clock_mod.Clock | None = None) -> list[asyncio.Task[Any]]:
    """Start every built-in controller against url; cancel the tasks to stop."""
    client = await client_for(url, pki)
    clk = clock or clock_mod.Clock()
    controllers = _controllers(client, pki=pki, clock=clk)
    loop = asyncio.get_running_loop()
    left = [len(controllers)]

    async def supervised(name: str, run: Any) -> None:
        try:
            await _supervise(name, run)
        finally:
            # The HTTP session is shared: the last controller to stop closes it.
            left[0] -= 1
            if left[0] == 0:
                await client.close()

    return [loop.create_task(supervised(name, ctl.run), name=f"{name}-controller") for name, ctl in controllers]


async def _supervise(name: str, run: Any) -> None:
    """Run a controller, restarting it after an unexpected crash; cancellation stops it."""
    delay = 1.0
    while True:
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s controller crashed; restarting in %.0fs", name, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)
