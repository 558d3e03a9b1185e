"""The kubelet API's container logs: reading the log and its time index, selecting, rendering, serving."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import os
import re
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.base import pki as pki_mod
from pocketkube.node import containerio, logrotate, process, runtime
from pocketkube.node import kubeletserver as ks

T0 = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)


def at(seconds: float) -> datetime.datetime:
    return T0 + datetime.timedelta(seconds=seconds)


ENTRIES = [(at(0), b"one\n"), (at(1), b"two\n"), (at(2), b"three\n")]


@pytest.mark.parametrize(("dt", "text"), [
    (T0, "2026-01-02T03:04:05Z"),
    (T0.replace(microsecond=120000), "2026-01-02T03:04:05.12Z"),
    (T0.replace(microsecond=1), "2026-01-02T03:04:05.000001Z"),
])
def test_rfc3339_nano(dt: datetime.datetime, text: str) -> None:
    """Times print as Go's RFC3339Nano: UTC, trailing zeros of the fraction dropped."""
    assert ks.rfc3339_nano(dt) == text


@pytest.mark.parametrize(("opts", "want"), [
    (ks.Options(), [b"one\n", b"two\n", b"three\n"]),
    (ks.Options(tail_lines=1), [b"three\n"]),
    (ks.Options(tail_lines=0), []),
    (ks.Options(tail_lines=10), [b"one\n", b"two\n", b"three\n"]),
    (ks.Options(since=at(1)), [b"two\n", b"three\n"]),
    (ks.Options(since=at(0.5), tail_lines=2), [b"two\n", b"three\n"]),
    (ks.Options(since=at(2), tail_lines=2), [b"three\n"]),
])
def test_select(opts: ks.Options, want: list[bytes]) -> None:
    """tailLines picks the last lines first, then since drops those before it."""
    assert [line for _, line in ks.select(ENTRIES, opts)] == want


def test_render_with_timestamps_and_limit() -> None:
    """timestamps prefixes each line with its time; limitBytes counts the prefixes too."""
    out = ks.render(ENTRIES[:2], timestamps=True)
    assert out == b"2026-01-02T03:04:05Z one\n2026-01-02T03:04:06Z two\n"
    limit = ks.Limit(25)
    assert limit.take(out) == out[:25] and limit.spent
    assert ks.Limit(None).take(out) == out


@pytest.mark.parametrize(("query", "want"), [
    ({}, ks.Options()),
    ({"follow": "true", "tailLines": "3", "timestamps": "1", "previous": "true", "limitBytes": "9"},
     ks.Options(follow=True, tail_lines=3, timestamps=True, previous=True, limit_bytes=9)),
    ({"sinceSeconds": "10"}, ks.Options(since=at(-10))),
    ({"sinceTime": "2026-01-02T03:04:00Z"}, ks.Options(since=at(-5))),
])
def test_parse_options(query: dict[str, str], want: ks.Options) -> None:
    """Query parameters become options; sinceSeconds counts back from now."""
    assert ks.parse_options(query, now=T0) == want


@pytest.mark.parametrize("query", [{"follow": "maybe"}, {"tailLines": "x"}, {"sinceTime": "yesterday"}])
def test_parse_options_rejects_garbage(query: dict[str, str]) -> None:
    """Unparsable parameters are a 400."""
    with pytest.raises(ks.LogError) as e:
        ks.parse_options(query, now=T0)
    assert e.value.code == 400


def _write_run(path: str, lines: list[tuple[datetime.datetime, bytes]]) -> None:
    with open(path, "ab") as f:
        f.write(b"".join(line for _, line in lines))
    with open(process.ts_path(path), "a") as f:
        f.write("".join(clock_mod.rfc3339_micro(t) + "\n" for t, _ in lines))


def test_reader_pairs_lines_with_times_and_holds_back_partial_lines(tmp_path: Any) -> None:
    """Each line gets its indexed time; a partial last line waits until the writer is done."""
    path = str(tmp_path / "0.log")
    _write_run(path, ENTRIES[:2])
    with open(path, "ab") as f:
        f.write(b"par")
    with open(process.ts_path(path), "a") as f:
        f.write(clock_mod.rfc3339_micro(at(5)) + "\n")
    reader = ks.LogReader(path, fallback=at(99))
    assert reader.poll(final=False) == ENTRIES[:2]
    with open(path, "ab") as f:
        f.write(b"tial\nno-index\n")
    assert reader.poll(final=False) == [(at(5), b"partial\n"), (at(5), b"no-index\n")]
    assert reader.poll(final=True) == []


def test_reader_without_index_uses_fallback(tmp_path: Any) -> None:
    """A log with no index (written before timestamps were kept) reads with the fallback time."""
    path = str(tmp_path / "0.log")
    (tmp_path / "0.log").write_bytes(b"a\nb")
    assert ks.LogReader(path, fallback=at(7)).poll(final=True) == [(at(7), b"a\n"), (at(7), b"b")]


async def test_pump_log_indexes_each_line_start(tmp_path: Any) -> None:
    """The runtime's pump copies output unchanged and notes one time per line begun, across chunks."""
    reader = asyncio.StreamReader()
    for chunk in (b"ab", b"c\nde\n", b"f\ng"):
        reader.feed_data(chunk)
    reader.feed_eof()
    path = str(tmp_path / "0.log")
    await process.pump_log(reader, path=path, clock=clock_mod.FakeClock(T0))
    assert open(path, "rb").read() == b"abc\nde\nf\ng"
    assert len(open(process.ts_path(path)).read().splitlines()) == 4


def _status(state: str, reason: str = "") -> runtime.ContainerStatus:
    return runtime.ContainerStatus(name="c", image="x", state=state, reason=reason)


@pytest.mark.parametrize(("runs", "previous", "status", "want"), [
    ([0], False, None, 0),
    ([0, 1, 2], False, None, 2),
    ([0, 1, 2], True, None, 1),
    ([0], True, None, 'previous terminated container "c" in pod "p" not found'),
    ([], False, _status(runtime.WAITING, "ErrImagePull"),
     'container "c" in pod "p" is waiting to start: image can\'t be pulled'),
    ([], False, _status(runtime.WAITING, "CreateContainerConfigError"),
     'container "c" in pod "p" is waiting to start: CreateContainerConfigError'),
    ([], False, None, 'container "c" in pod "p" is waiting to start: ContainerCreating'),
])
def test_choose_run(runs: list[int], previous: bool, status: runtime.ContainerStatus | None, want: Any) -> None:
    """The latest run's log, or the one before for previous; else the kubelet's 400 wording."""
    if isinstance(want, int):
        assert ks.choose_run(runs, previous=previous, container="c", pod="p", status=status) == want
        return
    with pytest.raises(ks.LogError) as e:
        ks.choose_run(runs, previous=previous, container="c", pod="p", status=status)
    assert (e.value.code, e.value.message) == (400, want)


class FakeRuntime:
    """Just what the kubelet server asks of a process runtime."""

    def __init__(self, data_dir: str) -> None:
        self.data_dir = data_dir
        self.writing = False

    def pod_dir(self, uid: str) -> str:
        return os.path.join(self.data_dir, "pods", uid)

    def log_path(self, uid: str, container: str, restart: int) -> str:
        return os.path.join(self.pod_dir(uid), container, f"{restart}.log")

    def pod_status(self, uid: str) -> runtime.PodStatus | None:
        return None

    def writing_log(self, uid: str, container: str) -> bool:
        return self.writing


POD = {"metadata": {"name": "p", "namespace": "default", "uid": "u1"}, "spec": {"containers": [{"name": "c"}]}}


async def _serve(tmp_path: Any, *, tls: bool = False) -> tuple[ks.KubeletServer, FakeRuntime, Any]:
    fake = FakeRuntime(str(tmp_path / "node"))
    pki = pki_mod.ensure_pki(str(tmp_path / "data")) if tls else None
    server = ks.KubeletServer(fake, lambda ns, name: POD if (ns, name) == ("default", "p") else None,  # type: ignore[arg-type]
                              ssl_context=ks.ssl_context(pki) if pki else None, clock=clock_mod.Clock())
    await server.start()
    return server, fake, pki


async def test_server_serves_logs_and_errors(tmp_path: Any) -> None:
    """GET /containerLogs answers the selected lines, 400 for a missing previous run, 404 for unknown pods."""
    server, fake, _ = await _serve(tmp_path)
    os.makedirs(os.path.join(fake.pod_dir("u1"), "c"))
    _write_run(fake.log_path("u1", "c", 0), [(at(0), b"old\n")])
    _write_run(fake.log_path("u1", "c", 1), ENTRIES)
    base = f"http://127.0.0.1:{server.port}/containerLogs/default"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{base}/p/c", params={"tailLines": "2"}) as r:
                assert (r.status, await r.text()) == (200, "two\nthree\n")
            async with s.get(f"{base}/p/c", params={"previous": "true", "timestamps": "true"}) as r:
                assert await r.text() == "2026-01-02T03:04:05Z old\n"
            async with s.get(f"{base}/nope/c") as r:
                assert r.status == 404
            async with s.get(f"{base}/p/zzz") as r:
                assert r.status == 404
    finally:
        await server.close()


async def test_follow_streams_appended_lines_until_writing_stops(tmp_path: Any) -> None:
    """follow sends lines as they are appended and ends once the runtime no longer writes the log."""
    server, fake, _ = await _serve(tmp_path)
    os.makedirs(os.path.join(fake.pod_dir("u1"), "c"))
    path = fake.log_path("u1", "c", 0)
    _write_run(path, ENTRIES[:1])
    fake.writing = True
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{server.port}/containerLogs/default/p/c"
            async with s.get(url, params={"follow": "true"}) as r:
                assert await r.content.readline() == b"one\n"
                _write_run(path, [(at(1), b"two\n")])
                assert await asyncio.wait_for(r.content.readline(), 2) == b"two\n"
                fake.writing = False
                assert await asyncio.wait_for(r.content.read(), 2) == b""
    finally:
        await server.close()


async def test_tls_requires_a_client_cert_from_the_ca(tmp_path: Any) -> None:
    """The kubelet API speaks TLS with a CA-issued cert and turns away clients without one."""
    server, fake, pki = await _serve(tmp_path, tls=True)
    os.makedirs(os.path.join(fake.pod_dir("u1"), "c"))
    _write_run(fake.log_path("u1", "c", 0), ENTRIES[:1])
    url = f"https://127.0.0.1:{server.port}/containerLogs/default/p/c"
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(url, ssl=pki_mod.ssl_client_context(pki)) as r:
                assert await r.text() == "one\n"
            anonymous = ssl.create_default_context(cafile=pki.ca_cert_path)
            with pytest.raises(aiohttp.ClientError):
                async with s.get(url, ssl=anonymous) as r:
                    await r.text()
    finally:
        await server.close()


async def _pumped(path: str) -> tuple[asyncio.StreamReader, asyncio.Task[None]]:
    """A log pump as the runtime runs one, copying what the test feeds it into the log at path."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    output = asyncio.StreamReader()
    task = asyncio.get_running_loop().create_task(logrotate.pump(output, path=path, clock=clock_mod.Clock()))
    while not os.path.exists(path):
        await asyncio.sleep(0.001)
    return output, task


@dataclasses.dataclass
class _Followed:
    """A kubelet server with a pumped container log: the fake runtime, the log's path, the pump and its input, the URL."""

    fake: FakeRuntime
    path: str
    output: asyncio.StreamReader
    pump: asyncio.Task[None]
    url: str


@contextlib.asynccontextmanager
async def _followed_log(tmp_path: Any) -> AsyncIterator[_Followed]:
    """Serve a running container's log fed by a real pump; the pump ends and the server closes afterwards."""
    server, fake, _ = await _serve(tmp_path)
    fake.writing = True
    path = fake.log_path("u1", "c", 0)
    output, pump = await _pumped(path)
    try:
        yield _Followed(fake, path, output, pump, f"http://127.0.0.1:{server.port}/containerLogs/default/p/c")
    finally:
        output.feed_eof()
        await pump
        await server.close()


def _listeners(path: str) -> int:
    """How many listen to the live output of the run whose log is at path."""
    probe = containerio.LIVE.listen(os.path.dirname(path))
    probe.end()
    return probe.output.listeners


async def test_follow_wakes_when_the_pump_writes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A followed log sends each line the pump writes at once (no fallback poll helps here), then ends with the run."""
    monkeypatch.setattr(ks, "FOLLOW_FALLBACK_SECONDS", 60.0)
    async with _followed_log(tmp_path) as log, aiohttp.ClientSession() as s:
        async with s.get(log.url, params={"follow": "true", "timestamps": "true"}) as r:
            for n in range(3):
                await asyncio.sleep(0.15)  # quiet, so the follow waits on the pump's output
                sent = time.monotonic()
                log.output.feed_data(b"line %d\n" % n)
                line = await asyncio.wait_for(r.content.readline(), 5)
                assert time.monotonic() - sent < 0.3
                assert re.fullmatch(rb"\S+Z line %d\n" % n, line), line
            assert _listeners(log.path) == 1
            log.output.feed_data(b"no line end")
            log.output.feed_eof()
            await log.pump
            log.fake.writing = False
            assert (await asyncio.wait_for(r.content.read(), 2)).endswith(b"Z no line end")


def _count_polls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count LogReader.poll calls (the log file reads of follows) in the one-item list returned."""
    polls = [0]
    poll = ks.LogReader.poll

    def counting(self: ks.LogReader, *, final: bool) -> list[ks.Entry]:
        polls[0] += 1
        return poll(self, final=final)

    monkeypatch.setattr(ks.LogReader, "poll", counting)
    return polls


async def test_follow_reads_a_line_written_in_parts_once_whole(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Output without a line end wakes no read; the line end does, at once after a quiet spell."""
    monkeypatch.setattr(ks, "FOLLOW_FALLBACK_SECONDS", 60.0)
    monkeypatch.setattr(ks, "FOLLOW_INTERVAL_SECONDS", 0.5)
    polls = _count_polls(monkeypatch)
    async with _followed_log(tmp_path) as log, aiohttp.ClientSession() as s:
        async with s.get(log.url, params={"follow": "true"}) as r:
            await asyncio.sleep(0.6)  # longer than the read interval since the follow's first reads
            before = polls[0]
            for part in (b"a", b"b", b"c"):
                log.output.feed_data(part)
                await asyncio.sleep(0.01)
            assert polls[0] == before
            sent = time.monotonic()
            log.output.feed_data(b"\n")
            assert await asyncio.wait_for(r.content.readline(), 5) == b"abc\n"
            assert time.monotonic() - sent < 0.3
            assert polls[0] == before + 1


async def test_follow_reads_a_burst_in_few_reads(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Output that keeps coming is read in batches, at most every FOLLOW_INTERVAL_SECONDS, not once per chunk."""
    polls = _count_polls(monkeypatch)
    async with _followed_log(tmp_path) as log, aiohttp.ClientSession() as s:
        async with s.get(log.url, params={"follow": "true"}) as r:
            for n in range(300):
                log.output.feed_data(b"%d\n" % n)
                await asyncio.sleep(0.001)
            got = b""
            while got.count(b"\n") < 300:
                got += await asyncio.wait_for(r.content.read(65536), 5)
            assert got == b"".join(b"%d\n" % n for n in range(300))
    assert polls[0] < 60, polls


async def test_follow_ends_when_the_client_goes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A follow of a quiet log stops, and stops listening to the pump, once its client has gone."""
    monkeypatch.setattr(ks, "FOLLOW_FALLBACK_SECONDS", 0.05)
    async with _followed_log(tmp_path) as log:
        async with aiohttp.ClientSession() as s:
            async with s.get(log.url, params={"follow": "true"}) as r:
                log.output.feed_data(b"hello\n")
                assert await asyncio.wait_for(r.content.readline(), 5) == b"hello\n"
            assert _listeners(log.path) == 1
        deadline = time.monotonic() + 2
        while _listeners(log.path) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert _listeners(log.path) == 0
