"""A connection's bounded queue of encoded frames, and the one writer task that owns the socket.

Everyone else only enqueues, which never waits: fan-out to a thousand connections is a
thousand appends. The writer flushes frames in order, in batches, yielding to the loop between
batches so one busy connection cannot starve the others.

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
from collections import deque
from typing import Protocol

from chatserver.errors import CloseCode
from chatserver.protocol import join_stream_deltas

log = logging.getLogger(__name__)

BATCH_FRAMES = 64
BATCH_BYTES = 256 * 1024


class FrameSink(Protocol):
    """What the writer writes to: a WebSocket in production, a recording double in tests."""

    async def send(self, frame: bytes) -> None: ...

    async def close(self, code: int, reason: str) -> None:
        """Send a close frame and release the socket; must return within a bounded time."""
        ...

    def abort(self, code: int, reason: str) -> None:
        """Drop the socket at once: for a peer that stopped reading (no close frame fits)."""
        ...


class _Entry:
    """A queued frame; `key` set when a later frame may join it or replace it."""

    __slots__ = ("frame", "key")

    def __init__(self, frame: bytes, key: str = "") -> None:
        self.frame = frame
        self.key = key


class Outbox:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.coalesce_above = min(64 * 1024, limit_bytes // 4)
        self.shed_above = limit_bytes // 2
        self.queued_bytes = 0
        self.frames_out = 0
        self.bytes_out = 0
        self.coalesced = 0  # deltas joined into a queued one
        self.superseded = 0  # typing/presence frames replaced by a newer one
        self.shed = 0  # typing/presence frames dropped under pressure
        self.close_code: int | None = None
        self.close_reason = ""
        self._frames: deque[_Entry] = deque()
        self._keyed: dict[str, _Entry] = {}  # queued entries that a later frame may touch
        self._wakeup = asyncio.Event()
        self._closing = False
        self._flush_before_close = True
        self._evicted = False
        self._in_send = False
        self._writer: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drain_threshold = -1

    @property
    def closing(self) -> bool:
        return self._closing

    @property
    def evicted(self) -> bool:
        return self._evicted

    def enqueue(self, frame: bytes) -> bool:
        """Queue one encoded frame; False if the connection is closing or was just evicted."""
        if self._closing:
            return False
        return self._append(_Entry(frame))

    def enqueue_ephemeral(self, frame: bytes, key: str) -> bool:
        """Queue a `typing`/`presence` frame: it replaces a queued one with the same key, and
        is dropped when the reader is past `shed_above`."""
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
        if not self._append(entry):
            return False
        self._keyed[key] = entry
        return True

    def enqueue_delta(self, frame: bytes, key: str) -> bool:
        """Queue a stream delta; past `coalesce_above` it joins the stream's unsent delta."""
        if self._closing:
            return False
        queued = self._keyed.get(key)
        if queued is not None and self.queued_bytes > self.coalesce_above:
            joined = join_stream_deltas(queued.frame, frame)
            growth = len(joined) - len(queued.frame)
            if self.queued_bytes + growth > self.limit_bytes:
                self._evict()
                return False
            queued.frame = joined
            self.queued_bytes += growth
            self.coalesced += 1
            return True
        entry = _Entry(frame, key)
        if not self._append(entry):
            return False
        self._keyed[key] = entry  # the newest unsent delta is the one later deltas join
        return True

    def _append(self, entry: _Entry) -> bool:
        size = len(entry.frame)
        if self.queued_bytes + size > self.limit_bytes:
            self._evict()
            return False
        self._frames.append(entry)
        self.queued_bytes += size
        if not self._wakeup.is_set():
            self._wakeup.set()
        return True

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
        self._flush_before_close = flush
        self.close_code, self.close_reason = code, reason
        if not flush:
            self._drop_queue()
        self._wakeup.set()
        self._drained.set()

    def _evict(self) -> None:
        log.info("evicting slow consumer: %d bytes queued", self.queued_bytes)
        self._evicted = True
        self.close(CloseCode.TRY_AGAIN_LATER, "send queue full: reading too slowly", flush=False)
        # The writer may be stuck waiting for a socket that no longer drains; wake it up.
        if self._in_send and self._writer is not None:
            self._writer.cancel()

    def _drop_queue(self) -> None:
        self._frames.clear()
        self._keyed.clear()
        self.queued_bytes = 0

    async def run(self, sink: FrameSink) -> None:
        """The writer task: flush frames in order until closed, then close the socket."""
        self._writer = asyncio.current_task()
        try:
            await self._flush_until_closed(sink)
        except asyncio.CancelledError:
            if not self._evicted:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
        except (ConnectionError, RuntimeError) as exc:
            # The peer went away mid-write; nothing more can be flushed, but the socket
            # must still be released so the reader sees the end.
            log.debug("writer stopped: %r", exc)
            self._closing = True
            self._drop_queue()
        if self._evicted:
            sink.abort(CloseCode.TRY_AGAIN_LATER, self.close_reason)
        else:
            await sink.close(self.close_code or CloseCode.NORMAL, self.close_reason)

    async def _flush_until_closed(self, sink: FrameSink) -> None:
        frames = self._frames
        while True:
            if not frames:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            sent = 0
            sent_bytes = 0
            while frames and sent < BATCH_FRAMES and sent_bytes < BATCH_BYTES:
                entry = frames.popleft()
                if entry.key and self._keyed.get(entry.key) is entry:
                    del self._keyed[entry.key]  # sent: later frames no longer touch it
                frame = entry.frame
                size = len(frame)
                self.queued_bytes -= size
                self._in_send = True
                try:
                    await sink.send(frame)
                finally:
                    self._in_send = False
                sent += 1
                sent_bytes += size
            self.frames_out += sent
            self.bytes_out += sent_bytes
            if self.queued_bytes <= self._drain_threshold:
                self._drained.set()
            # Yield explicitly: a connection with a deep queue must not hold the loop.
            await asyncio.sleep(0)
