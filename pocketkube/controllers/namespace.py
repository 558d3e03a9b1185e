"""Namespace controller: empties terminating namespaces and finalizes them; publishes kube-root-ca.crt."""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from pocketkube.api import errors
from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.runtime import controller, writes

log = logging.getLogger("pocketkube.controllers.namespace")

NAMESPACES = rest.GVR("", "v1", "namespaces")
CONFIGMAPS = rest.GVR("", "v1", "configmaps")
FINALIZER = "kubernetes"
ROOT_CA_NAME = "kube-root-ca.crt"
DESCRIPTION_ANNOTATION = "kubernetes.io/description"
DESCRIPTION = ("Contains a CA bundle that can be used to verify the kube-apiserver when using internal "
               "endpoints such as the internal service IP or kubernetes.default.svc. No other usage is "
               "guaranteed across distributions of Kubernetes clusters.")
# Kube requeues a namespace whose content is still going after estimate/2+1 seconds, with a
# 15 s estimate for finalizers; one machine converges faster, so we look again sooner.
REMAINING_REQUEUE = 2.0
RESYNC_SECONDS = 300.0

DISCOVERY_FAILURE = "NamespaceDeletionDiscoveryFailure"
GV_PARSING_FAILURE = "NamespaceDeletionGroupVersionParsingFailure"
CONTENT_FAILURE = "NamespaceDeletionContentFailure"
CONTENT_REMAINING = "NamespaceContentRemaining"
FINALIZERS_REMAINING = "NamespaceFinalizersRemaining"
CONDITION_TYPES = (DISCOVERY_FAILURE, GV_PARSING_FAILURE, CONTENT_FAILURE, CONTENT_REMAINING,
                   FINALIZERS_REMAINING)
OK = {
    DISCOVERY_FAILURE: ("ResourcesDiscovered", "All resources successfully discovered"),
    GV_PARSING_FAILURE: ("ParsedGroupVersions", "All legacy kube types successfully parsed"),
    CONTENT_FAILURE: ("ContentDeleted", "All content successfully deleted, may be waiting on finalization"),
    CONTENT_REMAINING: ("ContentRemoved", "All content successfully removed"),
    FINALIZERS_REMAINING: ("ContentHasNoFinalizers", "All content-preserving finalizers finished"),
}


@dataclasses.dataclass
class ContentReport:
    """What one pass over a namespace's content found: counts left behind and errors met."""

    remaining: dict[rest.GVR, int] = dataclasses.field(default_factory=dict)
    finalizers: dict[str, int] = dataclasses.field(default_factory=dict)
    terminating: int = 0
    discovery_error: str = ""
    content_errors: list[str] = dataclasses.field(default_factory=list)

    @property
    def done(self) -> bool:
        return not any(self.remaining.values()) and not self.content_errors and not self.discovery_error


def decide(namespace: dict[str, Any]) -> str:
    """The next step for a namespace: "publish" (live), "done" (already finalized) or "cleanup"."""
    meta = namespace.get("metadata") or {}
    if not meta.get("deletionTimestamp"):
        return "publish"
    if FINALIZER not in ((namespace.get("spec") or {}).get("finalizers") or []):
        return "done"
    return "cleanup"


def tally(report: ContentReport, gvr: rest.GVR, items: Iterable[dict[str, Any]]) -> str:
    """Count what is left of one resource; an error message when something neither finalizes nor terminates."""
    count = unexplained = 0
    for item in items:
        meta = item.get("metadata") or {}
        count += 1
        fins = meta.get("finalizers") or []
        for f in fins:
            report.finalizers[f] = report.finalizers.get(f, 0) + 1
        if not fins:
            if meta.get("deletionTimestamp"):
                report.terminating += 1  # graceful deletion still running
            else:
                unexplained += 1
    if count:
        report.remaining[gvr] = count
    if unexplained:
        return f"unexpected items still remain in namespace: {_ns_of(items)} for gvr: {gvr}"
    return ""


def _ns_of(items: Iterable[dict[str, Any]]) -> str:
    for item in items:
        return str((item.get("metadata") or {}).get("namespace") or "")
    return ""


def failures(report: ContentReport) -> dict[str, tuple[str, str]]:
    """The failing conditions (type -> reason, message) a content report calls for, worded as kube's."""
    out: dict[str, tuple[str, str]] = {}
    if report.discovery_error:
        out[DISCOVERY_FAILURE] = ("DiscoveryFailed", report.discovery_error)
    if report.content_errors:
        errs = report.content_errors
        out[CONTENT_FAILURE] = ("ContentDeletionFailed", errs[0] if len(errs) == 1 else "[" + ", ".join(errs) + "]")
    left = sorted(f"{g.resource}.{g.group} has {n} resource instances" for g, n in report.remaining.items() if n)
    if left:
        out[CONTENT_REMAINING] = ("SomeResourcesRemain", "Some resources are remaining: " + ", ".join(left))
    fins = sorted(f"{f} in {n} resource instances" for f, n in report.finalizers.items() if n)
    if fins:
        out[FINALIZERS_REMAINING] = ("SomeFinalizersRemain",
                                     "Some content in the namespace has finalizers remaining: " + ", ".join(fins))
    return out


def conditions(old: list[dict[str, Any]], failing: dict[str, tuple[str, str]], now: str) -> list[dict[str, Any]]:
    """The namespace's new status.conditions: every deletion condition set, transition times kept when unchanged."""
    by_type = {c.get("type"): c for c in old}
    out: list[dict[str, Any]] = []
    for ctype in CONDITION_TYPES:
        status, (reason, message) = ("True", failing[ctype]) if ctype in failing else ("False", OK[ctype])
        prev = by_type.get(ctype)
        when = prev.get("lastTransitionTime") if prev and prev.get("status") == status else now
        out.append({"type": ctype, "status": status, "lastTransitionTime": when, "reason": reason,
                    "message": message})
    out.extend(c for c in old if c.get("type") not in CONDITION_TYPES)
    return out


def root_ca_change(existing: dict[str, Any] | None, ca_pem: str, namespace: str) -> tuple[str, dict[str, Any]] | None:
    """("create"|"update", body) to make kube-root-ca.crt right in a namespace, or None if it already is."""
    data = {"ca.crt": ca_pem}
    if existing is None:
        return "create", {"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": ROOT_CA_NAME, "namespace": namespace,
                                       "annotations": {DESCRIPTION_ANNOTATION: DESCRIPTION}},
                          "data": data}
    annotations = (existing.get("metadata") or {}).get("annotations") or {}
    if existing.get("data") == data and annotations.get(DESCRIPTION_ANNOTATION):
        return None
    cm = copy.deepcopy(existing)
    cm["data"] = data
    cm.setdefault("metadata", {}).setdefault("annotations", {})
    if cm["metadata"]["annotations"] is None:
        cm["metadata"]["annotations"] = {}
    cm["metadata"]["annotations"][DESCRIPTION_ANNOTATION] = DESCRIPTION
    return "update", cm


class NamespaceController(controller.Reconciler):
    """Reconciles namespaces by name."""

    def __init__(self, client: rest.Client, *, ca_pem: str, clock: clock_mod.Clock | None = None,
                 workers: int = 2,
                 informers: informer.Factory | None = None) -> None:
        super().__init__(client, "namespace", workers=workers, clock=clock, informers=informers)
        self.ca_pem = ca_pem
        self.namespaces = self.watch(NAMESPACES, _namespace_key, resync_seconds=RESYNC_SECONDS)
        self.root_cas = self.watch(CONFIGMAPS, _root_ca_key, field_selector=f"metadata.name={ROOT_CA_NAME}")

    async def reconcile(self, name: str) -> controller.Outcome:
        try:
            ns = await self.client.get(NAMESPACES.path(name=name))
        except errors.NotFound:
            return controller.DONE
        step = decide(ns)
        if step == "publish":
            await self._publish_root_ca(name)
            return controller.DONE
        if step == "done":
            return controller.DONE
        report = await self._delete_content(name)
        await self._update_conditions(name, report)
        if report.discovery_error and not report.remaining:
            raise RuntimeError(report.discovery_error)
        if report.content_errors:
            raise RuntimeError("; ".join(report.content_errors))
        if not report.done:
            return controller.requeue_after(REMAINING_REQUEUE)
        await self._finalize(name)
        return controller.DONE

    async def _publish_root_ca(self, namespace: str) -> None:
        change = root_ca_change(self.root_cas.get(f"{namespace}/{ROOT_CA_NAME}"), self.ca_pem, namespace)
        if change is None:
            return
        verb, body = change
        try:
            if verb == "create":
                await self.client.create(CONFIGMAPS, body)
            else:
                await self.client.update(CONFIGMAPS, body)
        except (errors.AlreadyExists, errors.NotFound):
            # Our cache was behind, or the namespace went away: the next event brings us back.
            return
        except errors.Forbidden as e:
            if "being terminated" in e.message or _has_cause(e, "NamespaceTerminating"):
                return
            raise

    async def _delete_content(self, namespace: str) -> ContentReport:
        report = ContentReport()
        try:
            disc = await self.client.discover()
        except errors.APIError as e:
            report.discovery_error = e.message
            return report
        if disc.failed:
            parts = ", ".join(f"{gv}: {msg}" for gv, msg in sorted(disc.failed.items()))
            report.discovery_error = (f"Discovery failed for some groups, {len(disc.failed)} failing: "
                                      f"unable to retrieve the complete list of server APIs: {parts}")
        for res in disc.preferred(verbs=("delete",), namespaced=True):
            await self._delete_resource(report, res, namespace)
        return report

    async def _delete_resource(self, report: ContentReport, res: rest.APIResource, namespace: str) -> None:
        gvr = res.gvr
        try:
            if "deletecollection" in res.verbs:
                await self.client.delete_collection(gvr, namespace, propagation_policy="Background", metadata_only=True)
            elif "list" in res.verbs:
                page = await self.client.list(gvr, namespace, metadata_only=True)
                for item in page.get("items") or []:
                    name = (item.get("metadata") or {}).get("name") or ""
                    try:
                        await self.client.delete(gvr.path(namespace, name), propagation_policy="Background")
                    except errors.NotFound:
                        pass
            if "list" not in res.verbs:
                return
            left = await self.client.list(gvr, namespace, metadata_only=True)
        except (errors.NotFound, errors.MethodNotAllowed):
            # The resource vanished since discovery (a CRD deleted) or does not allow this verb.
            return
        except errors.APIError as e:
            report.content_errors.append(e.message)
            return
        problem = tally(report, gvr, left.get("items") or [])
        if problem:
            report.content_errors.append(problem)

    async def _update_conditions(self, name: str, report: ContentReport) -> None:
        failing = failures(report)

        async def attempt(ns: dict[str, Any]) -> dict[str, Any] | None:
            status = ns.setdefault("status", {})
            new = conditions(status.get("conditions") or [], failing, clock_mod.rfc3339(self.clock.now()))
            if new == status.get("conditions"):
                return None
            status["conditions"] = new
            return await self.client.update_status(NAMESPACES, ns)

        await self._retry_on_conflict(name, attempt)

    async def _finalize(self, name: str) -> None:
        async def attempt(ns: dict[str, Any]) -> dict[str, Any] | None:
            fins = list((ns.get("spec") or {}).get("finalizers") or [])
            if FINALIZER not in fins:
                return None
            ns.setdefault("spec", {})["finalizers"] = [f for f in fins if f != FINALIZER]
            return await self.client.update(NAMESPACES, ns, subresource="finalize")

        await self._retry_on_conflict(name, attempt)

    async def _retry_on_conflict(self, name: str,
                                 attempt: Callable[[dict[str, Any]], Awaitable[dict[str, Any] | None]]) -> None:
        async def once() -> None:
            await attempt(await self.client.get(NAMESPACES.path(name=name)))

        await writes.retry_on_conflict(once)


def _namespace_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    if new is None:
        return []
    return [str((new.get("metadata") or {}).get("name") or "")]


def _root_ca_key(etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> list[str]:
    # A changed or deleted kube-root-ca.crt sends its namespace back to be republished.
    if etype == informer.ADDED:
        return []
    obj = new if new is not None else old
    return [str(((obj or {}).get("metadata") or {}).get("namespace") or "")]


def _has_cause(e: errors.APIError, reason: str) -> bool:
    return any(c.get("reason") == reason for c in (e.details or {}).get("causes") or [])
