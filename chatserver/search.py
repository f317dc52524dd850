"""Full-text search, the backend-neutral part: the query language, the page cursor, the snippet.

Sans-I/O: values in, values out. The stores turn a parsed `SearchQuery` into their own engine's
syntax (SQLite FTS5 in store/search_sqlite.py, PostgreSQL tsquery in store/search_postgres.py);
user text never reaches either engine's parser as syntax, only as quoted strings or bound
parameters, so no input can make a search fail with a syntax error.

The query language (docs/protocol.md §10, "Search"): words, all of which must match;
`"quoted phrases"`; a trailing `*` for a prefix (`deplo*`, `"connection ref"*`). Every other
character is text, and a term with no letter or digit in it is dropped.
"""

from __future__ import annotations

import base64
import binascii
import html
import math
from dataclasses import dataclass

import orjson

from chatserver.errors import BadRequest

MAX_QUERY_CHARS = 256
MAX_TERMS = 16
# A shorter prefix expands to so many indexed words that one query would scan a large part of
# the index; three letters keep a prefix query as cheap as a common word.
MIN_PREFIX_CHARS = 3

# Snippets come back from the engines with these around each match; they are stripped from the
# text before it is searched for a snippet, so a user cannot forge a highlight.
MARK_START = "\x01"
MARK_END = "\x02"

_CURSOR_VERSION = 1


@dataclass(frozen=True, slots=True)
class Term:
    """One thing every hit must contain: a word or a phrase (`words` in order), and, with
    `prefix`, the last word only as the start of a word."""

    words: tuple[str, ...]  # alphanumeric runs, for engines that need them (prefixes)
    text: str  # the term as typed, without quotes or the trailing `*`
    prefix: bool = False
    phrase: bool = False


@dataclass(frozen=True, slots=True)
class SearchQuery:
    terms: tuple[Term, ...]


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a page ended, in the result order: relevance, then time, then room and seq, each
    descending. `score` is the engine's own number, compared exactly (never recomputed)."""

    score: float
    ts: int  # epoch ms
    room_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class SearchHit:
    room: str
    seq: int
    user: str
    ts: str  # ISO 8601 UTC like StoredMessage.ts
    snippet: str  # HTML: escaped text, matches in <mark>
    key: Cursor  # this hit's place in the order, the next page's cursor if it is the last
    thread: int | None = None  # the root's seq when the hit is a thread reply


@dataclass(frozen=True, slots=True)
class SearchPage:
    hits: tuple[SearchHit, ...]
    next: Cursor | None  # None: this is the last page


def _alnum_runs(text: str) -> tuple[str, ...]:
    """The runs of letters and digits: what both engines' tokenizers call words."""
    runs: list[str] = []
    current: list[str] = []
    for char in text:
        if char.isalnum():
            current.append(char)
        elif current:
            runs.append("".join(current))
            current = []
    if current:
        runs.append("".join(current))
    return tuple(runs)


def _term(text: str, *, prefix: bool, phrase: bool) -> Term | None:
    text = text.replace(MARK_START, " ").replace(MARK_END, " ")
    words = _alnum_runs(text)
    if not words:
        return None
    if prefix and len(words[-1]) < MIN_PREFIX_CHARS:
        raise BadRequest(
            f"a prefix search needs at least {MIN_PREFIX_CHARS} letters or digits before '*'"
        )
    return Term(words=words, text=text, prefix=prefix, phrase=phrase or len(words) > 1)


def parse_query(raw: str) -> SearchQuery:
    """Parse the user's query; `BadRequest` (with the reason) if it is too long or has nothing
    to search for. Never fails on syntax: an unclosed quote runs to the end of the query."""
    if len(raw) > MAX_QUERY_CHARS:
        raise BadRequest(f"the search query is longer than {MAX_QUERY_CHARS} characters")
    terms: list[Term] = []
    i, n = 0, len(raw)
    while i < n:
        char = raw[i]
        if char.isspace():
            i += 1
            continue
        if char == '"':
            end = raw.find('"', i + 1)
            end = n if end < 0 else end
            body, i = raw[i + 1 : end], end + 1
            prefix = i < n and raw[i] == "*"
            i += 1 if prefix else 0
            term = _term(body, prefix=prefix, phrase=True)
        else:
            end = i
            while end < n and not raw[end].isspace() and raw[end] != '"':
                end += 1
            body, i = raw[i:end], end
            prefix = body.endswith("*")
            term = _term(body.rstrip("*") if prefix else body, prefix=prefix, phrase=False)
        if term is not None and term not in terms:
            terms.append(term)
    if not terms:
        raise BadRequest("the search query has no words to search for (letters or digits)")
    if len(terms) > MAX_TERMS:
        raise BadRequest(f"the search query has more than {MAX_TERMS} words or phrases")
    return SearchQuery(tuple(terms))


def snippet_html(marked: str) -> str:
    """An engine's snippet (plain text with MARK_START/MARK_END around matches) as HTML."""
    escaped = html.escape(marked, quote=False)
    return escaped.replace(MARK_START, "<mark>").replace(MARK_END, "</mark>")


def encode_cursor(cursor: Cursor) -> str:
    """Opaque to clients: URL-safe base64 of a versioned JSON array."""
    raw = orjson.dumps([_CURSOR_VERSION, cursor.score, cursor.ts, cursor.room_id, cursor.seq])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(token: str) -> Cursor:
    """The cursor `encode_cursor` made; `BadRequest` for anything else."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, score, ts, room_id, seq = orjson.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise BadRequest("'before' is not a cursor this server gave out") from None
    ints = (ts, room_id, seq)
    if (
        version != _CURSOR_VERSION
        or type(score) not in (int, float)
        or not math.isfinite(score)
        or any(type(v) is not int or not 0 <= v < 1 << 63 for v in ints)
    ):
        raise BadRequest("'before' is not a cursor this server gave out")
    return Cursor(score=float(score), ts=ts, room_id=room_id, seq=seq)


__all__ = [
    "Cursor",
    "SearchHit",
    "SearchPage",
    "SearchQuery",
    "Term",
    "decode_cursor",
    "encode_cursor",
    "parse_query",
    "snippet_html",
]
