"""Specification of attach's live output: the fan-out from the log pump to attach sessions, and the kubelet's attach."""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import pytest

from pocketkube.base import clock as clock_mod
from pocketkube.node import containerio, logrotate, remotecommand, streaming
from tests.node.test_process import Harness, pod


class Recorder:
    """An attach client: what it is sent, on which channel, and when; `stall` makes it stop reading."""

    def __init__(self, *, stdin: bool = False, tty: bool = False, stall: bool = False, stderr: bool = False) -> None:
        self.got: list[tuple[int, bytes, float]] = []
        self.arrived = asyncio.Event()
        self.stall = stall
        opts = remotecommand.Options(stdin=stdin, stdout=True, stderr=stderr, tty=tty)
        self.session = remotecommand.Session(opts, self.send, protocol=remotecommand.V5)

    async def send(self, channel: int, data: bytes) -> None:
        if self.stall:
            await asyncio.Event().wait()  # a client whose socket never drains
        self.got.append((channel, data, time.monotonic()))
        self.arrived.set()

    def output(self, channel: int = remotecommand.STDOUT) -> bytes:
        return b"".join(d for c, d, _ in self.got if c == channel)

    async def until(self, marker: bytes, timeout: float = 5.0) -> float:
        """Wait until the output holds marker; when the piece that completed it arrived."""
        async def wait() -> float:
            while marker not in self.output():
                self.arrived.clear()
                await self.arrived.wait()
            return self.got[-1][2]
        return await asyncio.wait_for(wait(), timeout)


@pytest.fixture
async def h(tmp_path):
    harness = Harness(tmp_path)
    yield harness
    await harness.rt.close()


def handlers(h: Harness) -> streaming.Handlers:
    return streaming.Handlers(h.rt, lambda ns, name: None, clock=clock_mod.Clock())


def attach(h: Harness, client: Recorder) -> asyncio.Task[None]:
    pid = h.rt.pid("u1", "main")
    assert pid is not None
    return asyncio.get_running_loop().create_task(handlers(h)._attach(client.session, "u1", "main", pid))


OUT, ERR = containerio.STDOUT, containerio.STDERR

# --- the fan-out, pure


@pytest.mark.parametrize(("chunks", "limit", "want", "dropped"), [
    ([b"ab", b"cd"], 10, b"abcd", 0),
    ([b"aaaa", b"bbbb", b"cccc"], 8, b"bbbbcccc", 4),
    ([b"aaaa", b"bbbb", b"cccc"], 3, b"cccc", 8),
    ([b"a" * 20], 8, b"a" * 20, 0),
])
async def test_listener_backlog_drops_oldest_past_its_limit(chunks: list[bytes], limit: int, want: bytes,
                                                             dropped: int) -> None:
    """A listener that falls behind keeps its newest output (at least one chunk) within its limit."""
    out = containerio.Outputs().publisher("/c")
    listener = out.listen(limit=limit)
    for c in chunks:
        out.publish(c)
    assert await listener.take() == want
    assert listener.dropped == dropped


async def test_output_is_not_replayed_and_ends_with_the_pump() -> None:
    """A listener gets only what is published after it listens, then what is queued, then the end."""
    outputs = containerio.Outputs()
    out = outputs.publisher("/c")
    out.publish(b"before")
    listener = outputs.listen("/c")
    out.publish(b"after")
    out.close()
    assert [await listener.take(), await listener.take()] == [b"after", b""]
    assert len(outputs) == 0


async def test_an_attach_before_the_pump_gets_the_runs_output() -> None:
    """A listener that comes before the run's pump listens to the Output the pump then takes."""
    outputs = containerio.Outputs()
    listener = outputs.listen("/pods/u/main")
    out = outputs.publisher("/pods/u/main/")
    out.publish(b"x")
    assert await listener.take() == b"x"


async def test_a_new_runs_pump_replaces_a_draining_one() -> None:
    """A restarted container's pump gets a new Output; the old run's end does not end the new run's listeners."""
    outputs = containerio.Outputs()
    old = outputs.publisher("/c")
    old_listener = outputs.listen("/c")
    new = outputs.publisher("/c")
    new_listener = outputs.listen("/c")
    old.close()
    new.publish(b"new")
    assert await old_listener.take() == b""
    assert await new_listener.take() == b"new"
    assert len(outputs) == 1


async def test_an_unpublished_output_is_forgotten_with_its_last_listener() -> None:
    """A listener that gives up before any pump came leaves nothing behind."""
    outputs = containerio.Outputs()
    listener = outputs.listen("/c")
    listener.end()
    assert len(outputs) == 0 and await listener.take() == b""


async def test_listener_keeps_each_streams_output_in_order() -> None:
    """Parts come in the order written, a stream's consecutive output as one part; take() joins every stream."""
    out = containerio.Outputs().publisher("/c")
    listener, joined = out.listen(), out.listen()
    for data, stream in [(b"a", OUT), (b"b", OUT), (b"!", ERR), (b"c", OUT)]:
        out.publish(data, stream)
    assert await listener.take_parts() == [(OUT, b"ab"), (ERR, b"!"), (OUT, b"c")]
    assert await joined.take() == b"ab!c"
    out.close()
    assert await listener.take_parts() == []


@pytest.mark.parametrize(("opts", "want"), [
    (remotecommand.Options(stdout=True, stderr=True), {OUT: remotecommand.STDOUT, ERR: remotecommand.STDERR}),
    (remotecommand.Options(stdout=True, tty=True), {OUT: remotecommand.STDOUT}),  # attach -t: no stderr asked
    (remotecommand.Options(stderr=True), {ERR: remotecommand.STDERR}),
    (remotecommand.Options(stdin=True), {}),
])
def test_each_stream_goes_to_its_own_channel(opts: remotecommand.Options, want: dict[str, int]) -> None:
    """An attach sends stdout and stderr on their own channels, and drops a stream the session did not ask for."""
    assert streaming.channels_for(opts) == want


@pytest.mark.parametrize(("parts", "more", "want"), [
    ([], [(OUT, b"a")], [(OUT, b"a")]),
    ([(OUT, b"a")], [], [(OUT, b"a")]),
    ([(ERR, b"e"), (OUT, b"a")], [(OUT, b"b"), (ERR, b"f")], [(ERR, b"e"), (OUT, b"ab"), (ERR, b"f")]),
    ([(OUT, b"a")], [(ERR, b"e")], [(OUT, b"a"), (ERR, b"e")]),
])
def test_join_parts(parts: list[containerio.Part], more: list[containerio.Part],
                    want: list[containerio.Part]) -> None:
    """A batch's parts join the ones before it, one stream's output at the seam becoming one part."""
    assert streaming.join_parts(parts, more) == want


async def test_wakeup_is_done_once_output_or_the_end_comes() -> None:
    """wakeup() is done at once with output queued, else on the next output or the end; listeners are counted."""
    out = containerio.Outputs().publisher("/c")
    listener = out.listen(limit=0)
    assert out.listeners == 1
    waiting = listener.wakeup()
    assert not waiting.done()
    out.publish(b"a")
    out.publish(b"b")
    assert waiting.done() and listener.wakeup().done()
    assert (listener.take_nowait(), listener.dropped) == (b"b", 1)
    waiting = listener.wakeup()
    out.close()
    assert waiting.done() and listener.wakeup().done() and out.listeners == 0


async def test_pump_publishes_what_it_logs(tmp_path: Any) -> None:
    """The log pump copies each chunk to the listeners as well as to the log."""
    outputs = containerio.Outputs()
    path = str(tmp_path / "main" / "0.log")
    os.makedirs(os.path.dirname(path))
    reader = asyncio.StreamReader()
    listener = outputs.listen(os.path.dirname(path))
    pumping = asyncio.get_running_loop().create_task(
        logrotate.pump(reader, path=path, clock=clock_mod.FakeClock(), live=outputs))
    reader.feed_data(b"/ # ")
    assert await asyncio.wait_for(listener.take(), 5) == b"/ # "
    reader.feed_data(b"ls\n")
    reader.feed_eof()
    await asyncio.wait_for(pumping, 5)
    assert [await listener.take(), await listener.take()] == [b"ls\n", b""]
    assert open(path, "rb").read() == b"/ # ls\n"


# --- the kubelet's attach on real containers


async def test_attach_relays_output_as_it_is_written(h: Harness) -> None:
    """Each write reaches the attach client at once, a prompt without a line end included, not what came before."""
    script = "echo before; read go; printf 'prompt> '; read l; echo \"got $l\"; sleep 0.3; echo bye"
    await h.rt.sync_pod(pod(command=["sh", "-c", script], stdin=True))
    stdio = h.rt.stdio("u1", "main")
    log = h.rt.log_path("u1", "main", 0)
    while not os.path.exists(log) or "before" not in open(log).read():
        await asyncio.sleep(0.01)
    client = Recorder(stdin=True)
    attached = attach(h, client)
    await asyncio.sleep(0.05)
    assert stdio is not None
    sent = time.monotonic()
    await stdio.write(b"\n")
    assert await client.until(b"prompt> ") - sent < 0.3
    client.session.feed(remotecommand.STDIN, b"hello\n")
    await client.until(b"got hello\n")
    await asyncio.wait_for(attached, 5)
    assert client.output() == b"prompt> got hello\nbye\n"
    assert client.got[-1][:2] == (remotecommand.ERROR, b'{"metadata":{},"status":"Success"}')


async def test_attach_sends_stderr_on_its_own_channel(h: Harness) -> None:
    """Without a tty, what the container writes to stderr reaches the stderr channel, stdout the stdout one,
    and the log holds both; a session without stderr (attach -t to a container without a tty) gets no stderr."""
    script = "read go; echo out; echo err >&2; sleep 0.1; echo out2; echo err2 >&2"
    await h.rt.sync_pod(pod(command=["sh", "-c", script], stdin=True))
    client, quiet = Recorder(stderr=True), Recorder(tty=True)
    attached = [attach(h, client), attach(h, quiet)]
    await asyncio.sleep(0.05)
    stdio = h.rt.stdio("u1", "main")
    assert stdio is not None
    await stdio.write(b"\n")
    await asyncio.wait_for(asyncio.gather(*attached), 5)
    assert (client.output(), client.output(remotecommand.STDERR)) == (b"out\nout2\n", b"err\nerr2\n")
    assert (quiet.output(), quiet.output(remotecommand.STDERR)) == (b"out\nout2\n", b"")
    log = h.rt.log_path("u1", "main", 0)
    assert sorted(open(log, "rb").read().splitlines()) == [b"err", b"err2", b"out", b"out2"]
    tags = [line.split()[1] for line in open(logrotate.ts_path(log)).read().splitlines()]
    assert sorted(tags) == [ERR, ERR, OUT, OUT]


async def test_attach_to_a_terminal_echoes_keystrokes(h: Harness) -> None:
    """With a tty the terminal's echo of each keystroke comes back at once, before any line end."""
    await h.rt.sync_pod(pod(command=["sh", "-c", "read l; echo \"<$l>\""], stdin=True, tty=True))
    client = Recorder(stdin=True, tty=True)
    attached = attach(h, client)
    await asyncio.sleep(0.05)
    for key in b"hi":
        sent = time.monotonic()
        client.session.feed(remotecommand.STDIN, bytes([key]))
        assert await client.until(bytes([key])) - sent < 0.3
    client.session.feed(remotecommand.STDIN, b"\r")
    await asyncio.wait_for(attached, 5)
    assert client.output().replace(b"\r\n", b"\n") == b"hi\n<hi>\n"


async def test_stalled_attach_client_does_not_block_the_container(h: Harness) -> None:
    """A client that stops reading never holds up the container or its log: its backlog drops the oldest output."""
    before = len(containerio.LIVE)
    script = "read go; head -c 8388608 /dev/zero; echo done"
    await h.rt.sync_pod(pod(command=["sh", "-c", script], stdin=True))
    client = Recorder(stall=True)
    attached = attach(h, client)
    await asyncio.sleep(0.05)
    stdio = h.rt.stdio("u1", "main")
    assert stdio is not None
    await stdio.write(b"\n")
    await h.exit(timeout=10)
    assert h.rt.pod_status("u1").containers["main"].termination.exit_code == 0
    assert os.path.getsize(h.rt.log_path("u1", "main", 0)) == 8388608 + 5
    assert not attached.done()  # still stuck in its first send, holding at most its backlog
    attached.cancel()
    await asyncio.gather(attached, return_exceptions=True)
    assert len(containerio.LIVE) == before


async def test_attach_after_the_output_ended_returns(h: Harness) -> None:
    """An attach that comes once the run's output has ended (no pump left to end it) returns as the run is over."""
    before = len(containerio.LIVE)
    await h.rt.sync_pod(pod(command=["true"]))
    pid = h.rt.pid("u1", "main")
    assert pid is not None
    await h.exit()
    client = Recorder()
    await asyncio.wait_for(handlers(h)._attach(client.session, "u1", "main", pid), 5)
    assert client.output() == b""
    assert len(containerio.LIVE) == before


async def test_a_burst_of_writes_goes_in_few_messages(h: Harness) -> None:
    """Output that keeps coming is sent in batches (one message per BATCH_SECONDS at most), complete and in order."""
    await h.rt.sync_pod(pod(command=["sh", "-c", "read go; for i in $(seq 500); do echo line $i; done"], stdin=True))
    client = Recorder()
    attached = attach(h, client)
    await asyncio.sleep(0.05)
    stdio = h.rt.stdio("u1", "main")
    assert stdio is not None
    await stdio.write(b"\n")
    await asyncio.wait_for(attached, 10)
    assert client.output() == b"".join(b"line %d\n" % i for i in range(1, 501))
    messages = [t for c, _, t in client.got if c == remotecommand.STDOUT]
    assert len(messages) < 100
    assert all(b - a >= streaming.BATCH_SECONDS * 0.9 for a, b in zip(messages, messages[1:], strict=False))
