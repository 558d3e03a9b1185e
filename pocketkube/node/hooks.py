"""Container lifecycle hooks (postStart, preStop) run as the kubelet runs them: exec, httpGet, sleep."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from pocketkube.base import clock as clock_mod
from pocketkube.node import probes, runtime

USER_AGENT = "kube-lifecycle/1.32"
POST_START, PRE_STOP = "postStart", "preStop"
# The kubelet gives exec and HTTP hooks no deadline of their own; a preStop is bounded by the grace period.
NO_DEADLINE = 24 * 3600.0
# However long a preStop took, a container gets this long between SIGTERM and SIGKILL.
MIN_GRACE_SECONDS = 2
FAILED_POST_START = "FailedPostStartHook"
FAILED_PRE_STOP = "FailedPreStopHook"
POST_START_ERROR = "PostStartHookError"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """How a hook ran: ok, or the kubelet's message saying why it failed."""

    ok: bool
    message: str = ""


def handler(container: Mapping[str, Any], hook: str) -> Mapping[str, Any] | None:
    """The container's lifecycle handler for hook (postStart or preStop), or None when it has none."""
    lifecycle = container.get("lifecycle")
    if not isinstance(lifecycle, Mapping):
        return None
    h = lifecycle.get(hook)
    return h if isinstance(h, Mapping) else None


def _go_handler(h: Mapping[str, Any]) -> str:
    # How Go prints the *LifecycleHandler in "invalid handler" errors; tcpSocket is the case that reaches it.
    def port(p: Any) -> str:
        return f"{{0 {p} }}" if isinstance(p, int) else f"{{1 0 {p}}}"

    tcp = h.get("tcpSocket")
    tcp_text = f"&TCPSocketAction{{Port:{port(tcp.get('port'))},Host:{tcp.get('host') or ''},}}" \
        if isinstance(tcp, Mapping) else "nil"
    return f"&LifecycleHandler{{Exec:nil,HTTPGet:nil,TCPSocket:{tcp_text},Sleep:nil,}}"


async def run(pod: Mapping[str, Any], container: Mapping[str, Any], h: Mapping[str, Any], target: probes.Target, *,
              clock: clock_mod.Clock, timeout: float | None = None) -> Outcome:
    """Run one lifecycle handler against a running container; errors worded as kubelet 1.32 words them.

    An exec hook runs in the container's mount namespace with its env; httpGet goes to the pod IP unless a
    host is given and succeeds on any HTTP response; sleep waits (cancel the task to cut it short).
    tcpSocket is accepted by the API for compatibility but, as in Kubernetes, fails when run."""
    name = str(container.get("name") or "")
    where = f"for Container {_q(name)} in Pod {_q(runtime.pod_ref(pod))}"
    limit = timeout if timeout is not None else NO_DEADLINE
    if isinstance(h.get("exec"), Mapping):
        command = [str(a) for a in h["exec"].get("command") or []]
        out = await probes.exec_probe(command, target, timeout=limit)
        if out.ok:
            return Outcome(True)
        code = getattr(out, "exit_code", None)
        if out.message.startswith("OCI runtime exec failed") or out.message.endswith("timed out"):
            error, output = out.message.strip(), ""
        else:
            status = f"exited with {code}" if isinstance(code, int) else "exited with a non-zero code"
            error, output = f"command '{' '.join(command)}' {status}: ", out.message
        return Outcome(False, f"Exec lifecycle hook ({_go_list(command)}) {where} failed - error: {error}, "
                              f"message: {_q(output)}")
    if isinstance(h.get("httpGet"), Mapping):
        g = h["httpGet"]
        path = str(g.get("path") or "")
        port = probes.resolve_port(container, g.get("port"))
        if port is None:
            error = f"couldn't find port: {g.get('port')} in the container's ports"
        else:
            headers = [{"name": "User-Agent", "value": USER_AGENT}, *(g.get("httpHeaders") or [])]
            out = await probes.http_probe(str(g.get("host") or target.host), port, path=path or "/",
                                          scheme=str(g.get("scheme") or "HTTP"), headers=headers, timeout=limit)
            # Any HTTP response counts: only failing to get one fails a lifecycle hook.
            if out.ok or out.message.startswith("HTTP probe failed with statuscode"):
                return Outcome(True)
            error = out.message
        return Outcome(False, f"HTTP lifecycle hook ({path}) {where} failed - error: {error}")
    if isinstance(h.get("sleep"), Mapping):
        seconds = h["sleep"].get("seconds")
        if isinstance(seconds, int) and not isinstance(seconds, bool) and seconds > 0:
            await clock.sleep(min(float(seconds), limit))
        return Outcome(True)
    return Outcome(False, f"Cannot run handler: invalid handler: {_go_handler(h)}")


def grace_left(grace: int, spent: float) -> int:
    """The grace period left for SIGTERM after a preStop took `spent` seconds (whole seconds, at least 2)."""
    return max(MIN_GRACE_SECONDS, grace - int(spent))


def _q(text: str) -> str:
    """Go's %q for the plain strings that appear in hook messages."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t") + '"'


def _go_list(items: list[str]) -> str:
    return "[" + " ".join(items) + "]"
