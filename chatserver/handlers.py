"""What each client op does. Handlers never touch a socket: they enqueue frames on the
session's outbox and raise `ChatError` for the caller to turn into an `error` frame.

Sends are ordered per connection: the read loop awaits the Markdown render (off the loop, in
the pool) and then starts the store append as a task, in frame order; the append's completion
enqueues the ack and publishes the message. The read loop thus keeps reading while earlier
messages commit, and a connection's messages get seqs in the order it sent them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chatserver import protocol, reads, threads
from chatserver.broker.base import Event
from chatserver.context import ChatContext
from chatserver.errors import ChatError, Internal, Overloaded, RateLimited, TooLarge
from chatserver.event_commands import Delete, Edit, React
from chatserver.event_ops import HANDLERS as EVENT_HANDLERS  # §10 edit, delete, react
from chatserver.protocol import (
    FrameError,
    History,
    Join,
    Leave,
    Ping,
    Read,
    Send,
    StreamDelta,
    StreamEnd,
    StreamStart,
    Typing,
)
from chatserver.session import Session
from chatserver.store.base import NewMessage, Room, StoredMessage

log = logging.getLogger(__name__)

MAX_PENDING_SENDS = 32  # per connection; past it the read loop waits for a commit


async def handle_frame(ctx: ChatContext, session: Session, data: str) -> None:
    """Parse and run one client text frame; every failure becomes one `error` frame."""
    session.frames_in += 1
    try:
        command = protocol.parse_command(data, ctx.config.limits.max_message_bytes)
    except FrameError as bad:
        session.bad_frames += 1
        ctx.metrics.frames_in["invalid"] += 1
        _reply(ctx, session, "error", protocol.error_frame_for(bad.error, bad.ref))
        return
    handler, op = _HANDLERS[type(command)]
    ctx.metrics.frames_in[op] += 1
    stores = type(command) in _STORING_OPS
    if stores:
        session.storing += 1
    try:
        await handler(ctx, session, command)
    except ChatError as error:
        _reply(ctx, session, "error", protocol.error_frame_for(error, command.ref))
    except Exception:
        log.exception("op %s failed", type(command).__name__)
        _reply(ctx, session, "error", protocol.error_frame_for(
            Internal("internal error; it has been logged"), command.ref))
    finally:
        if stores:
            session.storing -= 1


def _reply(ctx: ChatContext, session: Session, op: str, payload: bytes) -> None:
    """Queue a frame for this connection alone, counted by op for /metrics."""
    ctx.metrics.frames_out[op] += 1
    session.outbox.enqueue(payload)


def check_send_rate(ctx: ChatContext, user_name: str) -> None:
    """Admission for anything that will store a message: shutdown first, then the user's rate."""
    if ctx.shutting_down:
        raise Overloaded("the server is shutting down; reconnect and send again")
    if not ctx.overload.allow_send():
        raise Overloaded("the server is overloaded; retry in a few seconds")
    wait = ctx.send_limiter.take(user_name, asyncio.get_running_loop().time())
    if wait > 0:
        raise RateLimited(f"sending too fast; retry in {wait:.2f} s", wait)


async def _room_for(ctx: ChatContext, session: Session, name: str) -> Room:
    """The joined room from the session, else a permission check against the store."""
    room = session.rooms.get(name)
    if room is not None:
        return room
    return await ctx.rooms.readable(name, session.user)


async def on_join(ctx: ChatContext, session: Session, cmd: Join) -> None:
    cap = ctx.config.limits.rooms_per_connection
    if cmd.room not in session.rooms and len(session.rooms) >= cap:
        raise TooLarge(f"this connection has joined {cap} rooms, the limit; leave one first")
    room = await ctx.rooms.join(cmd.room, session.user)
    session.rooms[room.name] = room
    try:
        await ctx.hub.join(room, session.conn_id, session.user.name, session.outbox, cmd.after,
                           ref=cmd.ref)
    except BaseException:
        session.rooms.pop(room.name, None)
        raise


async def on_leave(ctx: ChatContext, session: Session, cmd: Leave) -> None:
    session.rooms.pop(cmd.room, None)
    ctx.hub.leave(cmd.room, session.conn_id)
    _reply(ctx, session, "left", protocol.encode({"op": "left", "ref": cmd.ref, "room": cmd.room}))


async def on_send(ctx: ChatContext, session: Session, cmd: Send) -> None:
    received = time.monotonic()  # the start of its delivery latency
    check_send_rate(ctx, session.user.name)
    room = await _room_for(ctx, session, cmd.room)
    thread = await threads.reply_root(ctx.store, room, cmd.thread)
    rendered = await ctx.messages.render_message(cmd.text)  # with its mentions (§10)
    html = rendered.html
    user = session.user
    message = NewMessage(room.id, room.name, user.id, user.name, cmd.text, html, thread=thread)
    message = rendered.into(message)
    await _start_append(ctx, session, cmd.ref, ctx.messages.store_and_publish(
        message, _ack_to(ctx, session, cmd.ref), received=received))


def _ack_to(ctx: ChatContext, session: Session, ref: str | None
            ) -> Callable[[StoredMessage], None]:
    def enqueue_ack(stored: StoredMessage) -> None:
        _reply(ctx, session, "ack", protocol.ack_frame(ref, stored))
    return enqueue_ack


async def _start_append(ctx: ChatContext, session: Session, ref: str | None,
                        append: Awaitable[Any]) -> None:
    pending = session.pending_sends
    while len(pending) >= MAX_PENDING_SENDS:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    task = asyncio.get_running_loop().create_task(_append(ctx, session, ref, append))
    pending.add(task)
    task.add_done_callback(pending.discard)


async def _append(ctx: ChatContext, session: Session, ref: str | None,
                  append: Awaitable[Any]) -> None:
    try:
        await append
    except ChatError as error:
        _reply(ctx, session, "error", protocol.error_frame_for(error, ref))
    except Exception:
        log.exception("storing a message failed")
        _reply(ctx, session, "error", protocol.error_frame_for(
            Internal("the message was not stored; retry"), ref))


async def on_history(ctx: ChatContext, session: Session, cmd: History) -> None:
    room = await _room_for(ctx, session, cmd.room)
    messages, more = await read_history(ctx, room, cmd.before, cmd.after, cmd.limit,
                                        thread=cmd.thread)
    _reply(ctx, session, "history", protocol.encode({
        "op": "history", "ref": cmd.ref, "room": room.name,
        "messages": [protocol.message_body(m) for m in messages], "more": more,
    }))


async def read_history(ctx: ChatContext, room: Room, before: int | None, after: int | None,
                       limit: int, *, thread: int | None = None
                       ) -> tuple[list[StoredMessage], bool]:
    """One page ascending by seq, and whether more lie beyond it in the paging direction;
    with `thread`, of that thread's replies."""
    if thread is not None:
        return await threads.read_thread(ctx.store, room, thread, before, after, limit)
    if after is not None:
        page = await ctx.store.messages_after(room.id, after, limit + 1)
        return page[:limit], len(page) > limit
    page = await ctx.store.messages_before(room.id, before, limit + 1)
    return page[-limit:] if len(page) > limit else page, len(page) > limit


async def on_typing(ctx: ChatContext, session: Session, cmd: Typing) -> None:
    room = await _room_for(ctx, session, cmd.room)
    if not session.typing_allowed(room.name, asyncio.get_running_loop().time()):
        return
    if not ctx.overload.allow_ephemeral():
        return  # the first thing shed under overload
    user = session.user.name
    frame = protocol.encode({"op": "typing", "room": room.name, "user": user})
    ctx.broker.publish(Event("typing", room.name, frame, user=user, key=f"t:{room.name}:{user}"))


async def on_stream_start(ctx: ChatContext, session: Session, cmd: StreamStart) -> None:
    check_send_rate(ctx, session.user.name)
    room = await _room_for(ctx, session, cmd.room)
    # Checked once, here: a root deleted while the stream runs still gets its reply, as a
    # reply sent a moment sooner would have (chatserver.threads).
    thread = await threads.reply_root(ctx.store, room, cmd.thread)
    stream = ctx.streams.start(room, session.user, session.conn_id,
                               asyncio.get_running_loop().time(), thread=thread)
    _reply(ctx, session, "ack", protocol.encode({"op": "ack", "ref": cmd.ref,
                                                 "stream": stream.id}))


async def on_stream_delta(ctx: ChatContext, session: Session, cmd: StreamDelta) -> None:
    ctx.streams.delta(cmd.stream, session.user, cmd.text, asyncio.get_running_loop().time())


async def on_stream_end(ctx: ChatContext, session: Session, cmd: StreamEnd) -> None:
    def ack_discarded() -> None:
        _reply(ctx, session, "ack", protocol.encode(
            {"op": "ack", "ref": cmd.ref, "stream": cmd.stream, "discarded": True}))

    await ctx.streams.end(cmd.stream, session.user, on_durable=_ack_to(ctx, session, cmd.ref),
                          on_discarded=ack_discarded)


async def on_ping(ctx: ChatContext, session: Session, cmd: Ping) -> None:
    _reply(ctx, session, "pong", protocol.pong_frame(cmd.ref))


# Ops that end in a stored message: shutdown lets them finish so their acks go out.
_STORING_OPS = frozenset({Send, StreamEnd, Edit, Delete, React})

# Each command's handler, and its op (the label it is counted under at /metrics).
_HANDLERS: dict[type[Any], tuple[Callable[[ChatContext, Session, Any], Awaitable[None]], str]] = {
    Join: (on_join, "join"),
    Leave: (on_leave, "leave"),
    Send: (on_send, "send"),
    History: (on_history, "history"),
    Typing: (on_typing, "typing"),
    StreamStart: (on_stream_start, "stream_start"),
    StreamDelta: (on_stream_delta, "stream_delta"),
    StreamEnd: (on_stream_end, "stream_end"),
    Ping: (on_ping, "ping"),
    Read: (reads.on_read, "read"),  # §10 read positions
}
_HANDLERS.update(EVENT_HANDLERS)

__all__ = ["handle_frame", "read_history", "check_send_rate"]
