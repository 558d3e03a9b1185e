"""The watchdog process beside the runtime that kills every container left when the agent dies, however it dies."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import sys

from pocketkube.node import spawn

log = logging.getLogger("pocketkube.node.process")

# The watchdog beside the runtime: it reads "+pg N"/"-pg N" (process groups) and "+cg F"/"-cg F"
# (cgroup.procs files) from the agent; when its input ends because the agent died, even by SIGKILL, it kills
# every container process left, including the ones a container's main process started.
REAPER = """
import os, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGTERM, signal.SIG_IGN)
groups, files, roots = set(), set(), set()
for line in sys.stdin:
    op, _, arg = line.strip().partition(" ")
    box = {"pg": groups, "cg": files, "rt": roots}.get(op[1:], set())
    value = int(arg) if box is groups else arg
    (box.add if op[:1] == "+" else box.discard)(value)
for attempt in range(50):
    if attempt:
        time.sleep(0.02)
    for pg in groups:
        try:
            os.killpg(pg, signal.SIGKILL)
        except OSError:
            pass
    for f in files:
        try:
            pids = open(f).read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (OSError, ValueError):
                pass
    # The runtime's cgroups go too, once the processes killed above have left them.
    for root in roots:
        for d, subs, _ in os.walk(root, topdown=False):
            for sub in subs:
                try:
                    os.rmdir(os.path.join(d, sub))
                except OSError:
                    pass
        try:
            os.rmdir(root)
        except OSError:
            pass
    if not any(os.path.isdir(r) for r in roots):
        break
"""



class Reaper:
    """The running watchdog: tell it about process groups, cgroup.procs files and cgroup roots as they come and go."""

    def __init__(self) -> None:
        self._proc: spawn.Process | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    async def start(self) -> bool:
        """Start the watchdog (unless it runs); True when a new one started."""
        if self.running:
            return False
        try:
            self._proc = await spawn.start([sys.executable, "-I", "-S", "-c", REAPER], stdin=subprocess.PIPE,
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                           start_new_session=True)
        except OSError as e:
            log.warning("cannot start the container watchdog (%s): processes may outlive a crashed agent", e)
        return True

    def tell(self, *lines: str) -> None:
        """Send lines ("+pg N", "-cg F", ...) in one write: each write wakes the watchdog."""
        r = self._proc
        if r is not None and r.stdin is not None and r.returncode is None and lines:
            with contextlib.suppress(OSError, RuntimeError):
                r.stdin.write("".join(line + "\n" for line in lines).encode())

    async def close(self) -> None:
        """End the watchdog's input: it kills whatever is still registered, then exits."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.stdin is not None:
            proc.stdin.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 5)
