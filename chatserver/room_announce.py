"""Room announcements (docs/protocol.md §11): a `room_added` frame tells the users a new room
concerns about it at once, on every instance, whatever rooms their connections joined.

`{"op": "room_added", "room": {...}}`, where `room` is the body POST /api/rooms and
/api/direct answer (`protocol.room_body`) with `member` as the recipient sees it. Who gets it:

- a direct room that POST /api/direct created: both members;
- a member added by POST /api/rooms/{room}/members who was not one: that user;
- a room created by POST /api/rooms: its creator (`member` true) and, for a public room,
  every other connected user (`member` false).

Each goes out as a `rooms` event through the broker (chatserver.hub delivers it to the users'
connections; the Redis broker carries it on the instance-wide channel), each distinct frame
encoded once. It is not a room event: no seq, not in any room's log, never replayed, not shed
under overload (it is rare and not ephemeral). A client that was offline, or on an instance
cut off from Redis meanwhile, learns of the room from GET /api/rooms. Rooms the CLI makes
(another process, no broker) are not announced.
"""

from __future__ import annotations

from collections.abc import Sequence

from chatserver import protocol
from chatserver.broker.base import Event
from chatserver.context import ChatContext
from chatserver.store.base import Room, RoomListing, User


def room_added_frame(listing: RoomListing) -> bytes:
    """The frame for the users who see the room as `listing` shows it."""
    return protocol.encode({"op": "room_added", "room": protocol.room_body(listing)})


def _announce(ctx: ChatContext, listing: RoomListing, users: Sequence[str] = (),
              *, all_but: str = "") -> None:
    """To the connections of `users`; with no `users`, to every user's but `all_but`'s."""
    ctx.broker.publish(Event("rooms", "", room_added_frame(listing), user=all_but,
                             users=tuple(users)))


def direct_opened(ctx: ChatContext, room: Room, members: Sequence[str]) -> None:
    """POST /api/direct created `room`: both members (every connection of each)."""
    _announce(ctx, RoomListing(room, True, 0, tuple(members)), members)


async def member_added(ctx: ChatContext, room: Room, user: User) -> None:
    """POST /api/rooms/{room}/members made `user` a member of an existing room: that user,
    with the room's latest seq (what GET /api/rooms would show them now)."""
    seq = await ctx.store.latest_seq(room.id)
    _announce(ctx, RoomListing(room, True, seq), (user.name,))


def room_created(ctx: ChatContext, room: Room, creator: User) -> None:
    """POST /api/rooms created `room`: the creator as a member; for a public room, everyone
    else connected as a non-member (a private room is nobody else's business)."""
    _announce(ctx, RoomListing(room, True, 0), (creator.name,))
    if room.kind == "public":
        _announce(ctx, RoomListing(room, False, 0), all_but=creator.name)


__all__ = ["direct_opened", "member_added", "room_added_frame", "room_created"]
