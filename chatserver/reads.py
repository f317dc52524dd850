"""Read positions (docs/protocol.md §10, "Mentions and read positions"): the `read` op and
the per-room unread and mention counts of GET /api/rooms.

A position only moves forward and never past the room's latest seq (the store clamps it in
the same write). When it moved, the user's other connections joined to the room hear of it,
on every instance: it is published through the broker as a `read` event that the hub
delivers only to that user's subscriptions (chatserver.hub), so every device clears its
badge. It takes no seq and is not stored in the room's log.
"""

from __future__ import annotations

from typing import Any

from chatserver import protocol
from chatserver.broker.base import Event
from chatserver.context import ChatContext
from chatserver.protocol import Read
from chatserver.session import Session
from chatserver.store.base import ReadState, RoomListing


async def on_read(ctx: ChatContext, session: Session, cmd: Read) -> None:
    room = session.rooms.get(cmd.room) or await ctx.rooms.readable(cmd.room, session.user)
    user = session.user
    seq, moved = await ctx.store.set_read(user.id, room.id, cmd.seq)
    ctx.metrics.frames_out["read"] += 1
    session.outbox.enqueue(protocol.encode(
        {"op": "read", "ref": cmd.ref, "room": room.name, "seq": seq}))
    if moved:
        frame = protocol.encode({"op": "read", "room": room.name, "seq": seq})
        # `key` names the connection that moved it: the hub skips it (it has the reply).
        ctx.broker.publish(Event("read", room.name, frame, user=user.name, key=session.conn_id))


def listing_fields(listing: RoomListing, states: dict[int, ReadState]) -> dict[str, Any]:
    """What GET /api/rooms adds to a room for the caller: `read_seq`, `unread`, `mentions`,
    `unread_capped` when more messages than the store counts follow `read_seq`, and `seq` as
    of the counts."""
    state = states.get(listing.room.id, ReadState())
    # `seq` from the counts' own snapshot (read after the listing, so never lower): a client
    # adds to `unread` exactly the messages above it that it receives live.
    fields: dict[str, Any] = {"seq": max(listing.last_seq, state.counted_seq),
                              "read_seq": state.seq, "unread": state.unread,
                              "mentions": state.mentions}
    if state.capped:
        fields["unread_capped"] = True
    return fields


__all__ = ["listing_fields", "on_read"]
