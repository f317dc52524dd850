"""Full-text search on PostgreSQL: the generated `messages.search` tsvector and its GIN index
(migration 0003), ts_rank, ts_headline.

One statement per page, on the read pool. The tsquery is built from bound parameters only:
each word or phrase goes through `phraseto_tsquery` (plain text in, never syntax), and a prefix
through `to_tsquery` with single-quoted runs of letters and digits (nothing left to escape).
Permission is part of the statement: a hit's room must be public or have the user as a member,
applied to every match before ranking. `ts_headline` re-parses the text, so it runs only for the
page's rows, after the ranking has picked them.
"""

from __future__ import annotations

from typing import Any

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

CONFIG = "english"  # the configuration 0003_search.sql indexes with
# ts_rank normalization 1: divide by 1 + log(length), so a word in a short message counts a
# little more than the same word once in a long one.
RANK = "ts_rank(m.search, (SELECT q FROM q), 1)"
# ts_headline drops HTML-looking tags from a fragment; it gets '<' and '>' as \x03 and \x04
# (turned back before escaping), and the mark characters and those two as spaces.
_HEADLINE_FROM = "E'\\x01\\x02\\x03\\x04<>'"
_HEADLINE_TO = "E'    \\x03\\x04'"
_HEADLINE_OPTIONS = f"StartSel={MARK_START}, StopSel={MARK_END}, MaxWords=35, MinWords=15"


def tsquery_sql(query: SearchQuery, first_param: int) -> tuple[str, list[str]]:
    """The tsquery expression ANDing every term, and its parameters numbered from
    `first_param`."""
    parts: list[str] = []
    params: list[str] = []
    for term in query.terms:
        number = first_param + len(params)
        if term.prefix:
            runs = [f"'{word}'" for word in term.words]  # alphanumeric: nothing to escape
            params.append(" <-> ".join(runs) + ":*")
            parts.append(f"to_tsquery('{CONFIG}', ${number})")
        else:
            params.append(term.text)
            parts.append(f"phraseto_tsquery('{CONFIG}', ${number})")
    return " && ".join(parts), params


def _sql(query_expr: str, room: bool, after: bool, first_free: int) -> str:
    n = first_free
    where = [
        "m.search @@ (SELECT q FROM q)",
        "m.room_id IN (SELECT id FROM rooms WHERE kind = 'public'"
        " UNION SELECT room_id FROM members WHERE user_id = $1)",
    ]
    if room:
        where.append(f"m.room_id = ${n}")
        n += 1
    if after:
        where.append(
            f"({RANK}, m.ts, m.room_id, m.seq)"
            f" < (${n}::real, ${n + 1}::bigint, ${n + 2}::bigint, ${n + 3}::bigint)"
        )
    headline = (
        f"ts_headline('{CONFIG}', translate(m.text, {_HEADLINE_FROM}, {_HEADLINE_TO}),"
        f" (SELECT q FROM q), '{_HEADLINE_OPTIONS}')"
    )
    return (
        f"WITH q AS MATERIALIZED (SELECT {query_expr} AS q),"
        " page AS ("
        f"  SELECT m.room_id, m.seq, m.ts, m.user_name, {RANK} AS score FROM messages m"
        f"  WHERE {' AND '.join(where)}"
        "   ORDER BY score DESC, m.ts DESC, m.room_id DESC, m.seq DESC LIMIT $2"
        "), numbered AS ("
        "  SELECT p.*, row_number() OVER"
        "   (ORDER BY p.score DESC, p.ts DESC, p.room_id DESC, p.seq DESC) AS n FROM page p"
        ")"
        # The LEFT JOIN gives one row even without hits, carrying numnode: 0 means the query
        # was only stop words, which the caller reports.
        " SELECT numnode((SELECT q FROM q)), p.room_id, r.name, p.seq, p.ts, p.user_name,"
        f"  p.score, CASE WHEN p.n < $2 THEN {headline} END, m.thread"
        " FROM (SELECT 1) one LEFT JOIN (numbered p"
        "  JOIN messages m ON m.room_id = p.room_id AND m.seq = p.seq"
        "  JOIN rooms r ON r.id = p.room_id) ON true"
        " ORDER BY p.n"
    )


async def search(
    conn: Any,
    user_id: int,
    query: SearchQuery,
    room_id: int | None,
    after: Cursor | None,
    limit: int,
) -> tuple[SearchPage, bool]:
    """One page of hits for `user_id`, and whether the query had any indexed word at all
    (False: only stop words like 'the', which match nothing)."""
    query_expr, query_params = tsquery_sql(query, 3)
    args: list[Any] = [user_id, limit + 1, *query_params]  # one more: is there a next page?
    if room_id is not None:
        args.append(room_id)
    if after is not None:
        args += [after.score, after.ts, after.room_id, after.seq]
    sql = _sql(query_expr, room_id is not None, after is not None, 3 + len(query_params))
    rows = await conn.fetch(sql, *args)
    searchable = bool(rows) and rows[0][0] > 0
    hits = [
        SearchHit(
            room=row[2],
            seq=row[3],
            user=row[5],
            ts=format_ts(row[4]),
            snippet=snippet_html((row[7] or "").replace("\x03", "<").replace("\x04", ">")),
            key=Cursor(score=row[6], ts=row[4], room_id=row[1], seq=row[3]),
            thread=row[8],
        )
        for row in rows[:limit]
        if row[1] is not None
    ]
    more = sum(1 for row in rows if row[1] is not None) > limit
    return SearchPage(hits=tuple(hits), next=hits[-1].key if more and hits else None), searchable


__all__ = ["CONFIG", "search", "tsquery_sql"]
