"""The Redis broker's wire format (`chatserver.broker.redis_wire`): pure encode/decode."""

from __future__ import annotations

import orjson
import pytest

from chatserver.broker.base import Event
from chatserver.broker.redis_wire import (
    Channels,
    Envelope,
    WireError,
    decode,
    encode_event,
    encode_resync,
)

EVENTS = [
    Event("message", "general", b'{"op":"message","seq":3}', seq=3, user="alice"),
    Event("typing", "general", b'{"op":"typing"}', user="bob", key="t:general:bob"),
    Event("stream", "dev-ops_2", b'{"op":"stream_delta","text":"x"}', key="d:s1"),
    Event("presence", "", b'{"op":"presence"}', user="carol", rooms=("a", "b"), key="p:carol"),
    Event("rooms", "", b'{"op":"room_added"}', users=("alice", "bob")),
    Event("rooms", "", b'{"op":"room_added"}', user="carol"),  # everyone but carol
    Event("logout", "", b"", key="9f86d081884c7d659a2feaa0c55ad015"),  # a token's hash
    Event("file_updated", "general", b'{"op":"file_updated","target":4}'),
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.kind)
def test_every_event_kind_round_trips(event: Event) -> None:
    """Decoding an encoded event gives back the same event and its origin."""
    assert decode(encode_event(event, "inst-1")) == Envelope("inst-1", event)


def test_frame_bytes_are_carried_unchanged() -> None:
    """The frame follows the header line byte for byte, newlines and binary included."""
    frame = b"line\nbreak\n\n\x00\xff" + "\u2603".encode()
    payload = encode_event(Event("message", "r", frame, seq=1), "i")
    assert payload.endswith(b"\n" + frame)
    envelope = decode(payload)
    assert envelope.event is not None and envelope.event.frame == frame


def test_empty_frame_round_trips() -> None:
    """An empty frame is still an event."""
    envelope = decode(encode_event(Event("typing", "r", b""), "i"))
    assert envelope.event == Event("typing", "r", b"")


def test_header_is_one_compact_json_line_without_defaults() -> None:
    """The header is JSON on one line and leaves out fields at their defaults."""
    payload = encode_event(Event("typing", "general", b"{}"), "i")
    head, _, _ = payload.partition(b"\n")
    assert orjson.loads(head) == {"v": 1, "k": "typing", "o": "i", "r": "general"}


def test_resync_request_round_trips() -> None:
    """A resync request decodes to its origin and no event."""
    assert decode(encode_resync("inst-9")) == Envelope("inst-9", None)


def test_channels() -> None:
    """Room events go to their room's channel; presence, `rooms` and `logout` events (for
    users or connections, not a room) to the instance-wide presence channel."""
    channels = Channels(0)
    assert channels.room("general") == b"chat:0:room:general"
    assert channels.of(EVENTS[0]) == b"chat:0:room:general"
    assert channels.of(EVENTS[3]) == channels.presence == b"chat:0:presence"
    assert channels.of(EVENTS[4]) == channels.of(EVENTS[5]) == channels.presence
    assert channels.of(EVENTS[6]) == channels.presence


def test_a_logout_event_carries_the_token_hash_in_its_header() -> None:
    """A `logout` event's payload is its header line alone, the hash under `ky`."""
    payload = encode_event(EVENTS[6], "i")
    head, newline, frame = payload.partition(b"\n")
    assert newline and frame == b""
    assert orjson.loads(head) == {"v": 1, "k": "logout", "o": "i", "r": "",
                                  "ky": "9f86d081884c7d659a2feaa0c55ad015"}


def test_channel_names_carry_the_database() -> None:
    """Clusters on different databases of one server publish on different channels."""
    assert Channels(3).room("general") == b"chat:3:room:general"
    assert Channels(3).presence != Channels(0).presence


@pytest.mark.parametrize("payload", [
    b"no header line",
    b"not json\n{}",
    b"[1,2]\n{}",
    b'{"v":2,"k":"message","o":"i","r":"r"}\n{}',
    b'{"k":"message","o":"i","r":"r"}\n{}',
    b'{"v":1,"k":"shout","o":"i","r":"r"}\n{}',
    b'{"v":1,"k":"message","r":"r"}\n{}',
    b'{"v":1,"k":"message","o":"","r":"r"}\n{}',
    b'{"v":1,"k":"message","o":"i","r":5}\n{}',
    b'{"v":1,"k":"message","o":"i","r":"r","s":"7"}\n{}',
    b'{"v":1,"k":"message","o":"i","r":"r","s":true}\n{}',
    b'{"v":1,"k":"presence","o":"i","r":"","rs":"general"}\n{}',
    b'{"v":1,"k":"presence","o":"i","r":"","rs":[1]}\n{}',
    b'{"v":1,"k":"typing","o":"i","r":"r","u":null}\n{}',
    b'{"v":1,"k":"rooms","o":"i","r":"","us":"alice"}\n{}',
    b'{"v":1,"k":"rooms","o":"i","r":"","us":[null]}\n{}',
], ids=lambda p: p[:40].decode(errors="replace"))
def test_unreadable_payloads_raise_wire_error(payload: bytes) -> None:
    """Anything that is not a well-formed version-1 payload raises WireError."""
    with pytest.raises(WireError):
        decode(payload)
