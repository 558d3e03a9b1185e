"""Taking over the pods a previous agent ran on this node: restart counts from the logs, last states from the API."""

from __future__ import annotations

import asyncio
import datetime
import os
import re
from collections.abc import Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.node import runtime


def past_attempts(container_dir: str) -> int:
    """How many runs of a container have a log on disk (its next attempt number), rotated files included."""
    try:
        names = os.listdir(container_dir)
    except FileNotFoundError:
        return 0
    runs = [int(m.group(1)) for n in names if (m := re.fullmatch(r"(\d+)\.log(\..*)?", n))]
    return max(runs) + 1 if runs else 0


async def adopt(pod: Mapping[str, Any], ps: runtime.PodStatus, *, pod_dir: str, now: datetime.datetime,
                result: runtime.SyncResult) -> None:
    """Take over a pod an earlier agent ran here: its containers died with that agent, so, as the kubelet
    does after its restart, make a new sandbox and run them again, counting the restarts from the logs."""
    status = pod.get("status") or {}
    spec = pod.get("spec") or {}
    adopted = False
    for key, field, statuses in (("initContainerStatuses", "initContainers", ps.init_containers),
                                 ("containerStatuses", "containers", ps.containers)):
        specs = {str(c.get("name") or ""): c for c in spec.get(field) or []}
        for s in status.get(key) or []:
            name = str(s.get("name") or "")
            c = specs.get(name)
            ran = await asyncio.to_thread(past_attempts, os.path.join(pod_dir, name))
            if c is None or not (s.get("containerID") or ran):
                continue
            adopted = True
            image = str(c.get("image") or "")
            count = max(int(s.get("restartCount") or 0), ran - 1)
            cs = runtime.ContainerStatus(name=name, image=runtime.normalize_image(image),
                                         image_id=runtime.image_id(image), restart_count=count,
                                         container_id=str(s.get("containerID") or runtime.container_id(
                                             ps.uid, name, count)))
            state, last = s.get("state") or {}, (s.get("lastState") or {}).get("terminated")
            ended = _termination(state.get("terminated"))
            if ended is not None and field == "containers":
                cs.state, cs.termination = runtime.TERMINATED, ended  # the restart policy decides
                cs.last_termination = _termination(last)
            else:
                if "running" in state:
                    started = _time(state["running"].get("startedAt"))
                    # It was killed with the agent that ran it.
                    ended = runtime.Termination(exit_code=137, reason="Error", finished_at=now,
                                                started_at=started, container_id=cs.container_id)
                cs.last_termination = ended or _termination(last)
                cs.state, cs.backoff_until = runtime.WAITING, now
            statuses[name] = cs
    if adopted:
        result.events.append(runtime.Event(runtime.NORMAL, "SandboxChanged",
                                           "Pod sandbox changed, it will be killed and re-created."))


def _time(raw: Any) -> datetime.datetime | None:
    try:
        return clock_mod.parse_time(str(raw)) if raw else None
    except ValueError:
        return None


def _termination(t: Any) -> runtime.Termination | None:
    """A reported v1.ContainerStateTerminated as the runtime's Termination (None if absent or unreadable)."""
    if not isinstance(t, Mapping):
        return None
    finished = _time(t.get("finishedAt"))
    if finished is None:
        return None
    return runtime.Termination(exit_code=int(t.get("exitCode") or 0), reason=str(t.get("reason") or ""),
                               finished_at=finished, started_at=_time(t.get("startedAt")),
                               container_id=str(t.get("containerID") or ""), message=str(t.get("message") or ""))
