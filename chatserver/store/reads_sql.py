"""SQL and row mapping for mentions and read positions (migration 0008), for both backends.

Written once with `{p1}`-style placeholders and formatted per backend (SQLite `?1`,
PostgreSQL `$1`), so the two cannot drift apart: the counts /api/rooms shows must not
depend on the store. `{false}` is how each spells a false `deleted` flag.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from chatserver.store.base import READ_WINDOW, NewMessage, ReadState, StoredMessage

# Per room the caller may read: the read position, then for rooms they are a member of, the
# window of at most READ_WINDOW messages after it (by the primary key: a bounded range scan),
# how many of those are others', and the mentions of them or @room (user_id 0) after it, from
# the mention index, also at most READ_WINDOW. One statement for all the user's rooms. A
# public room they never joined is not counted (they do not follow it; it would also make
# every public room cost a window). The room's latest seq comes from the same snapshot: a
# client adds to the counts only the messages above it, so none is counted twice or missed.
_READ_STATES = """
WITH visible AS (
    SELECT r.id AS room_id, coalesce(rp.seq, 0) AS rs, m.user_id IS NOT NULL AS member,
        r.last_seq AS last_seq
    FROM rooms r
    LEFT JOIN members m ON m.room_id = r.id AND m.user_id = {p1}
    LEFT JOIN read_positions rp ON rp.room_id = r.id AND rp.user_id = {p1}
    WHERE r.kind = 'public' OR m.user_id IS NOT NULL
)
SELECT v.room_id, v.rs,
    CASE WHEN v.member THEN (
        SELECT count(*) FROM (
            SELECT 1 FROM messages w
            WHERE w.room_id = v.room_id AND w.seq > v.rs AND w.deleted = {false}
            ORDER BY w.seq LIMIT {window}) AS x
    ) ELSE 0 END,
    CASE WHEN v.member THEN (
        SELECT count(*) FROM (
            SELECT w.user_id FROM messages w
            WHERE w.room_id = v.room_id AND w.seq > v.rs AND w.deleted = {false}
            ORDER BY w.seq LIMIT {window}) AS x
        WHERE x.user_id <> {p1}
    ) ELSE 0 END,
    CASE WHEN v.member THEN (
        SELECT count(*) FROM (
            SELECT DISTINCT mm.seq FROM message_mentions mm
            WHERE mm.user_id IN ({p1}, 0) AND mm.room_id = v.room_id AND mm.seq > v.rs
            ORDER BY mm.seq LIMIT {window}) AS x
        JOIN messages w ON w.room_id = v.room_id AND w.seq = x.seq
        WHERE w.user_id <> {p1} AND w.deleted = {false}
    ) ELSE 0 END,
    v.last_seq
FROM visible v
"""

READ_STATES_SQLITE = _READ_STATES.format(p1="?1", false="0", window=READ_WINDOW)
READ_STATES_POSTGRES = _READ_STATES.format(p1="$1", false="false", window=READ_WINDOW)

# A page's mentions: (seq, user_id, name or NULL for @room), skipping deleted messages (their
# mentions were part of the erased text).
_PAGE_MENTIONS = """
SELECT mm.seq, mm.user_id, u.name FROM message_mentions mm
JOIN messages w ON w.room_id = mm.room_id AND w.seq = mm.seq AND w.deleted = {false}
LEFT JOIN users u ON u.id = mm.user_id
WHERE mm.room_id = {p1} AND mm.seq BETWEEN {p2} AND {p3}
"""

PAGE_MENTIONS_SQLITE = _PAGE_MENTIONS.format(p1="?1", p2="?2", p3="?3", false="0")
PAGE_MENTIONS_POSTGRES = _PAGE_MENTIONS.format(p1="$1", p2="$2", p3="$3", false="false")

__all__ = [
    "attach_mentions",
    "mention_rows",
    "read_states_of",
    "PAGE_MENTIONS_POSTGRES",
    "PAGE_MENTIONS_SQLITE",
    "READ_STATES_POSTGRES",
    "READ_STATES_SQLITE",
]


def attach_mentions(messages: list[StoredMessage], rows: list[Any]) -> list[StoredMessage]:
    """`messages` with the mentions of PAGE_MENTIONS's `rows`, names sorted as the live frame
    has them (chatserver.mentions), so history and live frames are identical."""
    if not rows:
        return messages
    names: dict[int, list[str]] = {}
    room: set[int] = set()
    for seq, user_id, name in rows:
        if user_id == 0:
            room.add(seq)
        elif name is not None:
            names.setdefault(seq, []).append(name)
    return [
        dataclasses.replace(m, mentions=tuple(sorted(names.get(m.seq, ()))),
                            mentions_room=m.seq in room)
        if m.seq in names or m.seq in room else m
        for m in messages
    ]


def mention_rows(message: NewMessage) -> list[int]:
    """The user ids of a new message's mention rows: 0 for @room (see migration 0008)."""
    ids = [mention.user_id for mention in message.mentions]
    return [0, *ids] if message.mentions_room else ids


def read_states_of(rows: list[Any]) -> dict[int, ReadState]:
    """READ_STATES's rows by room id."""
    return {
        room_id: ReadState(seq=rs, unread=unread, mentions=mentions,
                           capped=window >= READ_WINDOW, counted_seq=last_seq)
        for room_id, rs, window, unread, mentions, last_seq in rows
    }
