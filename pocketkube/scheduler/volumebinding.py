"""VolumeBinding plugin: pods wait for their claims; WaitForFirstConsumer claims bind to the chosen node."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any, Protocol

from pocketkube.api import errors
from pocketkube.api import storagehelpers as sh
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer as informer_mod
from pocketkube.client import rest
from pocketkube.scheduler import framework, nodeaffinity, nodeinfo
from pocketkube.scheduler.framework import Status

PVCS = rest.GVR("", "v1", "persistentvolumeclaims")
PVS = rest.GVR("", "v1", "persistentvolumes")
CLASSES = rest.GVR("storage.k8s.io", "v1", "storageclasses")
NAME = "VolumeBinding"
STATE_KEY = "VolumeBinding"
UNBOUND_IMMEDIATE = "pod has unbound immediate PersistentVolumeClaims"
BIND_CONFLICT = "node(s) didn't find available persistent volumes to bind"
NODE_CONFLICT = "node(s) had volume node affinity conflict"
PV_NOT_EXIST = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
# kube-scheduler's VolumeBinding bindTimeoutSeconds, and how often PreBind looks at the claims meanwhile.
BIND_TIMEOUT = 600.0
POLL_SECONDS = 0.1
Obj = dict[str, Any]


class Listers(Protocol):
    """Where the plugin reads claims, volumes and classes (the scheduler's informer caches)."""

    def claim(self, namespace: str, name: str) -> Obj | None: ...

    def volume(self, name: str) -> Obj | None: ...

    def volumes(self) -> list[Obj]: ...

    def storage_class(self, name: str) -> Obj | None: ...


class InformerListers:
    """Listers over three informers the scheduler runs beside its own."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None) -> None:
        self.claims = informer_mod.Informer(client, PVCS, clock=clock)
        self.pvs = informer_mod.Informer(client, PVS, clock=clock)
        self.classes = informer_mod.Informer(client, CLASSES, clock=clock)
        self.informers = [self.claims, self.pvs, self.classes]

    def claim(self, namespace: str, name: str) -> Obj | None:
        return self.claims.get(f"{namespace}/{name}")

    def volume(self, name: str) -> Obj | None:
        return self.pvs.get(name)

    def volumes(self) -> list[Obj]:
        return self.pvs.list()

    def storage_class(self, name: str) -> Obj | None:
        return self.classes.get(name)


@dataclasses.dataclass
class Claims:
    """A pod's claims sorted as kube's GetPodVolumeClaims does."""

    bound: list[Obj] = dataclasses.field(default_factory=list)
    delayed: list[Obj] = dataclasses.field(default_factory=list)
    immediate: list[Obj] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Decision:
    """What binding a pod's volumes on one node takes: static PV bindings and claims to provision."""

    reasons: list[str] = dataclasses.field(default_factory=list)
    bindings: list[tuple[Obj, Obj]] = dataclasses.field(default_factory=list)
    provisions: list[Obj] = dataclasses.field(default_factory=list)


def fully_bound(claim: Mapping[str, Any]) -> bool:
    return bool((claim.get("spec") or {}).get("volumeName")) and sh.BIND_COMPLETED in sh.annotations_of(claim)


def volume_fits_node(volume: Mapping[str, Any], labels: Mapping[str, str], node_name: str) -> bool:
    """CheckNodeAffinity: a volume without required node affinity fits every node."""
    required = ((volume.get("spec") or {}).get("nodeAffinity") or {}).get("required")
    if not required:
        return True
    return any(nodeaffinity.term_matches(t, labels, node_name) for t in required.get("nodeSelectorTerms") or [])


def topology_fits(sc: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """MatchTopologySelectorTerms of a class's allowedTopologies (none: anywhere)."""
    terms = sc.get("allowedTopologies") or []
    if not terms:
        return True
    return any(all(labels.get(e.get("key", "")) in (e.get("values") or []) for e in t.get("matchLabelExpressions") or [])
               for t in terms)


def pod_claims(pod: Mapping[str, Any], listers: Listers) -> Claims | Status | None:
    """The pod's claims by kind, a refusal naming a claim that cannot be used, or None without claims."""
    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "")
    names = sh.pod_claim_names(pod)
    if not names:
        return None
    ephemeral = {f"{meta.get('name', '')}-{v.get('name', '')}" for v in (pod.get("spec") or {}).get("volumes") or []
                 if isinstance(v, Mapping) and v.get("ephemeral")}
    out = Claims()
    for name in names:
        claim = listers.claim(ns, name)
        if claim is None:
            if name in ephemeral:
                return Status(framework.UNRESOLVABLE, "waiting for ephemeral volume controller to create the "
                                                      f'persistentvolumeclaim "{name}"')
            return Status(framework.UNRESOLVABLE, f'persistentvolumeclaim "{name}" not found')
        spec = claim.get("spec") or {}
        if ((claim.get("status") or {}).get("phase")) == "Lost":
            return Status(framework.UNRESOLVABLE, f'persistentvolumeclaim "{name}" bound to non-existent '
                                                  f'persistentvolume "{spec.get("volumeName", "")}"')
        if (claim.get("metadata") or {}).get("deletionTimestamp"):
            return Status(framework.UNRESOLVABLE, f'persistentvolumeclaim "{name}" is being deleted')
        if fully_bound(claim):
            out.bound.append(claim)
        elif sh.delay_binding(claim, listers.storage_class) and not spec.get("volumeName"):
            out.delayed.append(claim)
        else:
            out.immediate.append(claim)
    return out


def decide(claims: Claims, listers: Listers, *, node_name: str, labels: Mapping[str, str]) -> Decision:
    """FindPodVolumes: whether the node can serve every claim, and how (bind existing PVs or provision)."""
    out = Decision()
    for claim in claims.bound:
        pv = listers.volume(str(claim["spec"]["volumeName"]))
        if pv is None:
            out.reasons.append(PV_NOT_EXIST)
        elif not volume_fits_node(pv, labels, node_name):
            out.reasons.append(NODE_CONFLICT)
    chosen: set[str] = set()
    match = True
    for claim in claims.delayed:
        selected = sh.annotations_of(claim).get(sh.SELECTED_NODE)
        if selected is not None:
            if selected != node_name:
                match = False
                continue
            out.provisions.append(claim)
            continue
        pv = sh.find_matching_volume(claim, listers.volumes(), excluded=frozenset(chosen),
                                     node_fits=lambda v: volume_fits_node(v, labels, node_name))
        if pv is not None:
            chosen.add(str(pv["metadata"]["name"]))
            out.bindings.append((pv, claim))
            continue
        sc = listers.storage_class(sh.claim_class(claim)) or {}
        provisioner = str(sc.get("provisioner") or "")
        if not provisioner or provisioner == sh.NO_PROVISIONER or not topology_fits(sc, labels):
            match = False
            continue
        out.provisions.append(claim)
    if not match:
        out.reasons.append(BIND_CONFLICT)
    # kube reports each reason once per node.
    out.reasons = list(dict.fromkeys(out.reasons))
    return out


class VolumeBinding(framework.Plugin):
    """PreFilter: claims exist and immediate ones are bound; Filter: the node can serve every claim."""

    name = NAME

    def __init__(self, listers: Listers) -> None:
        self.listers = listers

    def pre_filter(self, state: framework.State, pod: nodeinfo.PodInfo,
                   cluster: framework.Cluster) -> Status | framework.NodeNames | None:
        claims = pod_claims(pod.pod, self.listers)
        if claims is None:
            return Status(framework.SKIP)
        if isinstance(claims, Status):
            return claims
        if claims.immediate:
            return Status(framework.UNRESOLVABLE, UNBOUND_IMMEDIATE)
        state[STATE_KEY] = claims
        return None

    def filter(self, state: framework.State, pod: nodeinfo.PodInfo, node: nodeinfo.NodeInfo) -> Status | None:
        claims = state.get(STATE_KEY)
        if not isinstance(claims, Claims):
            return None
        found = decide(claims, self.listers, node_name=node.name, labels=node.labels)
        if found.reasons:
            return Status(framework.UNRESOLVABLE, *found.reasons)
        return None


class BindError(Exception):
    """PreBind could not bind the pod's volumes; the message is kube-scheduler's."""


class Binder:
    """PreBind: write the chosen bindings and selected-node annotations, then wait until every claim is bound."""

    def __init__(self, client: rest.Client, listers: Listers, *, clock: clock_mod.Clock | None = None,
                 timeout: float = BIND_TIMEOUT) -> None:
        self.client = client
        self.listers = listers
        self.clock = clock or clock_mod.Clock()
        self.timeout = timeout

    async def pre_bind(self, pod: Mapping[str, Any], node_name: str, labels: Mapping[str, str]) -> None:
        claims = pod_claims(pod, self.listers)
        if claims is None:
            return
        if isinstance(claims, Status):
            raise BindError(f'running PreBind plugin "{NAME}": {claims.message()}')
        decision = decide(claims, self.listers, node_name=node_name, labels=labels)
        if decision.reasons:
            raise BindError(f'running PreBind plugin "{NAME}": binding volumes: {", ".join(decision.reasons)}')
        try:
            for pv, claim in decision.bindings:
                body = copy.deepcopy(pv)
                body.setdefault("apiVersion", "v1")
                body.setdefault("kind", "PersistentVolume")
                body["metadata"].setdefault("annotations", {})[sh.BOUND_BY_CONTROLLER] = "yes"
                body["spec"]["claimRef"] = sh.claim_ref(claim)
                await self.client.update(PVS, body)
            for claim in decision.provisions:
                meta = claim["metadata"]
                if sh.annotations_of(claim).get(sh.SELECTED_NODE) != node_name:
                    await self.client.patch(PVCS.path(meta["namespace"], meta["name"]),
                                            {"metadata": {"annotations": {sh.SELECTED_NODE: node_name},
                                                          "resourceVersion": meta.get("resourceVersion")}})
        except errors.APIError as e:
            raise BindError(f'running PreBind plugin "{NAME}": binding volumes: {e}') from e
        provisioned = {str(c["metadata"]["name"]) for c in decision.provisions}
        await self._wait_bound(pod, [*claims.delayed, *claims.bound], provisioned)

    async def _wait_bound(self, pod: Mapping[str, Any], claims: list[Obj], provisioned: set[str]) -> None:
        """checkBindings until every claim is bound; a provisioner dropping selected-node gives up."""
        ns = str((pod.get("metadata") or {}).get("namespace") or "")
        deadline = self.clock.monotonic() + self.timeout
        annotated: set[str] = set()
        while True:
            pending = 0
            for old in claims:
                name = str(old["metadata"]["name"])
                claim = self.listers.claim(ns, name)
                if claim is None or (claim.get("metadata") or {}).get("uid") != old["metadata"].get("uid"):
                    raise BindError(f'running PreBind plugin "{NAME}": binding volumes: '
                                    f'persistentvolumeclaim "{name}" not found')
                if fully_bound(claim):
                    continue
                pending += 1
                if name in provisioned:
                    if sh.SELECTED_NODE in sh.annotations_of(claim):
                        annotated.add(name)
                    elif name in annotated:
                        raise BindError(f'running PreBind plugin "{NAME}": binding volumes: selectedNode '
                                        f'annotation reset for PVC "{name}"')
            if not pending:
                return
            if self.clock.monotonic() >= deadline:
                raise BindError(f'running PreBind plugin "{NAME}": binding volumes: context deadline exceeded')
            await self.clock.sleep(POLL_SECONDS)
