"""The Store contract for full-text search: every backend in `conftest.BACKENDS` finds messages
by words, phrases and prefixes, ranks by relevance then recency, pages without repeats or gaps,
searches only rooms the user may read, and follows edits and deletions of the stored text."""

from __future__ import annotations

from typing import Any

import asyncpg  # type: ignore[import-untyped]
import pytest

from chatserver.errors import BadRequest
from chatserver.search import SearchPage, parse_query
from chatserver.store.base import Room, Store, User
from chatserver.store.sqlite import SqliteStore

from .test_store import TS, new, user


async def search(store: Store, who: User, q: str, **options: Any) -> SearchPage:
    return await store.search_messages(who.id, parse_query(q), **options)


async def found(store: Store, who: User, q: str, **options: Any) -> list[tuple[str, int]]:
    page = await search(store, who, q, **options)
    return [(hit.room, hit.seq) for hit in page.hits]


async def post(store: Store, room: Room, author: User, *texts: str) -> list[int]:
    return [(await store.append_message(new(room, author, text))).seq for text in texts]


async def execute(store: Store, sql: str, *args: Any) -> None:
    """Run one write statement behind the store's back, as a later feature (edits, deletions,
    retention) would: `?` placeholders, rewritten to `$n` for PostgreSQL."""
    if isinstance(store, SqliteStore):
        await store.run_in_writer(lambda conn: conn.execute(sql, args))
        return
    numbered = sql
    for n in range(1, len(args) + 1):
        numbered = numbered.replace("?", f"${n}", 1)
    conn = await asyncpg.connect(store._dsn)  # type: ignore[attr-defined]
    try:
        await conn.execute(numbered, *args)
    finally:
        await conn.close()


@pytest.fixture
async def alice(store: Store) -> User:
    return await user(store, "alice")


@pytest.fixture
async def general(store: Store) -> Room:
    return await store.create_room("general", "public", None)


async def test_every_word_must_match_and_a_hit_carries_its_message(
        store: Store, alice: User, general: Room) -> None:
    """A hit has every query word (stemmed: 'deploys' finds 'deploying') and names its room,
    seq, author and time; thread is None until threads exist."""
    seqs = await post(store, general, alice, "deploying the api failed", "deploy went fine",
                      "the api is down")
    page = await search(store, alice, "deploys API")
    assert [(h.room, h.seq, h.user, h.thread) for h in page.hits] == [
        ("general", seqs[0], "alice", None)]
    assert TS.match(page.hits[0].ts) and page.next is None
    assert await found(store, alice, "unknownword") == []


async def test_more_relevant_first_then_newest(store: Store, alice: User, general: Room) -> None:
    """A message that is more about the words ranks first; equally relevant ones newest first."""
    first, long_one, dense, copy = await post(
        store, general, alice, "rollback the release", "we talked about lunch and then maybe a"
        " rollback of something later in the week if nobody objects to it", "rollback rollback"
        " rollback", "rollback the release")
    assert await found(store, alice, "rollback") == [
        ("general", dense), ("general", copy), ("general", first), ("general", long_one)]


async def test_quoted_phrase_matches_words_in_order_only(
        store: Store, alice: User, general: Room) -> None:
    """"connection refused" finds the words side by side in that order, not scattered."""
    together, apart = await post(store, general, alice, "error: connection refused by peer",
                                 "refused to open a connection")
    assert await found(store, alice, '"connection refused"') == [("general", together)]
    assert sorted(await found(store, alice, "connection refused")) == [
        ("general", together), ("general", apart)]


async def test_trailing_star_is_a_prefix(store: Store, alice: User, general: Room) -> None:
    """'kube*' finds kubernetes and kubectl; a prefix phrase finds its last word's prefix."""
    seqs = await post(store, general, alice, "kubernetes upgrade", "kubectl apply", "cube")
    assert sorted(await found(store, alice, "kube*")) == [("general", s) for s in seqs[:2]]
    assert await found(store, alice, '"kubernetes upg"*') == [("general", seqs[0])]


async def test_snippet_is_escaped_html_with_marks(store: Store, alice: User, general: Room
                                                  ) -> None:
    """The snippet escapes the text (tags, ampersands) and wraps only the matches in <mark>;
    marker characters in a message cannot forge a highlight."""
    await post(store, general, alice, "use <b>deploy</b> & \x01wait\x02 then deploy")
    [hit] = (await search(store, alice, "deploy")).hits
    assert "&lt;b&gt;<mark>deploy</mark>&lt;/b&gt;" in hit.snippet
    assert "&amp;" in hit.snippet and "then <mark>deploy</mark>" in hit.snippet
    assert hit.snippet.count("<mark>") == 2 and "\x01" not in hit.snippet


async def test_user_text_never_breaks_the_engine(store: Store, alice: User, general: Room
                                                 ) -> None:
    """Engine syntax in a query is plain text: no query the parser accepts makes the store
    fail (operators, quotes, colons and stars just become words or vanish)."""
    seq = (await post(store, general, alice, "near or not, text: a&b | c!"))[0]
    for q in ['NEAR(text', "text OR", "-text", "text:", "'text", "te\\xt", "text:*", "a&b|c!",
              '"text', 'text"*', "(text)", "^text", "{text}", "text AND NOT near", "text***"]:
        hits = await found(store, alice, q)
        assert hits in ([], [("general", seq)]), q


async def test_stop_words_only_query(store: Store, alice: User, general: Room) -> None:
    """SQLite indexes every word; PostgreSQL's English configuration drops stop words, so a
    query of only those is `BadRequest` there (never a silent empty page)."""
    seq = (await post(store, general, alice, "the deploy"))[0]
    assert await found(store, alice, "the deploy") == [("general", seq)]
    if isinstance(store, SqliteStore):
        assert await found(store, alice, "the") == [("general", seq)]
    else:
        with pytest.raises(BadRequest, match="common"):
            await search(store, alice, "the")


async def test_pages_cover_every_hit_once_in_order(store: Store, alice: User, general: Room
                                                   ) -> None:
    """Following `next` gives every hit exactly once, in the order of one big page, and the
    last page has no `next`."""
    ops = await store.create_room("ops", "public", None)
    for i in range(13):
        await post(store, general if i % 2 else ops, alice, "incident " * (1 + i % 3) + str(i))
    whole = await search(store, alice, "incident", limit=50)
    assert len(whole.hits) == 13 and whole.next is None
    pages, after = [], None
    while True:
        page = await search(store, alice, "incident", limit=4, after=after)
        pages.append(len(page.hits))
        after = page.next
        if after is None:
            break
        assert after == page.hits[-1].key
        whole_keys = [h.key for h in whole.hits]
        assert whole_keys.index(after) == sum(pages) - 1
    assert pages == [4, 4, 4, 1]


async def test_only_rooms_the_user_may_read(store: Store, alice: User) -> None:
    """Public rooms and the user's own private and direct rooms are searched; other private
    and direct rooms never yield a hit, also when asked for by room_id."""
    bob, carol = await user(store, "bob"), await user(store, "carol")
    public = await store.create_room("lobby", "public", bob.id)  # alice is not a member
    mine = await store.create_room("mine", "private", alice.id)
    theirs = await store.create_room("theirs", "private", bob.id)
    their_dm, _ = await store.direct_room(bob, carol)
    my_dm, _ = await store.direct_room(alice, bob)
    for room in (public, mine, theirs, their_dm, my_dm):
        await post(store, room, bob, "secret plans")
    assert sorted(r for r, _ in await found(store, alice, "secret")) == sorted(
        ["lobby", "mine", my_dm.name])
    assert await found(store, alice, "secret", room_id=theirs.id) == []
    assert await found(store, alice, "secret", room_id=mine.id) == [("mine", 1)]
    await store.add_member(theirs.id, alice.id)
    assert await found(store, alice, "secret", room_id=theirs.id) == [("theirs", 1)]


async def test_an_edit_reindexes_and_a_deletion_unindexes(
        store: Store, alice: User, general: Room) -> None:
    """Changing a message's stored text replaces its entry (the old words stop matching), and
    erasing (deleted message) or removing the row (retention) takes it out of the index."""
    edited, erased, removed = await post(store, general, alice, "typo teh", "erase zebra",
                                         "remove zebra")
    await execute(store, "UPDATE messages SET text = ? WHERE room_id = ? AND seq = ?",
                  "typo fixed", general.id, edited)
    assert await found(store, alice, "teh") == []
    assert await found(store, alice, "fixed") == [("general", edited)]
    await execute(store, "UPDATE messages SET text = '' WHERE room_id = ? AND seq = ?",
                  general.id, erased)
    await execute(store, "DELETE FROM messages WHERE room_id = ? AND seq = ?",
                  general.id, removed)
    assert await found(store, alice, "zebra") == []
    assert await found(store, alice, "typo") == [("general", edited)]


async def test_messages_stored_before_the_search_migration_are_found(
        make_store: Any) -> None:
    """Reopening an existing database keeps every message searchable (the index is durable
    and the migration indexed what was there)."""
    store = make_store()
    await store.open()
    alice = await user(store, "alice")
    room = await store.create_room("general", "public", None)
    await post(store, room, alice, "persisted words")
    await store.close()
    reopened = make_store()
    await reopened.open()
    assert await found(reopened, alice, "persisted") == [("general", 1)]
