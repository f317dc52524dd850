"""The room-event ops (docs/protocol.md §10): `edit`, `delete`, `react`.

Like `send`, each is admitted by the send rate limit, checked against the room (readers only;
edits and deletions are the author's or an admin's, which the store checks in the transaction
that takes the seq, so a racing delete cannot be edited), stored durably with the room's next
seq, answered with an `ack`, then published (`room_events.publish`). An edit's Markdown is
rendered off the loop before it is queued, as a message's is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from chatserver import files, room_events
from chatserver.context import ChatContext
from chatserver.event_commands import Delete, Edit, React
from chatserver.room_events import ack_frame
from chatserver.session import Session
from chatserver.store.base import Room

log = logging.getLogger(__name__)


def _reply(ctx: ChatContext, session: Session, op: str, payload: bytes) -> None:
    ctx.metrics.frames_out[op] += 1
    session.outbox.enqueue(payload)


async def _admit(ctx: ChatContext, session: Session, name: str) -> Room:
    """The send rate limit (and shutdown, overload), then the room the user may read."""
    # Imported here: handlers imports this module to register the ops.
    from chatserver.handlers import check_send_rate  # noqa: PLC0415

    check_send_rate(ctx, session.user.name)
    room = session.rooms.get(name)
    if room is not None:
        return room
    return await ctx.rooms.readable(name, session.user)


async def on_edit(ctx: ChatContext, session: Session, cmd: Edit) -> None:
    received = time.monotonic()
    room = await _admit(ctx, session, cmd.room)
    html = await ctx.messages.render(cmd.text)
    event = await ctx.store.edit_message(room.id, cmd.seq, session.user, cmd.text, html)
    _reply(ctx, session, "ack", ack_frame(cmd.ref, event))
    room_events.publish(ctx.broker, event, received)


async def on_delete(ctx: ChatContext, session: Session, cmd: Delete) -> None:
    received = time.monotonic()
    room = await _admit(ctx, session, cmd.room)
    event, file_ids = await ctx.store.delete_message(room.id, cmd.seq, session.user)
    _reply(ctx, session, "ack", ack_frame(cmd.ref, event))
    room_events.publish(ctx.broker, event, received)
    if file_ids:
        # After the ack: the rows are gone, so the bytes are unreachable already. A failure
        # leaves orphaned bytes, never a message whose file is missing.
        try:
            await ctx.executors.run_blocking(files.remove_from_disk, files.directory(ctx),
                                             file_ids, job="delete_remove_files")
        except Exception:
            log.exception("removing a deleted message's file from disk failed")


async def on_react(ctx: ChatContext, session: Session, cmd: React) -> None:
    received = time.monotonic()
    room = await _admit(ctx, session, cmd.room)
    event = await ctx.store.react(room.id, cmd.seq, session.user, cmd.emoji, not cmd.remove)
    if event is None:
        _reply(ctx, session, "ack", room_events.unchanged_ack_frame(cmd.ref, room.name, cmd.seq))
        return
    _reply(ctx, session, "ack", ack_frame(cmd.ref, event))
    room_events.publish(ctx.broker, event, received)


Handler = Callable[[ChatContext, Session, Any], Awaitable[None]]
# Each command's handler and its op (its /metrics label), for handlers._HANDLERS.
HANDLERS: dict[type[Any], tuple[Handler, str]] = {
    Edit: (on_edit, "edit"),
    Delete: (on_delete, "delete"),
    React: (on_react, "react"),
}

__all__ = ["HANDLERS", "on_delete", "on_edit", "on_react"]
