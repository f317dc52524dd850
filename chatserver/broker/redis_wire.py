"""The Redis broker's wire format: pure functions from events to channel names and payloads.

Channels: one per room, `chat:<db>:room:<name>`, and one instance-wide channel,
`chat:<db>:presence`, that every instance subscribes to: it carries presence events, resync
requests, `rooms` events (a room announced to users, wherever their connections are) and
`logout` events (a revoked token's hash: its connections close, wherever they are).
Redis pub/sub ignores the database number, so the names carry it: clusters using different
databases of one server stay apart.

Payload: one header line, then the frame bytes exactly as the publisher encoded them::

    {"v":1,"k":"message","o":"<origin instance>","r":"general","s":124,"u":"alice"}\\n<frame>

The header is compact JSON (orjson never writes a raw newline), so the first b"\\n" ends it and
everything after it is the frame, passed on unchanged: the frame is encoded once, by the
publisher, and receivers hand the same bytes to the hub. Keys left out take their defaults
(`s` 0, `u` "", `rs` [], `ky` "", `us` []). `rs` lists a presence event's rooms; `ky` is the
event's back-pressure key (a `logout` event's token hash); `us` lists a `rooms` event's users.

Besides events, kind `resync` (no frame) tells every other instance that the origin dropped
events it should have published: receivers re-read their live rooms from the store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

import orjson

from chatserver.broker.base import INSTANCE_WIDE, Event, EventKind

VERSION = 1
RESYNC = "resync"

_EVENT_KINDS: frozenset[str] = frozenset(get_args(EventKind))


class WireError(ValueError):
    """A payload this version cannot read (malformed, or from an incompatible version)."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """One decoded payload: who published it and what (`event` None: a resync request)."""

    origin: str
    event: Event | None


@dataclass(frozen=True, slots=True)
class Channels:
    """The channel names of the cluster on one Redis database."""

    db: int = 0

    @property
    def presence(self) -> bytes:
        return b"chat:%d:presence" % self.db

    def room(self, room: str) -> bytes:
        return b"chat:%d:room:%s" % (self.db, room.encode())

    def of(self, event: Event) -> bytes:
        """Presence, `rooms` and `logout` events go to every instance; the others to their
        room's channel."""
        kind = event.kind
        if kind == "presence" or kind in INSTANCE_WIDE:
            return self.presence
        return self.room(event.room)


def encode_event(event: Event, origin: str) -> bytes:
    header: dict[str, Any] = {"v": VERSION, "k": event.kind, "o": origin, "r": event.room}
    if event.seq:
        header["s"] = event.seq
    if event.user:
        header["u"] = event.user
    if event.rooms:
        header["rs"] = event.rooms
    if event.key:
        header["ky"] = event.key
    if event.users:
        header["us"] = event.users
    return b"".join((orjson.dumps(header), b"\n", event.frame))


def encode_resync(origin: str) -> bytes:
    return orjson.dumps({"v": VERSION, "k": RESYNC, "o": origin}) + b"\n"


def decode(payload: bytes) -> Envelope:
    """Split a payload into its origin and event; raise `WireError` if it is not one."""
    head, newline, frame = payload.partition(b"\n")
    if not newline:
        raise WireError("no header line")
    try:
        header = orjson.loads(head)
    except orjson.JSONDecodeError as error:
        raise WireError(f"header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise WireError("header is not an object")
    if header.get("v") != VERSION:
        raise WireError(f"unsupported version {header.get('v')!r}")
    origin = header.get("o")
    kind = header.get("k")
    if not isinstance(origin, str) or not origin:
        raise WireError("no origin")
    if kind == RESYNC:
        return Envelope(origin, None)
    if kind not in _EVENT_KINDS:
        raise WireError(f"unknown kind {kind!r}")
    room = header.get("r", "")
    seq = header.get("s", 0)
    user = header.get("u", "")
    rooms = header.get("rs", [])
    key = header.get("ky", "")
    users = header.get("us", [])
    if (not isinstance(room, str) or not isinstance(user, str) or not isinstance(key, str)
            or not isinstance(seq, int) or isinstance(seq, bool)
            or not _strings(rooms) or not _strings(users)):
        raise WireError("mistyped header field")
    return Envelope(origin, Event(kind, room, frame, seq=seq, user=user, rooms=tuple(rooms),
                                  key=key, users=tuple(users)))


def _strings(value: object) -> bool:
    """A JSON list of strings."""
    return isinstance(value, list) and all(isinstance(item, str) for item in value)
