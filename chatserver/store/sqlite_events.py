"""The SQLite store's room events (migration 0006): edits, deletions, reactions.

Each write is a job of the writer thread (`SqliteWriter`): it runs under the write lock, in the
batch transaction, so an event takes the room's next seq from `rooms.last_seq` exactly like an
append, and its checks (author, not deleted, reaction present) see every earlier write.
Reads run on a reader connection.
"""

from __future__ import annotations

import dataclasses
import sqlite3
import time
from typing import Any

from chatserver.errors import Forbidden, NotFound
from chatserver.store.base import (
    REACTION_USERS_MAX,
    Reaction,
    RoomEvent,
    RoomEventKind,
    StoredMessage,
    User,
    format_ts,
)

_INSERT_EVENT = (
    "INSERT INTO events (room_id, seq, kind, target_seq, user_id, user_name, emoji, added, ts)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# An edit's frame carries the message's (current) text: the log keeps no copy of it.
_EVENTS_AFTER = (
    "SELECT e.seq, e.kind, e.target_seq, e.user_name, e.emoji, e.added, e.ts, m.text, m.html,"
    " r.name FROM events e JOIN rooms r ON r.id = e.room_id"
    " JOIN messages m ON m.room_id = e.room_id AND m.seq = e.target_seq"
    " WHERE e.room_id = ? AND e.seq > ? ORDER BY e.seq LIMIT ?"
)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _one(conn: sqlite3.Connection, sql: str, params: tuple[Any, ...]) -> Any:
    rows = conn.execute(sql, params).fetchall()  # stepped to completion (see sqlite._one)
    return rows[0] if rows else None


def _target(conn: sqlite3.Connection, room_id: int, target: int) -> int:
    """The author's id of the room's live message `target`; `NotFound` otherwise."""
    row = _one(
        conn, "SELECT user_id, deleted FROM messages WHERE room_id = ? AND seq = ?",
        (room_id, target),
    )
    if row is None or row[1]:
        raise NotFound(f"no message with seq {target} in this room")
    return int(row[0])


def _check_author(author: int, actor: User) -> None:
    if author != actor.id and not actor.is_admin:
        raise Forbidden("only its author or an admin may change a message")


def _next_seq(
    conn: sqlite3.Connection, room_id: int, kind: RoomEventKind, target: int, actor: User,
    emoji: str | None = None, added: bool = False,
) -> tuple[int, str, int]:
    """Allocate the room's next seq and log the event under it: (seq, room name, ts)."""
    row = _one(
        conn,
        "UPDATE rooms SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq, name",
        (room_id,),
    )
    if row is None:
        raise NotFound("no such room")
    ts = _now_ms()
    conn.execute(
        _INSERT_EVENT,
        (room_id, row[0], kind, target, actor.id, actor.name, emoji, int(added), ts),
    )
    return int(row[0]), str(row[1]), ts


def edit(
    conn: sqlite3.Connection, room_id: int, target: int, actor: User, text: str, html: str
) -> RoomEvent:
    _check_author(_target(conn, room_id, target), actor)
    seq, room, ts = _next_seq(conn, room_id, "edited", target, actor)
    # The search index follows by 0003's UPDATE trigger.
    conn.execute(
        "UPDATE messages SET text = ?, html = ?, edited_at = ? WHERE room_id = ? AND seq = ?",
        (text, html, ts, room_id, target),
    )
    return RoomEvent(room, seq, "edited", target, actor.name, format_ts(ts), text, html)


def delete(
    conn: sqlite3.Connection, room_id: int, target: int, actor: User
) -> tuple[RoomEvent, tuple[str, ...]]:
    _check_author(_target(conn, room_id, target), actor)
    seq, room, ts = _next_seq(conn, room_id, "deleted", target, actor)
    # Overwritten, not flagged: the text is gone from the row (and, by 0003's UPDATE trigger,
    # from the search index).
    conn.execute(
        "UPDATE messages SET text = '', html = '', deleted = 1 WHERE room_id = ? AND seq = ?",
        (room_id, target),
    )
    conn.execute(
        "DELETE FROM reactions WHERE room_id = ? AND target_seq = ?", (room_id, target)
    )
    files = conn.execute(
        "DELETE FROM files WHERE room_id = ? AND seq = ? RETURNING id", (room_id, target)
    ).fetchall()
    event = RoomEvent(room, seq, "deleted", target, actor.name, format_ts(ts))
    return event, tuple(row[0] for row in files)


def react(
    conn: sqlite3.Connection, room_id: int, target: int, actor: User, emoji: str, add: bool
) -> RoomEvent | None:
    _target(conn, room_id, target)
    key = (room_id, target, emoji, actor.id)
    present = _one(
        conn,
        "SELECT 1 FROM reactions WHERE room_id = ? AND target_seq = ? AND emoji = ?"
        " AND user_id = ?",
        key,
    )
    if (present is not None) == add:
        return None  # nothing changes: no seq, no event
    seq, room, ts = _next_seq(conn, room_id, "reaction", target, actor, emoji, add)
    if add:
        conn.execute(
            "INSERT INTO reactions (room_id, target_seq, emoji, user_id, user_name, created_seq)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (*key, actor.name, seq),
        )
    else:
        conn.execute(
            "DELETE FROM reactions WHERE room_id = ? AND target_seq = ? AND emoji = ?"
            " AND user_id = ?",
            key,
        )
    return RoomEvent(room, seq, "reaction", target, actor.name, format_ts(ts), emoji=emoji,
                     added=add)


def remove_through(conn: sqlite3.Connection, room_id: int, bound: int) -> None:
    """Retention: remove the events and reactions of the room's messages up to seq `bound`
    (which it removes in the same transaction)."""
    for table in ("events", "reactions"):
        conn.execute(f"DELETE FROM {table} WHERE room_id = ? AND target_seq <= ?",
                     (room_id, bound))


def with_state(
    conn: sqlite3.Connection, room_id: int, messages: list[StoredMessage]
) -> list[StoredMessage]:
    """`messages` (one room's, ascending) with their edit time, deletion and reactions."""
    if not messages:
        return messages
    bounds = (room_id, messages[0].seq, messages[-1].seq)
    states = {
        row[0]: (row[1], bool(row[2]))
        for row in conn.execute(
            "SELECT seq, edited_at, deleted FROM messages WHERE room_id = ?"
            " AND seq BETWEEN ? AND ? AND (edited_at IS NOT NULL OR deleted <> 0)",
            bounds,
        )
    }
    reactions = aggregate(conn.execute(
        "SELECT target_seq, emoji, user_name FROM reactions WHERE room_id = ?"
        " AND target_seq BETWEEN ? AND ? ORDER BY target_seq, created_seq",
        bounds,
    ).fetchall())
    return apply_state(messages, states, reactions)


def apply_state(
    messages: list[StoredMessage],
    states: dict[int, tuple[int | None, bool]],
    reactions: dict[int, tuple[Reaction, ...]],
) -> list[StoredMessage]:
    """`messages` with the (edited_at, deleted) `states` and `reactions` of their seqs (both
    backends read the same shapes)."""
    if not states and not reactions:
        return messages
    result = []
    for message in messages:
        state = states.get(message.seq)
        found = reactions.get(message.seq)
        if state is not None or found:
            edited = format_ts(state[0]) if state and state[0] is not None else None
            message = dataclasses.replace(
                message, edited=edited, deleted=bool(state and state[1]),
                reactions=found or (),
            )
        result.append(message)
    return result


def aggregate(rows: list[Any]) -> dict[int, tuple[Reaction, ...]]:
    """(target seq, emoji, user) rows in order of reacting -> each message's reactions, by
    first use, with exact counts and the first users."""
    grouped: dict[int, dict[str, list[str]]] = {}
    for target, emoji, user in rows:
        grouped.setdefault(target, {}).setdefault(emoji, []).append(user)
    return {
        target: tuple(
            Reaction(emoji, len(users), tuple(users[:REACTION_USERS_MAX]))
            for emoji, users in emojis.items()
        )
        for target, emojis in grouped.items()
    }


def event_from_row(row: Any) -> RoomEvent:
    """A row of `_EVENTS_AFTER` (or postgres_events' twin) as a `RoomEvent`."""
    kind = row[1]
    return RoomEvent(
        room=row[9], seq=row[0], kind=kind, target=row[2], user=row[3], ts=format_ts(row[6]),
        text=row[7] if kind == "edited" else "", html=row[8] if kind == "edited" else "",
        emoji=row[4] or "", added=bool(row[5]),
    )


def events_after(conn: sqlite3.Connection, room_id: int, after: int, limit: int
                 ) -> list[RoomEvent]:
    rows = conn.execute(_EVENTS_AFTER, (room_id, after, limit)).fetchall()
    return [event_from_row(row) for row in rows]


__all__ = ["aggregate", "apply_state", "delete", "edit", "event_from_row", "events_after", "react",
           "remove_through", "with_state"]
