"""Full-text search on SQLite: FTS5 (migration 0003), bm25 ranking, snippet().

Runs on a read connection (SqliteStore's reader threads), in one read transaction so the page
and its snippets come from one snapshot. Permission is part of the query: a hit's room must be
public or have the user as a member, checked by SQLite over every match before ranking, so no
page is ever filtered afterwards.
"""

from __future__ import annotations

import sqlite3

from chatserver.search import (
    MARK_END,
    MARK_START,
    Cursor,
    SearchHit,
    SearchPage,
    SearchQuery,
    snippet_html,
)
from chatserver.store.base import format_ts

DOC_SEQ_BITS = 36  # the FTS rowid of a message is (room_id << 36) + seq, as in 0003_search.sql
_SEQ_MASK = (1 << DOC_SEQ_BITS) - 1
SNIPPET_TOKENS = 24  # FTS5 allows at most 64


def _fts_string(text: str) -> str:
    # An FTS5 string: everything between double quotes is text for the tokenizer, never
    # syntax; a double quote inside is written twice.
    return '"' + text.replace('"', '""') + '"'


def match_expression(query: SearchQuery) -> str:
    """The FTS5 MATCH expression: every term quoted, implicitly ANDed; a prefix term gets
    FTS5's `*` after its closing quote (the last token of the string becomes a prefix)."""
    parts = []
    for term in query.terms:
        quoted = _fts_string(" ".join(term.words) if term.prefix else term.text)
        parts.append(quoted + " *" if term.prefix else quoted)
    return " AND ".join(parts)


_READABLE = (
    "(SELECT id FROM rooms WHERE kind = 'public'"
    " UNION SELECT room_id FROM members WHERE user_id = :user)"
)


def _page_sql(room: bool, after: bool) -> str:
    where = [f"(f.rowid >> {DOC_SEQ_BITS}) IN {_READABLE}"]
    if room:
        # A rowid range: FTS5 reads only the room's part of each term's list.
        where.append("f.rowid BETWEEN :room_lo AND :room_hi")
    keyset = ""
    if after:
        keyset = "WHERE (h.score, m.ts, m.room_id, m.seq) < (:score, :ts, :room_id, :seq)"
    return (
        "WITH hits AS ("
        "  SELECT f.rowid AS doc, -bm25(message_search) AS score FROM message_search f"
        f"  WHERE message_search MATCH :match AND {' AND '.join(where)}"
        ")"
        " SELECT h.doc, h.score, m.ts, m.room_id, m.seq, m.user_name, r.name, m.thread FROM hits h"
        f" JOIN messages m ON m.room_id = h.doc >> {DOC_SEQ_BITS} AND m.seq = h.doc & {_SEQ_MASK}"
        " JOIN rooms r ON r.id = m.room_id"
        f" {keyset}"
        " ORDER BY h.score DESC, m.ts DESC, m.room_id DESC, m.seq DESC LIMIT :limit"
    )


_SNIPPET_SQL = (
    f"SELECT snippet(message_search, 0, :start, :end, '…', {SNIPPET_TOKENS})"
    " FROM message_search WHERE message_search MATCH :match AND rowid = :doc"
)


def search(
    conn: sqlite3.Connection,
    user_id: int,
    query: SearchQuery,
    room_id: int | None,
    after: Cursor | None,
    limit: int,
) -> SearchPage:
    """One page of hits for `user_id`; see `Store.search_messages`."""
    params: dict[str, object] = {
        "match": match_expression(query),
        "user": user_id,
        "limit": limit + 1,  # one more tells whether there is a next page
    }
    if room_id is not None:
        params["room_lo"] = room_id << DOC_SEQ_BITS
        params["room_hi"] = (room_id << DOC_SEQ_BITS) + _SEQ_MASK
    if after is not None:
        params.update(score=after.score, ts=after.ts, room_id=after.room_id, seq=after.seq)
    sql = _page_sql(room_id is not None, after is not None)
    conn.execute("BEGIN")
    try:
        rows = conn.execute(sql, params).fetchall()
        hits = []
        for doc, score, ts, room, seq, user, room_name, thread in rows[:limit]:
            # Only the page's snippets: snippet() re-reads and re-tokenizes each text.
            marked = conn.execute(
                _SNIPPET_SQL,
                {"start": MARK_START, "end": MARK_END, "match": params["match"], "doc": doc},
            ).fetchall()
            hits.append(
                SearchHit(
                    room=room_name,
                    seq=seq,
                    user=user,
                    ts=format_ts(ts),
                    snippet=snippet_html(marked[0][0] if marked else ""),
                    key=Cursor(score=score, ts=ts, room_id=room, seq=seq),
                    thread=thread,
                )
            )
    finally:
        conn.execute("COMMIT")
    more = len(rows) > limit
    return SearchPage(hits=tuple(hits), next=hits[-1].key if more and hits else None)


__all__ = ["DOC_SEQ_BITS", "match_expression", "search"]
