"""The Broker seam: how a room's events reach every instance that has members of the room.

Delivery semantics every backend provides (tests/contract/test_broker.py holds each to them):

- `publish` never waits for a subscriber and never blocks the caller on the network; it may
  lose events for other instances (e.g. while Redis is down). The store is the source of
  truth: `message` events carry their seq, and the hub re-reads the store when it sees a gap,
  so a lost message event costs latency, never a gap a client can see.
- The publishing instance's own handler is called in publish order (when it is subscribed to
  the room) within LOCAL_DELIVERY_MAX of `publish`: inside `publish` for the in-process
  broker; after the round trip that hands the event to Redis, bounded by a few milliseconds,
  for the Redis broker (so other instances need not wait for this one's fan-out). Local
  delivery works while the network is down. Other instances get the event over the network
  and never get their own events back.
- Events of one room published from one instance reach every subscribed instance in publish
  order.
- The handler set with `set_handler` is called on the event loop, once per event, only for
  rooms this instance subscribed to (or for presence events naming such a room), except
  `rooms` and `logout` events (`INSTANCE_WIDE`), which are for users or connections rather
  than a room: every instance's handler gets each one, subscribed or not, because any
  instance may hold those connections.
- After the broker lost events it could not deliver (its connection dropped and came back),
  it calls the callback set with `set_resync`, once it is receiving again: the hub then
  re-reads every live room from the store, so quiet rooms recover too.
- `subscribe`/`unsubscribe` are interest declarations; the hub reference-counts local members
  and calls them only for its first and last local subscriber of a room.
- Presence: `connection_opened` returns True when it was the user's first connection anywhere;
  `connection_closed` returns True when it was the last one. `online_users` answers which
  users have a connection open anywhere now (a snapshot; the changes above keep it current).
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import orjson

# The longest a publishing instance's own subscribers wait for an event (seconds).
LOCAL_DELIVERY_MAX = 0.005

# "read": a user's read position moved (chatserver.reads); delivered only to that user's
# subscriptions of the room, never stored in the room's log, no seq.
# "rooms": a room was added for some users (chatserver.room_announce); delivered to those
# users' connections whatever they joined, never stored, no seq, no room.
# "logout": a token was revoked (POST /api/logout, chatserver.credentials); every instance
# closes the connections that token authenticated. Its `key` is the token's hash (never the
# token), its frame empty; no seq, no room.
# "file_updated": a file's thumbnail was made after its message was posted
# (chatserver.uploads); delivered to the room's live subscriptions, never stored, no seq.
EventKind = Literal["message", "typing", "stream", "presence", "read", "rooms", "logout",
                    "file_updated"]
# Kinds for every instance, subscribed to a room or not: they concern users or connections,
# and any instance may hold those.
INSTANCE_WIDE: frozenset[str] = frozenset(("rooms", "logout"))


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened in a room, with the frame every recipient gets, encoded once."""

    kind: EventKind
    room: str
    frame: bytes
    seq: int = 0  # message events: the stored seq
    user: str = ""  # who caused it (typing is not echoed to that user's connections)
    rooms: tuple[str, ...] = ()  # presence events: every room of the user
    # Back-pressure key: a stream delta's "d:<stream>" (a slow reader's queued deltas with the
    # same key are joined), a typing or presence event's "t:<room>:<user>" / "p:<user>" (a
    # queued one is superseded by the next). Empty: the frame must be delivered as it is.
    # A `read` event's is the connection that moved the position, which the hub skips; a
    # `logout` event's is the revoked token's hash.
    key: str = ""
    # `rooms` events: the users whose connections get the frame; empty: every connected
    # user's but `user`'s (a public room, announced to everyone but its creator).
    users: tuple[str, ...] = ()
    # `time.monotonic()` when this instance received what caused the event (a client's
    # `send`), for the delivery-latency histogram; 0 when unknown. Never sent to other
    # instances: their clocks are not this one's.
    received: float = 0.0


EventHandler = Callable[[Event], None]


def presence_event(user: str, status: str, rooms: Sequence[str]) -> Event:
    """The one shape of a presence change, whoever notices it (a connection, or the broker
    finding a crashed instance's users gone)."""
    frame = orjson.dumps({"op": "presence", "user": user, "status": status})
    return Event("presence", "", frame, user=user, rooms=tuple(rooms), key=f"p:{user}")


class Broker(abc.ABC):
    def __init__(self) -> None:
        self._handler: EventHandler | None = None
        self._resync: Callable[[], None] | None = None

    def set_handler(self, handler: EventHandler) -> None:
        self._handler = handler

    def set_resync(self, callback: Callable[[], None]) -> None:
        self._resync = callback

    def counters(self) -> dict[str, int]:
        """Counters for /metrics: `published`, `dropped`, `received` (events to and from
        other instances) and `reconnects`; empty for a broker with no other instances."""
        return {}

    @abc.abstractmethod
    async def open(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def ping(self) -> None:
        """Raise if the broker is unreachable (for /readyz)."""

    @abc.abstractmethod
    async def subscribe(self, room: str) -> None: ...

    @abc.abstractmethod
    async def unsubscribe(self, room: str) -> None: ...

    @abc.abstractmethod
    def publish(self, event: Event) -> None:
        """Hand the event to every subscribed instance (this one included); never waits."""

    @abc.abstractmethod
    async def connection_opened(self, user: str, conn_id: str) -> bool: ...

    @abc.abstractmethod
    async def connection_closed(self, user: str, conn_id: str) -> bool: ...

    @abc.abstractmethod
    async def online_users(self, users: Sequence[str]) -> set[str]:
        """Which of `users` have a connection open anywhere now; raises `BrokerUnavailable`
        when that cannot be known (a client shown a guess would show people wrongly)."""
