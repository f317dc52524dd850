"""The embedded broker: one process, no service. Delivery is a direct call on the loop."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from chatserver.broker.base import INSTANCE_WIDE, Broker, Event


class MemoryBroker(Broker):
    """Delivers synchronously, in publish order, to this process's hub; loses nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._rooms: set[str] = set()
        self._connections: defaultdict[str, set[str]] = defaultdict(set)

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        self._rooms.clear()

    async def ping(self) -> None:
        return None

    async def subscribe(self, room: str) -> None:
        self._rooms.add(room)

    async def unsubscribe(self, room: str) -> None:
        self._rooms.discard(room)

    def publish(self, event: Event) -> None:
        handler = self._handler
        if handler is None:
            return
        if event.kind == "presence":
            if any(room in self._rooms for room in event.rooms):
                handler(event)
        elif event.room in self._rooms or event.kind in INSTANCE_WIDE:
            handler(event)

    async def connection_opened(self, user: str, conn_id: str) -> bool:
        conns = self._connections[user]
        conns.add(conn_id)
        return len(conns) == 1

    async def connection_closed(self, user: str, conn_id: str) -> bool:
        conns = self._connections.get(user)
        if conns is None or conn_id not in conns:
            return False
        conns.discard(conn_id)
        if conns:
            return False
        del self._connections[user]
        return True

    async def online_users(self, users: Sequence[str]) -> set[str]:
        # connection_closed deletes a user's entry with their last connection, so any entry
        # present has at least one.
        connections = self._connections
        return {user for user in users if user in connections}
