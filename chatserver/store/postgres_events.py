"""The PostgreSQL store's room events (migration 0006): edits, deletions, reactions.

Each write is one short transaction on a pooled connection (events are rare next to appends,
so they skip the append writer's batching). It locks the room's row `FOR UPDATE` first, as the
append batch does, and only then the target message's row: appends lock room rows and never
an existing message row, retention locks message rows and never a room row, so no two of them
can wait for each other in a cycle. Under the room lock the event takes `last_seq + 1`, so
events and appends of any instance share one gap-free sequence, and the checks (author, not
deleted, reaction present) see every event committed before.
"""

from __future__ import annotations

from typing import Any

from chatserver.errors import Forbidden, NotFound
from chatserver.store.base import RoomEvent, RoomEventKind, StoredMessage, User, format_ts
from chatserver.store.sqlite_events import aggregate, apply_state, event_from_row

_LOCK_ROOM = "SELECT name FROM rooms WHERE id = $1 FOR UPDATE"
_LOCK_TARGET = (
    "SELECT user_id, deleted FROM messages WHERE room_id = $1 AND seq = $2 FOR UPDATE"
)
# clock_timestamp() after the lock, like the append batch: ts never goes back as seq grows.
_BUMP = (
    "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = $1"
    " RETURNING last_seq, floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint"
)
_INSERT_EVENT = (
    "INSERT INTO events (room_id, seq, kind, target_seq, user_id, user_name, emoji, added, ts)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
)
_EVENTS_AFTER = (
    "SELECT e.seq, e.kind, e.target_seq, e.user_name, e.emoji, e.added, e.ts, m.text, m.html,"
    " r.name FROM events e JOIN rooms r ON r.id = e.room_id"
    " JOIN messages m ON m.room_id = e.room_id AND m.seq = e.target_seq"
    " WHERE e.room_id = $1 AND e.seq > $2 ORDER BY e.seq LIMIT $3"
)
_STATES = (
    "SELECT seq, edited_at, deleted FROM messages WHERE room_id = $1"
    " AND seq BETWEEN $2 AND $3 AND (edited_at IS NOT NULL OR deleted)"
)
_REACTIONS = (
    "SELECT target_seq, emoji, user_name FROM reactions WHERE room_id = $1"
    " AND target_seq BETWEEN $2 AND $3 ORDER BY target_seq, created_seq"
)


async def _locked_target(conn: Any, room_id: int, target: int) -> tuple[str, int]:
    """Lock the room, then the live message `target`: (room name, author id)."""
    room = await conn.fetchval(_LOCK_ROOM, room_id)
    if room is None:
        raise NotFound("no such room")
    row = await conn.fetchrow(_LOCK_TARGET, room_id, target)
    if row is None or row[1]:
        raise NotFound(f"no message with seq {target} in this room")
    return str(room), int(row[0])


def _check_author(author: int, actor: User) -> None:
    if author != actor.id and not actor.is_admin:
        raise Forbidden("only its author or an admin may change a message")


async def _log(
    conn: Any, room_id: int, kind: RoomEventKind, target: int, actor: User,
    emoji: str | None = None, added: bool = False,
) -> tuple[int, int]:
    """Take the room's next seq (its row is locked) and log the event: (seq, ts)."""
    seq, ts = await conn.fetchrow(_BUMP, room_id)
    await conn.execute(
        _INSERT_EVENT, room_id, seq, kind, target, actor.id, actor.name, emoji, added, ts
    )
    return int(seq), int(ts)


async def edit(conn: Any, room_id: int, target: int, actor: User, text: str, html: str
               ) -> RoomEvent:
    async with conn.transaction():
        room, author = await _locked_target(conn, room_id, target)
        _check_author(author, actor)
        seq, ts = await _log(conn, room_id, "edited", target, actor)
        # The generated search column (0003) follows the text.
        await conn.execute(
            "UPDATE messages SET text = $3, html = $4, edited_at = $5"
            " WHERE room_id = $1 AND seq = $2",
            room_id, target, text, html, ts,
        )
    return RoomEvent(room, seq, "edited", target, actor.name, format_ts(ts), text, html)


async def delete(conn: Any, room_id: int, target: int, actor: User
                 ) -> tuple[RoomEvent, tuple[str, ...]]:
    async with conn.transaction():
        room, author = await _locked_target(conn, room_id, target)
        _check_author(author, actor)
        seq, ts = await _log(conn, room_id, "deleted", target, actor)
        # Overwritten, not flagged: the text leaves the row and its search column.
        await conn.execute(
            "UPDATE messages SET text = '', html = '', deleted = true"
            " WHERE room_id = $1 AND seq = $2",
            room_id, target,
        )
        await conn.execute(
            "DELETE FROM reactions WHERE room_id = $1 AND target_seq = $2", room_id, target
        )
        files = await conn.fetch(
            "DELETE FROM files WHERE room_id = $1 AND seq = $2 RETURNING id", room_id, target
        )
    event = RoomEvent(room, seq, "deleted", target, actor.name, format_ts(ts))
    return event, tuple(row[0] for row in files)


async def react(conn: Any, room_id: int, target: int, actor: User, emoji: str, add: bool
                ) -> RoomEvent | None:
    key = (room_id, target, emoji, actor.id)
    async with conn.transaction():
        room, _author = await _locked_target(conn, room_id, target)
        present = await conn.fetchval(
            "SELECT true FROM reactions WHERE room_id = $1 AND target_seq = $2 AND emoji = $3"
            " AND user_id = $4",
            *key,
        )
        if bool(present) == add:
            return None  # nothing changes: no seq, no event
        seq, ts = await _log(conn, room_id, "reaction", target, actor, emoji, add)
        if add:
            await conn.execute(
                "INSERT INTO reactions (room_id, target_seq, emoji, user_id, user_name,"
                " created_seq) VALUES ($1, $2, $3, $4, $5, $6)",
                *key, actor.name, seq,
            )
        else:
            await conn.execute(
                "DELETE FROM reactions WHERE room_id = $1 AND target_seq = $2 AND emoji = $3"
                " AND user_id = $4",
                *key,
            )
    return RoomEvent(room, seq, "reaction", target, actor.name, format_ts(ts), emoji=emoji,
                     added=add)


async def events_after(conn: Any, room_id: int, after: int, limit: int) -> list[RoomEvent]:
    rows = await conn.fetch(_EVENTS_AFTER, room_id, after, limit)
    return [event_from_row(row) for row in rows]


async def attach_state(conn: Any, room_id: int, messages: list[StoredMessage]
                       ) -> list[StoredMessage]:
    """`messages` (one room's, ascending) with their edit time, deletion and reactions."""
    if not messages:
        return messages
    bounds = (room_id, messages[0].seq, messages[-1].seq)
    states = {row[0]: (row[1], row[2]) for row in await conn.fetch(_STATES, *bounds)}
    reactions = aggregate([tuple(row) for row in await conn.fetch(_REACTIONS, *bounds)])
    return apply_state(messages, states, reactions)


__all__ = ["attach_state", "delete", "edit", "events_after", "react"]
