"""Rooms and who may read them: one place that answers "may this user see this room?".

Every path (join, send, history over WebSocket and HTTP, typing, streams) asks here, so the
rule is written once: public rooms are open to every user; private and direct rooms only to
their members. A non-member gets `forbidden`, never a frame of the room.
"""

from __future__ import annotations

from collections import OrderedDict

from chatserver.errors import BadRequest, Forbidden, NotFound
from chatserver.protocol import ROOM_NAME
from chatserver.store.base import Room, RoomListing, Store, User

CACHE_ROOMS = 10_000
CACHE_MEMBERSHIPS = 100_000


class Rooms:
    def __init__(self, store: Store) -> None:
        self.store = store
        # Rooms are never renamed or deleted and memberships never removed in protocol v1,
        # so positive answers can be cached; negative ones are always asked again.
        self._rooms: OrderedDict[str, Room] = OrderedDict()
        self._members: OrderedDict[tuple[int, int], None] = OrderedDict()

    async def get(self, name: str) -> Room:
        room = self._rooms.get(name)
        if room is not None:
            self._rooms.move_to_end(name)
            return room
        room = await self.store.get_room(name)
        if room is None:
            raise NotFound(f"no room named {name!r}")
        self._remember_room(room)
        return room

    async def is_member(self, room: Room, user: User) -> bool:
        key = (room.id, user.id)
        if key in self._members:
            return True
        if await self.store.is_member(room.id, user.id):
            self._remember_member(key)
            return True
        return False

    async def readable(self, name: str, user: User) -> Room:
        """The room, if `user` may read it; `not_found` or `forbidden` otherwise."""
        room = await self.get(name)
        if room.kind == "public" or await self.is_member(room, user):
            return room
        raise Forbidden(f"you are not a member of room {name!r}")

    async def join(self, name: str, user: User) -> Room:
        """Readable check; joining a public room makes the user a member (as in Slack)."""
        room = await self.readable(name, user)
        if room.kind == "public" and not await self.is_member(room, user):
            await self.store.add_member(room.id, user.id)
            self._remember_member((room.id, user.id))
        return room

    async def create(self, name: str, private: bool, creator: User | None) -> Room:
        if not ROOM_NAME.fullmatch(name):
            raise BadRequest("room name must match ^[a-z0-9][a-z0-9_-]{0,63}$")
        if name.startswith("dm-"):
            raise BadRequest("room names starting with 'dm-' are reserved for direct messages")
        room = await self.store.create_room(
            name, "private" if private else "public", creator.id if creator else None
        )
        self._remember_room(room)
        if creator is not None:
            self._remember_member((room.id, creator.id))
        return room

    async def add_member(self, name: str, actor: User | None, username: str
                         ) -> tuple[Room, User, bool]:
        """Add `username` to the room; the flag: whether they were not a member before.
        Private rooms: members or admins may add; `actor` None means the admin CLI. Direct
        rooms never take a third member."""
        room = await self.get(name)
        if room.kind == "direct":
            raise Forbidden("direct rooms have exactly two members")
        if actor is not None and not actor.is_admin:
            if room.kind == "private" and not await self.is_member(room, actor):
                raise Forbidden(f"you are not a member of room {name!r}")
        target = await self.store.get_user(username)
        if target is None:
            raise NotFound(f"no user named {username!r}")
        added = await self.store.add_member(room.id, target.id)
        self._remember_member((room.id, target.id))
        return room, target, added

    async def direct(self, actor: User, username: str) -> tuple[Room, bool]:
        """The direct room of `actor` and `username`, and whether this call created it."""
        other = await self.store.get_user(username)
        if other is None or other.disabled:
            raise NotFound(f"no user named {username!r}")
        if other.id == actor.id:
            raise BadRequest("a direct room needs another user")
        room, created = await self.store.direct_room(actor, other)
        self._remember_room(room)
        return room, created

    async def visible(self, user: User) -> list[RoomListing]:
        return await self.store.rooms_visible_to(user.id)

    def _remember_room(self, room: Room) -> None:
        self._rooms[room.name] = room
        if len(self._rooms) > CACHE_ROOMS:
            self._rooms.popitem(last=False)

    def _remember_member(self, key: tuple[int, int]) -> None:
        self._members[key] = None
        if len(self._members) > CACHE_MEMBERSHIPS:
            self._members.popitem(last=False)


