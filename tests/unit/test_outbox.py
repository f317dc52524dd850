"""The outbox: bounded in bytes, written in order by one task, evicting slow consumers."""

from __future__ import annotations

import asyncio

from chatserver.outbox import BATCH_FRAMES, Outbox


class RecordingSink:
    """A socket double: records frames and the close; can be made to stall like a full socket."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.closed_with: tuple[int, str] | None = None
        self.stalled = asyncio.Event()
        self.stalled.set()

    async def send(self, frame: bytes) -> None:
        await self.stalled.wait()
        self.frames.append(frame)

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)

    def abort(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)


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
    """A deep queue is flushed in batches with a yield between them, so other tasks run."""
    outbox, sink = Outbox(1_000_000), RecordingSink()
    ticks: list[int] = []

    async def ticker() -> None:
        while True:
            ticks.append(len(sink.frames))
            await asyncio.sleep(0)

    for _ in range(BATCH_FRAMES * 5):
        outbox.enqueue(b"x")
    tick_task = asyncio.create_task(ticker())
    writer = asyncio.create_task(outbox.run(sink))
    outbox.close(1000)
    await asyncio.wait_for(writer, 5)
    tick_task.cancel()
    progress_seen = {t for t in ticks if 0 < t < BATCH_FRAMES * 5}
    assert len(progress_seen) >= 3, "the ticker should have run between batches"


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
