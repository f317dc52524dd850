"""A connection's bounded queue of encoded frames, and the one writer task that owns the socket.

Everyone else only calls `enqueue`, which never waits: fan-out to a thousand connections is a
thousand appends. The writer flushes frames in order, in batches, yielding to the loop between
batches so one busy connection cannot starve the others. The queue is bounded in bytes
(`limits.send_queue_bytes`): a connection that cannot keep up is evicted with 1013 rather than
allowed to grow the server's memory or delay anyone else.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Protocol

from chatserver.errors import CloseCode

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


class Outbox:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.queued_bytes = 0
        self.frames_out = 0
        self.bytes_out = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self._frames: deque[bytes] = deque()
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
        size = len(frame)
        if self.queued_bytes + size > self.limit_bytes:
            self._evict()
            return False
        self._frames.append(frame)
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
                frame = frames.popleft()
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
