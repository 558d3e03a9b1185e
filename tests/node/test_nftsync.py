"""The shared nftables applier: apply only changed scripts, remove the table, and the debounce/retry loop."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.client import informer, rest
from pocketkube.node import nftsync

log = logging.getLogger("tests.nftsync")


class FakeInformer:
    """Just enough of an Informer for the loop: handlers, a run that idles and an immediate sync."""

    def __init__(self) -> None:
        self.gvr = rest.GVR("", "v1", "pods")
        self.handlers: list[Any] = []

    def add_handler(self, handler: Any) -> None:
        self.handlers.append(handler)

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def wait_synced(self) -> None:
        return None

    def fire(self) -> None:
        for h in self.handlers:
            h("ADDED", None, {})


def applier(sync: Any = None, *, clock: clock_mod.Clock | None = None,
            infs: list[FakeInformer] | None = None) -> nftsync.Applier:
    async def nothing() -> None:
        return None

    return nftsync.Applier(cast(list[informer.Informer], infs or []), table="pk_t", name="test", log=log,
                           sync=sync or nothing, clock=clock or clock_mod.FakeClock(), debounce=0.05, retry=1.0)


def recorder(ran: list[str], *, err: str = "") -> nftsync.Nft:
    async def nft(script: str) -> str:
        ran.append(script)
        return err

    return nft


def test_apply_runs_only_changed_scripts_and_remove_cleans_up() -> None:
    """A script equal to the applied one is skipped; remove deletes the table once."""
    ran: list[str] = []
    a = applier()

    async def go() -> None:
        await a.apply("one\n", nft=recorder(ran))
        await a.apply("one\n", nft=recorder(ran))
        await a.apply("two\n", nft=recorder(ran))
        await a.remove(nft=recorder(ran))
        await a.remove(nft=recorder(ran))

    asyncio.run(go())
    assert ran == ["one\n", "two\n", "table ip pk_t\ndelete table ip pk_t\n"]
    assert a.applied == ""


def test_apply_failure_raises_and_keeps_the_old_script() -> None:
    """nft's error output becomes the exception and the script is not remembered as applied."""
    ran: list[str] = []
    a = applier()
    with pytest.raises(RuntimeError, match="nft -f failed: boom"):
        asyncio.run(a.apply("one\n", nft=recorder(ran, err="boom")))
    assert a.applied == ""


def test_run_debounces_and_retries_a_failed_round() -> None:
    """A burst of changes gives one sync after the debounce; a failing sync is retried after the retry delay."""
    clock = clock_mod.FakeClock()
    inf = FakeInformer()
    calls: list[float] = []

    async def sync() -> None:
        calls.append(clock.monotonic())
        if len(calls) == 1:
            raise RuntimeError("first round fails")

    a = applier(sync, clock=clock, infs=[inf])

    async def step() -> None:
        for _ in range(5):
            await asyncio.sleep(0)

    async def go() -> None:
        task = asyncio.get_running_loop().create_task(a.run(task_prefix="t", problem="no nft", warning="off: %s"))
        await step()
        inf.fire()
        inf.fire()
        await step()
        assert calls == []
        clock.advance(0.05)
        await step()
        assert calls == [1000.05]
        clock.advance(1.0)  # the retry delay, then the debounce again
        await step()
        clock.advance(0.05)
        await step()
        assert len(calls) == 2
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(go())
