"""A connection's bounded queue of WebSocket frames, and what writes them to its socket.

Everyone else only enqueues, which never waits: fan-out to a thousand connections is a
thousand appends of the same pre-built frame (`wsframe.py`). The outbox is its socket's only
writer (aiohttp itself also writes pongs, pings and the close frame), in one of two ways:

- while the socket keeps up, the loop-wide `Flusher` writes every outbox that got frames, once
  per loop iteration: whatever queued since the last pass goes out in one socket write, and no
  task is woken per recipient. Frames that may wait a moment to share a write do: a stream
  delta up to DELTA_DELAY (2 ms), a typing or presence frame up to EPHEMERAL_DELAY (0.1 s);
  anything else queued behind them takes them along at once;
- once the socket is backed up (its buffer past the transport's high-water mark), the
  connection's writer task waits for it to drain, then writes in batches, yielding to the loop
  between batches so one deep queue cannot hold the loop.

The queue is bounded in bytes (`limits.send_queue_bytes`). A reader that falls behind goes
through stages, all measured in bytes queued for it:

1. always: a queued `typing` or `presence` frame is superseded by the next one with the same
   key (only the latest state matters);
2. past `coalesce_above`: a stream delta joins the still-unsent delta of the same stream, so
   a slow reader gets fewer, larger deltas — never reordered, never lost;
3. past `shed_above`: new `typing` and `presence` frames are dropped;
4. past the bound: the connection is evicted with 1013.

Chat messages are never dropped for a connection that stays open.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from chatserver import wsframe
from chatserver.errors import CloseCode
from chatserver.protocol import join_stream_deltas

if TYPE_CHECKING:
    from chatserver.metrics import DeliveryLatency

log = logging.getLogger(__name__)

BATCH_BYTES = 64 * 1024  # most bytes per socket write: about the transport's high-water mark
FLUSH_PASS_OUTBOXES = 1024  # outboxes one flusher pass writes before it yields the loop
# Typing and presence frames alone wait this long to share a write with whatever else comes:
# a crowd reconnecting at once is N presence frames for each of N members, and one write per
# frame would be N² socket writes. Nobody sees 0.1 s on a "typing…" or "online" dot.
EPHEMERAL_DELAY = 0.1
# Stream deltas wait at most this long to share a write with the next few: a bot streaming
# 500 tokens/s to 200 readers is otherwise 100,000 socket writes a second. Each delta stays
# its own frame; 2 ms is far below what a reader can see of text growing (at 500/s it
# joins two or three deltas in a write).
DELTA_DELAY = 0.002
# Pacing: after a pass that took `d` seconds, the next one starts no sooner than
# `(d - FLUSH_PAUSE_FREE) * FLUSH_PAUSE_RATIO` later (at most FLUSH_PAUSE_MAX). A pass is one
# socket write per recipient, and a write costs about the same for one frame as for several:
# while a big room is busy, the pause lets the messages that arrive meanwhile share the next
# write, and the flusher takes at most about a third of the loop, the rest being left to
# reading sends, acks and joins. A pass of a couple of milliseconds (a stream to a few hundred
# readers, small rooms, a quiet server) is followed at once: the loop is responsive anyway,
# and a pause would only add to the stream's latency.
FLUSH_PAUSE_FREE = 0.002
FLUSH_PAUSE_RATIO = 2.0
FLUSH_PAUSE_MAX = 0.025


class FrameSink(Protocol):
    """What an outbox writes to: a WebSocket in production, a recording double in tests."""

    def write(self, data: bytes) -> None:
        """Hand whole frames to the socket without waiting; ConnectionError if it is gone."""
        ...

    def backed_up(self) -> bool:
        """True while the socket's buffer is past its high-water mark (the peer reads slower
        than frames are written)."""
        ...

    async def drain(self) -> None:
        """Return once the socket's buffer is back under its low-water mark."""
        ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame and release the socket; must return within a bounded time."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Drop the socket at once: for a peer that stopped reading (no close frame fits)."""
        ...


class Flusher:
    """Writes, one loop step after fan-out, every outbox that got frames since its last pass;
    outboxes that got only frames that may wait (deltas, typing, presence), once the shortest
    of their delays has passed.

    One per application (one event loop). A pass writes at most FLUSH_PASS_OUTBOXES outboxes
    and leaves the rest to the next loop iteration, so other callbacks run in between.
    """

    def __init__(self) -> None:
        self._pending: list[Outbox] = []
        self._scheduled = False
        self._not_before = 0.0  # time.monotonic() before which no pass starts (pacing)
        self._sweep_busy = 0.0  # seconds the passes of the current sweep have written
        self._waiting: dict[float, list[Outbox]] = {}  # by delay: one timer per delay
        self.passes = 0
        # Delivery latency, timed per message and never per recipient (see `track`); set by
        # `Metrics.bind`.
        self.latency: DeliveryLatency | None = None

    def request(self, outbox: Outbox, delay: float = 0.0) -> None:
        """Write `outbox` in the next pass, or in the first pass `delay` seconds from now."""
        if delay:
            waiting = self._waiting.get(delay)
            if waiting is None:
                waiting = self._waiting[delay] = []
                asyncio.get_running_loop().call_later(delay, self._delay_over, delay)
            waiting.append(outbox)
            return
        self._pending.append(outbox)
        if not self._scheduled:
            self._scheduled = True
            pause = self._not_before - time.monotonic()
            if pause > 0:
                asyncio.get_running_loop().call_later(pause, self._run)
            else:
                asyncio.get_running_loop().call_soon(self._run)

    def _delay_over(self, delay: float) -> None:
        for outbox in self._waiting.pop(delay, ()):
            self.request(outbox)

    def track(self, received: float, remote: bool) -> None:
        """A message was just fanned out (`received`: `time.monotonic()` when the server got
        it; `remote`: from another instance, timed from the broker's hand-off): time the pass
        that writes its first copy, and the one that has written its last.

        Per message, not per recipient. Copies for sockets that are backed up leave later,
        with their writer task, and are not timed; with no pass due, no copy of the message
        leaves with the flusher, and it is not timed at all."""
        latency = self.latency
        if self._scheduled and latency is not None:
            (latency.remote if remote else latency.local).append(received)

    def _run(self) -> None:
        self.passes += 1
        started = time.monotonic()
        pending = self._pending
        split = len(pending) > FLUSH_PASS_OUTBOXES
        if split:
            self._pending = pending[FLUSH_PASS_OUTBOXES:]
            pending = pending[:FLUSH_PASS_OUTBOXES]
            asyncio.get_running_loop().call_soon(self._run)
        else:
            self._pending = []
            self._scheduled = False
        for outbox in pending:
            outbox.flush_requested()
        ended = time.monotonic()
        # A sweep split over several passes pauses for all of their writing (not for the
        # callbacks that ran between them).
        self._sweep_busy += ended - started
        if not split:
            paused = (self._sweep_busy - FLUSH_PAUSE_FREE) * FLUSH_PAUSE_RATIO
            self._not_before = ended + min(FLUSH_PAUSE_MAX, paused)
            self._sweep_busy = 0.0
        latency = self.latency
        if latency is not None and (latency.local or latency.remote or latency.writing):
            # With the queue empty (not split), every copy of those messages is out.
            latency.written(started, None if split else ended)


class _Entry:
    """A queued frame; `key` set when a later frame may join it or replace it."""

    __slots__ = ("frame", "key")

    def __init__(self, frame: bytes, key: str = "") -> None:
        self.frame = frame
        self.key = key


class Outbox:
    # Slots: fan-out touches every recipient's outbox once per message and the flusher once
    # per pass; without an instance dict that is one object less per touch.
    __slots__ = ("limit_bytes", "coalesce_above", "shed_above", "queued_bytes", "frames_out",
                 "bytes_out", "writes", "coalesced", "superseded", "shed", "close_code",
                 "close_reason", "_flusher", "_frames", "_keyed", "_wakeup", "_closing",
                 "_evicted", "_sink", "_flush_due", "_backed_up", "_in_drain", "_writer",
                 "_drained", "_drain_threshold")

    def __init__(self, limit_bytes: int, flusher: Flusher | None = None) -> None:
        self.limit_bytes = limit_bytes
        self.coalesce_above = min(64 * 1024, limit_bytes // 4)
        self.shed_above = limit_bytes // 2
        self.queued_bytes = 0
        self.frames_out = 0
        self.bytes_out = 0
        self.writes = 0  # socket writes: fewer than frames_out when frames went out together
        self.coalesced = 0  # deltas joined into a queued one
        self.superseded = 0  # typing/presence frames replaced by a newer one
        self.shed = 0  # typing/presence frames dropped under pressure
        self.close_code: int | None = None
        self.close_reason = ""
        self._flusher = flusher if flusher is not None else Flusher()
        # Queued frames: the bytes themselves (fan-out's common case: no object per
        # recipient), or an `_Entry` for a frame a later one may join or replace.
        self._frames: deque[bytes | _Entry] = deque()
        self._keyed: dict[str, _Entry] = {}  # queued entries that a later frame may touch
        self._wakeup = asyncio.Event()
        self._closing = False
        self._evicted = False
        self._sink: FrameSink | None = None  # set when the writer task starts
        self._flush_due: float | None = None  # delay asked of the flusher; None: not asked
        self._backed_up = False  # the writer task, not the flusher, writes until it drains
        self._in_drain = False
        self._writer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drain_threshold = -1

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def evicted(self) -> bool:
        return self._evicted

    def enqueue(self, payload: bytes) -> bool:
        """Queue one encoded frame for this connection alone (a reply, a replayed message);
        False if the connection is closing or was just evicted."""
        return self.enqueue_frame(wsframe.text_frame(payload))

    def enqueue_frame(self, frame: bytes) -> bool:
        """Queue a frame built once for many connections (`wsframe.text_frame`).

        Fan-out calls this once per recipient, so it is `_append` written out for the common
        case: a length check, a deque append, and at most one flusher request per pass."""
        if self._closing:
            return False
        size = len(frame)
        if self.queued_bytes + size > self.limit_bytes:
            self._evict()
            return False
        self._frames.append(frame)
        self.queued_bytes += size
        due = self._flush_due
        if (due is None or due > 0.0) and not self._backed_up and self._sink is not None:
            self._flush_due = 0.0
            self._flusher.request(self)
        return True

    def enqueue_ephemeral(self, frame: bytes, key: str) -> bool:
        """Queue a built `typing`/`presence` frame: it replaces a queued one with the same
        key, and is dropped when the reader is past `shed_above`."""
        if self._closing:
            return False
        queued = self._keyed.get(key)
        if queued is not None:
            self.queued_bytes += len(frame) - len(queued.frame)
            queued.frame = frame
            self.superseded += 1
            return True
        if self.queued_bytes > self.shed_above:
            self.shed += 1
            return False
        entry = _Entry(frame, key)
        if not self._append(entry, EPHEMERAL_DELAY):
            return False
        self._keyed[key] = entry
        return True

    def enqueue_delta(self, frame: bytes, key: str) -> bool:
        """Queue a built stream delta; past `coalesce_above` it joins the stream's unsent
        delta."""
        if self._closing:
            return False
        queued = self._keyed.get(key)
        if queued is not None and self.queued_bytes > self.coalesce_above:
            joined = wsframe.text_frame(join_stream_deltas(wsframe.payload_of(queued.frame),
                                                           wsframe.payload_of(frame)))
            growth = len(joined) - len(queued.frame)
            if self.queued_bytes + growth > self.limit_bytes:
                self._evict()
                return False
            queued.frame = joined
            self.queued_bytes += growth
            self.coalesced += 1
            return True
        entry = _Entry(frame, key)
        if not self._append(entry, DELTA_DELAY):
            return False
        self._keyed[key] = entry  # the newest unsent delta is the one later deltas join
        return True

    def _append(self, entry: _Entry, delay: float = 0.0) -> bool:
        """Queue `entry` to be written within `delay` seconds (0: in the next loop step)."""
        size = len(entry.frame)
        if self.queued_bytes + size > self.limit_bytes:
            self._evict()
            return False
        self._frames.append(entry)
        self.queued_bytes += size
        if self._backed_up or self._sink is None:
            return True  # the writer task writes (it waits for the socket, or starts soon)
        if self._flush_due is None or delay < self._flush_due:
            self._flush_due = delay
            self._flusher.request(self, delay)
        return True

    def flush_requested(self) -> None:
        """The flusher's pass: write what is queued while the socket keeps up."""
        self._flush_due = None
        sink = self._sink
        if sink is None or self._backed_up or self._closing:
            return  # the writer task writes (it waits for the socket, or closes)
        frames = self._frames
        try:
            while frames and not sink.backed_up():
                self._write_batch(sink)
        except ConnectionError as exc:
            self._lost(exc)
            return
        if frames:
            self._backed_up = True
            self._wakeup.set()

    async def wait_below(self, threshold: int) -> None:
        """Wait until at most `threshold` bytes are queued (or the connection closes).

        For a connection's own backlog (a replay), which may pace itself to the socket;
        fan-out never calls this.
        """
        while self.queued_bytes > threshold and not self._closing:
            self._drain_threshold = threshold
            self._drained.clear()
            await self._drained.wait()

    def close(self, code: int, reason: str = "", *, flush: bool = True) -> None:
        """Ask the writer to close with `code`; with `flush`, after the frames already queued."""
        if self._closing:
            return
        self._closing = True
        self.close_code, self.close_reason = code, reason
        if not flush:
            self._drop_queue()
        self._wakeup.set()
        self._drained.set()

    def _evict(self) -> None:
        log.info("evicting slow consumer: %d bytes queued", self.queued_bytes)
        self._evicted = True
        self.close(CloseCode.TRY_AGAIN_LATER, "send queue full: reading too slowly", flush=False)
        # The writer may be waiting for a socket that no longer drains; wake it up.
        if self._in_drain and self._writer is not None:
            self._writer.cancel()

    def _lost(self, exc: BaseException) -> None:
        """The peer went away mid-write: nothing more can be written, but the writer must
        still release the socket so the reader sees the end."""
        log.debug("writer stopped: %r", exc)
        self._closing = True
        self._drop_queue()
        self._wakeup.set()
        self._drained.set()

    def _drop_queue(self) -> None:
        self._frames.clear()
        self._keyed.clear()
        self.queued_bytes = 0

    async def run(self, sink: FrameSink) -> None:
        """The writer task: write what the flusher leaves, until closed; then close."""
        self._writer = asyncio.current_task()
        self._sink = sink
        try:
            await self._write_until_closed(sink)
        except asyncio.CancelledError:
            if not self._evicted:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except (ConnectionError, RuntimeError) as exc:
            self._lost(exc)
        if self._evicted:
            sink.abort(CloseCode.TRY_AGAIN_LATER, self.close_reason)
        else:
            await sink.close(self.close_code or CloseCode.NORMAL, self.close_reason)

    async def _write_until_closed(self, sink: FrameSink) -> None:
        while True:
            if not self._frames:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if sink.backed_up():
                self._backed_up = self._in_drain = True
                try:
                    await sink.drain()
                finally:
                    self._backed_up = self._in_drain = False
                continue
            self._write_batch(sink)
            # Yield explicitly: a connection with a deep queue must not hold the loop.
            await asyncio.sleep(0)

    def _write_batch(self, sink: FrameSink) -> None:
        """Hand queued frames, up to BATCH_BYTES, to the socket in one write."""
        frames = self._frames
        first = frames[0]
        if len(frames) == 1 and isinstance(first, bytes):  # the usual pass: one message
            frames.popleft()
            data, count = first, 1
        else:
            keyed = self._keyed
            parts: list[bytes] = []
            size = 0
            while frames and size < BATCH_BYTES:
                entry = frames.popleft()
                if isinstance(entry, _Entry):
                    if keyed.get(entry.key) is entry:
                        del keyed[entry.key]  # written: later frames no longer touch it
                    frame = entry.frame
                else:
                    frame = entry
                parts.append(frame)
                size += len(frame)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            count = len(parts)
        size = len(data)
        self.queued_bytes -= size
        self.frames_out += count
        self.bytes_out += size
        self.writes += 1
        sink.write(data)
        if self.queued_bytes <= self._drain_threshold:
            self._drained.set()
