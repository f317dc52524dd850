"""Streaming messages: token-by-token text that fans out live and is stored once, at the end.

Deltas never touch the store. A stream belongs to the connection that started it; when that
connection goes away, or the stream is idle past `limits.stream_idle`, it is ended with
`aborted: true` and its text so far is kept. A stream that ends with no text at all stores
nothing: the room gets `stream_end {room, stream, discarded: true}` so readers can drop it.

A stream may be a thread's reply (docs/protocol.md §10, "Threads"): its `stream_start` frames
(live, and the text so far for a joiner) and its stored message carry `thread`; its deltas and
a discarded end do not, since a reader places them by the stream id its `stream_start` gave.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson

from chatserver import protocol
from chatserver.broker.base import Broker, Event
from chatserver.errors import Forbidden, NotFound, TooLarge
from chatserver.messages import MessageService, OnDurable
from chatserver.store.base import Room, StoredMessage, User

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 1.0


@dataclass(eq=False, slots=True)
class ActiveStream:
    id: str
    room: Room
    user: User
    conn_id: str
    last_activity: float
    parts: list[str] = field(default_factory=list)
    size: int = 0  # UTF-8 bytes so far
    thread: int | None = None  # a reply: its root's seq, checked when it started

    def text(self) -> str:
        return "".join(self.parts)


@dataclass(eq=False, slots=True)
class RemoteStream:
    """A stream running on another instance, mirrored from its events for joiners here."""

    room: str
    user: str
    last_activity: float
    parts: list[str] = field(default_factory=list)
    thread: int | None = None


class Streams:
    def __init__(self, broker: Broker, messages: MessageService, *, idle_seconds: float,
                 max_bytes: int) -> None:
        self.broker = broker
        self.messages = messages
        self.idle_seconds = idle_seconds
        self.max_bytes = max_bytes
        self._streams: dict[str, ActiveStream] = {}
        self._remote: dict[str, RemoteStream] = {}

    def __len__(self) -> int:
        return len(self._streams)

    def start(self, room: Room, user: User, conn_id: str, now: float, *,
              thread: int | None = None) -> ActiveStream:
        """A new stream of `user` in `room`; `thread`: a reply's root, already checked."""
        stream = ActiveStream(secrets.token_urlsafe(9), room, user, conn_id, now, thread=thread)
        self._streams[stream.id] = stream
        frame = start_frame(room.name, stream.id, user.name, thread)
        self.broker.publish(Event("stream", room.name, frame, user=user.name))
        return stream

    def _owned(self, stream_id: str, user: User) -> ActiveStream:
        stream = self._streams.get(stream_id)
        if stream is None:
            raise NotFound(f"no active stream {stream_id!r}")
        if stream.user.id != user.id:
            raise Forbidden("only the user who started a stream may write to it")
        return stream

    def delta(self, stream_id: str, user: User, text: str, now: float) -> None:
        stream = self._owned(stream_id, user)
        size = len(text.encode("utf-8"))
        if stream.size + size > self.max_bytes:
            raise TooLarge(
                f"the stream would exceed {self.max_bytes} bytes; end it and start another"
            )
        stream.parts.append(text)
        stream.size += size
        stream.last_activity = now
        frame = protocol.encode(
            {"op": "stream_delta", "room": stream.room.name, "stream": stream.id, "text": text}
        )
        self.broker.publish(Event("stream", stream.room.name, frame, user=user.name,
                                  key=f"d:{stream.id}"))

    async def end(self, stream_id: str, user: User, *, on_durable: OnDurable | None = None,
                  on_discarded: Callable[[], None] | None = None) -> StoredMessage | None:
        """Store the whole text as one message; None when the stream had no text.

        As with `send`, the streamer's reply (`on_durable` / `on_discarded`) is enqueued
        before the room hears of the end."""
        stream = self._owned(stream_id, user)
        return await self._finish(stream, False, on_durable, on_discarded)

    async def _finish(self, stream: ActiveStream, aborted: bool, on_durable: OnDurable | None,
                      on_discarded: Callable[[], None] | None = None) -> StoredMessage | None:
        if self._streams.pop(stream.id, None) is None:
            return None
        text = stream.text()
        if not text:
            if on_discarded is not None:
                on_discarded()
            frame = protocol.encode({"op": "stream_end", "room": stream.room.name,
                                     "stream": stream.id, "discarded": True})
            self.broker.publish(Event("stream", stream.room.name, frame, user=stream.user.name))
            return None
        return await self.messages.post(stream.room, stream.user, text, stream=stream.id,
                                        aborted=aborted, on_durable=on_durable,
                                        thread=stream.thread)

    def active_frames(self, room: str) -> list[bytes]:
        """`stream_start` frames with the text so far, for a joiner going live mid-stream —
        streams of this instance and, as far as seen, of the others."""
        frames = [start_frame(room, s.id, s.user.name, s.thread, s.text())
                  for s in self._streams.values() if s.room.name == room]
        frames += [start_frame(room, stream_id, r.user, r.thread, "".join(r.parts))
                   for stream_id, r in self._remote.items() if r.room == room]
        return frames

    def observe(self, event: Event) -> None:
        """Mirror other instances' streams from the events the hub receives (called for
        every stream event, and for a message that ends a stream: key "e:<stream>").

        An instance that subscribed to the room mid-stream mirrors from that point on."""
        if event.kind == "message":
            self._remote.pop(event.key[2:], None)
            return
        frame = orjson.loads(event.frame)
        stream_id = frame.get("stream")
        if not isinstance(stream_id, str) or stream_id in self._streams:
            return  # ours: the registry itself is the truth
        op = frame.get("op")
        now = asyncio.get_running_loop().time()
        if op == "stream_start":
            thread = frame.get("thread")
            self._remote[stream_id] = RemoteStream(
                event.room, event.user, now, thread=thread if type(thread) is int else None)
        elif op == "stream_delta":
            remote = self._remote.get(stream_id)
            if remote is not None:
                remote.parts.append(frame.get("text", ""))
                remote.last_activity = now
        else:
            self._remote.pop(stream_id, None)

    async def abort_connection(self, conn_id: str) -> None:
        for stream in [s for s in self._streams.values() if s.conn_id == conn_id]:
            await self._abort(stream, "its connection closed")

    async def abort_all(self) -> None:
        for stream in list(self._streams.values()):
            await self._abort(stream, "the server is shutting down")

    async def _abort(self, stream: ActiveStream, why: str) -> None:
        log.info("aborting stream %s in %s: %s", stream.id, stream.room.name, why)
        try:
            await self._finish(stream, True, None)
        except Exception:
            log.exception("could not store aborted stream %s", stream.id)

    async def sweep_idle(self) -> None:
        """Background task: abort streams idle past `limits.stream_idle`."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            deadline = loop.time() - self.idle_seconds
            for stream in [s for s in self._streams.values() if s.last_activity < deadline]:
                await self._abort(stream, f"idle for over {self.idle_seconds:g} s")
            # A mirrored stream whose end never arrived (its instance died, or Redis lost the
            # event): its own instance would have aborted it by now.
            stale = loop.time() - 2 * self.idle_seconds - SWEEP_INTERVAL
            for stream_id in [k for k, r in self._remote.items() if r.last_activity < stale]:
                del self._remote[stream_id]


def start_frame(room: str, stream_id: str, user: str, thread: int | None,
                text: str | None = None) -> bytes:
    """A `stream_start` frame: live (no `text`) or for a joiner mid-stream (the text so far);
    `thread` only for a reply, as on a `message`."""
    frame: dict[str, object] = {"op": "stream_start", "room": room, "stream": stream_id,
                                "user": user}
    if thread is not None:
        frame["thread"] = thread
    if text is not None:
        frame["text"] = text
    return protocol.encode(frame)
