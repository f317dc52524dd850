"""Sans-I/O wire protocol: client frames in, typed commands out; server frames as bytes.

Nothing here touches a socket or the event loop. `parse_command` turns the text of one client
frame into a command or raises a `ChatError` (with the frame's `ref` when it could be read), so
the caller can answer with an `error` frame and keep the connection. Server frames are encoded
once with orjson; the bytes are what every recipient's outbox holds.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Final

import orjson

from chatserver import event_commands
from chatserver.errors import BadRequest, ChatError, TooLarge, UnknownOp
from chatserver.store.base import RoomListing, StoredFile, StoredMessage

ROOM_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
# Lower case only, so "Alice" and "alice" can never be two people; login lower-cases input.
USER_NAME: Final = re.compile(r"[a-z0-9][a-z0-9_.-]{0,31}")
MAX_REF_CHARS: Final = 64
MAX_STREAM_ID_CHARS: Final = 64
# JavaScript's largest exact integer: a seq above it could not be a real seq, and it keeps
# every value representable in SQLite's and PostgreSQL's 64-bit integers.
MAX_SEQ: Final = 2**53 - 1
HISTORY_DEFAULT_LIMIT: Final = 50
HISTORY_MAX_LIMIT: Final = 200


@dataclass(frozen=True, slots=True)
class Join:
    ref: str | None
    room: str
    after: int | None


@dataclass(frozen=True, slots=True)
class Leave:
    ref: str | None
    room: str


@dataclass(frozen=True, slots=True)
class Send:
    ref: str | None
    room: str
    text: str
    thread: int | None = None  # a reply: the root's seq (§10 "Threads")


@dataclass(frozen=True, slots=True)
class History:
    ref: str | None
    room: str
    before: int | None
    after: int | None
    limit: int
    thread: int | None = None  # that thread's replies instead of the room's messages


@dataclass(frozen=True, slots=True)
class Typing:
    ref: str | None
    room: str


@dataclass(frozen=True, slots=True)
class StreamStart:
    ref: str | None
    room: str
    thread: int | None = None  # the stream's message is a reply: the root's seq (§10)


@dataclass(frozen=True, slots=True)
class StreamDelta:
    ref: str | None
    stream: str
    text: str


@dataclass(frozen=True, slots=True)
class StreamEnd:
    ref: str | None
    stream: str


@dataclass(frozen=True, slots=True)
class Ping:
    ref: str | None


@dataclass(frozen=True, slots=True)
class Read:
    """The user has read `room` up to `seq` (§10 "Mentions and read positions")."""

    ref: str | None
    room: str
    seq: int


Command = (Join | Leave | Send | History | Typing | StreamStart | StreamDelta | StreamEnd | Ping
           | event_commands.EventCommand  # edit, delete, react: §10 room events
           | Read)  # §10 read positions


class FrameError(Exception):
    """The error for one bad frame together with the `ref` it carried, when readable."""

    def __init__(self, error: ChatError, ref: str | None) -> None:
        super().__init__(error.message)
        self.error = error
        self.ref = ref


def parse_command(data: str | bytes, max_message_bytes: int) -> Command:
    """Parse one client text frame; raise `FrameError` naming the problem."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise FrameError(BadRequest("frame is not valid JSON"), None) from None
    if not isinstance(obj, dict):
        kind = type(obj).__name__
        raise FrameError(BadRequest(f"frame must be a JSON object, got {kind}"), None)
    ref = _ref(obj)
    try:
        return _command(obj, ref, max_message_bytes)
    except ChatError as error:
        raise FrameError(error, ref) from None


def _ref(obj: dict[str, Any]) -> str | None:
    ref = obj.get("ref")
    if ref is None:
        return None
    if not isinstance(ref, str) or len(ref) > MAX_REF_CHARS:
        problem = f"'ref' must be a string of at most {MAX_REF_CHARS} characters"
        raise FrameError(BadRequest(problem), None)
    return ref


def _command(obj: dict[str, Any], ref: str | None, max_bytes: int) -> Command:
    op = obj.get("op")
    if not isinstance(op, str):
        raise BadRequest("frame needs a string field 'op'")
    if op == "send":
        return Send(ref, _room(obj), _text(obj, max_bytes), _seq(obj, "thread"))
    if op == "join":
        return Join(ref, _room(obj), _seq(obj, "after"))
    if op == "leave":
        return Leave(ref, _room(obj))
    if op == "history":
        before, after = _seq(obj, "before"), _seq(obj, "after")
        if before is not None and after is not None:
            raise BadRequest("'history' takes 'before' or 'after', not both")
        return History(ref, _room(obj), before, after, _limit(obj), _seq(obj, "thread"))
    if op == "typing":
        return Typing(ref, _room(obj))
    if op == "ping":
        return Ping(ref)
    if op == "stream_start":
        return StreamStart(ref, _room(obj), _seq(obj, "thread"))
    if op == "stream_delta":
        return StreamDelta(ref, _stream(obj), _text(obj, max_bytes))
    if op == "stream_end":
        return StreamEnd(ref, _stream(obj))
    if op in event_commands.OPS:  # §10 room events; the room, seq and text rules are these
        text = _text(obj, max_bytes) if op == "edit" else ""
        return event_commands.parse(op, obj, ref, _room(obj), _seq(obj, "seq"), text)
    if op == "read":
        return _read(obj, ref)
    raise UnknownOp(f"unknown op {op[:40]!r}; see the protocol for the list of ops")


def _read(obj: dict[str, Any], ref: str | None) -> Read:
    seq = _seq(obj, "seq")
    if seq is None:
        raise BadRequest(f"'read' needs an integer field 'seq' from 0 to {MAX_SEQ}")
    return Read(ref, _room(obj), seq)


def _room(obj: dict[str, Any]) -> str:
    room = obj.get("room")
    if not isinstance(room, str):
        raise BadRequest("frame needs a string field 'room'")
    if not ROOM_NAME.fullmatch(room):
        raise BadRequest("'room' must match ^[a-z0-9][a-z0-9_-]{0,63}$")
    return room


def _text(obj: dict[str, Any], max_bytes: int) -> str:
    text = obj.get("text")
    if not isinstance(text, str):
        raise BadRequest("frame needs a string field 'text'")
    return check_text(text, max_bytes)


def check_text(text: str, max_bytes: int) -> str:
    """Validate message text for every path (WebSocket, HTTP): 1..max_bytes UTF-8 bytes."""
    if not text:
        raise BadRequest("'text' must not be empty")
    if "\x00" in text:  # PostgreSQL text cannot hold NUL; refuse it on every backend alike
        raise BadRequest("'text' must not contain NUL characters")
    # len(str) bounds the UTF-8 size from below; encode only when it could be over.
    if len(text) * 4 > max_bytes:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise BadRequest("'text' is not valid UTF-8 (lone surrogate)") from None
        if size > max_bytes:
            raise TooLarge(f"'text' is {size} bytes; the limit is {max_bytes}")
    return text


def _stream(obj: dict[str, Any]) -> str:
    stream = obj.get("stream")
    if not isinstance(stream, str) or not stream or len(stream) > MAX_STREAM_ID_CHARS:
        raise BadRequest(f"frame needs a string field 'stream' (1..{MAX_STREAM_ID_CHARS} chars)")
    return stream


def _seq(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is None:
        return None
    # bool is an int subclass: the exact type check rejects it.
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise BadRequest(f"'{key}' must be an integer seq from 0 to {MAX_SEQ}")
    return value


def _limit(obj: dict[str, Any]) -> int:
    value = obj.get("limit", HISTORY_DEFAULT_LIMIT)
    if type(value) is not int or not 1 <= value <= HISTORY_MAX_LIMIT:
        raise BadRequest(f"'limit' must be an integer from 1 to {HISTORY_MAX_LIMIT}")
    return value


# -- server frames ---------------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def message_body(message: StoredMessage) -> dict[str, Any]:
    body: dict[str, Any] = {
        "op": "message",
        "room": message.room,
        "seq": message.seq,
        "id": message.id,
        "user": message.user,
        "text": message.text,
        "html": message.html,
        "ts": message.ts,
    }
    if message.stream is not None:
        body["stream"] = message.stream
        if message.aborted:
            body["aborted"] = True
    if message.file is not None:
        body["file"] = file_body(message.file)
    if message.edited is not None:  # current state after room events (§10)
        body["edited"] = message.edited
    if message.deleted:
        body["deleted"] = True
    if message.reactions:
        body["reactions"] = [{"emoji": r.emoji, "count": r.count, "users": list(r.users)}
                             for r in message.reactions]
    body.update(thread_fields(message))
    if message.mentions:  # §10 "Mentions and read positions"
        body["mentions"] = list(message.mentions)
    if message.mentions_room:
        body["mentions_room"] = True
    return body


def thread_fields(message: StoredMessage) -> dict[str, Any]:
    """A reply's `thread`; a root's `replies` and `last_reply` where read (§10 "Threads")."""
    fields: dict[str, Any] = {}
    if message.thread is not None:
        fields["thread"] = message.thread
    if message.replies is not None:
        fields["replies"] = message.replies.count
        fields["last_reply"] = message.replies.last
    return fields


def file_body(file: StoredFile) -> dict[str, Any]:
    """A message's `file` (docs/protocol.md §10, "Files"); `thumbnail_url` once one exists."""
    body: dict[str, Any] = {
        "id": file.id,
        "name": file.name,
        "size": file.size,
        "content_type": file.content_type,
        "url": f"/api/files/{file.id}",
    }
    if file.thumbnail == "ready":
        body["thumbnail_url"] = f"/api/files/{file.id}/thumbnail"
    return body


def room_body(listing: RoomListing) -> dict[str, Any]:
    """A room as one user sees it: the body of POST /api/rooms and /api/direct, the base of
    each GET /api/rooms item, and the `room` of a `room_added` frame."""
    room = listing.room
    body: dict[str, Any] = {"name": room.name, "kind": room.kind, "private": room.private,
                            "member": listing.member, "seq": listing.last_seq}
    if room.kind == "direct":
        body["members"] = list(listing.members)
    return body


def message_frame(message: StoredMessage) -> bytes:
    """The `message` frame, encoded once per message and shared by every recipient."""
    return orjson.dumps(message_body(message))


def ack_frame(ref: str | None, message: StoredMessage) -> bytes:
    return orjson.dumps(
        {"op": "ack", "ref": ref, "room": message.room, "seq": message.seq, "id": message.id,
         "ts": message.ts}
    )


def error_frame(code: str, message: str, ref: str | None, **extra: Any) -> bytes:
    return orjson.dumps({"op": "error", "ref": ref, "code": code, "message": message, **extra})


def error_frame_for(error: ChatError, ref: str | None) -> bytes:
    return error_frame(error.code, error.message, ref, **error.extra)


def join_stream_deltas(first: bytes, second: bytes) -> bytes:
    """One `stream_delta` frame carrying the text of two consecutive deltas of one stream."""
    joined = orjson.loads(first)
    joined["text"] += orjson.loads(second)["text"]
    return orjson.dumps(joined)


def pong_frame(ref: str | None) -> bytes:
    return orjson.dumps({"op": "pong", "ref": ref, "ts": now_iso()})


def now_iso() -> str:
    now = time.time()
    ms = int(now * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{ms:03d}Z"
