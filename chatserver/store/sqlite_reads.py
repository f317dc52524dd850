"""The SQLite store's mentions and read positions (migration 0008).

The writes run in the writer's transaction (`insert_mentions` inside the append's job, so a
message and its mentions commit together); the reads on a reader connection.
"""

from __future__ import annotations

import sqlite3

from chatserver.errors import NotFound
from chatserver.store.base import NewMessage, ReadState, StoredMessage
from chatserver.store.reads_sql import (
    PAGE_MENTIONS_SQLITE,
    READ_STATES_SQLITE,
    attach_mentions,
    mention_rows,
    read_states_of,
)


def insert_mentions(conn: sqlite3.Connection, message: NewMessage, seq: int) -> None:
    ids = mention_rows(message)
    if ids:
        conn.executemany(
            "INSERT OR IGNORE INTO message_mentions (room_id, seq, user_id) VALUES (?, ?, ?)",
            [(message.room_id, seq, user_id) for user_id in ids],
        )


def with_mentions(conn: sqlite3.Connection, room_id: int, messages: list[StoredMessage]
                  ) -> list[StoredMessage]:
    """A history page with its mentions: one indexed range query."""
    if not messages:
        return messages
    rows = conn.execute(
        PAGE_MENTIONS_SQLITE, (room_id, messages[0].seq, messages[-1].seq)
    ).fetchall()
    return attach_mentions(messages, rows)


def user_ids(conn: sqlite3.Connection, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    marks = ", ".join("?" * len(names))
    rows = conn.execute(f"SELECT name, id FROM users WHERE name IN ({marks})", names)
    return {name: user_id for name, user_id in rows}


def set_read(conn: sqlite3.Connection, user_id: int, room_id: int, seq: int
             ) -> tuple[int, bool]:
    """Runs in the writer, so the read-compare-write below cannot interleave with another."""
    row = conn.execute("SELECT last_seq FROM rooms WHERE id = ?", (room_id,)).fetchone()
    if row is None:
        raise NotFound("no such room")
    target = min(seq, row[0])
    old_row = conn.execute(
        "SELECT seq FROM read_positions WHERE user_id = ? AND room_id = ?", (user_id, room_id)
    ).fetchone()
    old = old_row[0] if old_row else 0
    if target <= old:
        return old, False
    conn.execute(
        "INSERT INTO read_positions (user_id, room_id, seq) VALUES (?, ?, ?)"
        " ON CONFLICT (user_id, room_id) DO UPDATE SET seq = excluded.seq",
        (user_id, room_id, target),
    )
    return target, True


def read_states(conn: sqlite3.Connection, user_id: int) -> dict[int, ReadState]:
    # One read transaction: every room's counts from one snapshot.
    conn.execute("BEGIN")
    try:
        rows = conn.execute(READ_STATES_SQLITE, (user_id,)).fetchall()
    finally:
        conn.execute("COMMIT")
    return read_states_of(rows)


__all__ = ["insert_mentions", "read_states", "set_read", "user_ids", "with_mentions"]
