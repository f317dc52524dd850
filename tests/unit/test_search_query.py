"""The search query language and cursor (chatserver/search.py), and how each engine receives a
query: as quoted text and bound parameters, never as syntax."""

from __future__ import annotations

import pytest

from chatserver.errors import BadRequest
from chatserver.search import (
    Cursor,
    Term,
    decode_cursor,
    encode_cursor,
    parse_query,
    snippet_html,
)
from chatserver.store.search_postgres import tsquery_sql
from chatserver.store.search_sqlite import match_expression


def test_words_phrases_and_prefixes() -> None:
    """Words, "quoted phrases" and a trailing * parse into terms; repeats count once."""
    query = parse_query('deploy  "connection refused" kube* "api ser"* deploy')
    assert query.terms == (
        Term(("deploy",), "deploy"),
        Term(("connection", "refused"), "connection refused", phrase=True),
        Term(("kube",), "kube", prefix=True),
        Term(("api", "ser"), "api ser", prefix=True, phrase=True),
    )


def test_an_unclosed_quote_runs_to_the_end_and_symbols_alone_vanish() -> None:
    """Syntax never fails: an open quote is a phrase to the end; a term without letters or
    digits is dropped."""
    assert parse_query('-- && "open phrase').terms == (
        Term(("open", "phrase"), "open phrase", phrase=True),)


@pytest.mark.parametrize(("raw", "reason"), [
    ("", "no words"), ('"" !!! *', "no words"), ("ab*", "prefix"), ("x" * 257, "longer"),
    (" ".join(f"w{i}" for i in range(17)), "more than 16"),
])
def test_queries_with_nothing_to_search_or_too_much_are_bad_requests(raw: str, reason: str
                                                                     ) -> None:
    """Nothing searchable, a prefix under 3 characters, or an oversized query: BadRequest."""
    with pytest.raises(BadRequest, match=reason):
        parse_query(raw)


def test_fts5_gets_only_quoted_strings() -> None:
    """FTS5 sees each term as a double-quoted string (quotes doubled), prefixes as `"..." *`."""
    assert match_expression(parse_query('say"hi NEAR(x) kube*')) == (
        '"say" AND "hi NEAR(x) kube*"')
    assert match_expression(parse_query("a:b OR kube*")) == '"a:b" AND "OR" AND "kube" *'


def test_postgres_gets_parameters_and_alphanumeric_prefixes() -> None:
    """Words and phrases are phraseto_tsquery parameters; a prefix is quoted letter runs."""
    sql, params = tsquery_sql(parse_query("it's \"a b\" rock'n'roll*"), 3)
    assert sql == ("phraseto_tsquery('english', $3) && phraseto_tsquery('english', $4)"
                   " && to_tsquery('english', $5)")
    assert params == ["it's", "a b", "'rock' <-> 'n' <-> 'roll':*"]


def test_snippet_escapes_and_marks() -> None:
    """Engine marks become <mark>; everything else is escaped."""
    assert snippet_html("a <b> & \x01hit\x02") == "a &lt;b&gt; &amp; <mark>hit</mark>"


def test_cursor_round_trips_and_forgeries_are_refused() -> None:
    """encode/decode keep every field exactly (the score too); anything else is BadRequest."""
    cursor = Cursor(score=0.1 + 0.2, ts=1_700_000_000_123, room_id=7, seq=2**40)
    assert decode_cursor(encode_cursor(cursor)) == cursor
    for bad in ["", "!!", "bnVsbA", encode_cursor(cursor)[:-3]]:
        with pytest.raises(BadRequest):
            decode_cursor(bad)
