"""The PostgreSQL store's mentions and read positions (migration 0008).

Mentions are inserted by the append batch's own statement (`mentioned` in postgres_writer),
so a message and its mentions commit together; `with_mentions` gives a history page its
mentions on the connection that read the page. `SET_READ` is one statement: atomic on its
own, so two connections of one user moving the same position cannot move it backwards.
"""

from __future__ import annotations

from typing import Any

from chatserver.store.base import ReadState, StoredMessage
from chatserver.store.reads_sql import (
    PAGE_MENTIONS_POSTGRES,
    READ_STATES_POSTGRES,
    attach_mentions,
    read_states_of,
)

# ($1 user, $2 room, $3 seq) -> (room's latest seq or NULL for no room, the position before,
# the new position when it moved). Clamped to the room's latest seq; only ever raised (the
# WHERE of the upsert). The sub-selects read the statement's snapshot: the position before.
SET_READ = """
WITH target AS (
    SELECT least($3::bigint, last_seq) AS seq FROM rooms WHERE id = $2
), moved AS (
    INSERT INTO read_positions (user_id, room_id, seq)
    SELECT $1, $2, t.seq FROM target t WHERE t.seq > 0
    ON CONFLICT (user_id, room_id) DO UPDATE SET seq = excluded.seq
    WHERE read_positions.seq < excluded.seq
    RETURNING seq
)
SELECT (SELECT seq FROM target),
       (SELECT seq FROM read_positions WHERE user_id = $1 AND room_id = $2),
       (SELECT seq FROM moved)
"""


async def with_mentions(conn: Any, room_id: int, messages: list[StoredMessage]
                        ) -> list[StoredMessage]:
    """A history page with its mentions: one indexed range query."""
    if not messages:
        return messages
    rows = await conn.fetch(PAGE_MENTIONS_POSTGRES, room_id, messages[0].seq, messages[-1].seq)
    return attach_mentions(messages, [tuple(row) for row in rows])


async def user_ids(conn: Any, names: list[str]) -> dict[str, int]:
    if not names:
        return {}
    rows = await conn.fetch("SELECT name, id FROM users WHERE name = ANY($1::text[])", names)
    return {row[0]: row[1] for row in rows}


async def read_states(conn: Any, user_id: int) -> dict[int, ReadState]:
    rows = await conn.fetch(READ_STATES_POSTGRES, user_id)
    return read_states_of([tuple(row) for row in rows])


__all__ = ["SET_READ", "read_states", "user_ids", "with_mentions"]
