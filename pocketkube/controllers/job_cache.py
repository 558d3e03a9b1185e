"""Job controller bookkeeping: pending pod creates/deletes/finalizer removals, and pods indexed by owner."""

from __future__ import annotations

from typing import Any

from pocketkube.client import informer
from pocketkube.controllers import job_util as ju

# kube's ControllerExpectations give up waiting for an unobserved create/delete after five minutes.
EXPECTATIONS_TTL = 300.0


class Expectations:
    """Creates/deletes issued but not yet seen in the pod informer, and finalizer removals in flight."""

    def __init__(self) -> None:
        self._counts: dict[str, tuple[int, int, float]] = {}
        self._finalizers: dict[str, set[str]] = {}

    def expect(self, key: str, *, adds: int = 0, deletes: int = 0, now: float) -> None:
        self._counts[key] = (adds, deletes, now)

    def creation_observed(self, key: str) -> None:
        if key in self._counts:
            a, d, t = self._counts[key]
            self._counts[key] = (a - 1, d, t)

    def deletion_observed(self, key: str) -> None:
        if key in self._counts:
            a, d, t = self._counts[key]
            self._counts[key] = (a, d - 1, t)

    def satisfied(self, key: str, now: float) -> bool:
        rec = self._counts.get(key)
        return rec is None or (rec[0] <= 0 and rec[1] <= 0) or now - rec[2] > EXPECTATIONS_TTL

    def expect_finalizers_removed(self, key: str, uids: list[str]) -> None:
        self._finalizers.setdefault(key, set()).update(uids)

    def finalizer_removed(self, key: str, uid: str) -> None:
        self._finalizers.get(key, set()).discard(uid)

    def finalizers_pending(self, key: str) -> set[str]:
        return set(self._finalizers.get(key, ()))

    def forget(self, key: str) -> None:
        self._counts.pop(key, None)
        self._finalizers.pop(key, None)


class PodIndex:
    """Pods by namespace, and pod keys by controller uid."""

    def __init__(self) -> None:
        self.by_ns: dict[str, dict[str, dict[str, Any]]] = {}
        self.by_owner: dict[str, set[str]] = {}

    def update(self, etype: str, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is not None:
            key = informer.key_of(old)
            self.by_ns.get(ju.meta(old).get("namespace") or "", {}).pop(key, None)
            ref = controller_of(old)
            if ref is not None:
                self.by_owner.get(ref.get("uid") or "", set()).discard(key)
        if new is not None:
            key = informer.key_of(new)
            self.by_ns.setdefault(ju.meta(new).get("namespace") or "", {})[key] = new
            ref = controller_of(new)
            if ref is not None:
                self.by_owner.setdefault(ref.get("uid") or "", set()).add(key)

    def in_namespace(self, ns: str) -> list[dict[str, Any]]:
        return list(self.by_ns.get(ns, {}).values())

    def owned_by(self, uid: str, ns: str) -> list[dict[str, Any]]:
        pods = self.by_ns.get(ns, {})
        return [pods[k] for k in self.by_owner.get(uid, ()) if k in pods]


def controller_of(obj: dict[str, Any]) -> dict[str, Any] | None:
    for ref in ju.meta(obj).get("ownerReferences") or []:
        if isinstance(ref, dict) and ref.get("controller"):
            return ref
    return None
