"""Garbage collector: an ownerReference graph over every resource; background, foreground and orphan deletion."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller, writes

log = logging.getLogger("pocketkube.controllers.garbagecollector")

FOREGROUND = "foregroundDeletion"
ORPHAN = "orphan"
# As kube's GC: events are never owners worth watching and are far too many.
IGNORED = frozenset({("", "events"), ("events.k8s.io", "events")})
DISCOVERY_PERIOD = 10.0
SYNC_TIMEOUT = 30.0
ABSENT_CACHE_SIZE = 1000
# Unknown kinds in owner references refresh discovery at most this often.
ON_DEMAND_DISCOVERY_GAP = 1.0
VIRTUAL_DELETE = "VIRTUAL_DELETE"


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who an object is: enough to GET it again and to tell a recreated namesake apart (uid)."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]


@dataclasses.dataclass
class Node:
    """One object in the graph; virtual nodes are owners named by a reference but not yet observed."""

    identity: Identity
    owners: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    dependents: set[str] = dataclasses.field(default_factory=set)
    being_deleted: bool = False
    deleting_dependents: bool = False
    finalizers: tuple[str, ...] = ()
    virtual: bool = False


@dataclasses.dataclass
class Effects:
    """Keys the graph wants looked at: uids to attempt to delete and owners whose dependents to orphan."""

    delete: list[str] = dataclasses.field(default_factory=list)
    orphan: list[str] = dataclasses.field(default_factory=list)


class Graph:
    """The dependency graph, updated from observed objects; pure and synchronous."""

    def __init__(self) -> None:
        self.nodes: dict[str, Node] = {}

    def observe(self, api_version: str, kind: str, obj: dict[str, Any]) -> Effects:
        """Add or update an object seen ADDED or MODIFIED."""
        fx = Effects()
        meta = obj.get("metadata") or {}
        uid = meta.get("uid") or ""
        if not uid:
            return fx
        ident = Identity(api_version, kind, meta.get("namespace") or "", meta.get("name") or "", uid)
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid")]
        node = self.nodes.get(uid)
        if node is None:
            node = self.nodes[uid] = Node(ident)
            old_refs: list[dict[str, Any]] = []
        else:
            old_refs = node.owners if not node.virtual else []
            node.virtual = False
            node.identity = ident
        old_by_uid = {r["uid"]: r for r in old_refs}
        new_by_uid = {r["uid"]: r for r in refs}
        for ouid, ref in old_by_uid.items():
            now = new_by_uid.get(ouid)
            if now is None or (ref.get("blockOwnerDeletion") and not now.get("blockOwnerDeletion")):
                # This dependent stopped blocking an owner that may be waiting on it.
                owner = self.nodes.get(ouid)
                if owner is not None and owner.deleting_dependents:
                    fx.delete.append(ouid)
            if now is None and (owner := self.nodes.get(ouid)) is not None:
                owner.dependents.discard(uid)
        node.owners = refs
        for ouid, ref in new_by_uid.items():
            if ouid in old_by_uid:
                continue
            owner = self.nodes.get(ouid)
            if owner is None:
                # Named but unseen: verify it exists, else its dependents are garbage.
                ns = ident.namespace
                owner = self.nodes[ouid] = Node(Identity(ref.get("apiVersion") or "", ref.get("kind") or "", ns,
                                                         ref.get("name") or "", ouid), virtual=True)
                fx.delete.append(ouid)
            owner.dependents.add(uid)
            if owner.deleting_dependents:
                fx.delete.append(uid)
        node.being_deleted = bool(meta.get("deletionTimestamp"))
        node.finalizers = tuple(meta.get("finalizers") or ())
        if node.being_deleted and ORPHAN in node.finalizers:
            fx.orphan.append(uid)
        if node.being_deleted and FOREGROUND in node.finalizers:
            if not node.deleting_dependents:
                node.deleting_dependents = True
                fx.delete.extend(sorted(node.dependents))
            fx.delete.append(uid)
        elif node.deleting_dependents and FOREGROUND not in node.finalizers:
            node.deleting_dependents = False
        return fx

    def remove(self, uid: str) -> Effects:
        """Drop an object seen DELETED (or found absent): its dependents and waiting owners need a look."""
        fx = Effects()
        node = self.nodes.pop(uid, None)
        if node is None:
            return fx
        for ref in node.owners:
            owner = self.nodes.get(ref["uid"])
            if owner is not None:
                owner.dependents.discard(uid)
                if owner.deleting_dependents:
                    fx.delete.append(owner.identity.uid)
        fx.delete.extend(sorted(node.dependents))
        return fx

    def blocking_dependents(self, node: Node) -> list[Node]:
        """Dependents whose reference to node sets blockOwnerDeletion."""
        out = []
        for d in sorted(node.dependents):
            dep = self.nodes.get(d)
            if dep is None:
                continue
            if any(r["uid"] == node.identity.uid and r.get("blockOwnerDeletion") for r in dep.owners):
                out.append(dep)
        return out


# --- the decisions, as pure functions -------------------------------------------------------

SOLID, DANGLING, WAITING = "solid", "dangling", "waiting"


def owner_state(owner: dict[str, Any] | None, uid: str) -> str:
    """How a live owner (its metadata, or None when absent) stands toward a reference with this uid."""
    if owner is None:
        return DANGLING
    meta = owner.get("metadata") or {}
    if meta.get("uid") != uid:
        return DANGLING
    if meta.get("deletionTimestamp") and FOREGROUND in (meta.get("finalizers") or []):
        return WAITING
    return SOLID


def classify(refs: list[dict[str, Any]], states: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    """Split owner reference uids into (solid, dangling, waiting-for-dependents-deletion)."""
    out: dict[str, list[str]] = {SOLID: [], DANGLING: [], WAITING: []}
    for r in refs:
        out[states[r["uid"]]].append(r["uid"])
    return out[SOLID], out[DANGLING], out[WAITING]


@dataclasses.dataclass(frozen=True)
class Action:
    """One write the collector makes: delete (with a policy), drop owner references, unblock them."""

    kind: str
    policy: str = ""
    uids: tuple[str, ...] = ()


def plan(dependent: dict[str, Any], states: dict[str, str], *, has_dependents: bool,
         dependent_is_deleting_dependents: bool) -> list[Action]:
    """What to do with an object not being deleted, given the state of each of its owners (kube's rules)."""
    meta = dependent.get("metadata") or {}
    refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid")]
    if not refs:
        return []
    solid, dangling, waiting = classify(refs, states)
    if solid:
        if not dangling and not waiting:
            return []
        # Keep the object for its living owners; forget the dead ones and those waiting on us.
        return [Action("remove_owner_refs", uids=tuple(dangling + waiting))]
    if waiting and has_dependents:
        acts = []
        if dependent_is_deleting_dependents:
            # Break a cycle of owners each waiting on the other.
            acts.append(Action("unblock_owner_refs"))
        acts.append(Action("delete", policy="Foreground"))
        return acts
    fins = meta.get("finalizers") or []
    policy = "Orphan" if ORPHAN in fins else "Foreground" if FOREGROUND in fins else "Background"
    return [Action("delete", policy=policy)]


def without_owner_refs(meta: dict[str, Any], uids: set[str]) -> list[dict[str, Any]]:
    return [r for r in meta.get("ownerReferences") or [] if r.get("uid") not in uids]


# --- the collector ----------------------------------------------------------------------------


class GarbageCollector:
    """Watches every deletable resource (metadata only, or the controllers' shared informer) and deletes what no
    owner holds any more."""

    def __init__(self, client: rest.Client, *, clock: clock_mod.Clock | None = None, workers: int = 4,
                 discovery_period: float = DISCOVERY_PERIOD, informers: informer.Factory | None = None) -> None:
        self.client = client
        # The other controllers' informers: a resource they already watch whole is not watched a second time.
        self.informers = informers
        self.clock = clock or clock_mod.Clock()
        self.discovery_period = discovery_period
        self.graph = Graph()
        self.discovery = rest.Discovery([])
        self._events: asyncio.Queue[tuple[str, rest.APIResource | None, Any]] = asyncio.Queue()
        # gvr -> (informer, the task running it, our handler on it: a shared informer outlives the monitor)
        self._monitors: dict[rest.GVR, tuple[informer.Informer, asyncio.Task[None], informer.Handler]] = {}
        self._absent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._discovered_at = float("-inf")
        self.deleter = controller.Controller("garbagecollector-delete", self.attempt_to_delete,
                                             workers=workers, clock=self.clock)
        self.orphaner = controller.Controller("garbagecollector-orphan", self.attempt_to_orphan,
                                              workers=1, clock=self.clock)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        tasks = [loop.create_task(self._process_graph_changes(), name="gc-graph")]
        try:
            await self.refresh_discovery()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(i.wait_synced() for i, _, _ in self._monitors.values())),
                                       SYNC_TIMEOUT)
            tasks += [loop.create_task(self.deleter.run(), name="gc-delete"),
                      loop.create_task(self.orphaner.run(), name="gc-orphan"),
                      loop.create_task(self._discovery_loop(), name="gc-discovery")]
            await asyncio.gather(*tasks)
        finally:
            for t in tasks:
                t.cancel()
            for inf, inf_task, handler in self._monitors.values():
                inf.remove_handler(handler)
                inf_task.cancel()
            for t in tasks + [t for _, t, _ in self._monitors.values()]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            self._monitors.clear()

    async def _discovery_loop(self) -> None:
        while True:
            await self.clock.sleep(self.discovery_period)
            try:
                await self.refresh_discovery()
            except (TimeoutError, errors.APIError, aiohttp.ClientError, OSError) as e:
                log.warning("garbage collector: discovery failed: %s", e)

    async def refresh_discovery(self) -> None:
        """Re-read discovery; watch new resource types, stop watching vanished ones."""
        disc = await self.client.discover()
        self.discovery = disc
        self._discovered_at = self.clock.monotonic()
        wanted = {r.gvr: r for r in disc.preferred(verbs=("list", "watch", "delete"))
                  if (r.group, r.resource) not in IGNORED}
        # A group that failed to answer discovery keeps its monitors until it answers again.
        failed_groups = {gv.rpartition("/")[0] for gv in disc.failed}
        for gvr in list(self._monitors):
            if gvr not in wanted and gvr.group not in failed_groups:
                inf, task, handler = self._monitors.pop(gvr)
                inf.remove_handler(handler)
                task.cancel()
                for obj in inf.list():
                    self._events.put_nowait((informer.DELETED, None, obj))
        for gvr, res in wanted.items():
            if gvr in self._monitors:
                continue
            shared = self.informers.existing(gvr) if self.informers is not None else None
            inf = shared if shared is not None else informer.Informer(self.client, gvr, metadata_only=True,
                                                                      clock=self.clock)
            handler = self._handler(res)
            inf.add_handler(handler)
            task = asyncio.get_running_loop().create_task(inf.run(), name=f"gc-monitor-{gvr.resource}.{gvr.group}")
            self._monitors[gvr] = (inf, task, handler)

    def _handler(self, res: rest.APIResource) -> informer.Handler:
        def handle(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
            self._events.put_nowait((etype, res, new if new is not None else old))
        return handle

    async def _process_graph_changes(self) -> None:
        while True:
            etype, res, obj = await self._events.get()
            self.apply_event(etype, res, obj)

    def apply_event(self, etype: str, res: rest.APIResource | None, obj: Any) -> None:
        """Fold one observed change into the graph and queue the work it calls for."""
        if etype == VIRTUAL_DELETE:
            fx = self.graph.remove(obj)
        elif etype == informer.DELETED:
            fx = self.graph.remove((obj.get("metadata") or {}).get("uid") or "")
        else:
            if res is None:
                raise ValueError("an ADDED or MODIFIED event needs its resource")
            api_version = f"{res.group}/{res.version}" if res.group else res.version
            fx = self.graph.observe(api_version, res.kind, obj)
        for uid in fx.delete:
            self.deleter.enqueue(uid)
        for uid in fx.orphan:
            self.orphaner.enqueue(uid)

    # --- workers -----------------------------------------------------------------------------

    async def attempt_to_delete(self, uid: str) -> controller.Outcome:
        node = self.graph.nodes.get(uid)
        if node is None:
            return controller.DONE
        if node.being_deleted and not node.deleting_dependents and not node.virtual:
            return controller.DONE
        latest = await self._get_live(node.identity)
        if latest is None:
            self._events.put_nowait((VIRTUAL_DELETE, None, uid))
            return controller.DONE
        if node.deleting_dependents:
            await self._process_deleting_dependents(node)
            return controller.DONE
        if not (latest.get("metadata") or {}).get("deletionTimestamp"):
            await self._collect(node, latest)
        # A virtual owner that exists is looked at again until its informer reports it.
        return controller.REQUEUE if node.virtual else controller.DONE

    async def _collect(self, node: Node, latest: dict[str, Any]) -> None:
        meta = latest.get("metadata") or {}
        refs = [r for r in meta.get("ownerReferences") or [] if r.get("uid")]
        if not refs:
            return
        states = {r["uid"]: await self._owner_state(r, node.identity) for r in refs}
        deps = [self.graph.nodes[d] for d in node.dependents if d in self.graph.nodes]
        actions = plan(latest, states, has_dependents=bool(deps),
                       dependent_is_deleting_dependents=any(d.deleting_dependents for d in deps))
        for act in actions:
            if act.kind == "remove_owner_refs":
                log.info("garbage collector: removing dangling owner references %s from %s", act.uids, _show(node))
                await self._patch_owner_refs(node.identity, lambda m, u=set(act.uids): without_owner_refs(m, u))
            elif act.kind == "unblock_owner_refs":
                await self._patch_owner_refs(node.identity, _unblocked)
            elif act.kind == "delete":
                log.info("garbage collector: deleting %s (propagationPolicy=%s)", _show(node), act.policy)
                with contextlib.suppress(errors.NotFound):
                    await self.client.delete(self._path(node.identity), propagation_policy=act.policy,
                                             preconditions={"uid": node.identity.uid})

    async def _process_deleting_dependents(self, node: Node) -> None:
        blocking = self.graph.blocking_dependents(node)
        if not blocking:
            await self._remove_finalizer(node.identity, FOREGROUND)
            return
        for dep in blocking:
            if not dep.deleting_dependents:
                self.deleter.enqueue(dep.identity.uid)

    async def attempt_to_orphan(self, uid: str) -> controller.Outcome:
        node = self.graph.nodes.get(uid)
        if node is None or not node.being_deleted or ORPHAN not in node.finalizers:
            return controller.DONE
        for d in sorted(node.dependents):
            dep = self.graph.nodes.get(d)
            if dep is not None:
                await self._patch_owner_refs(dep.identity, lambda m: without_owner_refs(m, {uid}))
        await self._remove_finalizer(node.identity, ORPHAN)
        return controller.DONE

    # --- API helpers -------------------------------------------------------------------------

    async def _mapping(self, api_version: str, kind: str) -> rest.APIResource:
        group = api_version.rpartition("/")[0]
        res = self.discovery.for_kind(group, kind)
        if res is None and self.clock.monotonic() - self._discovered_at >= ON_DEMAND_DISCOVERY_GAP:
            # A type added since the last refresh (a new CRD): look again before giving up.
            await self.refresh_discovery()
            res = self.discovery.for_kind(group, kind)
        if res is None:
            raise errors.NotFound(f'unable to get REST mapping for {api_version}, Kind={kind}')
        return res

    async def _path_of(self, ident: Identity) -> str:
        res = await self._mapping(ident.api_version, ident.kind)
        return res.gvr.path(ident.namespace if res.namespaced else "", ident.name)

    def _path(self, ident: Identity) -> str:
        res = self.discovery.for_kind(ident.group, ident.kind)
        if res is None:
            raise errors.NotFound(f"unable to get REST mapping for {ident.api_version}, Kind={ident.kind}")
        return res.gvr.path(ident.namespace if res.namespaced else "", ident.name)

    async def _get_live(self, ident: Identity) -> dict[str, Any] | None:
        """The object's current metadata, or None when it is gone (or replaced by a namesake)."""
        try:
            obj = await self.client.get(await self._path_of(ident), metadata_only=True)
        except errors.NotFound as e:
            if "REST mapping" in e.message:
                raise
            return None
        return obj if (obj.get("metadata") or {}).get("uid") == ident.uid else None

    async def _owner_state(self, ref: dict[str, Any], dependent: Identity) -> str:
        uid = ref["uid"]
        if uid in self._absent:
            return DANGLING
        res = await self._mapping(ref.get("apiVersion") or "", ref.get("kind") or "")
        if res.namespaced and not dependent.namespace:
            # A cluster-scoped object cannot be owned by a namespaced one: the reference is dangling.
            return DANGLING
        ns = dependent.namespace if res.namespaced else ""
        try:
            owner = await self.client.get(res.gvr.path(ns, ref.get("name") or ""), metadata_only=True)
        except errors.NotFound:
            owner = None
        state = owner_state(owner, uid)
        if state == DANGLING:
            self._absent[uid] = None
            while len(self._absent) > ABSENT_CACHE_SIZE:
                self._absent.popitem(last=False)
        return state

    async def _patch_owner_refs(self, ident: Identity, change: Any) -> None:
        """Rewrite an object's ownerReferences with change(metadata), guarded by resourceVersion."""

        def build(meta: dict[str, Any]) -> dict[str, Any] | None:
            refs = change(meta)
            if refs == (meta.get("ownerReferences") or []):
                return None
            return {"ownerReferences": refs or None, "uid": ident.uid}

        await self._patch_metadata(ident, build)

    async def _remove_finalizer(self, ident: Identity, finalizer: str) -> None:
        def build(meta: dict[str, Any]) -> dict[str, Any] | None:
            fins = list(meta.get("finalizers") or [])
            if finalizer not in fins:
                return None
            log.info("garbage collector: removing finalizer %s from %s", finalizer, _show_ident(ident))
            return {"finalizers": [f for f in fins if f != finalizer] or None}

        await self._patch_metadata(ident, build)

    async def _patch_metadata(self, ident: Identity,
                              build: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        """Merge-patch the metadata build(current metadata) returns (None: nothing to do), retrying conflicts."""

        async def attempt() -> None:
            path = await self._path_of(ident)
            obj = await self.client.get(path, metadata_only=True)
            meta = obj.get("metadata") or {}
            if meta.get("uid") != ident.uid:
                return
            patch = build(meta)
            if patch is None:
                return
            await self.client.patch(path, {"metadata": {**patch, "resourceVersion": meta.get("resourceVersion")}},
                                    patch_type="merge", metadata_only=True)

        await writes.retry_on_conflict(attempt)


def _unblocked(meta: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**r, "blockOwnerDeletion": False} if r.get("blockOwnerDeletion") else r
            for r in meta.get("ownerReferences") or []]


def _show(node: Node) -> str:
    return _show_ident(node.identity)


def _show_ident(i: Identity) -> str:
    where = f"{i.namespace}/" if i.namespace else ""
    return f"{i.kind} {where}{i.name} ({i.uid})"

