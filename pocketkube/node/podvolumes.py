"""When a pod's volumes are set up: on its first sync, then again every REFRESH_SECONDS or once its metadata changes."""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.client import rest
from pocketkube.node import volumes

REFRESH_SECONDS = 60.0


class PodVolumes:
    """Each pod's materialised volumes, reused between refreshes as the kubelet's volume manager does."""

    def __init__(self, client: rest.Client, *, data_dir: str, allocatable: Mapping[str, str],
                 clock: clock_mod.Clock, run_dir: Callable[[str], str] | None = None) -> None:
        self.client = client
        self.data_dir = data_dir
        # A pod's directory in the node's state root, which holds its memory-backed volumes (None: all on disk).
        self.run_dir = run_dir
        self.allocatable = allocatable
        self.clock = clock
        # Per pod: when its volumes were last set up, the metadata the downward API wrote, the mounts.
        self._mounted: dict[str, tuple[float, str, dict[str, str]]] = {}

    async def mounts(self, pod: Mapping[str, Any], uid: str, *, now: datetime.datetime) -> dict[str, str]:
        """The pod's volumes (name to host directory), set up or refreshed when due.

        Between refreshes a sync (woken by the pod's own status write, an exit, a probe) reuses them;
        labels and annotations changing rewrite the downward API files at once."""
        meta = pod.get("metadata") or {}
        fingerprint = repr((meta.get("labels"), meta.get("annotations")))
        last = self._mounted.get(uid)
        at = self.clock.monotonic()
        if last is not None and at - last[0] < REFRESH_SECONDS and last[1] == fingerprint:
            return last[2]
        mounts = await volumes.materialise(self.client, pod, data_dir=self.data_dir, allocatable=self.allocatable,
                                           now=now, run_dir=self.run_dir(uid) if self.run_dir is not None else "")
        self._mounted[uid] = (at, fingerprint, mounts)
        return mounts

    def forget(self, uid: str) -> None:
        self._mounted.pop(uid, None)
