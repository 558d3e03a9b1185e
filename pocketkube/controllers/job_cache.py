"""Job controller expectations: pod creates, deletes and finalizer removals issued but not yet observed."""

from __future__ import annotations

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
