"""Room events' frames (docs/protocol.md §10, "Room events"), and how a stored one is published.

An event has its room's seq like a message, so it travels like one: published once durable,
as a broker `Event` of kind "message" carrying its seq. The hub's seq tracking (in-order live
delivery, duplicates dropped, a gap re-read from the store with `Store.room_log_after`) and the
Redis wire format then hold for events exactly as for messages.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from chatserver import protocol
from chatserver.broker.base import Broker, Event
from chatserver.store.base import LogEntry, RoomEvent, StoredMessage


def event_body(event: RoomEvent) -> dict[str, Any]:
    body: dict[str, Any] = {
        "op": event.kind, "room": event.room, "seq": event.seq, "target": event.target,
        "user": event.user,
    }
    if event.kind == "edited":
        body["text"] = event.text
        body["html"] = event.html
        body["edited"] = event.ts
    elif event.kind == "reaction":
        body["emoji"] = event.emoji
        body["added"] = event.added
    return body


def event_frame(event: RoomEvent) -> bytes:
    """The event's frame, encoded once and shared by every recipient."""
    return orjson.dumps(event_body(event))


def log_frame(entry: LogEntry) -> bytes:
    """The frame of one item of a room's log: a message or an event."""
    if isinstance(entry, StoredMessage):
        return protocol.message_frame(entry)
    return event_frame(entry)


def ack_frame(ref: str | None, event: RoomEvent) -> bytes:
    body: dict[str, Any] = {"op": "ack", "ref": ref, "room": event.room, "seq": event.seq,
                            "target": event.target}
    if event.kind == "reaction":
        body["changed"] = True
    return orjson.dumps(body)


def unchanged_ack_frame(ref: str | None, room: str, target: int) -> bytes:
    """A `react` that changed nothing: no event, so no seq."""
    return orjson.dumps({"op": "ack", "ref": ref, "room": room, "target": target,
                         "changed": False})


def publish(broker: Broker, event: RoomEvent, received: float = 0.0) -> None:
    """Hand a durable event to the broker, as a seq'd "message" event (see the docstring)."""
    broker.publish(Event("message", event.room, event_frame(event), seq=event.seq,
                         received=received or time.monotonic()))


__all__ = ["ack_frame", "event_body", "event_frame", "log_frame", "publish",
           "unchanged_ack_frame"]
