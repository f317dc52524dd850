"""The PostgreSQL store's threads (migration 0007; docs/protocol.md §10, "Threads").

Reads only: a reply's `thread` is written by the writer's batch statement with the rest of its
row. Every function runs on the connection of a `PostgresStore` read, so a history page gets
its threads on the connection (and in the round trips' order) that read the page.
"""

from __future__ import annotations

from typing import Any

from chatserver.store.base import StoredMessage, ThreadRoot
from chatserver.store.threads_sql import attach_threads

# One statement, so the page's thread columns and its roots' reply counts are one snapshot.
# Kind 0 rows: the page's replies (seq, root). Kind 1 rows: the page's roots (root, count,
# last reply), from the (room_id, thread, seq) index: one grouped lookup per page.
_PAGE_THREADS = (
    "SELECT 0, seq, thread, NULL::bigint FROM messages"
    " WHERE room_id = $1 AND seq BETWEEN $2 AND $3 AND thread IS NOT NULL"
    " UNION ALL"
    " SELECT 1, thread, count(*), max(seq) FROM messages"
    " WHERE room_id = $1 AND thread BETWEEN $2 AND $3 GROUP BY thread"
)

# `deleted` is migration 0006's flag (§10 "Edits and deletions").
_ROOT = "SELECT seq, thread, deleted FROM messages WHERE room_id = $1 AND seq = $2"


async def with_threads(
    conn: Any, room_id: int, messages: list[StoredMessage]
) -> list[StoredMessage]:
    """`messages` (one room's, ascending) with each reply's `thread` and each root's
    `replies` filled in."""
    if not messages:
        return messages
    rows = await conn.fetch(_PAGE_THREADS, room_id, messages[0].seq, messages[-1].seq)
    return attach_threads(messages, rows)


async def thread_root(conn: Any, room_id: int, seq: int) -> ThreadRoot | None:
    """The room's message `seq` as a would-be root, or None."""
    row = await conn.fetchrow(_ROOT, room_id, seq)
    if row is None:
        return None
    return ThreadRoot(seq=row[0], thread=row[1], deleted=bool(row[2]))


def page_sql(columns: str, after: bool) -> str:
    """A page of one thread's replies: `columns` as the store's message rows, seq > $3
    ascending (`after`) or seq < $3 descending; parameters room id, root seq, bound, limit."""
    if after:
        where, order = "m.seq > $3", "ORDER BY m.seq"
    else:
        where, order = "m.seq < $3", "ORDER BY m.seq DESC"
    return (
        f"SELECT {columns} FROM messages m JOIN rooms r ON r.id = m.room_id"
        f" WHERE m.room_id = $1 AND m.thread = $2 AND {where} {order} LIMIT $4"
    )


__all__ = ["page_sql", "thread_root", "with_threads"]
