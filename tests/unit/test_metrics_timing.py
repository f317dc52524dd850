"""The metrics' own bookkeeping: plain-counter histograms, and delivery latency timed per
message by the flusher's passes (never per recipient)."""

from __future__ import annotations

import asyncio
import time

from chatserver.metrics import DELIVERY_BUCKETS, Buckets, DeliveryLatency
from chatserver.outbox import FLUSH_PASS_OUTBOXES, Flusher, Outbox
from tests.unit.test_outbox import RecordingSink, built


def test_buckets_export_cumulative_counts_and_the_sum() -> None:
    """A value equal to a bound counts in that bound's bucket (Prometheus `le`), values past
    the last bound only in +Inf, and the sum is exact."""
    buckets = Buckets((1, 2, 5))
    for v in (0.5, 1.0, 1.5, 5.0, 7.0):
        buckets.observe(v)
    buckets.observe_since([10.0, 9.0], 11.0)  # 1.0 and 2.0
    assert buckets.cumulative() == [("1.0", 3), ("2.0", 5), ("5.0", 6), ("+Inf", 7)]
    assert buckets.count == 7 and buckets.sum == 18.0


async def _fan_out(outboxes: list[Outbox], flusher: Flusher, received: float) -> None:
    frame = built(b"m")
    for outbox in outboxes:
        outbox.enqueue_frame(frame)
    flusher.track(received, False)


async def test_a_message_is_timed_once_at_its_first_and_once_at_its_last_copy() -> None:
    """A message to more sockets than one flusher pass writes is observed twice in all: its
    first copy when the first pass begins, its last when the pass that empties the queue
    ends; the first is no later than the last."""
    flusher = Flusher()
    latency = flusher.latency = DeliveryLatency()
    members = 2 * FLUSH_PASS_OUTBOXES + 10
    pairs = [(Outbox(100_000, flusher), RecordingSink()) for _ in range(members)]
    writers = [asyncio.create_task(o.run(s)) for o, s in pairs]
    await asyncio.sleep(0)
    passes = flusher.passes
    received = time.monotonic()
    await _fan_out([o for o, _ in pairs], flusher, received)
    await asyncio.sleep(0)  # the first pass: first copies out, the queue not empty yet
    assert flusher.passes == passes + 1
    assert latency.first_local.count == 1 and latency.last_local.count == 0
    for _ in range(3):
        await asyncio.sleep(0)
    assert flusher.passes == passes + 3
    assert latency.first_local.count == latency.last_local.count == 1
    assert 0 <= latency.first_local.sum <= latency.last_local.sum
    assert latency.first_remote.count == latency.last_remote.count == 0
    assert all(sink.writes == 1 for _, sink in pairs)
    for outbox, _ in pairs:
        outbox.close(1000)
    await asyncio.wait_for(asyncio.gather(*writers), 5)


async def test_a_message_with_no_copy_for_the_flusher_is_not_timed() -> None:
    """When every recipient's socket is backed up (its writer task writes, not the flusher),
    no pass is due and the message is not timed; the next message that is written is timed
    alone, from a remote instance as `remote`."""
    flusher = Flusher()
    latency = flusher.latency = DeliveryLatency()
    outbox, sink = Outbox(100_000, flusher), RecordingSink()
    sink.stalled.clear()
    writer = asyncio.create_task(outbox.run(sink))
    await asyncio.sleep(0)
    outbox.enqueue_frame(built(b"a"))
    await asyncio.sleep(0)  # the flusher finds the socket backed up: the writer task has it
    await _fan_out([outbox], flusher, time.monotonic())
    await asyncio.sleep(0)
    assert latency.first_local.count == 0 and not latency.local
    sink.stalled.set()
    for _ in range(5):
        await asyncio.sleep(0)
    other, other_sink = Outbox(100_000, flusher), RecordingSink()
    other_writer = asyncio.create_task(other.run(other_sink))
    await asyncio.sleep(0)
    other.enqueue_frame(built(b"b"))
    flusher.track(time.monotonic(), True)
    await asyncio.sleep(0)
    assert latency.first_remote.count == latency.last_remote.count == 1
    assert latency.first_local.count == 0
    for box in (outbox, other):
        box.close(1000)
    await asyncio.wait_for(asyncio.gather(writer, other_writer), 5)


def test_delivery_buckets_resolve_milliseconds() -> None:
    """The delivery-latency buckets separate 1, 2 and 5 ms, where a healthy server lives."""
    assert {0.001, 0.002, 0.005}.issubset(DELIVERY_BUCKETS)
