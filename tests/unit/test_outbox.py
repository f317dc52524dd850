"""The outbox: bounded in bytes, written in order by one task, evicting slow consumers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import orjson

from chatserver import wsframe
from chatserver.outbox import (
    BATCH_BYTES,
    DELTA_DELAY,
    EPHEMERAL_DELAY,
    FLUSH_PAUSE_FREE,
    FLUSH_PAUSE_MAX,
    FLUSH_PAUSE_RATIO,
    Flusher,
    Outbox,
)


def payloads(data: bytes) -> list[bytes]:
    """The payloads of the unmasked frames in one socket write."""
    out, i = [], 0
    while i < len(data):
        size, head = data[i + 1] & 0x7F, 2
        if size == 126:
            size, head = int.from_bytes(data[i + 2:i + 4], "big"), 4
        elif size == 127:
            size, head = int.from_bytes(data[i + 2:i + 10], "big"), 10
        out.append(data[i + head:i + head + size])
        i += head + size
    return out


class RecordingSink:
    """A socket double: records frames, writes and the close; can be made to stall like a
    socket whose peer stopped reading (backed up until `stalled` is set)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.writes = 0
        self.closed_with: tuple[int, str] | None = None
        self.stalled = asyncio.Event()
        self.stalled.set()

    def write(self, data: bytes) -> None:
        self.writes += 1
        self.frames.extend(payloads(data))

    def backed_up(self) -> bool:
        return not self.stalled.is_set()

    async def drain(self) -> None:
        await self.stalled.wait()

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def abort(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


def built(payload: bytes) -> bytes:
    return wsframe.text_frame(payload)


async def test_frames_are_written_in_enqueue_order_then_closed() -> None:
    """Frames reach the socket in the order they were queued, then the close follows them."""
    outbox, sink = Outbox(10_000), RecordingSink()
    writer = asyncio.create_task(outbox.run(sink))
    for i in range(300):
        assert outbox.enqueue(b"%d" % i)
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
    assert sink.frames == [b"%d" % i for i in range(300)]
    assert sink.closed_with == (1000, "")
    assert outbox.queued_bytes == 0 and outbox.frames_out == 300


async def test_writer_yields_to_other_tasks_between_batches() -> None:
    """A deep queue left by a backed-up socket is written in batches with a yield between
    them, so other tasks run."""
    outbox, sink = Outbox(10 * BATCH_BYTES), RecordingSink()
    sink.stalled.clear()
    writer = asyncio.create_task(outbox.run(sink))
    await asyncio.sleep(0)
    for _ in range(5 * BATCH_BYTES // 4096):
        outbox.enqueue(b"x" * 4090)
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(len(sink.frames))
            await asyncio.sleep(0)

    tick_task = asyncio.create_task(ticker())
    sink.stalled.set()
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
    tick_task.cancel()
    total = 5 * BATCH_BYTES // 4096
    progress_seen = {t for t in ticks if 0 < t < total}
    assert len(progress_seen) >= 3, "the ticker should have run between batches"
    assert len(sink.frames) == total


async def test_fan_out_is_written_one_loop_step_later_in_one_write_per_socket() -> None:
    """Frames queued for many connections in one loop step go out in a single flusher pass:
    one socket write per connection, however many frames each got, and no writer task is
    woken for a socket that keeps up."""
    flusher = Flusher()
    pairs = [(Outbox(100_000, flusher), RecordingSink()) for _ in range(50)]
    writers = [asyncio.create_task(o.run(s)) for o, s in pairs]
    await asyncio.sleep(0)
    passes = flusher.passes
    for i in range(3):
        frame = built(b"m%d" % i)
        for outbox, _ in pairs:
            assert outbox.enqueue_frame(frame)
    await asyncio.sleep(0)
    assert flusher.passes == passes + 1
    for outbox, sink in pairs:
        assert sink.frames == [b"m0", b"m1", b"m2"] and sink.writes == 1
        assert outbox.queued_bytes == 0
        outbox.close(1000)
    await asyncio.wait_for(asyncio.gather(*writers), 5)


class SlowSink(RecordingSink):
    """A socket whose write costs `cost` seconds of the loop, like a real write to a big room."""

    def __init__(self, cost: float) -> None:
        super().__init__()
        self.cost = cost
        self.written_at: list[float] = []

    def write(self, data: bytes) -> None:
        self.written_at.append(time.monotonic())
        busy_until = time.monotonic() + self.cost
        while time.monotonic() < busy_until:
            pass
        super().write(data)


async def test_an_expensive_pass_is_followed_by_a_pause_that_batches_what_arrives() -> None:
    """After a pass that took `d` seconds, the next waits about
    `(d - FLUSH_PAUSE_FREE) * FLUSH_PAUSE_RATIO` (at most FLUSH_PAUSE_MAX): messages fanned
    out meanwhile share one write per socket."""
    flusher = Flusher()
    pass_cost = 0.008  # ten sockets x 0.8 ms
    pairs = [(Outbox(100_000, flusher), SlowSink(pass_cost / 10)) for _ in range(10)]
    writers = [asyncio.create_task(o.run(s)) for o, s in pairs]
    await asyncio.sleep(0)
    for outbox, _ in pairs:
        outbox.enqueue_frame(built(b"first"))
    await asyncio.sleep(0)  # the first pass: nothing before it, so no pause
    first_done = time.monotonic()
    assert all(sink.frames == [b"first"] for _, sink in pairs)
    for i in range(3):  # three messages while the flusher pauses
        for outbox, _ in pairs:
            outbox.enqueue_frame(built(b"m%d" % i))
        await asyncio.sleep(0)
    assert all(sink.writes == 1 for _, sink in pairs), "the pause holds them"
    await asyncio.wait_for(_until(lambda: all(s.writes == 2 for _, s in pairs)), 5)
    pause = pairs[0][1].written_at[1] - first_done
    expected = min(FLUSH_PAUSE_MAX, (pass_cost - FLUSH_PAUSE_FREE) * FLUSH_PAUSE_RATIO)
    assert expected * 0.8 <= pause < expected + 1.0  # late is the loop's, never early
    for outbox, sink in pairs:
        assert sink.frames == [b"first", b"m0", b"m1", b"m2"]
        outbox.close(1000)
    await asyncio.wait_for(asyncio.gather(*writers), 5)


async def test_a_cheap_pass_leaves_no_pause_to_speak_of() -> None:
    """A quiet server (or a small room) writes every message one loop step after fan-out."""
    flusher = Flusher()
    outbox, sink = Outbox(100_000, flusher), RecordingSink()
    writer = asyncio.create_task(outbox.run(sink))
    await asyncio.sleep(0)
    for i in range(5):
        outbox.enqueue_frame(built(b"m%d" % i))
        steps = 0
        while sink.writes == i:
            await asyncio.sleep(0)
            steps += 1
        assert steps <= 3, "a pass of microseconds must not hold the next one"
    assert sink.frames == [b"m%d" % i for i in range(5)]
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)


async def _until(condition: Callable[[], bool]) -> None:
    while not condition():
        await asyncio.sleep(0.0005)


async def test_overflow_evicts_with_1013_even_when_the_socket_is_stuck() -> None:
    """Past the byte bound the connection is closed with 1013 although the writer was blocked."""
    outbox, sink = Outbox(1000), RecordingSink()
    sink.stalled.clear()  # the peer stopped reading: every send blocks
    writer = asyncio.create_task(outbox.run(sink))
    accepted = [outbox.enqueue(b"y" * 100) for _ in range(20)]
    assert accepted.count(False) >= 1
    assert outbox.evicted and outbox.queued_bytes == 0
    await asyncio.wait_for(writer, 5)
    assert sink.closed_with is not None and sink.closed_with[0] == 1013
    assert not outbox.enqueue(b"late"), "nothing is queued after eviction"


async def test_close_without_flush_drops_queued_frames() -> None:
    """A revocation close (flush=False) drops what was queued instead of delivering it."""
    outbox, sink = Outbox(10_000), RecordingSink()
    sink.stalled.clear()
    writer = asyncio.create_task(outbox.run(sink))
    for _ in range(10):
        outbox.enqueue(b"z")
    await asyncio.sleep(0)
    outbox.close(1008, "logged out", flush=False)
    sink.stalled.set()
    await asyncio.wait_for(writer, 5)
    assert len(sink.frames) <= 1
    assert sink.closed_with == (1008, "logged out")


async def test_wait_below_paces_a_backlog_to_the_socket() -> None:
    """wait_below returns once the writer has drained the queue under the threshold."""
    outbox, sink = Outbox(100_000), RecordingSink()
    for _ in range(500):
        outbox.enqueue(b"w" * 100)
    writer = asyncio.create_task(outbox.run(sink))
    await asyncio.wait_for(outbox.wait_below(1000), 5)
    assert outbox.queued_bytes <= 1000
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)


def _delta(text: str, stream: str = "s1") -> bytes:
    return built(orjson.dumps({"op": "stream_delta", "room": "r", "stream": stream,
                               "text": text}))


async def test_queued_typing_and_presence_are_superseded_not_repeated() -> None:
    """A typing or presence frame still queued is replaced by the next one with its key."""
    outbox, sink = Outbox(10_000), RecordingSink()
    outbox.enqueue_ephemeral(built(b'{"status":"online"}'), "p:bob")
    outbox.enqueue_ephemeral(built(b'{"typing":1}'), "t:r:bob")
    outbox.enqueue_ephemeral(built(b'{"status":"offline"}'), "p:bob")
    outbox.enqueue_ephemeral(built(b'{"typing":1}'), "t:r:bob")
    writer = asyncio.create_task(outbox.run(sink))
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
    assert sink.frames == [b'{"status":"offline"}', b'{"typing":1}']
    assert outbox.superseded == 2


async def test_past_shed_above_ephemeral_frames_are_dropped_but_messages_kept() -> None:
    """Under pressure typing/presence frames are shed while chat messages are still queued."""
    outbox, sink = Outbox(10_000), RecordingSink()
    sink.stalled.clear()
    writer = asyncio.create_task(outbox.run(sink))
    while outbox.queued_bytes <= outbox.shed_above:
        assert outbox.enqueue(b"m" * 500)
    assert not outbox.enqueue_ephemeral(built(b'{"typing":1}'), "t:r:bob")
    assert outbox.shed == 1
    assert outbox.enqueue(b"still a message")
    sink.stalled.set()
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
    assert sink.frames[-1] == b"still a message" and b'{"typing":1}' not in sink.frames


async def test_a_slow_readers_deltas_are_joined_in_order_and_complete() -> None:
    """Past coalesce_above, deltas of one stream join the unsent one: fewer frames, the same
    text in the same order, other streams kept apart."""
    outbox, sink = Outbox(100_000), RecordingSink()
    sink.stalled.clear()
    writer = asyncio.create_task(outbox.run(sink))
    await asyncio.sleep(0)
    outbox.enqueue(b"x" * (outbox.coalesce_above + 1))  # the reader is behind
    for i in range(50):
        outbox.enqueue_delta(_delta(f"{i},"), "d:s1")
        outbox.enqueue_delta(_delta(f"<{i}>", "s2"), "d:s2")
    assert outbox.coalesced >= 96
    sink.stalled.set()
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
    deltas = [orjson.loads(f) for f in sink.frames[1:]]
    assert len(deltas) <= 4
    text = {s: "".join(d["text"] for d in deltas if d["stream"] == s) for s in ("s1", "s2")}
    assert text["s1"] == "".join(f"{i}," for i in range(50))
    assert text["s2"] == "".join(f"<{i}>" for i in range(50))


async def test_a_keeping_up_reader_gets_every_delta_as_sent() -> None:
    """Below coalesce_above nothing is joined: a fast reader sees each delta frame."""
    outbox, sink = Outbox(100_000), RecordingSink()
    for i in range(5):
        outbox.enqueue_delta(_delta(str(i)), "d:s1")
    writer = asyncio.create_task(outbox.run(sink))
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
    assert [orjson.loads(f)["text"] for f in sink.frames] == ["0", "1", "2", "3", "4"]
    assert outbox.coalesced == 0


async def test_typing_and_presence_alone_wait_to_share_a_write() -> None:
    """Frames that are only typing/presence go out EPHEMERAL_DELAY later, all in one write;
    a chat message queued behind them takes them along at the next loop step."""
    outbox, sink = Outbox(100_000), RecordingSink()
    writer = asyncio.create_task(outbox.run(sink))
    await asyncio.sleep(0)
    for user in range(20):
        outbox.enqueue_ephemeral(built(b'{"presence":%d}' % user), f"p:{user}")
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sink.frames == [], "presence alone must not be written at once"
    await asyncio.sleep(EPHEMERAL_DELAY * 2)
    assert len(sink.frames) == 20 and sink.writes == 1
    outbox.enqueue_ephemeral(built(b'{"typing":1}'), "t:r:bob")
    outbox.enqueue(b'{"op":"message"}')
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert sink.frames[-2:] == [b'{"typing":1}', b'{"op":"message"}'] and sink.writes == 2
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)


async def test_stream_deltas_share_a_write_within_delta_delay() -> None:
    """Deltas arriving within DELTA_DELAY leave in one write, each still its own frame."""
    outbox, sink = Outbox(100_000), RecordingSink()
    writer = asyncio.create_task(outbox.run(sink))
    await asyncio.sleep(0)
    for i in range(3):
        outbox.enqueue_delta(_delta(str(i)), "d:s1")
    await asyncio.sleep(0)
    assert sink.frames == []
    await asyncio.sleep(DELTA_DELAY * 4)
    assert [orjson.loads(f)["text"] for f in sink.frames] == ["0", "1", "2"]
    assert sink.writes == 1 and outbox.coalesced == 0
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
