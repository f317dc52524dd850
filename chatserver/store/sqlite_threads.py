"""The SQLite store's threads (migration 0007; docs/protocol.md §10, "Threads").

Reads only: a reply's `thread` is written by `append_message` with the rest of its row. Every
function runs inside a read job of `SqliteStore`, on that job's connection, so a history page
gets its threads in the same thread hop as the page itself.
"""

from __future__ import annotations

import sqlite3

from chatserver.store.base import StoredMessage, ThreadRoot
from chatserver.store.threads_sql import attach_threads

# One statement, so the page's thread columns and its roots' reply counts are one snapshot.
# Kind 0 rows: the page's replies (seq, root). Kind 1 rows: the page's roots (root, count,
# last reply), from the (room_id, thread, seq) index: one grouped lookup per page.
_PAGE_THREADS = (
    "SELECT 0, seq, thread, NULL FROM messages"
    " WHERE room_id = :room AND seq BETWEEN :lo AND :hi AND thread IS NOT NULL"
    " UNION ALL"
    " SELECT 1, thread, count(*), max(seq) FROM messages"
    " WHERE room_id = :room AND thread BETWEEN :lo AND :hi GROUP BY thread"
)


def with_threads(
    conn: sqlite3.Connection, room_id: int, messages: list[StoredMessage]
) -> list[StoredMessage]:
    """`messages` (one room's, ascending) with each reply's `thread` and each root's
    `replies` filled in."""
    if not messages:
        return messages
    params = {"room": room_id, "lo": messages[0].seq, "hi": messages[-1].seq}
    return attach_threads(messages, conn.execute(_PAGE_THREADS, params).fetchall())


def thread_root(conn: sqlite3.Connection, room_id: int, seq: int) -> ThreadRoot | None:
    """The room's message `seq` as a would-be root, or None. `deleted` is migration 0006's
    flag (§10 "Edits and deletions")."""
    rows = conn.execute(
        "SELECT seq, thread, deleted FROM messages WHERE room_id = ? AND seq = ?",
        (room_id, seq),
    ).fetchall()
    if not rows:
        return None
    return ThreadRoot(seq=rows[0][0], thread=rows[0][1], deleted=bool(rows[0][2]))


def page_sql(columns: str, after: bool) -> str:
    """A page of one thread's replies: `columns` as the store's message rows, seq > ? ascending
    (`after`) or seq < ? descending; parameters room id, root seq, bound, limit."""
    if after:
        where, order = "m.seq > ?", "ORDER BY m.seq"
    else:
        where, order = "m.seq < ?", "ORDER BY m.seq DESC"
    return (
        f"SELECT {columns} FROM messages m JOIN rooms r ON r.id = m.room_id"
        f" WHERE m.room_id = ? AND m.thread = ? AND {where} {order} LIMIT ?"
    )


__all__ = ["page_sql", "thread_root", "with_threads"]
